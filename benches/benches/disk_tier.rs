//! The disk tier against the device and against foyer's hybrid cache, in one
//! run on one file system, for a shared, noisy machine: the three writers run
//! in alternating rounds and each round yields paired ratios.
//!
//! ```text
//! cargo bench -p larder-benches --bench disk_tier                 # 1 GiB a writer a round, 3 rounds
//! L2_BENCH_MIB=2048 L2_BENCH_ROUNDS=5 cargo bench -p larder-benches --bench disk_tier
//! L2_BENCH_ONLY=memory cargo bench -p larder-benches --bench disk_tier   # DRAM per L2-only entry
//! L2_BENCH_ONLY=restart cargo bench -p larder-benches --bench disk_tier  # reopen and recovery times
//! L2_BENCH_SETTLE_MS=3000 cargo bench -p larder-benches --bench disk_tier # a longer pause between phases
//! L2_BENCH_WARM=0 cargo bench -p larder-benches --bench disk_tier      # no page-cache warm-up (see `warm_memory`)
//! mkfifo /tmp/ctl; L2_BENCH_PERF_CTL=/tmp/ctl L2_BENCH_ONLY=larder \
//!   perf record -g -D -1 --control fifo:/tmp/ctl target/release/deps/disk_tier-* --bench
//! ```
//! * **Device**, each writer with an `fdatasync` every 64 MiB (larder's
//!   segment size, where it syncs too). *Direct*: 8 MiB `O_DIRECT` writes, the
//!   raw device. *Buffered*: the best of three sequential writers through the
//!   page cache, the write method larder uses (1 and 4 MiB writes with each
//!   chunk's writeback started at once, and 8 MiB writes left to the kernel).
//!   Each measured just before and just after the larder run it is the
//!   baseline of (direct for larder's direct writes, buffered for its
//!   buffered ones; the two blocks alternate order by round); the round's
//!   figure is their mean, because this machine's disk speed drifts. Every
//!   timed phase starts after a `sync(2)`, so none pays for another's
//!   writeback, and writes into memory its page cache was just using (see
//!   `warm_memory`: on this virtual machine, memory left free for 2 s costs
//!   ten times as much to write into first).
//! * **Insert**: 4 KiB incompressible values under distinct keys into a cache
//!   whose memory tier holds 4 MiB, so the bytes must go to disk, after an
//!   untimed ramp of 8 segments (a running cache's segment buffers are long
//!   allocated: a fresh one's first-touch page faults are not the rate it
//!   sustains; foyer gets the same ramp). larder:
//!   `WriteBehind`, timed up to `sync()` returning (all on stable storage).
//!   foyer: `WriteOnInsertion`, timed up to its flush tasks finishing
//!   (`storage().wait()`; foyer has no `sync`). foyer drops writes when its
//!   flushers are behind, so the share of keys a reader finds is shown: its
//!   MiB/s counts the bytes offered, not the bytes kept.
//! * **L2 hit latency**: 100,000 gets of random keys not in the memory tier,
//!   from the page cache (the data was just written), each timed.
//!
//! The disk tier's directory is under `L2_BENCH_DIR` (default: the system's
//! temporary directory). Results: docs/benchmarks.md §6.

#[path = "disk_tier/compressible.rs"]
mod compressible;

use bytes::Bytes;
use foyer::{BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder};
use larder::{Backpressure, Cache, WritePolicy};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

const VALUE: usize = 4096;
const MEMORY: u64 = 4 << 20;
const SEGMENT: u64 = 64 << 20;
const READS: usize = 100_000;
/// Bytes larder inserts, untimed, before its timed insert phase.
const RAMP: u64 = 8 * SEGMENT;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// 256 distinct incompressible values, used in turn.
fn values() -> Vec<Bytes> {
    let mut rng = StdRng::seed_from_u64(1);
    (0..256)
        .map(|_| Bytes::from((0..VALUE).map(|_| rng.random::<u8>()).collect::<Vec<_>>()))
        .collect()
}

