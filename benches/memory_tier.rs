//! Memory-tier throughput against quick_cache and moka, same keys, same values,
//! same run: Zipf(0.99) over 1,000,000 u64 keys, capacity 100,000 entries, 64-byte
//! values; W1 = 90% get / 10% insert, W2 = 50/50; 1 and 2 threads.
//!
//! `cargo bench --bench memory_tier`. Results: docs/benchmarks.md.

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, Zipf};
use std::time::{Duration, Instant};

const KEYS: u64 = 1_000_000;
const CAPACITY: u64 = 100_000;
const VALUE_LEN: usize = 64;
/// Operations per thread per iteration.
const OPS: usize = 250_000;

/// The operations one thread runs: a key and whether it is a get (else an insert).
fn ops(seed: u64, get_percent: u32) -> Vec<(u64, bool)> {
    let zipf = Zipf::new(KEYS as f64, 0.99).expect("valid Zipf");
    let mut rng = StdRng::seed_from_u64(seed);
    (0..OPS)
        .map(|_| {
            let key = zipf.sample(&mut rng) as u64;
            (key, rng.random_range(0..100) < get_percent)
        })
        .collect()
}

/// The operations a benchmarked cache supports.
trait Bench: Sync {
    fn get(&self, key: u64) -> bool;
    fn insert(&self, key: u64, value: Bytes);
}

struct Larder(larder::Cache);
impl Bench for Larder {
    fn get(&self, key: u64) -> bool {
        self.0.get(&key.to_le_bytes()).is_some()
    }
    fn insert(&self, key: u64, value: Bytes) {
        self.0.insert(&key.to_le_bytes(), value).unwrap();
    }
}

struct Quick(quick_cache::sync::Cache<u64, Bytes>);
impl Bench for Quick {
    fn get(&self, key: u64) -> bool {
        self.0.get(&key).is_some()
    }
    fn insert(&self, key: u64, value: Bytes) {
        self.0.insert(key, value);
    }
}

struct Moka(moka::sync::Cache<u64, Bytes>);
impl Bench for Moka {
    fn get(&self, key: u64) -> bool {
        self.0.get(&key).is_some()
    }
    fn insert(&self, key: u64, value: Bytes) {
        self.0.insert(key, value);
    }
}

fn caches() -> Vec<(&'static str, Box<dyn Bench>)> {
    let larder = larder::Cache::builder()
        .memory_capacity(CAPACITY)
        .unit_weight()
        .build()
        .expect("valid config");
    vec![
        ("larder", Box::new(Larder(larder)) as Box<dyn Bench>),
        (
            "quick_cache",
            Box::new(Quick(quick_cache::sync::Cache::new(CAPACITY as usize))),
        ),
        ("moka", Box::new(Moka(moka::sync::Cache::new(CAPACITY)))),
    ]
}

/// Runs every thread's operations once; returns the wall time.
fn run(cache: &dyn Bench, streams: &[Vec<(u64, bool)>], value: &Bytes) -> Duration {
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

fn throughput(c: &mut Criterion) {
    let value = Bytes::from(vec![7u8; VALUE_LEN]);
    for (workload, get_percent) in [("W1 90get", 90), ("W2 50get", 50)] {
        for threads in [1u64, 2] {
            let streams: Vec<_> = (0..threads).map(|t| ops(t + 1, get_percent)).collect();
            let mut group = c.benchmark_group(format!("{workload} {threads}T"));
            group.throughput(Throughput::Elements(threads * OPS as u64));
            group.sample_size(20);
            group.warm_up_time(Duration::from_secs(1));
            group.measurement_time(Duration::from_secs(4));
            for (name, cache) in caches() {
                // Fill the cache before measuring.
                run(cache.as_ref(), &streams, &value);
                group.bench_function(BenchmarkId::from_parameter(name), |b| {
                    b.iter_custom(|iters| {
                        (0..iters)
                            .map(|_| run(cache.as_ref(), &streams, &value))
                            .sum()
                    })
                });
            }
            group.finish();
        }
    }
}

criterion_group!(benches, throughput);
criterion_main!(benches);
