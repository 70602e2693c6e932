//! Time for TTLs: nanoseconds since the cache was built, from a monotonic clock.

use crate::sync::{Arc, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A clock that only moves when told to: for tests of TTL behaviour.
///
/// ```
/// use larder::{Cache, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let cache = Cache::builder().memory_capacity(1 << 20).clock(clock.clone()).build()?;
/// cache.insert_with_ttl(b"k", "v", Duration::from_secs(5))?;
/// clock.advance(Duration::from_secs(5));
/// assert!(cache.get(b"k").is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock standing at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(nanos(by), Ordering::Relaxed);
    }
}

/// The cache's time source.
#[derive(Clone, Debug)]
pub(crate) enum Clock {
    System(Instant),
    Manual(ManualClock),
}

impl Clock {
    pub(crate) fn system() -> Self {
        Clock::System(Instant::now())
    }

    /// Nanoseconds since the clock's epoch (u64 nanoseconds last 584 years).
    pub(crate) fn now(&self) -> u64 {
        match self {
            Clock::System(epoch) => nanos(epoch.elapsed()),
            Clock::Manual(m) => m.0.load(Ordering::Relaxed),
        }
    }

    /// The deadline of an entry inserted now with `ttl` (never 0, which means "no deadline").
    pub(crate) fn deadline(&self, ttl: Duration) -> u64 {
        self.now().saturating_add(nanos(ttl)).max(1)
    }
}

/// Deadline bit of a sliding entry (time to idle), whose reads move its
/// deadline to the read's time plus the cache's time to idle. In a disk
/// record's `expires_at`, it marks a sliding entry, and a fixed deadline has
/// it clear (rounded down a nanosecond; docs/format.md). In memory a
/// resident flag says which entries slide, and fixed deadlines are exact.
pub(crate) const SLIDING: u64 = 1;
/// Deadline bit of a sliding entry in memory: a read moved the deadline
/// since the entry was last written to disk, whose record holds an older
/// one (memory letting go of it, or a close, rewrites it).
pub(crate) const EXTENDED: u64 = 2;
/// Both bits: a sliding deadline's granularity.
pub(crate) const DEADLINE_BITS: u64 = SLIDING | EXTENDED;

/// A deadline as the disk tier takes it: [`SLIDING`] set for a sliding
/// entry and clear for a fixed one (never 0 unless `deadline` is).
pub(crate) fn disk_deadline(deadline: u64, sliding: bool) -> u64 {
    match deadline {
        0 => 0,
        d if sliding => d | SLIDING,
        d => (d & !SLIDING).max(2),
    }
}

/// A sliding deadline `idle` nanoseconds after `now`, marked [`EXTENDED`]
/// if `extended`.
pub(crate) fn sliding_deadline(now: u64, idle: u64, extended: bool) -> u64 {
    let at = now.saturating_add(idle) & !DEADLINE_BITS;
    at | SLIDING | if extended { EXTENDED } else { 0 }
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
