//! larder over the Redis protocol: `larder serve`'s engine, a crate of its
//! own so the library stays free of a server runtime.
//!
//! * [`resp`]: the request parser (RESP arrays and inline commands, with
//!   limits checked before anything is buffered) and the replies (RESP2 and
//!   RESP3);
//! * [`commands`]: the command table and Redis's string commands over a
//!   [`larder::Cache`]; `connection` (`AUTH`, `HELLO`, `CLIENT`, `COMMAND`,
//!   `CONFIG`) and `keyspace` (expiry, `SCAN`, `OBJECT`, `MEMORY`,
//!   `LARDER.INVALIDATE`, and the escaping of the empty key) beside it;
//! * [`scans`]: the walks `SCAN`'s cursors name;
//! * [`info`]: the `INFO` text;
//! * [`net`]: the tokio listener, one task per connection, pipelining in
//!   order, and the shutdown that closes the cache.

#![deny(unsafe_code)]

pub mod commands;
mod connection;
mod glob;
pub mod info;
mod keyspace;
pub mod net;
pub mod resp;
pub mod scans;

pub use commands::Shared;
pub use net::{ServeConfig, run, serve};
pub use resp::Limits;
