//! Segment files, and the in-memory buffer of the segment being filled.

use super::io::Io;
use crate::format::segment::{SEGMENT_HEADER_LEN, SegmentHeader};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The file name of segment `id`.
pub(crate) fn file_name(id: u32) -> String {
    format!("{id:010}.seg")
}

/// A segment file. Shared by `Arc` between the tier and its readers: a reclaimed
/// segment is unlisted first and its file removed when the last reader drops it,
/// so no read ever touches a file that was reused. Reads are positional reads,
/// never a memory map: a file truncated behind larder's back costs a short read
/// (a miss), not a SIGBUS.
pub(crate) struct SegmentFile {
    pub(crate) id: u32,
    pub(crate) file: File,
    path: PathBuf,
    remove_on_drop: AtomicBool,
}

impl SegmentFile {
    /// Creates segment `id` in `dir` and writes its header.
    pub(crate) fn create(
        io: &dyn Io,
        dir: &Path,
        id: u32,
        first_seq: u64,
        segment_size: u64,
    ) -> io::Result<Self> {
        let path = dir.join(file_name(id));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let header = SegmentHeader {
            segment_id: u64::from(id),
            first_seq,
            segment_size,
        };
        io.write_all_at(&file, &header.encode(), 0)?;
        Ok(SegmentFile {
            id,
            file,
            path,
            remove_on_drop: AtomicBool::new(false),
        })
    }

    /// Removes the file once the last holder lets go.
    pub(crate) fn retire(&self) {
        self.remove_on_drop.store(true, Ordering::SeqCst);
    }
}

impl Drop for SegmentFile {
    fn drop(&mut self) {
        if self.remove_on_drop.load(Ordering::SeqCst) {
            // Best effort: a file that cannot be removed is only wasted space.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The segment being filled: its records as bytes, from offset `SEGMENT_HEADER_LEN`.
pub(crate) struct ActiveBuffer {
    pub(crate) id: u32,
    /// Sequence number of the segment's first record.
    pub(crate) first_seq: u64,
    /// Record bytes; `bytes[i]` sits at file offset `SEGMENT_HEADER_LEN + i`.
    pub(crate) bytes: Vec<u8>,
}

impl ActiveBuffer {
    /// A buffer for segment `id` in `bytes` (emptied; its allocation is reused).
    pub(crate) fn new(id: u32, first_seq: u64, mut bytes: Vec<u8>) -> Self {
        bytes.clear();
        ActiveBuffer {
            id,
            first_seq,
            bytes,
        }
    }

    /// The next record's file offset.
    pub(crate) fn end_offset(&self) -> u32 {
        (SEGMENT_HEADER_LEN + self.bytes.len()) as u32
    }

    /// The buffer's bytes from file `offset` on, if it holds that offset.
    pub(crate) fn from(&self, offset: u32) -> Option<&[u8]> {
        let start = (offset as usize).checked_sub(SEGMENT_HEADER_LEN)?;
        self.bytes.get(start..)
    }
}
