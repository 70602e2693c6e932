//! The patterns services build on a cache. For now: single-flight loading
//! (cache-aside with stampede protection) and negative caching of what a
//! loader found absent.

pub(crate) mod absent;
pub(crate) mod single_flight;
