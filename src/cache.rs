//! [`Cache`]: the public handle.

use crate::builder::{CacheBuilder, Weigher};
use crate::disk::CheckpointState;
use crate::error::{Error, LoadError};
use crate::format::checkpoint::MemoryEntry;
use crate::key::{MAX_VALUE_LEN, check_key, hash_key};
use crate::memory::{MemoryTier, Refusal};
use crate::patterns::single_flight::{Flights, Role};
use crate::stats::{CheckpointStatus, DiskTierStats, RecoveryStats, Stats, TierStats};
use crate::sync::{Arc, AtomicBool, AtomicU64, Ordering};
use bytes::Bytes;
use std::time::Duration;

/// A thread-safe, sharded cache of byte keys to [`Bytes`] values, evicting with
/// CLOCK-Pro. Cloning the handle is cheap and shares the cache.
///
/// ```
/// use larder::Cache;
///
/// let cache = Cache::builder().memory_capacity(1 << 20).build()?;
/// cache.insert(b"k", "v")?;
/// assert!(cache.contains(b"k"));
/// assert_eq!(cache.remove(b"k").as_deref(), Some(&b"v"[..]));
/// assert!(cache.get(b"k").is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    /// Shared with the refill thread, which holds no handle to the cache: so
    /// dropping the last handle runs `Drop` on the dropping thread, which stops
    /// and waits for the refill before the directory is released.
    memory: Arc<MemoryTier>,
    weigher: Weigher,
    max_weight: u64,
    flights: Flights,
    loads: AtomicU64,
    /// `close` has begun: operations are refused.
    closed: AtomicBool,
    /// What the close returned, once it has run.
    close_outcome: crate::sync::Mutex<Option<Result<(), Error>>>,
    /// What the disk tier's directory held of a checkpoint at open.
    checkpoint: CheckpointStatus,
    refill: Arc<Refill>,
    /// The refill thread, to wait for.
    refill_thread: crate::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The warm refill's progress, shared with its thread.
#[derive(Default)]
struct Refill {
    refilled: AtomicU64,
    done: AtomicBool,
    stop: AtomicBool,
}

impl Inner {
    /// Closes the cache, once: whoever comes later (another handle's
    /// `close`, the last handle's drop) gets the first close's outcome.
    fn shutdown(&self) -> Result<(), Error> {
        let mut outcome = self.close_outcome.lock();
        if let Some(r) = &*outcome {
            return r.clone();
        }
        let r = self.close_now();
        *outcome = Some(r.clone());
        r
    }

    /// Every shard closed (no handle changes anything from then on), memory's
    /// unwritten entries written, the log sealed, the checkpoint of what
    /// memory holds written, the directory released.
    fn close_now(&self) -> Result<(), Error> {
        self.closed.store(true, Ordering::Release);
        self.stop_refill();
        let Some(lower) = self.memory.lower() else {
            self.memory.close();
            return Ok(());
        };
        lower.hold_reclaim(true);
        let mut lost = 0;
        for u in self.memory.close() {
            let written = lower.write_at_close(u.key.as_slice(), &u.value, u.deadline);
            if written.is_err() && u.dirty && lower.policy() == crate::WritePolicy::WriteBehind {
                lost += 1;
            }
        }
        let dropped = lower.take_dropped();
        let written = lower.checkpoint(self.memory.checkpoint());
        lower.close();
        written.map_err(disk_error)?;
        if lost + dropped > 0 {
            return Err(Error::NotPersisted {
                unwritten: lost,
                dropped,
            });
        }
        Ok(())
    }
}

/// The error a caller sees for one of the disk tier's.
pub(crate) fn disk_error(e: crate::disk::DiskError) -> Error {
    match e {
        crate::disk::DiskError::Closed => Error::Closed,
        e => Error::Disk {
            reason: e.to_string(),
        },
    }
}

impl Inner {
    /// Stops the refill thread and waits for it.
    fn stop_refill(&self) {
        self.refill.stop.store(true, Ordering::Release);
        if let Some(h) = self.refill_thread.lock().take() {
            let _ = h.join();
        }
    }
}

