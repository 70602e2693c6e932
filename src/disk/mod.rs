//! L2, the disk tier: a log of fixed-size segment files.
//!
//! The memory tier drives it through [`Tiered`] (write policy, promotion,
//! demotion). Opening a directory that already holds segments recovers it
//! (`recovery.rs`); `close` seals it and writes a checkpoint. See
//! docs/design.md §9–§11.
//!
//! # Write path
//! Appends are serialized by one log mutex that assigns the sequence number,
//! encodes the record into the active segment's in-memory buffer and points
//! the index at it, all at once: the index never runs ahead of or behind the
//! log, so a removed or overwritten value is never read back. Compression runs
//! before the lock is taken. A full segment is frozen (its buffer moves to the
//! frozen list, still readable) and a new one starts. A buffer is held in
//! chunks that go back to a pool once the flusher has written them
//! (`segment.rs`).
//!
//! The log has two streams, each with its own active segment (docs/design.md
//! §10.2): inserts go to the *probation* stream, demotions and re-appends to
//! the *main* stream, and an append for a key the index holds goes to its
//! current record's stream. A tier of fewer than 4 segments uses main only.
//!
//! The flusher thread (`flusher.rs`) does all the I/O: it writes the active segment's new
//! bytes every flush interval, writes frozen segments out with their summary
//! and trailer, `fdatasync`s them and publishes their files, answers `sync()`
//! requests, and reclaims the oldest segment when the tier is over capacity
//! (probation's while that stream holds a tenth of the tier, else main's).
//! Reclaim is L2's clock hand: a live record that memory does not hold and
//! that has uses left (an L2 hit, or reuse proved in memory) is appended again
//! to main (within a budget, under the log mutex and only if it is still the
//! key's newest record); the others are dropped, their fingerprints kept in the
//! ghost table. Producers wait (bounded) or are refused when too many segments are frozen
//! and unwritten: nothing is dropped silently.
//!
//! # Read path
//! Index → location → the bytes from the active buffer, a frozen buffer or the
//! segment file (positional read), checked in that order: data only ever moves
//! in that direction, and is published in the next place before it leaves the
//! previous one (a buffer's chunk given back is read from the file the buffer
//! names). Every record is verified (magic, fields, CRC over its bytes,
//! segment id and offset) and its key compared in full before a byte is
//! returned; a record that fails is a miss, dropped from the index and counted.

mod analysis;
mod compression;
mod config;
pub(crate) mod dir;
mod flusher;
mod ghosts;
mod image;
mod index;
pub(crate) mod io;
mod listing;
mod mapped;
mod maps;
#[cfg(any(test, feature = "validate"))]
pub(crate) mod power_loss;
mod read;
pub(crate) mod recovery;
mod scan;
mod segment;
mod state;
pub(crate) mod verify;
mod write;

pub use config::Backpressure;
pub(crate) use config::DiskConfig;
pub use config::DiskError;
pub(crate) use dir::segment_size_of;
pub(crate) use index::Loc;
pub use maps::{DEFAULT_MAX_MAPS, ReadPath};
pub(crate) use read::{Prior, Token};
pub(crate) use segment::Stream;
pub(crate) use write::Prepared;

use crate::format::checkpoint::Checkpoint;
use crate::sync::{Arc, AtomicBool, AtomicU64, Condvar, Mutex, Ordering, RwLock};
use crossbeam_channel::Sender;
use dir::CHECKPOINT_FILE;
use flusher::Flusher;
use ghosts::Ghosts;
use image::{ActiveBuffer, ChunkPool, Image};
use index::Index;
/// Stripes of the disk tier's index, walked one at a time by iteration.
pub(crate) const INDEX_STRIPES: usize = index::STRIPES;
use state::{Counters, DiskState, Log, Request, notify_space};
use std::collections::BTreeMap;
use std::thread::JoinHandle;

/// What a reopen found of the checkpoint.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CheckpointState {
    Missing,
    Valid(Checkpoint),
    /// Written for another state of the log (a crash after the last close).
    Stale {
        checkpoint: u64,
        log: u64,
    },
    Corrupt(String),
}

use crate::stats::DiskTierStats;

