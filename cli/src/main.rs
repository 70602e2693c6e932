//! The `larder` command-line tool: `demo` shows the engine at work, `replay`
//! measures the policy on a trace, `verify` checks a disk tier's directory,
//! `stats` reports (or serves as Prometheus metrics) a directory's statistics,
//! `warm` loads a key list from an SQLite table into a directory, `serve`
//! speaks the Redis protocol.

mod demo;
mod disk_args;
mod replay;
mod serve;
mod stats;
mod verify;
mod warm;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "larder", version, about = "An embedded, tiered cache engine", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a synthetic Zipf workload against an embedded cache and print a summary.
    Demo(demo::Args),
    /// Replay a trace (one key per line) and report hits and misses.
    Replay(replay::Args),
    /// Check every segment, record and checkpoint of a disk tier's directory,
    /// without changing it; exits non-zero if anything is corrupt.
    Verify(verify::Args),
    /// Open a disk tier's directory and print its statistics, or serve them
    /// as Prometheus metrics over HTTP (`--metrics-addr`).
    Stats(stats::Args),
    /// Load the keys listed in a file from an SQLite table into a disk
    /// tier's directory (with a progress bar), so the next open is warm.
    Warm(warm::Args),
    /// Serve the cache over the Redis protocol (RESP2 and RESP3) until
    /// SIGTERM or SIGINT, then close it cleanly (the next start is warm).
    Serve(serve::Args),
}

/// Errors the tool reports to a person: a message, exit status 1.
type CliResult = Result<(), Box<dyn std::error::Error>>;

/// The library logs through the `log` facade; the tool prints its records
/// to stderr, warnings and errors by default (`LARDER_LOG=info` or `debug`
/// for more).
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            eprintln!(
                "larder: {}: {}",
                record.level().as_str().to_lowercase(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

fn main() -> ExitCode {
    static LOGGER: StderrLog = StderrLog;
    let level = std::env::var("LARDER_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(log::LevelFilter::Warn);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
    let cli = Cli::parse();
    let result: CliResult = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Stats(args) => stats::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Warm(args) => warm::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("larder: error: {e}");
            ExitCode::FAILURE
        }
    }
}
