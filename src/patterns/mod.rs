//! The patterns services build on a cache: single-flight loading
//! (cache-aside with stampede protection), negative caching of what a
//! loader found absent, and a cache in front of a backing store
//! (`store.rs`: cache-aside loads, write-through writes; `sqlite.rs`: an
//! SQLite table as the store, feature `sqlite`), and hot-key detection
//! (`hot_keys.rs`), warming through the store (`warm.rs`),
//! refresh-ahead (`refresh.rs`), durable write-behind (`write_behind.rs`,
//! over `journal.rs`), tag and event invalidation (`tags.rs`, `events.rs`)
//! and probabilistic early expiration (`xfetch.rs`).

pub(crate) mod absent;
pub(crate) mod events;
pub(crate) mod hot_keys;
pub(crate) mod journal;
pub(crate) mod refresh;
pub(crate) mod single_flight;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;
pub(crate) mod store;
pub(crate) mod tags;
pub(crate) mod warm;
pub(crate) mod write_behind;
pub(crate) mod xfetch;
