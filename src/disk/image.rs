//! The in-memory images of segments not written yet, held in chunks of
//! memory shared between the appending thread, readers and the flusher.
//! One of larder's two modules with `unsafe` code (the other is `io`): raw
//! allocations shared by `Arc`, appends serialised by their own mutex and
//! published by a release store; every block says why it holds.

#![allow(unsafe_code)]

use super::segment::{DIRECT_ALIGN, SegmentFile, Stream};
use crate::format::segment::{SEGMENT_HEADER_LEN, SegmentHeader};
use crate::sync::{Arc, AtomicUsize, Mutex, Ordering, RwLock};
use std::alloc::Layout;
use std::ptr::NonNull;

/// The huge page size on x86-64 and most arm64 kernels.
const HUGE_PAGE: usize = 2 << 20;

/// The largest chunk of image memory: larger than the flusher's 4 MiB
/// wake-ups (`WAKE_EVERY`), so that its writes of an active segment seldom
/// span two chunks and go to the device whole (benchmarks.md §6: this
/// device takes larger direct writes faster).
pub(crate) const MAX_CHUNK: usize = 8 << 20;

/// The bytes of image memory a tier of `segment_size`-byte segments takes
/// at a time: an eighth of a segment, in whole [`DIRECT_ALIGN`] blocks, at
/// most [`MAX_CHUNK`] (so 8 MiB for the default 64 MiB segments, 8 KiB for
/// the smallest, whose records then cross chunks as large segments' do).
pub(crate) fn chunk_size(segment_size: usize) -> usize {
    (segment_size / 8 / DIRECT_ALIGN * DIRECT_ALIGN).clamp(DIRECT_ALIGN, MAX_CHUNK)
}

/// One piece of a segment image's memory: block-aligned, and huge-page
/// aligned (with a hint to back it with huge pages) when it is at least one.
pub(crate) struct Chunk {
    ptr: NonNull<u8>,
    size: usize,
    /// Counts the chunks of its pool that exist (see `ChunkPool::bytes`).
    live: Arc<AtomicUsize>,
}

// SAFETY: a `Chunk` owns its allocation, as a `Box<[u8]>` would. It hands out
// no references itself; `Image` decides who reads and writes which bytes.
unsafe impl Send for Chunk {}
// SAFETY: as for `Send`.
unsafe impl Sync for Chunk {}

impl Chunk {
    fn new(size: usize, live: &Arc<AtomicUsize>) -> Self {
        let layout = Self::layout(size);
        // SAFETY: the layout's size is not zero (at least one block).
        let ptr = unsafe { std::alloc::alloc(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        // Huge pages, where the kernel gives them on request: on this
        // project's machine the device took direct writes from 4 KiB pages
        // at half the rate (docs/benchmarks.md §6). Only a hint; refused,
        // the chunk works the same on small pages.
        #[cfg(target_os = "linux")]
        if size >= HUGE_PAGE {
            // SAFETY: the range is this allocation, which stays valid; the
            // advice changes only how the kernel backs it, never its contents.
            unsafe {
                libc::madvise(ptr.as_ptr().cast(), size, libc::MADV_HUGEPAGE);
            }
        }
        live.fetch_add(1, Ordering::Relaxed);
        Chunk {
            ptr,
            size,
            live: Arc::clone(live),
        }
    }

    fn layout(size: usize) -> Layout {
        let align = if size >= HUGE_PAGE {
            HUGE_PAGE
        } else {
            DIRECT_ALIGN
        };
        // Chunk sizes come from `chunk_size`: whole blocks, at most MAX_CHUNK.
        Layout::from_size_align(size, align).expect("chunk size")
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: allocated in `new` with this very layout, and freed only here.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.size)) };
    }
}

/// Chunks of image memory no image holds, kept for the next images: a fresh
/// chunk costs page faults, and memory freed to the system is slow to take
/// back on this project's machine (docs/benchmarks.md §6). Handed out most
/// recently freed first, the one likeliest still in the CPU's caches (which
/// made no measurable difference to the insert rate here, docs/design.md §9).
pub(crate) struct ChunkPool {
    size: usize,
    /// Spares kept, at most: more are freed.
    keep: usize,
    spare: Mutex<Vec<Chunk>>,
    /// Chunks of this pool that exist: held by images, or spare.
    live: Arc<AtomicUsize>,
}

