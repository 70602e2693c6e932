//! The flusher thread: all of the disk tier's I/O. It writes the active
//! segment's new bytes every flush interval, writes frozen segments out with
//! their summary and trailer, `fdatasync`s them and publishes their files,
//! answers `sync()` and seal requests, and reclaims the oldest segment when
//! the tier is over capacity (reclaim is L2's clock hand: see `reclaim`).

use super::DiskError;
use super::dir::{keys_name, remove_if_there, sync_dir, write_keys};
use super::image::{Copied, Image};
use super::index::{IN_MEMORY, Loc, USES};
use super::read::{log_corruption, read_summary, report_dropped};
use super::segment::{AlignedBuf, DIRECT_ALIGN, SegmentFile, Stream};
use super::state::{DiskState, Request, WAKE_EVERY, add, notify_space};
use crate::format::list::Listed;
use crate::format::record::{self, Kind};
use crate::format::segment::{
    SEGMENT_HEADER_LEN, SUMMARY_ENTRY_LEN, TRAILER_LEN, Trailer, encode_summary,
};
use crate::policy::reclaim::{self, Verdict};
use crate::sync::{Arc, Ordering};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::collections::BTreeMap;
use std::time::Instant;

/// A segment file being written, not sealed yet.
struct Unsealed {
    file: Arc<SegmentFile>,
    /// Bytes of records written to it (with direct writes, in whole blocks:
    /// it can end inside a record).
    written: usize,
    /// Direct writes: the image's end when it was last written from, a
    /// record boundary. Once the file holds every byte below it, the image
    /// can give back its chunks before it.
    seen_end: usize,
}

/// The flusher thread's state: all the tier's I/O happens here.
pub(super) struct Flusher {
    shared: Arc<DiskState>,
    requests: Receiver<Request>,
    /// Files of segments not sealed yet.
    unsealed: BTreeMap<u32, Unsealed>,
    reclaim_paused: bool,
    /// Where direct writes that are not whole blocks of a segment's image
    /// (its last partial block, summary and trailer) are assembled.
    staging: AlignedBuf,
}

impl Flusher {
    pub(super) fn new(shared: Arc<DiskState>, requests: Receiver<Request>) -> Self {
        Flusher {
            shared,
            requests,
            unsealed: BTreeMap::new(),
            reclaim_paused: false,
            staging: AlignedBuf::default(),
        }
    }

    pub(super) fn run(mut self) {
        // A reopened directory may hold more than this tier's capacity: the
        // first seal reclaims it back within it. Not at once: the memory tier
        // is refilled from the checkpoint first, and reclaim must know which
        // keys memory holds.
        let interval = self.shared.config.flush_interval;
        loop {
            let mut requests = Vec::new();
            let open = match self.requests.recv_timeout(interval) {
                Ok(r) => {
                    requests.push(r);
                    requests.extend(self.requests.try_iter());
                    true
                }
                Err(RecvTimeoutError::Timeout) => true,
                Err(RecvTimeoutError::Disconnected) => false,
            };
            let (mut syncs, mut seals) = (Vec::new(), Vec::new());
            for r in requests {
                match r {
                    Request::Sync(reply) => syncs.push(reply),
                    Request::Seal(reply) => seals.push(reply),
                    Request::Wake => {}
                }
            }
            if !seals.is_empty() {
                let _ = self.shared.mark_if_empty(); // a failure shows in the flush
            }
            let last_seq = (!seals.is_empty()).then(|| self.freeze_active());
            // Sealing for a close: no reclaim, whose re-appends would move the
            // log past the state the checkpoint is about to describe.
            self.reclaim_paused = !seals.is_empty();
            // Where every stream stands, for recovery (format.md §1.2); after
            // a seal nothing is left to mark.
            let marked = self.shared.mark();
            let mut result =
                marked.and_then(|()| self.flush(!syncs.is_empty() || !seals.is_empty() || !open));
            // Not only after a seal: a tier reopened over its capacity (closed
            // more often than it fills a segment) comes back under it too.
            if seals.is_empty() {
                result = result.and_then(|()| self.reclaim());
            }
            if let (Some(last_seq), Ok(())) = (last_seq, &result) {
                // Every stream is sealed up to here: the list says so, and
                // that the log was closed there.
                result = self.shared.listing.lock().closed(last_seq);
            }
            self.reclaim_paused = false;
            let failed = |e: &DiskError| DiskError::Failed(e.to_string());
            for reply in syncs {
                let _ = reply.send(result.as_ref().map(|_| ()).map_err(failed));
            }
            for reply in seals {
                let sealed = result.as_ref().map(|_| last_seq.unwrap_or(0));
                let _ = reply.send(sealed.map_err(failed));
            }
            if !open {
                return;
            }
        }
    }

