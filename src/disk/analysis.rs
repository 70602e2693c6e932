//! What a directory holds, as far as it can be proved: the part of recovery
//! that reads and decides, shared by recovery (which then acts on it) and
//! `verify` (which reports it). Nothing here writes.
//!
//! * **Which segments.** The segment list (format.md §2.2) names every sealed
//!   segment. A listed segment that is missing, has a bad header, or whose
//!   trailer and summary are damaged with records gone, is *lost*. A segment
//!   the list does not name is a seal whose listing a crash cut short (newer
//!   than the stream's newest listed: kept), a reclaim's leftover (older:
//!   removed), the unsealed newest of its stream (a crash's tail: scanned up
//!   to its first bad record), or damage.
//! * **What a loss costs.** A lost segment's keys file names the keys it
//!   held: their records older than the lost segment's last one are
//!   unproven (it may have held a newer one) and are dropped. Without the
//!   keys file, every older record is unproven.
//! * **The crash cut.** The log's streams are written independently, so
//!   after a crash one may hold records appended after ones the other lost.
//!   Each stream is complete up to a *watermark*: its own records and marks
//!   survive as a prefix, its sealed segments name how far they reach, and a
//!   mark (format.md §1.2) another stream carries proves it complete up to the
//!   mark if its records reach where the mark says. The cut is the smallest
//!   watermark: every record numbered above it is void, so what recovery
//!   keeps is the log as it was at one moment, at least the last `sync()`.

use super::io::Io;
use super::listing::{self, ListRead};
use super::scan::{Contents, list_segments, read_segment};
use super::segment::Stream;
use super::{DiskError, dir};
use crate::format::keys::{Keys, fingerprint};
use crate::format::list::{Listed, Lost, SegmentList};
use crate::format::record::{self, Mark, StreamPos};
use crate::format::segment::{SEGMENT_HEADER_LEN, SummaryEntry};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// A segment file whose header is valid.
pub(crate) struct Scanned {
    pub(crate) id: u32,
    pub(crate) path: PathBuf,
    pub(crate) stream: Stream,
    pub(crate) first_seq: u64,
    pub(crate) contents: Contents,
}

/// What recovery does with a segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Sealed and accounted for: its records apply.
    Live,
    /// Listed, its trailer or summary damaged, every record still there:
    /// its records apply and it is sealed again.
    Reseal,
    /// The unsealed newest segment of its stream (a crash's tail): its valid
    /// records apply, and it is sealed after them.
    Tail,
    /// A tail without one valid record: removed.
    EmptyTail,
    /// Not listed and older than the newest listed of its stream: what a
    /// reclaim left behind. Removed; its records do not apply.
    Leftover,
    /// Damaged or not this directory's: renamed `*.quarantined`, never read.
    Quarantine(String),
}

/// A segment lost, with what it may have superseded.
pub(crate) struct LostSet {
    pub(crate) entry: Lost,
    /// The fingerprints of its keys, if its keys file is readable.
    fingerprints: Option<HashSet<u32>>,
    /// Found lost by this analysis (not carried over from the list).
    pub(crate) new: bool,
    pub(crate) why: String,
}

impl LostSet {
    /// Whether the record `(hash, seq)` could have been superseded by one
    /// this segment held.
    fn supersedes(&self, hash: u64, seq: u64) -> bool {
        seq < self.entry.last_seq
            && self
                .fingerprints
                .as_ref()
                .is_none_or(|f| f.contains(&fingerprint(hash)))
    }
}

