//! The disk tier's settings, their checks, and its errors.

use super::io::Io;
use super::segment::DIRECT_ALIGN;
use crate::format::segment::{MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE};
use crate::sync::Arc;
use std::path::PathBuf;
use std::time::Duration;

/// What an insert does when the disk tier's flusher is behind (too many full
/// segments wait to be written). Either way nothing is dropped silently: a
/// refused write is counted in `Stats::disk`, and the value stays in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backpressure {
    /// Wait up to this long for the flusher, then refuse (the default: 100 ms).
    Wait(Duration),
    /// Refuse at once.
    Refuse,
}

/// The disk tier's settings.
pub(crate) struct DiskConfig {
    pub(crate) dir: PathBuf,
    /// Bytes of segment files the tier may keep, including the active segment.
    pub(crate) capacity: u64,
    pub(crate) segment_size: u64,
    /// How often the flusher writes the active segment's new bytes.
    pub(crate) flush_interval: Duration,
    /// Values at least this long are zstd-compressed when that shrinks them.
    pub(crate) compress_above: usize,
    /// The share of one core the writers may spend compressing while the
    /// flusher keeps up (`f64::INFINITY`: no limit; see `compression::Pace`).
    pub(crate) compression_budget: f64,
    pub(crate) backpressure: Backpressure,
    /// Full segments that may wait, in memory, to be written.
    pub(crate) max_frozen: usize,
    pub(crate) io: Arc<dyn Io>,
    /// Write segments with `O_DIRECT` (bypassing the page cache). Asked for
    /// by the builder; `open` turns it off where the file system refuses it.
    pub(crate) direct: bool,
    /// How sealed segments are read.
    pub(crate) read_path: super::ReadPath,
    /// The most sealed segments mapped at once (with `ReadPath::Mmap`).
    pub(crate) max_maps: usize,
    /// Where the tier reports the entries it drops on its own (reclaim, a
    /// corrupt record), if the cache has a removal listener.
    pub(crate) removals: Option<Arc<crate::listener::Notifier>>,
}

/// Why the disk tier could not open, or stopped: each kind its own variant,
/// with the I/O error it came from where there is one.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DiskError {
    /// A disk tier setting is out of its bounds; the message says which.
    #[error("invalid disk tier configuration: {0}")]
    Config(String),
    /// An I/O operation failed: `context` says which, `source` why.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, on which file.
        context: String,
        /// The error the operating system returned.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The directory is in use by another cache (its `LOCK` file is locked).
    #[error("{0} is in use by another cache (its LOCK file is locked)")]
    Locked(PathBuf),
    /// The directory was created with other settings.
    #[error("{dir} was created with {what}; it cannot be opened with {asked}")]
    Mismatch {
        /// The directory.
        dir: PathBuf,
        /// What it was created with.
        what: String,
        /// What was asked for.
        asked: String,
    },
    /// The directory's manifest is of a format version this build does not know.
    #[error("the manifest of {dir} is unreadable: {reason}")]
    BadManifest {
        /// The directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// A write or `fdatasync` failed earlier: the tier stopped writing.
    #[error("the disk tier failed and stopped writing: {0}")]
    Failed(String),
    /// The tier is behind: the record was refused, not persisted.
    #[error("the disk tier is behind: the record was refused, not persisted")]
    Refused,
    /// A record does not fit in a segment.
    #[error("a record of {0} bytes does not fit in a segment")]
    TooLarge(usize),
    /// The tier is closed.
    #[error("the disk tier is closed")]
    Closed,
    /// A directory `verify_dir` was asked to check cannot be read.
    #[error("{0}")]
    Unreadable(String),
}

/// Errors compare by kind and message (an I/O error has no equality of its own).
impl PartialEq for DiskError {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.to_string() == other.to_string()
    }
}

impl Eq for DiskError {}

impl DiskConfig {
    /// Checks the settings (a typed error names what to change).
    pub(crate) fn check(&self) -> Result<(), DiskError> {
        let s = self.segment_size;
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&s) {
            return Err(DiskError::Config(format!(
                "segment size {s} is outside {MIN_SEGMENT_SIZE}..={MAX_SEGMENT_SIZE}"
            )));
        }
        if self.capacity < 3 * s {
            return Err(DiskError::Config(format!(
                "capacity {} must hold at least 3 segments of {s} bytes",
                self.capacity
            )));
        }
        if self.flush_interval.is_zero() {
            return Err(DiskError::Config(
                "the flush interval must be greater than zero".into(),
            ));
        }
        if self.compression_budget.is_nan() || self.compression_budget < 0.0 {
            return Err(DiskError::Config(format!(
                "the compression budget {} must be zero or more",
                self.compression_budget
            )));
        }
        if self.max_frozen == 0 {
            return Err(DiskError::Config("max_frozen must be at least 1".into()));
        }
        let registry = super::mapped::REGISTRY_SLOTS;
        if !(1..=registry).contains(&self.max_maps) {
            return Err(DiskError::Config(format!(
                "max_maps must be within 1..={registry}, not {}",
                self.max_maps
            )));
        }
        if self.direct && !s.is_multiple_of(DIRECT_ALIGN as u64) {
            return Err(DiskError::Config(format!(
                "direct writes need a segment size that is a multiple of {DIRECT_ALIGN}, not {s}"
            )));
        }
        Ok(())
    }
}
