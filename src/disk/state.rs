//! The disk tier's state, shared by its handle and its flusher thread, and
//! the append path: one log mutex assigns sequence numbers, encodes records
//! into the active segment's image and points the index at them, all at
//! once, so the index never runs ahead of or behind the log.

use super::ghosts::Ghosts;
use super::image::{ActiveBuffer, ChunkPool, Image};
use super::index::{Index, Loc, MAX_SEGMENT_ID};
use super::listing;
use super::segment::{SegmentFile, Stream};
use super::{CheckpointState, DiskConfig, DiskError, compression};
use crate::format::record::{
    self, Kind, MARK_LEN, Mark, RECORD_HEADER_LEN, RecordHeader, StreamPos,
};
use crate::format::segment::{SEGMENT_HEADER_LEN, SUMMARY_ENTRY_LEN, SummaryEntry, TRAILER_LEN};
use crate::sync::{Arc, AtomicBool, AtomicU64, Condvar, Mutex, Ordering, RwLock};
use crossbeam_channel::Sender;
use std::collections::BTreeMap;

/// Bytes appended to an active segment between wake-ups of the flusher (a
/// full segment wakes it too).
/// Measured: writing and starting the writeback of every 4 MiB took larder's
/// insert rate from about 400 to about 1,000 MiB/s (benchmarks.md §6),
/// against one 64 MiB write and `fdatasync` a segment.
pub(crate) const WAKE_EVERY: usize = 4 << 20;

/// A tier of fewer segments has no probation stream: with two segments being
/// filled it would have too few left to reclaim from (docs/design.md §10.2).
pub(crate) const MIN_SEGMENTS_FOR_PROBATION: u64 = 4;

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) records_written: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    /// Nanoseconds the flusher spent in segment writes.
    pub(crate) write_ns: AtomicU64,
    pub(crate) value_bytes_in: AtomicU64,
    pub(crate) value_bytes_stored: AtomicU64,
    pub(crate) refused_writes: AtomicU64,
    pub(crate) corrupt_records: AtomicU64,
    pub(crate) reclaimed_segments: AtomicU64,
    /// Segments dropped after a read fault under their map (truncated or
    /// unreadable files).
    pub(crate) faulted_segments: AtomicU64,
    pub(crate) reappended: AtomicU64,
    pub(crate) values_appended: AtomicU64,
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// What the log mutex guards.
pub(crate) struct Log {
    pub(crate) next_seq: u64,
    /// `next_seq` when the last mark was appended: none is needed until
    /// something is appended after it.
    pub(crate) marked_seq: u64,
    /// The stream of the last append (a mark goes there: it is busy).
    pub(crate) last_stream: Stream,
    pub(crate) next_id: u32,
    /// Each active segment's summary so far, by stream.
    pub(crate) summary: [Vec<SummaryEntry>; 2],
    /// Ids of the probation stream's segments (active, frozen or sealed).
    pub(crate) probation: std::collections::BTreeSet<u32>,
}

impl Log {
    pub(crate) fn stream_of(&self, segment: u32) -> Stream {
        if self.probation.contains(&segment) {
            Stream::Probation
        } else {
            Stream::Main
        }
    }
}

/// A full segment waiting for the flusher: its records and their summary.
pub(crate) struct Frozen {
    pub(crate) id: u32,
    pub(crate) stream: Stream,
    pub(crate) first_seq: u64,
    /// The log's last sequence number when it froze: its stream is complete
    /// up to here (the trailer's `through`).
    pub(crate) through: u64,
    pub(crate) image: Arc<Image>,
    pub(crate) summary: Vec<SummaryEntry>,
}

pub(crate) enum Request {
    Sync(Sender<Result<(), DiskError>>),
    /// Seal the active segment (if it holds records) and sync; answers the
    /// sequence number of the last record.
    Seal(Sender<Result<u64, DiskError>>),
    Wake,
}