/// Everything recovery and `verify` need to know about a directory.
pub(crate) struct Analysis {
    /// The list as read (empty if none was found).
    pub(crate) list: SegmentList,
    /// Whether a valid list was found.
    pub(crate) list_found: bool,
    /// Segment files with a valid header, by id, and what becomes of them.
    pub(crate) segments: BTreeMap<u32, (Scanned, Fate)>,
    /// Segment files whose header is not valid: path and why (quarantined).
    pub(crate) bad: Vec<(u32, PathBuf, String)>,
    /// Files named like segments that are not larder's.
    pub(crate) foreign: Vec<PathBuf>,
    pub(crate) lost: Vec<LostSet>,
    /// Void sequence number ranges: the list's, then any new one.
    pub(crate) voids: Vec<(u64, u64)>,
    /// Records numbered above this are void (the crash cut).
    pub(crate) cut: u64,
    /// The largest sequence number the directory has used.
    pub(crate) max_seen: u64,
    /// Live segments whose keys file is missing or damaged.
    pub(crate) keys_missing: Vec<u32>,
    /// One line for each problem found, for a person.
    pub(crate) problems: Vec<String>,
}

fn stream_of(probation: bool) -> Stream {
    if probation {
        Stream::Probation
    } else {
        Stream::Main
    }
}

/// Reads `dir` and decides what recovery keeps; changes nothing.
pub(crate) fn analyze(io: &dyn Io, dir: &Path, segment_size: u64) -> Result<Analysis, DiskError> {
    let io_err = |context: String| {
        move |source| DiskError::Io {
            context,
            source: std::sync::Arc::new(source),
        }
    };
    let mut problems = Vec::new();
    let (list, list_found) = match listing::read(dir) {
        ListRead::Found { list, problems: p } => {
            problems.extend(p.into_iter().map(|p| format!("segment list: {p}")));
            (list, true)
        }
        ListRead::Missing => (SegmentList::default(), false),
        ListRead::Damaged(p) => {
            problems.extend(p.into_iter().map(|p| format!("segment list: {p}")));
            (SegmentList::default(), false)
        }
    };
    let (paths, foreign) =
        list_segments(dir).map_err(io_err(format!("cannot list {}", dir.display())))?;
    for path in &foreign {
        problems.push(format!("{}: not a segment of larder's", path.display()));
    }
    let mut scanned = BTreeMap::new();
    let mut bad = Vec::new();
    for (id, path) in paths {
        let file = std::fs::File::open(&path)
            .map_err(io_err(format!("cannot open {}", path.display())))?;
        match read_segment(io, &file, id, segment_size) {
            Ok((header, contents)) => {
                let stream = stream_of(header.probation);
                let first_seq = header.first_seq;
                scanned.insert(
                    id,
                    Scanned {
                        id,
                        path,
                        stream,
                        first_seq,
                        contents,
                    },
                );
            }
            Err(why) => bad.push((id, path, why)),
        }
    }
    let mut a = Analysis {
        list,
        list_found,
        segments: BTreeMap::new(),
        bad: Vec::new(),
        foreign,
        lost: Vec::new(),
        voids: Vec::new(),
        cut: 0,
        max_seen: 0,
        keys_missing: Vec::new(),
        problems,
    };
    a.classify(dir, scanned, bad);
    a.max_seen = a.max_seen();
    a.watermarks(io);
    Ok(a)
}

