//! One stripe's table: an ordered linear-probing table over a flat array of
//! 16-byte entries, no control bytes, grown by a quarter.
//!
//! Why not hashbrown: its bucket count is a power of two, so a table is
//! between 7/16 and 7/8 full and 63% on average, and each bucket carries a
//! control byte: 27 bytes a key for a 16-byte entry. Here a table of any size
//! grows by 5/4 when it is 7/8 full, so it is 70–87.5% full (78% on average)
//! and a key costs about 20.5 bytes.
//!
//! A key's home is a multiply-shift of its hash's low 32 bits (the stripe
//! was picked from bits 40..52) over the table's `buckets`; after them come a
//! few spare slots instead of a wrap-around. Entries are kept sorted by their
//! hash's low 32 bits (Amble and Knuth's ordered hash table, which is also
//! Robin Hood order), so:
//! - a search walks from its home and stops at a free slot or at the first
//!   entry whose low bits are above its own: one compare of a `u32` per slot;
//! - an insertion shifts the rest of its run one slot up, and a removal
//!   shifts the entries after it that are away from home one slot down, so no
//!   tombstone is ever left;
//! - growing is one sequential pass: the entries, already in order, each go
//!   to the later of its new home and the slot after the previous one.
//!
//! Invariants (checked by the tests after every step of a model run):
//! - a slot whose `hash` is [`EMPTY`] is free, every other slot holds one
//!   entry, and no two entries have the same hash;
//! - every entry sits at or after its home, with no free slot between;
//! - entries are in ascending order of their hash's low 32 bits;
//! - the last slot is free, so every walk ends inside the array;
//! - `len ≤ buckets · 7/8`.

use super::Entry;

/// The hash a free slot holds. The index stores hash 0 as 1 (see
/// `Index::stored`), so no key's entry holds it.
pub(super) const EMPTY: u64 = 0;

/// Tables grow when `len` would pass `buckets · MAX_LOAD_NUM / MAX_LOAD_DEN`.
const MAX_LOAD_NUM: usize = 7;
const MAX_LOAD_DEN: usize = 8;
/// The fewest buckets a table that holds anything has.
const MIN_BUCKETS: usize = 8;

/// Spare slots after `buckets`: room for the last run to spill into (a
/// table whose last run would reach the last slot grows instead).
fn spare(buckets: usize) -> usize {
    (buckets / 16).clamp(2, 32)
}

fn low(hash: u64) -> u32 {
    hash as u32
}

fn home_in(buckets: usize, hash: u64) -> usize {
    ((u64::from(low(hash)) * buckets as u64) >> 32) as usize
}

fn free_slots(n: usize) -> Box<[Entry]> {
    (0..n).map(|_| Entry::empty()).collect()
}

pub(super) struct Table {
    slots: Box<[Entry]>,
    /// The range of homes: slots past it are spares.
    buckets: usize,
    len: usize,
}

