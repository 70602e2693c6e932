//! Per-record zstd compression, and the gate that stops trying it on data
//! that does not compress.
//!
//! Trying costs: zstd on a 512-byte sample of each incompressible 4 KiB value
//! was a fifth of an insert-bound profile (benchmarks.md §6). The gate backs
//! off after values keep failing to shrink: it then tries one value in 2, 4,
//! ... up to [`MAX_PERIOD`], and tries every value again as soon as one
//! shrinks. The price is space, never correctness: while it backs off, up to
//! `MAX_PERIOD - 1` compressible values in a row may be stored raw.

use crate::sync::{AtomicU32, Ordering};

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

/// Decides which values are worth a compression attempt. DiskState by the
/// threads writing to one tier; its state is two relaxed counters (a race
/// costs one try more or less, nothing else).
#[derive(Default)]
pub(super) struct Gate {
    /// Values in a row that did not shrink (saturating).
    failures: AtomicU32,
    /// Counts values offered while backing off, to pick the one tried.
    offered: AtomicU32,
}

impl Gate {
    /// `value` compressed, if the gate lets it be tried and it shrinks.
    pub(super) fn compress(&self, value: &[u8]) -> Option<Vec<u8>> {
        if !self.should_try() {
            return None;
        }
        let shrunk = worth_compressing(value)
            .then(|| compress(value))
            .flatten()
            .filter(|c| c.len() < value.len());
        self.tried(shrunk.is_some());
        shrunk
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
            assert!(gate.compress(&noise(i, 4096)).is_none());
        }
        let text = b"larder keeps hot data close. ".repeat(200);
        let compressed: Vec<bool> = (0..200).map(|_| gate.compress(&text).is_some()).collect();
        let first = compressed
            .iter()
            .position(|&c| c)
            .expect("text never tried");
        assert!(first < MAX_PERIOD as usize, "first compressed at {first}");
        assert!(compressed[first..].iter().all(|&c| c));
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