impl Analysis {
    /// Decides each file's fate and finds the lost segments.
    fn classify(
        &mut self,
        dir: &Path,
        mut scanned: BTreeMap<u32, Scanned>,
        bad: Vec<(u32, PathBuf, String)>,
    ) {
        let listed: HashMap<u32, Listed> = self.list.live.iter().map(|l| (l.id, *l)).collect();
        let bad_ids: HashMap<u32, String> = bad.iter().map(|(id, _, w)| (*id, w.clone())).collect();
        for l in self.list.live.clone() {
            let lose = |a: &mut Self, why: String| a.lose(dir, l, why);
            match scanned.remove(&l.id) {
                None => match bad_ids.get(&l.id) {
                    Some(why) => lose(self, format!("its header is not valid ({why})")),
                    None => lose(self, "its file is missing".into()),
                },
                Some(s) => {
                    let fate = match &s.contents {
                        _ if s.stream != stream_of(l.probation) => {
                            Fate::Quarantine("its header names the other stream".into())
                        }
                        Contents::Sealed {
                            entries, last_seq, ..
                        } if entries.len() as u32 == l.records && *last_seq == l.last_seq => {
                            Fate::Live
                        }
                        Contents::Sealed { .. } => {
                            Fate::Quarantine("its summary does not match the list".into())
                        }
                        Contents::Unsealed { entries, .. }
                            if entries.len() as u32 == l.records
                                && entries.last().map_or(0, |e| e.seq) == l.last_seq =>
                        {
                            self.problems.push(format!(
                                "{}: its trailer or summary is damaged; every record is there (sealed again at the next open)",
                                s.path.display()
                            ));
                            Fate::Reseal
                        }
                        Contents::Unsealed { entries, .. } => Fate::Quarantine(format!(
                            "its trailer or summary is damaged and only {} of its {} records check out",
                            entries.len(),
                            l.records
                        )),
                    };
                    if let Fate::Quarantine(why) = &fate {
                        lose(self, why.clone());
                    }
                    self.segments.insert(l.id, (s, fate));
                }
            }
        }
        // Files the list does not name.
        let newest_of = |stream: Stream, scanned: &BTreeMap<u32, Scanned>| {
            scanned
                .values()
                .filter(|s| s.stream == stream)
                .map(|s| s.id)
                .max()
        };
        let newest = [
            newest_of(Stream::Main, &scanned),
            newest_of(Stream::Probation, &scanned),
        ];
        for (id, s) in std::mem::take(&mut scanned) {
            let sealed_id = self.list.streams[s.stream as usize].sealed_id;
            let fate = match &s.contents {
                Contents::Sealed { .. } if id > sealed_id => Fate::Live,
                Contents::Sealed { .. } => Fate::Leftover,
                Contents::Unsealed { entries, .. }
                    if Some(id) == newest[s.stream as usize] && id > sealed_id =>
                {
                    if entries.is_empty() {
                        Fate::EmptyTail
                    } else {
                        Fate::Tail
                    }
                }
                Contents::Unsealed { .. } => Fate::Quarantine(
                    "unsealed, not listed, and not the newest of its stream".into(),
                ),
            };
            if let Fate::Quarantine(why) = &fate {
                // What it held is unknown: every older record is unproven.
                let entry = Lost {
                    id,
                    probation: s.stream == Stream::Probation,
                    has_keys: false,
                    last_seq: u64::MAX,
                    keys: 0,
                };
                self.problems.push(format!(
                    "{}: {why}; every older record is unproven",
                    s.path.display()
                ));
                self.lost.push(LostSet {
                    entry,
                    fingerprints: None,
                    new: true,
                    why: why.clone(),
                });
            }
            self.segments.insert(id, (s, fate));
        }
        for (id, path, why) in bad {
            if !listed.contains_key(&id) {
                self.problems.push(format!(
                    "{}: not a valid segment ({why}); quarantined",
                    path.display()
                ));
            }
            self.bad.push((id, path, why));
        }
        // Lost in an earlier open, still remembered.
        for l in self.list.lost.clone() {
            let fingerprints = l
                .has_keys
                .then(|| read_keys(dir, l.id, l.last_seq))
                .flatten();
            if l.has_keys && fingerprints.is_none() {
                self.problems.push(format!(
                    "the keys file of lost segment {} is missing or damaged: every record older than it is unproven",
                    l.id
                ));
            }
            self.lost.push(LostSet {
                entry: l,
                fingerprints,
                new: false,
                why: "lost at an earlier open".into(),
            });
        }
        for (&id, (s, fate)) in &self.segments {
            let keyed = matches!(fate, Fate::Live)
                && matches!(s.contents, Contents::Sealed { last_seq, .. } if read_keys(dir, id, last_seq).is_none());
            if keyed {
                self.keys_missing.push(id);
                self.problems.push(format!(
                    "{}: its keys file is missing or damaged (written again at the next open)",
                    dir.join(dir::keys_name(id)).display()
                ));
            }
        }
    }

