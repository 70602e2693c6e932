//! A [`Store`] over a table of an SQLite database file (feature `sqlite`,
//! rusqlite with SQLite bundled): `key BLOB PRIMARY KEY, value BLOB`.

use super::store::Store;
use bytes::Bytes;
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params_from_iter};
use std::path::Path;

/// Why the SQLite store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// SQLite said so.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The table name is not a plain identifier (letters, digits, `_`).
    #[error("table name {0:?} is not a plain identifier")]
    TableName(String),
}

/// A table of an SQLite database as a [`Store`]: one connection, in WAL
/// mode (readers do not wait for the writer), so calls are serialised here
/// as SQLite serialises writes anyway; a batch is one transaction.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    load_sql: String,
    store_sql: String,
    delete_sql: String,
    table: String,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("table", &self.table)
            .finish()
    }
}

/// Keys per `IN (...)` query of a `load_many` (SQLite allows 32,766 parameters).
const KEYS_PER_QUERY: usize = 500;

impl SqliteStore {
    /// Opens (or creates) the database file at `path` and its table `table`
    /// (created if missing).
    pub fn open(path: impl AsRef<Path>, table: &str) -> Result<Self, SqliteError> {
        Self::with_connection(Connection::open(path)?, table)
    }

    /// Uses an open connection (its table `table` created if missing).
    pub fn with_connection(conn: Connection, table: &str) -> Result<Self, SqliteError> {
        let plain = !table.is_empty()
            && !table.starts_with(|c: char| c.is_ascii_digit())
            && table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !plain {
            return Err(SqliteError::TableName(table.to_string()));
        }
        // WAL where the file allows it (an in-memory database says "memory").
        let _: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.execute_batch("PRAGMA synchronous=FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (key BLOB PRIMARY KEY, value BLOB NOT NULL)"
        ))?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            load_sql: format!("SELECT value FROM {table} WHERE key = ?1"),
            store_sql: format!(
                "INSERT INTO {table} (key, value) VALUES (?1, ?2) \
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value"
            ),
            delete_sql: format!("DELETE FROM {table} WHERE key = ?1"),
            table: table.to_string(),
        })
    }

    /// Runs `f` on the connection (for what the store does not offer:
    /// other tables, queries of the application's own).
    pub fn with<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        f(&self.conn.lock())
    }
}

impl Store for SqliteStore {
    type Error = SqliteError;

    fn load(&self, key: &[u8]) -> Result<Option<Bytes>, SqliteError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(&self.load_sql)?;
        let value: Option<Vec<u8>> = stmt.query_row([key], |r| r.get(0)).optional()?;
        Ok(value.map(Bytes::from))
    }

    fn load_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Bytes>>, SqliteError> {
        let conn = self.conn.lock();
        let mut found = std::collections::HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(KEYS_PER_QUERY) {
            let marks = vec!["?"; chunk.len()].join(",");
            let sql = format!(
                "SELECT key, value FROM {} WHERE key IN ({marks})",
                self.table
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(chunk.iter()), |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?;
            for row in rows {
                let (k, v) = row?;
                found.insert(k, Bytes::from(v));
            }
        }
        Ok(keys.iter().map(|k| found.get(*k).cloned()).collect())
    }

    fn store(&self, key: &[u8], value: &[u8]) -> Result<(), SqliteError> {
        let conn = self.conn.lock();
        conn.prepare_cached(&self.store_sql)?
            .execute(rusqlite::params![key, value])?;
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<(), SqliteError> {
        let conn = self.conn.lock();
        conn.prepare_cached(&self.delete_sql)?.execute([key])?;
        Ok(())
    }

    fn store_batch(&self, batch: &[(&[u8], Option<&[u8]>)]) -> Result<(), SqliteError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        {
            let mut put = tx.prepare_cached(&self.store_sql)?;
            let mut del = tx.prepare_cached(&self.delete_sql)?;
            for (key, value) in batch {
                match value {
                    Some(v) => put.execute(rusqlite::params![key, v])?,
                    None => del.execute([key])?,
                };
            }
        }
        tx.commit()?;
        Ok(())
    }
}
