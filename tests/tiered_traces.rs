//! Tiered replays of the shared traces: half of each reference capacity in
//! memory, the rest on disk (64 KiB segments), both write policies.
//!
//! Asserted: every hit returns the right bytes, and with WriteBehind the disk
//! tier serves hits. Printed, not yet asserted: the gap to the reference
//! CLOCK-Pro figure of the combined capacity. Issue 3's bound (0.02) needs the
//! cross-tier policy (reinsertion at reclaim, L2 ghosts), which is not built
//! yet; see docs/benchmarks.md §5.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

const SEGMENT: u64 = 64 << 10;
/// Records of a 64-byte value a segment holds, roughly.
const PER_SEGMENT: u64 = 500;

fn traces_dir() -> PathBuf {
    std::env::var_os("LARDER_TRACES").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/traces"),
        PathBuf::from,
    )
}

#[test]
fn tiered_replays_return_only_right_bytes() {
    let text = std::fs::read_to_string(traces_dir().join("reference.json"))
        .expect("reference.json (set LARDER_TRACES)");
    let reference: Value = serde_json::from_str(&text).unwrap();
    let mut cases = 0;
    for policy in ["write-behind", "demote"] {
        let mut worst = f64::MIN;
        for (trace, data) in reference.as_object().unwrap() {
            for (capacity, figures) in data["miss_ratio"].as_object().unwrap() {
                let total: u64 = capacity.parse().unwrap();
                if total < 2000 {
                    continue; // too small for a segmented tier
                }
                let memory = total / 2;
                let segments = ((total - memory).div_ceil(PER_SEGMENT) + 1).max(3);
                let dir = tempfile::tempdir().unwrap();
                let out = Command::new(env!("CARGO_BIN_EXE_larder"))
                    .args(["replay", "--json", "--capacity", &memory.to_string()])
                    .arg("--trace")
                    .arg(traces_dir().join(format!("{trace}.txt")))
                    .arg("--disk-dir")
                    .arg(dir.path().join("l2"))
                    .args(["--disk-capacity", &(segments * SEGMENT).to_string()])
                    .args(["--segment-size", &SEGMENT.to_string()])
                    .args(["--write-policy", policy])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let r: Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(r["wrong_values"], 0, "{policy} {trace} @ {capacity}");
                assert_eq!(r["disk"]["corrupt_records"], 0);
                if policy == "write-behind" {
                    assert!(
                        r["l2_hits"].as_u64().unwrap() > 0 || trace == "cpp",
                        "{trace}: no L2 hits"
                    );
                }
                let miss = r["miss_ratio"].as_f64().unwrap();
                let adaptive = figures["CLOCK-Pro (reference, adaptive)"].as_f64().unwrap();
                worst = worst.max(miss - adaptive);
                eprintln!(
                    "{policy:>12} {trace:>16} {capacity:>6}: miss {miss:.4} reference {adaptive:.4} gap {:+.4} l2 hits {}",
                    miss - adaptive,
                    r["l2_hits"]
                );
                cases += 1;
            }
        }
        eprintln!("{policy}: worst gap to the reference at combined capacity {worst:+.4}");
    }
    assert!(cases >= 20, "too few tiered cases");
}
