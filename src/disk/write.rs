//! The disk tier's write side, as the tiers above call it: values made
//! ready outside any lock (checks, compression, the wait for room), then
//! appended under the caller's lock (never waiting), tombstones, the
//! reservation a demotion holds while it is compressed outside the lock,
//! and the policy flags the memory tier sets on the index. Keys come with
//! their hash, computed once by the caller.

use super::index::{IN_MEMORY, Loc, PENDING};
use super::state::{Request, add, max_record_len};
use super::{Backpressure, DiskError, DiskTier, Stream};
use crate::format::record::{Kind, RecordHeader};
use crate::sync::assert_no_shard_lock;
use bytes::Bytes;
use std::time::{Duration, Instant};

/// A value made ready for [`DiskTier::commit`] by [`DiskTier::prepare`].
pub(crate) struct Prepared {
    compressed: bool,
    /// The value itself (shared, not copied) or its compressed bytes.
    stored: Bytes,
    raw_len: u32,
    expires_at: u64,
}

impl Prepared {
    /// Bytes of the value as it will be stored.
    pub(crate) fn stored_len(&self) -> usize {
        self.stored.len()
    }
}

impl DiskTier {
    /// Appends `key` = `value` (expiring at `expires_at`, unix ns, 0 = never),
    /// waiting for room as the backpressure setting says. (The tests' way in;
    /// the memory tier prepares and commits separately.)
    #[cfg(test)]
    pub(crate) fn put(&self, key: &[u8], value: &[u8], expires_at: u64) -> Result<(), DiskError> {
        let prepared = self.prepare(&Bytes::copy_from_slice(value), expires_at, true)?;
        let hash = crate::key::hash_key(key);
        self.commit(key, hash, &prepared, 0, Stream::Main)
            .map(|_| ())
    }

    /// The longest record (header, key, stored value) a segment takes.
    pub(crate) fn max_record_len(&self) -> usize {
        max_record_len(self.shared.config.segment_size)
    }

    /// The part of a `put` that may take time, done before any lock is held:
    /// checks, compression, and (if `wait`) waiting for the flusher to make room.
    pub(crate) fn prepare(
        &self,
        value: &Bytes,
        expires_at: u64,
        wait: bool,
    ) -> Result<Prepared, DiskError> {
        assert_no_shard_lock("compression");
        let sh = &*self.shared;
        self.check_failed()?;
        let full = sh.frozen.read().len() >= sh.config.max_frozen;
        if full && !wait {
            add(&sh.counters.refused_writes, 1);
            return Err(DiskError::Refused);
        }
        // With the flusher behind, this writer is about to wait for it
        // (unless it is to be refused at once): compressing first costs it
        // nothing, so it is not budgeted.
        let waits = full && sh.config.backpressure != Backpressure::Refuse;
        let compressed = (value.len() >= sh.config.compress_above)
            .then(|| sh.compression.compress(value, waits))
            .flatten();
        if full && let Err(e) = self.wait_for_space() {
            if matches!(e, DiskError::Refused) {
                add(&sh.counters.refused_writes, 1);
            }
            return Err(e);
        }
        Ok(Prepared {
            compressed: compressed.is_some(),
            stored: compressed.map_or_else(|| value.clone(), Bytes::from),
            raw_len: value.len() as u32,
            expires_at,
        })
    }

    /// A value made ready to write under a caller's lock: stored raw (no
    /// compression), refused rather than waited for if the flusher is
    /// behind. For rewriting a record's deadline when memory lets go of a
    /// sliding entry.
    pub(crate) fn prepare_raw(
        &self,
        value: &Bytes,
        expires_at: u64,
    ) -> Result<Prepared, DiskError> {
        let sh = &*self.shared;
        self.check_failed()?;
        if sh.frozen.read().len() >= sh.config.max_frozen {
            add(&sh.counters.refused_writes, 1);
            return Err(DiskError::Refused);
        }
        Ok(Prepared {
            compressed: false,
            stored: value.clone(),
            raw_len: value.len() as u32,
            expires_at,
        })
    }

