//! The disk tier as the memory tier sees it: write policy, clock mapping, and
//! the calls L1 makes around and under its shard locks.
//!
//! Ordering rule: every append for a key (value, tombstone, demotion) is made
//! while that key's L1 shard lock is held. Appends only copy into the log's
//! buffer (no I/O, no waiting), and anything slow (compression, waiting for the
//! flusher) happens before the lock is taken. So the disk's order for a key is
//! L1's order, and an L2 hit is promoted only if, under the same lock, the disk
//! still points at the record that was read.

use super::index::IN_MEMORY;
use super::{CheckpointState, DiskError, DiskStats, DiskTier, Prepared, Stream, Token};
use crate::format::checkpoint::{Checkpoint, MemoryEntry};
use crate::format::record::RECORD_HEADER_LEN;
use crate::memory::Refusal;
use crate::sync::{AtomicBool, AtomicU64, Ordering};
use bytes::Bytes;

/// When values are written to the disk tier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WritePolicy {
    /// Every insert is also written to disk, in the background (the default):
    /// a crash leaves the disk tier warm, and evicting from memory costs no write.
    #[default]
    WriteBehind,
    /// Values are written only when memory evicts them after they proved reuse
    /// (they were hot, referenced in memory, read from disk, or came back
    /// while the disk tier remembered them): fewer device writes, a colder disk
    /// tier after a crash.
    Demote,
    /// Every value memory evicts is written, proved or not: the plain victim
    /// cache that `Demote` is measured against.
    DemoteAll,
}

pub(crate) struct Tiered {
    disk: DiskTier,
    policy: WritePolicy,
    /// Unix time (ns) at the memory tier's clock epoch: maps deadlines both ways.
    unix_at_epoch: u64,
    /// An insert's write was refused (the flusher was behind) since the last
    /// `sync()`: the next one writes what memory still holds unwritten.
    refused: AtomicBool,
    /// Inserts acknowledged but never written that memory let go of (a
    /// refused write, then an eviction whose write was refused too): the
    /// next `sync()` reports them.
    dropped: AtomicU64,
}

impl Tiered {
    pub(crate) fn new(disk: DiskTier, policy: WritePolicy, unix_at_epoch: u64) -> Self {
        Tiered {
            disk,
            policy,
            unix_at_epoch,
            refused: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        }
    }

    fn to_unix(&self, deadline: u64) -> u64 {
        if deadline == 0 {
            0
        } else {
            self.unix_at_epoch.saturating_add(deadline)
        }
    }

    fn to_mono(&self, expires_at: u64) -> u64 {
        if expires_at == 0 {
            0
        } else {
            expires_at.saturating_sub(self.unix_at_epoch).max(1)
        }
    }

    /// Before an insert, outside any lock: the value made ready to write, if
    /// the policy writes inserts and the tier has room (a refusal is counted,
    /// and the next `sync()` writes it or reports it). A record too large for
    /// a segment is refused outright: under `WriteBehind` once compressed,
    /// under the demoting policies by its raw size (they write it only later,
    /// when memory evicts it).
    ///
    /// Under the demoting policies nothing is written now, but the insert may
    /// evict an entry that must be written, under the lock, without waiting:
    /// so the insert waits here, as the backpressure setting says, for the
    /// flusher to have room.
    pub(crate) fn prepare_insert(
        &self,
        key: &[u8],
        value: &Bytes,
        deadline: u64,
    ) -> Result<Option<Prepared>, Refusal> {
        let max = self.disk.max_record_len();
        let too_large = |stored: usize| {
            let len = RECORD_HEADER_LEN + key.len() + stored;
            (len > max).then_some(Refusal::TooLarge { len, max })
        };
        if self.policy != WritePolicy::WriteBehind {
            if let Some(r) = too_large(value.len()) {
                return Err(r);
            }
            let _ = self.disk.wait_for_space(); // a timeout shows as a refused demotion
            return Ok(None);
        }
        match self.disk.prepare(value, self.to_unix(deadline), true) {
            Ok(p) => match too_large(p.stored_len()) {
                Some(r) => Err(r),
                None => Ok(Some(p)),
            },
            Err(DiskError::Refused) => {
                self.refused.store(true, Ordering::Release);
                Ok(None)
            }
            Err(_) => Ok(None), // failed: sync() says so
        }
    }

    /// Outside any lock, for a `sync()` or a close: an entry memory holds
    /// unwritten, made ready to write, waiting for room as long as the
    /// flusher makes progress (a failed tier ends the wait).
    pub(crate) fn prepare_dirty(
        &self,
        value: &Bytes,
        deadline: u64,
    ) -> Result<Prepared, DiskError> {
        loop {
            match self.disk.prepare(value, self.to_unix(deadline), true) {
                Err(DiskError::Refused) => self.disk.wait_for_room()?,
                other => return other,
            }
        }
    }

    /// Whether an insert's write was refused since the last call.
    pub(crate) fn take_refused(&self) -> bool {
        self.refused.swap(false, Ordering::AcqRel)
    }

    /// The next `sync()` writes memory's unwritten entries again.
    pub(crate) fn retry_refused(&self) {
        self.refused.store(true, Ordering::Release);
    }