impl ChunkPool {
    /// A pool of `size`-byte chunks that keeps up to `keep` spares.
    pub(crate) fn new(size: usize, keep: usize) -> Self {
        ChunkPool {
            size,
            keep,
            spare: Mutex::new(Vec::new()),
            live: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Bytes of memory in this pool's chunks: images' and spares.
    pub(crate) fn bytes(&self) -> usize {
        self.live.load(Ordering::Relaxed) * self.size
    }

    /// Bytes a chunk.
    pub(crate) fn chunk_size(&self) -> usize {
        self.size
    }

    /// Spare chunks held.
    #[cfg(test)]
    pub(crate) fn spares(&self) -> usize {
        self.spare.lock().len()
    }

    fn take(&self) -> Chunk {
        let spare = self.spare.lock().pop();
        spare.unwrap_or_else(|| Chunk::new(self.size, &self.live))
    }

    fn give(&self, chunk: Chunk) {
        let mut spare = self.spare.lock();
        if spare.len() < self.keep {
            spare.push(chunk);
        }
    }
}

/// A segment file's image in memory, for the segment being filled and, once
/// frozen, until the flusher has written it: byte `i` of the image is the
/// file's byte `i` (the segment header, then records).
///
/// It is held in chunks ([`ChunkPool`]): chunk `c` holds bytes
/// `c * size..(c + 1) * size`. Chunks are taken as appends reach them, and
/// once the flusher has written every byte of a chunk to the segment's file
/// ([`written`](Self::written)), the chunk goes back to the pool and reads of
/// its bytes go to the file instead ([`Copied::OnFile`]).
///
/// Append-only while shared: the bytes below [`len`](Self::len) are never
/// written again, so the flusher can write them out without a lock while the
/// inserting thread appends beyond them.
pub(crate) struct Image {
    cap: usize,
    /// Bytes written and published (by a `Release` store after writing them).
    len: AtomicUsize,
    held: RwLock<Held>,
    /// Held while appending: one appender at a time.
    appending: Mutex<()>,
    pool: Arc<ChunkPool>,
}

/// The chunks an image holds, and where the bytes of those it let go are.
struct Held {
    /// The number of the first chunk in `chunks`: those before it are released.
    first: usize,
    chunks: std::collections::VecDeque<Arc<Chunk>>,
    /// The segment's file, and how many of its bytes it holds (a record
    /// boundary): set before any chunk is released.
    file: Option<(Arc<SegmentFile>, usize)>,
}

/// Where [`Image::copy`] found the bytes asked for.
pub(crate) enum Copied {
    Bytes(Vec<u8>),
    /// Their chunk was written and released: they are in `file`, which holds
    /// the segment's bytes up to `end`.
    OnFile {
        file: Arc<SegmentFile>,
        end: usize,
    },
}

/// Bytes of an image, in one of its chunks, held for the flusher to write.
pub(crate) struct Piece {
    chunk: Arc<Chunk>,
    /// The file offset of the first byte.
    pub(crate) offset: usize,
    /// The range of the chunk.
    range: std::ops::Range<usize>,
}

impl Piece {
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `range` lies in the chunk and below the image's published
        // length when the piece was made (`Image::pieces`), so its bytes were
        // written before and are never written again while the chunk is in
        // that image; and the chunk cannot move to another image while this
        // `Arc` holds it (a released chunk is reused only if its `Arc` was
        // the last one).
        unsafe {
            std::slice::from_raw_parts(
                self.chunk.ptr.as_ptr().add(self.range.start),
                self.range.len(),
            )
        }
    }
}

impl Image {
    /// An empty image of a `cap`-byte segment file, taking its memory from
    /// `pool` as appends reach it.
    pub(crate) fn new(cap: usize, pool: Arc<ChunkPool>) -> Self {
        Image {
            cap,
            len: AtomicUsize::new(0),
            held: RwLock::new(Held {
                first: 0,
                chunks: Default::default(),
                file: None,
            }),
            appending: Mutex::new(()),
            pool,
        }
    }

