//! larder over the Redis protocol: `larder serve`'s engine, a crate of its
//! own so the library stays free of a server runtime.
//!
//! * [`resp`]: the request parser (RESP arrays and inline commands, with
//!   limits checked before anything is buffered) and the replies (RESP2 and
//!   RESP3);
//! * [`commands`]: Redis's string and connection commands over a
//!   [`larder::Cache`];
//! * [`info`]: the `INFO` text;
//! * [`net`]: the tokio listener, one task per connection, pipelining in
//!   order, and the shutdown that closes the cache.

#![deny(unsafe_code)]

pub mod commands;
pub mod info;
pub mod net;
pub mod resp;

pub use commands::Shared;
pub use net::{ServeConfig, run, serve};
pub use resp::Limits;
