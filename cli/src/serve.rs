//! `larder serve`: the cache over the Redis protocol (`larder-server`), so
//! unmodified Redis clients, and a proxy such as twemproxy, use it.

use crate::CliResult;
use bytes::Bytes;
use larder::Cache;
use larder_server::{Limits, ServeConfig, Shared};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:6379")]
    listen: SocketAddr,
    /// Memory capacity in MiB.
    #[arg(long, default_value_t = 64)]
    memory_mib: u64,
    /// Memory capacity as a size (`268435456`, `256MiB`, `1g`: units are
    /// powers of 1024); instead of `--memory-mib`.
    #[arg(long, value_parser = parse_size, conflicts_with = "memory_mib")]
    memory: Option<u64>,
    /// A disk tier in this directory (reopened warm after a clean stop).
    #[arg(long, alias = "dir")]
    disk_dir: Option<PathBuf>,
    /// The disk tier's capacity in MiB.
    #[arg(long, default_value_t = 1024, requires = "disk_dir")]
    disk_mib: u64,
    /// The disk tier's capacity as a size; instead of `--disk-mib`.
    #[arg(long, value_parser = parse_size, requires = "disk_dir", conflicts_with = "disk_mib")]
    disk_capacity: Option<u64>,
    /// Segment size in MiB.
    #[arg(long, default_value_t = 16, requires = "disk_dir")]
    segment_mib: u64,
    /// The share of one core that writes may spend compressing values while
    /// the disk tier keeps up (default 0.25; `inf`: every value that
    /// shrinks; 0: only while the disk tier is behind).
    #[arg(long, requires = "disk_dir", allow_negative_numbers = true)]
    compression_budget: Option<f64>,
    /// Clients must `AUTH` with this password first.
    #[arg(long)]
    requirepass: Option<String>,
    /// With a disk tier: sync it every this many seconds, so a crash or a
    /// power loss loses at most about that much (0: only at close).
    #[arg(long, default_value_t = 1)]
    sync_every: u64,
    /// Threads serving connections (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// Connections at once, at most.
    #[arg(long, default_value_t = 10_000)]
    max_clients: usize,
    /// Close a connection idle this many seconds (0: never).
    #[arg(long, default_value_t = 0)]
    timeout: u64,
    /// Bytes of one argument of a request, at most.
    #[arg(long, default_value_t = 64 << 20)]
    max_bulk_len: usize,
    /// Arguments of one request, at most.
    #[arg(long, default_value_t = 1 << 16)]
    max_args: usize,
    /// MiB of unanswered requests one connection may hold, at most.
    #[arg(long, default_value_t = 1024)]
    max_query_buffer_mib: usize,
    /// MiB of unanswered requests all connections may hold together, at most.
    #[arg(long, default_value_t = 2048)]
    max_input_mib: usize,
    /// Serve the cache's and the server's metrics at this address
    /// (`/metrics`, Prometheus text format; refreshed every second).
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
}

pub fn run(args: Args) -> CliResult {
    let memory = args.memory.unwrap_or(args.memory_mib << 20);
    if memory == 0 {
        return Err("--memory-mib (or --memory) must be at least 1 MiB".into());
    }
    if args.threads == Some(0) {
        return Err("--threads must be at least 1".into());
    }
    if args.max_clients == 0
        || args.max_bulk_len == 0
        || args.max_args == 0
        || args.max_query_buffer_mib == 0
        || args.max_input_mib == 0
    {
        return Err("--max-clients, --max-bulk-len, --max-args, --max-query-buffer-mib and --max-input-mib must be at least 1".into());
    }
    // Hot-key detection answers `OBJECT FREQ` (and so `redis-cli --hotkeys`).
    let mut builder = Cache::builder().memory_capacity(memory).track_hot_keys();
    if let Some(dir) = &args.disk_dir {
        builder = builder
            .disk(dir, args.disk_capacity.unwrap_or(args.disk_mib << 20))
            .segment_size(args.segment_mib << 20);
        if let Some(share) = args.compression_budget {
            builder = builder.compression_budget(share);
        }
    }
    let cache = builder.build()?;
    let password = args.requirepass.map(Bytes::from);
    let shared = Arc::new(Shared::new(cache, password, args.listen.port()));
    if let Some(addr) = args.metrics_addr {
        serve_metrics(addr, Arc::clone(&shared))?;
    }
    let config = ServeConfig {
        max_clients: args.max_clients,
        threads: args.threads,
        sync_every: (args.sync_every > 0).then(|| Duration::from_secs(args.sync_every)),
        idle_timeout: (args.timeout > 0).then(|| Duration::from_secs(args.timeout)),
        limits: Limits {
            max_bulk: args.max_bulk_len,
            max_args: args.max_args,
            ..Limits::default()
        },
        max_query_buffer: args.max_query_buffer_mib << 20,
        max_input_total: args.max_input_mib << 20,
    };
    larder_server::run(args.listen, shared, config, |addr| {
        println!("larder serving on {addr}");
    })
}

/// Installs the Prometheus exporter at `addr` and a thread that publishes
/// the cache's statistics and the server's counters every second.
fn serve_metrics(addr: SocketAddr, shared: Arc<Shared>) -> CliResult {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("cannot serve metrics at {addr}: {e}"))?;
    let publish = move || {
        shared.cache().publish_metrics();
        let (clients, connections, commands) = shared.counters();
        metrics::gauge!("larder_server_connected_clients").set(clients as f64);
        metrics::counter!("larder_server_connections_total").absolute(connections);
        metrics::counter!("larder_server_commands_total").absolute(commands);
    };
    publish();
    std::thread::Builder::new()
        .name("larder-metrics".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                publish();
            }
        })?;
    Ok(())
}

/// A size in bytes: a number, then optionally a unit (`k`, `m`, `g`, `t`,
/// each a power of 1024, with an optional `i` and `b`, in any case).
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size (e.g. 256MiB)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => return Err(format!("'{other}' is not a unit of size (k, m, g, t)")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("'{text}' is too large"))
}