    /// The image's size: the segment file's.
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    fn chunk_size(&self) -> usize {
        self.pool.chunk_size()
    }

    /// Writes `pieces`, one after another, after the bytes written so far.
    /// The caller has checked that they fit: past the capacity is a bug.
    pub(crate) fn append(&self, pieces: &[&[u8]]) {
        let _one = self.appending.lock();
        let mut at = self.len.load(Ordering::Relaxed);
        let total: usize = pieces.iter().map(|p| p.len()).sum();
        assert!(total <= self.cap - at, "appended past a segment's image");
        let size = self.chunk_size();
        for piece in pieces {
            let mut piece = *piece;
            while !piece.is_empty() {
                let (c, within) = (at / size, at % size);
                let n = piece.len().min(size - within);
                let dst = self.chunk_for_append(c);
                // SAFETY: `within..within + n` lies in chunk `c`, which holds
                // the image's bytes `at..at + n`: at or beyond `len`, so no
                // reader or writer is handed them (only bytes below `len` are),
                // no other appender writes them (we hold `appending`), and the
                // chunk is not released (only chunks wholly below `len` are).
                // `piece` is a live `&[u8]`, so it cannot be those bytes either.
                unsafe {
                    std::ptr::copy_nonoverlapping(piece.as_ptr(), dst.add(within), n);
                }
                at += n;
                piece = &piece[n..];
            }
        }
        self.len.store(at, Ordering::Release);
    }

    /// The start of chunk `c`'s memory, taking a chunk from the pool for it if
    /// it has none yet. Called only by the appender, for the chunk holding the
    /// image's end or the next one.
    fn chunk_for_append(&self, c: usize) -> *mut u8 {
        {
            let held = self.held.read();
            if let Some(chunk) = c.checked_sub(held.first).and_then(|i| held.chunks.get(i)) {
                return chunk.ptr.as_ptr();
            }
        }
        let chunk = Arc::new(self.pool.take());
        let ptr = chunk.ptr.as_ptr();
        let mut held = self.held.write();
        debug_assert_eq!(
            held.first + held.chunks.len(),
            c,
            "chunks taken out of order"
        );
        held.chunks.push_back(chunk);
        ptr
    }

    /// A copy of the image's bytes `from..from + n`, as many of them as are
    /// published (below [`len`](Self::len): the copy is shorter if the range
    /// runs past it), or where to read them if their chunk has been written
    /// out and released.
    pub(crate) fn copy(&self, from: usize, n: usize) -> Copied {
        let held = self.held.read();
        let size = self.chunk_size();
        // Only published bytes: past them the appender may be writing.
        let n = n.min(self.len().saturating_sub(from));
        if let Some((file, end)) = &held.file
            && from / size < held.first
        {
            return Copied::OnFile {
                file: Arc::clone(file),
                end: *end,
            };
        }
        let mut out = Vec::with_capacity(n);
        let mut at = from;
        while out.len() < n {
            let (c, within) = (at / size, at % size);
            let take = (n - out.len()).min(size - within);
            let Some(chunk) = c.checked_sub(held.first).and_then(|i| held.chunks.get(i)) else {
                break; // not appended: the caller asked past `len`
            };
            // SAFETY: the bytes are below `len` (`n` is clamped to it above),
            // so they were written and published before and are never written
            // again; the chunk stays in this image while we hold `held`.
            let bytes = unsafe { std::slice::from_raw_parts(chunk.ptr.as_ptr().add(within), take) };
            out.extend_from_slice(bytes);
            at += take;
        }
        Copied::Bytes(out)
    }

