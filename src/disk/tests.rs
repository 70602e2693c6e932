//! The disk tier on its own: round trips through every place a record can be,
//! overwrites and tombstones, compression, reclaim, corruption and truncation
//! under an open tier, injected I/O faults, backpressure, and concurrency.

use super::io::{Faulty, Positional};

/// The backend under test: `LARDER_IO=uring` (with feature `io-uring`) runs the
/// suite on io_uring; CI runs it once per backend.
fn test_io() -> Arc<dyn Io> {
    match std::env::var("LARDER_IO").as_deref() {
        #[cfg(feature = "io-uring")]
        Ok("uring") => Arc::new(super::io::uring::Uring::new().expect("io_uring available")),
        #[cfg(not(feature = "io-uring"))]
        Ok("uring") => panic!("LARDER_IO=uring needs the io-uring feature"),
        _ => Arc::new(Positional),
    }
}
use super::*;
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::os::unix::fs::FileExt;

const SEG: u64 = MIN_SEGMENT_SIZE; // 64 KiB: many segments from little data

fn config(dir: &std::path::Path, segments: u64) -> DiskConfig {
    DiskConfig {
        dir: dir.to_path_buf(),
        capacity: segments * SEG,
        segment_size: SEG,
        flush_interval: Duration::from_millis(5),
        compress_above: 256,
        backpressure: Backpressure::Wait(Duration::from_secs(10)),
        max_frozen: 2,
        io: test_io(),
        // The whole suite runs with direct writes too (CI sets it).
        direct: std::env::var_os("LARDER_DIRECT").is_some(),
    }
}

/// A value that names its key and version and does not compress.
fn value(key: u32, version: u32, len: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(u64::from(key) << 32 | u64::from(version));
    let mut v = Vec::with_capacity(len.max(8));
    v.extend_from_slice(&key.to_le_bytes());
    v.extend_from_slice(&version.to_le_bytes());
    v.resize_with(len.max(8), || rng.random());
    v
}

fn k(key: u32) -> [u8; 4] {
    key.to_le_bytes()
}

/// The segment files in `dir`, in id order (recovery's own lister).
fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    super::analysis::list_segments(dir)
        .unwrap()
        .0
        .into_values()
        .collect()
}

#[test]
fn written_image_memory_is_reused_and_kept_within_a_full_flush_queue() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(config(dir.path(), 256)).unwrap();
    let sh = &*tier.shared;
    let per_segment = (SEG as usize).div_ceil(sh.chunks.chunk_size());
    let keep = sh.config.max_frozen * per_segment;
    for key in 0..3000u32 {
        tier.put(&k(key), &value(key, 0, 1000), 0).unwrap();
        let spares = sh.chunks.spares();
        assert!(spares <= keep, "{spares} spare chunks at key {key}");
        if key % 500 == 0 {
            tier.sync().unwrap();
            // Written up to its end: each active image holds at most the
            // chunk its next record goes to.
            for active in sh.active.read().iter() {
                assert!(active.image.held_chunks() <= 1, "key {key}");
            }
        }
    }
    tier.sync().unwrap();
    assert_eq!(sh.frozen.read().len(), 0);
    assert!(sh.chunks.spares() >= 1, "no chunk was kept for reuse");
    let stats = tier.stats();
    assert!(stats.segments > 20, "{stats:?}");
    // The spares, and the chunk each active image appends to.
    let chunk = sh.chunks.chunk_size() as u64;
    assert!(stats.buffer_bytes <= (keep as u64 + 2) * chunk, "{stats:?}");
    assert!(stats.buffer_bytes >= chunk, "{stats:?}");
}

#[test]
fn values_read_back_from_buffer_frozen_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(config(dir.path(), 64)).unwrap();
    for key in 0..600u32 {
        tier.put(&k(key), &value(key, 0, 300), 0).unwrap();
        // Read right away: from the active buffer.
        assert_eq!(tier.get(&k(key), 0).unwrap(), value(key, 0, 300));
    }
    tier.sync().unwrap();
    let stats = tier.stats();
    assert!(stats.segments >= 2, "{stats:?}");
    // Writes are timed: the device's rate is bytes over that time.
    assert!(stats.bytes_written > 0 && stats.write_ns > 0, "{stats:?}");
    for key in 0..600u32 {
        assert_eq!(
            tier.get(&k(key), 0).unwrap(),
            value(key, 0, 300),
            "key {key}"
        );
    }
    assert_eq!(stats.entries, 600);
    assert!(tier.get(&k(9999), 0).is_none());
}

