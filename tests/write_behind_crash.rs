//! The write-behind crash loop (issue 17): a child process (this test
//! binary, run as `wb_child`) writes through a `StoreCache` with durable
//! write-behind in front of a real SQLite file, a cache with a small memory
//! tier and a disk tier (so the cache itself comes back from its own disk).
//! Before each write it logs its intent (key, version, store or delete) to
//! a side file, and once the write is acknowledged, an ack (each line one
//! `write`, so the page cache keeps it through the kill). The parent kills it
//! with SIGKILL at a random moment (some kills land while it replays the
//! journal), opens the same files itself, calls `flush()`, and checks, for
//! every key:
//!
//! * the database holds the key's last acknowledged write, or a write of it
//!   the child attempted after that one (an older value never);
//! * a read through the cache returns what the database holds (the cache
//!   never serves an older value it kept on its own disk).
//!
//! Versions grow across iterations, so every write is told apart.
//! `LARDER_WB_CRASH_ITERATIONS` sets the iterations (default 50; the soak
//! in the issue note ran 500) and `LARDER_WB_CRASH_SEED` the seed.

mod support;

use larder::{Acknowledge, Bytes, Cache, SqliteStore, Store, StoreCache, WriteBehind};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const KEYS: u64 = 200;

fn open(dir: &Path, seed: u64) -> StoreCache<SqliteStore> {
    let cache = Cache::builder()
        .memory_capacity(64 << 10)
        .disk(dir.join("cache"), 4 << 20)
        .segment_size(256 << 10)
        .flush_interval(Duration::from_millis(5))
        .build()
        .expect("open the cache");
    let store = SqliteStore::open(dir.join("app.db"), "items").expect("open the database");
    let acknowledge = if seed.is_multiple_of(2) {
        Acknowledge::Written
    } else {
        Acknowledge::Synced
    };
    StoreCache::new(cache, store)
        .write_behind(
            WriteBehind::new(dir.join("wb"))
                .delay(Duration::from_millis(1 + seed % 20))
                .batch_size(1 + (seed % 64) as usize)
                .journal_file_size(16 << 10)
                .acknowledge(acknowledge),
        )
        .expect("open write-behind")
}

fn value(key: u64, version: u64) -> String {
    format!("{key}:{version}:{}", "x".repeat((version % 300) as usize))
}

/// The version a value holds, checked to be `key`'s.
fn version_of(key: u64, v: &[u8]) -> Result<u64, String> {
    let s = std::str::from_utf8(v).map_err(|e| e.to_string())?;
    let mut parts = s.splitn(3, ':');
    let (k, ver) = (parts.next(), parts.next());
    let ver: u64 = ver
        .and_then(|v| v.parse().ok())
        .ok_or(format!("bad value {s:?}"))?;
    if k != Some(&key.to_string()) || s != value(key, ver) {
        return Err(format!(
            "key {key} holds a value of another key or a torn one: {s:?}"
        ));
    }
    Ok(ver)
}

/// The child: writes until killed. Argument: dir, seed, first version.
#[test]
#[ignore = "run by wb_crash_loop as a child process"]
fn wb_child() {
    let dir = std::env::var("LARDER_WB_DIR").unwrap();
    let seed: u64 = std::env::var("LARDER_WB_SEED").unwrap().parse().unwrap();
    let mut version: u64 = std::env::var("LARDER_WB_VERSION").unwrap().parse().unwrap();
    let wb = open(Path::new(&dir), seed);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(std::env::var("LARDER_WB_LOG").unwrap())
        .unwrap();
    loop {
        let key = rng.random_range(0..KEYS);
        let delete = rng.random_ratio(1, 10);
        version += 1;
        let intent = format!("I {key} {version} {}\n", u8::from(delete));
        out.write_all(intent.as_bytes()).unwrap(); // one write: whole or not at all
        let k = key.to_string();
        if delete {
            wb.delete(k.as_bytes()).unwrap();
        } else {
            wb.put(k.as_bytes(), value(key, version)).unwrap();
        }
        out.write_all(format!("A {key} {version}\n").as_bytes())
            .unwrap(); // one write: whole or not at all
        if rng.random_ratio(1, 50) {
            let _ = wb.get(k.as_bytes()).unwrap();
        }
        if rng.random_ratio(1, 500) {
            wb.flush();
        }
    }
}

