//! Segments: fixed-size files of records, framed by a header and, once sealed,
//! a summary of their records and a trailer at the very end that locates it.
//!
//! ```text
//! 0                     SEGMENT_HEADER_LEN                      size - TRAILER_LEN    size
//! | header (64 bytes)   | records ... | summary (24 bytes each) | ... free ... | trailer |
//! ```
//!
//! Header:
//! ```text
//!  0  8  magic         SEGMENT_MAGIC ("LARDRSEG")
//!  8  4  version       FORMAT_VERSION
//! 12  4  stream        0 = main, 1 = probation (docs/design.md §10.2)
//! 16  8  segment_id
//! 24  8  first_seq     sequence number of the first record written to it
//! 32  8  segment_size  bytes of the file, MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE
//! 40 20  reserved      0
//! 60  4  crc           CRC-32 of bytes 0..60
//! ```
//! Summary entry (one per record, in the order written):
//! ```text
//!  0  8  hash          xxh3-64 of the key
//!  8  8  seq
//! 16  4  offset        of the record in the segment
//! 20  4  len_flags     bits 0..=29: record length; bits 30..=31: kind
//!                       (0 value, 1 compressed value, 2 tombstone, 3 mark)
//! ```
//! Trailer (the last TRAILER_LEN bytes of a sealed segment):
//! ```text
//!  0  8  magic          TRAILER_MAGIC ("LARDTAIL")
//!  8  4  summary_offset
//! 12  4  record_count
//! 16  8  last_seq       largest sequence number in the segment (0 if none)
//! 24  8  through        the stream is complete up to here: every record of
//!                       its stream numbered at most this is in this segment or
//!                       an earlier one (>= last_seq)
//! 32  4  summary_crc    CRC-32 of the summary's bytes and the segment id (u64 LE)
//! 36  4  crc            CRC-32 of bytes 0..36 and the segment id (u64 LE)
//! ```

use super::record::RECORD_HEADER_LEN;
use super::{FORMAT_VERSION, FormatError, check_frame, checksum, need, u32_at, u64_at};
use crate::key::{MAX_KEY_LEN, MAX_VALUE_LEN};

/// The first eight bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"LARDRSEG";
/// The first eight bytes of a sealed segment's trailer.
pub const TRAILER_MAGIC: [u8; 8] = *b"LARDTAIL";

const H_MAGIC_AT: usize = 0;
const H_VERSION_AT: usize = H_MAGIC_AT + 8;
const H_STREAM_AT: usize = H_VERSION_AT + 4;
const H_SEGMENT_ID_AT: usize = H_STREAM_AT + 4;
const H_FIRST_SEQ_AT: usize = H_SEGMENT_ID_AT + 8;
const H_SIZE_AT: usize = H_FIRST_SEQ_AT + 8;
const H_RESERVED2_AT: usize = H_SIZE_AT + 8;
const H_CRC_AT: usize = H_RESERVED2_AT + 20;
/// Bytes of a segment header; the first record follows.
pub const SEGMENT_HEADER_LEN: usize = H_CRC_AT + 4;
// The frame `check_frame` reads: magic at 0, version at 8, CRC last.
const _: () = assert!(H_MAGIC_AT == 0 && H_VERSION_AT == 8);

const S_HASH_AT: usize = 0;
const S_SEQ_AT: usize = S_HASH_AT + 8;
const S_OFFSET_AT: usize = S_SEQ_AT + 8;
const S_LEN_AT: usize = S_OFFSET_AT + 4;
/// Bytes of one summary entry.
pub const SUMMARY_ENTRY_LEN: usize = S_LEN_AT + 4;

const LEN_MASK: u32 = (1 << 30) - 1;
const KIND_SHIFT: u32 = 30;
const KIND_COMPRESSED: u32 = 1;
const KIND_TOMBSTONE: u32 = 2;
const KIND_MARK: u32 = 3;

