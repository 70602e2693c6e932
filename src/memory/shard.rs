//! One shard of the memory tier: CLOCK-Pro over entries that hold a key, a value
//! and a deadline. Plain data and algorithm; the tier wraps it in a lock.

use crate::key::{KeyBuf, Probe};
use crate::policy::{ClockPro, Counts, Evicted, Idx};

use crate::time::{EXTENDED, disk_deadline, sliding_deadline};
use bytes::Bytes;
use smallvec::SmallVec;

/// Tag bit: the entry's bytes are not (yet) in a lower tier.
pub(crate) const DIRTY: u8 = 1;
/// Tag bit: the entry slides (time to idle): a hit moves its deadline.
pub(crate) const SLIDE: u8 = 4;
/// Tag bit: the entry has a deadline (in the policy's owner word).
const HAS_DEADLINE: u8 = 2;

/// What the memory tier stores in a resident entry's hot cache line.
/// The deadline lives in the policy's per-entry owner word (`deadline`).
#[derive(Default)]
pub(crate) struct Payload {
    pub(crate) key: KeyBuf,
    pub(crate) value: Bytes,
}

/// What the shard holds of a key, for a checkpoint: resident (hot or cold)
/// or a ghost, and its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) hash: u64,
    pub(crate) hot: bool,
    pub(crate) ghost: bool,
    pub(crate) weight: u32,
}

#[inline]
fn expired(deadline: u64, now: impl FnOnce() -> u64) -> bool {
    deadline != 0 && deadline <= now()
}

/// A live entry whose bytes the lower tier does not hold.
pub(crate) struct Unwritten {
    pub(crate) hash: u64,
    pub(crate) key: KeyBuf,
    pub(crate) value: Bytes,
    pub(crate) deadline: u64,
    /// Never written (an insert the lower tier refused), as opposed to
    /// written once and since dropped by the lower tier's reclaim.
    pub(crate) dirty: bool,
    /// Past its deadline (not to be written: only to be reported).
    pub(crate) expired: bool,
}

/// Entries that left the shard under its lock (evicted, displaced by another
/// key of the same hash, or removed), each with its deadline: to be dropped,
/// or offered to a lower tier, after the lock is released.
pub(crate) type Evictions = SmallVec<[Evicted<Payload>; 2]>;

impl Evicted<Payload> {
    pub(crate) fn is_expired(&self, now: impl FnOnce() -> u64) -> bool {
        expired(self.deadline, now)
    }
}

/// How an inserted entry enters the shard.
#[derive(Clone, Copy)]
pub(crate) struct Admit {
    pub(crate) weight: u32,
    /// Nanoseconds since the clock's epoch; 0 = never expires.
    pub(crate) deadline: u64,
    /// Tag bits: [`DIRTY`] unless the bytes are already in the lower tier.
    pub(crate) flags: u8,
    /// Enter hot if the key is new here (it proved reuse in a lower tier).
    pub(crate) hot: bool,
}

/// What a lookup found.
pub(crate) enum Lookup {
    Hit(Bytes),
    Miss,
    /// The key is resident but past its deadline: the caller removes it under the write lock.
    Expired,
}

/// Counts of a shard's writes: plain integers, changed under the exclusive lock
/// the writes hold anyway, read under the shared one.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Writes {
    pub(crate) inserts: u64,
    pub(crate) updates: u64,
    pub(crate) removes: u64,
    /// Entries pushed out to make room (displaced by a hash collision included).
    pub(crate) evictions: u64,
    /// Entries a lookup found expired and removed.
    pub(crate) expirations: u64,
}

/// One shard: CLOCK-Pro over [`Payload`]s. Its lookups are counted by the
/// tier (`counters.rs`), not here.
pub(crate) struct Shard {
    /// Closed (the cache was closed): lookups find nothing, writes are
    /// refused. Set under the exclusive lock, never cleared.
    closed: bool,
    policy: ClockPro<Payload>,
    writes: Writes,
    /// An entry with a deadline was ever admitted: only then do inserts
    /// sweep for expired entries.
    deadlines_seen: bool,
    /// Where the next expiry sweep starts in the slot array.
    sweep_at: usize,
}

