//! What the tiers tell the removal listener, and the rule that makes each
//! report happen once.
//!
//! An entry is one key's value from the write that made it to the one that
//! ends it; memory and the disk may both hold it (the disk's record is then
//! the same value). It is reported by whoever takes its last copy out:
//!
//! * memory's copy, under the key's shard lock (an overwrite, a removal, an
//!   expiry, an eviction the disk does not keep): the report names memory's
//!   value, and the disk's copy, superseded under the same lock, is not
//!   reported again (an expired one gets a tombstone, so that neither reclaim
//!   nor a reopen reports it later);
//! * the disk's record of a key memory does not hold: by the index entry's
//!   own compare-and-remove. A write or removal under the shard lock reads
//!   the record it will supersede beforehand (no I/O under the lock), checks
//!   under the lock that the index still points there, and reports it only
//!   if its append actually replaced an index entry; reclaim and a corrupt
//!   read report a record only if their `remove_if` took the entry, and
//!   reclaim only if memory had not taken the record (checked in the same
//!   step as the removal, under the index stripe's lock, against a promotion
//!   that sets the flag in one step with its own check).
//!
//! Reports are sent after every lock is released.

use super::{Refusal, Tiers};
use crate::disk::Prior;
use crate::key::Probe;
use crate::listener::{Notifier, RemovalCause};
use crate::memory::{Evictions, ShardWrite};
use bytes::Bytes;

/// How often a write or removal reads the disk's record again when the
/// index changed between its read and its lock, before going on without it.
const ATTEMPTS: usize = 8;

impl Tiers {
    /// Takes the key's shard lock, having read (outside it) the disk
    /// record a write or removal of `key` would supersede: only with a
    /// listener, unless `always`. Under the returned lock, memory holds the
    /// key, or the index points where the record read was (or nowhere, if
    /// none was read), unless the index kept changing: then the record is
    /// `None` (its value unknown).
    pub(super) fn lock_with_prior(
        &self,
        lower: &super::Lower,
        hash: u64,
        key: &[u8],
        always: bool,
    ) -> Result<(ShardWrite<'_>, Option<Prior>), Refusal> {
        let probe = Probe::new(key);
        if self.listener.is_none() && !always {
            let shard = self.memory.write(hash);
            if shard.is_closed() {
                return Err(Refusal::Closed);
            }
            return Ok((shard, None));
        }
        for attempt in 1.. {
            // A demotion of the key in flight (another thread let go of it
            // and is appending it) is waited for: its record is the prior.
            lower.disk().wait_unreserved(hash);
            let prior = if self.memory.contains(hash, key) || !lower.disk().holds(hash) {
                None
            } else {
                lower.disk().read_prior(key, hash)
            };
            let shard = self.memory.write(hash);
            if shard.is_closed() {
                return Err(Refusal::Closed);
            }
            if shard.holds(hash, &probe) || lower.prior_current(hash, &prior) {
                return Ok((shard, prior));
            }
            if attempt == ATTEMPTS {
                return Ok((shard, None));
            }
            drop(shard);
            std::thread::yield_now();
        }
        unreachable!("the loop returns at its last attempt")
    }

    /// A lookup found `key` resident and expired: removes it (under the
    /// write lock, where it is checked again) and reports it.
    #[cold]
    pub(super) fn take_expired(&self, hash: u64, key: &[u8]) {
        let mut shard = self.memory.write(hash);
        let gone = shard.remove_expired(hash, &Probe::new(key), || self.memory.clock().now());
        if let (Some(_), Some(_), Some(lower)) = (&gone, &self.listener, &self.lower) {
            lower.invalidate(key, hash); // its record expired too
        }
        drop(shard);
        if let (Some(n), Some(g)) = (&self.listener, gone) {
            n.send(key, Some(g.payload.value), RemovalCause::Expired);
        }
    }

    /// After the lock, for an insert into a cache without a disk tier.
    pub(super) fn report_memory_only(
        &self,
        key: &[u8],
        old: Option<(Bytes, u64)>,
        evictions: &Evictions,
    ) {
        let Some(n) = &self.listener else {
            return;
        };
        self.report_superseded(n, key, old, None, RemovalCause::Replaced);
        let now = self.memory.clock().now();
        for e in evictions {
            let cause = if e.is_expired(|| now) {
                RemovalCause::Expired
            } else {
                RemovalCause::Evicted
            };
            n.send(
                e.payload.key.as_slice(),
                Some(e.payload.value.clone()),
                cause,
            );
        }
    }

    /// After the lock: reports what a write or removal of `key` ended with
    /// `cause` (or `Expired`, if it had expired): memory's value and its
    /// deadline if memory held it, else the disk record the index let go of
    /// (`superseded`: `Some` if the index let go of one, with the record
    /// read beforehand, `None` inside if its value is unknown).
    pub(super) fn report_superseded(
        &self,
        n: &Notifier,
        key: &[u8],
        old: Option<(Bytes, u64)>,
        superseded: Option<Option<Prior>>,
        cause: RemovalCause,
    ) {
        let now = self.memory.clock().now();
        let or_expired = |expired: bool| {
            if expired {
                RemovalCause::Expired
            } else {
                cause
            }
        };
        match (old, superseded) {
            (Some((value, deadline)), _) => {
                let expired = deadline != 0 && deadline <= now;
                n.send(key, Some(value), or_expired(expired));
            }
            (None, Some(Some(p))) => {
                let Some(lower) = &self.lower else {
                    return;
                };
                if p.key != key {
                    // Another key with the same hash: its entry went too.
                    n.send(&p.key, Some(p.value), RemovalCause::Evicted);
                } else {
                    let expired = lower.expired_at(p.expires_at, now);
                    n.send(key, Some(p.value), or_expired(expired));
                }
            }
            (None, Some(None)) => n.send(key, None, cause),
            (None, None) => {}
        }
    }

    /// After the lock: reports the evicted entries `demote` marked as gone
    /// from the whole cache.
    pub(super) fn report_gone(&self, n: &Notifier, evictions: &Evictions, gone: &super::Gone) {
        for (e, cause) in evictions.iter().zip(gone) {
            if let Some(cause) = cause {
                n.send(
                    e.payload.key.as_slice(),
                    Some(e.payload.value.clone()),
                    *cause,
                );
            }
        }
    }
}
