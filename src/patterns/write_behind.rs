//! Durable write-behind (Hazelcast MapStore's write-behind, journaled): a
//! write through a [`StoreCache`] goes to larder's own journal and the
//! cache, and is acknowledged; a flusher thread applies the writes to the
//! store later, in batches.
//!
//! * **Journal first.** A write is appended to the journal (its own
//!   directory: [`WriteBehind::new`]) before it is acknowledged, written to
//!   the OS ([`Acknowledge::Written`]: it survives the process, and the next
//!   [`StoreCache::sync`] makes it survive the machine) or synced
//!   ([`Acknowledge::Synced`], one `fdatasync` shared by the writers that
//!   wait on it). On open, what the journal holds is queued again and the
//!   cache forgets those keys: at-least-once, and the latest value of a key
//!   wins, so an older value never lands over a newer one.
//! * **Coalescing.** The queue holds one entry per key: its latest write.
//!   The flusher takes entries oldest first, `batch_size` at a time, when
//!   one has waited `delay`, when `batch_size` are queued, or when a
//!   [`flush`](StoreCache::flush) asks, and applies each batch in one
//!   [`Store::store_batch`]. An entry leaves the queue when the store has
//!   its latest write; a write that came during the batch stays queued.
//! * **Failures.** A batch that fails is retried, with a backoff doubling
//!   from `retry_base` to `retry_max`; its entries stay queued (and readable).
//! * **Backpressure.** At `max_pending` keys queued a write of a new key
//!   waits for room, for up to a bound, or is refused ([`Backpressure`], as
//!   the disk tier has it), counted; nothing is dropped.
//! * **Reads.** A miss reads the queue before the store: a key whose write
//!   is queued is served from the queue, never from the older store.
//! * **Retiring.** The journal rotates at `file_size`; a file is deleted
//!   when every write in it has reached the store or been superseded by a
//!   newer write still queued, and the cache has synced since (at most once
//!   a second while the queue is not empty, and each time it empties): the
//!   journal names every key whose cached copy a crash could roll back.
//!
//! Every write the flusher applies goes through the store only: what is in
//! the cache is already the latest.

use super::journal::Journal;
use super::store::{Store, StoreCache, StoreError};
use crate::cache::Cache;
use crate::disk::Backpressure;
use crate::format::journal::{JOURNAL_WRITE_BEHIND, WriteRecord};
use crate::sync::{Arc, AtomicU64, Condvar, Mutex, Ordering};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// When a write-behind write is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Acknowledge {
    /// Once the journal has it in the OS: a crash of the process loses
    /// nothing acknowledged, a crash of the machine loses what came after
    /// the last [`StoreCache::sync`].
    Written,
    /// Once the journal has it on the device (`fdatasync`, shared by the
    /// writers waiting at the same time).
    Synced,
}

/// The settings of write-behind ([`StoreCache::write_behind`]).
#[derive(Clone, Debug)]
pub struct WriteBehind {
    pub(crate) dir: PathBuf,
    pub(crate) delay: Duration,
    pub(crate) batch_size: usize,
    pub(crate) max_pending: usize,
    pub(crate) backpressure: Backpressure,
    pub(crate) acknowledge: Acknowledge,
    pub(crate) retry_base: Duration,
    pub(crate) retry_max: Duration,
    pub(crate) file_size: u64,
}

impl WriteBehind {
    /// Write-behind journaled in `dir` (a directory of its own), with the
    /// defaults: a delay of 1 s, batches of 500, 100,000 keys queued at
    /// most (then a write waits up to 10 s for room, and is refused past
    /// that), acknowledged once written to the OS,
    /// retries from 100 ms to 10 s, journal files of 4 MiB.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WriteBehind {
            dir: dir.into(),
            delay: Duration::from_secs(1),
            batch_size: 500,
            max_pending: 100_000,
            backpressure: Backpressure::Wait(Duration::from_secs(10)),
            acknowledge: Acknowledge::Written,
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
            file_size: 4 << 20,
        }
    }

    /// How long a write waits in the queue before it is stored, at most
    /// (unless the store fails): Hazelcast's `write-delay-seconds`.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Writes per [`Store::store_batch`] (at least 1).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// Keys queued at most (at least 1), and what a write does past it.
    pub fn max_pending(mut self, n: usize, backpressure: Backpressure) -> Self {
        self.max_pending = n.max(1);
        self.backpressure = backpressure;
        self
    }

    /// When a write is acknowledged.
    pub fn acknowledge(mut self, acknowledge: Acknowledge) -> Self {
        self.acknowledge = acknowledge;
        self
    }

    /// The backoff of a failed batch: from `base`, doubling, up to `max`.
    pub fn retry(mut self, base: Duration, max: Duration) -> Self {
        self.retry_base = base.max(Duration::from_millis(1));
        self.retry_max = max.max(self.retry_base);
        self
    }

    /// Bytes of a journal file before the next is started (at least 4
    /// KiB). Each file is written with zeros to this size when it is
    /// created (so a sync of an append changes no metadata).
    pub fn journal_file_size(mut self, bytes: u64) -> Self {
        self.file_size = bytes.max(4096);
        self
    }
}

