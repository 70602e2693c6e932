//! The commands on keys: `SCAN` over both tiers (every key present for the
//! whole scan exactly once, while others move between the tiers), the
//! empty key, the expiry family, `OBJECT FREQ`, `MEMORY USAGE` and
//! `LARDER.INVALIDATE`.

use larder::{Cache, WritePolicy};
use larder_server::ServeConfig;
use larder_server::scans::MAX_SCANS;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

mod support;
use support::{Client, Server};

fn tiered(dir: &Path, policy: WritePolicy) -> Cache {
    Cache::builder()
        .memory_capacity(64 << 10)
        .disk(dir, 16 << 20)
        .segment_size(256 << 10)
        .write_policy(policy)
        .track_hot_keys()
        .build()
        .unwrap()
}

/// The keys of a reply `*2 [$n cursor, *k [$a key, …]]`, and the cursor.
fn page(reply: &str) -> (String, Vec<String>) {
    let body = reply
        .strip_prefix("*2 [")
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or_else(|| panic!("not a SCAN reply: {reply}"));
    let (cursor, keys) = body.split_once(", ").unwrap();
    let cursor = cursor.split_once(' ').unwrap().1.to_string();
    let keys = keys
        .strip_prefix('*')
        .and_then(|k| {
            k.split_once(" [")
                .map(|(_, rest)| rest.trim_end_matches(']'))
        })
        .unwrap_or("");
    let keys = keys
        .split(", ")
        .filter(|k| !k.is_empty())
        .map(|k| k.split_once(' ').unwrap().1.to_string())
        .collect();
    (cursor, keys)
}

/// Every key of a full scan, and how many times each came.
fn scan_all(c: &mut Client, extra: &[&str]) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    let mut cursor = "0".to_string();
    loop {
        let mut args = vec!["SCAN", cursor.as_str()];
        args.extend_from_slice(extra);
        let (next, keys) = page(&c.call(&args));
        for k in keys {
            *seen.entry(k).or_insert(0) += 1;
        }
        if next == "0" {
            return seen;
        }
        cursor = next;
    }
}

#[test]
fn scan_returns_each_key_of_both_tiers_once_while_others_move() {
    for policy in [WritePolicy::WriteBehind, WritePolicy::Demote] {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::over(tiered(dir.path(), policy), None, ServeConfig::default());
        let cache = server.cache.clone();
        let stable: Vec<String> = (0..2_000).map(|i| format!("stable:{i}")).collect();
        for k in &stable {
            cache.insert(k.as_bytes(), vec![7; 64]).unwrap();
        }
        assert!(
            cache.stats().memory.entries < 2_000,
            "some are on disk only"
        );
        let mut c = server.connect();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) && i < 500_000 {
                    // Inserts push stable keys to disk; reads promote them.
                    let churn = format!("churn:{}", i % 3_000);
                    cache.insert(churn.as_bytes(), vec![1; 80]).unwrap();
                    cache.get(format!("stable:{}", (i * 7) % 2_000).as_bytes());
                    i += 1;
                }
            });
            for count in ["7", "100"] {
                let seen = scan_all(&mut c, &["COUNT", count]);
                for (k, n) in &seen {
                    assert_eq!(*n, 1, "{policy:?}: {k} came {n} times");
                }
                for k in &stable {
                    // Under Demote a stable key may leave the disk for good.
                    let kept = policy == WritePolicy::WriteBehind || cache.contains(k.as_bytes());
                    assert!(!kept || seen.contains_key(k), "{policy:?}: {k} missed");
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
        // MATCH filters the keys walked; the scan still ends.
        let seen = scan_all(&mut c, &["MATCH", "stable:1?", "COUNT", "50"]);
        let want: Vec<String> = (10..20).map(|i| format!("stable:{i}")).collect();
        let held: Vec<&String> = want
            .iter()
            .filter(|k| cache.contains(k.as_bytes()))
            .collect();
        assert_eq!(seen.keys().collect::<Vec<_>>(), held, "{policy:?}");
        assert!(scan_all(&mut c, &["TYPE", "hash"]).is_empty());
    }
}

