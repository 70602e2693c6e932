//! L1, the memory tier: a power-of-two array of lock-striped shards.
//!
//! Each shard is a [`parking_lot::RwLock`] over a [`Shard`] (plain data and the
//! CLOCK-Pro algorithm, no threads inside). The shard is picked from the middle
//! bits of the key hash, which the shard's own table does not use.
//!
//! * A hit takes the read lock and only sets the entry's atomic reference bit.
//! * Inserts and removes take the write lock. Whatever leaves the shard (evicted
//!   entries, overwritten values) is collected under the lock and dropped, or
//!   handed to the demotion hook, after the lock is released: no destructor, no
//!   callback and no I/O runs under a shard lock.

mod shard;

pub(crate) use shard::DIRTY;
use shard::{Departed, Lookup, Shard};

use crate::key::Probe;
use crate::policy::Counts;
use crate::sync::{Ordering, RwLock};
use crate::time::Clock;
use bytes::Bytes;
use crossbeam_utils::CachePadded;

/// The hook an evicted entry is handed to, after the shard lock is released.
///
/// This is the seam for the disk tier: L1 eviction offers the entry to L2. The
/// memory-only cache has no hook, so evicted entries are simply dropped.
pub(crate) trait Demote: Send + Sync {
    /// `dirty`: the entry's bytes are not in the lower tier yet.
    /// `proved_reuse`: the entry was hot or referenced since it last moved.
    fn demote(&self, key: &[u8], value: Bytes, deadline: u64, dirty: bool, proved_reuse: bool);
}

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

/// The memory tier.
pub(crate) struct MemoryTier {
    cells: Box<[CachePadded<Cell>]>,
    mask: usize,
    clock: Clock,
    demote: Option<Box<dyn Demote>>,
}

impl MemoryTier {
    /// `shards` must be a power of two no larger than `capacity`.
    pub(crate) fn new(
        capacity: u64,
        shards: usize,
        clock: Clock,
        demote: Option<Box<dyn Demote>>,
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
            demote,
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
    pub(crate) fn insert(&self, hash: u64, key: &[u8], value: Bytes, weight: u32, deadline: u64) {
        let cell = self.cell(hash);
        let mut departed = Departed::new();
        let key = Probe::new(key).into_owned();
        let old = cell
            .write()
            .insert(hash, key, value, weight, deadline, &mut departed);
        drop(old);
        if !departed.is_empty() {
            self.depart(&mut departed);
        }
    }

    /// Hands entries that left a shard to the demotion hook, or drops them. Lock released.
    #[cold]
    fn depart(&self, departed: &mut Departed) {
        let Some(hook) = &self.demote else {
            return;
        };
        let now = self.clock.now();
        for e in departed.drain(..) {
            let deadline = e.aux;
            if deadline == 0 || deadline > now {
                let dirty = e.tag & DIRTY != 0;
                let p = e.payload;
                hook.demote(p.key.as_slice(), p.value, deadline, dirty, e.proved_reuse);
            }
        }
    }

    pub(crate) fn remove(&self, hash: u64, key: &[u8]) -> Option<Bytes> {
        let cell = self.cell(hash);
        let gone = cell.write().remove(hash, &Probe::new(key))?;
        if gone.is_expired(|| self.clock.now()) {
            return None;
        }
        Some(gone.payload.value)
    }

    /// Marks `key` clean if `value` is still its current value (used by a lower tier).
    #[allow(dead_code)] // The seam the disk tier will call once its write lands.
    pub(crate) fn mark_clean(&self, hash: u64, key: &[u8], value: &Bytes) -> bool {
        self.cell(hash)
            .write()
            .mark_clean(hash, &Probe::new(key), value)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::hash_key;
    use crate::sync::{Arc, Mutex};
    use std::sync::OnceLock;

    /// Keys handed to the hook, each with its dirty bit.
    type Seen = Arc<Mutex<Vec<(Vec<u8>, bool)>>>;

    /// Records what it is handed, and checks that no shard lock is held meanwhile.
    #[derive(Clone, Default)]
    struct Recorder {
        tier: Arc<OnceLock<Arc<MemoryTier>>>,
        seen: Seen,
    }

    impl Demote for Recorder {
        fn demote(&self, key: &[u8], _: Bytes, _: u64, dirty: bool, _: bool) {
            let tier = self.tier.get().expect("tier installed");
            assert!(
                tier.cells.iter().all(|c| c.try_write().is_some()),
                "demotion ran under a shard lock"
            );
            self.seen.lock().push((key.to_vec(), dirty));
        }
    }

    #[test]
    fn evicted_entries_reach_the_hook_after_unlock_with_their_dirty_bit() {
        let hook = Recorder::default();
        let tier = Arc::new(MemoryTier::new(
            8,
            1,
            Clock::system(),
            Some(Box::new(hook.clone())),
        ));
        hook.tier.set(Arc::clone(&tier)).ok().unwrap();
        let value = Bytes::from_static(b"v");
        for k in 0u8..8 {
            tier.insert(hash_key(&[k]), &[k], value.clone(), 1, 0);
        }
        // Key 7 (admitted cold, so the first to go) reached the lower tier: clean.
        assert!(tier.mark_clean(hash_key(&[7]), &[7], &value));
        for k in 8u8..16 {
            tier.insert(hash_key(&[k]), &[k], value.clone(), 1, 0);
        }
        let seen = hook.seen.lock().clone();
        assert!(!seen.is_empty(), "inserting past capacity must evict");
        assert!(seen.iter().any(|(k, _)| k[..] == [7]), "key 7 was evicted");
        for (key, dirty) in &seen {
            assert_eq!(*dirty, key[0] != 7, "dirty bit of key {key:?}");
        }
        assert_eq!(
            seen.len() as u64,
            tier.snapshot().evictions,
            "every eviction is handed over"
        );
    }
}
