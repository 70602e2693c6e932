//! Journals: append-only files of checksummed records, for the state the
//! patterns keep beside the tiers (the write-behind queue, the tag
//! generations). A journal is a directory of files `NNNNNNNNNNNNNNNN.<ext>`
//! (a file number in hexadecimal), each a header and then records:
//!
//! ```text
//! header
//!  0  8  magic     JOURNAL_MAGIC ("LARDJRNL")
//!  8  4  version   FORMAT_VERSION
//! 12  4  kind      what the records are (JOURNAL_WRITE_BEHIND, JOURNAL_TAGS)
//! 16  8  file      the file number (the name's, repeated)
//! 24  8  id        the journal's identity, chosen at random when it is created
//! 32  4  crc       CRC-32 of every byte before it
//!
//! record
//!  0  4  crc       CRC-32 of the file number (8 bytes) and the bytes after it
//!  4  4  len       bytes of payload
//!  8  …  payload
//! ```
//!
//! A record's checksum covers its file's number, so a record copied into
//! another file fails it. A record that fails (or is cut short) ends what
//! is read of its file: it is a torn append, never acknowledged, or damage,
//! and either way nothing after it is trusted.
//!
//! Write-behind payload: `seq` u64, `op` u8 (1 store, 2 delete), `key_len`
//! u32, the key, then (for a store) the value. Tags payload: `tag` u64 (the
//! tag's hash), `generation` u64.

use super::{FORMAT_VERSION, FormatError, checksum, need, u32_at, u64_at};

/// The first eight bytes of a journal file.
pub const JOURNAL_MAGIC: [u8; 8] = *b"LARDJRNL";
/// The kind of a write-behind journal's files.
pub const JOURNAL_WRITE_BEHIND: u32 = 1;
/// The kind of a tag table's files.
pub const JOURNAL_TAGS: u32 = 2;
/// Bytes of a journal file's header.
pub const JOURNAL_HEADER_LEN: usize = 36;
/// Bytes of a record's frame (before its payload).
pub const JOURNAL_FRAME_LEN: usize = 8;
/// The largest payload a record may have.
pub const JOURNAL_MAX_PAYLOAD: usize = 1 << 30;

const OP_STORE: u8 = 1;
const OP_DELETE: u8 = 2;

/// A journal file's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalHeader {
    /// What the records are.
    pub kind: u32,
    /// The file number.
    pub file: u64,
    /// The journal's identity.
    pub id: u64,
}

impl JournalHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; JOURNAL_HEADER_LEN] {
        let mut b = [0u8; JOURNAL_HEADER_LEN];
        b[..8].copy_from_slice(&JOURNAL_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.kind.to_le_bytes());
        b[16..24].copy_from_slice(&self.file.to_le_bytes());
        b[24..32].copy_from_slice(&self.id.to_le_bytes());
        let crc = crc32fast::hash(&b[..32]);
        b[32..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads a header from the start of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        super::check_frame("journal header", bytes, JOURNAL_HEADER_LEN, &JOURNAL_MAGIC)?;
        Ok(JournalHeader {
            kind: u32_at(bytes, 12).unwrap_or_default(),
            file: u64_at(bytes, 16).unwrap_or_default(),
            id: u64_at(bytes, 24).unwrap_or_default(),
        })
    }
}

/// Frames `payload` as a record of file `file`, appended to `out`.
pub fn encode_record(file: u64, payload: &[u8], out: &mut Vec<u8>) {
    let len = payload.len() as u32;
    let mut h = crc32fast::Hasher::new();
    h.update(&file.to_le_bytes());
    h.update(&len.to_le_bytes());
    h.update(payload);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
}

/// The payload of the record at the start of `bytes` (a record of file
/// `file`) and the bytes the record takes.
pub fn decode_record(file: u64, bytes: &[u8]) -> Result<(&[u8], usize), FormatError> {
    need(bytes, JOURNAL_FRAME_LEN)?;
    let stored = u32_at(bytes, 0).unwrap_or_default();
    let len = u32_at(bytes, 4).unwrap_or_default() as usize;
    if len > JOURNAL_MAX_PAYLOAD {
        return Err(FormatError::Invalid {
            what: "journal record",
            field: "len",
            value: len as u64,
        });
    }
    need(bytes, JOURNAL_FRAME_LEN + len)?;
    let payload = &bytes[JOURNAL_FRAME_LEN..JOURNAL_FRAME_LEN + len];
    let mut h = crc32fast::Hasher::new();
    h.update(&file.to_le_bytes());
    h.update(&bytes[4..8]);
    h.update(payload);
    checksum("journal record", stored, h.finalize())?;
    Ok((payload, JOURNAL_FRAME_LEN + len))
}

/// One write the write-behind queue journals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRecord<'a> {
    /// Its place in the order of writes.
    pub seq: u64,
    /// The key.
    pub key: &'a [u8],
    /// The value stored, or `None` for a delete.
    pub value: Option<&'a [u8]>,
}

