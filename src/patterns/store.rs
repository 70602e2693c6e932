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
}

impl<S: Store> Clone for StoreCache<S> {
    fn clone(&self) -> Self {
        StoreCache {
            cache: self.cache.clone(),
            store: Arc::clone(&self.store),
            stripes: Arc::clone(&self.stripes),
            refresh: self.refresh.clone(),
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
        }
    }

    /// A copy for a background worker: without the refresh-ahead state.
    pub(crate) fn detached(&self) -> Self {
        StoreCache {
            refresh: None,
            ..self.clone()
        }
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
        if let Some(v) = self.cache.get(key) {
            if let Some(refresh) = &self.refresh {
                refresh.after_hit(&self.cache, key);
            }
            return Ok(Some(v));
        }
        let _order = self.stripe(key).lock();
        let store = &self.store;
        Ok(self
            .cache
            .try_optionally_get_with(key, || store.load(key))?)
    }

    /// Writes `key` = `value` to the store, then to the cache. If the store
    /// fails, the cache is unchanged.
    pub fn put(&self, key: &[u8], value: impl Into<Bytes>) -> Result<(), StoreError<S::Error>> {
        let value = value.into();
        self.cache.check_entry(key, &value)?; // refused before the store is written
        let mut order = self.stripe(key).lock();
        *order += 1;
        self.store
            .store(key, &value)
            .map_err(|e| StoreError::Store(Arc::new(e)))?;
        if let Err(e) = self.cache.insert(key, value) {
            // The store has the value; the cache must not keep an older one.
            self.cache.remove(key);
            return Err(e.into());
        }
        Ok(())
    }

    /// Deletes `key` from the store, then from the cache. If the store
    /// fails, the cache is unchanged.
    pub fn delete(&self, key: &[u8]) -> Result<(), StoreError<S::Error>> {
        let mut order = self.stripe(key).lock();
        *order += 1;
        self.store
            .delete(key)
            .map_err(|e| StoreError::Store(Arc::new(e)))?;
        self.cache.remove(key);
        Ok(())
    }
}
