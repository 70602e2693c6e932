//! The one place larder reaches its synchronisation primitives from.
//!
//! Every lock, condition variable and atomic used by the engine is imported
//! through this module, so that a model checker (loom or shuttle) can be
//! swapped in for the concurrency tests without touching the tiers.

pub(crate) use parking_lot::{Condvar, Mutex, RwLock};
pub(crate) use std::sync::Arc;
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// The rule that nothing slow runs under a shard lock, made checkable: in
/// builds with debug assertions (the tests), every shard guard counts
/// itself on its thread, and code that may compress or wait asserts the
/// count is zero ([`assert_no_shard_lock`]). Release builds keep nothing.
#[derive(Debug)]
pub(crate) struct ShardLockNote(());

#[cfg(debug_assertions)]
thread_local! {
    static SHARD_LOCKS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

impl ShardLockNote {
    #[inline]
    pub(crate) fn new() -> Self {
        #[cfg(debug_assertions)]
        SHARD_LOCKS.with(|n| n.set(n.get() + 1));
        ShardLockNote(())
    }
}

impl Drop for ShardLockNote {
    #[inline]
    fn drop(&mut self) {
        #[cfg(debug_assertions)]
        SHARD_LOCKS.with(|n| n.set(n.get() - 1));
    }
}

/// Panics (with debug assertions) if this thread holds a shard lock: `what`
/// (compression, a wait for the flusher) must not run under one.
#[inline]
pub(crate) fn assert_no_shard_lock(what: &str) {
    #[cfg(debug_assertions)]
    SHARD_LOCKS.with(|n| {
        assert!(
            n.get() == 0,
            "{what} under a shard lock (docs/design.md §2)"
        );
    });
    #[cfg(not(debug_assertions))]
    let _ = what;
}
