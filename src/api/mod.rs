//! The API a Rust service adopts, as layers over the bytes core ([`Cache`](crate::Cache)),
//! each using the core's public operations (and its crate-private
//! single-flight loader):
//! * `typed`: [`TypedCache`] over key and value codecs (`codec`);
//! * `iteration`: [`Iter`] over both tiers, bulk invalidation, entry counts;
//! * `asynchronous`: async loaders whose waiters do not block a thread, and
//!   the core's blocking calls (open with recovery, `sync`, `close`) run off
//!   the executor.

mod asynchronous;
mod codec;
mod iteration;
#[cfg(feature = "metrics")]
mod metrics;
mod typed;

pub use asynchronous::OffThread;
#[cfg(feature = "serde")]
pub use codec::Postcard;
pub use codec::{AsKey, Codec, CodecError, Key, Raw};
pub use iteration::Iter;
pub use typed::{TAG_LEN, TypedCache};
