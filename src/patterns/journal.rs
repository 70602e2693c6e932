//! A journal directory (layout in `format/journal.rs`): files appended in
//! order, read back whole on open, retired from the oldest.
//!
//! Every open starts a new file for its appends, so an append never follows
//! a torn tail. The directory holds a `LOCK` file, locked while a journal
//! is open: one process at a time. A file whose header is unreadable or of
//! another kind is set aside (renamed `*.quarantined`) and reported; a
//! record that fails its check ends what is read of its file: at the tail
//! of the newest file that is an append the crash cut short (never
//! acknowledged), anywhere else it is damage, reported.

use crate::format::journal::{JOURNAL_HEADER_LEN, JournalHeader, decode_record, encode_record};
use crate::sync::Arc;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What opening a journal found.
pub(crate) struct Opened {
    pub(crate) journal: Journal,
    /// Every record's payload, oldest first.
    pub(crate) records: Vec<Vec<u8>>,
    /// What was wrong with the files, one line each (empty: nothing).
    pub(crate) damage: Vec<String>,
}

/// An open journal.
pub(crate) struct Journal {
    dir: PathBuf,
    ext: &'static str,
    kind: u32,
    id: u64,
    /// The directory's lock, until [`release`](Self::release).
    lock: Option<File>,
    /// The file appended to.
    current: Arc<File>,
    current_no: u64,
    current_len: u64,
    /// Older files, oldest first, with a caller's mark each (the highest
    /// sequence number in it, say).
    older: Vec<(u64, u64)>,
    buf: Vec<u8>,
    prealloc: u64,
}

fn io_context(context: String) -> impl FnOnce(std::io::Error) -> std::io::Error {
    move |e| std::io::Error::new(e.kind(), format!("{context}: {e}"))
}