    /// Appends a prepared value for `key`, with index flags ([`IN_MEMORY`] if
    /// the memory tier holds it). Never waits: safe under a caller's lock.
    /// Returns where the key's previous record was, if it had one.
    pub(crate) fn commit(
        &self,
        key: &[u8],
        hash: u64,
        p: &Prepared,
        flags: u8,
        stream: Stream,
    ) -> Result<Option<Loc>, DiskError> {
        self.append_value(key, hash, p, flags, None, stream)
            .map(|(_, replaced)| replaced)
    }

    /// Appends a prepared value for `key` only if the index still holds the
    /// reservation [`reserve`](Self::reserve) made for it: no write or removal
    /// of the key came since. Whether it was appended.
    pub(crate) fn commit_reserved(
        &self,
        key: &[u8],
        hash: u64,
        p: &Prepared,
        flags: u8,
    ) -> Result<bool, DiskError> {
        self.append_value(key, hash, p, flags, Some(PENDING), Stream::Main)
            .map(|(appended, _)| appended)
    }

    fn append_value(
        &self,
        key: &[u8],
        hash: u64,
        p: &Prepared,
        flags: u8,
        expect: Option<Loc>,
        stream: Stream,
    ) -> Result<(bool, Option<Loc>), DiskError> {
        let header = RecordHeader {
            kind: Kind::Value,
            compressed: p.compressed,
            key_len: key.len() as u16,
            stored_len: p.stored.len() as u32,
            raw_len: p.raw_len,
            expires_at: p.expires_at,
            seq: 0,
        };
        let mut replaced = None;
        let appended = self.append(
            key,
            hash,
            header,
            &p.stored,
            flags,
            expect,
            stream,
            &mut replaced,
        )?;
        if appended {
            let c = &self.shared.counters;
            add(&c.value_bytes_in, u64::from(p.raw_len));
            add(&c.value_bytes_stored, p.stored.len() as u64);
        }
        Ok((appended, replaced))
    }

    /// Under the key's shard lock, as memory evicts an entry the disk must
    /// keep: reserves the key's place in the index (a write or removal of it
    /// from now on supersedes the reservation), so that the value can be
    /// compressed outside the lock and appended with
    /// [`commit_reserved`](Self::commit_reserved). `false` if the index
    /// already holds the key (nothing to reserve).
    pub(crate) fn reserve(&self, hash: u64, flags: u8) -> bool {
        self.shared.index.reserve(hash, flags)
    }

    /// Gives up a reservation that was not committed.
    pub(crate) fn release(&self, hash: u64) {
        self.shared.index.remove_if(hash, PENDING);
    }

    /// Forgets `key`; if it was on disk, appends a tombstone so it cannot come back.
    /// Never waits (tombstones are not subject to backpressure): safe under a caller's lock.
    /// Returns where the key's record was, if the index held one (forgotten
    /// even if the tier has failed and writes no tombstone).
    pub(crate) fn remove(&self, key: &[u8], hash: u64) -> Option<Loc> {
        let header = RecordHeader {
            kind: Kind::Tombstone,
            compressed: false,
            key_len: key.len() as u16,
            stored_len: 0,
            raw_len: 0,
            expires_at: 0,
            seq: 0,
        };
        let mut replaced = None;
        let _ = self.append(key, hash, header, &[], 0, None, Stream::Main, &mut replaced);
        replaced
    }

    #[allow(clippy::too_many_arguments)]
    fn append(
        &self,
        key: &[u8],
        hash: u64,
        header: RecordHeader,
        stored: &[u8],
        flags: u8,
        expect: Option<Loc>,
        stream: Stream,
        replaced: &mut Option<Loc>,
    ) -> Result<bool, DiskError> {
        let sh = &*self.shared;
        let appended = sh.append(key, hash, header, stored, flags, expect, stream, replaced)?;
        if appended == Some(true) {
            self.wake();
        }
        Ok(appended.is_some())
    }

