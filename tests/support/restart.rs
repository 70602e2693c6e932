//! A cache with a disk tier driven one operation at a time, with clean closes
//! and simulated crashes, checked against the contract ([`History`]). Shared
//! by `tests/restart_model.rs` (seeded sequences) and the `restart_ops` fuzz
//! target (which includes this file and `contract.rs` by path).
//!
//! A crash is simulated by copying the directory while the cache runs, newest
//! segment first (an older segment is sealed before a newer one gets data, so
//! this order copies a state a crash can leave), and opening the copy.

use super::contract::History;
use larder::{Bytes, Cache};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Keys are single bytes below this.
pub const KEYS: u8 = 24;
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

/// The value of `key` at `version`: names both, `len` bytes of padding.
fn value(key: u8, version: u64, len: usize) -> Bytes {
    let mut v = vec![key];
    v.extend_from_slice(&(version as u32).to_le_bytes());
    v.resize(5 + len, key ^ version as u8);
    v.into()
}

/// The version a value read for `key` names; panics if it is not a whole
/// value written for `key`.
fn version_of(key: u8, v: &[u8]) -> u64 {
    assert!(
        v.len() >= 5 && v[0] == key,
        "key {key}: another key's bytes"
    );
    let version = u64::from(u32::from_le_bytes(v[1..5].try_into().unwrap()));
    assert_eq!(v, value(key, version, v.len() - 5), "key {key}: torn bytes");
    version
}

pub struct Harness {
    root: tempfile::TempDir,
    generation: u32,
    dir: PathBuf,
    cache: Option<Cache>,
    history: History,
    version: u64,
}

impl Harness {
    pub fn new() -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = root.path().join("0");
        let cache = Some(open(&dir));
        Harness {
            root,
            generation: 0,
            dir,
            cache,
            history: History::default(),
            version: 0,
        }
    }

    fn cache(&self) -> &Cache {
        self.cache.as_ref().expect("open")
    }

    pub fn insert(&mut self, key: u8, len: usize) {
        self.version += 1;
        let v = value(key, self.version, len);
        self.cache().insert(&[key], v).expect("insert");
        self.history.write(u64::from(key), self.version);
    }

    pub fn remove(&mut self, key: u8) {
        self.cache().remove(&[key]);
        self.history.remove(u64::from(key));
    }

    pub fn get(&mut self, key: u8) {
        if let Some(v) = self.cache().get(&[key]) {
            version_of(key, &v);
        }
    }

    pub fn sync(&mut self) {
        self.cache().sync().expect("sync");
        self.history.sync();
    }

    fn read_all(&self) -> HashMap<u64, u64> {
        (0..KEYS)
            .filter_map(|k| {
                let v = self.cache().get(&[k])?;
                Some((u64::from(k), version_of(k, &v)))
            })
            .collect()
    }

    /// Closes cleanly and reopens: every key has its last value or nothing.
    pub fn close_and_reopen(&mut self) -> Result<(), Vec<String>> {
        self.cache.take().expect("open").close().expect("close");
        self.cache = Some(open(&self.dir));
        self.check(History::check_clean)
    }

    /// Copies what the files hold now, as a crash would leave them, and goes
    /// on with the copy: the values read fit one moment after the last sync.
    pub fn crash_and_reopen(&mut self) -> Result<(), Vec<String>> {
        self.generation += 1;
        let copy = self.root.path().join(self.generation.to_string());
        std::fs::create_dir_all(&copy).expect("mkdir");
        let mut names: Vec<_> = std::fs::read_dir(&self.dir)
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != "LOCK")
            .collect();
        names.sort_by(|a, b| b.cmp(a));
        for name in names {
            let _ = std::fs::copy(self.dir.join(&name), copy.join(&name));
        }
        drop(self.cache.take()); // the original goes on no further
        self.dir = copy;
        self.cache = Some(open(&self.dir));
        self.check(History::check_crash)
    }

    fn check(
        &mut self,
        rule: fn(&History, &HashMap<u64, u64>) -> Vec<String>,
    ) -> Result<(), Vec<String>> {
        let seen = self.read_all();
        let bad = rule(&self.history, &seen);
        self.history.restart_from(seen);
        if bad.is_empty() { Ok(()) } else { Err(bad) }
    }
}
