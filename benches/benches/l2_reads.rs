//! L2 reads: the disk tier's hits read through memory maps against `pread`,
//! same directory, same keys, alternating in the same run.
//!
//! ```sh
//! cargo bench -p larder-benches --bench l2_reads
//! L2_READS_ROUNDS=5 cargo bench -p larder-benches --bench l2_reads
//! L2_READS_ONLY=mmap L2_READS_COLD=0 cargo bench ...   # one path, warm only (profiling)
//! ```
//!
//! A directory of 4 KiB incompressible values (256 MiB by default,
//! `L2_READS_MIB`) is written once. Each round then opens it once per read
//! path, with a memory tier too small to matter, and measures:
//! - **warm**: the page cache holds the files; a warm-up pass reads every
//!   key once (it also makes the maps' page tables), then 1 and 2 threads
//!   each time every get of random keys: p50, p99, gets per second;
//! - **cold**: the files' pages are dropped from the page cache
//!   (`posix_fadvise(DONTNEED)`) and a fresh open reads random keys from
//!   the device: gets per second.
//!
//! Every get is checked against the value written.

use bytes::Bytes;
use larder::{Cache, ReadPath};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

const VALUE: usize = 4096;
const SEGMENT: u64 = 64 << 20;
/// Memory tier: about 60 values, so hits are L2's.
const MEMORY: u64 = 256 << 10;
const GETS_PER_THREAD: usize = 200_000;
const COLD_GETS: usize = 20_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn value_of(k: u64) -> Bytes {
    let mut rng = StdRng::seed_from_u64(k);
    Bytes::from((0..VALUE).map(|_| rng.random::<u8>()).collect::<Vec<_>>())
}

fn open(dir: &Path, keys: u64, path: ReadPath) -> Cache {
    Cache::builder()
        .memory_capacity(MEMORY)
        .disk(dir, 2 * keys * VALUE as u64 + 8 * SEGMENT)
        .segment_size(SEGMENT)
        .read_path(path)
        .build()
        .unwrap()
}

fn fill(dir: &Path, keys: u64) {
    let cache = open(dir, keys, ReadPath::Pread);
    for k in 0..keys {
        cache.insert(&k.to_le_bytes(), value_of(k)).unwrap();
    }
    cache.close().unwrap();
}

/// Drops the segment files' pages from the page cache (written back first).
fn drop_page_cache(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "seg") {
            let f = std::fs::File::open(&path).unwrap();
            f.sync_all().unwrap();
            // SAFETY: an advisory call on an open descriptor.
            let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            assert_eq!(rc, 0, "posix_fadvise");
        }
    }
}

struct Warm {
    p50_us: f64,
    p99_us: f64,
    gets_per_s: f64,
}

/// `threads` threads each time `GETS_PER_THREAD` gets of random keys.
fn warm(cache: &Cache, keys: u64, threads: u64, expected: &[Bytes]) -> Warm {
    let started = Instant::now();
    let mut ns: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(100 + t);
                    let mut ns = Vec::with_capacity(GETS_PER_THREAD);
                    for _ in 0..GETS_PER_THREAD {
                        let k = rng.random_range(0..keys);
                        let t0 = Instant::now();
                        let v = cache.get(&k.to_le_bytes());
                        ns.push(t0.elapsed().as_nanos() as u64);
                        // The warm-up checked every byte; here a prefix, so
                        // the check does not weigh on the rate.
                        let v = v.unwrap_or_else(|| panic!("key {k} missed"));
                        let want = &expected[k as usize];
                        assert!(v.len() == want.len() && v[..16] == want[..16], "key {k}");
                    }
                    ns
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let wall = started.elapsed().as_secs_f64();
    ns.sort_unstable();
    let at = |p: f64| ns[((ns.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    Warm {
        p50_us: at(0.50),
        p99_us: at(0.99),
        gets_per_s: ns.len() as f64 / wall,
    }
}

fn cold(dir: &Path, keys: u64, path: ReadPath, expected: &[Bytes]) -> f64 {
    drop_page_cache(dir);
    let cache = open(dir, keys, path);
    let mut rng = StdRng::seed_from_u64(7);
    let started = Instant::now();
    for _ in 0..COLD_GETS {
        let k = rng.random_range(0..keys);
        assert_eq!(
            cache.get(&k.to_le_bytes()).as_ref(),
            Some(&expected[k as usize])
        );
    }
    let rate = COLD_GETS as f64 / started.elapsed().as_secs_f64();
    cache.close().unwrap();
    rate
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list`: no benchmarks to list by name
    }
    let keys = env("L2_READS_MIB", 256) * (1 << 20) / VALUE as u64;
    let rounds = env("L2_READS_ROUNDS", 3);
    let base =
        tempfile::tempdir_in(std::env::var("L2_BENCH_DIR").unwrap_or_else(|_| ".".into())).unwrap();
    let dir = base.path().join("larder");
    let expected: Vec<Bytes> = (0..keys).map(value_of).collect();
    fill(&dir, keys);
    println!("{keys} keys of {VALUE} bytes; {GETS_PER_THREAD} timed gets a thread");
    println!("| round | read path | threads | p50 (µs) | p99 (µs) | gets/s |");
    println!("|---|---|---|---|---|---|");
    let mut colds = Vec::new();
    for round in 1..=rounds {
        // Alternate which path goes first, round by round.
        let order = if round % 2 == 1 {
            [ReadPath::Mmap, ReadPath::Pread]
        } else {
            [ReadPath::Pread, ReadPath::Mmap]
        };
        let only = std::env::var("L2_READS_ONLY").ok();
        let order: Vec<ReadPath> = order
            .into_iter()
            .filter(|p| only.as_deref().is_none_or(|o| o == p.name()))
            .collect();
        for &path in &order {
            let cache = open(&dir, keys, path);
            assert_eq!(cache.stats().disk.unwrap().read_path, path.name());
            for k in 0..keys {
                let v = cache.get(&k.to_le_bytes());
                assert_eq!(v.as_ref(), Some(&expected[k as usize]));
            }
            for threads in [1, 2] {
                let w = warm(&cache, keys, threads, &expected);
                println!(
                    "| {round} | {} | {threads} | {:.2} | {:.2} | {:.0} |",
                    path.name(),
                    w.p50_us,
                    w.p99_us,
                    w.gets_per_s
                );
            }
            cache.close().unwrap();
            std::thread::sleep(Duration::from_millis(500));
        }
        for &path in order.iter().filter(|_| env("L2_READS_COLD", 1) == 1) {
            colds.push((round, path.name(), cold(&dir, keys, path, &expected)));
        }
    }
    println!("\n| round | read path | cold gets/s |\n|---|---|---|");
    for (round, path, rate) in colds {
        println!("| {round} | {path} | {rate:.0} |");
    }
}