    /// The image's bytes `range`, chunk by chunk, for the flusher to write;
    /// `None` if the range runs past the published bytes (below
    /// [`len`](Self::len)) or a chunk in it was released (its bytes are
    /// written already): both bugs, reported rather than read.
    pub(crate) fn pieces(&self, range: std::ops::Range<usize>) -> Option<Vec<Piece>> {
        let held = self.held.read();
        let size = self.chunk_size();
        if range.end > self.len() {
            return None;
        }
        let mut pieces = Vec::new();
        let mut at = range.start;
        while at < range.end {
            let (c, within) = (at / size, at % size);
            let n = (range.end - at).min(size - within);
            let chunk = c.checked_sub(held.first).and_then(|i| held.chunks.get(i))?;
            pieces.push(Piece {
                chunk: Arc::clone(chunk),
                offset: at,
                range: within..within + n,
            });
            at += n;
        }
        Some(pieces)
    }

    /// `file`, the segment's file, now holds the image's bytes below `end`, a
    /// published length (so no record straddles it): the chunks wholly below
    /// it go back to the pool, and their bytes are read from the file.
    pub(crate) fn written(&self, end: usize, file: &Arc<SegmentFile>) {
        self.release(end, file, false);
    }

    /// `file` holds the whole image (a sealed segment): every chunk goes back.
    pub(crate) fn finished(&self, file: &Arc<SegmentFile>) {
        self.release(self.len(), file, true);
    }

