//! The corruption campaign on reopen (issue 4, contract promises 1–3): a
//! closed cache's directory is damaged (bit flips, zeroed ranges, truncations
//! and swapped blocks in segments and the checkpoint, garbage files), then:
//!
//! * `verify_dir` detects every damage (read-only, before anything repairs it);
//! * reopening succeeds, or fails with an error a person can read; never a panic;
//! * every value a reopened cache returns is the right one (absent is allowed).
//!
//! `LARDER_CORRUPTION_TRIALS` sets the trials (default 1,000).

mod support;

use larder::{Bytes, Cache};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::path::{Path, PathBuf};

const SEGMENT: u64 = 64 << 10;
const KEYS: u32 = 1500;

fn builder(dir: &Path) -> larder::CacheBuilder {
    Cache::builder()
        .memory_capacity(100)
        .unit_weight()
        .disk(dir, 32 * SEGMENT)
        .segment_size(SEGMENT)
}

fn value(key: u32) -> Bytes {
    let mut v = key.to_le_bytes().to_vec();
    v.resize(60 + (key as usize * 7) % 300, (key % 251) as u8);
    v.into()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg") || p.ends_with("CHECKPOINT"))
        .collect();
    v.sort();
    v
}

/// The bytes of a sealed segment that some checksum covers: up to the end of
/// its summary, and its trailer. (Between them is unused space.)
fn covered(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    if bytes.len() < 32 {
        return std::iter::once(0..bytes.len()).collect();
    }
    let t = &bytes[bytes.len() - 32..];
    let summary_at = u32::from_le_bytes(t[8..12].try_into().unwrap()) as usize;
    let count = u32::from_le_bytes(t[12..16].try_into().unwrap()) as usize;
    let end = (summary_at + count * 24).min(bytes.len() - 32);
    vec![0..end, bytes.len() - 32..bytes.len()]
}

fn pick(rng: &mut StdRng, ranges: &[std::ops::Range<usize>]) -> usize {
    let r = &ranges[rng.random_range(0..ranges.len())];
    rng.random_range(r.clone())
}

/// Damages one file of `dir`; returns what it did, or `None` if it changed nothing.
fn damage(dir: &Path, rng: &mut StdRng) -> Option<String> {
    let targets = files(dir);
    let path = &targets[rng.random_range(0..targets.len())];
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let original = std::fs::read(path).unwrap();
    let mut bytes = original.clone();
    let ranges = if name.ends_with(".seg") {
        covered(&bytes)
    } else {
        std::iter::once(0..bytes.len()).collect()
    };
    let what = match rng.random_range(0..6) {
        0 => {
            let at = pick(rng, &ranges);
            bytes[at] ^= 1 << rng.random_range(0..8);
            format!("flip a bit at {at} of {name}")
        }
        1 => {
            let at = pick(rng, &ranges);
            let end = (at + rng.random_range(1..600)).min(bytes.len());
            bytes[at..end].fill(0);
            format!("zero {at}..{end} of {name}")
        }
        2 => {
            let at = pick(rng, &ranges);
            bytes.truncate(at);
            format!("truncate {name} at {at}")
        }
        3 if bytes.len() >= 8192 => {
            let (a, b) = (
                rng.random_range(0..bytes.len() / 4096) * 4096,
                rng.random_range(0..bytes.len() / 4096) * 4096,
            );
            let block_a = bytes[a..a + 4096].to_vec();
            bytes.copy_within(b..b + 4096, a);
            bytes[b..b + 4096].copy_from_slice(&block_a);
            format!("swap blocks at {a} and {b} of {name}")
        }
        4 => {
            let id = 900 + rng.random_range(0..50);
            let garbage: Vec<u8> = (0..rng.random_range(0..3 * SEGMENT as usize))
                .map(|_| rng.random())
                .collect();
            std::fs::write(dir.join(format!("{id:010}.seg")), garbage).unwrap();
            return Some(format!("garbage segment file {id}"));
        }
        _ => {
            let at = pick(rng, &ranges);
            for b in &mut bytes[at..(at + 64).min(original.len())] {
                *b = rng.random();
            }
            format!("random bytes at {at} of {name}")
        }
    };
    if bytes == original {
        return None;
    }
    std::fs::write(path, &bytes).unwrap();
    Some(what)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn damage_on_reopen_is_detected_and_never_returns_wrong_bytes() {
    let trials: u32 = support::env_or("LARDER_CORRUPTION_TRIALS", 1000);
    let work = tempfile::tempdir().unwrap();
    let base = work.path().join("base");
    let cache = builder(&base).build().unwrap();
    for key in 0..KEYS {
        cache.insert(&key.to_le_bytes(), value(key)).unwrap();
    }
    cache.close().unwrap();
    assert!(larder::verify_dir(&base).unwrap().is_clean());

    let mut rng = StdRng::seed_from_u64(2026);
    let (mut done, mut refused, mut served, mut corrupt_seen) = (0, 0, 0u64, 0u64);
    let mut undetected = Vec::new();
    for trial in 0..trials {
        let dir = work.path().join(format!("t{}", trial % 4));
        let _ = std::fs::remove_dir_all(&dir);
        copy_dir(&base, &dir);
        let Some(what) = damage(&dir, &mut rng) else {
            continue;
        };
        done += 1;
        // Read-only detection first: reopening repairs and quarantines.
        let report = larder::verify_dir(&dir).unwrap();
        if report.is_clean() && report.torn_tails == 0 && report.checkpoint == "valid" {
            undetected.push(format!("trial {trial}: {what}: {report:?}"));
        }
        let cache = match builder(&dir).build() {
            Ok(cache) => cache,
            Err(e) => {
                // A clear error is allowed; it must say something.
                assert!(!e.to_string().is_empty());
                refused += 1;
                continue;
            }
        };
        for key in 0..KEYS {
            if let Some(v) = cache.get(&key.to_le_bytes()) {
                served += 1;
                assert_eq!(
                    v,
                    value(key),
                    "trial {trial} ({what}): key {key} wrong bytes"
                );
            }
        }
        corrupt_seen += cache.stats().disk.unwrap().corrupt_records;
    }
    eprintln!(
        "{done} damaged reopens: {refused} refused with an error, {served} values served (all right), \
         {corrupt_seen} corrupt records met on reads, {} undetected",
        undetected.len()
    );
    assert!(
        done >= trials * 9 / 10,
        "only {done} trials changed anything"
    );
    assert!(undetected.is_empty(), "{undetected:#?}");
}