    /// Records that listed segment `l` is lost.
    fn lose(&mut self, dir: &Path, l: Listed, why: String) {
        let fingerprints = read_keys(dir, l.id, l.last_seq);
        let cost = if fingerprints.is_some() {
            "the older records of its keys are unproven"
        } else {
            "its keys file is gone too: every older record is unproven"
        };
        self.problems.push(format!(
            "segment {} ({} records) is lost: {why}; {cost}",
            l.id, l.records
        ));
        let keys = fingerprints.as_ref().map_or(0, |f| f.len() as u32);
        self.lost.push(LostSet {
            entry: Lost {
                id: l.id,
                probation: l.probation,
                has_keys: fingerprints.is_some(),
                last_seq: l.last_seq,
                keys,
            },
            fingerprints,
            new: true,
            why,
        });
    }

    /// Segments whose records apply, by id.
    pub(crate) fn applied(&self) -> impl Iterator<Item = &Scanned> {
        self.segments
            .values()
            .filter(|(_, f)| matches!(f, Fate::Live | Fate::Reseal | Fate::Tail))
            .map(|(s, _)| s)
    }

    fn max_seen(&self) -> u64 {
        let segs = self
            .segments
            .values()
            .map(|(s, _)| s.contents.max_seq().max(s.first_seq.saturating_sub(1)));
        let lost = self
            .lost
            .iter()
            .map(|l| l.entry.last_seq)
            .filter(|&s| s != u64::MAX);
        let list = &self.list;
        segs.chain(lost)
            .chain(list.live.iter().map(|l| l.through))
            .chain(list.streams.iter().map(|s| s.through))
            .chain(list.voids.iter().map(|v| v.1))
            .chain(std::iter::once(list.closed_at))
            .max()
            .unwrap_or(0)
    }

    /// Computes each stream's watermark and the crash cut, and the void
    /// ranges that follow (format.md §2.3 steps 4–5).
    fn watermarks(&mut self, io: &dyn Io) {
        self.voids = self.list.voids.clone();
        for l in &mut self.lost {
            if l.entry.last_seq == u64::MAX {
                l.entry.last_seq = self.max_seen;
            }
        }
        if !self.list_found && !self.segments.is_empty() {
            // Without a list, a missing segment cannot be told from one
            // never written: nothing on disk is proved.
            self.problems.push(
                "the segment list is lost: no record can be proved the newest of its key, all are void".into(),
            );
            self.voids.push((1, self.max_seen));
            self.cut = self.max_seen;
            return;
        }
        let mut base = [0u64; 2];
        for (s, b) in base.iter_mut().enumerate() {
            *b = self.list.streams[s].through;
        }
        for (s, fate) in self.segments.values() {
            let b = &mut base[s.stream as usize];
            match (&s.contents, fate) {
                (Contents::Sealed { through, .. }, Fate::Live) => *b = (*b).max(*through),
                (_, Fate::Reseal) => {
                    let l = self.list.live.iter().find(|l| l.id == s.id);
                    *b = (*b).max(l.map_or(0, |l| l.through));
                }
                _ => {}
            }
            if matches!(
                fate,
                Fate::Live | Fate::Reseal | Fate::Tail | Fate::EmptyTail
            ) {
                // Its file exists: every earlier segment of its stream was sealed.
                *b = (*b).max(s.first_seq.saturating_sub(1));
            }
        }
        let mut water = base;
        for s in self.applied() {
            let w = &mut water[s.stream as usize];
            *w = (*w).max(
                s.contents
                    .entries()
                    .iter()
                    .map(|e| e.seq)
                    .max()
                    .unwrap_or(0),
            );
        }
        // Marks other streams carry, newest first, for each stream below them.
        let floor = water[0].min(water[1]);
        let marks = self.marks_above(io, floor);
        for stream in [Stream::Main, Stream::Probation] {
            let s = stream as usize;
            for &(seq, carrier, mark) in &marks {
                if carrier != stream
                    && seq > water[s]
                    && self.reaches(stream, &mark.streams[s], base[s])
                {
                    water[s] = seq;
                    break;
                }
            }
        }
        self.cut = water[0].min(water[1]);
        let voided = self
            .applied()
            .flat_map(|s| s.contents.entries())
            .any(|e| !e.mark && e.seq > self.cut);
        if voided {
            self.problems.push(format!(
                "the log is complete only up to record {} (a crash): later records are void",
                self.cut
            ));
            self.voids.push((self.cut + 1, self.max_seen));
        }
    }

