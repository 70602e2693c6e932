//! A sealed segment's key fingerprints (file `NNNNNNNNNN.keys`): the low 32
//! bits of the key hash of each of its value and tombstone records, in log
//! order. A second copy of what the segment holds, kept apart from it: if the
//! segment file is lost or damaged, recovery still knows which keys it could
//! have superseded, and drops only their older records (docs/format.md §2.3).
//!
//! ```text
//!  0  8  magic         KEYS_MAGIC ("LARDKEYS")
//!  8  4  version       FORMAT_VERSION
//! 12  4  count         fingerprints that follow
//! 16  8  segment_id
//! 24  8  last_seq      the segment's largest sequence number
//! 32  4× count         fingerprints (u32)
//!  …  4  crc           CRC-32 of every byte before it
//! ```

use super::{FORMAT_VERSION, FormatError, checksum, need, u32_at, u64_at};

/// The first eight bytes of a keys file.
pub const KEYS_MAGIC: [u8; 8] = *b"LARDKEYS";

const MAGIC_AT: usize = 0;
const VERSION_AT: usize = MAGIC_AT + 8;
const COUNT_AT: usize = VERSION_AT + 4;
const SEGMENT_AT: usize = COUNT_AT + 4;
const LAST_SEQ_AT: usize = SEGMENT_AT + 8;
/// Bytes before the fingerprints.
pub const KEYS_HEADER_LEN: usize = LAST_SEQ_AT + 8;
const CRC_LEN: usize = 4;

/// The fingerprint of a key hash in a keys file.
pub fn fingerprint(hash: u64) -> u32 {
    hash as u32
}

/// What a keys file records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Keys {
    /// The segment they describe.
    pub segment_id: u32,
    /// The segment's largest sequence number.
    pub last_seq: u64,
    /// One per value or tombstone record, in log order.
    pub fingerprints: Vec<u32>,
}

impl Keys {
    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(KEYS_HEADER_LEN + 4 * self.fingerprints.len() + CRC_LEN);
        b.extend_from_slice(&KEYS_MAGIC);
        b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        b.extend_from_slice(&(self.fingerprints.len() as u32).to_le_bytes());
        b.extend_from_slice(&u64::from(self.segment_id).to_le_bytes());
        b.extend_from_slice(&self.last_seq.to_le_bytes());
        for f in &self.fingerprints {
            b.extend_from_slice(&f.to_le_bytes());
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads and verifies a keys file.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        const WHAT: &str = "keys file";
        need(bytes, KEYS_HEADER_LEN + CRC_LEN)?;
        if bytes[..8] != KEYS_MAGIC {
            return Err(FormatError::BadMagic { what: WHAT });
        }
        let count = u32_at(bytes, COUNT_AT).unwrap_or_default() as usize;
        let len = (count as u64) * 4 + (KEYS_HEADER_LEN + CRC_LEN) as u64;
        if bytes.len() as u64 != len {
            return Err(FormatError::Invalid {
                what: WHAT,
                field: "count",
                value: count as u64,
            });
        }
        let crc_at = bytes.len() - CRC_LEN;
        checksum(
            WHAT,
            u32_at(bytes, crc_at).unwrap_or_default(),
            crc32fast::hash(&bytes[..crc_at]),
        )?;
        let found = u32_at(bytes, VERSION_AT).unwrap_or_default();
        if found != FORMAT_VERSION {
            return Err(FormatError::Version { found });
        }
        let segment = u64_at(bytes, SEGMENT_AT).unwrap_or_default();
        let segment_id = u32::try_from(segment).map_err(|_| FormatError::Invalid {
            what: WHAT,
            field: "segment_id",
            value: segment,
        })?;
        let fingerprints = bytes[KEYS_HEADER_LEN..crc_at]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Keys {
            segment_id,
            last_seq: u64_at(bytes, LAST_SEQ_AT).unwrap_or_default(),
            fingerprints,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_every_damage_is_detected() {
        let k = Keys {
            segment_id: 42,
            last_seq: 9_000,
            fingerprints: vec![1, 2, 0xdead_beef, 7],
        };
        let b = k.encode();
        assert_eq!(Keys::decode(&b), Ok(k));
        for len in 0..b.len() {
            assert!(Keys::decode(&b[..len]).is_err(), "cut at {len}");
        }
        for bit in 0..b.len() * 8 {
            let mut c = b.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(Keys::decode(&c).is_err(), "flipped bit {bit}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_are_safe(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Keys::decode(&bytes);
        }
    }
}
