use super::*;
use rand::{Rng, SeedableRng, rngs::StdRng};

fn access(p: &mut ClockPro<u64>, key: u64, weight: u32) -> bool {
    if let Some(idx) = p.find_resident(key, |&k| k == key) {
        p.touch(idx);
        return true;
    }
    p.insert(key, weight, 0, key, false, &mut |e: Evicted<u64>| {
        assert_ne!(
            e.payload, key,
            "an entry being admitted is never its own victim"
        )
    });
    false
}

#[test]
fn resident_struct_sizes() {
    assert_eq!(std::mem::size_of::<Meta>(), 24);
    assert_eq!(std::mem::size_of::<Resident<u64>>(), 64);
}

#[test]
fn warm_up_fills_hot_space_first() {
    let mut p = ClockPro::<u64>::new(100);
    for k in 0..98 {
        access(&mut p, k, 1);
    }
    assert_eq!(p.counts().hot, 98);
    access(&mut p, 1000, 1);
    assert_eq!(p.counts().hot, 98, "the minimum cold space is kept cold");
    p.validate();
}

#[test]
fn scan_does_not_flush_hot_entries() {
    let mut p = ClockPro::<u64>::new(100);
    for _ in 0..3 {
        for k in 0..50 {
            access(&mut p, k, 1);
        }
    }
    for k in 1000..100_000 {
        access(&mut p, k, 1);
    }
    p.validate();
    let kept = (0..50)
        .filter(|&k| p.find_resident(k, |_| true).is_some())
        .count();
    assert!(
        kept >= 45,
        "a one-off scan evicted {} of 50 hot keys",
        50 - kept
    );
}

#[test]
fn random_weighted_sequences_keep_invariants() {
    for seed in 0..20 {
        let mut rng = StdRng::seed_from_u64(seed);
        let cap = rng.random_range(1..400);
        let mut p = ClockPro::<u64>::new(cap);
        for _ in 0..4000 {
            let key = rng.random_range(0..300u64);
            match rng.random_range(0..10) {
                0 => {
                    p.remove(key);
                }
                1 if p.find_resident(key, |_| true).is_some() => {
                    let w = rng.random_range(1..=cap.min(50)) as u32;
                    let idx = p.find_resident(key, |_| true).unwrap();
                    p.reweigh(idx, w, &mut |_| {});
                }
                _ => {
                    let w = rng.random_range(1..=cap.min(20)) as u32;
                    access(&mut p, key, w);
                }
            }
            p.validate();
        }
    }
}

#[test]
fn deadline_words_exist_only_once_a_deadline_is_set() {
    let mut p = ClockPro::<u64>::new(1_000);
    for key in 0..100 {
        access(&mut p, key, 1);
    }
    assert!(p.deadline.is_empty(), "no deadline, no words");
    let idx = |p: &ClockPro<u64>, k: u64| p.find_resident(k, |&x| x == k).unwrap();
    assert_eq!(p.deadline(idx(&p, 7)), 0);
    let i = idx(&p, 7);
    p.set_deadline(i, 0);
    assert!(p.deadline.is_empty(), "setting none keeps none");
    p.set_deadline(i, 42);
    assert_eq!(p.deadline.len(), p.slots.len());
    assert_eq!(p.deadline(i), 42);
    assert_eq!(p.deadline(idx(&p, 8)), 0, "the others have none");
    // Entries admitted later get their words, and an expiry scan finds it.
    for key in 100..200 {
        access(&mut p, key, 1);
    }
    assert_eq!(p.deadline.len(), p.slots.len());
    let mut found = Vec::new();
    p.expired_in(0, p.slots.len(), 50, &mut found);
    assert_eq!(found, vec![(i, 7)]);
}
