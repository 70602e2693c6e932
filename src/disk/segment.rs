//! Segment files, how they are written directly, and the log's streams.
//! (The images of segments not written yet are `image.rs`.)

use super::io::Io;
use super::maps::MapSlot;
use crate::format::segment::SegmentHeader;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// The file name of segment `id`.
pub(crate) fn file_name(id: u32) -> String {
    format!("{id:010}.seg")
}

/// A segment file, shared by `Arc` between the tier and its readers. Reclaim
/// unlists it, then unlinks it at once: a reader that still holds it reads on
/// through its open descriptor (the inode lives until the last one closes),
/// and segment ids are never reused, so no read ever touches another
/// segment's bytes. A sealed segment is read through its map when the tier
/// reads by `mmap` (`maps.rs`), else with positional reads.
pub(crate) struct SegmentFile {
    pub(crate) id: u32,
    pub(crate) stream: Stream,
    /// Reads (through the page cache), and all writes unless `direct`.
    pub(crate) file: File,
    /// The same file opened for `O_DIRECT` writes, if the tier writes
    /// direct (only the flusher's writes of an unsealed segment use it).
    pub(crate) direct: Option<File>,
    path: PathBuf,
    /// The sealed file's map, while it has one (`maps.rs`).
    pub(crate) map: MapSlot,
}

impl SegmentFile {
    /// Creates segment `id` in `dir` and writes its header; with `direct`,
    /// also opens it for direct writes and writes the header as a whole
    /// [`DIRECT_ALIGN`] block through that descriptor.
    pub(crate) fn create(
        io: &dyn Io,
        dir: &Path,
        id: u32,
        first_seq: u64,
        segment_size: u64,
        stream: Stream,
        direct: bool,
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
            probation: stream == Stream::Probation,
        }
        .encode();
        let direct = if direct {
            let d = open_direct(&path)?;
            let mut block = AlignedBuf::default();
            let block = block.zeroed(DIRECT_ALIGN);
            block[..header.len()].copy_from_slice(&header);
            io.write_all_at(&d, block, 0)?;
            Some(d)
        } else {
            io.write_all_at(&file, &header, 0)?;
            None
        };
        Ok(SegmentFile {
            id,
            stream,
            file,
            direct,
            path,
            map: MapSlot::default(),
        })
    }

    /// Opens the existing segment file `path` (recovery checks its contents
    /// and then sets its stream, read from its header).
    pub(crate) fn open(path: PathBuf, id: u32) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        Ok(SegmentFile {
            id,
            stream: Stream::Main,
            file,
            direct: None,
            path,
            map: MapSlot::default(),
        })
    }

    /// The same file, of `stream`.
    pub(crate) fn in_stream(self, stream: Stream) -> Self {
        SegmentFile { stream, ..self }
    }

    /// Removes the file's name; readers holding it read on.
    pub(crate) fn unlink(&self) -> io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The alignment of direct writes: buffer address, file offset and length
/// (the largest logical block size of common devices; larger ones refuse
/// the probe at open and the tier writes through the page cache).
pub(crate) const DIRECT_ALIGN: usize = 4096;

/// Opens `path` for `O_DIRECT` writes.
pub(crate) fn open_direct(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// A reusable buffer whose slices start at a [`DIRECT_ALIGN`]-aligned address,
/// as direct writes require (over-allocated and offset: no unsafe code).
#[derive(Default)]
pub(crate) struct AlignedBuf {
    buf: Vec<u8>,
}

impl AlignedBuf {
    /// An aligned slice of `len` zero bytes (the allocation is kept and reused).
    pub(crate) fn zeroed(&mut self, len: usize) -> &mut [u8] {
        let slice = self.uninit(len);
        slice.fill(0);
        slice
    }

    /// An aligned slice of `len` bytes left from earlier use, for a caller
    /// that overwrites all of them.
    pub(crate) fn uninit(&mut self, len: usize) -> &mut [u8] {
        if self.buf.len() < len + DIRECT_ALIGN {
            self.buf = vec![0; len + DIRECT_ALIGN];
        }
        let start = self.buf.as_ptr().align_offset(DIRECT_ALIGN);
        &mut self.buf[start..start + len]
    }
}

/// Which of the log's two streams a segment belongs to (docs/design.md §10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stream {
    /// Records that proved reuse: demotions and reclaim's re-appends.
    Main = 0,
    /// New inserts, kept for a short window in which to prove reuse.
    Probation = 1,
}
