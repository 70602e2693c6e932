//! One shard of the memory tier: CLOCK-Pro over entries that hold a key, a value
//! and a deadline. Plain data and algorithm; the tier wraps it in a lock.

use crate::key::KeyBuf;
use crate::policy::{ClockPro, Counts, Evicted, Resident};
use bytes::Bytes;
use smallvec::SmallVec;

/// `Meta::tag` bit: the entry's bytes are not (yet) in a lower tier.
pub(crate) const DIRTY: u8 = 1;

/// What the memory tier stores per resident entry besides the policy metadata.
pub(crate) struct Payload {
    pub(crate) key: KeyBuf,
    pub(crate) value: Bytes,
    /// Nanoseconds since the clock's epoch at which the entry expires; 0 = never.
    pub(crate) deadline: u64,
}

impl Payload {
    #[inline]
    pub(crate) fn is_expired(&self, now: impl FnOnce() -> u64) -> bool {
        self.deadline != 0 && self.deadline <= now()
    }
}

/// Entries that left the shard under its lock, to be dropped or demoted after it is released.
pub(crate) type Departed = SmallVec<[Evicted<Payload>; 2]>;

/// What a lookup found.
pub(crate) enum Lookup {
    Hit(Bytes),
    Miss,
    /// The key is resident but past its deadline: the caller removes it under the write lock.
    Expired,
}

/// One shard: CLOCK-Pro over [`Payload`]s.
pub(crate) struct Shard {
    policy: ClockPro<Payload>,
}

impl Shard {
    pub(crate) fn new(capacity: u64) -> Self {
        Shard {
            policy: ClockPro::new(capacity),
        }
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.policy.capacity()
    }

    pub(crate) fn counts(&self) -> Counts {
        self.policy.counts()
    }

    fn resident(&self, hash: u64, key: &[u8]) -> Option<&Resident<Payload>> {
        self.policy
            .get(hash)
            .filter(|r| r.payload.key.as_slice() == key)
    }

    /// Looks `key` up; a hit sets its reference bit (the shard may be shared-locked).
    #[inline]
    pub(crate) fn get(&self, hash: u64, key: &[u8], now: impl FnOnce() -> u64) -> Lookup {
        match self.resident(hash, key) {
            Some(r) if r.payload.is_expired(now) => Lookup::Expired,
            Some(r) => {
                self.policy.touch(r);
                Lookup::Hit(r.payload.value.clone())
            }
            None => Lookup::Miss,
        }
    }

    /// Whether `key` is resident and live, without counting as an access.
    pub(crate) fn contains(&self, hash: u64, key: &[u8], now: impl FnOnce() -> u64) -> bool {
        self.resident(hash, key)
            .is_some_and(|r| !r.payload.is_expired(now))
    }

    /// Inserts or overwrites `key`. Entries pushed out (and an overwritten value)
    /// are added to `departed` for the caller to drop after releasing the lock.
    pub(crate) fn insert(
        &mut self,
        hash: u64,
        key: &[u8],
        value: Bytes,
        weight: u32,
        deadline: u64,
        departed: &mut Departed,
    ) -> Option<Bytes> {
        if let Some(r) = self.policy.get_mut(hash) {
            if r.payload.key.as_slice() == key {
                let old = std::mem::replace(&mut r.payload.value, value);
                r.payload.deadline = deadline;
                r.meta.tag |= DIRTY;
                r.touch();
                self.policy.reweigh(hash, weight, &mut |e| departed.push(e));
                return Some(old);
            }
            // Another key with the same 64-bit hash: the newer one takes the slot.
            if let Some(payload) = self.policy.remove(hash) {
                departed.push(Evicted {
                    payload,
                    tag: 0,
                    proved_reuse: false,
                });
            }
        }
        let payload = Payload {
            key: KeyBuf::new(key),
            value,
            deadline,
        };
        self.policy
            .insert(hash, weight, DIRTY, payload, &mut |e| departed.push(e));
        None
    }

    /// Removes `key`; returns its payload if it was resident.
    pub(crate) fn remove(&mut self, hash: u64, key: &[u8]) -> Option<Payload> {
        self.resident(hash, key)?;
        self.policy.remove(hash)
    }

    /// Removes `key` if it is resident and expired.
    pub(crate) fn remove_expired(
        &mut self,
        hash: u64,
        key: &[u8],
        now: impl FnOnce() -> u64,
    ) -> Option<Payload> {
        if self.resident(hash, key)?.payload.is_expired(now) {
            self.policy.remove(hash)
        } else {
            None
        }
    }

    /// Marks `key` clean (its current bytes are in a lower tier) if `value` is still its value.
    pub(crate) fn mark_clean(&mut self, hash: u64, key: &[u8], value: &Bytes) -> bool {
        match self.policy.get_mut(hash) {
            Some(r) if r.payload.key.as_slice() == key && r.payload.value == *value => {
                r.meta.tag &= !DIRTY;
                true
            }
            _ => false,
        }
    }

    #[cfg(any(test, fuzzing, feature = "validate"))]
    pub(crate) fn validate(&self) {
        self.policy.validate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_entry_struct_sizes() {
        // The fixed memory cost of a resident entry and of a ghost. If these grow,
        // update ENTRY_OVERHEAD and docs/design.md, on purpose.
        assert_eq!(std::mem::size_of::<Payload>(), 64);
        assert_eq!(std::mem::size_of::<Resident<Payload>>(), 88);
    }

    #[test]
    fn overwrite_returns_old_value_and_collision_replaces() {
        let mut s = Shard::new(1000);
        let mut d = Departed::new();
        assert!(
            s.insert(7, b"a", Bytes::from_static(b"1"), 1, 0, &mut d)
                .is_none()
        );
        let old = s.insert(7, b"a", Bytes::from_static(b"2"), 1, 0, &mut d);
        assert_eq!(old.as_deref(), Some(&b"1"[..]));
        // Same hash, other key: the old key goes.
        s.insert(7, b"b", Bytes::from_static(b"3"), 1, 0, &mut d);
        assert_eq!(d.len(), 1);
        assert!(matches!(s.get(7, b"a", || 0), Lookup::Miss));
        assert!(matches!(s.get(7, b"b", || 0), Lookup::Hit(v) if v == "3"));
        s.validate();
    }

    #[test]
    fn clean_and_dirty_tags() {
        let mut s = Shard::new(1000);
        let mut d = Departed::new();
        let v = Bytes::from_static(b"v");
        s.insert(1, b"k", v.clone(), 1, 0, &mut d);
        assert!(!s.mark_clean(1, b"k", &Bytes::from_static(b"other")));
        assert!(s.mark_clean(1, b"k", &v));
        assert_eq!(s.policy.get(1).unwrap().meta.tag & DIRTY, 0);
        s.insert(1, b"k", Bytes::from_static(b"w"), 1, 0, &mut d);
        assert_eq!(s.policy.get(1).unwrap().meta.tag & DIRTY, DIRTY);
    }
}
