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

use crate::sync::{AtomicBool, Ordering};
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
    /// ... and the owner's deadline for it (nanoseconds, 0 = none; the policy never reads it).
    deadline: Vec<u64>,
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
        self.deadline[idx as usize]
    }

    pub(crate) fn set_deadline(&mut self, idx: Idx, value: u64) {
        self.deadline[idx as usize] = value;
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
    pub(crate) fn reweigh(&mut self, idx: Idx, weight: u32, evicted: &mut impl FnMut(Evicted<P>)) {
        if self.slots[idx as usize].weight == weight {
            return;
        }
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

    // ----- the hands ---------------------------------------------------------------

    /// Runs `HAND_cold` until `need` more weight fits.
    fn make_room(&mut self, need: u64, evicted: &mut impl FnMut(Evicted<P>)) {
        while self.counts.resident_weight + need > self.capacity && self.counts.resident > 0 {
            if self.counts.hot == self.counts.resident {
                // No resident cold entry left: turn the oldest hot one cold.
                self.run_hand_hot(NIL);
                continue;
            }
            let c = self.seek_resident_cold(self.hand_cold);
            self.hand_cold = c;
            let meta = self.meta(c);
            let w = u64::from(meta.weight);
            if !meta.in_test() || !self.referenced(c) {
                self.evict(c, evicted);
                continue;
            }
            // Referenced during its test period.
            self.check_adaptive_bound();
            if self.credits < 0 {
                // Shrink the cold space: promote without demoting.
                self.promote(c);
                self.credits = (self.credits + w as i64).min(0);
            } else if self.credits > 0 {
                // Grow the cold space: demote a hot entry, keep this one cold and re-test it.
                let run = self.run_hand_hot(c);
                if !run.met {
                    self.clear_referenced(c);
                    self.meta_mut(c).state |= TEST;
                    self.move_to_head(c);
                    self.credits = (self.credits - run.demoted.max(1) as i64).max(0);
                } else {
                    self.clear_referenced(c);
                    if run.demoted > 0 {
                        self.credits = (self.credits - run.demoted as i64).max(0);
                    }
                    self.evict(c, evicted);
                }
            } else {
                // Balanced: one promotion for one demotion.
                let run = self.run_hand_hot(c);
                if !run.met || run.demoted > 0 {
                    self.promote(c);
                }
                // Otherwise HAND_test ended c's test period on the way: it goes next round.
            }
        }
    }

    /// The first resident cold entry at or after `from`.
    fn seek_resident_cold(&self, from: Idx) -> Idx {
        let mut i = if from == NIL { self.head } else { from };
        while !self.is_resident_cold(i) {
            i = self.meta(i).next;
        }
        i
    }

    fn check_adaptive_bound(&mut self) {
        let cold = self.capacity.saturating_sub(self.counts.hot_weight);
        if (self.credits > 0 && cold >= self.max_cold)
            || (self.credits < 0 && cold <= self.min_cold)
        {
            self.credits = 0;
        }
    }

    /// Turns resident cold entry `c` hot and moves it to the head.
    fn promote(&mut self, c: Idx) {
        self.clear_referenced(c);
        let meta = self.meta_mut(c);
        meta.state = HOT | PROVED;
        let w = u64::from(meta.weight);
        self.counts.hot += 1;
        self.counts.hot_weight += w;
        self.move_to_head(c);
    }

    /// Evicts resident cold entry `c`: its ghost stays if it is in its test period.
    fn evict(&mut self, c: Idx, evicted: &mut impl FnMut(Evicted<P>)) {
        let meta = self.meta(c);
        let (hash, weight, in_test) = (meta.hash, meta.weight, meta.in_test());
        let proved_reuse = self.referenced(c) || meta.state & PROVED != 0;
        let deadline = self.deadline[c as usize];
        if in_test {
            let g = self.alloc_ghost(Meta::new(hash, weight, TEST));
            self.replace(c, g);
            self.counts.ghosts += 1;
        } else {
            self.unlink(c);
            self.table_remove(hash, c);
        }
        let (_, payload, flags) = self.free_resident_slot(c);
        self.counts.resident -= 1;
        self.counts.resident_weight -= u64::from(weight);
        evicted(Evicted {
            hash,
            payload,
            flags,
            deadline,
            proved_reuse,
        });
        self.run_hand_test(false);
    }

    /// Runs `HAND_hot` until it has turned one hot entry cold (or met `cold`, the
    /// cold entry on whose behalf it runs), then on to the next hot entry.
    fn run_hand_hot(&mut self, cold: Idx) -> HotRun {
        let mut run = HotRun {
            met: false,
            demoted: 0,
        };
        if self.counts.hot == 0 {
            return run;
        }
        let mut done = false;
        loop {
            let h = self.hand_hot;
            let meta = self.meta(h);
            if done && (meta.is_hot() || self.counts.hot == 0) {
                break;
            }
            if meta.is_hot() {
                if self.referenced(h) {
                    self.clear_referenced(h);
                } else {
                    let meta = self.meta_mut(h);
                    meta.state &= PROVED;
                    let w = u64::from(meta.weight);
                    self.counts.hot -= 1;
                    self.counts.hot_weight -= w;
                    run.demoted = w;
                    done = true;
                }
                // Passing a hot entry leaves it behind at the head.
                self.move_to_head(h);
            } else {
                if h == cold {
                    run.met = true;
                    done = true;
                }
                self.hand_hot = self.meta(h).next;
            }
            if self.meta(self.hand_hot).prev == self.hand_test {
                self.run_hand_test(true);
            }
        }
        run
    }

    /// Moves `HAND_test` one step if `step`, then removes ghosts over the bound.
    fn run_hand_test(&mut self, step: bool) {
        if step {
            let t = self.hand_test;
            let next = self.meta(t).next;
            if !self.meta(t).is_hot() {
                self.meta_mut(t).state &= !TEST;
                self.clear_referenced(t);
                if t & GHOST != 0 {
                    // Its test period ended without a re-reference.
                    self.credits -= i64::from(self.meta(t).weight);
                    self.remove_idx(t);
                } else {
                    self.hand_test = next;
                }
            } else {
                self.hand_test = next;
            }
        }
        while self.counts.ghosts > self.max_ghosts() {
            while self.hand_test & GHOST == 0 {
                let t = self.hand_test;
                if !self.meta(t).is_hot() {
                    self.meta_mut(t).state &= !TEST;
                    self.clear_referenced(t);
                }
                self.hand_test = self.meta(t).next;
            }
            let t = self.hand_test;
            self.credits -= i64::from(self.meta(t).weight);
            self.remove_idx(t);
        }
    }

    /// Ghosts are bounded by the number of entries the shard holds when full.
    fn max_ghosts(&self) -> usize {
        let c = &self.counts;
        if c.resident_weight == 0 {
            return c.resident;
        }
        let full = u128::from(self.capacity) * c.resident as u128 / u128::from(c.resident_weight);
        (full as usize).max(c.resident)
    }

    // ----- the ring ------------------------------------------------------------------

    fn link_new(&mut self, (hash, weight, state, flags): (u64, u32, u8, u8), payload: P) {
        let resident = Resident {
            payload,
            referenced: AtomicBool::new(false),
            flags,
            weight,
        };
        let idx = self.alloc_resident(Meta::new(hash, weight, state), resident);
        self.last_admitted = idx;
        self.link_at_head(idx);
        self.table
            .insert_unique(hash, idx, |&i| hash_of(&self.slot_meta, &self.ghosts, i));
        let w = u64::from(weight);
        self.counts.resident += 1;
        self.counts.resident_weight += w;
        if state & HOT != 0 {
            self.counts.hot += 1;
            self.counts.hot_weight += w;
        }
    }

    /// Unlinks, unindexes and frees any entry.
    fn remove_idx(&mut self, idx: Idx) -> Option<P> {
        let hash = self.meta(idx).hash;
        self.unlink(idx);
        self.table_remove(hash, idx);
        if idx & GHOST != 0 {
            self.counts.ghosts -= 1;
            self.free_ghost_slot(idx);
            None
        } else {
            let (meta, payload, _) = self.free_resident_slot(idx);
            let w = u64::from(meta.weight);
            self.counts.resident -= 1;
            self.counts.resident_weight -= w;
            if meta.is_hot() {
                self.counts.hot -= 1;
                self.counts.hot_weight -= w;
            }
            Some(payload)
        }
    }

    fn link_at_head(&mut self, idx: Idx) {
        if self.head == NIL {
            let meta = self.meta_mut(idx);
            meta.prev = idx;
            meta.next = idx;
            self.head = idx;
            self.hand_hot = idx;
            self.hand_cold = idx;
            self.hand_test = idx;
            return;
        }
        let head = self.head;
        let after = self.meta(head).next;
        let meta = self.meta_mut(idx);
        meta.prev = head;
        meta.next = after;
        self.meta_mut(head).next = idx;
        self.meta_mut(after).prev = idx;
        self.head = idx;
    }

    /// Takes `idx` off the clock; hands on it move to the next entry.
    fn unlink(&mut self, idx: Idx) {
        let (prev, next) = {
            let m = self.meta(idx);
            (m.prev, m.next)
        };
        if next == idx {
            self.head = NIL;
            self.hand_hot = NIL;
            self.hand_cold = NIL;
            self.hand_test = NIL;
            return;
        }
        self.meta_mut(prev).next = next;
        self.meta_mut(next).prev = prev;
        if self.head == idx {
            self.head = prev;
        }
        for hand in [&mut self.hand_hot, &mut self.hand_cold, &mut self.hand_test] {
            if *hand == idx {
                *hand = next;
            }
        }
    }

    fn move_to_head(&mut self, idx: Idx) {
        self.unlink(idx);
        self.link_at_head(idx);
    }

    /// Puts `new` in `old`'s place on the clock and in the table.
    fn replace(&mut self, old: Idx, new: Idx) {
        let (prev, next) = {
            let m = self.meta(old);
            (m.prev, m.next)
        };
        let (prev, next) = if next == old {
            (new, new)
        } else {
            (prev, next)
        };
        let meta = self.meta_mut(new);
        meta.prev = prev;
        meta.next = next;
        if next != new {
            self.meta_mut(prev).next = new;
            self.meta_mut(next).prev = new;
        }
        for hand in [
            &mut self.head,
            &mut self.hand_hot,
            &mut self.hand_cold,
            &mut self.hand_test,
        ] {
            if *hand == old {
                *hand = new;
            }
        }
        let hash = self.meta(old).hash;
        if let Ok(entry) = self.table.find_entry(hash, |&i| i == old) {
            *entry.into_mut() = new;
        }
    }

    fn table_remove(&mut self, hash: u64, idx: Idx) {
        if let Ok(entry) = self.table.find_entry(hash, |&i| i == idx) {
            entry.remove();
        }
    }

    // ----- slabs ---------------------------------------------------------------------

    fn alloc_resident(&mut self, meta: Meta, resident: Resident<P>) -> Idx {
        if self.free_resident != NIL {
            let idx = self.free_resident;
            let i = idx as usize;
            self.free_resident = self.slot_meta[i].next;
            self.slot_meta[i] = meta;
            self.slots[i] = resident;
            self.deadline[i] = 0;
            idx
        } else {
            let idx = self.slots.len() as Idx;
            assert!(idx < GHOST, "more than 2^31 entries in one shard");
            self.slots.push(resident);
            self.slot_meta.push(meta);
            self.deadline.push(0);
            idx
        }
    }

    /// Frees a resident slot; returns its metadata, payload and flags.
    fn free_resident_slot(&mut self, idx: Idx) -> (Meta, P, u8) {
        if self.last_admitted == idx {
            self.last_admitted = NIL;
        }
        let i = idx as usize;
        let mut free = Meta::new(0, 0, FREE);
        free.next = self.free_resident;
        self.free_resident = idx;
        let meta = std::mem::replace(&mut self.slot_meta[i], free);
        let r = &mut self.slots[i];
        (meta, std::mem::take(&mut r.payload), r.flags)
    }

    fn alloc_ghost(&mut self, meta: Meta) -> Idx {
        if self.free_ghost != NIL {
            let i = self.free_ghost & !GHOST;
            self.free_ghost = self.ghosts[i as usize].next;
            self.ghosts[i as usize] = meta;
            i | GHOST
        } else {
            let i = self.ghosts.len() as Idx;
            assert!(i < GHOST, "more than 2^31 ghosts in one shard");
            self.ghosts.push(meta);
            i | GHOST
        }
    }

    fn free_ghost_slot(&mut self, idx: Idx) {
        let meta = &mut self.ghosts[(idx & !GHOST) as usize];
        meta.state = FREE;
        meta.next = self.free_ghost;
        self.free_ghost = idx;
    }
}

fn hash_of(slot_meta: &[Meta], ghosts: &[Meta], idx: Idx) -> u64 {
    if idx & GHOST != 0 {
        ghosts[(idx & !GHOST) as usize].hash
    } else {
        slot_meta[idx as usize].hash
    }
}

#[cfg(any(test, fuzzing, feature = "validate"))]
impl<P: Default> ClockPro<P> {
    /// Recounts every state and weight by walking the clock, and checks the links,
    /// the hands, the table and the bounds. Panics with a description on a violation.
    pub(crate) fn validate(&self) {
        let mut seen = Counts::default();
        let mut on_clock = 0usize;
        if self.head == NIL {
            assert_eq!(self.table.len(), 0, "empty clock, non-empty table");
            assert!(self.hand_hot == NIL && self.hand_cold == NIL && self.hand_test == NIL);
        } else {
            let mut hands = [false; 3];
            let mut i = self.head;
            loop {
                let m = self.meta(i);
                assert_eq!(self.meta(m.next).prev, i, "broken link at {i}");
                assert_eq!(m.state & FREE, 0, "free slot {i} on the clock");
                assert_eq!(self.find(m.hash), Some(i), "entry {i} not in the table");
                if i & GHOST != 0 {
                    assert!(!m.is_hot() && m.in_test(), "ghost {i} must be cold in test");
                    seen.ghosts += 1;
                } else {
                    assert_eq!(
                        self.slots[i as usize].weight, m.weight,
                        "weight copy of {i}"
                    );
                    seen.resident += 1;
                    seen.resident_weight += u64::from(m.weight);
                    if m.is_hot() {
                        seen.hot += 1;
                        seen.hot_weight += u64::from(m.weight);
                    }
                }
                hands[0] |= i == self.hand_hot;
                hands[1] |= i == self.hand_cold;
                hands[2] |= i == self.hand_test;
                on_clock += 1;
                assert!(on_clock <= self.table.len(), "clock longer than the table");
                i = m.next;
                if i == self.head {
                    break;
                }
            }
            assert_eq!(hands, [true; 3], "a hand is off the clock");
        }
        assert_eq!(
            on_clock,
            self.table.len(),
            "table holds entries not on the clock"
        );
        assert_eq!(seen, self.counts, "counters disagree with the clock");
        assert!(
            self.counts.resident_weight <= self.capacity,
            "over capacity"
        );
        assert!(
            self.counts.ghosts <= self.max_ghosts().max(1),
            "{} ghosts over the bound {}",
            self.counts.ghosts,
            self.max_ghosts()
        );
        let used = self
            .slot_meta
            .iter()
            .filter(|m| m.state & FREE == 0)
            .count();
        assert_eq!(used, self.counts.resident, "leaked resident slots");
        let live_ghosts = self.ghosts.iter().filter(|m| m.state & FREE == 0).count();
        assert_eq!(live_ghosts, self.counts.ghosts, "leaked ghost slots");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    fn access(p: &mut ClockPro<u64>, key: u64, weight: u32) -> bool {
        if let Some(idx) = p.find_resident(key, |&k| k == key) {
            p.touch(idx);
            return true;
        }
        p.insert(key, weight, 0, key, false, &mut |e: Evicted<u64>| {
            assert_ne!(
                e.payload, key,
                "an entry being admitted is never its own victim"
            )
        });
        false
    }

    #[test]
    fn resident_struct_sizes() {
        assert_eq!(std::mem::size_of::<Meta>(), 24);
        assert_eq!(std::mem::size_of::<Resident<u64>>(), 64);
    }

    #[test]
    fn warm_up_fills_hot_space_first() {
        let mut p = ClockPro::<u64>::new(100);
        for k in 0..98 {
            access(&mut p, k, 1);
        }
        assert_eq!(p.counts().hot, 98);
        access(&mut p, 1000, 1);
        assert_eq!(p.counts().hot, 98, "the minimum cold space is kept cold");
        p.validate();
    }

    #[test]
    fn scan_does_not_flush_hot_entries() {
        let mut p = ClockPro::<u64>::new(100);
        for _ in 0..3 {
            for k in 0..50 {
                access(&mut p, k, 1);
            }
        }
        for k in 1000..100_000 {
            access(&mut p, k, 1);
        }
        p.validate();
        let kept = (0..50)
            .filter(|&k| p.find_resident(k, |_| true).is_some())
            .count();
        assert!(
            kept >= 45,
            "a one-off scan evicted {} of 50 hot keys",
            50 - kept
        );
    }

    #[test]
    fn random_weighted_sequences_keep_invariants() {
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let cap = rng.random_range(1..400);
            let mut p = ClockPro::<u64>::new(cap);
            for _ in 0..4000 {
                let key = rng.random_range(0..300u64);
                match rng.random_range(0..10) {
                    0 => {
                        p.remove(key);
                    }
                    1 if p.find_resident(key, |_| true).is_some() => {
                        let w = rng.random_range(1..=cap.min(50)) as u32;
                        let idx = p.find_resident(key, |_| true).unwrap();
                        p.reweigh(idx, w, &mut |_| {});
                    }
                    _ => {
                        let w = rng.random_range(1..=cap.min(20)) as u32;
                        access(&mut p, key, w);
                    }
                }
                p.validate();
            }
        }
    }
}
