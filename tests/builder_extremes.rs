//! Every size and duration the builder accepts is safe to use (contract
//! promise 9): the builder is driven with extreme values (zero, one, the
//! largest of each type, odd sizes) and a short workload runs on whatever it
//! builds. `build()` may refuse with a typed error; nothing may panic,
//! overflow, or hang.

use larder::{Backpressure, Cache, WritePolicy};
use proptest::prelude::*;
use std::time::Duration;

fn capacity() -> impl Strategy<Value = u64> {
    prop_oneof![
        1 => Just(0),
        1 => Just(1),
        1 => Just(2),
        1 => Just(u64::MAX),
        1 => Just(u64::MAX / 2),
        4 => Just(1 << 20),
        2 => 1u64..1 << 24,
    ]
}

fn shards() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(0)),
        1 => Just(Some(1)),
        1 => Just(Some(3)),
        1 => Just(Some(1 << 16)),
        1 => Just(Some(1 << 17)),
        1 => Just(Some(usize::MAX)),
    ]
}

fn segment() -> impl Strategy<Value = u64> {
    prop_oneof![
        1 => Just(0),
        1 => Just(1),
        4 => Just(64 << 10),
        1 => Just((64 << 10) + 1),
        2 => Just(1 << 20),
        1 => Just(1 << 30),
        1 => Just((1 << 30) + 1),
        1 => Just(u64::MAX),
    ]
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        1 => Just(Duration::ZERO),
        1 => Just(Duration::from_nanos(1)),
        2 => Just(Duration::from_millis(1)),
        1 => Just(Duration::from_secs(u64::MAX)),
        1 => Just(Duration::MAX),
    ]
}

#[derive(Debug, Clone)]
struct Settings {
    memory: u64,
    shards: Option<usize>,
    unit: bool,
    disk: Option<(u64, u64)>,
    policy: WritePolicy,
    flush: Duration,
    wait: Option<Duration>,
    compress_above: usize,
    ttl: Duration,
}

fn settings() -> impl Strategy<Value = Settings> {
    (
        capacity(),
        shards(),
        any::<bool>(),
        proptest::option::weighted(0.8, (
            prop_oneof![1 => Just(0u64), 1 => Just(1), 2 => Just(u64::MAX), 1 => Just(3 << 20), 4 => Just(64 << 20)],
            segment(),
        )),
        prop_oneof![
            Just(WritePolicy::WriteBehind),
            Just(WritePolicy::Demote),
            Just(WritePolicy::DemoteAll)
        ],
        duration(),
        proptest::option::of(duration()),
        prop_oneof![Just(0usize), Just(1), Just(usize::MAX)],
        duration(),
    )
        .prop_map(
            |(memory, shards, unit, disk, policy, flush, wait, compress_above, ttl)| Settings {
                memory,
                shards,
                unit,
                disk,
                policy,
                flush,
                wait,
                compress_above,
                ttl,
            },
        )
}

fn build(s: &Settings, dir: &std::path::Path) -> Result<Cache, larder::BuildError> {
    let mut b = Cache::builder().memory_capacity(s.memory);
    if let Some(n) = s.shards {
        b = b.shards(n);
    }
    if s.unit {
        b = b.unit_weight();
    }
    if let Some((capacity, segment)) = s.disk {
        b = b
            .disk(dir, capacity)
            .segment_size(segment)
            .write_policy(s.policy)
            .flush_interval(s.flush)
            .compress_above(s.compress_above)
            .disk_backpressure(match s.wait {
                None => Backpressure::Refuse,
                Some(d) => Backpressure::Wait(d),
            });
    }
    b.build()
}

#[test]
fn extreme_settings_build_or_refuse_and_never_panic() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    });
    let counts = std::cell::Cell::new((0, 0));
    runner
        .run(&settings(), |s| {
            let (b, d) = exercise(&s)?;
            let (built, with_disk) = counts.get();
            counts.set((built + usize::from(b), with_disk + usize::from(d)));
            Ok(())
        })
        .unwrap();
    let (built, with_disk) = counts.get();
    eprintln!("{built} of 256 built, {with_disk} with a disk tier");
    assert!(
        built >= 16 && with_disk >= 8,
        "{built} built, {with_disk} with a disk tier"
    );
}

