//! What the memory-tier benchmarks share: the peers behind one trait, the
//! goals' workload, and the loop that runs it.

use bytes::Bytes;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, Zipf};
use std::time::Duration;
use std::time::Instant;

/// Keys are drawn from Zipf(0.99) over this many keys.
pub const KEYS: u64 = 1_000_000;
/// The capacity, in entries, of the throughput workloads.
pub const CAPACITY: u64 = 100_000;
/// Value size in bytes.
pub const VALUE_LEN: usize = 64;

/// The caches compared, in the order of every table.
pub const PEERS: [&str; 3] = ["larder", "quick_cache", "moka"];

/// The operations a benchmarked cache supports.
pub trait Peer: Sync {
    fn get(&self, key: u64) -> Option<Bytes>;
    fn insert(&self, key: u64, value: Bytes);
}

impl Peer for larder::Cache {
    fn get(&self, key: u64) -> Option<Bytes> {
        larder::Cache::get(self, &key.to_le_bytes())
    }
    fn insert(&self, key: u64, value: Bytes) {
        larder::Cache::insert(self, &key.to_le_bytes(), value).expect("benchmark entries fit");
    }
}

/// The bytes core given a value of its own per insert (as a service that
/// builds each value does), the baseline of the typed layer, which must copy.
pub struct CoreCopying(pub larder::Cache);

impl Peer for CoreCopying {
    fn get(&self, key: u64) -> Option<Bytes> {
        self.0.get(&key.to_be_bytes())
    }
    fn insert(&self, key: u64, value: Bytes) {
        let own = Bytes::copy_from_slice(&value);
        self.0
            .insert(&key.to_be_bytes(), own)
            .expect("benchmark entries fit");
    }
}

/// The typed layer with the raw codec: the key as its 8 big-endian bytes,
/// the value behind a 4-byte tag (one copy per insert).
impl Peer for larder::TypedCache<u64, Bytes> {
    fn get(&self, key: u64) -> Option<Bytes> {
        larder::TypedCache::get(self, &key)
    }
    fn insert(&self, key: u64, value: Bytes) {
        larder::TypedCache::insert(self, &key, &value).expect("benchmark entries fit");
    }
}

impl Peer for quick_cache::sync::Cache<u64, Bytes> {
    fn get(&self, key: u64) -> Option<Bytes> {
        quick_cache::sync::Cache::get(self, &key)
    }
    fn insert(&self, key: u64, value: Bytes) {
        quick_cache::sync::Cache::insert(self, key, value);
    }
}

impl Peer for moka::sync::Cache<u64, Bytes> {
    fn get(&self, key: u64) -> Option<Bytes> {
        moka::sync::Cache::get(self, &key)
    }
    fn insert(&self, key: u64, value: Bytes) {
        moka::sync::Cache::insert(self, key, value);
    }
}

/// A peer with `capacity` entries, each cache in its default configuration.
pub fn build(name: &str, capacity: u64) -> Box<dyn Peer> {
    match name {
        "larder" => Box::new(
            larder::Cache::builder()
                .memory_capacity(capacity)
                .unit_weight()
                .build()
                .expect("valid configuration"),
        ),
        "larder-hot" => Box::new(
            larder::Cache::builder()
                .memory_capacity(capacity)
                .unit_weight()
                .track_hot_keys()
                .build()
                .expect("valid configuration"),
        ),
        "larder-copy" => Box::new(CoreCopying(
            larder::Cache::builder()
                .memory_capacity(capacity)
                .unit_weight()
                .build()
                .expect("valid configuration"),
        )),
        "larder-typed" => Box::new(larder::TypedCache::<u64, Bytes>::new(
            larder::Cache::builder()
                .memory_capacity(capacity)
                .unit_weight()
                .build()
                .expect("valid configuration"),
        )),
        "quick_cache" => Box::new(quick_cache::sync::Cache::<u64, Bytes>::new(
            capacity as usize,
        )),
        "moka" => Box::new(moka::sync::Cache::<u64, Bytes>::new(capacity)),
        _ => unreachable!("unknown peer {name}"),
    }
}

/// `n` keys drawn from Zipf(0.99) over [`KEYS`].
pub fn zipf_keys(seed: u64, n: usize) -> Vec<u64> {
    let zipf = Zipf::new(KEYS as f64, 0.99).expect("valid Zipf");
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| zipf.sample(&mut rng) as u64).collect()
}

/// One operation stream per thread: (key, is a get; otherwise an insert).
pub fn streams(threads: u64, ops: usize, get_percent: u32) -> Vec<Vec<(u64, bool)>> {
    (0..threads)
        .map(|t| {
            let mut rng = StdRng::seed_from_u64(100 + t);
            zipf_keys(t + 1, ops)
                .into_iter()
                .map(|k| (k, rng.random_range(0..100) < get_percent))
                .collect()
        })
        .collect()
}

/// Runs each thread's stream once, one thread per stream; returns the wall time.
pub fn run(cache: &dyn Peer, streams: &[Vec<(u64, bool)>], value: &Bytes) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for ops in streams {
            s.spawn(move || {
                for &(key, is_get) in ops {
                    if is_get {
                        std::hint::black_box(cache.get(key));
                    } else {
                        cache.insert(key, value.clone());
                    }
                }
            });
        }
    });
    start.elapsed()
}
