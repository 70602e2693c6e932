//! Reading a directory's segment files as they are: which files are
//! segments, and what each holds as far as its checks prove (its summary if
//! it is sealed, else its records up to the first that fails its checks).

use super::index::MAX_SEGMENT_ID;
use super::io::Io;
use crate::format::record::{self, Kind, Mark, RECORD_HEADER_LEN};
use crate::format::segment::{
    SEGMENT_HEADER_LEN, SUMMARY_ENTRY_LEN, SegmentHeader, SummaryEntry, TRAILER_LEN, Trailer,
};
use crate::key::hash_key;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What one segment file holds, as far as it can be trusted.
pub(crate) enum Contents {
    /// A valid trailer and summary.
    Sealed {
        entries: Vec<SummaryEntry>,
        last_seq: u64,
        through: u64,
    },
    /// No valid trailer: the records up to the first that fails its checks.
    Unsealed {
        entries: Vec<SummaryEntry>,
        /// Where the valid records end.
        end: usize,
        /// Whether non-zero bytes follow them (a torn record, not just unwritten space).
        torn: bool,
        /// The marks among them, read.
        marks: Vec<(u64, Mark)>,
    },
}

impl Contents {
    pub(crate) fn entries(&self) -> &[SummaryEntry] {
        match self {
            Contents::Sealed { entries, .. } | Contents::Unsealed { entries, .. } => entries,
        }
    }

    pub(crate) fn max_seq(&self) -> u64 {
        let last = self.entries().iter().map(|e| e.seq).max().unwrap_or(0);
        match self {
            Contents::Sealed { last_seq, .. } => last.max(*last_seq),
            Contents::Unsealed { .. } => last,
        }
    }
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
                through: trailer.through,
            },
        ));
    }
    // Unsealed (or a damaged trailer or summary): trust only what checks out.
    read(&mut bytes, 0..len)?;
    let limit = (segment_size as usize - TRAILER_LEN).min(len);
    let (mut entries, mut marks) = (Vec::new(), Vec::new());
    let mut at = SEGMENT_HEADER_LEN;
    while at + RECORD_HEADER_LEN <= limit {
        let Ok(r) = record::decode(u64::from(id), at as u32, &bytes[at..limit]) else {
            break;
        };
        let rec_len = r.header.record_len();
        let mark = r.header.kind == Kind::Mark;
        if mark && let Some(m) = Mark::decode(r.stored) {
            marks.push((r.header.seq, m));
        }
        entries.push(SummaryEntry {
            hash: if mark { 0 } else { hash_key(r.key) },
            seq: r.header.seq,
            offset: at as u32,
            len: rec_len as u32,
            tombstone: r.header.kind == Kind::Tombstone,
            compressed: r.header.compressed,
            mark,
        });
        at += rec_len;
    }
    // Room for the summary that sealing will write after the records.
    let room = segment_size as usize - TRAILER_LEN;
    while at + entries.len() * SUMMARY_ENTRY_LEN > room && !entries.is_empty() {
        let last = entries.pop().expect("not empty");
        at = last.offset as usize;
        marks.retain(|&(seq, _)| seq != last.seq);
    }
    let torn = bytes[at..len].iter().any(|&b| b != 0);
    Ok((
        header,
        Contents::Unsealed {
            entries,
            end: at,
            torn,
            marks,
        },
    ))
}