/// Readies the machine for a timed phase that writes `bytes` through the
/// page cache of `dir`. First the previous phase's dirty pages reach the
/// device, so no phase pays for another's writeback: a `sync(2)`, then a
/// pause of `L2_BENCH_SETTLE_MS` (default 200). On a virtual disk a long
/// pause lets the host drain its own cache, and the device is then faster
/// for a while (docs/benchmarks.md §6). Then [`warm_memory`], unless
/// `L2_BENCH_WARM=0`.
fn settle(dir: &Path, bytes: u64) {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::thread::sleep(Duration::from_millis(env("L2_BENCH_SETTLE_MS", 200)));
    if env("L2_BENCH_WARM", 1) != 0 {
        warm_memory(dir, bytes);
    }
}

/// Gives the next phase's page cache memory that was in use a moment ago.
///
/// The guest these benchmarks run on reports memory that has been free for
/// about 2 s to its host (free page reporting), and the first write into
/// such memory costs about ten times a write into memory freed just before
/// (`dd` of 1.5 GiB into a new file: 2.0–3.8 s of system time against
/// 0.27–0.40 s, docs/benchmarks.md §6). A device writer that rewrites the file
/// the previous writer just deleted gets warm memory; larder's new segment
/// files, written after its ramp and pause, got cold memory. So before every
/// timed phase this writes `bytes` and an eighth more into a file's page
/// cache and deletes it unsynced (the dirty pages are dropped, no device
/// I/O), and the phase reuses that memory, as a running cache does: its page
/// cache is full, and new pages come from old ones.
fn warm_memory(dir: &Path, bytes: u64) {
    let path = dir.join("warm.bin");
    let file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0x5a_u8; 8 << 20];
    let mut at = 0;
    while at < bytes + bytes / 8 {
        file.write_all_at(&chunk, at).unwrap();
        at += chunk.len() as u64;
    }
    drop(file);
    std::fs::remove_file(&path).unwrap();
}

/// CPU time the calling thread has used, in seconds.
fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to; the clock id is a constant
    // every Linux kernel knows.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// With `L2_BENCH_PERF_CTL=FIFO`, turns a `perf record -D -1 --control
/// fifo:FIFO` on and off around larder's timed insert phase, so a profile
/// holds that phase alone (docs/benchmarks.md §6).
fn perf_control(command: &str) {
    if let Some(fifo) = std::env::var_os("L2_BENCH_PERF_CTL") {
        std::fs::write(fifo, format!("{command}\n")).unwrap();
    }
}

/// A sequential writer the device is measured with: every one writes 64 MiB
/// (a segment's worth) at a time between `fdatasync`s.
#[derive(Clone, Copy)]
struct Writer {
    /// Bytes a write.
    chunk: usize,
    /// `O_DIRECT`: no page cache (like `dd oflag=direct`), the raw device.
    /// Falls back to buffered where the file system refuses it.
    direct: bool,
    /// Start each chunk's writeback at once (`sync_file_range`), as larder does.
    early_writeback: bool,
}

/// The raw device: 8 MiB direct writes.
const DIRECT: Writer = Writer {
    chunk: 8 << 20,
    direct: true,
    early_writeback: false,
};

/// Sequential writers through the page cache, the write method larder uses
/// (its L2 hits are served from the page cache): 1 and 4 MiB writes with
/// early writeback (4 MiB is larder's own pattern), and 8 MiB writes left to
/// the kernel until the `fdatasync`. The buffered baseline of a round is the
/// best of them, so no one choice of pattern flatters larder.
const BUFFERED: [Writer; 3] = [
    Writer {
        chunk: 1 << 20,
        direct: false,
        early_writeback: true,
    },
    Writer {
        chunk: 4 << 20,
        direct: false,
        early_writeback: true,
    },
    Writer {
        chunk: 8 << 20,
        direct: false,
        early_writeback: false,
    },
];

