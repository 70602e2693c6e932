//! `larder serve` as a process: it says where it listens, answers RESP,
//! refuses bad flags, closes its cache cleanly on SIGTERM (the next start
//! is warm), and serves unmodified Redis tools (`redis-cli`,
//! `redis-benchmark`, redis-py) when they are installed: `.ci/run` installs
//! them and sets `LARDER_REQUIRE_REDIS_TOOLS=1` and
//! `LARDER_REQUIRE_REDIS_PY=1`, which make their absence a failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Serving {
    child: Child,
    addr: String,
}

impl Serving {
    fn start(extra: &[&str]) -> Serving {
        let mut child = Command::new(env!("CARGO_BIN_EXE_larder"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(
                if extra.contains(&"--memory-mib") || extra.contains(&"--memory") {
                    &[][..]
                } else {
                    &["--memory-mib", "16"][..]
                },
            )
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run larder serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line.trim().rsplit(' ').next().unwrap().to_string();
        assert!(line.starts_with("larder serving on "), "{line:?}");
        Serving { child, addr }
    }

    fn call(&self, request: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        s.write_all(b"QUIT\r\n").unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        out.truncate(out.len().saturating_sub(5)); // QUIT's +OK
        out
    }

    /// SIGTERM, then the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        self.child.wait().unwrap()
    }
}

/// A test that fails before `stop` leaves no server behind (a running one
/// holds the test's inherited stderr, and the test run would wait on it).
impl Drop for Serving {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn it_serves_and_a_sigterm_closes_the_cache_so_the_next_start_is_warm() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let disk = ["--disk-dir", d, "--disk-mib", "64", "--segment-mib", "1"];
    let server = Serving::start(&disk);
    let mut batch = Vec::new();
    for i in 0..500 {
        batch.extend_from_slice(format!("SET key:{i} value-{i}\r\n").as_bytes());
    }
    let replies = server.call(&batch);
    assert_eq!(replies, b"+OK\r\n".repeat(500));
    assert!(server.stop().success(), "a clean exit on SIGTERM");

    // The same settings spelled as sizes, and `--dir` for `--disk-dir`.
    let sized = ["--dir", d, "--disk-capacity", "64MiB", "--segment-mib", "1"];
    let server = Serving::start(&[&sized[..], &["--memory", "16m"]].concat());
    let mut gets = Vec::new();
    let mut expected = Vec::new();
    for i in 0..500 {
        gets.extend_from_slice(format!("GET key:{i}\r\n").as_bytes());
        let v = format!("value-{i}");
        expected.extend_from_slice(format!("${}\r\n{v}\r\n", v.len()).as_bytes());
    }
    let got = String::from_utf8(server.call(&gets)).unwrap();
    assert_eq!(got, String::from_utf8(expected).unwrap(), "every key back");
    let info = String::from_utf8(server.call(b"INFO persistence\r\n")).unwrap();
    assert!(info.contains("larder_disk_tier:1"), "{info}");
    assert!(server.stop().success());
}

#[test]
fn bad_flags_are_clear_errors() {
    for (args, needle) in [
        (
            &["serve", "--listen", "nowhere"][..],
            "invalid socket address",
        ),
        (&["serve", "--memory-mib", "0"][..], "--memory-mib"),
        (&["serve", "--max-clients", "0"][..], "--max-clients"),
        (&["serve", "--disk-mib", "64"][..], "--disk-dir"),
        (&["serve", "--threads", "0"][..], "--threads"),
        (&["serve", "--memory", "lots"][..], "not a size"),
        (&["serve", "--memory", "5q"][..], "not a unit"),
        (&["serve", "--memory", "0"][..], "at least 1 MiB"),
        (
            &["serve", "--memory", "1m", "--memory-mib", "2"][..],
            "cannot be used with",
        ),
        (&["serve", "--compression-budget", "0.5"][..], "--disk-dir"),
        (
            &[
                "serve",
                "--disk-dir",
                "/tmp/x",
                "--compression-budget",
                "lots",
            ][..],
            "invalid float",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_larder"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // A budget the library refuses, named in the error.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_larder"))
        .args(["serve", "--listen", "127.0.0.1:0", "--memory-mib", "16"])
        .arg("--disk-dir")
        .arg(dir.path())
        .args(["--disk-mib", "64", "--compression-budget", "-1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("compression budget"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // A port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_larder"))
        .args(["serve", "--listen", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot listen"),
        "{out:?}"
    );
}

/// The path of `tool`, or `None` (a failure if CI said they are installed).
fn tool(name: &str) -> Option<String> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string());
    if found.is_none() {
        assert!(
            std::env::var_os("LARDER_REQUIRE_REDIS_TOOLS").is_none(),
            "{name} is not installed, and LARDER_REQUIRE_REDIS_TOOLS is set"
        );
        eprintln!("skipped: {name} is not installed (Debian's redis-tools)");
    }
    found
}

