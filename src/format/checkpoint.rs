//! The checkpoint (file `CHECKPOINT`), written at a clean close: the policy
//! state that the segments do not carry, so a reopened cache is warm.
//!
//! * what the memory tier held, by key hash, hottest first: refilled from disk
//!   in that order; and its ghosts (keys in their test period), restored;
//! * the use counts of the disk tier's records (by segment and offset): what
//!   reclaim keeps;
//! * the disk tier's ghosts (key hashes of what left both tiers).
//!
//! It is a hint: every value still comes from a verified record, and a
//! checkpoint whose `last_seq` is not the last record's on disk (a crash after
//! the close) is ignored.
//!
//! ```text
//!  0  8  magic         CHECKPOINT_MAGIC ("LARDCKPT")
//!  8  4  version       FORMAT_VERSION
//! 12  4  memory_count
//! 16  4  uses_count
//! 20  4  ghost_count
//! 24  8  last_seq      sequence number of the last record when it was written
//! 32 16× memory_count  key hash u64, flags u32 (bit 0: hot, bit 1: ghost), weight u32
//!  … 12× uses_count    segment u32, offset u32, uses u32 (1..=3)
//!  …  8× ghost_count   key hash u64
//!  …  4  crc           CRC-32 of every byte before it
//! ```

use super::{FORMAT_VERSION, FormatError, checksum, need, u32_at, u64_at};

/// The first eight bytes of a checkpoint.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"LARDCKPT";

const MAGIC_AT: usize = 0;
const VERSION_AT: usize = MAGIC_AT + 8;
const MEMORY_COUNT_AT: usize = VERSION_AT + 4;
const USES_COUNT_AT: usize = MEMORY_COUNT_AT + 4;
const GHOST_COUNT_AT: usize = USES_COUNT_AT + 4;
const LAST_SEQ_AT: usize = GHOST_COUNT_AT + 4;
/// Bytes before the entries.
pub const CHECKPOINT_HEADER_LEN: usize = LAST_SEQ_AT + 8;
/// Bytes of a memory entry, a use-count entry and a ghost.
pub const MEMORY_ENTRY_LEN: usize = 16;
pub const USES_ENTRY_LEN: usize = 12;
pub const GHOST_ENTRY_LEN: usize = 8;
const CRC_LEN: usize = 4;
/// Memory entry flag: the entry was hot.
pub const ENTRY_HOT: u32 = 1;
/// Memory entry flag: a ghost (not resident, in its test period).
pub const ENTRY_GHOST: u32 = 2;
/// The largest use count a record keeps.
pub const MAX_USES: u32 = 3;

/// What a checkpoint records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Sequence number of the last record on disk when it was written.
    pub last_seq: u64,
    /// What memory held, hottest first, then its ghosts.
    pub memory: Vec<MemoryEntry>,
    /// Records with uses left: (segment, offset, uses).
    pub uses: Vec<(u32, u32, u8)>,
    /// Key hashes the disk tier remembered as gone from both tiers.
    pub ghosts: Vec<u64>,
}

/// One entry of the memory tier in a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryEntry {
    /// The key's hash.
    pub hash: u64,
    /// It was hot.
    pub hot: bool,
    /// It was a ghost (not resident, in its test period).
    pub ghost: bool,
    /// Its weight.
    pub weight: u32,
}

