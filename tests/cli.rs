//! The `larder` tool: bad input is a clear error with a non-zero exit, never a panic.

use std::io::Write;
use std::process::{Command, Output};

fn larder(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_larder"))
        .args(args)
        .output()
        .expect("run larder")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_clean_failure(out: &Output, needle: &str) {
    assert!(!out.status.success(), "expected failure, got {out:?}");
    let err = stderr(out);
    assert!(
        err.contains(needle),
        "stderr {err:?} should mention {needle:?}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
}

fn trace_file(text: &str) -> tempfile_free::TempPath {
    tempfile_free::TempPath::with(text)
}

/// A temporary file without another dependency: removed on drop.
mod tempfile_free {
    pub struct TempPath(pub std::path::PathBuf);
    impl TempPath {
        pub fn with(text: &str) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "larder-cli-{}-{}.txt",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let mut f = std::fs::File::create(&path).unwrap();
            super::Write::write_all(&mut f, text.as_bytes()).unwrap();
            TempPath(path)
        }
        pub fn as_str(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[test]
fn replay_reports_json() {
    let t = trace_file("# a comment\n1\n2\n1,extra\n\n3 x\n1\n");
    let out = larder(&[
        "replay",
        "--trace",
        t.as_str(),
        "--capacity",
        "10",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["requests"], 5);
    assert_eq!(v["hits"], 2);
    assert_eq!(v["misses"], 3);
    assert_eq!(v["wrong_values"], 0);
    assert!((v["miss_ratio"].as_f64().unwrap() - 0.6).abs() < 1e-12);
    assert!(v["elapsed_s"].as_f64().unwrap() >= 0.0);
}

#[test]
fn replay_rejects_bad_input() {
    let missing = larder(&["replay", "--trace", "/no/such/trace", "--capacity", "10"]);
    assert_clean_failure(&missing, "cannot read trace");

    let empty = trace_file("# only comments\n\n");
    let out = larder(&["replay", "--trace", empty.as_str(), "--capacity", "10"]);
    assert_clean_failure(&out, "no requests");

    let t = trace_file("1\n");
    let out = larder(&["replay", "--trace", t.as_str(), "--capacity", "0"]);
    assert_clean_failure(&out, "capacity");

    let out = larder(&[
        "replay",
        "--trace",
        t.as_str(),
        "--capacity",
        "8",
        "--shards",
        "3",
    ]);
    assert_clean_failure(&out, "power of two");

    let out = larder(&["replay", "--trace", t.as_str(), "--capacity", "-5"]);
    assert_clean_failure(&out, "--capacity");

    let out = larder(&["replay", "--capacity", "5"]);
    assert_clean_failure(&out, "--trace");

    let out = larder(&["frobnicate"]);
    assert_clean_failure(&out, "frobnicate");
}

#[test]
fn demo_prints_a_summary() {
    let out = larder(&[
        "demo",
        "--requests",
        "20000",
        "--keys",
        "5000",
        "--memory-mib",
        "1",
        "--disk-mib",
        "3",
        "--segment-mib",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for row in [
        "hits",
        "misses",
        "hit ratio",
        "throughput",
        "latency p99",
        "L1 memory",
        "L1 hits",
        "L2 hits",
        "L2 disk",
        "L2 writes",
        "L2 health",
    ] {
        assert!(text.contains(row), "summary lacks {row:?}:\n{text}");
    }
    let l2_hits: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("L2 hits"))
        .and_then(|v| v.trim().parse().ok())
        .expect("an L2 hits count");
    assert!(l2_hits > 0, "the disk tier served nothing:\n{text}");
    assert!(text.contains("healthy"), "{text}");
    let memory_only = larder(&[
        "demo",
        "--requests",
        "2000",
        "--keys",
        "500",
        "--disk-mib",
        "0",
    ]);
    assert!(memory_only.status.success(), "{}", stderr(&memory_only));
    assert!(String::from_utf8_lossy(&memory_only.stdout).contains("none (--disk-mib 0)"));
    let bad = larder(&["demo", "--zipf=-1"]);
    assert_clean_failure(&bad, "Zipf");
    let bad = larder(&["demo", "--memory-mib", "1", "--value-size", "4000000"]);
    assert_clean_failure(&bad, "more than one shard can hold");
    let bad = larder(&["demo", "--keys", "0"]);
    assert_clean_failure(&bad, "at least 1");
    let bad = larder(&["demo", "--disk-dir", "/dev/null/x"]);
    assert_clean_failure(&bad, "cannot create /dev/null/x");
    let bad = larder(&["demo", "--disk-mib", "1"]);
    assert_clean_failure(&bad, "at least 3 segments");
}
