//! What the memory-tier benchmarks share: the peers behind one trait, the
//! goals' workload, and the loop that runs it.

use bytes::Bytes;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, Zipf};
use std::sync::Arc;
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

/// A value in the forms the peers hold: each peer stores a clone of its own
/// form (a reference count, no copy), so every peer holds the same bytes.
pub struct Value {
    pub bytes: Bytes,
    pub arc: Arc<[u8]>,
}

impl Value {
    pub fn new(v: Vec<u8>) -> Value {
        Value {
            bytes: Bytes::from(v.clone()),
            arc: Arc::from(v),
        }
    }
}

/// The operations a benchmarked cache supports: a get says whether it hit
/// (the value itself goes through `black_box`).
pub trait Peer: Sync {
    fn get(&self, key: u64) -> bool;
    fn insert(&self, key: u64, value: &Value);
}

fn found<T>(v: Option<T>) -> bool {
    std::hint::black_box(v).is_some()
}

impl Peer for larder::Cache {
    fn get(&self, key: u64) -> bool {
        found(larder::Cache::get(self, &key.to_le_bytes()))
    }
    fn insert(&self, key: u64, value: &Value) {
        larder::Cache::insert(self, &key.to_le_bytes(), value.bytes.clone())
            .expect("benchmark entries fit");
    }
}

/// larder given the caller's `Arc<[u8]>`, the cheapest way it takes one:
/// `Bytes::from_owner` (one allocation per insert, no copy).
pub struct LarderArc(pub larder::Cache);

impl Peer for LarderArc {
    fn get(&self, key: u64) -> bool {
        found(self.0.get(&key.to_le_bytes()))
    }
    fn insert(&self, key: u64, value: &Value) {
        self.0
            .insert(&key.to_le_bytes(), Bytes::from_owner(value.arc.clone()))
            .expect("benchmark entries fit");
    }
}

/// The bytes core given a value of its own per insert (as a service that
/// builds each value does), the baseline of the typed layer, which must copy.
pub struct CoreCopying(pub larder::Cache);

impl Peer for CoreCopying {
    fn get(&self, key: u64) -> bool {
        found(self.0.get(&key.to_be_bytes()))
    }
    fn insert(&self, key: u64, value: &Value) {
        let own = Bytes::copy_from_slice(&value.bytes);
        self.0
            .insert(&key.to_be_bytes(), own)
            .expect("benchmark entries fit");
    }
}

/// The typed layer with the raw codec: the key as its 8 big-endian bytes,
/// the value behind a 4-byte tag (one copy per insert).
impl Peer for larder::TypedCache<u64, Bytes> {
    fn get(&self, key: u64) -> bool {
        found(larder::TypedCache::get(self, &key))
    }
    fn insert(&self, key: u64, value: &Value) {
        larder::TypedCache::insert(self, &key, &value.bytes).expect("benchmark entries fit");
    }
}

impl Peer for quick_cache::sync::Cache<u64, Bytes> {
    fn get(&self, key: u64) -> bool {
        found(quick_cache::sync::Cache::get(self, &key))
    }
    fn insert(&self, key: u64, value: &Value) {
        quick_cache::sync::Cache::insert(self, key, value.bytes.clone());
    }
}

impl Peer for quick_cache::sync::Cache<u64, Arc<[u8]>> {
    fn get(&self, key: u64) -> bool {
        found(quick_cache::sync::Cache::get(self, &key))
    }
    fn insert(&self, key: u64, value: &Value) {
        quick_cache::sync::Cache::insert(self, key, value.arc.clone());
    }
}

/// quick_cache keyed by bytes, as larder is: the key's 8 bytes in a `Vec`
/// (one allocation per insert, as a service keyed by byte strings makes),
/// looked up by `&[u8]`.
impl Peer for quick_cache::sync::Cache<Vec<u8>, Bytes> {
    fn get(&self, key: u64) -> bool {
        found(quick_cache::sync::Cache::get(self, &key.to_le_bytes()[..]))
    }
    fn insert(&self, key: u64, value: &Value) {
        quick_cache::sync::Cache::insert(self, key.to_le_bytes().to_vec(), value.bytes.clone());
    }
}

impl Peer for moka::sync::Cache<u64, Bytes> {
    fn get(&self, key: u64) -> bool {
        found(moka::sync::Cache::get(self, &key))
    }
    fn insert(&self, key: u64, value: &Value) {
        moka::sync::Cache::insert(self, key, value.bytes.clone());
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
        "larder-arc" => Box::new(LarderArc(
            larder::Cache::builder()
                .memory_capacity(capacity)
                .unit_weight()
                .build()
                .expect("valid configuration"),
        )),
        "quick_cache" => Box::new(quick_cache::sync::Cache::<u64, Bytes>::new(
            capacity as usize,
        )),
        "quick_cache-arc" => Box::new(quick_cache::sync::Cache::<u64, Arc<[u8]>>::new(
            capacity as usize,
        )),
        "quick_cache-bytes" => Box::new(quick_cache::sync::Cache::<Vec<u8>, Bytes>::new(
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
pub fn run(cache: &dyn Peer, streams: &[Vec<(u64, bool)>], value: &Value) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for ops in streams {
            s.spawn(move || {
                for &(key, is_get) in ops {
                    if is_get {
                        std::hint::black_box(cache.get(key));
                    } else {
                        cache.insert(key, value);
                    }
                }
            });
        }
    });
    start.elapsed()
}
