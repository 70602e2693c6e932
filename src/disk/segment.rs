//! Segment files, and the in-memory images of segments not written yet.

use super::io::Io;
use crate::format::segment::{SEGMENT_HEADER_LEN, SegmentHeader};
use crate::sync::{Arc, AtomicUsize, Mutex, Ordering};
use std::alloc::Layout;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

/// The file name of segment `id`.
pub(crate) fn file_name(id: u32) -> String {
    format!("{id:010}.seg")
}

/// A segment file, shared by `Arc` between the tier and its readers. Reclaim
/// unlists it, then unlinks it at once: a reader that still holds it reads on
/// through its open descriptor (the inode lives until the last one closes),
/// and segment ids are never reused, so no read ever touches another
/// segment's bytes. Reads are positional reads, never a memory map: a file
/// truncated behind larder's back costs a short read (a miss), not a SIGBUS.
pub(crate) struct SegmentFile {
    pub(crate) id: u32,
    pub(crate) stream: Stream,
    /// Reads (through the page cache), and all writes unless `direct`.
    pub(crate) file: File,
    /// The same file opened for `O_DIRECT` writes, if the tier writes
    /// direct (only the flusher's writes of an unsealed segment use it).
    pub(crate) direct: Option<File>,
    path: PathBuf,
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
        })
    }

    /// The same file, of `stream`.
    pub(crate) fn in_stream(self, stream: Stream) -> Self {
        SegmentFile { stream, ..self }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
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

/// The huge page size on x86-64 and most arm64 kernels.
const HUGE_PAGE: usize = 2 << 20;

/// A segment file's image in memory, for the segment being filled and, once
/// frozen, until the flusher has written it: byte `i` is the file's byte `i`
/// (the segment header, then records), and the allocation is block-aligned,
/// so the flusher writes whole blocks of it as they are, with no copy.
///
/// Append-only while shared: the bytes below [`len`](Self::len) are never
/// written again, so the flusher can write them out without a lock while the
/// inserting thread appends beyond them. Only [`reset`](Self::reset), which
/// needs the image to itself, starts it over.
pub(crate) struct Image {
    ptr: NonNull<u8>,
    cap: usize,
    /// Bytes written and published (by a `Release` store after writing them).
    len: AtomicUsize,
    /// Held while appending: one appender at a time.
    appending: Mutex<()>,
}

// SAFETY: an `Image` owns its allocation, as a `Box<[u8]>` would. Shared, it
// hands out only the bytes below `len`, which no one writes while it is
// shared; appends, serialised by `appending`, write at and beyond `len` before
// publishing them.
unsafe impl Send for Image {}
// SAFETY: as for `Send`.
unsafe impl Sync for Image {}

impl Image {
    /// An empty image of a `cap`-byte segment file. Its memory is taken as it is
    /// written: the kernel backs an allocation this large with fresh pages.
    pub(crate) fn new(cap: usize) -> Self {
        let layout = Self::layout(cap);
        // SAFETY: the layout's size is not zero.
        let ptr = unsafe { std::alloc::alloc(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        // Huge pages, where the kernel gives them on request: on this
        // project's machine the device took direct writes from 4 KiB pages
        // at half the rate (docs/benchmarks.md §6). Only a hint; refused,
        // the image works the same on small pages.
        #[cfg(target_os = "linux")]
        // SAFETY: the range is this allocation, which stays valid; the advice
        // changes only how the kernel backs it, never its contents.
        unsafe {
            libc::madvise(ptr.as_ptr().cast(), layout.size(), libc::MADV_HUGEPAGE);
        }
        Image {
            ptr,
            cap,
            len: AtomicUsize::new(0),
            appending: Mutex::new(()),
        }
    }

    /// Block-aligned, and huge-page-aligned when the image is at least one
    /// huge page, so that whole huge pages can back it.
    fn layout(cap: usize) -> Layout {
        let align = if cap >= HUGE_PAGE {
            HUGE_PAGE
        } else {
            DIRECT_ALIGN
        };
        // A segment size is validated (at most 1 GiB), so this cannot fail.
        Layout::from_size_align(cap.max(DIRECT_ALIGN), align).expect("segment size")
    }

    /// The image's size: the segment file's.
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// The bytes written so far, from the start of the file.
    pub(crate) fn bytes(&self) -> &[u8] {
        let len = self.len();
        // SAFETY: the bytes below `len` lie in the allocation and were written
        // before `len` was published (the Acquire load above pairs with the
        // Release store in `append`); no one writes them while `self` is
        // shared: appends write beyond `len`, and `reset` needs `&mut self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), len) }
    }

    /// Writes `pieces`, one after another, after the bytes written so far.
    /// The caller has checked that they fit: past the capacity is a bug.
    pub(crate) fn append(&self, pieces: &[&[u8]]) {
        let _one = self.appending.lock();
        let mut at = self.len.load(Ordering::Relaxed);
        let total: usize = pieces.iter().map(|p| p.len()).sum();
        assert!(total <= self.cap - at, "appended past a segment's image");
        for piece in pieces {
            // SAFETY: `at..at + piece.len()` lies in the allocation (checked
            // above) at or beyond `len`, so no slice handed out covers it and
            // no other appender writes it (we hold `appending`); `piece` is a
            // live `&[u8]`, so it cannot be those unpublished bytes either.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    piece.as_ptr(),
                    self.ptr.as_ptr().add(at),
                    piece.len(),
                );
            }
            at += piece.len();
        }
        self.len.store(at, Ordering::Release);
    }

    /// Empties the image for reuse (its memory stays allocated).
    pub(crate) fn reset(&mut self) {
        *self.len.get_mut() = 0;
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout, and freed only here.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.cap)) };
    }
}