#[test]
fn overwrites_and_removes_never_bring_back_an_older_value() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(config(dir.path(), 64)).unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let mut model = std::collections::HashMap::new();
    for version in 0..3000u32 {
        let key = rng.random_range(0..100u32);
        if rng.random_bool(0.2) {
            tier.remove(&k(key)).unwrap();
            model.remove(&key);
        } else {
            let v = value(key, version, rng.random_range(8..200));
            tier.put(&k(key), &v, 0).unwrap();
            model.insert(key, v);
        }
        if version % 500 == 0 {
            tier.sync().unwrap();
        }
    }
    for key in 0..100u32 {
        assert_eq!(
            tier.get(&k(key), 0).map(|b| b.to_vec()),
            model.get(&key).cloned(),
            "key {key}"
        );
    }
}

#[test]
fn expired_records_are_not_returned() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(config(dir.path(), 8)).unwrap();
    tier.put(b"k", b"v", 1_000).unwrap();
    assert_eq!(tier.get(b"k", 999).unwrap(), "v");
    assert!(tier.get(b"k", 1_000).is_none());
}

#[test]
fn compressible_values_are_stored_smaller_and_incompressible_ones_raw() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(config(dir.path(), 64)).unwrap();
    let text = b"larder keeps hot data close. ".repeat(40);
    for key in 0..50u32 {
        tier.put(&k(key), &text, 0).unwrap();
    }
    let s = tier.stats();
    assert!(s.value_bytes_stored * 4 < s.value_bytes_in, "{s:?}");
    for key in 0..50u32 {
        assert_eq!(tier.get(&k(key), 0).unwrap(), &text[..]);
    }
    let before = tier.stats();
    tier.put(b"noise", &value(1, 1, 1000), 0).unwrap();
    let after = tier.stats();
    assert_eq!(
        after.value_bytes_stored - before.value_bytes_stored,
        1000,
        "stored raw"
    );
}

#[test]
fn reclaim_keeps_the_tier_within_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(config(dir.path(), 4)).unwrap();
    for key in 0..2000u32 {
        tier.put(&k(key), &value(key, 0, 500), 0).unwrap();
    }
    tier.sync().unwrap();
    let s = tier.stats();
    assert!(s.reclaimed_segments > 0, "{s:?}");
    assert!(
        segment_files(dir.path()).len() <= 4,
        "files: {:?}",
        segment_files(dir.path())
    );
    // Recent keys are there, old ones are gone, nothing is wrong.
    assert_eq!(tier.get(&k(1999), 0).unwrap(), value(1999, 0, 500));
    assert!(tier.get(&k(0), 0).is_none());
    for key in 0..2000u32 {
        if let Some(v) = tier.get(&k(key), 0) {
            assert_eq!(v, value(key, 0, 500));
        }
    }
    assert_eq!(s.corrupt, 0);
}

/// Random bit flips, zeroed ranges and truncations of sealed segment files under
/// an open tier: every read is the right value or a miss, never wrong bytes or a
/// panic, and damage to a record that is read is counted.
#[test]
fn corruption_and_truncation_under_an_open_tier_are_misses() {
    let trials = std::env::var("LARDER_CORRUPTION_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1000u32);
    let mut rng = StdRng::seed_from_u64(0xC0FFEE);
    let mut trial = 0;
    let mut detected = 0u64;
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
        detected += tier.stats().corrupt;
    }
    assert!(
        detected > 0,
        "damage to records that were read must be counted"
    );
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
        assert!(tier.stats().failed.is_some());
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
    assert!(s.refused > 0 || s.failed.is_some(), "{s:?}");
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
    // Released however the test ends, or the tier's drop would wait forever.
    struct Release(Arc<Faulty>);
    impl Drop for Release {
        fn drop(&mut self) {
            self.0.stall(false);
        }
    }
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
    assert_eq!(tier.stats().refused, 0);
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

/// Readers on keys whose segments are being frozen, written and reclaimed.
#[test]
fn concurrent_readers_writers_and_reclaim() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(config(dir.path(), 6)).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..2u32 {
            let (tier, stop) = (&tier, &stop);
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(u64::from(t));
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) || reads < 1000 {
                    let key = rng.random_range(0..3000u32);
                    if let Some(v) = tier.get(&k(key), 0) {
                        assert_eq!(&v[..4], &k(key), "value of another key");
                        let version = u32::from_le_bytes(v[4..8].try_into().unwrap());
                        assert_eq!(v, value(key, version, v.len()), "torn value");
                    }
                    reads += 1;
                }
            });
        }
        let _stop = StopOnDrop(&stop);
        let mut rng = StdRng::seed_from_u64(99);
        for version in 0..8000u32 {
            let key = rng.random_range(0..3000u32);
            tier.put(&k(key), &value(key, version, rng.random_range(8..400)), 0)
                .unwrap();
        }
    });
    let s = tier.stats();
    assert!(s.reclaimed_segments > 0 && s.corrupt == 0, "{s:?}");
}

