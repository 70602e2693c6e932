//! Helpers shared by the command-line tool's tests.

#![allow(dead_code)] // each test uses a part

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

/// The reference traces, in the repository (`tests/traces/`, zstd-compressed;
/// `LARDER_TRACES` names another directory of them).
pub fn traces_dir() -> PathBuf {
    std::env::var_os("LARDER_TRACES").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/traces"),
        PathBuf::from,
    )
}

/// The path of trace `name` (`loop`, `cs`, ...), compressed or not.
pub fn trace(name: &str) -> PathBuf {
    let dir = traces_dir();
    let compressed = dir.join(format!("{name}.txt.zst"));
    if compressed.exists() {
        compressed
    } else {
        dir.join(format!("{name}.txt"))
    }
}

/// The reference figures (`reference.json`) as text.
pub fn reference() -> String {
    std::fs::read_to_string(traces_dir().join("reference.json")).expect("reference.json")
}

/// The text of trace `name`.
pub fn trace_text(name: &str) -> String {
    let path = trace(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if path.extension().is_some_and(|e| e == "zst") {
        String::from_utf8(zstd::decode_all(&bytes[..]).expect("a zstd trace")).expect("text")
    } else {
        String::from_utf8(bytes).expect("text")
    }
}
