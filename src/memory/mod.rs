//! L1, the memory tier: a power-of-two array of lock-striped shards. A plain
//! tier: it knows nothing of the disk or its format; what happens between
//! the tiers is `crate::tiers`.
//!
//! Each shard is a [`parking_lot::RwLock`] over a [`Shard`] (plain data and the
//! CLOCK-Pro algorithm, no threads inside). The shard is picked from the middle
//! bits of the key hash, which the shard's own table does not use.
//!
//! * A hit takes the read lock and only sets the entry's atomic reference bit.
//! * Inserts and removes take the write lock ([`MemoryTier::write`]). Whatever
//!   leaves the shard (evicted entries, overwritten values) is collected under
//!   the lock and dropped, or handed to a lower tier, after it is released.

mod counters;
mod shard;

pub(crate) use shard::{Admit, DIRTY, Evictions, Held, Lookup, SLIDE, Shard};

use crate::key::{KeyBuf, Probe};
use crate::policy::Counts;
use crate::sync::{RwLock, ShardLockNote};
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

/// A shard under its exclusive lock (counted for the lock rule's check).
pub(crate) struct ShardWrite<'a> {
    guard: parking_lot::RwLockWriteGuard<'a, Shard>,
    _note: ShardLockNote,
}

impl std::ops::Deref for ShardWrite<'_> {
    type Target = Shard;
    fn deref(&self) -> &Shard {
        &self.guard
    }
}

impl std::ops::DerefMut for ShardWrite<'_> {
    fn deref_mut(&mut self) -> &mut Shard {
        &mut self.guard
    }
}

/// A shard under its shared lock.
pub(crate) struct ShardRead<'a> {
    guard: parking_lot::RwLockReadGuard<'a, Shard>,
    _note: ShardLockNote,
}

impl std::ops::Deref for ShardRead<'_> {
    type Target = Shard;
    fn deref(&self) -> &Shard {
        &self.guard
    }
}

/// The memory tier.
pub(crate) struct MemoryTier {
    cells: Box<[CachePadded<Cell>]>,
    mask: usize,
    clock: Clock,
    /// The time to idle of sliding entries, in nanoseconds (0: none).
    idle: u64,
    /// Hits and misses of `get`.
    lookups: counters::Lookups,
}

impl MemoryTier {
    /// `shards` must be a power of two no larger than `capacity`.
    pub(crate) fn new(capacity: u64, shards: usize, clock: Clock) -> Self {
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
            idle: 0,
            lookups: Default::default(),
        }
    }

    /// Sliding entries' time to idle (ns): a hit moves their deadline.
    pub(crate) fn set_idle(&mut self, idle: u64) {
        self.idle = idle;
    }

    /// Sliding entries' time to idle (ns; 0: none).
    pub(crate) fn idle(&self) -> u64 {
        self.idle
    }

    #[inline]
    fn cell(&self, hash: u64) -> &Cell {
        &self.cells[(hash >> 32) as usize & self.mask]
    }

    /// `hash`'s shard under its shared lock.
    #[inline]
    pub(crate) fn read(&self, hash: u64) -> ShardRead<'_> {
        let _note = ShardLockNote::new();
        ShardRead {
            guard: self.cell(hash).read(),
            _note,
        }
    }

    /// `hash`'s shard under its exclusive lock.
    #[inline]
    pub(crate) fn write(&self, hash: u64) -> ShardWrite<'_> {
        let _note = ShardLockNote::new();
        ShardWrite {
            guard: self.cell(hash).write(),
            _note,
        }
    }

    /// Shard `i` under its exclusive lock.
    pub(crate) fn write_at(&self, i: usize) -> ShardWrite<'_> {
        let _note = ShardLockNote::new();
        ShardWrite {
            guard: self.cells[i].write(),
            _note,
        }
    }

    /// Shard `i` under its shared lock.
    pub(crate) fn read_at(&self, i: usize) -> ShardRead<'_> {
        let _note = ShardLockNote::new();
        ShardRead {
            guard: self.cells[i].read(),
            _note,
        }
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

    pub(crate) fn shard_count(&self) -> usize {
        self.cells.len()
    }

    /// The live value of `key`; a hit marks it referenced. An expired entry
    /// found is left for the caller to remove (under the write lock).
    #[inline]
    pub(crate) fn get(&self, hash: u64, key: &[u8]) -> Lookup {
        let found = self
            .read(hash)
            .get(hash, &Probe::new(key), || self.clock.now(), self.idle);
        match found {
            Lookup::Hit(_) => self.lookups.hit(),
            _ => self.lookups.miss(),
        }
        found
    }

    /// Like [`get`](Self::get) but not counted and not an access.
    pub(crate) fn peek(&self, hash: u64, key: &[u8]) -> Option<Bytes> {
        self.read(hash)
            .peek(hash, &Probe::new(key), || self.clock.now())
    }

    /// The time `key`'s memory entry has left: `None` if memory holds no
    /// live entry of it, `Some(None)` if it does not expire.
    pub(crate) fn time_left(&self, hash: u64, key: &[u8]) -> Option<Option<std::time::Duration>> {
        let now = self.clock.now();
        let deadline = self
            .read(hash)
            .deadline_of(hash, &Probe::new(key), || now)?;
        Some((deadline != 0).then(|| std::time::Duration::from_nanos(deadline.saturating_sub(now))))
    }

    pub(crate) fn contains(&self, hash: u64, key: &[u8]) -> bool {
        self.read(hash)
            .contains(hash, &Probe::new(key), || self.clock.now())
    }

    /// The entries of shard `i` live at `now` (`None`: the clock's now; 0:
    /// expired ones too): hashes, keys and values.
    pub(crate) fn entries_at(
        &self,
        i: usize,
        now: Option<u64>,
        out: &mut Vec<(u64, KeyBuf, Bytes)>,
    ) {
        let now = now.unwrap_or_else(|| self.clock.now());
        self.read_at(i).entries(now, out);
    }

    /// What every shard holds, hot entries first, then cold ones, then ghosts.
    pub(crate) fn held(&self) -> Vec<Held> {
        let now = self.clock.now();
        let mut out = Vec::new();
        for i in 0..self.cells.len() {
            self.read_at(i).held(now, &mut out);
        }
        out.sort_by_key(|e| (e.ghost, !e.hot));
        out
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        (s.hits, s.misses) = self.lookups.sum();
        for cell in self.cells.iter() {
            let shard = cell.read();
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
