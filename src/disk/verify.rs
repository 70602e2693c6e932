//! Checking a disk tier's directory without opening a cache on it: every
//! segment header, summary and record, and the checkpoint. Read-only: it takes
//! no lock and writes nothing, so it may run beside a cache that uses the
//! directory (then the segment being written shows as unsealed).

use super::io::Positional;
use super::recovery::{Contents, list_segments, read_segment};
use super::{CHECKPOINT_FILE, CLOSED_FILE, read_checkpoint_file};
use crate::format::FormatError;
use crate::format::closed;
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
    /// Keys with a live value after applying every record in order.
    pub live_entries: u64,
    /// Records that failed their checks in sealed segments.
    pub corrupt_records: u64,
    /// Segment files with an invalid header, and sealed segments whose trailer
    /// or summary fails its checks.
    pub corrupt_segments: u64,
    /// Unsealed segments whose valid records are followed by non-zero bytes: a
    /// write cut short by a crash (the next open cuts it off), or damage.
    pub torn_tails: u64,
    /// Files named like segments that are not larder's.
    pub foreign_files: u64,
    /// Segments of the probation stream (new inserts).
    pub probation_segments: u64,
    /// Whether the log was left by a clean close (the checkpoint or the
    /// clean-close mark names its last record, and every segment is sealed).
    /// If not, the next open discards the probation stream, and
    /// `live_entries` counts what it will keep.
    pub closed_cleanly: bool,
    /// `"missing"`, `"valid"`, `"stale"` or `"corrupt"`.
    pub checkpoint: String,
    /// One line for each problem found.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// Whether nothing is corrupt: no corrupt record, segment or checkpoint.
    /// Torn tails (the normal state after a crash) do not count.
    pub fn is_clean(&self) -> bool {
        self.corrupt_records == 0 && self.corrupt_segments == 0 && self.checkpoint != "corrupt"
    }
}

/// Checks the directory; `Err` only if it cannot be read at all.
pub(crate) fn verify(dir: &Path) -> Result<VerifyReport, String> {
    let mut report = VerifyReport::default();
    let manifest = std::fs::read(dir.join("MANIFEST"))
        .map_err(|e| format!("cannot read {}/MANIFEST: {e}", dir.display()))?;
    let manifest = Manifest::decode(&manifest)
        .map_err(|e| format!("{}/MANIFEST is not valid: {e}", dir.display()))?;
    let size = manifest.segment_size;
    let (paths, foreign) =
        list_segments(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    report.foreign_files = foreign.len() as u64;
    for path in foreign {
        report
            .problems
            .push(format!("{} is not a segment of larder's", path.display()));
    }
    // Every record as (seq, hash, tombstone, probation), applied in sequence order at the end.
    let mut applied = Vec::new();
    let mut last_seq = 0u64;
    let mut all_sealed = true;
    let mut found = Vec::new();
    for (id, path) in paths {
        let name = path.display().to_string();
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                report.corrupt_segments += 1;
                report.problems.push(format!("{name}: cannot open: {e}"));
                continue;
            }
        };
        match read_segment(&Positional, &file, id, size) {
            Ok((header, contents)) => found.push((id, path, file, header, contents)),
            Err(why) => {
                report.corrupt_segments += 1;
                report.problems.push(format!("{name}: {why}"));
            }
        }
    }
    // Each stream's newest segment: the only one of its stream that may be unsealed.
    let newest = |probation: bool| {
        found
            .iter()
            .filter(|f| f.3.probation == probation)
            .map(|f| f.0)
            .max()
    };
    let newest = [newest(false), newest(true)];
    for (id, path, file, header, contents) in found {
        let name = path.display();
        report.segments += 1;
        report.probation_segments += u64::from(header.probation);
        last_seq = last_seq.max(header.first_seq.saturating_sub(1));
        let entries = match contents {
            Contents::Sealed { entries, .. } => {
                report.sealed_segments += 1;
                let bytes = std::fs::read(&path).unwrap_or_default();
                let mut bad = 0;
                for e in &entries {
                    let at = e.offset as usize;
                    let check = bytes
                        .get(at..at + e.len as usize)
                        .ok_or(FormatError::Truncated {
                            needed: at + e.len as usize,
                            available: bytes.len(),
                        })
                        .and_then(|b| record::decode(u64::from(id), e.offset, b));
                    let matches = check.as_ref().is_ok_and(|r| {
                        hash_key(r.key) == e.hash
                            && r.header.seq == e.seq
                            && (r.header.kind == Kind::Tombstone) == e.tombstone
                    });
                    if !matches {
                        bad += 1;
                        let why = check.err().map_or_else(
                            || "does not match the summary".to_string(),
                            |e| e.to_string(),
                        );
                        report
                            .problems
                            .push(format!("{name}: record at offset {}: {why}", e.offset));
                    }
                }
                report.corrupt_records += bad;
                entries
            }
            Contents::Unsealed { entries, end, torn } => {
                all_sealed = false;
                // Only sealing writes the last bytes of a segment: a full-length
                // file without a valid trailer and summary had them damaged.
                // And only the newest segment can be unsealed: one is sealed
                // before the next is written to.
                if file.metadata().is_ok_and(|m| m.len() >= size) {
                    report.corrupt_segments += 1;
                    report
                        .problems
                        .push(format!("{name}: its trailer or summary fails its checks"));
                } else if Some(id) != newest[usize::from(header.probation)] {
                    report.corrupt_segments += 1;
                    report.problems.push(format!(
                        "{name}: unsealed but not the newest segment of its stream (truncated?)"
                    ));
                }
                if torn {
                    report.torn_tails += 1;
                    report.problems.push(format!(
                        "{name}: unsealed, its records end at offset {end} and non-zero bytes follow (a torn write, cut off at the next open)"
                    ));
                }
                entries
            }
        };
        report.records += entries.len() as u64;
        for e in &entries {
            last_seq = last_seq.max(e.seq);
            applied.push((e.seq, e.hash, e.tombstone, header.probation));
        }
    }
    let checkpoint = read_checkpoint_file(dir);
    let mark = std::fs::read(dir.join(CLOSED_FILE))
        .ok()
        .and_then(|b| closed::decode(&b).ok());
    let checkpoint_seq = checkpoint
        .as_ref()
        .ok()
        .and_then(|c| c.as_ref().map(|c| c.last_seq));
    report.closed_cleanly = all_sealed && [checkpoint_seq, mark].contains(&Some(last_seq));
    // Key hash → live (true) or removed, as the next open will apply them.
    applied.sort_unstable_by_key(|a| a.0);
    let mut live: HashMap<u64, bool> = HashMap::new();
    for (_, hash, tombstone, probation) in applied {
        if report.closed_cleanly || !probation {
            live.insert(hash, !tombstone);
        }
    }
    report.live_entries = live.values().filter(|&&v| v).count() as u64;
    report.checkpoint = match checkpoint {
        Ok(None) => "missing".into(),
        Ok(Some(c)) if all_sealed && c.last_seq == last_seq => "valid".into(),
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
