//! The hands: `HAND_cold` makes room, `HAND_hot` turns hot entries cold,
//! `HAND_test` ends test periods; and the adaptation of the cold space.

use super::*;

impl<P: Default> ClockPro<P> {
    /// Runs `HAND_cold` until `need` more weight fits.
    pub(super) fn make_room(&mut self, need: u64, evicted: &mut impl FnMut(Evicted<P>)) {
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
    pub(super) fn seek_resident_cold(&self, from: Idx) -> Idx {
        let mut i = if from == NIL { self.head } else { from };
        while !self.is_resident_cold(i) {
            i = self.meta(i).next;
        }
        i
    }

    pub(super) fn check_adaptive_bound(&mut self) {
        let cold = self.capacity.saturating_sub(self.counts.hot_weight);
        if (self.credits > 0 && cold >= self.max_cold)
            || (self.credits < 0 && cold <= self.min_cold)
        {
            self.credits = 0;
        }
    }

    /// Turns resident cold entry `c` hot and moves it to the head.
    pub(super) fn promote(&mut self, c: Idx) {
        self.clear_referenced(c);
        let meta = self.meta_mut(c);
        meta.state = HOT | PROVED;
        let w = u64::from(meta.weight);
        self.counts.hot += 1;
        self.counts.hot_weight += w;
        self.move_to_head(c);
    }

    /// Evicts resident cold entry `c`: its ghost stays if it is in its test period.
    pub(super) fn evict(&mut self, c: Idx, evicted: &mut impl FnMut(Evicted<P>)) {
        let meta = self.meta(c);
        let (hash, weight, in_test) = (meta.hash, meta.weight, meta.in_test());
        let proved_reuse = self.referenced(c) || meta.state & PROVED != 0;
        let deadline = self.deadline(c);
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
    pub(super) fn run_hand_hot(&mut self, cold: Idx) -> HotRun {
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
    pub(super) fn run_hand_test(&mut self, step: bool) {
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
    pub(super) fn max_ghosts(&self) -> usize {
        let c = &self.counts;
        if c.resident_weight == 0 {
            return c.resident;
        }
        let full = u128::from(self.capacity) * c.resident as u128 / u128::from(c.resident_weight);
        (full as usize).max(c.resident)
    }

    // ----- the ring ------------------------------------------------------------------
}
