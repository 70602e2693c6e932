//! Appends and reads through every place a record can be, compression, and `sync()`.

use super::*;

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
    assert!(
        stats.bytes_written > 0 && stats.write_time.as_nanos() > 0,
        "{stats:?}"
    );
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
            let _ = tier.remove(&k(key), h(key));
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
    assert!(s.reclaimed_segments > 0 && s.corrupt_records == 0, "{s:?}");
}

#[test]
fn a_read_token_goes_stale_when_the_key_changes() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(config(dir.path(), 8)).unwrap();
    tier.put(b"k", b"v1", 0).unwrap();
    let (v, _, token) = tier.get_current(b"k", hash_key(b"k"), 0).unwrap();
    assert_eq!(v, "v1");
    assert!(tier.is_current(hash_key(b"k"), token));
    tier.put(b"k", b"v2", 0).unwrap();
    assert!(!tier.is_current(hash_key(b"k"), token), "overwritten");
    let (_, _, token) = tier.get_current(b"k", hash_key(b"k"), 0).unwrap();
    let _ = tier.remove(b"k", hash_key(b"k"));
    assert!(!tier.is_current(hash_key(b"k"), token), "removed");
    assert!(tier.get(b"k", 0).is_none());
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
            1 => rng.random_range(read::READ_AHEAD - 200..read::READ_AHEAD + 200),
            2 => rng.random_range(read::READ_AHEAD..3 * read::READ_AHEAD),
            _ => rng.random_range(100..read::READ_AHEAD),
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
    assert_eq!(tier.stats().corrupt_records, 0);
}

/// Appends records of 500 bytes (keys from `*next` on) as another thread
/// would, until the active main segment is no longer `segment`: it froze.
fn fill_until_frozen(sh: &DiskState, segment: u32, next: &mut u32) {
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
        sh.append(
            &k(*next),
            h(*next),
            header,
            &v,
            0,
            None,
            Stream::Main,
            &mut None,
        )
        .unwrap();
        *next += 1;
    }
}

/// `sync()` on `tier` after key 1 was put, with `fill` run by the flusher in
/// each round of the durable flush (its round number, from 0, and the
/// segment key 1 was put in). Returns that segment and the rounds there were.
fn sync_with_rounds(
    tier: &DiskTier,
    mut fill: impl FnMut(&DiskState, usize, u32, &mut u32) + Send + 'static,
) -> (u32, usize) {
    tier.put(&k(1), &value(1, 0, 500), 0).unwrap();
    let first = tier.shared.index.peek(hash_key(&k(1))).unwrap().segment;
    let rounds = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&rounds);
    let mut next = 1000;
    *tier.shared.before_active.lock() = Some(Box::new(move |sh: &DiskState| {
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
