//! Opening a directory that already holds segments: the index is rebuilt from
//! what is on disk, and the directory is left in a state the next open can
//! read the same way.
//!
//! * A sealed segment (valid trailer and summary) contributes its summary:
//!   recovery reads 24 bytes a record, not the records.
//! * A segment without a valid trailer (the one being filled at a crash) is
//!   scanned record by record from its header up to the first record that
//!   fails its checks (a torn or unwritten tail); the valid prefix is then
//!   sealed in place: a summary after it, the trailer at the end, `fdatasync`.
//!   If that is interrupted, the next open finds no valid trailer and scans
//!   again: recovery is itself crash-safe.
//! * A segment file whose header is not a valid header of this directory's
//!   segment (wrong magic, checksum, id or size) is renamed `*.quarantined`,
//!   reported, and never read again; a file whose name is not a segment's is
//!   left alone and reported as foreign.
//! * Records apply in sequence order (segments in id order, records in log
//!   order: both follow the order of appends): a value points the index at
//!   itself, a tombstone removes the key. The result is the state after the
//!   last record that survived: a consistent prefix of the writes.

use super::index::{Index, Loc, MAX_SEGMENT_ID};
use super::io::Io;
use super::segment::SegmentFile;
use super::{DiskError, sync_dir};
use crate::format::record::{self, Kind, RECORD_HEADER_LEN};
use crate::format::segment::{
    SEGMENT_HEADER_LEN, SUMMARY_ENTRY_LEN, SegmentHeader, SummaryEntry, TRAILER_LEN, Trailer,
    encode_summary,
};
use crate::key::hash_key;
use crate::sync::Arc;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What opening a directory found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RecoveryReport {
    /// Segment files read (sealed or sealed during recovery).
    pub(crate) segments: u64,
    /// Keys the rebuilt index holds.
    pub(crate) entries: u64,
    /// Records read from summaries or scans.
    pub(crate) records: u64,
    /// Unsealed segments scanned and sealed.
    pub(crate) sealed: u64,
    /// Records lost in torn tails: bytes after the last valid record of an
    /// unsealed segment that were not all zero.
    pub(crate) torn_tails: u64,
    /// Segment files renamed `*.quarantined` (bad header), and files that are
    /// not larder's.
    pub(crate) quarantined: u64,
    pub(crate) foreign: u64,
    pub(crate) elapsed: Duration,
}

/// The state recovery rebuilt.
pub(crate) struct Recovered {
    pub(crate) files: BTreeMap<u32, Arc<SegmentFile>>,
    pub(crate) next_id: u32,
    pub(crate) next_seq: u64,
    pub(crate) report: RecoveryReport,
}

/// The segment id named by `name` (`0000000042.seg`), if it is one.
pub(crate) fn segment_id_of(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment files of `dir` by id, and the names that look like segments
/// but are not larder's (reported, left alone).
pub(crate) fn list_segments(dir: &Path) -> std::io::Result<(BTreeMap<u32, PathBuf>, Vec<PathBuf>)> {
    let mut segments = BTreeMap::new();
    let mut foreign = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.ends_with(".seg") {
            continue;
        }
        match segment_id_of(&name).filter(|&id| id <= MAX_SEGMENT_ID && id > 0) {
            Some(id) => {
                segments.insert(id, entry.path());
            }
            None => foreign.push(entry.path()),
        }
    }
    Ok((segments, foreign))
}

/// What one segment file holds, as far as it can be trusted.
pub(crate) enum Contents {
    /// A valid trailer and summary.
    Sealed {
        entries: Vec<SummaryEntry>,
        last_seq: u64,
    },
    /// No valid trailer: the records up to the first that fails its checks.
    Unsealed {
        entries: Vec<SummaryEntry>,
        /// Where the valid records end.
        end: usize,
        /// Whether non-zero bytes follow them (a torn record, not just unwritten space).
        torn: bool,
    },
}

