//! # larder
//!
//! A persistent, embedded, tiered cache engine: a sharded memory tier (L1)
//! evicting with CLOCK-Pro, optionally over a log-structured disk tier (L2,
//! [`CacheBuilder::disk`]) that one CLOCK-Pro policy spans. [`Cache::close`]
//! makes the next open of the directory warm; after a crash (a kill or a
//! power loss), opening it recovers the cache as it was at one moment, at
//! least its last completed [`Cache::sync`]; a damaged segment file costs its
//! own keys only, never an old value ([`verify_dir`] checks a directory
//! offline).
//!
//! ```
//! use larder::{Cache, CheckpointStatus};
//!
//! let dir = tempfile::tempdir()?;
//! let open = || {
//!     Cache::builder()
//!         .memory_capacity(16 << 20)
//!         .disk(dir.path(), 64 << 20)
//!         .segment_size(1 << 20)
//!         .build()
//! };
//! let cache = open()?;
//! cache.insert(b"user:7", "kept across restarts")?;
//! cache.close()?;
//!
//! let cache = open()?;
//! assert_eq!(cache.get(b"user:7").as_deref(), Some(&b"kept across restarts"[..]));
//! let recovery = cache.stats().disk.unwrap().recovery;
//! assert_eq!(recovery.checkpoint, CheckpointStatus::Used); // a warm open
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The memory tier on its own:
//!
//! ```
//! use larder::Cache;
//! use std::time::Duration;
//!
//! let cache = Cache::builder().memory_capacity(256 << 20).build()?;
//! cache.insert(b"session:1", "alice")?;
//! cache.insert_with_ttl(b"otp:1", "492817", Duration::from_secs(30))?;
//! assert_eq!(cache.get(b"session:1").as_deref(), Some(&b"alice"[..]));
//!
//! // Cache-aside with stampede protection: one loader per key at a time.
//! let profile = cache.get_with(b"profile:1", || "loaded".into())?;
//! assert_eq!(profile, "loaded");
//! println!("hit ratio {:.2}", cache.stats().hit_ratio());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Design in brief
//! * **Keys** are non-empty byte strings of at most [`MAX_KEY_LEN`] bytes, hashed
//!   with xxh3-64 ([`hash_key`]), which is stable across runs and platforms.
//!   **Values** are [`bytes::Bytes`] of at most [`MAX_VALUE_LEN`] bytes; a hit
//!   returns a cheap reference-counted clone.
//! * **Shards.** The memory tier is a power-of-two array of shards, each a
//!   `parking_lot::RwLock` over plain data. A hit takes the read lock and sets
//!   one atomic reference bit; inserts and removes take the write lock. Evicted
//!   values are dropped after the lock is released.
//! * **Policy.** Each shard runs size-aware CLOCK-Pro with an adaptive cold
//!   allocation: scans and one-off keys pass through the cold space without
//!   disturbing the hot set; keys re-referenced within their test period are
//!   promoted. Capacity is a weight: bytes by default
//!   (`key + value +` [`ENTRY_OVERHEAD`]), entries with
//!   [`CacheBuilder::unit_weight`], or any [`CacheBuilder::weigher`].
//! * **TTL.** Entries inserted with a time-to-live are never returned after it
//!   (nanosecond deadlines on a monotonic clock).
//! * **Errors** are typed: [`BuildError`] for configuration, [`Error`] for
//!   operations; a refused operation changes nothing.
//!
//! ## Memory per entry
//! A resident entry costs 96 bytes ([`ENTRY_OVERHEAD`]): a 64-byte line that
//! every lookup reads (a 24-byte key buffer holding keys of up to 22 bytes
//! inline, the 32-byte `Bytes` handle, the reference bit and flags), 24 bytes of
//! policy metadata and an 8-byte deadline; plus about 5–10 bytes of hash table
//! and the value's own allocation. A remembered non-resident key (a CLOCK-Pro
//! ghost) costs 24 bytes plus its table slot; ghosts are bounded by the number of
//! resident entries. See `docs/design.md` and `docs/benchmarks.md`.
//!
//! ## Cargo features
//! None is on by default; the command-line tool is the workspace's `cli/`
//! crate, so a user of the library builds none of its dependencies.
//!
//! | feature | what it does |
//! |---|---|
//! | `validate` | compiles `Cache::validate`, the invariant checker used by tests and fuzzing |
//! | `io-uring` | the io_uring disk backend, used when the kernel allows it (positional I/O otherwise) |
//! | `serde` | the typed layer's `Postcard` codec, for any serde type |
//! | `metrics` | `Cache::publish_metrics`: the statistics through the `metrics` facade (names in `src/api/metrics.rs` and `docs/design.md` §6) |
//!
//! ## Layers
//! [`TypedCache`] serves Rust keys and values over the bytes core through
//! key and value codecs; the async loaders (`get_with_async` and its
//! siblings) share the sync loaders' single-flight without holding a thread
//! per waiter, and `build_async`, `sync_async` and `close_async` run the
//! blocking calls off the executor, for any runtime. [`Cache::iter`] walks
//! both tiers; [`Cache::invalidate_entries_if`] and
//! [`Cache::invalidate_all`] remove now, with tombstones.