impl Journal {
    /// Opens (or creates) the journal of `kind` in `dir`, files named
    /// `*.{ext}`. `id` is the journal's identity if it has none yet.
    ///
    /// `prealloc`: bytes of zeros each new file is given (and synced) at its
    /// creation, so that syncing an append changes no file metadata (an
    /// `fdatasync` that must also commit a new file size costs a filesystem
    /// journal commit: hundreds of µs instead of a few).
    pub(crate) fn open(
        dir: &Path,
        kind: u32,
        ext: &'static str,
        id: u64,
        prealloc: u64,
    ) -> std::io::Result<Opened> {
        std::fs::create_dir_all(dir)
            .map_err(io_context(format!("cannot create {}", dir.display())))?;
        crate::closing::wait_for(dir);
        let lock = lock(dir)?;
        let mut numbers = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(stem) = name.strip_suffix(&format!(".{ext}"))
                && let Ok(n) = u64::from_str_radix(stem, 16)
            {
                numbers.push(n);
            }
        }
        numbers.sort_unstable();
        // A newest file shorter than a header is a creation a crash cut
        // short: nothing was ever appended to it.
        if let Some(&n) = numbers.last() {
            let path = dir.join(format!("{n:016x}.{ext}"));
            if std::fs::metadata(&path).is_ok_and(|m| m.len() < JOURNAL_HEADER_LEN as u64) {
                log::info!(
                    "{}: a file whose creation was cut short, deleted",
                    path.display()
                );
                std::fs::remove_file(&path)
                    .map_err(io_context(format!("cannot delete {}", path.display())))?;
                numbers.pop();
            }
        }
        let mut records = Vec::new();
        let mut damage = Vec::new();
        let mut found_id = None;
        let mut kept = Vec::new();
        for (i, &n) in numbers.iter().enumerate() {
            let path = dir.join(format!("{n:016x}.{ext}"));
            let bytes = std::fs::read(&path)
                .map_err(io_context(format!("cannot read {}", path.display())))?;
            let header = JournalHeader::decode(&bytes);
            let header = match header {
                Ok(h) if h.kind == kind && h.file == n && found_id.is_none_or(|id| id == h.id) => h,
                Ok(_) | Err(_) => {
                    let reason = match header {
                        Err(e) => e.to_string(),
                        Ok(_) => "a file of another journal".to_string(),
                    };
                    damage.push(format!("{}: {reason}; set aside", path.display()));
                    quarantine(&path);
                    continue;
                }
            };
            found_id = Some(header.id);
            let mut at = JOURNAL_HEADER_LEN;
            while at < bytes.len() {
                match decode_record(n, &bytes[at..]) {
                    Ok((payload, used)) => {
                        records.push(payload.to_vec());
                        at += used;
                    }
                    // The preallocated rest of the file.
                    Err(_) if bytes[at..].iter().all(|&b| b == 0) => break,
                    Err(e) => {
                        if i + 1 < numbers.len() {
                            damage.push(format!(
                                "{}: {e} at offset {at}; {} bytes after it not read",
                                path.display(),
                                bytes.len() - at
                            ));
                        } else {
                            // Cut it off, so the next open reads a clean file.
                            log::info!(
                                "{}: a torn append at offset {at} ({e}), cut off",
                                path.display()
                            );
                            std::fs::OpenOptions::new()
                                .write(true)
                                .open(&path)
                                .and_then(|f| f.set_len(at as u64).and_then(|()| f.sync_data()))
                                .map_err(io_context(format!(
                                    "cannot truncate {}",
                                    path.display()
                                )))?;
                        }
                        break;
                    }
                }
            }
            kept.push((n, u64::MAX));
        }
        let id = found_id.unwrap_or(id);
        let next = numbers.last().map_or(1, |n| n + 1);
        let (current, current_len) = create(dir, ext, kind, id, next, prealloc)?;
        for line in &damage {
            log::error!("journal {}: {line}", dir.display());
        }
        Ok(Opened {
            journal: Journal {
                dir: dir.to_path_buf(),
                ext,
                kind,
                id,
                lock: Some(lock),
                current: Arc::new(current),
                current_no: next,
                current_len,
                older: kept,
                buf: Vec::new(),
                prealloc,
            },
            records,
            damage,
        })
    }

    /// Lets the directory go (the journal is not written again).
    pub(crate) fn release(&mut self) {
        self.lock = None;
    }

    /// The journal's identity.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Bytes in the file appended to.
    pub(crate) fn current_len(&self) -> u64 {
        self.current_len
    }

    /// Files, the one appended to included.
    pub(crate) fn files(&self) -> usize {
        self.older.len() + 1
    }

    /// Appends a record (written to the OS, not synced).
    pub(crate) fn append(&mut self, payload: &[u8]) -> std::io::Result<()> {
        self.buf.clear();
        encode_record(self.current_no, payload, &mut self.buf);
        std::os::unix::fs::FileExt::write_all_at(&*self.current, &self.buf, self.current_len)?;
        self.current_len += self.buf.len() as u64;
        Ok(())
    }

    /// The file appended to, to sync outside the journal's lock.
    pub(crate) fn current(&self) -> Arc<File> {
        Arc::clone(&self.current)
    }

    /// Syncs the file appended to and starts a new one; the old one keeps
    /// `mark`.
    pub(crate) fn rotate(&mut self, mark: u64) -> std::io::Result<()> {
        self.current.sync_data()?;
        let next = self.current_no + 1;
        let (file, len) = create(&self.dir, self.ext, self.kind, self.id, next, self.prealloc)?;
        self.older.push((self.current_no, mark));
        self.current = Arc::new(file);
        self.current_no = next;
        self.current_len = len;
        Ok(())
    }

    /// Gives every older file `mark`.
    pub(crate) fn mark_older(&mut self, mark: u64) {
        for file in &mut self.older {
            file.1 = mark;
        }
    }

    /// Deletes the older files whose mark is below `bound`, oldest first,
    /// stopping at the first that is not (files go in order, so what stays
    /// is always a suffix of the history).
    pub(crate) fn retire_below(&mut self, bound: u64) {
        while let Some(&(n, mark)) = self.older.first() {
            if mark >= bound {
                break;
            }
            let path = self.dir.join(format!("{n:016x}.{}", self.ext));
            if let Err(e) = std::fs::remove_file(&path) {
                log::warn!("cannot delete {}: {e}", path.display());
                break;
            }
            self.older.remove(0);
        }
    }
}

fn lock(dir: &Path) -> std::io::Result<File> {
    crate::disk::dir::try_lock_file(&dir.join("LOCK"))?.ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            format!(
                "{} is in use by another process (its LOCK file is locked)",
                dir.display()
            ),
        )
    })
}

/// Creates file `n` with its header and `prealloc` bytes of zeros, synced,
/// and syncs the directory.
fn create(
    dir: &Path,
    ext: &str,
    kind: u32,
    id: u64,
    n: u64,
    prealloc: u64,
) -> std::io::Result<(File, u64)> {
    let path = dir.join(format!("{n:016x}.{ext}"));
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .map_err(io_context(format!("cannot create {}", path.display())))?;
    file.write_all(&JournalHeader { kind, file: n, id }.encode())?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = prealloc.saturating_sub(JOURNAL_HEADER_LEN as u64);
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    file.sync_data()?;
    File::open(dir)?.sync_all()?;
    Ok((file, JOURNAL_HEADER_LEN as u64))
}

