//! Removal listeners: the cause of an entry's departure from the whole
//! cache, and the thread that tells the caller's listener.
//!
//! The tiers report a removal once they have released every lock (the
//! report is a send on a channel, never a call into user code); one thread
//! per cache, `larder-listener`, delivers the reports in the order they were
//! sent, each as soon as the listener is done with the one before. So the
//! delay between a removal and its report is the time the listener takes
//! with the reports queued before it (microseconds with a quick listener),
//! and [`Cache::run_pending_tasks`](crate::Cache::run_pending_tasks) waits
//! for every report sent before it. A panicking listener is caught and
//! logged; the next report is delivered all the same.

use crate::sync::{Arc, AtomicU64, Mutex, Ordering};
use bytes::Bytes;
use std::sync::mpsc;
use std::thread::{JoinHandle, ThreadId};

/// Why an entry left the cache (both tiers: moving from memory to disk is
/// not a removal). moka's causes, plus the disk tier's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemovalCause {
    /// Removed by [`Cache::remove`](crate::Cache::remove).
    Explicit,
    /// Overwritten by an insert or a load of the same key.
    Replaced,
    /// Its deadline (TTL or time to idle) passed, and the cache took it out:
    /// reported when a lookup, the expiry sweep, an eviction, reclaim, a
    /// write or an invalidation meets it, not at the deadline itself.
    Expired,
    /// Memory evicted it and the disk tier did not keep it (no disk tier,
    /// the write policy does not write it, or the write was refused).
    Evicted,
    /// Removed by [`Cache::invalidate_entries_if`](crate::Cache::invalidate_entries_if)
    /// or [`Cache::invalidate_all`](crate::Cache::invalidate_all).
    Invalidated,
    /// The disk tier's reclaim dropped its record (memory did not hold it).
    Reclaimed,
    /// Its record failed its checks when it was read: the value is lost.
    Corrupt,
}

/// One entry that left the cache: its key, its value (`None` only where the
/// value could not be read back: a corrupt record, or a record that changed
/// place under a concurrent write), and why.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Removal {
    /// The entry's key.
    pub key: Bytes,
    /// The entry's value, where it could be read.
    pub value: Option<Bytes>,
    /// Why it left.
    pub cause: RemovalCause,
}

/// A removal listener, as [`CacheBuilder::removal_listener`](crate::CacheBuilder::removal_listener) takes it.
pub(crate) type ListenerFn = dyn Fn(Removal) + Send + Sync + 'static;

enum Message {
    Removal(Removal),
    /// Answered once every message sent before it is delivered.
    Barrier(mpsc::SyncSender<()>),
    Stop,
}

/// The sending side, shared by the tiers, and the delivering thread.
pub(crate) struct Notifier {
    tx: mpsc::Sender<Message>,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: ThreadId,
    /// Reports sent and not yet delivered.
    pending: Arc<AtomicU64>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("pending", &self.pending.load(Ordering::Relaxed))
            .finish()
    }
}

impl Notifier {
    /// Starts the delivering thread.
    pub(crate) fn start(listener: Arc<ListenerFn>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Message>();
        let pending = Arc::new(AtomicU64::new(0));
        let delivered = Arc::clone(&pending);
        let thread = std::thread::Builder::new()
            .name("larder-listener".into())
            .spawn(move || {
                while let Ok(m) = rx.recv() {
                    match m {
                        Message::Removal(r) => {
                            let call = std::panic::AssertUnwindSafe(|| listener(r));
                            if std::panic::catch_unwind(call).is_err() {
                                log::error!("the removal listener panicked; reports go on");
                            }
                            delivered.fetch_sub(1, Ordering::AcqRel);
                        }
                        Message::Barrier(done) => {
                            let _ = done.send(());
                        }
                        Message::Stop => break,
                    }
                }
            })?;
        Ok(Notifier {
            tx,
            thread_id: thread.thread().id(),
            thread: Mutex::new(Some(thread)),
            pending,
        })
    }

    /// Queues a report (never blocks; dropped once the cache is closed).
    pub(crate) fn send(&self, key: &[u8], value: Option<Bytes>, cause: RemovalCause) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        let removal = Removal {
            key: Bytes::copy_from_slice(key),
            value,
            cause,
        };
        if self.tx.send(Message::Removal(removal)).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Reports queued and not yet delivered.
    pub(crate) fn pending(&self) -> u64 {
        self.pending.load(Ordering::Acquire)
    }

    /// Waits until every report sent before the call is delivered (at once
    /// on the listener's own thread, which would wait for itself).
    pub(crate) fn wait_delivered(&self) {
        if std::thread::current().id() == self.thread_id {
            return;
        }
        let (done, wait) = mpsc::sync_channel(1);
        if self.tx.send(Message::Barrier(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    /// Delivers what is queued, then stops the thread (joined, unless this
    /// is the listener's own thread). Later reports are dropped.
    pub(crate) fn stop(&self) {
        let _ = self.tx.send(Message::Stop);
        let thread = self.thread.lock().take();
        if let Some(t) = thread.filter(|t| t.thread().id() != std::thread::current().id()) {
            let _ = t.join();
        }
    }
}
