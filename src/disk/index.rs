//! The disk tier's index: key hash → where the key's newest record lives.
//!
//! One 24-byte entry per key on disk (asserted in a test), in lock-striped
//! hashbrown tables. The full key is not kept: every read compares the key
//! stored in the record, so two keys that share a hash cost a miss, never a
//! wrong value (the newer one takes the entry).
//!
//! Each entry carries two policy bits for reclaim, L2's clock hand:
//! [`REFERENCED`] (the entry proved reuse since it was written) and
//! [`IN_MEMORY`] (the memory tier holds the key, so a copy on disk is not
//! worth a rewrite). They steer what reclaim keeps; they never decide what a
//! read returns.

use crate::sync::{AtomicU8, AtomicUsize, Ordering, RwLock};
use hashbrown::HashTable;

/// Where a record lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) segment: u32,
    pub(crate) offset: u32,
    pub(crate) len: u32,
}

/// Flag bits 0..1: a saturating use count. Raised by a read from disk (an L2
/// hit) and set when memory lets go of a key that proved reuse there; reclaim
/// re-appends an entry with uses left (if memory does not hold it), one fewer.
pub(crate) const USES: u8 = 3;
/// Entry flag: the memory tier holds the key.
pub(crate) const IN_MEMORY: u8 = 4;

struct Entry {
    hash: u64,
    loc: Loc,
    flags: AtomicU8,
}

const STRIPES: usize = 16;

pub(crate) struct Index {
    stripes: [RwLock<HashTable<Entry>>; STRIPES],
    len: AtomicUsize,
}

impl Index {
    pub(crate) fn new() -> Self {
        Index {
            stripes: std::array::from_fn(|_| RwLock::new(HashTable::new())),
            len: AtomicUsize::new(0),
        }
    }

    fn stripe(&self, hash: u64) -> &RwLock<HashTable<Entry>> {
        &self.stripes[(hash >> 40) as usize % STRIPES]
    }

    /// The location of `hash`'s record and its use count, which the read raises.
    pub(crate) fn get(&self, hash: u64) -> Option<(Loc, u8)> {
        let stripe = self.stripe(hash).read();
        let e = stripe.find(hash, |e| e.hash == hash)?;
        let mut flags = e.flags.load(Ordering::Relaxed);
        if flags & USES != USES {
            flags = e
                .flags
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| {
                    (f & USES != USES).then_some(f + 1)
                })
                .map_or(USES, |f| f + 1);
        }
        Some((e.loc, flags & USES))
    }

    /// The location of `hash`'s record, without marking it referenced.
    pub(crate) fn peek(&self, hash: u64) -> Option<Loc> {
        let stripe = self.stripe(hash).read();
        stripe.find(hash, |e| e.hash == hash).map(|e| e.loc)
    }

    /// Points `hash` at `loc` with `flags`; returns where it pointed before.
    pub(crate) fn insert(&self, hash: u64, loc: Loc, flags: u8) -> Option<Loc> {
        let mut stripe = self.stripe(hash).write();
        match stripe.find_mut(hash, |e| e.hash == hash) {
            Some(e) => {
                *e.flags.get_mut() = flags;
                Some(std::mem::replace(&mut e.loc, loc))
            }
            None => {
                let flags = AtomicU8::new(flags);
                stripe.insert_unique(hash, Entry { hash, loc, flags }, |e| e.hash);
                self.len.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Forgets `hash`, whatever it points at; returns where it pointed.
    pub(crate) fn remove(&self, hash: u64) -> Option<Loc> {
        let mut stripe = self.stripe(hash).write();
        let entry = stripe.find_entry(hash, |e| e.hash == hash).ok()?;
        self.len.fetch_sub(1, Ordering::Relaxed);
        Some(entry.remove().0.loc)
    }

    /// Forgets `hash` only if it still points at `loc` (a newer record may have moved it).
    pub(crate) fn remove_if(&self, hash: u64, loc: Loc) -> bool {
        let mut stripe = self.stripe(hash).write();
        match stripe.find_entry(hash, |e| e.hash == hash && e.loc == loc) {
            Ok(entry) => {
                entry.remove();
                self.len.fetch_sub(1, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    /// Sets `hash`'s flags to `flags` where `mask` has bits (no-op if absent).
    /// Returns whether the entry exists.
    pub(crate) fn set_flags(&self, hash: u64, mask: u8, flags: u8) -> bool {
        let stripe = self.stripe(hash).read();
        let Some(e) = stripe.find(hash, |e| e.hash == hash) else {
            return false;
        };
        let _ = e
            .flags
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some((old & !mask) | (flags & mask))
            });
        true
    }

    /// Clears [`IN_MEMORY`] and raises the use count to at least `uses`.
    /// Returns whether the entry exists.
    pub(crate) fn leave_memory(&self, hash: u64, uses: u8) -> bool {
        let stripe = self.stripe(hash).read();
        let Some(e) = stripe.find(hash, |e| e.hash == hash) else {
            return false;
        };
        let _ = e
            .flags
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some((old & !(IN_MEMORY | USES)) | (old & USES).max(uses & USES))
            });
        true
    }

    /// If `hash` points at `loc`: its flags.
    pub(crate) fn flags_at(&self, hash: u64, loc: Loc) -> Option<u8> {
        let stripe = self.stripe(hash).read();
        let e = stripe.find(hash, |e| e.hash == hash && e.loc == loc)?;
        Some(e.flags.load(Ordering::Relaxed))
    }

    /// Forgets every entry that points into `segment` (a full scan: for a
    /// segment whose summary cannot be read). Returns how many it forgot.
    pub(crate) fn remove_segment(&self, segment: u32) -> usize {
        let mut gone = 0;
        for stripe in &self.stripes {
            let mut stripe = stripe.write();
            let before = stripe.len();
            stripe.retain(|e| e.loc.segment != segment);
            gone += before - stripe.len();
        }
        self.len.fetch_sub(gone, Ordering::Relaxed);
        gone
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
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
        assert_eq!(index.insert(7, a, IN_MEMORY), None);
        assert_eq!(index.get(7), Some((a, 1)));
        assert_eq!(index.flags_at(7, a), Some(IN_MEMORY | 1));
        for _ in 0..5 {
            index.get(7);
        }
        assert_eq!(index.flags_at(7, a), Some(IN_MEMORY | USES), "saturates");
        assert!(index.set_flags(7, IN_MEMORY | USES, 2));
        assert_eq!(index.flags_at(7, a), Some(2));
        assert!(!index.set_flags(8, IN_MEMORY, 0), "absent");
        assert_eq!(index.insert(7, b, 0), Some(a));
        assert_eq!(index.flags_at(7, a), None, "moved");
        assert_eq!(index.flags_at(7, b), Some(0), "a new record starts over");
        assert!(
            !index.remove_if(7, a),
            "a stale location does not remove the newer one"
        );
        assert_eq!(index.len(), 1);
        assert!(index.remove_if(7, b));
        assert_eq!(index.len(), 0);
        for h in 0..100 {
            index.insert(
                h,
                Loc {
                    segment: 1 + (h % 2) as u32,
                    ..a
                },
                0,
            );
        }
        assert_eq!(index.remove_segment(2), 50);
        assert_eq!(index.len(), 50);
        assert!(index.peek(1).is_none() && index.peek(2).is_some());
        assert!(index.get(7).is_none());
        assert_eq!(index.remove(7), None);
    }
}
