//! [`Cache::health`](crate::Cache::health): whether the cache is doing its
//! job, and if not, why, for a readiness probe or an alert.
//!
//! Unhealthy: the disk tier failed (a write or `fdatasync` failed, a full
//! disk among the causes; it stopped writing and memory serves on), or the
//! cache is closed. Degraded: since the previous call, writes were refused
//! (the disk tier is behind), records failed their checks, or segments
//! faulted under their maps; or recovery quarantined files when the
//! directory was opened. Counts are deltas since the previous call on any
//! handle of the cache (the first call counts from the open), so a probe
//! that calls it periodically sees each event once.

use crate::stats::Stats;
use crate::sync::Mutex;

/// What [`Cache::health`](crate::Cache::health) found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// Nothing to report.
    Healthy,
    /// Serving, with these problems.
    Degraded(Vec<HealthIssue>),
    /// Not doing its job: the disk tier stopped writing, or the cache is closed.
    Unhealthy(Vec<HealthIssue>),
}

impl Health {
    /// Whether nothing was found.
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy)
    }

    /// The problems found (none when healthy).
    pub fn issues(&self) -> &[HealthIssue] {
        match self {
            Health::Healthy => &[],
            Health::Degraded(i) | Health::Unhealthy(i) => i,
        }
    }
}

/// One problem [`Health`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HealthIssue {
    /// The disk tier failed and stopped writing; the reason names the error
    /// (for a full disk, the operating system's "no space left").
    DiskFailed(String),
    /// The cache is closed.
    Closed,
    /// Writes the disk tier refused because it was behind, since the
    /// previous call (the values stayed in memory).
    WritesRefused(u64),
    /// Records that failed their checks when read, since the previous call.
    CorruptRecords(u64),
    /// Segments dropped after a fault under their map, since the previous call.
    FaultedSegments(u64),
    /// Files recovery quarantined when the directory was opened.
    QuarantinedAtOpen(u64),
}

/// The disk counters seen at the previous call.
#[derive(Default)]
pub(crate) struct HealthWatch {
    seen: Mutex<[u64; 3]>,
}

impl HealthWatch {
    pub(crate) fn check(&self, stats: &Stats, closed: bool) -> Health {
        let mut bad = Vec::new();
        let mut degraded = Vec::new();
        if closed {
            bad.push(HealthIssue::Closed);
        }
        if let Some(d) = &stats.disk {
            if let (Some(why), false) = (&d.failure, d.closed) {
                bad.push(HealthIssue::DiskFailed(why.clone()));
            }
            let now = [d.refused_writes, d.corrupt_records, d.faulted_segments];
            let before = std::mem::replace(&mut *self.seen.lock(), now);
            let [refused, corrupt, faulted] = [0, 1, 2].map(|i| now[i].saturating_sub(before[i]));
            if refused > 0 {
                degraded.push(HealthIssue::WritesRefused(refused));
            }
            if corrupt > 0 {
                degraded.push(HealthIssue::CorruptRecords(corrupt));
            }
            if faulted > 0 {
                degraded.push(HealthIssue::FaultedSegments(faulted));
            }
            if d.recovery.quarantined_files > 0 {
                degraded.push(HealthIssue::QuarantinedAtOpen(d.recovery.quarantined_files));
            }
        }
        match (bad.is_empty(), degraded.is_empty()) {
            (true, true) => Health::Healthy,
            (true, false) => Health::Degraded(degraded),
            (false, _) => {
                bad.extend(degraded);
                Health::Unhealthy(bad)
            }
        }
    }
}
