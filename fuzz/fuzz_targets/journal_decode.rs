//! The journals' decoders (write-behind and tags, `format/journal.rs`) on
//! arbitrary bytes: never a panic, never a read out of bounds, and every
//! record and payload they accept encodes back to the bytes they read.

#![no_main]

use larder::fuzzing::{
    JournalHeader, WriteRecord, decode_envelope, decode_journal_record, decode_tag,
    encode_journal_record,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = JournalHeader::decode(data) {
        assert_eq!(&h.encode()[..], &data[..36], "a header that does not round-trip");
    }
    // The bytes as a file's records (file number from the first byte).
    let file = u64::from(data.first().copied().unwrap_or(0));
    let mut at = 1.min(data.len());
    while let Ok((payload, used)) = decode_journal_record(file, &data[at..]) {
        let mut again = Vec::new();
        encode_journal_record(file, payload, &mut again);
        assert_eq!(&again[..], &data[at..at + used], "a record that does not round-trip");
        if let Ok(w) = WriteRecord::decode(payload) {
            let mut p = Vec::new();
            w.encode(&mut p);
            assert_eq!(p, payload, "a write-behind payload that does not round-trip");
        }
        let _ = decode_tag(payload);
        at += used;
    }
    if let Ok((_table, tags, start)) = decode_envelope(data) {
        assert!(start <= data.len());
        assert_eq!(tags.count(), usize::from(data[0]));
    }
});
