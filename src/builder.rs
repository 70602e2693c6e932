//! [`CacheBuilder`]: every setting, its default, and its validation.

use crate::cache::Cache;
use crate::disk::io::{Io, default_backend};
use crate::disk::{Backpressure, DEFAULT_MAX_MAPS, DiskConfig, DiskTier, ReadPath};
use crate::error::BuildError;
use crate::listener::{ListenerFn, Notifier, Removal};
use crate::memory::MemoryTier;
use crate::tiers::{Lower, Tiers, WritePolicy};
use crate::time::{Clock, ManualClock};
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The largest shard count accepted.
pub const MAX_SHARDS: usize = 1 << 16;

/// Fixed memory, in bytes, that the default weigher charges per entry on top of
/// its key and value: the resident slot (88 bytes) plus its share of the table.
pub const ENTRY_OVERHEAD: u64 = 96;

/// The fewest entries a shard should hold under the default shard count. Keys
/// spread over shards binomially, so small shards overflow unevenly: with 125
/// entries a shard, a loop 1% larger than the cache misses 2.7x as often as one
/// shard does (`loop` trace, docs/design.md). Small caches gain nothing from
/// more shards anyway.
const MIN_DEFAULT_SHARD_ENTRIES: u64 = 256;

/// A user's weigher function.
type WeighFn = dyn Fn(&[u8], &Bytes) -> u64 + Send + Sync;

/// A user's per-entry expiry: the TTL of an entry inserted or loaded without one.
pub(crate) type ExpireFn = dyn Fn(&[u8], &Bytes) -> Option<Duration> + Send + Sync;

/// How an entry's weight is computed.
#[derive(Clone)]
pub(crate) enum Weigher {
    /// `key.len() + value.len() + ENTRY_OVERHEAD`.
    Bytes,
    /// 1 per entry: the capacity counts entries.
    Unit,
    /// A user function (clamped to at least 1).
    Custom(Arc<WeighFn>),
}

impl Weigher {
    #[inline]
    pub(crate) fn weigh(&self, key: &[u8], value: &Bytes) -> u64 {
        match self {
            Weigher::Bytes => key.len() as u64 + value.len() as u64 + ENTRY_OVERHEAD,
            Weigher::Unit => 1,
            Weigher::Custom(f) => f(key, value).max(1),
        }
    }

    /// A small entry's weight, for sizing shards: 1 unit, or 128 bytes.
    fn typical_entry_weight(&self) -> u64 {
        match self {
            Weigher::Bytes => ENTRY_OVERHEAD + 32,
            Weigher::Unit | Weigher::Custom(_) => 1,
        }
    }
}

/// Builds a [`Cache`]; start with [`Cache::builder`].
///
/// ```
/// use larder::Cache;
///
/// let cache = Cache::builder()
///     .memory_capacity(64 << 20) // 64 MiB of keys, values and per-entry overhead
///     .build()?;
/// cache.insert(b"greeting", "hello")?;
/// assert_eq!(cache.get(b"greeting").as_deref(), Some(&b"hello"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a builder does nothing until `build()` is called"]
#[derive(Clone)]
pub struct CacheBuilder {
    capacity: Option<u64>,
    shards: Option<usize>,
    weigher: Weigher,
    clock: Clock,
    /// The disk tier's directory and capacity.
    disk: Option<(PathBuf, u64)>,
    /// The disk tier's settings, each `None` until set: they mean the same
    /// whatever the order of the calls, and are checked at `build()`.
    disk_settings: DiskSettings,
    time_to_live: Option<Duration>,
    time_to_idle: Option<Duration>,
    expire_after: Option<Arc<ExpireFn>>,
    absent_ttl: Option<Duration>,
    removal_listener: Option<Arc<ListenerFn>>,
    hot_keys: bool,
}

/// The disk tier's settings a caller set (defaults apply at `build()`).
#[derive(Clone, Default)]
struct DiskSettings {
    segment_size: Option<u64>,
    policy: Option<WritePolicy>,
    backpressure: Option<Backpressure>,
    flush_interval: Option<Duration>,
    compress_above: Option<usize>,
    compression_budget: Option<f64>,
    /// The I/O backend; `None`: the default one. Tests inject faults here.
    io: Option<Arc<dyn Io>>,
    direct: Option<bool>,
    read_path: Option<ReadPath>,
    max_maps: Option<usize>,
}