pub(crate) struct DiskState {
    /// Held open, and locked, for as long as the tier exists.
    /// Held open and locked until the tier is closed.
    pub(crate) lock: Mutex<Option<std::fs::File>>,
    /// Closed: nothing is read or written any more.
    pub(crate) closed: AtomicBool,
    pub(crate) config: DiskConfig,
    pub(crate) index: Index,
    pub(crate) ghosts: Ghosts,
    /// The segment list (format.md §2.2): changed by the flusher at each
    /// seal and reclaim, and at close.
    pub(crate) listing: Mutex<listing::Listing>,
    pub(crate) log: Mutex<Log>,
    /// The active segment of each stream (indexed by `Stream as usize`).
    pub(crate) active: RwLock<[ActiveBuffer; 2]>,
    pub(crate) frozen: RwLock<BTreeMap<u32, Arc<Frozen>>>,
    /// The memory segment images are made of, reused (docs/design.md §9).
    pub(crate) chunks: Arc<ChunkPool>,
    pub(crate) files: RwLock<BTreeMap<u32, Arc<SegmentFile>>>,
    /// What opening the directory found and did.
    pub(crate) recovery: crate::stats::RecoveryStats,
    /// Set while the cache closes: reclaim would drop records of keys memory
    /// holds after memory has decided they need no writing.
    pub(crate) reclaim_held: AtomicBool,
    /// Set while a warm refill runs: reclaim lets the tier exceed its
    /// capacity by a bounded slack (`policy::reclaim::refill_slack`).
    pub(crate) refilling: AtomicBool,
    /// Held by reclaim while it works on a segment: holding reclaim off waits
    /// for the segment in progress, so nothing is dropped after it returns.
    pub(crate) reclaim_gate: Mutex<()>,
    /// What open found of the checkpoint, until the memory tier takes it.
    pub(crate) checkpoint: Mutex<Option<CheckpointState>>,
    /// Signalled when a frozen segment has been written.
    pub(crate) space: (Mutex<()>, Condvar),
    pub(crate) failed: AtomicBool,
    pub(crate) failure: Mutex<Option<String>>,
    pub(crate) counters: Counters,
    /// Which values are worth a compression attempt.
    pub(crate) compression: compression::Gate,
    /// The sealed segments' maps.
    pub(crate) maps: super::maps::Maps,
    /// Tests only: run by the flusher in a durable flush each time it has
    /// written the frozen segments and is about to write the active ones.
    #[cfg(test)]
    pub(crate) before_active: Mutex<Option<TestHook>>,
}

/// A test's code run by the flusher at a chosen point.
#[cfg(test)]
pub(crate) type TestHook = Box<dyn FnMut(&DiskState) + Send>;

