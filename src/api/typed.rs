//! [`TypedCache`] serves Rust keys and values over the bytes
//! core ([`Cache`]), through the core's public operations and its
//! single-flight loader, so both tiers, TTLs, restarts and stats behave as
//! they do for bytes.
//!
//! Every stored value starts with a 4-byte tag: a hash of the codec's name,
//! the value type's name and the typed cache's version. A value whose tag
//! differs (another type, codec or version wrote it: a restart after a type
//! change) or that does not decode is a miss, counted in
//! [`TypedCache::undecodable`], never a panic or a wrong value. A loader
//! replaces such a value.

use super::codec::{AsKey, Codec, CodecError, Key, Raw};
use crate::cache::{Cache, Failure};
use crate::error::{Error, LoadError};
use bytes::{Buf, Bytes};
use std::borrow::Borrow;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bytes of the tag in front of every typed value.
pub const TAG_LEN: usize = 4;

/// A cache of `K` to `V` over a bytes [`Cache`], encoding values with the
/// codec `C` ([`Raw`] by default: bytes, strings and integers; `Postcard`
/// for serde types, feature `serde`). Cloning is cheap and shares the cache.
///
/// ```
/// use larder::{Cache, TypedCache};
///
/// let cache = Cache::builder().memory_capacity(1 << 20).build()?;
/// let names: TypedCache<String, String> = TypedCache::new(cache);
/// names.insert("user:1", &"alice".to_string())?;
/// assert_eq!(names.get("user:1").as_deref(), Some("alice")); // a &str lookup
/// let n = names.get_with("user:2", || "bob".into())?;
/// assert_eq!(n, "bob");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TypedCache<K, V, C = Raw> {
    cache: Cache,
    shared: Arc<Shared<C>>,
    tag: [u8; TAG_LEN],
    version: u32,
    types: PhantomData<fn() -> (K, V)>,
}

struct Shared<C> {
    codec: C,
    undecodable: AtomicU64,
}

impl<K, V, C> Clone for TypedCache<K, V, C> {
    fn clone(&self) -> Self {
        TypedCache {
            cache: self.cache.clone(),
            shared: Arc::clone(&self.shared),
            tag: self.tag,
            version: self.version,
            types: PhantomData,
        }
    }
}

impl<K, V, C> std::fmt::Debug for TypedCache<K, V, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedCache")
            .field("key", &std::any::type_name::<K>())
            .field("value", &std::any::type_name::<V>())
            .field("version", &self.version)
            .field("cache", &self.cache)
            .finish()
    }
}

fn tag<V, C: Codec<V>>(version: u32) -> [u8; TAG_LEN] {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [C::NAME, std::any::type_name::<V>()] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.update(&version.to_le_bytes());
    (h.digest() as u32).to_le_bytes()
}

impl<K: Key, V, C: Codec<V> + Default> TypedCache<K, V, C> {
    /// A typed view of `cache` with the codec's default value.
    pub fn new(cache: Cache) -> Self {
        Self::with_codec(cache, C::default())
    }
}

impl<K: Key, V, C: Codec<V>> TypedCache<K, V, C> {
    /// A typed view of `cache` that encodes values with `codec`.
    pub fn with_codec(cache: Cache, codec: C) -> Self {
        TypedCache {
            cache,
            shared: Arc::new(Shared {
                codec,
                undecodable: AtomicU64::new(0),
            }),
            tag: tag::<V, C>(0),
            version: 0,
            types: PhantomData,
        }
    }

    /// The same view with values tagged `version` (0 by default): values
    /// stored under another version are misses. Raise it when `V`'s
    /// encoding changes without its name changing (a field added to a serde
    /// struct), so a restart after the change does not misread old values.
    #[must_use]
    pub fn version(mut self, version: u32) -> Self {
        self.tag = tag::<V, C>(version);
        self.version = version;
        self
    }

    /// The bytes cache underneath, for what the typed layer does not wrap
    /// (`sync`, `close`, `stats`, `health`).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Stored values this view found with another tag or could not decode
    /// (each a miss) since it was created.
    pub fn undecodable(&self) -> u64 {
        self.shared.undecodable.load(Ordering::Relaxed)
    }

    fn encode(&self, value: &V) -> Result<Bytes, Error> {
        let mut out = Vec::with_capacity(TAG_LEN + self.shared.codec.size_hint(value));
        out.extend_from_slice(&self.tag);
        self.shared
            .codec
            .encode(value, &mut out)
            .map_err(Error::Codec)?;
        Ok(Bytes::from(out))
    }

