//! The on-disk format of the disk tier (L2): every byte layout in one place.
//!
//! All integers are little-endian. Every structure carries a CRC-32 (crc32fast,
//! the IEEE polynomial) that also covers where it belongs (the segment id, and
//! for a record its offset), so a structure copied to the wrong place fails its
//! check. Decoders never panic and never read out of bounds, whatever the bytes:
//! they return a [`FormatError`]. `docs/format.md` describes the same layouts
//! for people; the constants here are derived from each other, never retyped.
//!
//! The disk tier (`src/disk/`) writes and reads these structures; the fuzz
//! targets reach the decoders through `larder::fuzzing`.

pub(crate) mod checkpoint;
pub(crate) mod journal;
pub(crate) mod keys;
pub(crate) mod list;
pub(crate) mod manifest;
pub(crate) mod record;
pub(crate) mod segment;

/// The format version written in every segment header.
pub const FORMAT_VERSION: u32 = 2;

/// Why bytes read from disk were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Fewer bytes than the structure needs (a truncated file or a torn write).
    #[error("truncated: {needed} bytes needed, {available} available")]
    Truncated {
        /// Bytes the structure needs.
        needed: usize,
        /// Bytes there are.
        available: usize,
    },
    /// The magic number is wrong: not a larder structure, or not where one was expected.
    #[error("bad magic number in a {what}")]
    BadMagic {
        /// The structure that was expected.
        what: &'static str,
    },
    /// A field holds a value the format does not allow.
    #[error("invalid {field} in a {what}: {value}")]
    Invalid {
        /// The structure.
        what: &'static str,
        /// The field.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// The structure was written by a newer (or unknown) format version.
    #[error("unknown format version {found} (this build reads version {FORMAT_VERSION})")]
    Version {
        /// The version found.
        found: u32,
    },
    /// The checksum does not match: corrupt, torn, or copied from elsewhere.
    #[error("checksum mismatch in a {what}: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// The structure.
        what: &'static str,
        /// The CRC stored with it.
        stored: u32,
        /// The CRC of the bytes as read.
        computed: u32,
    },
}

/// Little-endian readers over a slice whose length the caller has checked.
/// Each returns `None` rather than panicking if it was not.
pub(crate) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Checks that `b` holds at least `needed` bytes.
/// `Ok` if a structure's stored checksum is the one computed over its bytes.
pub(crate) fn checksum(what: &'static str, stored: u32, computed: u32) -> Result<(), FormatError> {
    if stored == computed {
        Ok(())
    } else {
        Err(FormatError::Checksum {
            what,
            stored,
            computed,
        })
    }
}

/// Checks the frame of a fixed-size structure laid out the common way: `magic`
/// at offset 0, the format version at 8, and in its last 4 bytes a CRC-32 of
/// every byte before them. Only the first `len` bytes of `bytes` are read.
pub(crate) fn check_frame(
    what: &'static str,
    bytes: &[u8],
    len: usize,
    magic: &[u8; 8],
) -> Result<(), FormatError> {
    need(bytes, len)?;
    if bytes[..8] != magic[..] {
        return Err(FormatError::BadMagic { what });
    }
    let crc_at = len - 4;
    checksum(
        what,
        u32_at(bytes, crc_at).unwrap_or_default(),
        crc32fast::hash(&bytes[..crc_at]),
    )?;
    let found = u32_at(bytes, 8).unwrap_or_default();
    if found != FORMAT_VERSION {
        return Err(FormatError::Version { found });
    }
    Ok(())
}

pub(crate) fn need(b: &[u8], needed: usize) -> Result<(), FormatError> {
    if b.len() < needed {
        Err(FormatError::Truncated {
            needed,
            available: b.len(),
        })
    } else {
        Ok(())
    }
}
