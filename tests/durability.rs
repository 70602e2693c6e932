//! What `sync()` and `close()` promise, tested as a user's service relies on
//! them (contract.md promises 5, 7, 12; docs/contract.md says which test
//! defends which):
//!
//! * under `WriteBehind` (the default), every insert acknowledged before a
//!   completed `sync()` is there after a SIGKILL, or a simulated power loss,
//!   in a tier far from full;
//! * under the demoting policies, `sync()` covers what the disk tier holds:
//!   removals, and the entries memory has written down by evicting them;
//!   memory-only entries are not on disk by design;
//! * a record too large for a segment is refused at `insert`, never
//!   acknowledged and then lost;
//! * `close()` racing writers on other handles returns `Ok` only over a
//!   cleanly closed directory, and the other handles get `Error::Closed`.
//!
//! The crash cases run a child process (this test binary, as `child`) that
//! does its part, syncs, says so in a file, and waits to be killed.

mod support;

use larder::{Bytes, Cache, CheckpointStatus, Error, WritePolicy};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SEGMENT: u64 = 64 << 10;

fn builder(dir: &Path, policy: WritePolicy) -> larder::CacheBuilder {
    Cache::builder()
        .memory_capacity(20)
        .unit_weight()
        .disk(dir, 256 * SEGMENT)
        .segment_size(SEGMENT)
        .write_policy(policy)
}

fn value(key: u32, version: u32) -> Bytes {
    let mut v = format!("key {key} version {version} ").into_bytes();
    v.resize(200, b'.');
    v.into()
}

fn k(key: u32) -> [u8; 4] {
    key.to_le_bytes()
}

