//! Refresh-ahead (Caffeine's `refreshAfterWrite`): an entry read when it is
//! older than the refresh age is loaded again in the background, so a key
//! read steadily never expires under its readers.
//!
//! An entry's age is the cache's time to live minus the time it has left
//! (the `StoreCache` writes every value it caches with that time to live).
//! A read past the refresh age queues the key for the refresh workers,
//! once: a key already queued or loading is not queued again, so one
//! refresh per key is in flight at most. Readers get the cached value
//! meanwhile. A worker loads the key from the store and, under its stripe
//! lock, caches what it found if no write went through the stripe since it
//! began (the write's value stands), or removes the key if the store no
//! longer has it. A refresh that fails is counted, and the old value is
//! served until its time to live ends (stale-if-error); the next read past
//! the refresh age tries again. A full queue drops the request, counted.

use super::store::{Store, StoreCache};
use crate::cache::Cache;
use crate::sync::{Arc, AtomicU64, Mutex, Ordering};
use std::collections::HashSet;
use std::time::Duration;

/// Keys waiting for a refresh worker, at most.
pub const REFRESH_QUEUE: usize = 1024;

/// What refresh-ahead has done (see [`StoreCache::refresh_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefreshStats {
    /// Refreshes that cached a new value (or removed a key the store lost).
    pub refreshed: u64,
    /// Refreshes whose load failed: the old value is served until it expires.
    pub failed: u64,
    /// Refreshes dropped: the queue was full.
    pub dropped: u64,
}

/// The state the readers and the workers share.
pub(crate) struct Refresh {
    /// The age past which a read refreshes (of the cache's time to live).
    after: Duration,
    ttl: Duration,
    queue: crossbeam_channel::Sender<Vec<u8>>,
    pending: Arc<Mutex<HashSet<Vec<u8>>>>,
    counts: Arc<[AtomicU64; 3]>,
}

impl Refresh {
    /// After a read of `key` that hit: queues a refresh if the entry is
    /// past the refresh age and none is pending.
    pub(crate) fn after_hit(&self, cache: &Cache, key: &[u8]) {
        let Some(Some(left)) = cache.time_left(key) else {
            return; // not in memory, or without a deadline
        };
        if self.ttl.saturating_sub(left) < self.after {
            return;
        }
        {
            let mut pending = self.pending.lock();
            if pending.contains(key) {
                return; // queued or loading already: no allocation on this hit
            }
            pending.insert(key.to_vec());
        }
        if self.queue.try_send(key.to_vec()).is_err() {
            self.pending.lock().remove(key);
            self.counts[2].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn stats(&self) -> RefreshStats {
        RefreshStats {
            refreshed: self.counts[0].load(Ordering::Relaxed),
            failed: self.counts[1].load(Ordering::Relaxed),
            dropped: self.counts[2].load(Ordering::Relaxed),
        }
    }
}

impl Cache {
    /// The time `key`'s entry in memory has left (see `MemoryTier::time_left`).
    pub(crate) fn time_left(&self, key: &[u8]) -> Option<Option<Duration>> {
        let hash = crate::key::hash_key(key);
        self.tiers().memory().time_left(hash, key)
    }
}

impl<S: Store> StoreCache<S> {
    /// Refreshes ahead: an entry read when older than `after` is loaded
    /// again from the store in the background, on `workers` threads (at
    /// least 1), while readers get the cached value. Needs the cache's
    /// [`time_to_live`](crate::CacheBuilder::time_to_live) (an entry's age
    /// is that minus the time it has left): without one, or with `after` not
    /// below it, nothing is refreshed. A failed refresh leaves the old value
    /// to be served until it expires. The workers stop when the last handle
    /// of this `StoreCache` is dropped.
    pub fn refresh_after(mut self, after: Duration, workers: usize) -> Self {
        let Some(ttl) = self.cache().time_to_live().filter(|ttl| after < *ttl) else {
            return self;
        };
        let (queue, requests) = crossbeam_channel::bounded::<Vec<u8>>(REFRESH_QUEUE);
        let pending: Arc<Mutex<HashSet<Vec<u8>>>> = Arc::default();
        let counts: Arc<[AtomicU64; 3]> = Arc::new([0; 3].map(AtomicU64::new));
        for i in 0..workers.max(1) {
            let worker = self.detached();
            let (requests, pending, counts) =
                (requests.clone(), Arc::clone(&pending), Arc::clone(&counts));
            let spawned = std::thread::Builder::new()
                .name(format!("larder-refresh-{i}"))
                .spawn(move || {
                    for key in requests {
                        worker.refresh(&key, &counts);
                        pending.lock().remove(&key);
                    }
                });
            if let Err(e) = spawned {
                log::warn!("cannot start a refresh worker ({e}): refreshing with fewer");
            }
        }
        self.set_refresh(Refresh {
            after,
            ttl,
            queue,
            pending,
            counts,
        });
        self
    }

    /// One refresh of `key`: loaded, then cached (or removed) under the
    /// stripe's lock if no write came since it began.
    fn refresh(&self, key: &[u8], counts: &[AtomicU64; 3]) {
        let writes = *self.stripe(key).lock();
        let epoch = self.epoch();
        let loaded = self.load(key);
        let order = self.stripe(key).lock();
        if *order != writes {
            return; // a write came: its value stands
        }
        match loaded {
            Ok(Some(value)) => {
                if self.cache_value(key, value, Some(epoch)).is_ok() {
                    counts[0].fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(None) => {
                self.cache().remove(key);
                counts[0].fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                log::debug!("a refresh failed: {e}");
                counts[1].fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(order);
    }
}
