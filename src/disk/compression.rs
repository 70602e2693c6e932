//! Per-record zstd compression, and the gate that stops trying it on data
//! that does not compress.
//!
//! Trying costs: zstd on a 512-byte sample of each incompressible 4 KiB value
//! was a fifth of an insert-bound profile (benchmarks.md §6). The gate backs
//! off after values keep failing to shrink: it then tries one value in 2, 4,
//! ... up to [`MAX_PERIOD`], and tries every value again as soon as one
//! shrinks. The price is space, never correctness: while it backs off, up to
//! `MAX_PERIOD - 1` compressible values in a row may be stored raw.

use crate::sync::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// Values at least twice this long are compressed only if this much of their
/// start shrinks.
const COMPRESSION_SAMPLE: usize = 512;

/// Failures in a row after which the gate starts skipping values.
const FAILURES_BEFORE_BACKOFF: u32 = 4;

/// The most values the gate lets by untried between two tries.
const MAX_PERIOD: u32 = 64;

thread_local! {
    /// zstd contexts, one pair a thread: making one costs more than
    /// compressing a 4 KiB value (measured: 23% of an insert-bound profile).
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// The pacing window: compression's time is budgeted per this many nanoseconds.
const WINDOW_NS: u64 = 50_000_000;

/// Decides which values are worth a compression attempt, and paces
/// compression so that inserts do not run slower for it (see [`Pace`]).
/// Shared by the threads writing to one tier; its state is relaxed counters
/// (a race costs one try more or less, nothing else).
pub(super) struct Gate {
    /// Values in a row that did not shrink (saturating).
    failures: AtomicU32,
    /// Counts values offered while backing off, to pick the one tried.
    offered: AtomicU32,
    pace: Pace,
}

/// How much of the writers' time compression may take while the flusher
/// keeps up. zstd compresses 4 KiB text at about 200 MB/s a core, a fraction
/// of what the flusher writes (benchmarks.md §15), so compressing every value
/// would make compressible values the slowest to insert. Within a window of
/// [`WINDOW_NS`], the writers together may spend `budget` nanoseconds
/// compressing; past it, values are stored raw until the window ends. A
/// writer about to wait for a flusher that is behind compresses outside the
/// budget: that costs it nothing it would not spend waiting, and it cuts
/// what the flusher has to write.
struct Pace {
    epoch: Instant,
    /// Where the current window began, in nanoseconds after `epoch`.
    window: AtomicU64,
    /// Nanoseconds spent compressing since then.
    spent: AtomicU64,
    /// Nanoseconds a window may spend; `u64::MAX`: no limit (no clock reads).
    budget: u64,
    /// Values stored raw because the budget was spent.
    paced: AtomicU64,
}

impl Pace {
    fn new(share: f64) -> Pace {
        let budget = share * WINDOW_NS as f64;
        Pace {
            epoch: Instant::now(),
            window: AtomicU64::new(0),
            spent: AtomicU64::new(0),
            // `as` saturates: an infinite share is no limit.
            budget: if budget >= u64::MAX as f64 {
                u64::MAX
            } else {
                budget as u64
            },
            paced: AtomicU64::new(0),
        }
    }

    fn unlimited(&self) -> bool {
        self.budget == u64::MAX
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Whether a compression may start now: this window has budget left.
    fn allows(&self) -> bool {
        if self.unlimited() {
            return true;
        }
        let now = self.now();
        if now.saturating_sub(self.window.load(Ordering::Relaxed)) >= WINDOW_NS {
            self.window.store(now, Ordering::Relaxed);
            self.spent.store(0, Ordering::Relaxed);
        }
        self.spent.load(Ordering::Relaxed) < self.budget
    }

    fn spend(&self, since: Option<u64>) {
        if let Some(since) = since {
            let took = self.now().saturating_sub(since);
            self.spent.fetch_add(took, Ordering::Relaxed);
        }
    }
}

impl Default for Gate {
    /// A gate whose compression is not paced.
    fn default() -> Gate {
        Gate::new(f64::INFINITY)
    }
}

impl Gate {
    /// A gate whose writers may spend `share` of one core compressing while
    /// the flusher keeps up (`f64::INFINITY`: compress whatever shrinks).
    pub(super) fn new(share: f64) -> Gate {
        Gate {
            failures: AtomicU32::new(0),
            offered: AtomicU32::new(0),
            pace: Pace::new(share),
        }
    }

    /// `value` compressed, if the gate lets it be tried and it shrinks.
    /// `unbudgeted`: the writer is about to wait for the flusher, so the
    /// compression is not counted against the budget, nor held to it.
    pub(super) fn compress(&self, value: &[u8], unbudgeted: bool) -> Option<Vec<u8>> {
        if !self.should_try() {
            return None;
        }
        if unbudgeted {
            return self.try_compress(value);
        }
        if !self.pace.allows() {
            self.pace.paced.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let since = (!self.pace.unlimited()).then(|| self.pace.now());
        let shrunk = self.try_compress(value);
        self.pace.spend(since);
        shrunk
    }

    fn try_compress(&self, value: &[u8]) -> Option<Vec<u8>> {
        let shrunk = worth_compressing(value)
            .then(|| compress(value))
            .flatten()
            .filter(|c| c.len() < value.len());
        self.tried(shrunk.is_some());
        shrunk
    }

    /// Values stored raw, since the gate was made, because compression's
    /// budget was spent.
    pub(super) fn paced(&self) -> u64 {
        self.pace.paced.load(Ordering::Relaxed)
    }

    fn should_try(&self) -> bool {
        let failures = self.failures.load(Ordering::Relaxed);
        if failures < FAILURES_BEFORE_BACKOFF {
            return true;
        }
        let period = 1u32 << (failures - FAILURES_BEFORE_BACKOFF + 1).min(MAX_PERIOD.ilog2());
        self.offered
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(period)
    }

    fn tried(&self, shrank: bool) {
        if shrank {
            self.failures.store(0, Ordering::Relaxed);
        } else {
            let _ = self
                .failures
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| {
                    Some(
                        f.saturating_add(1)
                            .min(FAILURES_BEFORE_BACKOFF + MAX_PERIOD.ilog2()),
                    )
                });
        }
    }
}

/// Whether `value` looks compressible: a long value whose first
/// [`COMPRESSION_SAMPLE`] bytes do not shrink is stored raw without trying
/// the rest. Trying zstd on a whole 4 KiB incompressible value was 18% of an
/// insert-bound profile; the sample costs an eighth of that. The price: a
/// value that is random at its start and repetitive after it is stored raw.
fn worth_compressing(value: &[u8]) -> bool {
    if value.len() < 2 * COMPRESSION_SAMPLE {
        return true;
    }
    let sample = &value[..COMPRESSION_SAMPLE];
    compress(sample).is_some_and(|c| c.len() < sample.len())
}

/// `value` compressed with zstd level 1 (`None` if zstd fails).
fn compress(value: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with_borrow_mut(|c| {
        if c.is_none() {
            *c = zstd::bulk::Compressor::new(1).ok();
        }
        c.as_mut()?.compress(value).ok()
    })
}

/// `stored` decompressed into at most `raw_len` bytes (`None` if it is not valid zstd).
pub(super) fn decompress(stored: &[u8], raw_len: usize) -> Option<Vec<u8>> {
    DECOMPRESSOR.with_borrow_mut(|d| {
        if d.is_none() {
            *d = zstd::bulk::Decompressor::new().ok();
        }
        d.as_mut()?.decompress(stored, raw_len).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn the_gate_backs_off_on_noise_and_comes_back_on_text() {
        let gate = Gate::default();
        // Values that never shrink: after a few, at most one in MAX_PERIOD
        // is tried.
        let tried = (0..6400)
            .filter(|_| {
                let t = gate.should_try();
                if t {
                    gate.tried(false);
                }
                t
            })
            .count();
        assert!(
            tried <= 6400 / MAX_PERIOD as usize + 20,
            "tried {tried} of 6400"
        );
        assert!(tried >= 6400 / MAX_PERIOD as usize, "tried {tried} of 6400");
        // Through `compress`: noise keeps it backed off; then text is tried
        // within one period, shrinks, and every value after it is compressed.
        for i in 0..100 {
            assert!(gate.compress(&noise(i, 4096), false).is_none());
        }
        let text = b"larder keeps hot data close. ".repeat(200);
        let compressed: Vec<bool> = (0..200)
            .map(|_| gate.compress(&text, false).is_some())
            .collect();
        let first = compressed
            .iter()
            .position(|&c| c)
            .expect("text never tried");
        assert!(first < MAX_PERIOD as usize, "first compressed at {first}");
        assert!(compressed[first..].iter().all(|&c| c));
    }

    #[test]
    fn a_spent_budget_stores_values_raw_until_the_flusher_falls_behind() {
        let text = b"larder keeps hot data close. ".repeat(140);
        // No budget: nothing is compressed while the flusher keeps up ...
        let gate = Gate::new(0.0);
        assert!((0..10).all(|_| gate.compress(&text, false).is_none()));
        assert_eq!(gate.paced(), 10);
        // ... and everything is before a writer waits for it.
        assert!((0..10).all(|_| gate.compress(&text, true).is_some()));
        assert_eq!(gate.paced(), 10);

        // A budget of 50 ns a window (50 ms): the first compression spends
        // it, and the rest of the window's values are stored raw.
        let gate = Gate::new(1e-6);
        let compressed = (0..2000)
            .filter(|_| gate.compress(&text, false).is_some())
            .count();
        assert!(compressed >= 1, "nothing compressed");
        assert!(gate.paced() >= 1, "nothing paced ({compressed} compressed)");
        assert_eq!(compressed as u64 + gate.paced(), 2000);

        // No limit: everything that shrinks is compressed, no clock kept.
        let gate = Gate::new(f64::INFINITY);
        assert!((0..100).all(|_| gate.compress(&text, false).is_some()));
        assert_eq!(gate.paced(), 0);
    }

    #[test]
    fn long_values_are_sampled_before_compressing() {
        let text = b"larder keeps hot data close. ".repeat(200);
        assert!(text.len() >= 2 * COMPRESSION_SAMPLE);
        assert!(worth_compressing(&text));
        assert!(!worth_compressing(&noise(1, 4096)));
        // Short values are always tried whole.
        assert!(worth_compressing(&noise(1, 2 * COMPRESSION_SAMPLE - 1)));
        // The documented price: noise at the start hides repetition after it.
        let mut mixed = noise(2, COMPRESSION_SAMPLE);
        mixed.extend_from_slice(&text);
        assert!(!worth_compressing(&mixed));
    }
}
