//! Durable write-behind to a real SQLite file: coalescing, batching,
//! reads of what is queued, retries, backpressure, replay of the journal.
//! The crash loop is in `tests/write_behind_crash.rs`.

use larder::{
    Acknowledge, Backpressure, Bytes, Cache, SqliteError, SqliteStore, Store, StoreCache,
    StoreError, WriteBehind,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The SQLite store, counting batches and rows, failing on demand.
struct Db {
    inner: SqliteStore,
    fail: Arc<AtomicBool>,
    batches: Arc<AtomicU64>,
    rows: Arc<AtomicU64>,
}

impl Db {
    fn open(dir: &std::path::Path) -> Self {
        Db {
            inner: SqliteStore::open(dir.join("app.db"), "items").unwrap(),
            fail: Arc::default(),
            batches: Arc::default(),
            rows: Arc::default(),
        }
    }
}

impl Store for Db {
    type Error = SqliteError;
    fn load(&self, key: &[u8]) -> Result<Option<Bytes>, SqliteError> {
        self.inner.load(key)
    }
    fn store(&self, key: &[u8], value: &[u8]) -> Result<(), SqliteError> {
        self.store_batch(&[(key, Some(value))])
    }
    fn delete(&self, key: &[u8]) -> Result<(), SqliteError> {
        self.store_batch(&[(key, None)])
    }
    fn store_batch(&self, batch: &[(&[u8], Option<&[u8]>)]) -> Result<(), SqliteError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(SqliteError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                Some("injected: database is locked".into()),
            )));
        }
        self.batches.fetch_add(1, Ordering::SeqCst);
        self.rows.fetch_add(batch.len() as u64, Ordering::SeqCst);
        self.inner.store_batch(batch)
    }
}

fn in_db(dir: &std::path::Path, key: &[u8]) -> Option<Vec<u8>> {
    SqliteStore::open(dir.join("app.db"), "items")
        .unwrap()
        .load(key)
        .unwrap()
        .map(|b| b.to_vec())
}

fn cache() -> Cache {
    Cache::builder().memory_capacity(4 << 20).build().unwrap()
}

#[test]
fn writes_are_coalesced_per_key_and_stored_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path());
    let (batches, rows) = (Arc::clone(&db.batches), Arc::clone(&db.rows));
    let wb = StoreCache::new(cache(), db)
        .write_behind(
            WriteBehind::new(dir.path().join("wb"))
                .delay(Duration::from_secs(30))
                .batch_size(64),
        )
        .unwrap();
    for round in 0..100u32 {
        for key in 0..20u32 {
            wb.put(format!("k{key}").as_bytes(), format!("v{round}"))
                .unwrap();
        }
    }
    wb.delete(b"k0").unwrap();
    assert_eq!(
        rows.load(Ordering::SeqCst),
        0,
        "nothing stored before the delay"
    );
    assert_eq!(wb.get(b"k1").unwrap().as_deref(), Some(&b"v99"[..]));
    wb.flush();
    let stats = wb.write_behind_stats();
    assert_eq!(stats.queued, 0);
    assert_eq!(stats.coalesced, 2_001 - 20);
    assert_eq!(rows.load(Ordering::SeqCst), 20, "one row per key");
    assert_eq!(batches.load(Ordering::SeqCst), 1);
    assert_eq!(in_db(dir.path(), b"k0"), None);
    for key in 1..20u32 {
        assert_eq!(
            in_db(dir.path(), format!("k{key}").as_bytes()).as_deref(),
            Some(&b"v99"[..])
        );
    }
    // Past the batch size, batches go without waiting for the delay.
    for key in 0..200u32 {
        wb.put(format!("n{key}").as_bytes(), "x").unwrap();
    }
    let start = std::time::Instant::now();
    while wb.write_behind_stats().queued >= 64 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(wb.write_behind_stats().queued < 64);
    assert!(batches.load(Ordering::SeqCst) >= 4);
}

