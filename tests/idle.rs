//! Time to idle: a read starts an entry's idle time again (in either tier),
//! an entry's own TTL stays fixed, and the sliding deadline survives a
//! restart: a session idle for less than its time to idle is readable after
//! reopen, one idle for longer is not.

use larder::{BuildError, Cache, ManualClock};
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);

fn memory_cache(clock: &ManualClock) -> Cache {
    Cache::builder()
        .memory_capacity(1 << 20)
        .time_to_idle(10 * SECOND)
        .clock(clock.clone())
        .build()
        .unwrap()
}

#[test]
fn reads_keep_an_entry_alive_and_idleness_expires_it() {
    let clock = ManualClock::new();
    let cache = memory_cache(&clock);
    cache.insert(b"session", "alice").unwrap();
    for _ in 0..5 {
        clock.advance(8 * SECOND);
        assert!(cache.get(b"session").is_some(), "read within its idle time");
    }
    // 40 s after the insert, 8 s after the last read: 11 s idle is too long.
    clock.advance(11 * SECOND);
    assert!(cache.get(b"session").is_none());

    // Peeks are not reads: they do not keep it alive.
    cache.insert(b"peeked", "x").unwrap();
    clock.advance(8 * SECOND);
    assert!(cache.contains(b"peeked"));
    clock.advance(3 * SECOND);
    assert!(!cache.contains(b"peeked"));

    // A loader's value slides too; an entry's own TTL does not.
    cache.get_with(b"loaded", || "v".into()).unwrap();
    cache.insert_with_ttl(b"fixed", "y", 10 * SECOND).unwrap();
    clock.advance(8 * SECOND);
    assert!(cache.get(b"loaded").is_some() && cache.get(b"fixed").is_some());
    clock.advance(3 * SECOND);
    assert!(cache.get(b"loaded").is_some(), "read 3 s ago");
    assert!(cache.get(b"fixed").is_none(), "its TTL ended 1 s ago");
}

#[test]
fn zero_or_combined_with_a_time_to_live_is_refused() {
    let zero = Cache::builder()
        .memory_capacity(1 << 20)
        .time_to_idle(Duration::ZERO)
        .build();
    assert!(matches!(zero, Err(BuildError::ZeroTimeToIdle)));
    let both = Cache::builder()
        .memory_capacity(1 << 20)
        .time_to_idle(SECOND)
        .time_to_live(SECOND)
        .build();
    assert!(matches!(both, Err(BuildError::TimeToLiveAndIdle)));
}

/// The real clock: deadlines are wall-clock times on disk.
fn open(dir: &std::path::Path, idle: Duration) -> Cache {
    Cache::builder()
        .memory_capacity(64 << 10)
        .disk(dir, 16 << 20)
        .segment_size(256 << 10)
        .time_to_idle(idle)
        .build()
        .unwrap()
}

fn filler(cache: &Cache, from: u32, n: u32) {
    for i in from..from + n {
        cache
            .insert(format!("filler:{i}").as_bytes(), vec![7u8; 200])
            .unwrap();
    }
}

#[test]
fn the_idle_time_holds_across_both_tiers_and_a_restart() {
    const IDLE: Duration = Duration::from_millis(2_000);
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), IDLE);
    let start = Instant::now();
    // read_in_memory: read all along (memory holds it; its disk record keeps
    // its insert's deadline, which passes). evicted: read all along, then
    // pushed out of memory by other entries. on_disk: pushed out first, then
    // read from disk all along. idle: never read.
    for k in ["read_in_memory", "evicted", "on_disk", "idle"] {
        cache.insert(k.as_bytes(), k).unwrap();
    }
    filler(&cache, 0, 2_000); // memory holds 64 KiB: these push the four out
    assert!(cache.stats().memory.entries < 1_000);
    let mut round = 0;
    while start.elapsed() < IDLE + Duration::from_millis(500) {
        for k in ["read_in_memory", "evicted", "on_disk"] {
            assert!(
                cache.get(k.as_bytes()).is_some(),
                "{k} at {:?}",
                start.elapsed()
            );
        }
        if round % 2 == 0 {
            // Keeps read_in_memory and evicted in memory: small enough.
            filler(&cache, 10_000, 20);
        }
        round += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    // Now push `evicted` out: entries read again and again (hot, as it is)
    // take memory, which lets go of it with a deadline past its record's.
    assert!(cache.get(b"evicted").is_some());
    for batch in 0..60u32 {
        let keys: Vec<_> = (0..50).map(|i| format!("hot:{batch}:{i}")).collect();
        for k in &keys {
            cache.insert(k.as_bytes(), vec![1u8; 200]).unwrap();
        }
        for _ in 0..3 {
            for k in &keys {
                cache.get(k.as_bytes());
            }
        }
    }
    assert!(cache.get(b"read_in_memory").is_some());
    cache.close().unwrap();
    assert!(
        start.elapsed() < IDLE * 2,
        "the machine stalled: the idle margins no longer hold"
    );

    let cache = open(dir.path(), IDLE);
    for k in ["read_in_memory", "evicted", "on_disk"] {
        assert_eq!(
            cache.get(k.as_bytes()).as_deref(),
            Some(k.as_bytes()),
            "{k}: idle for less than its time to idle"
        );
    }
    assert!(
        cache.get(b"idle").is_none(),
        "idle for longer than its time to idle"
    );
    cache.close().unwrap();
}

