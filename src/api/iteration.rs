//! Iteration over both tiers and bulk invalidation, on the bytes core (the
//! walk itself is `crate::tiers::walk`).

use crate::cache::Cache;
use crate::listener::RemovalCause;
use crate::tiers::Walk;
use bytes::Bytes;

/// The entries of a [`Cache`], in both tiers: see [`Cache::iter`].
pub struct Iter {
    cache: Cache,
    walk: Walk,
}

impl std::fmt::Debug for Iter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iter").finish_non_exhaustive()
    }
}

impl Iterator for Iter {
    /// A key and its value.
    type Item = (Bytes, Bytes);

    fn next(&mut self) -> Option<(Bytes, Bytes)> {
        self.cache.tiers().walk_next(&mut self.walk)
    }
}

impl Cache {
    /// Every live entry, in memory and on disk, each key once, in no
    /// particular order. Not an access: nothing is counted, marked or
    /// promoted.
    ///
    /// Under concurrent writes: a key present and unchanged for the whole
    /// iteration is yielded, with its value; a key written, removed or
    /// expiring meanwhile may or may not be, and a value yielded was live
    /// when it was read. Memory is walked a shard at a time under its read
    /// lock; then each disk record is read (one read per key only the disk
    /// holds), outside every lock. The iterator keeps 8 bytes per memory
    /// entry it yielded, and a handle to the cache (so the cache is not
    /// dropped, and not closed by a drop, while it lives). A closed cache
    /// yields nothing more.
    ///
    /// ```
    /// use larder::Cache;
    ///
    /// let cache = Cache::builder().memory_capacity(1 << 20).build()?;
    /// cache.insert(b"a", "1")?;
    /// cache.insert(b"b", "2")?;
    /// let mut keys: Vec<_> = cache.iter().map(|(k, _)| k).collect();
    /// keys.sort();
    /// assert_eq!(keys, [&b"a"[..], &b"b"[..]]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn iter(&self) -> Iter {
        Iter {
            cache: self.clone(),
            walk: Walk::default(),
        }
    }

    /// Removes every entry whose key satisfies `predicate`, from both tiers,
    /// now (not lazily: nothing is kept of the predicate), and returns how
    /// many live entries it removed (entries past their deadline that the
    /// walk meets are cleared too, uncounted). Each removal is [`remove`](Self::remove)'s: on disk
    /// a tombstone, so nothing removed comes back after a restart or a crash
    /// once the tombstones are synced. It costs a walk of both tiers (one
    /// read per key only the disk holds) and a removal per match. Keys
    /// written while it runs may or may not be tested.
    ///
    /// ```
    /// use larder::Cache;
    ///
    /// let cache = Cache::builder().memory_capacity(1 << 20).build()?;
    /// for k in ["user:1", "user:2", "order:1"] {
    ///     cache.insert(k.as_bytes(), "v")?;
    /// }
    /// assert_eq!(cache.invalidate_entries_if(|k| k.starts_with(b"user:")), 2);
    /// assert!(cache.contains(b"order:1") && !cache.contains(b"user:1"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn invalidate_entries_if(&self, predicate: impl Fn(&[u8]) -> bool) -> u64 {
        let mut removed = 0;
        // Expired entries not yet removed are met too, and cleared.
        let mut walk = Walk::expired_too();
        while let Some((key, _)) = self.tiers().walk_next(&mut walk) {
            if predicate(&key) && self.remove_as(&key, RemovalCause::Invalidated).is_some() {
                removed += 1;
            }
        }
        removed
    }

    /// Removes every entry from both tiers, and forgets every key
    /// remembered as absent; returns how many entries it removed. As
    /// [`invalidate_entries_if`](Self::invalidate_entries_if) with a
    /// predicate that always holds: a walk and a removal per entry.
    pub fn invalidate_all(&self) -> u64 {
        self.forget_all_absent();
        self.invalidate_entries_if(|_| true)
    }

    /// About how many distinct keys the cache holds: memory's live entries
    /// plus the disk records of keys memory does not hold. Entries that
    /// expired but were not yet removed may be counted. Costs one pass over
    /// the disk index (16 bytes per key on disk); without a disk tier, a
    /// sum over the shards.
    pub fn entry_count(&self) -> u64 {
        self.tiers().entry_count()
    }

    /// What memory's entries weigh together, against
    /// [`memory_capacity`](crate::CacheBuilder::memory_capacity) (bytes by
    /// default; see the builder's weigher). The disk tier's use is in
    /// [`stats`](Self::stats)`().disk`.
    pub fn weighted_size(&self) -> u64 {
        self.tiers().memory().snapshot().counts.resident_weight
    }
}
