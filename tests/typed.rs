//! The typed layer over both tiers: round trips, borrowed lookups, values
//! written by another type or version (a restart after a type change) read
//! as misses, codec failures as errors, single-flight as in the core.

use larder::{Bytes, Cache, CodecError, Error, LoadError, Postcard, Raw, TypedCache};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

fn open(dir: &std::path::Path) -> Cache {
    Cache::builder()
        .memory_capacity(64 << 10)
        .disk(dir, 8 << 20)
        .segment_size(256 << 10)
        .build()
        .unwrap()
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Product {
    name: String,
    cents: u64,
    tags: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct ProductV2 {
    name: String,
    cents: u64,
}

fn product(i: u64) -> Product {
    Product {
        name: format!("product {i}"),
        cents: i * 100,
        tags: vec!["a".into(); (i % 3) as usize],
    }
}

#[test]
fn serde_values_round_trip_through_both_tiers_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let products: TypedCache<u64, Product, Postcard> = TypedCache::new(open(dir.path()));
    // Far more than memory holds: most are read back from disk.
    for i in 0..2_000 {
        products.insert(&i, &product(i)).unwrap();
    }
    let stats = products.cache().stats();
    assert!(stats.memory.entries < 2_000, "the disk tier holds some");
    for i in 0..2_000 {
        assert_eq!(products.get(&i), Some(product(i)), "key {i}");
    }
    products.cache().clone().close().unwrap();

    let products: TypedCache<u64, Product, Postcard> = TypedCache::new(open(dir.path()));
    for i in (0..2_000).step_by(7) {
        assert_eq!(products.get(&i), Some(product(i)), "key {i} after reopen");
    }
    assert_eq!(products.remove(&7), Some(product(7)));
    assert_eq!(products.get(&7), None);
    assert_eq!(products.undecodable(), 0);
}

#[test]
fn string_keys_are_looked_up_with_str_and_raw_values_round_trip() {
    let cache = Cache::builder().memory_capacity(1 << 20).build().unwrap();
    let names: TypedCache<String, String> = TypedCache::new(cache.clone());
    names.insert("user:1", &"alice".to_string()).unwrap();
    let owned = String::from("user:1");
    assert_eq!(names.get(&owned).as_deref(), Some("alice"));
    assert_eq!(names.get("user:1").as_deref(), Some("alice"));
    assert!(names.contains("user:1"));
    // The bytes core sees the same key, and a tagged value.
    let stored = cache.get(b"user:1").unwrap();
    assert_eq!(&stored[larder::TAG_LEN..], b"alice");

    let counters: TypedCache<i64, u64> = TypedCache::new(cache.clone());
    counters.insert(&-5, &u64::MAX).unwrap();
    assert_eq!(counters.get(&-5), Some(u64::MAX));
    let blobs: TypedCache<Vec<u8>, Bytes> = TypedCache::new(cache);
    blobs
        .insert(&b"k"[..], &Bytes::from_static(b"\0\xff"))
        .unwrap();
    assert_eq!(blobs.get(&b"k"[..]).as_deref(), Some(&b"\0\xff"[..]));
    names
        .insert_with_ttl("short", &"x".into(), Duration::from_secs(60))
        .unwrap();
    assert!(matches!(
        names.insert_with_ttl("short", &"x".into(), Duration::ZERO),
        Err(Error::ZeroTtl)
    ));
}

#[test]
fn a_restart_after_a_type_or_version_change_is_a_miss_and_the_loader_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let v1: TypedCache<u64, Product, Postcard> = TypedCache::new(open(dir.path()));
    for i in 0..50 {
        v1.insert(&i, &product(i)).unwrap();
    }
    v1.cache().clone().close().unwrap();

    // Another type: every old value is a miss, not a misread or a panic.
    let cache = open(dir.path());
    let v2: TypedCache<u64, ProductV2, Postcard> = TypedCache::new(cache.clone());
    assert_eq!(v2.get(&1), None);
    assert_eq!(v2.undecodable(), 1);
    let loads = AtomicUsize::new(0);
    let fresh = ProductV2 {
        name: "new".into(),
        cents: 1,
    };
    let got = v2
        .get_with(&1, || {
            loads.fetch_add(1, Ordering::SeqCst);
            fresh.clone()
        })
        .unwrap();
    assert_eq!((got, loads.load(Ordering::SeqCst)), (fresh.clone(), 1));
    assert_eq!(
        v2.get(&1),
        Some(fresh),
        "the loaded value replaced the old one"
    );

    // The same type under a raised version: a miss too.
    let v1_again: TypedCache<u64, Product, Postcard> = TypedCache::new(cache.clone()).version(1);
    assert_eq!(v1_again.get(&2), None);
    // ... and under its old version, the value is still there.
    let v1_old: TypedCache<u64, Product, Postcard> = TypedCache::new(cache.clone());
    assert_eq!(v1_old.get(&2), Some(product(2)));

    // Bytes no typed view wrote, shorter than a tag or not: misses.
    cache.insert(&3u64.to_be_bytes(), "xy").unwrap();
    assert_eq!(v1_old.get(&3), None);
    cache.insert(&4u64.to_be_bytes(), vec![0u8; 40]).unwrap();
    assert_eq!(v1_old.get(&4), None);
}

