//! The record decoder. Two modes, picked by the first byte:
//! * arbitrary bytes: it never panics, and whatever it accepts re-encodes to
//!   exactly the bytes it read;
//! * a valid record built from the input with one byte changed (a burst of at
//!   most 8 bits, which CRC-32 always detects): it must be rejected.

#![no_main]

use larder::fuzzing::{Kind, RecordHeader, decode_record, encode_record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some((place, bytes)) = rest.split_at_checked(12) else {
        return;
    };
    let segment_id = u64::from_le_bytes(place[..8].try_into().unwrap());
    let offset = u32::from_le_bytes(place[8..].try_into().unwrap());
    if mode % 2 == 0 {
        if let Ok(r) = decode_record(segment_id, offset, bytes) {
            let mut again = Vec::new();
            encode_record(&mut again, segment_id, offset, &r.header, r.key, r.stored);
            assert_eq!(&again[..], &bytes[..again.len()]);
        }
        return;
    }
    // Structured: [at: u16][xor: u8][key_len: u8][seq: u64] key value
    let Some((head, body)) = bytes.split_at_checked(12) else {
        return;
    };
    let at = usize::from(u16::from_le_bytes([head[0], head[1]]));
    let xor = head[2];
    let key_len = usize::from(head[3]).clamp(1, body.len().max(1));
    let seq = u64::from_le_bytes(head[4..12].try_into().unwrap());
    let Some((key, value)) = body.split_at_checked(key_len) else {
        return;
    };
    let header = RecordHeader {
        kind: Kind::Value,
        compressed: false,
        key_len: key.len() as u16,
        stored_len: value.len() as u32,
        raw_len: value.len() as u32,
        expires_at: seq.rotate_left(17),
        seq,
    };
    let mut record = Vec::new();
    encode_record(&mut record, segment_id, offset, &header, key, value);
    let decoded = decode_record(segment_id, offset, &record).expect("a fresh record decodes");
    assert_eq!((decoded.key, decoded.stored), (key, value));
    if xor != 0 && !record.is_empty() {
        let at = at % record.len();
        record[at] ^= xor;
        assert!(
            decode_record(segment_id, offset, &record).is_err(),
            "a changed byte at {at} went unnoticed"
        );
    }
});