    fn release(&self, end: usize, file: &Arc<SegmentFile>, all: bool) {
        let size = self.chunk_size();
        let mut freed = Vec::new();
        {
            let mut held = self.held.write();
            let end = held.file.as_ref().map_or(end, |(_, e)| end.max(*e));
            held.file = Some((Arc::clone(file), end));
            while !held.chunks.is_empty() && (all || (held.first + 1) * size <= end) {
                freed.extend(held.chunks.pop_front());
                held.first += 1;
            }
        }
        // Reused only if no piece still holds it.
        for chunk in freed.into_iter().filter_map(Arc::into_inner) {
            self.pool.give(chunk);
        }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        // Its chunks go back to the pool (a segment reclaimed before it was
        // written, or a tier dropped).
        for chunk in self
            .held
            .get_mut()
            .chunks
            .drain(..)
            .filter_map(Arc::into_inner)
        {
            self.pool.give(chunk);
        }
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
    /// The buffer of segment `id` of `stream`, in `image` (empty; it is given
    /// the segment's header).
    pub(crate) fn new(id: u32, first_seq: u64, stream: Stream, image: Image) -> Self {
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
}

#[cfg(test)]
impl Image {
    /// Chunks the image holds.
    pub(crate) fn held_chunks(&self) -> usize {
        self.held.read().chunks.len()
    }

    /// All its bytes, from its chunks (none may be released).
    fn bytes(&self) -> Vec<u8> {
        match self.copy(0, self.len()) {
            Copied::Bytes(b) => b,
            Copied::OnFile { .. } => panic!("released"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::io::Positional;

    const CHUNK: usize = DIRECT_ALIGN;

    fn pool(keep: usize) -> Arc<ChunkPool> {
        Arc::new(ChunkPool::new(CHUNK, keep))
    }

    #[test]
    fn chunks_are_an_eighth_of_a_segment_in_whole_blocks_up_to_8_mib() {
        assert_eq!(chunk_size(64 << 10), 8 << 10);
        assert_eq!(chunk_size(100_000), 12 << 10);
        assert_eq!(chunk_size(16 << 20), 2 << 20);
        assert_eq!(chunk_size(64 << 20), 8 << 20);
        assert_eq!(chunk_size(1 << 30), 8 << 20);
        assert_eq!(chunk_size(DIRECT_ALIGN), DIRECT_ALIGN);
    }

    #[test]
    fn an_image_holds_what_was_appended_across_its_chunks() {
        let image = Image::new(64 << 10, pool(4));
        image.append(&[b"ab", b"", b"cde"]);
        image.append(&[b"f"]);
        assert_eq!(image.bytes(), b"abcdef");
        let big: Vec<u8> = (0..3 * CHUNK).map(|i| (i % 251) as u8).collect();
        image.append(&[&big[..CHUNK - 1], &big[CHUNK - 1..]]);
        assert_eq!(image.len(), 6 + 3 * CHUNK);
        assert_eq!(image.held_chunks(), 4);
        assert_eq!(&image.bytes()[6..], &big[..]);
        // Pieces follow the chunks: block-aligned memory at chunk boundaries.
        let pieces = image.pieces(3..image.len()).unwrap();
        let offsets: Vec<usize> = pieces.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, [3, CHUNK, 2 * CHUNK, 3 * CHUNK]);
        for p in &pieces[1..] {
            assert_eq!(p.bytes().as_ptr() as usize % DIRECT_ALIGN, 0);
        }
        let joined: Vec<u8> = pieces.iter().flat_map(|p| p.bytes().to_vec()).collect();
        assert_eq!(joined, image.bytes()[3..]);
    }

    #[test]
    #[should_panic(expected = "appended past")]
    fn appending_past_the_capacity_is_refused() {
        let image = Image::new(DIRECT_ALIGN, pool(1));
        image.append(&[&[0u8; DIRECT_ALIGN], b"x"]);
    }

    #[test]
    fn written_chunks_go_back_to_the_pool_and_their_bytes_are_read_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = SegmentFile::create(&Positional, dir.path(), 1, 1, 1 << 20, Stream::Main, false);
        let file = Arc::new(file.unwrap());
        let pool = pool(8);
        let image = Image::new(1 << 20, Arc::clone(&pool));
        image.append(&[&vec![1u8; 2 * CHUNK + 100]]);
        // Not up to the end of chunk 1: only chunk 0 is wholly written.
        image.written(2 * CHUNK - 1, &file);
        assert_eq!(image.held_chunks(), 2);
        assert_eq!(pool.spares(), 1);
        match image.copy(CHUNK - 10, 20) {
            Copied::OnFile { end, .. } => assert_eq!(end, 2 * CHUNK - 1),
            Copied::Bytes(_) => panic!("a released chunk was read"),
        }
        match image.copy(CHUNK, 20) {
            Copied::Bytes(b) => assert_eq!(b, [1u8; 20]),
            Copied::OnFile { .. } => panic!("a held chunk was not read"),
        }
        // The next chunk is taken from the pool: the one just given back.
        image.append(&[&vec![2u8; CHUNK]]);
        assert_eq!(pool.spares(), 0);
        // A chunk a piece still holds is not reused when released.
        let piece = image.pieces(2 * CHUNK..2 * CHUNK + 100).unwrap();
        image.finished(&file);
        assert_eq!(image.held_chunks(), 0);
        assert_eq!(
            pool.spares(),
            2,
            "chunks 1 and 3 back, chunk 2 held by a piece"
        );
        assert_eq!(piece[0].bytes(), [1u8; 100]);
        drop(piece);
        assert_eq!(
            pool.spares(),
            2,
            "a chunk let go while held is freed, not pooled"
        );
        assert!(
            image.pieces(0..10).is_none(),
            "released bytes handed out to write"
        );
    }

    #[test]
    fn the_pool_keeps_no_more_spares_than_it_was_told() {
        let pool = pool(2);
        let image = Image::new(1 << 20, Arc::clone(&pool));
        image.append(&[&vec![0u8; 5 * CHUNK]]);
        assert_eq!(pool.bytes(), 5 * CHUNK);
        drop(image);
        assert_eq!(pool.spares(), 2);
        assert_eq!(pool.bytes(), 2 * CHUNK, "the others are freed");
    }

    #[test]
    fn readers_see_whole_appends_while_a_writer_appends() {
        const RECORD: usize = 100;
        let image = Arc::new(Image::new(RECORD * 4000, pool(4)));
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
        let active = ActiveBuffer::new(7, 42, Stream::Probation, Image::new(64 << 10, pool(1)));
        let header = SegmentHeader {
            segment_id: 7,
            first_seq: 42,
            segment_size: 64 << 10,
            probation: true,
        };
        assert_eq!(active.image.bytes(), header.encode());
        assert_eq!(active.records_len(), 0);
        assert_eq!(active.end_offset() as usize, SEGMENT_HEADER_LEN);
    }
}
