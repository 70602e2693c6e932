//! The disk tier's index: key hash → where the key's newest record lives.
//!
//! One 16-byte entry per key on disk (asserted in a test), in 256 lock-striped
//! tables ([`table`]: Robin Hood open addressing, grown by a quarter, about
//! 20.5 bytes a key with its free slots): the key's whole 64-bit hash, the
//! record's segment (29 bits) and offset, and policy flags. The record's
//! length is not kept: a read learns it from the record's header. The key is
//! not kept either: every read compares the key stored in the record. Keys are
//! told apart by their whole hash, as recovery tells them apart (summaries
//! list whole hashes), so two keys share an entry only if their 64-bit hashes
//! are equal (about 0.03 such pairs among a billion keys): then the newer one
//! takes it and the other is a miss, never a wrong value.
//!
//! The stripes are deliberately unequal. A table grows by 5/4 when it is 7/8
//! full, so its load swings between 70% and 87.5%, and equal stripes would all
//! grow at once: the index's bytes per key would swing with the number of
//! keys. Instead stripe `i` gets a share of keys proportional to `2^(i/256)`,
//! so the stripes' sizes spread over one octave (more than the 5/4 step) and
//! their growths are spread evenly; the index's load stays near its mean,
//! about 78%.
//!
//! The flags steer reclaim, L2's clock hand: a use count ([`USES`]) and
//! [`IN_MEMORY`] (the memory tier holds the key, so a copy on disk is not
//! worth a rewrite). They never decide what a read returns.

use crate::sync::{AtomicU32, AtomicUsize, Ordering, RwLock};
use table::{EMPTY, Table};

mod table;

/// Where a record starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) segment: u32,
    pub(crate) offset: u32,
}

/// Bits of a segment id the index keeps: ids at or above `1 << 29` are refused
/// (at 64 KiB, the smallest segment, that is 32 TiB written).
pub(crate) const SEGMENT_BITS: u32 = 29;
/// The largest segment id written: the one above is [`PENDING`]'s.
pub(crate) const MAX_SEGMENT_ID: u32 = (1 << SEGMENT_BITS) - 2;

/// Where the index points a key whose demotion is reserved (memory evicted
/// it, its record is being compressed outside the shard lock): never a
/// segment's, so a read finds nothing there, and reclaim never touches it.
pub(crate) const PENDING: Loc = Loc {
    segment: MAX_SEGMENT_ID + 1,
    offset: 0,
};

/// Flag bits 0..1: a saturating use count. Raised by a read from disk (an L2
/// hit) and set when memory lets go of a key that proved reuse there; reclaim
/// re-appends an entry with uses left (if memory does not hold it), one fewer.
pub(crate) const USES: u8 = 3;
/// Entry flag: the memory tier holds the key.
pub(crate) const IN_MEMORY: u8 = 4;

const SEGMENT_MASK: u32 = (1 << SEGMENT_BITS) - 1;

struct Entry {
    /// The key's hash.
    hash: u64,
    offset: u32,
    /// The segment (bits 0..29) and the flags (bits 29..32).
    segment_flags: AtomicU32,
}

impl Entry {
    fn empty() -> Self {
        Entry {
            hash: EMPTY,
            offset: 0,
            segment_flags: AtomicU32::new(0),
        }
    }

    fn loc(&self) -> Loc {
        Loc {
            segment: self.segment_flags.load(Ordering::Relaxed) & SEGMENT_MASK,
            offset: self.offset,
        }
    }

    fn flags(&self) -> u8 {
        (self.segment_flags.load(Ordering::Relaxed) >> SEGMENT_BITS) as u8
    }

    /// Changes the flag bits only (the segment never changes in place).
    fn update_flags(&self, f: impl Fn(u8) -> u8) {
        let _ = self
            .segment_flags
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some((v & SEGMENT_MASK) | u32::from(f((v >> SEGMENT_BITS) as u8)) << SEGMENT_BITS)
            });
    }
}

/// An entry's segment-and-flags word.
fn segment_word(loc: Loc, flags: u8) -> u32 {
    loc.segment | u32::from(flags) << SEGMENT_BITS
}

/// The hash an entry stores for `hash`: 0 marks a free slot, so a key hashed
/// to 0 is stored as 1 (the two share an entry, as equal hashes do).
fn stored(hash: u64) -> u64 {
    hash.max(1)
}

pub(crate) const STRIPES: usize = 256;

/// Hash bits that pick a stripe through [`Index::stripe_of`].
const STRIPE_PICK_BITS: u32 = 12;

pub(crate) struct Index {
    stripes: [RwLock<Table>; STRIPES],
    /// `STRIPE_PICK_BITS` hash bits → stripe, stripe `i` taking a share of the
    /// slots proportional to `2^(i/STRIPES)`.
    stripe_of: Box<[u8; 1 << STRIPE_PICK_BITS]>,
    len: AtomicUsize,
}

