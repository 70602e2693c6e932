//! Records: one key and its value (or its removal), as appended to a segment.
//!
//! ```text
//! offset  size  field
//!      0     2  magic       RECORD_MAGIC
//!      2     1  kind        1 = value, 2 = tombstone, 3 = mark
//!      3     1  flags       bit 0: the value is zstd-compressed; other bits 0
//!      4     2  key_len     1..=MAX_KEY_LEN (0 for a mark, which has no key)
//!      6     2  reserved    0
//!      8     4  stored_len  bytes of the value as stored (0 for a tombstone)
//!     12     4  raw_len     bytes of the value once decompressed (= stored_len if raw)
//!     16     8  expires_at  unix time in nanoseconds; 0 = never
//!     24     8  seq         sequence number, increasing across the directory
//!     32     4  crc         CRC-32 of bytes 0..32, the key, the stored value,
//!                           the segment id (u64 LE) and the record's offset (u32 LE)
//!     36        key, then the stored value
//! ```
//!
//! A *mark* is not about a key: its "value" is a [`Mark`] ([`MARK_LEN`]
//! bytes), where every stream of the log stood when it was appended, so that
//! recovery can prove how far all streams are complete (docs/format.md §1.2).

use super::{FormatError, checksum, need, u16_at, u32_at, u64_at};
use crate::key::{MAX_KEY_LEN, MAX_VALUE_LEN};

/// The first two bytes of every record ("LR").
pub const RECORD_MAGIC: u16 = u16::from_le_bytes(*b"LR");

const MAGIC_AT: usize = 0;
const KIND_AT: usize = MAGIC_AT + 2;
const FLAGS_AT: usize = KIND_AT + 1;
const KEY_LEN_AT: usize = FLAGS_AT + 1;
const RESERVED_AT: usize = KEY_LEN_AT + 2;
const STORED_LEN_AT: usize = RESERVED_AT + 2;
const RAW_LEN_AT: usize = STORED_LEN_AT + 4;
const EXPIRES_AT: usize = RAW_LEN_AT + 4;
const SEQ_AT: usize = EXPIRES_AT + 8;
const CRC_AT: usize = SEQ_AT + 8;
/// Bytes of a record header; the key follows.
pub const RECORD_HEADER_LEN: usize = CRC_AT + 4;

/// `flags` bit: the stored value is zstd-compressed.
pub const FLAG_COMPRESSED: u8 = 1;
const KNOWN_FLAGS: u8 = FLAG_COMPRESSED;

const WHAT: &str = "record";

/// What a record says about its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The key has this value.
    Value = 1,
    /// The key was removed (or overwritten by something not on disk).
    Tombstone = 2,
    /// Not about a key: where the log's streams stood (a [`Mark`]).
    Mark = 3,
}

/// A record's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Value or tombstone.
    pub kind: Kind,
    /// The stored value is zstd-compressed.
    pub compressed: bool,
    /// Bytes of the key.
    pub key_len: u16,
    /// Bytes of the value as stored.
    pub stored_len: u32,
    /// Bytes of the value once decompressed.
    pub raw_len: u32,
    /// Unix time in nanoseconds after which the value is dead; 0 = never.
    pub expires_at: u64,
    /// Sequence number.
    pub seq: u64,
}

impl RecordHeader {
    /// The whole record's length: header, key and stored value.
    pub fn record_len(&self) -> usize {
        RECORD_HEADER_LEN + usize::from(self.key_len) + self.stored_len as usize
    }
}

/// A record read from a segment: its header and borrowed key and stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The header.
    pub header: RecordHeader,
    /// The key.
    pub key: &'a [u8],
    /// The value as stored (compressed if `header.compressed`).
    pub stored: &'a [u8],
}

/// Where one stream of the log stood when a [`Mark`] was appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamPos {
    /// The stream's active segment.
    pub segment: u32,
    /// Where that segment's records ended (its published length).
    pub end: u32,
    /// The sequence number that segment started at: every record of the
    /// stream numbered below it is in an earlier segment.
    pub first_seq: u64,
}

/// A mark's payload: where every stream stood when it was appended (at its
/// sequence number). Recovery that finds the mark and each stream's records
/// up to its position knows the whole log is complete up to the mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    /// By stream: main, probation.
    pub streams: [StreamPos; 2],
}

