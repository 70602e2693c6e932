//! [`Cache`]: the public handle, a thin facade. It checks keys and values,
//! hashes each key once, and hands (key, hash) to the tiers (`crate::tiers`),
//! where the cross-tier policy lives.

use crate::builder::{CacheBuilder, Expiry};
use crate::error::{Error, LoadError};
use crate::health::{Health, HealthWatch};
use crate::key::{MAX_VALUE_LEN, check_key, hash_key};
use crate::latency::sampled;
use crate::listener::RemovalCause;
use crate::patterns::absent::Absent;
use crate::patterns::hot_keys::{self, HotKeys};
use crate::patterns::single_flight::{Flights, Follower, Leader, Outcome, Role};
use crate::stats::{CheckpointStatus, Stats, TierStats};
use crate::sync::{Arc, AtomicU64, Ordering};
use crate::tiers::Tiers;
use crate::time::{nanos, sliding_deadline};
use bytes::Bytes;
use std::time::Duration;
use std::time::Instant;

/// The most keys [`CacheBuilder::absent_ttl`](crate::CacheBuilder::absent_ttl)
/// remembers as absent at once (each marker holds a copy of its key and a
/// deadline).
pub const MAX_ABSENT_KEYS: usize = 65_536;

/// How a loader given to [`Cache::load`] failed.
pub(crate) enum Failure<E> {
    /// The user's loader failed: shared with the waiters as `Arc<E>`.
    Loader(E),
    /// The value cannot be cached: the waiters get this error.
    Refused(Error),
}

/// A load's lookup: answered (`Found`: a value, or `None` remembered as
/// absent), or missed (the key's hash, to load it).
pub(crate) enum Lookup {
    Found(Option<Bytes>),
    Missed(u64),
}

/// A missed key's flight, as [`Cache::load_join`] found it.
pub(crate) enum Joined<'a> {
    /// A flight that just ended left this value.
    Found(Bytes),
    /// Run the loader and hand its result to [`Cache::load_finish`].
    Lead(Leader<'a>),
    /// Wait for the leader, then [`Cache::load_follow`].
    Wait(Follower),
}

/// A thread-safe, sharded cache of byte keys to [`Bytes`] values, evicting with
/// CLOCK-Pro. Cloning the handle is cheap and shares the cache.
///
/// ```
/// use larder::Cache;
///
/// let cache = Cache::builder().memory_capacity(1 << 20).build()?;
/// cache.insert(b"k", "v")?;
/// assert!(cache.contains(b"k"));
/// assert_eq!(cache.remove(b"k").as_deref(), Some(&b"v"[..]));
/// assert!(cache.get(b"k").is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    /// Shared with the warm refill's thread, which holds no handle to the
    /// cache: so dropping the last handle runs `Drop`, which stops and
    /// which stops and waits for the refill before the directory is released.
    tiers: Arc<Tiers>,
    flights: Flights,
    loads: AtomicU64,
    /// What the directory held of a checkpoint at open.
    checkpoint: CheckpointStatus,
    /// How entries inserted or loaded without a TTL of their own expire.
    expiry: Expiry,
    /// Keys `optionally_get_with` found absent, and for how long they are
    /// remembered (`absent_ttl`).
    absent: Option<(Absent, Duration)>,
    /// What the previous `health()` saw.
    health: HealthWatch,
    /// Hot-key detection, if it is on (`CacheBuilder::track_hot_keys`).
    hot: Option<HotKeys>,
}

