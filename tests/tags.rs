//! Tag and event invalidation through a `StoreCache` in front of a real
//! SQLite file: both tiers, across close and reopen, across kill -9 (a
//! child process), a damaged tag journal, a load racing an invalidation.

mod support;

use larder::{Bytes, Cache, EVENT_PUT, Event, Invalidation, SqliteStore, Store, StoreCache};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// Values are `"<tags>|<body>"`, tags comma-separated.
fn tagger(_key: &[u8], value: &[u8]) -> Vec<String> {
    let s = std::str::from_utf8(value).unwrap_or("");
    let tags = s.split('|').next().unwrap_or("");
    tags.split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

fn open(dir: &Path, memory: u64) -> StoreCache<SqliteStore> {
    let cache = Cache::builder()
        .memory_capacity(memory)
        .disk(dir.join("cache"), 8 << 20)
        .segment_size(256 << 10)
        .build()
        .unwrap();
    let store = SqliteStore::open(dir.join("app.db"), "items").unwrap();
    StoreCache::new(cache, store)
        .tags(dir.join("tags"), tagger)
        .unwrap()
}

#[test]
fn an_invalidated_tag_is_unreachable_in_both_tiers_and_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let sc = open(dir.path(), 16 << 10); // most entries end up on disk
    for i in 0..400u32 {
        let tags = if i % 2 == 0 { "tea,all" } else { "coffee,all" };
        sc.put(format!("p{i}").as_bytes(), format!("{tags}|product {i}"))
            .unwrap();
    }
    sc.put(b"plain", "|untagged").unwrap();
    let on_disk = sc.cache().stats().disk.map_or(0, |d| d.entries);
    assert!(on_disk > 300, "{on_disk} entries on disk");
    sc.invalidate_tag("tea").unwrap();
    for i in 0..400u32 {
        let cached = sc.cached(format!("p{i}").as_bytes());
        if i % 2 == 0 {
            assert_eq!(cached, None, "p{i} is tagged tea");
        } else {
            assert!(cached.is_some(), "p{i} is not");
        }
    }
    // A read loads it again, with the current generation: cached again.
    assert_eq!(
        sc.get(b"p0").unwrap().as_deref(),
        Some(&b"tea,all|product 0"[..])
    );
    assert!(sc.cached(b"p0").is_some());
    sc.cache().clone().close().unwrap();
    drop(sc);

    let sc = open(dir.path(), 16 << 10);
    for i in 2..400u32 {
        let cached = sc.cached(format!("p{i}").as_bytes());
        assert_eq!(cached.is_none(), i % 2 == 0, "p{i} after a reopen");
    }
    assert!(
        sc.cached(b"p0").is_some(),
        "reloaded after the invalidation"
    );
    assert_eq!(sc.cached(b"plain").as_deref(), Some(&b"|untagged"[..]));
    sc.invalidate_tag("all").unwrap();
    assert!((0..400u32).all(|i| sc.cached(format!("p{i}").as_bytes()).is_none()));
    assert!(
        sc.cached(b"plain").is_some(),
        "untagged entries are never checked"
    );
}

#[test]
fn a_damaged_tag_journal_makes_every_tagged_entry_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let sc = open(dir.path(), 1 << 20);
    sc.put(b"a", "x|1").unwrap();
    sc.put(b"b", "|2").unwrap();
    sc.invalidate_tag("y").unwrap();
    sc.cache().clone().close().unwrap();
    drop(sc);
    // Flip a byte in the journal's records (the invalidation of y).
    let tags_dir = dir.path().join("tags");
    for entry in std::fs::read_dir(&tags_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "tags") {
            let mut bytes = std::fs::read(&path).unwrap();
            if bytes.len() > 40 {
                bytes[40] ^= 0x55;
                std::fs::write(&path, bytes).unwrap();
            }
        }
    }
    // Another file after it, so the damaged one is not the newest.
    std::fs::write(tags_dir.join(format!("{:016x}.tags", 0xffff)), [0u8; 64]).unwrap();
    let sc = open(dir.path(), 1 << 20);
    assert!(sc.tag_journal_damage() >= 1);
    assert_eq!(sc.cached(b"a"), None, "tagged under the old identity");
    assert_eq!(sc.cached(b"b").as_deref(), Some(&b"|2"[..]));
    assert_eq!(sc.get(b"a").unwrap().as_deref(), Some(&b"x|1"[..]));
}

/// A store whose next load waits for a signal, so an invalidation can land
/// between its read and the cache's insert.
struct Gated {
    inner: SqliteStore,
    gate: std::sync::Mutex<Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>>,
}

