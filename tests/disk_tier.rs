//! The cache with a disk tier under its memory tier: values evicted from memory
//! come back from disk, removes and overwrites never bring back an older value,
//! TTLs hold across tiers, and the write policies write what they promise.

mod support;

use larder::{BuildError, Bytes, Cache, ManualClock, WritePolicy};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::time::Duration;
use support::{env_or, segment_files, value};

const SEGMENT: u64 = 64 << 10;

fn tiered(dir: &std::path::Path, entries: u64, policy: WritePolicy) -> Cache {
    Cache::builder()
        .memory_capacity(entries)
        .unit_weight()
        .disk(dir, 64 * SEGMENT)
        .segment_size(SEGMENT)
        .write_policy(policy)
        .build()
        .unwrap()
}

#[test]
fn values_evicted_from_memory_come_back_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tiered(dir.path(), 100, WritePolicy::WriteBehind);
    for key in 0..2000u32 {
        cache.insert(&key.to_le_bytes(), value(key, 0)).unwrap();
    }
    let mut found = 0;
    for key in 0..2000u32 {
        if let Some(v) = cache.get(&key.to_le_bytes()) {
            assert_eq!(v, value(key, 0), "key {key}");
            found += 1;
        }
    }
    let s = cache.stats();
    let disk = s.disk.clone().unwrap();
    assert!(found > 1500, "only {found} of 2000 found: {s:?}");
    assert!(disk.hits > 1000, "{disk:?}");
    assert!(disk.healthy());
    assert_eq!(s.hits, s.memory.hits + disk.hits);
    cache.sync().unwrap();
}

#[test]
fn removes_and_overwrites_never_bring_back_an_older_value() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tiered(dir.path(), 50, WritePolicy::WriteBehind);
    let mut rng = StdRng::seed_from_u64(7);
    let mut model = std::collections::HashMap::new();
    for version in 0..20_000u32 {
        let key = rng.random_range(0..500u32);
        let k = key.to_le_bytes();
        match rng.random_range(0..10) {
            0..4 => {
                let v = value(key, version);
                cache.insert(&k, v.clone()).unwrap();
                model.insert(key, v);
            }
            4 => {
                cache.remove(&k);
                model.remove(&key);
            }
            _ => {
                if let Some(v) = cache.get(&k) {
                    assert_eq!(Some(&v), model.get(&key), "step {version}: key {key}");
                }
            }
        }
    }
    for key in 0..500u32 {
        if let Some(v) = cache.get(&key.to_le_bytes()) {
            assert_eq!(Some(&v), model.get(&key), "key {key}");
        }
    }
}

#[test]
fn ttls_hold_across_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let cache = Cache::builder()
        .memory_capacity(10)
        .unit_weight()
        .clock(clock.clone())
        .disk(dir.path(), 8 * SEGMENT)
        .segment_size(SEGMENT)
        .build()
        .unwrap();
    cache
        .insert_with_ttl(b"short", "v", Duration::from_secs(10))
        .unwrap();
    for key in 0..100u32 {
        cache.insert(&key.to_le_bytes(), value(key, 0)).unwrap();
    }
    assert_eq!(
        cache.get(b"short").unwrap(),
        "v",
        "from disk, before its deadline"
    );
    for key in 0..100u32 {
        cache.insert(&key.to_le_bytes(), value(key, 1)).unwrap();
    }
    clock.advance(Duration::from_secs(10));
    assert!(cache.get(b"short").is_none(), "expired on disk too");
}

