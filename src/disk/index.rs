//! The disk tier's index: key hash → where the key's newest record lives.
//!
//! One 16-byte entry per key on disk (asserted in a test), in lock-striped
//! hashbrown tables: 32 bits of the key's hash (4 more chose the stripe), the
//! record's segment, offset and length, and policy flags. Neither the full key
//! nor the full hash is kept: every read compares the key stored in the
//! record, so two keys that share those 36 bits cost a miss, never a wrong
//! value (the newer one takes the entry). At 2,000,000 keys about 30 such
//! pairs are expected.
//!
//! The flags steer reclaim, L2's clock hand: a use count ([`USES`]) and
//! [`IN_MEMORY`] (the memory tier holds the key, so a copy on disk is not
//! worth a rewrite). They never decide what a read returns.

use crate::format::record::RECORD_HEADER_LEN;
use crate::key::{MAX_KEY_LEN, MAX_VALUE_LEN};
use crate::sync::{AtomicU32, AtomicUsize, Ordering, RwLock};
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

/// Low bits of `len_flags`: the record's length; the flags sit above.
const LEN_BITS: u32 = 28;
const LEN_MASK: u32 = (1 << LEN_BITS) - 1;
const _: () = assert!(RECORD_HEADER_LEN + MAX_KEY_LEN + MAX_VALUE_LEN <= LEN_MASK as usize);

struct Entry {
    /// Bits 0..32 of the key hash.
    tag: u32,
    segment: u32,
    offset: u32,
    /// The record's length (bits 0..28) and the flags (bits 28..32).
    len_flags: AtomicU32,
}

impl Entry {
    fn loc(&self) -> Loc {
        Loc {
            segment: self.segment,
            offset: self.offset,
            len: self.len_flags.load(Ordering::Relaxed) & LEN_MASK,
        }
    }

    fn flags(&self) -> u8 {
        (self.len_flags.load(Ordering::Relaxed) >> LEN_BITS) as u8
    }

    /// Changes the flag bits only (the length never changes in place).
    fn update_flags(&self, f: impl Fn(u8) -> u8) {
        let _ = self
            .len_flags
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some((v & LEN_MASK) | u32::from(f((v >> LEN_BITS) as u8)) << LEN_BITS)
            });
    }
}

fn tag_of(hash: u64) -> u32 {
    hash as u32
}

