//! The disk tier's index: key hash → where the key's newest record lives.
//!
//! One 24-byte entry per key on disk (asserted in a test), in lock-striped
//! hashbrown tables. The full key is not kept: every read compares the key
//! stored in the record, so two keys that share a hash cost a miss, never a
//! wrong value (the newer one takes the entry).

use crate::sync::{AtomicBool, Ordering, RwLock};
use hashbrown::HashTable;

/// Where a record lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) segment: u32,
    pub(crate) offset: u32,
    pub(crate) len: u32,
}

struct Entry {
    hash: u64,
    loc: Loc,
    /// Set on a hit: reclaim keeps referenced entries (CLOCK, the L2 hand).
    referenced: AtomicBool,
}

const STRIPES: usize = 16;

pub(crate) struct Index {
    stripes: [RwLock<HashTable<Entry>>; STRIPES],
}

impl Index {
    pub(crate) fn new() -> Self {
        Index {
            stripes: std::array::from_fn(|_| RwLock::new(HashTable::new())),
        }
    }

    fn stripe(&self, hash: u64) -> &RwLock<HashTable<Entry>> {
        &self.stripes[(hash >> 40) as usize % STRIPES]
    }

    /// The location of `hash`'s record; marks the entry referenced.
    pub(crate) fn get(&self, hash: u64) -> Option<Loc> {
        let stripe = self.stripe(hash).read();
        let e = stripe.find(hash, |e| e.hash == hash)?;
        if !e.referenced.load(Ordering::Relaxed) {
            e.referenced.store(true, Ordering::Relaxed);
        }
        Some(e.loc)
    }

    /// The location of `hash`'s record, without marking it referenced.
    pub(crate) fn peek(&self, hash: u64) -> Option<Loc> {
        let stripe = self.stripe(hash).read();
        stripe.find(hash, |e| e.hash == hash).map(|e| e.loc)
    }

    /// Points `hash` at `loc`; returns where it pointed before.
    pub(crate) fn insert(&self, hash: u64, loc: Loc) -> Option<Loc> {
        let mut stripe = self.stripe(hash).write();
        match stripe.find_mut(hash, |e| e.hash == hash) {
            Some(e) => Some(std::mem::replace(&mut e.loc, loc)),
            None => {
                stripe.insert_unique(
                    hash,
                    Entry {
                        hash,
                        loc,
                        referenced: AtomicBool::new(false),
                    },
                    |e| e.hash,
                );
                None
            }
        }
    }

    /// Forgets `hash`, whatever it points at; returns where it pointed.
    pub(crate) fn remove(&self, hash: u64) -> Option<Loc> {
        let mut stripe = self.stripe(hash).write();
        let entry = stripe.find_entry(hash, |e| e.hash == hash).ok()?;
        Some(entry.remove().0.loc)
    }

    /// Forgets `hash` only if it still points at `loc` (a newer record may have moved it).
    pub(crate) fn remove_if(&self, hash: u64, loc: Loc) -> bool {
        let mut stripe = self.stripe(hash).write();
        match stripe.find_entry(hash, |e| e.hash == hash && e.loc == loc) {
            Ok(entry) => {
                entry.remove();
                true
            }
            Err(_) => false,
        }
    }

    /// Whether `hash` points at `loc`, and whether it was referenced (the bit is cleared).
    pub(crate) fn take_reference(&self, hash: u64, loc: Loc) -> Option<bool> {
        let stripe = self.stripe(hash).read();
        let e = stripe.find(hash, |e| e.hash == hash && e.loc == loc)?;
        Some(e.referenced.swap(false, Ordering::Relaxed))
    }

    pub(crate) fn len(&self) -> usize {
        self.stripes.iter().map(|s| s.read().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_costs_24_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 24);
    }

    #[test]
    fn insert_get_move_remove() {
        let index = Index::new();
        let a = Loc {
            segment: 1,
            offset: 64,
            len: 100,
        };
        let b = Loc { offset: 164, ..a };
        assert_eq!(index.insert(7, a), None);
        assert_eq!(index.get(7), Some(a));
        assert_eq!(index.take_reference(7, a), Some(true));
        assert_eq!(index.take_reference(7, a), Some(false));
        assert_eq!(index.insert(7, b), Some(a));
        assert!(
            !index.remove_if(7, a),
            "a stale location does not remove the newer one"
        );
        assert_eq!(index.len(), 1);
        assert!(index.remove_if(7, b));
        assert_eq!(index.get(7), None);
        assert_eq!(index.remove(7), None);
    }
}
