//! The contract's model test with restarts (contract, "what is measured"):
//! random operation sequences on a cache with a disk tier, with clean closes
//! and simulated crashes, checked against a model. The same checks as the
//! `restart_ops` fuzz target, driven here by a seeded generator so that CI
//! runs them on every change; `LARDER_MODEL_SEQUENCES` raises the count.
//!
//! How a crash is simulated: `tests/support/restart.rs`.

mod support;

use rand::{Rng, SeedableRng, rngs::StdRng};
use support::restart::{Harness, KEYS};

/// One sequence; panics on a violation.
fn sequence(seed: u64, steps: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut h = Harness::new();
    for step in 0..steps {
        let key = rng.random_range(0..KEYS);
        let reopened = match rng.random_range(0..100) {
            0..45 => {
                h.insert(key, rng.random_range(0..2000));
                continue;
            }
            45..55 => {
                h.remove(key);
                continue;
            }
            55..88 => {
                h.get(key);
                continue;
            }
            88..94 => {
                h.sync();
                continue;
            }
            94..97 => h.close_and_reopen(),
            _ => h.crash_and_reopen(),
        };
        if let Err(bad) = reopened {
            panic!("seed {seed}, step {step}: {bad:#?}");
        }
    }
}

#[test]
fn random_sequences_with_closes_and_crashes_keep_the_contract() {
    let n: u64 = support::env_or("LARDER_MODEL_SEQUENCES", 60);
    for seed in 0..n {
        sequence(seed, 400);
    }
}
