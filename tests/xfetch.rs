//! Probabilistic early expiration (XFetch) through a `StoreCache` in front
//! of a real SQLite file whose loads are slow: under a steady read load, a
//! key with a short time to live is reloaded by one reader shortly before
//! it expires, so no reader misses after the first load.

use larder::{Bytes, Cache, SqliteError, SqliteStore, Store, StoreCache};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_millis(500);
const LOAD: Duration = Duration::from_millis(10);

struct Slow {
    inner: SqliteStore,
    loads: Arc<AtomicU64>,
}

impl Store for Slow {
    type Error = SqliteError;
    fn load(&self, key: &[u8]) -> Result<Option<Bytes>, SqliteError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(LOAD); // an expensive query
        self.inner.load(key)
    }
    fn store(&self, key: &[u8], value: &[u8]) -> Result<(), SqliteError> {
        self.inner.store(key, value)
    }
    fn delete(&self, key: &[u8]) -> Result<(), SqliteError> {
        self.inner.delete(key)
    }
}

/// Reads `hot` from 2 threads for `run`; returns (loads, early reloads).
fn read_steadily(beta: Option<f64>, run: Duration) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let inner = SqliteStore::open(dir.path().join("app.db"), "items").unwrap();
    inner.store(b"hot", b"expensive").unwrap();
    let loads = Arc::new(AtomicU64::new(0));
    let cache = Cache::builder()
        .memory_capacity(1 << 20)
        .time_to_live(TTL)
        .build()
        .unwrap();
    let mut sc = StoreCache::new(
        cache,
        Slow {
            inner,
            loads: Arc::clone(&loads),
        },
    );
    if let Some(beta) = beta {
        sc = sc.early_expiration(beta);
    }
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while start.elapsed() < run {
                    assert_eq!(sc.get(b"hot").unwrap().as_deref(), Some(&b"expensive"[..]));
                    std::thread::sleep(Duration::from_micros(200));
                }
            });
        }
    });
    (loads.load(Ordering::SeqCst), sc.early_reloads())
}

#[test]
fn early_expiration_keeps_a_steadily_read_key_from_expiring_under_its_readers() {
    let run = TTL * 4;
    let (loads, early) = read_steadily(Some(1.0), run);
    let misses = loads - early;
    assert_eq!(
        misses, 1,
        "only the first load is a miss ({loads} loads, {early} early)"
    );
    // At least once per time to live, and not on every read.
    assert!(early >= 3, "{early} early reloads in {run:?}");
    assert!(
        early <= 40,
        "{early} early reloads in {run:?}: far too many"
    );

    // Without it, the key expires under its readers once per time to live.
    let (loads, early) = read_steadily(None, run);
    assert_eq!(early, 0);
    assert!(loads >= 3, "{loads} loads without early expiration");
}

#[test]
fn a_bad_beta_leaves_it_off() {
    // A huge beta reloads on the first hit after a load (the control); a
    // beta that is not a positive finite number never does.
    for (beta, on) in [
        (1e9, true),
        (0.0, false),
        (-1.0, false),
        (f64::NAN, false),
        (f64::INFINITY, false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let inner = SqliteStore::open(dir.path().join("app.db"), "items").unwrap();
        inner.store(b"k", b"v").unwrap();
        let cache = Cache::builder()
            .memory_capacity(1 << 20)
            .time_to_live(TTL)
            .build()
            .unwrap();
        let sc = StoreCache::new(
            cache,
            Slow {
                inner,
                loads: Arc::default(),
            },
        )
        .early_expiration(beta);
        for _ in 0..3 {
            assert_eq!(sc.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        }
        assert_eq!(sc.early_reloads() > 0, on, "beta {beta}");
    }
}
