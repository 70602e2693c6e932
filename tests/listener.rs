//! The removal listener, checked against a model: every entry that leaves
//! the cache (both tiers) is reported exactly once, with a cause that fits
//! what happened, soon after it happened; no entry is reported while it can
//! still be read, and none leaves without a report.
//!
//! Every write stores a value no other write stores, so a report names the
//! one write whose entry it ends.

use larder::{Cache, ManualClock, Removal, RemovalCause, WritePolicy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the listener heard, with when.
#[derive(Clone, Default)]
struct Heard(Arc<Mutex<Vec<(Removal, Instant)>>>);

impl Heard {
    fn listener(&self) -> impl Fn(Removal) + Send + Sync + 'static {
        let log = Arc::clone(&self.0);
        move |r| log.lock().unwrap().push((r, Instant::now()))
    }

    fn take(&self) -> Vec<(Removal, Instant)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// One write: its key, and its deadline on the manual clock (ns), if any.
#[derive(Clone, Debug)]
struct Write {
    key: Vec<u8>,
    deadline: Option<u64>,
}

/// The model: every write made, which are reported, and each key's latest.
#[derive(Default)]
struct Model {
    /// Value → its write.
    writes: HashMap<Vec<u8>, Write>,
    /// Value → the cause it was reported with.
    reported: HashMap<Vec<u8>, RemovalCause>,
    /// Key → the value its latest write stored.
    latest: HashMap<Vec<u8>, Vec<u8>>,
    /// The longest delay seen between an operation's end and a report it caused.
    max_delay: Duration,
}

impl Model {
    fn expired(&self, value: &[u8], now: u64) -> bool {
        self.writes[value].deadline.is_some_and(|d| d <= now)
    }

    /// Takes in what the listener heard, checking that each report is of a
    /// write made, reported once, with a cause that fits: the operation's
    /// own (`expected`: the causes an operation on a key may give it), an
    /// expiry only past the deadline, eviction and reclaim at any time.
    fn hear(
        &mut self,
        heard: Vec<(Removal, Instant)>,
        now: u64,
        op_end: Instant,
        expected: &dyn Fn(&[u8], RemovalCause) -> bool,
    ) {
        for (r, at) in heard {
            let value = r
                .value
                .clone()
                .expect("a value for every report here")
                .to_vec();
            let w = self
                .writes
                .get(&value)
                .unwrap_or_else(|| panic!("a report of no write: {r:?}"));
            assert_eq!(w.key, &r.key[..], "the report names the write's key");
            let first = self.reported.insert(value.clone(), r.cause);
            assert!(
                first.is_none(),
                "reported twice: {:?} {} as {:?}, first as {first:?} ({w:?})",
                r.key,
                String::from_utf8_lossy(&value[..value.len().min(12)]),
                r.cause
            );
            let fits = match r.cause {
                RemovalCause::Expired => self.expired(&value, now),
                RemovalCause::Evicted | RemovalCause::Reclaimed => true,
                cause => expected(&r.key, cause),
            };
            assert!(
                fits,
                "a cause that does not fit: {:?} {:?} ({w:?}, now {now})",
                r.cause,
                String::from_utf8_lossy(&value[..value.len().min(12)])
            );
            self.max_delay = self.max_delay.max(at.saturating_duration_since(op_end));
        }
    }

    fn is_reported(&self, value: &[u8]) -> bool {
        self.reported.contains_key(value)
    }

    /// An entry the cache no longer answers for: it must be reported now
    /// (or have expired), or within the bound, if the disk's reclaim (a
    /// thread of its own) took it an instant ago.
    fn gone(&mut self, heard: &Heard, value: &[u8], now: u64, what: &str) {
        let start = Instant::now();
        while !self.is_reported(value) && !self.expired(value, now) {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "{what}: {:?} left without a report",
                String::from_utf8_lossy(&value[..value.len().min(12)])
            );
            std::thread::sleep(Duration::from_millis(1));
            self.hear(heard.take(), now, start, &|_, _| false);
        }
    }
}

struct Run {
    dir: tempfile::TempDir,
    clock: ManualClock,
    heard: Heard,
    policy: WritePolicy,
}

impl Run {
    fn open(&self) -> Cache {
        Cache::builder()
            .memory_capacity(24 << 10)
            .shards(2)
            .clock(self.clock.clone())
            .disk(self.dir.path(), 8 * (64 << 10))
            .segment_size(64 << 10)
            .write_policy(self.policy)
            .flush_interval(Duration::from_millis(2))
            .removal_listener(self.heard.listener())
            .build()
            .unwrap()
    }
}

