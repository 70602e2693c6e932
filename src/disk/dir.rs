//! The disk tier's directory and its small files: the lock, the manifest,
//! the checkpoint, the segment list and the segments' keys files, and the
//! one way they are written (`write_atomic`).

use super::DiskError;
use super::io::Io;
use super::segment::{AlignedBuf, DIRECT_ALIGN, open_direct};
use crate::format::checkpoint::Checkpoint;
use crate::format::manifest::{HASH_XXH3_64, Manifest};
use std::path::{Path, PathBuf};

/// The checkpoint's file name (format.md §2.5).
pub(crate) const CHECKPOINT_FILE: &str = "CHECKPOINT";
/// The segment list's two copies (format.md §2.2).
pub(crate) const LIST_FILES: [&str; 2] = ["SEGMENTS", "SEGMENTS.copy"];
const MANIFEST_FILE: &str = "MANIFEST";

/// The file name of segment `id`.
pub(crate) fn segment_name(id: u32) -> String {
    format!("{id:010}.seg")
}

/// The file name of segment `id`'s keys file (format.md §2.3).
pub(crate) fn keys_name(id: u32) -> String {
    format!("{id:010}.keys")
}

/// Makes the directory's entries (created, renamed, removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Replaces the file `name` of `dir` with `bytes` atomically: a temporary
/// file is written and `fdatasync`ed, then renamed over it. With `sync`, the
/// directory is synced too (the rename is durable on return); without, the
/// caller syncs it.
pub(crate) fn write_atomic(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    sync: bool,
) -> Result<(), DiskError> {
    let (tmp, path) = (dir.join(format!("{name}.tmp")), dir.join(name));
    let write = || -> std::io::Result<()> {
        let f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut &f, bytes)?;
        f.sync_data()?;
        std::fs::rename(&tmp, &path)?;
        if sync { sync_dir(dir) } else { Ok(()) }
    };
    write().map_err(|source| DiskError::Io {
        context: format!("cannot write {}", path.display()),
        source: std::sync::Arc::new(source),
    })
}

/// Removes `dir/name` if it exists.
pub(crate) fn remove_if_there(dir: &Path, name: &str) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(name)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The checkpoint in `dir`: `Ok(None)` if there is none, `Err` if it cannot
/// be read or decoded.
pub(crate) fn read_checkpoint(dir: &Path) -> Result<Option<Checkpoint>, String> {
    match std::fs::read(dir.join(CHECKPOINT_FILE)) {
        Ok(bytes) => Checkpoint::decode(&bytes)
            .map(Some)
            .map_err(|e| e.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read it: {e}")),
    }
}

/// Whether `dir`'s file system takes direct writes: one aligned block written
/// to a scratch file, which is then removed.
pub(crate) fn probe_direct(io: &dyn Io, dir: &Path) -> std::io::Result<()> {
    let path = dir.join("DIRECT_PROBE");
    std::fs::File::create(&path)?;
    let written = open_direct(&path).and_then(|f| {
        let mut block = AlignedBuf::default();
        io.write_all_at(&f, block.zeroed(DIRECT_ALIGN), 0)
    });
    let _ = std::fs::remove_file(&path);
    written
}

/// Opens `path` (created if missing) and takes its advisory lock; `None`
/// if another open file holds it. Errors say which step failed.
pub(crate) fn try_lock_file(path: &Path) -> std::io::Result<Option<std::fs::File>> {
    let context = |what: &str, e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("cannot {what} {}: {e}", path.display()))
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| context("open", e))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(context("lock", e)),
    }
}

/// Takes the directory's advisory lock: one cache per directory at a time.
pub(crate) fn lock_directory(dir: &Path) -> Result<std::fs::File, DiskError> {
    match try_lock_file(&dir.join("LOCK")) {
        Ok(Some(file)) => Ok(file),
        Ok(None) => Err(DiskError::Locked(dir.to_path_buf())),
        Err(source) => Err(DiskError::Io {
            context: format!("cannot lock {}", dir.display()),
            source: std::sync::Arc::new(source),
        }),
    }
}

/// The segment size `dir`'s manifest names, if it has a valid one.
pub(crate) fn segment_size_of(dir: &Path) -> Option<u64> {
    let bytes = std::fs::read(dir.join(MANIFEST_FILE)).ok()?;
    Manifest::decode(&bytes).ok().map(|m| m.segment_size)
}

