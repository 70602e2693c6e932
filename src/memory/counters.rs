//! The memory tier's lookup counters (hits and misses), counted without a
//! locked instruction on the hit path.
//!
//! A shared atomic counter costs every lookup a locked read-modify-write
//! (about a fifth of a hit's time, measured in docs/benchmarks.md §15). Here
//! each of the first [`SLOTS`] threads that ever count gets a slot of its own,
//! on its own cache line, and adds to it with a plain load and store: one
//! writer per slot, so no count is lost. Later threads share one more slot
//! and add to it atomically. Readers sum the slots, so a count is exact once
//! its lookup has returned.

use crate::sync::{AtomicU64, AtomicUsize, Ordering};
use crossbeam_utils::CachePadded;

/// Threads with a slot of their own, in the order they first count.
pub(crate) const SLOTS: usize = 32;

/// A thread that has not counted yet.
const UNSET: usize = usize::MAX;

thread_local! {
    /// This thread's slot: `SLOTS` for the shared one, [`UNSET`] before its
    /// first count. Initialised as a constant, so reading it costs no
    /// initialisation check.
    static SLOT: std::cell::Cell<usize> = const { std::cell::Cell::new(UNSET) };
}

#[derive(Default)]
struct Pair {
    hits: AtomicU64,
    misses: AtomicU64,
}

pub(crate) struct Lookups {
    /// The slots of the first `SLOTS` threads.
    own: Box<[CachePadded<Pair>; SLOTS]>,
    /// The slot every later thread shares.
    shared: CachePadded<Pair>,
}

impl Default for Lookups {
    fn default() -> Self {
        Lookups {
            own: Box::new(std::array::from_fn(|_| CachePadded::new(Pair::default()))),
            shared: CachePadded::new(Pair::default()),
        }
    }
}

impl Lookups {
    #[inline]
    fn add(&self, pick: impl Fn(&Pair) -> &AtomicU64) {
        match self.own.get(SLOT.get()) {
            Some(own) => {
                // The slot's one writer: a plain add.
                let counter = pick(own);
                counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            }
            None => self.add_shared_or_first(pick),
        }
    }

    /// A count by a thread with no slot of its own, or by one counting for
    /// the first time (it takes a slot, then counts).
    #[cold]
    fn add_shared_or_first(&self, pick: impl Fn(&Pair) -> &AtomicU64) {
        if SLOT.get() == UNSET {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            SLOT.set(NEXT.fetch_add(1, Ordering::Relaxed).min(SLOTS));
            if SLOT.get() < SLOTS {
                return self.add(pick);
            }
        }
        pick(&self.shared).fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn hit(&self) {
        self.add(|p| &p.hits);
    }

    #[inline]
    pub(crate) fn miss(&self) {
        self.add(|p| &p.misses);
    }

    /// Hits and misses so far.
    pub(crate) fn sum(&self) -> (u64, u64) {
        self.own
            .iter()
            .chain(std::iter::once(&self.shared))
            .fold((0, 0), |(h, m), p| {
                (
                    h + p.hits.load(Ordering::Relaxed),
                    m + p.misses.load(Ordering::Relaxed),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_more_threads_than_slots_are_all_kept() {
        let lookups = Lookups::default();
        let threads = SLOTS + 8;
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for i in 0..10_000 {
                        if i % 4 == 0 {
                            lookups.miss();
                        } else {
                            lookups.hit();
                        }
                    }
                });
            }
        });
        let (hits, misses) = lookups.sum();
        assert_eq!(hits, threads as u64 * 7_500);
        assert_eq!(misses, threads as u64 * 2_500);
    }
}
