//! `larder stats`: opens a disk tier's directory (warm, as a service would
//! reopen it) and prints its statistics; with `--metrics-addr`, serves them
//! over HTTP in the Prometheus text format (through the library's `metrics`
//! facade and `metrics-exporter-prometheus`) until `--for-secs` has passed.

use crate::CliResult;
use crate::disk_args::DiskArgs;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    disk: DiskArgs,
    /// Serve the metrics at this address (`/metrics`, Prometheus text format).
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// With `--metrics-addr`: how long to serve, in seconds (the metrics
    /// are refreshed every second).
    #[arg(long, default_value_t = 60)]
    for_secs: u64,
}

pub fn run(args: Args) -> CliResult {
    let dir = &args.disk.disk_dir;
    if !dir.is_dir() {
        return Err(format!("{}: no such directory", dir.display()).into());
    }
    let cache = args.disk.builder().build()?;
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
