//! Opening a directory that already holds segments: what `analysis` proves
//! is kept, and the directory is left in a state the next open reads the
//! same way, whenever a crash interrupts it.
//!
//! 1. The decision first: the segment list is rewritten with what the
//!    analysis found (lost segments, void ranges, each stream complete up to
//!    the last sequence number used), before anything it rests on changes.
//! 2. Then the files: damaged ones are renamed `*.quarantined`, a reclaim's
//!    leftovers and empty tails removed, each unsealed tail sealed after its
//!    last valid record (summary, trailer, `fdatasync`), a listed segment
//!    whose trailer alone was damaged sealed again, and missing keys files
//!    written again.
//! 3. The index is rebuilt from the records that apply, in sequence order: a
//!    value points its key at itself, a tombstone removes the key.
//! 4. The list again, naming the tails sealed now.
//!
//! An interruption anywhere leaves either the old list (and the next open
//! decides the same) or the new one, which already says what is void and
//! lost; sealing writes only after a tail's valid records.

use super::DiskError;
use super::analysis::{Analysis, Fate, analyze};
use super::dir::{keys_name, remove_if_there, sync_dir, write_keys};
use super::index::{Index, Loc};
use super::io::Io;
use super::listing::Listing;
use super::scan::Contents;
use super::segment::{SegmentFile, Stream};
use crate::format::list::Listed;
use crate::format::segment::{
    SUMMARY_ENTRY_LEN, SummaryEntry, TRAILER_LEN, Trailer, encode_summary,
};
use crate::stats::RecoveryStats;
use crate::sync::Arc;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

/// The state recovery rebuilt.
pub(crate) struct Recovered {
    pub(crate) files: BTreeMap<u32, Arc<SegmentFile>>,
    pub(crate) next_id: u32,
    pub(crate) next_seq: u64,
    pub(crate) report: RecoveryStats,
    pub(crate) listing: Listing,
    /// Where a clean close left the log, if it did and the directory was
    /// found intact: a checkpoint naming it describes this state.
    pub(crate) closed_at: Option<u64>,
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
    let io_err = |context: String| {
        move |source| DiskError::Io {
            context,
            source: std::sync::Arc::new(source),
        }
    };
    let a = analyze(io, dir, segment_size)?;
    for p in &a.problems {
        log::warn!("{}: {p}", dir.display());
    }
    let closed_at = a.closed_at();
    // A clean close found intact needs no change to the directory: its list
    // already says all there is (every stream complete up to where it ended).
    let untouched = a.clean()
        && a.keys_missing.is_empty()
        && !a.problems.iter().any(|p| p.starts_with("segment list:"));
    // 1. The decision, durable before anything it rests on changes.
    // (Nothing retires yet: the tails, not listed until sealed, may hold
    // records a lost segment or a void range is about.)
    let mut listing = Listing::new(dir, decided_list(&a));
    if !untouched {
        listing.persist_keeping()?;
    }
    // 2. The files.
    let mut report = RecoveryStats {
        foreign_files: a.foreign.len() as u64,
        lost_segments: a.lost.iter().filter(|l| l.new).count() as u64,
        reclaimed_before: a.list.reclaimed,
        ..RecoveryStats::default()
    };
    let mut files = BTreeMap::new();
    let mut sealed_now = Vec::new();
    for (&id, (s, fate)) in &a.segments {
        let path = &s.path;
        let ctx = |what: &str| format!("cannot {what} {}", path.display());
        match fate {
            Fate::Quarantine(_) => {
                quarantine(path).map_err(io_err(ctx("quarantine")))?;
                report.quarantined_files += 1;
                continue;
            }
            Fate::Leftover | Fate::EmptyTail => {
                remove_if_there(dir, &super::dir::segment_name(id))
                    .map_err(io_err(ctx("remove")))?;
                remove_if_there(dir, &keys_name(id)).map_err(io_err(ctx("remove")))?;
                continue;
            }
            Fate::Live | Fate::Reseal | Fate::Tail => {}
        }
        let file = SegmentFile::open(path.clone(), id)
            .map_err(io_err(ctx("open")))?
            .in_stream(s.stream);
        let entries = s.contents.entries();
        let last_seq = entries.iter().map(|e| e.seq).max().unwrap_or(0);
        if let Contents::Unsealed { end, torn, .. } = &s.contents {
            let through = match fate {
                Fate::Reseal => a
                    .list
                    .live
                    .iter()
                    .find(|l| l.id == id)
                    .map_or(a.max_seen, |l| l.through),
                _ => a.max_seen,
            };
            if *torn {
                report.torn_tails += 1;
            }
            seal(io, &file.file, id, segment_size, entries, *end, through)
                .map_err(io_err(ctx("seal")))?;
            write_keys(dir, id, last_seq, entries).map_err(io_err(ctx("write the keys of")))?;
            if *fate == Fate::Tail {
                report.sealed_tails += 1;
                sealed_now.push(Listed {
                    id,
                    probation: s.stream == Stream::Probation,
                    first_seq: s.first_seq,
                    last_seq,
                    through,
                    records: entries.len() as u32,
                });
            }
        } else if a.keys_missing.contains(&id) {
            write_keys(dir, id, last_seq, entries).map_err(io_err(ctx("write the keys of")))?;
        }
        report.records += entries.len() as u64;
        report.segments += 1;
        files.insert(id, Arc::new(file));
    }
    for (_, path, _) in &a.bad {
        quarantine(path).map_err(io_err(format!("cannot quarantine {}", path.display())))?;
        report.quarantined_files += 1;
    }
    sync_dir(dir).map_err(io_err(format!("cannot sync {}", dir.display())))?;
    // 3. The index.
    let (void, unproven) = a.for_each_applied(|id, e| apply(index, id, e, uses));
    (report.void_records, report.unproven_records) = (void, unproven);
    // 4. The list, with the tails sealed now.
    for l in sealed_now {
        let s = &mut listing.list.streams[usize::from(l.probation)];
        s.sealed_id = s.sealed_id.max(l.id);
        listing.list.live.push(l);
    }
    listing.list.live.sort_by_key(|l| l.id);
    if !untouched {
        listing.persist()?;
    }
    let ids = a.segments.keys().chain(a.bad.iter().map(|b| &b.0));
    let ids = ids.copied().chain(a.lost.iter().map(|l| l.entry.id));
    let ids = ids.chain(a.list.streams.iter().map(|s| s.sealed_id));
    let next_id = ids.max().unwrap_or(0).saturating_add(1);
    if next_id > super::index::MAX_SEGMENT_ID {
        return Err(DiskError::Failed(format!(
            "segment ids are exhausted ({} segments written)",
            super::index::MAX_SEGMENT_ID
        )));
    }
    report.entries = index.len() as u64;
    report.open_time = started.elapsed();
    Ok(Recovered {
        files,
        next_id,
        next_seq: a.max_seen + 1,
        report,
        listing,
        closed_at,
    })
}