/// What [`check_manifest`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ManifestCheck {
    /// It was there and agreed.
    Agreed,
    /// There was none: it was written.
    Created,
    /// It was damaged: it was set aside (`MANIFEST.quarantined`) and written
    /// again from the settings, which the segments' own headers agree with.
    Rewritten(String),
}

/// Checks the directory's manifest against the settings, or writes it. A
/// manifest of another format version is refused by name; one that is
/// damaged is quarantined and written again, unless a segment's header says
/// the directory was made with another segment size.
pub(crate) fn check_manifest(dir: &Path, segment_size: u64) -> Result<ManifestCheck, DiskError> {
    let path = dir.join(MANIFEST_FILE);
    let wanted = Manifest {
        hash_id: HASH_XXH3_64,
        segment_size,
    };
    let mismatch = |what: String, asked: String| DiskError::Mismatch {
        dir: dir.to_path_buf(),
        what,
        asked,
    };
    let damaged = match std::fs::read(&path) {
        Ok(bytes) => match Manifest::decode(&bytes) {
            Ok(found) if found.hash_id != wanted.hash_id => {
                return Err(mismatch(
                    format!("key hash {}", found.hash_id),
                    format!("key hash {}", wanted.hash_id),
                ));
            }
            Ok(found) if found.segment_size != segment_size => {
                return Err(mismatch(
                    format!("segment size {}", found.segment_size),
                    format!("segment size {segment_size}"),
                ));
            }
            Ok(_) => return Ok(ManifestCheck::Agreed),
            Err(e @ crate::format::FormatError::Version { .. }) => {
                return Err(DiskError::BadManifest {
                    dir: dir.to_path_buf(),
                    reason: e.to_string(),
                });
            }
            Err(e) => Some(e.to_string()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(DiskError::Io {
                context: format!("cannot read {}", path.display()),
                source: std::sync::Arc::new(source),
            });
        }
    };
    if damaged.is_some()
        && let Some(found) = segment_size_on_disk(dir)
        && found != segment_size
    {
        return Err(mismatch(
            format!("segment size {found} (its manifest is damaged; its segments say so)"),
            format!("segment size {segment_size}"),
        ));
    }
    if damaged.is_some() {
        let aside = dir.join(format!("{MANIFEST_FILE}.quarantined"));
        std::fs::rename(&path, &aside).map_err(|source| DiskError::Io {
            context: format!("cannot quarantine {}", path.display()),
            source: std::sync::Arc::new(source),
        })?;
    }
    write_atomic(dir, MANIFEST_FILE, &wanted.encode(), true)?;
    Ok(match damaged {
        Some(why) => ManifestCheck::Rewritten(why),
        None => ManifestCheck::Created,
    })
}

/// The segment size the first segment with a valid header names.
pub(crate) fn segment_size_on_disk(dir: &Path) -> Option<u64> {
    let entries = std::fs::read_dir(dir).ok()?;
    let segments: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.iter().find_map(|p| {
        let mut head = [0u8; crate::format::segment::SEGMENT_HEADER_LEN];
        let f = std::fs::File::open(p).ok()?;
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut head, 0).ok()?;
        crate::format::segment::SegmentHeader::decode(&head)
            .ok()
            .map(|h| h.segment_size)
    })
}

/// Writes segment `id`'s keys file (format.md §2.3) from its summary and
/// `fdatasync`s it. Not atomic: a torn one fails its checksum and is
/// written again from the segment at the next open.
pub(crate) fn write_keys(
    dir: &Path,
    id: u32,
    last_seq: u64,
    entries: &[crate::format::segment::SummaryEntry],
) -> std::io::Result<()> {
    use crate::format::keys::{Keys, fingerprint};
    let keys = Keys {
        segment_id: id,
        last_seq,
        fingerprints: entries
            .iter()
            .filter(|e| !e.mark)
            .map(|e| fingerprint(e.hash))
            .collect(),
    };
    let f = std::fs::File::create(dir.join(keys_name(id)))?;
    std::io::Write::write_all(&mut &f, &keys.encode())?;
    f.sync_data()
}