impl WriteRecord<'_> {
    /// The record's payload, appended to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.push(if self.value.is_some() {
            OP_STORE
        } else {
            OP_DELETE
        });
        out.extend_from_slice(&(self.key.len() as u32).to_le_bytes());
        out.extend_from_slice(self.key);
        if let Some(v) = self.value {
            out.extend_from_slice(v);
        }
    }

    /// Reads a payload [`encode`](Self::encode) wrote.
    pub fn decode(payload: &[u8]) -> Result<WriteRecord<'_>, FormatError> {
        need(payload, 13)?;
        let seq = u64_at(payload, 0).unwrap_or_default();
        let op = payload[8];
        let key_len = u32_at(payload, 9).unwrap_or_default() as usize;
        need(payload, 13 + key_len)?;
        let key = &payload[13..13 + key_len];
        let rest = &payload[13 + key_len..];
        let value = match op {
            OP_STORE => Some(rest),
            OP_DELETE if rest.is_empty() => None,
            _ => {
                return Err(FormatError::Invalid {
                    what: "write-behind record",
                    field: "op",
                    value: u64::from(op),
                });
            }
        };
        Ok(WriteRecord { seq, key, value })
    }
}

/// The payload of a tag table record: `tag`'s generation is `generation`.
pub fn encode_tag(tag: u64, generation: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&tag.to_le_bytes());
    b[8..].copy_from_slice(&generation.to_le_bytes());
    b
}

/// Reads a payload [`encode_tag`] wrote.
pub fn decode_tag(payload: &[u8]) -> Result<(u64, u64), FormatError> {
    if payload.len() != 16 {
        return Err(FormatError::Invalid {
            what: "tag record",
            field: "len",
            value: payload.len() as u64,
        });
    }
    Ok((
        u64_at(payload, 0).unwrap_or_default(),
        u64_at(payload, 8).unwrap_or_default(),
    ))
}

/// The envelope of a value cached with tags (see `patterns/tags.rs`):
///
/// ```text
///  0  1  n         tags (0: untagged, and nothing else follows but the value)
///  1  8  table     the tag table's identity (n > 0)
///  9 16× n         tag hash u64, its generation u64 when the value was cached
///  …     value
/// ```
pub fn encode_envelope(table: u64, tags: &[(u64, u64)], value: &[u8], out: &mut Vec<u8>) {
    debug_assert!(tags.len() <= MAX_TAGS);
    out.push(tags.len() as u8);
    if !tags.is_empty() {
        out.extend_from_slice(&table.to_le_bytes());
        for (tag, generation) in tags {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&generation.to_le_bytes());
        }
    }
    out.extend_from_slice(value);
}

/// The most tags a value may carry.
pub const MAX_TAGS: usize = 255;

/// Reads an envelope: the table identity (0 if untagged), the tags with
/// their generations, and where the value starts.
pub fn decode_envelope(
    bytes: &[u8],
) -> Result<(u64, impl Iterator<Item = (u64, u64)> + '_, usize), FormatError> {
    need(bytes, 1)?;
    let n = bytes[0] as usize;
    let (table, start) = if n == 0 {
        (0, 1)
    } else {
        need(bytes, 9 + 16 * n)?;
        (u64_at(bytes, 1).unwrap_or_default(), 9 + 16 * n)
    };
    let tags = (0..n).map(move |i| {
        let at = 9 + 16 * i;
        (
            u64_at(bytes, at).unwrap_or_default(),
            u64_at(bytes, at + 8).unwrap_or_default(),
        )
    });
    Ok((table, tags, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_fail_when_moved_or_damaged() {
        let mut out = Vec::new();
        let w = WriteRecord {
            seq: 7,
            key: b"k",
            value: Some(b"value"),
        };
        let mut payload = Vec::new();
        w.encode(&mut payload);
        encode_record(3, &payload, &mut out);
        let (p, used) = decode_record(3, &out).unwrap();
        assert_eq!(used, out.len());
        assert_eq!(WriteRecord::decode(p).unwrap(), w);
        assert!(matches!(
            decode_record(4, &out),
            Err(FormatError::Checksum { .. })
        ));
        for cut in 0..out.len() {
            assert!(decode_record(3, &out[..cut]).is_err());
        }
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x10;
            assert!(decode_record(3, &bad).is_err(), "flip at {i}");
        }
        let d = WriteRecord {
            seq: 8,
            key: b"",
            value: None,
        };
        let mut payload = Vec::new();
        d.encode(&mut payload);
        assert_eq!(WriteRecord::decode(&payload).unwrap(), d);
    }

    #[test]
    fn headers_round_trip_and_reject_damage() {
        let h = JournalHeader {
            kind: JOURNAL_TAGS,
            file: 9,
            id: 0xfeed,
        };
        let b = h.encode();
        assert_eq!(JournalHeader::decode(&b).unwrap(), h);
        for i in 0..b.len() {
            let mut bad = b;
            bad[i] ^= 1;
            assert!(JournalHeader::decode(&bad).is_err(), "flip at {i}");
        }
        assert_eq!(decode_tag(&encode_tag(5, 6)).unwrap(), (5, 6));
        let mut out = Vec::new();
        encode_envelope(3, &[(1, 2), (4, 5)], b"val", &mut out);
        let (table, tags, start) = decode_envelope(&out).unwrap();
        assert_eq!(
            (table, tags.collect::<Vec<_>>(), &out[start..]),
            (3, vec![(1, 2), (4, 5)], &b"val"[..])
        );
        assert!(decode_envelope(&out[..20]).is_err());
        assert!(decode_envelope(&[]).is_err());
        assert!(decode_tag(&[0; 15]).is_err());
    }
}
