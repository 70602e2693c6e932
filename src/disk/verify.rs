//! Checking a disk tier's directory without opening a cache on it: the
//! manifest, the segment list, every segment header, summary and record, the
//! keys files and the checkpoint, and what the next open would keep. Read-only:
//! it takes no lock and writes nothing, so it may run beside a cache that
//! uses the directory (then the segments being written show as unsealed).

use super::analysis::{Analysis, Fate, analyze};
use super::dir::{CHECKPOINT_FILE, read_checkpoint};
use super::io::Positional;
use super::scan::Contents;
use crate::format::FormatError;
use crate::format::manifest::Manifest;
use crate::format::record::{self, Kind};
use crate::key::hash_key;
use std::collections::HashMap;
use std::path::Path;

/// What [`verify_dir`](crate::verify_dir) found in a disk tier's directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Segment files whose header is valid.
    pub segments: u64,
    /// Of those, sealed (valid trailer and summary).
    pub sealed_segments: u64,
    /// Records checked (header, checksum, key against the summary).
    pub records: u64,
    /// Keys the next open will serve: a live, unexpired value after every
    /// record that applies, in order.
    pub live_entries: u64,
    /// Keys whose newest value has expired (the next open never serves them).
    pub expired_entries: u64,
    /// Records that fail their checks in sealed segments (a read of one is a
    /// miss, counted).
    pub corrupt_records: u64,
    /// Segment files with an invalid header, and listed segments whose
    /// trailer or summary is damaged.
    pub corrupt_segments: u64,
    /// Segments the list names whose file is gone.
    pub missing_segments: u64,
    /// Segments the next open treats as lost (missing, or damaged with
    /// records gone), including ones lost at an earlier open.
    pub lost_segments: u64,
    /// Records the next open drops as unproven: a lost segment may have held
    /// a newer record of their key.
    pub unproven_records: u64,
    /// Records the next open drops as void: numbered after the point up to
    /// which a crash left every stream complete.
    pub void_records: u64,
    /// Unsealed segments whose valid records are followed by non-zero bytes: a
    /// write cut short by a crash (the next open cuts it off), or damage.
    pub torn_tails: u64,
    /// Files named like segments that are not larder's.
    pub foreign_files: u64,
    /// Segments of the probation stream (new inserts).
    pub probation_segments: u64,
    /// Whether the log was left by a clean close and is intact.
    pub closed_cleanly: bool,
    /// `"missing"`, `"valid"`, `"stale"` or `"corrupt"`.
    pub checkpoint: String,
    /// One line for each problem found.
    pub problems: Vec<String>,
    /// Damage that costs no data: a copy of the segment list, a keys file, a
    /// manifest (each written again at the next open).
    pub repairable: u64,
}

impl VerifyReport {
    /// Whether nothing is damaged. A crash's traces (torn tails, void
    /// records after the crash cut) are not damage.
    pub fn is_clean(&self) -> bool {
        self.corrupt_records == 0
            && self.corrupt_segments == 0
            && self.missing_segments == 0
            && self.lost_segments == 0
            && self.unproven_records == 0
            && self.repairable == 0
            && self.foreign_files == 0
            && self.checkpoint != "corrupt"
    }
}

