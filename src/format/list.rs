//! The segment list (files `SEGMENTS` and `SEGMENTS.copy`, the same bytes):
//! which sealed segments the directory holds, which it lost, which sequence
//! numbers are void, and how far each stream is complete. Rewritten
//! atomically whenever one of those changes: at each seal and each reclaim,
//! and by every open (docs/format.md §2.2).
//!
//! ```text
//!  0  8  magic          LIST_MAGIC ("LARDLIST")
//!  8  4  version        FORMAT_VERSION
//! 12  4  reserved       0
//! 16  8  generation     one more at every rewrite
//! 24  8  closed_at      the last sequence number of a clean close; 0 while open
//! 32  8  reclaimed      segments reclaimed since the directory was made
//! 40 16× 2              per stream (main, probation): sealed_id u32 (the newest
//!                       segment of the stream ever listed), reserved u32,
//!                       through u64 (every record of the stream numbered at most
//!                       this is in a listed, lost or void place)
//! 72  4  live_count
//! 76  4  lost_count
//! 80  4  void_count
//! 84  4  reserved       0
//! 88 40× live_count     id u32, stream u32, first_seq u64, last_seq u64,
//!                       through u64, records u32, reserved u32
//!  … 24× lost_count     id u32, flags u32 (bit 0: probation, bit 1: its keys
//!                       file is kept), last_seq u64, keys u32, reserved u32
//!  … 16× void_count     first u64, last u64: sequence numbers whose records
//!                       are void (inclusive)
//!  …  4  crc            CRC-32 of every byte before it
//! ```

use super::{FORMAT_VERSION, FormatError, checksum, need, u32_at, u64_at};

/// The first eight bytes of a segment list.
pub const LIST_MAGIC: [u8; 8] = *b"LARDLIST";

const VERSION_AT: usize = 8;
const GENERATION_AT: usize = 16;
const CLOSED_AT: usize = GENERATION_AT + 8;
const RECLAIMED_AT: usize = CLOSED_AT + 8;
const STREAMS_AT: usize = RECLAIMED_AT + 8;
const STREAM_LEN: usize = 16;
const COUNTS_AT: usize = STREAMS_AT + 2 * STREAM_LEN;
/// Bytes before the entries.
pub const LIST_HEADER_LEN: usize = COUNTS_AT + 16;
/// Bytes of a live, a lost and a void entry.
pub const LIVE_LEN: usize = 40;
pub const LOST_LEN: usize = 24;
pub const VOID_LEN: usize = 16;
const CRC_LEN: usize = 4;

const LOST_PROBATION: u32 = 1;
const LOST_HAS_KEYS: u32 = 2;

/// How far one stream is known complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamState {
    /// The newest segment of the stream ever listed (0: none).
    pub sealed_id: u32,
    /// Every record of the stream numbered at most this is in a listed
    /// segment, a lost one, or a void range.
    pub through: u64,
}

/// A sealed segment the directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Listed {
    /// Its id.
    pub id: u32,
    /// Of the probation stream.
    pub probation: bool,
    /// Its header's first sequence number.
    pub first_seq: u64,
    /// Its largest sequence number.
    pub last_seq: u64,
    /// Its trailer's `through`.
    pub through: u64,
    /// Records in its summary.
    pub records: u32,
}

/// A segment the directory lost (missing, or damaged and quarantined): keys
/// it may have superseded have their older records dropped at every open
/// until no segment that could hold such a record is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lost {
    /// Its id.
    pub id: u32,
    /// Of the probation stream.
    pub probation: bool,
    /// Its keys file is kept (else every record older than `last_seq` is unproven).
    pub has_keys: bool,
    /// Its largest sequence number.
    pub last_seq: u64,
    /// Fingerprints its keys file holds.
    pub keys: u32,
}

/// What a segment list records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SegmentList {
    /// One more at every rewrite.
    pub generation: u64,
    /// The last sequence number of a clean close; 0 while a cache has it open.
    pub closed_at: u64,
    /// Segments reclaimed since the directory was made (counted before each
    /// reclaim removes anything).
    pub reclaimed: u64,
    /// By stream: main, probation.
    pub streams: [StreamState; 2],
    /// Sealed segments held, by id.
    pub live: Vec<Listed>,
    /// Segments lost.
    pub lost: Vec<Lost>,
    /// Void sequence numbers, as inclusive ranges.
    pub voids: Vec<(u64, u64)>,
}