fn value(key: u32, version: u32, rng: &mut StdRng) -> Vec<u8> {
    let mut v = format!("{key}:{version}:").into_bytes();
    let len = rng.random_range(50..1500);
    v.resize(len.max(v.len()), b'.');
    v
}

fn key(k: u32) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

fn randomized(seed: u64, policy: WritePolicy, ops: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let run = Run {
        dir: tempfile::tempdir().unwrap(),
        clock: ManualClock::new(),
        heard: Heard::default(),
        policy,
    };
    let mut cache = run.open();
    let mut m = Model::default();
    let mut version = 0u32;
    let keys = 1_000u32;
    run.clock.advance(Duration::from_secs(1));
    let mut clock_ns = 1_000_000_000u64; // where the manual clock stands
    let mut last_op = Instant::now();
    for _ in 0..ops {
        // The manual clock runs ahead of the wall clock (the disk's reclaim
        // judges expiry by the wall clock, and each open maps one to the
        // other anew), by a margin set at each open and growing with every
        // operation, so that reclaim never calls an entry expired the model
        // thinks live.
        let step = Duration::from_millis(rng.random_range(1..4)) + 2 * last_op.elapsed();
        last_op = Instant::now();
        run.clock.advance(step);
        clock_ns += step.as_nanos() as u64;
        let now = clock_ns;
        let k = rng.random_range(0..keys);
        let kb = key(k);
        let before = m.latest.get(&kb).cloned();
        let live_before = before.as_ref().filter(|v| !m.is_reported(v)).cloned();
        match rng.random_range(0..100) {
            0..=44 => {
                version += 1;
                let v = value(k, version, &mut rng);
                let ttl = rng
                    .random_bool(0.3)
                    .then(|| Duration::from_millis(rng.random_range(5..400)));
                let r = match ttl {
                    Some(t) => cache.insert_with_ttl(&kb, v.clone(), t),
                    None => cache.insert(&kb, v.clone()),
                };
                r.expect("an insert the cache takes");
                {
                    let deadline = ttl.map(|t| now + t.as_nanos() as u64);
                    m.writes.insert(
                        v.clone(),
                        Write {
                            key: kb.clone(),
                            deadline,
                        },
                    );
                    m.latest.insert(kb.clone(), v);
                }
                let end = Instant::now();
                cache.run_pending_tasks();
                m.hear(run.heard.take(), now, end, &|key, cause| {
                    key == &kb[..] && cause == RemovalCause::Replaced
                });
                if let Some(old) = live_before {
                    m.gone(&run.heard, &old, now, "an overwrite");
                }
            }
            45..=74 => {
                let got = cache.get(&kb);
                let end = Instant::now();
                cache.run_pending_tasks();
                m.hear(run.heard.take(), now, end, &|_, _| false);
                match (&got, &live_before) {
                    (Some(v), _) => {
                        assert_eq!(
                            Some(&v.to_vec()),
                            before.as_ref(),
                            "the latest write's value"
                        );
                        assert!(!m.is_reported(v), "a reported entry was read back: {kb:?}");
                    }
                    (None, Some(v)) => m.gone(&run.heard, v, now, "a miss"),
                    (None, None) => {}
                }
            }
            75..=86 => {
                let got = cache.remove(&kb);
                let end = Instant::now();
                cache.run_pending_tasks();
                m.hear(run.heard.take(), now, end, &|key, cause| {
                    key == &kb[..] && cause == RemovalCause::Explicit
                });
                if let Some(v) = &got {
                    assert_eq!(Some(&v.to_vec()), before.as_ref());
                    assert_eq!(m.reported.get(&v.to_vec()), Some(&RemovalCause::Explicit));
                }
                if let Some(v) = &live_before {
                    m.gone(&run.heard, v, now, "a removal");
                }
            }
            87..=90 => {
                let modulus = rng.random_range(3..9u32);
                let pick = move |key: &[u8]| {
                    let k: u32 = std::str::from_utf8(&key[4..]).unwrap().parse().unwrap();
                    k.is_multiple_of(modulus)
                };
                cache.invalidate_entries_if(pick);
                let end = Instant::now();
                cache.run_pending_tasks();
                m.hear(run.heard.take(), now, end, &|key, cause| {
                    cause == RemovalCause::Invalidated && pick(key)
                });
                let picked: Vec<_> = m
                    .latest
                    .iter()
                    .filter(|(key, _)| pick(key))
                    .map(|(_, v)| v.clone())
                    .collect();
                for v in picked {
                    m.gone(&run.heard, &v, now, "an invalidation");
                }
            }
            91..=93 => {
                // Close and reopen: nothing leaves the cache by it.
                drop(cache);
                let end = Instant::now();
                m.hear(run.heard.take(), now, end, &|_, _| false);
                cache = run.open();
                let lead = Duration::from_millis(250); // the new open's margin
                run.clock.advance(lead);
                clock_ns += lead.as_nanos() as u64;
            }
            _ => {
                let _ = cache.sync();
                std::thread::sleep(Duration::from_millis(1)); // reclaim runs
                let end = Instant::now();
                cache.run_pending_tasks();
                m.hear(run.heard.take(), now, end, &|_, _| false);
            }
        }
        cache.validate();
    }
    // Whatever is left leaves now: every write is then reported, once.
    drop(cache);
    let cache = run.open();
    run.clock.advance(Duration::from_millis(250)); // the open's margin
    let now = clock_ns + 250_000_000;
    cache.invalidate_all();
    let end = Instant::now();
    cache.close().unwrap();
    m.hear(run.heard.take(), now, end, &|_, cause| {
        cause == RemovalCause::Invalidated
    });
    let unreported: Vec<_> = m
        .writes
        .keys()
        .filter(|v| !m.is_reported(v))
        .map(|v| String::from_utf8_lossy(&v[..v.len().min(16)]).into_owned())
        .collect();
    assert!(unreported.is_empty(), "never reported: {unreported:?}");
    let causes = |c| m.reported.values().filter(|&&x| x == c).count();
    eprintln!(
        "seed {seed} {policy:?}: {} writes; replaced {}, explicit {}, expired {}, evicted {}, \
         reclaimed {}, invalidated {}; longest delay {:?}",
        m.writes.len(),
        causes(RemovalCause::Replaced),
        causes(RemovalCause::Explicit),
        causes(RemovalCause::Expired),
        causes(RemovalCause::Evicted),
        causes(RemovalCause::Reclaimed),
        causes(RemovalCause::Invalidated),
        m.max_delay,
    );
    // The bound the docs give: a report comes as soon as the listener is
    // done with those before it; here (a listener that only records) that
    // is far below this, on any machine.
    assert!(
        m.max_delay < Duration::from_secs(1),
        "delay {:?}",
        m.max_delay
    );
    // The run went through what it is meant to test.
    for c in [
        RemovalCause::Replaced,
        RemovalCause::Explicit,
        RemovalCause::Expired,
        RemovalCause::Invalidated,
    ] {
        assert!(causes(c) > 0, "no {c:?} in the run");
    }
    assert!(
        causes(RemovalCause::Reclaimed) + causes(RemovalCause::Evicted) > 0,
        "nothing left by eviction or reclaim"
    );
}

