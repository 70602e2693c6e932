//! How typed keys and values become the bytes the core stores.
//!
//! Keys: [`AsKey`] turns a key (owned or borrowed) into bytes for a lookup,
//! and [`Key`] turns them back for iteration. Two key types that borrow as
//! one another encode alike (`String` and `str`, `Vec<u8>` and `[u8]`), so a
//! `TypedCache<String, _>` is looked up with a `&str`.
//!
//! Values: a [`Codec`] encodes and decodes one value type. [`Raw`] stores
//! bytes, strings and integers as they are; [`Postcard`] (feature `serde`)
//! stores any serde type in postcard's compact binary format.

use bytes::Bytes;
use thiserror::Error;

/// A value or key the typed layer could not encode, or stored bytes it could
/// not decode into the expected type.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{context}: {reason}")]
pub struct CodecError {
    context: &'static str,
    reason: String,
}

impl CodecError {
    /// An error that says what was being done (`context`) and what went wrong.
    pub fn new(context: &'static str, reason: impl std::fmt::Display) -> Self {
        CodecError {
            context,
            reason: reason.to_string(),
        }
    }
}

/// A key as bytes, for lookups: implemented by owned keys and by what they
/// borrow as (`str` for `String`, `[u8]` for `Vec<u8>` and `Bytes`), which
/// must produce the same bytes.
pub trait AsKey {
    /// Calls `f` with the key's bytes (built on the stack where they fit).
    fn with_key_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R;
}

/// An owned key type: [`AsKey`], and back from the stored bytes (for
/// iteration).
pub trait Key: AsKey + Sized {
    /// The key stored as `bytes`, or an error if they are not one of this type.
    fn from_key_bytes(bytes: &[u8]) -> Result<Self, CodecError>;
}

impl<T: AsKey + ?Sized> AsKey for &T {
    fn with_key_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        (**self).with_key_bytes(f)
    }
}

impl AsKey for [u8] {
    fn with_key_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(self)
    }
}

impl AsKey for str {
    fn with_key_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(self.as_bytes())
    }
}

impl AsKey for Vec<u8> {
    fn with_key_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(self)
    }
}

impl Key for Vec<u8> {
    fn from_key_bytes(bytes: &[u8]) -> Result<Self, CodecError> {
        Ok(bytes.to_vec())
    }
}

impl AsKey for Bytes {
    fn with_key_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(self)
    }
}

impl Key for Bytes {
    fn from_key_bytes(bytes: &[u8]) -> Result<Self, CodecError> {
        Ok(Bytes::copy_from_slice(bytes))
    }
}

impl AsKey for String {
    fn with_key_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(self.as_bytes())
    }
}

impl Key for String {
    fn from_key_bytes(bytes: &[u8]) -> Result<Self, CodecError> {
        String::from_utf8(bytes.to_vec()).map_err(|e| CodecError::new("a String key", e))
    }
}

/// Integers are keyed by their big-endian bytes (signed ones with the sign
/// bit flipped, so the byte order is the numeric order).
macro_rules! integer_keys {
    ($($t:ty => $flip:expr),* $(,)?) => {$(
        impl AsKey for $t {
            fn with_key_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
                f(&(*self ^ $flip).to_be_bytes())
            }
        }

        impl Key for $t {
            fn from_key_bytes(bytes: &[u8]) -> Result<Self, CodecError> {
                let array = bytes.try_into().map_err(|_| {
                    CodecError::new(
                        concat!("a ", stringify!($t), " key"),
                        format_args!("{} bytes, not {}", bytes.len(), size_of::<$t>()),
                    )
                })?;
                Ok(<$t>::from_be_bytes(array) ^ $flip)
            }
        }
    )*};
}

integer_keys! {
    u8 => 0, u16 => 0, u32 => 0, u64 => 0, u128 => 0, usize => 0,
    i8 => i8::MIN, i16 => i16::MIN, i32 => i32::MIN, i64 => i64::MIN,
    i128 => i128::MIN, isize => isize::MIN,
}

/// Encodes and decodes values of type `T` for the typed layer.
///
/// [`NAME`](Self::NAME) goes into the tag stored with every value (with the
/// value type's name and the cache's version), so values another codec or
/// type wrote are misses rather than misread. Decoding must not panic on any
/// input: stored bytes may come from an older build.
pub trait Codec<T>: Send + Sync + 'static {
    /// Names the encoding; part of every stored value's tag.
    const NAME: &'static str;

    /// Appends `value`'s encoding to `out`.
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError>;

    /// About how many bytes `value` encodes to, to size the buffer once.
    fn size_hint(&self, value: &T) -> usize {
        let _ = value;
        64
    }

    /// The value encoded in `bytes` (a cheap slice of the stored value).
    fn decode(&self, bytes: Bytes) -> Result<T, CodecError>;
}

/// Stores values as they are: [`Bytes`], `Vec<u8>` and `String` as their
/// bytes (a `String` is checked to be UTF-8 when read), integers as their
/// little-endian bytes, `bool` as one byte.
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