/// A value postcard cannot encode (its `Serialize` fails).
#[derive(Debug, Deserialize)]
struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refuses to be encoded"))
    }
}

#[test]
fn a_value_that_cannot_be_encoded_is_an_error_and_changes_nothing() {
    let cache = Cache::builder().memory_capacity(1 << 20).build().unwrap();
    let typed: TypedCache<String, Unencodable, Postcard> = TypedCache::new(cache.clone());
    assert!(matches!(
        typed.insert("k", &Unencodable),
        Err(Error::Codec(CodecError { .. }))
    ));
    let r = typed.try_get_with("k", || Ok::<_, std::io::Error>(Unencodable));
    assert!(matches!(r, Err(LoadError::Cache(Error::Codec(_)))), "{r:?}");
    assert!(!cache.contains(b"k"));
    assert_eq!(cache.stats().inserts, 0);
}

#[test]
fn typed_single_flight_runs_one_loader_for_64_concurrent_misses() {
    let cache = Cache::builder().memory_capacity(1 << 20).build().unwrap();
    let typed: TypedCache<String, Product, Postcard> = TypedCache::new(cache);
    let loads = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(64));
    let threads: Vec<_> = (0..64)
        .map(|_| {
            let (typed, loads, barrier) = (typed.clone(), loads.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                typed
                    .get_with("hot", || {
                        loads.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(50));
                        product(9)
                    })
                    .unwrap()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), product(9));
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

#[test]
fn raw_codec_rejects_bytes_of_the_wrong_shape() {
    let cache = Cache::builder().memory_capacity(1 << 20).build().unwrap();
    let typed: TypedCache<u32, u64, Raw> = TypedCache::new(cache.clone());
    typed.insert(&1, &7).unwrap();
    // Same tag, truncated payload: a miss, counted.
    let stored = cache.get(&1u32.to_be_bytes()).unwrap();
    cache
        .insert(&1u32.to_be_bytes(), stored.slice(..6))
        .unwrap();
    assert_eq!(typed.get(&1), None);
    assert_eq!(typed.undecodable(), 1);
}

proptest::proptest! {
    /// Whatever bytes sit under a key (a torn write cannot, but another
    /// program's value can), a typed read is a value or a miss: never a panic.
    #[test]
    fn any_stored_bytes_decode_to_a_value_or_a_miss(
        payload in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        tagged in proptest::bool::ANY,
    ) {
        let cache = Cache::builder().memory_capacity(1 << 20).build().unwrap();
        let typed: TypedCache<u64, Product, Postcard> = TypedCache::new(cache.clone());
        typed.insert(&1, &product(1)).unwrap();
        let tag = cache.get(&1u64.to_be_bytes()).unwrap().slice(..larder::TAG_LEN);
        let mut stored = if tagged { tag.to_vec() } else { Vec::new() };
        stored.extend_from_slice(&payload);
        cache.insert(&1u64.to_be_bytes(), stored).unwrap();
        let _ = typed.get(&1);
        let _ = typed.get_with(&1, || product(2));
    }
}