#[test]
fn a_read_token_goes_stale_when_the_key_changes() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(config(dir.path(), 8)).unwrap();
    tier.put(b"k", b"v1", 0).unwrap();
    let (v, _, token) = tier.get_current(b"k", 0).unwrap();
    assert_eq!(v, "v1");
    assert!(tier.is_current(b"k", token));
    tier.put(b"k", b"v2", 0).unwrap();
    assert!(!tier.is_current(b"k", token), "overwritten");
    let (_, _, token) = tier.get_current(b"k", 0).unwrap();
    tier.remove(b"k").unwrap();
    assert!(!tier.is_current(b"k", token), "removed");
    assert!(tier.get(b"k", 0).is_none());
}

#[test]
fn one_cache_per_directory_and_settings_do_not_change_silently() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(config(dir.path(), 8)).unwrap();
    let second = DiskTier::open(config(dir.path(), 8)).err().expect("locked");
    assert!(matches!(second, DiskError::Locked(_)), "{second}");
    assert!(second.to_string().contains("in use"));
    drop(tier);
    // The lock is released with the tier; the manifest stays, and names the segment size.
    let other_size = DiskConfig {
        segment_size: 2 * SEG,
        ..config(dir.path(), 8)
    };
    let err = DiskTier::open(other_size).err().expect("mismatch");
    assert!(matches!(err, DiskError::Mismatch { .. }), "{err}");
    // A damaged manifest is set aside and written again from the settings
    // (the segments' headers agree with them)...
    std::fs::write(dir.path().join("MANIFEST"), b"garbage").unwrap();
    drop(DiskTier::open(config(dir.path(), 8)).unwrap());
    assert!(dir.path().join("MANIFEST.quarantined").exists());
    assert!(matches!(
        DiskTier::open(DiskConfig {
            segment_size: 2 * SEG,
            ..config(dir.path(), 8)
        })
        .err(),
        Some(DiskError::Mismatch { .. })
    ));
    // ... but one of another format version is refused by name.
    let mut newer = std::fs::read(dir.path().join("MANIFEST")).unwrap();
    newer[8] += 1;
    let crc = crc32fast::hash(&newer[..60]);
    newer[60..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(dir.path().join("MANIFEST"), &newer).unwrap();
    let err = DiskTier::open(config(dir.path(), 8))
        .err()
        .expect("newer manifest");
    assert!(matches!(err, DiskError::BadManifest { .. }), "{err}");
    assert!(err.to_string().contains("version"), "{err}");
}

#[test]
fn the_default_backend_works_and_says_which_it_is() {
    let (io, note) = super::io::default_backend();
    if cfg!(feature = "io-uring") {
        // This machine's kernel allows io_uring; elsewhere the note says why not.
        assert!(io.name() == "io_uring" || note.is_some(), "{:?}", note);
    } else {
        assert_eq!((io.name(), note), ("pwrite", None));
    }
    let f = tempfile::tempfile().unwrap();
    io.write_all_at(&f, b"abc", 7).unwrap();
    io.sync_data(&f).unwrap();
    let mut b = [0u8; 3];
    io.read_exact_at(&f, &mut b, 7).unwrap();
    assert_eq!(&b, b"abc");
}

/// Sets its flag when dropped: stops reader threads even if the writer
/// panics, so a failure fails rather than hangs.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Puts keys from `from` until reclaim has run once; returns the next key.
fn fill_until_reclaimed(tier: &DiskTier, from: u32) -> u32 {
    let mut key = from;
    while tier.stats().reclaimed_segments == 0 {
        for _ in 0..10 {
            tier.put(&k(key), &value(key, 0, 500), 0).unwrap();
            key += 1;
        }
        tier.sync().unwrap();
    }
    key
}

#[test]
fn reclaim_keeps_what_was_referenced_and_remembers_what_it_drops() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(config(dir.path(), 4)).unwrap();
    for key in 0..6u32 {
        tier.put(&k(key), &value(key, 0, 500), 0).unwrap();
    }
    assert!(tier.get(&k(0), 0).is_some(), "0: an L2 hit");
    tier.entered_memory(&k(1)); // 1: memory holds it
    // 2: never read.
    assert!(tier.get(&k(3), 0).is_some());
    tier.remove(&k(3)).unwrap(); // 3: read, then removed
    assert!(tier.get(&k(4), 0).is_some());
    tier.put(&k(4), &value(4, 1, 500), 0).unwrap(); // 4: read, then overwritten
    assert!(tier.left_memory(&k(5), true), "5: proved reuse in memory");
    fill_until_reclaimed(&tier, 100);
    let s = tier.stats();
    assert_eq!(s.reclaimed_segments, 1, "{s:?}");
    assert!(s.reappended >= 2, "{s:?}");

    assert_eq!(tier.get(&k(0), 0).unwrap(), value(0, 0, 500), "re-appended");
    assert_eq!(tier.get(&k(5), 0).unwrap(), value(5, 0, 500), "re-appended");
    assert!(tier.get(&k(1), 0).is_none(), "memory holds it: dropped");
    assert!(!tier.recall(&k(1)), "not a ghost: memory holds it");
    assert!(tier.get(&k(2), 0).is_none(), "unreferenced: dropped");
    assert!(tier.recall(&k(2)), "remembered");
    assert!(!tier.recall(&k(2)), "recalled once");
    assert!(
        tier.get(&k(3), 0).is_none(),
        "a removed key never comes back"
    );
    // The read marked the old record; its overwrite (unread) was dropped.
    let four = tier.get(&k(4), 0);
    assert!(
        four.is_none_or(|v| v == value(4, 1, 500)),
        "never the old value"
    );
    assert_eq!(s.corrupt, 0);
}