#[test]
fn redis_cli_and_redis_benchmark_work_unmodified() {
    let (Some(cli), Some(bench)) = (tool("redis-cli"), tool("redis-benchmark")) else {
        return;
    };
    let server = Serving::start(&[]);
    let (host, port) = server.addr.rsplit_once(':').unwrap();
    let run = |tool: &str, args: &[&str]| {
        let out = Command::new(tool)
            .args(["-h", host, "-p", port])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{tool} {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(run(&cli, &["SET", "greeting", "hello"]).trim(), "OK");
    assert_eq!(run(&cli, &["GET", "greeting"]).trim(), "hello");
    assert_eq!(run(&cli, &["INCRBY", "n", "5"]).trim(), "5");
    assert!(run(&cli, &["INFO"]).contains("redis_version:"));
    assert_eq!(
        run(&cli, &["--no-raw", "-3", "GET", "nope"]).trim(),
        "(nil)"
    );
    assert_eq!(run(&cli, &["--no-raw", "GET", "nope"]).trim(), "(nil)");
    // --scan walks every key once; --hotkeys ranks them by OBJECT FREQ.
    for i in 0..500 {
        run(&cli, &["SET", &format!("scan:{i}"), "v"]);
    }
    let scanned = run(&cli, &["--scan", "--pattern", "scan:*"]);
    let mut keys: Vec<&str> = scanned.lines().collect();
    keys.sort();
    let mut want: Vec<String> = (0..500).map(|i| format!("scan:{i}")).collect();
    want.sort();
    assert_eq!(keys, want, "--scan gives each key once");
    let gets = "GET scan:7\n".repeat(3_000);
    let mut piped = Command::new(&cli)
        .args(["-h", host, "-p", port])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    piped
        .stdin
        .take()
        .unwrap()
        .write_all(gets.as_bytes())
        .unwrap();
    assert!(piped.wait().unwrap().success());
    let hot = run(&cli, &["--hotkeys"]);
    let first = hot
        .lines()
        .find(|l| l.starts_with("hot key found with counter"))
        .unwrap_or_else(|| panic!("no hot key in {hot}"));
    assert!(first.ends_with("\"scan:7\""), "the hottest first: {hot}");
    for pipeline in ["1", "16"] {
        let out = run(
            &bench,
            &[
                "-t",
                "ping,set,get,incr,mset",
                "-n",
                "2000",
                "-c",
                "10",
                "-P",
                pipeline,
                "-q",
            ],
        );
        for test in ["PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "MSET"] {
            assert!(
                // "MSET (10 keys): 86956.52 requests per second, ...".
                out.contains(&format!("{test}: ")) || out.contains(&format!("{test} (")),
                "-P {pipeline}: no {test} line in {out}"
            );
        }
        assert!(
            !out.to_lowercase().contains("error")
                && out.matches("requests per second").count() == 6,
            "-P {pipeline}: {out}"
        );
    }
    assert!(server.stop().success());
}

/// redis-py, from PyPI, unmodified: its default RESP3 and protocol=2,
/// plain and transactional pipelines (`tests/clients/redis_py.py`). A
/// failure if `LARDER_REQUIRE_REDIS_PY` is set (as `.ci/run` does) and
/// redis-py cannot be imported.
#[test]
fn redis_py_works_unmodified_in_resp3_and_resp2() {
    let has = Command::new("python3")
        .args(["-c", "import redis"])
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        assert!(
            std::env::var_os("LARDER_REQUIRE_REDIS_PY").is_none(),
            "redis-py is not installed, and LARDER_REQUIRE_REDIS_PY is set"
        );
        eprintln!("skipped: redis-py is not installed (pip install redis)");
        return;
    }
    let server = Serving::start(&[]);
    let (host, port) = server.addr.rsplit_once(':').unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/redis_py.py");
    let out = Command::new("python3")
        .args([script, host, port])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("checks passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(server.stop().success());
}

/// An address on a free local port, for `--metrics-addr`.
fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// Scrapes `/metrics` at `addr` until a body satisfies `ready` (the server
/// publishes every second; at most 5 s); returns the last body.
fn scrape_until(addr: &str, ready: impl Fn(&str) -> bool) -> String {
    let mut body = String::new();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let Ok(mut s) = TcpStream::connect(addr) else {
            continue;
        };
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        body.clear();
        let _ = s.read_to_string(&mut body);
        if ready(&body) {
            break;
        }
    }
    body
}

/// The value of series `name` in a metrics body.
fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_addr_serves_the_cache_and_server_metrics_while_serving() {
    let metrics = free_addr();
    let server = Serving::start(&["--metrics-addr", &metrics]);
    let replies = server.call(b"SET a 1\r\nGET a\r\nGET nope\r\n");
    assert_eq!(replies, b"+OK\r\n$1\r\n1\r\n$-1\r\n");
    let body = scrape_until(&metrics, |b| b.contains("larder_misses_total 1"));
    let value = |name: &str| metric(&body, name).unwrap_or_else(|| panic!("no {name} in {body}"));
    assert_eq!(value("larder_misses_total"), 1.0);
    assert!(
        value("larder_server_commands_total") >= 4.0,
        "SET, GET, GET, QUIT"
    );
    assert!(value("larder_server_connections_total") >= 1.0);
    assert!(body.contains("larder_server_connected_clients"));
    assert!(server.stop().success());
}

/// `--compression-budget` reaches the disk tier: with none, compressible
/// values are stored raw (counted as paced in the metrics); with the
/// default, a trickle of them is compressed (none paced).
#[test]
fn compression_budget_reaches_the_disk_tier() {
    for (budget, paced) in [(Some("0"), 20.0), (None, 0.0)] {
        let dir = tempfile::tempdir().unwrap();
        let metrics = free_addr();
        let disk = dir.path().to_str().unwrap();
        let mut args = vec![
            "--disk-dir",
            disk,
            "--disk-mib",
            "64",
            "--metrics-addr",
            &metrics,
        ];
        if let Some(b) = budget {
            args.extend(["--compression-budget", b]);
        }
        let server = Serving::start(&args);
        let value = "larder keeps hot data close. ".repeat(140);
        let mut request = Vec::new();
        for i in 0..20 {
            let key = format!("k{i:02}");
            write!(
                request,
                "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n",
                key.len(),
                value.len()
            )
            .unwrap();
        }
        assert_eq!(server.call(&request), b"+OK\r\n".repeat(20));
        let body = scrape_until(&metrics, |b| {
            metric(b, "larder_inserts_total") == Some(20.0)
        });
        assert_eq!(
            metric(&body, "larder_inserts_total"),
            Some(20.0),
            "no scrape saw the 20 writes: {body}"
        );
        assert_eq!(
            metric(&body, "larder_disk_compression_paced_total"),
            Some(paced),
            "budget {budget:?}"
        );
        assert!(server.stop().success());
    }
}

/// The process's resident memory, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    kb << 10
}

