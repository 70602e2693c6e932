//! Which sealed segments are mapped: maps are made on a segment's first read,
//! their number is bounded per tier (the least recently read segment lets go
//! of its map first), and a segment whose map faulted is read no more.
//!
//! A map lives in its segment's [`MapSlot`]; a read copies out of it under
//! the slot's read lock, so a map is dropped (unmapped, `mapped.rs`) only
//! when no read is in it: by the bound, under the write lock, or with its
//! segment file when reclaim has unlisted the file and its last reader is
//! done (files are shared by `Arc`). Segment ids are never reused, so a map
//! is never read for another segment's bytes.

use super::mapped::{Faulted, Map};
use super::segment::SegmentFile;
use crate::sync::{Arc, AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering, RwLock};
use std::collections::BTreeMap;
use std::sync::Weak;

/// How the disk tier reads sealed segments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadPath {
    /// Through read-only memory maps (the default): a page-cache hit costs a
    /// copy, no system call. A segment file truncated under its map by
    /// another process is a counted miss, not a crash (a SIGBUS handler
    /// maps zeros over the page; docs/design.md §8.5).
    #[default]
    Mmap,
    /// With positional reads (`pread`), one system call a read.
    Pread,
}

impl ReadPath {
    /// The setting's name, as `stats()` and `larder replay --json` show it.
    pub fn name(self) -> &'static str {
        match self {
            ReadPath::Mmap => "mmap",
            ReadPath::Pread => "pread",
        }
    }
}

/// The default bound on a tier's maps: 4,096 (256 GiB of 64 MiB segments),
/// far below the kernel's default of 65,530 maps a process.
pub const DEFAULT_MAX_MAPS: usize = 4096;

/// A segment file's map, while it has one.
#[derive(Default)]
pub(crate) struct MapSlot {
    map: RwLock<Option<Map>>,
    /// The tier's epoch when the segment was last read through its map.
    used: AtomicU64,
    /// A fault hit the map, or the file was too short to map: reads of the
    /// segment are misses from then on.
    failed: AtomicBool,
    /// The segment could not be mapped: it is read with `pread`.
    unmappable: AtomicBool,
}

impl MapSlot {
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Marks the segment failed; whether this call did (the first).
    pub(crate) fn fail(&self) -> bool {
        !self.failed.swap(true, Ordering::AcqRel)
    }
}

/// What a read through the maps found.
pub(crate) enum Mapped<T> {
    /// The read's result.
    Read(T),
    /// The segment is not mapped and cannot be (the process's registry is
    /// full, or `mmap` refused): read it with `pread`.
    Unmapped,
    /// The segment failed (a fault, or a file shorter than a segment): a
    /// miss. `first` is true for the read that found it out.
    Failed { first: bool },
}

/// A tier's maps.
pub(crate) struct Maps {
    max: usize,
    /// Bumped by every map made: a slot's `used` equal to it means "read
    /// since the last map was made".
    epoch: AtomicU64,
    /// The segments holding a map (made or dropped under this lock).
    holders: Mutex<BTreeMap<u32, Weak<SegmentFile>>>,
    open: AtomicUsize,
}

impl Maps {
    pub(crate) fn new(max: usize) -> Self {
        Maps {
            max,
            epoch: AtomicU64::new(1),
            holders: Mutex::new(BTreeMap::new()),
            open: AtomicUsize::new(0),
        }
    }

    /// Maps open now (an upper bound: a map dropped with its file is
    /// counted until the next map is made).
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Runs `read` on `file`'s map (made if it has none), `len` bytes long.
    pub(crate) fn read<T>(
        &self,
        file: &Arc<SegmentFile>,
        len: usize,
        read: impl Fn(&Map) -> Result<T, Faulted>,
    ) -> Mapped<T> {
        let slot = &file.map;
        loop {
            if slot.failed() {
                return Mapped::Failed { first: false };
            }
            if slot.unmappable.load(Ordering::Relaxed) {
                return Mapped::Unmapped;
            }
            {
                let map = slot.map.read();
                if let Some(map) = &*map {
                    let epoch = self.epoch.load(Ordering::Relaxed);
                    if slot.used.load(Ordering::Relaxed) != epoch {
                        slot.used.store(epoch, Ordering::Relaxed);
                    }
                    return match read(map) {
                        Ok(v) => Mapped::Read(v),
                        // A fault, or a read past a map as long as a segment.
                        Err(Faulted::Fault | Faulted::OutOfRange) => {
                            Mapped::Failed { first: slot.fail() }
                        }
                    };
                }
            }
            match self.make(file, len) {
                Made::Mapped => continue,
                Made::Unmapped => {
                    slot.unmappable.store(true, Ordering::Relaxed);
                    return Mapped::Unmapped;
                }
                Made::Failed => return Mapped::Failed { first: slot.fail() },
            }
        }
    }

    /// Gives `file` a map, letting go of the least recently read one if the
    /// tier holds its bound.
    fn make(&self, file: &Arc<SegmentFile>, len: usize) -> Made {
        let mut holders = self.holders.lock();
        if file.map.map.read().is_some() {
            return Made::Mapped; // another reader made it meanwhile
        }
        match file.file.metadata() {
            Ok(m) if m.len() >= len as u64 => {}
            // Truncated behind larder's back (or unreadable): a sealed
            // segment is exactly `len` bytes long.
            _ => return Made::Failed,
        }
        holders.retain(|_, f| f.strong_count() > 0);
        while holders.len() >= self.max {
            let victim = holders
                .iter()
                .filter_map(|(&id, f)| f.upgrade().map(|f| (id, f)))
                .min_by_key(|(_, f)| f.map.used.load(Ordering::Relaxed));
            let Some((id, victim)) = victim else { break };
            holders.remove(&id);
            victim.map.map.write().take();
        }
        let map = match Map::new(&file.file, len) {
            Ok(map) => map,
            Err(e) => {
                log::warn!("segment {} read with pread: cannot map it: {e}", file.id);
                return Made::Unmapped;
            }
        };
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        file.map.used.store(epoch, Ordering::Relaxed);
        *file.map.map.write() = Some(map);
        holders.insert(file.id, Arc::downgrade(file));
        self.open.store(holders.len(), Ordering::Relaxed);
        Made::Mapped
    }
}

enum Made {
    Mapped,
    Unmapped,
    Failed,
}
