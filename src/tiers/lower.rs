//! The disk tier as the cross-tier policy drives it: the write policy, the
//! clock mapping (memory's monotonic deadlines, the disk's unix ones), and
//! what each memory event costs on disk. Every call says whether it may run
//! under a key's shard lock (appends, flags: never waiting) or must not
//! (compression, a wait for the flusher).

use crate::disk::{CheckpointState, DiskError, DiskTier, Loc, Prepared, Prior, Stream, Token};
use crate::format::record::RECORD_HEADER_LEN;
use crate::listener::{Notifier, RemovalCause};
use crate::memory::Evictions;
use crate::sync::{Arc, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::time::{DEADLINE_BITS, EXTENDED, disk_deadline};
use bytes::Bytes;
use smallvec::SmallVec;

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

/// Index flag of a record memory holds (see `disk::index`).
const IN_MEMORY: u8 = 4;

/// A demotion reserved under a shard lock: the value is compressed and
/// appended once the lock is released.
pub(crate) struct Demotion {
    hash: u64,
    key: crate::key::KeyBuf,
    value: Bytes,
    deadline: u64,
    dirty: bool,
    /// The index flags the record gets (one use if it proved reuse).
    flags: u8,
}

/// The disk tier below the memory tier, and the policy's side of it.
pub(crate) struct Lower {
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
    /// Demotions reserved and not yet appended: a close waits for them.
    in_flight: AtomicUsize,
    /// The removal listener's reports, if the cache has one.
    listener: Option<Arc<Notifier>>,
}

/// For each entry that left memory under a shard lock: `Some(cause)` if
/// it left the whole cache (the disk does not keep it), for the listener.
pub(crate) type Gone = SmallVec<[Option<RemovalCause>; 2]>;

impl Lower {
    pub(crate) fn new(disk: DiskTier, policy: WritePolicy, unix_at_epoch: u64) -> Self {
        let unix_at_epoch = unix_at_epoch & !DEADLINE_BITS;
        Lower {
            disk,
            policy,
            unix_at_epoch,
            refused: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            listener: None,
        }
    }

    pub(crate) fn set_listener(&mut self, listener: Option<Arc<Notifier>>) {
        self.listener = listener;
    }

    pub(crate) fn disk(&self) -> &DiskTier {
        &self.disk
    }

    pub(crate) fn policy(&self) -> WritePolicy {
        self.policy
    }

    /// A memory deadline as a record's `expires_at`: the epoch's low bits
    /// are 0, so the [`SLIDING`](crate::time::SLIDING) bit carries over;
    /// [`EXTENDED`] is memory's own and is dropped.
    pub(crate) fn to_unix(&self, deadline: u64) -> u64 {
        if deadline == 0 {
            0
        } else {
            self.unix_at_epoch.saturating_add(deadline) & !EXTENDED
        }
    }

    pub(crate) fn to_mono(&self, expires_at: u64) -> u64 {
        if expires_at == 0 {
            0
        } else {
            expires_at.saturating_sub(self.unix_at_epoch).max(1)
        }
    }

    /// Outside any lock, before an insert: the value made ready to write, if
    /// the policy writes inserts and the tier has room (a refusal is counted,
    /// and the next `sync()` writes it or reports it). A record too large for
    /// a segment is refused outright: under `WriteBehind` once compressed,
    /// under the demoting policies by its raw size (they write it later, when
    /// memory evicts it). Under the demoting policies the insert may evict an
    /// entry that must be written: so it waits here, as the backpressure
    /// setting says, for the flusher to have room.
    pub(crate) fn prepare_insert(
        &self,
        key: &[u8],
        value: &Bytes,
        deadline: u64,
    ) -> Result<Option<Prepared>, (usize, usize)> {
        let max = self.disk.max_record_len();
        let too_large = |stored: usize| {
            let len = RECORD_HEADER_LEN + key.len() + stored;
            (len > max).then_some((len, max))
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

    /// Outside any lock, for a `sync()` or a close: a value memory holds
    /// unwritten, made ready to write, waiting for room as long as the
    /// flusher makes progress (a failed tier ends the wait).
    pub(crate) fn prepare_waiting(
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

    /// Under the key's shard lock: appends an inserted value (to the
    /// probation stream). `Ok` if it is in the log (the memory copy is
    /// clean), with where the key's previous record was.
    pub(crate) fn commit_insert(
        &self,
        key: &[u8],
        hash: u64,
        p: &Prepared,
    ) -> Result<Option<Loc>, DiskError> {
        self.disk.commit(key, hash, p, IN_MEMORY, Stream::Probation)
    }

    /// Under the key's shard lock: appends a value memory holds and the disk
    /// does not (a `sync()` writing a refused insert, a close).
    pub(crate) fn commit_held(&self, key: &[u8], hash: u64, p: &Prepared) -> bool {
        self.disk
            .commit(key, hash, p, IN_MEMORY, Stream::Main)
            .is_ok()
    }

    /// Under the key's shard lock: the key was removed or changed without
    /// being written: supersede what the disk holds for it. A failed tier
    /// still forgets the key in its index, so nothing stale is served.
    /// Returns where the record it superseded was, if there was one.
    pub(crate) fn invalidate(&self, key: &[u8], hash: u64) -> Option<Loc> {
        self.disk.remove(key, hash)
    }

    /// Under the key's shard lock: memory takes the record `token` names,
    /// if it is still the key's (see `DiskTier::enter_memory_if_current`).
    pub(crate) fn promoting(&self, hash: u64, token: Token) -> bool {
        self.disk.enter_memory_if_current(hash, token)
    }

    /// Under the key's shard lock: whether the index still holds what
    /// `prior` read (nothing, or that record).
    pub(crate) fn prior_current(&self, hash: u64, prior: &Option<Prior>) -> bool {
        let now = self.disk.current_loc(hash);
        match prior {
            None => now.is_none(),
            Some(p) => now.is_some_and(|loc| p.token.is(loc)),
        }
    }

    /// Whether a record's `expires_at` (unix ns) has passed at `now`
    /// (memory's clock).
    pub(crate) fn expired_at(&self, expires_at: u64, now: u64) -> bool {
        expires_at != 0 && expires_at <= self.to_unix(now)
    }

    /// Under the shard lock of the entries that left memory: decides, for
    /// each, what the disk owes it. A clean entry whose record the disk
    /// still holds costs nothing (reclaim learns it left memory, and whether
    /// it proved reuse); one the policy keeps is reserved, to be written by
    /// [`finish_demotions`](Self::finish_demotions) after the lock; the rest
    /// are remembered as ghosts. `resident`: what memory holds now. With a
    /// listener, `gone` gets each entry's cause if it left the whole cache
    /// (the listener is told after the lock), and an expired entry's record
    /// is superseded here (a tombstone), so that the disk never reports it
    /// again.
    pub(crate) fn demote(
        &self,
        evictions: &Evictions,
        now: u64,
        resident: u64,
        gone: &mut Gone,
    ) -> Vec<Demotion> {
        let mut out = Vec::new();
        if evictions.is_empty() {
            return out;
        }
        let listening = self.listener.is_some();
        self.disk.memory_holds(resident);
        for e in evictions {
            // Exactly one mark per eviction.
            let mut mark = |cause: Option<RemovalCause>| {
                if listening {
                    gone.push(cause);
                }
            };
            let deadline = e.deadline;
            if deadline != 0 && deadline <= now {
                // Expired: nothing to keep.
                if listening {
                    self.disk.remove(e.payload.key.as_slice(), e.hash);
                }
                mark(Some(RemovalCause::Expired));
                continue;
            }
            let p = &e.payload;
            let key = p.key.as_slice();
            let hash = e.hash;
            let dirty = e.flags & crate::memory::DIRTY != 0;
            let sliding = e.flags & crate::memory::SLIDE != 0;
            let deadline = disk_deadline(deadline, sliding);
            let proved = e.proved_reuse;
            if !dirty && self.disk.left_memory(hash, proved) {
                mark(None);
                if sliding && e.deadline & EXTENDED != 0 {
                    // Reads moved a sliding deadline past the record's: the
                    // record is rewritten with it, here under the key's lock
                    // (raw, never waiting; refused if the flusher is behind,
                    // and then the older deadline stands).
                    let p = self.disk.prepare_raw(&p.value, self.to_unix(deadline));
                    if let Ok(p) = p {
                        let _ = self
                            .disk
                            .commit(key, hash, &p, u8::from(proved), Stream::Main);
                    }
                }
                continue;
            }
            let write = match self.policy {
                WritePolicy::WriteBehind | WritePolicy::DemoteAll => true,
                WritePolicy::Demote => proved,
            };
            if !write {
                self.disk
                    .remember(hash, RECORD_HEADER_LEN + key.len() + p.value.len());
                mark(Some(RemovalCause::Evicted));
                continue;
            }
            let flags = u8::from(proved); // one use: reclaim keeps it once
            if self.disk.reserve(hash, flags) {
                mark(None); // unless its write fails (`finish_demotions`)
                self.in_flight.fetch_add(1, Ordering::AcqRel);
                out.push(Demotion {
                    hash,
                    key: p.key.clone(),
                    value: p.value.clone(),
                    deadline,
                    dirty,
                    flags,
                });
            } else {
                // The index holds the key (a record of another key sharing
                // its index bits): nothing reserved, nothing written.
                self.note_unwritten(dirty);
                mark(Some(RemovalCause::Evicted));
            }
        }
        out
    }

    /// Outside any lock: compresses and appends the demotions reserved under
    /// it; one whose key was written or removed meanwhile is dropped (the
    /// newer change won). Never waits: a full flush queue refuses, counted.
    pub(crate) fn finish_demotions(&self, demotions: Vec<Demotion>) {
        for d in demotions {
            let key = d.key.as_slice();
            let written = self
                .disk
                .prepare(&d.value, self.to_unix(d.deadline), false)
                .and_then(|p| self.disk.commit_reserved(key, d.hash, &p, d.flags));
            if written.is_err() {
                self.disk.release(d.hash);
                self.note_unwritten(d.dirty);
                if let Some(n) = &self.listener {
                    n.send(key, Some(d.value.clone()), RemovalCause::Evicted);
                }
            }
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// An entry memory let go of could not be written: if it was an
    /// acknowledged insert under `WriteBehind`, the next `sync()` says so.
    fn note_unwritten(&self, dirty: bool) {
        if dirty && self.policy == WritePolicy::WriteBehind {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits for the demotions reserved before every shard closed.
    pub(crate) fn wait_for_demotions(&self) {
        while self.in_flight.load(Ordering::Acquire) > 0 {
            std::thread::yield_now();
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

    /// Outside any lock: the key's value on disk, its deadline (memory clock),
    /// and a token naming the record read. Counts an L2 hit.
    pub(crate) fn get(&self, key: &[u8], hash: u64, now: u64) -> Option<(Bytes, u64, Token)> {
        let (v, expires_at, token) = self.disk.get_current(key, hash, self.to_unix(now))?;
        Some((v, self.to_mono(expires_at), token))
    }

    /// The record the index holds for `hash`, for refilling memory: key,
    /// value, deadline (memory clock) and token. Counts no hit.
    /// At `now` 0, records past their deadline are read too.
    pub(crate) fn read_by_hash(&self, hash: u64, now: u64) -> Option<(Vec<u8>, Bytes, u64, Token)> {
        let unix = if now == 0 { 0 } else { self.to_unix(now) };
        let (key, value, expires_at, token) = self.disk.read_by_hash(hash, unix)?;
        Some((key, value, self.to_mono(expires_at), token))
    }

    /// What open found of the checkpoint (handed over once).
    pub(crate) fn take_checkpoint(&self) -> CheckpointState {
        self.disk.take_checkpoint()
    }
}
