//! A cache in front of a real SQLite file (`SqliteStore`): cache-aside
//! loads, negative caching, write-through, and their ordering under races.

use larder::{Bytes, Cache, SqliteError, SqliteStore, Store, StoreCache, StoreError};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The SQLite store, counting its queries, and failing writes on demand.
struct Counted {
    inner: SqliteStore,
    loads: AtomicU64,
    fail_writes: AtomicBool,
    /// Each load waits this long (ms): a slow database.
    slow_ms: AtomicU64,
    /// If set, the next load says when it has read, and waits (up to a
    /// second) to be let go before it returns.
    gate: std::sync::Mutex<Option<Gate>>,
}

struct Gate {
    read: std::sync::mpsc::Sender<()>,
    go: std::sync::mpsc::Receiver<()>,
}

impl Counted {
    fn open(dir: &std::path::Path) -> Self {
        Counted {
            inner: SqliteStore::open(dir.join("app.db"), "items").unwrap(),
            loads: AtomicU64::new(0),
            fail_writes: AtomicBool::new(false),
            slow_ms: AtomicU64::new(0),
            gate: std::sync::Mutex::new(None),
        }
    }

    fn refused(&self) -> Result<(), SqliteError> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(SqliteError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                Some("injected: database or disk is full".into()),
            )));
        }
        Ok(())
    }
}

impl Store for Counted {
    type Error = SqliteError;
    fn load(&self, key: &[u8]) -> Result<Option<Bytes>, SqliteError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let found = self.inner.load(key);
        // Slow after the read: what was read ages before it is cached.
        std::thread::sleep(Duration::from_millis(self.slow_ms.load(Ordering::SeqCst)));
        if let Some(gate) = self.gate.lock().unwrap().take() {
            gate.read.send(()).unwrap();
            let _ = gate.go.recv_timeout(Duration::from_secs(1));
        }
        found
    }
    fn store(&self, key: &[u8], value: &[u8]) -> Result<(), SqliteError> {
        self.refused()?;
        self.inner.store(key, value)
    }
    fn delete(&self, key: &[u8]) -> Result<(), SqliteError> {
        self.refused()?;
        self.inner.delete(key)
    }
}

fn cache(absent_ttl: Option<Duration>) -> Cache {
    let mut b = Cache::builder().memory_capacity(4 << 20);
    if let Some(t) = absent_ttl {
        b = b.absent_ttl(t);
    }
    b.build().unwrap()
}

#[test]
fn misses_load_from_the_database_once_and_absent_keys_are_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let store = Counted::open(dir.path());
    store.inner.store(b"p:1", b"tea").unwrap();
    let items = StoreCache::new(cache(Some(Duration::from_secs(60))), store);
    assert_eq!(items.get(b"p:1").unwrap().as_deref(), Some(&b"tea"[..]));
    assert_eq!(items.get(b"p:1").unwrap().as_deref(), Some(&b"tea"[..]));
    assert_eq!(items.get(b"p:404").unwrap(), None);
    assert_eq!(items.get(b"p:404").unwrap(), None);
    assert_eq!(
        items.store().loads.load(Ordering::SeqCst),
        2,
        "one query per key"
    );
    // A write through the cache makes the absent key present at once.
    items.put(b"p:404", "found").unwrap();
    assert_eq!(items.get(b"p:404").unwrap().as_deref(), Some(&b"found"[..]));
    assert_eq!(items.store().loads.load(Ordering::SeqCst), 2);
}

/// 1,000 concurrent gets of a key the cache does not hold (a slow query):
/// one store query.
#[test]
fn a_thousand_concurrent_misses_make_one_query() {
    let dir = tempfile::tempdir().unwrap();
    let store = Counted::open(dir.path());
    store.inner.store(b"hot", b"value").unwrap();
    store.slow_ms.store(50, Ordering::SeqCst);
    let items = StoreCache::new(cache(None), store);
    let barrier = std::sync::Barrier::new(1_000);
    std::thread::scope(|s| {
        for _ in 0..1_000 {
            s.spawn(|| {
                barrier.wait();
                assert_eq!(items.get(b"hot").unwrap().as_deref(), Some(&b"value"[..]));
            });
        }
    });
    assert_eq!(items.store().loads.load(Ordering::SeqCst), 1);
}