#![warn(missing_docs)]
// Unsafe code lives in named modules, `disk::image` (segment buffers shared
// between threads), `disk::io` (system calls) and `disk::mapped` (the
// segment maps), each block with a `SAFETY:` comment; everywhere else it is
// refused.
#![deny(unsafe_code)]

mod api;
mod builder;
mod cache;
mod closing;
mod disk;
mod error;
mod format;
mod health;
mod key;
mod latency;
mod listener;
mod memory;
mod patterns;
mod policy;
mod stats;
mod sync;
mod tiers;
mod time;

#[cfg(feature = "serde")]
pub use api::Postcard;
pub use api::{AsKey, Codec, CodecError, Iter, Key, OffThread, Raw, TAG_LEN, TypedCache};
pub use builder::{
    CacheBuilder, DEFAULT_COMPRESSION_BUDGET, DEFAULT_SEGMENT_SIZE, ENTRY_OVERHEAD, MAX_SHARDS,
};
pub use bytes::Bytes;
pub use cache::{Cache, MAX_ABSENT_KEYS};
pub use disk::verify::VerifyReport;
pub use disk::{Backpressure, DEFAULT_MAX_MAPS, DiskError, ReadPath};
pub use error::{BuildError, Error, LoadError, OsError};
pub use health::{Health, HealthIssue};
pub use key::{MAX_KEY_LEN, MAX_VALUE_LEN, hash_key};
pub use latency::{LatencyStats, Percentiles, SAMPLE as LATENCY_SAMPLE};
pub use listener::{Removal, RemovalCause};
pub use patterns::events::{EVENT_DELETE, EVENT_PUT, Event, Invalidation};
pub use patterns::refresh::{REFRESH_QUEUE, RefreshStats};
#[cfg(feature = "sqlite")]
pub use patterns::sqlite::{SqliteError, SqliteStore};
pub use patterns::store::{STRIPES as STORE_STRIPES, Store, StoreCache, StoreError};
pub use patterns::tags::Tagger;
pub use patterns::warm::{WARM_BATCH, WarmProgress};
pub use patterns::write_behind::{Acknowledge, WriteBehind, WriteBehindStats};
pub use stats::{CheckpointStatus, DiskTierStats, RecoveryStats, Stats, TierStats};
pub use tiers::WritePolicy;

/// Checks a disk tier's directory without opening a cache on it: every
/// segment header, summary and record, and the checkpoint. Read-only (it takes
/// no lock and writes nothing). `Err` only if the directory or its manifest
/// cannot be read.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let cache = larder::Cache::builder()
///     .memory_capacity(1 << 20)
///     .disk(dir.path(), 1 << 20)
///     .segment_size(64 << 10)
///     .build()?;
/// cache.insert(b"k", "v")?;
/// cache.close()?;
/// let report = larder::verify_dir(dir.path())?;
/// assert!(report.is_clean());
/// assert_eq!(report.live_entries, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn verify_dir(dir: impl AsRef<std::path::Path>) -> Result<VerifyReport, Error> {
    closing::wait_for(dir.as_ref()); // a dropped cache's close, still under way
    disk::verify::verify(dir.as_ref())
        .map_err(|reason| Error::Disk(disk::DiskError::Unreadable(reason)))
}
pub use time::ManualClock;

/// Entry points for the fuzz targets in `fuzz/` (compiled with `--cfg fuzzing` only).
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::format::FormatError;
    pub use crate::format::checkpoint::{Checkpoint, MemoryEntry};
    pub use crate::format::journal::{
        JournalHeader, WriteRecord, decode_envelope, decode_record as decode_journal_record,
        decode_tag, encode_record as encode_journal_record,
    };
    pub use crate::format::keys::Keys;
    pub use crate::format::list::{Listed, SegmentList, StreamState};
    pub use crate::format::manifest::{HASH_XXH3_64, Manifest};
    pub use crate::format::record::{
        Kind, Mark, RecordHeader, StreamPos, decode as decode_record, encode as encode_record,
    };
    pub use crate::format::segment::{
        SEGMENT_HEADER_LEN, SegmentHeader, SummaryEntry, TRAILER_LEN, Trailer, encode_summary,
    };
}

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