    /// Whether the index holds a record for the key of `hash` (its memory
    /// copy, if clean, need not be written).
    pub(crate) fn holds(&self, hash: u64) -> bool {
        self.shared.index.peek(hash).is_some()
    }

    /// The memory tier takes the record `token` names (promoted from disk),
    /// if the index still points the key at it: reclaim need not keep it
    /// from now on. Whether it does (else the record was superseded or
    /// dropped since it was read, and memory must not take it).
    pub(crate) fn enter_memory_if_current(&self, hash: u64, token: super::Token) -> bool {
        self.shared
            .index
            .set_flags_at(hash, token.loc(), IN_MEMORY, IN_MEMORY)
    }

    /// The memory tier now holds the key (promoted from disk): reclaim need not keep it.
    #[cfg(test)]
    pub(crate) fn entered_memory(&self, hash: u64) {
        self.shared.index.set_flags(hash, IN_MEMORY, IN_MEMORY);
    }

    /// The memory tier let go of the key, whose record this tier still holds;
    /// `proved`: it proved reuse there, so reclaim should keep it. `false` if
    /// the tier no longer holds a record for the key.
    pub(crate) fn left_memory(&self, hash: u64, proved: bool) -> bool {
        let uses = u8::from(proved);
        self.shared.index.leave_memory(hash, uses)
    }

    /// Remembers that the key of `hash`, whose record would take
    /// `record_len` bytes, left both tiers unwritten (see `ghosts`).
    pub(crate) fn remember(&self, hash: u64, record_len: usize) {
        let ghosts = &self.shared.ghosts;
        ghosts.observe(record_len);
        ghosts.insert(hash);
    }

    /// The memory tier above holds about `entries` entries.
    pub(crate) fn memory_holds(&self, entries: u64) {
        self.shared.ghosts.memory_holds(entries);
    }

    /// Whether the key of `hash` was remembered as gone from both tiers; forgets it.
    pub(crate) fn recall(&self, hash: u64) -> bool {
        self.shared.ghosts.take(hash)
    }

    /// Waits, as the backpressure setting says, until the flusher has room for
    /// another segment. Does not count a refusal: callers that give up on a
    /// write because of it do.
    pub(crate) fn wait_for_space(&self) -> Result<(), DiskError> {
        self.wait_until_room(self.shared.config.backpressure)
    }

    /// Waits until the flusher has room for another segment, however long
    /// it takes (a failed or closed tier ends the wait with its error).
    pub(crate) fn wait_for_room(&self) -> Result<(), DiskError> {
        self.wait_until_room(Backpressure::Wait(Duration::MAX))
    }

    fn wait_until_room(&self, backpressure: Backpressure) -> Result<(), DiskError> {
        assert_no_shard_lock("a wait for the flusher");
        let sh = &*self.shared;
        let full = || sh.frozen.read().len() >= sh.config.max_frozen;
        if !full() {
            return Ok(());
        }
        // A wait too long to add to the clock is a wait without a deadline.
        enum Until {
            Now,
            Deadline(Instant),
            Forever,
        }
        let until = match backpressure {
            Backpressure::Refuse => Until::Now,
            Backpressure::Wait(d) => Instant::now()
                .checked_add(d)
                .map_or(Until::Forever, Until::Deadline),
        };
        let (lock, cond) = &sh.space;
        let mut guard = lock.lock();
        while full() {
            self.check_failed()?;
            let timed_out = match until {
                Until::Now => true,
                Until::Deadline(d) => cond.wait_until(&mut guard, d).timed_out(),
                Until::Forever => {
                    cond.wait(&mut guard);
                    false
                }
            };
            if timed_out && full() {
                return Err(DiskError::Refused);
            }
        }
        Ok(())
    }

    pub(crate) fn check_failed(&self) -> Result<(), DiskError> {
        self.shared.check_failed()
    }

    fn wake(&self) {
        if let Some(tx) = &*self.requests.lock() {
            let _ = tx.send(Request::Wake);
        }
    }
}
