//! The two tiers together: the one home of the cross-tier policy. The memory
//! tier (`crate::memory`) is a plain tier and the disk tier (`crate::disk`)
//! knows records and segments; this module decides, under a key's shard
//! lock, what each tier does for that key: insert, the miss path from memory
//! to disk and the promotion it ends in, the demotion of what memory evicts,
//! removal, and (in `restart.rs`) sync, close, the checkpoint and the warm
//! refill.
//!
//! **The ordering rule.** Every disk append for a key (its value, a
//! tombstone, a demotion) is made while that key's shard lock is held, so
//! the disk's order for a key is memory's order. Appends under the lock only
//! copy into the log's buffer: compression and any wait for the flusher run
//! outside it (checked in tests: `crate::sync::assert_no_shard_lock`). An
//! insert prepares its record before it takes the lock; a demotion reserves
//! the key's place in the disk's index under the lock and is compressed and
//! appended after it, only if no write or removal of the key came between.
//! An L2 hit is promoted only if, under the lock, memory does not hold the
//! key and the disk still holds the record that was read.

mod lower;
mod removal;
mod restart;
mod walk;

pub(crate) use lower::Lower;
pub use lower::WritePolicy;
pub(crate) use restart::{CloseState, Refill};
pub(crate) use walk::Walk;

use crate::builder::Weigher;
use crate::key::{KeyBuf, Probe};
use crate::latency::{Latencies, sampled_disk};
use crate::listener::{Notifier, RemovalCause};
use crate::memory::{Admit, DIRTY, Evictions, Lookup, MemoryTier, SLIDE, ShardWrite};
use crate::sync::{Arc, AtomicBool, Ordering};
use crate::time::{SLIDING, disk_deadline, sliding_deadline};
use bytes::Bytes;
use lower::Gone;
use std::time::Instant;

/// Why an insert was refused (nothing changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The cache is closed.
    Closed,
    /// The disk tier must persist it and its record would not fit a segment.
    TooLarge { len: usize, max: usize },
}

/// The memory tier, the disk tier below it (if any), and the rules between.
pub(crate) struct Tiers {
    memory: MemoryTier,
    lower: Option<Lower>,
    weigher: Weigher,
    max_weight: u64,
    /// `close` has begun: every operation is refused from then on.
    closed: AtomicBool,
    close: CloseState,
    refill: Refill,
    /// Sampled operation latencies (`Stats::latency`).
    latency: Latencies,
    /// The removal listener's reports, if the cache has one.
    listener: Option<Arc<Notifier>>,
}

impl Tiers {
    pub(crate) fn new(
        memory: MemoryTier,
        mut lower: Option<Lower>,
        weigher: Weigher,
        listener: Option<Arc<Notifier>>,
    ) -> Self {
        let max_weight = memory.max_weight();
        if let Some(lower) = &mut lower {
            lower.set_listener(listener.clone());
        }
        Tiers {
            memory,
            lower,
            weigher,
            max_weight,
            closed: AtomicBool::new(false),
            close: CloseState::default(),
            refill: Refill::default(),
            latency: Latencies::default(),
            listener,
        }
    }

    pub(crate) fn latency(&self) -> &Latencies {
        &self.latency
    }

    pub(crate) fn has_listener(&self) -> bool {
        self.listener.is_some()
    }

    /// Waits for the listener to have heard of every removal made so far.
    pub(crate) fn wait_reported(&self) {
        if let Some(n) = &self.listener {
            n.wait_delivered();
        }
    }

    /// Removals reported and not yet delivered to the listener.
    pub(crate) fn reports_pending(&self) -> u64 {
        self.listener.as_ref().map_or(0, |n| n.pending())
    }

    pub(crate) fn memory(&self) -> &MemoryTier {
        &self.memory
    }

    pub(crate) fn lower(&self) -> Option<&Lower> {
        self.lower.as_ref()
    }

    pub(crate) fn max_weight(&self) -> u64 {
        self.max_weight
    }