#[test]
fn reclaim_always_frees_space_even_when_everything_is_referenced() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(config(dir.path(), 4)).unwrap();
    for key in 0..3000u32 {
        tier.put(&k(key), &value(key, 0, 500), 0).unwrap();
        // Every key is read: reclaim would keep them all but for its budget.
        assert!(tier.get(&k(key), 0).is_some());
    }
    tier.sync().unwrap();
    let s = tier.stats();
    assert!(s.reappended > 0 && s.reclaimed_segments > 0, "{s:?}");
    assert!(segment_files(dir.path()).len() <= 4);
    for key in 0..3000u32 {
        if let Some(v) = tier.get(&k(key), 0) {
            assert_eq!(v, value(key, 0, 500));
        }
    }
}

/// Writers overwrite keys while readers read them, so reclaim re-appends what
/// it finds referenced: a reader never sees a version older than one whose
/// write had finished before its read began.
#[test]
fn reappends_never_bring_back_an_older_version() {
    use std::sync::atomic::AtomicU32;
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(config(dir.path(), 5)).unwrap();
    const KEYS: u32 = 400;
    let latest: Vec<AtomicU32> = (0..KEYS).map(|_| AtomicU32::new(0)).collect();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (tier, stop, latest) = (&tier, &stop, &latest);
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(t);
                while !stop.load(Ordering::Relaxed) {
                    let key = rng.random_range(0..KEYS);
                    let floor = latest[key as usize].load(Ordering::Acquire);
                    if let Some(v) = tier.get(&k(key), 0) {
                        let version = u32::from_le_bytes(v[4..8].try_into().unwrap());
                        assert_eq!(v, value(key, version, v.len()), "torn value");
                        assert!(version >= floor, "key {key}: {version} < {floor}");
                    }
                }
            });
        }
        let _stop = StopOnDrop(&stop);
        let mut rng = StdRng::seed_from_u64(7);
        for version in 1..6000u32 {
            let key = rng.random_range(0..KEYS);
            tier.put(&k(key), &value(key, version, rng.random_range(8..300)), 0)
                .unwrap();
            latest[key as usize].store(version, Ordering::Release);
        }
    });
    let s = tier.stats();
    assert!(s.reclaimed_segments > 0 && s.reappended > 0, "{s:?}");
    assert_eq!(s.corrupt, 0);
}

#[test]
fn text_is_compressed_and_noise_stored_raw() {
    let text = b"larder keeps hot data close. ".repeat(200);
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(config(dir.path(), 64)).unwrap();
    tier.put(b"text", &text, 0).unwrap();
    tier.put(b"noise", &value(3, 3, 4096), 0).unwrap();
    let s = tier.stats();
    assert!(s.value_bytes_stored < text.len() as u64 / 4 + 4096, "{s:?}");
    assert!(s.value_bytes_stored >= 4096, "{s:?}");
    assert_eq!(tier.get(b"text", 0).unwrap(), &text[..]);
    assert_eq!(tier.get(b"noise", 0).unwrap(), value(3, 3, 4096));
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

/// Records longer than the read-ahead take a second read; records of every
/// size, up to the end of a segment, read back whole from sealed files.
#[test]
fn records_of_every_length_read_back_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(config(dir.path(), 64)).unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let lens: Vec<usize> = (0..120)
        .map(|i| match i % 4 {
            0 => rng.random_range(8..100),
            1 => rng.random_range(READ_AHEAD - 200..READ_AHEAD + 200),
            2 => rng.random_range(READ_AHEAD..3 * READ_AHEAD),
            _ => rng.random_range(100..READ_AHEAD),
        })
        .collect();
    for (key, &len) in lens.iter().enumerate() {
        tier.put(&k(key as u32), &value(key as u32, 0, len), 0)
            .unwrap();
    }
    tier.sync().unwrap();
    // All but the last segment's worth is in sealed files.
    let total: usize = lens.iter().sum();
    assert!(tier.stats().segments as usize >= total / SEG as usize - 1);
    assert!(tier.stats().segments >= 5);
    for (key, &len) in lens.iter().enumerate() {
        assert_eq!(
            tier.get(&k(key as u32), 0).unwrap(),
            value(key as u32, 0, len),
            "key {key}, {len} bytes"
        );
    }
    assert_eq!(tier.stats().corrupt, 0);
}