#[test]
fn scan_cursors_are_checked_and_bounded() {
    let server = Server::start(None, ServeConfig::default());
    let mut c = server.connect();
    for i in 0..100 {
        c.call(&["SET", &format!("k{i}"), "v"]);
    }
    assert_eq!(c.call(&["SCAN", "x"]), "-ERR invalid cursor");
    assert_eq!(c.call(&["SCAN", "12345"]), "-ERR invalid cursor");
    assert_eq!(c.call(&["SCAN", "0", "COUNT", "0"]), "-ERR syntax error");
    assert_eq!(
        c.call(&["SCAN", "0", "COUNT", "x"]),
        "-ERR value is not an integer or out of range"
    );
    assert_eq!(c.call(&["SCAN", "0", "MATCH"]), "-ERR syntax error");
    // The oldest of more than MAX_SCANS open walks is dropped, and says so.
    let first = page(&c.call(&["SCAN", "0", "COUNT", "1"])).0;
    for _ in 0..MAX_SCANS {
        let (next, keys) = page(&c.call(&["SCAN", "0", "COUNT", "1"]));
        assert!(next != "0" && keys.len() == 1);
    }
    assert_eq!(c.call(&["SCAN", &first]), "-ERR invalid cursor");
    // A finished walk is not kept.
    let seen = scan_all(&mut c, &["COUNT", "1000"]);
    assert_eq!(seen.len(), 100);
}