/// The cache-wide time to live holds on disk and across a restart: entries
/// written without a TTL of their own expire when it ends, in either tier,
/// before and after the reopen; an entry's own longer TTL outlives it.
#[test]
fn a_cache_wide_time_to_live_holds_across_tiers_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let open = |clock: &ManualClock| {
        Cache::builder()
            .memory_capacity(10)
            .unit_weight()
            .time_to_live(Duration::from_secs(60))
            .clock(clock.clone())
            .disk(dir.path(), 8 * SEGMENT)
            .segment_size(SEGMENT)
            .build()
            .unwrap()
    };
    let clock = ManualClock::new();
    let cache = open(&clock);
    cache
        .insert_with_ttl(b"long", "kept", Duration::from_secs(3600))
        .unwrap();
    for key in 0..100u32 {
        cache.insert(&key.to_le_bytes(), value(key, 0)).unwrap();
    }
    assert_eq!(
        cache.get(&0u32.to_le_bytes()).unwrap(),
        value(0, 0),
        "from disk"
    );
    cache.close().unwrap();
    // Half the TTL later, after a restart: still there.
    let clock = ManualClock::new();
    let cache = open(&clock);
    clock.advance(Duration::from_secs(30));
    assert_eq!(cache.get(&1u32.to_le_bytes()).unwrap(), value(1, 0));
    // Past it: gone from both tiers; the longer TTL is not.
    clock.advance(Duration::from_secs(31));
    for key in 0..100u32 {
        assert!(
            cache.get(&key.to_le_bytes()).is_none(),
            "key {key} outlived the TTL"
        );
    }
    assert_eq!(cache.get(b"long").unwrap(), "kept");
}

#[test]
fn demote_writes_far_less_than_write_behind() {
    let run = |policy| {
        let dir = tempfile::tempdir().unwrap();
        let cache = tiered(dir.path(), 500, policy);
        let mut rng = StdRng::seed_from_u64(3);
        for step in 0..30_000u32 {
            // Skewed: most requests go to a hot set larger than memory.
            let key = if rng.random_bool(0.8) {
                rng.random_range(0..800u32)
            } else {
                rng.random_range(0..20_000u32)
            };
            let k = key.to_le_bytes();
            if cache.get(&k).is_none() {
                cache.insert(&k, value(key, step)).unwrap();
            }
        }
        let disk = cache.stats().disk.unwrap();
        (disk.value_bytes_in, cache.stats().hit_ratio())
    };
    let (behind, behind_hits) = run(WritePolicy::WriteBehind);
    let (demote, demote_hits) = run(WritePolicy::Demote);
    assert!(
        demote * 3 <= behind,
        "demote wrote {demote} bytes, write-behind {behind}"
    );
    // Demotion keeps what proved reuse (entries that were hot), and only that.
    // Its price is the cold tail write-behind keeps on disk: the hit ratios are
    // printed, not asserted (0.75..0.77 vs 0.81 here; docs/design.md §10).
    assert!(
        demote > 0,
        "demote wrote nothing: evicted hot entries must be kept"
    );
    eprintln!(
        "value bytes written: write-behind {behind}, demote {demote}; hit ratio {behind_hits:.3} vs {demote_hits:.3}"
    );
}

#[test]
fn one_cache_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _first = tiered(dir.path(), 10, WritePolicy::WriteBehind);
    let second = Cache::builder()
        .memory_capacity(10)
        .disk(dir.path(), 64 * SEGMENT)
        .segment_size(SEGMENT)
        .build()
        .unwrap_err();
    assert!(
        matches!(&second, BuildError::Disk(larder::DiskError::Locked(d)) if d == dir.path()),
        "{second}"
    );
    assert!(second.to_string().contains("in use"), "{second}");
    assert!(
        std::error::Error::source(&second).is_some(),
        "typed, with a source"
    );
    let bad = Cache::builder()
        .memory_capacity(10)
        .disk(tempfile::tempdir().unwrap().path(), SEGMENT)
        .segment_size(SEGMENT)
        .build()
        .unwrap_err();
    assert!(
        matches!(bad, BuildError::Disk(larder::DiskError::Config(_))),
        "{bad}"
    );
}

