//! `INFO`: Redis's sections and field names where a client or tool reads
//! them, plus larder's tiers.

use crate::commands::Shared;
use bytes::Bytes;
use std::fmt::Write;
use std::sync::atomic::Ordering;

/// The Redis version this server says it speaks (clients gate features on it).
pub const REDIS_VERSION: &str = "7.2.0";

/// The `INFO` text for the sections asked (`default`/`all`/none: every one).
pub fn info(shared: &Shared, args: &[Bytes]) -> String {
    let wanted: Vec<String> = args
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| w == "all" || w == "default" || w == "everything");
    let want = |s: &str| all || wanted.iter().any(|w| w == s);
    let stats = shared.cache.stats();
    let mut out = String::new();
    if want("server") {
        let _ = write!(
            out,
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nlarder_version:{}\r\nredis_mode:standalone\r\nos:{}\r\n\
             arch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            shared.port,
            shared.uptime().as_secs()
        );
    }
    if want("clients") {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\n\r\n",
            shared.clients.load(Ordering::Relaxed)
        );
    }
    if want("memory") {
        let _ = write!(
            out,
            "# Memory\r\nused_memory:{}\r\nmaxmemory:{}\r\nmaxmemory_policy:clock-pro\r\n\r\n",
            stats.memory.weight, stats.memory.capacity
        );
    }
    if want("persistence") {
        let disk = stats.disk.as_ref();
        let _ = write!(
            out,
            "# Persistence\r\nloading:0\r\nrdb_changes_since_last_save:0\r\naof_enabled:0\r\n\
             larder_disk_tier:{}\r\nlarder_disk_entries:{}\r\nlarder_disk_bytes_written:{}\r\nlarder_disk_healthy:{}\r\n\
             larder_syncs:{}\r\nlarder_syncs_failed:{}\r\nlarder_last_sync_time:{}\r\n\r\n",
            u8::from(disk.is_some()),
            disk.map_or(0, |d| d.entries),
            disk.map_or(0, |d| d.bytes_written),
            u8::from(disk.is_none_or(|d| d.healthy())),
            shared.syncs.done.load(Ordering::Relaxed),
            shared.syncs.failed.load(Ordering::Relaxed),
            shared.syncs.last_ok_unix.load(Ordering::Relaxed),
        );
    }
    if want("stats") {
        let disk_hits = stats.disk.as_ref().map_or(0, |d| d.hits);
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\n\
             evicted_keys:{}\r\nexpired_keys:{}\r\nlarder_memory_hits:{}\r\nlarder_disk_hits:{}\r\n\r\n",
            shared.connections.load(Ordering::Relaxed),
            shared.commands.load(Ordering::Relaxed),
            stats.memory.hits + disk_hits,
            stats.misses,
            stats.memory.evictions,
            stats.expirations,
            stats.memory.hits,
            disk_hits
        );
    }
    if want("keyspace") {
        let _ = write!(out, "# Keyspace\r\n");
        let keys = shared.cache.entry_count();
        if keys > 0 {
            let _ = write!(out, "db0:keys={keys},expires=0,avg_ttl=0\r\n");
        }
    }
    out
}