/// Reopening: every key's newest value comes back, removed keys stay removed,
/// whether the tier was dropped (the active segment unsealed) or crashed with
/// a torn tail.
#[test]
fn reopen_recovers_the_newest_values_and_no_removed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = std::collections::HashMap::new();
    let mut rng = StdRng::seed_from_u64(11);
    let mut version = 0u32;
    for round in 0..4 {
        let tier = DiskTier::open(config(dir.path(), 64)).unwrap();
        let report = tier.stats().recovery;
        assert_eq!(
            report.entries as usize,
            model.len(),
            "round {round}: {report:?}"
        );
        for (&key, &v) in &model {
            assert_eq!(
                tier.get(&k(key), 0),
                Some(value(key, v, 200).into()),
                "key {key}"
            );
        }
        for _ in 0..1500 {
            let key = rng.random_range(0..500u32);
            version += 1;
            if rng.random_ratio(1, 5) {
                tier.remove(&k(key)).unwrap();
                model.remove(&key);
            } else {
                tier.put(&k(key), &value(key, version, 200), 0).unwrap();
                model.insert(key, version);
            }
        }
        tier.sync().unwrap();
        assert!(tier.stats().segments >= 2);
    }
    // Nothing lost, nothing extra; each open sealed the segment the previous
    // one left active (dropping a tier syncs it but does not seal it).
    let tier = DiskTier::open(config(dir.path(), 64)).unwrap();
    for key in 0..500u32 {
        let want = model
            .get(&key)
            .map(|&v| bytes::Bytes::from(value(key, v, 200)));
        assert_eq!(tier.get(&k(key), 0), want, "key {key}");
    }
    let r = tier.stats().recovery;
    assert_eq!(r.sealed, 1, "the last one's active segment: {r:?}");
    assert_eq!(r.torn_tails, 0);
}

/// A crash that tears the last write: what a `sync()` covered survives, the
/// torn record is cut off, and so is everything after the last mark (format
/// md §1.2) that proves the other stream complete: the log at one moment.
#[test]
fn a_torn_tail_is_cut_at_the_last_whole_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let tier = DiskTier::open(config(dir.path(), 64)).unwrap();
        for key in 0..100u32 {
            tier.put(&k(key), &value(key, 0, 100), 0).unwrap();
        }
        tier.sync().unwrap();
        for key in 100..110u32 {
            tier.put(&k(key), &value(key, 0, 100), 0).unwrap();
        }
    } // dropped: the last ten written, and a mark after them
    // The last (unsealed) segment: chop its last write, the mark, in half,
    // as a crash would. Its records end at its last non-zero byte (direct
    // writes pad the file with zeros to a whole block).
    let last = segment_files(dir.path()).pop().unwrap();
    let bytes = std::fs::read(&last).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() as u64 + 1;
    let f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    f.set_len(end - 30).unwrap();
    drop(f);
    let tier = DiskTier::open(config(dir.path(), 64)).unwrap();
    let r = tier.stats().recovery;
    assert_eq!(r.sealed, 1, "{r:?}");
    assert_eq!(r.torn_tails, 1, "{r:?}");
    assert_eq!(r.entries, 100, "{r:?}");
    assert_eq!(r.void_records, 10, "after the last proof: {r:?}");
    for key in 0..100u32 {
        assert_eq!(tier.get(&k(key), 0).unwrap(), value(key, 0, 100));
    }
    for key in 100..110u32 {
        assert!(tier.get(&k(key), 0).is_none(), "key {key} is void");
    }
    // And the tier goes on writing after it.
    tier.put(&k(100), &value(100, 1, 100), 0).unwrap();
    tier.sync().unwrap();
    drop(tier);
    let tier = DiskTier::open(config(dir.path(), 64)).unwrap();
    assert_eq!(tier.get(&k(100), 0).unwrap(), value(100, 1, 100));
    assert_eq!(tier.stats().recovery.entries, 101);
}