const T_MAGIC_AT: usize = 0;
const T_SUMMARY_AT: usize = T_MAGIC_AT + 8;
const T_COUNT_AT: usize = T_SUMMARY_AT + 4;
const T_LAST_SEQ_AT: usize = T_COUNT_AT + 4;
const T_THROUGH_AT: usize = T_LAST_SEQ_AT + 8;
const T_SUMMARY_CRC_AT: usize = T_THROUGH_AT + 8;
const T_CRC_AT: usize = T_SUMMARY_CRC_AT + 4;
/// Bytes of a trailer, at the end of a sealed segment.
pub const TRAILER_LEN: usize = T_CRC_AT + 4;

/// The largest record: header, longest key, longest value.
pub const MAX_RECORD_LEN: usize = RECORD_HEADER_LEN + MAX_KEY_LEN + MAX_VALUE_LEN;
/// The smallest segment size accepted.
pub const MIN_SEGMENT_SIZE: u64 = 64 << 10;
/// The largest segment size accepted (record offsets are u32).
pub const MAX_SEGMENT_SIZE: u64 = 1 << 30;

/// A segment's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's id, unique in its directory.
    pub segment_id: u64,
    /// Sequence number of the first record written to it.
    pub first_seq: u64,
    /// Bytes of the file.
    pub segment_size: u64,
    /// The segment belongs to the log's probation stream (new inserts), not
    /// its main stream.
    pub probation: bool,
}

/// One record as the summary lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SummaryEntry {
    /// xxh3-64 of the record's key.
    pub hash: u64,
    /// The record's sequence number.
    pub seq: u64,
    /// Where the record starts in the segment.
    pub offset: u32,
    /// The record's length.
    pub len: u32,
    /// The record is a tombstone.
    pub tombstone: bool,
    /// The record's value is compressed.
    pub compressed: bool,
    /// The record is a mark (about the log, not a key; `hash` is 0).
    pub mark: bool,
}

impl SummaryEntry {
    /// Whether the record holds a key's value.
    pub fn is_value(&self) -> bool {
        !self.tombstone && !self.mark
    }
}

/// A sealed segment's trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// Where the summary starts.
    pub summary_offset: u32,
    /// Records (and so summary entries) in the segment.
    pub record_count: u32,
    /// The largest sequence number in the segment (0 if none).
    pub last_seq: u64,
    /// Every record of the segment's stream numbered at most this is in this
    /// segment or an earlier one of its stream (the log's next sequence
    /// number, less one, when the segment was closed to appends).
    pub through: u64,
    /// CRC-32 of the summary's bytes and the segment id.
    pub summary_crc: u32,
}

fn crc_with_id(bytes: &[u8], segment_id: u64) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(bytes);
    h.update(&segment_id.to_le_bytes());
    h.finalize()
}

fn invalid(what: &'static str, field: &'static str, value: u64) -> FormatError {
    FormatError::Invalid { what, field, value }
}

impl SegmentHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[H_MAGIC_AT..H_MAGIC_AT + 8].copy_from_slice(&SEGMENT_MAGIC);
        b[H_VERSION_AT..H_VERSION_AT + 4].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[H_STREAM_AT..H_STREAM_AT + 4].copy_from_slice(&u32::from(self.probation).to_le_bytes());
        b[H_SEGMENT_ID_AT..H_SEGMENT_ID_AT + 8].copy_from_slice(&self.segment_id.to_le_bytes());
        b[H_FIRST_SEQ_AT..H_FIRST_SEQ_AT + 8].copy_from_slice(&self.first_seq.to_le_bytes());
        b[H_SIZE_AT..H_SIZE_AT + 8].copy_from_slice(&self.segment_size.to_le_bytes());
        let crc = crc32fast::hash(&b[..H_CRC_AT]);
        b[H_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads and verifies a header from the start of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        const WHAT: &str = "segment header";
        check_frame(WHAT, bytes, SEGMENT_HEADER_LEN, &SEGMENT_MAGIC)?;
        let b = &bytes[..SEGMENT_HEADER_LEN];
        if b[H_RESERVED2_AT..H_CRC_AT].iter().any(|&x| x != 0) {
            return Err(invalid(WHAT, "reserved", 0));
        }
        let stream = u32_at(b, H_STREAM_AT).unwrap_or_default();
        if stream > 1 {
            return Err(invalid(WHAT, "stream", u64::from(stream)));
        }
        let segment_size = u64_at(b, H_SIZE_AT).unwrap_or_default();
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&segment_size) {
            return Err(invalid(WHAT, "segment_size", segment_size));
        }
        Ok(SegmentHeader {
            segment_id: u64_at(b, H_SEGMENT_ID_AT).unwrap_or_default(),
            first_seq: u64_at(b, H_FIRST_SEQ_AT).unwrap_or_default(),
            segment_size,
            probation: stream == 1,
        })
    }
}