    /// The marks of applied segments numbered above `floor`, newest first,
    /// with the stream that carries each.
    fn marks_above(&self, io: &dyn Io, floor: u64) -> Vec<(u64, Stream, Mark)> {
        let mut out = Vec::new();
        for s in self.applied() {
            match &s.contents {
                Contents::Unsealed { marks, .. } => {
                    out.extend(
                        marks
                            .iter()
                            .filter(|m| m.0 > floor)
                            .map(|&(q, m)| (q, s.stream, m)),
                    );
                }
                Contents::Sealed { entries, .. } => {
                    let Ok(file) = std::fs::File::open(&s.path) else {
                        continue;
                    };
                    for e in entries.iter().filter(|e| e.mark && e.seq > floor) {
                        let mut b = vec![0u8; e.len as usize];
                        let read = io.read_exact_at(&file, &mut b, u64::from(e.offset));
                        if let Ok(r) = read.map_err(|_| ()).and_then(|()| {
                            record::decode(u64::from(s.id), e.offset, &b).map_err(|_| ())
                        }) && let Some(m) = Mark::decode(r.stored)
                        {
                            out.push((e.seq, s.stream, m));
                        }
                    }
                }
            }
        }
        out.sort_by_key(|m| std::cmp::Reverse(m.0));
        out
    }

    /// Whether `stream`'s records reach `pos`: every segment of the stream
    /// before `pos.segment` complete, and that one's records up to `pos.end`.
    fn reaches(&self, stream: Stream, pos: &StreamPos, base: u64) -> bool {
        let of_stream = |id: u32| {
            self.segments
                .get(&id)
                .filter(|(s, _)| s.stream == stream)
                .map(|(_, f)| f)
        };
        let sealed_id = self.list.streams[stream as usize].sealed_id;
        let probation = stream == Stream::Probation;
        // Sealed at some point: listed once, lost, sealed on disk, or older
        // than a segment of its stream whose file exists (a segment's file is
        // made only once every earlier one of its stream is sealed).
        let was_sealed = pos.segment <= sealed_id
            || self
                .lost
                .iter()
                .any(|l| l.entry.probation == probation && l.entry.id >= pos.segment)
            || matches!(
                of_stream(pos.segment),
                Some(Fate::Live | Fate::Reseal | Fate::Leftover)
            )
            || self
                .segments
                .range(pos.segment + 1..)
                .any(|(_, (s, _))| s.stream == stream);
        let tail_end = match (of_stream(pos.segment), self.segments.get(&pos.segment)) {
            (Some(Fate::Tail | Fate::EmptyTail), Some((s, _))) => match &s.contents {
                Contents::Unsealed { end, .. } => Some(*end),
                Contents::Sealed { .. } => None,
            },
            _ => None,
        };
        let earlier = pos.first_seq.saturating_sub(1) <= base || was_sealed || tail_end.is_some();
        let data = pos.end as usize <= SEGMENT_HEADER_LEN
            || was_sealed
            || tail_end.is_some_and(|e| e >= pos.end as usize);
        earlier && data
    }

