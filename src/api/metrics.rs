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
//! | `larder_disk_compression_paced_total` | counter | | values stored raw because compression had used its budget |
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
    counter!("larder_disk_compression_paced_total").absolute(d.compression_paced);
    counter!("larder_disk_faulted_segments_total").absolute(d.faulted_segments);
    counter!("larder_disk_reclaimed_segments_total").absolute(d.reclaimed_segments);
    gauge!("larder_disk_queued_segments").set(d.queued_segments as f64);
    gauge!("larder_disk_segments").set(d.segments as f64);
    gauge!("larder_disk_failed").set(if d.failure.is_some() { 1.0 } else { 0.0 });
}

impl<S: crate::Store> crate::StoreCache<S> {
    /// Publishes the cache's metrics ([`Cache::publish_metrics`]) and, with
    /// write-behind on, its queue's:
    ///
    /// | name | kind | what |
    /// |---|---|---|
    /// | `larder_write_behind_queued` | gauge | keys queued (each its latest write) |
    /// | `larder_write_behind_oldest_seconds` | gauge | how long the oldest queued entry has waited |
    /// | `larder_write_behind_stored_total` | counter | writes applied to the store |
    /// | `larder_write_behind_batches_total` | counter | batches applied |
    /// | `larder_write_behind_coalesced_total` | counter | writes superseded in the queue |
    /// | `larder_write_behind_failures_total` | counter | batches that failed (each retried) |
    /// | `larder_write_behind_refused_total` | counter | writes refused: the queue was full |
    /// | `larder_write_behind_waited_total` | counter | writes that waited for room |
    pub fn publish_metrics(&self) {
        self.cache().publish_metrics();
        if self.behind().is_none() {
            return;
        }
        let w = self.write_behind_stats();
        gauge!("larder_write_behind_queued").set(w.queued as f64);
        gauge!("larder_write_behind_oldest_seconds").set(w.oldest_age.as_secs_f64());
        counter!("larder_write_behind_stored_total").absolute(w.stored);
        counter!("larder_write_behind_batches_total").absolute(w.batches);
        counter!("larder_write_behind_coalesced_total").absolute(w.coalesced);
        counter!("larder_write_behind_failures_total").absolute(w.failures);
        counter!("larder_write_behind_refused_total").absolute(w.refused);
        counter!("larder_write_behind_waited_total").absolute(w.waited);
    }
}

#[cfg(test)]
mod tests {
    use crate::{Bytes, Cache, Store, StoreCache, WriteBehind};
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Table(Mutex<HashMap<Vec<u8>, Bytes>>);

    impl Store for Table {
        type Error = std::io::Error;
        fn load(&self, key: &[u8]) -> std::io::Result<Option<Bytes>> {
            Ok(self.0.lock().unwrap().get(key).cloned())
        }
        fn store(&self, key: &[u8], value: &[u8]) -> std::io::Result<()> {
            self.0
                .lock()
                .unwrap()
                .insert(key.to_vec(), Bytes::copy_from_slice(value));
            Ok(())
        }
        fn delete(&self, key: &[u8]) -> std::io::Result<()> {
            self.0.lock().unwrap().remove(key);
            Ok(())
        }
    }

    #[test]
    fn write_behind_publishes_its_queue() {
        let dir = tempfile::tempdir().unwrap();
        let sc = StoreCache::new(
            Cache::builder().memory_capacity(1 << 20).build().unwrap(),
            Table::default(),
        )
        .write_behind(WriteBehind::new(dir.path()).delay(std::time::Duration::from_secs(60)))
        .unwrap();
        for v in 0..3 {
            sc.put(b"a", format!("{v}")).unwrap();
        }
        sc.put(b"b", "1").unwrap();
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || sc.publish_metrics());
        let values: HashMap<String, DebugValue> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| (key.key().name().to_string(), value))
            .collect();
        let gauge = |name: &str| match values.get(name) {
            Some(DebugValue::Gauge(g)) => g.into_inner(),
            other => panic!("{name}: {other:?}"),
        };
        let count = |name: &str| match values.get(name) {
            Some(DebugValue::Counter(c)) => *c,
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(gauge("larder_write_behind_queued"), 2.0);
        assert!(gauge("larder_write_behind_oldest_seconds") >= 0.0);
        assert_eq!(count("larder_write_behind_coalesced_total"), 2);
        assert_eq!(count("larder_write_behind_stored_total"), 0);
        assert!(
            values.contains_key("larder_hits_total"),
            "the cache's own metrics too"
        );
    }
}
