//! The contract's crash promise as a check (contract.md, promise 7): after a
//! crash, the values read must all be the values their keys had at one moment
//! between the last completed `sync()` and the crash. Absent keys are always
//! allowed (a cache may forget).
//!
//! Shared by `tests/crash_loop.rs`, `tests/restart_model.rs` and the fuzz
//! target `restart_ops` (which includes this file by path).

use std::collections::HashMap;

/// The writes since a known state: enough to say which values each key had
/// at each moment. Moment `m` is the state after the first `m` operations.
#[derive(Default)]
pub struct History {
    /// Key → version at moment 0.
    pub start: HashMap<u64, u64>,
    /// (key, Some(version) for a write or None for a remove), in order.
    pub ops: Vec<(u64, Option<u64>)>,
    /// Operations completed before the last completed sync.
    pub synced: usize,
}

impl History {
    pub fn write(&mut self, key: u64, version: u64) {
        self.ops.push((key, Some(version)));
    }

    pub fn remove(&mut self, key: u64) {
        self.ops.push((key, None));
    }

    pub fn sync(&mut self) {
        self.synced = self.ops.len();
    }

    /// Every key's version at the last moment (after all operations).
    pub fn last(&self) -> HashMap<u64, u64> {
        let mut state = self.start.clone();
        for &(k, v) in &self.ops {
            match v {
                Some(v) => state.insert(k, v),
                None => state.remove(&k),
            };
        }
        state
    }

    /// The moments `from..=to` at which `key` held `version`, if any.
    fn held(&self, key: u64, version: u64) -> Option<(usize, usize)> {
        let mut from = (self.start.get(&key) == Some(&version)).then_some(0);
        for (i, &(k, v)) in self.ops.iter().enumerate() {
            if k != key {
                continue;
            }
            if let Some(f) = from {
                return Some((f, i)); // until op i changed it
            }
            if v == Some(version) {
                from = Some(i + 1);
            }
        }
        from.map(|f| (f, self.ops.len()))
    }

    /// Checks values read after a crash (key → version); the violations.
    pub fn check_crash(&self, seen: &HashMap<u64, u64>) -> Vec<String> {
        let mut bad = Vec::new();
        let (mut lo, mut hi) = (self.synced, self.ops.len());
        let mut keys: Vec<_> = seen.iter().collect();
        keys.sort();
        for (&key, &version) in keys {
            let Some((from, to)) = self.held(key, version) else {
                bad.push(format!("key {key}: version {version} was never its value"));
                continue;
            };
            lo = lo.max(from);
            hi = hi.min(to);
            if lo > hi {
                bad.push(format!(
                    "key {key}: version {version} held only at moments {from}..={to}, outside \
                     what the other keys allow (last sync after {} of {} operations)",
                    self.synced,
                    self.ops.len()
                ));
                (lo, hi) = (self.synced, self.ops.len());
            }
        }
        bad
    }

    /// Checks values read after a clean close: exactly the last values.
    pub fn check_clean(&self, seen: &HashMap<u64, u64>) -> Vec<String> {
        let last = self.last();
        let mut keys: Vec<_> = seen.iter().collect();
        keys.sort();
        keys.into_iter()
            .filter(|&(k, v)| last.get(k) != Some(v))
            .map(|(k, v)| format!("key {k}: version {v} after a clean close, not its last value"))
            .collect()
    }

    /// Starts over from what was read.
    pub fn restart_from(&mut self, seen: HashMap<u64, u64>) {
        *self = History {
            start: seen,
            ..History::default()
        };
    }
}