impl Checkpoint {
    /// The checkpoint's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let len = CHECKPOINT_HEADER_LEN
            + self.memory.len() * MEMORY_ENTRY_LEN
            + self.uses.len() * USES_ENTRY_LEN
            + self.ghosts.len() * GHOST_ENTRY_LEN
            + CRC_LEN;
        let mut b = Vec::with_capacity(len);
        b.extend_from_slice(&CHECKPOINT_MAGIC);
        b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        b.extend_from_slice(&(self.memory.len() as u32).to_le_bytes());
        b.extend_from_slice(&(self.uses.len() as u32).to_le_bytes());
        b.extend_from_slice(&(self.ghosts.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.last_seq.to_le_bytes());
        for e in &self.memory {
            let flags = if e.hot { ENTRY_HOT } else { 0 } | if e.ghost { ENTRY_GHOST } else { 0 };
            b.extend_from_slice(&e.hash.to_le_bytes());
            b.extend_from_slice(&flags.to_le_bytes());
            b.extend_from_slice(&e.weight.to_le_bytes());
        }
        for &(segment, offset, uses) in &self.uses {
            b.extend_from_slice(&segment.to_le_bytes());
            b.extend_from_slice(&offset.to_le_bytes());
            b.extend_from_slice(&u32::from(uses).to_le_bytes());
        }
        for &hash in &self.ghosts {
            b.extend_from_slice(&hash.to_le_bytes());
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads and verifies a checkpoint. Never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        const WHAT: &str = "checkpoint";
        let invalid = |field, value| FormatError::Invalid {
            what: WHAT,
            field,
            value,
        };
        need(bytes, CHECKPOINT_HEADER_LEN + CRC_LEN)?;
        if bytes[MAGIC_AT..MAGIC_AT + 8] != CHECKPOINT_MAGIC {
            return Err(FormatError::BadMagic { what: WHAT });
        }
        let count = |at| u32_at(bytes, at).unwrap_or_default() as u64;
        let (memory, uses, ghosts) = (
            count(MEMORY_COUNT_AT),
            count(USES_COUNT_AT),
            count(GHOST_COUNT_AT),
        );
        // u64 arithmetic: three u32 counts times small sizes cannot overflow it.
        let end = CHECKPOINT_HEADER_LEN as u64
            + memory * MEMORY_ENTRY_LEN as u64
            + uses * USES_ENTRY_LEN as u64
            + ghosts * GHOST_ENTRY_LEN as u64;
        if bytes.len() as u64 != end + CRC_LEN as u64 {
            return Err(invalid("length", bytes.len() as u64));
        }
        let end = end as usize;
        checksum(
            WHAT,
            u32_at(bytes, end).unwrap_or_default(),
            crc32fast::hash(&bytes[..end]),
        )?;
        let version = u32_at(bytes, VERSION_AT).unwrap_or_default();
        if version != FORMAT_VERSION {
            return Err(FormatError::Version { found: version });
        }
        let mut c = Checkpoint {
            last_seq: u64_at(bytes, LAST_SEQ_AT).unwrap_or_default(),
            ..Checkpoint::default()
        };
        let mut at = CHECKPOINT_HEADER_LEN;
        for _ in 0..memory {
            let flags = u32_at(bytes, at + 8).unwrap_or_default();
            if flags & !(ENTRY_HOT | ENTRY_GHOST) != 0 {
                return Err(invalid("memory entry flags", u64::from(flags)));
            }
            c.memory.push(MemoryEntry {
                hash: u64_at(bytes, at).unwrap_or_default(),
                hot: flags & ENTRY_HOT != 0,
                ghost: flags & ENTRY_GHOST != 0,
                weight: u32_at(bytes, at + 12).unwrap_or_default(),
            });
            at += MEMORY_ENTRY_LEN;
        }
        for _ in 0..uses {
            let n = u32_at(bytes, at + 8).unwrap_or_default();
            if !(1..=MAX_USES).contains(&n) {
                return Err(invalid("uses", u64::from(n)));
            }
            let segment = u32_at(bytes, at).unwrap_or_default();
            let offset = u32_at(bytes, at + 4).unwrap_or_default();
            c.uses.push((segment, offset, n as u8));
            at += USES_ENTRY_LEN;
        }
        for _ in 0..ghosts {
            c.ghosts.push(u64_at(bytes, at).unwrap_or_default());
            at += GHOST_ENTRY_LEN;
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_bit_flip_and_every_cut() {
        let c = Checkpoint {
            last_seq: 77,
            memory: vec![
                MemoryEntry {
                    hash: 1,
                    hot: true,
                    ghost: false,
                    weight: 7,
                },
                MemoryEntry {
                    hash: u64::MAX,
                    hot: false,
                    ghost: true,
                    weight: u32::MAX,
                },
                MemoryEntry::default(),
            ],
            uses: vec![(3, 64, 1), (u32::MAX, u32::MAX, 3)],
            ghosts: vec![9, 10],
        };
        let b = c.encode();
        assert_eq!(
            b.len(),
            CHECKPOINT_HEADER_LEN + 3 * 16 + 2 * 12 + 2 * 8 + CRC_LEN
        );
        assert_eq!(Checkpoint::decode(&b), Ok(c));
        for bit in 0..b.len() * 8 {
            let mut x = b.clone();
            x[bit / 8] ^= 1 << (bit % 8);
            assert!(Checkpoint::decode(&x).is_err(), "flipped bit {bit}");
        }
        for len in 0..b.len() {
            assert!(Checkpoint::decode(&b[..len]).is_err(), "cut at {len}");
        }
        let mut longer = b.clone();
        longer.push(0);
        assert!(Checkpoint::decode(&longer).is_err());
        assert_eq!(
            Checkpoint::decode(&Checkpoint::default().encode()),
            Ok(Checkpoint::default())
        );
    }

    #[test]
    fn huge_counts_are_refused_without_allocating() {
        let mut b = Checkpoint::default().encode();
        b[MEMORY_COUNT_AT..MEMORY_COUNT_AT + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Checkpoint::decode(&b).is_err());
    }
}
