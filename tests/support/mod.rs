//! Helpers shared by integration tests (`mod support;` in a test file).

#![allow(dead_code)] // each test uses a part

pub mod contract;
pub mod restart;

use std::path::{Path, PathBuf};

/// Held by the tests of a file that measure a miss ratio while the cache does
/// background work (a warm refill, the flusher's reclaim): the file's other
/// tests, run beside them on two vCPUs, slow that work down and move the
/// figure (docs/design.md §11.2). Taken first thing, the tests of the file
/// run one at a time.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The environment variable `name` parsed (a test's opt-in longer run), or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The segment files (`*.seg`) in `dir`, in id order.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// A 100-byte value that names its key and version.
pub fn value(key: u32, version: u32) -> larder::Bytes {
    let mut v = key.to_le_bytes().to_vec();
    v.extend_from_slice(&version.to_le_bytes());
    v.resize(100, (key ^ version) as u8);
    v.into()
}
