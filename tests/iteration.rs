//! Iteration and bulk invalidation over both tiers: `iter()` yields exactly
//! the live entries, each once; `invalidate_entries_if` and `invalidate_all`
//! leave nothing matching in either tier, before and after a restart;
//! `entry_count` counts distinct keys.

use larder::{Cache, WritePolicy};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The real clock: deadlines are kept as wall-clock times on disk, so an
/// entry expired before a restart stays expired after it.
fn open(dir: &Path, policy: WritePolicy) -> Cache {
    Cache::builder()
        .memory_capacity(64 << 10)
        .disk(dir, 16 << 20)
        .segment_size(256 << 10)
        .write_policy(policy)
        .build()
        .unwrap()
}

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn listed(cache: &Cache) -> Model {
    let mut out = Model::new();
    for (k, v) in cache.iter() {
        let before = out.insert(k.to_vec(), v.to_vec());
        assert!(before.is_none(), "key {:?} yielded twice", k);
    }
    out
}

/// What the cache holds of `model` (`contains` is not an access), with the
/// model's values: under `WriteBehind` with room on disk, all of it; under
/// `Demote`, what the policy kept.
fn held(cache: &Cache, model: &Model, policy: WritePolicy) -> Model {
    let held: Model = model
        .iter()
        .filter(|(k, _)| cache.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if policy == WritePolicy::WriteBehind {
        assert_eq!(
            held.len(),
            model.len(),
            "write-behind keeps everything here"
        );
    } else {
        assert!(held.len() > 300, "{policy:?} keeps {} entries", held.len());
    }
    held
}

fn key(i: u32) -> Vec<u8> {
    let kind = ["user", "order", "item"][(i % 3) as usize];
    format!("{kind}:{i}").into_bytes()
}

/// Fills a cache far past its memory: most entries are on disk only.
fn fill(cache: &Cache) -> Model {
    let mut model = Model::new();
    for i in 0..3_000u32 {
        let v = vec![(i % 251) as u8; 40 + (i % 60) as usize];
        cache.insert(&key(i), v.clone()).unwrap();
        model.insert(key(i), v);
    }
    // Overwrites, removals, and entries that expire.
    for i in (0..3_000u32).step_by(7) {
        let v = format!("new {i}").into_bytes();
        cache.insert(&key(i), v.clone()).unwrap();
        model.insert(key(i), v);
    }
    for i in (0..3_000u32).step_by(11) {
        cache.remove(&key(i));
        model.remove(&key(i));
    }
    for i in 3_000..3_100u32 {
        cache
            .insert_with_ttl(&key(i), "short", Duration::from_millis(20))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    model
}

fn policies() -> [WritePolicy; 2] {
    [WritePolicy::WriteBehind, WritePolicy::Demote]
}

#[test]
fn iter_yields_every_live_entry_of_both_tiers_once_before_and_after_a_restart() {
    for policy in policies() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), policy);
        let model = fill(&cache);
        let model = held(&cache, &model, policy);
        assert!(
            cache.stats().memory.entries < model.len() as u64,
            "some are on disk only"
        );
        let hits = cache.stats().hits;
        assert!(
            listed(&cache) == model,
            "{policy:?}: iter differs from the model"
        );
        assert_eq!(cache.stats().hits, hits, "iteration is not an access");
        // Entries expired but not yet removed (100) may be counted.
        let count = cache.entry_count();
        let n = model.len() as u64;
        assert!(
            (n..=n + 100).contains(&count),
            "{policy:?}: {count} for {n}"
        );
        cache.close().unwrap();

        let cache = open(dir.path(), policy);
        let model = held(&cache, &model, policy);
        assert!(listed(&cache) == model, "{policy:?}: iter after reopen");
        cache.close().unwrap();
    }
}

#[test]
fn invalidate_entries_if_leaves_nothing_matching_in_either_tier_across_a_restart() {
    for policy in policies() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), policy);
        let model = fill(&cache);
        let mut model = held(&cache, &model, policy);
        let users = model.keys().filter(|k| k.starts_with(b"user:")).count() as u64;
        let removed = cache.invalidate_entries_if(|k| k.starts_with(b"user:"));
        assert_eq!(removed, users, "{policy:?}");
        model.retain(|k, _| !k.starts_with(b"user:"));
        for i in 0..3_100u32 {
            if key(i).starts_with(b"user:") {
                assert!(
                    cache.get(&key(i)).is_none(),
                    "{policy:?}: {i} still readable"
                );
            }
        }
        assert!(listed(&cache) == model, "{policy:?}: the rest is intact");
        assert_eq!(cache.invalidate_entries_if(|k| k.starts_with(b"user:")), 0);
        cache.close().unwrap();

        let cache = open(dir.path(), policy);
        for i in 0..3_100u32 {
            if key(i).starts_with(b"user:") {
                assert!(cache.get(&key(i)).is_none(), "{policy:?}: {i} came back");
            }
        }
        let model = held(&cache, &model, policy);
        assert!(listed(&cache) == model, "{policy:?}: after reopen");
        cache.close().unwrap();
    }
}

#[test]
fn invalidate_all_empties_both_tiers_for_good() {
    for policy in policies() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), policy);
        let model = fill(&cache);
        let model = held(&cache, &model, policy);
        assert_eq!(cache.invalidate_all(), model.len() as u64, "{policy:?}");
        assert_eq!(cache.entry_count(), 0, "{policy:?}");
        assert_eq!(cache.weighted_size(), 0);
        assert!(cache.iter().next().is_none());
        for k in model.keys() {
            assert!(cache.get(k).is_none());
        }
        // The cache works on.
        cache.insert(b"after", "x").unwrap();
        cache.close().unwrap();

        let cache = open(dir.path(), policy);
        let left = listed(&cache);
        assert_eq!(
            left.keys().collect::<Vec<_>>(),
            [&b"after".to_vec()],
            "{policy:?}: nothing else came back"
        );
        cache.close().unwrap();
    }
}

#[test]
fn keys_left_alone_are_all_yielded_while_others_change() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), WritePolicy::WriteBehind);
    let stable: Model = (0..1_000u32)
        .map(|i| (format!("stable:{i}").into_bytes(), vec![i as u8; 64]))
        .collect();
    for (k, v) in &stable {
        cache.insert(k, v.clone()).unwrap();
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) && i < 50_000 {
                cache
                    .insert(format!("churn:{}", i % 2_000).as_bytes(), vec![1; 80])
                    .unwrap();
                if i.is_multiple_of(3) {
                    cache.remove(format!("churn:{}", (i / 2) % 2_000).as_bytes());
                }
                // Reads promote stable keys from disk into memory meanwhile.
                cache.get(format!("stable:{}", i % 1_000).as_bytes());
                i += 1;
            }
        });
        for _ in 0..5 {
            let seen = listed(&cache);
            for (k, v) in &stable {
                assert_eq!(seen.get(k), Some(v), "{:?}", String::from_utf8_lossy(k));
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
}
