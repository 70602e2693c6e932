//! The async loaders on real runtimes: single-flight without a thread per
//! waiter, errors shared, a cancelled leader handing the load to a waiter,
//! sync and async callers in one flight, and the blocking calls' async forms.

use larder::{Cache, LoadError, TypedCache};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn memory() -> Cache {
    Cache::builder().memory_capacity(1 << 20).build().unwrap()
}

/// Runs `test` on a one-thread runtime of its own thread, and fails if it
/// does not finish within 10 s (a waiter that blocked the runtime's only
/// thread would keep the leader from ever finishing: a hang, reported).
fn on_one_thread<F: Future<Output = ()> + 'static>(test: impl FnOnce() -> F + Send + 'static) {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(test());
        let _ = done_tx.send(());
    });
    done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the test finished (a waiter blocked the runtime's only thread, or it panicked)");
}

#[test]
fn sixty_four_waiting_tasks_share_one_load_on_one_thread() {
    on_one_thread(sixty_four_tasks);
}

async fn sixty_four_tasks() {
    let cache = memory();
    let loads = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (cache, loads) = (cache.clone(), loads.clone());
            tokio::spawn(async move {
                cache
                    .get_with_async(b"hot", async {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        "loaded".into()
                    })
                    .await
                    .unwrap()
            })
        })
        .collect();
    for v in futures::future::join_all(tasks).await {
        assert_eq!(v.unwrap(), "loaded");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(cache.stats().loads, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_async_loader_reaches_every_waiter_within_twice_its_time() {
    let cache = memory();
    let loads = Arc::new(AtomicUsize::new(0));
    const LOAD: Duration = Duration::from_millis(200);
    let start = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (cache, loads) = (cache.clone(), loads.clone());
            tokio::spawn(async move {
                let r = cache
                    .try_get_with_async(b"k", async {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(LOAD).await;
                        Err::<larder::Bytes, _>("the database is down")
                    })
                    .await;
                (r, start.elapsed())
            })
        })
        .collect();
    for t in futures::future::join_all(tasks).await {
        let (r, took) = t.unwrap();
        assert!(
            matches!(&r, Err(LoadError::Loader(e)) if **e == "the database is down"),
            "{r:?}"
        );
        assert!(took < 2 * LOAD, "a waiter got the error after {took:?}");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert!(!cache.contains(b"k"), "a failure caches nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_leader_hands_the_load_to_one_waiter() {
    let cache = memory();
    let loads = Arc::new(AtomicUsize::new(0));
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    // The leader: its loader never finishes on its own.
    let leader = {
        let (cache, loads) = (cache.clone(), loads.clone());
        tokio::spawn(async move {
            cache
                .get_with_async(b"k", async {
                    loads.fetch_add(1, Ordering::SeqCst);
                    let _ = started_tx.send(());
                    std::future::pending::<()>().await;
                    "never".into()
                })
                .await
        })
    };
    started_rx.await.unwrap();
    let waiters: Vec<_> = (0..16)
        .map(|_| {
            let (cache, loads) = (cache.clone(), loads.clone());
            tokio::spawn(async move {
                cache
                    .get_with_async(b"k", async {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        "second".into()
                    })
                    .await
                    .unwrap()
            })
        })
        .collect();
    // Let the waiters join the flight, then cancel its leader.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(loads.load(Ordering::SeqCst), 1, "the waiters wait");
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    let waited = tokio::time::timeout(Duration::from_secs(10), futures::future::join_all(waiters))
        .await
        .expect("a waiter takes over the cancelled leader's load");
    for w in waited {
        assert_eq!(w.unwrap(), "second");
    }
    assert_eq!(
        loads.load(Ordering::SeqCst),
        2,
        "loaded once more after the cancel, not zero or many times"
    );
    assert_eq!(cache.get(b"k").as_deref(), Some(&b"second"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_and_tasks_share_one_flight() {
    let cache = memory();
    let loads = Arc::new(AtomicUsize::new(0));
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let leader = {
        let (cache, loads) = (cache.clone(), loads.clone());
        tokio::spawn(async move {
            cache
                .get_with_async(b"k", async {
                    loads.fetch_add(1, Ordering::SeqCst);
                    started_tx.send(()).unwrap();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    "async".into()
                })
                .await
                .unwrap()
        })
    };
    let thread = {
        let (cache, loads) = (cache.clone(), loads.clone());
        std::thread::spawn(move || {
            started_rx.recv().unwrap();
            cache
                .get_with(b"k", || {
                    loads.fetch_add(1, Ordering::SeqCst);
                    "sync".into()
                })
                .unwrap()
        })
    };
    assert_eq!(leader.await.unwrap(), "async");
    assert_eq!(thread.join().unwrap(), "async");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn optional_and_typed_async_loaders() {
    let cache = Cache::builder()
        .memory_capacity(1 << 20)
        .absent_ttl(Duration::from_secs(60))
        .build()
        .unwrap();
    assert_eq!(
        cache.optionally_get_with_async(b"no", async { None }).await,
        Ok(None)
    );
    // Remembered as absent: the second loader does not run.
    let r = cache
        .optionally_get_with_async(b"no", async { panic!("absent keys are remembered") })
        .await;
    assert_eq!(r, Ok(None));

    let names: TypedCache<String, String> = TypedCache::new(cache.clone());
    let v = names
        .get_with_async("user:1", async { "alice".to_string() })
        .await
        .unwrap();
    assert_eq!(v, "alice");
    assert_eq!(names.get("user:1").as_deref(), Some("alice"));
    let r = names
        .try_get_with_async("user:2", async { Err::<String, _>(7) })
        .await;
    assert!(matches!(r, Err(LoadError::Loader(e)) if *e == 7));
    let r = names
        .optionally_get_with_async("user:3", async { None })
        .await;
    assert_eq!(r, Ok(None));
}

#[tokio::test(flavor = "current_thread")]
async fn open_sync_and_close_run_off_the_executor_and_the_reopen_is_warm() {
    let dir = tempfile::tempdir().unwrap();
    let builder = || {
        Cache::builder()
            .memory_capacity(1 << 20)
            .disk(dir.path(), 8 << 20)
            .segment_size(256 << 10)
    };
    let cache = builder().build_async().await.unwrap();
    for i in 0..100u32 {
        cache.insert(&i.to_be_bytes(), vec![i as u8; 100]).unwrap();
    }
    cache.sync_async().await.unwrap();
    cache.clone().close_async().await.unwrap();
    assert!(matches!(
        cache.sync_async().await,
        Err(larder::Error::Closed)
    ));

    let cache = builder().build_async().await.unwrap();
    let recovery = cache.stats().disk.unwrap().recovery;
    assert_eq!(recovery.checkpoint, larder::CheckpointStatus::Used);
    for i in 0..100u32 {
        assert_eq!(cache.get(&i.to_be_bytes()).unwrap(), vec![i as u8; 100]);
    }
    // An open that fails reports its error through the future.
    let busy = builder().build_async().await;
    assert!(busy.is_err(), "the directory is in use");
    cache.close_async().await.unwrap();
}