/// The stripe-picking table: slot `u` (of `n`) goes to stripe
/// `floor(STRIPES · log2(1 + u/n))`, the inverse of the shares' distribution.
fn stripe_table() -> Box<[u8; 1 << STRIPE_PICK_BITS]> {
    let n = 1usize << STRIPE_PICK_BITS;
    let mut table = Box::new([0u8; 1 << STRIPE_PICK_BITS]);
    for (u, slot) in table.iter_mut().enumerate() {
        let x = (u as f64 + 0.5) / n as f64;
        *slot = ((STRIPES as f64 * (1.0 + x).log2()) as usize).min(STRIPES - 1) as u8;
    }
    table
}

impl Index {
    pub(crate) fn new() -> Self {
        Index {
            stripes: std::array::from_fn(|_| RwLock::new(Table::new())),
            stripe_of: stripe_table(),
            len: AtomicUsize::new(0),
        }
    }

    fn stripe(&self, hash: u64) -> &RwLock<Table> {
        let pick = (hash >> 40) as usize & ((1 << STRIPE_PICK_BITS) - 1);
        &self.stripes[usize::from(self.stripe_of[pick])]
    }

    /// The location of `hash`'s record; the read raises its use count.
    pub(crate) fn get(&self, hash: u64) -> Option<Loc> {
        let hash = stored(hash);
        let stripe = self.stripe(hash).read();
        let e = stripe.find(hash)?;
        if e.flags() & USES != USES {
            e.update_flags(|f| if f & USES == USES { f } else { f + 1 });
        }
        Some(e.loc())
    }

    /// The location of `hash`'s record, without counting a use.
    pub(crate) fn peek(&self, hash: u64) -> Option<Loc> {
        let hash = stored(hash);
        let stripe = self.stripe(hash).read();
        stripe.find(hash).map(Entry::loc)
    }

    /// Points `hash` at `loc` with `flags`; returns where it pointed before.
    pub(crate) fn insert(&self, hash: u64, loc: Loc, flags: u8) -> Option<Loc> {
        debug_assert!(loc.segment <= MAX_SEGMENT_ID);
        let mut old = None;
        self.upsert(hash, loc, flags, |e| {
            old = Some(e.loc());
            e.offset = loc.offset;
            *e.segment_flags.get_mut() = segment_word(loc, flags);
        });
        old
    }

    /// Points `hash` at [`PENDING`] with `flags`, if it points nowhere.
    /// Whether it did.
    pub(crate) fn reserve(&self, hash: u64, flags: u8) -> bool {
        self.upsert(hash, PENDING, flags, |_| {})
    }

    /// Makes `hash`'s entry, pointing at `loc` with `flags`, if there is none
    /// (and says so), else runs `existing` on it.
    fn upsert(&self, hash: u64, loc: Loc, flags: u8, existing: impl FnOnce(&mut Entry)) -> bool {
        let hash = stored(hash);
        let mut stripe = self.stripe(hash).write();
        let (e, made) = stripe.upsert(hash, || Entry {
            hash,
            offset: loc.offset,
            segment_flags: AtomicU32::new(segment_word(loc, flags)),
        });
        if made {
            self.len.fetch_add(1, Ordering::Relaxed);
        } else {
            existing(e);
        }
        made
    }

    /// Forgets `hash`, whatever it points at; returns where it pointed.
    pub(crate) fn remove(&self, hash: u64) -> Option<Loc> {
        let hash = stored(hash);
        let mut stripe = self.stripe(hash).write();
        let entry = stripe.remove_if(hash, |_| true)?;
        self.len.fetch_sub(1, Ordering::Relaxed);
        Some(entry.loc())
    }