#[test]
fn the_empty_key_and_keys_starting_with_a_zero_byte_are_keys_of_their_own() {
    let server = Server::start(None, ServeConfig::default());
    let mut c = server.connect();
    let keys: [&[u8]; 4] = [b"", b"\0", b"\0\0", b"\0a"];
    for (i, k) in keys.iter().enumerate() {
        c.send(&[b"SET", k, format!("v{i}").as_bytes()]);
        assert_eq!(c.reply(), "+OK");
    }
    for (i, k) in keys.iter().enumerate() {
        c.send(&[b"GET", k]);
        assert_eq!(c.reply(), format!("$2 v{i}"));
    }
    c.send(&[b"MGET", b"", b"\0a", b"a"]);
    assert_eq!(c.reply(), "*3 [$2 v0, $2 v3, nil]");
    assert_eq!(c.call(&["GET", "a"]), "nil", "no key met another");
    let seen = scan_all(&mut c, &[]);
    let want: BTreeMap<String, usize> = keys
        .iter()
        .map(|k| (String::from_utf8_lossy(k).into_owned(), 1))
        .collect();
    assert_eq!(seen, want, "SCAN gives the keys as the client wrote them");
    c.send(&[b"DEL", b"", b"\0"]);
    assert_eq!(c.reply(), ":2");
    c.send(&[b"EXISTS", b"", b"\0", b"\0\0"]);
    assert_eq!(c.reply(), ":1");
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn the_expiry_family_sets_keeps_and_clears_deadlines() {
    let server = Server::start(None, ServeConfig::default());
    let mut c = server.connect();
    let at = (now_s() + 200).to_string();
    c.call(&["SET", "k", "v"]);
    assert_eq!(c.call(&["EXPIREAT", "k", &at]), ":1");
    let ttl: i64 = c.call(&["TTL", "k"])[1..].parse().unwrap();
    assert!((198..=200).contains(&ttl), "{ttl}");
    assert_eq!(c.call(&["EXPIREAT", "nope", &at]), ":0");
    // NX: only without a deadline; XX: only with one; GT/LT: later/earlier.
    assert_eq!(c.call(&["EXPIRE", "k", "500", "NX"]), ":0");
    assert_eq!(c.call(&["EXPIRE", "k", "500", "XX"]), ":1");
    assert_eq!(c.call(&["EXPIRE", "k", "100", "GT"]), ":0");
    assert_eq!(c.call(&["EXPIRE", "k", "100", "LT"]), ":1");
    assert_eq!(c.call(&["TTL", "k"]), ":100");
    assert_eq!(c.call(&["PERSIST", "k"]), ":1");
    assert_eq!(
        c.call(&["EXPIRE", "k", "100", "GT"]),
        ":0",
        "no deadline is forever"
    );
    assert_eq!(c.call(&["EXPIRE", "k", "100", "LT"]), ":1");
    assert_eq!(
        c.call(&["EXPIRE", "k", "1", "NX", "XX"]),
        "-ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    assert_eq!(
        c.call(&["EXPIRE", "k", "1", "GT", "LT"]),
        "-ERR GT and LT options at the same time are not compatible"
    );
    assert_eq!(
        c.call(&["EXPIRE", "k", "1", "SOON"]),
        "-ERR Unsupported option SOON"
    );
    assert_eq!(
        c.call(&["EXPIRE", "k", "9223372036854775807"]),
        "-ERR invalid expire time in 'expire' command"
    );
    let pat = ((now_s() + 50) * 1000).to_string();
    assert_eq!(c.call(&["PEXPIREAT", "k", &pat]), ":1");
    let pttl: i64 = c.call(&["PTTL", "k"])[1..].parse().unwrap();
    assert!((48_000..=50_000).contains(&pttl), "{pttl}");
    // A deadline already past removes the key.
    assert_eq!(c.call(&["EXPIREAT", "k", "1"]), ":1");
    assert_eq!(c.call(&["EXISTS", "k"]), ":0");

    c.call(&["SET", "g", "v"]);
    assert_eq!(c.call(&["GETEX", "g", "EX", "100"]), "$1 v");
    assert_eq!(c.call(&["TTL", "g"]), ":100");
    assert_eq!(c.call(&["GETEX", "g"]), "$1 v");
    assert_eq!(
        c.call(&["TTL", "g"]),
        ":100",
        "GETEX alone keeps the deadline"
    );
    assert_eq!(c.call(&["GETEX", "g", "PERSIST"]), "$1 v");
    assert_eq!(c.call(&["TTL", "g"]), ":-1");
    assert_eq!(
        c.call(&["GETEX", "g", "EX", "0"]),
        "-ERR invalid expire time in 'getex' command"
    );
    assert_eq!(c.call(&["GETEX", "g", "EX"]), "-ERR syntax error");
    assert_eq!(c.call(&["GETEX", "nope", "EX", "x"]), "nil");
    assert_eq!(c.call(&["GETEX", "g", "PXAT", "1"]), "$1 v");
    assert_eq!(c.call(&["EXISTS", "g"]), ":0", "a past deadline removes it");

    c.call(&["MSET", "a", "1", "b", "2"]);
    assert_eq!(c.call(&["TOUCH", "a", "b", "nope"]), ":2");
}

#[test]
fn object_freq_ranks_by_requests_and_memory_usage_weighs_the_entry() {
    let cache = Cache::builder()
        .memory_capacity(8 << 20)
        .track_hot_keys()
        .build()
        .unwrap();
    let server = Server::over(cache, None, ServeConfig::default());
    let mut c = server.connect();
    c.call(&["SET", "hot", "v"]);
    c.call(&["SET", "cold", "v"]);
    for _ in 0..4_000 {
        server.cache.get(b"hot");
    }
    let hot: i64 = c.call(&["OBJECT", "FREQ", "hot"])[1..].parse().unwrap();
    let cold: i64 = c.call(&["OBJECT", "FREQ", "cold"])[1..].parse().unwrap();
    assert!(hot >= 3_000 && cold < 100, "hot {hot}, cold {cold}");
    assert_eq!(c.call(&["OBJECT", "FREQ", "nope"]), "nil");
    assert_eq!(c.call(&["OBJECT", "ENCODING", "hot"]), "$6 embstr");
    let usage = c.call(&["MEMORY", "USAGE", "hot"]);
    assert_eq!(usage, format!(":{}", 3 + 1 + larder::ENTRY_OVERHEAD));
    assert_eq!(c.call(&["MEMORY", "USAGE", "nope"]), "nil");
    assert!(
        c.call(&["MEMORY", "DOCTOR"])
            .starts_with("-ERR unknown subcommand")
    );

    // Without hot-key detection, Redis's own error for a non-LFU server.
    let plain = Server::start(None, ServeConfig::default());
    let mut c = plain.connect();
    c.call(&["SET", "k", "v"]);
    assert!(
        c.call(&["OBJECT", "FREQ", "k"])
            .starts_with("-ERR An LFU maxmemory policy")
    );
}

#[test]
fn larder_invalidate_removes_a_tag_or_a_pattern_from_both_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::over(
        tiered(dir.path(), WritePolicy::WriteBehind),
        None,
        ServeConfig::default(),
    );
    let mut c = server.connect();
    let tagged = ["{u1}:a", "{u1}:b", "x{u1}y"];
    let others = ["{u2}:a", "u1", "{}u1", "{u1"];
    for k in tagged.iter().chain(&others) {
        c.call(&["SET", k, "v"]);
    }
    // Filler pushes most of them out of memory.
    for i in 0..2_000 {
        c.call(&["SET", &format!("fill:{i}"), &"f".repeat(64)]);
    }
    assert_eq!(c.call(&["LARDER.INVALIDATE", "TAG", "u1"]), ":3");
    for k in tagged {
        assert_eq!(c.call(&["GET", k]), "nil", "{k}");
        assert!(!server.cache.contains(k.as_bytes()));
    }
    for k in others {
        assert_eq!(c.call(&["GET", k]), "$1 v", "{k}");
    }
    assert_eq!(c.call(&["LARDER.INVALIDATE", "MATCH", "fill:1*"]), ":1111");
    assert_eq!(c.call(&["GET", "fill:1"]), "nil");
    assert_eq!(
        c.call(&["GET", "fill:2"]),
        format!("$64 {}", "f".repeat(64))
    );
    assert_eq!(
        c.call(&["LARDER.INVALIDATE", "ALL", "x"]),
        "-ERR syntax error"
    );
}