impl SummaryEntry {
    fn encode(&self, out: &mut Vec<u8>) {
        debug_assert!(self.len <= LEN_MASK);
        let kind = match (self.mark, self.tombstone, self.compressed) {
            (true, ..) => KIND_MARK,
            (_, true, _) => KIND_TOMBSTONE,
            (_, _, true) => KIND_COMPRESSED,
            _ => 0,
        };
        let len_flags = (self.len & LEN_MASK) | kind << KIND_SHIFT;
        out.extend_from_slice(&self.hash.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&len_flags.to_le_bytes());
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let len_flags = u32_at(b, S_LEN_AT)?;
        let kind = len_flags >> KIND_SHIFT;
        Some(SummaryEntry {
            hash: u64_at(b, S_HASH_AT)?,
            seq: u64_at(b, S_SEQ_AT)?,
            offset: u32_at(b, S_OFFSET_AT)?,
            len: len_flags & LEN_MASK,
            compressed: kind == KIND_COMPRESSED,
            tombstone: kind == KIND_TOMBSTONE,
            mark: kind == KIND_MARK,
        })
    }
}

/// Appends the summary of `entries` to `out`; returns its CRC for the trailer.
pub fn encode_summary(segment_id: u64, entries: &[SummaryEntry], out: &mut Vec<u8>) -> u32 {
    let start = out.len();
    for e in entries {
        e.encode(out);
    }
    crc_with_id(&out[start..], segment_id)
}