/// Under `Demote`, a key memory evicts before it proved reuse is not written,
/// but the disk tier remembers it: when it comes back it has proved reuse, so
/// memory's next eviction of it writes it, and then it is served from disk.
#[test]
fn demote_writes_a_key_that_came_back_after_the_disk_remembered_it() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tiered(dir.path(), 64, WritePolicy::Demote);
    let key = |i: u32| i.to_le_bytes();
    let scan = |from: u32| {
        for i in from..from + 1000 {
            cache.insert(&key(i), value(i, 0)).unwrap();
        }
    };
    scan(0);
    let s = cache.stats().disk.unwrap();
    assert!(
        s.ghosts > 500,
        "evicted unwritten keys are remembered: {s:?}"
    );
    assert_eq!(
        s.values_appended, 0,
        "a one-pass scan writes nothing: {s:?}"
    );
    // Keys from the middle of the scan come back (misses: nothing wrote them),
    // then leave again. (The first keys stay in memory: warm-up made them hot.)
    let returning = 500..600u32;
    for i in returning.clone() {
        assert!(cache.get(&key(i)).is_none(), "key {i}");
        cache.insert(&key(i), value(i, 1)).unwrap();
    }
    scan(10_000);
    let s = cache.stats().disk.unwrap();
    assert!(
        s.values_appended >= 90,
        "the returning keys are written: {s:?}"
    );
    let back = returning
        .clone()
        .filter(|&i| cache.get(&key(i)).is_some_and(|v| v == value(i, 1)))
        .count();
    assert!(back >= 90, "only {back} of 100 served");
    for i in 0..2000 {
        if let Some(v) = cache.get(&key(i)) {
            assert_eq!(v, value(i, u32::from(returning.contains(&i))));
        }
    }
}

/// The corruption campaign through the cache, under an open cache that keeps
/// writing: bit flips, zeroed ranges and truncations of segment files yield
/// misses and a corrupt-record count, never wrong bytes or a panic.
/// `LARDER_CORRUPTION_TRIALS` raises the number of trials (default 1,000).
#[test]
fn damaged_segment_files_under_an_open_cache_are_misses_never_wrong_bytes() {
    let trials: u32 = env_or("LARDER_CORRUPTION_TRIALS", 1000);
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::builder()
        .memory_capacity(50)
        .unit_weight()
        .disk(dir.path(), 48 * SEGMENT)
        .segment_size(SEGMENT)
        .build()
        .unwrap();
    let mut rng = StdRng::seed_from_u64(2026);
    let mut model = std::collections::HashMap::new();
    let write = |rng: &mut StdRng, model: &mut std::collections::HashMap<u32, u32>| {
        let key = rng.random_range(0..3000u32);
        let version = model.get(&key).map_or(0, |v| v + 1);
        cache
            .insert(&key.to_le_bytes(), value(key, version))
            .unwrap();
        model.insert(key, version);
    };
    for _ in 0..6000 {
        write(&mut rng, &mut model);
    }
    cache.sync().unwrap();
    let (mut wrong, mut served) = (0, 0);
    for trial in 0..trials {
        let mut files = segment_files(dir.path());
        files.pop(); // the newest may be the one being written
        let path = &files[rng.random_range(0..files.len())];
        let mut bytes = std::fs::read(path).unwrap();
        if bytes.is_empty() {
            continue; // truncated to nothing by an earlier trial
        }
        match trial % 3 {
            0 => {
                for _ in 0..rng.random_range(1..8) {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] ^= 1 << rng.random_range(0..8);
                }
                std::fs::write(path, &bytes).unwrap();
            }
            1 => {
                let at = rng.random_range(0..bytes.len());
                let end = (at + rng.random_range(1..4096)).min(bytes.len());
                bytes[at..end].fill(0);
                std::fs::write(path, &bytes).unwrap();
            }
            _ => {
                let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
                file.set_len(rng.random_range(0..bytes.len() as u64))
                    .unwrap();
            }
        }
        for _ in 0..20 {
            let key = rng.random_range(0..3000u32);
            if let Some(v) = cache.get(&key.to_le_bytes()) {
                served += 1;
                if Some(v) != model.get(&key).map(|&version| value(key, version)) {
                    wrong += 1;
                }
            }
        }
        for _ in 0..5 {
            write(&mut rng, &mut model);
        }
    }
    let s = cache.stats();
    let disk = s.disk.clone().unwrap();
    assert_eq!(wrong, 0, "{wrong} wrong values of {served} served");
    assert!(served > 0);
    assert!(disk.corrupt_records > 0, "no damage was detected: {disk:?}");
    assert!(disk.healthy(), "damage to read data is not a write failure");
    assert!(disk.entries <= 3000, "stale index entries kept: {disk:?}");
    eprintln!(
        "{trials} trials: {served} values served, all right; {} corrupt records detected",
        disk.corrupt_records
    );
}

