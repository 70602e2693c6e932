//! The clean-close mark (file `CLOSED`): the last sequence number of a log
//! that a `close` sealed. Recovery keeps the probation stream only if the log
//! still ends there (docs/design.md §10.2). The checkpoint names the same
//! number; this small file is a second witness, so a damaged checkpoint costs
//! the policy state, not the probation stream.
//!
//! ```text
//!  0  8  magic         CLOSED_MAGIC ("LARDCLSD")
//!  8  4  version       FORMAT_VERSION
//! 12  4  reserved      0
//! 16  8  last_seq      sequence number of the last record when the log was sealed
//! 24  4  crc           CRC-32 of bytes 0..24
//! ```

use super::{FORMAT_VERSION, FormatError, check_frame, u64_at};

/// The first eight bytes of a clean-close mark.
pub const CLOSED_MAGIC: [u8; 8] = *b"LARDCLSD";

const MAGIC_AT: usize = 0;
const VERSION_AT: usize = MAGIC_AT + 8;
const RESERVED_AT: usize = VERSION_AT + 4;
const LAST_SEQ_AT: usize = RESERVED_AT + 4;
const CRC_AT: usize = LAST_SEQ_AT + 8;
/// Bytes of a clean-close mark.
pub const CLOSED_LEN: usize = CRC_AT + 4;
// The frame `check_frame` reads: magic at 0, version at 8, CRC last.
const _: () = assert!(MAGIC_AT == 0 && VERSION_AT == 8);

/// The mark's bytes, for a log sealed at `last_seq`.
pub fn encode(last_seq: u64) -> [u8; CLOSED_LEN] {
    let mut b = [0u8; CLOSED_LEN];
    b[MAGIC_AT..MAGIC_AT + 8].copy_from_slice(&CLOSED_MAGIC);
    b[VERSION_AT..VERSION_AT + 4].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[LAST_SEQ_AT..LAST_SEQ_AT + 8].copy_from_slice(&last_seq.to_le_bytes());
    let crc = crc32fast::hash(&b[..CRC_AT]);
    b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Reads and verifies a mark: the `last_seq` it names.
pub fn decode(bytes: &[u8]) -> Result<u64, FormatError> {
    const WHAT: &str = "clean-close mark";
    check_frame(WHAT, bytes, CLOSED_LEN, &CLOSED_MAGIC)?;
    let invalid = |field, value| FormatError::Invalid {
        what: WHAT,
        field,
        value,
    };
    if bytes.len() != CLOSED_LEN {
        return Err(invalid("length", bytes.len() as u64));
    }
    if bytes[RESERVED_AT..LAST_SEQ_AT].iter().any(|&b| b != 0) {
        return Err(invalid("reserved", 0));
    }
    Ok(u64_at(bytes, LAST_SEQ_AT).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_bit_flip() {
        assert_eq!(CLOSED_LEN, 28);
        let b = encode(123_456);
        assert_eq!(decode(&b), Ok(123_456));
        for bit in 0..b.len() * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&c).is_err(), "flipped bit {bit}");
        }
        for len in 0..CLOSED_LEN {
            assert!(decode(&b[..len]).is_err(), "cut at {len}");
        }
        let mut longer = b.to_vec();
        longer.push(0);
        assert!(
            matches!(
                decode(&longer),
                Err(FormatError::Invalid {
                    field: "length",
                    ..
                })
            ),
            "trailing bytes"
        );
    }
}
