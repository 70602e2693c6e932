//! Threads against one cache: stress with readers, writers, removers and loaders
//! on overlapping keys, and single-flight loading.

use larder::{Bytes, Cache, LoadError};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

/// A value that names its key, so a value returned for the wrong key is caught.
fn value_for(key: &[u8], extra: usize) -> Bytes {
    let mut v = key.to_vec();
    v.extend(std::iter::repeat_n(0xab, extra));
    v.into()
}

fn check(key: &[u8], v: &Bytes) {
    assert!(
        v.len() >= key.len() && &v[..key.len()] == key && v[key.len()..].iter().all(|&b| b == 0xab),
        "value {v:?} was never inserted for key {key:?}"
    );
}

#[test]
fn stress_readers_writers_removers_loaders() {
    let cache = Cache::builder()
        .memory_capacity(200_000)
        .shards(4)
        .build()
        .unwrap();
    let gets = AtomicU64::new(0);
    let writes = AtomicU64::new(0);
    let threads = 8;
    std::thread::scope(|s| {
        for t in 0..threads {
            let (cache, gets, writes) = (&cache, &gets, &writes);
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(t);
                for _ in 0..60_000 {
                    let key = format!("key-{}", rng.random_range(0..3_000u32));
                    let key = key.as_bytes();
                    match (t % 4, rng.random_range(0..10)) {
                        // Readers mostly read.
                        (0, _) | (_, 0..5) => {
                            gets.fetch_add(1, Ordering::Relaxed);
                            if let Some(v) = cache.get(key) {
                                check(key, &v);
                            }
                        }
                        (1, _) | (_, 5..8) => {
                            cache
                                .insert(key, value_for(key, rng.random_range(0..400)))
                                .unwrap();
                            writes.fetch_add(1, Ordering::Relaxed);
                        }
                        (2, _) | (_, 8) => {
                            if let Some(v) = cache.remove(key) {
                                check(key, &v);
                            }
                        }
                        _ => {
                            gets.fetch_add(1, Ordering::Relaxed);
                            let v = cache.get_with(key, || value_for(key, 10)).unwrap();
                            check(key, &v);
                        }
                    }
                }
            });
        }
    });
    cache.validate();
    let s = cache.stats();
    // Every lookup was counted once; loader inserts are inserts too.
    assert_eq!(s.hits + s.misses, gets.load(Ordering::Relaxed));
    assert_eq!(
        s.inserts + s.updates,
        writes.load(Ordering::Relaxed) + s.loads
    );
    assert!(s.memory.weight <= s.memory.capacity);
    assert!(
        s.memory.evictions > 0,
        "the stress should exercise eviction"
    );
    assert!(s.hits > 0 && s.removes > 0 && s.loads > 0);
}

#[test]
fn single_flight_runs_the_loader_once() {
    let cache = Cache::builder().memory_capacity(1 << 20).build().unwrap();
    let calls = AtomicU64::new(0);
    let n = 64;
    let barrier = Barrier::new(n);
    let values: Vec<Bytes> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    cache
                        .get_with(b"slow", || {
                            calls.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(200));
                            Bytes::from_static(b"loaded")
                        })
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the loader must run exactly once"
    );
    assert!(values.iter().all(|v| v == "loaded"));
    assert_eq!(cache.stats().loads, 1);
    assert_eq!(cache.get(b"slow").unwrap(), "loaded");
}