    /// Acknowledged inserts memory let go of unwritten, since the last call.
    pub(crate) fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::AcqRel)
    }

    /// Under the key's shard lock: writes a prepared value. `true` if it is now in
    /// the disk tier's log (the L1 copy is clean).
    pub(crate) fn commit(&self, key: &[u8], prepared: &Prepared) -> bool {
        self.disk
            .commit(key, prepared, IN_MEMORY, Stream::Probation)
            .is_ok()
    }

    /// Before an insert, outside any lock: whether the disk tier remembers
    /// `key` as gone from both tiers (it proved reuse: memory admits it hot).
    pub(crate) fn recall(&self, key: &[u8]) -> bool {
        self.disk.recall(key)
    }

    /// Whether the disk holds a record for `key` (its memory copy, if clean,
    /// need not be written).
    pub(crate) fn holds(&self, key: &[u8]) -> bool {
        self.disk.holds(key)
    }

    /// At close, with every shard closed (no other append for the key can
    /// come): writes an entry the disk does not hold, waiting for room as
    /// long as the flusher makes progress.
    pub(crate) fn write_at_close(
        &self,
        key: &[u8],
        value: &Bytes,
        deadline: u64,
    ) -> Result<(), DiskError> {
        let p = self.prepare_dirty(value, deadline)?;
        self.disk.commit(key, &p, IN_MEMORY, Stream::Main)
    }

    /// See [`DiskTier::close`].
    pub(crate) fn close(&self) {
        self.disk.close();
    }

    /// See [`DiskTier::refilling`].
    pub(crate) fn refilling(&self, on: bool) {
        self.disk.refilling(on);
    }

    /// See [`DiskTier::hold_reclaim`].
    pub(crate) fn hold_reclaim(&self, held: bool) {
        self.disk.hold_reclaim(held);
    }

    /// Seals the log and writes the checkpoint: what memory holds (hottest
    /// first), and the disk tier's use counts and ghosts.
    pub(crate) fn checkpoint(&self, memory: Vec<MemoryEntry>) -> Result<(), DiskError> {
        let last_seq = self.disk.seal()?;
        let (uses, ghosts) = self.disk.policy_state();
        self.disk.write_checkpoint(&Checkpoint {
            last_seq,
            memory,
            uses,
            ghosts,
        })
    }

    /// What open found of the checkpoint (handed over once).
    pub(crate) fn take_checkpoint(&self) -> CheckpointState {
        self.disk.take_checkpoint()
    }

    /// The record the index holds for `hash`, for refilling memory: key,
    /// value, deadline (memory clock) and token. Counts no hit.
    pub(crate) fn read_by_hash(&self, hash: u64, now: u64) -> Option<(Vec<u8>, Bytes, u64, Token)> {
        let (key, value, expires_at, token) = self.disk.read_by_hash(hash, self.to_unix(now))?;
        Some((key, value, self.to_mono(expires_at), token))
    }

    /// Memory holds about `entries` entries (the ghost table remembers as many
    /// keys as both tiers hold).
    pub(crate) fn memory_holds(&self, entries: u64) {
        self.disk.memory_holds(entries);
    }

    /// Under the key's shard lock: memory promoted `key` from disk.
    pub(crate) fn promoted(&self, key: &[u8]) {
        self.disk.entered_memory(key);
    }

    /// Under the key's shard lock: the key was removed or changed without being
    /// written: supersede what the disk holds for it.
    pub(crate) fn invalidate(&self, key: &[u8]) {
        // A failed tier still forgets the key in its index, so nothing stale is served.
        let _ = self.disk.remove(key);
    }

    /// Under the key's shard lock: an entry leaves memory. If its bytes are on
    /// disk (clean, and not reclaimed since), that costs nothing; otherwise it is
    /// written if the policy keeps it (never waiting: a full tier refuses,
    /// counted), or its fingerprint is remembered.
    pub(crate) fn evicted(
        &self,
        key: &[u8],
        value: &Bytes,
        deadline: u64,
        dirty: bool,
        proved: bool,
    ) {
        if !dirty && self.disk.left_memory(key, proved) {
            return;
        }
        let write = match self.policy {
            WritePolicy::WriteBehind | WritePolicy::DemoteAll => true,
            WritePolicy::Demote => proved,
        };
        if !write {
            self.disk.remember(key, value.len());
            return;
        }
        let written = self
            .disk
            .prepare(value, self.to_unix(deadline), false)
            .and_then(|p| {
                let flags = u8::from(proved); // one use: reclaim keeps it once
                self.disk.commit(key, &p, flags, Stream::Main)
            });
        if written.is_err() && dirty && self.policy == WritePolicy::WriteBehind {
            // An acknowledged insert the tier never got: the next sync says so.
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Outside any lock: the key's value on disk, its deadline (memory clock), and
    /// a token for [`still_current`](Self::still_current).
    pub(crate) fn get(&self, key: &[u8], now: u64) -> Option<(Bytes, u64, Token)> {
        let (v, expires_at, token) = self.disk.get_current(key, self.to_unix(now))?;
        Some((v, self.to_mono(expires_at), token))
    }

    /// Under the key's shard lock: whether the disk still holds what `token` read.
    pub(crate) fn still_current(&self, key: &[u8], token: Token) -> bool {
        self.disk.is_current(key, token)
    }

    pub(crate) fn sync(&self) -> Result<(), DiskError> {
        self.disk.sync()
    }

    pub(crate) fn stats(&self) -> DiskStats {
        self.disk.stats()
    }

    pub(crate) fn policy(&self) -> WritePolicy {
        self.policy
    }
}