/// The device's sequential write bandwidth in MiB/s with `writer`, an
/// `fdatasync` every segment's worth (64 MiB).
fn device_mib_s(dir: &Path, bytes: u64, writer: Writer) -> f64 {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let Writer {
        chunk: chunk_len,
        direct,
        early_writeback,
    } = writer;
    let path = dir.join("device.bin");
    let open = |flags| {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(flags)
            .open(&path)
    };
    let file = if direct {
        open(libc::O_DIRECT).or_else(|_| open(0))
    } else {
        open(0)
    }
    .unwrap();
    // A buffer on huge pages, as larder's segment images are: direct writes
    // from 4 KiB pages ran at half the rate on this machine, and the device's
    // baseline must be the best it does.
    let layout = std::alloc::Layout::from_size_align(chunk_len, 2 << 20).unwrap();
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { std::alloc::alloc(layout) };
    assert!(!ptr.is_null());
    // SAFETY: the range is the allocation above; the advice only changes how
    // the kernel backs it.
    unsafe { libc::madvise(ptr.cast(), chunk_len, libc::MADV_HUGEPAGE) };
    // SAFETY: `ptr` points to `chunk_len` writable bytes, owned here until the
    // dealloc below.
    let chunk = unsafe { std::slice::from_raw_parts_mut(ptr, chunk_len) };
    let mut rng = StdRng::seed_from_u64(2);
    chunk.iter_mut().for_each(|b| *b = rng.random());
    let t = Instant::now();
    let mut at = 0;
    while at < bytes {
        file.write_all_at(chunk, at).unwrap();
        if early_writeback {
            // SAFETY: a plain syscall on an open descriptor; no memory is passed.
            unsafe {
                libc::sync_file_range(
                    file.as_raw_fd(),
                    at as libc::off64_t,
                    chunk_len as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
        }
        at += chunk_len as u64;
        if at % SEGMENT == 0 {
            file.sync_data().unwrap();
        }
    }
    file.sync_data().unwrap();
    let s = t.elapsed().as_secs_f64();
    // SAFETY: allocated above with this layout; `chunk` is not used after.
    unsafe { std::alloc::dealloc(ptr, layout) };
    drop(file);
    std::fs::remove_file(&path).unwrap();
    bytes as f64 / s / 1048576.0
}

struct Run {
    mib_s: f64,
    /// Share of the inserted keys a reader finds afterwards (memory or disk).
    kept: f64,
    p50_us: f64,
    p99_us: f64,
    l2_reads: usize,
    /// With direct writes, the first reads come from the device: their
    /// p50 / p99. (`p50_us` / `p99_us` are then a second pass over the same
    /// keys, from the page cache.)
    cold: Option<(f64, f64)>,
    /// larder only: the share of the timed phase its flusher spent in
    /// writes (how busy it kept the device), and the rate the device took
    /// those writes at (bytes written over the time in writes).
    flusher: Option<(f64, f64)>,
    /// larder only: the inserting thread's CPU time an insert, in ns, and
    /// the share of the insert loop it was on a CPU (the rest it waited:
    /// backpressure, or another thread had the CPU).
    inserter: Option<(f64, f64)>,
    /// larder only: MiB of memory in its segment images and spare chunks
    /// after the timed phase (`stats().disk.buffer_bytes`).
    buffers: Option<f64>,
    /// larder only: value bytes stored per value byte inserted in the timed
    /// phase, and the values stored raw because compression's budget was spent.
    stored: Option<(f64, u64)>,
}

/// Removes a dropped cache's directory: the cache finishes closing on its
/// own thread, so its files may still be changing for a moment.
fn remove_closed(dir: &Path) {
    for _ in 0..100 {
        if std::fs::remove_dir_all(dir).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("cannot remove {}", dir.display());
}

fn percentiles(mut ns: Vec<u64>) -> (f64, f64) {
    ns.sort_unstable();
    let at = |p: f64| ns[((ns.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    (at(0.50), at(0.99))
}

fn larder_run(dir: &Path, keys: u64, values: &[Bytes], direct: bool) -> Run {
    larder_run_with(
        dir,
        keys,
        values,
        direct,
        larder::DEFAULT_COMPRESSION_BUDGET,
    )
}

/// [`larder_run`] with a compression budget.
fn larder_run_with(dir: &Path, keys: u64, values: &[Bytes], direct: bool, budget: f64) -> Run {
    let cache = Cache::builder()
        .memory_capacity(MEMORY)
        .disk(
            dir.join("larder"),
            2 * keys * VALUE as u64 + RAMP + 4 * SEGMENT,
        )
        .segment_size(SEGMENT)
        .direct_writes(direct)
        .write_policy(WritePolicy::WriteBehind)
        // Measure what the disk sustains: wait for the flusher, never refuse.
        .disk_backpressure(Backpressure::Wait(Duration::from_secs(30)))
        .compression_budget(budget)
        .build()
        .unwrap();
    let insert = |keys: std::ops::Range<u64>| {
        for k in keys {
            cache
                .insert(&k.to_le_bytes(), values[k as usize % values.len()].clone())
                .unwrap();
        }
    };
    // Untimed ramp: the first segments' buffers are fresh memory, a page
    // fault for every 4 KiB, which a running cache has long paid.
    let ramp = keys..keys + RAMP / VALUE as u64;
    insert(ramp.clone());
    cache.sync().unwrap();
    settle(dir, keys * VALUE as u64); // the timed phase starts as the device writers' do
    let before = cache.stats().disk.unwrap();
    perf_control("enable");
    let t = Instant::now();
    let cpu = thread_cpu_s();
    insert(0..keys);
    let (cpu, loop_s) = (thread_cpu_s() - cpu, t.elapsed().as_secs_f64());
    cache.sync().unwrap();
    let elapsed = t.elapsed();
    perf_control("disable");
    let mib_s = (keys * VALUE as u64) as f64 / elapsed.as_secs_f64() / 1048576.0;
    let after = cache.stats().disk.unwrap();
    let buffers = Some(after.buffer_bytes as f64 / 1048576.0);
    let in_writes = after.write_time - before.write_time;
    let written = (after.bytes_written - before.bytes_written) as f64 / 1048576.0;
    let flusher = Some((
        in_writes.as_secs_f64() / elapsed.as_secs_f64(),
        written / in_writes.as_secs_f64(),
    ));
    let stored = Some((
        (after.value_bytes_stored - before.value_bytes_stored) as f64
            / (after.value_bytes_in - before.value_bytes_in) as f64,
        after.compression_paced - before.compression_paced,
    ));
    let refused = cache.stats().disk.unwrap().refused_writes;
    assert_eq!(refused, 0, "larder refused writes");
    // Random keys not in memory, each get timed. Written direct, the first
    // pass reads the device and a second pass over the same keys the page
    // cache; written buffered, the page cache already holds them.
    let pass = || {
        let mut rng = StdRng::seed_from_u64(3);
        let mut ns = Vec::with_capacity(READS);
        let mut kept = 0;
        for _ in 0..READS {
            let k = rng.random_range(0..keys).to_le_bytes();
            // Every hit is timed: the memory tier holds about 1,000 of the
            // keys, so under 0.5% of the hits are memory's, which moves a
            // percentile by less than half a point. (Telling them apart by
            // `stats()` between the gets would disturb the caches each get
            // runs in.)
            let t = Instant::now();
            let v = cache.get(&k);
            let dt = t.elapsed();
            if let Some(v) = v {
                assert_eq!(v.len(), VALUE);
                kept += 1;
                ns.push(dt.as_nanos() as u64);
            }
        }
        (kept, ns)
    };
    let cold = direct.then(|| percentiles(pass().1));
    let (kept, ns) = pass();
    let l2_reads = ns.len();
    let (p50_us, p99_us) = percentiles(ns);
    Run {
        mib_s,
        kept: kept as f64 / READS as f64,
        p50_us,
        p99_us,
        l2_reads,
        cold,
        flusher,
        inserter: Some((cpu * 1e9 / keys as f64, cpu / loop_s)),
        buffers,
        stored,
    }
}

fn foyer_run(rt: &tokio::runtime::Runtime, dir: &Path, keys: u64, values: &[Bytes]) -> Run {
    rt.block_on(async {
        let device = FsDeviceBuilder::new(dir.join("foyer"))
            .with_capacity((2 * keys * VALUE as u64 + RAMP + 4 * SEGMENT) as usize)
            .build()
            .unwrap();
        let hybrid: HybridCache<u64, Bytes> = HybridCacheBuilder::new()
            .with_policy(foyer::HybridCachePolicy::WriteOnInsertion)
            .memory(MEMORY as usize)
            .with_weighter(|_k, v: &Bytes| v.len())
            .storage()
            .with_engine_config(BlockEngineConfig::new(device).with_block_size(SEGMENT as usize))
            .build()
            .await
            .unwrap();
        let insert = |keys: std::ops::Range<u64>| {
            for k in keys {
                hybrid.insert(k, values[k as usize % values.len()].clone());
            }
        };
        // The same untimed ramp as larder's.
        insert(keys..keys + RAMP / VALUE as u64);
        hybrid.storage().wait().await;
        settle(dir, keys * VALUE as u64);
        let t = Instant::now();
        insert(0..keys);
        hybrid.storage().wait().await;
        let mib_s = (keys * VALUE as u64) as f64 / t.elapsed().as_secs_f64() / 1048576.0;
        let mut rng = StdRng::seed_from_u64(3);
        let mut ns = Vec::with_capacity(READS);
        let mut kept = 0;
        for _ in 0..READS {
            let k = rng.random_range(0..keys);
            if hybrid.memory().contains(&k) {
                kept += 1;
                continue;
            }
            let t = Instant::now();
            let v = hybrid.get(&k).await.unwrap();
            let dt = t.elapsed();
            if let Some(v) = v {
                assert_eq!(v.value().len(), VALUE);
                kept += 1;
                ns.push(dt.as_nanos() as u64);
            }
        }
        hybrid.close().await.unwrap();
        let l2_reads = ns.len();
        let (p50_us, p99_us) = if ns.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            percentiles(ns)
        };
        Run {
            mib_s,
            kept: kept as f64 / READS as f64,
            p50_us,
            p99_us,
            l2_reads,
            cold: None,
            flusher: None,
            inserter: None,
            buffers: None,
            stored: None,
        }
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// DRAM per entry that lives only on disk: the resident set's growth over
/// small entries written through a 64 KiB memory tier (what grows is the disk
/// tier's index; segment buffers are recycled and stay the same), at several
/// fill levels: a hash table's load factor swings between its doublings.
fn memory_per_l2_entry(base: &Path) {
    const BASE: u64 = 200_000;
    let dir = tempfile::tempdir_in(base).unwrap();
    let cache = Cache::builder()
        .memory_capacity(64 << 10)
        .disk(dir.path(), 2 << 30)
        .segment_size(4 << 20)
        .disk_backpressure(Backpressure::Wait(Duration::from_secs(30)))
        .build()
        .unwrap();
    let value = Bytes::from_static(&[7; 16]);
    let fill = |range: std::ops::Range<u64>| {
        for k in range {
            cache.insert(&k.to_le_bytes(), value.clone()).unwrap();
        }
        cache.sync().unwrap();
    };
    fill(0..BASE);
    let before = rss_bytes();
    println!(
        "| disk entries | RSS growth per L2-only entry (bytes) | index tables per entry (bytes) |"
    );
    println!("|---|---|---|");
    let mut at = BASE;
    for step in [300_000, 500_000, 1_000_000, 1_000_000, 1_000_000, 1_000_000] {
        fill(at..at + step);
        at += step;
        let disk = cache.stats().disk.unwrap();
        assert!(disk.entries * 1000 >= at * 999, "{disk:?}"); // 36-bit hash collisions aside
        let per = (rss_bytes() - before) as f64 / (at - BASE) as f64;
        let tables = disk.index_bytes as f64 / disk.entries as f64;
        println!("| {} | {per:.1} | {tables:.1} |", disk.entries);
    }
}

/// Reopening a directory of 1,000,000 entries (64-byte values, 64 MiB
/// segments): after a clean close (warm: the checkpoint is used) and as after
/// a crash (no checkpoint, the index rebuilt from the segment summaries alone).
/// Index entries rebuilt per second come from the recovery's own timer.
fn restart_times(base: &Path) {
    const N: u64 = 1_000_000;
    let dir = tempfile::tempdir_in(base).unwrap();
    let build = || {
        Cache::builder()
            .memory_capacity(16 << 20)
            .disk(dir.path(), 1 << 30)
            .segment_size(SEGMENT)
            .disk_backpressure(Backpressure::Wait(Duration::from_secs(30)))
            .build()
            .unwrap()
    };
    let cache = build();
    let value = Bytes::from_static(&[9; 64]);
    for k in 0..N {
        cache.insert(&k.to_le_bytes(), value.clone()).unwrap();
    }
    let t = Instant::now();
    cache.close().unwrap();
    let close_s = t.elapsed().as_secs_f64();
    println!("| open | entries | open (s) | index rebuilt (entries/s) | checkpoint |");
    println!("|---|---|---|---|---|");
    for crash in [false, false, true, true] {
        if crash {
            let _ = std::fs::remove_file(dir.path().join("CHECKPOINT"));
        }
        let t = Instant::now();
        let cache = build();
        let open_s = t.elapsed().as_secs_f64();
        let r = cache.stats().disk.unwrap().recovery;
        assert!(r.entries >= N - 100, "{r:?}");
        println!(
            "| {} | {} | {open_s:.3} | {:.1} M | {:?} |",
            if crash {
                "no checkpoint"
            } else {
                "after a clean close"
            },
            r.entries,
            r.entries as f64 / r.open_time.as_secs_f64() / 1e6,
            r.checkpoint
        );
        cache.close().unwrap();
    }
    println!("\nclose of 1,000,000 entries: {close_s:.3} s");
}

fn main() {
    let mib = env("L2_BENCH_MIB", 1024);
    let rounds = env("L2_BENCH_ROUNDS", 3) as usize;
    let base = std::env::var_os("L2_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let keys = mib * 1048576 / VALUE as u64;
    let values = values();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if std::env::var("L2_BENCH_ONLY").as_deref() == Ok("restart") {
        restart_times(&base);
        return;
    }
    if std::env::var("L2_BENCH_ONLY").as_deref() == Ok("memory") {
        memory_per_l2_entry(&base);
        return;
    }
    if std::env::var("L2_BENCH_ONLY").as_deref() == Ok("compressible") {
        compressible::run(&base, mib, rounds, keys, &values);
        return;
    }
    if std::env::var("L2_BENCH_ONLY").as_deref() == Ok("larder") {
        // For profiling: larder's insert and read phases alone.
        let dir = tempfile::tempdir_in(&base).unwrap();
        let direct = std::env::var_os("L2_BENCH_DIRECT").is_some();
        let l = larder_run(dir.path(), keys, &values, direct);
        let (busy, rate) = l.flusher.unwrap();
        let (ns, on_cpu) = l.inserter.unwrap();
        println!(
            "larder{} {:.0} MiB/s (flusher in writes {:.0}% of the time, at {rate:.0} MiB/s; inserting thread {ns:.0} ns of CPU an insert, on a CPU {:.0}% of its loop; write buffers {:.0} MiB), L2 hit p50 {:.1} µs p99 {:.1} µs{}",
            if direct { " (direct writes)" } else { "" },
            l.mib_s,
            busy * 100.0,
            on_cpu * 100.0,
            l.buffers.unwrap_or(0.0),
            l.p50_us,
            l.p99_us,
            l.cold.map_or(String::new(), |(p50, p99)| format!(
                "; first reads (device) p50 {p50:.1} µs p99 {p99:.1} µs"
            ))
        );
        return;
    }
    println!(
        "## Disk tier: {mib} MiB of {VALUE}-byte incompressible values a writer, {rounds} alternating rounds\n"
    );
    println!(
        "| round | direct MiB/s | buffered MiB/s (1 MiB / 4 MiB / 8 MiB = best) | larder MiB/s | larder direct MiB/s | foyer MiB/s | larder / buffered | larder direct / direct | foyer / buffered | larder kept | foyer kept | larder L2 p50 / p99 µs | larder direct L2 p50 / p99 µs, device then page cache | foyer L2 p50 / p99 µs | larder / larder direct: flusher in writes, at MiB/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let (mut larder_ratio, mut direct_ratio, mut foyer_ratio) = (vec![], vec![], vec![]);
    let (mut l99, mut d99, mut f99) = (vec![], vec![], vec![]);
    for round in 0..rounds {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let device = |writer| {
            settle(dir.path(), mib << 20);
            device_mib_s(dir.path(), mib << 20, writer)
        };
        let larder = |direct| {
            settle(dir.path(), 0); // larder_run settles before its timed phase
            let run = larder_run(dir.path(), keys, &values, direct);
            remove_closed(&dir.path().join("larder"));
            run
        };
        // Each larder run between its own baseline's writers, measured just
        // before and just after it (in mirrored order; a writer's figure is
        // the mean of the two), so no baseline is measured far from the run
        // it is compared with, and no run follows another method's writes.
        let block = |writers: &[Writer], direct: bool| {
            let before: Vec<f64> = writers.iter().map(|&w| device(w)).collect();
            let run = larder(direct);
            let mut after: Vec<f64> = writers.iter().rev().map(|&w| device(w)).collect();
            after.reverse();
            let means: Vec<f64> = before
                .iter()
                .zip(&after)
                .map(|(b, a)| (b + a) / 2.0)
                .collect();
            (means, run)
        };
        // Alternate which block goes first.
        let ((direct, d), (means, l)) = if round % 2 == 0 {
            let d = block(&[DIRECT], true);
            (d, block(&BUFFERED, false))
        } else {
            let l = block(&BUFFERED, false);
            (block(&[DIRECT], true), l)
        };
        let direct = direct[0];
        let buffered = means.iter().copied().fold(0.0, f64::max);
        let each: Vec<String> = means.iter().map(|m| format!("{m:.0}")).collect();
        settle(dir.path(), 0); // foyer_run settles before its timed phase
        let f = foyer_run(&rt, dir.path(), keys, &values);
        let (c50, c99) = d.cold.unwrap();
        let (lf, df) = (l.flusher.unwrap(), d.flusher.unwrap());
        println!(
            "| {round} | {direct:.0} | {} = {buffered:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.3} | {:.3} | {:.1} / {:.1} ({} reads) | {c50:.1} / {c99:.1}, then {:.1} / {:.1} | {:.1} / {:.1} ({} reads) | {:.0}% at {:.0} / {:.0}% at {:.0} |",
            each.join(" / "),
            l.mib_s,
            d.mib_s,
            f.mib_s,
            l.mib_s / buffered,
            d.mib_s / direct,
            f.mib_s / buffered,
            l.kept,
            f.kept,
            l.p50_us,
            l.p99_us,
            l.l2_reads,
            d.p50_us,
            d.p99_us,
            f.p50_us,
            f.p99_us,
            f.l2_reads,
            lf.0 * 100.0,
            lf.1,
            df.0 * 100.0,
            df.1
        );
        larder_ratio.push(l.mib_s / buffered);
        direct_ratio.push(d.mib_s / direct);
        foyer_ratio.push(f.mib_s / buffered);
        l99.push(l.p99_us);
        d99.push(d.p99_us);
        f99.push(f.p99_us);
    }
    println!(
        "\nmedians: larder / buffered {:.2}, larder direct / direct {:.2}, foyer / buffered {:.2}; L2 hit p99 from the page cache: larder {:.1} µs, larder direct {:.1} µs, foyer {:.1} µs",
        median(larder_ratio),
        median(direct_ratio),
        median(foyer_ratio),
        median(l99),
        median(d99),
        median(f99)
    );
}
