//! Reclaim, L2's clock hand, and the warm refill's hold on it.

use super::*;

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
    assert_eq!(s.corrupt_records, 0);
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
    tier.entered_memory(h(1)); // 1: memory holds it
    // 2: never read.
    assert!(tier.get(&k(3), 0).is_some());
    let _ = tier.remove(&k(3), h(3)); // 3: read, then removed
    assert!(tier.get(&k(4), 0).is_some());
    tier.put(&k(4), &value(4, 1, 500), 0).unwrap(); // 4: read, then overwritten
    assert!(tier.left_memory(h(5), true), "5: proved reuse in memory");
    fill_until_reclaimed(&tier, 100);
    let s = tier.stats();
    assert_eq!(s.reclaimed_segments, 1, "{s:?}");
    assert!(s.reappended >= 2, "{s:?}");

    assert_eq!(tier.get(&k(0), 0).unwrap(), value(0, 0, 500), "re-appended");
    assert_eq!(tier.get(&k(5), 0).unwrap(), value(5, 0, 500), "re-appended");
    assert!(tier.get(&k(1), 0).is_none(), "memory holds it: dropped");
    assert!(!tier.recall(h(1)), "not a ghost: memory holds it");
    assert!(tier.get(&k(2), 0).is_none(), "unreferenced: dropped");
    assert!(tier.recall(h(2)), "remembered");
    assert!(!tier.recall(h(2)), "recalled once");
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
    assert_eq!(s.corrupt_records, 0);
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
    assert_eq!(s.corrupt_records, 0);
}

#[test]
fn a_warm_refill_holds_reclaim_off_only_up_to_a_bound() {
    let dir = tempfile::tempdir().unwrap();
    let segments = 32u64;
    let tier = DiskTier::open(config(dir.path(), segments)).unwrap();
    let max = segments as usize;
    let slack = crate::policy::reclaim::refill_slack(max);
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