impl Store for Gated {
    type Error = larder::SqliteError;
    fn load(&self, key: &[u8]) -> Result<Option<Bytes>, Self::Error> {
        let found = self.inner.load(key);
        if let Some((read, go)) = self.gate.lock().unwrap().take() {
            read.send(()).unwrap();
            go.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        found
    }
    fn store(&self, key: &[u8], value: &[u8]) -> Result<(), Self::Error> {
        self.inner.store(key, value)
    }
    fn delete(&self, key: &[u8]) -> Result<(), Self::Error> {
        self.inner.delete(key)
    }
}

#[test]
fn a_load_that_read_before_an_invalidation_is_not_hit_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let inner = SqliteStore::open(dir.path().join("app.db"), "items").unwrap();
    inner.store(b"k", b"t|old").unwrap();
    let (read_tx, read_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel();
    let store = Gated {
        inner,
        gate: std::sync::Mutex::new(Some((read_tx, go_rx))),
    };
    let cache = Cache::builder().memory_capacity(1 << 20).build().unwrap();
    let sc = StoreCache::new(cache, store)
        .tags(dir.path().join("tags"), tagger)
        .unwrap();
    std::thread::scope(|s| {
        let reader = s.spawn(|| sc.get(b"k").unwrap());
        read_rx.recv().unwrap();
        sc.invalidate_tag("t").unwrap(); // after the store read, before the insert
        go_tx.send(()).unwrap();
        assert_eq!(
            reader.join().unwrap().as_deref(),
            Some(&b"t|old"[..]),
            "served to its caller"
        );
    });
    assert_eq!(sc.cached(b"k"), None, "but not hit after the invalidation");
}

#[test]
fn events_invalidate_derived_keys_and_tags() {
    let dir = tempfile::tempdir().unwrap();
    let sc = open(dir.path(), 1 << 20);
    // A product's update drops its category's listing (key) and its
    // category's tag (every entry derived from it).
    sc.on_event(EVENT_PUT, |e: &Event| {
        e.keys
            .iter()
            .filter(|k| k.starts_with(b"product:"))
            .flat_map(|_| [Invalidation::key("listing:tea"), Invalidation::tag("tea")])
            .collect()
    });
    sc.on_event("price-list-changed", |_e: &Event| {
        vec![Invalidation::tag("prices")]
    });
    sc.put(b"listing:tea", "|[1, 2]").unwrap();
    sc.put(b"review:1", "tea|nice").unwrap();
    sc.put(b"price:1", "prices|3.50").unwrap();
    assert!(sc.cached(b"listing:tea").is_some());
    sc.put(b"product:1", "tea|green tea").unwrap();
    assert_eq!(sc.cached(b"listing:tea"), None);
    assert_eq!(sc.cached(b"review:1"), None);
    assert!(sc.cached(b"price:1").is_some());
    assert!(
        sc.cached(b"product:1").is_none(),
        "tagged tea: dropped by its own event"
    );
    assert_eq!(
        sc.emit(&Event::new("price-list-changed", [b"x"])).unwrap(),
        1
    );
    assert_eq!(sc.cached(b"price:1"), None);
    assert_eq!(sc.emit(&Event::new("nobody-listens", [b"x"])).unwrap(), 0);
}

// The property test: random puts with random tags, invalidations, close +
// reopen and kill -9 + reopen. After each reopen (and at every step), no
// cached value may carry a tag invalidated after the value was written.

const KEYS: u32 = 60;
const TAGS: [&str; 5] = ["a", "b", "c", "d", "e"];

/// One step: a put (key, version, tags) or an invalidation.
fn step(rng: &mut StdRng, version: u64) -> (Option<(u32, u64, String)>, Option<&'static str>) {
    if rng.random_ratio(1, 8) {
        (None, Some(TAGS[rng.random_range(0..TAGS.len())]))
    } else {
        let tags: Vec<&str> = TAGS
            .iter()
            .copied()
            .filter(|_| rng.random_ratio(1, 3))
            .collect();
        (
            Some((rng.random_range(0..KEYS), version, tags.join(","))),
            None,
        )
    }
}

#[test]
#[ignore = "run by tags_survive_restarts_and_kills as a child process"]
fn tags_child() {
    let dir = std::env::var("LARDER_TAGS_DIR").unwrap();
    let seed: u64 = std::env::var("LARDER_TAGS_SEED").unwrap().parse().unwrap();
    let mut version: u64 = std::env::var("LARDER_TAGS_VERSION")
        .unwrap()
        .parse()
        .unwrap();
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(std::env::var("LARDER_TAGS_LOG").unwrap())
        .unwrap();
    let sc = open(Path::new(&dir), 8 << 10);
    let mut rng = StdRng::seed_from_u64(seed);
    loop {
        version += 1;
        match step(&mut rng, version) {
            (Some((key, v, tags)), _) => {
                log.write_all(format!("P {key} {v} {tags}\n").as_bytes())
                    .unwrap(); // one write: whole or not at all
                sc.put(format!("k{key}").as_bytes(), format!("{tags}|{v}"))
                    .unwrap();
            }
            (_, Some(tag)) => {
                sc.invalidate_tag(tag).unwrap();
                log.write_all(format!("I {tag}\n").as_bytes()).unwrap(); // one write: whole or not at all
            }
            _ => unreachable!(),
        }
    }
}

/// The model: for each version, its tags; for each tag, the position (a
/// counter over puts and invalidations) of its last acknowledged
/// invalidation; for each version, the position of its put.
#[derive(Default)]
struct Model {
    tags_of: HashMap<u64, Vec<String>>,
    put_at: HashMap<u64, u64>,
    invalidated_at: HashMap<String, u64>,
    clock: u64,
}

impl Model {
    fn put(&mut self, version: u64, tags: &str) {
        self.clock += 1;
        self.tags_of
            .insert(version, tagger(b"", format!("{tags}|").as_bytes()));
        self.put_at.insert(version, self.clock);
    }

