//! A product catalog in front of a real SQLite file, through a
//! `StoreCache`: cache-aside reads (one query per key however many callers
//! miss at once, unknown ids remembered as absent), write-through price
//! updates, every entry tagged by its category, an event rule that drops a
//! category's listing when one of its products changes, a whole category
//! invalidated at once (in memory and on disk) after a batch job rewrote it
//! in the database, and a restart that comes back warm with the
//! invalidation still in force.
//!
//! `cargo run --example catalog` (the test command runs it too).

use larder::{Bytes, Cache, CheckpointStatus, EVENT_PUT, Event, Invalidation, Store, StoreCache};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Product {
    id: i64,
    name: String,
    category: String,
    cents: i64,
}

const CATEGORIES: [&str; 3] = ["tea", "coffee", "cups"];

/// The database: a `product` table. As a [`Store`] it answers two kinds of
/// keys: `product:<id>` (a row) and `listing:<category>` (the ids in a
/// category, a query), both encoded with postcard.
struct Db {
    conn: Mutex<Connection>,
    queries: AtomicU64,
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
            queries: AtomicU64::new(0),
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
                    CATEGORIES[id as usize % 3],
                    id * 125
                ],
            )?;
        }
        tx.commit()
    }

    /// A batch job that reprices a whole category behind the cache's back.
    fn reprice(&self, category: &str, percent: i64) -> rusqlite::Result<usize> {
        self.conn.lock().unwrap().execute(
            "UPDATE product SET cents = cents * (100 + ?2) / 100 WHERE category = ?1",
            params![category, percent],
        )
    }
}

#[derive(Debug)]
enum DbError {
    Sql(rusqlite::Error),
    Codec(postcard::Error),
    BadKey,
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::Sql(e) => write!(f, "{e}"),
            DbError::Codec(e) => write!(f, "{e}"),
            DbError::BadKey => write!(f, "not a catalog key"),
        }
    }
}

impl std::error::Error for DbError {}

fn product_id(key: &[u8]) -> Option<i64> {
    std::str::from_utf8(key)
        .ok()?
        .strip_prefix("product:")?
        .parse()
        .ok()
}

impl Store for Db {
    type Error = DbError;

    fn load(&self, key: &[u8]) -> Result<Option<Bytes>, DbError> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let conn = self.conn.lock().unwrap();
        if let Some(id) = product_id(key) {
            let row = conn
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
                .map_err(DbError::Sql)?;
            return row
                .map(|p| {
                    postcard::to_stdvec(&p)
                        .map(Bytes::from)
                        .map_err(DbError::Codec)
                })
                .transpose();
        }
        let category = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.strip_prefix("listing:"))
            .ok_or(DbError::BadKey)?;
        let mut q = conn
            .prepare_cached("SELECT id FROM product WHERE category = ?1 ORDER BY id")
            .map_err(DbError::Sql)?;
        let ids: Vec<i64> = q
            .query_map([category], |r| r.get(0))
            .map_err(DbError::Sql)?
            .collect::<Result<_, _>>()
            .map_err(DbError::Sql)?;
        Ok(Some(
            postcard::to_stdvec(&ids).map_err(DbError::Codec)?.into(),
        ))
    }

    fn store(&self, key: &[u8], value: &[u8]) -> Result<(), DbError> {
        product_id(key).ok_or(DbError::BadKey)?;
        let p: Product = postcard::from_bytes(value).map_err(DbError::Codec)?;
        self.conn
            .lock()
            .unwrap()
            .execute(
                "INSERT OR REPLACE INTO product VALUES (?1, ?2, ?3, ?4)",
                params![p.id, p.name, p.category, p.cents],
            )
            .map_err(DbError::Sql)?;
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<(), DbError> {
        let id = product_id(key).ok_or(DbError::BadKey)?;
        self.conn
            .lock()
            .unwrap()
            .execute("DELETE FROM product WHERE id = ?1", [id])
            .map_err(DbError::Sql)?;
        Ok(())
    }
}

/// Every entry's tag: its category.
fn tag_by_category(key: &[u8], value: &[u8]) -> Vec<String> {
    if let Some(category) = std::str::from_utf8(key)
        .ok()
        .and_then(|k| k.strip_prefix("listing:"))
    {
        return vec![category.to_string()];
    }
    postcard::from_bytes::<Product>(value)
        .map(|p| vec![p.category])
        .unwrap_or_default()
}

