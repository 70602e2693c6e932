//! A counter service with durable write-behind to a real SQLite file: each
//! increment is a read and a write through a `StoreCache`, acknowledged once
//! journaled; the flusher stores the counters in batches, one row per
//! counter however many increments it had. Then the service crashes
//! (`abort`: no destructor runs, nothing is flushed) right after its last
//! acknowledged increment, and the restart replays the journal: every
//! increment is in the database.
//!
//! The crash is real: the example runs itself as a child process (the
//! `LARDER_COUNTERS_CHILD` variable says which), which aborts.
//!
//! `cargo run --example counters --features sqlite` (the test command runs it too).

use larder::{Cache, SqliteStore, StoreCache, WriteBehind};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const COUNTERS: u64 = 100;
const INCREMENTS: u64 = 20_000;

fn open(dir: &Path) -> Result<StoreCache<SqliteStore>, Box<dyn std::error::Error>> {
    let cache = Cache::builder().memory_capacity(1 << 20).build()?;
    let db = SqliteStore::open(dir.join("counters.sqlite"), "counters")?;
    let counters = StoreCache::new(cache, db).write_behind(
        WriteBehind::new(dir.join("journal"))
            .delay(Duration::from_secs(5)) // long: the crash comes first
            .batch_size(1_000),
    )?;
    Ok(counters)
}

/// The counter service.
struct Counters {
    counters: StoreCache<SqliteStore>,
    /// One increment at a time (a read and a write of the counter).
    increments: Mutex<()>,
}

impl Counters {
    fn increment(&self, name: &str) -> Result<u64, Box<dyn std::error::Error>> {
        let _one_at_a_time = self.increments.lock().unwrap();
        let now = match self.counters.get(name.as_bytes())? {
            Some(v) => std::str::from_utf8(&v)?.parse::<u64>()? + 1,
            None => 1,
        };
        self.counters.put(name.as_bytes(), now.to_string())?;
        Ok(now)
    }
}

/// The name of the `i`th increment's counter (skewed: a few are hot).
fn counter_of(i: u64) -> String {
    let x = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33) % (COUNTERS * COUNTERS);
    format!("counter:{}", x.isqrt())
}

/// The service until it crashes.
fn child(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let service = Counters {
        counters: open(dir)?,
        increments: Mutex::new(()),
    };
    let start = Instant::now();
    for i in 0..INCREMENTS {
        service.increment(&counter_of(i))?;
    }
    let elapsed = start.elapsed();
    let stats = service.counters.write_behind_stats();
    println!(
        "{INCREMENTS} increments in {:.0} ms ({:.0}/s), {} stored so far, {} queued; crashing now",
        elapsed.as_secs_f64() * 1e3,
        INCREMENTS as f64 / elapsed.as_secs_f64(),
        stats.stored,
        stats.queued,
    );
    std::process::abort();
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(dir) = std::env::var("LARDER_COUNTERS_CHILD") {
        return child(Path::new(&dir));
    }
    let dir = tempfile::tempdir()?;
    let status = Command::new(std::env::current_exe()?)
        .env("LARDER_COUNTERS_CHILD", dir.path())
        .stderr(Stdio::null())
        .status()?;
    assert!(!status.success(), "the service crashed");

    // The restart: the journal's writes are queued again and stored.
    let counters = open(dir.path())?;
    let stats = counters.write_behind_stats();
    println!(
        "after the crash: {} counters replayed from the journal",
        stats.replayed
    );
    counters.flush();
    let mut expected = std::collections::HashMap::<String, u64>::new();
    for i in 0..INCREMENTS {
        *expected.entry(counter_of(i)).or_default() += 1;
    }
    let mut total = 0;
    for (name, count) in &expected {
        let in_db = counters.store().with(|conn| {
            conn.query_row(
                "SELECT value FROM counters WHERE key = ?1",
                [name.as_bytes()],
                |r| r.get::<_, Vec<u8>>(0),
            )
        })?;
        assert_eq!(String::from_utf8(in_db)?, count.to_string(), "{name}");
        total += count;
    }
    let stats = counters.write_behind_stats();
    println!(
        "in the database: all {total} increments over {} counters, in {} rows written by {} batches",
        expected.len(),
        stats.stored,
        stats.batches
    );
    assert_eq!(total, INCREMENTS);
    counters.close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_runs() {
        super::main().unwrap();
    }
}
