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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Lookups (`get`, and the lookup of `get_or_insert_with`) that found a live value.
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
    /// Loader calls made by `get_or_insert_with` / `try_get_or_insert_with`.
    pub loads: u64,
    /// The memory tier (L1).
    pub memory: TierStats,
    /// Entries in the memory tier that are hot in CLOCK-Pro terms.
    pub hot_entries: u64,
    /// Non-resident entries CLOCK-Pro remembers (keys in their test period).
    pub ghost_entries: u64,
    /// The number of memory shards.
    pub shards: usize,
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
