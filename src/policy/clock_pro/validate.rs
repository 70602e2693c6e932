//! The invariant checker (`docs/design.md` §3.5), compiled for tests,
//! fuzzing and the `validate` feature.

use super::*;

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