    fn decode(&self, mut stored: Bytes) -> Result<V, CodecError> {
        let result = if stored.get(..TAG_LEN) != Some(&self.tag[..]) {
            Err(CodecError::new(
                "a typed value",
                "its tag names another type, codec or version",
            ))
        } else {
            // Moves the start: no reference count is touched.
            stored.advance(TAG_LEN);
            self.shared.codec.decode(stored)
        };
        if result.is_err() {
            self.shared.undecodable.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// The value for `key`, if cached, unexpired and of this view's type.
    pub fn get<Q: AsKey + ?Sized>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let stored = key.with_key_bytes(|k| self.cache.get(k))?;
        self.decode(stored).ok()
    }

    /// Whether `key` is cached (see [`Cache::contains`]: not an access). It
    /// does not decode the value, so it is also true of a value another type
    /// wrote, which [`get`](Self::get) misses.
    pub fn contains<Q: AsKey + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        key.with_key_bytes(|k| self.cache.contains(k))
    }

    /// Caches `value` under `key` (see [`Cache::insert`]).
    pub fn insert<Q: AsKey + ?Sized>(&self, key: &Q, value: &V) -> Result<(), Error>
    where
        K: Borrow<Q>,
    {
        let bytes = self.encode(value)?;
        key.with_key_bytes(|k| self.cache.insert(k, bytes))
    }

    /// Caches `value` under `key` for `ttl` (see [`Cache::insert_with_ttl`]).
    pub fn insert_with_ttl<Q: AsKey + ?Sized>(
        &self,
        key: &Q,
        value: &V,
        ttl: Duration,
    ) -> Result<(), Error>
    where
        K: Borrow<Q>,
    {
        let bytes = self.encode(value)?;
        key.with_key_bytes(|k| self.cache.insert_with_ttl(k, bytes, ttl))
    }