    /// Forgets `hash` only if it still points at `loc` (a newer record may have moved it).
    pub(crate) fn remove_if(&self, hash: u64, loc: Loc) -> bool {
        let hash = stored(hash);
        let mut stripe = self.stripe(hash).write();
        let removed = stripe.remove_if(hash, |e| e.loc() == loc).is_some();
        if removed {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Like [`remove_if`](Self::remove_if), returning the entry's flags
    /// as they were when it was forgotten.
    pub(crate) fn remove_at(&self, hash: u64, loc: Loc) -> Option<u8> {
        let hash = stored(hash);
        let mut stripe = self.stripe(hash).write();
        let removed = stripe.remove_if(hash, |e| e.loc() == loc)?;
        self.len.fetch_sub(1, Ordering::Relaxed);
        Some(removed.flags())
    }

    /// If `hash` points at `loc`: sets its flags where `mask` has bits, and
    /// says so.
    pub(crate) fn set_flags_at(&self, hash: u64, loc: Loc, mask: u8, flags: u8) -> bool {
        let hash = stored(hash);
        let stripe = self.stripe(hash).read();
        match stripe.find(hash).filter(|e| e.loc() == loc) {
            Some(e) => {
                e.update_flags(|old| (old & !mask) | (flags & mask));
                true
            }
            None => false,
        }
    }

    fn with_entry(&self, hash: u64, f: impl FnOnce(&Entry)) -> bool {
        let hash = stored(hash);
        let stripe = self.stripe(hash).read();
        match stripe.find(hash) {
            Some(e) => {
                f(e);
                true
            }
            None => false,
        }
    }

    /// Sets `hash`'s flags to `flags` where `mask` has bits (no-op if absent).
    /// Returns whether the entry exists.
    #[cfg(test)]
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
        let hash = stored(hash);
        let stripe = self.stripe(hash).read();
        let e = stripe.find(hash).filter(|e| e.loc() == loc)?;
        Some(e.flags())
    }

    /// Forgets every entry that points into `segment` (a full scan: for a
    /// segment whose summary cannot be read). Returns how many it forgot.
    pub(crate) fn remove_segment(&self, segment: u32) -> usize {
        let mut gone = 0;
        for stripe in &self.stripes {
            let mut stripe = stripe.write();
            let before = stripe.len();
            stripe.retain(|e| e.loc().segment != segment);
            gone += before - stripe.len();
        }
        self.len.fetch_sub(gone, Ordering::Relaxed);
        gone
    }

    /// Bytes the index's tables take: their slots (an entry each, free or
    /// held) plus the stripe table, not counting the allocator's own overhead.
    pub(crate) fn table_bytes(&self) -> usize {
        let slots: usize = self.stripes.iter().map(|s| s.read().capacity()).sum();
        slots * std::mem::size_of::<Entry>() + self.stripe_of.len()
    }

    /// Every entry with uses left: its location and use count.
    pub(crate) fn used(&self) -> Vec<(Loc, u8)> {
        let mut out = Vec::new();
        for stripe in &self.stripes {
            for e in stripe.read().iter() {
                let uses = e.flags() & USES;
                if uses > 0 && e.loc() != PENDING {
                    out.push((e.loc(), uses));
                }
            }
        }
        out
    }

    /// The hash of every key with a record in stripe `stripe` (of
    /// [`STRIPES`]), under its read lock, those reserved for a demotion
    /// ([`PENDING`]) included: a walk waits for their records rather than
    /// miss a key on its way from memory to disk.
    pub(crate) fn hashes_of(&self, stripe: usize, out: &mut Vec<u64>) {
        out.extend(self.stripes[stripe].read().iter().map(|e| e.hash));
    }

    /// Keys with a record whose [`IN_MEMORY`] flag is clear: those the
    /// memory tier does not hold (as far as the flags know).
    pub(crate) fn outside_memory(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| {
                s.read()
                    .iter()
                    .filter(|e| e.loc() != PENDING && e.flags() & IN_MEMORY == 0)
                    .count()
            })
            .sum()
    }

    /// Clears every entry's flags.
    pub(crate) fn clear_flags(&self) {
        for stripe in &self.stripes {
            for e in stripe.read().iter() {
                e.update_flags(|_| 0);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_share_keys_over_one_octave() {
        let table = stripe_table();
        let mut count = [0usize; STRIPES];
        for &s in table.iter() {
            count[usize::from(s)] += 1;
        }
        assert!(count.iter().all(|&c| c > 0), "every stripe is used");
        // The last stripe gets about twice the first one's share.
        let ratio = count[STRIPES - 1] as f64 / count[0] as f64;
        assert!((1.6..2.5).contains(&ratio), "{ratio}");
    }

    #[test]
    fn an_entry_costs_16_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
    }

    #[test]
    fn flags_never_touch_the_segment() {
        let index = Index::new();
        let loc = Loc {
            segment: MAX_SEGMENT_ID,
            offset: u32::MAX,
        };
        index.insert(1 << 40 | 5, loc, IN_MEMORY | 2);
        index.leave_memory(1 << 40 | 5, 3);
        assert_eq!(index.flags_at(1 << 40 | 5, loc), Some(3));
        index.set_flags(1 << 40 | 5, IN_MEMORY | USES, IN_MEMORY);
        assert_eq!(index.peek(1 << 40 | 5), Some(loc));
        assert_eq!(index.flags_at(1 << 40 | 5, loc), Some(IN_MEMORY));
        // Same low 32 bits and stripe, another hash: another key, told apart.
        assert_eq!(index.peek(1 << 40 | 5 | 1 << 60), None);
        assert_eq!(index.peek(0x800 << 40 | 5), None, "another stripe");
    }

    #[test]
    fn insert_get_move_remove() {
        let index = Index::new();
        let a = Loc {
            segment: 1,
            offset: 64,
        };
        let b = Loc { offset: 164, ..a };
        assert_eq!(index.insert(7, a, IN_MEMORY), None);
        assert_eq!(index.get(7), Some(a));
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
        for h in 1..=100 {
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

    #[test]
    fn a_key_hashed_to_zero_is_kept() {
        let index = Index::new();
        let loc = Loc {
            segment: 3,
            offset: 8,
        };
        assert_eq!(index.insert(0, loc, 0), None);
        assert_eq!(index.get(0), Some(loc));
        assert!(index.remove_if(0, loc));
        assert_eq!(index.peek(0), None);
        assert_eq!(index.len(), 0);
    }
}
