//! `health()` after damage found on disk: records that fail their checks
//! when read, and files recovery quarantined at open, each degrade the
//! cache, with counts, while it serves on.

use larder::{Cache, Health, HealthIssue};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

fn open(dir: &Path) -> Cache {
    Cache::builder()
        .memory_capacity(16 << 10)
        .disk(dir, 16 << 20)
        .segment_size(256 << 10)
        .build()
        .unwrap()
}

fn fill(dir: &Path) {
    let cache = open(dir);
    for i in 0..3_000u32 {
        cache.insert(&i.to_be_bytes(), vec![i as u8; 300]).unwrap();
    }
    cache.close().unwrap();
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    out.sort();
    out
}

fn scribble(path: &Path, at: u64, len: usize) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&vec![0xA5; len]).unwrap();
}

fn read_all(cache: &Cache) -> usize {
    (0..3_000u32)
        .filter(|i| {
            cache
                .get(&i.to_be_bytes())
                .is_some_and(|v| v == vec![*i as u8; 300])
        })
        .count()
}

#[test]
fn corrupt_records_found_by_reads_degrade_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "{segs:?}");
    scribble(&segs[1], 100 << 10, 64); // inside the records of a sealed segment
    let cache = open(dir.path());
    let _ = cache.health(); // whatever the open found
    let read = read_all(&cache);
    assert!(
        read < 3_000 && read > 2_000,
        "the damage costs its own keys: {read}"
    );
    let health = cache.health();
    assert!(
        matches!(&health, Health::Degraded(i) if i.iter().any(|x| matches!(x, HealthIssue::CorruptRecords(n) if *n > 0))),
        "{health:?}"
    );
    assert!(
        cache
            .health()
            .issues()
            .iter()
            .all(|i| !matches!(i, HealthIssue::CorruptRecords(_))),
        "each corrupt record is reported once"
    );
    cache.close().unwrap();
}

#[test]
fn files_quarantined_at_open_degrade_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    let segs = segments(dir.path());
    scribble(&segs[0], 0, 64); // the segment header
    let cache = open(dir.path());
    let health = cache.health();
    assert!(
        matches!(&health, Health::Degraded(i) if i.iter().any(|x| matches!(x, HealthIssue::QuarantinedAtOpen(n) if *n > 0))),
        "{health:?}"
    );
    let read = read_all(&cache);
    assert!(read > 2_000, "the rest serves: {read}");
    cache.close().unwrap();
}