/// The list the analysis decided: the segments kept, the lost ones, the void
/// ranges, and every stream complete up to the last sequence number used
/// (what is not there is void or lost). Not closed: a cache has it open.
fn decided_list(a: &Analysis) -> crate::format::list::SegmentList {
    let mut list = a.list.clone();
    list.closed_at = 0;
    list.voids = a.voids.clone();
    list.lost = a.lost.iter().map(|l| l.entry).collect();
    list.live = a
        .segments
        .iter()
        .filter_map(|(&id, (s, fate))| match (fate, &s.contents) {
            (
                Fate::Live,
                Contents::Sealed {
                    entries,
                    last_seq,
                    through,
                },
            ) => Some(Listed {
                id,
                probation: s.stream == Stream::Probation,
                first_seq: s.first_seq,
                last_seq: *last_seq,
                through: *through,
                records: entries.len() as u32,
            }),
            (Fate::Reseal, _) => a.list.live.iter().find(|l| l.id == id).copied(),
            _ => None,
        })
        .collect();
    for (s, state) in list.streams.iter_mut().enumerate() {
        state.through = state.through.max(a.max_seen);
        let newest = list
            .live
            .iter()
            .filter(|l| usize::from(l.probation) == s)
            .map(|l| l.id)
            .max();
        state.sealed_id = state.sealed_id.max(newest.unwrap_or(0));
    }
    list
}