impl SegmentList {
    /// The list's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(
            LIST_HEADER_LEN
                + LIVE_LEN * self.live.len()
                + LOST_LEN * self.lost.len()
                + VOID_LEN * self.voids.len()
                + CRC_LEN,
        );
        let u32s = |b: &mut Vec<u8>, v: u32| b.extend_from_slice(&v.to_le_bytes());
        let u64s = |b: &mut Vec<u8>, v: u64| b.extend_from_slice(&v.to_le_bytes());
        b.extend_from_slice(&LIST_MAGIC);
        u32s(&mut b, FORMAT_VERSION);
        u32s(&mut b, 0);
        u64s(&mut b, self.generation);
        u64s(&mut b, self.closed_at);
        u64s(&mut b, self.reclaimed);
        for s in &self.streams {
            u32s(&mut b, s.sealed_id);
            u32s(&mut b, 0);
            u64s(&mut b, s.through);
        }
        for n in [self.live.len(), self.lost.len(), self.voids.len(), 0] {
            u32s(&mut b, n as u32);
        }
        for l in &self.live {
            u32s(&mut b, l.id);
            u32s(&mut b, u32::from(l.probation));
            u64s(&mut b, l.first_seq);
            u64s(&mut b, l.last_seq);
            u64s(&mut b, l.through);
            u32s(&mut b, l.records);
            u32s(&mut b, 0);
        }
        for l in &self.lost {
            let flags = if l.probation { LOST_PROBATION } else { 0 }
                | if l.has_keys { LOST_HAS_KEYS } else { 0 };
            u32s(&mut b, l.id);
            u32s(&mut b, flags);
            u64s(&mut b, l.last_seq);
            u32s(&mut b, l.keys);
            u32s(&mut b, 0);
        }
        for &(first, last) in &self.voids {
            u64s(&mut b, first);
            u64s(&mut b, last);
        }
        let crc = crc32fast::hash(&b);
        u32s(&mut b, crc);
        b
    }

    /// Reads and verifies a list.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        const WHAT: &str = "segment list";
        let invalid = |field, value| FormatError::Invalid {
            what: WHAT,
            field,
            value,
        };
        need(bytes, LIST_HEADER_LEN + CRC_LEN)?;
        if bytes[..8] != LIST_MAGIC {
            return Err(FormatError::BadMagic { what: WHAT });
        }
        let get32 = |at| u32_at(bytes, at).unwrap_or_default();
        let get64 = |at| u64_at(bytes, at).unwrap_or_default();
        let counts = [0, 4, 8].map(|i| u64::from(get32(COUNTS_AT + i)));
        let len = (LIST_HEADER_LEN + CRC_LEN) as u64
            + counts[0] * LIVE_LEN as u64
            + counts[1] * LOST_LEN as u64
            + counts[2] * VOID_LEN as u64;
        if bytes.len() as u64 != len {
            return Err(invalid("length", bytes.len() as u64));
        }
        let crc_at = bytes.len() - CRC_LEN;
        checksum(WHAT, get32(crc_at), crc32fast::hash(&bytes[..crc_at]))?;
        if get32(VERSION_AT) != FORMAT_VERSION {
            return Err(FormatError::Version {
                found: get32(VERSION_AT),
            });
        }
        let streams = [0, 1].map(|i| {
            let at = STREAMS_AT + i * STREAM_LEN;
            StreamState {
                sealed_id: get32(at),
                through: get64(at + 8),
            }
        });
        let mut at = LIST_HEADER_LEN;
        let mut live = Vec::with_capacity(counts[0] as usize);
        for _ in 0..counts[0] {
            let stream = get32(at + 4);
            if stream > 1 {
                return Err(invalid("stream", u64::from(stream)));
            }
            live.push(Listed {
                id: get32(at),
                probation: stream == 1,
                first_seq: get64(at + 8),
                last_seq: get64(at + 16),
                through: get64(at + 24),
                records: get32(at + 32),
            });
            at += LIVE_LEN;
        }
        let mut lost = Vec::with_capacity(counts[1] as usize);
        for _ in 0..counts[1] {
            let flags = get32(at + 4);
            if flags & !(LOST_PROBATION | LOST_HAS_KEYS) != 0 {
                return Err(invalid("flags", u64::from(flags)));
            }
            lost.push(Lost {
                id: get32(at),
                probation: flags & LOST_PROBATION != 0,
                has_keys: flags & LOST_HAS_KEYS != 0,
                last_seq: get64(at + 8),
                keys: get32(at + 16),
            });
            at += LOST_LEN;
        }
        let mut voids = Vec::with_capacity(counts[2] as usize);
        for _ in 0..counts[2] {
            let (first, last) = (get64(at), get64(at + 8));
            if first > last {
                return Err(invalid("void", first));
            }
            voids.push((first, last));
            at += VOID_LEN;
        }
        Ok(SegmentList {
            generation: get64(GENERATION_AT),
            closed_at: get64(CLOSED_AT),
            reclaimed: get64(RECLAIMED_AT),
            streams,
            live,
            lost,
            voids,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> SegmentList {
        SegmentList {
            generation: 9,
            closed_at: 1234,
            reclaimed: 77,
            streams: [
                StreamState {
                    sealed_id: 7,
                    through: 1234,
                },
                StreamState {
                    sealed_id: 6,
                    through: 1200,
                },
            ],
            live: vec![
                Listed {
                    id: 3,
                    probation: false,
                    first_seq: 10,
                    last_seq: 90,
                    through: 99,
                    records: 40,
                },
                Listed {
                    id: 6,
                    probation: true,
                    first_seq: 100,
                    last_seq: 1200,
                    through: 1200,
                    records: 400,
                },
            ],
            lost: vec![Lost {
                id: 5,
                probation: false,
                has_keys: true,
                last_seq: 95,
                keys: 3,
            }],
            voids: vec![(1201, 1210)],
        }
    }

    #[test]
    fn round_trip_and_every_damage_is_detected() {
        let l = sample();
        let b = l.encode();
        assert_eq!(SegmentList::decode(&b), Ok(l.clone()));
        for len in 0..b.len() {
            assert!(SegmentList::decode(&b[..len]).is_err(), "cut at {len}");
        }
        for bit in 0..b.len() * 8 {
            let mut c = b.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentList::decode(&c).is_err(), "flipped bit {bit}");
        }
        let empty = SegmentList::default();
        assert_eq!(SegmentList::decode(&empty.encode()), Ok(empty));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_are_safe(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = SegmentList::decode(&bytes);
        }
    }
}
