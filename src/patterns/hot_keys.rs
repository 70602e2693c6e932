//! Hot-key detection: the most requested keys of the recent past, from a
//! sample of the lookups, in bounded memory.
//!
//! One `get` in [`SAMPLE`] per thread is recorded, on average (a
//! thread-local count and a branch on every `get`; nothing at all when
//! detection is off). The gaps between samples are random (uniform in
//! 1..2×`SAMPLE`), so a periodic request pattern cannot alias with the
//! sampler: a thread that alternates two keys has both sampled. A
//! recorded key's hash counts in a count-min sketch ([`ROWS`] rows of
//! [`WIDTH`] counters): its estimate is the least of its counters, never
//! under its true count. Beside the sketch, the [`TOP`] keys with the
//! highest estimates are kept with their keys: a key enters when its
//! estimate beats the least of them, which a key of the long tail rarely
//! does, so most records cost the sketch's four increments and nothing
//! more. Every [`AGE_EVERY`] samples every count is halved, so the past
//! fades (a window of about twice that many samples) and the top follows
//! the stream. A record that finds the lock taken is skipped: the hit path
//! never waits.

use crate::sync::Mutex;
use bytes::Bytes;
use std::cell::Cell;

/// One `get` in this many per thread is recorded.
pub const SAMPLE: u32 = 16;
/// Rows of the count-min sketch.
pub const ROWS: usize = 4;
/// Counters per row (a power of two).
pub const WIDTH: usize = 4096;
/// Keys kept with their estimates: the candidates for the top.
pub const TOP: usize = 64;
/// Samples between two halvings of every count.
pub const AGE_EVERY: u32 = 1 << 15;

/// Sketches a tracker keeps: each thread records into one of them (its
/// own, up to this many threads), so that threads do not share a lock's
/// cache line; `top` adds up the estimates of a key over all of them.
pub const SKETCHES: usize = 4;

thread_local! {
    static UNTIL_SAMPLE: Cell<u32> = const { Cell::new(1) };
    /// The generator of the gaps (xorshift32; never zero).
    static GAP_STATE: Cell<u32> = const { Cell::new(0x9E37_79B9) };
    /// The sketch this thread records into.
    static SKETCH: usize = {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % SKETCHES
    };
}

/// A random gap, uniform in `1..2 * SAMPLE` (mean `SAMPLE`).
#[cold]
fn next_gap() -> u32 {
    GAP_STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        s.set(x);
        1 + x % (2 * SAMPLE - 1)
    })
}

/// Whether this `get` is one to record.
#[inline]
pub(crate) fn sampled() -> bool {
    UNTIL_SAMPLE.with(|n| {
        let left = n.get() - 1;
        if left == 0 {
            n.set(next_gap());
            true
        } else {
            n.set(left);
            false
        }
    })
}

/// One of the top candidates.
struct Candidate {
    estimate: u32,
    key: Vec<u8>,
}

struct Sketch {
    counts: Box<[u32]>,
    /// The candidates' hashes, apart (one scan finds a key), and theirs.
    hashes: Vec<u64>,
    top: Vec<Candidate>,
    /// The candidate with the least estimate, and that estimate (0 until
    /// the candidates are [`TOP`]).
    least: usize,
    floor: u32,
    samples: u32,
}

impl Sketch {
    fn new() -> Self {
        Sketch {
            counts: vec![0; ROWS * WIDTH].into_boxed_slice(),
            hashes: Vec::with_capacity(TOP),
            top: Vec::with_capacity(TOP),
            least: 0,
            floor: 0,
            samples: 0,
        }
    }

    fn record(&mut self, hash: u64, key: &[u8]) {
        // Four 12-bit slices of the hash pick a counter in each row.
        let mut estimate = u32::MAX;
        for row in 0..ROWS {
            let i = row * WIDTH + ((hash >> (row * 16)) as usize & (WIDTH - 1));
            let c = &mut self.counts[i];
            *c = c.saturating_add(1);
            estimate = estimate.min(*c);
        }
        if estimate > self.floor || self.top.len() < TOP {
            self.offer(hash, key, estimate);
        }
        self.samples += 1;
        if self.samples >= AGE_EVERY {
            self.age();
        }
    }

    /// The sampled requests of `hash` (the least of its counters).
    fn estimate(&self, hash: u64) -> u32 {
        (0..ROWS)
            .map(|row| self.counts[row * WIDTH + ((hash >> (row * 16)) as usize & (WIDTH - 1))])
            .min()
            .unwrap_or(0)
    }

    /// A key whose estimate may place it among the top.
    #[cold]
    fn offer(&mut self, hash: u64, key: &[u8], estimate: u32) {
        let found = self
            .hashes
            .iter()
            .position(|&h| h == hash)
            .filter(|&i| self.top[i].key == key);
        let at = match found {
            Some(i) => {
                self.top[i].estimate = estimate;
                i
            }
            None if self.top.len() < TOP => {
                self.hashes.push(hash);
                self.top.push(Candidate {
                    estimate,
                    key: key.to_vec(),
                });
                self.top.len() - 1
            }
            None => {
                // The least candidate makes room (estimates only grow
                // between halvings, so it is still the least).
                let i = self.least;
                self.hashes[i] = hash;
                let c = &mut self.top[i];
                c.estimate = estimate;
                c.key.clear();
                c.key.extend_from_slice(key);
                i
            }
        };
        // Only a change of the least candidate can move the floor.
        if self.top.len() == TOP && (at == self.least || self.floor == 0) {
            self.find_least();
        }
    }