impl Drop for Inner {
    /// A best-effort [`Cache::close`]: errors cannot be reported here.
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Cache {
    /// Starts configuring a cache.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    pub(crate) fn from_parts(memory: MemoryTier, weigher: Weigher) -> Self {
        let max_weight = memory.max_weight();
        let flights = Flights::new(memory.shard_count());
        let found = memory.lower().map(|l| l.take_checkpoint());
        let (checkpoint, refill) = match found {
            None | Some(CheckpointState::Missing) => (CheckpointStatus::None, None),
            Some(CheckpointState::Valid(c)) => (CheckpointStatus::Used, Some(c.memory)),
            Some(CheckpointState::Stale { checkpoint, log }) => {
                log::info!(
                    "the checkpoint was written at record {checkpoint}, the log ends at {log}: ignored"
                );
                (CheckpointStatus::Stale, None)
            }
            Some(CheckpointState::Corrupt(why)) => {
                log::warn!("the checkpoint is damaged ({why}): ignored");
                (CheckpointStatus::Corrupt(why), None)
            }
        };
        let memory = Arc::new(memory);
        let progress = Arc::new(Refill {
            done: AtomicBool::new(refill.is_none()),
            ..Refill::default()
        });
        let thread = refill.and_then(|entries| {
            let (memory, weigher, progress) =
                (Arc::clone(&memory), weigher.clone(), Arc::clone(&progress));
            // Reclaim waits for the refill, up to a bound: it drops records
            // memory holds and keeps others by their use counts, so before
            // memory has taken back its entries it would drop records the
            // refill is about to read.
            let outer = Arc::clone(&memory);
            let hold = |on| outer.lower().map(|l| l.refilling(on));
            hold(true);
            let spawned = std::thread::Builder::new()
                .name("larder-refill".into())
                .spawn(move || {
                    refill_memory(&memory, &weigher, max_weight, &progress, &entries);
                    if let Some(l) = memory.lower() {
                        l.refilling(false);
                    }
                    progress.done.store(true, Ordering::Release);
                });
            if spawned.is_err() {
                hold(false);
            }
            spawned.ok()
        });
        if thread.is_none() {
            progress.done.store(true, Ordering::Release);
        }
        Cache {
            inner: Arc::new(Inner {
                memory,
                weigher,
                max_weight,
                flights,
                loads: AtomicU64::new(0),
                closed: AtomicBool::new(false),
                close_outcome: crate::sync::Mutex::new(None),
                checkpoint,
                refill: progress,
                refill_thread: crate::sync::Mutex::new(thread),
            }),
        }
    }

    /// Closes the cache cleanly: memory's unwritten entries go to disk, the
    /// log is sealed, and a checkpoint of what memory holds is written, so the
    /// next open of the directory is warm: its index comes from segment
    /// summaries and memory is refilled, hottest first, in the background.
    /// Without a disk tier, does nothing.
    ///
    /// Closing closes every handle to the cache: from then on, on this
    /// handle's clones, inserts, loads and `sync()` return [`Error::Closed`],
    /// and lookups, `contains` and `remove` find nothing. A change a clone
    /// made before the close is written by it. When `close` returns `Ok`, the
    /// directory is cleanly closed (every segment sealed, the checkpoint
    /// current) and released: a cache may open it again at once. Closing
    /// again returns what the first close returned. Dropping the last handle
    /// closes as a best effort, without a way to report an error.
    ///
    /// # Errors
    /// * [`Error::NotPersisted`]: under `WriteBehind`, inserts the disk tier
    ///   could not take (the directory is closed cleanly without them).
    /// * [`Error::Disk`]: the disk tier failed; the directory may not be
    ///   closed cleanly (the next open recovers it as after a crash).
    pub fn close(self) -> Result<(), Error> {
        self.inner.shutdown()
    }

