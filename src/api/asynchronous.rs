//! Async loaders and the blocking calls run off the executor, for any
//! runtime: nothing here depends on one.
//!
//! The async loaders share the sync loaders' flights: a task that misses
//! while another caller (a thread or a task) loads the key parks until the
//! flight ends, holding no thread. A leader whose future is dropped
//! (cancelled: a timeout, a `select!`, a dropped request) abandons its
//! flight; the waiters wake and one of them leads the next, so the key is
//! loaded once more, not zero or many times.
//!
//! The calls that may block for milliseconds (opening a directory with its
//! recovery, `sync`, `close`) have async forms that run them on a thread of
//! their own ([`OffThread`]). What a lookup costs stays as it is: a memory
//! hit is a shared lock; a disk hit is one read of the record (a page copy
//! from the page cache, or one device read), as a page fault would block.

use crate::builder::CacheBuilder;
use crate::cache::{Cache, Failure, Joined, Lookup};
use crate::error::{BuildError, Error, LoadError};
use crate::sync::{Arc, Mutex};
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// The result of a blocking call running on a thread of its own: a future
/// that is ready when the call returns (it panics if the call panicked).
/// Dropping it does not stop the call: a `close` still closes.
#[must_use = "the call runs anyway; await the future for its result"]
pub struct OffThread<T> {
    slot: Arc<Mutex<OffSlot<T>>>,
}

struct OffSlot<T> {
    result: Option<std::thread::Result<T>>,
    waker: Option<Waker>,
}

impl<T> std::fmt::Debug for OffThread<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let done = self.slot.lock().result.is_some();
        f.debug_struct("OffThread").field("done", &done).finish()
    }
}

/// Runs `call` on a new thread named `name`; if no thread can be started,
/// runs it on this one.
fn off_thread<T: Send + 'static>(
    name: &str,
    call: impl FnOnce() -> T + Send + 'static,
) -> OffThread<T> {
    let slot = Arc::new(Mutex::new(OffSlot {
        result: None,
        waker: None,
    }));
    let theirs = Arc::clone(&slot);
    let call = Arc::new(Mutex::new(Some(call)));
    let run = {
        let call = Arc::clone(&call);
        move || {
            let Some(call) = call.lock().take() else {
                return;
            };
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call));
            let waker = {
                let mut slot = theirs.lock();
                slot.result = Some(result);
                slot.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
    };
    let started = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(run.clone());
    if let Err(e) = started {
        log::warn!("cannot start a thread for `{name}` ({e}): running it on the caller's");
        run();
    }
    OffThread { slot }
}

impl<T> Future for OffThread<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut slot = self.slot.lock();
        match slot.result.take() {
            Some(Ok(v)) => Poll::Ready(v),
            Some(Err(panic)) => {
                drop(slot);
                std::panic::resume_unwind(panic)
            }
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl CacheBuilder {
    /// [`build`](Self::build) on a thread of its own, for async code:
    /// opening a disk tier reads its directory (and after a crash, recovers
    /// it), which takes milliseconds to seconds.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let dir = tempfile::tempdir()?;
    /// let cache = larder::Cache::builder()
    ///     .memory_capacity(1 << 20)
    ///     .disk(dir.path(), 1 << 20)
    ///     .segment_size(64 << 10)
    ///     .build_async()
    ///     .await?;
    /// cache.insert(b"k", "v")?;
    /// cache.close_async().await?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn build_async(self) -> OffThread<Result<Cache, BuildError>> {
        off_thread("larder-open", move || self.build())
    }
}

impl Cache {
    /// [`sync`](Self::sync) on a thread of its own (it waits for writes and
    /// `fdatasync`), for async code. Each call starts a thread: batch syncs
    /// where they are frequent.
    pub fn sync_async(&self) -> OffThread<Result<(), Error>> {
        let cache = self.clone();
        off_thread("larder-sync", move || cache.sync())
    }

    /// [`close`](Self::close) on a thread of its own, for async code: a
    /// close writes memory's unwritten entries, seals the log and writes a
    /// checkpoint. Dropping the last handle closes on a thread of its own
    /// too, without a way to learn the outcome: this is the way to await it.
    pub fn close_async(self) -> OffThread<Result<(), Error>> {
        off_thread("larder-close", move || self.close())
    }

    /// [`get_with`](Self::get_with) with an async loader: on a miss, the
    /// value `init` resolves to is cached and returned; concurrent misses on
    /// the key (from tasks or threads) share one load, and waiting tasks
    /// hold no thread. If this call's future is dropped while it leads the
    /// load, a waiter takes over with its own loader.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let cache = larder::Cache::builder().memory_capacity(1 << 20).build()?;
    /// let v = cache.get_with_async(b"user:1", async { "alice".into() }).await?;
    /// assert_eq!(v, "alice");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn get_with_async(
        &self,
        key: &[u8],
        init: impl Future<Output = Bytes>,
    ) -> Result<Bytes, Error> {
        let loaded = self
            .load_async::<std::convert::Infallible>(key, false, async { Ok(Some(init.await)) })
            .await;
        match loaded {
            Ok(v) => Ok(v.expect("`load` hands `None` only to a caller that takes it")),
            Err(LoadError::Cache(e)) => Err(e),
            Err(LoadError::Loader(never)) => match *never {},
        }
    }

    /// [`try_get_with`](Self::try_get_with) with an async loader: its error
    /// reaches every waiting caller as `Arc<E>`, and nothing is cached.
    pub async fn try_get_with_async<E: Send + Sync + 'static>(
        &self,
        key: &[u8],
        init: impl Future<Output = Result<Bytes, E>>,
    ) -> Result<Bytes, LoadError<E>> {
        let loaded = self
            .load_async(key, false, async {
                init.await.map(Some).map_err(Failure::Loader)
            })
            .await?;
        Ok(loaded.expect("`load` hands `None` only to a caller that takes it"))
    }

    /// [`optionally_get_with`](Self::optionally_get_with) with an async
    /// loader that may find nothing.
    pub async fn optionally_get_with_async(
        &self,
        key: &[u8],
        init: impl Future<Output = Option<Bytes>>,
    ) -> Result<Option<Bytes>, Error> {
        let loaded = self
            .load_async::<std::convert::Infallible>(key, true, async { Ok(init.await) })
            .await;
        loaded.map_err(|e| match e {
            LoadError::Cache(e) => e,
            LoadError::Loader(never) => match *never {},
        })
    }

    /// The async loaders' one path, the sync one's steps with awaits.
    pub(crate) async fn load_async<E: Send + Sync + 'static>(
        &self,
        key: &[u8],
        absent_ok: bool,
        init: impl Future<Output = Result<Option<Bytes>, Failure<E>>>,
    ) -> Result<Option<Bytes>, LoadError<E>> {
        let hash = match self.load_lookup(key, absent_ok)? {
            Lookup::Found(v) => return Ok(v),
            Lookup::Missed(hash) => hash,
        };
        loop {
            match self.load_join(hash, key) {
                Joined::Found(v) => return Ok(Some(v)),
                Joined::Lead(leader) => {
                    // Dropping this future here drops the leader: the
                    // flight is abandoned and a waiter leads the next.
                    let start = std::time::Instant::now();
                    let loaded = init.await;
                    self.tiers().latency().load.since(start);
                    return self.load_finish(leader, hash, key, loaded);
                }
                Joined::Wait(follower) => {
                    let outcome = follower.wait_async().await;
                    if let Some(r) = self.load_follow(outcome, hash, key, absent_ok) {
                        return r;
                    }
                }
            }
        }
    }
}