    fn invalidate(&mut self, tag: &str) {
        self.clock += 1;
        self.invalidated_at.insert(tag.to_string(), self.clock);
    }

    /// Checks every cached value: none carries a tag invalidated after it
    /// was put. Returns how many were readable.
    fn check(&self, sc: &StoreCache<SqliteStore>, when: &str) -> usize {
        let mut readable = 0;
        for key in 0..KEYS {
            let Some(v) = sc.cached(format!("k{key}").as_bytes()) else {
                continue;
            };
            readable += 1;
            let s = std::str::from_utf8(&v).unwrap();
            let version: u64 = s.rsplit('|').next().unwrap().parse().unwrap();
            let put_at = self.put_at[&version];
            for tag in &self.tags_of[&version] {
                if let Some(&at) = self.invalidated_at.get(tag) {
                    assert!(
                        at < put_at,
                        "{when}: k{key} = {s:?} was put before tag {tag} was invalidated"
                    );
                }
            }
        }
        readable
    }
}

#[test]
fn tags_survive_restarts_and_kills() {
    let _serial = support::one_at_a_time();
    let iterations: u64 = support::env_or("LARDER_TAGS_ITERATIONS", 20);
    let seed: u64 = support::env_or("LARDER_TAGS_SEED", rand::rng().random());
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log_path = logs.path().join("child.log");
    let exe = std::env::current_exe().unwrap();
    let mut model = Model::default();
    let mut version = 0u64;
    let mut readable = 0;
    for i in 0..iterations {
        if i % 2 == 0 {
            // In process: steps checked as they go, then a clean close.
            let sc = open(dir.path(), 8 << 10);
            readable += model.check(&sc, &format!("seed {seed}, iteration {i}, after a reopen"));
            for _ in 0..300 {
                version += 1;
                match step(&mut rng, version) {
                    (Some((key, v, tags)), _) => {
                        sc.put(format!("k{key}").as_bytes(), format!("{tags}|{v}"))
                            .unwrap();
                        model.put(v, &tags);
                    }
                    (_, Some(tag)) => {
                        sc.invalidate_tag(tag).unwrap();
                        model.invalidate(tag);
                        model.check(
                            &sc,
                            &format!("seed {seed}, iteration {i}, after invalidating {tag}"),
                        );
                    }
                    _ => unreachable!(),
                }
            }
            sc.cache().clone().close().unwrap();
        } else {
            let mut child = std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "tags_child",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("LARDER_TAGS_DIR", dir.path())
                .env("LARDER_TAGS_SEED", rng.random::<u64>().to_string())
                .env("LARDER_TAGS_VERSION", version.to_string())
                .env("LARDER_TAGS_LOG", &log_path)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(rng.random_range(50..400)));
            child.kill().unwrap();
            child.wait().unwrap();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let _ = std::fs::remove_file(&log_path);
            for line in log.lines() {
                let f: Vec<&str> = line.split(' ').collect();
                match f.as_slice() {
                    ["P", _key, v, tags] => {
                        if let Ok(v) = v.parse::<u64>() {
                            model.put(v, tags);
                            version = version.max(v);
                        }
                    }
                    ["P", _key, v] => {
                        if let Ok(v) = v.parse::<u64>() {
                            model.put(v, "");
                            version = version.max(v);
                        }
                    }
                    ["I", tag] if TAGS.contains(tag) => model.invalidate(tag),
                    _ => {} // cut short by the kill
                }
            }
            // A put whose intent was logged may have landed; an invalidation
            // logged only after it returned. Both are in the model.
            let sc = open(dir.path(), 8 << 10);
            readable += model.check(&sc, &format!("seed {seed}, iteration {i}, after kill -9"));
            sc.cache().clone().close().unwrap();
        }
    }
    assert!(
        readable > 0,
        "nothing was ever readable after a reopen: the check tested nothing"
    );
    eprintln!(
        "tags: {iterations} iterations, {readable} values checked after reopens, seed {seed}"
    );
}