    fn find_least(&mut self) {
        let least = (0..self.top.len()).min_by_key(|&i| self.top[i].estimate);
        self.least = least.unwrap_or(0);
        self.floor = self.top.get(self.least).map_or(0, |c| c.estimate);
    }

    fn age(&mut self) {
        self.samples = 0;
        for c in self.counts.iter_mut() {
            *c >>= 1;
        }
        for c in &mut self.top {
            c.estimate >>= 1;
        }
        if self.top.len() == TOP {
            self.find_least();
        }
    }
}

/// The hot-key tracker a cache holds when detection is on.
pub(crate) struct HotKeys {
    sketches: Box<[crossbeam_utils::CachePadded<Mutex<Sketch>>]>,
}

impl Default for HotKeys {
    fn default() -> Self {
        HotKeys {
            sketches: (0..SKETCHES)
                .map(|_| crossbeam_utils::CachePadded::new(Mutex::new(Sketch::new())))
                .collect(),
        }
    }
}

impl HotKeys {
    /// Records a sampled request for `key` (of `hash`; skipped if another
    /// thread is recording).
    pub(crate) fn record(&self, hash: u64, key: &[u8]) {
        let i = SKETCH.with(|i| *i);
        if let Some(mut s) = self.sketches[i].try_lock() {
            s.record(hash, key);
        }
    }

    /// The `k` most requested keys, most requested first, with their
    /// estimated requests since the counts were last halved and half of
    /// those before (sampled estimates × [`SAMPLE`]).
    pub(crate) fn top(&self, k: usize) -> Vec<(Bytes, u64)> {
        let mut sum: std::collections::HashMap<Vec<u8>, u64> = Default::default();
        for sketch in self.sketches.iter() {
            for c in &sketch.lock().top {
                *sum.entry(c.key.clone()).or_default() += u64::from(c.estimate);
            }
        }
        let mut all: Vec<_> = sum.into_iter().collect();
        all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.into_iter()
            .take(k)
            .map(|(key, n)| (Bytes::from(key), n * u64::from(SAMPLE)))
            .collect()
    }
}

impl HotKeys {
    /// The estimated requests of `hash`, summed over the sketches.
    pub(crate) fn estimate(&self, hash: u64) -> u64 {
        let sampled: u64 = self
            .sketches
            .iter()
            .map(|s| u64::from(s.lock().estimate(hash)))
            .sum();
        sampled * u64::from(SAMPLE)
    }
}

impl crate::Cache {
    /// The estimated requests of `key` in the window of
    /// [`hot_keys`](Self::hot_keys) (sampled requests × 16, never under the
    /// sampled count, for any key, not only the top ones), or `None` unless
    /// the cache was built with
    /// [`track_hot_keys`](crate::CacheBuilder::track_hot_keys). A key never
    /// requested may be estimated above 0 when it shares counters with
    /// busy keys.
    ///
    /// ```
    /// let cache = larder::Cache::builder().memory_capacity(1 << 20).track_hot_keys().build()?;
    /// for _ in 0..10_000 {
    ///     cache.get(b"hot");
    /// }
    /// assert!(cache.hot_key_estimate(b"hot").unwrap() >= 8_000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn hot_key_estimate(&self, key: &[u8]) -> Option<u64> {
        self.hot().map(|h| h.estimate(crate::key::hash_key(key)))
    }

    /// The `k` most requested keys of the recent past (each count is
    /// halved every 32,768 samples, one `get` in 16 sampled: a window of
    /// about a million `get`s), most requested first, each with an estimate
    /// of its requests in that window (sampled requests × 16; the sketch
    /// may overcount a little, never under). At most 64 × 4 keys are known.
    /// Empty unless the cache was built with
    /// [`track_hot_keys`](crate::CacheBuilder::track_hot_keys).
    ///
    /// ```
    /// let cache = larder::Cache::builder().memory_capacity(1 << 20).track_hot_keys().build()?;
    /// for i in 0..10_000u32 {
    ///     cache.get(b"hot");
    ///     cache.get(&i.to_le_bytes());
    /// }
    /// assert_eq!(&cache.hot_keys(1)[0].0[..], b"hot");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn hot_keys(&self, k: usize) -> Vec<(Bytes, u64)> {
        self.hot().map_or_else(Vec::new, |h| h.top(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::hash_key;

    #[test]
    fn the_heaviest_keys_come_first_and_the_past_fades() {
        let h = HotKeys::default();
        let record = |k: &[u8]| h.record(hash_key(k), k);
        for round in 0..1_000u32 {
            record(b"a");
            if round % 2 == 0 {
                record(b"b");
            }
            record(&round.to_le_bytes()); // a long tail, each once
        }
        let top = h.top(2);
        assert_eq!(&top[0].0[..], b"a");
        assert_eq!(&top[1].0[..], b"b");
        assert!(top[0].1 >= 1_000 * u64::from(SAMPLE), "{top:?}");
        // Another key, for long: the first ones fall behind it.
        for _ in 0..4 * AGE_EVERY {
            record(b"z");
        }
        let top = h.top(3);
        assert_eq!(&top[0].0[..], b"z", "{top:?}");
        assert!(top[1].1 * 100 < top[0].1, "{top:?}");
    }
}
