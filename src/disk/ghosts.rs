//! The disk tier's ghost table: fingerprints of keys that left both tiers.
//!
//! A key lands here when reclaim drops it unreferenced, or when memory evicts
//! it and the write policy does not write it. If the key is inserted again
//! while its fingerprint is remembered, it proved reuse at a distance longer
//! than memory alone covers: memory admits it hot, and `Demote` writes it when
//! memory evicts it. The table remembers about as many keys as the disk tier
//! holds when full (its capacity over the mean record length seen), oldest
//! first out, at about 17 bytes a fingerprint: 8 in a ring, 9 in a hash table.

use crate::sync::{AtomicU64, Mutex, Ordering};
use hashbrown::HashTable;
use std::collections::VecDeque;

const STRIPES: usize = 16;

struct Stripe {
    /// Fingerprints by age; may hold some already taken (skipped on the way out).
    order: VecDeque<u64>,
    live: HashTable<u64>,
}

pub(crate) struct Ghosts {
    stripes: [Mutex<Stripe>; STRIPES],
    /// The disk tier's capacity in bytes.
    capacity: u64,
    /// Records seen (appended or offered) and their bytes: the mean record length.
    seen: AtomicU64,
    seen_bytes: AtomicU64,
    /// Entries the memory tier above holds (as it last said).
    memory_entries: AtomicU64,
}

impl Ghosts {
    /// A table for a disk tier of `capacity` bytes.
    pub(crate) fn new(capacity: u64) -> Self {
        Ghosts {
            stripes: std::array::from_fn(|_| {
                Mutex::new(Stripe {
                    order: VecDeque::new(),
                    live: HashTable::new(),
                })
            }),
            capacity,
            seen: AtomicU64::new(0),
            seen_bytes: AtomicU64::new(0),
            memory_entries: AtomicU64::new(0),
        }
    }

    /// The memory tier above holds about `entries` entries.
    pub(crate) fn memory_holds(&self, entries: u64) {
        self.memory_entries.store(entries, Ordering::Relaxed);
    }

    /// Counts a record of `len` bytes towards the mean record length.
    pub(crate) fn observe(&self, len: usize) {
        self.observe_many(1, len as u64);
    }

    /// Counts `records` records of `bytes` bytes in all.
    pub(crate) fn observe_many(&self, records: u64, bytes: u64) {
        self.seen.fetch_add(records, Ordering::Relaxed);
        self.seen_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Fingerprints one stripe keeps: its share of the records the tier holds when full.
    fn per_stripe(&self) -> usize {
        let seen = self.seen.load(Ordering::Relaxed).max(1);
        let bytes = self.seen_bytes.load(Ordering::Relaxed).max(1);
        let disk = u128::from(self.capacity) * u128::from(seen) / u128::from(bytes);
        let entries = disk + u128::from(self.memory_entries.load(Ordering::Relaxed));
        (entries as usize).div_ceil(STRIPES).max(1)
    }

    fn stripe(&self, hash: u64) -> &Mutex<Stripe> {
        &self.stripes[(hash >> 40) as usize % STRIPES]
    }

    /// Remembers `hash`.
    pub(crate) fn insert(&self, hash: u64) {
        let bound = self.per_stripe();
        let mut s = self.stripe(hash).lock();
        if s.live.find(hash, |&h| h == hash).is_some() {
            return;
        }
        s.live.insert_unique(hash, hash, |&h| h);
        s.order.push_back(hash);
        while s.live.len() > bound {
            let Some(old) = s.order.pop_front() else {
                break;
            };
            if let Ok(e) = s.live.find_entry(old, |&h| h == old) {
                e.remove();
            }
        }
        // Taken fingerprints linger in `order`; compact when they dominate.
        if s.order.len() > 2 * s.live.len() + 64 {
            let Stripe { order, live } = &mut *s;
            order.retain(|&h| live.find(h, |&x| x == h).is_some());
        }
    }

    /// Whether `hash` was remembered; forgets it.
    pub(crate) fn take(&self, hash: u64) -> bool {
        let mut s = self.stripe(hash).lock();
        match s.live.find_entry(hash, |&h| h == hash) {
            Ok(e) => {
                e.remove();
                true
            }
            Err(_) => false,
        }
    }

    /// Every fingerprint remembered, oldest first within each stripe.
    pub(crate) fn list(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for s in &self.stripes {
            let s = s.lock();
            out.extend(
                s.order
                    .iter()
                    .copied()
                    .filter(|&h| s.live.find(h, |&x| x == h).is_some()),
            );
        }
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.stripes.iter().map(|s| s.lock().live.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_forgets_and_stays_bounded() {
        // Records of 100 bytes, 64 fit: 4 fingerprints a stripe.
        let g = Ghosts::new(6400);
        g.observe(100);
        g.insert(1 << 40);
        g.insert(1 << 40);
        assert_eq!(g.len(), 1);
        assert!(g.take(1 << 40));
        assert!(!g.take(1 << 40), "taken once");
        // One stripe (same bits 40..): the oldest go first.
        for i in 0..10u64 {
            g.insert(i);
        }
        assert_eq!(g.len(), 4);
        assert!(!g.take(0) && !g.take(5));
        assert!(g.take(6) && g.take(9));
        for i in 0..1000u64 {
            g.insert(i << 40);
            g.take(i << 40);
        }
        assert_eq!(g.len(), 2);
        let s = g.stripe(0).lock();
        assert!(
            s.order.len() <= 2 * s.live.len() + 65,
            "taken ones are compacted"
        );
    }
}
