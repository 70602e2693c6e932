//! Corruption under an open tier, injected I/O faults, backpressure, bad settings.

use super::*;

/// Random bit flips, zeroed ranges and truncations of sealed segment files under
/// an open tier, while two reader threads read every key: every read is the
/// right value or a miss, never wrong bytes, a panic or a crash (a file
/// truncated under its map), and damage to a record that is read is counted.
#[test]
fn corruption_and_truncation_under_an_open_tier_are_misses() {
    let trials = std::env::var("LARDER_CORRUPTION_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1000u32);
    let mut rng = StdRng::seed_from_u64(0xC0FFEE);
    let mut trial = 0;
    let (mut detected, mut faulted) = (0u64, 0u64);
    while trial < trials {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(config(dir.path(), 64)).unwrap();
        for key in 0..400u32 {
            tier.put(&k(key), &value(key, 0, 400), 0).unwrap();
        }
        tier.sync().unwrap();
        let files = segment_files(dir.path());
        // Damage sealed files only (the last one is the active segment).
        let sealed = &files[..files.len() - 1];
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            for t in 0..2u32 {
                let (tier, stop) = (&tier, &stop);
                s.spawn(move || {
                    let mut key = t;
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(v) = tier.get(&k(key), 0) {
                            assert_eq!(
                                v,
                                value(key, 0, 400),
                                "a reader got wrong bytes for key {key}"
                            );
                        }
                        key = (key + 7) % 400;
                    }
                });
            }
            let _stop = StopOnDrop(&stop);
            for _ in 0..50 {
                let path = &sealed[rng.random_range(0..sealed.len())];
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .unwrap();
                let len = f.metadata().unwrap().len();
                if len == 0 {
                    continue; // already truncated away
                }
                match rng.random_range(0..3) {
                    0 => {
                        let at = rng.random_range(0..len);
                        let mut b = [0u8];
                        f.read_exact_at(&mut b, at).unwrap();
                        b[0] ^= 1 << rng.random_range(0..8);
                        f.write_all_at(&b, at).unwrap();
                    }
                    1 => {
                        let at = rng.random_range(0..len);
                        let n = rng.random_range(1..512).min(len - at);
                        f.write_all_at(&vec![0u8; n as usize], at).unwrap();
                    }
                    _ => f.set_len(rng.random_range(0..len)).unwrap(),
                }
                for key in 0..400u32 {
                    if let Some(v) = tier.get(&k(key), 0) {
                        assert_eq!(
                            v,
                            value(key, 0, 400),
                            "trial {trial}: wrong bytes for key {key}"
                        );
                    }
                }
                trial += 1;
            }
        });
        let stats = tier.stats();
        detected += stats.corrupt_records;
        faulted += stats.faulted_segments;
    }
    eprintln!(
        "{trials} damages under an open tier ({:?} reads): {detected} damaged reads counted, {faulted} segments faulted under their maps",
        test_read_path()
    );
    assert!(
        detected > 0,
        "damage to records that were read must be counted"
    );
    if test_read_path() == ReadPath::Mmap {
        assert!(faulted > 0, "truncations under maps must have faulted");
    }
}

#[test]
fn a_failed_write_or_sync_is_reported_never_acknowledged() {
    for fail_sync in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let io = Arc::new(Faulty::new(test_io()));
        let tier = DiskTier::open(DiskConfig {
            io: io.clone(),
            ..config(dir.path(), 16)
        })
        .unwrap();
        tier.put(b"before", b"fine", 0).unwrap();
        tier.sync().unwrap();
        if fail_sync {
            io.fail_syncs_after(0);
        } else {
            io.fail_writes_after(0);
        }
        tier.put(b"after", b"doomed", 0).unwrap();
        let err = tier.sync().unwrap_err();
        assert!(matches!(err, DiskError::Failed(_)), "{err}");
        assert!(tier.stats().failure.is_some());
        // It stops writing, says so, and still serves what it has.
        assert!(matches!(
            tier.put(b"later", b"x", 0),
            Err(DiskError::Failed(_))
        ));
        assert!(matches!(tier.sync(), Err(DiskError::Failed(_))));
        assert_eq!(tier.get(b"before", 0).unwrap(), "fine");
    }
}