impl Drop for Inner {
    /// A best-effort [`Cache::close`] (errors are logged: they cannot be
    /// returned here), on a thread of its own when it may take time (a disk
    /// tier or a listener), so the dropping thread is not held for it;
    /// opening the directory again waits for it, and so does the process's
    /// exit (`crate::closing`).
    fn drop(&mut self) {
        if self.tiers.is_closed() {
            // `close` has begun
            return;
        }
        if self.tiers.lower().is_none() && !self.tiers.has_listener() {
            let _ = self.tiers.close(); // closing the shards: nothing to wait for
            return;
        }
        crate::closing::close_behind(Arc::clone(&self.tiers));
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Cache {
    /// Starts configuring a cache.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    pub(crate) fn from_tiers(
        tiers: Tiers,
        expiry: Expiry,
        absent_ttl: Option<Duration>,
        hot_keys: bool,
    ) -> Self {
        let flights = Flights::new(tiers.memory().shard_count());
        let absent = absent_ttl.map(|ttl| {
            (
                Absent::new(tiers.memory().shard_count(), MAX_ABSENT_KEYS),
                ttl,
            )
        });
        let tiers = Arc::new(tiers);
        let checkpoint = tiers.start();
        Cache {
            inner: Arc::new(Inner {
                tiers,
                flights,
                loads: AtomicU64::new(0),
                checkpoint,
                expiry,
                absent,
                health: HealthWatch::default(),
                hot: hot_keys.then(HotKeys::default),
            }),
        }
    }

    /// The cache-wide time to live, if one was set.
    pub(crate) fn time_to_live(&self) -> Option<Duration> {
        self.inner.expiry.time_to_live
    }

    /// Hot-key detection, if on.
    pub(crate) fn hot(&self) -> Option<&HotKeys> {
        self.inner.hot.as_ref()
    }

    /// The tiers, for the API layers (`crate::api`).
    pub(crate) fn tiers(&self) -> &Arc<Tiers> {
        &self.inner.tiers
    }

    /// Forgets every key remembered as absent.
    pub(crate) fn forget_all_absent(&self) {
        if let Some((absent, _)) = &self.inner.absent {
            absent.clear();
        }
    }

    /// Closes the cache cleanly: memory's unwritten entries go to disk, the
    /// log is sealed, and a checkpoint of what memory holds is written, so the
    /// next open of the directory is warm: its index comes from segment
    /// summaries and memory is refilled, hottest first, in the background.
    /// Without a disk tier, does nothing.
    ///
    /// Closing closes every handle to the cache: from then on, on this
    /// handle's clones, inserts, loads and `sync()` return [`Error::Closed`],
    /// and lookups, `contains` and `remove` find nothing. A change a clone
    /// made before the close is written by it. When `close` returns `Ok`, the
    /// directory is cleanly closed (every segment sealed, the checkpoint
    /// current) and released: a cache may open it again at once. Closing
    /// again returns what the first close returned. Dropping the last handle
    /// closes as a best effort, on a thread of its own (the dropping thread
    /// is not held; an error is logged, as it cannot be returned): opening
    /// the directory again in this process waits for that close, and so
    /// does the process's exit (up to a minute), so a cache dropped at the
    /// end of `main` leaves a cleanly closed directory. Another process
    /// opening it meanwhile finds it in use: call `close` to know when it
    /// is released.
    ///
    /// # Errors
    /// * [`Error::NotPersisted`]: under `WriteBehind`, inserts the disk tier
    ///   could not take (the directory is closed cleanly without them).
    /// * [`Error::Disk`]: the disk tier failed; the directory may not be
    ///   closed cleanly (the next open recovers it as after a crash).
    pub fn close(self) -> Result<(), Error> {
        self.inner.tiers.close()
    }

    /// The value for `key`, if it is cached and not expired, in memory or on
    /// disk (a disk hit is promoted into memory). A hit marks the entry as
    /// referenced for CLOCK-Pro; in memory it takes only a shared lock.
    ///
    /// Keys that could never be stored (empty or too long) are simply not
    /// found, and a closed cache finds nothing.
    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        let hash = hash_key(key);
        if let Some(hot) = &self.inner.hot
            && hot_keys::sampled()
        {
            hot.record(hash, key);
        }
        if sampled() {
            return self.get_timed(hash, key);
        }
        self.inner.tiers.get(hash, key)
    }

    /// A `get` whose time goes into `stats().latency`.
    #[inline(never)]
    fn get_timed(&self, hash: u64, key: &[u8]) -> Option<Bytes> {
        let start = Instant::now();
        let found = self.inner.tiers.get(hash, key);
        self.inner.tiers.latency().get.since(start);
        found
    }