/// What hashbrown hashes an entry by: its tag, spread over 64 bits (hashbrown
/// takes its control byte from the top bits).
fn table_hash(tag: u32) -> u64 {
    u64::from(tag).wrapping_mul(0x9e37_79b9_7f4a_7c15)
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
        let tag = tag_of(hash);
        let stripe = self.stripe(hash).read();
        let e = stripe.find(table_hash(tag), |e| e.tag == tag)?;
        if e.flags() & USES != USES {
            e.update_flags(|f| if f & USES == USES { f } else { f + 1 });
        }
        Some((e.loc(), e.flags() & USES))
    }

    /// The location of `hash`'s record, without counting a use.
    pub(crate) fn peek(&self, hash: u64) -> Option<Loc> {
        let tag = tag_of(hash);
        let stripe = self.stripe(hash).read();
        stripe
            .find(table_hash(tag), |e| e.tag == tag)
            .map(Entry::loc)
    }

    /// Points `hash` at `loc` with `flags`; returns where it pointed before.
    pub(crate) fn insert(&self, hash: u64, loc: Loc, flags: u8) -> Option<Loc> {
        debug_assert!(loc.len <= LEN_MASK);
        let tag = tag_of(hash);
        let len_flags = loc.len | u32::from(flags) << LEN_BITS;
        let mut stripe = self.stripe(hash).write();
        match stripe.find_mut(table_hash(tag), |e| e.tag == tag) {
            Some(e) => {
                let old = e.loc();
                e.segment = loc.segment;
                e.offset = loc.offset;
                *e.len_flags.get_mut() = len_flags;
                Some(old)
            }
            None => {
                let entry = Entry {
                    tag,
                    segment: loc.segment,
                    offset: loc.offset,
                    len_flags: AtomicU32::new(len_flags),
                };
                stripe.insert_unique(table_hash(tag), entry, |e| table_hash(e.tag));
                self.len.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Forgets `hash`, whatever it points at; returns where it pointed.
    pub(crate) fn remove(&self, hash: u64) -> Option<Loc> {
        let tag = tag_of(hash);
        let mut stripe = self.stripe(hash).write();
        let entry = stripe.find_entry(table_hash(tag), |e| e.tag == tag).ok()?;
        self.len.fetch_sub(1, Ordering::Relaxed);
        Some(entry.remove().0.loc())
    }

    /// Forgets `hash` only if it still points at `loc` (a newer record may have moved it).
    pub(crate) fn remove_if(&self, hash: u64, loc: Loc) -> bool {
        let tag = tag_of(hash);
        let mut stripe = self.stripe(hash).write();
        match stripe.find_entry(table_hash(tag), |e| e.tag == tag && e.loc() == loc) {
            Ok(entry) => {
                entry.remove();
                self.len.fetch_sub(1, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    fn with_entry(&self, hash: u64, f: impl FnOnce(&Entry)) -> bool {
        let tag = tag_of(hash);
        let stripe = self.stripe(hash).read();
        match stripe.find(table_hash(tag), |e| e.tag == tag) {
            Some(e) => {
                f(e);
                true
            }
            None => false,
        }
    }

    /// Sets `hash`'s flags to `flags` where `mask` has bits (no-op if absent).
    /// Returns whether the entry exists.
    pub(crate) fn set_flags(&self, hash: u64, mask: u8, flags: u8) -> bool {
        self.with_entry(hash, |e| {
            e.update_flags(|old| (old & !mask) | (flags & mask));
        })
    }

    /// Clears [`IN_MEMORY`] and raises the use count to at least `uses`.
    /// Returns whether the entry exists.
    pub(crate) fn leave_memory(&self, hash: u64, uses: u8) -> bool {
        self.with_entry(hash, |e| {
            e.update_flags(|old| (old & !(IN_MEMORY | USES)) | (old & USES).max(uses & USES));
        })
    }

    /// If `hash` points at `loc`: its flags.
    pub(crate) fn flags_at(&self, hash: u64, loc: Loc) -> Option<u8> {
        let tag = tag_of(hash);
        let stripe = self.stripe(hash).read();
        let e = stripe.find(table_hash(tag), |e| e.tag == tag && e.loc() == loc)?;
        Some(e.flags())
    }

    /// Forgets every entry that points into `segment` (a full scan: for a
    /// segment whose summary cannot be read). Returns how many it forgot.
    pub(crate) fn remove_segment(&self, segment: u32) -> usize {
        let mut gone = 0;
        for stripe in &self.stripes {
            let mut stripe = stripe.write();
            let before = stripe.len();
            stripe.retain(|e| e.segment != segment);
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
    fn an_entry_costs_16_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
    }

    #[test]
    fn flags_never_touch_the_length() {
        let index = Index::new();
        let loc = Loc {
            segment: 3,
            offset: 1 << 30,
            len: LEN_MASK,
        };
        index.insert(1 << 40 | 5, loc, IN_MEMORY | 2);
        index.leave_memory(1 << 40 | 5, 3);
        assert_eq!(index.flags_at(1 << 40 | 5, loc), Some(3));
        index.set_flags(1 << 40 | 5, IN_MEMORY | USES, IN_MEMORY);
        assert_eq!(index.peek(1 << 40 | 5), Some(loc));
        assert_eq!(index.flags_at(1 << 40 | 5, loc), Some(IN_MEMORY));
        // Same 36 bits, other high bits: the same entry (the newer one wins).
        assert_eq!(index.peek(1 << 40 | 5 | 1 << 50), Some(loc));
        assert_eq!(index.peek(2 << 40 | 5), None, "another stripe");
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