#[test]
fn backpressure_refuses_and_counts_when_the_flusher_is_behind() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(Faulty::new(test_io()));
    let tier = DiskTier::open(DiskConfig {
        io: io.clone(),
        backpressure: Backpressure::Refuse,
        max_frozen: 1,
        ..config(dir.path(), 64)
    })
    .unwrap();
    // Stall the flusher: every write fails, so frozen segments pile up.
    io.fail_writes_after(0);
    let mut refused = 0;
    for key in 0..2000u32 {
        match tier.put(&k(key), &value(key, 0, 500), 0) {
            Ok(()) => {}
            Err(DiskError::Refused | DiskError::Failed(_)) => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(refused > 0);
    let s = tier.stats();
    assert!(s.refused_writes > 0 || s.failure.is_some(), "{s:?}");
}

/// Ends a stall of `Faulty` writes however a test ends, or the tier's drop
/// would wait forever for its flusher.
struct Release(Arc<Faulty>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.stall(false);
    }
}

/// A wait for the flusher as long as the clock allows (`Duration::MAX`) is
/// a wait without a deadline, not an overflow: the producer waits out a
/// stalled flusher and goes on once it moves.
#[test]
fn an_unbounded_backpressure_wait_waits_for_the_flusher() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(Faulty::new(test_io()));
    let tier = Arc::new(
        DiskTier::open(DiskConfig {
            io: io.clone(),
            backpressure: Backpressure::Wait(Duration::MAX),
            max_frozen: 1,
            ..config(dir.path(), 64)
        })
        .unwrap(),
    );
    io.stall(true);
    let release = Release(io.clone());
    let writer = {
        let tier = Arc::clone(&tier);
        std::thread::spawn(move || {
            for key in 0..400u32 {
                tier.put(&k(key), &value(key, 0, 500), 0).unwrap();
            }
        })
    };
    // The flusher is stalled on its first write: the writer fills the
    // queue and waits.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !writer.is_finished(),
        "it waits while the flusher is stalled"
    );
    assert!(tier.stats().queued_segments >= 1);
    drop(release);
    writer.join().expect("no overflow, no panic");
    tier.sync().unwrap();
    for key in 0..400u32 {
        assert_eq!(tier.get(&k(key), 0).unwrap(), value(key, 0, 500));
    }
    assert_eq!(tier.stats().refused_writes, 0);
}

#[test]
fn bad_configuration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bad = |c: DiskConfig| DiskTier::open(c).err().expect("refused");
    assert!(matches!(
        bad(DiskConfig {
            segment_size: 100,
            ..config(dir.path(), 8)
        }),
        DiskError::Config(_)
    ));
    assert!(matches!(bad(config(dir.path(), 2)), DiskError::Config(_)));
    // Direct writes need whole 4 KiB blocks in a segment.
    assert!(matches!(
        bad(DiskConfig {
            segment_size: SEG + 512,
            direct: true,
            ..config(dir.path(), 8)
        }),
        DiskError::Config(_)
    ));
    assert!(
        DiskTier::open(DiskConfig {
            segment_size: SEG + 512,
            direct: false,
            ..config(dir.path(), 8)
        })
        .is_ok(),
        "the same size is fine without direct writes"
    );
    let too_big = value(1, 1, SEG as usize); // incompressible
    let other = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(config(other.path(), 8)).unwrap();
    assert!(matches!(
        tier.put(b"k", &too_big, 0),
        Err(DiskError::TooLarge(_))
    ));
}

/// Through the cache: after a write or fsync error the disk tier reports the
/// failure (stats, `sync()`), and the memory tier keeps serving reads, inserts
/// and removes with the right bytes.
/// Contract promise 12: an insert the disk tier refused (its flusher was
/// behind) is not silently unpersisted. The next `sync()` writes it, if
/// memory still holds it; one memory let go of first is reported by a typed
/// error, once, and later syncs are `Ok` again.
#[test]
fn a_sync_writes_refused_inserts_or_says_what_was_not_persisted() {
    use crate::{Cache, Error};
    for evict in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let io = Arc::new(Faulty::new(test_io()));
        let open = |io: Arc<dyn Io>| {
            Cache::builder()
                .memory_capacity(if evict { 20 } else { 10_000 })
                .unit_weight()
                .disk(dir.path(), 64 * SEG)
                .segment_size(SEG)
                .disk_backpressure(Backpressure::Refuse)
                .disk_io(io)
                .build()
                .unwrap()
        };
        let cache = open(io.clone());
        let v = |i: u32| bytes::Bytes::from(value(i, 0, 2000));
        // A stalled device: the flush queue fills and inserts are refused.
        io.stall(true);
        for i in 0..300u32 {
            cache.insert(&k(i), v(i)).unwrap();
        }
        let refused = cache.stats().disk.unwrap().refused_writes;
        assert!(refused > 0, "the flusher was behind");
        io.stall(false);
        match cache.sync() {
            Ok(()) => assert!(!evict, "evicted unwritten inserts must be reported"),
            Err(Error::NotPersisted { unwritten, dropped }) => {
                assert!(
                    evict,
                    "all were in memory to be written: {unwritten} {dropped}"
                );
                assert_eq!(unwritten, 0);
                assert!(dropped > 0 && dropped <= refused, "{dropped} of {refused}");
            }
            Err(e) => panic!("sync: {e}"),
        }
        cache.sync().expect("reported once; nothing new since");
        cache.close().unwrap();
        // Every insert was either persisted or reported.
        let cache = open(Arc::new(Positional));
        let present = (0..300u32).filter(|&i| cache.get(&k(i)).is_some()).count();
        if !evict {
            assert_eq!(present, 300);
        }
        cache.close().unwrap();
    }
}

