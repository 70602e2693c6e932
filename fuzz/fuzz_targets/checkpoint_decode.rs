//! The checkpoint loader on arbitrary bytes: never a panic, and whatever it
//! accepts encodes back to exactly the bytes it read.

#![no_main]

use larder::fuzzing::Checkpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Checkpoint::decode(data) {
        assert_eq!(c.encode(), data, "a checkpoint that does not round-trip");
    }
});
