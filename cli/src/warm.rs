//! `larder warm`: loads the keys listed in a file (one per line) from a
//! table of an SQLite database into a disk tier's directory, with a
//! progress bar on a terminal, and closes it, so that the service that
//! opens the directory next starts warm.

use crate::CliResult;
use crate::disk_args::DiskArgs;
use indicatif::{ProgressBar, ProgressStyle};
use larder::{SqliteStore, StoreCache};
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
    #[command(flatten)]
    disk: DiskArgs,
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
    let cache = args.disk.builder().build()?;
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
