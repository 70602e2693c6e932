//! The two streams, and direct writes.

use super::*;

/// Puts `key` = `value` through the memory tier's path: `stream` is the one
/// its kind asks for (probation for an insert, main for a demotion).
fn put_in(tier: &DiskTier, key: u32, value: &[u8], stream: Stream) {
    let p = tier
        .prepare(&Bytes::copy_from_slice(value), 0, true)
        .unwrap();
    tier.commit(&k(key), h(key), &p, 0, stream).unwrap();
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
    let _ = tier.remove(&k(1), h(1));
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
    assert!(tier.recall(h(last.unwrap())), "remembered as a ghost");
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
        assert_eq!(tier.stats().corrupt_records, 0, "round {round}");
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
    assert_eq!(tier.stats().corrupt_records, 0);
    check(&tier);
}
