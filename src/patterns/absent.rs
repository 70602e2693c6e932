//! Negative caching: keys a loader found nothing for, remembered for a while
//! (`CacheBuilder::absent_ttl`) so that `optionally_get_with` does not ask the
//! backing store again for each of them.
//!
//! Markers live in memory only, in a bounded striped map: they are an
//! optimisation, never a value, so none is persisted (after a restart an
//! absent key is loaded once more) and a full map records no more markers
//! until some expire. An insert or removal of a key clears its marker, so a
//! key written after it was found absent is never hidden by the marker.

use crate::sync::{AtomicUsize, Mutex, Ordering};
use std::collections::HashMap;

type Stripe = Mutex<HashMap<Box<[u8]>, u64>>;

pub(crate) struct Absent {
    stripes: Box<[Stripe]>,
    /// Markers held, over all stripes (0 lets writes skip the stripes).
    held: AtomicUsize,
    max_per_stripe: usize,
}

impl Absent {
    /// Room for about `max` markers over `stripes` stripes.
    pub(crate) fn new(stripes: usize, max: usize) -> Self {
        let stripes = stripes.max(1);
        Absent {
            stripes: (0..stripes).map(|_| Mutex::default()).collect(),
            held: AtomicUsize::new(0),
            max_per_stripe: max.div_ceil(stripes).max(1),
        }
    }

    fn stripe(&self, hash: u64) -> &Stripe {
        &self.stripes[(hash >> 32) as usize % self.stripes.len()]
    }

    /// Whether `key` (of `hash`) was found absent and its marker has not
    /// expired at `now`.
    pub(crate) fn holds(&self, hash: u64, key: &[u8], now: u64) -> bool {
        if self.held.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let mut stripe = self.stripe(hash).lock();
        match stripe.get(key) {
            Some(&deadline) if deadline > now => true,
            Some(_) => {
                stripe.remove(key);
                self.held.fetch_sub(1, Ordering::Relaxed);
                false
            }
            None => false,
        }
    }

    /// Remembers `key` as absent until `deadline`. Whether it was recorded
    /// (a full stripe first drops its expired markers, then records nothing).
    pub(crate) fn remember(&self, hash: u64, key: &[u8], now: u64, deadline: u64) -> bool {
        let mut stripe = self.stripe(hash).lock();
        if stripe.len() >= self.max_per_stripe && !stripe.contains_key(key) {
            let before = stripe.len();
            stripe.retain(|_, &mut d| d > now);
            self.held
                .fetch_sub(before - stripe.len(), Ordering::Relaxed);
            if stripe.len() >= self.max_per_stripe {
                return false;
            }
        }
        if stripe.insert(key.into(), deadline).is_none() {
            self.held.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Forgets every marker.
    pub(crate) fn clear(&self) {
        for stripe in &self.stripes {
            let mut stripe = stripe.lock();
            self.held.fetch_sub(stripe.len(), Ordering::Relaxed);
            stripe.clear();
        }
    }

    /// Forgets `key`'s marker, if it has one (it was written or removed).
    pub(crate) fn forget(&self, hash: u64, key: &[u8]) {
        if self.held.load(Ordering::Relaxed) == 0 {
            return;
        }
        if self.stripe(hash).lock().remove(key).is_some() {
            self.held.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_expire_are_forgotten_and_stay_bounded() {
        let a = Absent::new(1, 2);
        assert!(!a.holds(1, b"x", 0));
        assert!(a.remember(1, b"x", 0, 10));
        assert!(a.holds(1, b"x", 9));
        assert!(!a.holds(1, b"x", 10), "expired at its deadline");
        assert_eq!(a.held.load(Ordering::Relaxed), 0, "and dropped");
        assert!(a.remember(1, b"x", 0, 10) && a.remember(1, b"y", 0, 20));
        assert!(!a.remember(1, b"z", 5, 30), "full of live markers");
        assert!(a.remember(1, b"z", 15, 30), "x expired: room again");
        assert!(!a.holds(1, b"x", 15) && a.holds(1, b"z", 15));
        a.forget(1, b"z");
        assert!(!a.holds(1, b"z", 15), "forgotten");
        assert_eq!(a.held.load(Ordering::Relaxed), 1);
    }
}