/// Builds `s` and runs a short workload on it: whether it built, and with a
/// disk tier.
fn exercise(s: &Settings) -> Result<(bool, bool), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let cache = match build(s, dir.path()) {
        Ok(cache) => cache,
        Err(e) => {
            // A typed error, with a message a person can act on.
            prop_assert!(!e.to_string().is_empty());
            return Ok((false, false));
        }
    };
    for i in 0..200u32 {
        let key = i.to_le_bytes();
        let value = vec![i as u8; (i as usize * 37) % 3000];
        let _ = cache.insert(&key, value.clone());
        let _ = cache.insert_with_ttl(&key, value, s.ttl);
        let _ = cache.get(&key);
        if i % 3 == 0 {
            cache.remove(&key);
        }
    }
    let _ = cache.get_with(b"loaded", || "v".into());
    let _ = cache.sync();
    let _ = cache.stats();
    let again = cache.clone();
    let _ = cache.close();
    prop_assert!(matches!(
        again.insert(b"k", "v"),
        Err(larder::Error::Closed)
    ));
    if s.disk.is_some() {
        // What it left opens again with the same settings.
        let reopened = build(s, dir.path());
        prop_assert!(reopened.is_ok(), "{:?}", reopened.err());
    }
    Ok((true, s.disk.is_some()))
}

/// The proptest above must build some caches, with and without a disk
/// tier, or it tests nothing but refusals.
#[test]
fn extremes_that_are_valid_build_and_work() {
    let dir = tempfile::tempdir().unwrap();
    let s = Settings {
        memory: u64::MAX,
        shards: None,
        unit: false,
        disk: Some((u64::MAX, 64 << 10)),
        policy: WritePolicy::WriteBehind,
        flush: Duration::MAX,
        wait: Some(Duration::MAX),
        compress_above: 0,
        ttl: Duration::MAX,
    };
    let cache = build(&s, dir.path()).unwrap();
    cache.insert_with_ttl(b"k", "v", Duration::MAX).unwrap();
    cache.sync().unwrap();
    assert_eq!(cache.get(b"k").as_deref(), Some(&b"v"[..]));
    cache.close().unwrap();
    let cache = build(&s, dir.path()).unwrap();
    assert_eq!(cache.get(b"k").as_deref(), Some(&b"v"[..]));
    drop(cache);
    // A zero flush interval would spin the flusher: refused by name.
    let zero = Settings {
        flush: Duration::ZERO,
        ..s
    };
    let err = build(&zero, dir.path()).expect_err("refused");
    assert!(err.to_string().contains("flush interval"), "{err}");
}

/// A compression budget below zero, or not a number, is refused by `build()`
/// with an error naming it; any other share builds a cache that works.
#[test]
fn compression_budgets_below_zero_or_nan_are_refused() {
    let build = |dir: &std::path::Path, share| {
        Cache::builder()
            .memory_capacity(1 << 20)
            .disk(dir, 48 << 20)
            .segment_size(16 << 20)
            .compression_budget(share)
            .build()
    };
    for share in [-1e-9, -1.0, f64::NEG_INFINITY, f64::NAN] {
        let dir = tempfile::tempdir().unwrap();
        match build(dir.path(), share) {
            Err(larder::BuildError::Disk(e)) => {
                assert!(e.to_string().contains("compression budget"), "{e}")
            }
            Err(e) => panic!("share {share}: wrong error {e}"),
            Ok(_) => panic!("share {share} was accepted"),
        }
    }
    for share in [0.0, 1e-9, 0.25, 4.0, f64::MAX, f64::INFINITY] {
        let dir = tempfile::tempdir().unwrap();
        let cache = build(dir.path(), share).unwrap_or_else(|e| panic!("share {share}: {e}"));
        cache.insert(b"k", vec![7u8; 4096]).unwrap();
        cache.sync().unwrap();
        assert_eq!(cache.get(b"k").as_deref(), Some(&[7u8; 4096][..]));
    }
}
