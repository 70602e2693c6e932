//! The one place larder reaches its synchronisation primitives from.
//!
//! Every lock, condition variable and atomic used by the engine is imported
//! through this module, so that a model checker (loom or shuttle) can be
//! swapped in for the concurrency tests without touching the tiers.

pub(crate) use parking_lot::{Condvar, Mutex, RwLock};
pub(crate) use std::sync::Arc;
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
