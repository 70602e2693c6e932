//! larder against quick_cache and moka on the goals' memory-tier workloads, built
//! for a shared, noisy machine: the caches run in alternating rounds and every
//! round yields a paired ratio, so drift in machine speed cancels out.
//!
//! ```text
//! cargo bench -p larder-benches --bench peers                  # everything
//! cargo bench -p larder-benches --bench peers -- throughput    # W1/W2 x 1/2 threads, paired rounds
//! cargo bench -p larder-benches --bench peers -- hit-ratio     # 2M requests, insert on miss, 10k and 100k entries
//! cargo bench -p larder-benches --bench peers -- memory        # RSS per entry, 1M entries of 64-byte values
//! cargo bench -p larder-benches --bench peers -- typed         # TypedCache<u64, Bytes> over the bytes core
//! cargo bench -p larder-benches --bench peers -- byte-keys     # against quick_cache keyed by Vec<u8>
//! ```
//! Environment: `PEERS_ROUNDS` (default 15) rounds per throughput cell.
//! Results: docs/benchmarks.md.

mod common;

use common::{CAPACITY, PEERS, VALUE_LEN, Value, build, run, streams, zipf_keys};

const OPS_PER_THREAD: usize = 500_000;

/// Operations per second of one run of `streams`.
fn ops_per_sec(cache: &dyn common::Peer, streams: &[Vec<(u64, bool)>], value: &Value) -> f64 {
    let ops: usize = streams.iter().map(Vec::len).sum();
    ops as f64 / run(cache, streams, value).as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn rounds() -> usize {
    std::env::var("PEERS_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(15)
}

/// Runs `peers` in alternating rounds on `streams`: each one's Mops/s in
/// every round.
fn rounds_of(
    peers: &[&str],
    streams: &[Vec<(u64, bool)>],
    value: &Value,
    rounds: usize,
) -> Vec<Vec<f64>> {
    let caches: Vec<_> = peers.iter().map(|p| build(p, CAPACITY)).collect();
    for c in &caches {
        run(c.as_ref(), streams, value); // fill
    }
    let mut speed = vec![Vec::new(); caches.len()];
    for _ in 0..rounds {
        for (i, c) in caches.iter().enumerate() {
            speed[i].push(ops_per_sec(c.as_ref(), streams, value) / 1e6);
        }
    }
    speed
}

/// The median, least and greatest of `a[i] / b[i]` over the rounds.
fn ratio(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let mut r: Vec<f64> = a.iter().zip(b).map(|(a, b)| a / b).collect();
    let (lo, hi) = r
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    (median(&mut r), lo, hi)
}

/// Runs `peers` in alternating rounds on `streams`: each one's median
/// Mops/s, and the median, least and greatest of peers[0] / peers[1] over
/// the paired rounds.
fn paired(
    peers: &[&str],
    streams: &[Vec<(u64, bool)>],
    value: &Value,
    rounds: usize,
) -> (Vec<f64>, f64, f64, f64) {
    let mut speed = rounds_of(peers, streams, value, rounds);
    let (r, lo, hi) = ratio(&speed[0], &speed[1]);
    let m = speed.iter_mut().map(|s| median(s)).collect();
    (m, r, lo, hi)
}

/// The typed layer (`TypedCache<u64, Bytes>`, raw codec) against the bytes
/// core it wraps, same keys (8 big-endian bytes) and values, paired rounds.
/// The core is given a copy of the value per insert, as the typed layer
/// makes one (the other tables insert one shared `Bytes` everywhere).
fn typed() {
    let rounds = rounds();
    let value = Value::new(vec![7u8; VALUE_LEN]);
    println!(
        "## Typed layer over the bytes core (Mops/s, median of {rounds} alternating rounds)\n"
    );
    println!(
        "| cell | larder (bytes, a copy per insert) | TypedCache<u64, Bytes> | typed / bytes | range |"
    );
    println!("|---|---|---|---|---|");
    for (workload, get_percent) in [("W1 90/10", 90), ("W2 50/50", 50)] {
        for threads in [1u64, 2] {
            let streams = streams(threads, OPS_PER_THREAD, get_percent);
            let (m, ratio, lo, hi) =
                paired(&["larder-typed", "larder-copy"], &streams, &value, rounds);
            println!(
                "| {workload} {threads}T | {:.2} | {:.2} | **{ratio:.3}x** | {lo:.3}..{hi:.3} |",
                m[1], m[0]
            );
        }
    }
    println!();
}

/// Hot-key detection on against off, same keys and values, paired rounds.
fn hot_keys() {
    let rounds = rounds();
    let value = Value::new(vec![7u8; VALUE_LEN]);
    println!("## Hot-key detection (Mops/s, median of {rounds} alternating rounds)\n");
    println!("| cell | larder | larder, hot keys tracked | tracked / not | range |");
    println!("|---|---|---|---|---|");
    for (workload, get_percent) in [("W1 90/10", 90), ("W2 50/50", 50)] {
        for threads in [1u64, 2] {
            let streams = streams(threads, OPS_PER_THREAD, get_percent);
            let (m, ratio, lo, hi) = paired(&["larder-hot", "larder"], &streams, &value, rounds);
            println!(
                "| {workload} {threads}T | {:.2} | {:.2} | **{ratio:.3}x** | {lo:.3}..{hi:.3} |",
                m[1], m[0]
            );
        }
    }
    println!();
}

/// Every peer on the same keys; larder against quick_cache holding the
/// same `Bytes`, and, given the caller's `Arc<[u8]>` values, larder's
/// cheapest insert of them against quick_cache holding `Arc<[u8]>`.
fn throughput() {
    let rounds = rounds();
    let value = Value::new(vec![7u8; VALUE_LEN]);
    let peers = [
        "larder",
        "quick_cache",
        "larder-arc",
        "quick_cache-arc",
        "moka",
    ];
    println!("## Throughput (Mops/s, median of {rounds} alternating rounds)\n");
    println!(
        "| cell | larder | quick_cache | larder / quick_cache (Bytes) | range | larder, from Arc | quick_cache, Arc | larder / quick_cache (Arc<[u8]>) | range | moka |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (workload, get_percent) in [("W1 90/10", 90), ("W2 50/50", 50)] {
        for threads in [1u64, 2] {
            let streams = streams(threads, OPS_PER_THREAD, get_percent);
            let mut speed = rounds_of(&peers, &streams, &value, rounds);
            let (r, lo, hi) = ratio(&speed[0], &speed[1]);
            let (ra, loa, hia) = ratio(&speed[2], &speed[3]);
            let m: Vec<f64> = speed.iter_mut().map(|s| median(s)).collect();
            println!(
                "| {workload} {threads}T | {:.2} | {:.2} | **{r:.2}x** | {lo:.2}..{hi:.2} | {:.2} | {:.2} | **{ra:.2}x** | {loa:.2}..{hia:.2} | {:.2} |",
                m[0], m[1], m[2], m[3], m[4]
            );
        }
    }
    println!();
}

/// larder against quick_cache keyed by byte strings (`Vec<u8>`, looked up
/// by `&[u8]`): what a byte key costs quick_cache, same values, paired rounds.
fn byte_keys() {
    let rounds = rounds();
    let value = Value::new(vec![7u8; VALUE_LEN]);
    println!("## Byte keys (Mops/s, median of {rounds} alternating rounds)\n");
    println!(
        "| cell | larder | quick_cache<Vec<u8>, Bytes> | quick_cache<u64, Bytes> | larder / byte-keyed | range | larder / u64-keyed |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (workload, get_percent) in [("W1 90/10", 90), ("W2 50/50", 50)] {
        for threads in [1u64, 2] {
            let streams = streams(threads, OPS_PER_THREAD, get_percent);
            let peers = ["larder", "quick_cache-bytes", "quick_cache"];
            let mut speed = rounds_of(&peers, &streams, &value, rounds);
            let (r, lo, hi) = ratio(&speed[0], &speed[1]);
            let (ru, _, _) = ratio(&speed[0], &speed[2]);
            let m: Vec<f64> = speed.iter_mut().map(|s| median(s)).collect();
            println!(
                "| {workload} {threads}T | {:.2} | {:.2} | {:.2} | **{r:.2}x** | {lo:.2}..{hi:.2} | {ru:.2}x |",
                m[0], m[1], m[2]
            );
        }
    }
    println!();
}

fn hit_ratio() {
    println!(
        "## Hit ratio (1 thread, get then insert on miss, 2,000,000 requests, Zipf 0.99 over 1M keys)\n"
    );
    println!("| capacity | larder | quick_cache | moka |");
    println!("|---|---|---|---|");
    let keys = zipf_keys(7, 2_000_000);
    let value = Value::new(vec![7u8; VALUE_LEN]);
    for capacity in [10_000u64, 100_000] {
        let row: Vec<String> = PEERS
            .iter()
            .map(|p| {
                let cache = build(p, capacity);
                let hits = keys
                    .iter()
                    .filter(|&&k| {
                        let hit = cache.get(k);
                        if !hit {
                            cache.insert(k, &value);
                        }
                        hit
                    })
                    .count();
                format!("{:.2}%", 100.0 * hits as f64 / keys.len() as f64)
            })
            .collect();
        println!("| {capacity} | {} |", row.join(" | "));
    }
    println!();
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// In a fresh process: RSS growth per entry held after inserting 1M distinct keys,
/// each with its own 64-byte value (values included, as in the goals).
fn memory_child(name: &str) {
    const N: u64 = 1_000_000;
    let before = rss_bytes();
    let cache = build(name, N);
    let arc = name.ends_with("-arc");
    let empty: std::sync::Arc<[u8]> = std::sync::Arc::from(Vec::new());
    for i in 0..N {
        // Each value its own allocation, in the form this peer holds.
        let v = vec![i as u8; VALUE_LEN];
        let value = if arc {
            Value {
                bytes: bytes::Bytes::new(),
                arc: std::sync::Arc::from(v),
            }
        } else {
            Value {
                bytes: bytes::Bytes::from(v),
                arc: empty.clone(),
            }
        };
        cache.insert(i, &value);
    }
    let held = (0..N).filter(|&k| cache.get(k)).count() as u64;
    let after = rss_bytes();
    println!("{held} {}", (after - before) / held.max(1));
}

fn memory() {
    println!(
        "## Memory (RSS growth per entry held, 1,000,000 distinct u64 keys, 64-byte values: `Bytes`, or `Arc<[u8]>` for the -arc rows)\n"
    );
    println!("| cache | entries held | bytes per entry (values included) |");
    println!("|---|---|---|");
    let exe = std::env::current_exe().unwrap();
    for p in [
        "larder",
        "quick_cache",
        "larder-arc",
        "quick_cache-arc",
        "quick_cache-bytes",
        "moka",
    ] {
        let out = std::process::Command::new(&exe)
            .args(["memory-child", p])
            .output()
            .expect("run the memory child");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut it = text.split_whitespace();
        let (held, per) = (it.next().unwrap_or("?"), it.next().unwrap_or("?"));
        println!("| {p} | {held} | {per} |");
    }
    println!("\n(Of which each value's own allocation is 64 bytes + 16 of allocator overhead.)\n");
}

/// One cache, one cell, 20 rounds: for `perf stat` and profilers.
fn solo(name: &str, get_percent: u32, threads: u64) {
    let value = Value::new(vec![7u8; VALUE_LEN]);
    let streams = streams(threads, OPS_PER_THREAD, get_percent);
    let cache = build(name, CAPACITY);
    if std::env::var_os("SOLO_FILL").is_some() {
        // Filled first (a W2 stream), so a run of gets only has hits.
        run(
            cache.as_ref(),
            &common::streams(threads, OPS_PER_THREAD, 50),
            &value,
        );
    }
    let rounds = std::env::var("SOLO_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let mut speeds: Vec<f64> = (0..rounds)
        .map(|_| ops_per_sec(cache.as_ref(), &streams, &value) / 1e6)
        .collect();
    println!("{name}: median {:.2} Mops/s", median(&mut speeds));
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    match args.first().map(String::as_str) {
        Some("memory-child") => memory_child(&args[1]),
        Some("solo") => solo(&args[1], args[2].parse().unwrap(), args[3].parse().unwrap()),
        Some("throughput") => throughput(),
        Some("hit-ratio") => hit_ratio(),
        Some("memory") => memory(),
        Some("typed") => typed(),
        Some("byte-keys") => byte_keys(),
        Some("hot-keys") => hot_keys(),
        _ => {
            throughput();
            hit_ratio();
            memory();
        }
    }
}
