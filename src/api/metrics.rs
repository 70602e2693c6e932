//! [`Cache::publish_metrics`]: the counters and gauges of [`Stats`] through
//! the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`), for
//! whatever recorder the service installed (a Prometheus exporter, statsd,
//! …). Nothing is recorded on the hot path: a call reads `stats()` and sets
//! each metric to its current value, so a service calls it on a timer or
//! before each scrape.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `larder_hits_total` | counter | `tier` = `memory` or `disk` | lookups that found a value in that tier |
//! | `larder_misses_total` | counter | | lookups that found nothing in either tier |
//! | `larder_inserts_total` | counter | | new keys inserted (loads included) |
//! | `larder_updates_total` | counter | | inserts that replaced a value |
//! | `larder_removes_total` | counter | | keys removed |
//! | `larder_expirations_total` | counter | | entries a lookup found expired |
//! | `larder_loads_total` | counter | | loader calls |
//! | `larder_evictions_total` | counter | `tier` = `memory` | entries memory pushed out |
//! | `larder_entries` | gauge | `tier` | entries each tier holds |
//! | `larder_weight` | gauge | `tier` = `memory` | memory's entries' weight |
//! | `larder_capacity` | gauge | `tier` | memory's weight capacity; the disk tier's bytes |
//! | `larder_disk_bytes_written_total` | counter | | bytes the disk tier wrote |
//! | `larder_disk_records_written_total` | counter | | records it wrote |
//! | `larder_disk_refused_writes_total` | counter | | writes it refused (its flusher was behind) |
//! | `larder_disk_corrupt_records_total` | counter | | records that failed their checks when read |
//! | `larder_disk_faulted_segments_total` | counter | | segments dropped after a fault under their map |
//! | `larder_disk_reclaimed_segments_total` | counter | | segments reclaim emptied |
//! | `larder_disk_queued_segments` | gauge | | sealed segments waiting for the flusher (the write queue's depth) |
//! | `larder_disk_segments` | gauge | | segment files held |
//! | `larder_disk_failed` | gauge | | 1 once the disk tier failed (it stopped writing), else 0 |
//! | `larder_removals_pending` | gauge | | removals queued for the removal listener, not yet delivered |
//! | `larder_latency_seconds` | gauge | `op` = `get`, `insert`, `remove`, `disk_read`, `load`; `quantile` = `0.5`, `0.99`, `0.999` | sampled latencies ([`LatencyStats`](crate::LatencyStats)) |
//!
//! The disk metrics appear only with a disk tier.

use crate::cache::Cache;
use crate::stats::Stats;
use ::metrics::{counter, gauge};

impl Cache {
    /// Sets every metric in the table of `larder`'s metrics module docs
    /// (names `larder_*`) to the current value of [`stats`](Self::stats),
    /// through the `metrics` facade's installed recorder (feature
    /// `metrics`). Counters are set absolutely, so calling it often or
    /// rarely gives the same series.
    pub fn publish_metrics(&self) {
        publish(&self.stats());
    }
}

fn publish(s: &Stats) {
    let disk_hits = s.disk.as_ref().map_or(0, |d| d.hits);
    counter!("larder_hits_total", "tier" => "memory").absolute(s.memory.hits);
    counter!("larder_misses_total").absolute(s.misses);
    counter!("larder_inserts_total").absolute(s.inserts);
    counter!("larder_updates_total").absolute(s.updates);
    counter!("larder_removes_total").absolute(s.removes);
    counter!("larder_expirations_total").absolute(s.expirations);
    counter!("larder_loads_total").absolute(s.loads);
    counter!("larder_evictions_total", "tier" => "memory").absolute(s.memory.evictions);
    gauge!("larder_entries", "tier" => "memory").set(s.memory.entries as f64);
    gauge!("larder_weight", "tier" => "memory").set(s.memory.weight as f64);
    gauge!("larder_capacity", "tier" => "memory").set(s.memory.capacity as f64);
    gauge!("larder_removals_pending").set(s.removals_pending as f64);
    let l = &s.latency;
    for (op, p) in [
        ("get", l.get),
        ("insert", l.insert),
        ("remove", l.remove),
        ("disk_read", l.disk_read),
        ("load", l.load),
    ] {
        for (q, d) in [("0.5", p.p50), ("0.99", p.p99), ("0.999", p.p999)] {
            gauge!("larder_latency_seconds", "op" => op, "quantile" => q).set(d.as_secs_f64());
        }
    }
    let Some(d) = &s.disk else {
        return;
    };
    counter!("larder_hits_total", "tier" => "disk").absolute(disk_hits);
    gauge!("larder_entries", "tier" => "disk").set(d.entries as f64);
    gauge!("larder_capacity", "tier" => "disk").set(d.capacity as f64);
    counter!("larder_disk_bytes_written_total").absolute(d.bytes_written);
    counter!("larder_disk_records_written_total").absolute(d.records_written);
    counter!("larder_disk_refused_writes_total").absolute(d.refused_writes);
    counter!("larder_disk_corrupt_records_total").absolute(d.corrupt_records);
    counter!("larder_disk_faulted_segments_total").absolute(d.faulted_segments);
    counter!("larder_disk_reclaimed_segments_total").absolute(d.reclaimed_segments);
    gauge!("larder_disk_queued_segments").set(d.queued_segments as f64);
    gauge!("larder_disk_segments").set(d.segments as f64);
    gauge!("larder_disk_failed").set(if d.failure.is_some() { 1.0 } else { 0.0 });
}
