//! Writes through a `StoreCache` to one real SQLite file: write-through
//! against durable write-behind, in the same run, rounds interleaved.
//!
//! ```sh
//! cargo bench -p larder-benches --bench store_writes
//! STORE_WRITES_ROUNDS=5 STORE_WRITES_N=50000 cargo bench -p larder-benches --bench store_writes
//! STORE_WRITES_ONLY=write-through cargo bench ...   # one mode (for strace, perf)
//! ```
//!
//! Each round, each mode writes the same stream: `STORE_WRITES_N` writes
//! (default 20,000) of 100-byte values over 2,000 keys drawn Zipf(0.99)
//! (a counter service's shape: a few keys written often), from 2 threads.
//! Measured per mode: the writes per second the callers see (until their
//! last write is acknowledged), each write's latency (p50, p99), the rows
//! the store wrote, and the store's rows per second over the whole run
//! (for write-behind: until `flush()` returns). The SQLite file is in WAL
//! mode with `synchronous=FULL` (its default): every commit is durable,
//! like each acknowledged write-behind write under `Acknowledge::Synced`.
//!
//! Modes: `write-through`; `behind-written` (acknowledged once in the OS);
//! `behind-synced` (acknowledged once on the device); delay 50 ms, batches
//! of 500.

use larder::{Acknowledge, Bytes, Cache, SqliteError, SqliteStore, Store, StoreCache, WriteBehind};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Zipf};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const KEYS: u64 = 2_000;
const THREADS: usize = 2;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The SQLite store, counting the rows it writes.
struct Counted {
    inner: SqliteStore,
    rows: Arc<AtomicU64>,
}

impl Store for Counted {
    type Error = SqliteError;
    fn load(&self, key: &[u8]) -> Result<Option<Bytes>, SqliteError> {
        self.inner.load(key)
    }
    fn store(&self, key: &[u8], value: &[u8]) -> Result<(), SqliteError> {
        self.rows.fetch_add(1, Ordering::Relaxed);
        self.inner.store(key, value)
    }
    fn delete(&self, key: &[u8]) -> Result<(), SqliteError> {
        self.rows.fetch_add(1, Ordering::Relaxed);
        self.inner.delete(key)
    }
    fn store_batch(&self, batch: &[(&[u8], Option<&[u8]>)]) -> Result<(), SqliteError> {
        self.rows.fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.inner.store_batch(batch)
    }
}

struct Figures {
    writes_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    rows: u64,
    rows_per_s: f64,
    /// Writes per second until the last is in the store.
    stored_per_s: f64,
}

fn run(mode: &str, dir: &Path, stream: &[Vec<u64>]) -> Figures {
    let rows = Arc::new(AtomicU64::new(0));
    let store = Counted {
        inner: SqliteStore::open(dir.join("app.db"), "counters").unwrap(),
        rows: Arc::clone(&rows),
    };
    let cache = Cache::builder().memory_capacity(64 << 20).build().unwrap();
    let mut sc = StoreCache::new(cache, store);
    let journal = dir.join(format!("wb-{mode}"));
    let _ = std::fs::remove_dir_all(&journal);
    let config = WriteBehind::new(&journal)
        .delay(Duration::from_millis(50))
        .batch_size(500);
    sc = match mode {
        "write-through" => sc,
        "behind-written" => sc
            .write_behind(config.acknowledge(Acknowledge::Written))
            .unwrap(),
        "behind-synced" => sc
            .write_behind(config.acknowledge(Acknowledge::Synced))
            .unwrap(),
        _ => unreachable!(),
    };
    let value = vec![b'v'; 100];
    let start = Instant::now();
    let latencies: Vec<Vec<u32>> = std::thread::scope(|s| {
        let handles: Vec<_> = stream
            .iter()
            .map(|keys| {
                let (sc, value) = (&sc, &value);
                s.spawn(move || {
                    keys.iter()
                        .map(|k| {
                            let t = Instant::now();
                            sc.put(&k.to_le_bytes(), value.clone()).unwrap();
                            t.elapsed().as_nanos() as u32
                        })
                        .collect::<Vec<u32>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let acked = start.elapsed();
    sc.flush();
    let stored = start.elapsed();
    let mut all: Vec<u32> = latencies.into_iter().flatten().collect();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as f64 / 1000.0;
    let n = all.len() as f64;
    let rows = rows.load(Ordering::Relaxed);
    sc.close().unwrap();
    Figures {
        writes_per_s: n / acked.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        rows,
        rows_per_s: rows as f64 / stored.as_secs_f64(),
        stored_per_s: n / stored.as_secs_f64(),
    }
}

fn main() {
    let rounds = env("STORE_WRITES_ROUNDS", 3);
    let n = env("STORE_WRITES_N", 20_000) as usize;
    let dir =
        tempfile::tempdir_in(std::env::var("STORE_WRITES_DIR").unwrap_or_else(|_| ".".into()))
            .unwrap();
    let zipf = Zipf::new(KEYS as f64, 0.99).unwrap();
    let mut rng = StdRng::seed_from_u64(17);
    let stream: Vec<Vec<u64>> = (0..THREADS)
        .map(|_| {
            (0..n / THREADS)
                .map(|_| zipf.sample(&mut rng) as u64)
                .collect()
        })
        .collect();
    let probe = SqliteStore::open(dir.path().join("app.db"), "counters").unwrap();
    let sync: i64 = probe
        .with(|c| c.query_row("PRAGMA synchronous", [], |r| r.get(0)))
        .unwrap();
    let mode: String = probe
        .with(|c| c.query_row("PRAGMA journal_mode", [], |r| r.get(0)))
        .unwrap();
    println!("SQLite: journal_mode={mode}, synchronous={sync} (1 NORMAL, 2 FULL)");
    drop(probe);
    let only = std::env::var("STORE_WRITES_ONLY").ok();
    let modes: Vec<&str> = ["write-through", "behind-written", "behind-synced"]
        .into_iter()
        .filter(|m| only.as_deref().is_none_or(|o| o == *m))
        .collect();
    let mut results: Vec<Vec<Figures>> = modes.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (i, mode) in modes.iter().enumerate() {
            let f = run(mode, dir.path(), &stream);
            println!(
                "round {round} {mode:>15}: {:>9.0} writes/s  p50 {:>8.1} µs  p99 {:>8.1} µs  store rows {:>6}  rows/s {:>8.0}  in store/s {:>8.0}",
                f.writes_per_s, f.p50_us, f.p99_us, f.rows, f.rows_per_s, f.stored_per_s
            );
            results[i].push(f);
        }
    }
    println!(
        "\nmedians over {rounds} rounds, {n} writes over {KEYS} keys (Zipf 0.99), {THREADS} threads:"
    );
    println!(
        "| mode | writes/s (callers) | vs write-through | p50 µs | p99 µs | store rows | store rows/s | writes/s until in the store |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let through = median(&mut results[0].iter().map(|f| f.writes_per_s).collect());
    for (mode, figures) in modes.iter().zip(&results) {
        let w = median(&mut figures.iter().map(|f| f.writes_per_s).collect());
        println!(
            "| {mode} | {w:.0} | {:.1}× | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} |",
            w / through,
            median(&mut figures.iter().map(|f| f.p50_us).collect()),
            median(&mut figures.iter().map(|f| f.p99_us).collect()),
            median(&mut figures.iter().map(|f| f.rows as f64).collect()),
            median(&mut figures.iter().map(|f| f.rows_per_s).collect()),
            median(&mut figures.iter().map(|f| f.stored_per_s).collect()),
        );
    }
}
