//! L1, the memory tier: a power-of-two array of lock-striped shards.
//!
//! Each shard is a [`parking_lot::RwLock`] over a [`Shard`] (plain data and the
//! CLOCK-Pro algorithm, no threads inside). The shard is picked from the middle
//! bits of the key hash, which the shard's own table does not use.
//!
//! * A hit takes the read lock and only sets the entry's atomic reference bit.
//! * Inserts and removes take the write lock. Whatever leaves the shard (evicted
//!   entries, overwritten values) is collected under the lock and dropped after
//!   it is released: no destructor, no callback and no I/O runs under a shard lock.
//! * With a disk tier below, the appends for a key (its value, a tombstone, a
//!   demoted entry) are made under the key's shard lock. They only copy into the
//!   log's buffer; compression and any wait happen before the lock is taken
//!   (see `disk::tiered`).

mod shard;

use shard::{Admit, Departed, Lookup, Shard};
pub(crate) use shard::{DIRTY, Unwritten};

use crate::disk::{Tiered, Token};
use crate::format::checkpoint::MemoryEntry;
use crate::key::Probe;
use crate::policy::Counts;
use crate::sync::{Arc, Ordering, RwLock};
use crate::time::Clock;
use bytes::Bytes;
use crossbeam_utils::CachePadded;

/// A shard behind its lock, padded to its own cache lines.
type Cell = RwLock<Shard>;

/// A snapshot of the memory tier's counters and occupancy.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) inserts: u64,
    pub(crate) updates: u64,
    pub(crate) removes: u64,
    pub(crate) evictions: u64,
    pub(crate) expirations: u64,
    pub(crate) counts: Counts,
    pub(crate) capacity: u64,
}

/// Why the memory tier refused an insert (nothing changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The cache is closed.
    Closed,
    /// The disk tier must persist it and its record would not fit a segment.
    TooLarge { len: usize, max: usize },
}

/// The memory tier.
pub(crate) struct MemoryTier {
    cells: Box<[CachePadded<Cell>]>,
    mask: usize,
    clock: Clock,
    /// The disk tier below, if any (see `disk::tiered` for the ordering rule).
    lower: Option<Arc<Tiered>>,
}

impl MemoryTier {
    /// `shards` must be a power of two no larger than `capacity`.
    pub(crate) fn new(
        capacity: u64,
        shards: usize,
        clock: Clock,
        lower: Option<Arc<Tiered>>,
    ) -> Self {
        debug_assert!(shards.is_power_of_two() && capacity >= shards as u64);
        let per = capacity / shards as u64;
        let extra = capacity % shards as u64;
        let cells = (0..shards as u64)
            .map(|i| CachePadded::new(RwLock::new(Shard::new(per + u64::from(i < extra)))))
            .collect();
        MemoryTier {
            cells,
            mask: shards - 1,
            clock,
            lower,
        }
    }

    #[inline]
    fn cell(&self, hash: u64) -> &Cell {
        &self.cells[(hash >> 32) as usize & self.mask]
    }

    /// The largest weight one shard accepts.
    pub(crate) fn max_weight(&self) -> u64 {
        self.cells
            .iter()
            .map(|c| c.read().capacity())
            .min()
            .unwrap_or(0)
            .min(u64::from(u32::MAX))
    }

    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    #[inline]
    pub(crate) fn get(&self, hash: u64, key: &[u8]) -> Option<Bytes> {
        let cell = self.cell(hash);
        let key = Probe::new(key);
        let found = cell.read().get(hash, &key, || self.clock.now());
        match found {
            Lookup::Hit(v) => Some(v),
            Lookup::Miss => None,
            Lookup::Expired => {
                let gone = cell.write().remove_expired(hash, &key, || self.clock.now());
                drop(gone);
                None
            }
        }
    }

    /// Like [`get`](Self::get) but not counted and not an access.
    pub(crate) fn peek(&self, hash: u64, key: &[u8]) -> Option<Bytes> {
        self.cell(hash)
            .read()
            .peek(hash, &Probe::new(key), || self.clock.now())
    }

    pub(crate) fn contains(&self, hash: u64, key: &[u8]) -> bool {
        self.cell(hash)
            .read()
            .contains(hash, &Probe::new(key), || self.clock.now())
    }

    /// Inserts or overwrites. `weight` must not exceed [`max_weight`](Self::max_weight).
    pub(crate) fn insert(
        &self,
        hash: u64,
        key: &[u8],
        value: Bytes,
        weight: u32,
        deadline: u64,
    ) -> Result<(), Refusal> {
        let cell = self.cell(hash);
        let mut departed = Departed::new();
        let owned = Probe::new(key).into_owned();
        let admit = |hot| Admit {
            weight,
            deadline,
            tag: DIRTY,
            hot,
        };
        let Some(lower) = &self.lower else {
            let mut shard = cell.write();
            if shard.is_closed() {
                return Err(Refusal::Closed);
            }
            let old = shard.insert(hash, owned, value, admit(false), &mut departed);
            drop(shard);
            drop(old);
            return Ok(());
        };
        // Anything slow (compression, waiting for the flusher) before the lock.
        let prepared = lower.prepare_insert(key, &value, deadline)?;
        let hot = lower.recall(key);
        let old = {
            let mut shard = cell.write();
            if shard.is_closed() {
                return Err(Refusal::Closed);
            }
            let old = shard.insert(hash, owned, value, admit(hot), &mut departed);
            match &prepared {
                Some(p) if lower.commit(key, p) => shard.set_clean(hash, &Probe::new(key)),
                _ => lower.invalidate(key),
            }
            self.demote(lower, &departed, shard.counts().resident);
            old
        };
        drop(old);
        Ok(())
    }