/// Slots an insert into a full shard checks for expired entries.
const SWEEP_SLOTS: usize = 8;

impl Shard {
    pub(crate) fn new(capacity: u64) -> Self {
        Shard {
            closed: false,
            policy: ClockPro::new(capacity),
            writes: Writes::default(),
            deadlines_seen: false,
            sweep_at: 0,
        }
    }

    /// Before an insert of `weight` into a full shard: takes out the
    /// expired entries among the next [`SWEEP_SLOTS`] slots of the sweep, so
    /// that their space goes before any live entry's (they leave through
    /// `departed`, expired, and are dropped), except the entry of
    /// `inserting` (the key about to be written: its overwrite replaces
    /// it). Nothing to do, and no clock read, in a shard that never held an
    /// entry with a deadline or has room.
    pub(crate) fn sweep_expired(
        &mut self,
        weight: u32,
        inserting: u64,
        now: impl FnOnce() -> u64,
        departed: &mut Evictions,
    ) {
        if !self.deadlines_seen
            || self.policy.counts().resident_weight + u64::from(weight) <= self.policy.capacity()
        {
            return;
        }
        let now = now();
        // On the stack: this runs under the shard's write lock.
        let mut found: SmallVec<[(Idx, u64); SWEEP_SLOTS]> = SmallVec::new();
        self.sweep_at = self
            .policy
            .expired_in(self.sweep_at, SWEEP_SLOTS, now, &mut found);
        for (idx, hash) in found {
            if hash == inserting {
                continue;
            }
            if let Some(e) = self.take(idx, hash) {
                self.writes.expirations += 1;
                departed.push(e);
            }
        }
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.policy.capacity()
    }

