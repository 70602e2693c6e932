//! `larder demo`: a Zipf workload against an embedded cache with a memory tier
//! and a disk tier, with a progress bar on a terminal and a summary table of
//! both tiers at the end.

use crate::CliResult;
use indicatif::{ProgressBar, ProgressStyle};
use larder::{Bytes, Cache, WritePolicy};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, Zipf};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Requests to run (each a get, followed by an insert on a miss).
    #[arg(long, default_value_t = 4_000_000)]
    requests: u64,
    /// Distinct keys the workload draws from.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Zipf exponent of the key popularity.
    #[arg(long, default_value_t = 0.99)]
    zipf: f64,
    /// Memory capacity in MiB.
    #[arg(long, default_value_t = 32)]
    memory_mib: u64,
    /// Disk tier capacity in MiB (0: memory only).
    #[arg(long, default_value_t = 256)]
    disk_mib: u64,
    /// Directory of the disk tier; by default a fresh one under the system's
    /// temporary directory, removed at the end.
    #[arg(long)]
    disk_dir: Option<PathBuf>,
    /// Segment file size in MiB.
    #[arg(long, default_value_t = 16)]
    segment_mib: u64,
    /// When values reach the disk tier.
    #[arg(long, value_enum, default_value_t = Policy::WriteBehind)]
    write_policy: Policy,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    threads: u64,
    /// Seed of the key stream.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// `--write-policy`'s values.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Policy {
    WriteBehind,
    Demote,
}

/// A disk directory the demo made for itself, removed when the demo ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every this many requests a worker times one and reports progress.
const SAMPLE_EVERY: u64 = 16;

pub(crate) fn run(args: Args) -> CliResult {
    if args.keys == 0 || args.requests == 0 || args.threads == 0 {
        return Err("--keys, --requests and --threads must be at least 1".into());
    }
    let zipf = Zipf::new(args.keys as f64, args.zipf).map_err(|e| {
        format!(
            "bad Zipf parameters (--keys {}, --zipf {}): {e}",
            args.keys, args.zipf
        )
    })?;
    let mut builder = Cache::builder()
        .memory_capacity(args.memory_mib.saturating_mul(1 << 20))
        .track_hot_keys();
    let mut temp = None;
    if args.disk_mib > 0 {
        let dir = match &args.disk_dir {
            Some(dir) => dir.clone(),
            None => {
                let dir = std::env::temp_dir().join(format!("larder-demo-{}", std::process::id()));
                temp = Some(TempDir(dir.clone()));
                dir
            }
        };
        builder = builder
            .disk(dir, args.disk_mib.saturating_mul(1 << 20))
            .segment_size(args.segment_mib.saturating_mul(1 << 20))
            .write_policy(match args.write_policy {
                Policy::WriteBehind => WritePolicy::WriteBehind,
                Policy::Demote => WritePolicy::Demote,
            });
    }
    let cache = builder.clone().build()?;
    // Bytes that do not compress (zstd stores them raw), the same for every key.
    let mut rng = StdRng::seed_from_u64(args.seed);
    let value = Bytes::from(
        (0..args.value_size)
            .map(|_| rng.random::<u8>())
            .collect::<Vec<_>>(),
    );
    // Refuse up front what the workers could not insert (e.g. a value larger than a shard).
    cache
        .insert(&0u64.to_le_bytes(), value.clone())
        .map_err(|e| format!("cannot run the demo with these settings: {e}"))?;
    cache.remove(&0u64.to_le_bytes());

    println!(
        "larder demo: {} requests, Zipf({}) over {} keys, {}-byte values, {} MiB memory tier, {} MiB disk tier, {} threads",
        args.requests,
        args.zipf,
        args.keys,
        args.value_size,
        args.memory_mib,
        args.disk_mib,
        args.threads
    );
    let bar = ProgressBar::new(args.requests).with_style(
        ProgressStyle::with_template("{bar:40} {percent:>3}%  {human_pos}/{human_len} requests  {elapsed} elapsed, eta {eta}")
            .expect("static template"),
    );
    let started = Instant::now();
    let mut latencies: Vec<u32> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..args.threads)
            .map(|t| {
                let (cache, value, bar) = (&cache, &value, &bar);
                let share =
                    args.requests / args.threads + u64::from(t < args.requests % args.threads);
                s.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(args.seed.wrapping_add(t));
                    worker(cache, value, bar, &zipf, &mut rng, share)
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("demo worker panicked"))
            .collect()
    });
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    latencies.sort_unstable();
    cache.sync()?;
    print_summary(&cache, elapsed, args.requests, &latencies);
    if args.disk_mib > 0 {
        restart(cache, &builder, &zipf, &value, &args)?;
    }
    drop(temp);
    Ok(())
}