/// A loader that fails: the callers waiting on it get its outcome (one
/// loader call, its error shared), all within about one loader's time; and
/// the key is not poisoned: the next call loads again.
#[test]
fn a_failing_loader_is_run_once_and_its_error_shared() {
    const LOAD: Duration = Duration::from_millis(200);
    let cache = Cache::builder().memory_capacity(1 << 20).build().unwrap();
    let calls = AtomicU64::new(0);
    let n = 64;
    let barrier = Barrier::new(n);
    let started = std::time::Instant::now();
    let results: Vec<(Result<Bytes, LoadError<&str>>, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let r = cache.try_get_with(b"flaky", || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(LOAD);
                        Err("backend down")
                    });
                    (r, started.elapsed())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one loader call for all");
    for (r, took) in &results {
        assert!(
            matches!(r, Err(LoadError::Loader(e)) if **e == "backend down"),
            "every caller gets the loader's error: {r:?}"
        );
        assert!(*took < 2 * LOAD, "a waiter returned after {took:?}");
    }
    // Not poisoned: the next call runs its loader.
    let v = cache.try_get_with(b"flaky", || Ok::<_, &str>(Bytes::from_static(b"ok")));
    assert_eq!(v.unwrap(), "ok");
    assert_eq!(cache.get(b"flaky").unwrap(), "ok");
}

/// A loader that finds nothing: the 64 callers waiting on it all get `None`
/// from its one call, nothing is cached, and the next call loads again.
#[test]
fn an_absent_value_is_shared_and_not_cached() {
    let cache = Cache::builder().memory_capacity(1 << 20).build().unwrap();
    let calls = AtomicU64::new(0);
    let n = 64;
    let barrier = Barrier::new(n);
    let results: Vec<Option<Bytes>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    cache
                        .optionally_get_with(b"ghost", || {
                            calls.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(200));
                            None
                        })
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one loader call for all");
    assert!(results.iter().all(Option::is_none));
    assert!(!cache.contains(b"ghost"), "nothing cached");
    let v = cache.optionally_get_with(b"ghost", || Some(Bytes::from_static(b"now")));
    assert_eq!(v.unwrap().unwrap(), "now", "the next call loads again");
}

/// A caller that needs a value (`get_with`) and meets a flight whose loader
/// found nothing runs its own loader; the absent answer goes only to the
/// caller that asked for it.
#[test]
fn a_caller_that_needs_a_value_loads_after_an_absent_flight() {
    let cache = Cache::builder().memory_capacity(1 << 20).build().unwrap();
    let (absent_calls, value_calls) = (AtomicU64::new(0), AtomicU64::new(0));
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            cache.optionally_get_with(b"k", || {
                absent_calls.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(200));
                None
            })
        });
        std::thread::sleep(Duration::from_millis(50));
        let b = s.spawn(|| {
            cache.get_with(b"k", || {
                value_calls.fetch_add(1, Ordering::SeqCst);
                Bytes::from_static(b"loaded")
            })
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(a.unwrap(), None);
    assert_eq!(b.unwrap(), "loaded");
    assert_eq!(
        (absent_calls.into_inner(), value_calls.into_inner()),
        (1, 1)
    );
    assert_eq!(cache.get(b"k").unwrap(), "loaded");
}

#[test]
fn a_panicking_loader_hands_over_to_a_waiter() {
    let cache = Arc::new(Cache::builder().memory_capacity(1 << 20).build().unwrap());
    let calls = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(2));
    let spawn = |c: Arc<Cache>, calls: Arc<AtomicU64>, b: Arc<Barrier>| {
        std::thread::spawn(move || {
            b.wait();
            c.get_with(b"k", || {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    std::thread::sleep(Duration::from_millis(100));
                    panic!("loader bug");
                }
                Bytes::from_static(b"v")
            })
        })
    };
    let a = spawn(cache.clone(), calls.clone(), barrier.clone());
    let b = spawn(cache.clone(), calls.clone(), barrier.clone());
    let (ra, rb) = (a.join(), b.join());
    // Exactly one thread panicked; the other loaded the value itself.
    assert_eq!([ra.is_err(), rb.is_err()].iter().filter(|&&e| e).count(), 1);
    let ok = ra.ok().or(rb.ok()).unwrap().unwrap();
    assert_eq!(ok, "v");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(cache.get(b"k").unwrap(), "v");
}