    /// Whether the record `(hash, seq)` is void or unproven.
    pub(crate) fn verdict(&self, e: &SummaryEntry) -> Verdict {
        if self.voids.is_empty() && self.lost.is_empty() {
            return Verdict::Kept;
        }
        if self.voids.iter().any(|&(a, b)| (a..=b).contains(&e.seq)) {
            Verdict::Void
        } else if self.lost.iter().any(|l| l.supersedes(e.hash, e.seq)) {
            Verdict::Unproven
        } else {
            Verdict::Kept
        }
    }

    /// Calls `f` with each record that applies (values and tombstones of
    /// applied segments, neither void nor unproven), in sequence order, with
    /// its segment's id. Returns how many were void and how many unproven.
    pub(crate) fn for_each_applied(&self, mut f: impl FnMut(u32, &SummaryEntry)) -> (u64, u64) {
        let run = |stream| {
            self.applied()
                .filter(move |s| s.stream == stream)
                .flat_map(|s| s.contents.entries().iter().map(move |e| (s.id, e)))
        };
        let in_order = |stream| {
            let mut last = None;
            run(stream).all(|(_, e)| last.replace(e.seq).is_none_or(|l| l < e.seq))
        };
        let (mut void, mut unproven) = (0, 0);
        let mut apply = |id: u32, e: &SummaryEntry| {
            if e.mark {
                return;
            }
            match self.verdict(e) {
                Verdict::Kept => f(id, e),
                Verdict::Void => void += 1,
                Verdict::Unproven => unproven += 1,
            }
        };
        if in_order(Stream::Main) && in_order(Stream::Probation) {
            // Each stream is in sequence order: merge the two.
            let (mut a, mut b) = (
                run(Stream::Main).peekable(),
                run(Stream::Probation).peekable(),
            );
            loop {
                let take_a = match (a.peek(), b.peek()) {
                    (Some(x), Some(y)) => x.1.seq < y.1.seq,
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (None, None) => break,
                };
                let (id, e) = if take_a { a.next() } else { b.next() }.expect("peeked");
                apply(id, e);
            }
        } else {
            // Appends are in sequence order, so this means a bug, not damage.
            log::warn!("records out of sequence order on disk; applying them sorted");
            let mut all: Vec<(u32, &SummaryEntry)> =
                run(Stream::Main).chain(run(Stream::Probation)).collect();
            all.sort_by_key(|(_, e)| e.seq);
            for (id, e) in all {
                apply(id, e);
            }
        }
        (void, unproven)
    }

    /// Where a clean close left the log, if it did and nothing was written
    /// after it: a checkpoint naming it describes the log (damage found
    /// since costs only what it costs, counted elsewhere).
    pub(crate) fn closed_at(&self) -> Option<u64> {
        let after = self.voids.len() != self.list.voids.len()
            || self
                .segments
                .values()
                .any(|(_, f)| matches!(f, Fate::Tail | Fate::EmptyTail));
        (self.list_found
            && self.list.closed_at != 0
            && self.list.closed_at == self.max_seen
            && !after)
            .then_some(self.list.closed_at)
    }

    /// Whether the directory was left by a clean close and found intact.
    pub(crate) fn clean(&self) -> bool {
        self.list_found
            && self.list.closed_at != 0
            && self.list.closed_at == self.max_seen
            && self.lost.iter().all(|l| !l.new)
            && self.bad.is_empty()
            && self.voids.len() == self.list.voids.len()
            && self.segments.values().all(|(_, f)| *f == Fate::Live)
    }
}

/// What becomes of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Kept,
    /// Numbered above a crash cut, or in an older void range.
    Void,
    /// A lost segment may have held a newer record of its key.
    Unproven,
}

/// The fingerprints of segment `id`'s keys file, if it is readable and is
/// that segment's (ending at `last_seq`).
fn read_keys(dir: &Path, id: u32, last_seq: u64) -> Option<HashSet<u32>> {
    let bytes = std::fs::read(dir.join(dir::keys_name(id))).ok()?;
    let keys = Keys::decode(&bytes).ok()?;
    (keys.segment_id == id && keys.last_seq == last_seq)
        .then(|| keys.fingerprints.into_iter().collect())
}
