//! `larder stats --metrics-addr`: the library's metrics, served in the
//! Prometheus text format, scraped over HTTP and parsed; the documented
//! names are there, with the directory's values.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `name{labels}` → value, from a Prometheus text exposition.
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn scrape(addr: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!("status: {head}")));
    }
    Ok(body.to_string())
}

#[test]
fn the_prometheus_endpoint_serves_the_documented_metrics_with_their_values() {
    let dir = tempfile::tempdir().unwrap();
    let cache = larder::Cache::builder()
        .memory_capacity(64 << 10)
        .disk(dir.path(), 16 << 20)
        .segment_size(1 << 20)
        .build()
        .unwrap();
    for key in 0..3_000u32 {
        cache
            .insert(&key.to_le_bytes(), vec![key as u8; 200])
            .unwrap();
    }
    cache.close().unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_larder"))
        .args(["stats", "--disk-dir", dir.path().to_str().unwrap()])
        .args([
            "--disk-mib",
            "16",
            "--segment-mib",
            "1",
            "--memory-mib",
            "4",
        ])
        .args(["--metrics-addr", &addr, "--for-secs", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("serving metrics"), "{line:?}");

    let start = Instant::now();
    let metrics = loop {
        match scrape(&addr) {
            Ok(body) if body.contains("larder_disk_segments") => break parse(&body),
            _ if start.elapsed() > Duration::from_secs(20) => panic!("no metrics at {addr}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let _ = child.kill();
    let _ = child.wait();

    let get = |series: &str| {
        *metrics
            .get(series)
            .unwrap_or_else(|| panic!("{series} missing from {metrics:?}"))
    };
    assert_eq!(get("larder_entries{tier=\"disk\"}"), 3_000.0);
    assert_eq!(
        get("larder_capacity{tier=\"memory\"}"),
        f64::from(4u32 << 20)
    );
    assert_eq!(
        get("larder_capacity{tier=\"disk\"}"),
        f64::from(16u32 << 20)
    );
    assert_eq!(get("larder_disk_failed"), 0.0);
    assert_eq!(get("larder_removals_pending"), 0.0, "no listener");
    assert_eq!(get("larder_disk_corrupt_records_total"), 0.0);
    assert_eq!(get("larder_misses_total"), 0.0, "nothing was looked up");
    assert!(get("larder_disk_segments") >= 1.0);
    for name in [
        "larder_hits_total{tier=\"memory\"}",
        "larder_hits_total{tier=\"disk\"}",
        "larder_inserts_total",
        "larder_updates_total",
        "larder_removes_total",
        "larder_expirations_total",
        "larder_loads_total",
        "larder_evictions_total{tier=\"memory\"}",
        "larder_entries{tier=\"memory\"}",
        "larder_weight{tier=\"memory\"}",
        "larder_disk_bytes_written_total",
        "larder_disk_records_written_total",
        "larder_disk_refused_writes_total",
        "larder_disk_compression_paced_total",
        "larder_disk_faulted_segments_total",
        "larder_disk_reclaimed_segments_total",
        "larder_disk_queued_segments",
        "larder_latency_seconds{op=\"get\",quantile=\"0.99\"}",
        "larder_latency_seconds{op=\"load\",quantile=\"0.5\"}",
    ] {
        get(name);
    }
}

#[test]
fn stats_of_a_missing_directory_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_larder"))
        .args(["stats", "--disk-dir", "/nonexistent/larder"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no such directory") && !err.contains("panicked"),
        "{err}"
    );
}