/// Write-through: a store that fails leaves the cache as it was, and the
/// caller gets the store's error; when it works, both hold the value.
#[test]
fn a_failing_store_leaves_the_cache_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let items = StoreCache::new(cache(None), Counted::open(dir.path()));
    items.put(b"k", "v1").unwrap();
    assert_eq!(
        items.store().inner.load(b"k").unwrap().as_deref(),
        Some(&b"v1"[..])
    );
    items.store().fail_writes.store(true, Ordering::SeqCst);
    let err = items.put(b"k", "v2").unwrap_err();
    assert!(matches!(err, StoreError::Store(_)), "{err:?}");
    assert!(err.to_string().contains("full"), "{err}");
    assert_eq!(
        items.cache().get(b"k").as_deref(),
        Some(&b"v1"[..]),
        "unchanged"
    );
    assert!(matches!(items.delete(b"k"), Err(StoreError::Store(_))));
    assert_eq!(
        items.cache().get(b"k").as_deref(),
        Some(&b"v1"[..]),
        "unchanged"
    );
    items.put(b"new", "x").unwrap_err();
    assert!(
        items.cache().get(b"new").is_none(),
        "nothing cached the store refused"
    );
    items.store().fail_writes.store(false, Ordering::SeqCst);
    items.delete(b"k").unwrap();
    assert!(items.cache().get(b"k").is_none());
    assert_eq!(items.store().inner.load(b"k").unwrap(), None);
    // A value the cache refuses is refused before the store is written.
    let err = items.put(b"", "v").unwrap_err();
    assert!(
        matches!(err, StoreError::Cache(larder::Error::EmptyKey)),
        "{err:?}"
    );
}

/// A load that read the old value, and a write of a new one while the
/// load still holds what it read: the write waits for the load, so the
/// cache ends with the new value (without the per-key order, the load
/// cached the old one after the write).
#[test]
fn a_write_during_a_load_of_the_old_value_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store = Counted::open(dir.path());
    store.inner.store(b"k", b"old").unwrap();
    let (read_tx, read) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel();
    *store.gate.lock().unwrap() = Some(Gate {
        read: read_tx,
        go: go_rx,
    });
    let items = StoreCache::new(cache(None), store);
    std::thread::scope(|s| {
        s.spawn(|| items.get(b"k").unwrap());
        read.recv().unwrap(); // the load has read "old" and waits
        let writer = s.spawn(|| items.put(b"k", "new").unwrap());
        std::thread::sleep(Duration::from_millis(50)); // the write's chance to overtake
        go.send(()).unwrap();
        writer.join().unwrap();
    });
    assert_eq!(items.cache().get(b"k").as_deref(), Some(&b"new"[..]));
    assert_eq!(
        items.store().inner.load(b"k").unwrap().as_deref(),
        Some(&b"new"[..])
    );
}

/// Writes and loads of the same keys racing from many threads, the cache
/// small enough to evict: afterwards every key the cache holds has the
/// value the database has (a load never caches a value older than a
/// write it raced with).
#[test]
fn racing_writes_and_loads_never_leave_an_older_value_cached() {
    let dir = tempfile::tempdir().unwrap();
    let store = Counted::open(dir.path());
    store.slow_ms.store(1, Ordering::SeqCst); // a wide window between read and cache
    let items = StoreCache::new(
        Cache::builder()
            .memory_capacity(40)
            .unit_weight()
            .build()
            .unwrap(),
        store,
    );
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let items = &items;
            s.spawn(move || {
                for i in 0..1_500u64 {
                    let key = format!("k{}", (i * 7 + t) % 60);
                    match (i + t) % 5 {
                        0 | 1 => items.put(key.as_bytes(), format!("{t}:{i}")).unwrap(),
                        2 => items.delete(key.as_bytes()).unwrap(),
                        _ => {
                            items.get(key.as_bytes()).unwrap();
                        }
                    }
                }
            });
        }
    });
    for k in 0..60 {
        let key = format!("k{k}");
        if let Some(cached) = items.cache().get(key.as_bytes()) {
            let stored = items.store().inner.load(key.as_bytes()).unwrap();
            assert_eq!(Some(cached), stored, "{key}");
        }
    }
}