/// The catalog service.
struct Catalog {
    products: StoreCache<Db>,
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
        let products = StoreCache::new(cache, Db::open(&dir.join("catalog.sqlite"))?)
            .tags(dir.join("tags"), tag_by_category)?;
        // A product written through the cache drops its category's listing.
        products.on_event(EVENT_PUT, |e: &Event| {
            e.keys
                .iter()
                .filter_map(|k| product_id(k))
                .map(|id| Invalidation::key(format!("listing:{}", CATEGORIES[id as usize % 3])))
                .collect()
        });
        Ok(Catalog { products })
    }

    fn product(&self, id: i64) -> Result<Option<Product>, Box<dyn std::error::Error>> {
        let found = self.products.get(format!("product:{id}").as_bytes())?;
        Ok(found.map(|b| postcard::from_bytes(&b)).transpose()?)
    }

    fn listing(&self, category: &str) -> Result<Vec<i64>, Box<dyn std::error::Error>> {
        let found = self
            .products
            .get(format!("listing:{category}").as_bytes())?;
        Ok(found
            .map(|b| postcard::from_bytes(&b))
            .transpose()?
            .unwrap_or_default())
    }

    /// Write-through: the database, then the cache (and the event rule).
    fn save(&self, p: &Product) -> Result<(), Box<dyn std::error::Error>> {
        self.products.put(
            format!("product:{}", p.id).as_bytes(),
            postcard::to_stdvec(p)?,
        )?;
        Ok(())
    }

    /// How many products of `category` are cached (read without a query).
    fn cached_in(&self, category: &str) -> usize {
        let nth = CATEGORIES.iter().position(|c| *c == category).unwrap_or(0) as i64;
        (1..=3_000)
            .filter(|id| id % 3 == nth)
            .filter(|id| {
                self.products
                    .cached(format!("product:{id}").as_bytes())
                    .is_some()
            })
            .count()
    }

    fn queries(&self) -> u64 {
        self.products.store().queries.load(Ordering::Relaxed)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let catalog = Catalog::open(dir.path())?;
    catalog.products.store().seed(3_000)?;

    // Browse: a skewed stream of product views, some of unknown ids.
    let views: Vec<i64> = (0..30_000u64)
        .map(|i| {
            let x = ((i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % 10_000) as i64;
            if x < 9_000 {
                1 + x * x % 3_000
            } else {
                100_000 + x
            }
        })
        .collect();
    let mut shown = 0;
    for &id in &views {
        shown += usize::from(catalog.product(id)?.is_some());
    }
    let stats = catalog.products.cache().stats();
    println!(
        "{} views, {shown} products shown, {} database queries, hit ratio {:.3}",
        views.len(),
        catalog.queries(),
        stats.hit_ratio()
    );
    assert!(
        catalog.queries() < views.len() as u64 / 2,
        "the cache answers most views"
    );

    // 64 threads miss the same product at once: one query.
    let before = catalog.queries();
    std::thread::scope(|s| {
        for _ in 0..64 {
            s.spawn(|| catalog.product(2_999).unwrap().unwrap());
        }
    });
    assert_eq!(catalog.queries() - before, 1);

    // A price update through the cache: the database, the cache, and the
    // tea listing is dropped by the event rule.
    let tea = catalog.listing("tea")?;
    let mut p = catalog.product(3)?.expect("product 3 exists"); // 3 % 3 == 0: tea
    assert_eq!(p.category, "tea");
    p.cents += 100;
    catalog.save(&p)?;
    assert!(
        catalog.products.cached(b"listing:tea").is_none(),
        "the rule dropped it"
    );
    assert_eq!(catalog.listing("tea")?, tea);
    assert_eq!(catalog.product(3)?.unwrap().cents, p.cents);

    // A batch job reprices all coffee in the database; one call makes every
    // cached coffee entry (products and listing, in memory and on disk)
    // unreachable, and the next reads load the new prices.
    let old = catalog.product(1)?.unwrap(); // coffee
    let repriced = catalog.products.store().reprice("coffee", 10)?;
    catalog.products.invalidate_tag("coffee")?;
    let coffee_cached = catalog.cached_in("coffee");
    assert_eq!(coffee_cached, 0);
    assert_eq!(catalog.product(1)?.unwrap().cents, old.cents * 110 / 100);
    println!("repriced {repriced} coffee products: one invalidation, none of them cached any more");

    // A restart: warm, and the invalidation holds.
    let cups_cached_before = catalog.cached_in("cups");
    catalog.products.cache().clone().close()?;
    drop(catalog);
    let catalog = Catalog::open(dir.path())?;
    let disk = catalog.products.cache().stats().disk.expect("a disk tier");
    assert_eq!(disk.recovery.checkpoint, CheckpointStatus::Used);
    let cups_cached = catalog.cached_in("cups");
    assert!(
        cups_cached * 10 >= cups_cached_before * 9,
        "warm: {cups_cached} of {cups_cached_before}"
    );
    for id in (2..=3_000).filter(|id| id % 3 == 1) {
        if let Some(b) = catalog.products.cached(format!("product:{id}").as_bytes()) {
            let p: Product = postcard::from_bytes(&b)?;
            assert_eq!(
                p.cents,
                id * 125 * 110 / 100,
                "no stale coffee price after the restart"
            );
        }
    }
    let queries = catalog.queries();
    for &id in views.iter().take(2_000) {
        catalog.product(id)?;
    }
    println!(
        "after a restart: {cups_cached} of {cups_cached_before} cups products still cached, {} of 2000 views queried the database",
        catalog.queries() - queries
    );
    assert_eq!(catalog.product(3)?.unwrap().cents, p.cents);
    catalog.products.cache().clone().close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_runs() {
        super::main().unwrap();
    }
}
