//! The cache against a model, and long random sequences under the invariant
//! checker. Needs the `validate` feature (`cargo test --features validate`).

use larder::{Bytes, Cache, ManualClock};
use proptest::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Clone)]
enum Op {
    Insert {
        key: u8,
        len: u8,
        ttl_ms: Option<u16>,
    },
    Get(u8),
    Remove(u8),
    Contains(u8),
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u8>(), any::<u8>(), proptest::option::of(1..2000u16))
            .prop_map(|(key, len, ttl_ms)| Op::Insert { key, len, ttl_ms }),
        4 => any::<u8>().prop_map(Op::Get),
        1 => any::<u8>().prop_map(Op::Remove),
        1 => any::<u8>().prop_map(Op::Contains),
        1 => (0..1000u16).prop_map(Op::Advance),
    ]
}

/// What the contract allows for a key: the model's live value, or (when the cache
/// may evict) nothing.
struct Model {
    entries: HashMap<u8, (Bytes, Option<u64>)>,
    now_ms: u64,
}

impl Model {
    fn live(&self, key: u8) -> Option<&Bytes> {
        self.entries
            .get(&key)
            .filter(|(_, deadline)| deadline.is_none_or(|d| self.now_ms < d))
            .map(|(v, _)| v)
    }
}

fn value(key: u8, version: usize, len: u8) -> Bytes {
    let mut v = vec![key; usize::from(len)];
    v.extend_from_slice(&version.to_le_bytes());
    v.into()
}

/// Runs `ops`; with `may_evict` false the cache is large enough to hold everything,
/// so every live model entry must be returned exactly.
fn run(ops: &[Op], capacity: u64, shards: usize, may_evict: bool) {
    let clock = ManualClock::new();
    let cache = Cache::builder()
        .memory_capacity(capacity)
        .shards(shards)
        .clock(clock.clone())
        .build()
        .unwrap();
    let mut model = Model {
        entries: HashMap::new(),
        now_ms: 0,
    };
    for (version, op) in ops.iter().enumerate() {
        match *op {
            Op::Insert { key, len, ttl_ms } => {
                let v = value(key, version, len);
                match ttl_ms {
                    Some(ms) => cache
                        .insert_with_ttl(&[key], v.clone(), Duration::from_millis(ms.into()))
                        .unwrap(),
                    None => cache.insert(&[key], v.clone()).unwrap(),
                }
                let deadline = ttl_ms.map(|ms| model.now_ms + u64::from(ms));
                model.entries.insert(key, (v, deadline));
            }
            Op::Get(key) => {
                let got = cache.get(&[key]);
                let want = model.live(key);
                match (&got, want) {
                    (Some(g), Some(w)) => assert_eq!(g, w, "get({key}) returned a stale value"),
                    (Some(g), None) => panic!("get({key}) returned {g:?}, expected nothing"),
                    (None, Some(_)) if !may_evict => panic!("get({key}) lost a live entry"),
                    (None, _) => {}
                }
            }
            Op::Contains(key) => {
                let has = cache.contains(&[key]);
                if has {
                    assert!(model.live(key).is_some(), "contains({key}) of a dead key");
                } else if !may_evict {
                    assert!(
                        model.live(key).is_none(),
                        "contains({key}) lost a live entry"
                    );
                }
            }
            Op::Remove(key) => {
                let got = cache.remove(&[key]);
                if let Some(g) = &got {
                    assert_eq!(
                        Some(g),
                        model.live(key),
                        "remove({key}) returned a wrong value"
                    );
                } else if !may_evict {
                    assert!(model.live(key).is_none(), "remove({key}) lost a live entry");
                }
                model.entries.remove(&key);
            }
            Op::Advance(ms) => {
                clock.advance(Duration::from_millis(ms.into()));
                model.now_ms += u64::from(ms);
            }
        }
        cache.validate();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Large enough for every key: the cache must behave exactly like the model.
    #[test]
    fn matches_model_without_eviction(ops in proptest::collection::vec(op(), 1..300)) {
        run(&ops, 1 << 20, 4, false);
    }

    /// Small: entries may be forgotten, but never wrong, stale or expired.
    #[test]
    fn never_wrong_under_eviction(ops in proptest::collection::vec(op(), 1..400), shards in 0..3u32) {
        run(&ops, 4096, 1 << shards, true);
    }
}

/// Long random sequences (weighted entries, overwrites, removes, TTLs, skewed keys)
/// with the invariant checker after every step.
#[test]
fn long_random_sequences_keep_every_invariant() {
    for seed in 0..8u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let clock = ManualClock::new();
        let capacity = rng.random_range(2_000..40_000);
        let cache = Cache::builder()
            .memory_capacity(capacity)
            .shards(1 << rng.random_range(0..3))
            .clock(clock.clone())
            .build()
            .unwrap();
        let keys = rng.random_range(50..2_000u32);
        for step in 0..20_000 {
            // Skewed: a hot few and a long tail.
            let key = if rng.random_bool(0.5) {
                rng.random_range(0..keys / 10 + 1)
            } else {
                rng.random_range(0..keys)
            };
            let key = key.to_le_bytes();
            match rng.random_range(0..100) {
                0..45 => {
                    if let Some(v) = cache.get(&key) {
                        assert_eq!(&v[..4], &key, "seed {seed} step {step}: foreign value");
                    }
                }
                45..85 => {
                    let mut v = key.to_vec();
                    v.resize(rng.random_range(4..600), 0);
                    if rng.random_bool(0.2) {
                        let ttl = Duration::from_millis(rng.random_range(1..500));
                        cache.insert_with_ttl(&key, v, ttl).unwrap();
                    } else {
                        cache.insert(&key, v).unwrap();
                    }
                }
                85..95 => {
                    cache.remove(&key);
                }
                _ => clock.advance(Duration::from_millis(rng.random_range(0..100))),
            }
            cache.validate();
        }
        let s = cache.stats();
        assert!(s.memory.weight <= s.memory.capacity);
        assert!(
            s.memory.evictions > 0,
            "seed {seed}: the test should exercise eviction"
        );
    }
}
