//! Reclaim, the disk tier's clock hand: when it runs, which sealed segment
//! it takes, and what becomes of each live record in it. Plain decisions,
//! no threads or files: the flusher does the I/O they call for.
//!
//! * **When**: while the tier holds more segments than its capacity, but a
//!   warm refill may hold it off by a bounded slack.
//! * **Which**: the oldest segment of the probation stream while that stream
//!   holds its share (a tenth of the tier, at least one segment), else the
//!   main stream's oldest (design.md §10.2). A tier too small for two
//!   streams takes the oldest of all.
//! * **What becomes of a record**: one the memory tier holds is dropped
//!   (memory writes it again when it lets go, if the write policy says so);
//!   one with uses left (an L2 hit, or reuse proved in memory) is appended
//!   again with one use fewer, within a budget of half a segment per segment
//!   reclaimed, so that reclaim always frees space; the rest are dropped and
//!   remembered as ghosts.

/// Segments a tier of `max_segments` may hold beyond its capacity while a
/// warm refill runs: a sixteenth, at least one. Reclaim then drops records
/// the refill may not have read yet (those entries come back cold, as
/// misses), so it waits for a refill that keeps up and bounds one that does
/// not.
pub(crate) fn refill_slack(max_segments: usize) -> usize {
    (max_segments / 16).max(1)
}

/// Sealed segments the probation stream keeps before reclaim takes its oldest
/// rather than the main stream's.
pub(crate) fn probation_share(max_segments: usize) -> usize {
    (max_segments / 10).max(1)
}

/// Whether a tier holding `held` segments of at most `max_segments` must
/// reclaim one (`refilling`: a warm refill runs).
pub(crate) fn must_reclaim(held: usize, max_segments: usize, refilling: bool) -> bool {
    let slack = if refilling {
        refill_slack(max_segments)
    } else {
        0
    };
    held > max_segments.saturating_add(slack)
}

/// The segment reclaim takes next, of the sealed ones (id, in the probation
/// stream) listed oldest first.
pub(crate) fn victim(
    sealed: impl Iterator<Item = (u32, bool)> + Clone,
    two_streams: bool,
    max_segments: usize,
) -> Option<u32> {
    let oldest_of = |probation: bool| sealed.clone().find(|s| s.1 == probation).map(|s| s.0);
    if !two_streams {
        // One stream (what an earlier, larger tier left of the other goes
        // first, by age).
        return sealed.clone().next().map(|s| s.0);
    }
    let in_probation = sealed.clone().filter(|s| s.1).count();
    if in_probation >= probation_share(max_segments) {
        oldest_of(true)
    } else {
        oldest_of(false).or_else(|| oldest_of(true))
    }
}

/// What reclaim does with one live record of the segment it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Append it again, with this many uses left.
    Reappend { uses: u8 },
    /// Drop it; `ghost`: remember its key (no tier holds it any more).
    Drop { ghost: bool },
}

/// The verdict on a live record of `len` bytes with `uses` left, that memory
/// holds or not, with `budget` bytes of re-appends left for this segment.
pub(crate) fn verdict(in_memory: bool, uses: u8, len: u32, budget: u64) -> Verdict {
    if in_memory {
        Verdict::Drop { ghost: false }
    } else if uses > 0 && u64::from(len) <= budget {
        Verdict::Reappend { uses: uses - 1 }
    } else {
        Verdict::Drop { ghost: true }
    }
}

/// Bytes of re-appends reclaim allows itself per segment of `segment_size`
/// bytes: half, so that reclaiming a segment always frees at least half of it.
pub(crate) fn reappend_budget(segment_size: u64) -> u64 {
    segment_size / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_wins_then_uses_within_the_budget_then_ghosts() {
        assert_eq!(verdict(true, 3, 10, 100), Verdict::Drop { ghost: false });
        assert_eq!(verdict(false, 3, 10, 100), Verdict::Reappend { uses: 2 });
        assert_eq!(verdict(false, 1, 10, 100), Verdict::Reappend { uses: 0 });
        assert_eq!(verdict(false, 0, 10, 100), Verdict::Drop { ghost: true });
        assert_eq!(
            verdict(false, 2, 101, 100),
            Verdict::Drop { ghost: true },
            "over budget"
        );
        assert_eq!(verdict(false, 2, 100, 100), Verdict::Reappend { uses: 1 });
    }

    #[test]
    fn a_reclaimed_segment_always_frees_space() {
        // However many records have uses, re-appends take at most the budget.
        let mut budget = reappend_budget(64 << 10);
        let mut kept = 0u64;
        for _ in 0..1000 {
            if let Verdict::Reappend { .. } = verdict(false, 3, 500, budget) {
                budget -= 500;
                kept += 500;
            }
        }
        assert!(kept <= (64 << 10) / 2, "{kept}");
    }

    #[test]
    fn probation_goes_first_while_it_holds_its_share() {
        // Ids oldest first: main 1, 3; probation 2, 4.
        let sealed = [(1, false), (2, true), (3, false), (4, true)];
        let it = || sealed.iter().copied();
        // A 20-segment tier: probation's share is 2.
        assert_eq!(victim(it(), true, 20), Some(2));
        // A 30-segment tier: its share is 3; probation holds 2: main goes.
        assert_eq!(victim(it(), true, 30), Some(1));
        // No main segment left: probation's oldest.
        assert_eq!(victim([(4, true)].into_iter(), true, 30), Some(4));
        // One stream: the oldest of all.
        assert_eq!(victim(it(), false, 30), Some(1));
        assert_eq!(victim(std::iter::empty(), true, 30), None);
    }

    #[test]
    fn a_refill_holds_reclaim_off_by_a_bounded_slack() {
        assert!(!must_reclaim(10, 10, false));
        assert!(must_reclaim(11, 10, false));
        assert!(!must_reclaim(11, 10, true), "one segment of slack at least");
        assert!(must_reclaim(12, 10, true));
        assert!(!must_reclaim(106, 100, true) && must_reclaim(107, 100, true));
        assert!(!must_reclaim(usize::MAX, usize::MAX, true), "no overflow");
    }
}
