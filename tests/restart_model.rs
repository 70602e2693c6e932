//! The contract's model test with restarts (contract, "what is measured"):
//! random operation sequences on a cache with a disk tier, with clean closes
//! and simulated crashes, checked against a model. The same checks as the
//! `restart_ops` fuzz target, driven here by a seeded generator so that CI
//! runs them on every change; `LARDER_MODEL_SEQUENCES` raises the count.
//!
//! A crash is simulated by copying the directory while the cache runs, newest
//! segment first (an older segment is sealed before a newer one gets data, so
//! this order copies a state a crash can leave), and opening the copy.

mod support;

use larder::{Bytes, Cache};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::collections::HashMap;
use std::path::Path;
use support::contract::History;

const SEGMENT: u64 = 64 << 10;
const KEYS: u8 = 24;

fn open(dir: &Path) -> Cache {
    Cache::builder()
        .memory_capacity(8)
        .unit_weight()
        .disk(dir, 4 * SEGMENT)
        .segment_size(SEGMENT)
        .build()
        .expect("open")
}

fn value(key: u8, version: u32, len: usize) -> Bytes {
    let mut v = vec![key];
    v.extend_from_slice(&version.to_le_bytes());
    v.resize(5 + len, key ^ version as u8);
    v.into()
}

fn version_of(key: u8, v: &[u8]) -> u32 {
    assert!(
        v.len() >= 5 && v[0] == key,
        "key {key}: another key's bytes"
    );
    assert_eq!(
        v,
        value(
            key,
            u32::from_le_bytes(v[1..5].try_into().unwrap()),
            v.len() - 5
        )
    );
    u32::from_le_bytes(v[1..5].try_into().unwrap())
}

fn copy_for_crash(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(from)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "LOCK")
        .collect();
    names.sort_by(|a, b| b.cmp(a));
    for name in names {
        let _ = std::fs::copy(from.join(&name), to.join(&name));
    }
}

/// One sequence; panics on a violation.
fn sequence(seed: u64, steps: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let root = tempfile::tempdir().unwrap();
    let mut generation = 0;
    let mut dir = root.path().join("0");
    let mut cache = Some(open(&dir));
    let mut history = History::default();
    let read_all = |c: &Cache| -> HashMap<u64, u64> {
        (0..KEYS)
            .filter_map(|k| {
                c.get(&[k])
                    .map(|v| (u64::from(k), u64::from(version_of(k, &v))))
            })
            .collect()
    };
    for step in 0..steps {
        let key = rng.random_range(0..KEYS);
        let version = step as u32 + 1;
        let c = cache.as_ref().unwrap();
        match rng.random_range(0..100) {
            0..45 => {
                let len = rng.random_range(0..2000);
                c.insert(&[key], value(key, version, len)).unwrap();
                history.write(u64::from(key), u64::from(version));
            }
            45..55 => {
                c.remove(&[key]);
                history.remove(u64::from(key));
            }
            55..88 => {
                if let Some(v) = c.get(&[key]) {
                    version_of(key, &v);
                }
            }
            88..94 => {
                c.sync().unwrap();
                history.sync();
            }
            94..97 => {
                cache.take().unwrap().close().unwrap();
                let c = open(&dir);
                let seen = read_all(&c);
                let bad = history.check_clean(&seen);
                assert!(bad.is_empty(), "seed {seed}, step {step}: {bad:#?}");
                history.restart_from(seen);
                cache = Some(c);
            }
            _ => {
                generation += 1;
                let copy = root.path().join(generation.to_string());
                copy_for_crash(&dir, &copy);
                drop(cache.take());
                dir = copy;
                let c = open(&dir);
                let seen = read_all(&c);
                let bad = history.check_crash(&seen);
                assert!(bad.is_empty(), "seed {seed}, step {step}: {bad:#?}");
                history.restart_from(seen);
                cache = Some(c);
            }
        }
    }
}

#[test]
fn random_sequences_with_closes_and_crashes_keep_the_contract() {
    let n: u64 = std::env::var("LARDER_MODEL_SEQUENCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    for seed in 0..n {
        sequence(seed, 400);
    }
}
