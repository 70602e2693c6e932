//! A cache in front of a backing store: cache-aside loads through the
//! store and write-through writes to it.
//!
//! **Ordering.** A write (store first, then cache) and a load of the same
//! key (store read, then cache insert) must not interleave, or a load that
//! read the old value could cache it after the write cached the new one.
//! So every write, and every load on a miss, holds its key's stripe lock
//! (one of [`STRIPES`]) from its store call to its cache change; a hit
//! takes no lock at all. Concurrent misses on one key queue on that lock:
//! the first loads, the rest find the value cached (one store query for
//! any number of them). Misses on different keys of one stripe load one
//! after the other; with 4,096 stripes that is rare.
//!
//! Writes made to the cache directly, not through this layer, are not
//! ordered with its loads.

use super::events::{EVENT_DELETE, EVENT_PUT, Rules};
use super::tags::Tags;
use super::write_behind::{Behind, BehindHandle};
use super::xfetch::XFetch;
use crate::cache::Cache;
use crate::error::{Error, LoadError};
use crate::sync::{Arc, Mutex};
use bytes::Bytes;

/// A backing store of byte keys and values (a database table, say): what a
/// [`StoreCache`] loads from and writes to. Every method may block.
pub trait Store: Send + Sync + 'static {
    /// The store's own error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The value of `key`, or `None` if the store has none.
    fn load(&self, key: &[u8]) -> Result<Option<Bytes>, Self::Error>;

    /// The values of `keys`, in their order (by default one
    /// [`load`](Self::load) each; a store that can do it in one query should).
    fn load_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Bytes>>, Self::Error> {
        keys.iter().map(|k| self.load(k)).collect()
    }

    /// Writes `key` = `value`.
    fn store(&self, key: &[u8], value: &[u8]) -> Result<(), Self::Error>;

    /// Deletes `key` (not an error if it is absent).
    fn delete(&self, key: &[u8]) -> Result<(), Self::Error>;

    /// Applies `batch` in its order, all or nothing where the store can do
    /// that (`None`: a delete); by default one call each.
    fn store_batch(&self, batch: &[(&[u8], Option<&[u8]>)]) -> Result<(), Self::Error> {
        for (key, value) in batch {
            match value {
                Some(v) => self.store(key, v)?,
                None => self.delete(key)?,
            }
        }
        Ok(())
    }
}

/// Why a [`StoreCache`] call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError<E: std::error::Error + 'static> {
    /// The backing store failed: the cache is as it was before the call.
    #[error("the backing store failed: {0}")]
    Store(#[source] Arc<E>),
    /// The cache refused (a key or value out of bounds, a closed cache).
    #[error(transparent)]
    Cache(#[from] Error),
    /// Write-behind's queue is full and set to refuse
    /// ([`Backpressure::Refuse`](crate::Backpressure::Refuse)): nothing was
    /// written.
    #[error("the write-behind queue is full")]
    Full,
    /// Write-behind's journal failed (a write: it was not acknowledged, and
    /// the cache is as it was).
    #[error("the write-behind journal failed: {0}")]
    Journal(#[source] Arc<std::io::Error>),
    /// Closed with this many writes still queued (the store failed): they
    /// stay journaled, and the next open queues them again.
    #[error("closed with {0} writes not yet in the store (they stay journaled)")]
    Queued(u64),
}

impl<E: std::error::Error + 'static> From<LoadError<E>> for StoreError<E> {
    fn from(e: LoadError<E>) -> Self {
        match e {
            LoadError::Loader(e) => StoreError::Store(e),
            LoadError::Cache(e) => StoreError::Cache(e),
        }
    }
}

/// Stripes of the per-key write/load lock.
pub const STRIPES: usize = 4096;

/// A [`Cache`] in front of a [`Store`]: reads are cache-aside (a miss loads
/// from the store, once for any number of concurrent misses, and caches
/// what it found; with the cache's
/// [`absent_ttl`](crate::CacheBuilder::absent_ttl), what it did not find
/// too), writes are write-through (the store first, then the cache; if the
/// store fails, the cache is unchanged and the caller gets the store's
/// error). Loaded values take the cache's time to live or idle.
///
/// ```
/// use larder::{Bytes, Cache, Store, StoreCache};
/// use std::collections::HashMap;
/// use std::sync::Mutex;
///
/// #[derive(Default)]
/// struct Table(Mutex<HashMap<Vec<u8>, Bytes>>);
///
/// impl Store for Table {
///     type Error = std::io::Error;
///     fn load(&self, key: &[u8]) -> std::io::Result<Option<Bytes>> {
///         Ok(self.0.lock().unwrap().get(key).cloned())
///     }
///     fn store(&self, key: &[u8], value: &[u8]) -> std::io::Result<()> {
///         self.0.lock().unwrap().insert(key.to_vec(), Bytes::copy_from_slice(value));
///         Ok(())
///     }
///     fn delete(&self, key: &[u8]) -> std::io::Result<()> {
///         self.0.lock().unwrap().remove(key);
///         Ok(())
///     }
/// }
///
/// let products = StoreCache::new(Cache::builder().memory_capacity(1 << 20).build()?, Table::default());
/// products.put(b"p:1", "tea")?;                   // the table, then the cache
/// assert_eq!(products.get(b"p:1")?.as_deref(), Some(&b"tea"[..]));
/// assert_eq!(products.get(b"p:2")?, None);         // asked the table once
/// products.delete(b"p:1")?;
/// assert!(products.cache().get(b"p:1").is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct StoreCache<S: Store> {
    cache: Cache,
    store: Arc<S>,
    /// Per stripe: the order lock, and a count of the writes made under it
    /// (a warm-up or a refresh caches what it read only if no write came
    /// since).
    stripes: Arc<[Mutex<u64>]>,
    /// Refresh-ahead, if on (the workers hold copies without it, so that
    /// the last handle's drop stops them).
    refresh: Option<Arc<super::refresh::Refresh>>,
    /// Write-behind, if on: shared by every copy, workers included.
    behind: Arc<std::sync::OnceLock<Arc<Behind>>>,
    /// Held by the handles only (not by the workers' copies).
    behind_handle: Option<Arc<BehindHandle>>,
    /// Tags, if on: shared by every copy.
    tags: Arc<std::sync::OnceLock<Arc<Tags>>>,
    /// Event rules: shared by every copy.
    rules: Arc<Rules>,
    /// Probabilistic early expiration, if on.
    xfetch: Option<Arc<XFetch>>,
}