#[test]
fn expire_after_gives_each_entry_its_ttl_and_an_own_ttl_wins() {
    let clock = ManualClock::new();
    let cache = Cache::builder()
        .memory_capacity(1 << 20)
        .time_to_idle(100 * SECOND)
        .expire_after(|key, value| match key {
            [b'o', b't', b'p', ..] => Some(30 * SECOND),
            _ if value.is_empty() => Some(Duration::ZERO),
            _ => None,
        })
        .clock(clock.clone())
        .build()
        .unwrap();
    cache.insert(b"otp:1", "492817").unwrap();
    cache.insert(b"user:1", "alice").unwrap();
    cache.insert(b"empty", "").unwrap();
    cache
        .insert_with_ttl(b"otp:own", "1", 300 * SECOND)
        .unwrap();
    cache.get_with(b"otp:loaded", || "2".into()).unwrap();
    assert!(cache.get(b"empty").is_none(), "a zero TTL expires at once");
    for _ in 0..3 {
        clock.advance(9 * SECOND);
        assert!(cache.get(b"otp:1").is_some(), "within its 30 s");
    }
    clock.advance(4 * SECOND);
    // 31 s: the hook's TTL is fixed (reads did not slide it)...
    assert!(cache.get(b"otp:1").is_none());
    assert!(
        cache.get(b"otp:loaded").is_none(),
        "loads take the hook too"
    );
    // ... while the rest slides with the time to idle, or keeps its own TTL.
    assert!(cache.get(b"user:1").is_some());
    assert!(cache.get(b"otp:own").is_some());
}

#[test]
fn an_expire_after_ttl_holds_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        Cache::builder()
            .memory_capacity(1 << 20)
            .disk(dir.path(), 8 << 20)
            .segment_size(256 << 10)
            .expire_after(|key, _| (key == b"short").then(|| Duration::from_millis(300)))
            .build()
            .unwrap()
    };
    let cache = open();
    cache.insert(b"short", "a").unwrap();
    cache.insert(b"long", "b").unwrap();
    cache.close().unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let cache = open();
    assert!(
        cache.get(b"short").is_none(),
        "its deadline was stored with it"
    );
    assert!(cache.get(b"long").is_some());
    cache.close().unwrap();
}

/// An insert into a full shard first takes out expired entries it sweeps
/// past, so their space goes before any live entry's, though no read ever
/// reaches them: here expired entries that had been read often (hot, which
/// the hands would keep a while) give way to new ones.
#[test]
fn expired_entries_give_their_space_to_new_ones_without_being_read() {
    let clock = ManualClock::new();
    let cache = Cache::builder()
        .memory_capacity(1_000)
        .unit_weight()
        .shards(1)
        .clock(clock.clone())
        .build()
        .unwrap();
    let key = |kind: &str, i: u32| format!("{kind}:{i}").into_bytes();
    for i in 0..500 {
        cache
            .insert_with_ttl(&key("ttl", i), "t", 10 * SECOND)
            .unwrap();
        cache.insert(&key("live", i), "l").unwrap();
    }
    for _ in 0..3 {
        for i in 0..500 {
            cache.get(&key("ttl", i));
            cache.get(&key("live", i));
        }
    }
    assert_eq!(cache.weighted_size(), 1_000);
    clock.advance(11 * SECOND);
    for i in 0..500 {
        cache.insert(&key("new", i), "n").unwrap();
    }
    let kept = |kind| (0..500).filter(|&i| cache.contains(&key(kind, i))).count();
    assert_eq!(kept("live"), 500, "no live entry gave way");
    assert_eq!(kept("new"), 500, "every new entry found room");
    assert_eq!(cache.weighted_size(), 1_000, "all of it live weight");
    assert!(cache.stats().expirations >= 500);
}
