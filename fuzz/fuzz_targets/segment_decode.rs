//! The segment header, trailer and summary readers on arbitrary bytes: they
//! never panic, and every summary they accept lists records that lie between
//! the header and the summary without overlapping.

#![no_main]

use larder::fuzzing::{SegmentHeader, Trailer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((id, segment)) = data.split_at_checked(8) else {
        return;
    };
    let segment_id = u64::from_le_bytes(id.try_into().unwrap());
    let _ = SegmentHeader::decode(segment);
    if let Ok(trailer) = Trailer::decode(segment_id, segment)
        && let Ok(entries) = trailer.summary(segment_id, segment)
    {
        let mut end = 0u64;
        for e in entries {
            assert!(u64::from(e.offset) >= end);
            end = u64::from(e.offset) + u64::from(e.len);
            assert!(end <= u64::from(trailer.summary_offset));
        }
    }
});
