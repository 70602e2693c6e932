//! [`CacheBuilder`]: every setting, its default, and its validation.

use crate::cache::Cache;
use crate::disk::io::{Io, default_backend};
use crate::disk::{Backpressure, DiskConfig, DiskTier, Tiered, WritePolicy};
use crate::error::BuildError;
use crate::memory::MemoryTier;
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
    disk: Option<DiskSettings>,
}

/// The disk tier's settings, with their defaults.
#[derive(Clone)]
struct DiskSettings {
    dir: PathBuf,
    capacity: u64,
    segment_size: u64,
    policy: WritePolicy,
    backpressure: Backpressure,
    flush_interval: Duration,
    compress_above: usize,
    /// The I/O backend; `None`: the default one. Tests inject faults here.
    io: Option<Arc<dyn Io>>,
    direct: bool,
}

impl Default for CacheBuilder {
    fn default() -> Self {
        CacheBuilder {
            capacity: None,
            shards: None,
            weigher: Weigher::Bytes,
            clock: Clock::system(),
            disk: None,
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
    /// another cache. Reopening a directory that holds segments is not supported
    /// yet (it is refused with an error).
    pub fn disk(mut self, dir: impl Into<PathBuf>, capacity: u64) -> Self {
        self.disk = Some(DiskSettings {
            dir: dir.into(),
            capacity,
            segment_size: 64 << 20,
            policy: WritePolicy::WriteBehind,
            backpressure: Backpressure::Wait(Duration::from_millis(100)),
            flush_interval: Duration::from_millis(100),
            compress_above: 512,
            io: None,
            direct: false,
        });
        self
    }

    /// The disk tier's I/O backend (fault-injection tests).
    #[cfg(test)]
    pub(crate) fn disk_io(mut self, io: Arc<dyn Io>) -> Self {
        if let Some(d) = self.disk_mut() {
            d.io = Some(io);
        }
        self
    }

    /// Simulates a power loss at the process's death (feature `validate`,
    /// for crash tests): the disk tier's segment writes after each file's
    /// last `fdatasync` are kept in memory, but for a random half of their
    /// sectors (`seed` picks which) that reach the file early. A SIGKILL then
    /// leaves what a power cut would. Call after [`disk`](Self::disk).
    #[cfg(feature = "validate")]
    #[doc(hidden)]
    pub fn simulate_power_loss(mut self, seed: u64) -> Self {
        if let Some(d) = self.disk_mut() {
            d.io = Some(Arc::new(crate::disk::power_loss::PowerLoss::new(seed)));
        }
        self
    }

    fn disk_mut(&mut self) -> Option<&mut DiskSettings> {
        self.disk.as_mut()
    }

    /// Size of the disk tier's segment files (default 64 MiB; 64 KiB..=1 GiB).
    /// Call after [`disk`](Self::disk).
    ///
    /// Segments are filled in memory: the tier holds about four segments'
    /// worth of buffers (the segment being filled in each of two streams, and
    /// two more, full and waiting for the disk or kept for reuse), taken as
    /// they are filled: up to about 256 MiB at the default under a sustained
    /// write load.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        if let Some(d) = self.disk_mut() {
            d.segment_size = bytes;
        }
        self
    }

    /// When values reach the disk tier (default [`WritePolicy::WriteBehind`]).
    /// Call after [`disk`](Self::disk).
    pub fn write_policy(mut self, policy: WritePolicy) -> Self {
        if let Some(d) = self.disk_mut() {
            d.policy = policy;
        }
        self
    }

    /// What an insert does when the disk tier is behind (default: wait 100 ms,
    /// then refuse and count). Call after [`disk`](Self::disk).
    pub fn disk_backpressure(mut self, backpressure: Backpressure) -> Self {
        if let Some(d) = self.disk_mut() {
            d.backpressure = backpressure;
        }
        self
    }

    /// How often the disk tier writes what it has buffered (default 100 ms).
    /// Call after [`disk`](Self::disk).
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        if let Some(d) = self.disk_mut() {
            d.flush_interval = interval;
        }
        self
    }

    /// Values at least this long are zstd-compressed on disk when that shrinks
    /// them (default 512 bytes). Call after [`disk`](Self::disk).
    pub fn compress_above(mut self, bytes: usize) -> Self {
        if let Some(d) = self.disk_mut() {
            d.compress_above = bytes;
        }
        self
    }

    /// Write segment files with `O_DIRECT`, bypassing the page cache (default
    /// off). Writing costs less CPU (the kernel copies nothing into its page
    /// cache), and the page cache then holds what is read from the disk tier
    /// rather than what was last written to it. Where the file system refuses
    /// direct writes, the tier writes through the page cache and
    /// [`DiskTierStats::direct_writes`](crate::DiskTierStats::direct_writes) says so.
    /// Needs a segment size that is a multiple of 4096. Call after
    /// [`disk`](Self::disk).
    pub fn direct_writes(mut self, direct: bool) -> Self {
        if let Some(d) = self.disk_mut() {
            d.direct = direct;
        }
        self
    }

    fn open_disk(&self, d: &DiskSettings) -> Result<Tiered, BuildError> {
        let io = d.io.clone().unwrap_or_else(|| default_backend().0);
        let config = DiskConfig {
            dir: d.dir.clone(),
            capacity: d.capacity,
            segment_size: d.segment_size,
            flush_interval: d.flush_interval,
            compress_above: d.compress_above,
            backpressure: d.backpressure,
            max_frozen: 2,
            io,
            direct: d.direct,
        };
        let disk = DiskTier::open(config).map_err(|e| BuildError::Disk {
            reason: e.to_string(),
        })?;
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let unix_at_epoch = unix_now.saturating_sub(self.clock.now());
        Ok(Tiered::new(disk, d.policy, unix_at_epoch))
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
        let lower = match &self.disk {
            Some(d) => Some(std::sync::Arc::new(self.open_disk(d)?)),
            None => None,
        };
        let memory = MemoryTier::new(capacity, shards, self.clock, lower);
        Ok(Cache::from_parts(memory, self.weigher))
    }
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
    fn default_shards_keep_shards_useful() {
        assert_eq!(default_shards(1, 1), 1);
        assert_eq!(default_shards(511, 1), 1);
        assert!(default_shards(1000, 1) <= 2);
        assert!(default_shards(1 << 30, 128).is_power_of_two());
        assert_eq!(default_shards(64 << 10, 128), 2);
    }
}
