//! Size-aware CLOCK-Pro (Jiang, Chen, Zhang, USENIX ATC 2005) for one shard.
//!
//! Plain data and algorithm: no threads, no locks, no I/O. The memory tier wraps
//! one `ClockPro` per shard in a lock.
//!
//! # The clock
//! All entries the policy knows sit on one circular list in insertion order:
//! *resident hot*, *resident cold* (optionally in their test period) and
//! *non-resident cold* entries (ghosts, always in their test period: they keep
//! only the hash and the weight). New and moved entries are linked in at the
//! *head*; the three hands sweep from the oldest entry towards the head:
//!
//! * `HAND_cold` looks for a resident cold entry to evict. An unreferenced one
//!   (or one whose test period is over) is evicted; if it is in its test period
//!   its ghost stays on the clock. A referenced one in its test period proved a
//!   short reuse distance and is promoted to hot (or re-tested, depending on the
//!   adaptation credits below).
//! * `HAND_hot` turns the oldest unreferenced hot entry cold, clearing reference
//!   bits on the way. Whenever it passes `HAND_test`, it pushes that hand on.
//! * `HAND_test` ends test periods; it removes ghosts whose test period ended
//!   and keeps the number of ghosts within the bound.
//!
//! # Adaptation
//! The split between hot and cold space adapts through *credits* (in weight
//! units): a ghost hit (a re-reference within the test period) adds the entry's
//! weight, a ghost expiring unused subtracts it. Positive credits let `HAND_cold`
//! grow the cold space (demote a hot entry without promoting), negative credits
//! shrink it (promote without demoting). The cold space stays within 1%..99% of
//! the capacity. This follows the adaptive variant of the authors' simulator.
//!
//! # Warm-up
//! While the shard has room, new entries are admitted hot until only the
//! minimum cold space is left, then cold in their test period.
//!
//! # Weights
//! Every figure above is in weight units (bytes by default), so one large entry
//! counts as much as many small ones. With unit weights the algorithm is exactly
//! the page-based one.

use crate::sync::{AtomicBool, AtomicU64, Ordering};
use hashbrown::HashTable;

/// An entry index: a resident slot, or a ghost slot with [`GHOST`] set.
pub(crate) type Idx = u32;
const NIL: Idx = u32::MAX;
const GHOST: Idx = 1 << 31;

// `Meta::state` bits.
const HOT: u8 = 1;
const TEST: u8 = 2;
/// The entry has been hot at some point (seeded while warming up, promoted after
/// a re-reference in its test period, or admitted on a ghost hit); kept when it
/// turns cold again. Demotion to a lower tier writes such entries.
const PROVED: u8 = 4;
const FREE: u8 = 0x80;

/// The smallest cold allocation, in weight units, whatever the capacity.
const LOWEST_COLD: u64 = 2;

/// What the hands need of an entry: resident entries and ghosts alike.
/// A hit never reads this; 24 bytes.
pub(crate) struct Meta {
    hash: u64,
    /// The entry the hands visited just before this one.
    prev: Idx,
    /// The entry the hands visit next (for a free slot: the next free slot).
    next: Idx,
    weight: u32,
    state: u8,
}

impl Meta {
    fn new(hash: u64, weight: u32, state: u8) -> Self {
        Meta {
            hash,
            prev: NIL,
            next: NIL,
            weight,
            state,
        }
    }

    fn is_hot(&self) -> bool {
        self.state & HOT != 0
    }

    fn in_test(&self) -> bool {
        self.state & TEST != 0
    }
}

/// What a hit reads of a resident entry: the tier's payload and the reference
/// bit, in one cache line (the tier's payload must fit in 62 bytes).
#[repr(C, align(64))]
pub(crate) struct Resident<P> {
    pub(crate) payload: P,
    referenced: AtomicBool,
    /// Bits owned by the tier that stores the entry (the policy never reads them).
    pub(crate) flags: u8,
    /// A copy of `Meta::weight`, so an overwrite of the same weight reads only this line.
    weight: u32,
}

impl<P> Resident<P> {
    /// The entry's weight.
    pub(crate) fn weight(&self) -> u32 {
        self.weight
    }

    /// Sets the reference bit: the whole cost of a hit. Safe under a shared lock.
    #[inline]
    pub(crate) fn touch(&self) {
        // Read first so a hot entry's cache line is not dirtied on every hit.
        if !self.referenced.load(Ordering::Relaxed) {
            self.referenced.store(true, Ordering::Relaxed);
        }
    }
}