    /// Removes `key` from both tiers; returns its value if it was one of
    /// this view's type.
    pub fn remove<Q: AsKey + ?Sized>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let stored = key.with_key_bytes(|k| self.cache.remove(k))?;
        self.decode(stored).ok()
    }

    /// The value for `key`, loaded with `load` on a miss (single-flight, as
    /// [`Cache::get_with`]).
    pub fn get_with<Q: AsKey + ?Sized>(&self, key: &Q, load: impl FnOnce() -> V) -> Result<V, Error>
    where
        K: Borrow<Q>,
    {
        self.try_get_with(key, || Ok::<_, std::convert::Infallible>(load()))
            .map_err(|e| match e {
                LoadError::Cache(e) => e,
                LoadError::Loader(never) => match *never {},
            })
    }

    /// Like [`get_with`](Self::get_with) with a fallible loader; its error
    /// reaches every waiter as `Arc<E>` (see [`Cache::try_get_with`]).
    pub fn try_get_with<Q: AsKey + ?Sized, E: Send + Sync + 'static>(
        &self,
        key: &Q,
        load: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, LoadError<E>>
    where
        K: Borrow<Q>,
    {
        let found = self.load(key, false, || load().map(Some))?;
        Ok(found.expect("`load` hands `None` only to a caller that takes it"))
    }

    /// Like [`get_with`](Self::get_with) with a loader that may find nothing
    /// (see [`Cache::optionally_get_with`], and its negative caching).
    pub fn optionally_get_with<Q: AsKey + ?Sized>(
        &self,
        key: &Q,
        load: impl FnOnce() -> Option<V>,
    ) -> Result<Option<V>, Error>
    where
        K: Borrow<Q>,
    {
        self.load(key, true, || Ok::<_, std::convert::Infallible>(load()))
            .map_err(|e| match e {
                LoadError::Cache(e) => e,
                LoadError::Loader(never) => match *never {},
            })
    }

    /// [`optionally_get_with`](Self::optionally_get_with) with a fallible
    /// loader (see [`Cache::try_optionally_get_with`]).
    pub fn try_optionally_get_with<Q: AsKey + ?Sized, E: Send + Sync + 'static>(
        &self,
        key: &Q,
        load: impl FnOnce() -> Result<Option<V>, E>,
    ) -> Result<Option<V>, LoadError<E>>
    where
        K: Borrow<Q>,
    {
        self.load(key, true, load)
    }

    /// The typed loaders' one path. The leader keeps the value it loaded
    /// (no decode); a waiter decodes the shared bytes. A hit on a value this
    /// view cannot decode removes it and loads again, once.
    fn load<Q: AsKey + ?Sized, E: Send + Sync + 'static>(
        &self,
        key: &Q,
        absent_ok: bool,
        load: impl FnOnce() -> Result<Option<V>, E>,
    ) -> Result<Option<V>, LoadError<E>> {
        key.with_key_bytes(|k| {
            let mut load = Some(load);
            let mut loaded = None;
            for attempt in 0..2 {
                let found = self.cache.load(k, absent_ok, || {
                    let load = load.take().expect("the core runs a loader once");
                    self.encode_loaded(load(), &mut loaded)
                })?;
                if let Some(done) = self.settle(k, found, &mut loaded, attempt == 1) {
                    return done;
                }
            }
            unreachable!("the second attempt returns")
        })
    }

    /// A loader's outcome as the core takes it: the value encoded (and kept
    /// in `loaded`, so the leader need not decode it), none, or its error.
    fn encode_loaded<E>(
        &self,
        outcome: Result<Option<V>, E>,
        loaded: &mut Option<V>,
    ) -> Result<Option<Bytes>, Failure<E>> {
        match outcome {
            Ok(Some(v)) => {
                let bytes = self.encode(&v).map_err(Failure::Refused)?;
                *loaded = Some(v);
                Ok(Some(bytes))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(Failure::Loader(e)),
        }
    }

    /// What a typed load returns once the core answered with `found`:
    /// this caller's own value, none, or the shared bytes decoded. `None`:
    /// the bytes were another type's (a type change before a restart), now
    /// removed, so load again, unless this was the `last` attempt.
    fn settle<E>(
        &self,
        key: &[u8],
        found: Option<Bytes>,
        loaded: &mut Option<V>,
        last: bool,
    ) -> Option<Result<Option<V>, LoadError<E>>> {
        if let Some(v) = loaded.take() {
            return Some(Ok(Some(v)));
        }
        let Some(stored) = found else {
            return Some(Ok(None));
        };
        match self.decode(stored) {
            Ok(v) => Some(Ok(Some(v))),
            Err(e) if last => Some(Err(LoadError::Cache(Error::Codec(e)))),
            Err(_) => {
                self.cache.remove(key);
                None
            }
        }
    }

    /// [`get_with`](Self::get_with) with an async loader (see
    /// [`Cache::get_with_async`]: waiting tasks hold no thread; a dropped
    /// leader hands the load to a waiter).
    pub async fn get_with_async<Q: AsKey + ?Sized>(
        &self,
        key: &Q,
        init: impl Future<Output = V>,
    ) -> Result<V, Error>
    where
        K: Borrow<Q>,
    {
        let loaded = self
            .load_async::<_, std::convert::Infallible>(key, false, async { Ok(Some(init.await)) })
            .await;
        match loaded {
            Ok(v) => Ok(v.expect("`load` hands `None` only to a caller that takes it")),
            Err(LoadError::Cache(e)) => Err(e),
            Err(LoadError::Loader(never)) => match *never {},
        }
    }

    /// [`try_get_with`](Self::try_get_with) with an async loader.
    pub async fn try_get_with_async<Q: AsKey + ?Sized, E: Send + Sync + 'static>(
        &self,
        key: &Q,
        init: impl Future<Output = Result<V, E>>,
    ) -> Result<V, LoadError<E>>
    where
        K: Borrow<Q>,
    {
        let found = self
            .load_async(key, false, async { init.await.map(Some) })
            .await?;
        Ok(found.expect("`load` hands `None` only to a caller that takes it"))
    }

    /// [`optionally_get_with`](Self::optionally_get_with) with an async loader.
    pub async fn optionally_get_with_async<Q: AsKey + ?Sized>(
        &self,
        key: &Q,
        init: impl Future<Output = Option<V>>,
    ) -> Result<Option<V>, Error>
    where
        K: Borrow<Q>,
    {
        self.load_async::<_, std::convert::Infallible>(key, true, async { Ok(init.await) })
            .await
            .map_err(|e| match e {
                LoadError::Cache(e) => e,
                LoadError::Loader(never) => match *never {},
            })
    }

    /// [`load`](Self::load) with awaits. The key is encoded into a buffer
    /// the future owns (it lives across awaits).
    async fn load_async<Q: AsKey + ?Sized, E: Send + Sync + 'static>(
        &self,
        key: &Q,
        absent_ok: bool,
        init: impl Future<Output = Result<Option<V>, E>>,
    ) -> Result<Option<V>, LoadError<E>> {
        let k: smallvec::SmallVec<[u8; 32]> = key.with_key_bytes(|k| k.into());
        let mut init = Some(init);
        let mut loaded = None;
        for attempt in 0..2 {
            let found = self
                .cache
                .load_async(&k, absent_ok, async {
                    let init = init.take().expect("the core runs a loader once");
                    self.encode_loaded(init.await, &mut loaded)
                })
                .await?;
            if let Some(done) = self.settle(&k, found, &mut loaded, attempt == 1) {
                return done;
            }
        }
        unreachable!("the second attempt returns")
    }
}