    /// Under the shard lock: offers what left memory to the disk tier.
    /// `resident`: the entries the shard holds now.
    fn demote(&self, lower: &Tiered, departed: &Departed, resident: usize) {
        if departed.is_empty() {
            return;
        }
        // A full shard: memory holds about this many entries.
        lower.memory_holds((resident * self.cells.len()) as u64);
        let now = self.clock.now();
        for e in departed {
            let deadline = e.aux;
            if deadline == 0 || deadline > now {
                let dirty = e.tag & DIRTY != 0;
                let p = &e.payload;
                lower.evicted(p.key.as_slice(), &p.value, deadline, dirty, e.proved_reuse);
            }
        }
    }

    /// Promotes a value read from the disk tier, unless memory holds the key
    /// already or the disk no longer holds what was read (a concurrent remove or
    /// overwrite won). Enters as clean: it is on disk.
    pub(crate) fn promote(
        &self,
        hash: u64,
        key: &[u8],
        value: Bytes,
        weight: u32,
        deadline: u64,
        token: Token,
    ) -> bool {
        let Some(lower) = &self.lower else {
            return false;
        };
        let cell = self.cell(hash);
        let mut departed = Departed::new();
        let probe = Probe::new(key);
        let mut shard = cell.write();
        if shard.is_closed() || shard.holds(hash, &probe) || !lower.still_current(key, token) {
            return false;
        }
        let clean = Admit {
            weight,
            deadline,
            tag: 0,
            hot: false,
        };
        shard.insert(hash, probe.into_owned(), value, clean, &mut departed);
        lower.promoted(key);
        self.demote(lower, &departed, shard.counts().resident);
        drop(shard);
        true
    }

    pub(crate) fn remove(&self, hash: u64, key: &[u8]) -> Option<Bytes> {
        let cell = self.cell(hash);
        let gone = {
            let mut shard = cell.write();
            if shard.is_closed() {
                return None;
            }
            let gone = shard.remove(hash, &Probe::new(key));
            if let Some(lower) = &self.lower {
                lower.invalidate(key);
            }
            gone
        }?;
        if gone.is_expired(|| self.clock.now()) {
            return None;
        }
        Some(gone.payload.value)
    }

    /// Writes the entries an insert could not write (the disk tier refused
    /// them under backpressure) now, waiting for room, outside every lock: each is written only if, under its
    /// shard lock, memory still holds the same bytes, dirty. Returns how many
    /// are still unwritten.
    pub(crate) fn write_refused(&self) -> u64 {
        let Some(lower) = &self.lower else {
            return 0;
        };
        let mut unwritten = 0;
        for cell in self.cells.iter() {
            let now = self.clock.now();
            let dirty: Vec<Unwritten> = cell
                .read()
                .unwritten(now, |_| true)
                .into_iter()
                .filter(|u| u.dirty)
                .collect();
            for u in dirty {
                let key = u.key.as_slice();
                let Ok(p) = lower.prepare_dirty(&u.value, u.deadline) else {
                    unwritten += 1;
                    continue;
                };
                let hash = crate::key::hash_key(key);
                let mut shard = cell.write();
                let probe = Probe::new(key);
                if !shard.is_closed() && shard.still_dirty(hash, &probe, &u.value) {
                    if lower.commit(key, &p) {
                        shard.set_clean(hash, &probe);
                    } else {
                        unwritten += 1;
                    }
                }
            }
        }
        unwritten
    }

    /// Closes every shard (each, under its lock: no operation changes it
    /// afterwards) and returns the live entries whose bytes the disk tier
    /// does not hold, for the close to write.
    pub(crate) fn close(&self) -> Vec<Unwritten> {
        let mut out = Vec::new();
        for cell in self.cells.iter() {
            let mut shard = cell.write();
            shard.close();
            if let Some(lower) = &self.lower {
                out.extend(shard.unwritten(self.clock.now(), |k| lower.holds(k)));
            }
        }
        out
    }

    /// What memory holds, for a checkpoint: hot entries, cold ones, ghosts.
    pub(crate) fn checkpoint(&self) -> Vec<MemoryEntry> {
        let now = self.clock.now();
        let mut out = Vec::new();
        for cell in self.cells.iter() {
            cell.read().checkpoint(now, &mut out);
        }
        out.sort_by_key(|e| (e.ghost, !e.hot));
        out
    }

    /// Restores a ghost from a checkpoint.
    pub(crate) fn add_ghost(&self, hash: u64, weight: u32) {
        let mut shard = self.cell(hash).write();
        if !shard.is_closed() {
            shard.add_ghost(hash, weight);
        }
    }

    pub(crate) fn lower(&self) -> Option<&Tiered> {
        self.lower.as_deref()
    }

    pub(crate) fn shard_count(&self) -> usize {
        self.cells.len()
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        for cell in self.cells.iter() {
            let shard = cell.read();
            s.hits += shard.hits.load(Ordering::Relaxed);
            s.misses += shard.misses.load(Ordering::Relaxed);
            let c = shard.writes();
            s.inserts += c.inserts;
            s.updates += c.updates;
            s.removes += c.removes;
            s.evictions += c.evictions;
            s.expirations += c.expirations;
            let n = shard.counts();
            s.capacity += shard.capacity();
            s.counts.resident += n.resident;
            s.counts.resident_weight += n.resident_weight;
            s.counts.hot += n.hot;
            s.counts.hot_weight += n.hot_weight;
            s.counts.ghosts += n.ghosts;
        }
        s
    }

    #[cfg(any(test, fuzzing, feature = "validate"))]
    pub(crate) fn validate(&self) {
        for cell in self.cells.iter() {
            cell.read().validate();
        }
    }
}
