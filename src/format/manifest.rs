//! The directory manifest (file `MANIFEST`): the settings a disk tier directory
//! was created with, which must not change silently.
//!
//! ```text
//!  0  8  magic         MANIFEST_MAGIC ("LARDMANI")
//!  8  4  version       FORMAT_VERSION
//! 12  4  hash_id       HASH_XXH3_64 (1): xxh3-64, seed 0
//! 16  8  segment_size
//! 24 36  reserved      0
//! 60  4  crc           CRC-32 of bytes 0..60
//! ```

use super::{FORMAT_VERSION, FormatError, check_frame, u32_at, u64_at};

/// The first eight bytes of a manifest.
pub const MANIFEST_MAGIC: [u8; 8] = *b"LARDMANI";
/// `hash_id` of xxh3-64 with seed 0, the only key hash so far.
pub const HASH_XXH3_64: u32 = 1;

const MAGIC_AT: usize = 0;
const VERSION_AT: usize = MAGIC_AT + 8;
const HASH_AT: usize = VERSION_AT + 4;
const SEGMENT_SIZE_AT: usize = HASH_AT + 4;
const RESERVED_AT: usize = SEGMENT_SIZE_AT + 8;
const CRC_AT: usize = RESERVED_AT + 36;
/// Bytes of a manifest.
pub const MANIFEST_LEN: usize = CRC_AT + 4;
// The frame `check_frame` reads: magic at 0, version at 8, CRC last.
const _: () = assert!(MAGIC_AT == 0 && VERSION_AT == 8);

/// What a manifest records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manifest {
    /// The key hash's id.
    pub hash_id: u32,
    /// Bytes of every segment file.
    pub segment_size: u64,
}

impl Manifest {
    /// The manifest's bytes.
    pub fn encode(&self) -> [u8; MANIFEST_LEN] {
        let mut b = [0u8; MANIFEST_LEN];
        b[MAGIC_AT..MAGIC_AT + 8].copy_from_slice(&MANIFEST_MAGIC);
        b[VERSION_AT..VERSION_AT + 4].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[HASH_AT..HASH_AT + 4].copy_from_slice(&self.hash_id.to_le_bytes());
        b[SEGMENT_SIZE_AT..SEGMENT_SIZE_AT + 8].copy_from_slice(&self.segment_size.to_le_bytes());
        let crc = crc32fast::hash(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads and verifies a manifest.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        const WHAT: &str = "manifest";
        check_frame(WHAT, bytes, MANIFEST_LEN, &MANIFEST_MAGIC)?;
        if bytes[RESERVED_AT..CRC_AT].iter().any(|&b| b != 0) {
            return Err(FormatError::Invalid {
                what: WHAT,
                field: "reserved",
                value: 0,
            });
        }
        Ok(Manifest {
            hash_id: u32_at(bytes, HASH_AT).unwrap_or_default(),
            segment_size: u64_at(bytes, SEGMENT_SIZE_AT).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_bit_flip() {
        assert_eq!(MANIFEST_LEN, 64);
        let m = Manifest {
            hash_id: HASH_XXH3_64,
            segment_size: 64 << 20,
        };
        let b = m.encode();
        assert_eq!(Manifest::decode(&b), Ok(m));
        for bit in 0..b.len() * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(Manifest::decode(&c).is_err(), "flipped bit {bit}");
        }
        assert!(Manifest::decode(&b[..63]).is_err());
    }
}