#[test]
fn batches_and_many_loads_use_one_transaction_and_one_query() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("app.db"), "items").unwrap();
    store
        .store_batch(&[(b"a", Some(b"1")), (b"b", Some(b"2")), (b"a", None)])
        .unwrap();
    let keys: Vec<Vec<u8>> = (0..1_200u32)
        .map(|i| format!("k{i}").into_bytes())
        .collect();
    let batch: Vec<(&[u8], Option<&[u8]>)> = keys.iter().map(|k| (&k[..], Some(&k[..]))).collect();
    store.store_batch(&batch).unwrap();
    let mut wanted: Vec<&[u8]> = vec![b"a", b"b"];
    wanted.extend(keys.iter().map(|k| &k[..]));
    let got = store.load_many(&wanted).unwrap();
    assert_eq!(got[0], None);
    assert_eq!(got[1].as_deref(), Some(&b"2"[..]));
    for (k, v) in keys.iter().zip(&got[2..]) {
        assert_eq!(v.as_deref(), Some(&k[..]));
    }
    assert!(matches!(
        SqliteStore::open(dir.path().join("x.db"), "items; DROP TABLE items"),
        Err(SqliteError::TableName(_))
    ));
    // The rows are in the file: a second connection reads them.
    let again = SqliteStore::open(dir.path().join("app.db"), "items").unwrap();
    assert_eq!(again.load(b"b").unwrap().as_deref(), Some(&b"2"[..]));
}

/// Warming 100,000 keys from the database into a cache that is serving a
/// hot set: progress is reported up to the end, and the hot set's hit
/// ratio does not move (the warmed keys enter cold, and leave first).
#[test]
fn warming_reports_progress_and_leaves_the_hot_set_hit_ratio_alone() {
    use rand::SeedableRng;
    use rand_distr::{Distribution, Zipf};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("app.db"), "items").unwrap();
    let key = |i: u64| format!("item:{i:07}").into_bytes();
    let rows: Vec<(Vec<u8>, Vec<u8>)> = (0..150_000u64)
        .map(|i| (key(i), i.to_le_bytes().to_vec()))
        .collect();
    let batch: Vec<(&[u8], Option<&[u8]>)> =
        rows.iter().map(|(k, v)| (&k[..], Some(&v[..]))).collect();
    store.store_batch(&batch).unwrap();
    let items = StoreCache::new(
        Cache::builder()
            .memory_capacity(20_000)
            .unit_weight()
            .shards(4)
            .build()
            .unwrap(),
        store,
    );
    // The hot set: Zipf(0.99) over the first 50,000 rows.
    let zipf = Zipf::new(50_000.0, 0.99).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut run = |n: usize| {
        let before = items.cache().stats();
        for _ in 0..n {
            let k = key(zipf.sample(&mut rng) as u64 - 1);
            items.get(&k).unwrap().unwrap();
        }
        let after = items.cache().stats();
        let hits = (after.hits - before.hits) as f64;
        hits / (hits + (after.misses - before.misses) as f64)
    };
    run(300_000); // warm
    let before = run(200_000);
    // Warm 100,000 keys the hot set never asks for.
    let cold: Vec<Vec<u8>> = (50_000..150_000u64).map(key).collect();
    let seen = std::sync::Mutex::new(Vec::new());
    let done = items
        .warm(&cold, 2, |p| seen.lock().unwrap().push(p.done))
        .unwrap();
    assert_eq!(done.done, 100_000);
    assert_eq!(done.inserted + done.skipped, 100_000, "{done:?}");
    assert!(done.inserted > 90_000, "{done:?}");
    let seen = seen.into_inner().unwrap();
    assert!(
        seen.len() >= 100_000 / larder::WARM_BATCH,
        "progress after each batch"
    );
    assert_eq!(seen.iter().max(), Some(&100_000));
    // Right after the warm-up (the first 20,000 requests: a flushed hot
    // set would show here), and over longer.
    let first = run(20_000);
    let after = run(200_000);
    eprintln!(
        "hot set hit ratio {before:.4} before warming, {first:.4} just after, {after:.4} after"
    );
    assert!((first - before).abs() <= 0.01, "{before} → {first}");
    assert!((after - before).abs() <= 0.01, "{before} → {after}");
}

/// A store that counts the loads running at once, and fails loads on demand.
struct Watched {
    inner: SqliteStore,
    loads: AtomicU64,
    running: AtomicU64,
    most_at_once: AtomicU64,
    fail_loads: AtomicBool,
}

