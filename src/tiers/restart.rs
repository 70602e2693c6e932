//! The tiers' life across restarts: `sync()`, the clean close (every shard
//! closed, memory's unwritten entries written, the log sealed, the
//! checkpoint of the policy state written), and the warm refill after an
//! open (design.md §11).

use super::{Refusal, Tiers};
use crate::disk::{CheckpointState, DiskError};
use crate::error::Error;
use crate::format::checkpoint::{Checkpoint, MemoryEntry};
use crate::key::Probe;
use crate::memory::Held;
use crate::stats::CheckpointStatus;
use crate::sync::{Arc, AtomicBool, AtomicU64, Mutex, Ordering};
use std::thread::JoinHandle;

/// The warm refill's progress, shared with its thread.
#[derive(Default)]
pub(crate) struct Refill {
    refilled: AtomicU64,
    done: AtomicBool,
    stop: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// What the close returned, once it has run.
#[derive(Default)]
pub(crate) struct CloseState {
    outcome: Mutex<Option<Result<(), Error>>>,
}

/// The error a caller sees for one of the disk tier's.
pub(crate) fn disk_error(e: DiskError) -> Error {
    match e {
        DiskError::Closed => Error::Closed,
        e => Error::Disk(e),
    }
}

impl Tiers {
    /// Right after the open: what the directory held of a checkpoint, and,
    /// if it was valid, the warm refill started in the background.
    pub(crate) fn start(self: &Arc<Self>) -> CheckpointStatus {
        let Some(lower) = &self.lower else {
            self.refill.done.store(true, Ordering::Release);
            return CheckpointStatus::None;
        };
        let (status, entries) = match lower.take_checkpoint() {
            CheckpointState::Missing => (CheckpointStatus::None, None),
            CheckpointState::Valid(c) => (CheckpointStatus::Used, Some(c.memory)),
            CheckpointState::Stale { checkpoint, log } => {
                log::info!(
                    "the checkpoint was written at record {checkpoint}, the log ends at {log}: ignored"
                );
                (CheckpointStatus::Stale, None)
            }
            CheckpointState::Corrupt(why) => {
                log::warn!("the checkpoint is damaged ({why}): ignored");
                (CheckpointStatus::Corrupt(why), None)
            }
        };
        let Some(entries) = entries else {
            self.refill.done.store(true, Ordering::Release);
            return status;
        };
        // Reclaim waits for the refill, up to a bound: it drops records
        // memory holds and keeps others by their use counts, so before memory
        // has taken back its entries it would drop records the refill is
        // about to read.
        lower.disk().refilling(true);
        let tiers = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("larder-refill".into())
            .spawn(move || {
                tiers.refill_memory(&entries);
                if let Some(l) = &tiers.lower {
                    l.disk().refilling(false);
                }
                tiers.refill.done.store(true, Ordering::Release);
            });
        match spawned {
            Ok(h) => *self.refill.thread.lock() = Some(h),
            Err(_) => {
                lower.disk().refilling(false);
                self.refill.done.store(true, Ordering::Release);
            }
        }
        status
    }

    /// Entries refilled so far, and whether the refill is done.
    pub(crate) fn refill_progress(&self) -> (u64, bool) {
        (
            self.refill.refilled.load(Ordering::Relaxed),
            self.refill.done.load(Ordering::Acquire),
        )
    }

