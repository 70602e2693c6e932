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
//! * Unless the log was closed cleanly (no segment unsealed, and the
//!   checkpoint or the clean-close mark names its last record), the probation
//!   stream's segments are removed: the two streams' tails were written
//!   independently and need not agree on one moment; main's alone does, and a
//!   key's records all stay in one stream (docs/design.md §10.2).
//! * Records apply in sequence order, the two streams merged (within a
//!   stream, segments in id order and records in log order follow the order
//!   of appends): a value points the index at itself, a tombstone removes the
//!   key. The result is the state after the last record that survived: a
//!   consistent prefix of the writes.

use super::index::{Index, Loc, MAX_SEGMENT_ID};
use super::io::Io;
use super::segment::{SegmentFile, Stream};
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
    /// Probation segments removed because the log was not closed cleanly.
    pub(crate) discarded: u64,
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
/// `closed_at`: where the checkpoint and the clean-close mark say a close left
/// the log. The log was closed cleanly if one of them is its last sequence
/// number and no segment was left unsealed; otherwise the probation stream is
/// discarded (module docs).
pub(crate) fn recover(
    io: &dyn Io,
    dir: &Path,
    segment_size: u64,
    index: &Index,
    uses: &HashMap<(u32, u32), u8>,
    closed_at: [Option<u64>; 2],
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
    // 1. Read every segment; quarantine the ones that are not valid.
    let mut found = Vec::new();
    let (mut next_id, mut next_seq) = (1u32, 1u64);
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
        let (entries, last_seq) = match &contents {
            Contents::Sealed { entries, last_seq } => (entries, *last_seq),
            Contents::Unsealed { entries, .. } => (entries, 0),
        };
        // Every sequence number seen, even out of order: none is used twice.
        let seen = entries
            .iter()
            .map(|e| e.seq)
            .max()
            .unwrap_or(0)
            .max(last_seq);
        next_seq = next_seq.max(seen + 1);
        let stream = if header.probation {
            Stream::Probation
        } else {
            Stream::Main
        };
        let file = file.in_stream(stream);
        found.push((file, contents));
    }
    // 2. A crash, or a clean close? After a crash the probation stream goes:
    //    its tail and main's were written independently, so together they need
    //    not be the state at one moment; main alone is (a key's records all
    //    stay in one stream, so dropping probation's only forgets keys).
    let unsealed = found
        .iter()
        .any(|(_, c)| matches!(c, Contents::Unsealed { .. }));
    let clean = !unsealed && closed_at.contains(&Some(next_seq - 1));
    let mut files = BTreeMap::new();
    let mut streams: [Vec<(u32, Vec<SummaryEntry>)>; 2] = [Vec::new(), Vec::new()];
    for (file, contents) in found {
        let (id, path) = (file.id, file.path().to_path_buf());
        if file.stream == Stream::Probation && !clean {
            file.unlink()
                .map_err(io_err(format!("cannot remove {}", path.display())))?;
            report.discarded += 1;
            changed_dir = true;
            continue;
        }
        let entries = match contents {
            Contents::Sealed { entries, .. } => entries,
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
        report.records += entries.len() as u64;
        report.segments += 1;
        streams[file.stream as usize].push((id, entries));
        files.insert(id, Arc::new(file));
    }
    if changed_dir {
        sync_dir(dir).map_err(io_err(format!("cannot sync {}", dir.display())))?;
    }
    // 3. Apply both streams' records merged by sequence number.
    let [main, probation] = streams;
    if !apply_merged(index, &main, &probation, uses) {
        // Appends are in sequence order, so this means a bug, not damage:
        // say so, and apply everything again sorted by sequence number.
        eprintln!("larder: records out of sequence order on disk; re-applying them sorted");
        resort(io, index, &files, segment_size, uses);
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

/// Applies two streams' records (each a list of segments in id order) to the
/// index, merged by sequence number. `false` if a stream's records were not in
/// increasing sequence order (then the index is incomplete).
fn apply_merged(
    index: &Index,
    main: &[(u32, Vec<SummaryEntry>)],
    probation: &[(u32, Vec<SummaryEntry>)],
    uses: &HashMap<(u32, u32), u8>,
) -> bool {
    let (a, b) = (flatten(main), flatten(probation));
    let in_order = |v: &[(u32, &SummaryEntry)]| v.windows(2).all(|w| w[0].1.seq < w[1].1.seq);
    if !in_order(&a) || !in_order(&b) {
        return false;
    }
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let take_a = j == b.len() || (i < a.len() && a[i].1.seq < b[j].1.seq);
        let (id, e) = if take_a { a[i] } else { b[j] };
        if take_a {
            i += 1;
        } else {
            j += 1;
        }
        apply(index, id, std::slice::from_ref(e), uses);
    }
    true
}

/// A stream's records, with their segment ids, in log order.
fn flatten(segments: &[(u32, Vec<SummaryEntry>)]) -> Vec<(u32, &SummaryEntry)> {
    segments
        .iter()
        .flat_map(|(id, entries)| entries.iter().map(move |e| (*id, e)))
        .collect()
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
        write_sealed_in(dir, id, records, false);
    }

    /// The same, of the main or the probation stream.
    fn write_sealed_in(dir: &Path, id: u32, records: &[(&[u8], &[u8], u64)], probation: bool) {
        let mut seg = SegmentHeader {
            segment_id: u64::from(id),
            first_seq: records[0].2,
            segment_size: SIZE,
            probation,
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
        // Segment 1's records are out of order within it too: its last is not its largest.
        write_sealed(dir.path(), 1, &[(b"j", b"only", 10), (b"k", b"newer", 9)]);
        write_sealed(dir.path(), 2, &[(b"k", b"older", 4)]);
        let (r, index) = recover_closed_at(dir.path(), [None; 2]);
        assert_eq!(
            (r.next_id, r.next_seq),
            (3, 11),
            "no sequence number reused"
        );
        assert_eq!(r.report.entries, 2);
        let k = index.peek(hash_key(b"k")).unwrap();
        assert_eq!(
            k.segment, 1,
            "the record with the higher sequence number wins"
        );
        assert!(index.peek(hash_key(b"j")).is_some());
    }

    /// Main: `a`@2, `b`@5. Probation: `a`@3, `b`@4.
    fn two_streams(dir: &Path) {
        write_sealed_in(dir, 1, &[(b"a", b"main", 2), (b"b", b"main", 5)], false);
        write_sealed_in(
            dir,
            2,
            &[(b"a", b"probation", 3), (b"b", b"probation", 4)],
            true,
        );
    }

    /// Recovers `dir` into a new index, as if a close had left the log at `closed_at`.
    fn recover_closed_at(dir: &Path, closed_at: [Option<u64>; 2]) -> (Recovered, Index) {
        let index = Index::new();
        let r = recover(&Positional, dir, SIZE, &index, &HashMap::new(), closed_at).unwrap();
        (r, index)
    }

    #[test]
    fn after_a_clean_close_both_streams_apply_merged_by_sequence() {
        let dir = tempfile::tempdir().unwrap();
        two_streams(dir.path());
        let (r, index) = recover_closed_at(dir.path(), [None, Some(5)]);
        assert_eq!((r.report.segments, r.report.discarded), (2, 0));
        assert_eq!(r.files[&2].stream, Stream::Probation);
        assert_eq!(
            index.peek(hash_key(b"a")).unwrap().segment,
            2,
            "a@3 beats a@2"
        );
        assert_eq!(
            index.peek(hash_key(b"b")).unwrap().segment,
            1,
            "b@5 beats b@4"
        );
    }

    /// Without a checkpoint naming the log's last record (a crash), the two
    /// tails need not show one moment: the probation stream is removed, and
    /// only main's records apply.
    #[test]
    fn after_a_crash_the_probation_stream_is_discarded() {
        for closed_at in [[None, None], [Some(4), None], [None, Some(6)]] {
            let dir = tempfile::tempdir().unwrap();
            two_streams(dir.path());
            let (r, index) = recover_closed_at(dir.path(), closed_at);
            assert_eq!((r.report.segments, r.report.discarded), (1, 1));
            assert_eq!(r.next_seq, 6, "sequence numbers are not reused");
            assert!(
                !dir.path()
                    .join(super::super::segment::file_name(2))
                    .exists()
            );
            assert_eq!(index.peek(hash_key(b"a")).unwrap().segment, 1);
            assert_eq!(index.peek(hash_key(b"b")).unwrap().segment, 1);
        }
    }
}
