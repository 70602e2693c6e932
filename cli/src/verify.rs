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
            "expired_entries": r.expired_entries,
            "corrupt_records": r.corrupt_records,
            "corrupt_segments": r.corrupt_segments,
            "missing_segments": r.missing_segments,
            "lost_segments": r.lost_segments,
            "unproven_records": r.unproven_records,
            "void_records": r.void_records,
            "repairable": r.repairable,
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
            "  {} segments ({} sealed), {} records, {} live entries, {} expired",
            r.segments, r.sealed_segments, r.records, r.live_entries, r.expired_entries
        );
        println!(
            "  {} corrupt records, {} corrupt segments, {} missing, {} lost, {} torn tails, {} foreign files",
            r.corrupt_records,
            r.corrupt_segments,
            r.missing_segments,
            r.lost_segments,
            r.torn_tails,
            r.foreign_files
        );
        println!(
            "  the next open drops {} records as unproven (a lost segment may have held newer ones) and {} as void (after a crash's cut)",
            r.unproven_records, r.void_records
        );
        println!(
            "  {} probation segments; {}",
            r.probation_segments,
            if r.closed_cleanly {
                "closed cleanly"
            } else {
                "not closed cleanly (a crash, or damage)"
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
            "{} is corrupt ({} records, {} segments, {} lost)",
            args.disk_dir.display(),
            r.corrupt_records,
            r.corrupt_segments,
            r.lost_segments
        )
        .into())
    }
}