    /// Brings back into memory, from disk, what memory held at the last close,
    /// in the checkpoint's order (hot entries first, ghosts last). Each entry
    /// goes through the ordinary promotion path, so a key written or removed
    /// meanwhile is never overwritten with an older value. Stops when told.
    fn refill_memory(&self, entries: &[MemoryEntry]) {
        let Some(lower) = &self.lower else {
            return;
        };
        for e in entries {
            if self.refill.stop.load(Ordering::Acquire) {
                return;
            }
            if e.ghost {
                // After the residents: ghosts are bounded by what the shard holds.
                let mut shard = self.memory.write(e.hash);
                if !shard.is_closed() {
                    shard.add_ghost(e.hash, e.weight);
                }
                continue;
            }
            let now = self.memory.clock().now();
            if let Some((key, value, deadline, token)) = lower.read_by_hash(e.hash, now) {
                let weight = self.weigh(&key, &value);
                if weight <= self.max_weight
                    && self.promote(e.hash, &key, value, weight as u32, deadline, token)
                {
                    self.refill.refilled.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Stops the refill thread and waits for it.
    fn stop_refill(&self) {
        self.refill.stop.store(true, Ordering::Release);
        let thread = self.refill.thread.lock().take();
        if let Some(h) = thread {
            let _ = h.join();
        }
    }

    /// See [`Cache::sync`](crate::Cache::sync).
    pub(crate) fn sync(&self) -> Result<(), Error> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let Some(lower) = &self.lower else {
            return Ok(());
        };
        // Inserts the flusher was too busy to take: written now, waiting.
        let unwritten = if lower.take_refused() {
            let n = self.write_refused();
            if n > 0 {
                lower.retry_refused();
            }
            n
        } else {
            0
        };
        lower.disk().sync().map_err(disk_error)?;
        let dropped = lower.take_dropped();
        if unwritten + dropped > 0 {
            return Err(Error::NotPersisted { unwritten, dropped });
        }
        Ok(())
    }

    /// Writes the entries an insert could not write (the disk tier refused
    /// them under backpressure) now, waiting for room, outside every lock:
    /// each is written only if, under its shard lock, memory still holds the
    /// same bytes, dirty. Returns how many are still unwritten.
    fn write_refused(&self) -> u64 {
        let Some(lower) = &self.lower else {
            return 0;
        };
        let mut unwritten = 0;
        for i in 0..self.memory.shard_count() {
            let now = self.memory.clock().now();
            let dirty: Vec<_> = self
                .memory
                .read_at(i)
                .unwritten(now, |_| true, false)
                .into_iter()
                .filter(|u| u.dirty)
                .collect();
            for u in dirty {
                let (key, hash) = (u.key.as_slice(), u.hash);
                let Ok(p) = lower.prepare_waiting(&u.value, u.deadline) else {
                    unwritten += 1;
                    continue;
                };
                let probe = Probe::new(key);
                let mut shard = self.memory.write(hash);
                if !shard.is_closed() && shard.still_dirty(hash, &probe, &u.value) {
                    if lower.commit_held(key, hash, &p) {
                        shard.set_clean(hash, &probe);
                    } else {
                        unwritten += 1;
                    }
                }
            }
        }
        unwritten
    }

    /// Closes the tiers, once: whoever comes later (another handle's
    /// `close`, the last handle's drop) gets the first close's outcome.
    pub(crate) fn close(&self) -> Result<(), Error> {
        let r = {
            let mut outcome = self.close.outcome.lock();
            if let Some(r) = &*outcome {
                return r.clone();
            }
            let r = self.close_now();
            *outcome = Some(r.clone());
            r
        };
        // Every report is delivered before close returns (outside the
        // outcome's lock: the listener may call `close` itself).
        if let Some(n) = &self.listener {
            n.stop();
        }
        r
    }

    /// Every shard closed, under its lock (no handle changes anything from
    /// then on: an append for a key is made under its shard lock, so every
    /// change is in memory when its shard closes, or refused); memory's
    /// unwritten entries written; the log sealed; the checkpoint of what
    /// memory holds written; the directory released.
    fn close_now(&self) -> Result<(), Error> {
        self.closed.store(true, Ordering::Release);
        self.stop_refill();
        // Reclaim held first: it drops records of keys memory holds, which
        // the close is about to decide need no writing.
        if let Some(lower) = &self.lower {
            lower.disk().hold_reclaim(true);
        }
        let mut unwritten = Vec::new();
        for i in 0..self.memory.shard_count() {
            let mut shard = self.memory.write_at(i);
            shard.close();
            if let Some(lower) = &self.lower {
                let now = self.memory.clock().now();
                let expired_too = self.listener.is_some();
                unwritten.extend(shard.unwritten(
                    now,
                    |hash| lower.disk().holds(hash),
                    expired_too,
                ));
            }
        }
        let Some(lower) = &self.lower else {
            return Ok(());
        };
        // Demotions reserved before the shards closed land first.
        lower.wait_for_demotions();
        let mut lost = 0;
        for u in unwritten {
            let (key, hash) = (u.key.as_slice(), u.hash);
            if u.expired {
                // Gone with memory, the disk holding no copy: reported here.
                if let Some(n) = &self.listener {
                    n.send(key, Some(u.value), crate::listener::RemovalCause::Expired);
                }
                continue;
            }
            let written = lower
                .prepare_waiting(&u.value, u.deadline)
                .map(|p| lower.commit_held(key, hash, &p));
            if matches!(written, Ok(true)) {
                continue;
            }
            if u.dirty && lower.policy() == super::WritePolicy::WriteBehind {
                lost += 1;
            }
            // A record the disk holds (a time to idle not rewritten) stands.
            let kept = !u.dirty && lower.disk().holds(hash);
            if let (Some(n), false) = (&self.listener, kept) {
                // Gone with memory: the disk does not hold it.
                n.send(key, Some(u.value), crate::listener::RemovalCause::Evicted);
            }
        }
        let dropped = lower.take_dropped();
        let written = self.checkpoint();
        lower.disk().close();
        written.map_err(disk_error)?;
        log::info!("closed: the log sealed, the checkpoint written, the directory released");
        if lost + dropped > 0 {
            return Err(Error::NotPersisted {
                unwritten: lost,
                dropped,
            });
        }
        Ok(())
    }

    /// Seals the log and writes the checkpoint: what memory holds (hottest
    /// first), and the disk tier's use counts and ghosts.
    fn checkpoint(&self) -> Result<(), DiskError> {
        let Some(lower) = &self.lower else {
            return Ok(());
        };
        let disk = lower.disk();
        let last_seq = disk.seal()?;
        let memory = self.memory.held().into_iter().map(memory_entry).collect();
        let (uses, ghosts) = disk.policy_state();
        disk.write_checkpoint(&Checkpoint {
            last_seq,
            memory,
            uses,
            ghosts,
        })
    }
}

/// A checkpoint's record of what memory held of a key.
fn memory_entry(h: Held) -> MemoryEntry {
    MemoryEntry {
        hash: h.hash,
        hot: h.hot,
        ghost: h.ghost,
        weight: h.weight,
    }
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Closed => Error::Closed,
            Refusal::TooLarge { len, max } => Error::TooLargeForSegment { len, max },
        }
    }
}