/// What the policy hands back when it evicts a resident entry.
pub(crate) struct Evicted<P> {
    /// The key's hash.
    pub(crate) hash: u64,
    pub(crate) payload: P,
    pub(crate) flags: u8,
    /// The owner's deadline for the entry (0 = none).
    pub(crate) deadline: u64,
    /// The entry was hot, or was referenced since it last moved: it proved reuse.
    pub(crate) proved_reuse: bool,
}

/// What one run of `HAND_hot` did.
#[derive(Clone, Copy)]
struct HotRun {
    /// The hand reached the cold entry that started it.
    met: bool,
    /// Weight of the hot entry turned cold, if any.
    demoted: u64,
}

/// Counts of what a shard's policy holds (see [`ClockPro::counts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) resident: usize,
    pub(crate) resident_weight: u64,
    pub(crate) hot: usize,
    pub(crate) hot_weight: u64,
    pub(crate) ghosts: usize,
}

/// One shard's CLOCK-Pro: the clock, its entries, and the hash → entry table.
pub(crate) struct ClockPro<P> {
    table: HashTable<Idx>,
    /// Resident entries, hot part (what hits read) ...
    slots: Vec<Resident<P>>,
    /// ... their policy part, same index ...
    slot_meta: Vec<Meta>,
    /// ... and the owner's deadline for it (nanoseconds, 0 = none; the policy
    /// never reads it). Empty until a deadline is first set (8 bytes an entry
    /// saved where nothing expires); from then on as long as `slots`.
    deadline: Vec<AtomicU64>,
    free_resident: Idx,
    ghosts: Vec<Meta>,
    free_ghost: Idx,
    head: Idx,
    hand_hot: Idx,
    hand_cold: Idx,
    hand_test: Idx,
    capacity: u64,
    min_cold: u64,
    max_cold: u64,
    counts: Counts,
    credits: i64,
    /// The entry admitted last: a hit on it before the next admission is a
    /// correlated reference (the same request repeated) and does not mark it.
    last_admitted: Idx,
}

impl<P: Default> ClockPro<P> {
    /// A shard of `capacity` weight units (at least 1).
    pub(crate) fn new(capacity: u64) -> Self {
        let capacity = capacity.max(1);
        let min_cold = (capacity / 100).max(LOWEST_COLD);
        let max_cold = (capacity / 100 * 99 + capacity % 100 * 99 / 100).max(LOWEST_COLD);
        ClockPro {
            table: HashTable::new(),
            slots: Vec::new(),
            slot_meta: Vec::new(),
            deadline: Vec::new(),
            free_resident: NIL,
            ghosts: Vec::new(),
            free_ghost: NIL,
            head: NIL,
            hand_hot: NIL,
            hand_cold: NIL,
            hand_test: NIL,
            capacity,
            min_cold,
            max_cold,
            counts: Counts::default(),
            credits: 0,
            last_admitted: NIL,
        }
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    pub(crate) fn counts(&self) -> Counts {
        self.counts
    }

    // ----- lookups -------------------------------------------------------------

    /// The resident entry for `hash` whose payload satisfies `eq`, if any.
    #[inline(always)]
    pub(crate) fn find_resident(&self, hash: u64, eq: impl Fn(&P) -> bool) -> Option<Idx> {
        self.table
            .find(hash, |&i| {
                i & GHOST == 0 && eq(&self.slots[i as usize].payload)
            })
            .copied()
    }

    /// The resident entry for `hash`, whatever its payload.
    pub(crate) fn find_resident_by_hash(&self, hash: u64) -> Option<Idx> {
        self.find(hash).filter(|i| i & GHOST == 0)
    }

    /// A resident entry found by [`find_resident`](Self::find_resident).
    #[inline]
    /// Every ghost (non-resident entry in its test period): hash and weight.
    pub(crate) fn ghost_entries(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.ghosts
            .iter()
            .filter(|m| m.state & FREE == 0)
            .map(|m| (m.hash, m.weight))
    }

    /// Remembers `hash` as a ghost in its test period, at the head of the
    /// clock (restoring a checkpoint): a re-reference before `HAND_test` ends
    /// it admits the key hot, as for an entry evicted here. Ignored if the
    /// hash is known already or nothing is resident (ghosts are bounded by
    /// what a full shard holds).
    pub(crate) fn add_ghost(&mut self, hash: u64, weight: u32) {
        if self.head == NIL || self.find(hash).is_some() {
            return;
        }
        let g = self.alloc_ghost(Meta::new(hash, weight, TEST));
        self.link_at_head(g);
        self.table
            .insert_unique(hash, g, |&i| hash_of(&self.slot_meta, &self.ghosts, i));
        self.counts.ghosts += 1;
        self.run_hand_test(false);
    }

    /// Every resident entry: its index, key hash and whether it is hot (slot
    /// order, not clock order).
    pub(crate) fn residents(&self) -> impl Iterator<Item = (Idx, u64, bool)> + '_ {
        self.slot_meta
            .iter()
            .enumerate()
            .filter(|(_, m)| m.state & FREE == 0)
            .map(|(i, m)| (i as Idx, m.hash, m.is_hot()))
    }