/// The segment being filled.
pub(crate) struct ActiveBuffer {
    pub(crate) id: u32,
    /// Sequence number of the segment's first record.
    pub(crate) first_seq: u64,
    /// The file's image: the header, then the records.
    pub(crate) image: Arc<Image>,
}

impl ActiveBuffer {
    /// The buffer of segment `id` of `stream`, in `image` (emptied, and given the
    /// segment's header; its allocation is reused).
    pub(crate) fn new(id: u32, first_seq: u64, stream: Stream, mut image: Image) -> Self {
        image.reset();
        let header = SegmentHeader {
            segment_id: u64::from(id),
            first_seq,
            segment_size: image.capacity() as u64,
            probation: stream == Stream::Probation,
        };
        image.append(&[&header.encode()]);
        ActiveBuffer {
            id,
            first_seq,
            image: Arc::new(image),
        }
    }

    /// Bytes of records appended.
    pub(crate) fn records_len(&self) -> usize {
        self.image.len() - SEGMENT_HEADER_LEN
    }

    /// The next record's file offset.
    pub(crate) fn end_offset(&self) -> u32 {
        self.image.len() as u32
    }

    /// The buffer's bytes from file `offset` on, if it holds that offset.
    pub(crate) fn from(&self, offset: u32) -> Option<&[u8]> {
        records_from(&self.image, offset)
    }
}

/// An image's bytes from file `offset` on, if a record can start there.
pub(crate) fn records_from(image: &Image, offset: u32) -> Option<&[u8]> {
    let start = offset as usize;
    if start < SEGMENT_HEADER_LEN {
        return None;
    }
    image.bytes().get(start..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_is_block_aligned_and_holds_what_was_appended() {
        let mut image = Image::new(64 << 10);
        assert_eq!(image.bytes().as_ptr() as usize % DIRECT_ALIGN, 0);
        image.append(&[b"ab", b"", b"cde"]);
        image.append(&[b"f"]);
        assert_eq!(image.bytes(), b"abcdef");
        image.reset();
        assert!(image.bytes().is_empty());
        image.append(&[&[7u8; 64 << 10]]);
        assert_eq!(image.len(), 64 << 10);
    }

    #[test]
    #[should_panic(expected = "appended past")]
    fn appending_past_the_capacity_is_refused() {
        let image = Image::new(DIRECT_ALIGN);
        image.append(&[&[0u8; DIRECT_ALIGN], b"x"]);
    }

    #[test]
    fn readers_see_whole_appends_while_a_writer_appends() {
        const RECORD: usize = 100;
        let image = Arc::new(Image::new(RECORD * 4000));
        let writer = {
            let image = Arc::clone(&image);
            std::thread::spawn(move || {
                for i in 0..4000usize {
                    let record = [i as u8; RECORD];
                    image.append(&[&record[..RECORD / 2], &record[RECORD / 2..]]);
                }
            })
        };
        let mut seen = 0;
        while seen < RECORD * 4000 {
            let bytes = image.bytes();
            assert!(bytes.len() >= seen, "published bytes went back");
            assert_eq!(bytes.len() % RECORD, 0, "a torn append was published");
            for (i, record) in bytes.chunks(RECORD).enumerate() {
                assert!(record.iter().all(|&b| b == i as u8), "record {i} changed");
            }
            seen = bytes.len();
        }
        writer.join().unwrap();
    }

    #[test]
    fn an_active_buffer_starts_with_its_segment_header() {
        let active = ActiveBuffer::new(7, 42, Stream::Probation, Image::new(64 << 10));
        let header = SegmentHeader {
            segment_id: 7,
            first_seq: 42,
            segment_size: 64 << 10,
            probation: true,
        };
        assert_eq!(active.image.bytes(), header.encode());
        assert_eq!(active.records_len(), 0);
        assert_eq!(active.end_offset() as usize, SEGMENT_HEADER_LEN);
        // No record starts inside the header.
        assert!(active.from(0).is_none());
        assert_eq!(active.from(SEGMENT_HEADER_LEN as u32), Some(&[][..]));
    }
}