fn worker(
    cache: &Cache,
    value: &Bytes,
    bar: &ProgressBar,
    zipf: &Zipf<f64>,
    rng: &mut impl Rng,
    requests: u64,
) -> Vec<u32> {
    let mut latencies = Vec::with_capacity((requests / SAMPLE_EVERY) as usize + 1);
    for i in 0..requests {
        let key = (zipf.sample(rng) as u64).to_le_bytes();
        let timed = i % SAMPLE_EVERY == 0;
        let t0 = timed.then(Instant::now);
        if cache.get(&key).is_none() {
            // Checked before the workers started: every entry of the demo fits.
            let _ = cache.insert(&key, value.clone());
        }
        if let Some(t0) = t0 {
            latencies.push(t0.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
            bar.inc(SAMPLE_EVERY.min(requests - i));
        }
    }
    latencies
}

/// The hit ratio of `requests` more requests (one thread), from the stats.
fn hit_ratio_of(cache: &Cache, zipf: &Zipf<f64>, value: &Bytes, seed: u64, requests: u64) -> f64 {
    let before = cache.stats();
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..requests {
        let key = (zipf.sample(&mut rng) as u64).to_le_bytes();
        if cache.get(&key).is_none() {
            let _ = cache.insert(&key, value.clone());
        }
    }
    let after = cache.stats();
    let hits = after.hits - before.hits;
    let misses = after.misses - before.misses;
    hits as f64 / (hits + misses).max(1) as f64
}

/// A clean close and a reopen: the hit ratio of the last requests before it
/// and of the first requests after it.
fn restart(
    cache: Cache,
    builder: &larder::CacheBuilder,
    zipf: &Zipf<f64>,
    value: &Bytes,
    args: &Args,
) -> CliResult {
    let window = (args.requests / 10).max(1);
    // Fresh key streams (the workers' seeds are seed + 0..threads).
    let before = hit_ratio_of(&cache, zipf, value, args.seed.wrapping_add(1 << 32), window);
    let closing = Instant::now();
    cache.close()?;
    let closed = closing.elapsed();
    let opening = Instant::now();
    let cache = builder.clone().build()?;
    let opened = opening.elapsed();
    let after = hit_ratio_of(&cache, zipf, value, args.seed.wrapping_add(2 << 32), window);
    let s = cache.stats();
    let r = s
        .disk
        .as_ref()
        .map(|d| d.recovery.clone())
        .unwrap_or_default();
    println!("restart: close, then reopen the same directory");
    for (k, v) in [
        (
            "close",
            format!(
                "{:.1} ms (memory's unwritten entries written, log sealed, checkpoint written)",
                closed.as_secs_f64() * 1e3
            ),
        ),
        (
            "reopen",
            format!(
                "{:.1} ms: {} entries from {} segment summaries, checkpoint {:?}, {} entries refilled into memory so far",
                opened.as_secs_f64() * 1e3,
                r.entries,
                r.segments,
                r.checkpoint,
                r.refilled
            ),
        ),
        (
            "hit ratio",
            format!(
                "{:.2}% over the last {window} requests before the restart, {:.2}% over the first {window} after it",
                before * 100.0,
                after * 100.0
            ),
        ),
    ] {
        println!("{k:<14} {v}");
    }
    println!("{:-<64}", "");
    cache.close()?;
    Ok(())
}

fn print_summary(cache: &Cache, elapsed: Duration, requests: u64, latencies: &[u32]) {
    let s = cache.stats();
    let pct = |p: f64| -> String {
        if latencies.is_empty() {
            return "-".into();
        }
        let i = ((latencies.len() - 1) as f64 * p).round() as usize;
        format!("{:.2} µs", f64::from(latencies[i]) / 1000.0)
    };
    let rows = [
        ("requests", requests.to_string()),
        ("hits", s.hits.to_string()),
        ("misses", s.misses.to_string()),
        ("hit ratio", format!("{:.2}%", s.hit_ratio() * 100.0)),
        (
            "throughput",
            format!(
                "{:.2} M requests/s",
                requests as f64 / elapsed.as_secs_f64() / 1e6
            ),
        ),
        ("latency p50", pct(0.50)),
        ("latency p99", pct(0.99)),
        ("latency p99.9", pct(0.999)),
        (
            "L1 memory",
            format!(
                "{} entries ({} hot, {} ghosts), {:.1} of {:.1} MiB, {} shards",
                s.memory.entries,
                s.hot_entries,
                s.ghost_entries,
                s.memory.weight as f64 / 1048576.0,
                s.memory.capacity as f64 / 1048576.0,
                s.shards
            ),
        ),
        ("L1 hits", s.memory.hits.to_string()),
        (
            "hot keys",
            // The demo's keys are u64 ranks of its Zipf stream, little-endian.
            s.hot_keys
                .iter()
                .take(5)
                .map(|(k, n)| match <[u8; 8]>::try_from(&k[..]) {
                    Ok(b) => format!("{} (~{n})", u64::from_le_bytes(b)),
                    Err(_) => format!("{k:?} (~{n})"),
                })
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("L1 evictions", s.memory.evictions.to_string()),
    ];
    let mut rows = rows.to_vec();
    match &s.disk {
        None => rows.push(("L2 disk", "none (--disk-mib 0)".into())),
        Some(d) => {
            let mib = |b: u64| b as f64 / 1048576.0;
            rows.extend([
                ("L2 hits", d.hits.to_string()),
                (
                    "L2 disk",
                    format!(
                        "{} entries in {} segments, {:.0} MiB capacity, {:?}, {} writes, {} reads ({} maps)",
                        d.entries,
                        d.segments,
                        mib(d.capacity),
                        d.write_policy,
                        d.io_backend,
                        d.read_path,
                        d.maps
                    ),
                ),
                (
                    "L2 writes",
                    format!(
                        "{:.1} MiB written, {} records appended ({} kept by reclaim), compression {:.2}, {:.0} MiB of write buffers",
                        mib(d.bytes_written),
                        d.values_appended,
                        d.reappended,
                        d.compression_ratio(),
                        mib(d.buffer_bytes)
                    ),
                ),
                (
                    "L2 health",
                    match &d.failure {
                        None => format!(
                            "healthy; {} refused writes, {} corrupt records",
                            d.refused_writes, d.corrupt_records
                        ),
                        Some(why) => format!("FAILED: {why}"),
                    },
                ),
            ]);
        }
    }
    println!("{:-<64}", "");
    for (k, v) in rows {
        println!("{k:<14} {v}");
    }
    println!("{:-<64}", "");
}