    /// The value for `key`, if it is cached and not expired. A hit marks the entry
    /// as referenced for CLOCK-Pro; it takes only a shared lock.
    ///
    /// Keys that could never be stored (empty or too long) are simply not
    /// found, and a closed cache finds nothing.
    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        let hash = hash_key(key);
        let found = self.inner.memory.get(hash, key);
        if found.is_some() || self.inner.memory.lower().is_none() {
            return found;
        }
        self.get_from_disk(hash, key)
    }

    /// An L1 miss with a disk tier: look below, and promote what is found into
    /// memory through CLOCK-Pro's miss path (as clean: it is on disk).
    #[cold]
    fn get_from_disk(&self, hash: u64, key: &[u8]) -> Option<Bytes> {
        let memory = &self.inner.memory;
        let lower = memory.lower()?;
        let (value, deadline, token) = lower.get(key, memory.clock().now())?;
        if let Ok(weight) = self.check_entry(key, &value) {
            memory.promote(hash, key, value.clone(), weight, deadline, token);
        }
        Some(value)
    }

    /// Returns `Ok` once every change made before the call is on stable
    /// storage (written and `fdatasync`ed). Without a disk tier, returns at
    /// once.
    ///
    /// What that covers depends on the [`WritePolicy`](crate::WritePolicy):
    /// * `WriteBehind` (the default): every insert, overwrite and removal
    ///   acknowledged before the call. After a crash (a kill, or a power
    ///   loss) each of them is there, unless capacity forced it out before
    ///   the crash (the disk tier was full and reclaimed it) or its bytes were
    ///   damaged.
    /// * `Demote` and `DemoteAll`: what the disk tier holds: every removal and
    ///   overwrite (an older value never comes back), and every entry memory
    ///   has written down by evicting it. Entries only memory holds are not on
    ///   disk, by design, and a crash forgets them.
    ///
    /// Either way, after a crash the cache is as it was at one moment between
    /// the last completed `sync()` and the crash (docs/contract.md).
    ///
    /// # Errors
    /// * [`Error::NotPersisted`]: the disk tier was too far behind to take
    ///   some inserts before the call (see [`Backpressure`](crate::Backpressure)),
    ///   and they could not be written now either. Everything else is synced;
    ///   those still in memory are tried again by the next `sync()`.
    /// * [`Error::Disk`]: the disk tier failed and persists nothing more.
    /// * [`Error::Closed`]: the cache was closed.
    pub fn sync(&self) -> Result<(), Error> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let Some(lower) = self.inner.memory.lower() else {
            return Ok(());
        };
        // Inserts the flusher was too busy to take: written now, waiting.
        let unwritten = if lower.take_refused() {
            let n = self.inner.memory.write_refused();
            if n > 0 {
                lower.retry_refused();
            }
            n
        } else {
            0
        };
        lower.sync().map_err(disk_error)?;
        let dropped = lower.take_dropped();
        if unwritten + dropped > 0 {
            return Err(Error::NotPersisted { unwritten, dropped });
        }
        Ok(())
    }

    /// Whether `key` is cached and not expired. Unlike [`get`](Self::get) this is
    /// not an access: it neither counts as a hit or miss nor marks the entry.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.inner.memory.contains(hash_key(key), key)
    }

    /// Caches `value` under `key`, replacing any previous value (and its TTL).
    ///
    /// Errors, changing nothing, if the key is empty or over
    /// [`MAX_KEY_LEN`](crate::MAX_KEY_LEN), the value is over
    /// [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN), or the entry weighs more than
    /// one shard can hold.
    pub fn insert(&self, key: &[u8], value: impl Into<Bytes>) -> Result<(), Error> {
        self.insert_inner(key, value.into(), None)
    }

    /// Like [`insert`](Self::insert), but the entry expires after `ttl`: from then
    /// on it is never returned. `ttl` must not be zero.
    pub fn insert_with_ttl(
        &self,
        key: &[u8],
        value: impl Into<Bytes>,
        ttl: Duration,
    ) -> Result<(), Error> {
        if ttl.is_zero() {
            return Err(Error::ZeroTtl);
        }
        self.insert_inner(key, value.into(), Some(ttl))
    }

    fn insert_inner(&self, key: &[u8], value: Bytes, ttl: Option<Duration>) -> Result<(), Error> {
        if self.inner.closed.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        let weight = self.check_entry(key, &value)?;
        let deadline = ttl.map_or(0, |t| self.inner.memory.clock().deadline(t));
        self.inner
            .memory
            .insert(hash_key(key), key, value, weight, deadline)
            .map_err(refused)
    }

    /// Validates an entry and computes its weight, before any lock is taken.
    fn check_entry(&self, key: &[u8], value: &Bytes) -> Result<u32, Error> {
        check_key(key)?;
        if value.len() > MAX_VALUE_LEN {
            return Err(Error::ValueTooLong {
                len: value.len(),
                max: MAX_VALUE_LEN,
            });
        }
        let weight = self.inner.weigher.weigh(key, value);
        if weight > self.inner.max_weight {
            return Err(Error::EntryTooHeavy {
                weight,
                max: self.inner.max_weight,
            });
        }
        // `max_weight` fits in a u32.
        Ok(weight as u32)
    }

    /// Removes `key`; returns its value if it was cached and not expired.
    /// On a closed cache, does nothing and returns `None`.
    pub fn remove(&self, key: &[u8]) -> Option<Bytes> {
        self.inner.memory.remove(hash_key(key), key)
    }

    /// The value for `key`, loading and caching it with `load` on a miss.
    ///
    /// Single-flight: when several threads miss on the same key at once, one runs
    /// its loader and the others wait for and share that value. If the leader's
    /// loader panics, a waiter takes over with its own loader.
    ///
    /// ```
    /// use larder::Cache;
    ///
    /// let cache = Cache::builder().memory_capacity(1 << 20).build()?;
    /// let v = cache.get_or_insert_with(b"user:42", || "loaded from the database".into())?;
    /// assert_eq!(v, "loaded from the database");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_or_insert_with(
        &self,
        key: &[u8],
        load: impl FnOnce() -> Bytes,
    ) -> Result<Bytes, Error> {
        self.try_get_or_insert_with(key, || Ok::<_, std::convert::Infallible>(load()))
            .map_err(|e| match e {
                LoadError::Cache(e) => e,
                LoadError::Loader(never) => match never {},
            })
    }

    /// Like [`get_or_insert_with`](Self::get_or_insert_with) with a fallible loader.
    ///
    /// A loader error is returned to the caller whose loader failed; nothing is
    /// cached, and callers that were waiting retry (one of them loads next), so a
    /// failure never poisons the key.
    pub fn try_get_or_insert_with<E>(
        &self,
        key: &[u8],
        load: impl FnOnce() -> Result<Bytes, E>,
    ) -> Result<Bytes, LoadError<E>> {
        check_key(key)?;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(LoadError::Cache(Error::Closed));
        }
        let hash = hash_key(key);
        let memory = &self.inner.memory;
        if let Some(v) = self.get(key) {
            return Ok(v);
        }
        loop {
            match self.inner.flights.join(hash, key) {
                Role::Shared(v) => return Ok(v),
                Role::Retry => {
                    if let Some(v) = memory.peek(hash, key) {
                        return Ok(v);
                    }
                }
                Role::Leader(leader) => {
                    // A flight that finished between our miss and our joining left its value.
                    if let Some(v) = memory.peek(hash, key) {
                        leader.finish(v.clone());
                        return Ok(v);
                    }
                    self.inner.loads.fetch_add(1, Ordering::Relaxed);
                    let value = load().map_err(LoadError::Loader)?;
                    let weight = self.check_entry(key, &value)?;
                    memory
                        .insert(hash, key, value.clone(), weight, 0)
                        .map_err(refused)?;
                    leader.finish(value.clone());
                    return Ok(value);
                }
            }
        }
    }

    /// A snapshot of the counters and occupancy.
    pub fn stats(&self) -> Stats {
        let s = self.inner.memory.snapshot();
        let disk = self.inner.memory.lower().map(|l| {
            let d = l.stats();
            DiskTierStats {
                hits: d.hits,
                entries: d.entries,
                index_bytes: d.index_bytes,
                segments: d.segments,
                capacity: d.capacity,
                bytes_written: d.bytes_written,
                write_time: Duration::from_nanos(d.write_ns),
                records_written: d.records_written,
                values_appended: d.values_appended,
                reappended: d.reappended,
                ghosts: d.ghosts,
                value_bytes_in: d.value_bytes_in,
                value_bytes_stored: d.value_bytes_stored,
                queued_segments: d.queued_segments,
                buffer_bytes: d.buffer_bytes,
                refused_writes: d.refused,
                corrupt_records: d.corrupt,
                reclaimed_segments: d.reclaimed_segments,
                failure: d.failed,
                io_backend: d.io_backend,
                direct_writes: d.direct_writes,
                write_policy: l.policy(),
                recovery: RecoveryStats {
                    segments: d.recovery.segments,
                    entries: d.recovery.entries,
                    records: d.recovery.records,
                    sealed_tails: d.recovery.sealed,
                    torn_tails: d.recovery.torn_tails,
                    quarantined_files: d.recovery.quarantined,
                    lost_segments: d.recovery.lost_segments,
                    unproven_records: d.recovery.unproven_records,
                    void_records: d.recovery.void_records,
                    reclaimed_before: d.recovery.reclaimed_before,
                    foreign_files: d.recovery.foreign,
                    open_time: d.recovery.elapsed,
                    checkpoint: self.inner.checkpoint.clone(),
                    refilled: self.inner.refill.refilled.load(Ordering::Relaxed),
                    refill_done: self.inner.refill.done.load(Ordering::Acquire),
                },
            }
        });
        let l2_hits = disk.as_ref().map_or(0, |d| d.hits);
        Stats {
            hits: s.hits + l2_hits,
            misses: s.misses.saturating_sub(l2_hits),
            inserts: s.inserts,
            updates: s.updates,
            removes: s.removes,
            expirations: s.expirations,
            loads: self.inner.loads.load(Ordering::Relaxed),
            memory: TierStats {
                hits: s.hits,
                entries: s.counts.resident as u64,
                weight: s.counts.resident_weight,
                capacity: s.capacity,
                evictions: s.evictions,
            },
            hot_entries: s.counts.hot as u64,
            ghost_entries: s.counts.ghosts as u64,
            shards: self.inner.memory.shard_count(),
            disk,
        }
    }

    /// Checks every internal invariant of every shard; panics on a violation.
    /// Compiled for tests and fuzzing (feature `validate`) only.
    #[cfg(any(test, fuzzing, feature = "validate"))]
    pub fn validate(&self) {
        self.inner.memory.validate();
    }
}