impl Codec<Bytes> for Raw {
    const NAME: &'static str = "raw";
    fn encode(&self, value: &Bytes, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(value);
        Ok(())
    }
    fn size_hint(&self, value: &Bytes) -> usize {
        value.len()
    }
    fn decode(&self, bytes: Bytes) -> Result<Bytes, CodecError> {
        Ok(bytes)
    }
}

impl Codec<Vec<u8>> for Raw {
    const NAME: &'static str = "raw";
    fn encode(&self, value: &Vec<u8>, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(value);
        Ok(())
    }
    fn size_hint(&self, value: &Vec<u8>) -> usize {
        value.len()
    }
    fn decode(&self, bytes: Bytes) -> Result<Vec<u8>, CodecError> {
        Ok(bytes.to_vec())
    }
}

impl Codec<String> for Raw {
    const NAME: &'static str = "raw";
    fn encode(&self, value: &String, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(value.as_bytes());
        Ok(())
    }
    fn size_hint(&self, value: &String) -> usize {
        value.len()
    }
    fn decode(&self, bytes: Bytes) -> Result<String, CodecError> {
        String::from_utf8(bytes.to_vec()).map_err(|e| CodecError::new("a String value", e))
    }
}

impl Codec<bool> for Raw {
    const NAME: &'static str = "raw";
    fn encode(&self, value: &bool, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.push(u8::from(*value));
        Ok(())
    }
    fn decode(&self, bytes: Bytes) -> Result<bool, CodecError> {
        match &bytes[..] {
            [0] => Ok(false),
            [1] => Ok(true),
            other => Err(CodecError::new(
                "a bool value",
                format_args!("{other:?} is neither [0] nor [1]"),
            )),
        }
    }
}

macro_rules! integer_values {
    ($($t:ty),*) => {$(
        impl Codec<$t> for Raw {
            const NAME: &'static str = "raw";
            fn encode(&self, value: &$t, out: &mut Vec<u8>) -> Result<(), CodecError> {
                out.extend_from_slice(&value.to_le_bytes());
                Ok(())
            }
            fn size_hint(&self, _: &$t) -> usize {
                size_of::<$t>()
            }
            fn decode(&self, bytes: Bytes) -> Result<$t, CodecError> {
                let array = bytes[..].try_into().map_err(|_| {
                    CodecError::new(
                        concat!("a ", stringify!($t), " value"),
                        format_args!("{} bytes, not {}", bytes.len(), size_of::<$t>()),
                    )
                })?;
                Ok(<$t>::from_le_bytes(array))
            }
        }
    )*};
}

integer_values!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

/// Stores any `serde` type in [postcard](https://docs.rs/postcard)'s compact
/// binary format (feature `serde`).
///
/// Postcard does not describe the fields it writes: after changing a value
/// type's fields (not its name), raise the typed cache's
/// [`version`](crate::TypedCache::version) so that old values are misses.
#[cfg(feature = "serde")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Postcard;

#[cfg(feature = "serde")]
impl<T: serde::Serialize + serde::de::DeserializeOwned> Codec<T> for Postcard {
    const NAME: &'static str = "postcard-1";
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let taken = std::mem::take(out);
        *out = postcard::to_extend(value, taken).map_err(|e| CodecError::new("postcard", e))?;
        Ok(())
    }
    fn decode(&self, bytes: Bytes) -> Result<T, CodecError> {
        postcard::from_bytes(&bytes).map_err(|e| CodecError::new("postcard", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_bytes<K: AsKey + ?Sized>(k: &K) -> Vec<u8> {
        k.with_key_bytes(<[u8]>::to_vec)
    }

    #[test]
    fn keys_round_trip_and_borrowed_forms_encode_alike() {
        assert_eq!(key_bytes(&String::from("ab")), key_bytes("ab"));
        assert_eq!(key_bytes(&vec![1u8, 2]), key_bytes(&[1u8, 2][..]));
        for k in [i64::MIN, -1, 0, 1, i64::MAX] {
            assert_eq!(i64::from_key_bytes(&key_bytes(&k)), Ok(k));
        }
        // Signed keys keep their numeric order as bytes.
        assert!(key_bytes(&-1i32) < key_bytes(&0i32));
        assert!(u64::from_key_bytes(b"short").is_err());
        assert!(String::from_key_bytes(&[0xff]).is_err());
    }

    #[test]
    fn raw_values_round_trip_and_reject_foreign_bytes() {
        let mut out = Vec::new();
        Raw.encode(&7u32, &mut out).unwrap();
        assert_eq!(Codec::<u32>::decode(&Raw, Bytes::from(out)), Ok(7));
        assert!(Codec::<u32>::decode(&Raw, Bytes::from_static(b"abc")).is_err());
        assert!(Codec::<bool>::decode(&Raw, Bytes::from_static(b"\x02")).is_err());
        assert!(Codec::<String>::decode(&Raw, Bytes::from_static(b"\xff")).is_err());
    }
}