/// What the parent knows of a key: the state the database held at the
/// last check (and since acknowledged), and what was attempted after.
#[derive(Clone, Default)]
struct Known {
    /// The last acknowledged state: `Some(version)` stored, `None` deleted
    /// (or never written).
    acked: Option<(u64, bool)>,
    /// Writes attempted after the last acknowledged one: (version, delete).
    attempted: Vec<(u64, bool)>,
}

#[test]
fn wb_crash_loop() {
    let _serial = support::one_at_a_time();
    let iterations: u64 = support::env_or("LARDER_WB_CRASH_ITERATIONS", 50);
    let seed: u64 = support::env_or("LARDER_WB_CRASH_SEED", rand::rng().random());
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log_path = logs.path().join("child.log");
    // What the database holds, as the parent last checked it.
    let mut db: HashMap<u64, Option<u64>> = HashMap::new();
    let mut version = 0u64;
    let (mut acked_total, mut replayed_total) = (0u64, 0u64);
    for i in 0..iterations {
        let child_seed = rng.random::<u64>();
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "wb_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("LARDER_WB_DIR", dir.path())
            .env("LARDER_WB_SEED", child_seed.to_string())
            .env("LARDER_WB_VERSION", version.to_string())
            .env("LARDER_WB_LOG", &log_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(5..400)));
        child.kill().unwrap();
        child.wait().unwrap();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let _ = std::fs::remove_file(&log_path);

        let mut known: HashMap<u64, Known> = HashMap::new();
        for (&key, &state) in &db {
            known.entry(key).or_default().acked = state.map(|v| (v, false));
        }
        for line in log.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            let parse = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok());
            match (f.first(), parse(1), parse(2)) {
                (Some(&"I"), Some(key), Some(ver)) => {
                    let delete = f.get(3) == Some(&"1");
                    known.entry(key).or_default().attempted.push((ver, delete));
                    version = version.max(ver);
                }
                (Some(&"A"), Some(key), Some(ver)) => {
                    let k = known.entry(key).or_default();
                    let at = k
                        .attempted
                        .iter()
                        .position(|(v, _)| *v == ver)
                        .expect("acked what was attempted");
                    let (v, delete) = k.attempted[at];
                    k.acked = Some((v, delete));
                    k.attempted.drain(..=at);
                    acked_total += 1;
                }
                _ => {} // a line the kill cut short, or the harness's own
            }
        }

        let wb = open(dir.path(), child_seed);
        replayed_total += wb.write_behind_stats().replayed;
        assert_eq!(
            wb.write_behind_stats().journal_damage,
            0,
            "seed {seed}, iteration {i}"
        );
        wb.flush();
        let mut failures = Vec::new();
        for key in 0..KEYS {
            let k = key.to_string();
            let stored = wb.store().load(k.as_bytes()).unwrap();
            let held = match &stored {
                None => None,
                Some(v) => match version_of(key, v) {
                    Ok(ver) => Some(ver),
                    Err(e) => {
                        failures.push(e);
                        continue;
                    }
                },
            };
            let kn = known.get(&key).cloned().unwrap_or_default();
            let acked_state = kn
                .acked
                .map(|(v, delete)| (!delete).then_some(v))
                .unwrap_or(None);
            let fits_acked = held == acked_state;
            let fits_later = kn.attempted.iter().any(|&(v, delete)| {
                if delete {
                    held.is_none()
                } else {
                    held == Some(v)
                }
            });
            if !fits_acked && !fits_later {
                failures.push(format!(
                    "key {key}: the database holds {held:?}; last acknowledged {:?}, attempted after {:?}",
                    kn.acked, kn.attempted
                ));
            }
            let read = wb.get(k.as_bytes()).unwrap();
            if read != stored {
                failures.push(format!(
                    "key {key}: the cache reads {read:?}, the database holds {stored:?}"
                ));
            }
            db.insert(key, held);
        }
        assert!(
            failures.is_empty(),
            "seed {seed}, iteration {i}: {} failures, first: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        wb.close().unwrap();
    }
    eprintln!(
        "write-behind crash loop: {iterations} iterations, {acked_total} writes acknowledged, \
         {replayed_total} replayed on open, seed {seed}"
    );
    assert!(
        acked_total > iterations * 10,
        "the children wrote too little to test anything"
    );
    let _ = Bytes::new();
}
