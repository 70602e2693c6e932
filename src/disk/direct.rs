//! Direct writes (`O_DIRECT`, design.md §9.2): block-aligned buffers, the
//! assembly of a segment's file image into them, and the writer thread that
//! lets the flusher assemble the next write while the device takes this one.

use super::io::Io;
use super::segment::SegmentFile;
use crate::sync::Arc;
use crossbeam_channel::{Receiver, Sender};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::thread::JoinHandle;

/// The alignment of direct writes: buffer address, file offset and length
/// (the largest logical block size of common devices; larger ones refuse
/// the probe at open and the tier writes through the page cache).
pub(crate) const DIRECT_ALIGN: usize = 4096;

/// Writes a direct writer may have queued or in progress before the flusher
/// waits for one: one being written while the next is assembled.
const IN_FLIGHT: usize = 2;

/// Opens `path` for `O_DIRECT` writes.
pub(crate) fn open_direct(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// `offset` rounded down to a direct-write block.
pub(crate) fn align_down(offset: u64) -> u64 {
    offset / DIRECT_ALIGN as u64 * DIRECT_ALIGN as u64
}

/// `offset` rounded up to a direct-write block.
pub(crate) fn align_up(offset: u64) -> u64 {
    offset.div_ceil(DIRECT_ALIGN as u64) * DIRECT_ALIGN as u64
}

/// A reusable buffer whose contents start at a [`DIRECT_ALIGN`]-aligned
/// address, as direct writes require (over-allocated and offset: no unsafe
/// code).
#[derive(Default)]
pub(crate) struct AlignedBuf {
    buf: Vec<u8>,
    /// Bytes in use, from the aligned start.
    len: usize,
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
    fn uninit(&mut self, len: usize) -> &mut [u8] {
        if self.buf.len() < len + DIRECT_ALIGN {
            self.buf = vec![0; len + DIRECT_ALIGN];
        }
        let start = self.buf.as_ptr().align_offset(DIRECT_ALIGN);
        self.len = len;
        &mut self.buf[start..start + len]
    }

    /// The bytes in use.
    fn as_slice(&self) -> &[u8] {
        let start = self.buf.as_ptr().align_offset(DIRECT_ALIGN);
        &self.buf[start..start + self.len]
    }

    /// Fills the buffer with `range` of a file image made of `pieces` (each
    /// `(file offset, bytes)`, in offset order, not overlapping; zeros
    /// between them). Each byte is written once: only the gaps are zeroed.
    pub(crate) fn assemble(&mut self, range: std::ops::Range<u64>, pieces: &[(u64, &[u8])]) {
        let buf = self.uninit((range.end - range.start) as usize);
        let mut filled = 0; // bytes of `buf` written so far
        for &(at, bytes) in pieces {
            let start = at.max(range.start);
            let end = (at + bytes.len() as u64).min(range.end);
            if start < end {
                let (from, to) = ((start - range.start) as usize, (end - range.start) as usize);
                debug_assert!(from >= filled, "pieces out of order or overlapping");
                buf[filled..from].fill(0);
                buf[from..to].copy_from_slice(&bytes[(start - at) as usize..(end - at) as usize]);
                filled = to;
            }
        }
        buf[filled..].fill(0);
    }
}

/// One assembled write for the writer thread.
struct Job {
    file: Arc<SegmentFile>,
    buf: AlignedBuf,
    offset: u64,
}

/// A thread that makes the flusher's direct writes, in the order they are
/// submitted. The flusher [`drain`](Self::drain)s it before every
/// `fdatasync`, so nothing is synced, acknowledged or published before its
/// writes are done; a failed write is reported there.
pub(crate) struct DirectWriter {
    jobs: Option<Sender<Job>>,
    done: Receiver<(AlignedBuf, io::Result<()>, u32)>,
    free: Vec<AlignedBuf>,
    in_flight: usize,
    /// The first failure not reported yet: segment id and error.
    failed: Option<(u32, io::Error)>,
    thread: Option<JoinHandle<()>>,
}

impl DirectWriter {
    pub(crate) fn new(io: Arc<dyn Io>) -> io::Result<Self> {
        let (jobs, rx) = crossbeam_channel::bounded::<Job>(IN_FLIGHT);
        let (tx, done) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("larder-writer".into())
            .spawn(move || {
                for job in rx {
                    let file = job.file.direct.as_ref().unwrap_or(&job.file.file);
                    let result = io.write_all_at(file, job.buf.as_slice(), job.offset);
                    if tx.send((job.buf, result, job.file.id)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(DirectWriter {
            jobs: Some(jobs),
            done,
            free: Vec::new(),
            in_flight: 0,
            failed: None,
            thread: Some(thread),
        })
    }

    /// A buffer to assemble the next write in: a free one, else the one of
    /// the oldest write in flight once it is done.
    pub(crate) fn buffer(&mut self) -> AlignedBuf {
        if let Some(buf) = self.free.pop() {
            return buf;
        }
        if self.in_flight >= IN_FLIGHT {
            self.complete_one();
            if let Some(buf) = self.free.pop() {
                return buf;
            }
        }
        AlignedBuf::default()
    }

    /// Returns a buffer [`buffer`](Self::buffer) gave that was not used.
    pub(crate) fn recycle(&mut self, buf: AlignedBuf) {
        self.free.push(buf);
    }

    /// Queues `buf` to be written to `file` at `offset`.
    pub(crate) fn submit(&mut self, file: Arc<SegmentFile>, buf: AlignedBuf, offset: u64) {
        let job = Job { file, buf, offset };
        match self.jobs.as_ref().map(|j| j.send(job)) {
            Some(Ok(())) => self.in_flight += 1,
            Some(Err(crossbeam_channel::SendError(job))) => {
                self.note_failure(job.file.id, io::Error::other("the writer thread stopped"));
                self.free.push(job.buf);
            }
            None => {}
        }
    }

    /// Waits for every submitted write; the first that failed, if any.
    pub(crate) fn drain(&mut self) -> Result<(), (u32, io::Error)> {
        while self.in_flight > 0 {
            self.complete_one();
        }
        self.failed.take().map_or(Ok(()), Err)
    }

    fn complete_one(&mut self) {
        match self.done.recv() {
            Ok((buf, result, id)) => {
                self.in_flight -= 1;
                self.free.push(buf);
                if let Err(e) = result {
                    self.note_failure(id, e);
                }
            }
            Err(_) => {
                self.in_flight = 0;
                self.note_failure(0, io::Error::other("the writer thread stopped"));
            }
        }
    }

    fn note_failure(&mut self, id: u32, e: io::Error) {
        self.failed.get_or_insert((id, e));
    }
}

impl Drop for DirectWriter {
    fn drop(&mut self) {
        self.jobs = None; // the thread ends when the channel closes
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assemble_places_pieces_and_zeroes_the_gaps() {
        let mut buf = AlignedBuf::default();
        // Dirty it first: assembly must not leave old bytes in a gap.
        buf.uninit(64).fill(0xee);
        buf.assemble(8..40, &[(0, b"headerXX"), (10, b"abc"), (36, b"tail-cut")]);
        let got = buf.as_slice();
        assert_eq!(got.as_ptr() as usize % DIRECT_ALIGN, 0);
        let mut want = [0u8; 32];
        want[2..5].copy_from_slice(b"abc");
        want[28..32].copy_from_slice(b"tail");
        assert_eq!(got, &want[..]);
    }

    #[test]
    fn alignment_helpers() {
        assert_eq!(align_down(4095), 0);
        assert_eq!(align_down(4096), 4096);
        assert_eq!(align_up(1), 4096);
        assert_eq!(align_up(8192), 8192);
    }
}