const POS_LEN: usize = 4 + 4 + 8;
/// Bytes of a mark's payload.
pub const MARK_LEN: usize = 2 * POS_LEN;

impl Mark {
    /// The payload's bytes.
    pub fn encode(&self) -> [u8; MARK_LEN] {
        let mut b = [0u8; MARK_LEN];
        for (i, p) in self.streams.iter().enumerate() {
            let at = i * POS_LEN;
            b[at..at + 4].copy_from_slice(&p.segment.to_le_bytes());
            b[at + 4..at + 8].copy_from_slice(&p.end.to_le_bytes());
            b[at + 8..at + 16].copy_from_slice(&p.first_seq.to_le_bytes());
        }
        b
    }

    /// Reads a payload (of a record whose checks passed).
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != MARK_LEN {
            return None;
        }
        let pos = |i: usize| {
            let at = i * POS_LEN;
            Some(StreamPos {
                segment: u32_at(b, at)?,
                end: u32_at(b, at + 4)?,
                first_seq: u64_at(b, at + 8)?,
            })
        };
        Some(Mark {
            streams: [pos(0)?, pos(1)?],
        })
    }

    /// The header of the record that carries a mark, at sequence number `seq`.
    pub fn header(seq: u64) -> RecordHeader {
        RecordHeader {
            kind: Kind::Mark,
            compressed: false,
            key_len: 0,
            stored_len: MARK_LEN as u32,
            raw_len: MARK_LEN as u32,
            expires_at: 0,
            seq,
        }
    }
}

fn crc(segment_id: u64, offset: u32, head: &[u8], key: &[u8], stored: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(head);
    h.update(key);
    h.update(stored);
    h.update(&segment_id.to_le_bytes());
    h.update(&offset.to_le_bytes());
    h.finalize()
}

/// Appends the record for `key` to `out`, as it will sit at `offset` in segment
/// `segment_id`. The caller has validated the key and value against the limits.
/// (The disk tier appends [`encode_header`]'s bytes, the key and the stored
/// bytes to a segment's image itself.)
#[cfg(any(test, fuzzing))]
pub fn encode(
    out: &mut Vec<u8>,
    segment_id: u64,
    offset: u32,
    header: &RecordHeader,
    key: &[u8],
    stored: &[u8],
) {
    let head = encode_header(segment_id, offset, header, key, stored);
    out.extend_from_slice(&head);
    out.extend_from_slice(key);
    out.extend_from_slice(stored);
}

