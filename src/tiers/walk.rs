//! A walk over both tiers, for iteration and bulk invalidation: memory's
//! shards one at a time (each under its read lock, copying out its live
//! entries), then the disk index's stripes one at a time (copying out the
//! hashes, then reading each record outside every lock).
//!
//! What it yields: each key at most once, with a value that was live when it
//! was read (memory's, whenever memory holds the key: it is never older than
//! the disk's record). A key present and unchanged from the walk's start to
//! its end is yielded. A key written, removed or moved between the tiers
//! meanwhile may or may not be. Memory's hashes are kept (8 bytes each,
//! sorted) to skip the disk's copies of what memory yielded; the disk's are
//! copied out one stripe (of 256) at a time.

use super::Tiers;
use crate::disk::INDEX_STRIPES;
use crate::key::KeyBuf;
use bytes::Bytes;

/// Where a walk is.
#[derive(Default)]
pub(crate) struct Walk {
    /// The next memory shard, then (past the last) the next index stripe.
    next: usize,
    /// Memory entries copied out of a shard, not yet yielded.
    entries: Vec<(u64, KeyBuf, Bytes)>,
    /// Hashes copied out of an index stripe, not yet read.
    hashes: Vec<u64>,
    /// The hashes memory yielded, sorted once memory is done.
    yielded: Vec<u64>,
    sorted: bool,
    /// Yield expired entries too (for invalidation, which clears them).
    expired_too: bool,
}

impl Walk {
    /// A walk that also yields entries past their deadline but not yet
    /// removed, so that removing what it yields clears them too.
    pub(crate) fn expired_too() -> Self {
        Walk {
            expired_too: true,
            ..Walk::default()
        }
    }
}

impl Tiers {
    /// The walk's next key and value, or `None` at its end (at once if the
    /// cache is closed).
    pub(crate) fn walk_next(&self, w: &mut Walk) -> Option<(Bytes, Bytes)> {
        let shards = self.memory.shard_count();
        loop {
            if self.is_closed() {
                return None;
            }
            if let Some((hash, key, value)) = w.entries.pop() {
                w.yielded.push(hash);
                return Some((Bytes::copy_from_slice(key.as_slice()), value));
            }
            // Time 0: nothing has expired yet.
            let at = w.expired_too.then_some(0);
            if w.next < shards {
                self.memory.entries_at(w.next, at, &mut w.entries);
                w.next += 1;
                continue;
            }
            if !w.sorted {
                w.yielded.sort_unstable();
                w.sorted = true;
            }
            let lower = self.lower.as_ref()?;
            if let Some(hash) = w.hashes.pop() {
                if w.yielded.binary_search(&hash).is_ok() {
                    continue;
                }
                let now = at.unwrap_or_else(|| self.memory.clock().now());
                // A key on its way from memory to disk is met on disk.
                lower.disk().wait_unreserved(hash);
                let Some((key, value, _, _)) = lower.read_by_hash(hash, now) else {
                    continue; // removed, expired or reclaimed since
                };
                // Memory's value, if it holds the key now, is the newer.
                let value = self.memory.peek(hash, &key).unwrap_or(value);
                return Some((Bytes::from(key), value));
            }
            let stripe = w.next - shards;
            if stripe == INDEX_STRIPES {
                return None;
            }
            lower.disk().key_hashes(stripe, &mut w.hashes);
            w.next += 1;
        }
    }

    /// Distinct keys held: memory's live entries plus the disk's records of
    /// keys memory does not hold (as far as the disk index's flags know).
    pub(crate) fn entry_count(&self) -> u64 {
        let memory = self.memory.snapshot().counts.resident as u64;
        let disk = self
            .lower
            .as_ref()
            .map_or(0, |l| l.disk().keys_outside_memory() as u64);
        memory + disk
    }
}