/// Renames a damaged segment file `*.seg.quarantined`: kept for a person,
/// never read again.
fn quarantine(path: &Path) -> std::io::Result<()> {
    let to = path.with_extension("seg.quarantined");
    match std::fs::rename(path, &to) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Seals an unsealed segment's valid prefix in place: summary, trailer, sync.
fn seal(
    io: &dyn Io,
    file: &std::fs::File,
    id: u32,
    segment_size: u64,
    entries: &[SummaryEntry],
    end: usize,
    through: u64,
) -> std::io::Result<()> {
    let mut summary = Vec::with_capacity(entries.len() * SUMMARY_ENTRY_LEN);
    let summary_crc = encode_summary(u64::from(id), entries, &mut summary);
    io.write_all_at(file, &summary, end as u64)?;
    let last_seq = entries.iter().map(|e| e.seq).max().unwrap_or(0);
    let trailer = Trailer {
        summary_offset: end as u32,
        record_count: entries.len() as u32,
        last_seq,
        through: through.max(last_seq),
        summary_crc,
    };
    io.write_all_at(
        file,
        &trailer.encode(u64::from(id)),
        segment_size - TRAILER_LEN as u64,
    )?;
    io.sync_data(file)
}

/// Applies one record to the index.
fn apply(index: &Index, id: u32, e: &SummaryEntry, uses: &HashMap<(u32, u32), u8>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::dir::{LIST_FILES, segment_name};
    use crate::disk::io::Positional;
    use crate::format::keys::{Keys, fingerprint};
    use crate::format::list::{SegmentList, StreamState};
    use crate::format::record::{self, Kind, Mark, RecordHeader, StreamPos};
    use crate::format::segment::{SEGMENT_HEADER_LEN, SegmentHeader};
    use crate::key::hash_key;

    const SIZE: u64 = 64 << 10;

    /// One record to write: a key's value (or `None`: a tombstone) at a
    /// sequence number, or a mark.
    enum R<'a> {
        Put(&'a [u8], Option<&'a [u8]>, u64),
        Mark(u64, Mark),
    }

    /// Segment `id`'s bytes (header and records) and its summary.
    fn segment(
        id: u32,
        first_seq: u64,
        probation: bool,
        records: &[R],
    ) -> (Vec<u8>, Vec<SummaryEntry>) {
        let mut seg = SegmentHeader {
            segment_id: u64::from(id),
            first_seq,
            segment_size: SIZE,
            probation,
        }
        .encode()
        .to_vec();
        let mut summary = Vec::new();
        for r in records {
            let offset = seg.len() as u32;
            let (header, key, stored, hash) = match r {
                R::Put(key, value, seq) => {
                    let v = value.unwrap_or_default();
                    let header = RecordHeader {
                        kind: if value.is_some() {
                            Kind::Value
                        } else {
                            Kind::Tombstone
                        },
                        compressed: false,
                        key_len: key.len() as u16,
                        stored_len: v.len() as u32,
                        raw_len: v.len() as u32,
                        expires_at: 0,
                        seq: *seq,
                    };
                    (header, *key, v.to_vec(), hash_key(key))
                }
                R::Mark(seq, m) => (Mark::header(*seq), &[][..], m.encode().to_vec(), 0),
            };
            record::encode(&mut seg, u64::from(id), offset, &header, key, &stored);
            summary.push(SummaryEntry {
                hash,
                seq: header.seq,
                offset,
                len: seg.len() as u32 - offset,
                tombstone: header.kind == Kind::Tombstone,
                compressed: false,
                mark: header.kind == Kind::Mark,
            });
        }
        (seg, summary)
    }

    /// Writes a sealed segment (with its keys file); returns its listing.
    fn sealed(
        dir: &Path,
        id: u32,
        first_seq: u64,
        probation: bool,
        through: u64,
        records: &[R],
    ) -> Listed {
        let (mut seg, entries) = segment(id, first_seq, probation, records);
        let summary_offset = seg.len() as u32;
        let mut bytes = Vec::new();
        let summary_crc = encode_summary(u64::from(id), &entries, &mut bytes);
        seg.extend_from_slice(&bytes);
        seg.resize(SIZE as usize - TRAILER_LEN, 0);
        let last_seq = entries.iter().map(|e| e.seq).max().unwrap_or(0);
        let trailer = Trailer {
            summary_offset,
            record_count: entries.len() as u32,
            last_seq,
            through,
            summary_crc,
        };
        seg.extend_from_slice(&trailer.encode(u64::from(id)));
        std::fs::write(dir.join(segment_name(id)), seg).unwrap();
        write_keys(dir, id, last_seq, &entries).unwrap();
        Listed {
            id,
            probation,
            first_seq,
            last_seq,
            through,
            records: entries.len() as u32,
        }
    }

    /// Writes an unsealed segment (a crash's tail); returns where its records end.
    fn unsealed(dir: &Path, id: u32, first_seq: u64, probation: bool, records: &[R]) -> u32 {
        let (seg, _) = segment(id, first_seq, probation, records);
        std::fs::write(dir.join(segment_name(id)), &seg).unwrap();
        seg.len() as u32
    }

    fn write_list(dir: &Path, live: Vec<Listed>, through: [u64; 2], closed_at: u64) {
        let streams = [false, true].map(|p| StreamState {
            sealed_id: live
                .iter()
                .filter(|l| l.probation == p)
                .map(|l| l.id)
                .max()
                .unwrap_or(0),
            through: through[usize::from(p)],
        });
        let list = SegmentList {
            generation: 1,
            closed_at,
            streams,
            live,
            ..SegmentList::default()
        };
        for name in LIST_FILES {
            std::fs::write(dir.join(name), list.encode()).unwrap();
        }
    }

    fn recover_dir(dir: &Path) -> (Recovered, Index) {
        let index = Index::new();
        let r = recover(&Positional, dir, SIZE, &index, &HashMap::new()).unwrap();
        (r, index)
    }

    fn at(index: &Index, key: &[u8]) -> Option<u32> {
        index.peek(hash_key(key)).map(|l| l.segment)
    }

    /// Appends are in sequence order, so records out of it mean a bug; recovery
    /// then still applies them by sequence number, newest last.
    #[test]
    fn records_out_of_sequence_order_apply_by_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Segment 1's records are out of order within it too: its last is not its largest.
        let a = sealed(
            d,
            1,
            9,
            false,
            10,
            &[
                R::Put(b"j", Some(b"only"), 10),
                R::Put(b"k", Some(b"newer"), 9),
            ],
        );
        let b = sealed(d, 2, 4, false, 10, &[R::Put(b"k", Some(b"older"), 4)]);
        write_list(d, vec![a, b], [10, 10], 10);
        let (r, index) = recover_dir(d);
        assert_eq!(
            (r.next_id, r.next_seq),
            (3, 11),
            "no sequence number reused"
        );
        assert_eq!(r.report.entries, 2);
        assert_eq!(
            at(&index, b"k"),
            Some(1),
            "the record with the higher sequence number wins"
        );
        assert!(at(&index, b"j").is_some());
    }

    /// Main: `a`@2, `b`@5. Probation: `a`@3, `b`@4. A clean close at 5.
    #[test]
    fn both_streams_apply_merged_by_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let m = sealed(
            d,
            1,
            1,
            false,
            5,
            &[
                R::Put(b"a", Some(b"main"), 2),
                R::Put(b"b", Some(b"main"), 5),
            ],
        );
        let p = sealed(
            d,
            2,
            1,
            true,
            5,
            &[
                R::Put(b"a", Some(b"prob"), 3),
                R::Put(b"b", Some(b"prob"), 4),
            ],
        );
        write_list(d, vec![m, p], [5, 5], 5);
        let (r, index) = recover_dir(d);
        assert_eq!(r.report.segments, 2);
        assert_eq!(r.closed_at, Some(5), "a clean close, found intact");
        assert_eq!(r.files[&2].stream, Stream::Probation);
        assert_eq!(at(&index, b"a"), Some(2), "a@3 beats a@2");
        assert_eq!(at(&index, b"b"), Some(1), "b@5 beats b@4");
    }

    /// After a crash each stream is kept up to where it is proved complete,
    /// and no further: main is sealed through 5; the probation tail holds
    /// records up to 7. Main may have lost 6 (its next segment was never
    /// written), so 7 is void and 3 is kept: the log as it was at 5.
    #[test]
    fn after_a_crash_both_streams_are_kept_up_to_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let m = sealed(
            d,
            1,
            1,
            false,
            5,
            &[
                R::Put(b"a", Some(b"main"), 2),
                R::Put(b"b", Some(b"main"), 5),
            ],
        );
        unsealed(
            d,
            2,
            1,
            true,
            &[
                R::Put(b"a", Some(b"prob"), 3),
                R::Put(b"c", Some(b"prob"), 7),
            ],
        );
        write_list(d, vec![m], [0, 0], 0);
        let (r, index) = recover_dir(d);
        assert_eq!(r.report.sealed_tails, 1, "the tail is sealed");
        assert_eq!(r.report.void_records, 1);
        assert_eq!(at(&index, b"a"), Some(2), "a@3, from probation, kept");
        assert_eq!(at(&index, b"b"), Some(1));
        assert_eq!(at(&index, b"c"), None, "c@7 came after what main proves");
        assert_eq!(r.next_seq, 8, "sequence numbers are not reused");
        // The decision is durable: a second open keeps exactly the same.
        drop(r);
        let (again, index) = recover_dir(d);
        assert_eq!(again.report.void_records, 1, "{:?}", again.report);
        assert_eq!(at(&index, b"c"), None);
        assert_eq!(at(&index, b"a"), Some(2));
    }

    /// An idle stream does not hold a busy one back: a mark the probation
    /// stream carries says main stood empty, so main is proved complete up
    /// to the mark, and nothing before it is void.
    #[test]
    fn a_mark_proves_an_idle_stream_complete() {
        for with_mark in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let m = sealed(d, 1, 1, false, 2, &[R::Put(b"a", Some(b"main"), 2)]);
            let mark = Mark {
                streams: [
                    StreamPos {
                        segment: 3,
                        end: SEGMENT_HEADER_LEN as u32,
                        first_seq: 3,
                    },
                    StreamPos {
                        segment: 2,
                        end: 0,
                        first_seq: 3,
                    },
                ],
            };
            let mut records = vec![
                R::Put(b"b", Some(b"prob"), 3),
                R::Put(b"c", Some(b"prob"), 4),
            ];
            if with_mark {
                records.push(R::Mark(5, mark));
            }
            unsealed(d, 2, 3, true, &records);
            write_list(d, vec![m], [2, 2], 0);
            let (r, index) = recover_dir(d);
            let kept =
                usize::from(at(&index, b"b").is_some()) + usize::from(at(&index, b"c").is_some());
            if with_mark {
                assert_eq!((r.report.void_records, kept), (0, 2));
            } else {
                assert_eq!(
                    (r.report.void_records, kept),
                    (2, 0),
                    "main may have lost 3 and 4"
                );
            }
        }
    }

    /// A lost segment costs its keys: their older records are dropped (it
    /// may have held a newer one), every other key is kept.
    #[test]
    fn a_lost_segment_costs_its_keys_only() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let old = sealed(
            d,
            1,
            1,
            false,
            3,
            &[
                R::Put(b"a", Some(b"1"), 1),
                R::Put(b"b", Some(b"1"), 2),
                R::Put(b"c", Some(b"1"), 3),
            ],
        );
        let lost = sealed(
            d,
            2,
            4,
            false,
            5,
            &[R::Put(b"a", Some(b"2"), 4), R::Put(b"b", None, 5)],
        );
        let new = sealed(d, 3, 6, false, 6, &[R::Put(b"c", Some(b"2"), 6)]);
        write_list(d, vec![old, lost, new], [6, 6], 6);
        std::fs::remove_file(d.join(segment_name(2))).unwrap();
        let (r, index) = recover_dir(d);
        assert_eq!(r.report.lost_segments, 1);
        assert_eq!(
            at(&index, b"a"),
            None,
            "a@1 is stale: the lost segment held a@4"
        );
        assert_eq!(at(&index, b"b"), None, "b@2 was removed by b@5");
        assert_eq!(at(&index, b"c"), Some(3), "c is untouched");
        assert_eq!(r.report.unproven_records, 2);
        // Remembered: the next open drops the same.
        drop(r);
        let (again, index) = recover_dir(d);
        assert_eq!(
            (again.report.lost_segments, again.report.unproven_records),
            (0, 2)
        );
        assert_eq!(at(&index, b"a"), None);
        // Without its keys file, every older record is unproven.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let old = sealed(
            d,
            1,
            1,
            false,
            3,
            &[R::Put(b"a", Some(b"1"), 1), R::Put(b"z", Some(b"1"), 2)],
        );
        let lost = sealed(d, 2, 4, false, 5, &[R::Put(b"a", Some(b"2"), 4)]);
        write_list(d, vec![old, lost], [5, 5], 5);
        std::fs::remove_file(d.join(segment_name(2))).unwrap();
        std::fs::remove_file(d.join(keys_name(2))).unwrap();
        let (_, index) = recover_dir(d);
        assert_eq!((at(&index, b"a"), at(&index, b"z")), (None, None));
        let k = Keys::decode(&std::fs::read(d.join(keys_name(1))).unwrap()).unwrap();
        assert_eq!(
            k.fingerprints,
            vec![fingerprint(hash_key(b"a")), fingerprint(hash_key(b"z"))]
        );
    }

    /// Without a list, nothing can be proved the newest of its key.
    #[test]
    fn without_a_list_every_record_is_void() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        sealed(d, 1, 1, false, 1, &[R::Put(b"a", Some(b"1"), 1)]);
        let (r, index) = recover_dir(d);
        assert_eq!((r.report.void_records, index.len()), (1, 0));
    }
}