/// What write-behind has done ([`StoreCache::write_behind_stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteBehindStats {
    /// Keys queued (each its latest write).
    pub queued: u64,
    /// How long the oldest queued entry has waited.
    pub oldest_age: Duration,
    /// Writes applied to the store.
    pub stored: u64,
    /// Batches applied.
    pub batches: u64,
    /// Writes superseded in the queue by a newer write of their key.
    pub coalesced: u64,
    /// Batches that failed (each retried).
    pub failures: u64,
    /// The last failure's message.
    pub last_failure: Option<String>,
    /// Writes that waited for room in the queue.
    pub waited: u64,
    /// Writes refused: the queue was full.
    pub refused: u64,
    /// Writes found in the journal on open and queued again.
    pub replayed: u64,
    /// Journal files and records found damaged on open (see the log).
    pub journal_damage: u64,
    /// Journal files.
    pub journal_files: u64,
}

/// A write taken for a batch: key, sequence number, value (`None`: a delete).
type Taken = (Vec<u8>, u64, Option<Bytes>);

struct Pending {
    /// The key's place in the queue's order (the sequence number of the
    /// first write that is not in the store yet, or a later one).
    first_seq: u64,
    /// Its latest write.
    seq: u64,
    value: Option<Bytes>,
    since: Instant,
}

#[derive(Default)]
struct Queue {
    by_key: HashMap<Vec<u8>, Pending>,
    order: BTreeMap<u64, Vec<u8>>,
    /// Writes up to this sequence number are wanted in the store now.
    flush_upto: u64,
    stopping: bool,
    last_failure: Option<String>,
    /// Writes journaled and not queued yet (their writer is between the
    /// two): the journal keeps their files too.
    unqueued: std::collections::BTreeSet<u64>,
}

impl Queue {
    /// The lowest sequence number the journal must keep.
    fn keep_from(&self) -> u64 {
        let queued = self
            .order
            .first_key_value()
            .map_or(u64::MAX, |(&seq, _)| seq);
        let unqueued = self.unqueued.first().copied().unwrap_or(u64::MAX);
        queued.min(unqueued)
    }
}

struct Log {
    journal: Journal,
    next_seq: u64,
    payload: Vec<u8>,
}

#[derive(Default)]
struct Synced {
    upto: u64,
    syncing: bool,
}

const STORED: usize = 0;
const BATCHES: usize = 1;
const COALESCED: usize = 2;
const FAILURES: usize = 3;
const WAITED: usize = 4;
const REFUSED: usize = 5;

/// The state writers, readers and the flusher share.
pub(crate) struct Behind {
    config: WriteBehind,
    queue: Mutex<Queue>,
    /// Signalled when the queue gains or loses entries.
    changed: Condvar,
    log: Mutex<Log>,
    synced: Mutex<Synced>,
    synced_changed: Condvar,
    counts: [AtomicU64; 6],
    replayed: u64,
    damage: u64,
    /// The flusher, until a close joins it.
    flusher: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Set once a close has joined the flusher.
    joined: std::sync::atomic::AtomicBool,
}

/// Held by the `StoreCache` handles only: the last one dropped stops the
/// flusher (after it has stored what it can; the rest stays journaled).
pub(crate) struct BehindHandle(pub(crate) Arc<Behind>);