    /// Freezes the active segment if it holds records, so the next flush seals
    /// it. Returns the sequence number of the last record appended.
    fn freeze_active(&self) -> u64 {
        let sh = &*self.shared;
        let mut log = sh.log.lock();
        let mut actives = sh.active.write();
        for (active, stream) in actives.iter_mut().zip([Stream::Main, Stream::Probation]) {
            if active.records_len() > 0 {
                sh.freeze(&mut log, active, stream);
            }
        }
        // Sealed segments' trailers cover everything now: no mark is needed.
        log.marked_seq = log.next_seq;
        log.next_seq - 1
    }

    /// Writes frozen segments and the active segment's new bytes; if
    /// `durable`, everything appended before the call is on stable storage
    /// when it returns. After a failure, does nothing but report it.
    fn flush(&mut self, durable: bool) -> Result<(), DiskError> {
        let sh = Arc::clone(&self.shared);
        if sh.failed.load(Ordering::Acquire) {
            return Err(DiskError::Failed(
                sh.failure.lock().clone().unwrap_or_default(),
            ));
        }
        // Records numbered below this were appended before the call.
        let before = durable.then(|| sh.log.lock().next_seq);
        let step = loop {
            let frozen_written = self.write_frozen();
            #[cfg(test)]
            if durable && let Some(hook) = sh.before_active.lock().as_mut() {
                hook(&sh);
            }
            match frozen_written.and_then(|_| self.write_active(before)) {
                Ok(true) => break Ok(()),
                Ok(false) => {} // it froze meanwhile: seal it first
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = &step {
            sh.fail(e.to_string());
        }
        step
    }

    fn file_for(
        &mut self,
        id: u32,
        first_seq: u64,
        stream: Stream,
    ) -> Result<(Arc<SegmentFile>, usize), DiskError> {
        if let Some(u) = self.unsealed.get(&id) {
            return Ok((Arc::clone(&u.file), u.written));
        }
        let sh = &*self.shared;
        // The new name is made durable too, or a power loss could lose the
        // file with everything later synced into it.
        let f = SegmentFile::create(
            &*sh.config.io,
            &sh.config.dir,
            id,
            first_seq,
            sh.config.segment_size,
            stream,
            sh.config.direct,
        )
        .and_then(|f| sync_dir(&sh.config.dir).map(|()| f))
        .map_err(|source| DiskError::Io {
            context: format!("cannot create segment {id}"),
            source: std::sync::Arc::new(source),
        })?;
        let header_write = if sh.config.direct {
            DIRECT_ALIGN
        } else {
            SEGMENT_HEADER_LEN
        };
        add(&sh.counters.bytes_written, header_write as u64);
        let f = Arc::new(f);
        let unsealed = Unsealed {
            file: Arc::clone(&f),
            written: 0,
            seen_end: 0,
        };
        self.unsealed.insert(id, unsealed);
        Ok((f, 0))
    }

    /// Writes `bytes` at `offset` of `file`, through its direct descriptor if
    /// it has one (`bytes` and `offset` are then whole aligned blocks).
    fn write_at(&self, file: &SegmentFile, bytes: &[u8], offset: u64) -> Result<(), DiskError> {
        self.timed_write(file, bytes.len(), |io, fd| {
            io.write_all_at(fd, bytes, offset)
        })
    }

    /// Writes `bufs`, one after another, at `offset` of `file` through its
    /// direct descriptor, in one vectored write where the backend can: the
    /// device here took a frozen segment's chunks written one by one about
    /// 10% slower than in one write (benchmarks.md §6).
    fn write_vectored_at(
        &self,
        file: &SegmentFile,
        bufs: &[&[u8]],
        offset: u64,
    ) -> Result<(), DiskError> {
        let len = bufs.iter().map(|b| b.len()).sum();
        self.timed_write(file, len, |io, fd| {
            io.write_all_vectored_at(fd, bufs, offset)
        })
    }

    /// Runs `write` (of `len` bytes) on `file`'s direct descriptor if it has
    /// one, else its own, and counts the bytes and the time it took.
    fn timed_write(
        &self,
        file: &SegmentFile,
        len: usize,
        write: impl FnOnce(&dyn super::io::Io, &std::fs::File) -> std::io::Result<()>,
    ) -> Result<(), DiskError> {
        let sh = &*self.shared;
        let fd = file.direct.as_ref().unwrap_or(&file.file);
        let start = Instant::now();
        write(&*sh.config.io, fd).map_err(|source| DiskError::Io {
            context: format!("cannot write segment {}", file.id),
            source: std::sync::Arc::new(source),
        })?;
        add(&sh.counters.write_ns, start.elapsed().as_nanos() as u64);
        add(&sh.counters.bytes_written, len as u64);
        Ok(())
    }

    /// Writes `range` of `image` (file offsets) through the page cache,
    /// [`WAKE_EVERY`] bytes at a time at most, starting each piece's writeback
    /// at once: the device writes one piece while the kernel copies the
    /// next, and the seal's `fdatasync` finds little left to do.
    fn write_buffered(
        &self,
        file: &SegmentFile,
        image: &Image,
        range: std::ops::Range<usize>,
    ) -> Result<(), DiskError> {
        for piece in pieces(file, image, range)? {
            let mut at = piece.offset as u64;
            for bytes in piece.bytes().chunks(WAKE_EVERY) {
                self.write_at(file, bytes, at)?;
                let io = &self.shared.config.io;
                io.start_writeback(&file.file, at, bytes.len() as u64);
                at += bytes.len() as u64;
            }
        }
        Ok(())
    }

    fn sync_file(&self, file: &SegmentFile) -> Result<(), DiskError> {
        self.shared
            .config
            .io
            .sync_data(&file.file)
            .map_err(|source| DiskError::Io {
                context: format!("cannot fdatasync segment {}", file.id),
                source: std::sync::Arc::new(source),
            })
    }

    /// Writes every frozen segment out, seals it and publishes its file.
    fn write_frozen(&mut self) -> Result<(), DiskError> {
        let sh = Arc::clone(&self.shared);
        loop {
            let Some(frozen) = sh.frozen.read().values().next().cloned() else {
                return Ok(());
            };
            let (file, written) = self.file_for(frozen.id, frozen.first_seq, frozen.stream)?;
            let mut summary = Vec::with_capacity(frozen.summary.len() * SUMMARY_ENTRY_LEN);
            let summary_crc = encode_summary(u64::from(frozen.id), &frozen.summary, &mut summary);
            let image = &*frozen.image;
            let summary_offset = image.len() as u32;
            let last_seq = frozen.summary.last().map_or(0, |e| e.seq);
            let trailer = Trailer {
                summary_offset,
                record_count: frozen.summary.len() as u32,
                last_seq,
                through: frozen.through.max(last_seq),
                summary_crc,
            }
            .encode(u64::from(frozen.id));
            let trailer_at = sh.config.segment_size - TRAILER_LEN as u64;
            if sh.config.direct {
                let (hdr, summary_at) = (SEGMENT_HEADER_LEN as u64, u64::from(summary_offset));
                let align = DIRECT_ALIGN as u64;
                let (lo, size) = (align_down(hdr + written as u64), sh.config.segment_size);
                // The image's whole blocks as they are; the rest (its last,
                // partial block, the summary and the trailer) assembled.
                let whole = align_down(summary_at).max(lo);
                self.write_image(&file, image, lo..whole)?;
                let tail = image_bytes(&file, image, whole as usize..image.len())?;
                let pieces = [
                    (whole, &tail[..]),
                    (summary_at, &summary[..]),
                    (trailer_at, &trailer[..]),
                ];
                let summary_end = (summary_at + summary.len() as u64).div_ceil(align) * align;
                if summary_end >= size - align {
                    self.write_direct(&file, whole..size, &pieces)?;
                } else {
                    self.write_direct(&file, whole..summary_end, &pieces)?;
                    self.write_direct(&file, size - align..size, &pieces)?;
                }
            } else {
                let rest = SEGMENT_HEADER_LEN + written..image.len();
                self.write_buffered(&file, image, rest)?;
                self.write_at(&file, &summary, u64::from(summary_offset))?;
                self.write_at(&file, &trailer, trailer_at)?;
            }
            self.sync_file(&file)?;
            // Its keys apart from it, then listed: from now on the directory
            // knows it holds the segment, and what it cost if it is lost.
            let dir = &sh.config.dir;
            write_keys(dir, frozen.id, last_seq, &frozen.summary).map_err(|source| {
                DiskError::Io {
                    context: format!("cannot write the keys of segment {}", frozen.id),
                    source: std::sync::Arc::new(source),
                }
            })?;
            sh.listing.lock().sealed(Listed {
                id: frozen.id,
                probation: frozen.stream == Stream::Probation,
                first_seq: frozen.first_seq,
                last_seq,
                through: frozen.through.max(last_seq),
                records: frozen.summary.len() as u32,
            })?;
            add(&sh.counters.records_written, frozen.summary.len() as u64);
            self.unsealed.remove(&frozen.id);
            // Published as a file before it leaves the frozen list.
            sh.files.write().insert(frozen.id, Arc::clone(&file));
            sh.frozen.write().remove(&frozen.id);
            // Readers that still hold its image read the file from now on;
            // its memory goes back for the next chunks.
            frozen.image.finished(&file);
            notify_space(&sh);
            self.reclaim()?;
        }
    }

    /// Writes the active segments' bytes not yet written, and with `before`
    /// (a durable flush) syncs them. `false` if it must be called again after
    /// the frozen segments are written: a segment that held records numbered
    /// below `before` froze since they were.
    ///
    /// A stream's active segment is not written while a segment of that
    /// stream waits frozen: a later segment must not reach the disk before an
    /// earlier one is synced (design.md §9). Such a segment froze after
    /// [`write_frozen`](Self::write_frozen) looked. If it holds records
    /// appended before a durable flush, the flush goes round again. If not,
    /// neither does the active segment after it, and both wait for the next
    /// round (a freeze wakes the flusher), so a flush under a steady stream
    /// of inserts still ends.
    fn write_active(&mut self, before: Option<u64>) -> Result<bool, DiskError> {
        for stream in [Stream::Main, Stream::Probation] {
            if !self.write_active_of(stream, before)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The sequence number a waiting frozen segment of `stream` starts at (the
    /// earliest, if several), if one waits. Called with the active segments'
    /// lock held, so none can freeze meanwhile.
    fn frozen_in(&self, stream: Stream) -> Option<u64> {
        let frozen = self.shared.frozen.read();
        let of_stream = frozen.values().filter(|f| f.stream == stream);
        of_stream.map(|f| f.first_seq).min()
    }

    /// What [`write_active`](Self::write_active) answers for `stream` when
    /// a segment of it starting at `first_seq` waits frozen.
    fn after_frozen(first_seq: u64, before: Option<u64>) -> bool {
        before.is_none_or(|before| first_seq >= before)
    }

    fn write_active_of(&mut self, stream: Stream, before: Option<u64>) -> Result<bool, DiskError> {
        if self.shared.config.direct {
            return self.write_active_direct(stream, before);
        }
        let durable = before.is_some();
        let sh = Arc::clone(&self.shared);
        let (id, first_seq, image, written) = {
            let actives = sh.active.read();
            if let Some(first_seq) = self.frozen_in(stream) {
                return Ok(Self::after_frozen(first_seq, before));
            }
            let active = &actives[stream as usize];
            let written = self.unsealed.get(&active.id).map_or(0, |u| u.written);
            (
                active.id,
                active.first_seq,
                Arc::clone(&active.image),
                written,
            )
        };
        // Written without the lock: the image's bytes so far never change.
        let end = image.len();
        let fresh = SEGMENT_HEADER_LEN + written..end;
        if fresh.is_empty() && (!durable || !self.unsealed.contains_key(&id)) {
            return Ok(true); // nothing new, or no file yet and nothing to put in one
        }
        let (file, _) = self.file_for(id, first_seq, stream)?;
        self.write_buffered(&file, &image, fresh)?;
        if let Some(u) = self.unsealed.get_mut(&id) {
            u.written = end - SEGMENT_HEADER_LEN;
        }
        image.written(end, &file);
        if durable {
            self.sync_file(&file)?;
        }
        Ok(true)
    }

    /// [`write_active_of`](Self::write_active_of) for direct writes, which
    /// write whole blocks: from the block holding the first unwritten byte,
    /// up to the last whole block (or, if `durable`, the last partial one,
    /// padded with zeros: the next write writes that block again).
    ///
    /// The image gives back the chunks below the last end the file holds
    /// whole: the end this write saw if durable, else the end the write
    /// before it saw, once this one has reached it. (Padding every write to
    /// the end instead costs an extra 4 KiB write, a device round trip, each
    /// time: with 2 MiB chunks the rate was 6% lower, benchmarks.md §6.)
    fn write_active_direct(
        &mut self,
        stream: Stream,
        before: Option<u64>,
    ) -> Result<bool, DiskError> {
        let durable = before.is_some();
        let sh = Arc::clone(&self.shared);
        let hdr = SEGMENT_HEADER_LEN as u64;
        let (id, first_seq, image, known) = {
            let actives = sh.active.read();
            if let Some(first_seq) = self.frozen_in(stream) {
                return Ok(Self::after_frozen(first_seq, before));
            }
            let active = &actives[stream as usize];
            let known = self
                .unsealed
                .get(&active.id)
                .map(|u| (u.written, u.seen_end));
            (
                active.id,
                active.first_seq,
                Arc::clone(&active.image),
                known,
            )
        };
        let (written, seen_end) = known.unwrap_or((0, 0));
        let (written, seen_end) = (written as u64, seen_end as u64);
        // A published length: the inserting thread may have appended more
        // since, but the image's bytes below it never change.
        let end = image.len() as u64;
        if end == hdr + written && (!durable || known.is_none()) {
            return Ok(true); // nothing new, or no file yet and nothing to put in one
        }
        let lo = align_down(hdr + written);
        let hi = if durable {
            end.div_ceil(DIRECT_ALIGN as u64) * DIRECT_ALIGN as u64
        } else {
            align_down(end)
        };
        if hi <= lo && !durable {
            return Ok(true); // not a whole block yet
        }
        let (file, _) = self.file_for(id, first_seq, stream)?;
        let now_written = if hi <= lo {
            written
        } else {
            let whole = align_down(end).min(hi);
            self.write_image(&file, &image, lo..whole)?;
            if whole < hi {
                // The last block is partial: written padded with zeros.
                let tail = image_bytes(&file, &image, whole as usize..end as usize)?;
                self.write_direct(&file, whole..hi, &[(whole, &tail)])?;
            }
            if durable { end - hdr } else { hi - hdr }
        };
        let on_file = hdr + now_written;
        let boundary = if end <= on_file { end } else { seen_end };
        if let Some(u) = self.unsealed.get_mut(&id) {
            u.written = now_written as usize;
            u.seen_end = end as usize;
        }
        if boundary > hdr && boundary <= on_file {
            image.written(boundary as usize, &file);
        }
        if durable {
            self.sync_file(&file)?;
        }
        Ok(true)
    }

    /// Writes `range` (whole blocks, maybe none) of `image`, a segment's file
    /// image, straight from its chunks with direct writes: they are
    /// block-aligned, and so are the file offsets where chunks start.
    fn write_image(
        &self,
        file: &SegmentFile,
        image: &Image,
        range: std::ops::Range<u64>,
    ) -> Result<(), DiskError> {
        let pieces = pieces(file, image, range.start as usize..range.end as usize)?;
        let bufs: Vec<&[u8]> = pieces.iter().map(|p| p.bytes()).collect();
        self.write_vectored_at(file, &bufs, range.start)
    }

    /// Writes `range` of a segment's file image (block-aligned) with direct
    /// writes: each piece `(file offset, bytes)` in its place, zeros elsewhere.
    fn write_direct(
        &mut self,
        file: &SegmentFile,
        range: std::ops::Range<u64>,
        pieces: &[(u64, &[u8])],
    ) -> Result<(), DiskError> {
        let at = range.start;
        let mut staging = std::mem::take(&mut self.staging);
        let staged = assemble(&mut staging, range, pieces);
        let written = self.write_at(file, staged, at);
        self.staging = staging;
        written
    }

    /// Reclaims the oldest sealed segments while the tier is over capacity.
    ///
    /// Reclaim is L2's clock hand. Each live record of the segment is
    /// * dropped if the memory tier holds its key (memory writes it again when
    ///   it lets go of it, if the write policy says so);
    /// * re-appended if it was referenced (an L2 hit, or reuse proved in memory
    ///   before it left), within a budget of half a segment per reclaimed
    ///   segment so that reclaim always frees space;
    /// * otherwise dropped, its fingerprint remembered in the ghost table.
    fn reclaim(&mut self) -> Result<(), DiskError> {
        if self.reclaim_paused || self.shared.reclaim_held.load(Ordering::Acquire) {
            return Ok(());
        }
        let sh = Arc::clone(&self.shared);
        let max_segments = (sh.config.capacity / sh.config.segment_size) as usize;
        let two_streams = sh.probation_on();
        loop {
            let _gate = sh.reclaim_gate.lock();
            if sh.reclaim_held.load(Ordering::Acquire) {
                return Ok(());
            }
            // While a warm refill runs, reclaim waits for it up to a bound
            // (design.md §11.2): past it, the capacity wins over the refill.
            let refilling = sh.refilling.load(Ordering::Acquire);
            if !reclaim::must_reclaim(sh.segments_held(), max_segments, refilling) {
                return Ok(());
            }
            let oldest = {
                let files = sh.files.read();
                let sealed = files
                    .values()
                    .map(|f| (f.id, f.stream == Stream::Probation));
                reclaim::victim(sealed, two_streams, max_segments)
                    .and_then(|id| files.get(&id).cloned())
            };
            let Some(oldest) = oldest else {
                return Ok(());
            };
            let summary = read_summary(&sh, &oldest);
            if let Err(e) = &summary {
                add(&sh.counters.corrupt_records, 1);
                log::warn!(
                    "segment {} has an unreadable summary ({e}); its entries are dropped",
                    oldest.id
                );
            }
            // 1. Keep what earned it: re-append, within the budget.
            let now = unix_now();
            let mut budget = reclaim::reappend_budget(sh.config.segment_size);
            let mut dropped = Vec::new();
            for e in summary.iter().flatten().filter(|e| e.is_value()) {
                let loc = Loc {
                    segment: oldest.id,
                    offset: e.offset,
                };
                let Some(flags) = sh.index.flags_at(e.hash, loc) else {
                    continue; // Superseded or removed since.
                };
                let in_memory = flags & IN_MEMORY != 0;
                match reclaim::verdict(in_memory, flags & USES, e.len, budget) {
                    Verdict::Reappend { uses }
                        if self.reappend(&oldest, e.hash, loc, e.len, uses, now) =>
                    {
                        budget -= u64::from(e.len);
                    }
                    // Not re-appended (damaged, expired, or superseded meanwhile).
                    Verdict::Reappend { .. } => dropped.push((e.hash, loc)),
                    Verdict::Drop { .. } => dropped.push((e.hash, loc)),
                }
            }
            // 2. Unlist the segment and unlink its file (readable still, through
            //    its descriptor) *before* the index forgets its keys: once a key
            //    is gone from the index, removing it writes no tombstone, so no
            //    file that could bring it back after a restart may remain. The
            //    durable list goes first: a file it no longer names is a
            //    leftover the next open removes.
            sh.log.lock().probation.remove(&oldest.id);
            sh.listing.lock().reclaimed(oldest.id)?;
            oldest
                .unlink()
                .and_then(|()| remove_if_there(&sh.config.dir, &keys_name(oldest.id)))
                .and_then(|()| sync_dir(&sh.config.dir))
                .map_err(|source| DiskError::Io {
                    context: format!("cannot remove reclaimed segment {}", oldest.id),
                    source: std::sync::Arc::new(source),
                })?;
            // 3. Forget its keys. One memory does not hold (checked as the
            //    index lets go of it) left the cache: remembered, reported.
            if summary.is_ok() {
                for (hash, loc) in dropped {
                    let flags = sh.index.remove_at(hash, loc);
                    if flags.is_some_and(|f| f & IN_MEMORY == 0) {
                        sh.ghosts.insert(hash);
                        if let Some(n) = &sh.config.removals {
                            report_dropped(&sh, n, &oldest, loc, now);
                        }
                    }
                }
            } else {
                sh.index.remove_segment(oldest.id);
            }
            // Readable (unlinked, still open) until the index let go of it:
            // a read never misses an entry the index still holds.
            sh.files.write().remove(&oldest.id);
            add(&sh.counters.reclaimed_segments, 1);
            log::debug!("segment {} reclaimed", oldest.id);
        }
    }

    /// Appends the record at `loc` of `file` again, if it is intact, live, and
    /// still the key's newest record. Whether it was.
    fn reappend(
        &self,
        file: &SegmentFile,
        hash: u64,
        loc: Loc,
        len: u32,
        uses: u8,
        now_unix_ns: u64,
    ) -> bool {
        let sh = &*self.shared;
        let mut bytes = vec![0u8; len as usize];
        if sh
            .config
            .io
            .read_exact_at(&file.file, &mut bytes, u64::from(loc.offset))
            .is_err()
        {
            return false;
        }
        let r = match record::decode(u64::from(loc.segment), loc.offset, &bytes) {
            Ok(r) => r,
            Err(e) => {
                add(&sh.counters.corrupt_records, 1);
                log_corruption(loc, &e);
                return false;
            }
        };
        let h = r.header;
        if h.kind != Kind::Value || (h.expires_at != 0 && h.expires_at <= now_unix_ns) {
            return false;
        }
        // The flusher itself writes what this freezes: no wake-up needed.
        let appended = matches!(
            sh.append(
                r.key,
                hash,
                h,
                r.stored,
                uses,
                Some(loc),
                Stream::Main,
                &mut None
            ),
            Ok(Some(_))
        );
        if appended {
            add(&sh.counters.reappended, 1);
        }
        appended
    }
}

/// Unix time in nanoseconds (0 if the clock is before 1970).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The pieces of `range` of `image`, the image of `file`'s segment, to write.
fn pieces(
    file: &SegmentFile,
    image: &Image,
    range: std::ops::Range<usize>,
) -> Result<Vec<super::image::Piece>, DiskError> {
    image.pieces(range).ok_or_else(|| released(file))
}

/// A copy of `range` of `image`, the image of `file`'s segment (a partial
/// block, to be padded for a direct write).
fn image_bytes(
    file: &SegmentFile,
    image: &Image,
    range: std::ops::Range<usize>,
) -> Result<Vec<u8>, DiskError> {
    match image.copy(range.start, range.len()) {
        Copied::Bytes(bytes) if bytes.len() == range.len() => Ok(bytes),
        _ => Err(released(file)),
    }
}

/// The error for bytes the flusher went to write that their image had let go
/// of as written: a bug, reported as a failure rather than a panic.
fn released(file: &SegmentFile) -> DiskError {
    DiskError::Failed(format!(
        "segment {}: bytes to write were released from its image",
        file.id
    ))
}

/// `offset` rounded down to a direct-write block.
fn align_down(offset: u64) -> u64 {
    offset / DIRECT_ALIGN as u64 * DIRECT_ALIGN as u64
}

/// Fills `staging` with `range` of a file image made of `pieces` (each
/// `(file offset, bytes)`, in offset order, not overlapping; zeros between
/// them) and returns it. Each byte is written once: only the gaps are zeroed.
fn assemble<'a>(
    staging: &'a mut AlignedBuf,
    range: std::ops::Range<u64>,
    pieces: &[(u64, &[u8])],
) -> &'a [u8] {
    let buf = staging.uninit((range.end - range.start) as usize);
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
    buf
}
