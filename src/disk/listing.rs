//! The segment list as the tier keeps it (format.md §2.2): read at open,
//! changed at every seal and reclaim, rewritten atomically (both copies, one
//! directory sync) each time it changes.

use super::DiskError;
use super::dir::{LIST_FILES, keys_name, remove_if_there, sync_dir, write_atomic};
use crate::format::list::{Listed, SegmentList};
use std::path::{Path, PathBuf};

/// What reading the list found.
pub(crate) enum ListRead {
    /// The newest valid copy; `problems` says what was wrong with the other.
    Found {
        list: SegmentList,
        problems: Vec<String>,
    },
    /// Neither copy exists.
    Missing,
    /// Neither copy is valid.
    Damaged(Vec<String>),
}

/// Reads both copies of `dir`'s list; the newest valid one wins.
pub(crate) fn read(dir: &Path) -> ListRead {
    let mut best: Option<SegmentList> = None;
    let (mut problems, mut missing) = (Vec::new(), 0);
    for name in LIST_FILES {
        match std::fs::read(dir.join(name)) {
            Ok(bytes) => match SegmentList::decode(&bytes) {
                Ok(l) if best.as_ref().is_none_or(|b| l.generation > b.generation) => {
                    best = Some(l);
                }
                Ok(_) => {}
                Err(e) => problems.push(format!("{name}: {e}")),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing += 1;
                problems.push(format!("{name}: missing"));
            }
            Err(e) => problems.push(format!("{name}: cannot read it: {e}")),
        }
    }
    match best {
        Some(list) => {
            // An older copy is normal only mid-rewrite; say so anyway.
            ListRead::Found { list, problems }
        }
        None if missing == LIST_FILES.len() => ListRead::Missing,
        None => ListRead::Damaged(problems),
    }
}

/// The list of an open tier.
pub(crate) struct Listing {
    dir: PathBuf,
    pub(crate) list: SegmentList,
}

impl Listing {
    pub(crate) fn new(dir: &Path, list: SegmentList) -> Self {
        Listing {
            dir: dir.to_path_buf(),
            list,
        }
    }

    /// Writes both copies and syncs the directory: on return the list is
    /// durable. Lost segments that no longer matter are retired first, and
    /// their keys files removed once the list no longer names them.
    pub(crate) fn persist(&mut self) -> Result<(), DiskError> {
        let retired = self.retire();
        self.write(retired)
    }

    /// Like [`persist`](Self::persist), retiring nothing.
    pub(crate) fn persist_keeping(&mut self) -> Result<(), DiskError> {
        self.write(Vec::new())
    }

    fn write(&mut self, retired: Vec<u32>) -> Result<(), DiskError> {
        self.list.generation += 1;
        let bytes = self.list.encode();
        for name in LIST_FILES {
            write_atomic(&self.dir, name, &bytes, false)?;
        }
        let io_err = |source| DiskError::Io {
            context: format!("cannot sync {}", self.dir.display()),
            source: std::sync::Arc::new(source),
        };
        sync_dir(&self.dir).map_err(io_err)?;
        for id in retired {
            remove_if_there(&self.dir, &keys_name(id)).map_err(io_err)?;
        }
        Ok(())
    }

    /// A segment was sealed: listed, durably.
    pub(crate) fn sealed(&mut self, entry: Listed) -> Result<(), DiskError> {
        let s = &mut self.list.streams[usize::from(entry.probation)];
        s.sealed_id = s.sealed_id.max(entry.id);
        s.through = s.through.max(entry.through);
        self.list.live.retain(|l| l.id != entry.id);
        self.list.live.push(entry);
        self.list.live.sort_by_key(|l| l.id);
        self.persist()
    }

    /// A segment is being reclaimed: unlisted, durably, before its file goes.
    pub(crate) fn reclaimed(&mut self, id: u32) -> Result<(), DiskError> {
        self.list.live.retain(|l| l.id != id);
        self.list.reclaimed += 1;
        self.persist()
    }

    /// The log was sealed by a clean close at `last_seq`: every stream's
    /// records up to it are in sealed, listed segments.
    pub(crate) fn closed(&mut self, last_seq: u64) -> Result<(), DiskError> {
        self.list.closed_at = last_seq;
        for s in &mut self.list.streams {
            s.through = s.through.max(last_seq);
        }
        self.persist()
    }

    /// Drops the lost segments and void ranges no listed record can be
    /// affected by any more; returns the lost ones whose keys files can go.
    fn retire(&mut self) -> Vec<u32> {
        let live = &self.list.live;
        let oldest = live.iter().map(|l| l.first_seq).min().unwrap_or(u64::MAX);
        let mut retired = Vec::new();
        self.list.lost.retain(|l| {
            let keep = oldest < l.last_seq;
            if !keep && l.has_keys {
                retired.push(l.id);
            }
            keep
        });
        self.list.voids.retain(|&(a, b)| {
            live.iter()
                .any(|l| l.first_seq <= b && a <= l.last_seq.max(l.first_seq))
        });
        retired
    }
}