impl Store for Watched {
    type Error = SqliteError;
    fn load(&self, key: &[u8]) -> Result<Option<Bytes>, SqliteError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_micros(500));
        let found = if self.fail_loads.load(Ordering::SeqCst) {
            Err(SqliteError::TableName(
                "injected: the database is down".into(),
            ))
        } else {
            self.inner.load(key)
        };
        self.running.fetch_sub(1, Ordering::SeqCst);
        found
    }
    fn store(&self, key: &[u8], value: &[u8]) -> Result<(), SqliteError> {
        self.inner.store(key, value)
    }
    fn delete(&self, key: &[u8]) -> Result<(), SqliteError> {
        self.inner.delete(key)
    }
}

fn refreshing(dir: &std::path::Path, clock: &larder::ManualClock) -> StoreCache<Watched> {
    let inner = SqliteStore::open(dir.join("app.db"), "items").unwrap();
    inner.store(b"hot", b"v0").unwrap();
    let store = Watched {
        inner,
        loads: AtomicU64::new(0),
        running: AtomicU64::new(0),
        most_at_once: AtomicU64::new(0),
        fail_loads: AtomicBool::new(false),
    };
    let cache = Cache::builder()
        .memory_capacity(1 << 20)
        .clock(clock.clone())
        .time_to_live(Duration::from_secs(1))
        .build()
        .unwrap();
    StoreCache::new(cache, store).refresh_after(Duration::from_millis(500), 2)
}

/// A key read steadily (a read every 1 ms of the cache's clock, a TTL of
/// 1 s, refreshed once it is 500 ms old): after the first load no read
/// misses, the refreshes land before the expiry, one at a time, and a
/// value changed in the database shows up by the next refresh.
#[test]
fn refresh_ahead_keeps_a_steadily_read_key_from_ever_missing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = larder::ManualClock::new();
    let items = refreshing(dir.path(), &clock);
    assert_eq!(items.get(b"hot").unwrap().as_deref(), Some(&b"v0"[..]));
    let mut misses = 0;
    for i in 0..4_000u32 {
        if i == 2_000 {
            items.store().inner.store(b"hot", b"v1").unwrap(); // behind the cache
        }
        clock.advance(Duration::from_millis(1));
        if !items.cache().contains(b"hot") {
            misses += 1;
        }
        items.get(b"hot").unwrap().unwrap();
        std::thread::sleep(Duration::from_micros(100)); // the workers' real time
    }
    assert_eq!(misses, 0, "a read found the key expired");
    let stats = items.refresh_stats();
    assert!(stats.refreshed >= 6, "{stats:?}"); // 4 s of reads, every 0.5 s
    assert_eq!(stats.failed + stats.dropped, 0, "{stats:?}");
    assert_eq!(
        items.store().most_at_once.load(Ordering::SeqCst),
        1,
        "one refresh at a time"
    );
    assert_eq!(items.get(b"hot").unwrap().as_deref(), Some(&b"v1"[..]));
}

/// A refresh that fails leaves the old value to be served until its time
/// to live ends (stale-if-error), counted; then a read misses and loads.
#[test]
fn a_failed_refresh_serves_the_old_value_until_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let clock = larder::ManualClock::new();
    let items = refreshing(dir.path(), &clock);
    items.get(b"hot").unwrap();
    items.store().fail_loads.store(true, Ordering::SeqCst);
    clock.advance(Duration::from_millis(600)); // past the refresh age
    assert_eq!(items.get(b"hot").unwrap().as_deref(), Some(&b"v0"[..]));
    let start = std::time::Instant::now();
    while items.refresh_stats().failed == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "no refresh ran");
        std::thread::sleep(Duration::from_millis(1));
    }
    clock.advance(Duration::from_millis(300)); // still before the expiry
    assert_eq!(
        items.get(b"hot").unwrap().as_deref(),
        Some(&b"v0"[..]),
        "stale-if-error"
    );
    clock.advance(Duration::from_millis(200)); // expired
    assert!(matches!(items.get(b"hot"), Err(StoreError::Store(_))));
    items.store().fail_loads.store(false, Ordering::SeqCst);
    assert_eq!(items.get(b"hot").unwrap().as_deref(), Some(&b"v0"[..]));
}
