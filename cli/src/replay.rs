//! `larder replay`: every request is a `get`; a miss inserts a value whose bytes are
//! a function of the key, and every hit's bytes are checked against it.

use crate::CliResult;
use larder::{Backpressure, Bytes, Cache, ReadPath, WritePolicy};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Trace file: one request per line, the first token (whitespace or comma separated)
    /// is the key; empty lines and lines starting with '#' are skipped. A `.zst` file is
    /// decompressed first.
    #[arg(long)]
    trace: PathBuf,
    /// Cache capacity in entries.
    #[arg(long)]
    capacity: u64,
    /// Number of shards (a power of two); default: the library's default.
    #[arg(long)]
    shards: Option<usize>,
    /// Size of the value inserted on a miss, in bytes.
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Put a disk tier under the memory tier, in this directory. A directory a
    /// previous run left is reopened (warm after a clean close, recovered after
    /// a crash) before the replay starts, and closed cleanly at the end, so a
    /// trace replayed in parts, one run each, behaves like one replay.
    #[arg(long, requires = "disk_capacity")]
    disk_dir: Option<PathBuf>,
    /// Bytes of segment files the disk tier may keep.
    #[arg(long, requires = "disk_dir")]
    disk_capacity: Option<u64>,
    /// Size of a segment file in bytes (default 64 MiB).
    #[arg(long, requires = "disk_dir")]
    segment_size: Option<u64>,
    /// When values reach the disk tier.
    #[arg(long, value_enum, default_value_t = Policy::WriteBehind, requires = "disk_dir")]
    write_policy: Policy,
    /// Write segment files with O_DIRECT, bypassing the page cache (where the
    /// file system refuses it, the JSON's `direct_writes` is false).
    #[arg(long, requires = "disk_dir")]
    direct_writes: bool,
    /// How sealed segments are read: through memory maps or with pread.
    #[arg(long, value_enum, default_value_t = Reads::Mmap, requires = "disk_dir")]
    read_path: Reads,
    /// Track hot keys (a sampled count-min sketch, the library's
    /// `track_hot_keys`) and report the N most requested (at most 64).
    #[arg(long, value_name = "N")]
    hot_keys: Option<usize>,
}

/// `--read-path`'s values.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Reads {
    Mmap,
    Pread,
}

/// `--write-policy`'s values.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Policy {
    WriteBehind,
    Demote,
    DemoteAll,
}