#[test]
fn a_write_into_an_empty_queue_is_stored_after_the_delay() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path());
    let rows = Arc::clone(&db.rows);
    let wb = StoreCache::new(cache(), db)
        .write_behind(WriteBehind::new(dir.path().join("wb")).delay(Duration::from_millis(10)))
        .unwrap();
    for round in 0..3u32 {
        // The flusher is asleep on the empty queue by now.
        std::thread::sleep(Duration::from_millis(100));
        wb.put(format!("k{round}").as_bytes(), "v").unwrap();
        let start = std::time::Instant::now();
        while rows.load(Ordering::SeqCst) <= u64::from(round)
            && start.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            rows.load(Ordering::SeqCst),
            u64::from(round) + 1,
            "round {round}: not stored after the delay"
        );
    }
}

#[test]
fn a_queued_write_is_read_from_the_queue_not_from_the_older_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path());
    db.inner.store(b"k", b"old").unwrap();
    db.inner.store(b"gone", b"old").unwrap();
    let wb = StoreCache::new(cache(), db)
        .write_behind(WriteBehind::new(dir.path().join("wb")).delay(Duration::from_secs(30)))
        .unwrap();
    wb.put(b"k", "new").unwrap();
    wb.delete(b"gone").unwrap();
    // As if memory had evicted them.
    wb.cache().remove(b"k");
    wb.cache().remove(b"gone");
    assert_eq!(wb.get(b"k").unwrap().as_deref(), Some(&b"new"[..]));
    assert_eq!(wb.get(b"gone").unwrap(), None);
    assert_eq!(in_db(dir.path(), b"k").as_deref(), Some(&b"old"[..]));
    wb.flush();
    assert_eq!(in_db(dir.path(), b"k").as_deref(), Some(&b"new"[..]));
    assert_eq!(in_db(dir.path(), b"gone"), None);
}

#[test]
fn failed_batches_are_retried_with_backoff_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path());
    let fail = Arc::clone(&db.fail);
    fail.store(true, Ordering::SeqCst);
    let wb = StoreCache::new(cache(), db)
        .write_behind(
            WriteBehind::new(dir.path().join("wb"))
                .delay(Duration::from_millis(1))
                .retry(Duration::from_millis(5), Duration::from_millis(20)),
        )
        .unwrap();
    for key in 0..50u32 {
        wb.put(format!("k{key}").as_bytes(), "v").unwrap();
    }
    assert!(!wb.flush_timeout(Duration::from_millis(200)));
    let stats = wb.write_behind_stats();
    assert!(stats.failures >= 3, "{stats:?}");
    assert!(
        stats.last_failure.as_deref().unwrap().contains("locked"),
        "{stats:?}"
    );
    assert_eq!(stats.queued, 50);
    assert!(stats.oldest_age >= Duration::from_millis(150), "{stats:?}");
    // The backoff is bounded: at most a few tries in 200 ms from 5 ms doubling to 20 ms.
    assert!(stats.failures <= 20, "{stats:?}");
    fail.store(false, Ordering::SeqCst);
    assert!(wb.flush_timeout(Duration::from_secs(10)));
    for key in 0..50u32 {
        assert_eq!(
            in_db(dir.path(), format!("k{key}").as_bytes()).as_deref(),
            Some(&b"v"[..])
        );
    }
    assert_eq!(wb.write_behind_stats().last_failure, None);
}

#[test]
fn a_full_queue_refuses_or_waits_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path());
    db.fail.store(true, Ordering::SeqCst);
    let wb = StoreCache::new(cache(), db)
        .write_behind(
            WriteBehind::new(dir.path().join("wb"))
                .max_pending(2, Backpressure::Refuse)
                .retry(Duration::from_millis(5), Duration::from_millis(5)),
        )
        .unwrap();
    wb.put(b"a", "1").unwrap();
    wb.put(b"b", "1").unwrap();
    wb.put(b"a", "2").unwrap(); // a key already queued is coalesced, not refused
    assert!(matches!(wb.put(b"c", "1"), Err(StoreError::Full)));
    assert_eq!(wb.get(b"c").unwrap(), None, "a refused write is not cached");
    let stats = wb.write_behind_stats();
    assert_eq!((stats.refused, stats.queued), (1, 2));

    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path());
    let fail = Arc::clone(&db.fail);
    fail.store(true, Ordering::SeqCst);
    let wb = StoreCache::new(cache(), db)
        .write_behind(
            WriteBehind::new(dir.path().join("wb"))
                .delay(Duration::from_millis(1))
                .max_pending(1, Backpressure::Wait(Duration::from_secs(20)))
                .retry(Duration::from_millis(5), Duration::from_millis(5)),
        )
        .unwrap();
    wb.put(b"a", "1").unwrap();
    let healer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        fail.store(false, Ordering::SeqCst);
    });
    let start = std::time::Instant::now();
    // Waits until the store heals and "a" is stored.
    if let Err(e) = wb.put(b"b", "1") {
        panic!(
            "{e} after {:?}: {:?}",
            start.elapsed(),
            wb.write_behind_stats()
        );
    }
    assert!(start.elapsed() >= Duration::from_millis(90));
    healer.join().unwrap();
    assert_eq!(wb.write_behind_stats().waited, 1);
    assert_eq!(in_db(dir.path(), b"a").as_deref(), Some(&b"1"[..]));
}