    /// Returns `Ok` once every change made before the call is on stable
    /// storage (written and `fdatasync`ed). Without a disk tier, returns at
    /// once.
    ///
    /// What that covers depends on the [`WritePolicy`](crate::WritePolicy):
    /// * `WriteBehind` (the default): every insert, overwrite and removal
    ///   acknowledged before the call. After a crash (a kill, or a power
    ///   loss) each of them is there, unless capacity forced it out before
    ///   the crash (the disk tier was full and reclaimed it) or its bytes were
    ///   damaged.
    /// * `Demote` and `DemoteAll`: what the disk tier holds: every removal and
    ///   overwrite (an older value never comes back), and every entry memory
    ///   has written down by evicting it. Entries only memory holds are not on
    ///   disk, by design, and a crash forgets them.
    ///
    /// Either way, after a crash the cache is as it was at one moment between
    /// the last completed `sync()` and the crash (docs/contract.md).
    ///
    /// # Errors
    /// * [`Error::NotPersisted`]: the disk tier was too far behind to take
    ///   some inserts before the call (see [`Backpressure`](crate::Backpressure)),
    ///   and they could not be written now either. Everything else is synced;
    ///   those still in memory are tried again by the next `sync()`.
    /// * [`Error::Disk`]: the disk tier failed and persists nothing more.
    /// * [`Error::Closed`]: the cache was closed.
    pub fn sync(&self) -> Result<(), Error> {
        self.inner.tiers.sync()
    }

    /// Waits until the [removal listener](crate::CacheBuilder::removal_listener)
    /// has been called for every removal made before this call (moka's
    /// name). Returns at once without a listener, or when called from the
    /// listener itself.
    pub fn run_pending_tasks(&self) {
        self.inner.tiers.wait_reported();
    }

