//! The disk tier on its own: round trips through every place a record can be,
//! overwrites and tombstones, compression, reclaim, corruption and truncation
//! under an open tier, injected I/O faults, backpressure, and concurrency.

use super::io::{Faulty, Io, Positional};
pub(super) use super::*;
pub(super) use crate::format::record::{Kind, RecordHeader};
pub(super) use crate::format::segment::MIN_SEGMENT_SIZE;
pub(super) use crate::key::hash_key;
pub(super) use bytes::Bytes;
pub(super) use segment::DIRECT_ALIGN;
pub(super) use std::time::Duration;

/// The backend under test: `LARDER_IO=uring` (with feature `io-uring`) runs the
/// suite on io_uring; CI runs it once per backend.
pub(super) fn test_io() -> Arc<dyn Io> {
    match std::env::var("LARDER_IO").as_deref() {
        #[cfg(feature = "io-uring")]
        Ok("uring") => Arc::new(super::io::uring::Uring::new().expect("io_uring available")),
        #[cfg(not(feature = "io-uring"))]
        Ok("uring") => panic!("LARDER_IO=uring needs the io-uring feature"),
        _ => Arc::new(Positional),
    }
}
/// The read path under test: `LARDER_READ=pread` runs the suite on
/// positional reads, else it reads through maps; CI runs it both ways.
pub(super) fn test_read_path() -> ReadPath {
    match std::env::var("LARDER_READ").as_deref() {
        Ok("pread") => ReadPath::Pread,
        _ => ReadPath::Mmap,
    }
}

pub(super) use rand::{Rng, SeedableRng, rngs::StdRng};
pub(super) use std::os::unix::fs::FileExt;

pub(super) const SEG: u64 = MIN_SEGMENT_SIZE; // 64 KiB: many segments from little data

pub(super) fn config(dir: &std::path::Path, segments: u64) -> DiskConfig {
    DiskConfig {
        dir: dir.to_path_buf(),
        capacity: segments * SEG,
        segment_size: SEG,
        flush_interval: Duration::from_millis(5),
        compress_above: 256,
        compression_budget: f64::INFINITY,
        backpressure: Backpressure::Wait(Duration::from_secs(10)),
        max_frozen: 2,
        io: test_io(),
        // The whole suite runs with direct writes too (CI sets it).
        direct: std::env::var_os("LARDER_DIRECT").is_some(),
        read_path: test_read_path(),
        max_maps: DEFAULT_MAX_MAPS,
        removals: None,
    }
}

/// A value that names its key and version and does not compress.
pub(super) fn value(key: u32, version: u32, len: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(u64::from(key) << 32 | u64::from(version));
    let mut v = Vec::with_capacity(len.max(8));
    v.extend_from_slice(&key.to_le_bytes());
    v.extend_from_slice(&version.to_le_bytes());
    v.resize_with(len.max(8), || rng.random());
    v
}

pub(super) fn k(key: u32) -> [u8; 4] {
    key.to_le_bytes()
}

/// The segment files in `dir`, in id order (recovery's own lister).
pub(super) fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    super::scan::list_segments(dir)
        .unwrap()
        .0
        .into_values()
        .collect()
}

/// The hash of test key `key`.
pub(super) fn h(key: u32) -> u64 {
    hash_key(&k(key))
}

/// Sets its flag when dropped: stops reader threads even if the writer
/// panics, so a failure fails rather than hangs.
pub(super) struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

mod faults;
mod reclaim;
mod reopen;
mod streams;
mod write;
