//! The public API's contract: typed errors that change nothing, TTLs, stats.

use larder::{
    BuildError, Bytes, Cache, ENTRY_OVERHEAD, Error, MAX_KEY_LEN, MAX_SHARDS, MAX_VALUE_LEN,
    ManualClock,
};
use std::time::Duration;

fn cache(capacity: u64) -> Cache {
    Cache::builder().memory_capacity(capacity).build().unwrap()
}

#[test]
fn bad_configurations_are_typed_errors() {
    let err = |b: larder::CacheBuilder| b.build().unwrap_err();
    assert_eq!(err(Cache::builder()), BuildError::MissingCapacity);
    assert_eq!(
        err(Cache::builder().memory_capacity(0)),
        BuildError::ZeroCapacity
    );
    for shards in [0, 3, MAX_SHARDS * 2] {
        assert_eq!(
            err(Cache::builder().memory_capacity(1 << 30).shards(shards)),
            BuildError::InvalidShards {
                shards,
                max: MAX_SHARDS
            }
        );
    }
    assert_eq!(
        err(Cache::builder().memory_capacity(4).shards(8)),
        BuildError::CapacityBelowShards {
            capacity: 4,
            shards: 8
        }
    );
    // Absurdly large capacities are fine: nothing is allocated up front.
    let huge = Cache::builder().memory_capacity(u64::MAX).build().unwrap();
    huge.insert(b"k", "v").unwrap();
    assert_eq!(huge.get(b"k").unwrap(), "v");
    // Messages say what to do.
    assert!(
        BuildError::MissingCapacity
            .to_string()
            .contains("memory_capacity")
    );
}

#[test]
fn bad_arguments_are_typed_errors_and_change_nothing() {
    let c = cache(1 << 20);
    c.insert(b"k", "old").unwrap();
    let long_key = vec![1u8; MAX_KEY_LEN + 1];
    assert_eq!(c.insert(b"", "v"), Err(Error::EmptyKey));
    assert_eq!(
        c.insert(&long_key, "v"),
        Err(Error::KeyTooLong {
            len: MAX_KEY_LEN + 1,
            max: MAX_KEY_LEN
        })
    );
    let huge = Bytes::from(vec![0u8; MAX_VALUE_LEN + 1]);
    assert_eq!(
        c.insert(b"k", huge),
        Err(Error::ValueTooLong {
            len: MAX_VALUE_LEN + 1,
            max: MAX_VALUE_LEN
        })
    );
    let heavy = Bytes::from(vec![0u8; 1 << 20]);
    assert!(matches!(
        c.insert(b"k", heavy),
        Err(Error::EntryTooHeavy { .. })
    ));
    assert_eq!(
        c.insert_with_ttl(b"k", "v", Duration::ZERO),
        Err(Error::ZeroTtl)
    );
    // The refused overwrites left the old value in place.
    assert_eq!(c.get(b"k").unwrap(), "old");
    let s = c.stats();
    assert_eq!((s.inserts, s.updates), (1, 0));
    // Keys that can never be stored are simply absent.
    assert!(c.get(b"").is_none());
    assert!(c.get(&long_key).is_none());
    assert!(c.remove(b"").is_none());
    assert_eq!(c.get_with(b"", Bytes::new), Err(Error::EmptyKey));
    #[cfg(feature = "validate")]
    c.validate();
}