/// Reads and checks a segment file: `Err` if its header is not a valid header
/// of segment `id` of `segment_size` bytes.
pub(crate) fn read_segment(
    io: &dyn Io,
    file: &std::fs::File,
    id: u32,
    segment_size: u64,
) -> Result<(SegmentHeader, Contents), String> {
    let len = file
        .metadata()
        .map_err(|e| format!("cannot stat: {e}"))?
        .len()
        .min(segment_size) as usize;
    // A zeroed buffer of the file's length costs nothing until written (the
    // allocator maps zero pages lazily): a sealed segment fills in only its
    // header, trailer and summary; the records are read only for a scan.
    let mut bytes = vec![0u8; len];
    let read = |bytes: &mut [u8], range: std::ops::Range<usize>| {
        io.read_exact_at(file, &mut bytes[range.clone()], range.start as u64)
            .map_err(|e| format!("cannot read: {e}"))
    };
    read(&mut bytes, 0..SEGMENT_HEADER_LEN.min(len))?;
    let header = SegmentHeader::decode(&bytes).map_err(|e| e.to_string())?;
    if header.segment_id != u64::from(id) {
        return Err(format!("its header names segment {}", header.segment_id));
    }
    if header.segment_size != segment_size {
        return Err(format!(
            "its header says {} bytes, the directory's segments are {segment_size}",
            header.segment_size
        ));
    }
    let sealed = len as u64 == segment_size
        && read(&mut bytes, len - TRAILER_LEN..len).is_ok()
        && Trailer::decode(u64::from(id), &bytes).is_ok_and(|t| {
            let start = t.summary_offset as usize;
            let end = start + t.record_count as usize * SUMMARY_ENTRY_LEN;
            read(&mut bytes, start..end).is_ok()
        });
    if sealed
        && let Ok(trailer) = Trailer::decode(u64::from(id), &bytes)
        && let Ok(entries) = trailer.summary(u64::from(id), &bytes)
    {
        return Ok((
            header,
            Contents::Sealed {
                entries,
                last_seq: trailer.last_seq,
            },
        ));
    }
    // Unsealed (or a damaged trailer or summary): trust only what checks out.
    read(&mut bytes, 0..len)?;
    let limit = (segment_size as usize - TRAILER_LEN).min(len);
    let mut entries = Vec::new();
    let mut at = SEGMENT_HEADER_LEN;
    while at + RECORD_HEADER_LEN <= limit {
        let Ok(r) = record::decode(u64::from(id), at as u32, &bytes[at..limit]) else {
            break;
        };
        let rec_len = r.header.record_len();
        entries.push(SummaryEntry {
            hash: hash_key(r.key),
            seq: r.header.seq,
            offset: at as u32,
            len: rec_len as u32,
            tombstone: r.header.kind == Kind::Tombstone,
            compressed: r.header.compressed,
        });
        at += rec_len;
    }
    // Room for the summary that sealing will write after the records.
    let room = segment_size as usize - TRAILER_LEN;
    while at + entries.len() * SUMMARY_ENTRY_LEN > room && !entries.is_empty() {
        let last = entries.pop().expect("not empty");
        at = last.offset as usize;
    }
    let torn = bytes[at..len].iter().any(|&b| b != 0);
    Ok((
        header,
        Contents::Unsealed {
            entries,
            end: at,
            torn,
        },
    ))
}

/// Seals an unsealed segment's valid prefix in place: summary, trailer, sync.
fn seal(
    io: &dyn Io,
    file: &std::fs::File,
    id: u32,
    segment_size: u64,
    entries: &[SummaryEntry],
    end: usize,
) -> std::io::Result<()> {
    let mut summary = Vec::with_capacity(entries.len() * SUMMARY_ENTRY_LEN);
    let summary_crc = encode_summary(u64::from(id), entries, &mut summary);
    io.write_all_at(file, &summary, end as u64)?;
    let trailer = Trailer {
        summary_offset: end as u32,
        record_count: entries.len() as u32,
        last_seq: entries.last().map_or(0, |e| e.seq),
        summary_crc,
    };
    io.write_all_at(
        file,
        &trailer.encode(u64::from(id)),
        segment_size - TRAILER_LEN as u64,
    )?;
    io.sync_data(file)
}