impl Table {
    pub(super) fn new() -> Self {
        Table {
            slots: Box::new([]),
            buckets: 0,
            len: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Slots allocated, spares included (each one entry's size).
    pub(super) fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn home(&self, hash: u64) -> usize {
        home_in(self.buckets, hash)
    }

    /// `Ok(slot)` holding `hash`, or `Err(slot)` where it would be inserted.
    fn search(&self, hash: u64) -> Result<usize, usize> {
        debug_assert_ne!(hash, EMPTY);
        if self.slots.is_empty() {
            return Err(0);
        }
        let key = low(hash);
        let mut i = self.home(hash);
        loop {
            let here = self.slots[i].hash;
            if here == hash {
                return Ok(i);
            }
            if here == EMPTY || low(here) > key {
                return Err(i);
            }
            i += 1;
        }
    }

    pub(super) fn find(&self, hash: u64) -> Option<&Entry> {
        if self.len == 0 {
            return None;
        }
        self.search(hash).ok().map(|i| &self.slots[i])
    }

    /// The entry for `hash`, made by `make` if the table does not hold it.
    /// Whether it was made.
    pub(super) fn upsert(&mut self, hash: u64, make: impl FnOnce() -> Entry) -> (&mut Entry, bool) {
        let mut at = match self.search(hash) {
            Ok(i) => return (&mut self.slots[i], false),
            Err(i) => i,
        };
        if (self.len + 1) * MAX_LOAD_DEN > self.buckets * MAX_LOAD_NUM {
            self.grow(self.buckets + self.buckets / 4);
            at = self.search(hash).unwrap_err();
        }
        loop {
            // The end of the run the new entry joins: it must not be the last slot.
            let end = (at..self.slots.len())
                .find(|&j| self.slots[j].hash == EMPTY)
                .expect("the last slot is free");
            if end + 1 < self.slots.len() {
                self.slots[at..=end].rotate_right(1);
                self.slots[at] = make();
                self.len += 1;
                return (&mut self.slots[at], true);
            }
            self.grow(self.buckets + self.buckets / 4);
            at = self.search(hash).unwrap_err();
        }
    }

    /// Moves every entry into a table of at least `buckets` buckets (more if
    /// the last run would not fit).
    fn grow(&mut self, buckets: usize) {
        let mut entries = std::mem::take(&mut self.slots).into_vec();
        entries.retain(|e| e.hash != EMPTY);
        self.refill(entries, buckets.max(MIN_BUCKETS));
    }

    /// Places `entries`, in ascending order of their low bits, into a fresh
    /// table of `buckets` buckets, or more until the last run fits.
    fn refill(&mut self, entries: Vec<Entry>, mut buckets: usize) {
        let fits = |buckets: usize| {
            let last = buckets + spare(buckets) - 1;
            let mut next = 0;
            entries.iter().all(|e| {
                next = home_in(buckets, e.hash).max(next) + 1;
                next <= last
            })
        };
        while !fits(buckets) {
            buckets += buckets / 4;
        }
        self.buckets = buckets;
        self.slots = free_slots(buckets + spare(buckets));
        self.len = entries.len();
        let mut next = 0;
        for e in entries {
            let at = home_in(buckets, e.hash).max(next);
            self.slots[at] = e;
            next = at + 1;
        }
    }

    /// Removes and returns `hash`'s entry if `pred` accepts it.
    pub(super) fn remove_if(
        &mut self,
        hash: u64,
        pred: impl FnOnce(&Entry) -> bool,
    ) -> Option<Entry> {
        if self.len == 0 {
            return None;
        }
        let i = self.search(hash).ok()?;
        if !pred(&self.slots[i]) {
            return None;
        }
        // The entries after it that are away from home move down one slot.
        let mut end = i + 1;
        while self.slots[end].hash != EMPTY && self.home(self.slots[end].hash) < end {
            end += 1;
        }
        self.slots[i..end].rotate_left(1);
        self.len -= 1;
        Some(std::mem::replace(&mut self.slots[end - 1], Entry::empty()))
    }

    /// Keeps only the entries `keep` accepts.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) {
        if self.len == 0 {
            return;
        }
        let mut entries = std::mem::take(&mut self.slots).into_vec();
        entries.retain(|e| e.hash != EMPTY && keep(e));
        let buckets = self.buckets;
        self.refill(entries, buckets);
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.slots.iter().filter(|e| e.hash != EMPTY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::AtomicU32;

    fn entry(hash: u64, offset: u32) -> Entry {
        Entry {
            hash,
            offset,
            segment_flags: AtomicU32::new(0),
        }
    }

    /// Checks every invariant in the module's comment.
    fn check(table: &Table) {
        let n = table.slots.len();
        assert_eq!(table.iter().count(), table.len, "len counts the held slots");
        assert!(table.len * MAX_LOAD_DEN <= table.buckets * MAX_LOAD_NUM || n == 0);
        if n > 0 {
            assert_eq!(n, table.buckets + spare(table.buckets));
            assert_eq!(table.slots[n - 1].hash, EMPTY, "the last slot is free");
        }
        let mut previous = None;
        for i in 0..n {
            let h = table.slots[i].hash;
            if h == EMPTY {
                continue;
            }
            assert_eq!(table.search(h), Ok(i), "entry {h:#x} is found where it is");
            let home = table.home(h);
            assert!(home <= i, "at or after its home");
            assert!((home..i).all(|j| table.slots[j].hash != EMPTY), "no gap");
            assert!(previous <= Some(low(h)), "in order of the low bits");
            previous = Some(low(h));
        }
    }

    /// A small xorshift, so the test needs no dependency.
    fn hashes(seed: u64) -> impl Iterator<Item = u64> {
        let mut x = seed;
        std::iter::repeat_with(move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })
    }

    #[test]
    fn matches_a_model_through_inserts_removes_and_growth() {
        let mut table = Table::new();
        let mut model = std::collections::HashMap::new();
        let keys: Vec<u64> = hashes(0x9e37_79b9).take(3_000).collect();
        for (step, r) in hashes(7).take(40_000).enumerate() {
            // One draw in five is among 64 keys that share their low 32 bits,
            // so their homes collide; the others among 3,000 keys.
            let key = if (r >> 8) % 5 == 0 {
                ((r >> 20) % 64 + 1) << 32 | 12_345
            } else {
                keys[((r >> 16) % keys.len() as u64) as usize]
            };
            if key == EMPTY {
                continue;
            }
            if r % 3 == 0 {
                let got = table.remove_if(key, |_| true).map(|e| e.offset);
                assert_eq!(got, model.remove(&key), "remove {key:#x}");
            } else {
                let (e, made) = table.upsert(key, || entry(key, 0));
                e.offset = step as u32;
                assert_eq!(model.insert(key, step as u32).is_none(), made);
            }
            if step % 100 == 0 {
                check(&table);
            }
        }
        check(&table);
        for (&k, &v) in &model {
            assert_eq!(table.find(k).map(|e| e.offset), Some(v));
        }
        table.retain(|e| e.offset % 2 == 0);
        check(&table);
        for (&k, &v) in &model {
            assert_eq!(table.find(k).is_some(), v % 2 == 0);
        }
    }

    #[test]
    fn a_refused_removal_keeps_the_entry() {
        let mut table = Table::new();
        table.upsert(42, || entry(42, 1));
        assert!(table.remove_if(42, |e| e.offset == 2).is_none());
        assert_eq!(table.find(42).map(|e| e.offset), Some(1));
        assert!(table.remove_if(43, |_| true).is_none(), "absent");
        assert_eq!(table.remove_if(42, |_| true).map(|e| e.offset), Some(1));
        assert_eq!(table.len(), 0);
        assert!(table.find(42).is_none());
    }

    #[test]
    fn tables_stay_between_70_and_88_percent_full_as_they_grow() {
        let mut table = Table::new();
        for (n, h) in hashes(3).take(200_000).enumerate() {
            table.upsert(h, || entry(h, 0));
            let load = (n + 1) as f64 / table.buckets as f64;
            if n > 1_000 {
                assert!((0.69..=0.875).contains(&load), "{load} at {n}");
            }
        }
    }
}