#[test]
fn a_failed_disk_tier_leaves_the_memory_tier_serving() {
    use crate::{Cache, Error};
    for fail_sync in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let io = Arc::new(Faulty::new(test_io()));
        let cache = Cache::builder()
            .memory_capacity(100)
            .unit_weight()
            .disk(dir.path(), 16 * SEG)
            .segment_size(SEG)
            .disk_io(io.clone())
            .build()
            .unwrap();
        let v = |i: u32| bytes::Bytes::from(value(i, 0, 200));
        for i in 0..300u32 {
            cache.insert(&k(i), v(i)).unwrap();
        }
        cache.sync().unwrap();
        assert!(cache.stats().disk.unwrap().healthy());
        if fail_sync {
            io.fail_syncs_after(0);
        } else {
            io.fail_writes_after(0);
        }
        for i in 300..400u32 {
            cache.insert(&k(i), v(i)).unwrap();
        }
        let err = cache.sync().unwrap_err();
        assert!(matches!(err, Error::Disk { .. }), "{err}");
        let disk = cache.stats().disk.unwrap();
        assert!(!disk.healthy(), "{disk:?}");
        assert!(disk.failure.is_some());
        assert!(cache.sync().is_err(), "never acknowledged later either");
        // Memory goes on: new inserts are served, removes hold, and whatever is
        // found (in memory, or on disk from before the failure) is right.
        for i in 1000..1050u32 {
            cache.insert(&k(i), v(i)).unwrap();
            assert_eq!(cache.get(&k(i)).unwrap(), v(i));
        }
        cache.remove(&k(1000));
        assert!(cache.get(&k(1000)).is_none());
        let mut found = 0;
        for i in 0..400u32 {
            if let Some(got) = cache.get(&k(i)) {
                assert_eq!(got, v(i), "key {i}");
                found += 1;
            }
        }
        assert!(found >= 50, "only {found} found");
        #[cfg(feature = "validate")]
        cache.validate();
    }
}

/// A sealed segment truncated by someone else while readers copy out of its
/// map: the process survives, reads of the segment become misses (the read
/// that found the fault counted), the segment's keys leave the index, and
/// the other segments read on.
#[test]
fn a_segment_truncated_under_its_map_mid_read_loop_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(config(dir.path(), 64)).unwrap();
    for key in 0..600u32 {
        tier.put(&k(key), &value(key, 0, 400), 0).unwrap();
    }
    tier.sync().unwrap();
    let sh = &*tier.shared;
    let sealed: Vec<u32> = sh.files.read().keys().copied().collect();
    assert!(sealed.len() >= 3, "{sealed:?}");
    let victim = sealed[1];
    let segment_of = |key: u32| sh.index.peek(h(key)).map(|l| l.segment);
    let (theirs, ours): (Vec<u32>, Vec<u32>) =
        (0..600u32).partition(|&key| segment_of(key) == Some(victim));
    assert!(!theirs.is_empty());
    // The readers read one key of the victim (its last record, far past the
    // cut) and every other segment's, so the victim's other keys can only
    // leave the index with the segment.
    let mut read_set = ours.clone();
    read_set.push(*theirs.last().unwrap());
    for &key in &read_set {
        tier.get(&k(key), 0).unwrap(); // each record's pages seen once
    }
    let reads = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (tier, stop, reads, read_set) = (&tier, &stop, &reads, &read_set);
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(t);
                while !stop.load(Ordering::Relaxed) {
                    let key = read_set[rng.random_range(0..read_set.len())];
                    if let Some(v) = tier.get(&k(key), 0) {
                        assert_eq!(v, value(key, 0, 400), "wrong bytes for key {key}");
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let _stop = StopOnDrop(&stop);
        while reads.load(Ordering::Relaxed) < 5_000 {
            std::thread::yield_now();
        }
        if tier.stats().read_path == "mmap" {
            assert!(tier.stats().maps >= 3, "the sealed segments are mapped");
        }
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join(segment::file_name(victim)))
            .unwrap()
            .set_len(4096)
            .unwrap();
        let at = reads.load(Ordering::Relaxed);
        while reads.load(Ordering::Relaxed) < at + 20_000 {
            std::thread::yield_now();
        }
    });
    let stats = tier.stats();
    if stats.read_path == "mmap" {
        assert!(
            theirs.iter().all(|&key| segment_of(key).is_none()),
            "the segment's keys left the index"
        );
    }
    for &key in &theirs {
        assert_eq!(
            tier.get(&k(key), 0),
            None,
            "key {key} of the truncated segment"
        );
    }
    for &key in &ours {
        assert_eq!(
            tier.get(&k(key), 0),
            Some(value(key, 0, 400).into()),
            "key {key}"
        );
    }
    assert!(
        stats.corrupt_records >= 1,
        "the damaged read is counted: {stats:?}"
    );
    if stats.read_path == "mmap" {
        assert_eq!(stats.faulted_segments, 1, "{stats:?}");
        assert_eq!(stats.entries, ours.len() as u64);
    }
}