#[test]
fn memory_per_entry_stays_near_the_librarys_through_the_server() {
    let server = Serving::start(&["--memory-mib", "512"]);
    let pid = server.child.id();
    let before = rss(pid);
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let value = "v".repeat(64);
    // 100,000 SETs of 64-byte values, 100 to a write (read together).
    let mut reply = vec![0; 500];
    for chunk in 0..1_000 {
        let mut batch = String::new();
        for i in 0..100 {
            let k = chunk * 100 + i;
            batch.push_str(&format!(
                "*3\r\n$3\r\nSET\r\n$10\r\nkey:{k:06}\r\n$64\r\n{value}\r\n"
            ));
        }
        s.write_all(batch.as_bytes()).unwrap();
        s.read_exact(&mut reply).unwrap();
        assert_eq!(reply, b"+OK\r\n".repeat(100));
    }
    let grown = rss(pid).saturating_sub(before);
    let per_entry = grown / 100_000;
    eprintln!("{per_entry} bytes of RSS per 64-byte entry");
    // The library's figure is under 200 B per 64-byte entry
    // (docs/benchmarks.md); 197 B measured here.
    assert!(per_entry < 300, "{per_entry} bytes of RSS per entry");
    assert!(server.stop().success());
}

/// An `INFO persistence` field's number.
fn persistence(server: &Serving, field: &str) -> u64 {
    let info = String::from_utf8(server.call(b"INFO persistence\r\n")).unwrap();
    info.split("\r\n")
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {info}"))
        .parse()
        .unwrap()
}

#[test]
fn a_disk_tier_is_synced_every_second_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let server = Serving::start(&["--disk-dir", d, "--disk-mib", "64", "--segment-mib", "1"]);
    assert_eq!(server.call(b"SET k v\r\n"), b"+OK\r\n");
    std::thread::sleep(Duration::from_millis(3_500));
    let syncs = persistence(&server, "larder_syncs");
    assert!((2..=4).contains(&syncs), "{syncs} syncs in 3.5 s");
    assert_eq!(persistence(&server, "larder_syncs_failed"), 0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now - persistence(&server, "larder_last_sync_time") <= 2);
    assert!(server.stop().success());

    let server = Serving::start(&[
        "--disk-dir",
        d,
        "--disk-mib",
        "64",
        "--segment-mib",
        "1",
        "--sync-every",
        "0",
    ]);
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(persistence(&server, "larder_syncs"), 0);
    assert!(server.stop().success());
}