#[test]
fn ttl_entries_are_never_returned_after_expiry() {
    let clock = ManualClock::new();
    let c = Cache::builder()
        .memory_capacity(1 << 20)
        .clock(clock.clone())
        .build()
        .unwrap();
    c.insert_with_ttl(b"a", "1", Duration::from_millis(100))
        .unwrap();
    c.insert_with_ttl(b"b", "2", Duration::from_nanos(1))
        .unwrap();
    c.insert(b"c", "3").unwrap();
    assert_eq!(c.get(b"a").unwrap(), "1");
    assert_eq!(c.get(b"b").unwrap(), "2");
    clock.advance(Duration::from_nanos(1));
    assert!(c.get(b"b").is_none(), "expired exactly at its deadline");
    clock.advance(Duration::from_millis(99));
    assert!(c.contains(b"a"));
    clock.advance(Duration::from_millis(1));
    assert!(!c.contains(b"a"));
    assert!(c.get(b"a").is_none());
    assert!(
        c.remove(b"a").is_none(),
        "an expired value is not handed back"
    );
    assert_eq!(c.get(b"c").unwrap(), "3", "entries without a TTL stay");
    // An overwrite replaces the TTL.
    c.insert_with_ttl(b"c", "4", Duration::from_secs(1))
        .unwrap();
    c.insert(b"c", "5").unwrap();
    clock.advance(Duration::from_secs(3600));
    assert_eq!(c.get(b"c").unwrap(), "5");
    let s = c.stats();
    assert_eq!(s.expirations, 2);
    assert_eq!(s.memory.entries, 1);
}

#[test]
fn ttl_with_the_system_clock() {
    let c = cache(1 << 20);
    c.insert_with_ttl(b"k", "v", Duration::from_millis(30))
        .unwrap();
    std::thread::sleep(Duration::from_millis(60));
    assert!(c.get(b"k").is_none());
}

#[test]
fn weights_and_capacity() {
    // Default weigher: bytes of key + value + ENTRY_OVERHEAD.
    let c = Cache::builder()
        .memory_capacity(10_000)
        .shards(1)
        .build()
        .unwrap();
    c.insert(b"key", vec![0u8; 97]).unwrap();
    assert_eq!(c.stats().memory.weight, 3 + 97 + ENTRY_OVERHEAD);
    // Unit weight: the capacity counts entries.
    let c = Cache::builder()
        .memory_capacity(100)
        .unit_weight()
        .build()
        .unwrap();
    for i in 0..1000u32 {
        c.insert(&i.to_le_bytes(), vec![0u8; 1000]).unwrap();
    }
    let s = c.stats();
    assert!(s.memory.entries <= 100 && s.memory.entries >= 90, "{s:?}");
    assert_eq!(s.memory.weight, s.memory.entries);
    // A custom weigher.
    let c = Cache::builder()
        .memory_capacity(1000)
        .shards(1)
        .weigher(|_, v| v.len() as u64 * 10)
        .build()
        .unwrap();
    assert!(matches!(
        c.insert(b"k", vec![0u8; 101]),
        Err(Error::EntryTooHeavy {
            weight: 1010,
            max: 1000
        })
    ));
    c.insert(b"k", vec![0u8; 100]).unwrap();
    assert_eq!(c.stats().memory.weight, 1000);
}

#[test]
fn stats_count_what_happened() {
    let c = cache(1 << 20);
    assert_eq!(c.stats().hit_ratio(), 0.0);
    c.insert(b"a", "1").unwrap();
    c.insert(b"a", "2").unwrap();
    assert!(c.get(b"a").is_some());
    assert!(c.get(b"b").is_none());
    assert!(c.remove(b"a").is_some());
    assert!(c.remove(b"a").is_none());
    let s = c.stats();
    assert_eq!(
        (s.hits, s.misses, s.inserts, s.updates, s.removes),
        (1, 1, 1, 1, 1)
    );
    assert_eq!(s.hit_ratio(), 0.5);
    assert_eq!(s.memory.hits, 1);
    assert_eq!(s.memory.entries, 0);
    assert!(s.shards.is_power_of_two());
}

#[test]
fn long_keys_and_hash_collisions_are_compared_in_full() {
    let c = cache(1 << 20);
    let a = vec![b'a'; MAX_KEY_LEN];
    let mut b = a.clone();
    *b.last_mut().unwrap() = b'b';
    c.insert(&a, "A").unwrap();
    c.insert(&b, "B").unwrap();
    assert_eq!(c.get(&a).unwrap(), "A");
    assert_eq!(c.get(&b).unwrap(), "B");
}