#[test]
fn bad_and_foreign_segment_files_are_quarantined_or_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    {
        let tier = DiskTier::open(config(dir.path(), 64)).unwrap();
        for key in 0..600u32 {
            tier.put(&k(key), &value(key, 0, 300), 0).unwrap();
        }
        tier.sync().unwrap();
    }
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    // A bad header on the first, a foreign file, garbage under a segment's name.
    let mut first = std::fs::read(&files[0]).unwrap();
    first[3] ^= 0xff;
    std::fs::write(&files[0], &first).unwrap();
    std::fs::write(dir.path().join("notes.seg"), b"hello").unwrap();
    std::fs::write(dir.path().join("0000099999.seg"), vec![7u8; 5000]).unwrap();
    let tier = DiskTier::open(config(dir.path(), 64)).unwrap();
    let r = tier.stats().recovery;
    assert_eq!(r.quarantined, 2, "{r:?}");
    assert_eq!(r.foreign, 1, "{r:?}");
    assert!(
        dir.path().join("notes.seg").exists(),
        "not ours: left alone"
    );
    assert!(files[0].with_extension("seg.quarantined").exists());
    let mut found = 0;
    for key in 0..600u32 {
        if let Some(v) = tier.get(&k(key), 0) {
            assert_eq!(v, value(key, 0, 300));
            found += 1;
        }
    }
    assert!(found > 300 && found < 600, "{found}");
}

/// Puts `key` = `value` through the memory tier's path: `stream` is the one
/// its kind asks for (probation for an insert, main for a demotion).
fn put_in(tier: &DiskTier, key: u32, value: &[u8], stream: Stream) {
    let p = tier
        .prepare(&Bytes::copy_from_slice(value), 0, true)
        .unwrap();
    tier.commit(&k(key), &p, 0, stream).unwrap();
}

fn stream_of(tier: &DiskTier, key: u32) -> Stream {
    let loc = tier.shared.index.peek(hash_key(&k(key))).unwrap();
    tier.shared.log.lock().stream_of(loc.segment)
}

/// A key's records stay in the stream of its current record, whatever an
/// append asks for: so no record of one stream hides an older one of the
/// other (docs/design.md §10.2).
#[test]
fn appends_follow_the_stream_of_the_current_record() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(config(dir.path(), 16)).unwrap();
    put_in(&tier, 1, &value(1, 0, 100), Stream::Main);
    put_in(&tier, 1, &value(1, 1, 100), Stream::Probation);
    assert_eq!(
        stream_of(&tier, 1),
        Stream::Main,
        "an insert over main stays in main"
    );
    put_in(&tier, 2, &value(2, 0, 100), Stream::Probation);
    put_in(&tier, 2, &value(2, 1, 100), Stream::Main);
    assert_eq!(
        stream_of(&tier, 2),
        Stream::Probation,
        "a demotion over probation stays"
    );
    // Removed, the key is free to start in the stream its next append asks for.
    tier.remove(&k(1)).unwrap();
    put_in(&tier, 1, &value(1, 2, 100), Stream::Probation);
    assert_eq!(stream_of(&tier, 1), Stream::Probation);
    assert_eq!(tier.get(&k(1), 0).unwrap(), value(1, 2, 100));
    assert_eq!(tier.get(&k(2), 0).unwrap(), value(2, 1, 100));
}

/// A tier of fewer than 4 segments has one stream.
#[test]
fn a_small_tier_writes_main_only() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(config(dir.path(), 3)).unwrap();
    put_in(&tier, 1, &value(1, 0, 100), Stream::Probation);
    assert_eq!(stream_of(&tier, 1), Stream::Main);
}

/// Reclaim takes the probation stream's oldest segment while that stream
/// holds its share: a record with an L2 hit moves to main, the others are
/// forgotten (ghosts).
#[test]
fn reclaim_moves_used_probation_records_to_main() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(config(dir.path(), 8)).unwrap();
    put_in(&tier, 0, &value(0, 0, 1000), Stream::Probation);
    assert!(tier.get(&k(0), 0).is_some()); // an L2 hit: one use
    for key in 1..1500u32 {
        put_in(&tier, key, &value(key, 0, 1000), Stream::Probation);
    }
    tier.sync().unwrap();
    let stats = tier.stats();
    assert!(stats.reclaimed_segments > 0, "{stats:?}");
    assert!(stats.reappended >= 1, "{stats:?}");
    assert_eq!(stream_of(&tier, 0), Stream::Main, "key 0 moved to main");
    assert_eq!(tier.get(&k(0), 0).unwrap(), value(0, 0, 1000));
    assert!(
        tier.get(&k(1), 0).is_none(),
        "key 1 was never read: forgotten"
    );
    // The last key forgotten is remembered as a ghost (the oldest fall out).
    let last = (1..1500u32)
        .rev()
        .find(|&key| tier.get(&k(key), 0).is_none());
    assert!(tier.recall(&k(last.unwrap())), "remembered as a ghost");
}

