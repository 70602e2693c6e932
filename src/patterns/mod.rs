//! The patterns services build on a cache. For now: single-flight loading
//! (cache-aside with stampede protection).

pub(crate) mod single_flight;