/// Every builder setting means the same whatever the order of the calls:
/// the disk tier's settings before `disk()` were once dropped silently.
#[test]
fn builder_settings_in_any_order_build_the_same_cache() {
    use larder::{Backpressure, CacheBuilder, WritePolicy};
    type Step = fn(CacheBuilder) -> CacheBuilder;
    let steps: [(&str, Step); 6] = [
        ("segment_size", |b| b.segment_size(1 << 20)),
        ("write_policy", |b| b.write_policy(WritePolicy::Demote)),
        ("flush_interval", |b| {
            b.flush_interval(Duration::from_millis(7))
        }),
        ("compress_above", |b| b.compress_above(99)),
        ("disk_backpressure", |b| {
            b.disk_backpressure(Backpressure::Refuse)
        }),
        ("shards", |b| b.shards(2)),
    ];
    let mut seen = None;
    // The disk() call at every position among the other steps, and the
    // others in every rotation.
    for rotation in 0..steps.len() {
        for disk_at in 0..=steps.len() {
            let dir = tempfile::tempdir().unwrap();
            let mut b = Cache::builder().memory_capacity(1 << 20);
            for (i, j) in (0..steps.len()).map(|i| (i, (i + rotation) % steps.len())) {
                if i == disk_at {
                    b = b.disk(dir.path(), 64 << 20);
                }
                b = (steps[j].1)(b);
            }
            if disk_at == steps.len() {
                b = b.disk(dir.path(), 64 << 20);
            }
            let cache = b.build().unwrap();
            let s = cache.stats();
            let d = s.disk.unwrap();
            let got = (
                d.segment_size,
                d.write_policy,
                d.flush_interval,
                d.compress_above,
                d.backpressure,
                s.shards,
            );
            assert_eq!(
                got,
                (
                    1 << 20,
                    WritePolicy::Demote,
                    Duration::from_millis(7),
                    99,
                    Backpressure::Refuse,
                    2
                ),
                "rotation {rotation}, disk() at {disk_at}"
            );
            assert!(seen.is_none_or(|s| s == got));
            seen = Some(got);
        }
    }
    // A disk setting without a disk is an error that names the fix.
    let err = Cache::builder()
        .memory_capacity(1 << 20)
        .segment_size(1 << 20)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("disk(dir, capacity)"), "{err}");
    let err = Cache::builder()
        .memory_capacity(1 << 20)
        .compression_budget(0.5)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            larder::BuildError::DiskSettingWithoutDisk {
                setting: "compression_budget"
            }
        ),
        "{err}"
    );
}

/// A small disk with the default segment size works: the segment size
/// fits the capacity; too small a disk names the fix.
#[test]
fn a_small_disk_gets_segments_that_fit() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::builder()
        .memory_capacity(1 << 20)
        .disk(dir.path(), 8 << 20)
        .build()
        .unwrap();
    assert_eq!(cache.stats().disk.unwrap().segment_size, 1 << 20);
    cache.insert(b"k", "v").unwrap();
    cache.close().unwrap();
    // Reopened with another capacity, it keeps the size it was made with.
    let cache = Cache::builder()
        .memory_capacity(1 << 20)
        .disk(dir.path(), 64 << 20)
        .build()
        .unwrap();
    assert_eq!(cache.stats().disk.unwrap().segment_size, 1 << 20);
    assert_eq!(cache.get(b"k").as_deref(), Some(&b"v"[..]));
    drop(cache);
    let err = Cache::builder()
        .memory_capacity(1 << 20)
        .disk(tempfile::tempdir().unwrap().path(), 100 << 10)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("capacity"), "{err}");
}