impl Trailer {
    /// The trailer's bytes for segment `segment_id`.
    pub fn encode(&self, segment_id: u64) -> [u8; TRAILER_LEN] {
        let mut b = [0u8; TRAILER_LEN];
        b[T_MAGIC_AT..T_MAGIC_AT + 8].copy_from_slice(&TRAILER_MAGIC);
        b[T_SUMMARY_AT..T_SUMMARY_AT + 4].copy_from_slice(&self.summary_offset.to_le_bytes());
        b[T_COUNT_AT..T_COUNT_AT + 4].copy_from_slice(&self.record_count.to_le_bytes());
        b[T_LAST_SEQ_AT..T_LAST_SEQ_AT + 8].copy_from_slice(&self.last_seq.to_le_bytes());
        b[T_THROUGH_AT..T_THROUGH_AT + 8].copy_from_slice(&self.through.to_le_bytes());
        b[T_SUMMARY_CRC_AT..T_SUMMARY_CRC_AT + 4].copy_from_slice(&self.summary_crc.to_le_bytes());
        let crc = crc_with_id(&b[..T_CRC_AT], segment_id);
        b[T_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads and verifies the trailer of segment `segment_id` (`segment_size` bytes)
    /// from the last [`TRAILER_LEN`] bytes of `segment`. A segment that was never
    /// sealed fails with [`FormatError::BadMagic`].
    pub fn decode(segment_id: u64, segment: &[u8]) -> Result<Self, FormatError> {
        const WHAT: &str = "segment trailer";
        need(segment, SEGMENT_HEADER_LEN + TRAILER_LEN)?;
        let at = segment.len() - TRAILER_LEN;
        let b = &segment[at..];
        if b[T_MAGIC_AT..T_MAGIC_AT + 8] != TRAILER_MAGIC {
            return Err(FormatError::BadMagic { what: WHAT });
        }
        checksum(
            WHAT,
            u32_at(b, T_CRC_AT).unwrap_or_default(),
            crc_with_id(&b[..T_CRC_AT], segment_id),
        )?;
        let t = Trailer {
            summary_offset: u32_at(b, T_SUMMARY_AT).unwrap_or_default(),
            record_count: u32_at(b, T_COUNT_AT).unwrap_or_default(),
            last_seq: u64_at(b, T_LAST_SEQ_AT).unwrap_or_default(),
            through: u64_at(b, T_THROUGH_AT).unwrap_or_default(),
            summary_crc: u32_at(b, T_SUMMARY_CRC_AT).unwrap_or_default(),
        };
        if t.through < t.last_seq {
            return Err(invalid(WHAT, "through", t.through));
        }
        let summary_end =
            u64::from(t.summary_offset) + u64::from(t.record_count) * SUMMARY_ENTRY_LEN as u64;
        if (t.summary_offset as usize) < SEGMENT_HEADER_LEN || summary_end > at as u64 {
            return Err(invalid(WHAT, "summary_offset", u64::from(t.summary_offset)));
        }
        Ok(t)
    }

    /// Reads and verifies the summary this trailer locates in `segment` (the
    /// whole file of segment `segment_id`). Entries must describe records that
    /// follow each other without overlap between the header and the summary.
    pub fn summary(
        &self,
        segment_id: u64,
        segment: &[u8],
    ) -> Result<Vec<SummaryEntry>, FormatError> {
        const WHAT: &str = "segment summary";
        let start = self.summary_offset as usize;
        let end = start + self.record_count as usize * SUMMARY_ENTRY_LEN;
        need(segment, end.saturating_add(TRAILER_LEN))?;
        let bytes = &segment[start..end];
        checksum(WHAT, self.summary_crc, crc_with_id(bytes, segment_id))?;
        let mut entries = Vec::with_capacity(self.record_count as usize);
        let mut next_free = SEGMENT_HEADER_LEN as u64;
        for chunk in bytes.chunks_exact(SUMMARY_ENTRY_LEN) {
            let e = SummaryEntry::decode(chunk).ok_or(invalid(WHAT, "entry", 0))?;
            let len_ok = (RECORD_HEADER_LEN + 1..=MAX_RECORD_LEN).contains(&(e.len as usize));
            let record_end = u64::from(e.offset) + u64::from(e.len);
            if !len_ok || u64::from(e.offset) < next_free || record_end > start as u64 {
                return Err(invalid(WHAT, "offset", u64::from(e.offset)));
            }
            next_free = record_end;
            entries.push(e);
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_constants() {
        assert_eq!(SEGMENT_HEADER_LEN, 64);
        assert_eq!(SUMMARY_ENTRY_LEN, 24);
        assert_eq!(TRAILER_LEN, 40);
        assert!(
            (MAX_RECORD_LEN as u32) <= LEN_MASK,
            "a record length fits its field"
        );
        assert!(
            MAX_SEGMENT_SIZE <= u64::from(u32::MAX),
            "offsets fit in u32"
        );
    }

    fn header() -> SegmentHeader {
        SegmentHeader {
            segment_id: 12,
            first_seq: 1000,
            segment_size: MIN_SEGMENT_SIZE,
            probation: false,
        }
    }

    /// A sealed segment of `MIN_SEGMENT_SIZE` bytes with `n` fake records.
    fn sealed(segment_id: u64, n: u32) -> (Vec<u8>, Vec<SummaryEntry>) {
        let mut seg = vec![0u8; MIN_SEGMENT_SIZE as usize];
        seg[..SEGMENT_HEADER_LEN].copy_from_slice(
            &SegmentHeader {
                segment_id,
                ..header()
            }
            .encode(),
        );
        let entries: Vec<SummaryEntry> = (0..n)
            .map(|i| SummaryEntry {
                hash: u64::from(i) * 0x9e37_79b9,
                seq: 1000 + u64::from(i),
                offset: SEGMENT_HEADER_LEN as u32 + i * 100,
                len: 100,
                tombstone: i % 3 == 0,
                compressed: i % 5 == 0 && i % 3 != 0 && i % 7 != 1,
                mark: i % 7 == 1 && i % 3 != 0,
            })
            .collect();
        let summary_offset = SEGMENT_HEADER_LEN as u32 + n * 100;
        let mut summary = Vec::new();
        let summary_crc = encode_summary(segment_id, &entries, &mut summary);
        let at = summary_offset as usize;
        seg[at..at + summary.len()].copy_from_slice(&summary);
        let trailer = Trailer {
            summary_offset,
            record_count: n,
            last_seq: 1000 + u64::from(n),
            through: 1000 + u64::from(n) + 5,
            summary_crc,
        };
        let end = seg.len();
        seg[end - TRAILER_LEN..].copy_from_slice(&trailer.encode(segment_id));
        (seg, entries)
    }

    #[test]
    fn header_round_trip_and_checks() {
        let h = header();
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        assert!(matches!(
            SegmentHeader::decode(&b[..10]),
            Err(FormatError::Truncated { .. })
        ));
        for bit in 0..b.len() * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentHeader::decode(&c).is_err(), "flipped bit {bit}");
        }
        // The stream: 0 or 1, nothing else.
        let p = SegmentHeader {
            probation: true,
            ..h
        };
        assert_eq!(SegmentHeader::decode(&p.encode()), Ok(p));
        let mut c = p.encode();
        c[H_STREAM_AT] = 2;
        let crc = crc32fast::hash(&c[..H_CRC_AT]);
        c[H_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        assert!(SegmentHeader::decode(&c).is_err(), "stream 2");
        // A newer version with a valid checksum is refused by name.
        let mut c = b;
        c[H_VERSION_AT] = FORMAT_VERSION as u8 + 1;
        let crc = crc32fast::hash(&c[..H_CRC_AT]);
        c[H_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            SegmentHeader::decode(&c),
            Err(FormatError::Version {
                found: FORMAT_VERSION + 1
            })
        );
    }

    #[test]
    fn summary_round_trip() {
        let (seg, entries) = sealed(12, 50);
        let t = Trailer::decode(12, &seg).unwrap();
        assert_eq!(t.record_count, 50);
        assert_eq!(t.summary(12, &seg).unwrap(), entries);
    }

    #[test]
    fn unsealed_moved_or_damaged_summaries_are_detected() {
        let (seg, _) = sealed(12, 20);
        let unsealed = vec![0u8; MIN_SEGMENT_SIZE as usize];
        assert!(matches!(
            Trailer::decode(12, &unsealed),
            Err(FormatError::BadMagic { .. })
        ));
        assert!(matches!(
            Trailer::decode(13, &seg),
            Err(FormatError::Checksum { .. })
        ));
        let t = Trailer::decode(12, &seg).unwrap();
        // Flip every bit of the summary and of the trailer.
        let summary = t.summary_offset as usize..t.summary_offset as usize + 20 * SUMMARY_ENTRY_LEN;
        let trailer = seg.len() - TRAILER_LEN..seg.len();
        for byte in summary.chain(trailer) {
            for bit in 0..8 {
                let mut s = seg.clone();
                s[byte] ^= 1 << bit;
                let read = Trailer::decode(12, &s).and_then(|t| t.summary(12, &s));
                assert!(read.is_err(), "flipped bit {bit} of byte {byte}");
            }
        }
        // A segment cut short loses its trailer.
        assert!(Trailer::decode(12, &seg[..seg.len() - 1]).is_err());
    }

    proptest! {
        /// Arbitrary segment bytes never panic the header, trailer or summary readers.
        #[test]
        fn arbitrary_bytes_are_safe(bytes in proptest::collection::vec(any::<u8>(), 0..600), id: u64) {
            let _ = SegmentHeader::decode(&bytes);
            if let Ok(t) = Trailer::decode(id, &bytes) {
                let _ = t.summary(id, &bytes);
            }
        }
    }
}
