//! `larder stats`: opens a disk tier's directory (warm, as a service would
//! reopen it) and prints its statistics; with `--metrics-addr`, serves them
//! over HTTP in the Prometheus text format (through the library's `metrics`
//! facade and `metrics-exporter-prometheus`) until `--for-secs` has passed.

use crate::CliResult;
use larder::Cache;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// The disk tier's directory.
    #[arg(long)]
    disk_dir: PathBuf,
    /// The disk tier's capacity in MiB (as it was created with).
    #[arg(long, default_value_t = 256)]
    disk_mib: u64,
    /// Segment size in MiB (as the directory was created with).
    #[arg(long, default_value_t = 16)]
    segment_mib: u64,
    /// Memory capacity in MiB.
    #[arg(long, default_value_t = 32)]
    memory_mib: u64,
    /// Serve the metrics at this address (`/metrics`, Prometheus text format).
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// With `--metrics-addr`: how long to serve, in seconds (the metrics
    /// are refreshed every second).
    #[arg(long, default_value_t = 60)]
    for_secs: u64,
}

pub fn run(args: Args) -> CliResult {
    if !args.disk_dir.is_dir() {
        return Err(format!("{}: no such directory", args.disk_dir.display()).into());
    }
    let cache = Cache::builder()
        .memory_capacity(args.memory_mib << 20)
        .disk(&args.disk_dir, args.disk_mib << 20)
        .segment_size(args.segment_mib << 20)
        .build()?;
    let Some(addr) = args.metrics_addr else {
        println!("{:#?}", cache.stats());
        cache.close()?;
        return Ok(());
    };
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("cannot serve metrics at {addr}: {e}"))?;
    cache.publish_metrics();
    println!("serving metrics at http://{addr}/metrics");
    let end = Instant::now() + Duration::from_secs(args.for_secs);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(1).min(end - Instant::now()));
        cache.publish_metrics();
    }
    cache.close()?;
    Ok(())
}