fn quarantine(path: &Path) {
    let mut to = path.as_os_str().to_owned();
    to.push(".quarantined");
    if let Err(e) = std::fs::rename(path, &to) {
        log::warn!("cannot set {} aside: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_in_order_across_files_and_opens() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut o = Journal::open(dir.path(), 1, "wb", 5, 0).unwrap();
            assert!(o.records.is_empty());
            o.journal.append(b"a").unwrap();
            o.journal.rotate(1).unwrap();
            o.journal.append(b"b").unwrap();
            assert!(Journal::open(dir.path(), 1, "wb", 5, 0).is_err(), "locked");
        }
        let o = Journal::open(dir.path(), 1, "wb", 6, 0).unwrap();
        assert_eq!(o.records, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(o.journal.id(), 5);
        assert!(o.damage.is_empty());
    }

    #[test]
    fn a_torn_tail_is_dropped_and_damage_elsewhere_reported() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut o = Journal::open(dir.path(), 1, "wb", 5, 0).unwrap();
            o.journal.append(b"first").unwrap();
            o.journal.append(b"second").unwrap();
        }
        let path = dir.path().join(format!("{:016x}.wb", 1));
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 2).unwrap();
        drop(f);
        let o = Journal::open(dir.path(), 1, "wb", 5, 0).unwrap();
        assert_eq!(o.records, vec![b"first".to_vec()]);
        assert!(
            o.damage.is_empty(),
            "a torn tail is not damage: {:?}",
            o.damage
        );
        drop(o);
        // Cut off, it is not met again once file 1 is no longer the newest.
        let o = Journal::open(dir.path(), 1, "wb", 5, 0).unwrap();
        assert_eq!(o.records, vec![b"first".to_vec()]);
        assert!(o.damage.is_empty(), "{:?}", o.damage);
        drop(o);
        // Damage in a file that is not the newest is reported.
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(JOURNAL_HEADER_LEN as u64 + 4).unwrap();
        drop(f);
        let o = Journal::open(dir.path(), 1, "wb", 5, 0).unwrap();
        assert!(o.records.is_empty());
        assert_eq!(o.damage.len(), 1, "{:?}", o.damage);
        drop(o);
        std::fs::write(dir.path().join(format!("{:016x}.wb", 9)), [b'?'; 64]).unwrap();
        let o = Journal::open(dir.path(), 1, "wb", 5, 0).unwrap();
        assert!(
            o.damage.iter().any(|d| d.contains("set aside")),
            "{:?}",
            o.damage
        );
        assert!(
            dir.path()
                .join(format!("{:016x}.wb.quarantined", 9))
                .exists()
        );
    }

    #[test]
    fn a_newest_file_cut_short_at_its_creation_is_not_damage() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut o = Journal::open(dir.path(), 1, "wb", 5, 0).unwrap();
            o.journal.append(b"a").unwrap();
        }
        std::fs::write(dir.path().join(format!("{:016x}.wb", 3)), b"LARD").unwrap();
        let o = Journal::open(dir.path(), 1, "wb", 5, 0).unwrap();
        assert_eq!(o.records, vec![b"a".to_vec()]);
        assert!(o.damage.is_empty(), "{:?}", o.damage);
    }

    #[test]
    fn preallocated_files_read_back_without_damage() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut o = Journal::open(dir.path(), 1, "wb", 5, 8192).unwrap();
            o.journal.append(b"a").unwrap();
            o.journal.rotate(1).unwrap();
            o.journal.append(b"b").unwrap();
        }
        let o = Journal::open(dir.path(), 1, "wb", 5, 8192).unwrap();
        assert_eq!(o.records, vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(o.damage.is_empty(), "{:?}", o.damage);
        let len = std::fs::metadata(dir.path().join(format!("{:016x}.wb", 3)))
            .unwrap()
            .len();
        assert_eq!(len, 8192);
    }

    #[test]
    fn retiring_deletes_a_prefix_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Journal::open(dir.path(), 1, "wb", 5, 0).unwrap();
        o.journal.append(b"1").unwrap();
        o.journal.rotate(10).unwrap();
        o.journal.append(b"2").unwrap();
        o.journal.rotate(5).unwrap();
        assert_eq!(o.journal.files(), 3);
        o.journal.retire_below(8); // the oldest has mark 10: nothing goes
        assert_eq!(o.journal.files(), 3);
        o.journal.retire_below(11);
        assert_eq!(o.journal.files(), 1);
    }
}
