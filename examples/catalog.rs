//! A product catalog in front of a real SQLite file: typed values
//! (`TypedCache` with the postcard codec), cache-aside with single-flight
//! loads, unknown ids remembered as absent for a while, an update that
//! writes the database and then drops the cached copy, and a restart that
//! comes back warm from the disk tier.
//!
//! `cargo run --example catalog --features serde` (the test command runs it too).

use larder::{Cache, CheckpointStatus, LoadError, Postcard, TypedCache};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Product {
    id: i64,
    name: String,
    category: String,
    cents: i64,
}

/// The database: one connection behind a mutex, as a small service has.
struct Db {
    conn: Mutex<Connection>,
}

impl Db {
    fn open(path: &Path) -> rusqlite::Result<Db> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS product (
                 id INTEGER PRIMARY KEY, name TEXT NOT NULL,
                 category TEXT NOT NULL, cents INTEGER NOT NULL)",
        )?;
        Ok(Db {
            conn: Mutex::new(conn),
        })
    }

    fn seed(&self, n: i64) -> rusqlite::Result<()> {
        let mut conn = self.conn.lock().unwrap();
        let tx = conn.transaction()?;
        for id in 1..=n {
            tx.execute(
                "INSERT OR REPLACE INTO product VALUES (?1, ?2, ?3, ?4)",
                params![
                    id,
                    format!("product {id}"),
                    ["tea", "coffee", "cups"][id as usize % 3],
                    id * 125
                ],
            )?;
        }
        tx.commit()
    }

    fn product(&self, id: i64) -> rusqlite::Result<Option<Product>> {
        self.conn
            .lock()
            .unwrap()
            .query_row(
                "SELECT id, name, category, cents FROM product WHERE id = ?1",
                [id],
                |r| {
                    Ok(Product {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        category: r.get(2)?,
                        cents: r.get(3)?,
                    })
                },
            )
            .optional()
    }

    fn set_price(&self, id: i64, cents: i64) -> rusqlite::Result<()> {
        let conn = self.conn.lock().unwrap();
        conn.execute(
            "UPDATE product SET cents = ?2 WHERE id = ?1",
            params![id, cents],
        )?;
        Ok(())
    }
}

/// The catalog service: the database behind a typed, two-tier cache.
struct Catalog {
    db: Db,
    cache: TypedCache<i64, Product, Postcard>,
}

impl Catalog {
    fn open(dir: &Path) -> Result<Catalog, Box<dyn std::error::Error>> {
        let cache = Cache::builder()
            .memory_capacity(256 << 10)
            .disk(dir.join("cache"), 16 << 20)
            .segment_size(1 << 20)
            .time_to_live(Duration::from_secs(3600))
            .absent_ttl(Duration::from_secs(30))
            .build()?;
        Ok(Catalog {
            db: Db::open(&dir.join("catalog.sqlite"))?,
            cache: TypedCache::new(cache),
        })
    }

    /// Cache-aside: a miss queries SQLite once, however many callers miss at
    /// once; an id the database does not have is remembered as absent.
    fn product(&self, id: i64) -> Result<Option<Product>, LoadError<rusqlite::Error>> {
        self.cache
            .try_optionally_get_with(&id, || self.db.product(id))
    }

    /// The database first, then the cache forgets its copy: the next read
    /// loads the new price.
    fn set_price(&self, id: i64, cents: i64) -> rusqlite::Result<()> {
        self.db.set_price(id, cents)?;
        self.cache.remove(&id);
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let catalog = Catalog::open(dir.path())?;
    catalog.db.seed(5_000)?;

    // Browse: a skewed stream of product views, with some unknown ids.
    let views: Vec<i64> = (0..40_000u64)
        .map(|i| {
            let x = ((i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % 10_000) as i64;
            if x < 9_000 {
                1 + x * x % 5_000
            } else {
                100_000 + x
            }
        })
        .collect();
    let mut shown = 0;
    for &id in &views {
        shown += usize::from(catalog.product(id)?.is_some());
    }
    let stats = catalog.cache.cache().stats();
    println!(
        "{} views, {shown} products shown, {} database queries, hit ratio {:.3}",
        views.len(),
        stats.loads,
        stats.hit_ratio()
    );
    assert!(
        stats.loads < views.len() as u64 / 2,
        "the cache answers most views"
    );

    // An update reaches readers at once.
    let before = catalog.product(42)?.expect("product 42 exists");
    catalog.set_price(42, before.cents + 100)?;
    assert_eq!(catalog.product(42)?.unwrap().cents, before.cents + 100);
    assert_eq!(catalog.product(999_999)?, None);

    // A restart: the cache comes back warm from disk.
    catalog.cache.cache().clone().close()?;
    drop(catalog);
    let catalog = Catalog::open(dir.path())?;
    let disk = catalog.cache.cache().stats().disk.expect("a disk tier");
    assert_eq!(disk.recovery.checkpoint, CheckpointStatus::Used);
    let loads_before = catalog.cache.cache().stats().loads;
    for &id in views.iter().take(2_000) {
        catalog.product(id)?;
    }
    let after = catalog.cache.cache().stats();
    println!(
        "after a restart: {} of 2000 views queried the database, hit ratio {:.3}",
        after.loads - loads_before,
        after.hit_ratio()
    );
    assert_eq!(catalog.product(42)?.unwrap().cents, before.cents + 100);
    assert!(after.loads - loads_before < 400, "warm after the restart");
    catalog.cache.cache().clone().close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_runs() {
        super::main().unwrap();
    }
}