/// Segment files of `dir` this process has mapped, from `/proc/self/maps`.
fn mapped_segments(dir: &std::path::Path) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let dir = dir.to_str().unwrap();
    let files: std::collections::BTreeSet<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with(dir) && p.ends_with(".seg"))
        .collect();
    files.len()
}

/// A bound of two maps over a dozen sealed segments: every key reads right,
/// and no more than two segments are mapped at a time.
#[test]
fn a_few_maps_serve_many_segments() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(DiskConfig {
        max_maps: 2,
        ..config(dir.path(), 64)
    })
    .unwrap();
    for key in 0..2000u32 {
        tier.put(&k(key), &value(key, 0, 400), 0).unwrap();
    }
    tier.sync().unwrap();
    assert!(tier.shared.files.read().len() >= 10);
    let mut rng = StdRng::seed_from_u64(5);
    for _ in 0..3 {
        for _ in 0..2000 {
            let key = rng.random_range(0..2000u32);
            assert_eq!(
                tier.get(&k(key), 0),
                Some(value(key, 0, 400).into()),
                "key {key}"
            );
            assert!(tier.stats().maps <= 2, "{}", tier.stats().maps);
            // As the kernel sees it, not only as the tier counts it.
            let mapped = mapped_segments(dir.path());
            assert!(mapped <= 2, "{mapped} segment files mapped");
        }
    }
    let stats = tier.stats();
    assert_eq!((stats.corrupt_records, stats.faulted_segments), (0, 0));
    if stats.read_path == "mmap" {
        assert_eq!(stats.maps, 2);
        assert_eq!(mapped_segments(dir.path()), 2, "the kernel sees the maps");
    }
}

/// `health()` through the disk tier's troubles: healthy; degraded while
/// writes are refused (and healthy again once none are new); unhealthy when
/// the disk fails; unhealthy on a handle whose cache was closed.
#[test]
fn health_follows_refusals_failures_and_close() {
    use crate::{Cache, Health, HealthIssue};
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(Faulty::new(test_io()));
    let cache = Cache::builder()
        .memory_capacity(10_000)
        .unit_weight()
        .disk(dir.path(), 64 * SEG)
        .segment_size(SEG)
        .disk_backpressure(Backpressure::Refuse)
        .disk_io(io.clone())
        .build()
        .unwrap();
    assert_eq!(cache.health(), Health::Healthy);
    let v = |i: u32| bytes::Bytes::from(value(i, 0, 2000));
    io.stall(true);
    for i in 0..300u32 {
        cache.insert(&k(i), v(i)).unwrap();
    }
    let refused = cache.stats().disk.unwrap().refused_writes;
    assert!(refused > 0);
    assert_eq!(
        cache.health(),
        Health::Degraded(vec![HealthIssue::WritesRefused(refused)])
    );
    io.stall(false);
    cache.sync().unwrap();
    let _ = cache.health(); // the refusals the sync itself met, if any
    assert_eq!(cache.health(), Health::Healthy, "nothing new since");
    io.fail_writes_after(0);
    for i in 300..400u32 {
        cache.insert(&k(i), v(i)).unwrap();
    }
    assert!(cache.sync().is_err());
    let health = cache.health();
    assert!(
        matches!(&health, Health::Unhealthy(i) if matches!(i[0], HealthIssue::DiskFailed(_))),
        "{health:?}"
    );
    let other = cache.clone();
    let _ = cache.close();
    assert!(other.health().issues().contains(&HealthIssue::Closed));
    assert!(!other.health().is_healthy());
}