impl DiskSettings {
    /// The first setting made, by its builder method's name.
    fn first_set(&self) -> Option<&'static str> {
        [
            (self.segment_size.is_some(), "segment_size"),
            (self.policy.is_some(), "write_policy"),
            (self.backpressure.is_some(), "disk_backpressure"),
            (self.flush_interval.is_some(), "flush_interval"),
            (self.compress_above.is_some(), "compress_above"),
            (self.compression_budget.is_some(), "compression_budget"),
            (self.direct.is_some(), "direct_writes"),
            (self.read_path.is_some(), "read_path"),
            (self.max_maps.is_some(), "max_maps"),
        ]
        .into_iter()
        .find_map(|(set, name)| set.then_some(name))
    }
}

/// The default [`compression_budget`](CacheBuilder::compression_budget):
/// a quarter of one core.
pub const DEFAULT_COMPRESSION_BUDGET: f64 = 0.25;

/// The default segment size.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;

/// The segment size of a disk tier of `capacity` bytes whose segment size
/// was not set: [`DEFAULT_SEGMENT_SIZE`], or for a smaller tier the largest
/// power of two that gives it 8 segments, at least 64 KiB.
fn default_segment_size(capacity: u64) -> u64 {
    let min = crate::format::segment::MIN_SEGMENT_SIZE;
    if capacity / 8 >= DEFAULT_SEGMENT_SIZE {
        return DEFAULT_SEGMENT_SIZE;
    }
    let fits = (capacity / 8).max(1);
    (1u64 << (63 - fits.leading_zeros())).max(min)
}

impl Default for CacheBuilder {
    fn default() -> Self {
        CacheBuilder {
            capacity: None,
            shards: None,
            weigher: Weigher::Bytes,
            clock: Clock::system(),
            disk: None,
            disk_settings: DiskSettings::default(),
            time_to_live: None,
            time_to_idle: None,
            expire_after: None,
            absent_ttl: None,
            removal_listener: None,
            hot_keys: false,
        }
    }
}

impl CacheBuilder {
    /// The memory tier's capacity in weight units: bytes with the default weigher,
    /// entries with [`unit_weight`](Self::unit_weight). Required; must be > 0.
    pub fn memory_capacity(mut self, capacity: u64) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// The number of shards (a power of two, at most [`MAX_SHARDS`]).
    ///
    /// Default: four per available core, rounded up to a power of two, halved
    /// while a shard would hold fewer than about 256 entries (256 weight units,
    /// or 32 KiB with the default byte weigher).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Weigh every entry as 1, so that the capacity counts entries.
    pub fn unit_weight(mut self) -> Self {
        self.weigher = Weigher::Unit;
        self
    }

    /// Weigh entries with `f(key, value)` (a result of 0 counts as 1).
    ///
    /// The default weigher charges `key.len() + value.len() + ENTRY_OVERHEAD` bytes.
    /// `f` runs outside every lock, once per insert.
    pub fn weigher(mut self, f: impl Fn(&[u8], &Bytes) -> u64 + Send + Sync + 'static) -> Self {
        self.weigher = Weigher::Custom(Arc::new(f));
        self
    }