/// The disk tier.
pub(crate) struct DiskTier {
    shared: Arc<DiskState>,
    /// `None` once the tier is closed.
    requests: Mutex<Option<Sender<Request>>>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

impl DiskTier {
    /// Opens a new disk tier in `config.dir` (created if needed; it must not hold segments).
    pub(crate) fn open(config: DiskConfig) -> Result<Self, DiskError> {
        config.check()?;
        let s = config.segment_size;
        let io_err = |context: String| {
            move |source| DiskError::Io {
                context,
                source: std::sync::Arc::new(source),
            }
        };
        std::fs::create_dir_all(&config.dir)
            .map_err(io_err(format!("cannot create {}", config.dir.display())))?;
        let lock = dir::lock_directory(&config.dir)?;
        if let dir::ManifestCheck::Rewritten(why) = dir::check_manifest(&config.dir, s)? {
            log::warn!(
                "{}: the manifest was damaged ({why}); set aside as MANIFEST.quarantined and written again",
                config.dir.display()
            );
        }
        let mut config = config;
        if config.direct
            && let Err(e) = dir::probe_direct(&*config.io, &config.dir)
        {
            log::warn!(
                "{} refuses direct writes ({e}); writing through the page cache",
                config.dir.display()
            );
            config.direct = false;
        }
        let index = Index::new();
        let found = dir::read_checkpoint(&config.dir);
        let uses: std::collections::HashMap<(u32, u32), u8> = match &found {
            Ok(Some(c)) => c.uses.iter().map(|&(s, o, n)| ((s, o), n)).collect(),
            _ => Default::default(),
        };
        let recovered = recovery::recover(&*config.io, &config.dir, s, &index, &uses)?;
        let r = &recovered.report;
        log::info!(
            "{}: opened: {} entries in {} segments ({} records read; {} torn tails, \
             {} files quarantined, {} segments lost)",
            config.dir.display(),
            r.entries,
            r.segments,
            r.records,
            r.torn_tails,
            r.quarantined_files,
            r.lost_segments
        );
        let ghosts = Ghosts::new(config.capacity);
        let on_disk: u64 = recovered.files.len() as u64 * s;
        ghosts.observe_many(recovered.report.records, on_disk);
        let log_end = recovered.next_seq - 1;
        let checkpoint = match found {
            Err(why) => CheckpointState::Corrupt(why),
            Ok(None) => CheckpointState::Missing,
            Ok(Some(c)) if Some(c.last_seq) != recovered.closed_at => {
                index.clear_flags();
                CheckpointState::Stale {
                    checkpoint: c.last_seq,
                    log: log_end,
                }
            }
            Ok(Some(c)) => {
                // Sized for both tiers, as when they were written.
                let resident = c.memory.iter().filter(|e| !e.ghost).count();
                ghosts.memory_holds(resident as u64);
                for &hash in &c.ghosts {
                    ghosts.insert(hash);
                }
                CheckpointState::Valid(c)
            }
        };
        let (id, seq) = (recovered.next_id, recovered.next_seq);
        let mut probation: std::collections::BTreeSet<u32> = recovered
            .files
            .values()
            .filter(|f| f.stream == Stream::Probation)
            .map(|f| f.id)
            .collect();
        probation.insert(id + 1);
        let size = s as usize;
        // Spares for as many segments as the flush queue holds: a burst's
        // chunks are kept for the next (memory freed here is slow to take
        // back, docs/benchmarks.md §6), and no more than that.
        let chunk = image::chunk_size(size);
        let chunks = Arc::new(ChunkPool::new(
            chunk,
            config.max_frozen.saturating_mul(size.div_ceil(chunk)),
        ));
        let shared = Arc::new(DiskState {
            lock: Mutex::new(Some(lock)),
            closed: AtomicBool::new(false),
            index,
            ghosts,
            listing: Mutex::new(recovered.listing),
            log: Mutex::new(Log {
                next_seq: seq,
                marked_seq: seq,
                last_stream: Stream::Main,
                next_id: id + 2,
                summary: [Vec::new(), Vec::new()],
                probation,
            }),
            active: RwLock::new([
                ActiveBuffer::new(id, seq, Stream::Main, Image::new(size, Arc::clone(&chunks))),
                ActiveBuffer::new(
                    id + 1,
                    seq,
                    Stream::Probation,
                    Image::new(size, Arc::clone(&chunks)),
                ),
            ]),
            frozen: RwLock::new(BTreeMap::new()),
            chunks,
            files: RwLock::new(recovered.files),
            recovery: recovered.report,
            checkpoint: Mutex::new(Some(checkpoint)),
            reclaim_held: AtomicBool::new(false),
            refilling: AtomicBool::new(false),
            reclaim_gate: Mutex::new(()),
            space: (Mutex::new(()), Condvar::new()),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            counters: Counters::default(),
            compression: compression::Gate::new(config.compression_budget),
            maps: maps::Maps::new(config.max_maps),
            #[cfg(test)]
            before_active: Mutex::new(None),
            config,
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let flusher = Flusher::new(Arc::clone(&shared), rx);
        let handle = std::thread::Builder::new()
            .name("larder-flusher".into())
            .spawn(move || flusher.run())
            .map_err(io_err("cannot start the flusher thread".into()))?;
        Ok(DiskTier {
            shared,
            requests: Mutex::new(Some(tx)),
            flusher: Mutex::new(Some(handle)),
        })
    }

    /// The tier's directory, as it was given.
    pub(crate) fn dir(&self) -> &std::path::Path {
        &self.shared.config.dir
    }

    /// Writes `checkpoint` atomically.
    pub(crate) fn write_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), DiskError> {
        dir::write_atomic(
            &self.shared.config.dir,
            CHECKPOINT_FILE,
            &checkpoint.encode(),
            true,
        )
    }

    /// Holds reclaim off (`true`) or lets it run again (`false`): while the
    /// cache closes, memory writes what the disk does not hold, and reclaim
    /// must not drop more behind its back.
    /// Marks a warm refill as running (`true`) or done (`false`): reclaim
    /// then waits, up to a bound, so as not to drop records the refill is
    /// about to read (design.md §11.2).
    pub(crate) fn refilling(&self, on: bool) {
        self.shared.refilling.store(on, Ordering::Release);
    }

    pub(crate) fn hold_reclaim(&self, held: bool) {
        self.shared.reclaim_held.store(held, Ordering::Release);
        if held {
            drop(self.shared.reclaim_gate.lock()); // the segment in progress is done
        }
    }

    /// What open found of the checkpoint; the memory part of a valid one is
    /// handed over once (the disk part was applied at open).
    pub(crate) fn take_checkpoint(&self) -> CheckpointState {
        self.shared
            .checkpoint
            .lock()
            .take()
            .unwrap_or(CheckpointState::Missing)
    }

    /// The disk tier's part of a checkpoint: records with uses left, and ghosts.
    pub(crate) fn policy_state(&self) -> (Vec<(u32, u32, u8)>, Vec<u64>) {
        let sh = &*self.shared;
        let uses = sh
            .index
            .used()
            .into_iter()
            .map(|(loc, n)| (loc.segment, loc.offset, n))
            .collect();
        (uses, sh.ghosts.list())
    }

    /// Seals the active segment (written, summarized, `fdatasync`ed) so that a
    /// reopen reads only summaries. Returns the sequence number of the last
    /// record, which names this state of the log (see the checkpoint).
    pub(crate) fn seal(&self) -> Result<u64, DiskError> {
        self.check_failed()?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.request(Request::Seal(tx))?;
        rx.recv()
            .unwrap_or_else(|_| Err(DiskError::Failed("the flusher has stopped".into())))
    }

    /// Returns once everything appended before the call is written and `fdatasync`ed.
    pub(crate) fn sync(&self) -> Result<(), DiskError> {
        self.check_failed()?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.request(Request::Sync(tx))?;
        rx.recv()
            .unwrap_or_else(|_| Err(DiskError::Failed("the flusher has stopped".into())))
    }

    fn request(&self, r: Request) -> Result<(), DiskError> {
        match &*self.requests.lock() {
            Some(tx) => tx
                .send(r)
                .map_err(|_| DiskError::Failed("the flusher has stopped".into())),
            None => Err(DiskError::Closed),
        }
    }

    /// Stops the flusher after it has written and synced what was appended,
    /// and lets go of the directory (its lock): another cache may open it now.
    /// From then on the tier reads and writes nothing. Idempotent.
    pub(crate) fn close(&self) {
        let sh = &*self.shared;
        drop(self.requests.lock().take());
        if let Some(h) = self.flusher.lock().take() {
            let _ = h.join();
        }
        // After the flusher's last flush: from now on nothing is written.
        sh.closed.store(true, Ordering::Release);
        notify_space(sh);
        drop(sh.lock.lock().take());
    }

    /// The tier's counters and health (its write policy is the tiers' to say).
    pub(crate) fn stats(&self) -> DiskTierStats {
        let sh = &*self.shared;
        let c = &sh.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DiskTierStats {
            entries: sh.index.len() as u64,
            index_bytes: sh.index.table_bytes() as u64,
            segments: sh.files.read().len() as u64,
            hits: load(&c.hits),
            records_written: load(&c.records_written),
            values_appended: load(&c.values_appended),
            bytes_written: load(&c.bytes_written),
            write_time: std::time::Duration::from_nanos(load(&c.write_ns)),
            value_bytes_in: load(&c.value_bytes_in),
            value_bytes_stored: load(&c.value_bytes_stored),
            refused_writes: load(&c.refused_writes),
            corrupt_records: load(&c.corrupt_records),
            reclaimed_segments: load(&c.reclaimed_segments),
            faulted_segments: load(&c.faulted_segments),
            reappended: load(&c.reappended),
            ghosts: sh.ghosts.len() as u64,
            failure: sh.failure.lock().clone(),
            closed: sh.closed.load(Ordering::Acquire),
            io_backend: sh.config.io.name(),
            direct_writes: sh.config.direct,
            read_path: sh.config.read_path.name(),
            maps: sh.maps.open() as u64,
            queued_segments: sh.frozen.read().len() as u64,
            buffer_bytes: sh.chunks.bytes() as u64,
            capacity: sh.config.capacity,
            segment_size: sh.config.segment_size,
            flush_interval: sh.config.flush_interval,
            compress_above: sh.config.compress_above,
            compression_paced: sh.compression.paced(),
            backpressure: sh.config.backpressure,
            write_policy: crate::WritePolicy::default(),
            recovery: sh.recovery.clone(),
        }
    }
}

impl Drop for DiskTier {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests;