/// Compression as the cache's stats report it: a compressible workload is
/// stored in fewer bytes than it inserts, an incompressible one raw.
#[test]
fn compression_shows_in_the_stats() {
    let ratio = |value: &dyn Fn(u32) -> Bytes| {
        let dir = tempfile::tempdir().unwrap();
        let cache = tiered(dir.path(), 100, WritePolicy::WriteBehind);
        for key in 0..500u32 {
            cache.insert(&key.to_le_bytes(), value(key)).unwrap();
        }
        cache.sync().unwrap();
        let disk = cache.stats().disk.unwrap();
        assert_eq!(disk.value_bytes_in, 500 * value(0).len() as u64);
        for key in 0..500u32 {
            if let Some(v) = cache.get(&key.to_le_bytes()) {
                assert_eq!(v, value(key));
            }
        }
        disk.compression_ratio()
    };
    let text = |key: u32| Bytes::from(format!("{key:08} larder keeps hot data close. ").repeat(60));
    let noise = |key: u32| {
        let mut rng = StdRng::seed_from_u64(u64::from(key));
        Bytes::from((0..2000).map(|_| rng.random::<u8>()).collect::<Vec<_>>())
    };
    let compressible = ratio(&text);
    assert!(compressible < 0.25, "ratio {compressible}");
    assert_eq!(ratio(&noise), 1.0, "incompressible values are stored raw");
}

