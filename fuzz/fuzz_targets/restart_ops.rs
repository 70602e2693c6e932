//! Operation sequences on a cache with a disk tier, with clean closes and
//! simulated crashes, against a model of the contract.
//!
//! A crash is simulated by copying the directory's files while the cache runs
//! (what `kill -9` would leave; `tests/support/restart.rs`) and opening the
//! copy. Every value read after a reopen must be the key's own; after a clean
//! close, exactly the key's last value or nothing; after a crash, the values
//! read must all fit one moment between the last `sync` and the crash (nothing
//! removed or overwritten before the last sync comes back, nothing out of order).

#![no_main]

#[path = "../../tests/support/contract.rs"]
mod contract;
#[path = "../../tests/support/restart.rs"]
mod restart;

use libfuzzer_sys::fuzz_target;
use restart::{Harness, KEYS};

fuzz_target!(|data: &[u8]| {
    let mut h = Harness::new();
    for op in data.chunks(2) {
        let [kind, arg] = [op[0], *op.get(1).unwrap_or(&0)];
        let key = arg % KEYS;
        let reopened = match kind % 10 {
            0..=3 => {
                h.insert(key, usize::from(kind >> 4) * 8);
                continue;
            }
            4 => {
                h.remove(key);
                continue;
            }
            5 | 6 => {
                h.get(key);
                continue;
            }
            7 => {
                h.sync();
                continue;
            }
            8 => h.close_and_reopen(),
            _ => h.crash_and_reopen(),
        };
        if let Err(bad) = reopened {
            panic!("{bad:#?}");
        }
    }
});
