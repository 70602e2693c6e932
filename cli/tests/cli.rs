//! The `larder` tool: bad input is a clear error with a non-zero exit, never a panic.

mod support;

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
fn replay_reports_the_hot_keys() {
    // Key 7 in every other request, 3 in one of ten, the rest spread.
    let text: String = (0..40_000u32)
        .map(|i| match i % 10 {
            0 | 2 | 4 | 6 | 8 => "7\n".to_string(),
            1 => "3\n".to_string(),
            _ => format!("{}\n", 100 + i),
        })
        .collect();
    let t = trace_file(&text);
    let out = larder(&[
        "replay",
        "--trace",
        t.as_str(),
        "--capacity",
        "1000",
        "--json",
        "--hot-keys",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hot = v["hot_keys"].as_array().unwrap();
    assert_eq!(hot.len(), 2, "{v}");
    assert_eq!(hot[0]["key"], "7");
    assert_eq!(hot[1]["key"], "3");
    assert!(hot[0]["requests"].as_u64().unwrap() > hot[1]["requests"].as_u64().unwrap());
    // Without the flag, nothing is tracked or reported.
    let out = larder(&[
        "replay",
        "--trace",
        t.as_str(),
        "--capacity",
        "1000",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.get("hot_keys").is_none());
}

/// A tiered replay with direct writes: every hit right, the flag reported,
/// and a reopen of the same directory finds what the first run wrote.
#[test]
fn replay_with_direct_writes() {
    let keys: String = (0..3000).map(|i| format!("{}\n", i % 1200)).collect();
    let t = trace_file(&keys);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let run = || {
        let out = larder(&[
            "replay",
            "--trace",
            t.as_str(),
            "--capacity",
            "100",
            "--disk-dir",
            d,
            "--disk-capacity",
            "1048576",
            "--segment-size",
            "65536",
            "--direct-writes",
            "--json",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = run();
    assert_eq!(first["wrong_values"], 0);
    assert_eq!(first["disk"]["direct_writes"], true, "{first}");
    assert!(first["l2_hits"].as_u64().unwrap() > 0, "{first}");
    assert!(first["disk_bytes_written"].as_u64().unwrap() > 0, "{first}");
    assert!(first["disk"]["write_s"].as_f64().unwrap() > 0.0, "{first}");
    // Segment images in chunks of an eighth of a 64 KiB segment, at least one.
    assert!(
        first["disk"]["buffer_bytes"].as_u64().unwrap() >= 8192,
        "{first}"
    );
    let second = run();
    assert_eq!(second["wrong_values"], 0);
    assert!(
        second["hits"].as_u64().unwrap() > first["hits"].as_u64().unwrap(),
        "a warm reopen hits more: {first} then {second}"
    );
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
        "hot keys",
        "L2 hits",
        "L2 disk",
        "L2 writes",
        "L2 health",
        "restart: close, then reopen",
        "checkpoint Used",
        "before the restart",
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

/// Every file of a directory with its bytes: to prove a command changed nothing.
fn snapshot(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| (e.path(), std::fs::read(e.path()).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn verify_reports_corruption_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("l2");
    let cache = larder::Cache::builder()
        .memory_capacity(50)
        .unit_weight()
        .disk(&disk, 16 * (64 << 10))
        .segment_size(64 << 10)
        .build()
        .unwrap();
    for key in 0..2000u32 {
        cache
            .insert(&key.to_le_bytes(), vec![key as u8; 200])
            .unwrap();
    }
    cache.close().unwrap();
    let d = disk.to_str().unwrap();

    let before = snapshot(&disk);
    let out = larder(&["verify", "--disk-dir", d, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["clean"], true, "{r}");
    assert_eq!(r["checkpoint"], "valid", "{r}");
    assert!(r["live_entries"].as_u64().unwrap() > 500, "{r}");
    assert_eq!(snapshot(&disk), before, "verify changed the directory");

    // A flipped bit in a record of a sealed segment.
    let segments = support::segment_files(&disk);
    let mut bytes = std::fs::read(&segments[0]).unwrap();
    bytes[64 + 40] ^= 0x10;
    std::fs::write(&segments[0], &bytes).unwrap();
    let before = snapshot(&disk);
    let out = larder(&["verify", "--disk-dir", d, "--json"]);
    assert!(!out.status.success(), "a corrupt directory must fail");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["clean"], false, "{r}");
    assert_eq!(r["corrupt_records"], 1, "{r}");
    assert!(stderr(&out).contains("corrupt"), "{}", stderr(&out));
    assert_eq!(snapshot(&disk), before, "verify changed the directory");
    let text = larder(&["verify", "--disk-dir", d]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("CORRUPT"));

    // A damaged checkpoint is corruption too; a missing directory a clear error.
    std::fs::write(&segments[0], {
        bytes[64 + 40] ^= 0x10;
        &bytes
    })
    .unwrap();
    assert!(larder(&["verify", "--disk-dir", d]).status.success());
    std::fs::write(disk.join("CHECKPOINT"), b"garbage").unwrap();
    let out = larder(&["verify", "--disk-dir", d, "--json"]);
    assert!(!out.status.success());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["checkpoint"], "corrupt", "{r}");
    let out = larder(&["verify", "--disk-dir", "/nonexistent/larder"]);
    assert_clean_failure(&out, "MANIFEST");
}

/// `--read-path` chooses how sealed segments are read, and the JSON says
/// which; both read every value right.
#[test]
fn replay_reads_through_maps_or_pread() {
    let keys: String = (0..4000).map(|i| format!("{}\n", i % 1500)).collect();
    let t = trace_file(&keys);
    for (flag, maps) in [(None, true), (Some("pread"), false), (Some("mmap"), true)] {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec![
            "replay",
            "--trace",
            t.as_str(),
            "--capacity",
            "100",
            "--disk-dir",
            dir.path().to_str().unwrap(),
            "--disk-capacity",
            "1048576",
            "--segment-size",
            "65536",
            "--json",
        ];
        if let Some(flag) = flag {
            args.extend(["--read-path", flag]);
        }
        let out = larder(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["wrong_values"], 0);
        assert!(report["l2_hits"].as_u64().unwrap() > 0, "{report}");
        let want = flag.unwrap_or("mmap");
        assert_eq!(report["disk"]["read_path"], want, "{report}");
        assert_eq!(
            report["disk"]["maps"].as_u64().unwrap() > 0,
            maps,
            "{report}"
        );
    }
    let out = larder(&[
        "replay",
        "--trace",
        t.as_str(),
        "--capacity",
        "100",
        "--disk-dir",
        "/tmp/x",
        "--disk-capacity",
        "1048576",
        "--read-path",
        "mmapp",
    ]);
    assert!(!out.status.success(), "a bad read path is refused");
}