/// Readers on keys that live mostly on disk while a writer overwrites and
/// removes them and reclaim keeps recycling segments: every value read is the
/// key's own, whole, and never older than a write or remove that had finished
/// before the read began. `LARDER_STRESS_OPS` sets the writer's operations
/// (default 40,000; the soak in docs/benchmarks.md used 4,000,000).
#[test]
fn readers_writers_and_reclaim_through_the_cache() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    const KEYS: u32 = 2000;
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::builder()
        .memory_capacity(64)
        .unit_weight()
        .disk(dir.path(), 6 * SEGMENT)
        .segment_size(SEGMENT)
        .build()
        .unwrap();
    // Per key: the version of the last finished insert or remove.
    let floor: Vec<AtomicU32> = (0..KEYS).map(|_| AtomicU32::new(0)).collect();
    let stop = AtomicBool::new(false);
    let reads = std::thread::scope(|s| {
        let readers: Vec<_> = (0..2u64)
            .map(|t| {
                let (cache, floor, stop) = (&cache, &floor, &stop);
                s.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(t);
                    let mut reads = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let key = rng.random_range(0..KEYS);
                        let before = floor[key as usize].load(Ordering::Acquire);
                        if let Some(v) = cache.get(&key.to_le_bytes()) {
                            let owner = u32::from_le_bytes(v[..4].try_into().unwrap());
                            let version = u32::from_le_bytes(v[4..8].try_into().unwrap());
                            assert_eq!(owner, key, "another key's value");
                            assert_eq!(v, value(key, version), "torn value");
                            assert!(version >= before, "key {key}: {version} < {before}");
                        }
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        let mut rng = StdRng::seed_from_u64(99);
        let ops: u32 = env_or("LARDER_STRESS_OPS", 40_000);
        for version in 1..=ops {
            let key = rng.random_range(0..KEYS);
            if rng.random_ratio(1, 10) {
                cache.remove(&key.to_le_bytes());
            } else {
                cache
                    .insert(&key.to_le_bytes(), value(key, version))
                    .unwrap();
            }
            floor[key as usize].store(version, Ordering::Release);
        }
        drop(_stop);
        readers.into_iter().map(|r| r.join().unwrap()).sum::<u64>()
    });
    let disk = cache.stats().disk.unwrap();
    assert!(disk.reclaimed_segments >= 10, "{disk:?}");
    assert!(disk.hits > 0 && reads > 10_000, "{disk:?}, {reads} reads");
    assert_eq!(disk.corrupt_records, 0);
    eprintln!(
        "{reads} reads, {} L2 hits, {} segments reclaimed, {} re-appended",
        disk.hits, disk.reclaimed_segments, disk.reappended
    );
}

/// Two keys whose hashes share the low 32 bits and the bits that pick the
/// index's stripe (what the index once told keys apart by) are both cached
/// on disk, read back, survive a reopen, and are removed one without the
/// other. (With 40 bits of identity one of every such pair was never cached
/// on disk: an outside fill lost 1 key in 500,000.)
#[test]
fn keys_sharing_index_bits_are_both_cached_on_disk() {
    // Found by search over "key-{i}": equal in bits 0..32 and 40..52, not equal.
    let (a, b) = (&b"key-7193823"[..], &b"key-9378750"[..]);
    let (ha, hb) = (larder::hash_key(a), larder::hash_key(b));
    assert_ne!(ha, hb);
    assert_eq!(ha as u32, hb as u32, "low 32 bits");
    assert_eq!((ha >> 40) & 0xfff, (hb >> 40) & 0xfff, "stripe bits");
    let dir = tempfile::tempdir().unwrap();
    // Memory holds one entry: whatever is read, the other is on disk only.
    let open = || tiered(dir.path(), 1, WritePolicy::WriteBehind);
    let cache = open();
    cache.insert(a, "value of a").unwrap();
    cache.insert(b, "value of b").unwrap();
    cache.insert(b"filler", "filler").unwrap();
    let hits = cache.stats().disk.unwrap().hits;
    assert_eq!(cache.get(a).as_deref(), Some(&b"value of a"[..]));
    assert_eq!(cache.get(b).as_deref(), Some(&b"value of b"[..]));
    assert_eq!(cache.stats().disk.unwrap().hits, hits + 2, "both from disk");
    cache.close().unwrap();
    let cache = open();
    assert!(cache.contains(a) && cache.contains(b));
    assert_eq!(cache.remove(a).as_deref(), Some(&b"value of a"[..]));
    assert_eq!(cache.get(b).as_deref(), Some(&b"value of b"[..]), "b stays");
    cache.close().unwrap();
    let cache = open();
    assert!(cache.get(a).is_none(), "a stays removed");
    assert_eq!(cache.get(b).as_deref(), Some(&b"value of b"[..]));
}

/// The same pair, both on disk, removed: neither comes back after a restart
/// (each removal finds its own key's entry, and recovery tells the two
/// tombstones apart as the index does).
#[test]
fn removed_keys_sharing_index_bits_stay_removed_after_a_restart() {
    let (a, b) = (&b"key-7193823"[..], &b"key-9378750"[..]);
    let dir = tempfile::tempdir().unwrap();
    let open = || tiered(dir.path(), 1, WritePolicy::WriteBehind);
    let cache = open();
    cache.insert(a, "value of a").unwrap();
    cache.insert(b, "value of b").unwrap();
    cache.insert(b"filler", "filler").unwrap();
    cache.remove(b);
    cache.remove(a);
    assert!(cache.get(a).is_none() && cache.get(b).is_none());
    cache.close().unwrap();
    let cache = open();
    assert!(cache.get(a).is_none(), "a removed value came back");
    assert!(cache.get(b).is_none(), "a removed value came back");
}

/// `contains` and `remove` answer for the whole cache: for a key only the
/// disk tier holds, `contains` is true and `remove` returns its value (they
/// once looked at memory only: 8,696 of 10,000 keys in one program).
#[test]
fn contains_and_remove_answer_for_a_key_only_the_disk_holds() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tiered(dir.path(), 1, WritePolicy::WriteBehind);
    cache.insert(b"on disk", "its value").unwrap();
    cache.insert(b"in memory", "pushes the other out").unwrap();
    let before = cache.stats();
    assert!(cache.contains(b"on disk"));
    assert!(!cache.contains(b"never there"));
    let after = cache.stats();
    assert_eq!(
        (after.hits, after.misses),
        (before.hits, before.misses),
        "contains is not an access"
    );
    assert_eq!(cache.remove(b"on disk").as_deref(), Some(&b"its value"[..]));
    assert!(!cache.contains(b"on disk"));
    assert!(cache.get(b"on disk").is_none());
    assert!(cache.remove(b"on disk").is_none());
    // An expired key on disk is not contained either.
    let clock = larder::ManualClock::new();
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::builder()
        .memory_capacity(1)
        .unit_weight()
        .clock(clock.clone())
        .disk(dir.path(), 64 * SEGMENT)
        .segment_size(SEGMENT)
        .build()
        .unwrap();
    cache
        .insert_with_ttl(b"brief", "v", Duration::from_secs(5))
        .unwrap();
    cache.insert(b"other", "v").unwrap();
    assert!(cache.contains(b"brief"));
    clock.advance(Duration::from_secs(6));
    assert!(!cache.contains(b"brief"));
    assert!(cache.remove(b"brief").is_none());
}

