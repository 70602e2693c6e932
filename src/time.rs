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

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