/// After `close()` on one handle, its clones refuse writes with a typed
/// error (they were once accepted and never persisted), and find nothing.
#[test]
fn operations_after_close_on_another_handle_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::builder()
        .memory_capacity(1 << 20)
        .disk(dir.path(), 64 << 20)
        .build()
        .unwrap();
    let other = cache.clone();
    cache.insert(b"k", "v").unwrap();
    cache.close().unwrap();
    assert!(matches!(other.insert(b"k2", "v"), Err(Error::Closed)));
    assert!(matches!(
        other.insert_with_ttl(b"k2", "v", Duration::from_secs(1)),
        Err(Error::Closed)
    ));
    assert!(matches!(other.sync(), Err(Error::Closed)));
    assert!(matches!(
        other.get_with(b"k3", || "v".into()),
        Err(Error::Closed)
    ));
    assert!(other.get(b"k").is_none() && !other.contains(b"k"));
    assert!(other.remove(b"k").is_none());
    let disk = other.stats().disk.unwrap();
    assert!(
        disk.closed && disk.failure.is_none(),
        "a close is not a failure: {disk:?}"
    );
    assert!(other.close().is_ok(), "the first close's outcome");
    // Nothing the clone tried reached the directory.
    let cache = Cache::builder()
        .memory_capacity(1 << 20)
        .disk(dir.path(), 64 << 20)
        .build()
        .unwrap();
    assert_eq!(cache.get(b"k").as_deref(), Some(&b"v"[..]));
    assert!(cache.get(b"k2").is_none() && cache.get(b"k3").is_none());
}

/// `time_to_live` gives every entry inserted or loaded without a TTL of its
/// own that deadline; an entry's own TTL, longer or shorter, wins; zero is
/// refused at build and the largest duration means "never" without overflow.
#[test]
fn a_cache_wide_time_to_live_applies_to_inserts_and_loads() {
    assert_eq!(
        Cache::builder()
            .memory_capacity(1 << 20)
            .time_to_live(Duration::ZERO)
            .build()
            .unwrap_err(),
        BuildError::ZeroTimeToLive
    );
    let clock = ManualClock::new();
    let c = Cache::builder()
        .time_to_live(Duration::from_secs(60))
        .memory_capacity(1 << 20)
        .clock(clock.clone())
        .build()
        .unwrap();
    c.insert(b"plain", "1").unwrap();
    c.insert_with_ttl(b"short", "2", Duration::from_secs(10))
        .unwrap();
    c.insert_with_ttl(b"long", "3", Duration::from_secs(600))
        .unwrap();
    assert_eq!(c.get_with(b"loaded", || "4".into()).unwrap(), "4");
    clock.advance(Duration::from_secs(10));
    assert!(c.get(b"short").is_none(), "its own, shorter TTL");
    assert_eq!(c.get(b"plain").unwrap(), "1");
    clock.advance(Duration::from_secs(50));
    assert!(c.get(b"plain").is_none(), "the cache's TTL");
    assert!(c.get(b"loaded").is_none(), "a loaded value gets it too");
    assert_eq!(c.get(b"long").unwrap(), "3", "its own, longer TTL");
    let forever = Cache::builder()
        .memory_capacity(1 << 20)
        .time_to_live(Duration::MAX)
        .clock(clock.clone())
        .build()
        .unwrap();
    forever.insert(b"k", "v").unwrap();
    clock.advance(Duration::from_secs(100 * 365 * 86_400));
    assert_eq!(forever.get(b"k").unwrap(), "v");
}

/// The loaders' old names still work (deprecated in favour of moka's).
#[test]
#[allow(deprecated)]
fn the_old_loader_names_still_work() {
    let c = cache(1 << 20);
    assert_eq!(c.get_or_insert_with(b"a", || "1".into()).unwrap(), "1");
    let r = c.try_get_or_insert_with(b"b", || Ok::<_, &str>("2".into()));
    assert_eq!(r.unwrap(), "2");
    assert_eq!(c.stats().loads, 2);
}

