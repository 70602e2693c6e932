//! The disk tier given compressible values (`L2_BENCH_ONLY=compressible`):
//! text-like values at three compression budgets against incompressible
//! values and the device. Results: docs/benchmarks.md §16.

use super::{BUFFERED, VALUE, device_mib_s, larder_run_with, median, remove_closed, settle};
use bytes::Bytes;
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::path::Path;

/// 256 distinct text-like values (JSON records from a small vocabulary with
/// random numbers), which zstd level 1 shrinks about 4 times.
fn text_values() -> Vec<Bytes> {
    let mut rng = StdRng::seed_from_u64(2);
    let words = [
        "alpha", "beta", "gamma", "delta", "red", "blue", "open", "closed",
    ];
    (0..256)
        .map(|_| {
            let mut v = String::with_capacity(VALUE + 200);
            while v.len() < VALUE {
                let (a, b) = (rng.random_range(0..8), rng.random_range(0..8));
                v.push_str(&format!(
                    "{{\"id\":{},\"user\":\"user_{}\",\"state\":\"{}\",\"tags\":[\"{}\",\"{}\"],\"score\":{:.3}}}\n",
                    rng.random_range(0..1_000_000),
                    rng.random_range(0..5000),
                    words[a],
                    words[b],
                    words[(a + b) % 8],
                    rng.random::<f64>()
                ));
            }
            v.truncate(VALUE);
            Bytes::from(v)
        })
        .collect()
}

/// Compressible values against incompressible ones and the device: in each
/// round, the buffered writers, then larder given incompressible values and
/// text-like values at three compression budgets (none, the default, no
/// limit), then the buffered writers again (the baseline is the best
/// writer's mean of the two).
pub fn run(base: &Path, mib: u64, rounds: usize, keys: u64, noise: &[Bytes]) {
    let text = text_values();
    let budgets = [0.0, larder::DEFAULT_COMPRESSION_BUDGET, f64::INFINITY];
    println!(
        "## Disk tier: {mib} MiB of {VALUE}-byte values a writer, compressible or not, {rounds} rounds\n"
    );
    println!(
        "MiB/s of values inserted (timed to `sync()`), and / the buffered baseline; \
         for text: stored bytes / value bytes, values stored raw for the budget.\n"
    );
    println!(
        "| round | buffered | incompressible | text, budget 0 | text, budget {} | text, no budget |",
        budgets[1]
    );
    println!("|---|---|---|---|---|---|");
    let mut ratios = vec![Vec::new(); 1 + budgets.len()];
    for round in 0..rounds {
        let dir = tempfile::tempdir_in(base).unwrap();
        let device = |writer| {
            settle(dir.path(), mib << 20);
            device_mib_s(dir.path(), mib << 20, writer)
        };
        let larder = |values: &[Bytes], budget| {
            settle(dir.path(), 0);
            let run = larder_run_with(dir.path(), keys, values, false, budget);
            remove_closed(&dir.path().join("larder"));
            run
        };
        let before: Vec<f64> = BUFFERED.iter().map(|&w| device(w)).collect();
        let mut runs = vec![larder(noise, larder::DEFAULT_COMPRESSION_BUDGET)];
        runs.extend(budgets.iter().map(|&b| larder(&text, b)));
        let after: Vec<f64> = BUFFERED.iter().rev().map(|&w| device(w)).collect();
        let buffered = before
            .iter()
            .zip(after.iter().rev())
            .map(|(b, a)| (b + a) / 2.0)
            .fold(0.0, f64::max);
        let cells: Vec<String> = runs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (stored, paced) = r.stored.unwrap();
                let text = if i == 0 {
                    String::new()
                } else {
                    format!("; {stored:.3}, {paced}")
                };
                let (ns, on_cpu) = r.inserter.unwrap();
                let (busy, rate) = r.flusher.unwrap();
                format!(
                    "{:.0} = {:.2}{text}; {ns:.0} ns CPU an insert, {:.0}% on CPU; flusher {:.0}% busy at {rate:.0}",
                    r.mib_s,
                    r.mib_s / buffered,
                    on_cpu * 100.0,
                    busy * 100.0
                )
            })
            .collect();
        println!("| {round} | {buffered:.0} | {} |", cells.join(" | "));
        for (i, r) in runs.iter().enumerate() {
            ratios[i].push(r.mib_s / buffered);
        }
    }
    let medians: Vec<String> = ratios
        .into_iter()
        .map(|r| format!("{:.2}", median(r)))
        .collect();
    println!(
        "\nmedians / buffered: incompressible {}, text at budgets 0 / {} / none: {}",
        medians[0],
        budgets[1],
        medians[1..].join(" / ")
    );
}