    pub(crate) fn weigh(&self, key: &[u8], value: &Bytes) -> u64 {
        self.weigher.weigh(key, value)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The live value of `key`: from memory, or from disk (promoted into
    /// memory through CLOCK-Pro's miss path, as clean: it is on disk).
    #[inline]
    pub(crate) fn get(&self, hash: u64, key: &[u8]) -> Option<Bytes> {
        match self.memory.get(hash, key) {
            Lookup::Hit(v) => return Some(v),
            Lookup::Miss => {}
            Lookup::Expired => self.take_expired(hash, key),
        }
        self.lower.as_ref()?;
        self.get_from_disk(hash, key)
    }

    #[cold]
    fn get_from_disk(&self, hash: u64, key: &[u8]) -> Option<Bytes> {
        let lower = self.lower.as_ref()?;
        let now = self.memory.clock().now();
        let timed = sampled_disk().then(Instant::now);
        let found = lower.get(key, hash, now);
        if let Some(start) = timed {
            self.latency.disk_read.since(start);
        }
        let (value, mut deadline, token) = found?;
        let idle = self.memory.idle();
        if deadline & SLIDING != 0 && idle != 0 {
            // A read of a sliding entry: its idle time starts again, and the
            // record's deadline is now behind memory's.
            deadline = sliding_deadline(now, idle, true);
        }
        let weight = self.weigh(key, &value);
        if weight <= self.max_weight {
            self.promote(hash, key, value.clone(), weight as u32, deadline, token);
        }
        Some(value)
    }

    /// Whether `key` is cached and live, in either tier; not an access. A key
    /// only the disk holds costs one read of its record.
    pub(crate) fn contains(&self, hash: u64, key: &[u8]) -> bool {
        if self.memory.contains(hash, key) {
            return true;
        }
        match &self.lower {
            Some(lower) if !self.is_closed() => {
                let now = lower.to_unix(self.memory.clock().now());
                lower.disk().contains(key, hash, now)
            }
            _ => false,
        }
    }

    /// Inserts or overwrites. `weight` must not exceed [`max_weight`](Self::max_weight).
    #[inline]
    pub(crate) fn insert(
        &self,
        hash: u64,
        key: &[u8],
        value: Bytes,
        weight: u32,
        deadline: u64,
        sliding: bool,
    ) -> Result<(), Refusal> {
        let admit = Admit {
            weight,
            deadline,
            flags: DIRTY | if sliding { SLIDE } else { 0 },
            hot: false,
        };
        // The owned key (a long one is an allocation) before any lock.
        let owned = Probe::new(key).into_owned();
        let Some(lower) = &self.lower else {
            // Memory only: the whole write is this, inlined into the caller.
            let mut evictions = Evictions::new();
            let mut shard = self.memory.write(hash);
            if shard.is_closed() {
                return Err(Refusal::Closed);
            }
            shard.sweep_expired(weight, hash, || self.memory.clock().now(), &mut evictions);
            let old = shard.insert(hash, owned, value, admit, &mut evictions);
            drop(shard);
            if self.listener.is_some() {
                self.report_memory_only(key, old, &evictions);
            }
            return Ok(());
        };
        self.insert_tiered(lower, hash, key, owned, value, admit)
    }

    /// [`insert`](Self::insert) with a lower tier.
    fn insert_tiered(
        &self,
        lower: &Lower,
        hash: u64,
        key: &[u8],
        owned: KeyBuf,
        value: Bytes,
        admit: Admit,
    ) -> Result<(), Refusal> {
        let mut evictions = Evictions::new();
        // Anything slow (compression, waiting for the flusher) before the lock.
        let sliding = admit.flags & SLIDE != 0;
        let prepared = lower
            .prepare_insert(key, &value, disk_deadline(admit.deadline, sliding))
            .map_err(|(len, max)| Refusal::TooLarge { len, max })?;
        let hot = lower.disk().recall(hash);
        let (mut shard, prior) = self.lock_with_prior(lower, hash, key, false)?;
        shard.sweep_expired(
            admit.weight,
            hash,
            || self.memory.clock().now(),
            &mut evictions,
        );
        let old = shard.insert(hash, owned, value, Admit { hot, ..admit }, &mut evictions);
        let replaced = match prepared.as_ref().map(|p| lower.commit_insert(key, hash, p)) {
            Some(Ok(replaced)) => {
                shard.set_clean(hash, &Probe::new(key));
                // Growing, the new value may have been evicted at once: it
                // is in the log all the same.
                for e in evictions.iter_mut().filter(|e| e.hash == hash) {
                    if e.payload.key.as_slice() == key {
                        e.flags &= !DIRTY;
                    }
                }
                replaced
            }
            _ => lower.invalidate(key, hash),
        };
        let mut gone = Gone::new();
        let demotions = self.demote(lower, &shard, &evictions, &mut gone);
        drop(shard);
        lower.finish_demotions(demotions);
        if let Some(n) = &self.listener {
            let superseded = replaced.map(|_| prior);
            self.report_superseded(n, key, old, superseded, RemovalCause::Replaced);
            self.report_gone(n, &evictions, &gone);
        }
        Ok(())
    }

    /// Under `shard`'s lock: what the disk owes the entries that left it.
    fn demote(
        &self,
        lower: &Lower,
        shard: &ShardWrite<'_>,
        evictions: &Evictions,
        gone: &mut Gone,
    ) -> Vec<lower::Demotion> {
        // A full shard: memory holds about this many entries.
        let resident = (shard.counts().resident * self.memory.shard_count()) as u64;
        lower.demote(evictions, self.memory.clock().now(), resident, gone)
    }

    /// Promotes a value read from the disk tier, unless memory holds the key
    /// already or the disk no longer holds what was read (a concurrent remove
    /// or overwrite won). Enters as clean: it is on disk.
    pub(crate) fn promote(
        &self,
        hash: u64,
        key: &[u8],
        value: Bytes,
        weight: u32,
        deadline: u64,
        token: crate::disk::Token,
    ) -> bool {
        let Some(lower) = &self.lower else {
            return false;
        };
        let probe = Probe::new(key);
        let mut evictions = Evictions::new();
        let mut shard = self.memory.write(hash);
        // Memory takes the record only if it is still the key's, in one step
        // with reclaim's check (so reclaim never drops, as memory's, a record
        // memory did not take, nor reports one memory took).
        if shard.is_closed() || shard.holds(hash, &probe) || !lower.promoting(hash, token) {
            return false;
        }
        // A record's deadline says whether the entry slides.
        let clean = Admit {
            weight,
            deadline,
            flags: if deadline & SLIDING != 0 { SLIDE } else { 0 },
            hot: false,
        };
        shard.sweep_expired(weight, hash, || self.memory.clock().now(), &mut evictions);
        shard.insert(hash, probe.into_owned(), value, clean, &mut evictions);
        let mut gone = Gone::new();
        let demotions = self.demote(lower, &shard, &evictions, &mut gone);
        drop(shard);
        lower.finish_demotions(demotions);
        if let Some(n) = &self.listener {
            self.report_gone(n, &evictions, &gone);
        }
        true
    }

    /// Removes `key` from both tiers; returns its live value, from memory or,
    /// if only the disk held it, from disk (one read of its record). The
    /// listener hears of it with `cause` (or `Expired`, if it had expired).
    pub(crate) fn remove(&self, hash: u64, key: &[u8], cause: RemovalCause) -> Option<Bytes> {
        let probe = Probe::new(key);
        let now = || self.memory.clock().now();
        let Some(lower) = &self.lower else {
            let mut shard = self.memory.write(hash);
            if shard.is_closed() {
                return None;
            }
            let gone = shard.remove(hash, &probe);
            drop(shard);
            let g = gone?;
            let expired = g.is_expired(now);
            let old = Some((g.payload.value, g.deadline));
            if let Some(n) = &self.listener {
                self.report_superseded(n, key, old.clone(), None, cause);
            }
            return old.filter(|_| !expired).map(|(v, _)| v);
        };
        // The disk's record, read before the lock (no I/O under it), is what
        // the removal takes only if, under the lock, memory does not hold the
        // key and the index still points at that record (else read again).
        let Ok((mut shard, prior)) = self.lock_with_prior(lower, hash, key, true) else {
            return None; // closed
        };
        let gone = shard.remove(hash, &probe);
        let replaced = lower.invalidate(key, hash);
        drop(shard);
        let old = gone.map(|g| (g.payload.value, g.deadline));
        let superseded = replaced.map(|_| prior);
        let answer = match (&old, &superseded) {
            (Some((v, deadline)), _) => (*deadline == 0 || *deadline > now()).then(|| v.clone()),
            (None, Some(Some(p))) => {
                let live = p.key == key && !lower.expired_at(p.expires_at, now());
                live.then(|| p.value.clone())
            }
            _ => None,
        };
        if let Some(n) = &self.listener {
            self.report_superseded(n, key, old, superseded, cause);
        }
        answer
    }

    /// Like `get` but not counted and not an access (memory only: the
    /// single-flight check after a miss).
    pub(crate) fn peek(&self, hash: u64, key: &[u8]) -> Option<Bytes> {
        self.memory.peek(hash, key)
    }

    #[cfg(any(test, fuzzing, feature = "validate"))]
    pub(crate) fn validate(&self) {
        self.memory.validate();
    }
}

#[cfg(test)]
mod tests {
    use crate::{Cache, WritePolicy};

    /// Nothing slow under a shard lock: under `Demote` every eviction of an
    /// entry that proved reuse writes it, compressed (its values compress),
    /// and compression asserts that no shard lock is held. So this fails if
    /// the demotion's compression moves back under the lock.
    #[test]
    fn demotions_compress_outside_the_shard_lock() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::builder()
            .memory_capacity(64)
            .unit_weight()
            .shards(1)
            .disk(dir.path(), 64 << 20)
            .segment_size(1 << 20)
            .write_policy(WritePolicy::Demote)
            .compress_above(64)
            .build()
            .unwrap();
        let value = |i: u32| format!("{i:08} ").repeat(100);
        for i in 0..2_000u32 {
            cache.insert(&i.to_le_bytes(), value(i)).unwrap();
            cache
                .insert(&(1_000_000 + i).to_le_bytes(), "filler")
                .unwrap();
            assert!(
                cache.get(&i.to_le_bytes()).is_some(),
                "referenced: proves reuse"
            );
        }
        cache.sync().unwrap();
        let disk = cache.stats().disk.unwrap();
        assert!(disk.values_appended > 1_000, "demoted: {disk:?}");
        assert!(
            disk.value_bytes_stored * 4 < disk.value_bytes_in,
            "and compressed: {disk:?}"
        );
        for i in 0..2_000u32 {
            if let Some(v) = cache.get(&i.to_le_bytes()) {
                assert_eq!(v, value(i));
            }
        }
    }

    /// The check itself: compression or a wait asserted under a shard lock
    /// panics (in builds with debug assertions, the tests').
    #[test]
    #[should_panic(expected = "under a shard lock")]
    fn the_lock_rule_check_fires_under_a_lock() {
        let memory = crate::memory::MemoryTier::new(64, 1, crate::time::Clock::system());
        let _shard = memory.write(0);
        crate::sync::assert_no_shard_lock("compression");
    }
}