/// The error for an insert the memory tier refused.
fn refused(r: Refusal) -> Error {
    match r {
        Refusal::Closed => Error::Closed,
        Refusal::TooLarge { len, max } => Error::TooLargeForSegment { len, max },
    }
}

/// The warm refill: brings back into memory, from disk, what memory held at the
/// last close, in the checkpoint's order (hot entries first, ghosts last).
/// Each entry goes through the ordinary promotion path, so a key written or
/// removed meanwhile is never overwritten with an older value. Stops when told.
fn refill_memory(
    memory: &MemoryTier,
    weigher: &Weigher,
    max_weight: u64,
    progress: &Refill,
    entries: &[MemoryEntry],
) {
    let Some(lower) = memory.lower() else {
        return;
    };
    for e in entries {
        if progress.stop.load(Ordering::Acquire) {
            return;
        }
        if e.ghost {
            // After the residents: ghosts are bounded by what the shard holds.
            memory.add_ghost(e.hash, e.weight);
            continue;
        }
        let now = memory.clock().now();
        if let Some((key, value, deadline, token)) = lower.read_by_hash(e.hash, now) {
            let weight = weigher.weigh(&key, &value);
            if weight <= max_weight
                && memory.promote(e.hash, &key, value, weight as u32, deadline, token)
            {
                progress.refilled.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