/// A tier in `dir` that writes direct, or `None` where the file system
/// refuses `O_DIRECT` (as the probe says).
fn open_direct(dir: &std::path::Path) -> Option<DiskTier> {
    let direct = DiskConfig {
        direct: true,
        ..config(dir, 64)
    };
    let tier = DiskTier::open(direct).unwrap();
    if !tier.stats().direct_writes {
        assert!(super::dir::probe_direct(&Positional, dir).is_err());
        return None;
    }
    Some(tier)
}

#[test]
fn chunks_given_back_after_periodic_direct_writes_are_read_whole_from_the_file() {
    // Periodic direct writes end on a block, inside a record: the image may
    // give back only the chunks below a record boundary the file holds. Each
    // round appends past a few chunk boundaries, lets the flusher write
    // (periodic writes every 5 ms, the only kind here: no sync), then reads
    // every key of the active segment. A chunk given back too early sends a
    // read to the file for a record it holds only part of.
    let dir = tempfile::tempdir().unwrap();
    let Some(tier) = open_direct(dir.path()) else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(11);
    let mut lens = Vec::new();
    let mut active_from = 0; // the first key of the active segment, about
    let mut given_back = 0;
    for round in 0..60 {
        for _ in 0..4 {
            let key = lens.len() as u32;
            let len = rng.random_range(1000..7000);
            tier.put(&k(key), &value(key, 2, len), 0).unwrap();
            lens.push(len);
        }
        std::thread::sleep(Duration::from_millis(20)); // the flusher writes
        let sh = &*tier.shared;
        let chunk = sh.chunks.chunk_size();
        let gave_back = (sh.active.read().iter())
            .any(|a| a.image.held_chunks() < a.image.len().div_ceil(chunk));
        given_back += usize::from(gave_back);
        for (key, &len) in lens.iter().enumerate().skip(active_from) {
            let got = tier.get(&k(key as u32), 0);
            if let Some(v) = got {
                assert_eq!(v, value(key as u32, 2, len), "round {round} key {key}");
            }
        }
        assert_eq!(tier.stats().corrupt, 0, "round {round}");
        if round % 10 == 9 {
            active_from = lens.len().saturating_sub(12);
        }
    }
    assert!(
        given_back > 20,
        "chunks were given back in {given_back} rounds of 60"
    );
}

/// Direct writes write whole blocks: a `sync` pads the last partial block
/// with zeros and the next flush writes that block again, records larger
/// than a block straddle blocks, and segments seal with their summary and
/// trailer in place. Every value reads back, before and after a reopen, and
/// the bytes written are whole blocks.
#[test]
fn direct_writes_round_trip_through_partial_blocks_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let Some(tier) = open_direct(dir.path()) else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(7);
    let lens: Vec<usize> = (0..400).map(|_| rng.random_range(1..9000)).collect();
    for (key, &len) in lens.iter().enumerate() {
        tier.put(&k(key as u32), &value(key as u32, 1, len), 0)
            .unwrap();
        if key % 7 == 0 {
            tier.sync().unwrap(); // mid-block: padded now, rewritten later
        }
    }
    tier.sync().unwrap();
    let s = tier.stats();
    assert!(s.direct_writes);
    assert_eq!(
        s.bytes_written % DIRECT_ALIGN as u64,
        0,
        "direct writes are whole blocks: {s:?}"
    );
    let check = |tier: &DiskTier| {
        for (key, &len) in lens.iter().enumerate() {
            let got = tier.get(&k(key as u32), 0);
            // Reclaim may have dropped the oldest; what is there is right.
            if let Some(v) = got {
                assert_eq!(v, value(key as u32, 1, len), "key {key}");
            }
        }
    };
    check(&tier);
    let entries = tier.stats().entries;
    assert!(entries > 100, "{entries}");
    drop(tier);
    let tier = DiskTier::open(config(dir.path(), 64)).unwrap();
    let r = tier.stats().recovery;
    assert_eq!(r.entries, entries, "{r:?}");
    assert_eq!(r.torn_tails, 0, "zero padding is not a torn record: {r:?}");
    assert_eq!(tier.stats().corrupt, 0);
    check(&tier);
}

/// Appends records of 500 bytes (keys from `*next` on) as another thread
/// would, until the active main segment is no longer `segment`: it froze.
fn fill_until_frozen(sh: &Shared, segment: u32, next: &mut u32) {
    while sh.active.read()[Stream::Main as usize].id == segment {
        let v = value(*next, 0, 500);
        let header = RecordHeader {
            kind: Kind::Value,
            compressed: false,
            key_len: 4,
            stored_len: v.len() as u32,
            raw_len: v.len() as u32,
            expires_at: 0,
            seq: 0,
        };
        sh.append(&k(*next), header, &v, 0, None, Stream::Main)
            .unwrap();
        *next += 1;
    }
}