    /// Drive TTLs from a [`ManualClock`] instead of the system's monotonic clock.
    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.clock = Clock::Manual(clock);
        self
    }

    /// Adds a disk tier (L2) in `dir` (created if needed), holding at most
    /// `capacity` bytes of segment files. The directory must not be in use by
    /// another cache; one a cache left is reopened and recovered (warm after
    /// a clean `close`).
    pub fn disk(mut self, dir: impl Into<PathBuf>, capacity: u64) -> Self {
        self.disk = Some((dir.into(), capacity));
        self
    }

    /// The disk tier's I/O backend (fault-injection tests).
    #[cfg(test)]
    pub(crate) fn disk_io(mut self, io: Arc<dyn Io>) -> Self {
        self.disk_settings.io = Some(io);
        self
    }

    /// Simulates a power loss at the process's death (feature `validate`,
    /// for crash tests): the disk tier's segment writes after each file's
    /// last `fdatasync` are kept in memory, but for a random half of their
    /// sectors (`seed` picks which) that reach the file early. A SIGKILL then
    /// leaves what a power cut would.
    #[cfg(feature = "validate")]
    #[doc(hidden)]
    pub fn simulate_power_loss(mut self, seed: u64) -> Self {
        self.disk_settings.io = Some(Arc::new(crate::disk::power_loss::PowerLoss::new(seed)));
        self
    }

    /// Size of the disk tier's segment files (64 KiB..=1 GiB). Default: the
    /// size a directory was made with, when it is reopened; else 64 MiB
    /// ([`DEFAULT_SEGMENT_SIZE`]), or for a disk tier under 512 MiB the
    /// largest power of two that gives it 8 segments (at least 64 KiB).
    ///
    /// Segments are filled in memory: the tier holds about four segments'
    /// worth of buffers (the segment being filled in each of two streams, and
    /// two more, full and waiting for the disk or kept for reuse), taken as
    /// they are filled: up to about 256 MiB at the default under a sustained
    /// write load.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.disk_settings.segment_size = Some(bytes);
        self
    }

    /// When values reach the disk tier (default [`WritePolicy::WriteBehind`]).
    pub fn write_policy(mut self, policy: WritePolicy) -> Self {
        self.disk_settings.policy = Some(policy);
        self
    }

    /// What an insert does when the disk tier is behind (default: wait 100 ms,
    /// then refuse and count).
    pub fn disk_backpressure(mut self, backpressure: Backpressure) -> Self {
        self.disk_settings.backpressure = Some(backpressure);
        self
    }

    /// The time to live of every entry inserted or loaded without one of its
    /// own: it is never returned once that long has passed since it was
    /// written (default: entries do not expire). An entry's own TTL
    /// ([`insert_with_ttl`](crate::Cache::insert_with_ttl)) takes precedence.
    /// The deadline is kept with the entry in both tiers, so it holds across
    /// a restart. Zero is refused by `build()`.
    ///
    /// ```
    /// use larder::Cache;
    /// use std::time::Duration;
    ///
    /// let cache = Cache::builder()
    ///     .memory_capacity(1 << 20)
    ///     .time_to_live(Duration::from_secs(300))
    ///     .build()?;
    /// cache.insert(b"session:1", "alice")?; // gone in five minutes
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn time_to_live(mut self, ttl: Duration) -> Self {
        self.time_to_live = Some(ttl);
        self
    }

    /// Sliding expiry: an entry inserted or loaded without a TTL of its own
    /// expires once it has gone unread for `idle` (default: never). Each
    /// read (`get`, a loader's hit; from either tier) starts its idle time
    /// again, to within 1/64 of `idle`. An entry's own TTL
    /// (`insert_with_ttl`) is a fixed deadline instead.
    ///
    /// It holds across a restart: a clean close writes each entry's latest
    /// deadline to disk, and so does memory letting go of an entry (unless
    /// the disk tier is too far behind to take the write). After a crash an
    /// entry may expire earlier than its last read allows (by up to the
    /// time since its deadline was last written), never later. Zero, or a
    /// cache-wide [`time_to_live`](Self::time_to_live) too, is refused by
    /// `build()`.
    ///
    /// ```
    /// use larder::Cache;
    /// use std::time::Duration;
    ///
    /// let cache = Cache::builder()
    ///     .memory_capacity(1 << 20)
    ///     .time_to_idle(Duration::from_secs(1800))
    ///     .build()?;
    /// cache.insert(b"session:1", "alice")?; // gone after 30 idle minutes
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn time_to_idle(mut self, idle: Duration) -> Self {
        self.time_to_idle = Some(idle);
        self
    }

    /// Per-entry expiry: `f(key, value)` gives the TTL of each entry
    /// inserted or loaded without one of its own (`insert_with_ttl` wins);
    /// `None` leaves it to the cache-wide setting (`time_to_live` or
    /// `time_to_idle`, else never). The TTL is fixed from the insert and
    /// stored with the entry, so it holds in both tiers and across
    /// restarts. `Some(Duration::ZERO)` makes the entry expire at once (a
    /// value not worth caching). It runs on the inserting thread, before any
    /// lock.
    ///
    /// ```
    /// use larder::Cache;
    /// use std::time::Duration;
    ///
    /// let cache = Cache::builder()
    ///     .memory_capacity(1 << 20)
    ///     .expire_after(|key, _value| {
    ///         key.starts_with(b"otp:").then(|| Duration::from_secs(30))
    ///     })
    ///     .build()?;
    /// cache.insert(b"otp:7", "492817")?; // gone in 30 s
    /// cache.insert(b"user:7", "alice")?; // never expires
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn expire_after(
        mut self,
        f: impl Fn(&[u8], &Bytes) -> Option<Duration> + Send + Sync + 'static,
    ) -> Self {
        self.expire_after = Some(Arc::new(f));
        self
    }

    /// Calls `listener` once for every entry that leaves the cache (both
    /// tiers: a move from memory to disk is not a removal), with its key,
    /// value and [`RemovalCause`](crate::RemovalCause) (moka's
    /// `eviction_listener`). It runs on a thread of the cache's own,
    /// `larder-listener`, never under a lock: the tiers queue each report
    /// as they release their locks, and the thread delivers them in order,
    /// so a report comes as soon as the listener is done with those before
    /// it. [`Cache::run_pending_tasks`](crate::Cache::run_pending_tasks)
    /// waits for every report queued before it; `close` delivers them all
    /// before it returns. The listener may call the cache; it should not
    /// hold a handle to it (the cache would never drop: close it instead).
    ///
    /// What a listener costs: a copy of the key per report, and on the
    /// disk tier one read of the record an insert or removal supersedes for
    /// a key only the disk holds (its value) and of each record reclaim
    /// drops. Not reported: entries a cache without a disk tier holds when
    /// it is closed, what a crash loses, and the keys of a segment file
    /// recovery or reclaim finds unreadable as a whole (counted in
    /// [`stats`](crate::Cache::stats) and [`health`](crate::Cache::health)).
    ///
    /// ```
    /// use larder::{Cache, RemovalCause};
    /// use std::sync::{Arc, Mutex};
    ///
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = Arc::clone(&seen);
    /// let cache = Cache::builder()
    ///     .memory_capacity(1 << 20)
    ///     .removal_listener(move |r| log.lock().unwrap().push((r.key, r.cause)))
    ///     .build()?;
    /// cache.insert(b"k", "v1")?;
    /// cache.insert(b"k", "v2")?;
    /// cache.remove(b"k");
    /// cache.run_pending_tasks();
    /// let seen = seen.lock().unwrap();
    /// assert_eq!(seen[0], ("k".into(), RemovalCause::Replaced));
    /// assert_eq!(seen[1], ("k".into(), RemovalCause::Explicit));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn removal_listener(mut self, listener: impl Fn(Removal) + Send + Sync + 'static) -> Self {
        self.removal_listener = Some(Arc::new(listener));
        self
    }

    /// Tracks the most requested keys of the recent past (one `get` in 16
    /// per thread sampled into a count-min sketch, the 64 best estimated
    /// keys kept, every count halved each 32,768 samples; about 256 KiB;
    /// [`hot_keys(k)`](crate::Cache::hot_keys) reads it). Off by default:
    /// then `get` pays one branch.
    pub fn track_hot_keys(mut self) -> Self {
        self.hot_keys = true;
        self
    }

    /// Negative caching: a key [`optionally_get_with`](crate::Cache::optionally_get_with)'s
    /// loader found absent is remembered for `ttl`, and calls meanwhile return
    /// `None` without loading (default: not remembered). Markers are kept in
    /// memory only, up to [`MAX_ABSENT_KEYS`](crate::MAX_ABSENT_KEYS); an insert
    /// or removal of the key forgets its marker. Zero is refused by `build()`.
    pub fn absent_ttl(mut self, ttl: Duration) -> Self {
        self.absent_ttl = Some(ttl);
        self
    }

    /// How often the disk tier writes what it has buffered (default 100 ms).
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.disk_settings.flush_interval = Some(interval);
        self
    }

    /// Values at least this long are zstd-compressed on disk when that shrinks
    /// them (default 512 bytes).
    pub fn compress_above(mut self, bytes: usize) -> Self {
        self.disk_settings.compress_above = Some(bytes);
        self
    }

    /// The share of one core that inserts may spend compressing values while
    /// the disk tier keeps up (default [`DEFAULT_COMPRESSION_BUDGET`]).
    ///
    /// zstd compresses text at a fraction of the rate the flusher writes, so
    /// compressing every value would make compressible values the slowest
    /// to insert. Within each 50 ms, the inserting threads together may
    /// spend this share of one core compressing; past it, values are stored
    /// raw until the next 50 ms (counted in
    /// [`DiskTierStats::compression_paced`](crate::DiskTierStats::compression_paced)).
    /// An insert that finds the flusher behind (and so must wait for it)
    /// compresses its value before waiting, outside the budget: that costs
    /// it nothing, and cuts what the flusher writes. A trickle of inserts
    /// stays within any budget and is compressed whole.
    ///
    /// `f64::INFINITY` compresses every value that shrinks (space before
    /// speed); `0.0` compresses only while the flusher is behind. A negative
    /// or NaN share is refused by `build()`.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = larder::Cache::builder()
    ///     .memory_capacity(1 << 20)
    ///     .disk(dir.path(), 64 << 20)
    ///     .segment_size(16 << 20)
    ///     .compression_budget(f64::INFINITY)
    ///     .build()?;
    /// # Ok::<(), larder::BuildError>(())
    /// ```
    pub fn compression_budget(mut self, share: f64) -> Self {
        self.disk_settings.compression_budget = Some(share);
        self
    }

    /// Write segment files with `O_DIRECT`, bypassing the page cache (default
    /// off). Writing costs less CPU (the kernel copies nothing into its page
    /// cache), and the page cache then holds what is read from the disk tier
    /// rather than what was last written to it. Where the file system refuses
    /// direct writes, the tier writes through the page cache and
    /// [`DiskTierStats::direct_writes`](crate::DiskTierStats::direct_writes) says so.
    /// Needs a segment size that is a multiple of 4096.
    pub fn direct_writes(mut self, direct: bool) -> Self {
        self.disk_settings.direct = Some(direct);
        self
    }

    /// How the disk tier reads sealed segments: through read-only memory
    /// maps ([`ReadPath::Mmap`], the default) or with `pread`
    /// ([`ReadPath::Pread`]).
    pub fn read_path(mut self, path: ReadPath) -> Self {
        self.disk_settings.read_path = Some(path);
        self
    }

    /// The most sealed segments the disk tier maps at once (default
    /// [`DEFAULT_MAX_MAPS`]); past it, the least recently read segment's map
    /// is let go. Within `1..=32768`, checked at `build()`.
    pub fn max_maps(mut self, maps: usize) -> Self {
        self.disk_settings.max_maps = Some(maps);
        self
    }

    /// Opens the disk tier the settings describe, with their defaults.
    fn open_disk(
        &self,
        dir: &std::path::Path,
        capacity: u64,
        removals: Option<&Arc<Notifier>>,
    ) -> Result<Lower, BuildError> {
        // A cache of this directory dropped a moment ago closes first.
        crate::closing::wait_for(dir);
        let d = &self.disk_settings;
        let io = d.io.clone().unwrap_or_else(|| default_backend().0);
        // A directory reopened keeps the segment size it was made with.
        let segment_size = d.segment_size.unwrap_or_else(|| {
            crate::disk::segment_size_of(dir).unwrap_or_else(|| default_segment_size(capacity))
        });
        let config = DiskConfig {
            dir: dir.to_path_buf(),
            capacity,
            segment_size,
            flush_interval: d.flush_interval.unwrap_or(Duration::from_millis(100)),
            compress_above: d.compress_above.unwrap_or(512),
            compression_budget: d.compression_budget.unwrap_or(DEFAULT_COMPRESSION_BUDGET),
            backpressure: d
                .backpressure
                .unwrap_or(Backpressure::Wait(Duration::from_millis(100))),
            max_frozen: 2,
            io,
            direct: d.direct.unwrap_or(false),
            read_path: d.read_path.unwrap_or_default(),
            max_maps: d.max_maps.unwrap_or(DEFAULT_MAX_MAPS),
            removals: removals.cloned(),
        };
        let disk = DiskTier::open(config).map_err(BuildError::Disk)?;
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let unix_at_epoch = unix_now.saturating_sub(self.clock.now());
        Ok(Lower::new(
            disk,
            d.policy.unwrap_or_default(),
            unix_at_epoch,
        ))
    }

    /// Checks the configuration and builds the cache.
    pub fn build(self) -> Result<Cache, BuildError> {
        let capacity = self.capacity.ok_or(BuildError::MissingCapacity)?;
        if capacity == 0 {
            return Err(BuildError::ZeroCapacity);
        }
        let shards = match self.shards {
            Some(n) if n == 0 || !n.is_power_of_two() || n > MAX_SHARDS => {
                return Err(BuildError::InvalidShards {
                    shards: n,
                    max: MAX_SHARDS,
                });
            }
            Some(n) if n as u64 > capacity => {
                return Err(BuildError::CapacityBelowShards {
                    capacity,
                    shards: n,
                });
            }
            Some(n) => n,
            None => default_shards(capacity, self.weigher.typical_entry_weight()),
        };
        if self.time_to_live.is_some_and(|t| t.is_zero()) {
            return Err(BuildError::ZeroTimeToLive);
        }
        if self.time_to_idle.is_some_and(|t| t.is_zero()) {
            return Err(BuildError::ZeroTimeToIdle);
        }
        if self.time_to_live.is_some() && self.time_to_idle.is_some() {
            return Err(BuildError::TimeToLiveAndIdle);
        }
        if self.absent_ttl.is_some_and(|t| t.is_zero()) {
            return Err(BuildError::ZeroAbsentTtl);
        }
        let removals = match &self.removal_listener {
            Some(l) => Some(Arc::new(
                Notifier::start(Arc::clone(l)).map_err(|e| BuildError::ListenerThread(e.into()))?,
            )),
            None => None,
        };
        let lower = match &self.disk {
            Some((dir, capacity)) => Some(self.open_disk(dir, *capacity, removals.as_ref())?),
            None => match self.disk_settings.first_set() {
                Some(setting) => return Err(BuildError::DiskSettingWithoutDisk { setting }),
                None => None,
            },
        };
        let mut memory = MemoryTier::new(capacity, shards, self.clock);
        if let Some(idle) = self.time_to_idle {
            memory.set_idle(crate::time::nanos(idle));
        }
        let tiers = Tiers::new(memory, lower, self.weigher, removals);
        Ok(Cache::from_tiers(
            tiers,
            Expiry {
                time_to_live: self.time_to_live,
                time_to_idle: self.time_to_idle,
                expire_after: self.expire_after,
            },
            self.absent_ttl,
            self.hot_keys,
        ))
    }
}