/// Negative caching: with `absent_ttl`, a key the loader found absent is
/// answered `None` without loading until the marker expires; an insert
/// forgets the marker; `get_with`, which needs a value, ignores it.
#[test]
fn absent_keys_are_remembered_for_their_ttl() {
    assert_eq!(
        Cache::builder()
            .memory_capacity(1 << 20)
            .absent_ttl(Duration::ZERO)
            .build()
            .unwrap_err(),
        BuildError::ZeroAbsentTtl
    );
    let clock = ManualClock::new();
    let c = Cache::builder()
        .memory_capacity(1 << 20)
        .absent_ttl(Duration::from_secs(10))
        .clock(clock.clone())
        .build()
        .unwrap();
    let calls = std::cell::Cell::new(0);
    let absent = || {
        calls.set(calls.get() + 1);
        None
    };
    assert_eq!(c.optionally_get_with(b"k", absent).unwrap(), None);
    assert_eq!(c.optionally_get_with(b"k", absent).unwrap(), None);
    assert_eq!(calls.get(), 1, "remembered: not loaded again");
    clock.advance(Duration::from_secs(10));
    assert_eq!(c.optionally_get_with(b"k", absent).unwrap(), None);
    assert_eq!(calls.get(), 2, "the marker expired");
    // `get_with` needs a value: it loads whatever the marker says.
    assert_eq!(c.get_with(b"k", || "now".into()).unwrap(), "now");
    c.remove(b"k");
    assert_eq!(c.optionally_get_with(b"k", absent).unwrap(), None);
    assert_eq!(
        calls.get(),
        3,
        "the removal forgot the marker set before it"
    );
    c.insert(b"k", "written").unwrap();
    let v = c.optionally_get_with(b"k", absent).unwrap();
    assert_eq!(v.unwrap(), "written");
    c.remove(b"k");
    assert_eq!(c.optionally_get_with(b"k", absent).unwrap(), None);
    assert_eq!(calls.get(), 4, "no marker outlives an insert");
    // Without `absent_ttl`, every call loads.
    let plain = cache(1 << 20);
    plain.optionally_get_with(b"k", absent).unwrap();
    plain.optionally_get_with(b"k", absent).unwrap();
    assert_eq!(calls.get(), 6);
}

#[test]
fn stats_carry_sampled_latencies_per_operation() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::builder()
        .memory_capacity(64 << 10)
        .disk(dir.path(), 8 << 20)
        .segment_size(256 << 10)
        .build()
        .unwrap();
    let n = 64 * 100u32;
    for i in 0..n {
        cache.insert(&i.to_be_bytes(), vec![1u8; 100]).unwrap();
    }
    for i in 0..n {
        cache.get(&i.to_be_bytes());
    }
    for i in 0..n / 2 {
        cache.remove(&i.to_be_bytes());
    }
    for i in 0..3u32 {
        cache
            .get_with(format!("slow:{i}").as_bytes(), || {
                std::thread::sleep(Duration::from_millis(20));
                "v".into()
            })
            .unwrap();
    }
    let l = cache.stats().latency;
    // One in 64 of this thread's operations (each `get_with` also looks up).
    let per = u64::from(n) / u64::from(larder::LATENCY_SAMPLE);
    assert!((per - 2..=per + 2).contains(&l.insert.samples), "{l:?}");
    assert!((per - 2..=per + 2).contains(&l.get.samples), "{l:?}");
    assert!(l.remove.samples >= per / 2 - 2, "{l:?}");
    assert!(l.disk_read.samples > 0, "most gets missed memory: {l:?}");
    for p in [l.get, l.insert, l.remove, l.disk_read] {
        assert!(
            p.p50 > Duration::ZERO && p.p50 <= p.p99 && p.p99 <= p.p999,
            "{p:?}"
        );
    }
    assert_eq!(l.load.samples, 3, "every load is timed");
    assert!(l.load.p50 >= Duration::from_millis(20), "{:?}", l.load);
}
