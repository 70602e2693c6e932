//! Sampled operation latencies for [`Stats::latency`](crate::Stats::latency):
//! one operation in [`SAMPLE`] of each thread is timed (two clock reads),
//! and its time goes into a histogram of atomic counters with four buckets
//! per power of two (a bucket's upper bound is at most 25% above any time in it), so a
//! snapshot gives p50, p99 and p99.9 without a lock. Loads are timed every
//! time (a loader's time dwarfs two clock reads).

use crate::sync::{AtomicU64, Ordering};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// One operation in this many (per thread) is timed.
pub const SAMPLE: u32 = 64;

const SUB_BITS: u32 = 2;
const BUCKETS: usize = 64 << SUB_BITS;

thread_local! {
    static TICK: Cell<u32> = const { Cell::new(0) };
    static DISK_TICK: Cell<u32> = const { Cell::new(0) };
}

fn tick(t: &Cell<u32>) -> bool {
    let n = t.get().wrapping_add(1);
    t.set(n);
    n.is_multiple_of(SAMPLE)
}

/// Whether this thread's next operation is one to time.
#[inline]
pub(crate) fn sampled() -> bool {
    TICK.with(tick)
}

/// Whether this thread's next disk read is one to time (counted apart from
/// the operations, which a disk read is part of).
pub(crate) fn sampled_disk() -> bool {
    DISK_TICK.with(tick)
}

/// The bucket of a time of `ns` nanoseconds.
fn bucket(ns: u64) -> usize {
    if ns < 1 << SUB_BITS {
        return ns as usize;
    }
    let exp = 63 - ns.leading_zeros();
    let sub = (ns >> (exp - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    ((exp << SUB_BITS) as u64 + sub) as usize
}

/// The largest time (ns) bucket `b` holds.
fn upper(b: usize) -> u64 {
    if b < 1 << SUB_BITS {
        return b as u64;
    }
    let (exp, sub) = ((b >> SUB_BITS) as u32, (b & ((1 << SUB_BITS) - 1)) as u64);
    let base = u128::from((1u64 << SUB_BITS) + sub + 1) << (exp - SUB_BITS);
    u64::try_from(base - 1).unwrap_or(u64::MAX)
}

/// One operation's times.
pub(crate) struct Histogram {
    buckets: Box<[AtomicU64]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Histogram {
    pub(crate) fn record(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket(ns)].fetch_add(1, Ordering::Relaxed);
    }

    /// Records the time since `start`.
    pub(crate) fn since(&self, start: Instant) {
        self.record(start.elapsed());
    }

    pub(crate) fn snapshot(&self) -> Percentiles {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let at = |q: f64| {
            if total == 0 {
                return Duration::ZERO;
            }
            let rank = ((total as f64 * q).ceil() as u64).clamp(1, total);
            let mut seen = 0;
            for (b, &c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return Duration::from_nanos(upper(b));
                }
            }
            Duration::from_nanos(upper(BUCKETS - 1))
        };
        Percentiles {
            samples: total,
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
        }
    }
}

/// Percentiles of one operation's sampled times: each is the upper bound of
/// the histogram bucket it falls in (at most 25% above the true value).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Percentiles {
    /// Operations timed (about one in [`SAMPLE`], loads all).
    pub samples: u64,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
}

/// Sampled latencies per operation and tier, in [`Stats`](crate::Stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LatencyStats {
    /// `get`, whichever tier answered (or neither).
    pub get: Percentiles,
    /// The disk tier's part of a `get` that missed memory: the index
    /// lookup, the read and the check of the record.
    pub disk_read: Percentiles,
    /// `insert` and `insert_with_ttl` (the disk tier's write included when
    /// it is the caller's: under write-behind, the record's preparation).
    pub insert: Percentiles,
    /// `remove`.
    pub remove: Percentiles,
    /// Loader calls (every one timed).
    pub load: Percentiles,
}

/// The histograms of one cache.
#[derive(Default)]
pub(crate) struct Latencies {
    pub(crate) get: Histogram,
    pub(crate) disk_read: Histogram,
    pub(crate) insert: Histogram,
    pub(crate) remove: Histogram,
    pub(crate) load: Histogram,
}

impl Latencies {
    pub(crate) fn snapshot(&self) -> LatencyStats {
        LatencyStats {
            get: self.get.snapshot(),
            disk_read: self.disk_read.snapshot(),
            insert: self.insert.snapshot(),
            remove: self.remove.snapshot(),
            load: self.load.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_bound_their_values_within_a_quarter() {
        let mut last = 0;
        for ns in (0..20_000u64).chain([u64::MAX / 3, u64::MAX]) {
            let b = bucket(ns);
            assert!(b >= last || ns > 20_000, "bucket order at {ns}");
            last = b;
            let up = upper(b);
            assert!(up >= ns, "{ns} above its bucket's bound {up}");
            assert!(up as f64 <= ns as f64 * 1.25 + 1.0, "{ns}: bound {up}");
        }
    }

    #[test]
    fn percentiles_of_known_times() {
        let h = Histogram::default();
        for us in 1..=1_000u64 {
            h.record(Duration::from_micros(us));
        }
        let p = h.snapshot();
        assert_eq!(p.samples, 1_000);
        let within = |d: Duration, us: f64| {
            let got = d.as_secs_f64() * 1e6;
            assert!(got >= us && got <= us * 1.25, "{got} µs for {us}");
        };
        within(p.p50, 500.0);
        within(p.p99, 990.0);
        within(p.p999, 999.0);
        assert_eq!(Histogram::default().snapshot(), Percentiles::default());
    }
}