    /// Closes the shard: from now on it answers nothing and takes nothing.
    pub(crate) fn close(&mut self) {
        self.closed = true;
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    pub(crate) fn counts(&self) -> Counts {
        self.policy.counts()
    }

    pub(crate) fn writes(&self) -> Writes {
        self.writes
    }

    #[inline]
    fn find(&self, hash: u64, key: &Probe) -> Option<Idx> {
        self.policy.find_resident(hash, |p| key.matches(&p.key))
    }

    #[inline]
    fn is_expired(&self, idx: Idx, now: impl FnOnce() -> u64) -> bool {
        self.policy.resident(idx).flags & HAS_DEADLINE != 0
            && expired(self.policy.deadline(idx), now)
    }

    /// Looks `key` up; a hit sets its reference bit.
    /// Takes `&self`: runs under the shared lock.
    #[inline]
    /// A hit on a sliding entry moves its deadline to `idle` (ns) after now
    /// (when that moves it by 1/64 of `idle` or more; `idle` 0: never).
    pub(crate) fn get(
        &self,
        hash: u64,
        key: &Probe,
        now: impl FnOnce() -> u64,
        idle: u64,
    ) -> Lookup {
        if self.closed {
            return Lookup::Miss;
        }
        match self.find(hash, key) {
            Some(idx) if self.policy.resident(idx).flags & HAS_DEADLINE != 0 => {
                let deadline = self.policy.deadline(idx);
                let now = now();
                if expired(deadline, || now) {
                    return Lookup::Expired;
                }
                if self.policy.resident(idx).flags & SLIDE != 0 && idle != 0 {
                    let moved = sliding_deadline(now, idle, true);
                    if moved.saturating_sub(deadline) >= idle >> 6 {
                        self.policy.slide_deadline(idx, moved);
                    }
                }
                self.policy.touch(idx);
                Lookup::Hit(self.policy.resident(idx).payload.value.clone())
            }
            Some(idx) => {
                self.policy.touch(idx);
                Lookup::Hit(self.policy.resident(idx).payload.value.clone())
            }
            None => Lookup::Miss,
        }
    }

    /// The live value of `key`, without counting as an access.
    pub(crate) fn peek(&self, hash: u64, key: &Probe, now: impl FnOnce() -> u64) -> Option<Bytes> {
        if self.closed {
            return None;
        }
        let idx = self
            .find(hash, key)
            .filter(|&idx| !self.is_expired(idx, now))?;
        Some(self.policy.resident(idx).payload.value.clone())
    }

    /// The deadline of `key`'s live entry (0: none), without counting as an
    /// access.
    pub(crate) fn deadline_of(
        &self,
        hash: u64,
        key: &Probe,
        now: impl FnOnce() -> u64,
    ) -> Option<u64> {
        if self.closed {
            return None;
        }
        let idx = self
            .find(hash, key)
            .filter(|&idx| !self.is_expired(idx, now))?;
        let timed = self.policy.resident(idx).flags & HAS_DEADLINE != 0;
        Some(if timed { self.policy.deadline(idx) } else { 0 })
    }

    /// Whether `key` is resident and live, without counting as an access.
    pub(crate) fn contains(&self, hash: u64, key: &Probe, now: impl FnOnce() -> u64) -> bool {
        !self.closed
            && self
                .find(hash, key)
                .is_some_and(|idx| !self.is_expired(idx, now))
    }

    /// Inserts or overwrites `key`. Entries pushed out are added to `departed`
    /// and an overwritten value is returned with its deadline, for the
    /// caller to drop after releasing the lock.
    #[inline]
    pub(crate) fn insert(
        &mut self,
        hash: u64,
        key: KeyBuf,
        value: Bytes,
        admit: Admit,
        departed: &mut Evictions,
    ) -> Option<(Bytes, u64)> {
        let before = departed.len();
        let old = self.upsert(hash, key, value, admit, departed);
        if old.is_some() {
            self.writes.updates += 1;
        } else {
            self.writes.inserts += 1;
        }
        self.writes.evictions += (departed.len() - before) as u64;
        old
    }

    #[inline]
    fn upsert(
        &mut self,
        hash: u64,
        key: KeyBuf,
        value: Bytes,
        Admit {
            weight,
            deadline,
            flags,
            hot,
        }: Admit,
        departed: &mut Evictions,
    ) -> Option<(Bytes, u64)> {
        let ttl_bit = if deadline != 0 { HAS_DEADLINE } else { 0 };
        self.deadlines_seen |= deadline != 0;
        if let Some(idx) = self.policy.find_resident(hash, |p| p.key == key) {
            let old_deadline = self.policy.deadline(idx);
            let r = self.policy.resident_mut(idx);
            let old = std::mem::replace(&mut r.payload.value, value);
            let old_deadline = if r.flags & HAS_DEADLINE != 0 {
                old_deadline
            } else {
                0
            };
            r.flags = flags | ttl_bit;
            r.touch();
            self.policy.set_deadline(idx, deadline);
            self.policy.reweigh(idx, weight, &mut |e| departed.push(e));
            return Some((old, old_deadline));
        }
        if let Some(idx) = self.policy.find_resident_by_hash(hash) {
            // Another key with the same 64-bit hash: the newer one takes the slot.
            let deadline = self.policy.deadline(idx);
            if let Some(payload) = self.policy.remove(hash) {
                departed.push(Evicted {
                    hash,
                    payload,
                    flags: 0,
                    deadline,
                    proved_reuse: false,
                });
            }
        }
        let payload = Payload { key, value };
        self.policy
            .insert(hash, weight, flags | ttl_bit, payload, hot, &mut |e| {
                departed.push(e)
            });
        if deadline != 0 {
            let idx = self.policy.last_admitted();
            self.policy.set_deadline(idx, deadline);
        }
        None
    }

    /// Removes `key`; returns what was resident (as not having proved reuse:
    /// it is not offered to a lower tier).
    pub(crate) fn remove(&mut self, hash: u64, key: &Probe) -> Option<Evicted<Payload>> {
        let idx = self.find(hash, key)?;
        self.writes.removes += 1;
        self.take(idx, hash)
    }

    /// Removes `key` if it is resident and expired.
    pub(crate) fn remove_expired(
        &mut self,
        hash: u64,
        key: &Probe,
        now: impl FnOnce() -> u64,
    ) -> Option<Evicted<Payload>> {
        let idx = self.find(hash, key)?;
        if !self.is_expired(idx, now) {
            return None;
        }
        self.writes.expirations += 1;
        self.take(idx, hash)
    }

    /// Takes resident entry `idx` (of `hash`) out of the shard.
    fn take(&mut self, idx: Idx, hash: u64) -> Option<Evicted<Payload>> {
        let deadline = self.policy.deadline(idx);
        let flags = self.policy.resident(idx).flags;
        let payload = self.policy.remove(hash)?;
        Some(Evicted {
            hash,
            payload,
            flags,
            deadline,
            proved_reuse: false,
        })
    }

    /// Marks `key` clean: its current bytes are in the lower tier.
    pub(crate) fn set_clean(&mut self, hash: u64, key: &Probe) {
        if let Some(idx) = self.find(hash, key) {
            self.policy.resident_mut(idx).flags &= !DIRTY;
        }
    }

    /// The live entries, then the ghosts, for a checkpoint.
    pub(crate) fn held(&self, now: u64, out: &mut Vec<Held>) {
        for (idx, hash, hot) in self.policy.residents() {
            if !self.is_expired(idx, || now) {
                out.push(Held {
                    hash,
                    hot,
                    ghost: false,
                    weight: self.policy.resident(idx).weight(),
                });
            }
        }
        for (hash, weight) in self.policy.ghost_entries() {
            out.push(Held {
                hash,
                hot: false,
                ghost: true,
                weight,
            });
        }
    }

    /// The live entries' hashes, keys and values (for iteration).
    pub(crate) fn entries(&self, now: u64, out: &mut Vec<(u64, KeyBuf, Bytes)>) {
        for (idx, hash, _) in self.policy.residents() {
            if !self.is_expired(idx, || now) {
                let r = self.policy.resident(idx);
                out.push((hash, r.payload.key.clone(), r.payload.value.clone()));
            }
        }
    }

    /// Restores a ghost from a checkpoint.
    pub(crate) fn add_ghost(&mut self, hash: u64, weight: u32) {
        self.policy.add_ghost(hash, weight);
    }

    /// The entries whose bytes are not in the lower tier (dirty, or
    /// `on_disk` says the tier lost them), live ones, and (with
    /// `expired_too`) expired ones, marked.
    pub(crate) fn unwritten(
        &self,
        now: u64,
        on_disk: impl Fn(u64) -> bool,
        expired_too: bool,
    ) -> Vec<Unwritten> {
        self.policy
            .residents()
            .filter_map(|(idx, hash, _)| {
                let r = self.policy.resident(idx);
                let dirty = r.flags & DIRTY != 0;
                let expired = self.is_expired(idx, || now);
                // A read moved a sliding deadline past the disk record's.
                let sliding = r.flags & SLIDE != 0;
                let extended = sliding && self.policy.deadline(idx) & EXTENDED != 0;
                let wanted = if expired {
                    expired_too && (dirty || !on_disk(hash))
                } else {
                    dirty || extended || !on_disk(hash)
                };
                wanted.then(|| Unwritten {
                    hash,
                    key: r.payload.key.clone(),
                    value: r.payload.value.clone(),
                    deadline: disk_deadline(self.policy.deadline(idx), sliding),
                    dirty,
                    expired,
                })
            })
            .collect()
    }

    /// Whether `key`'s resident value is still `value` (the same bytes, not
    /// written since) and dirty.
    pub(crate) fn still_dirty(&self, hash: u64, key: &Probe, value: &Bytes) -> bool {
        self.find(hash, key).is_some_and(|idx| {
            let r = self.policy.resident(idx);
            r.flags & DIRTY != 0
                && r.payload.value.as_ptr() == value.as_ptr()
                && r.payload.value.len() == value.len()
        })
    }

    /// Whether `key` is resident, expired or not.
    pub(crate) fn holds(&self, hash: u64, key: &Probe) -> bool {
        self.find(hash, key).is_some()
    }

    #[cfg(any(test, fuzzing, feature = "validate"))]
    pub(crate) fn validate(&self) {
        self.policy.validate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Resident;

    #[test]
    fn per_entry_struct_sizes() {
        // The fixed memory cost of a resident entry: one 64-byte line that hits read,
        // 24 bytes of policy metadata and an 8-byte deadline word. If these grow,
        // update ENTRY_OVERHEAD, the crate docs and docs/design.md, on purpose.
        assert_eq!(std::mem::size_of::<Payload>(), 56);
        assert_eq!(std::mem::size_of::<Resident<Payload>>(), 64);
        assert_eq!(std::mem::align_of::<Resident<Payload>>(), 64);
    }

    fn dirty(weight: u32, deadline: u64) -> Admit {
        Admit {
            weight,
            deadline,
            flags: DIRTY,
            hot: false,
        }
    }

    fn k(key: &[u8]) -> KeyBuf {
        KeyBuf::new(key)
    }

    fn p(key: &[u8]) -> Probe<'_> {
        Probe::new(key)
    }

    #[test]
    fn overwrite_returns_old_value_and_collision_replaces() {
        let mut s = Shard::new(1000);
        let mut d = Evictions::new();
        assert!(
            s.insert(7, k(b"a"), Bytes::from_static(b"1"), dirty(1, 0), &mut d)
                .is_none()
        );
        let old = s.insert(7, k(b"a"), Bytes::from_static(b"2"), dirty(1, 0), &mut d);
        assert_eq!(old.map(|(v, _)| v).as_deref(), Some(&b"1"[..]));
        // Same hash, other key: the old key goes.
        s.insert(7, k(b"b"), Bytes::from_static(b"3"), dirty(1, 0), &mut d);
        assert_eq!(d.len(), 1);
        assert!(matches!(s.get(7, &p(b"a"), || 0, 0), Lookup::Miss));
        assert!(matches!(s.get(7, &p(b"b"), || 0, 0), Lookup::Hit(v) if v == "3"));
        s.validate();
    }

    #[test]
    fn deadlines_follow_the_entry() {
        let mut s = Shard::new(1000);
        let mut d = Evictions::new();
        s.insert(1, k(b"t"), Bytes::from_static(b"v"), dirty(1, 50), &mut d);
        assert!(matches!(s.get(1, &p(b"t"), || 49, 0), Lookup::Hit(_)));
        assert!(matches!(s.get(1, &p(b"t"), || 50, 0), Lookup::Expired));
        // An overwrite without a TTL clears the deadline.
        s.insert(1, k(b"t"), Bytes::from_static(b"w"), dirty(1, 0), &mut d);
        assert!(matches!(s.get(1, &p(b"t"), || u64::MAX, 0), Lookup::Hit(_)));
        let gone = s.remove(1, &p(b"t")).unwrap();
        assert_eq!((gone.deadline, &gone.payload.value[..]), (0, &b"w"[..]));
    }

    #[test]
    fn clean_and_dirty_tags() {
        let mut s = Shard::new(1000);
        let mut d = Evictions::new();
        let v = Bytes::from_static(b"v");
        s.insert(1, k(b"k"), v.clone(), dirty(1, 0), &mut d);
        let idx = s.find(1, &p(b"k")).unwrap();
        assert!(s.holds(1, &p(b"k")));
        s.set_clean(1, &p(b"k"));
        assert_eq!(s.policy.resident(idx).flags & DIRTY, 0);
        s.insert(1, k(b"k"), Bytes::from_static(b"w"), dirty(1, 0), &mut d);
        assert_eq!(s.policy.resident(idx).flags & DIRTY, DIRTY);
    }
}
