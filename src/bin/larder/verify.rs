//! `larder verify`: checks a disk tier's directory without changing it.

use crate::CliResult;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The disk tier's directory.
    #[arg(long)]
    disk_dir: PathBuf,
    /// Print one JSON object instead of a report.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args) -> CliResult {
    let r = larder::verify_dir(&args.disk_dir)?;
    if args.json {
        let report = serde_json::json!({
            "disk_dir": args.disk_dir.display().to_string(),
            "clean": r.is_clean(),
            "segments": r.segments,
            "sealed_segments": r.sealed_segments,
            "records": r.records,
            "live_entries": r.live_entries,
            "corrupt_records": r.corrupt_records,
            "corrupt_segments": r.corrupt_segments,
            "torn_tails": r.torn_tails,
            "foreign_files": r.foreign_files,
            "probation_segments": r.probation_segments,
            "closed_cleanly": r.closed_cleanly,
            "checkpoint": r.checkpoint,
            "problems": r.problems,
        });
        println!("{report}");
    } else {
        println!("{}", args.disk_dir.display());
        println!(
            "  {} segments ({} sealed), {} records, {} live entries",
            r.segments, r.sealed_segments, r.records, r.live_entries
        );
        println!(
            "  {} corrupt records, {} corrupt segments, {} torn tails, {} foreign files",
            r.corrupt_records, r.corrupt_segments, r.torn_tails, r.foreign_files
        );
        println!(
            "  {} probation segments; {}",
            r.probation_segments,
            if r.closed_cleanly {
                "closed cleanly"
            } else {
                "not closed cleanly: the next open discards the probation stream"
            }
        );
        println!("  checkpoint: {}", r.checkpoint);
        for p in &r.problems {
            println!("  - {p}");
        }
        println!("  {}", if r.is_clean() { "clean" } else { "CORRUPT" });
    }
    if r.is_clean() {
        Ok(())
    } else {
        Err(format!(
            "{} is corrupt ({} records, {} segments)",
            args.disk_dir.display(),
            r.corrupt_records,
            r.corrupt_segments
        )
        .into())
    }
}
