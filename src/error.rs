//! Typed errors: one enum for building a cache, one for operating on it.

use thiserror::Error;

/// Why [`CacheBuilder::build`](crate::CacheBuilder::build) refused a configuration.
///
/// Nothing is allocated or started when this is returned.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// No memory capacity was given; call `memory_capacity(..)` on the builder.
    #[error("memory capacity is not set: call `memory_capacity(..)` on the builder")]
    MissingCapacity,
    /// The memory capacity was zero.
    #[error("memory capacity must be greater than zero")]
    ZeroCapacity,
    /// The shard count was zero, not a power of two, or above the maximum.
    #[error("shard count {shards} is invalid: it must be a power of two between 1 and {max}")]
    InvalidShards {
        /// The rejected shard count.
        shards: usize,
        /// The largest shard count larder accepts.
        max: usize,
    },
    /// The capacity cannot be split over the shards: each shard needs at least one unit.
    #[error(
        "memory capacity {capacity} is smaller than the shard count {shards}: \
         use fewer shards or a larger capacity"
    )]
    CapacityBelowShards {
        /// The requested capacity.
        capacity: u64,
        /// The requested shard count.
        shards: usize,
    },
    /// The time absent keys are remembered (`absent_ttl`) was zero.
    #[error("the absent keys' time to live must be greater than zero")]
    ZeroAbsentTtl,
    /// The cache-wide time to live was zero.
    #[error("the time to live must be greater than zero")]
    ZeroTimeToLive,
    /// The time to idle was zero.
    #[error("the time to idle must be greater than zero")]
    ZeroTimeToIdle,
    /// Both a cache-wide time to live and a time to idle were set.
    #[error(
        "a cache-wide time to live and a time to idle cannot be combined: \
         set one (an entry's own TTL, `insert_with_ttl`, works with either)"
    )]
    TimeToLiveAndIdle,
    /// A disk tier setting was given without a disk tier.
    #[error(
        "`{setting}` was set but there is no disk tier: call `disk(dir, capacity)` on the builder"
    )]
    DiskSettingWithoutDisk {
        /// The builder method called.
        setting: &'static str,
    },
    /// The disk tier could not be opened: bad settings, a directory in use or
    /// created with other settings, or an I/O error; the error says which.
    #[error("cannot open the disk tier: {0}")]
    Disk(#[source] crate::disk::DiskError),
    /// The removal listener's thread could not be started.
    #[error("cannot start the removal listener's thread: {0}")]
    ListenerThread(#[source] OsError),
}

/// An error the operating system returned, shareable and comparable (by
/// kind and message: an I/O error has no equality of its own).
#[derive(Debug, Clone, Error)]
#[error("{0}")]
pub struct OsError(std::sync::Arc<std::io::Error>);

impl From<std::io::Error> for OsError {
    fn from(e: std::io::Error) -> Self {
        OsError(std::sync::Arc::new(e))
    }
}

impl PartialEq for OsError {
    fn eq(&self, other: &Self) -> bool {
        self.0.kind() == other.0.kind() && self.0.to_string() == other.0.to_string()
    }
}

impl Eq for OsError {}

/// Why an operation on a [`Cache`](crate::Cache) was refused.
///
/// A refused operation changes nothing: the cache is exactly as it was before the call.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Keys must hold at least one byte.
    #[error("the key is empty: keys must hold at least one byte")]
    EmptyKey,
    /// The key is longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN).
    #[error("the key is {len} bytes long; the maximum is {max}")]
    KeyTooLong {
        /// Length of the rejected key.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value is longer than [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN).
    #[error("the value is {len} bytes long; the maximum is {max}")]
    ValueTooLong {
        /// Length of the rejected value.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The entry weighs more than one shard of the memory tier can hold.
    #[error(
        "the entry weighs {weight}, more than one shard can hold ({max}); \
         raise the capacity or lower the shard count"
    )]
    EntryTooHeavy {
        /// The entry's weight as the weigher computed it.
        weight: u64,
        /// The largest weight one shard accepts.
        max: u64,
    },
    /// A time-to-live of zero was given; the entry would be expired on arrival.
    #[error("the time-to-live is zero: the entry would expire before it could be read")]
    ZeroTtl,
    /// The cache was closed ([`Cache::close`](crate::Cache::close), on this or
    /// another handle): it takes no more changes.
    #[error("the cache is closed")]
    Closed,
    /// The record (header, key and value as stored, compressed or not) is
    /// larger than a disk tier segment holds, and the write policy must
    /// persist it.
    #[error(
        "the record takes {len} bytes; a disk segment holds at most {max}: \
         raise `segment_size` or store a smaller value"
    )]
    TooLargeForSegment {
        /// Bytes of the record.
        len: usize,
        /// The largest record a segment holds.
        max: usize,
    },
    /// Changes acknowledged before this `sync()` are not on disk: the disk
    /// tier refused their writes (its flusher was behind; see
    /// [`Backpressure`](crate::Backpressure)). Nothing else is wrong: the
    /// rest is synced.
    #[error(
        "{unwritten} acknowledged inserts are not on disk (the disk tier was behind): \
         they are in memory and the next sync() writes them; {dropped} more left \
         memory before they could be written and are lost"
    )]
    NotPersisted {
        /// Still in memory, unwritten; the next `sync()` tries again.
        unwritten: u64,
        /// Evicted from memory before they could be written: gone.
        dropped: u64,
    },
    /// The typed layer ([`TypedCache`](crate::TypedCache)) could not encode a
    /// value, or a loaded entry's stored bytes are not a value of its type.
    #[error("{0}")]
    Codec(#[source] crate::api::CodecError),
    /// The disk tier failed (a write or `fdatasync` error) and persists
    /// nothing more, or its directory could not be read; the error says which.
    #[error("the disk tier failed: {0}")]
    Disk(#[source] crate::disk::DiskError),
}

/// The error of [`Cache::try_get_with`](crate::Cache::try_get_with):
/// either the loader failed or the cache refused the key or the loaded value.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LoadError<E> {
    /// The loader returned this error: shared with every caller that waited
    /// on the same load. Nothing was cached, and the key is not poisoned.
    #[error("the loader failed: {0}")]
    Loader(std::sync::Arc<E>),
    /// The cache refused the key or the loaded value.
    #[error(transparent)]
    Cache(#[from] Error),
}