/// Rebuilds `index` from the segments in `dir`; a record listed in `uses`
/// (segment, offset → use count, from a checkpoint) gets that use count.
pub(crate) fn recover(
    io: &dyn Io,
    dir: &Path,
    segment_size: u64,
    index: &Index,
    uses: &HashMap<(u32, u32), u8>,
) -> Result<Recovered, DiskError> {
    let started = Instant::now();
    let io_err = |context: String| move |source| DiskError::Io { context, source };
    let (paths, foreign) =
        list_segments(dir).map_err(io_err(format!("cannot list {}", dir.display())))?;
    let mut report = RecoveryReport {
        foreign: foreign.len() as u64,
        ..RecoveryReport::default()
    };
    for path in &foreign {
        eprintln!(
            "larder: {} is not a segment of this cache; left alone",
            path.display()
        );
    }
    let mut files = BTreeMap::new();
    let (mut next_id, mut next_seq) = (1u32, 1u64);
    let mut last_applied = 0u64;
    let mut in_order = true;
    let mut changed_dir = false;
    for (id, path) in paths {
        let file = SegmentFile::open(path.clone(), id)
            .map_err(io_err(format!("cannot open {}", path.display())))?;
        let (header, contents) = match read_segment(io, &file.file, id, segment_size) {
            Ok(found) => found,
            Err(why) => {
                let to = path.with_extension("seg.quarantined");
                eprintln!(
                    "larder: segment file {} is not valid ({why}); renamed to {}",
                    path.display(),
                    to.display()
                );
                std::fs::rename(&path, &to)
                    .map_err(io_err(format!("cannot quarantine {}", path.display())))?;
                report.quarantined += 1;
                changed_dir = true;
                continue;
            }
        };
        next_id = next_id.max(id + 1);
        next_seq = next_seq.max(header.first_seq);
        let entries = match contents {
            Contents::Sealed { entries, last_seq } => {
                next_seq = next_seq.max(last_seq + 1);
                entries
            }
            Contents::Unsealed { entries, end, torn } => {
                if torn {
                    report.torn_tails += 1;
                    eprintln!(
                        "larder: segment {id} ends in a torn record at offset {end}; the records before it are kept"
                    );
                }
                if entries.is_empty() {
                    file.unlink()
                        .map_err(io_err(format!("cannot remove {}", path.display())))?;
                    changed_dir = true;
                    continue;
                }
                seal(io, &file.file, id, segment_size, &entries, end)
                    .map_err(io_err(format!("cannot seal {}", path.display())))?;
                report.sealed += 1;
                entries
            }
        };
        for e in &entries {
            in_order &= e.seq > last_applied;
            last_applied = last_applied.max(e.seq);
            next_seq = next_seq.max(e.seq + 1);
        }
        report.records += entries.len() as u64;
        report.segments += 1;
        apply(index, id, &entries, uses);
        files.insert(id, Arc::new(file));
    }
    if !in_order {
        // Appends are in sequence order, so this means a bug, not damage:
        // say so, and apply everything again sorted by sequence number.
        eprintln!("larder: records out of sequence order on disk; re-applying them sorted");
        resort(io, index, &files, segment_size, uses);
    }
    if changed_dir {
        sync_dir(dir).map_err(io_err(format!("cannot sync {}", dir.display())))?;
    }
    if next_id > MAX_SEGMENT_ID {
        return Err(DiskError::Failed(format!(
            "segment ids are exhausted ({MAX_SEGMENT_ID} segments written)"
        )));
    }
    report.entries = index.len() as u64;
    report.elapsed = started.elapsed();
    Ok(Recovered {
        files,
        next_id,
        next_seq,
        report,
    })
}

