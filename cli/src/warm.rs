//! `larder warm`: loads the keys listed in a file (one per line) from a
//! table of an SQLite database into a disk tier's directory, with a
//! progress bar on a terminal, and closes it, so that the service that
//! opens the directory next starts warm.

use crate::CliResult;
use indicatif::{ProgressBar, ProgressStyle};
use larder::{Cache, SqliteStore, StoreCache};
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The keys to warm, one per line (empty lines and `#` lines skipped).
    #[arg(long)]
    keys: PathBuf,
    /// The SQLite database file the values come from.
    #[arg(long)]
    sqlite: PathBuf,
    /// Its table (`key BLOB PRIMARY KEY, value BLOB`).
    #[arg(long, default_value = "cache")]
    table: String,
    /// The disk tier's directory (created if missing).
    #[arg(long)]
    disk_dir: PathBuf,
    /// The disk tier's capacity in MiB.
    #[arg(long, default_value_t = 256)]
    disk_mib: u64,
    /// Segment size in MiB (for a new directory).
    #[arg(long, default_value_t = 16)]
    segment_mib: u64,
    /// Memory capacity in MiB.
    #[arg(long, default_value_t = 32)]
    memory_mib: u64,
    /// Threads loading from the database.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

pub fn run(args: Args) -> CliResult {
    let file =
        std::fs::File::open(&args.keys).map_err(|e| format!("{}: {e}", args.keys.display()))?;
    let mut keys = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|e| format!("{}: {e}", args.keys.display()))?;
        let key = line.trim();
        if !key.is_empty() && !key.starts_with('#') {
            keys.push(key.as_bytes().to_vec());
        }
    }
    if !args.sqlite.is_file() {
        return Err(format!("{}: no such database file", args.sqlite.display()).into());
    }
    let store = SqliteStore::open(&args.sqlite, &args.table)?;
    let cache = Cache::builder()
        .memory_capacity(args.memory_mib << 20)
        .disk(&args.disk_dir, args.disk_mib << 20)
        .segment_size(args.segment_mib << 20)
        .build()?;
    let items = StoreCache::new(cache, store);
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(keys.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} keys {per_sec} eta {eta}")
            .map_err(|e| e.to_string())?,
    );
    let done = items.warm(&keys, args.threads, |p| bar.set_position(p.done))?;
    bar.finish_and_clear();
    items.cache().clone().close()?; // closes every handle: the directory is released
    println!(
        "warmed {} of {} keys: {} inserted, {} already cached, {} not in {}",
        done.done, done.total, done.inserted, done.skipped, done.absent, args.table
    );
    Ok(())
}
