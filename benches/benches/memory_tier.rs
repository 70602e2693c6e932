//! Memory-tier throughput against quick_cache and moka, same keys, same values,
//! same run: Zipf(0.99) over 1,000,000 u64 keys, capacity 100,000 entries, 64-byte
//! values; W1 = 90% get / 10% insert, W2 = 50/50; 1 and 2 threads.
//!
//! `cargo bench -p larder-benches --bench memory_tier`. Results: docs/benchmarks.md. Criterion runs
//! each cache in its own time window; `benches/peers.rs` pairs them round by round.

mod common;

use common::{CAPACITY, PEERS, VALUE_LEN, Value, build, run, streams};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::time::Duration;

/// Operations per thread per iteration.
const OPS: usize = 250_000;

fn throughput(c: &mut Criterion) {
    let value = Value::new(vec![7u8; VALUE_LEN]);
    for (workload, get_percent) in [("W1 90get", 90), ("W2 50get", 50)] {
        for threads in [1u64, 2] {
            let streams = streams(threads, OPS, get_percent);
            let mut group = c.benchmark_group(format!("{workload} {threads}T"));
            group.throughput(Throughput::Elements(threads * OPS as u64));
            group.sample_size(20);
            group.warm_up_time(Duration::from_secs(1));
            group.measurement_time(Duration::from_secs(4));
            for name in PEERS {
                let cache = build(name, CAPACITY);
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