/// `verify_dir` reports entries whose newest value has expired apart from the
/// live ones (they were once counted live).
#[test]
fn verify_counts_expired_entries_apart() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tiered(dir.path(), 100, WritePolicy::WriteBehind);
    for i in 0..10u32 {
        cache.insert(&i.to_le_bytes(), "lasting").unwrap();
    }
    for i in 10..14u32 {
        cache
            .insert_with_ttl(&i.to_le_bytes(), "brief", Duration::from_millis(1))
            .unwrap();
    }
    cache.close().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let report = larder::verify_dir(dir.path()).unwrap();
    assert_eq!(
        (report.live_entries, report.expired_entries),
        (10, 4),
        "{report:?}"
    );
    assert!(report.is_clean(), "{report:?}");
}

/// Compression within its budget: with none (and a flusher that keeps up),
/// compressible values are stored raw and counted as paced; with no limit,
/// they are stored compressed. Either way every value reads back whole,
/// from the disk tier, after a restart.
#[test]
fn compression_keeps_to_its_budget_and_values_read_back_either_way() {
    let text = |i: u32| format!("entry {i}: larder keeps hot data close. ").repeat(100);
    for (share, compressed) in [(0.0, false), (f64::INFINITY, true)] {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            Cache::builder()
                .memory_capacity(64 << 10)
                .disk(dir.path(), 48 << 20)
                .segment_size(16 << 20)
                .compression_budget(share)
                .build()
                .unwrap()
        };
        let cache = open();
        for i in 0..200u32 {
            cache.insert(&i.to_be_bytes(), text(i)).unwrap();
        }
        cache.sync().unwrap();
        let d = cache.stats().disk.unwrap();
        let ratio = d.value_bytes_stored as f64 / d.value_bytes_in as f64;
        if compressed {
            assert!(ratio < 0.2, "share {share}: ratio {ratio}");
            assert_eq!(d.compression_paced, 0);
        } else {
            assert!(ratio > 0.99, "share {share}: ratio {ratio}");
            assert_eq!(d.compression_paced, 200);
        }
        drop(cache);
        let cache = open();
        for i in 0..200u32 {
            assert_eq!(
                cache.get(&i.to_be_bytes()).as_deref(),
                Some(text(i).as_bytes()),
                "share {share}, key {i}"
            );
        }
    }
}
