//! The corruption campaign on reopen (contract promises 1–3 and 7b): a
//! closed cache's directory, whose keys were overwritten and removed across
//! many segments, is damaged once (a segment file, a keys file, a copy of the
//! segment list, the checkpoint or the manifest: deleted, truncated, zeroed,
//! bit-flipped in its header, body or trailer, blocks swapped, two segment
//! files swapped, garbage added), then:
//!
//! * reopening succeeds and never panics;
//! * every value served is the key's last value: never wrong bytes, **never
//!   an overwritten or removed value** (absent is allowed);
//! * every damage that costs a key is flagged by `verify_dir` (read-only, run
//!   before the reopen repairs anything);
//! * a damaged segment costs about its own share of the keys, not the rest
//!   of the log: the mean is reported beside the mean share of the segments
//!   damaged.
//!
//! `LARDER_CORRUPTION_TRIALS` sets the trials (default 1,000).

mod support;

use larder::{Bytes, Cache};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const SEGMENT: u64 = 64 << 10;
const KEYS: u32 = 1500;
/// The trailer's length and where its record count is (docs/format.md §1.4).
const TRAILER: usize = 40;
const TRAILER_COUNT_AT: usize = 12;

fn builder(dir: &Path) -> larder::CacheBuilder {
    Cache::builder()
        .memory_capacity(100)
        .unit_weight()
        .disk(dir, 64 * SEGMENT)
        .segment_size(SEGMENT)
}

fn value(key: u32, version: u32) -> Bytes {
    let mut v = key.to_le_bytes().to_vec();
    v.extend_from_slice(&version.to_le_bytes());
    v.resize(
        60 + (key as usize * 7) % 300,
        (key % 251) as u8 ^ version as u8,
    );
    v.into()
}

/// The files damage may hit: everything the tier keeps in its directory.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".seg")
                || name.ends_with(".keys")
                || ["SEGMENTS", "SEGMENTS.copy", "CHECKPOINT", "MANIFEST"].contains(&&*name)
        })
        .collect();
    v.sort();
    v
}

/// The bytes of a sealed segment that some checksum covers: up to the end of
/// its summary, and its trailer. (Between them is unused space.)
fn covered(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    if bytes.len() < TRAILER {
        return std::iter::once(0..bytes.len()).collect();
    }
    let t = &bytes[bytes.len() - TRAILER..];
    let summary_at = u32::from_le_bytes(t[8..12].try_into().unwrap()) as usize;
    let count = u32::from_le_bytes(t[12..16].try_into().unwrap()) as usize;
    let end = (summary_at + count * 24).min(bytes.len() - TRAILER);
    vec![0..end, bytes.len() - TRAILER..bytes.len()]
}

/// Records a sealed segment's trailer counts.
fn records_in(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap_or_default();
    if bytes.len() < TRAILER {
        return 0;
    }
    let t = &bytes[bytes.len() - TRAILER..];
    u64::from(u32::from_le_bytes(
        t[TRAILER_COUNT_AT..TRAILER_COUNT_AT + 4]
            .try_into()
            .unwrap(),
    ))
}

fn pick(rng: &mut StdRng, ranges: &[std::ops::Range<usize>]) -> usize {
    let r = &ranges[rng.random_range(0..ranges.len())];
    rng.random_range(r.clone())
}

/// One damage done to a directory.
struct Damage {
    what: String,
    /// The segment file it hit, if one.
    segment: Option<PathBuf>,
}

/// Damages one file of `dir` (two, for a swap of segment files); `None` if
/// it changed nothing.
fn damage(dir: &Path, rng: &mut StdRng) -> Option<Damage> {
    let targets = files(dir);
    let path = &targets[rng.random_range(0..targets.len())];
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let is_segment = name.ends_with(".seg");
    let segment = is_segment.then(|| path.clone());
    let original = std::fs::read(path).unwrap();
    let mut bytes = original.clone();
    let ranges = if is_segment {
        covered(&bytes)
    } else {
        std::iter::once(0..bytes.len().max(1)).collect()
    };
    let len = bytes.len();
    let what = match rng.random_range(0..10) {
        0 => {
            std::fs::remove_file(path).unwrap();
            return Some(Damage {
                what: format!("delete {name}"),
                segment,
            });
        }
        1 if is_segment => {
            let others: Vec<_> = targets
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "seg") && *p != path)
                .collect();
            if others.is_empty() {
                return None;
            }
            let other = others[rng.random_range(0..others.len())];
            let theirs = std::fs::read(other).unwrap();
            std::fs::write(other, &original).unwrap();
            std::fs::write(path, &theirs).unwrap();
            return Some(Damage {
                what: format!("swap {name} and {}", other.display()),
                segment,
            });
        }
        2 if is_segment && len >= 64 => {
            let at = rng.random_range(0..64);
            bytes[at] ^= 1 << rng.random_range(0..8);
            format!("flip a bit at {at} of {name}'s header")
        }
        3 if is_segment && len >= TRAILER => {
            let at = len - TRAILER + rng.random_range(0..TRAILER);
            bytes[at] ^= 1 << rng.random_range(0..8);
            format!("flip a bit at {at} of {name}'s trailer")
        }
        _ if len == 0 => return None,
        2..=4 => {
            let at = pick(rng, &ranges).min(len - 1);
            bytes[at] ^= 1 << rng.random_range(0..8);
            format!("flip a bit at {at} of {name}")
        }
        5 => {
            let at = pick(rng, &ranges).min(len - 1);
            let end = (at + rng.random_range(1..600)).min(len);
            bytes[at..end].fill(0);
            format!("zero {at}..{end} of {name}")
        }
        6 => {
            let at = pick(rng, &ranges).min(len - 1);
            bytes.truncate(at);
            format!("truncate {name} at {at}")
        }
        7 if len >= 8192 => {
            let (a, b) = (
                rng.random_range(0..len / 4096) * 4096,
                rng.random_range(0..len / 4096) * 4096,
            );
            let block_a = bytes[a..a + 4096].to_vec();
            bytes.copy_within(b..b + 4096, a);
            bytes[b..b + 4096].copy_from_slice(&block_a);
            format!("swap blocks at {a} and {b} of {name}")
        }
        8 => {
            let id = 900 + rng.random_range(0..50);
            let garbage: Vec<u8> = (0..rng.random_range(0..3 * SEGMENT as usize))
                .map(|_| rng.random())
                .collect();
            std::fs::write(dir.join(format!("{id:010}.seg")), garbage).unwrap();
            return Some(Damage {
                what: format!("garbage segment file {id}"),
                segment: None,
            });
        }
        _ => {
            let at = pick(rng, &ranges).min(len - 1);
            for b in &mut bytes[at..(at + 64).min(len)] {
                *b = rng.random();
            }
            format!("random bytes at {at} of {name}")
        }
    };
    if bytes == original {
        return None;
    }
    std::fs::write(path, &bytes).unwrap();
    Some(Damage { what, segment })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Builds the base directory: every key written, then a third overwritten