    /// How long `key`'s entry has left to live: `None` if it is not cached
    /// (or expired), `Some(None)` if it does not expire. A key only the disk
    /// holds is read (an access: promoted into memory, where its time left
    /// is read); one too heavy for memory reports `Some(None)`.
    ///
    /// ```
    /// use larder::Cache;
    /// use std::time::Duration;
    ///
    /// let cache = Cache::builder().memory_capacity(1 << 20).build()?;
    /// cache.insert_with_ttl(b"k", "v", Duration::from_secs(60))?;
    /// let left = cache.time_to_expiry(b"k").flatten().unwrap();
    /// assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(50));
    /// cache.insert(b"forever", "v")?;
    /// assert_eq!(cache.time_to_expiry(b"forever"), Some(None));
    /// assert_eq!(cache.time_to_expiry(b"absent"), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn time_to_expiry(&self, key: &[u8]) -> Option<Option<std::time::Duration>> {
        if let Some(left) = self.time_left(key) {
            return Some(left);
        }
        self.get(key)?;
        Some(self.time_left(key).flatten())
    }

    /// Whether `key` is cached and not expired, in either tier. Unlike
    /// [`get`](Self::get) this is not an access: it neither counts as a hit
    /// or miss, nor marks the entry, nor promotes it. A key only the disk
    /// tier holds costs one read of its record. A closed cache holds nothing.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.inner.tiers.contains(hash_key(key), key)
    }

    /// Caches `value` under `key`, replacing any previous value (and its TTL).
    ///
    /// Errors, changing nothing, if the key is empty or over
    /// [`MAX_KEY_LEN`](crate::MAX_KEY_LEN), the value is over
    /// [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN), or the entry weighs more than
    /// one shard can hold.
    ///
    /// The value is kept as the [`Bytes`] it converts to, never copied:
    /// a `Bytes` as it is; a `Vec<u8>`, `Box<[u8]>` or `String` without a
    /// copy (its first clone, at the first `get`, allocates its reference
    /// count once); values the caller keeps in an `Arc<[u8]>` (or another
    /// owner) through [`Bytes::from_owner`], one small allocation and no
    /// copy (docs/benchmarks.md §15 measures what that allocation costs).
    ///
    /// ```
    /// use larder::{Bytes, Cache};
    /// use std::sync::Arc;
    ///
    /// let cache = Cache::builder().memory_capacity(1 << 20).build()?;
    /// cache.insert(b"a", Bytes::from_static(b"static"))?;
    /// cache.insert(b"b", vec![1u8, 2, 3])?;
    /// let shared: Arc<[u8]> = Arc::from(&b"kept elsewhere too"[..]);
    /// cache.insert(b"c", Bytes::from_owner(Arc::clone(&shared)))?;
    /// assert_eq!(cache.get(b"c").as_deref(), Some(&shared[..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn insert(&self, key: &[u8], value: impl Into<Bytes>) -> Result<(), Error> {
        self.insert_inner(key, value.into(), None)
    }

    /// Like [`insert`](Self::insert), but the entry expires after `ttl`: from then
    /// on it is never returned. `ttl` must not be zero.
    pub fn insert_with_ttl(
        &self,
        key: &[u8],
        value: impl Into<Bytes>,
        ttl: Duration,
    ) -> Result<(), Error> {
        if ttl.is_zero() {
            return Err(Error::ZeroTtl);
        }
        self.insert_inner(key, value.into(), Some(ttl))
    }

    fn insert_inner(&self, key: &[u8], value: Bytes, ttl: Option<Duration>) -> Result<(), Error> {
        let start = sampled().then(Instant::now);
        let r = self.insert_now(key, value, ttl);
        if let Some(start) = start {
            self.inner.tiers.latency().insert.since(start);
        }
        r
    }

    #[inline(always)]
    fn insert_now(&self, key: &[u8], value: Bytes, ttl: Option<Duration>) -> Result<(), Error> {
        let tiers = &self.inner.tiers;
        if tiers.is_closed() {
            return Err(Error::Closed);
        }
        let weight = self.check_entry(key, &value)?;
        let hash = hash_key(key);
        self.forget_absent(hash, key);
        let Some((deadline, sliding)) = self.deadline(ttl, key, &value) else {
            // Expired on arrival: the key holds no value from now on (its
            // old value was replaced; the new one never entered).
            tiers.remove(hash, key, RemovalCause::Replaced);
            return Ok(());
        };
        Ok(tiers.insert(hash, key, value, weight, deadline, sliding)?)
    }

    /// The deadline of an entry given `ttl`, else the `expire_after` hook's,
    /// else the cache's time to live (fixed), else its time to idle
    /// (sliding); 0: none; and whether it slides. `None`: expired on arrival
    /// (the hook said zero).
    #[inline]
    fn deadline(&self, ttl: Option<Duration>, key: &[u8], value: &Bytes) -> Option<(u64, bool)> {
        let e = &self.inner.expiry;
        if ttl.is_none()
            && e.time_to_live.is_none()
            && e.time_to_idle.is_none()
            && e.expire_after.is_none()
        {
            return Some((0, false));
        }
        self.deadline_of(ttl, key, value)
    }

    #[inline(never)]
    fn deadline_of(&self, ttl: Option<Duration>, key: &[u8], value: &Bytes) -> Option<(u64, bool)> {
        let clock = self.inner.tiers.memory().clock();
        let e = &self.inner.expiry;
        let ttl = ttl
            .or_else(|| e.expire_after.as_ref().and_then(|f| f(key, value)))
            .or(e.time_to_live);
        Some(match (ttl, e.time_to_idle) {
            (Some(ttl), _) if ttl.is_zero() => return None,
            (Some(ttl), _) => (clock.deadline(ttl), false),
            (None, Some(idle)) => (sliding_deadline(clock.now(), nanos(idle), false), true),
            (None, None) => (0, false),
        })
    }

    /// Validates an entry and computes its weight, before any lock is taken.
    pub(crate) fn check_entry(&self, key: &[u8], value: &Bytes) -> Result<u32, Error> {
        check_key(key)?;
        if value.len() > MAX_VALUE_LEN {
            return Err(Error::ValueTooLong {
                len: value.len(),
                max: MAX_VALUE_LEN,
            });
        }
        let tiers = &self.inner.tiers;
        let weight = tiers.weigh(key, value);
        if weight > tiers.max_weight() {
            return Err(Error::EntryTooHeavy {
                weight,
                max: tiers.max_weight(),
            });
        }
        // `max_weight` fits in a u32.
        Ok(weight as u32)
    }

    /// Removes `key` from both tiers; returns its value if it was cached and
    /// not expired (a key only the disk tier held costs one read of its
    /// record). On a closed cache, does nothing and returns `None`.
    pub fn remove(&self, key: &[u8]) -> Option<Bytes> {
        self.remove_as(key, RemovalCause::Explicit)
    }

    /// [`remove`](Self::remove), told to the listener as `cause`.
    pub(crate) fn remove_as(&self, key: &[u8], cause: RemovalCause) -> Option<Bytes> {
        let start = sampled().then(Instant::now);
        let hash = hash_key(key);
        self.forget_absent(hash, key);
        let gone = self.inner.tiers.remove(hash, key, cause);
        if let Some(start) = start {
            self.inner.tiers.latency().remove.since(start);
        }
        gone
    }

    fn forget_absent(&self, hash: u64, key: &[u8]) {
        if let Some((absent, _)) = &self.inner.absent {
            absent.forget(hash, key);
        }
    }

    /// The value for `key`, loading and caching it with `load` on a miss.
    ///
    /// Single-flight: when several threads miss on the same key at once, one runs
    /// its loader and the others wait for and share that value. If the leader's
    /// loader panics, a waiter takes over with its own loader. The loaded
    /// value takes the cache's [`time_to_live`](crate::CacheBuilder::time_to_live),
    /// if it has one.
    ///
    /// ```
    /// use larder::Cache;
    ///
    /// let cache = Cache::builder().memory_capacity(1 << 20).build()?;
    /// let v = cache.get_with(b"user:42", || "loaded from the database".into())?;
    /// assert_eq!(v, "loaded from the database");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_with(&self, key: &[u8], load: impl FnOnce() -> Bytes) -> Result<Bytes, Error> {
        self.try_get_with(key, || Ok::<_, std::convert::Infallible>(load()))
            .map_err(|e| match e {
                LoadError::Cache(e) => e,
                LoadError::Loader(never) => match *never {},
            })
    }

    /// Like [`get_with`](Self::get_with) with a fallible loader.
    ///
    /// Single-flight holds for failures too: callers that were waiting on a
    /// loader that fails get its error, shared (`Arc<E>`), within one
    /// loader's time; nothing is cached, and the next call loads again, so a
    /// failure never poisons the key. (A waiter whose loader has another
    /// error type runs its own loader; so does every waiter if the loader
    /// panics.)
    ///
    /// ```
    /// use larder::{Cache, LoadError};
    ///
    /// let cache = Cache::builder().memory_capacity(1 << 20).build()?;
    /// let r = cache.try_get_with(b"user:7", || Err("the database is down"));
    /// assert!(matches!(r, Err(LoadError::Loader(e)) if *e == "the database is down"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_get_with<E: Send + Sync + 'static>(
        &self,
        key: &[u8],
        load: impl FnOnce() -> Result<Bytes, E>,
    ) -> Result<Bytes, LoadError<E>> {
        let loaded = self.load(key, false, || load().map(Some).map_err(Failure::Loader))?;
        Ok(loaded.expect("`load` hands `None` only to a caller that takes it"))
    }

    /// Like [`get_with`](Self::get_with) with a loader that may find nothing:
    /// `None` from the loader is returned (to every caller waiting on it)
    /// and no value is cached. With
    /// [`absent_ttl`](crate::CacheBuilder::absent_ttl), the key is
    /// remembered as absent for that long (in memory, up to
    /// [`MAX_ABSENT_KEYS`] keys), and calls meanwhile return `None` without
    /// loading; an insert or removal of the key forgets it. Without it, the
    /// next call loads again.
    ///
    /// ```
    /// use larder::Cache;
    ///
    /// let cache = Cache::builder().memory_capacity(1 << 20).build()?;
    /// assert_eq!(cache.optionally_get_with(b"user:0", || None)?, None);
    /// let v = cache.optionally_get_with(b"user:1", || Some("alice".into()))?;
    /// assert_eq!(v.as_deref(), Some(&b"alice"[..]));
    /// assert!(cache.contains(b"user:1") && !cache.contains(b"user:0"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn optionally_get_with(
        &self,
        key: &[u8],
        load: impl FnOnce() -> Option<Bytes>,
    ) -> Result<Option<Bytes>, Error> {
        self.load(key, true, || {
            Ok::<_, Failure<std::convert::Infallible>>(load())
        })
        .map_err(|e| match e {
            LoadError::Cache(e) => e,
            LoadError::Loader(never) => match *never {},
        })
    }

    /// [`optionally_get_with`](Self::optionally_get_with) with a fallible
    /// loader, as a database query is: `Ok(None)` is "no such row" (shared
    /// with the waiters, remembered if `absent_ttl` is set), `Err` is shared
    /// with the waiters as in [`try_get_with`](Self::try_get_with).
    ///
    /// ```
    /// use larder::Cache;
    ///
    /// let cache = Cache::builder().memory_capacity(1 << 20).build()?;
    /// let row = cache.try_optionally_get_with(b"user:9", || Ok::<_, std::io::Error>(None))?;
    /// assert_eq!(row, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_optionally_get_with<E: Send + Sync + 'static>(
        &self,
        key: &[u8],
        load: impl FnOnce() -> Result<Option<Bytes>, E>,
    ) -> Result<Option<Bytes>, LoadError<E>> {
        self.load(key, true, || load().map_err(Failure::Loader))
    }

    /// The old name of [`get_with`](Self::get_with).
    #[deprecated(since = "0.2.0", note = "renamed `get_with` (moka's name)")]
    pub fn get_or_insert_with(
        &self,
        key: &[u8],
        load: impl FnOnce() -> Bytes,
    ) -> Result<Bytes, Error> {
        self.get_with(key, load)
    }

    /// The old name of [`try_get_with`](Self::try_get_with).
    #[deprecated(since = "0.2.0", note = "renamed `try_get_with` (moka's name)")]
    pub fn try_get_or_insert_with<E: Send + Sync + 'static>(
        &self,
        key: &[u8],
        load: impl FnOnce() -> Result<Bytes, E>,
    ) -> Result<Bytes, LoadError<E>> {
        self.try_get_with(key, load)
    }

    /// The loaders' one path: a lookup, then a single-flight load on a miss.
    /// `None` (the loader found nothing) reaches only callers that take it
    /// (`absent_ok`); another caller that meets it loads for itself. A loader
    /// may refuse its own value ([`Failure::Refused`]: the typed layer could
    /// not encode it), which reaches the waiters as the cache's refusal.
    pub(crate) fn load<E: Send + Sync + 'static>(
        &self,
        key: &[u8],
        absent_ok: bool,
        load: impl FnOnce() -> Result<Option<Bytes>, Failure<E>>,
    ) -> Result<Option<Bytes>, LoadError<E>> {
        let hash = match self.load_lookup(key, absent_ok)? {
            Lookup::Found(v) => return Ok(v),
            Lookup::Missed(hash) => hash,
        };
        loop {
            match self.load_join(hash, key) {
                Joined::Found(v) => return Ok(Some(v)),
                Joined::Lead(leader) => {
                    let start = Instant::now();
                    let loaded = load();
                    self.inner.tiers.latency().load.since(start);
                    return self.load_finish(leader, hash, key, loaded);
                }
                Joined::Wait(follower) => {
                    if let Some(r) = self.load_follow(follower.wait(), hash, key, absent_ok) {
                        return r;
                    }
                }
            }
        }
    }

    /// A load's first steps: the checks, the lookup, the absent markers.
    pub(crate) fn load_lookup(&self, key: &[u8], absent_ok: bool) -> Result<Lookup, Error> {
        check_key(key)?;
        let tiers = &self.inner.tiers;
        if tiers.is_closed() {
            return Err(Error::Closed);
        }
        let hash = hash_key(key);
        if let Some(v) = tiers.get(hash, key) {
            return Ok(Lookup::Found(Some(v)));
        }
        if let Some((absent, _)) = &self.inner.absent
            && absent_ok
            && absent.holds(hash, key, tiers.memory().clock().now())
        {
            return Ok(Lookup::Found(None));
        }
        Ok(Lookup::Missed(hash))
    }

    /// Joins or starts the flight for a missed key. A leader first looks
    /// again: a flight that ended between the miss and the join left its
    /// value.
    pub(crate) fn load_join<'a>(&'a self, hash: u64, key: &'a [u8]) -> Joined<'a> {
        match self.inner.flights.join(hash, key) {
            Role::Follower(f) => Joined::Wait(f),
            Role::Leader(leader) => match self.inner.tiers.peek(hash, key) {
                Some(v) => {
                    leader.finish(Some(v.clone()));
                    Joined::Found(v)
                }
                None => {
                    self.inner.loads.fetch_add(1, Ordering::Relaxed);
                    Joined::Lead(leader)
                }
            },
        }
    }

    /// What a waiter does with a flight's outcome: `Some` answer, or `None`
    /// to join again (the leader gave up, found nothing for a caller that
    /// needs a value, or failed with another error type).
    pub(crate) fn load_follow<E: Send + Sync + 'static>(
        &self,
        outcome: Outcome,
        hash: u64,
        key: &[u8],
        absent_ok: bool,
    ) -> Option<Result<Option<Bytes>, LoadError<E>>> {
        match outcome {
            Outcome::Shared(Some(v)) => Some(Ok(Some(v))),
            Outcome::Shared(None) if absent_ok => Some(Ok(None)),
            Outcome::Shared(None) => None,
            Outcome::Failed(e) => e.downcast::<E>().ok().map(|e| Err(LoadError::Loader(e))),
            Outcome::Refused(e) => Some(Err(LoadError::Cache(e))),
            Outcome::Retry => self.inner.tiers.peek(hash, key).map(|v| Ok(Some(v))),
        }
    }

    /// The leader's last step: caches what its loader returned and tells the
    /// waiters.
    pub(crate) fn load_finish<E: Send + Sync + 'static>(
        &self,
        leader: Leader<'_>,
        hash: u64,
        key: &[u8],
        loaded: Result<Option<Bytes>, Failure<E>>,
    ) -> Result<Option<Bytes>, LoadError<E>> {
        let tiers = &self.inner.tiers;
        let value = match loaded {
            Ok(Some(v)) => v,
            Ok(None) => {
                if let Some((absent, ttl)) = &self.inner.absent {
                    let clock = tiers.memory().clock();
                    absent.remember(hash, key, clock.now(), clock.deadline(*ttl));
                }
                leader.finish(None);
                return Ok(None);
            }
            Err(Failure::Loader(e)) => {
                let e = Arc::new(e);
                leader.fail(Arc::clone(&e) as _);
                return Err(LoadError::Loader(e));
            }
            Err(Failure::Refused(e)) => {
                leader.refuse(e.clone());
                return Err(LoadError::Cache(e));
            }
        };
        self.forget_absent(hash, key);
        let inserted = self.check_entry(key, &value).and_then(|weight| {
            match self.deadline(None, key, &value) {
                Some((deadline, sliding)) => {
                    Ok(tiers.insert(hash, key, value.clone(), weight, deadline, sliding)?)
                }
                None => Ok(()), // expired on arrival: returned, not cached
            }
        });
        if let Err(e) = inserted {
            leader.refuse(e.clone());
            return Err(LoadError::Cache(e));
        }
        leader.finish(Some(value.clone()));
        Ok(Some(value))
    }

    /// Whether the cache is doing its job, and if not, why: unhealthy if the
    /// disk tier failed (it stopped writing; memory serves on) or the cache is
    /// closed; degraded if, since the previous call on any handle, writes
    /// were refused, records failed their checks or segments faulted, or if
    /// recovery quarantined files at open. See [`Health`].
    ///
    /// ```
    /// use larder::{Cache, Health};
    ///
    /// let cache = Cache::builder().memory_capacity(1 << 20).build()?;
    /// assert_eq!(cache.health(), Health::Healthy);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn health(&self) -> Health {
        self.inner
            .health
            .check(&self.stats(), self.inner.tiers.is_closed())
    }

    /// A snapshot of the counters and occupancy.
    pub fn stats(&self) -> Stats {
        let tiers = &self.inner.tiers;
        let s = tiers.memory().snapshot();
        let disk = tiers.lower().map(|l| {
            let mut d = l.disk().stats();
            d.write_policy = l.policy();
            d.recovery.checkpoint = self.inner.checkpoint.clone();
            (d.recovery.refilled, d.recovery.refill_done) = tiers.refill_progress();
            d
        });
        let l2_hits = disk.as_ref().map_or(0, |d| d.hits);
        Stats {
            hits: s.hits + l2_hits,
            misses: s.misses.saturating_sub(l2_hits),
            inserts: s.inserts,
            updates: s.updates,
            removes: s.removes,
            expirations: s.expirations,
            loads: self.inner.loads.load(Ordering::Relaxed),
            memory: TierStats {
                hits: s.hits,
                entries: s.counts.resident as u64,
                weight: s.counts.resident_weight,
                capacity: s.capacity,
                evictions: s.evictions,
            },
            hot_entries: s.counts.hot as u64,
            ghost_entries: s.counts.ghosts as u64,
            shards: tiers.memory().shard_count(),
            disk,
            latency: tiers.latency().snapshot(),
            removals_pending: tiers.reports_pending(),
            hot_keys: self.hot_keys(10),
        }
    }

    /// Checks every internal invariant of every shard; panics on a violation.
    /// Compiled for tests and fuzzing (feature `validate`) only.
    #[cfg(any(test, fuzzing, feature = "validate"))]
    pub fn validate(&self) {
        self.inner.tiers.validate();
    }
}