impl Drop for BehindHandle {
    fn drop(&mut self) {
        if self.0.joined.load(Ordering::SeqCst) {
            return; // closed already
        }
        // An open of the journal, and the process's exit, wait for the
        // flusher's end.
        crate::closing::begin(&self.0.config.dir);
        self.0.queue.lock().stopping = true;
        self.0.changed.notify_all();
    }
}

fn journal_error<E: std::error::Error + 'static>(e: std::io::Error) -> StoreError<E> {
    StoreError::Journal(Arc::new(e))
}

impl Behind {
    /// Opens the journal, queues what it holds; the keys it names, the
    /// caller makes the cache forget.
    fn open(config: WriteBehind) -> std::io::Result<(Behind, Vec<Vec<u8>>)> {
        let id =
            crate::key::hash_key(format!("{:?}{}", Instant::now(), std::process::id()).as_bytes());
        let opened = Journal::open(
            &config.dir,
            JOURNAL_WRITE_BEHIND,
            "wb",
            id,
            config.file_size,
        )?;
        let mut damage = opened.damage.len() as u64;
        let mut latest: HashMap<Vec<u8>, (u64, Option<Bytes>)> = HashMap::new();
        let mut max_seq = 0;
        for payload in &opened.records {
            match WriteRecord::decode(payload) {
                Ok(r) => {
                    max_seq = max_seq.max(r.seq);
                    let newer = latest.get(r.key).is_none_or(|(seq, _)| *seq < r.seq);
                    if newer {
                        latest.insert(r.key.to_vec(), (r.seq, r.value.map(Bytes::copy_from_slice)));
                    }
                }
                Err(e) => {
                    log::error!(
                        "write-behind journal {}: a record that cannot be read: {e}",
                        config.dir.display()
                    );
                    damage += 1;
                }
            }
        }
        let mut journal = opened.journal;
        journal.mark_older(max_seq);
        let now = Instant::now();
        let mut queue = Queue::default();
        let keys: Vec<Vec<u8>> = latest.keys().cloned().collect();
        for (key, (seq, value)) in latest {
            queue.order.insert(seq, key.clone());
            queue.by_key.insert(
                key,
                Pending {
                    first_seq: seq,
                    seq,
                    value,
                    since: now,
                },
            );
        }
        if !keys.is_empty() {
            log::info!(
                "write-behind journal {}: {} writes queued again",
                config.dir.display(),
                keys.len()
            );
        }
        let behind = Behind {
            replayed: keys.len() as u64,
            damage,
            queue: Mutex::new(queue),
            changed: Condvar::new(),
            log: Mutex::new(Log {
                journal,
                next_seq: max_seq + 1,
                payload: Vec::new(),
            }),
            synced: Mutex::new(Synced::default()),
            synced_changed: Condvar::new(),
            counts: [0; 6].map(AtomicU64::new),
            flusher: Mutex::new(None),
            joined: std::sync::atomic::AtomicBool::new(false),
            config,
        };
        Ok((behind, keys))
    }