/// The child: runs the scenario `LARDER_DURABILITY_CHILD` names on the
/// directory `LARDER_DURABILITY_DIR`, writes `LARDER_DURABILITY_READY`, and
/// waits to be killed.
#[test]
fn child() {
    let Some(scenario) = std::env::var_os("LARDER_DURABILITY_CHILD") else {
        return; // run by the parent only
    };
    let dir = PathBuf::from(std::env::var_os("LARDER_DURABILITY_DIR").unwrap());
    let power_loss = std::env::var_os("LARDER_DURABILITY_POWER_LOSS").is_some();
    let policy = match scenario.to_str().unwrap() {
        "write-behind" => WritePolicy::WriteBehind,
        _ => WritePolicy::Demote,
    };
    let b = builder(&dir, policy);
    let cache = if power_loss {
        b.simulate_power_loss(42).build().unwrap()
    } else {
        b.build().unwrap()
    };
    match policy {
        WritePolicy::WriteBehind => {
            for key in 0..2000 {
                cache.insert(&k(key), value(key, 0)).unwrap();
            }
        }
        _ => {
            // Each key referenced in memory (it proved reuse), with another
            // admitted in between (a hit on the last one admitted is not a
            // reference), so that memory writes it down when it evicts it.
            for key in 0..200 {
                cache.insert(&k(key), value(key, 0)).unwrap();
                cache
                    .insert(&k(10_000 + key), value(10_000 + key, 0))
                    .unwrap();
                assert!(cache.get(&k(key)).is_some());
            }
            for key in 0..50 {
                cache.remove(&k(key));
            }
            for key in 50..100 {
                cache.insert(&k(key), value(key, 1)).unwrap();
            }
        }
    }
    cache.sync().unwrap();
    std::fs::write(
        std::env::var_os("LARDER_DURABILITY_READY").unwrap(),
        b"synced",
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// Runs `scenario` in a child, kills it with SIGKILL once it has synced, and
/// reopens the directory.
fn run_and_kill(scenario: &str, power_loss: bool) -> (tempfile::TempDir, Cache) {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("cache");
    let ready = work.path().join("ready");
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env("LARDER_DURABILITY_CHILD", scenario)
        .env("LARDER_DURABILITY_DIR", &dir)
        .env("LARDER_DURABILITY_READY", &ready)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if power_loss {
        child.env("LARDER_DURABILITY_POWER_LOSS", "1");
    }
    let mut child = child.spawn().unwrap();
    let started = Instant::now();
    while !ready.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child died before it synced"
        );
        assert!(started.elapsed() < Duration::from_secs(60), "no sync");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let policy = if scenario == "write-behind" {
        WritePolicy::WriteBehind
    } else {
        WritePolicy::Demote
    };
    let cache = builder(&dir, policy).build().unwrap();
    (work, cache)
}

fn inserts_synced_then_killed_all_come_back(power_loss: bool) {
    let (_work, cache) = run_and_kill("write-behind", power_loss);
    let present = (0..2000)
        .filter(|&key| {
            let v = cache.get(&k(key));
            if let Some(v) = &v {
                assert_eq!(*v, value(key, 0), "key {key}: wrong bytes");
            }
            v.is_some()
        })
        .count();
    let r = cache.stats().disk.unwrap().recovery;
    assert_eq!(present, 2000, "synced inserts lost: {r:?}");
}

/// Contract promise 7, kill -9: N inserts, `sync()`, SIGKILL: N of N.
#[test]
fn synced_inserts_survive_a_kill() {
    inserts_synced_then_killed_all_come_back(false);
}

/// The same across a simulated power loss: writes after each file's last
/// `fdatasync` lost, but for a random half of their sectors.
#[test]
fn synced_inserts_survive_a_power_loss() {
    inserts_synced_then_killed_all_come_back(true);
}

/// Under `Demote`, `sync()` covers what the disk tier holds: every removal
/// (a removed key never comes back), and every entry memory had written
/// down by evicting it. An overwrite's new value is memory-only (so absent
/// after a crash), but its old value never comes back.
#[test]
fn under_demote_sync_covers_removals_and_demoted_entries() {
    for power_loss in [false, true] {
        let (_work, cache) = run_and_kill("demote", power_loss);
        for key in 0..50 {
            assert!(cache.get(&k(key)).is_none(), "key {key} was removed");
        }
        for key in 50..100 {
            if let Some(v) = cache.get(&k(key)) {
                assert_eq!(
                    v,
                    value(key, 1),
                    "key {key}: an overwritten value came back"
                );
            }
        }
        // Memory holds 20 entries: at least 80 of these were evicted, and
        // written, having proved reuse.
        let kept = (100..200)
            .filter(|&key| match cache.get(&k(key)) {
                Some(v) => {
                    assert_eq!(v, value(key, 0));
                    true
                }
                None => false,
            })
            .count();
        assert!(
            kept >= 80,
            "only {kept} of 100 demoted entries came back (power loss: {power_loss})"
        );
    }
}

/// A value whose record cannot fit a segment is refused at `insert` with a
/// typed error, and nothing is changed: it was once acknowledged and then
/// silently never persisted (issue: a 1 MiB value, 64 KiB segments).
#[test]
fn a_record_too_large_for_a_segment_is_refused_at_insert() {
    let dir = tempfile::tempdir().unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let cache = Cache::builder()
        .memory_capacity(64 << 20)
        .disk(dir.path(), 64 * SEGMENT)
        .segment_size(SEGMENT)
        .build()
        .unwrap();
    let err = cache.insert(b"huge", noise.clone()).unwrap_err();
    assert!(matches!(err, Error::TooLargeForSegment { .. }), "{err}");
    assert!(err.to_string().contains("segment_size"), "{err}");
    assert!(cache.get(b"huge").is_none(), "nothing half applied");
    // A value that compresses small enough fits.
    let zeros = vec![0u8; 1 << 20];
    cache.insert(b"zeros", zeros.clone()).unwrap();
    cache.sync().unwrap();
    cache.close().unwrap();
    let cache = Cache::builder()
        .memory_capacity(64 << 20)
        .disk(dir.path(), 64 * SEGMENT)
        .segment_size(SEGMENT)
        .write_policy(WritePolicy::Demote)
        .build()
        .unwrap();
    assert_eq!(cache.get(b"zeros").as_deref(), Some(&zeros[..]));
    // The demoting policies write it later, uncompressed as far as the
    // check goes: the raw size must fit.
    assert!(matches!(
        cache.insert(b"huge", noise),
        Err(Error::TooLargeForSegment { .. })
    ));
    assert!(matches!(
        cache.insert(b"zeros", zeros),
        Err(Error::TooLargeForSegment { .. })
    ));
    cache.close().unwrap();
}

/// `close()` while other handles write: whenever it returns `Ok`, the
/// directory is cleanly closed (every segment sealed, the checkpoint
/// current), every insert acknowledged before it is there after a reopen,
/// and the other handles' later calls get `Error::Closed`.
#[test]
fn close_racing_writers_leaves_a_clean_directory_or_fails() {
    let rounds: u32 = support::env_or("LARDER_CLOSE_ROUNDS", 20);
    for round in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            Cache::builder()
                .memory_capacity(1 << 20)
                .disk(dir.path(), 64 * SEGMENT)
                .segment_size(SEGMENT)
                .build()
                .unwrap()
        };
        let cache = open();
        let writers: Vec<_> = (0..3u32)
            .map(|w| {
                let c = cache.clone();
                std::thread::spawn(move || {
                    let mut acknowledged = Vec::new();
                    for i in 0.. {
                        let key = w * 1_000_000 + i;
                        match c.insert(&k(key), value(key, round)) {
                            Ok(()) => acknowledged.push(key),
                            Err(Error::Closed) => break,
                            Err(e) => panic!("insert: {e}"),
                        }
                    }
                    assert!(matches!(c.sync(), Err(Error::Closed)));
                    acknowledged
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(5 + u64::from(round % 7) * 3));
        let closed = cache.close();
        let acknowledged: Vec<u32> = writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        if let Err(e) = closed {
            eprintln!("round {round}: close failed ({e}), allowed");
            continue;
        }
        let report = larder::verify_dir(dir.path()).unwrap();
        assert!(report.is_clean(), "round {round}: {report:?}");
        assert!(report.closed_cleanly, "round {round}: {report:?}");
        assert_eq!(report.checkpoint, "valid", "round {round}: {report:?}");
        let cache = open();
        let stats = cache.stats().disk.unwrap();
        assert_eq!(stats.recovery.checkpoint, CheckpointStatus::Used);
        assert_eq!(stats.recovery.sealed_tails, 0, "nothing left unsealed");
        for &key in &acknowledged {
            assert_eq!(
                cache.get(&k(key)),
                Some(value(key, round)),
                "round {round}: acknowledged key {key} lost"
            );
        }
        cache.close().unwrap();
    }
}

/// The child of the exit test: fills a cache whose flusher is slow to
/// write on its own, drops it, and lets the process exit at once.
#[test]
fn child_that_drops_its_cache_and_exits() {
    let Some(dir) = std::env::var_os("LARDER_EXIT_CHILD_DIR") else {
        return; // run by the parent only
    };
    let cache = Cache::builder()
        .memory_capacity(64 << 20)
        .disk(PathBuf::from(dir), 256 << 20)
        .segment_size(16 << 20)
        .flush_interval(Duration::from_secs(60))
        .build()
        .unwrap();
    for key in 0..8_000u32 {
        cache.insert(&k(key), vec![key as u8; 4096]).unwrap();
    }
    drop(cache); // closed behind; the process exits next
}

/// A program that drops its cache at the end of `main` (the close runs on
/// a thread of its own) still leaves a cleanly closed directory: the exit
/// waits for the close.
#[test]
fn a_cache_dropped_just_before_the_process_exits_is_closed_cleanly() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("cache");
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_that_drops_its_cache_and_exits",
            "--test-threads=1",
        ])
        .env("LARDER_EXIT_CHILD_DIR", &dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let cache = Cache::builder()
        .memory_capacity(64 << 20)
        .disk(&dir, 256 << 20)
        .build()
        .unwrap();
    let recovery = cache.stats().disk.unwrap().recovery;
    assert_eq!(recovery.checkpoint, CheckpointStatus::Used, "{recovery:?}");
    for key in 0..8_000u32 {
        assert_eq!(cache.get(&k(key)).unwrap(), vec![key as u8; 4096]);
    }
    cache.close().unwrap();
}

/// A cache closed before anything was written to its disk tier (a service
/// started and stopped at once; the close-while-writing test met it when
/// its writers had not started yet) leaves a cleanly closed directory, and
/// its next open uses the checkpoint. (The close had no sequence number to
/// record: the directory read as crashed, its checkpoint as stale.)
#[test]
fn a_cache_closed_before_any_write_is_closed_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        Cache::builder()
            .memory_capacity(1 << 20)
            .disk(dir.path(), 64 * SEGMENT)
            .segment_size(SEGMENT)
            .build()
            .unwrap()
    };
    open().close().unwrap();
    let report = larder::verify_dir(dir.path()).unwrap();
    assert!(report.is_clean() && report.closed_cleanly, "{report:?}");
    assert_eq!(report.checkpoint, "valid", "{report:?}");
    let cache = open();
    assert_eq!(
        cache.stats().disk.unwrap().recovery.checkpoint,
        CheckpointStatus::Used
    );
    cache.insert(b"k", "v").unwrap();
    cache.close().unwrap();
    let cache = open();
    assert_eq!(cache.get(b"k").as_deref(), Some(&b"v"[..]));
    cache.close().unwrap();
    assert!(larder::verify_dir(dir.path()).unwrap().closed_cleanly);
}