/// (some twice) and a fifth removed, in rounds, so that newer records of a
/// key sit in later segments than older ones. Returns each key's last
/// version (absent: removed).
fn base(dir: &Path) -> HashMap<u32, u32> {
    let cache = builder(dir).build().unwrap();
    let mut last = HashMap::new();
    let mut rng = StdRng::seed_from_u64(7);
    for key in 0..KEYS {
        cache.insert(&key.to_le_bytes(), value(key, 0)).unwrap();
        last.insert(key, 0);
    }
    for round in 1..=3 {
        for key in 0..KEYS {
            match rng.random_range(0..15) {
                0..5 => {
                    cache.insert(&key.to_le_bytes(), value(key, round)).unwrap();
                    last.insert(key, round);
                }
                5 => {
                    cache.remove(&key.to_le_bytes());
                    last.remove(&key);
                }
                _ => {}
            }
        }
    }
    cache.close().unwrap();
    last
}

#[test]
fn damage_on_reopen_is_detected_and_never_returns_a_wrong_or_stale_value() {
    let trials: u32 = support::env_or("LARDER_CORRUPTION_TRIALS", 1000);
    let work = tempfile::tempdir().unwrap();
    let base_dir = work.path().join("base");
    let last = base(&base_dir);
    let report = larder::verify_dir(&base_dir).unwrap();
    assert!(report.is_clean() && report.closed_cleanly, "{report:?}");
    assert_eq!(report.live_entries, last.len() as u64, "{report:?}");
    let segments = support::segment_files(&base_dir);
    assert!(
        segments.len() >= 8,
        "the log spans segments: {}",
        segments.len()
    );
    let all_records: u64 = segments.iter().map(|p| records_in(p)).sum();

    let mut rng = StdRng::seed_from_u64(2026);
    let (mut done, mut refused, mut served) = (0, 0, 0u64);
    let mut problems = Vec::new();
    // Per single-segment damage: share of keys lost, share of records the
    // segment held.
    let (mut lost_share, mut segment_share, mut segment_damages) = (0.0, 0.0, 0u32);
    let mut with_loss = 0;
    for trial in 0..trials {
        let dir = work.path().join(format!("t{}", trial % 4));
        let _ = std::fs::remove_dir_all(&dir);
        copy_dir(&base_dir, &dir);
        let Some(Damage { what, segment }) = damage(&dir, &mut rng) else {
            continue;
        };
        done += 1;
        let share = segment.as_ref().map(|p| {
            records_in(&base_dir.join(p.file_name().unwrap())) as f64 / all_records as f64
        });
        // Read-only detection first: reopening repairs and quarantines.
        let report = larder::verify_dir(&dir);
        let cache = match builder(&dir).build() {
            Ok(cache) => cache,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                refused += 1;
                problems.push(format!("trial {trial} ({what}): the reopen failed: {e}"));
                continue;
            }
        };
        let mut present = 0u64;
        for key in 0..KEYS {
            let Some(v) = cache.get(&key.to_le_bytes()) else {
                continue;
            };
            served += 1;
            match last.get(&key) {
                Some(&version) if v == value(key, version) => present += 1,
                Some(&version) => problems.push(format!(
                    "trial {trial} ({what}): key {key}: not its last value (version {version})"
                )),
                None => problems.push(format!(
                    "trial {trial} ({what}): key {key}: a removed key came back"
                )),
            }
        }
        let lost = last.len() as u64 - present;
        if lost > 0 {
            with_loss += 1;
            match &report {
                Ok(r) if r.is_clean() => problems.push(format!(
                    "trial {trial} ({what}): {lost} keys lost, verify said clean: {r:?}"
                )),
                _ => {}
            }
        }
        if let Some(share) = share {
            segment_damages += 1;
            segment_share += share;
            lost_share += lost as f64 / last.len() as f64;
        }
        let _ = cache.close(); // before the directory is removed and copied again
    }
    let n = f64::from(segment_damages.max(1));
    eprintln!(
        "{done} damaged reopens: {refused} refused, {served} values served, {with_loss} lost keys; \
         per damage to a segment file ({segment_damages}): {:.2}% of keys lost on average, \
         the segment held {:.2}% of the records; {} problems",
        100.0 * lost_share / n,
        100.0 * segment_share / n,
        problems.len()
    );
    assert!(
        done >= trials * 9 / 10,
        "only {done} trials changed anything"
    );
    assert!(
        problems.is_empty(),
        "{:#?}",
        &problems[..problems.len().min(30)]
    );
}