    /// Waits for room for `key` (or refuses).
    fn admit<E: std::error::Error + 'static>(&self, key: &[u8]) -> Result<(), StoreError<E>> {
        let mut queue = self.queue.lock();
        if queue.stopping {
            return Err(StoreError::Cache(crate::Error::Closed));
        }
        let mut counted = false;
        let mut deadline = None;
        while queue.by_key.len() >= self.config.max_pending && !queue.by_key.contains_key(key) {
            let refuse = match self.config.backpressure {
                Backpressure::Wait(bound) => {
                    let at = *deadline.get_or_insert_with(|| Instant::now() + bound);
                    if !counted {
                        self.counts[WAITED].fetch_add(1, Ordering::Relaxed);
                        counted = true;
                    }
                    self.changed.wait_until(&mut queue, at).timed_out()
                        && queue.by_key.len() >= self.config.max_pending
                }
                _ => true,
            };
            if refuse {
                self.counts[REFUSED].fetch_add(1, Ordering::Relaxed);
                return Err(StoreError::Full);
            }
        }
        Ok(())
    }

    /// Journals a write; its sequence number once acknowledged.
    fn journal(&self, key: &[u8], value: Option<&[u8]>) -> std::io::Result<u64> {
        let mut log = self.log.lock();
        let seq = log.next_seq;
        log.next_seq += 1;
        let Log {
            journal, payload, ..
        } = &mut *log;
        payload.clear();
        WriteRecord { seq, key, value }.encode(payload);
        // Noted under the journal's lock, so a retirement (which holds it)
        // sees every write journaled.
        self.queue.lock().unqueued.insert(seq);
        if let Err(e) = journal.append(payload) {
            self.queue.lock().unqueued.remove(&seq);
            // Whatever part of it was written must not end the file's
            // readable records: what follows goes to a new file.
            let _ = journal.rotate(seq);
            return Err(e);
        }
        if journal.current_len() >= self.config.file_size {
            journal.rotate(seq)?;
        }
        drop(log);
        if self.config.acknowledge == Acknowledge::Synced {
            self.sync_upto(seq)?;
        }
        Ok(seq)
    }

    /// Returns once the journal is synced up to `seq` (one sync for every
    /// writer waiting at the time).
    fn sync_upto(&self, seq: u64) -> std::io::Result<()> {
        let mut synced = self.synced.lock();
        while synced.upto < seq {
            if synced.syncing {
                self.synced_changed.wait(&mut synced);
                continue;
            }
            synced.syncing = true;
            drop(synced);
            let (file, upto) = {
                let log = self.log.lock();
                (log.journal.current(), log.next_seq - 1)
            };
            // Older files were synced when they were rotated out.
            let result = file.sync_data();
            synced = self.synced.lock();
            synced.syncing = false;
            if result.is_ok() {
                synced.upto = synced.upto.max(upto);
            }
            self.synced_changed.notify_all();
            result?;
        }
        Ok(())
    }

    /// Syncs every write journaled so far.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        let upto = self.log.lock().next_seq - 1;
        self.sync_upto(upto)
    }

    fn enqueue(&self, key: &[u8], seq: u64, value: Option<Bytes>) {
        let mut queue = self.queue.lock();
        queue.unqueued.remove(&seq);
        match queue.by_key.get_mut(key) {
            Some(p) => {
                p.seq = seq;
                p.value = value;
                self.counts[COALESCED].fetch_add(1, Ordering::Relaxed);
            }
            None => {
                queue.order.insert(seq, key.to_vec());
                queue.by_key.insert(
                    key.to_vec(),
                    Pending {
                        first_seq: seq,
                        seq,
                        value,
                        since: Instant::now(),
                    },
                );
                // The flusher waits without a deadline on an empty queue;
                // once it holds entries, it waits for the oldest's delay,
                // which a newer entry never brings forward.
                let len = queue.by_key.len();
                if len == 1 || len >= self.config.batch_size {
                    self.changed.notify_all();
                }
            }
        }
    }

    /// The queued write of `key`: `Some(None)` for a queued delete.
    pub(crate) fn queued(&self, key: &[u8]) -> Option<Option<Bytes>> {
        self.queue.lock().by_key.get(key).map(|p| p.value.clone())
    }

    /// Waits until every write acknowledged before the call is in the
    /// store, or `timeout` passes (`false`).
    pub(crate) fn flush(&self, timeout: Option<Duration>) -> bool {
        let target = self.log.lock().next_seq - 1;
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut queue = self.queue.lock();
        queue.flush_upto = queue.flush_upto.max(target);
        self.changed.notify_all();
        while queue
            .order
            .first_key_value()
            .is_some_and(|(&seq, _)| seq <= target)
        {
            match deadline {
                Some(d) => {
                    if self.changed.wait_until(&mut queue, d).timed_out() {
                        return false;
                    }
                }
                None => self.changed.wait(&mut queue),
            }
        }
        true
    }

    pub(crate) fn stats(&self) -> WriteBehindStats {
        let (queued, oldest_age, last_failure) = {
            let queue = self.queue.lock();
            let oldest = queue
                .order
                .first_key_value()
                .and_then(|(_, key)| queue.by_key.get(key))
                .map(|p| p.since.elapsed())
                .unwrap_or_default();
            (
                queue.by_key.len() as u64,
                oldest,
                queue.last_failure.clone(),
            )
        };
        let count = |i: usize| self.counts[i].load(Ordering::Relaxed);
        WriteBehindStats {
            queued,
            oldest_age,
            stored: count(STORED),
            batches: count(BATCHES),
            coalesced: count(COALESCED),
            failures: count(FAILURES),
            last_failure,
            waited: count(WAITED),
            refused: count(REFUSED),
            replayed: self.replayed,
            journal_damage: self.damage,
            journal_files: self.log.lock().journal.files() as u64,
        }
    }

    /// The next batch, oldest first, once one is due; `None` once stopping
    /// and the queue is empty (or the store failed while stopping).
    fn next_batch(&self, retry_at: Option<Instant>) -> Option<Vec<Taken>> {
        let mut queue = self.queue.lock();
        loop {
            let Some((&first, key)) = queue.order.first_key_value() else {
                if queue.stopping {
                    return None;
                }
                self.changed.wait(&mut queue);
                continue;
            };
            if queue.stopping && retry_at.is_some() {
                return None; // the store fails: what is left stays journaled
            }
            let since = queue.by_key.get(key).map_or_else(Instant::now, |p| p.since);
            let now = Instant::now();
            let due_at = if queue.stopping
                || queue.by_key.len() >= self.config.batch_size
                || first <= queue.flush_upto
            {
                now
            } else {
                since + self.config.delay
            };
            let at = retry_at.map_or(due_at, |r| r.max(due_at));
            if at <= now {
                break;
            }
            let _ = self.changed.wait_until(&mut queue, at);
        }
        let batch = queue
            .order
            .values()
            .take(self.config.batch_size)
            .filter_map(|key| {
                let p = queue.by_key.get(key)?;
                Some((key.clone(), p.seq, p.value.clone()))
            })
            .collect();
        Some(batch)
    }

    /// After the store took `batch` (taken at `taken`): what it now has
    /// leaves the queue. Returns whether the queue is empty.
    fn stored(&self, batch: &[Taken], taken: Instant) -> bool {
        let empty = {
            let mut queue = self.queue.lock();
            let Queue { by_key, order, .. } = &mut *queue;
            for (key, seq, _) in batch {
                let Some(p) = by_key.get_mut(key) else {
                    continue;
                };
                order.remove(&p.first_seq);
                if p.seq == *seq {
                    by_key.remove(key);
                } else {
                    // A newer write came meanwhile: queued at its place.
                    p.first_seq = p.seq;
                    p.since = taken;
                    order.insert(p.seq, key.clone());
                }
            }
            queue.last_failure = None;
            self.changed.notify_all();
            queue.order.is_empty()
        };
        self.counts[STORED].fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.counts[BATCHES].fetch_add(1, Ordering::Relaxed);
        empty
    }

    /// Deletes the journal files every write of which is in the store, once
    /// the cache has synced: a crash must not bring back an older value the
    /// cache's disk tier still holds for a key the journal no longer names
    /// (an open makes the cache forget the keys the journal names).
    ///
    /// Only this thread (the flusher) takes writes out of the queue, so
    /// what is out of it when the bound is read, under the journal's lock
    /// (no write is journaled meanwhile), was stored before the sync began.
    fn retire(&self, cache: &Cache) {
        if let Err(e) = cache.sync() {
            log::warn!("write-behind: the cache cannot sync ({e}): the journal keeps its files");
            return;
        }
        let mut log = self.log.lock();
        let bound = self.queue.lock().keep_from();
        log.journal.retire_below(bound);
    }

    fn failed(&self, e: &dyn std::error::Error) {
        self.counts[FAILURES].fetch_add(1, Ordering::Relaxed);
        log::warn!("write-behind: a batch failed, to be retried: {e}");
        self.queue.lock().last_failure = Some(e.to_string());
    }
}