    pub(crate) fn resident(&self, idx: Idx) -> &Resident<P> {
        &self.slots[idx as usize]
    }

    pub(crate) fn resident_mut(&mut self, idx: Idx) -> &mut Resident<P> {
        &mut self.slots[idx as usize]
    }

    /// The owner's word for a resident entry.
    #[inline]
    pub(crate) fn deadline(&self, idx: Idx) -> u64 {
        self.deadline
            .get(idx as usize)
            .map_or(0, |d| d.load(Ordering::Relaxed))
    }

    pub(crate) fn set_deadline(&mut self, idx: Idx, value: u64) {
        if self.deadline.is_empty() {
            if value == 0 {
                return;
            }
            self.deadline
                .resize_with(self.slots.len(), || AtomicU64::new(0));
        }
        *self.deadline[idx as usize].get_mut() = value;
    }

    /// Resident entries whose deadline is at or before `now` among the
    /// `n` slots from `from` (wrapping round the slot array): their indices
    /// and hashes go to `out`. Returns where the next scan starts.
    pub(crate) fn expired_in(
        &self,
        from: usize,
        n: usize,
        now: u64,
        out: &mut impl Extend<(Idx, u64)>,
    ) -> usize {
        let len = self.slots.len();
        if len == 0 || self.deadline.is_empty() {
            return from;
        }
        let mut i = from % len;
        for _ in 0..n.min(len) {
            let meta = &self.slot_meta[i];
            if meta.state & FREE == 0 {
                let d = self.deadline[i].load(Ordering::Relaxed);
                if d != 0 && d <= now {
                    out.extend([(i as Idx, meta.hash)]);
                }
            }
            i = (i + 1) % len;
        }
        i
    }

    /// Moves a resident entry's deadline under the shared lock (a read of a
    /// sliding entry); the owner decides when.
    pub(crate) fn slide_deadline(&self, idx: Idx, value: u64) {
        // Only an entry with a deadline slides, so the words exist.
        if let Some(d) = self.deadline.get(idx as usize) {
            d.store(value, Ordering::Relaxed);
        }
    }

    /// Records a hit on resident entry `idx`: sets its reference bit, unless it
    /// was the last entry admitted (a correlated re-reference: the same request
    /// repeated). Safe under a shared lock: `last_admitted` only changes under an
    /// exclusive one.
    #[inline]
    pub(crate) fn touch(&self, idx: Idx) {
        if idx != self.last_admitted {
            self.slots[idx as usize].touch();
        }
    }

    /// The entry admitted last, while it is resident.
    pub(crate) fn last_admitted(&self) -> Idx {
        self.last_admitted
    }

    #[inline]
    fn find(&self, hash: u64) -> Option<Idx> {
        self.table
            .find(hash, |&i| self.meta(i).hash == hash)
            .copied()
    }

    #[inline]
    fn meta(&self, idx: Idx) -> &Meta {
        if idx & GHOST != 0 {
            &self.ghosts[(idx & !GHOST) as usize]
        } else {
            &self.slot_meta[idx as usize]
        }
    }

    #[inline]
    fn meta_mut(&mut self, idx: Idx) -> &mut Meta {
        if idx & GHOST != 0 {
            &mut self.ghosts[(idx & !GHOST) as usize]
        } else {
            &mut self.slot_meta[idx as usize]
        }
    }

    fn referenced(&self, idx: Idx) -> bool {
        idx & GHOST == 0 && self.slots[idx as usize].referenced.load(Ordering::Relaxed)
    }

    fn clear_referenced(&mut self, idx: Idx) {
        if idx & GHOST == 0 {
            *self.slots[idx as usize].referenced.get_mut() = false;
        }
    }