#[test]
fn every_entry_that_leaves_is_reported_once_write_behind() {
    for seed in 0..3 {
        randomized(seed, WritePolicy::WriteBehind, 6_000);
    }
}

#[test]
fn every_entry_that_leaves_is_reported_once_demote() {
    for seed in 10..12 {
        randomized(seed, WritePolicy::Demote, 6_000);
    }
}

/// The values one thread wrote, or removed.
type Values = Vec<Vec<u8>>;

/// Threads write, overwrite, remove and read overlapping keys while the
/// disk reclaims; then everything is invalidated. Every value written is
/// reported exactly once, and each value a `remove` returned is reported
/// as `Explicit`.
#[test]
fn threads_racing_on_keys_get_each_entry_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let heard = Heard::default();
    let open = || {
        Cache::builder()
            .memory_capacity(16 << 10)
            .shards(2)
            .disk(dir.path(), 6 * (64 << 10))
            .segment_size(64 << 10)
            .flush_interval(Duration::from_millis(1))
            .removal_listener(heard.listener())
            .build()
            .unwrap()
    };
    let cache = open();
    let threads = 4u32;
    let (written, removed): (Vec<Values>, Vec<Values>) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let cache = &cache;
                s.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(u64::from(t));
                    let (mut written, mut removed) = (Vec::new(), Vec::new());
                    for i in 0..15_000u32 {
                        let k = rng.random_range(0..400u32);
                        match rng.random_range(0..10) {
                            0..=5 => {
                                let mut v = format!("{k}:{t}:{i}:").into_bytes();
                                v.resize(rng.random_range(40..900), b'.');
                                cache.insert(&key(k), v.clone()).unwrap();
                                written.push(v);
                            }
                            6..=7 => {
                                let _ = cache.get(&key(k));
                            }
                            _ => {
                                if let Some(v) = cache.remove(&key(k)) {
                                    removed.push(v.to_vec());
                                }
                            }
                        }
                    }
                    (written, removed)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).unzip()
    });
    cache.invalidate_all();
    cache.close().unwrap();
    let mut reported: HashMap<Vec<u8>, Vec<RemovalCause>> = HashMap::new();
    for (r, _) in heard.take() {
        let v = r.value.expect("a value for every report here").to_vec();
        reported.entry(v).or_default().push(r.cause);
    }
    let written: Vec<_> = written.into_iter().flatten().collect();
    for v in &written {
        let name = String::from_utf8_lossy(&v[..v.len().min(12)]);
        match reported.get(v).map(Vec::as_slice) {
            Some([_]) => {}
            other => panic!("{name} reported {other:?}"),
        }
    }
    assert_eq!(
        reported.len(),
        written.len(),
        "reports of values never written"
    );
    for v in removed.into_iter().flatten() {
        assert_eq!(reported[&v], [RemovalCause::Explicit], "a removed value");
    }
    let reclaimed = reported
        .values()
        .filter(|c| c[0] == RemovalCause::Reclaimed)
        .count();
    assert!(
        reclaimed > 0,
        "the disk reclaimed nothing: the test lost its point"
    );
}