/// Applies one segment's records, in order, to the index.
fn apply(index: &Index, id: u32, entries: &[SummaryEntry], uses: &HashMap<(u32, u32), u8>) {
    for e in entries {
        if e.tombstone {
            index.remove(e.hash);
        } else {
            let loc = Loc {
                segment: id,
                offset: e.offset,
            };
            let flags = uses.get(&(id, e.offset)).copied().unwrap_or(0);
            index.insert(e.hash, loc, flags);
        }
    }
}

/// Rebuilds the index from every segment's records sorted by sequence number.
fn resort(
    io: &dyn Io,
    index: &Index,
    files: &BTreeMap<u32, Arc<SegmentFile>>,
    segment_size: u64,
    uses: &HashMap<(u32, u32), u8>,
) {
    let mut all = Vec::new();
    for (&id, file) in files {
        if let Ok((_, Contents::Sealed { entries, .. })) =
            read_segment(io, &file.file, id, segment_size)
        {
            all.extend(entries.into_iter().map(|e| (id, e)));
        }
    }
    all.sort_by_key(|(_, e)| e.seq);
    index.clear();
    for (id, e) in all {
        apply(index, id, &[e], uses);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::io::Positional;
    use crate::format::record::RecordHeader;

    const SIZE: u64 = 64 << 10;

    /// A sealed segment file of `id` holding one value record per entry.
    fn write_sealed(dir: &Path, id: u32, records: &[(&[u8], &[u8], u64)]) {
        let mut seg = SegmentHeader {
            segment_id: u64::from(id),
            first_seq: records[0].2,
            segment_size: SIZE,
        }
        .encode()
        .to_vec();
        let mut summary = Vec::new();
        for &(key, value, seq) in records {
            let header = RecordHeader {
                kind: Kind::Value,
                compressed: false,
                key_len: key.len() as u16,
                stored_len: value.len() as u32,
                raw_len: value.len() as u32,
                expires_at: 0,
                seq,
            };
            let offset = seg.len() as u32;
            record::encode(&mut seg, u64::from(id), offset, &header, key, value);
            summary.push(SummaryEntry {
                hash: hash_key(key),
                seq,
                offset,
                len: seg.len() as u32 - offset,
                tombstone: false,
                compressed: false,
            });
        }
        let summary_offset = seg.len() as u32;
        let mut bytes = Vec::new();
        let summary_crc = encode_summary(u64::from(id), &summary, &mut bytes);
        seg.extend_from_slice(&bytes);
        seg.resize(SIZE as usize - TRAILER_LEN, 0);
        let trailer = Trailer {
            summary_offset,
            record_count: summary.len() as u32,
            last_seq: summary.last().map_or(0, |e| e.seq),
            summary_crc,
        };
        seg.extend_from_slice(&trailer.encode(u64::from(id)));
        std::fs::write(dir.join(super::super::segment::file_name(id)), seg).unwrap();
    }

    /// Appends are in sequence order, so records out of it mean a bug; recovery
    /// then still applies them by sequence number, newest last.
    #[test]
    fn records_out_of_sequence_order_apply_by_sequence() {
        let dir = tempfile::tempdir().unwrap();
        write_sealed(dir.path(), 1, &[(b"k", b"newer", 9), (b"j", b"only", 10)]);
        write_sealed(dir.path(), 2, &[(b"k", b"older", 4)]);
        let index = Index::new();
        let r = recover(&Positional, dir.path(), SIZE, &index, &HashMap::new()).unwrap();
        assert_eq!((r.next_id, r.next_seq), (3, 11));
        assert_eq!(r.report.entries, 2);
        let k = index.peek(hash_key(b"k")).unwrap();
        assert_eq!(
            k.segment, 1,
            "the record with the higher sequence number wins"
        );
        assert!(index.peek(hash_key(b"j")).is_some());
    }
}
