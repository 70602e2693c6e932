//! Keys: validation, hashing and compact storage.
//!
//! The key hash is xxh3-64 with seed 0. It is stable across runs, processes and
//! platforms, which matters because the disk tier persists it.

use crate::error::Error;

/// The longest key larder accepts, in bytes.
pub const MAX_KEY_LEN: usize = 4096;

/// The longest value larder accepts, in bytes (16 MiB).
///
/// A value must fit in one on-disk segment together with its record header, so
/// the limit sits well below the smallest segment size.
pub const MAX_VALUE_LEN: usize = 16 << 20;

/// The stable 64-bit hash of a key (xxh3-64, seed 0).
#[inline]
pub fn hash_key(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// Checks a key against the documented limits.
#[inline]
pub(crate) fn check_key(key: &[u8]) -> Result<(), Error> {
    if key.is_empty() {
        Err(Error::EmptyKey)
    } else if key.len() > MAX_KEY_LEN {
        Err(Error::KeyTooLong {
            len: key.len(),
            max: MAX_KEY_LEN,
        })
    } else {
        Ok(())
    }
}

/// Longest key stored inline, without a heap allocation.
const INLINE_LEN: usize = 22;

/// A key owned by the memory tier: short keys live inline, long ones on the heap.
///
/// 24 bytes either way (asserted in the tests), so a `u64` key costs no allocation.
/// Inline keys are zero-padded, so equality compares fixed-size arrays without
/// a `memcmp` call; an inline key never equals a heap one (their lengths differ).
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum KeyBuf {
    Inline { len: u8, bytes: [u8; INLINE_LEN] },
    Heap(Box<[u8]>),
}

impl KeyBuf {
    #[inline]
    pub(crate) fn new(key: &[u8]) -> Self {
        if key.len() <= INLINE_LEN {
            let mut bytes = [0; INLINE_LEN];
            copy_short(&mut bytes, key);
            KeyBuf::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            KeyBuf::Heap(key.into())
        }
    }

    #[inline]
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            KeyBuf::Inline { len, bytes } => &bytes[..*len as usize],
            KeyBuf::Heap(b) => b,
        }
    }
}

/// Copies `src` (at most `INLINE_LEN` bytes) to the front of `dst` with a few
/// fixed-size, possibly overlapping copies instead of a variable-length `memcpy` call:
/// the probe of every lookup is built this way.
#[inline]
fn copy_short(dst: &mut [u8; INLINE_LEN], src: &[u8]) {
    fn copy<const N: usize>(dst: &mut [u8], src: &[u8], at: usize) {
        let chunk: [u8; N] = src[at..at + N].try_into().expect("in bounds");
        dst[at..at + N].copy_from_slice(&chunk);
    }
    let n = src.len();
    debug_assert!(n <= INLINE_LEN);
    match n {
        0 => {}
        1 => dst[0] = src[0],
        2..=3 => {
            copy::<2>(dst, src, 0);
            copy::<2>(dst, src, n - 2);
        }
        4..=7 => {
            copy::<4>(dst, src, 0);
            copy::<4>(dst, src, n - 4);
        }
        8..=16 => {
            copy::<8>(dst, src, 0);
            copy::<8>(dst, src, n - 8);
        }
        _ => {
            copy::<16>(dst, src, 0);
            copy::<8>(dst, src, n - 8);
        }
    }
}

/// A borrowed key prepared for comparison against stored [`KeyBuf`]s: short keys
/// are padded once so each comparison is a fixed-size one; long keys stay borrowed.
pub(crate) enum Probe<'a> {
    Inline(KeyBuf),
    Long(&'a [u8]),
}

impl<'a> Probe<'a> {
    #[inline]
    pub(crate) fn new(key: &'a [u8]) -> Self {
        if key.len() <= INLINE_LEN {
            Probe::Inline(KeyBuf::new(key))
        } else {
            Probe::Long(key)
        }
    }

    #[inline(always)]
    pub(crate) fn matches(&self, stored: &KeyBuf) -> bool {
        match (self, stored) {
            (Probe::Inline(probe), stored) => probe == stored,
            (Probe::Long(probe), KeyBuf::Heap(stored)) => **stored == **probe,
            (Probe::Long(_), KeyBuf::Inline { .. }) => false,
        }
    }

    /// The owned key, for an insert.
    #[inline]
    pub(crate) fn into_owned(self) -> KeyBuf {
        match self {
            Probe::Inline(k) => k,
            Probe::Long(k) => KeyBuf::new(k),
        }
    }
}

impl Default for KeyBuf {
    fn default() -> Self {
        KeyBuf::Inline {
            len: 0,
            bytes: [0; INLINE_LEN],
        }
    }
}

impl std::fmt::Debug for KeyBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keybuf_is_24_bytes_and_round_trips() {
        assert_eq!(std::mem::size_of::<KeyBuf>(), 24);
        for len in [1, 8, INLINE_LEN, INLINE_LEN + 1, 300] {
            let key: Vec<u8> = (0..len).map(|i| i as u8).collect();
            assert_eq!(KeyBuf::new(&key).as_slice(), &key[..]);
        }
    }

    #[test]
    fn short_copies_are_exact() {
        for n in 0..=INLINE_LEN {
            let src: Vec<u8> = (1..=n as u8).collect();
            let mut dst = [0; INLINE_LEN];
            copy_short(&mut dst, &src);
            assert_eq!(&dst[..n], &src[..]);
            assert!(
                dst[n..].iter().all(|&b| b == 0),
                "padding stays zero for len {n}"
            );
        }
    }

    #[test]
    fn probes_match_exactly() {
        let keys: [&[u8]; 5] = [
            b"a",
            b"ab",
            &[0; INLINE_LEN],
            &[0; INLINE_LEN + 1],
            &[1; 100],
        ];
        for a in keys {
            for b in keys {
                assert_eq!(
                    Probe::new(a).matches(&KeyBuf::new(b)),
                    a == b,
                    "{a:?} vs {b:?}"
                );
            }
        }
    }

    #[test]
    fn hash_is_stable() {
        // Persisted on disk: this value must never change.
        assert_eq!(hash_key(b"larder"), xxhash_rust::xxh3::xxh3_64(b"larder"));
        assert_eq!(hash_key(b""), 0x2d06800538d394c2);
    }

    #[test]
    fn key_limits() {
        assert_eq!(check_key(b""), Err(Error::EmptyKey));
        assert!(check_key(&[0; MAX_KEY_LEN]).is_ok());
        assert_eq!(
            check_key(&[0; MAX_KEY_LEN + 1]),
            Err(Error::KeyTooLong {
                len: MAX_KEY_LEN + 1,
                max: MAX_KEY_LEN
            })
        );
    }
}
