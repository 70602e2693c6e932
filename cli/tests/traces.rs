//! The policy yardstick: `larder replay` on every shared trace, at every capacity
//! of `reference.json`, against the reference CLOCK-Pro simulator (adaptive cold
//! allocation, the variant larder follows).
//!
//! The traces live in the repository, in `tests/traces/` (zstd-compressed;
//! `LARDER_TRACES` names another directory). Their absence is a failure, not
//! a skip.

mod support;

use serde_json::Value;
use std::process::Command;

const ADAPTIVE: &str = "CLOCK-Pro (reference, adaptive)";
const COLD5: &str = "CLOCK-Pro (reference, cold 5%)";

struct Case {
    trace: String,
    capacity: String,
    adaptive: f64,
    best: f64,
}

fn cases() -> Vec<Case> {
    let text = support::reference();
    let reference: Value = serde_json::from_str(&text).expect("reference.json is JSON");
    let mut cases = Vec::new();
    for (trace, data) in reference.as_object().expect("an object of traces") {
        for (capacity, policies) in data["miss_ratio"].as_object().expect("miss_ratio") {
            let adaptive = policies[ADAPTIVE].as_f64().expect("adaptive figure");
            let cold5 = policies[COLD5].as_f64().expect("cold 5% figure");
            cases.push(Case {
                trace: trace.clone(),
                capacity: capacity.clone(),
                adaptive,
                best: adaptive.min(cold5),
            });
        }
    }
    assert!(cases.len() >= 30, "reference.json lists too few cases");
    cases
}

fn replay(case: &Case, shards: Option<usize>) -> Value {
    let trace = support::trace(&case.trace);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_larder"));
    cmd.args(["replay", "--json", "--capacity", &case.capacity, "--trace"])
        .arg(&trace);
    if let Some(s) = shards {
        cmd.args(["--shards", &s.to_string()]);
    }
    let out = cmd.output().expect("run larder replay");
    assert!(
        out.status.success(),
        "replay {} @ {} failed: {}",
        case.trace,
        case.capacity,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("replay prints JSON")
}

/// Replays every case; asserts the miss ratio is within `bound` of the adaptive
/// reference and that no hit returned wrong bytes. Returns the mean gap to the
/// better reference variant.
fn check(shards: Option<usize>, bound: f64) -> f64 {
    let cases = cases();
    let mut failures = Vec::new();
    let mut gap_sum = 0.0;
    for case in &cases {
        let r = replay(case, shards);
        let miss = r["miss_ratio"].as_f64().unwrap();
        assert_eq!(
            r["wrong_values"], 0,
            "{} @ {}: wrong bytes",
            case.trace, case.capacity
        );
        let requests = r["requests"].as_u64().unwrap();
        assert_eq!(
            r["hits"].as_u64().unwrap() + r["misses"].as_u64().unwrap(),
            requests
        );
        gap_sum += miss - case.best;
        let line = format!(
            "{:>16} {:>6}: larder {miss:.4}  adaptive {:.4}  gap {:+.4}",
            case.trace,
            case.capacity,
            case.adaptive,
            miss - case.adaptive
        );
        eprintln!("{line}");
        if (miss - case.adaptive).abs() > bound {
            failures.push(line);
        }
    }
    let mean = gap_sum / cases.len() as f64;
    eprintln!("shards {shards:?}: mean gap to the better reference variant {mean:+.4}");
    assert!(
        failures.is_empty(),
        "outside ±{bound}:\n{}",
        failures.join("\n")
    );
    mean
}

#[test]
fn one_shard_matches_reference_within_0_01() {
    check(Some(1), 0.01);
}

#[test]
fn default_shards_match_reference_within_0_02() {
    check(None, 0.02);
}
