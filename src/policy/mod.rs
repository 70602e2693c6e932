//! The eviction policy: size-aware CLOCK-Pro in memory, and reclaim, the
//! disk tier's clock hand.
//!
//! The policy is plain data and algorithm (no threads, no I/O); the memory tier
//! owns one instance per shard behind a lock. See [`clock_pro`] for the algorithm.

pub(crate) mod clock_pro;
pub(crate) mod reclaim;

#[cfg(test)]
pub(crate) use clock_pro::Resident;
pub(crate) use clock_pro::{ClockPro, Counts, Evicted, Idx};