/// `sync()` on `tier` after key 1 was put, with `fill` run by the flusher in
/// each round of the durable flush (its round number, from 0, and the
/// segment key 1 was put in). Returns that segment and the rounds there were.
fn sync_with_rounds(
    tier: &DiskTier,
    mut fill: impl FnMut(&Shared, usize, u32, &mut u32) + Send + 'static,
) -> (u32, usize) {
    tier.put(&k(1), &value(1, 0, 500), 0).unwrap();
    let first = tier.shared.index.peek(hash_key(&k(1))).unwrap().segment;
    let rounds = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&rounds);
    let mut next = 1000;
    *tier.shared.before_active.lock() = Some(Box::new(move |sh: &Shared| {
        let round = counted.fetch_add(1, Ordering::SeqCst);
        fill(sh, round, first, &mut next);
    }));
    tier.sync().unwrap();
    *tier.shared.before_active.lock() = None;
    assert_eq!(tier.get(&k(1), 0).unwrap(), value(1, 0, 500));
    (first, rounds.load(Ordering::SeqCst))
}

/// A segment that freezes after the flusher has written the frozen ones, but
/// before it writes the active one, is written and synced before a `sync()`
/// answers: it holds records appended before the `sync()`. (Before the fix,
/// the flusher wrote the new active segment, answered, and left the frozen
/// one for its next round.)
#[test]
fn a_sync_covers_a_segment_that_froze_while_it_was_answered() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(config(dir.path(), 64)).unwrap();
    let (first, rounds) = sync_with_rounds(&tier, |sh, round, first, next| {
        if round == 0 {
            fill_until_frozen(sh, first, next);
        }
    });
    assert!(rounds > 0, "the hook ran");
    assert!(
        !tier.shared.frozen.read().contains_key(&first),
        "segment {first}, put before the sync, is still waiting to be written"
    );
    assert!(tier.shared.files.read().contains_key(&first));
}

/// A `sync()` ends while inserts keep freezing segments: only a segment that
/// holds records appended before it is waited for, not the ones frozen after
/// it. (With a flusher that went round again for any frozen segment, a
/// steady stream of inserts could hold a `sync()` for as long as it lasted:
/// here, until the hook gave up after 50 rounds.)
#[test]
fn a_sync_ends_while_inserts_keep_freezing_segments() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(config(dir.path(), 256)).unwrap();
    // Every round of the flush, another segment fills and freezes.
    let (first, rounds) = sync_with_rounds(&tier, |sh, round, _, next| {
        if round < 50 {
            let active = sh.active.read()[Stream::Main as usize].id;
            fill_until_frozen(sh, active, next);
        }
    });
    assert!(
        rounds <= 3,
        "the sync waited {rounds} rounds for later segments"
    );
    assert!(tier.shared.files.read().contains_key(&first));
}

#[test]
fn a_warm_refill_holds_reclaim_off_only_up_to_a_bound() {
    let dir = tempfile::tempdir().unwrap();
    let segments = 32u64;
    let tier = DiskTier::open(config(dir.path(), segments)).unwrap();
    let max = segments as usize;
    let slack = flusher::refill_slack(max);
    assert_eq!(slack, 2);
    // Counted as the directory lists them, not as reclaim counts them.
    let held = |_: &DiskTier| segment_files(dir.path()).len();
    tier.refilling(true);
    let mut peak = 0;
    for key in 0..(3 * max as u32 * 40) {
        tier.put(&k(key), &value(key, 0, 1500), 0).unwrap();
        if key % 40 == 0 {
            tier.sync().unwrap();
            peak = peak.max(held(&tier));
        }
    }
    tier.sync().unwrap();
    peak = peak.max(held(&tier));
    // Reclaim waited: the tier went past its capacity, but no further than
    // the slack (a segment more may be appending while reclaim checks).
    assert!(
        peak > max,
        "reclaim did not wait for the refill: peak {peak}"
    );
    assert!(
        peak <= max + slack + 1,
        "peak {peak}, capacity {max} + {slack}"
    );
    // The refill done, the next seals bring it back within capacity.
    tier.refilling(false);
    for key in 0..(2 * 40) {
        tier.put(&k(key), &value(key, 1, 1500), 0).unwrap();
    }
    tier.sync().unwrap();
    assert!(
        held(&tier) <= max + 1,
        "held {} after the refill",
        held(&tier)
    );
    // Holding reclaim (a close) is not bounded: nothing is reclaimed.
    tier.hold_reclaim(true);
    let files = tier.shared.files.read().len();
    for key in 0..(4 * 40) {
        tier.put(&k(key), &value(key, 2, 1500), 0).unwrap();
    }
    tier.sync().unwrap();
    assert!(tier.shared.files.read().len() >= files + 3);
}
