//! The contract's model test with restarts (contract, "what is measured"):
//! random operation sequences on a cache with a disk tier, with clean closes
//! and simulated crashes, checked against a model. The same checks as the
//! `restart_ops` fuzz target, driven here by a seeded generator so that CI
//! runs them on every change; `LARDER_MODEL_SEQUENCES` raises the count.
//!
//! A crash is simulated by copying the directory while the cache runs, newest
//! segment first (an older segment is sealed before a newer one gets data, so
//! this order copies a state a crash can leave), and opening the copy.

use larder::{Bytes, Cache};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::collections::HashMap;
use std::path::Path;

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
    let mut start: HashMap<u8, u32> = HashMap::new();
    let mut ops: Vec<(u8, Option<u32>)> = Vec::new();
    let mut synced = 0;
    for step in 0..steps {
        let key = rng.random_range(0..KEYS);
        let version = step as u32 + 1;
        let c = cache.as_ref().unwrap();
        match rng.random_range(0..100) {
            0..45 => {
                let len = rng.random_range(0..2000);
                c.insert(&[key], value(key, version, len)).unwrap();
                ops.push((key, Some(version)));
            }
            45..55 => {
                c.remove(&[key]);
                ops.push((key, None));
            }
            55..88 => {
                if let Some(v) = c.get(&[key]) {
                    version_of(key, &v);
                }
            }
            88..94 => {
                c.sync().unwrap();
                synced = ops.len();
            }
            94..97 => {
                cache.take().unwrap().close().unwrap();
                let c = open(&dir);
                let mut state = start.clone();
                for &(k, v) in &ops {
                    match v {
                        Some(v) => state.insert(k, v),
                        None => state.remove(&k),
                    };
                }
                let mut seen = HashMap::new();
                for k in 0..KEYS {
                    if let Some(v) = c.get(&[k]) {
                        let got = version_of(k, &v);
                        assert_eq!(
                            state.get(&k),
                            Some(&got),
                            "seed {seed}: key {k} after a clean close"
                        );
                        seen.insert(k, got);
                    }
                }
                cache = Some(c);
                (start, ops, synced) = (seen, Vec::new(), 0);
            }
            _ => {
                generation += 1;
                let copy = root.path().join(generation.to_string());
                copy_for_crash(&dir, &copy);
                drop(cache.take());
                dir = copy;
                let c = open(&dir);
                let (mut lo, mut hi) = (synced, ops.len());
                let mut seen = HashMap::new();
                for k in 0..KEYS {
                    let Some(v) = c.get(&[k]) else { continue };
                    let got = version_of(k, &v);
                    seen.insert(k, got);
                    let mut from = (start.get(&k) == Some(&got)).then_some(0);
                    let mut range = None;
                    for (i, &(_, ver)) in ops.iter().enumerate().filter(|(_, o)| o.0 == k) {
                        if let Some(f) = from.take() {
                            range = Some((f, i));
                            break;
                        }
                        if ver == Some(got) {
                            from = Some(i + 1);
                        }
                    }
                    let (f, t) = range.or(from.map(|f| (f, ops.len()))).unwrap_or_else(|| {
                        panic!("seed {seed}: key {k}: {got} was never its value")
                    });
                    lo = lo.max(f);
                    hi = hi.min(t);
                    assert!(
                        lo <= hi,
                        "seed {seed}: key {k}: version {got} does not fit one moment after the last sync"
                    );
                }
                cache = Some(c);
                (start, ops, synced) = (seen, Vec::new(), 0);
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