/// The flusher: batches from the queue to the store until stopped; then it
/// lets the journal's directory go.
fn run<S: Store>(behind: Arc<Behind>, store: Arc<S>, cache: Cache) {
    flush_until_stopped(&behind, &*store, &cache);
    behind.log.lock().journal.release();
    crate::closing::end(&behind.config.dir);
}

/// How often the flusher retires journal files while the queue is not empty.
const RETIRE_EVERY: Duration = Duration::from_secs(1);

fn flush_until_stopped<S: Store>(behind: &Behind, store: &S, cache: &Cache) {
    let mut backoff: Option<Duration> = None;
    let mut retry_at = None;
    let mut retired = Instant::now();
    while let Some(batch) = behind.next_batch(retry_at) {
        let taken = Instant::now();
        let refs: Vec<(&[u8], Option<&[u8]>)> = batch
            .iter()
            .map(|(k, _, v)| (&k[..], v.as_deref()))
            .collect();
        match store.store_batch(&refs) {
            Ok(()) => {
                let empty = behind.stored(&batch, taken);
                if empty || retired.elapsed() >= RETIRE_EVERY {
                    behind.retire(cache);
                    retired = Instant::now();
                }
                backoff = None;
                retry_at = None;
            }
            Err(e) => {
                behind.failed(&e);
                let next = backoff.map_or(behind.config.retry_base, |b| {
                    (b * 2).min(behind.config.retry_max)
                });
                backoff = Some(next);
                retry_at = Some(Instant::now() + next);
            }
        }
    }
}

