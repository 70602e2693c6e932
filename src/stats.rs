//! [`Stats`]: what the cache has done and what it holds.

/// Counters and occupancy of one tier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TierStats {
    /// Lookups this tier answered.
    pub hits: u64,
    /// Entries resident in this tier.
    pub entries: u64,
    /// Weight resident in this tier (bytes with the default weigher).
    pub weight: u64,
    /// This tier's capacity, in the same units as `weight`.
    pub capacity: u64,
    /// Entries this tier evicted to make room (expired and displaced ones included).
    pub evictions: u64,
}

/// A snapshot of the cache's counters, from [`Cache::stats`](crate::Cache::stats).
///
/// Counters are read without stopping writers, so a snapshot taken under load
/// may be a few operations out of step between fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Lookups (`get`, and the lookup of `get_with`) that found a live value.
    pub hits: u64,
    /// Lookups that found nothing (or only an expired value).
    pub misses: u64,
    /// Inserts of a key that was not resident.
    pub inserts: u64,
    /// Inserts that overwrote a resident value.
    pub updates: u64,
    /// Successful removes.
    pub removes: u64,
    /// Entries found expired by a lookup and removed.
    pub expirations: u64,
    /// Loader calls made by `get_with` / `try_get_with`.
    pub loads: u64,
    /// The memory tier (L1).
    pub memory: TierStats,
    /// Entries in the memory tier that are hot in CLOCK-Pro terms.
    pub hot_entries: u64,
    /// Non-resident entries CLOCK-Pro remembers (keys in their test period).
    pub ghost_entries: u64,
    /// The number of memory shards.
    pub shards: usize,
    /// The disk tier (L2), if the cache has one.
    pub disk: Option<DiskTierStats>,
    /// Sampled latencies per operation, and of the disk tier's reads.
    pub latency: crate::LatencyStats,
    /// Removals queued for the removal listener and not yet delivered (0
    /// without a listener): how far behind a slow listener is.
    pub removals_pending: u64,
    /// The ten most requested keys of the recent window, with their
    /// estimated requests, if the cache tracks hot keys
    /// ([`Cache::hot_keys`](crate::Cache::hot_keys)); else empty.
    pub hot_keys: Vec<(bytes::Bytes, u64)>,
}

/// Counters and health of the disk tier (L2).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiskTierStats {
    /// Lookups the disk tier answered (after a memory miss).
    pub hits: u64,
    /// Keys the disk tier's index holds.
    pub entries: u64,
    /// Bytes of memory the disk tier's index takes (its tables; about 21 a key).
    pub index_bytes: u64,
    /// Sealed segment files.
    pub segments: u64,
    /// Bytes of segment files the tier may keep.
    pub capacity: u64,
    /// Bytes of each segment file.
    pub segment_size: u64,
    /// How often the flusher writes what it has buffered.
    pub flush_interval: std::time::Duration,
    /// Values at least this long are compressed when that shrinks them.
    pub compress_above: usize,
    /// Values stored raw, though they may have shrunk, because compression
    /// had used its share of the writers' time (see
    /// [`compression_budget`](crate::CacheBuilder::compression_budget)).
    pub compression_paced: u64,
    /// What an insert does when the flusher is behind.
    pub backpressure: crate::Backpressure,
    /// Bytes written to segment files (records, summaries, trailers, headers).
    pub bytes_written: u64,
    /// Time the flusher spent in those writes (not in `fdatasync`):
    /// `bytes_written / write_time` is the rate the device took them at, and
    /// its share of the elapsed time is how busy the flusher kept the device.
    pub write_time: std::time::Duration,
    /// Records written out in sealed segments.
    pub records_written: u64,
    /// Value records appended to the log: inserts, demotions from memory and
    /// reclaim's re-appends. The tier's record writes, whatever is sealed yet.
    pub values_appended: u64,
    /// Records reclaim appended again (referenced, not in memory) rather than drop.
    pub reappended: u64,
    /// Fingerprints of keys gone from both tiers that the tier remembers: such a
    /// key proved reuse when it comes back, and enters memory hot.
    pub ghosts: u64,
    /// Value bytes handed to the disk tier, and what they took once stored
    /// (compressed where that shrinks them).
    pub value_bytes_in: u64,
    /// See `value_bytes_in`.
    pub value_bytes_stored: u64,
    /// Full segments waiting in memory to be written (the write queue's depth).
    pub queued_segments: u64,
    /// Bytes of memory holding records not yet written and spare memory for
    /// more: segment images are held in chunks (8 MiB for the default
    /// segment size), given back as they are written; spares are kept for a
    /// full write queue's worth at most.
    pub buffer_bytes: u64,
    /// Writes refused because the tier was behind (the values stayed in memory).
    pub refused_writes: u64,
    /// Records that failed their checks when read: dropped, counted, never returned.
    pub corrupt_records: u64,
    /// Segments reclaimed to stay within capacity.
    pub reclaimed_segments: u64,
    /// Segments dropped because a read through their map faulted: the file
    /// was truncated behind larder's back or could not be read. Their keys
    /// became misses; the read that found it out counts in `corrupt_records`.
    pub faulted_segments: u64,
    /// `Some(reason)` once a write or fsync failed: the tier no longer writes.
    pub failure: Option<String>,
    /// The cache was closed: the tier reads and writes nothing any more (not
    /// a failure).
    pub closed: bool,
    /// The I/O backend in use ("pwrite" or "io_uring").
    pub io_backend: &'static str,
    /// Whether segments are written with `O_DIRECT`: asked for with
    /// [`direct_writes`](crate::CacheBuilder::direct_writes) and taken by the
    /// file system.
    pub direct_writes: bool,
    /// How sealed segments are read: "mmap" or "pread"
    /// ([`read_path`](crate::CacheBuilder::read_path)).
    pub read_path: &'static str,
    /// Sealed segments mapped now (at most
    /// [`max_maps`](crate::CacheBuilder::max_maps)).
    pub maps: u64,
    /// When values are written.
    pub write_policy: crate::WritePolicy,
    /// What opening the directory found and did.
    pub recovery: RecoveryStats,
}