fn memory_only(heard: &Heard, capacity: u64, clock: &ManualClock) -> Cache {
    Cache::builder()
        .memory_capacity(capacity)
        .unit_weight()
        .shards(1)
        .clock(clock.clone())
        .removal_listener(heard.listener())
        .build()
        .unwrap()
}

fn causes_of(heard: &Heard) -> Vec<(String, Option<String>, RemovalCause)> {
    heard
        .take()
        .into_iter()
        .map(|(r, _)| {
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            (text(&r.key), r.value.as_deref().map(text), r.cause)
        })
        .collect()
}

/// Each cause from the memory tier alone, with the value that left.
#[test]
fn memory_reports_each_cause_with_its_value() {
    use RemovalCause::*;
    let (heard, clock) = (Heard::default(), ManualClock::new());
    let cache = memory_only(&heard, 4, &clock);
    let kv = |k: &str, v: Option<&str>, c| (k.to_string(), v.map(str::to_string), c);
    cache.insert(b"a", "1").unwrap();
    cache.insert(b"a", "2").unwrap();
    assert_eq!(cache.remove(b"a").as_deref(), Some(&b"2"[..]));
    cache
        .insert_with_ttl(b"t", "3", Duration::from_secs(1))
        .unwrap();
    clock.advance(Duration::from_secs(2));
    assert!(cache.get(b"t").is_none());
    cache.run_pending_tasks();
    assert_eq!(
        causes_of(&heard),
        [
            kv("a", Some("1"), Replaced),
            kv("a", Some("2"), Explicit),
            kv("t", Some("3"), Expired)
        ]
    );
    for i in 0..10 {
        cache.insert(format!("e{i}").as_bytes(), "x").unwrap();
    }
    cache.invalidate_all();
    cache.run_pending_tasks();
    let heard_now = causes_of(&heard);
    assert_eq!(
        heard_now.iter().filter(|c| c.2 == Evicted).count(),
        6,
        "{heard_now:?}"
    );
    assert_eq!(
        heard_now.iter().filter(|c| c.2 == Invalidated).count(),
        4,
        "{heard_now:?}"
    );
}