/// Checks the directory; `Err` only if it cannot be read at all.
pub(crate) fn verify(dir: &Path) -> Result<VerifyReport, String> {
    let mut report = VerifyReport::default();
    let size = match std::fs::read(dir.join("MANIFEST")).map(|b| Manifest::decode(&b)) {
        Ok(Ok(m)) => m.segment_size,
        found => {
            let why = match found {
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
                Ok(Ok(_)) => unreachable!(),
            };
            report.repairable += 1;
            report
                .problems
                .push(format!("{}/MANIFEST: {why}", dir.display()));
            super::dir::segment_size_on_disk(dir).ok_or_else(|| {
                format!(
                    "{}/MANIFEST cannot be read ({why}) and no segment names the segment size",
                    dir.display()
                )
            })?
        }
    };
    let a = analyze(&Positional, dir, size).map_err(|e| e.to_string())?;
    report.problems.extend(a.problems.iter().cloned());
    report.foreign_files = a.foreign.len() as u64;
    report.corrupt_segments = a.bad.len() as u64;
    report.repairable += a.keys_missing.len() as u64;
    report.repairable += a
        .problems
        .iter()
        .filter(|p| p.starts_with("segment list:"))
        .count() as u64;
    report.lost_segments = a.lost.len() as u64;
    report.missing_segments = a
        .lost
        .iter()
        .filter(|l| l.new && l.why.contains("missing"))
        .count() as u64;
    report.closed_cleanly = a.clean();
    // Every record of every readable segment checked; expiries kept for the live count.
    let mut expiry = HashMap::new();
    for (s, fate) in a.segments.values() {
        report.segments += 1;
        report.probation_segments += u64::from(s.stream == super::segment::Stream::Probation);
        match (&s.contents, fate) {
            (Contents::Sealed { entries, .. }, _) => {
                report.sealed_segments += 1;
                report.corrupt_records +=
                    check_records(s, entries, &mut expiry, &mut report.problems);
            }
            (Contents::Unsealed { torn, end, .. }, fate) => {
                if matches!(fate, Fate::Quarantine(_) | Fate::Reseal) {
                    report.corrupt_segments += 1;
                }
                if *torn {
                    report.torn_tails += 1;
                    report.problems.push(format!(
                        "{}: unsealed, its records end at offset {end} and non-zero bytes follow (a torn write, cut off at the next open)",
                        s.path.display()
                    ));
                }
                for e in s.contents.entries() {
                    expiry.insert((s.id, e.offset), 0);
                }
            }
        }
        report.records += s.contents.entries().len() as u64;
    }
    live_entries(&a, &expiry, &mut report);
    report.checkpoint = match read_checkpoint(dir) {
        Ok(None) => "missing".into(),
        Ok(Some(c)) if a.closed_at() == Some(c.last_seq) => "valid".into(),
        Ok(Some(_)) => "stale".into(),
        Err(why) => {
            report
                .problems
                .push(format!("{}: {why}", dir.join(CHECKPOINT_FILE).display()));
            "corrupt".into()
        }
    };
    Ok(report)
}

/// Checks every record of a sealed segment against its summary; returns how
/// many fail. Notes each value's expiry by (segment, offset).
fn check_records(
    s: &super::analysis::Scanned,
    entries: &[crate::format::segment::SummaryEntry],
    expiry: &mut HashMap<(u32, u32), u64>,
    problems: &mut Vec<String>,
) -> u64 {
    let bytes = std::fs::read(&s.path).unwrap_or_default();
    let mut bad = 0;
    for e in entries {
        let at = e.offset as usize;
        let check = bytes
            .get(at..at + e.len as usize)
            .ok_or(FormatError::Truncated {
                needed: at + e.len as usize,
                available: bytes.len(),
            })
            .and_then(|b| record::decode(u64::from(s.id), e.offset, b));
        let matches = check.as_ref().is_ok_and(|r| {
            let hash = if r.header.kind == Kind::Mark {
                0
            } else {
                hash_key(r.key)
            };
            hash == e.hash
                && r.header.seq == e.seq
                && (r.header.kind == Kind::Tombstone) == e.tombstone
                && (r.header.kind == Kind::Mark) == e.mark
        });
        match (&check, matches) {
            (Ok(r), true) => {
                expiry.insert((s.id, e.offset), r.header.expires_at);
            }
            _ => {
                bad += 1;
                let why = check.err().map_or_else(
                    || "does not match the summary".to_string(),
                    |e| e.to_string(),
                );
                problems.push(format!(
                    "{}: record at offset {}: {why}",
                    s.path.display(),
                    e.offset
                ));
            }
        }
    }
    bad
}

/// Counts the keys the next open serves, and those it holds expired.
fn live_entries(a: &Analysis, expiry: &HashMap<(u32, u32), u64>, report: &mut VerifyReport) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // Key hash → the location of its newest value, or removed.
    let mut newest: HashMap<u64, Option<(u32, u32)>> = HashMap::new();
    let (void, unproven) = a.for_each_applied(|id, e| {
        newest.insert(e.hash, (!e.tombstone).then_some((id, e.offset)));
    });
    report.void_records = void;
    report.unproven_records = unproven;
    for loc in newest.values().flatten() {
        match expiry.get(loc) {
            Some(&at) if at != 0 && at <= now => report.expired_entries += 1,
            _ => report.live_entries += 1,
        }
    }
}
