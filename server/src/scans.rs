//! `SCAN`'s cursors: each names a walk of the cache ([`larder::Cache::iter`])
//! the server keeps between the pages, so that a scan returns every key
//! present for its whole length exactly once, whichever tier holds it and
//! however it moves between them meanwhile.
//!
//! A walk keeps 8 bytes per memory entry it has passed; at most
//! [`MAX_SCANS`] walks are kept, and one untouched for [`SCAN_IDLE`] is
//! dropped (the least recently used goes first when a new one needs room).
//! A cursor whose walk was dropped, or that this server never gave, is an
//! error (`ERR invalid cursor`), never a silently short scan.

use bytes::Bytes;
use larder::{Cache, Iter};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Walks kept at once, at most.
pub const MAX_SCANS: usize = 64;
/// A walk not continued for this long is dropped.
pub const SCAN_IDLE: Duration = Duration::from_secs(600);

/// The walks of the scans under way.
pub struct Scans {
    open: Mutex<Open>,
}

struct Open {
    walks: HashMap<u64, (Iter, Instant)>,
    next: u64,
}

impl Default for Scans {
    fn default() -> Self {
        // Cursors of different runs differ, so a cursor from before a
        // restart is not taken for another walk.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Scans {
            open: Mutex::new(Open {
                walks: HashMap::new(),
                next: (seed ^ u64::from(std::process::id()) << 40) >> 1 | 1,
            }),
        }
    }
}

impl Scans {
    /// The next page of the scan at `cursor` (0: a new scan): `count` keys
    /// walked (those `keep` accepts are returned), and the cursor to go on
    /// from (0: done). `None` if `cursor` names no walk.
    pub fn page(
        &self,
        cache: &Cache,
        cursor: u64,
        count: usize,
        keep: impl Fn(&[u8]) -> bool,
    ) -> Option<(u64, Vec<Bytes>)> {
        let mut walk = if cursor == 0 {
            cache.iter()
        } else {
            self.lock().walks.remove(&cursor)?.0
        };
        let mut keys = Vec::new();
        for _ in 0..count {
            match walk.next() {
                Some((key, _)) if keep(&key) => keys.push(key),
                Some(_) => {}
                None => return Some((0, keys)),
            }
        }
        let mut open = self.lock();
        let now = Instant::now();
        open.walks
            .retain(|_, (_, used)| now.duration_since(*used) < SCAN_IDLE);
        if open.walks.len() >= MAX_SCANS {
            let oldest = open
                .walks
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(id, _)| *id);
            if let Some(id) = oldest {
                open.walks.remove(&id);
            }
        }
        let id = open.next;
        open.next = open.next.wrapping_add(1).max(1);
        open.walks.insert(id, (walk, now));
        Some((id, keys))
    }

    /// Walks kept now.
    pub fn open(&self) -> usize {
        self.lock().walks.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}