/// The first [`RECORD_HEADER_LEN`] bytes of the record [`encode`] makes: the
/// header and the crc. The key and the stored bytes follow it.
pub fn encode_header(
    segment_id: u64,
    offset: u32,
    header: &RecordHeader,
    key: &[u8],
    stored: &[u8],
) -> [u8; RECORD_HEADER_LEN] {
    debug_assert_eq!(usize::from(header.key_len), key.len());
    debug_assert_eq!(header.stored_len as usize, stored.len());
    let mut out = [0u8; RECORD_HEADER_LEN];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&RECORD_MAGIC.to_le_bytes());
    put(&[header.kind as u8]);
    put(&[if header.compressed {
        FLAG_COMPRESSED
    } else {
        0
    }]);
    put(&header.key_len.to_le_bytes());
    put(&0u16.to_le_bytes());
    put(&header.stored_len.to_le_bytes());
    put(&header.raw_len.to_le_bytes());
    put(&header.expires_at.to_le_bytes());
    put(&header.seq.to_le_bytes());
    debug_assert_eq!(at, CRC_AT);
    let crc = crc(segment_id, offset, &out[..CRC_AT], key, stored);
    out[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Reads the header at the start of `bytes` (which may run on past the record)
/// and checks that its fields are ones the format allows. Does not check the CRC.
pub fn decode_header(bytes: &[u8]) -> Result<RecordHeader, FormatError> {
    need(bytes, RECORD_HEADER_LEN)?;
    let invalid = |field, value| FormatError::Invalid {
        what: WHAT,
        field,
        value,
    };
    let get16 = |at| u16_at(bytes, at).unwrap_or_default();
    let get32 = |at| u32_at(bytes, at).unwrap_or_default();
    let get64 = |at| u64_at(bytes, at).unwrap_or_default();
    if get16(MAGIC_AT) != RECORD_MAGIC {
        return Err(FormatError::BadMagic { what: WHAT });
    }
    let kind = match bytes[KIND_AT] {
        1 => Kind::Value,
        2 => Kind::Tombstone,
        3 => Kind::Mark,
        k => return Err(invalid("kind", u64::from(k))),
    };
    let flags = bytes[FLAGS_AT];
    if flags & !KNOWN_FLAGS != 0 || (kind != Kind::Value && flags != 0) {
        return Err(invalid("flags", u64::from(flags)));
    }
    let key_len = get16(KEY_LEN_AT);
    let key_ok = match kind {
        Kind::Mark => key_len == 0,
        _ => key_len != 0 && usize::from(key_len) <= MAX_KEY_LEN,
    };
    if !key_ok {
        return Err(invalid("key_len", u64::from(key_len)));
    }
    if get16(RESERVED_AT) != 0 {
        return Err(invalid("reserved", u64::from(get16(RESERVED_AT))));
    }
    let (stored_len, raw_len) = (get32(STORED_LEN_AT), get32(RAW_LEN_AT));
    let compressed = flags & FLAG_COMPRESSED != 0;
    let lengths_ok = match kind {
        Kind::Tombstone => stored_len == 0 && raw_len == 0,
        Kind::Mark => stored_len as usize == MARK_LEN && raw_len as usize == MARK_LEN,
        Kind::Value if compressed => raw_len as usize <= MAX_VALUE_LEN && stored_len < raw_len,
        Kind::Value => raw_len as usize <= MAX_VALUE_LEN && stored_len == raw_len,
    };
    if !lengths_ok {
        return Err(invalid("stored_len", u64::from(stored_len)));
    }
    if kind == Kind::Mark && get64(EXPIRES_AT) != 0 {
        return Err(invalid("expires_at", get64(EXPIRES_AT)));
    }
    Ok(RecordHeader {
        kind,
        compressed,
        key_len,
        stored_len,
        raw_len,
        expires_at: get64(EXPIRES_AT),
        seq: get64(SEQ_AT),
    })
}

/// Reads and verifies the record at the start of `bytes`, which sits at `offset`
/// in segment `segment_id`. `bytes` may run on past the record.
pub fn decode(segment_id: u64, offset: u32, bytes: &[u8]) -> Result<Record<'_>, FormatError> {
    let header = decode_header(bytes)?;
    let len = header.record_len();
    need(bytes, len)?;
    let key_end = RECORD_HEADER_LEN + usize::from(header.key_len);
    let key = &bytes[RECORD_HEADER_LEN..key_end];
    let stored = &bytes[key_end..len];
    checksum(
        WHAT,
        u32_at(bytes, CRC_AT).unwrap_or_default(),
        crc(segment_id, offset, &bytes[..CRC_AT], key, stored),
    )?;
    Ok(Record {
        header,
        key,
        stored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value(key: &[u8], stored: &[u8], seq: u64) -> RecordHeader {
        RecordHeader {
            kind: Kind::Value,
            compressed: false,
            key_len: key.len() as u16,
            stored_len: stored.len() as u32,
            raw_len: stored.len() as u32,
            expires_at: 0,
            seq,
        }
    }

    fn encoded(
        segment_id: u64,
        offset: u32,
        header: &RecordHeader,
        key: &[u8],
        stored: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, segment_id, offset, header, key, stored);
        out
    }

    #[test]
    fn layout_constants() {
        assert_eq!(RECORD_HEADER_LEN, 36);
        assert_eq!(&RECORD_MAGIC.to_le_bytes(), b"LR");
    }

    #[test]
    fn round_trip_values_and_tombstones() {
        let h = value(b"key", b"value", 7);
        let bytes = encoded(3, 4096, &h, b"key", b"value");
        assert_eq!(bytes.len(), h.record_len());
        let r = decode(3, 4096, &bytes).unwrap();
        assert_eq!((r.header, r.key, r.stored), (h, &b"key"[..], &b"value"[..]));

        let t = RecordHeader {
            kind: Kind::Tombstone,
            stored_len: 0,
            raw_len: 0,
            ..value(b"k", b"", 8)
        };
        let mut bytes = encoded(3, 0, &t, b"k", b"");
        bytes.extend_from_slice(b"whatever follows");
        assert_eq!(decode(3, 0, &bytes).unwrap().header, t);
    }

    #[test]
    fn a_record_moved_elsewhere_fails_its_checksum() {
        let h = value(b"key", b"value", 1);
        let bytes = encoded(3, 64, &h, b"key", b"value");
        assert!(matches!(
            decode(4, 64, &bytes),
            Err(FormatError::Checksum { .. })
        ));
        assert!(matches!(
            decode(3, 65, &bytes),
            Err(FormatError::Checksum { .. })
        ));
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_detected() {
        let h = RecordHeader {
            expires_at: 1 << 60,
            ..value(b"some key", b"some value bytes", 42)
        };
        let bytes = encoded(9, 128, &h, b"some key", b"some value bytes");
        for len in 0..bytes.len() {
            assert!(decode(9, 128, &bytes[..len]).is_err(), "truncated to {len}");
        }
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(9, 128, &b).is_err(), "flipped bit {bit}");
        }
    }

    #[test]
    fn fields_outside_the_format_are_rejected_before_the_checksum() {
        let h = value(b"k", b"v", 1);
        let good = encoded(1, 0, &h, b"k", b"v");
        let with = |at: usize, byte: u8| {
            let mut b = good.clone();
            b[at] = byte;
            decode_header(&b)
        };
        assert!(matches!(
            with(MAGIC_AT, 0),
            Err(FormatError::BadMagic { .. })
        ));
        assert!(matches!(
            with(KIND_AT, 4),
            Err(FormatError::Invalid { field: "kind", .. })
        ));
        assert!(matches!(
            with(FLAGS_AT, 2),
            Err(FormatError::Invalid { field: "flags", .. })
        ));
        assert!(matches!(
            with(KEY_LEN_AT, 0),
            Err(FormatError::Invalid {
                field: "key_len",
                ..
            })
        ));
        assert!(matches!(
            with(RESERVED_AT, 1),
            Err(FormatError::Invalid {
                field: "reserved",
                ..
            })
        ));
        // An uncompressed value whose raw length differs from its stored length.
        assert!(matches!(
            with(RAW_LEN_AT, 9),
            Err(FormatError::Invalid { .. })
        ));
        // A huge length is refused from the header alone, before any allocation or read.
        let mut b = good.clone();
        b[STORED_LEN_AT..STORED_LEN_AT + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(1, 0, &b), Err(FormatError::Invalid { .. })));
    }

    #[test]
    fn marks_round_trip_and_take_no_key() {
        let m = Mark {
            streams: [
                StreamPos {
                    segment: 7,
                    end: 4096,
                    first_seq: 10,
                },
                StreamPos {
                    segment: 8,
                    end: 64,
                    first_seq: 12,
                },
            ],
        };
        let payload = m.encode();
        let bytes = encoded(7, 4096, &Mark::header(99), b"", &payload);
        let r = decode(7, 4096, &bytes).unwrap();
        assert_eq!(r.header.kind, Kind::Mark);
        assert_eq!(Mark::decode(r.stored), Some(m));
        // A mark with a key, or a value without one, is not valid.
        let keyed = encoded(
            7,
            0,
            &RecordHeader {
                key_len: 1,
                ..Mark::header(1)
            },
            b"k",
            &payload,
        );
        assert!(decode(7, 0, &keyed).is_err());
        let keyless = encoded(7, 0, &value(b"", b"v", 1), b"", b"v");
        assert!(decode(7, 0, &keyless).is_err());
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(7, 4096, &b).is_err(), "flipped bit {bit}");
        }
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder, and whatever it accepts
        /// re-encodes to exactly the same bytes.
        #[test]
        fn decoding_arbitrary_bytes_is_safe(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(r) = decode(5, 77, &bytes) {
                let again = encoded(5, 77, &r.header, r.key, r.stored);
                prop_assert_eq!(&again[..], &bytes[..again.len()]);
            }
        }

        /// Valid records survive a round trip.
        #[test]
        fn round_trip(key in proptest::collection::vec(any::<u8>(), 1..64),
                      stored in proptest::collection::vec(any::<u8>(), 0..256),
                      seq: u64, expires_at: u64, segment: u64, offset: u32) {
            let h = RecordHeader { expires_at, ..value(&key, &stored, seq) };
            let bytes = encoded(segment, offset, &h, &key, &stored);
            let r = decode(segment, offset, &bytes).unwrap();
            prop_assert_eq!(r.header, h);
            prop_assert_eq!(r.key, &key[..]);
            prop_assert_eq!(r.stored, &stored[..]);
        }
    }
}