pub(crate) fn run(args: Args) -> CliResult {
    let text = std::fs::read(&args.trace)
        .map_err(|e| format!("cannot read trace {}: {e}", args.trace.display()))?;
    // A `.zst` trace is decompressed first.
    let text = if args.trace.extension().is_some_and(|e| e == "zst") {
        zstd::decode_all(&text[..])
            .map_err(|e| format!("trace {} is not zstd: {e}", args.trace.display()))?
    } else {
        text
    };
    let keys = parse_trace(&text);
    if keys.is_empty() {
        return Err(format!("trace {} holds no requests", args.trace.display()).into());
    }
    if args.capacity == 0 {
        return Err("--capacity must be at least 1 entry".into());
    }
    let mut builder = Cache::builder()
        .memory_capacity(args.capacity)
        .unit_weight();
    if let Some(shards) = args.shards {
        builder = builder.shards(shards);
    }
    if args.hot_keys.is_some() {
        builder = builder.track_hot_keys();
    }
    if let (Some(dir), Some(capacity)) = (&args.disk_dir, args.disk_capacity) {
        builder = builder
            .disk(dir, capacity)
            // A replay measures the policy: it waits for the disk rather than
            // have writes refused by timing, so runs repeat.
            .disk_backpressure(Backpressure::Wait(Duration::from_secs(60)))
            .write_policy(match args.write_policy {
                Policy::WriteBehind => WritePolicy::WriteBehind,
                Policy::Demote => WritePolicy::Demote,
                Policy::DemoteAll => WritePolicy::DemoteAll,
            })
            .direct_writes(args.direct_writes)
            .read_path(match args.read_path {
                Reads::Mmap => ReadPath::Mmap,
                Reads::Pread => ReadPath::Pread,
            });
        if let Some(size) = args.segment_size {
            builder = builder.segment_size(size);
        }
    }
    let opening = Instant::now();
    let cache = builder.build()?;
    let open_s = opening.elapsed().as_secs_f64();
    let opened = cache.stats().disk.map(|d| d.recovery);

    let started = Instant::now();
    let (mut hits, mut wrong) = (0u64, 0u64);
    for key in &keys {
        match cache.get(key) {
            Some(v) => {
                hits += 1;
                if v != value_for(key, args.value_size) {
                    wrong += 1;
                }
            }
            None => cache.insert(key, value_for(key, args.value_size))?,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let requests = keys.len() as u64;
    let misses = requests - hits;
    cache.sync()?;
    let stats = cache.stats();
    let hot = args.hot_keys.map(|k| cache.hot_keys(k));
    cache.close()?;
    let disk = stats.disk.clone();
    let mut report = serde_json::json!({
        "trace": args.trace.display().to_string(),
        "capacity": args.capacity,
        "shards": stats.shards,
        "requests": requests,
        "hits": hits,
        "misses": misses,
        "miss_ratio": misses as f64 / requests as f64,
        "wrong_values": wrong,
        "elapsed_s": elapsed,
        "entries": stats.memory.entries,
        "hot_entries": stats.hot_entries,
        "ghost_entries": stats.ghost_entries,
        "evictions": stats.memory.evictions,
        "l1_hits": stats.memory.hits,
        "l2_hits": disk.as_ref().map_or(0, |d| d.hits),
        "disk_bytes_written": disk.as_ref().map_or(0, |d| d.bytes_written),
    });
    if let Some(r) = &opened {
        report["recovered_entries"] = r.entries.into();
        report["open_s"] = open_s.into();
        report["warm"] = (r.checkpoint == larder::CheckpointStatus::Used).into();
    }
    if let Some(d) = disk {
        report["disk"] = serde_json::json!({
            "entries": d.entries,
            "segments": d.segments,
            "value_bytes_in": d.value_bytes_in,
            "value_bytes_stored": d.value_bytes_stored,
            "compression_ratio": d.compression_ratio(),
            "compression_paced": d.compression_paced,
            "refused_writes": d.refused_writes,
            "corrupt_records": d.corrupt_records,
            "reclaimed_segments": d.reclaimed_segments,
            "buffer_bytes": d.buffer_bytes,
            "values_appended": d.values_appended,
            "reappended": d.reappended,
            "write_s": d.write_time.as_secs_f64(),
            "ghosts": d.ghosts,
            "healthy": d.healthy(),
            "io_backend": d.io_backend,
            "direct_writes": d.direct_writes,
            "read_path": d.read_path,
            "maps": d.maps,
            "faulted_segments": d.faulted_segments,
        });
    }
    if let Some(hot) = hot {
        report["hot_keys"] = hot
            .iter()
            .map(|(key, estimate)| serde_json::json!({"key": String::from_utf8_lossy(key), "requests": estimate}))
            .collect();
    }
    if args.json {
        println!("{report}");
    } else {
        for (k, v) in report.as_object().into_iter().flatten() {
            println!("{k:>14}  {v}");
        }
    }
    if wrong > 0 {
        return Err(format!("{wrong} hits returned wrong bytes").into());
    }
    Ok(())
}

/// The keys of a trace, in order.
fn parse_trace(text: &[u8]) -> Vec<&[u8]> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let line = line.trim_ascii();
            if line.is_empty() || line[0] == b'#' {
                return None;
            }
            line.split(|&b| b == b',' || b.is_ascii_whitespace())
                .find(|t| !t.is_empty())
        })
        .collect()
}

/// The value inserted for `key`: `size` bytes of a stream seeded by the key's hash.
fn value_for(key: &[u8], size: usize) -> Bytes {
    let mut state = larder::hash_key(key);
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let take = (size - out.len()).min(8);
        out.extend_from_slice(&z.to_le_bytes()[..take]);
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_parsing() {
        let t = b"# header\n1\n\n 2 rest\n3,4\n  # indented comment\n\t5\t\r\n";
        assert_eq!(
            parse_trace(t),
            vec![&b"1"[..], &b"2"[..], &b"3"[..], &b"5"[..]]
        );
    }

    #[test]
    fn values_are_deterministic_and_key_specific() {
        assert_eq!(value_for(b"a", 13), value_for(b"a", 13));
        assert_ne!(value_for(b"a", 13), value_for(b"b", 13));
        assert_eq!(value_for(b"a", 13).len(), 13);
    }
}