impl<S: Store> Clone for StoreCache<S> {
    fn clone(&self) -> Self {
        StoreCache {
            cache: self.cache.clone(),
            store: Arc::clone(&self.store),
            stripes: Arc::clone(&self.stripes),
            refresh: self.refresh.clone(),
            behind: Arc::clone(&self.behind),
            behind_handle: self.behind_handle.clone(),
            tags: Arc::clone(&self.tags),
            rules: Arc::clone(&self.rules),
            xfetch: self.xfetch.clone(),
        }
    }
}

impl<S: Store> StoreCache<S> {
    /// `cache` in front of `store`.
    pub fn new(cache: Cache, store: S) -> Self {
        StoreCache {
            cache,
            store: Arc::new(store),
            stripes: (0..STRIPES).map(|_| Mutex::new(0)).collect(),
            refresh: None,
            behind: Arc::default(),
            behind_handle: None,
            tags: Arc::default(),
            rules: Arc::default(),
            xfetch: None,
        }
    }

    /// A copy for a background worker: without the refresh-ahead state.
    pub(crate) fn detached(&self) -> Self {
        StoreCache {
            refresh: None,
            behind_handle: None,
            ..self.clone()
        }
    }

    /// Turns write-behind on (once).
    pub(crate) fn set_behind(&mut self, handle: BehindHandle) -> Result<(), StoreError<S::Error>> {
        self.behind.set(Arc::clone(&handle.0)).map_err(|_| {
            StoreError::Journal(Arc::new(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "write-behind is on already",
            )))
        })?;
        self.behind_handle = Some(Arc::new(handle));
        Ok(())
    }

    /// Turns tags on (once).
    pub(crate) fn set_tags(&mut self, tags: Tags) -> Result<(), StoreError<S::Error>> {
        self.tags.set(Arc::new(tags)).map_err(|_| {
            StoreError::Journal(Arc::new(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "tags are on already",
            )))
        })
    }

    pub(crate) fn set_xfetch(&mut self, xfetch: XFetch) {
        self.xfetch = Some(Arc::new(xfetch));
    }

    pub(crate) fn xfetch(&self) -> Option<&XFetch> {
        self.xfetch.as_deref()
    }

    pub(crate) fn tag_table(&self) -> Option<&Tags> {
        self.tags.get().map(|t| &**t)
    }

    pub(crate) fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The tags' epoch, to note before a store read whose value is cached.
    pub(crate) fn epoch(&self) -> u64 {
        self.tag_table().map_or(0, |t| t.epoch())
    }

    /// `value` as it is cached: in its tag envelope if tags are on (see
    /// `tags.rs`; `epoch`: noted before the value was read from the store,
    /// `None` for a value the caller wrote).
    pub(crate) fn as_cached(&self, key: &[u8], value: Bytes, epoch: Option<u64>) -> Bytes {
        match self.tag_table() {
            Some(t) => t.wrap(key, &value, epoch.unwrap_or_else(|| t.epoch())),
            None => value,
        }
    }

    /// Caches `value` (see [`to_cached`](Self::to_cached)); if the cache
    /// refuses it, the key's older entry is dropped.
    pub(crate) fn cache_value(
        &self,
        key: &[u8],
        value: Bytes,
        epoch: Option<u64>,
    ) -> Result<(), Error> {
        let result = self.cache.insert(key, self.as_cached(key, value, epoch));
        if result.is_err() {
            self.cache.remove(key);
        }
        result
    }

    /// What an entry read from the cache holds: `None` if tags are on and
    /// one of its tags was invalidated since it was cached (`check`).
    pub(crate) fn read_cached(&self, stored: Bytes, check: bool) -> Option<Bytes> {
        match self.tag_table() {
            Some(t) => t.unwrap(stored, check),
            None => Some(stored),
        }
    }

    /// The value cached for `key`, if any and valid: no store read.
    pub fn cached(&self, key: &[u8]) -> Option<Bytes> {
        self.read_cached(self.cache.get(key)?, true)
    }

    pub(crate) fn behind(&self) -> Option<&Behind> {
        self.behind.get().map(|b| &**b)
    }

    pub(crate) fn store_arc(&self) -> Arc<S> {
        Arc::clone(&self.store)
    }

    /// What the store has for `key`, or write-behind's queued write of it
    /// (newer than the store's): what a miss, a refresh or a warm-up reads.
    pub(crate) fn load(&self, key: &[u8]) -> Result<Option<Bytes>, S::Error> {
        if let Some(queued) = self.behind().and_then(|b| b.queued(key)) {
            return Ok(queued);
        }
        self.store.load(key)
    }

    /// Whether write-behind has a write of `key` queued.
    pub(crate) fn is_queued(&self, key: &[u8]) -> bool {
        self.behind().is_some_and(|b| b.queued(key).is_some())
    }

    pub(crate) fn set_refresh(&mut self, refresh: super::refresh::Refresh) {
        self.refresh = Some(Arc::new(refresh));
    }

    /// What refresh-ahead has done ([`refresh_after`](Self::refresh_after)).
    pub fn refresh_stats(&self) -> super::refresh::RefreshStats {
        self.refresh.as_ref().map(|r| r.stats()).unwrap_or_default()
    }

    /// The cache (reads through it are plain cache reads; writes through it
    /// bypass the store and its ordering).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    pub(crate) fn stripe(&self, key: &[u8]) -> &Mutex<u64> {
        let hash = crate::key::hash_key(key);
        &self.stripes[(hash >> 20) as usize % STRIPES]
    }

    /// The value of `key`: the cache's, or on a miss the store's (then
    /// cached). `None` if the store has none.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError<S::Error>> {
        if let Some(v) = self.cached(key) {
            if let Some(refresh) = &self.refresh {
                refresh.after_hit(&self.cache, key);
            }
            if let Some(xfetch) = &self.xfetch {
                return self.maybe_reload_early(xfetch, key, v);
            }
            return Ok(Some(v));
        }
        let _order = self.stripe(key).lock();
        if self.tag_table().is_some() && self.cache.contains(key) && self.cached(key).is_none() {
            self.cache.remove(key); // its tags were invalidated
        }
        let epoch = self.epoch();
        let found = self.cache.try_optionally_get_with(key, || {
            let start = std::time::Instant::now();
            let loaded = self.load(key);
            if let Some(xfetch) = &self.xfetch {
                xfetch.loaded(start.elapsed());
            }
            loaded.map(|v| v.map(|v| self.as_cached(key, v, Some(epoch))))
        })?;
        // What was just loaded or cached under this lock: not checked
        // again (a raced invalidation's entry is served once, then reloaded).
        Ok(found.and_then(|v| self.read_cached(v, false)))
    }

    /// Writes `key` = `value` to the store, then to the cache. If the store
    /// fails, the cache is unchanged.
    pub fn put(&self, key: &[u8], value: impl Into<Bytes>) -> Result<(), StoreError<S::Error>> {
        let value = value.into();
        self.cache.check_entry(key, &value)?; // refused before the store is written
        let mut order = self.stripe(key).lock();
        *order += 1;
        if let Some(behind) = self.behind() {
            self.write_behind_op(behind, key, Some(value))?;
        } else {
            self.store
                .store(key, &value)
                .map_err(|e| StoreError::Store(Arc::new(e)))?;
            // The store has the value; if the cache refuses it, the cache
            // drops its older one.
            self.cache_value(key, value, None)?;
        }
        drop(order);
        self.emit_write(EVENT_PUT, key)
    }

    /// Deletes `key` from the store, then from the cache. If the store
    /// fails, the cache is unchanged.
    pub fn delete(&self, key: &[u8]) -> Result<(), StoreError<S::Error>> {
        let mut order = self.stripe(key).lock();
        *order += 1;
        if let Some(behind) = self.behind() {
            self.write_behind_op(behind, key, None)?;
        } else {
            self.store
                .delete(key)
                .map_err(|e| StoreError::Store(Arc::new(e)))?;
            self.cache.remove(key);
        }
        drop(order);
        self.emit_write(EVENT_DELETE, key)
    }
}

impl<S: Store> StoreCache<S> {
    /// Makes durable what was acknowledged before the call: write-behind's
    /// journal (under [`Acknowledge::Written`](crate::Acknowledge::Written)),
    /// then the cache ([`Cache::sync`]).
    pub fn sync(&self) -> Result<(), StoreError<S::Error>> {
        if let Some(b) = self.behind() {
            b.sync().map_err(|e| StoreError::Journal(Arc::new(e)))?;
        }
        self.cache.sync()?;
        Ok(())
    }
}
