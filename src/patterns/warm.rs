//! Warming: a list of keys loaded from the store into the cache ahead of
//! the requests, in batches (one `load_many` each), on a few threads, with
//! progress.
//!
//! Warming must not flush what the cache is serving: a key the cache holds
//! is skipped, and the others are inserted as any new key is, which
//! CLOCK-Pro admits cold (in its test period) once memory is full, so they
//! take the place of cold entries, never of hot ones; a warmed key that is
//! never requested leaves first. A key written or deleted through the
//! `StoreCache` while its batch was loading is not inserted (the write's
//! value, or its absence, stands).

use super::store::{Store, StoreCache, StoreError};
use crate::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Keys per store query of a warm-up.
pub const WARM_BATCH: usize = 256;

/// How far a warm-up is (given to its progress callback after each batch,
/// and returned at its end).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WarmProgress {
    /// Keys dealt with so far, of `total`.
    pub done: u64,
    /// Keys to warm.
    pub total: u64,
    /// Keys loaded from the store and inserted.
    pub inserted: u64,
    /// Keys skipped: the cache held them, or a write came while they loaded.
    pub skipped: u64,
    /// Keys the store had no value for.
    pub absent: u64,
}

impl<S: Store> StoreCache<S> {
    /// Loads `keys` from the store into the cache, [`WARM_BATCH`] keys per
    /// store query, on `parallelism` threads (at least 1), calling
    /// `progress` after each batch (from the thread that loaded it).
    /// Returns what was done; stops at the first store error (what was
    /// inserted before it stays).
    ///
    /// ```
    /// # use larder::{Bytes, Cache, Store, StoreCache};
    /// # #[derive(Default)] struct Table;
    /// # impl Store for Table {
    /// #     type Error = std::io::Error;
    /// #     fn load(&self, key: &[u8]) -> std::io::Result<Option<Bytes>> { Ok(Some(Bytes::copy_from_slice(key))) }
    /// #     fn store(&self, _: &[u8], _: &[u8]) -> std::io::Result<()> { Ok(()) }
    /// #     fn delete(&self, _: &[u8]) -> std::io::Result<()> { Ok(()) }
    /// # }
    /// let items = StoreCache::new(Cache::builder().memory_capacity(1 << 20).build()?, Table);
    /// let keys: Vec<Vec<u8>> = (0..1_000u32).map(|i| i.to_be_bytes().to_vec()).collect();
    /// let done = items.warm(&keys, 2, |p| eprintln!("{}/{}", p.done, p.total))?;
    /// assert_eq!(done.inserted, 1_000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn warm<K: AsRef<[u8]> + Sync>(
        &self,
        keys: &[K],
        parallelism: usize,
        progress: impl Fn(WarmProgress) + Sync,
    ) -> Result<WarmProgress, StoreError<S::Error>> {
        let total = keys.len() as u64;
        let counts = [0; 4].map(AtomicU64::new); // done, inserted, skipped, absent
        let snapshot = |counts: &[AtomicU64; 4]| WarmProgress {
            done: counts[0].load(Ordering::Acquire),
            total,
            inserted: counts[1].load(Ordering::Acquire),
            skipped: counts[2].load(Ordering::Acquire),
            absent: counts[3].load(Ordering::Acquire),
        };
        let next = AtomicU64::new(0);
        let batches = keys.len().div_ceil(WARM_BATCH) as u64;
        let failed: crate::sync::Mutex<Option<StoreError<S::Error>>> = Default::default();
        std::thread::scope(|s| {
            for _ in 0..parallelism.max(1) {
                s.spawn(|| {
                    loop {
                        let b = next.fetch_add(1, Ordering::AcqRel);
                        if b >= batches || failed.lock().is_some() {
                            return;
                        }
                        let from = b as usize * WARM_BATCH;
                        let batch = &keys[from..(from + WARM_BATCH).min(keys.len())];
                        match self.warm_batch(batch) {
                            Ok([inserted, skipped, absent]) => {
                                counts[1].fetch_add(inserted, Ordering::AcqRel);
                                counts[2].fetch_add(skipped, Ordering::AcqRel);
                                counts[3].fetch_add(absent, Ordering::AcqRel);
                                counts[0].fetch_add(batch.len() as u64, Ordering::AcqRel);
                                progress(snapshot(&counts));
                            }
                            Err(e) => {
                                failed.lock().get_or_insert(e);
                                return;
                            }
                        }
                    }
                });
            }
        });
        match failed.into_inner() {
            Some(e) => Err(e),
            None => Ok(snapshot(&counts)),
        }
    }

    /// One batch: the stripes' write counts noted, one store query, then
    /// each key inserted under its stripe's lock if the cache does not hold
    /// it and no write came since. Inserted, skipped, absent.
    fn warm_batch<K: AsRef<[u8]>>(&self, batch: &[K]) -> Result<[u64; 3], StoreError<S::Error>> {
        let wanted: Vec<&[u8]> = batch
            .iter()
            .map(AsRef::as_ref)
            .filter(|k| !self.cache().contains(k))
            .collect();
        let mut counts = [0, (batch.len() - wanted.len()) as u64, 0];
        if wanted.is_empty() {
            return Ok(counts);
        }
        let before: Vec<u64> = wanted.iter().map(|k| *self.stripe(k).lock()).collect();
        let epoch = self.epoch();
        let values = self
            .store()
            .load_many(&wanted)
            .map_err(|e| StoreError::Store(Arc::new(e)))?;
        for ((key, value), writes) in wanted.iter().zip(values).zip(before) {
            let Some(value) = value else {
                counts[2] += 1;
                continue;
            };
            let order = self.stripe(key).lock();
            if *order != writes || self.cache().contains(key) || self.is_queued(key) {
                counts[1] += 1;
                continue;
            }
            self.cache_value(key, value, Some(epoch))?;
            counts[0] += 1;
            drop(order);
        }
        Ok(counts)
    }
}
