//! Probabilistic early expiration (XFetch: Vattani, Chierichetti and
//! Lowenstein, "Optimal probabilistic cache stampede prevention", VLDB
//! 2015): a hit on an entry with `left` of its time to live reloads it, on
//! the reading thread, with probability `exp(-left / (delta * beta))`,
//! where `delta` is how long a load takes. The closer the expiry and the
//! slower the load, the likelier; under a steady read load one reader
//! reloads shortly before the expiry and the others keep hitting, so the
//! key never expires under them and no stampede of misses forms.
//!
//! `delta` is an average over this `StoreCache`'s loads (an exponentially
//! weighted one), not a per-key figure: keys whose loads differ much in
//! cost share one estimate. A reader that draws a reload takes the key's
//! stripe lock and reloads only if the entry has not been reloaded
//! meanwhile (its time left did not grow), so concurrent draws make one
//! load.

use super::store::{Store, StoreCache, StoreError};
use crate::sync::{AtomicU64, Ordering};
use bytes::Bytes;
use std::time::{Duration, Instant};

pub(crate) struct XFetch {
    beta: f64,
    /// The average load time, in nanoseconds.
    delta_ns: AtomicU64,
    pub(crate) early: AtomicU64,
}

impl XFetch {
    pub(crate) fn new(beta: f64) -> Self {
        XFetch {
            beta,
            delta_ns: AtomicU64::new(0),
            early: AtomicU64::new(0),
        }
    }

    /// Folds a load's duration into the average (weight 1/8).
    pub(crate) fn loaded(&self, took: Duration) {
        let took = took.as_nanos().min(u64::MAX as u128) as u64;
        let old = self.delta_ns.load(Ordering::Relaxed);
        let new = if old == 0 {
            took
        } else {
            old - old / 8 + took / 8
        };
        self.delta_ns.store(new, Ordering::Relaxed);
    }

    /// Whether a hit with `left` to live reloads now.
    fn draw(&self, left: Duration) -> bool {
        let delta = self.delta_ns.load(Ordering::Relaxed) as f64 * 1e-9;
        if delta <= 0.0 {
            return false;
        }
        // -ln(u), u uniform in (0, 1]: an exponential draw.
        let u = (random_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        let exp = -(1.0 - u).ln();
        left.as_secs_f64() <= delta * self.beta * exp
    }
}

/// A per-thread xorshift generator (quality enough for a coin flip).
fn random_u64() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            crate::key::hash_key(format!("{:?}", std::thread::current().id()).as_bytes()) | 1,
        );
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

impl<S: Store> StoreCache<S> {
    /// Turns on probabilistic early expiration (XFetch) with `beta`
    /// (1.0 is the paper's choice; larger reloads earlier): a hit close to
    /// its expiry may reload the key on the reading thread, so a key read
    /// steadily does not expire under its readers. Needs entries with a
    /// time to live (the cache's). A `beta` that is not a positive finite
    /// number leaves it off.
    pub fn early_expiration(mut self, beta: f64) -> Self {
        if beta.is_finite() && beta > 0.0 {
            self.set_xfetch(XFetch::new(beta));
        }
        self
    }

    /// Hits that reloaded early (XFetch).
    pub fn early_reloads(&self) -> u64 {
        self.xfetch().map_or(0, |x| x.early.load(Ordering::Relaxed))
    }

    /// After a hit on `key` with value `hit`: XFetch's draw, and the reload
    /// if it says so. Returns the value to serve (`None`: the store no
    /// longer has the key).
    pub(crate) fn maybe_reload_early(
        &self,
        xfetch: &XFetch,
        key: &[u8],
        hit: Bytes,
    ) -> Result<Option<Bytes>, StoreError<S::Error>> {
        let Some(Some(left)) = self.cache().time_left(key) else {
            return Ok(Some(hit));
        };
        if !xfetch.draw(left) {
            return Ok(Some(hit));
        }
        let _order = self.stripe(key).lock();
        if let Some(Some(now_left)) = self.cache().time_left(key)
            && now_left > left
        {
            return Ok(Some(self.cached(key).unwrap_or(hit))); // reloaded meanwhile
        }
        let epoch = self.epoch();
        let start = Instant::now();
        let loaded = self.load(key);
        xfetch.loaded(start.elapsed());
        xfetch.early.fetch_add(1, Ordering::Relaxed);
        match loaded {
            Ok(Some(value)) => {
                self.cache_value(key, value.clone(), Some(epoch))?;
                Ok(Some(value))
            }
            Ok(None) => {
                self.cache().remove(key);
                Ok(None)
            }
            Err(e) => {
                // Stale-if-error: the entry has not expired yet.
                log::debug!("an early reload failed: {e}");
                Ok(Some(hit))
            }
        }
    }
}
