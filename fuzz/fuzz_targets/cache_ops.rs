//! Operation sequences against a model of the contract, with the invariant
//! checker after every step: inserts (with and without TTL), overwrites of other
//! sizes, gets, removes, clock steps, on a small cache that evicts constantly.

#![no_main]

use larder::{Bytes, Cache, ManualClock};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let Some((&config, ops)) = data.split_first() else {
        return;
    };
    let clock = ManualClock::new();
    let cache = Cache::builder()
        .memory_capacity(600 + u64::from(config) * 40)
        .shards(1 << (config % 3))
        .clock(clock.clone())
        .build()
        .expect("valid configuration");
    // key -> (value, deadline in ms); the cache may forget, never invent.
    let mut model: HashMap<u8, (Bytes, Option<u64>)> = HashMap::new();
    let mut now = 0u64;
    for (step, op) in ops.chunks(3).enumerate() {
        let [kind, key, arg] = [op[0], *op.get(1).unwrap_or(&0), *op.get(2).unwrap_or(&0)];
        let live = |m: &HashMap<u8, (Bytes, Option<u64>)>, now: u64, k: u8| {
            m.get(&k)
                .filter(|(_, d)| d.is_none_or(|d| now < d))
                .map(|(v, _)| v.clone())
        };
        match kind % 6 {
            0 | 1 => {
                let mut v = vec![key; usize::from(arg % 64)];
                v.extend_from_slice(&(step as u32).to_le_bytes());
                let v = Bytes::from(v);
                let ttl = (kind % 6 == 1).then(|| u64::from(arg % 50) + 1);
                match ttl {
                    Some(ms) => cache.insert_with_ttl(&[key], v.clone(), Duration::from_millis(ms)),
                    None => cache.insert(&[key], v.clone()),
                }
                .expect("small entries fit");
                model.insert(key, (v, ttl.map(|ms| now + ms)));
            }
            2 | 3 => {
                if let Some(got) = cache.get(&[key]) {
                    assert_eq!(
                        Some(got),
                        live(&model, now, key),
                        "get({key}) at step {step}"
                    );
                }
            }
            4 => {
                if let Some(got) = cache.remove(&[key]) {
                    assert_eq!(
                        Some(got),
                        live(&model, now, key),
                        "remove({key}) at step {step}"
                    );
                }
                model.remove(&key);
            }
            _ => {
                clock.advance(Duration::from_millis(u64::from(arg % 20)));
                now += u64::from(arg % 20);
            }
        }
        cache.validate();
    }
});