/// An insert into a full shard that overwrites its own expired entry: the
/// sweep must not take the entry out first (it would be reported twice, as
/// swept and as overwritten), with or without a disk tier.
#[test]
fn overwriting_an_expired_entry_in_a_full_shard_reports_it_once() {
    let (heard, clock) = (Heard::default(), ManualClock::new());
    let dir = tempfile::tempdir().unwrap();
    for disk in [false, true] {
        let mut b = Cache::builder()
            .memory_capacity(8)
            .unit_weight()
            .shards(1)
            .clock(clock.clone())
            .removal_listener(heard.listener());
        if disk {
            b = b.disk(dir.path(), 4 << 20).segment_size(1 << 20);
        }
        let cache = b.build().unwrap();
        for i in 0..8u8 {
            cache
                .insert_with_ttl(&[i], vec![i], Duration::from_secs(1))
                .unwrap();
        }
        clock.advance(Duration::from_secs(2));
        for i in 0..8u8 {
            cache.insert(&[i], vec![i, i]).unwrap();
        }
        cache.run_pending_tasks();
        let heard_now = causes_of(&heard);
        assert_eq!(heard_now.len(), 8, "disk {disk}: {heard_now:?}");
        assert!(heard_now.iter().all(|c| c.2 == RemovalCause::Expired));
        cache.invalidate_all();
        cache.close().unwrap();
        heard.take();
    }
}

/// A listener that panics, or calls the cache (even `run_pending_tasks`),
/// neither stops the reports nor deadlocks; `close` delivers every report
/// before it returns.
#[test]
fn a_listener_that_panics_or_calls_the_cache_is_survived() {
    let slot: Arc<Mutex<Option<Cache>>> = Arc::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (s, log) = (Arc::clone(&slot), Arc::clone(&seen));
    let cache = Cache::builder()
        .memory_capacity(1 << 20)
        .removal_listener(move |r: Removal| {
            if let Some(c) = &*s.lock().unwrap() {
                c.run_pending_tasks(); // from the listener: returns at once
                let _ = c.get(b"other");
            }
            log.lock().unwrap().push(r.key.clone());
            if r.key == "boom" {
                panic!("a listener's own bug");
            }
        })
        .build()
        .unwrap();
    *slot.lock().unwrap() = Some(cache.clone());
    for k in ["boom", "a", "b"] {
        cache.insert(k.as_bytes(), "v").unwrap();
        cache.remove(k.as_bytes());
    }
    cache.run_pending_tasks();
    assert_eq!(seen.lock().unwrap().len(), 3);
    for i in 0..100u32 {
        cache.insert(&i.to_be_bytes(), "v").unwrap();
        cache.remove(&i.to_be_bytes());
    }
    slot.lock().unwrap().take();
    cache.close().unwrap();
    assert_eq!(
        seen.lock().unwrap().len(),
        103,
        "every report before close returned"
    );
    assert_eq!(
        seen.lock().unwrap().iter().filter(|k| *k == "boom").count(),
        1
    );
}

/// A record that fails its checks when read is reported as `Corrupt`,
/// without a value, once; the rest are not reported at all.
#[test]
fn a_corrupt_record_is_reported_once_without_a_value() {
    use std::io::{Seek, SeekFrom, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let heard = Heard::default();
    let open = || {
        Cache::builder()
            .memory_capacity(16 << 10)
            .disk(dir.path(), 16 << 20)
            .segment_size(256 << 10)
            .removal_listener(heard.listener())
            .build()
            .unwrap()
    };
    let cache = open();
    for i in 0..3_000u32 {
        cache.insert(&i.to_be_bytes(), vec![i as u8; 300]).unwrap();
    }
    cache.close().unwrap();
    heard.take(); // memory's evictions were kept on disk: nothing to hear
    let mut segs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&segs[1])
        .unwrap();
    f.seek(SeekFrom::Start(100 << 10)).unwrap();
    f.write_all(&[0xA5; 64]).unwrap();
    drop(f);
    let cache = open();
    let missed: Vec<u32> = (0..3_000u32)
        .filter(|i| cache.get(&i.to_be_bytes()).is_none())
        .collect();
    // Read again: nothing more is reported.
    let again = (0..3_000u32).filter(|i| cache.get(&i.to_be_bytes()).is_none());
    assert_eq!(again.count(), missed.len());
    cache.run_pending_tasks();
    let corrupt: Vec<_> = heard
        .take()
        .into_iter()
        .filter(|(r, _)| r.cause == RemovalCause::Corrupt)
        .map(|(r, _)| {
            assert!(r.value.is_none());
            u32::from_be_bytes(r.key[..].try_into().unwrap())
        })
        .collect();
    assert!(!corrupt.is_empty(), "the damage was found");
    assert_eq!(corrupt, missed, "each key lost to the damage, once");
    cache.close().unwrap();
}