/// How entries inserted or loaded without a TTL of their own expire.
pub(crate) struct Expiry {
    pub(crate) time_to_live: Option<Duration>,
    pub(crate) time_to_idle: Option<Duration>,
    pub(crate) expire_after: Option<Arc<ExpireFn>>,
}

fn default_shards(capacity: u64, entry_weight: u64) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut shards = (cores * 4).next_power_of_two().min(MAX_SHARDS);
    let min_shard = MIN_DEFAULT_SHARD_ENTRIES * entry_weight;
    while shards > 1 && capacity / (shards as u64) < min_shard {
        shards /= 2;
    }
    shards
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_disks_get_segments_that_fit() {
        assert_eq!(default_segment_size(10 << 30), DEFAULT_SEGMENT_SIZE);
        assert_eq!(default_segment_size(512 << 20), DEFAULT_SEGMENT_SIZE);
        assert_eq!(default_segment_size(8 << 20), 1 << 20);
        assert_eq!(default_segment_size(9 << 20), 1 << 20);
        assert_eq!(default_segment_size(1 << 20), 128 << 10);
        assert_eq!(default_segment_size(1), 64 << 10, "the floor");
        assert_eq!(default_segment_size(u64::MAX), DEFAULT_SEGMENT_SIZE);
    }

    #[test]
    fn default_shards_keep_shards_useful() {
        assert_eq!(default_shards(1, 1), 1);
        assert_eq!(default_shards(511, 1), 1);
        assert!(default_shards(1000, 1) <= 2);
        assert!(default_shards(1 << 30, 128).is_power_of_two());
        assert_eq!(default_shards(64 << 10, 128), 2);
    }
}