#[test]
fn the_journal_is_replayed_on_open_and_the_cache_forgets_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("wb");
    {
        let db = Db::open(dir.path());
        db.fail.store(true, Ordering::SeqCst);
        let wb = StoreCache::new(cache(), db)
            .write_behind(WriteBehind::new(&journal).acknowledge(Acknowledge::Synced))
            .unwrap();
        for v in 0..3u32 {
            wb.put(b"k", format!("v{v}")).unwrap();
        }
        wb.put(b"d", "x").unwrap();
        wb.delete(b"d").unwrap();
        // Dropped while the store fails: what is queued stays journaled.
    }
    assert_eq!(in_db(dir.path(), b"k"), None);
    let db = Db::open(dir.path());
    db.inner.store(b"d", b"stale").unwrap();
    let c = cache();
    c.insert(b"k", "stale").unwrap();
    let wb = StoreCache::new(c, db)
        .write_behind(WriteBehind::new(&journal))
        .unwrap();
    let stats = wb.write_behind_stats();
    assert_eq!((stats.replayed, stats.journal_damage), (2, 0), "{stats:?}");
    assert_eq!(
        wb.get(b"k").unwrap().as_deref(),
        Some(&b"v2"[..]),
        "the cache forgot its stale value"
    );
    wb.flush();
    assert_eq!(in_db(dir.path(), b"k").as_deref(), Some(&b"v2"[..]));
    assert_eq!(in_db(dir.path(), b"d"), None);
    wait_for_one_file(&wb);
}

#[test]
fn a_journal_in_use_is_refused_and_write_behind_is_set_once() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("wb");
    let wb = StoreCache::new(cache(), Db::open(dir.path()))
        .write_behind(WriteBehind::new(&journal))
        .unwrap();
    let other =
        StoreCache::new(cache(), Db::open(dir.path())).write_behind(WriteBehind::new(&journal));
    assert!(matches!(other, Err(StoreError::Journal(_))));
    let twice = wb
        .clone()
        .write_behind(WriteBehind::new(dir.path().join("wb2")));
    assert!(matches!(twice, Err(StoreError::Journal(_))));
    drop(wb);
    // The last handle's drop lets the journal go (once its flusher ends).
    StoreCache::new(cache(), Db::open(dir.path()))
        .write_behind(WriteBehind::new(&journal))
        .unwrap();
}

#[test]
fn journal_files_rotate_and_are_retired_once_stored() {
    let dir = tempfile::tempdir().unwrap();
    let wb = StoreCache::new(cache(), Db::open(dir.path()))
        .write_behind(
            WriteBehind::new(dir.path().join("wb"))
                .delay(Duration::from_secs(30))
                .journal_file_size(4096),
        )
        .unwrap();
    let value = vec![b'v'; 1000];
    for key in 0..40u32 {
        wb.put(format!("k{key}").as_bytes(), value.clone()).unwrap();
    }
    assert!(wb.write_behind_stats().journal_files >= 10);
    wb.flush();
    wait_for_one_file(&wb);
    let files = std::fs::read_dir(dir.path().join("wb")).unwrap().count();
    assert_eq!(files, 2, "the file appended to and LOCK");
}

/// Waits (up to 10 s) for the journal to retire all but the file it
/// appends to: the flusher does that just after the queue empties.
fn wait_for_one_file<S: Store>(wb: &StoreCache<S>) {
    let start = std::time::Instant::now();
    while wb.write_behind_stats().journal_files > 1 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        wb.write_behind_stats().journal_files,
        1,
        "stored: the old files are retired"
    );
}
