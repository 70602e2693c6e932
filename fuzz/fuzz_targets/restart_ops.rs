//! Operation sequences on a cache with a disk tier, with clean closes and
//! simulated crashes, against a model of the contract.
//!
//! A crash is simulated by copying the directory's files while the cache runs
//! (what `kill -9` would leave: whatever had reached the files) and opening the
//! copy. Every value read after a reopen must be the key's own; after a clean
//! close, exactly the key's last value or nothing; after a crash, the values
//! read must all fit one moment between the last `sync` and the crash (nothing
//! removed or overwritten before the last sync comes back, nothing out of order).

#![no_main]

use larder::{Bytes, Cache};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::path::Path;

const SEGMENT: u64 = 64 << 10;

fn open(dir: &Path) -> Cache {
    Cache::builder()
        .memory_capacity(8)
        .unit_weight()
        .disk(dir, 4 * SEGMENT)
        .segment_size(SEGMENT)
        .build()
        .expect("open")
}

fn value(key: u8, version: u32, len: u8) -> Bytes {
    let mut v = vec![key];
    v.extend_from_slice(&version.to_le_bytes());
    v.resize(5 + usize::from(len) * 8, key ^ version as u8);
    v.into()
}

fn version_of(key: u8, v: &[u8]) -> u32 {
    assert!(v.len() >= 5 && v[0] == key, "key {key}: another key's bytes");
    u32::from_le_bytes(v[1..5].try_into().unwrap())
}

fuzz_target!(|data: &[u8]| {
    let root = tempfile::tempdir().expect("temp dir");
    let mut generation = 0;
    let mut dir = root.path().join("0");
    let mut cache = Some(open(&dir));
    // The state (key -> version) at the start of `ops`, and the ops since: (key, Some(version) | None).
    let mut start: HashMap<u8, u32> = HashMap::new();
    let mut ops: Vec<(u8, Option<u32>)> = Vec::new();
    let mut synced = 0usize;
    for (step, op) in data.chunks(2).enumerate() {
        let [kind, arg] = [op[0], *op.get(1).unwrap_or(&0)];
        let key = arg % 24;
        let version = step as u32 + 1;
        let c = cache.as_ref().unwrap();
        match kind % 10 {
            0..=3 => {
                c.insert(&[key], value(key, version, kind >> 4)).expect("insert");
                ops.push((key, Some(version)));
            }
            4 => {
                c.remove(&[key]);
                ops.push((key, None));
            }
            5 | 6 => {
                if let Some(v) = c.get(&[key]) {
                    version_of(key, &v);
                }
            }
            7 => {
                c.sync().expect("sync");
                synced = ops.len();
            }
            8 => {
                // Clean close and reopen: the last value of every key, or nothing.
                cache.take().unwrap().close().expect("close");
                let c = open(&dir);
                let mut state = start.clone();
                for &(k, v) in &ops {
                    match v {
                        Some(v) => state.insert(k, v),
                        None => state.remove(&k),
                    };
                }
                let mut seen = HashMap::new();
                for k in 0..24u8 {
                    if let Some(v) = c.get(&[k]) {
                        let got = version_of(k, &v);
                        assert_eq!(state.get(&k), Some(&got), "key {k} after a clean close");
                        seen.insert(k, got);
                    }
                }
                cache = Some(c);
                (start, ops, synced) = (seen, Vec::new(), 0);
            }
            _ => {
                // Crash: copy what the files hold now, open the copy.
                generation += 1;
                let copy = root.path().join(generation.to_string());
                std::fs::create_dir_all(&copy).expect("mkdir");
                // Newest segment first: an older one is sealed before a newer
                // one gets data, so this order copies a state a crash can leave.
                let mut files: Vec<_> = std::fs::read_dir(&dir)
                    .expect("list")
                    .flatten()
                    .map(|e| e.file_name())
                    .filter(|n| n != "LOCK")
                    .collect();
                files.sort_by(|a, b| b.cmp(a));
                for name in files {
                    let _ = std::fs::copy(dir.join(&name), copy.join(&name));
                }
                drop(cache.take()); // the original goes on no further
                dir = copy;
                let c = open(&dir);
                let (mut lo, mut hi) = (synced, ops.len());
                let mut seen = HashMap::new();
                for k in 0..24u8 {
                    let Some(v) = c.get(&[k]) else { continue };
                    let got = version_of(k, &v);
                    seen.insert(k, got);
                    // Moments (ops applied) at which k held `got`.
                    let mut from = (start.get(&k) == Some(&got)).then_some(0);
                    let mut range = None;
                    for (i, &(key, ver)) in ops.iter().enumerate().filter(|(_, o)| o.0 == k) {
                        if let Some(f) = from.take() {
                            range = Some((f, i));
                            break;
                        }
                        let _ = key;
                        if ver == Some(got) {
                            from = Some(i + 1);
                        }
                    }
                    let (f, t) = range.or(from.map(|f| (f, ops.len()))).unwrap_or_else(|| {
                        panic!("key {k}: version {got} was never its value")
                    });
                    lo = lo.max(f);
                    hi = hi.min(t);
                    assert!(lo <= hi, "key {k}: version {got} does not fit one moment after the last sync");
                }
                cache = Some(c);
                (start, ops, synced) = (seen, Vec::new(), 0);
            }
        }
    }
});
