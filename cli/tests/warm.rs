//! `larder warm`: a key list loaded from a real SQLite file into a disk
//! tier's directory, which the next open finds warm; bad input is a clear
//! error.

use std::process::{Command, Output};

fn larder(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_larder"))
        .args(args)
        .output()
        .expect("run larder")
}

#[test]
fn warm_loads_the_listed_keys_into_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("CREATE TABLE items (key BLOB PRIMARY KEY, value BLOB NOT NULL)")
        .unwrap();
    for i in 0..2_000u32 {
        conn.execute(
            "INSERT INTO items VALUES (?1, ?2)",
            rusqlite::params![
                format!("item:{i}").into_bytes(),
                format!("value {i}").into_bytes()
            ],
        )
        .unwrap();
    }
    drop(conn);
    let keys = dir.path().join("keys.txt");
    let mut list = String::from("# the catalog's hot items\n\n");
    for i in 0..1_500u32 {
        list.push_str(&format!("item:{i}\n"));
    }
    list.push_str("item:missing\n");
    std::fs::write(&keys, list).unwrap();
    let cache_dir = dir.path().join("cache");
    let d = cache_dir.to_str().unwrap();
    let out = larder(&[
        "warm",
        "--keys",
        keys.to_str().unwrap(),
        "--sqlite",
        db.to_str().unwrap(),
        "--table",
        "items",
        "--disk-dir",
        d,
        "--disk-mib",
        "16",
        "--segment-mib",
        "1",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("warmed 1501 of 1501 keys: 1500 inserted, 0 already cached, 1 not in items"),
        "{text}"
    );
    // The directory is closed cleanly and holds the values.
    let cache = larder::Cache::builder()
        .memory_capacity(1 << 20)
        .disk(&cache_dir, 16 << 20)
        .build()
        .unwrap();
    assert_eq!(
        cache.stats().disk.unwrap().recovery.checkpoint,
        larder::CheckpointStatus::Used
    );
    for i in 0..1_500u32 {
        let v = cache.get(format!("item:{i}").as_bytes()).unwrap();
        assert_eq!(v, format!("value {i}").into_bytes());
    }
    assert!(cache.get(b"item:1500").is_none(), "not listed, not warmed");
    cache.close().unwrap();
}

#[test]
fn warm_with_missing_files_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("cache");
    let keys = dir.path().join("keys.txt");
    std::fs::write(&keys, "a\n").unwrap();
    for (args, needle) in [
        (
            vec!["--keys", "/nonexistent/keys", "--sqlite", "x.db"],
            "/nonexistent/keys",
        ),
        (
            vec![
                "--keys",
                keys.to_str().unwrap(),
                "--sqlite",
                "/nonexistent.db",
            ],
            "no such database",
        ),
    ] {
        let mut all = vec!["warm"];
        all.extend(args);
        all.extend(["--disk-dir", d.to_str().unwrap()]);
        let out = larder(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(needle), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