/// A full file system: the disk tier fails with the operating system's
/// "no space left", `health()` says unhealthy with that reason, and memory
/// serves on (nothing acknowledged is lost from it).
#[test]
fn health_reports_a_full_disk_and_memory_serves_on() {
    use crate::{Cache, Health, HealthIssue};
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(Faulty::new(test_io()));
    let cache = Cache::builder()
        .memory_capacity(10_000)
        .unit_weight()
        .disk(dir.path(), 64 * SEG)
        .segment_size(SEG)
        .disk_io(io.clone())
        .build()
        .unwrap();
    let v = |i: u32| bytes::Bytes::from(value(i, 0, 2000));
    for i in 0..50u32 {
        cache.insert(&k(i), v(i)).unwrap();
    }
    cache.sync().unwrap();
    assert_eq!(cache.health(), Health::Healthy);
    io.fill_up(true);
    for i in 50..200u32 {
        cache.insert(&k(i), v(i)).unwrap();
    }
    assert!(cache.sync().is_err(), "a sync on a full disk fails");
    let health = cache.health();
    let reason = match &health {
        Health::Unhealthy(issues) => match &issues[0] {
            HealthIssue::DiskFailed(reason) => reason.clone(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    assert!(reason.contains("No space left"), "{reason}");
    for i in 0..200u32 {
        assert_eq!(cache.get(&k(i)), Some(v(i)), "memory serves {i}");
    }
}

/// Dropping the last handle does not hold the dropping thread for the
/// close (a stalled device here: a close inline would wait as long as the
/// stall); opening the directory again waits for that close, and finds it
/// clean.
#[test]
fn dropping_the_last_handle_leaves_the_close_to_a_thread_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(Faulty::new(test_io()));
    let open = |io: Arc<dyn Io>| {
        crate::Cache::builder()
            .memory_capacity(1 << 20)
            .disk(dir.path(), 16 * SEG)
            .segment_size(SEG)
            .disk_io(io)
            .build()
            .unwrap()
    };
    let cache = open(io.clone());
    for i in 0..200u32 {
        cache.insert(&i.to_le_bytes(), value(i, 0, 300)).unwrap();
    }
    io.stall(true);
    let (done, dropped) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(cache);
        let _ = done.send(());
    });
    let returned = dropped.recv_timeout(Duration::from_secs(10));
    io.stall(false);
    assert!(returned.is_ok(), "the drop waited for a stalled close");
    let cache = open(test_io());
    let recovery = cache.stats().disk.unwrap().recovery;
    assert_eq!(
        recovery.checkpoint,
        crate::CheckpointStatus::Used,
        "{recovery:?}"
    );
    for i in 0..200u32 {
        assert_eq!(cache.get(&i.to_le_bytes()).unwrap(), value(i, 0, 300));
    }
    cache.close().unwrap();
}

/// With no compression budget, values are stored raw while the flusher
/// keeps up, and compressed when a writer is about to wait for a flusher
/// that is behind (compressing then costs it nothing); every value reads
/// back whole either way.
#[test]
fn with_no_budget_only_a_writer_about_to_wait_compresses() {
    let text = |key: u32| format!("{key:08} larder keeps hot data close. ").repeat(30);
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(Faulty::new(test_io()));
    let tier = Arc::new(
        DiskTier::open(DiskConfig {
            io: io.clone(),
            compression_budget: 0.0,
            backpressure: Backpressure::Wait(Duration::MAX),
            max_frozen: 1,
            ..config(dir.path(), 64)
        })
        .unwrap(),
    );
    // The flusher keeps up: nothing is compressed.
    for key in 0..50u32 {
        tier.put(&k(key), text(key).as_bytes(), 0).unwrap();
    }
    let s = tier.stats();
    assert_eq!(s.value_bytes_stored, s.value_bytes_in, "{s:?}");
    assert_eq!(s.compression_paced, 50);

    // The flusher stalls: the writer fills the queue, then compresses the
    // value it is about to wait with.
    io.stall(true);
    let release = Release(io.clone());
    let writer = {
        let (tier, text) = (Arc::clone(&tier), text);
        std::thread::spawn(move || {
            for key in 50..2000u32 {
                tier.put(&k(key), text(key).as_bytes(), 0).unwrap();
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !writer.is_finished(),
        "it waits while the flusher is stalled"
    );
    drop(release);
    writer.join().unwrap();
    tier.sync().unwrap();
    let s = tier.stats();
    assert!(s.value_bytes_stored < s.value_bytes_in, "{s:?}");
    for key in 0..2000u32 {
        assert_eq!(tier.get(&k(key), 0).unwrap(), text(key).as_bytes());
    }
}