    fn is_resident_cold(&self, idx: Idx) -> bool {
        idx & GHOST == 0 && !self.meta(idx).is_hot()
    }

    // ----- public operations -----------------------------------------------------

    /// Admits a new resident entry for `hash` (which must not be resident), making
    /// room first. Evicted entries are passed to `evicted`. `hot`: the owner
    /// knows the key proved reuse at a longer distance than this policy sees (a
    /// lower tier's ghost): it enters hot, as on a ghost hit.
    pub(crate) fn insert(
        &mut self,
        hash: u64,
        weight: u32,
        flags: u8,
        payload: P,
        hot: bool,
        evicted: &mut impl FnMut(Evicted<P>),
    ) {
        self.admit(hash, weight, flags, payload, hot, evicted);
        // The ghost bound follows the number of entries a full shard holds.
        self.run_hand_test(false);
    }

    fn admit(
        &mut self,
        hash: u64,
        weight: u32,
        flags: u8,
        payload: P,
        hot: bool,
        evicted: &mut impl FnMut(Evicted<P>),
    ) {
        debug_assert!(
            self.find_resident_by_hash(hash).is_none(),
            "insert of a resident hash"
        );
        let new = |state| (hash, weight, state, flags);
        let w = u64::from(weight);
        debug_assert!(w <= self.capacity, "entry heavier than the shard");
        if let Some(ghost) = self.find(hash) {
            self.make_room(w, evicted);
            // Making room may have ended the ghost's test period.
            if self.find(hash) == Some(ghost) {
                let run = self.run_hand_hot(ghost);
                let still_there = self.find(hash) == Some(ghost);
                if !run.met || run.demoted > 0 {
                    // A re-reference within the test period: admit hot.
                    if still_there {
                        self.remove_idx(ghost);
                    }
                    self.credits += w as i64;
                    self.link_new(new(HOT | PROVED), payload);
                    return;
                }
                debug_assert!(!still_there);
            }
            self.link_new(new(TEST), payload);
            return;
        }
        let free = self.capacity - self.counts.resident_weight;
        if hot {
            // Proved reuse beyond this tier's ghosts: in hot, one hot entry out.
            self.make_room(w, evicted);
            self.run_hand_hot(NIL);
            self.link_new(new(HOT | PROVED), payload);
        } else if free >= w && free - w >= self.min_cold {
            // Warming up: fill the hot space first.
            self.link_new(new(HOT | PROVED), payload);
        } else {
            self.make_room(w, evicted);
            self.link_new(new(TEST), payload);
        }
    }

    /// Changes the weight of a resident entry (an overwrite) and makes room if it grew.
    /// The entry itself may be evicted by that.
    #[inline]
    pub(crate) fn reweigh(&mut self, idx: Idx, weight: u32, evicted: &mut impl FnMut(Evicted<P>)) {
        // The common overwrite (same weight) reads only the entry's hot line.
        if self.slots[idx as usize].weight != weight {
            self.reweigh_to(idx, weight, evicted);
        }
    }

    fn reweigh_to(&mut self, idx: Idx, weight: u32, evicted: &mut impl FnMut(Evicted<P>)) {
        self.slots[idx as usize].weight = weight;
        let meta = self.meta_mut(idx);
        let (old, hot) = (u64::from(meta.weight), meta.is_hot());
        meta.weight = weight;
        let new = u64::from(weight);
        self.counts.resident_weight = self.counts.resident_weight - old + new;
        if hot {
            self.counts.hot_weight = self.counts.hot_weight - old + new;
        }
        self.make_room(0, evicted);
        self.run_hand_test(false);
    }

    /// Removes `hash` (resident or ghost) from the policy; returns the payload if it was resident.
    pub(crate) fn remove(&mut self, hash: u64) -> Option<P> {
        let idx = self.find(hash)?;
        let payload = self.remove_idx(idx);
        self.run_hand_test(false);
        payload
    }
}

fn hash_of(slot_meta: &[Meta], ghosts: &[Meta], idx: Idx) -> u64 {
    if idx & GHOST != 0 {
        ghosts[(idx & !GHOST) as usize].hash
    } else {
        slot_meta[idx as usize].hash
    }
}

mod hands;
mod slots;
#[cfg(any(test, fuzzing, feature = "validate"))]
mod validate;

#[cfg(test)]
mod tests;