/// What opening the disk tier's directory found and did: a new directory
/// shows zeros, a reopened one what recovery read, repaired and brought back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryStats {
    /// Segment files read.
    pub segments: u64,
    /// Keys the rebuilt index holds.
    pub entries: u64,
    /// Records applied (from segment summaries, or scans of unsealed segments).
    pub records: u64,
    /// Segments left unsealed (by a crash, or a drop without `close`) that
    /// recovery scanned and sealed.
    pub sealed_tails: u64,
    /// Of those, segments that ended in a torn record (cut off, not applied).
    pub torn_tails: u64,
    /// Segment files renamed `*.quarantined`: an invalid header, or listed
    /// and damaged with records gone.
    pub quarantined_files: u64,
    /// Segments the directory's list names that were found lost at this
    /// open: missing, or damaged with records gone.
    pub lost_segments: u64,
    /// Records dropped as unproven: a lost segment may have held a newer
    /// record of their key (docs/format.md §2.3).
    pub unproven_records: u64,
    /// Records dropped as void: numbered after the point up to which a crash
    /// left every stream of the log complete (so what is kept is the cache
    /// at one moment, at least the last completed `sync()`).
    pub void_records: u64,
    /// Files named like segments that are not larder's; left alone.
    pub foreign_files: u64,
    /// Segments reclaimed in this directory before this open, since it was
    /// made (each counted durably before reclaim removes anything).
    pub reclaimed_before: u64,
    /// Time to rebuild the index.
    pub open_time: std::time::Duration,
    /// The checkpoint written by the last `close`, and whether it was used.
    pub checkpoint: CheckpointStatus,
    /// Entries refilled into memory from disk so far (a warm open refills, in
    /// the background, what memory held at the last close, hottest first).
    pub refilled: u64,
    /// Whether the refill has finished (or there was none to do).
    pub refill_done: bool,
}

/// What a reopen found of the checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointStatus {
    /// None: a new directory, or the last run did not `close` cleanly.
    #[default]
    None,
    /// Valid and used: memory is refilled from it (a warm open).
    Used,
    /// Written before the last records on disk (a crash after a close): ignored.
    Stale,
    /// Damaged: ignored; the reason.
    Corrupt(String),
}

impl DiskTierStats {
    /// Whether the tier still writes (no write or fsync has failed).
    pub fn healthy(&self) -> bool {
        self.failure.is_none()
    }

    /// Stored bytes per value byte (below 1.0: compression paid off).
    pub fn compression_ratio(&self) -> f64 {
        if self.value_bytes_in == 0 {
            1.0
        } else {
            self.value_bytes_stored as f64 / self.value_bytes_in as f64
        }
    }
}

impl Stats {
    /// `hits / (hits + misses)`, or 0 before the first lookup.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}