impl DiskState {
    /// Appends a record under the log mutex and points the index at it. With
    /// `expect`, appends only if the index still points the key at that record
    /// (reclaim's re-append: a newer write or a removal wins). Returns `None` if
    /// nothing was appended, else whether the flusher should be woken (the
    /// active segment was frozen, or grew past a multiple of [`WAKE_EVERY`]).
    /// `replaced` is set to the record the index pointed the key at, when
    /// the index lets go of it (even if the tier then fails to write).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn append(
        &self,
        key: &[u8],
        hash: u64,
        mut header: RecordHeader,
        stored: &[u8],
        flags: u8,
        expect: Option<Loc>,
        stream: Stream,
        replaced: &mut Option<Loc>,
    ) -> Result<Option<bool>, DiskError> {
        let len = header.record_len();
        if len > max_record_len(self.config.segment_size) {
            return Err(DiskError::TooLarge(len));
        }
        let mut log = self.log.lock();
        let current = if header.kind == Kind::Tombstone {
            match self.index.remove(hash) {
                None => return Ok(None), // Nothing on disk to supersede.
                some => {
                    *replaced = some;
                    some
                }
            }
        } else {
            self.index.peek(hash)
        };
        if expect.is_some() && current != expect {
            return Ok(None);
        }
        // A key's records stay in the stream of its current one (only reclaim
        // moves a record, from the segment it is reclaiming): so no record can
        // outlive a newer one of its key in the other stream.
        let stream = match current {
            _ if !self.probation_on() => Stream::Main,
            Some(loc) if expect.is_none() => log.stream_of(loc.segment),
            _ => stream,
        };
        // After a failure nothing more is written; the index removal above still
        // stands, so a removed value is not served.
        self.check_failed()?;
        let mut actives = self.active.write();
        let (offset, woke) =
            self.place(&mut log, &mut actives, stream, len, |seq, offset, id| {
                header.seq = seq;
                let head = record::encode_header(u64::from(id), offset, &header, key, stored);
                (head, [key, stored])
            })?;
        let s = stream as usize;
        log.summary[s].push(SummaryEntry {
            hash,
            seq: header.seq,
            offset,
            len: len as u32,
            tombstone: header.kind == Kind::Tombstone,
            compressed: header.compressed,
            mark: false,
        });
        if header.kind == Kind::Value {
            let loc = Loc {
                segment: actives[s].id,
                offset,
            };
            *replaced = self.index.insert(hash, loc, flags);
            self.ghosts.observe(len);
            add(&self.counters.values_appended, 1);
        }
        Ok(Some(woke))
    }

    /// Under the log and active locks: makes room for a record of `len`
    /// bytes in `stream`'s active segment, freezing it if the record does not
    /// fit. Whether it froze.
    pub(crate) fn make_room(
        &self,
        log: &mut Log,
        actives: &mut [ActiveBuffer; 2],
        stream: Stream,
        len: usize,
    ) -> Result<bool, DiskError> {
        let room = self.config.segment_size as usize - SEGMENT_HEADER_LEN - TRAILER_LEN;
        let s = stream as usize;
        let summary_len = (log.summary[s].len() + 1) * SUMMARY_ENTRY_LEN;
        let froze = actives[s].records_len() + len + summary_len > room;
        if froze {
            if log.next_id > MAX_SEGMENT_ID {
                return Err(self.fail(format!(
                    "segment ids are exhausted ({MAX_SEGMENT_ID} segments written)"
                )));
            }
            self.freeze(log, &mut actives[s], stream);
        }
        Ok(froze)
    }

    /// Under the log and active locks: makes room for a record of `len`
    /// bytes in `stream`'s active segment, gives it the next sequence number,
    /// and appends what `encode` makes of (sequence number, offset, segment
    /// id): a header and the bytes after it. Returns the record's offset and
    /// whether the flusher should be woken (the segment froze, or grew past a
    /// multiple of [`WAKE_EVERY`]).
    fn place<'b>(
        &self,
        log: &mut Log,
        actives: &mut [ActiveBuffer; 2],
        stream: Stream,
        len: usize,
        encode: impl FnOnce(u64, u32, u32) -> ([u8; RECORD_HEADER_LEN], [&'b [u8]; 2]),
    ) -> Result<(u32, bool), DiskError> {
        let froze = self.make_room(log, actives, stream, len)?;
        let active = &mut actives[stream as usize];
        let seq = log.next_seq;
        log.next_seq += 1;
        log.last_stream = stream;
        let offset = active.end_offset();
        let (head, rest) = encode(seq, offset, active.id);
        active.image.append(&[&head, rest[0], rest[1]]);
        // Every few MiB the flusher is woken to write them and start their
        // writeback, so the seal's `fdatasync` finds little left to do (and
        // the image gives back the chunks written). Not every chunk: small
        // segments' chunks are small, and a wake-up for each kept the
        // flusher busy for little (design.md §9).
        let crossed = offset as usize / WAKE_EVERY != active.image.len() / WAKE_EVERY;
        Ok((offset, froze || crossed))
    }

    /// Before a close seals a log nothing was ever appended to: a mark, so
    /// that the close has a last sequence number to record (0 means "not
    /// closed" in the segment list) and the directory reads as closed
    /// cleanly, its checkpoint as current.
    pub(super) fn mark_if_empty(&self) -> Result<(), DiskError> {
        {
            let mut log = self.log.lock();
            if log.next_seq != 1 {
                return Ok(());
            }
            log.marked_seq = 0;
        }
        self.mark()
    }

    /// Appends a mark (format.md §1.2) to the stream last appended to, if
    /// anything was appended since the last mark: where every stream stands
    /// now. Recovery that finds it, and each stream's records up to where it
    /// says, knows the whole log is complete up to it, so a crash costs no
    /// more than what came after the last mark every stream reached.
    pub(super) fn mark(&self) -> Result<(), DiskError> {
        let mut log = self.log.lock();
        if log.next_seq == log.marked_seq {
            return Ok(());
        }
        self.check_failed()?;
        let stream = if self.probation_on() {
            log.last_stream
        } else {
            Stream::Main
        };
        let mut actives = self.active.write();
        let len = RECORD_HEADER_LEN + MARK_LEN;
        // Room first, so that the positions are those after any freeze.
        self.make_room(&mut log, &mut actives, stream, len)?;
        let pos = |a: &ActiveBuffer| StreamPos {
            segment: a.id,
            end: a.end_offset(),
            first_seq: a.first_seq,
        };
        let payload = Mark {
            streams: [pos(&actives[0]), pos(&actives[1])],
        }
        .encode();
        let (offset, _) = self.place(&mut log, &mut actives, stream, len, |seq, offset, id| {
            let head = Mark::header(seq);
            let head = record::encode_header(u64::from(id), offset, &head, &[], &payload);
            (head, [&[], &payload])
        })?;
        let seq = log.next_seq - 1;
        log.summary[stream as usize].push(SummaryEntry {
            hash: 0,
            seq,
            offset,
            len: len as u32,
            tombstone: false,
            compressed: false,
            mark: true,
        });
        log.marked_seq = log.next_seq;
        Ok(())
    }

    /// Segments the tier holds against its capacity: sealed files, frozen
    /// segments, and the active ones once they hold something (under the
    /// demoting policies the probation stream is never written), at least one.
    pub(crate) fn segments_held(&self) -> usize {
        let actives = (self.active.read().iter())
            .filter(|a| a.records_len() > 0)
            .count();
        self.files.read().len() + self.frozen.read().len() + actives.max(1)
    }

    /// Whether the tier is large enough for a probation stream.
    pub(crate) fn probation_on(&self) -> bool {
        self.config.capacity / self.config.segment_size >= MIN_SEGMENTS_FOR_PROBATION
    }

    /// Moves the full active segment to the frozen list and starts the next one.
    /// Called with the log and active locks held.
    pub(crate) fn freeze(&self, log: &mut Log, active: &mut ActiveBuffer, stream: Stream) {
        let image = Image::new(self.config.segment_size as usize, Arc::clone(&self.chunks));
        let next = ActiveBuffer::new(log.next_id, log.next_seq, stream, image);
        if stream == Stream::Probation {
            log.probation.insert(log.next_id);
        }
        let full = std::mem::replace(active, next);
        log.next_id += 1;
        let frozen = Frozen {
            id: full.id,
            stream,
            first_seq: full.first_seq,
            through: log.next_seq - 1,
            image: full.image,
            summary: std::mem::take(&mut log.summary[stream as usize]),
        };
        // Published before the active lock is released: readers find it here.
        self.frozen.write().insert(frozen.id, Arc::new(frozen));
    }

    /// Puts the tier in its failed state (sticky: it stops writing) and
    /// returns the error to report.
    pub(crate) fn fail(&self, why: String) -> DiskError {
        if !self.failed.load(Ordering::Acquire) {
            log::error!("the disk tier failed and stops writing (memory serves on): {why}");
        }
        *self.failure.lock() = Some(why.clone());
        self.failed.store(true, Ordering::Release);
        notify_space(self);
        DiskError::Failed(why)
    }

    pub(crate) fn check_failed(&self) -> Result<(), DiskError> {
        if self.failed.load(Ordering::Acquire) {
            let why = self.failure.lock().clone().unwrap_or_default();
            return Err(DiskError::Failed(why));
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(DiskError::Closed);
        }
        Ok(())
    }
}

/// The longest record (header, key, stored value) a segment of
/// `segment_size` bytes takes, with its summary entry.
pub(crate) fn max_record_len(segment_size: u64) -> usize {
    segment_size as usize - SEGMENT_HEADER_LEN - TRAILER_LEN - SUMMARY_ENTRY_LEN
}

/// Wakes producers waiting for a frozen segment to be written (under the mutex,
/// so that a waiter between its check and its wait cannot miss it).
pub(crate) fn notify_space(sh: &DiskState) {
    let _guard = sh.space.0.lock();
    sh.space.1.notify_all();
}