impl<S: Store> StoreCache<S> {
    /// Turns writes ([`put`](Self::put), [`delete`](Self::delete)) into
    /// durable write-behind: journaled in `config`'s directory and cached,
    /// then acknowledged, and stored later by a flusher thread. Opening
    /// queues again what the journal holds from a previous run (a crash, or
    /// a drop before everything was stored), and the cache forgets those
    /// keys, so the queue is what is read for them until the store has it.
    pub fn write_behind(mut self, config: WriteBehind) -> Result<Self, StoreError<S::Error>> {
        if self.behind().is_some() {
            return Err(journal_error(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "write-behind is on already",
            )));
        }
        let (behind, replayed) = Behind::open(config).map_err(journal_error)?;
        for key in &replayed {
            self.cache().remove(key);
        }
        let behind = Arc::new(behind);
        let (worker, store, cache) = (Arc::clone(&behind), self.store_arc(), self.cache().clone());
        let flusher = std::thread::Builder::new()
            .name("larder-write-behind".into())
            .spawn(move || run(worker, store, cache))
            .map_err(journal_error)?;
        *behind.flusher.lock() = Some(flusher);
        self.set_behind(BehindHandle(behind))?;
        Ok(self)
    }

    /// Waits until every write acknowledged before the call is in the
    /// store (at once without write-behind). While the store fails, this
    /// waits: [`flush_timeout`](Self::flush_timeout) gives up.
    pub fn flush(&self) {
        if let Some(b) = self.behind() {
            b.flush(None);
        }
    }

    /// [`flush`](Self::flush), for at most `timeout`: `false` if writes
    /// acknowledged before the call are still queued.
    pub fn flush_timeout(&self, timeout: Duration) -> bool {
        self.behind().is_none_or(|b| b.flush(Some(timeout)))
    }

    /// Closes: write-behind stores what is queued (until the store fails),
    /// its flusher ends and lets the journal go, then the cache closes
    /// ([`Cache::close`]). Every handle is closed.
    ///
    /// # Errors
    /// * [`StoreError::Queued`]: the store failed; the writes still queued
    ///   stay journaled, and the next open queues them again.
    /// * [`StoreError::Cache`]: the cache's close failed.
    pub fn close(self) -> Result<(), StoreError<S::Error>> {
        let mut queued = 0;
        if let Some(b) = self.behind() {
            b.queue.lock().stopping = true;
            b.changed.notify_all();
            if let Some(flusher) = b.flusher.lock().take() {
                let _ = flusher.join();
            }
            b.joined.store(true, Ordering::SeqCst);
            queued = b.queue.lock().by_key.len() as u64;
        }
        self.cache().clone().close()?;
        if queued > 0 {
            return Err(StoreError::Queued(queued));
        }
        Ok(())
    }

    /// What write-behind has done (zeros without it).
    pub fn write_behind_stats(&self) -> WriteBehindStats {
        self.behind().map(|b| b.stats()).unwrap_or_default()
    }

    /// A write-behind write: journaled, cached, queued. Called under the
    /// key's stripe lock.
    pub(crate) fn write_behind_op(
        &self,
        behind: &Behind,
        key: &[u8],
        value: Option<Bytes>,
    ) -> Result<(), StoreError<S::Error>> {
        behind.admit(key)?;
        let seq = behind
            .journal(key, value.as_deref())
            .map_err(journal_error)?;
        match &value {
            Some(v) => {
                let _ = self.cache_value(key, v.clone(), None); // refused: dropped
            }
            None => {
                self.cache().remove(key);
            }
        }
        behind.enqueue(key, seq, value);
        Ok(())
    }
}
