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

#[path = "../../tests/support/contract.rs"]
mod contract;

use contract::History;
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
    let mut history = History::default();
    let read_all = |c: &Cache| -> HashMap<u64, u64> {
        (0..24u8)
            .filter_map(|k| c.get(&[k]).map(|v| (u64::from(k), u64::from(version_of(k, &v)))))
            .collect()
    };
    for (step, op) in data.chunks(2).enumerate() {
        let [kind, arg] = [op[0], *op.get(1).unwrap_or(&0)];
        let key = arg % 24;
        let version = step as u32 + 1;
        let c = cache.as_ref().unwrap();
        match kind % 10 {
            0..=3 => {
                c.insert(&[key], value(key, version, kind >> 4)).expect("insert");
                history.write(u64::from(key), u64::from(version));
            }
            4 => {
                c.remove(&[key]);
                history.remove(u64::from(key));
            }
            5 | 6 => {
                if let Some(v) = c.get(&[key]) {
                    version_of(key, &v);
                }
            }
            7 => {
                c.sync().expect("sync");
                history.sync();
            }
            8 => {
                cache.take().unwrap().close().expect("close");
                let c = open(&dir);
                let seen = read_all(&c);
                let bad = history.check_clean(&seen);
                assert!(bad.is_empty(), "after a clean close: {bad:#?}");
                history.restart_from(seen);
                cache = Some(c);
            }
            _ => {
                // Crash: copy what the files hold now, newest segment first (an
                // older one is sealed before a newer one gets data, so this
                // order copies a state a crash can leave), and open the copy.
                generation += 1;
                let copy = root.path().join(generation.to_string());
                std::fs::create_dir_all(&copy).expect("mkdir");
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
                let seen = read_all(&c);
                let bad = history.check_crash(&seen);
                assert!(bad.is_empty(), "after a crash: {bad:#?}");
                history.restart_from(seen);
                cache = Some(c);
            }
        }
    }
});
