//! A simulated power loss (tests and the crash loop only): an [`Io`] that
//! keeps what was written after a file's last `fdatasync` in memory, sector
//! by sector, except for a random share of sectors that it lets reach the
//! file early, as a device's write-back would, in any order. When the
//! process dies (SIGKILL) what was kept in memory is gone: the file holds
//! what was synced plus a random subset of the sectors written since, torn at
//! sector granularity. Reads see every write, as the page cache would.

use super::io::{Io, Positional};
use crate::sync::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};

/// The sector: the unit a write reaches the device in, whole or not at all.
const SECTOR: u64 = 4096;

/// What a file holds beyond what reached it.
#[derive(Default)]
struct Pending {
    /// Sector index → its bytes (a whole sector, or up to the file's end).
    sectors: BTreeMap<u64, Vec<u8>>,
    /// The file's length as writes left it.
    len: u64,
}

/// See the module docs.
pub(crate) struct PowerLoss {
    pending: Mutex<HashMap<u64, Pending>>,
    rng: Mutex<u64>,
    /// Of 256 sectors written, how many reach the file before a sync.
    early: u64,
}

impl PowerLoss {
    /// `seed` drives which sectors reach the file early (about half).
    pub(crate) fn new(seed: u64) -> Self {
        PowerLoss {
            pending: Mutex::new(HashMap::new()),
            rng: Mutex::new(seed | 1),
            early: 128,
        }
    }

    fn coin(&self) -> bool {
        let mut x = self.rng.lock();
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x % 256 < self.early
    }
}

fn inode(file: &File) -> io::Result<u64> {
    let m = file.metadata()?;
    Ok(m.dev() << 40 ^ m.ino())
}

/// The same file opened again for plain (not direct) writes.
fn plain(file: &File) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Reads what the file itself holds at `offset` (zeros past its end).
fn read_file(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(())
}

impl Io for PowerLoss {
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        let key = inode(file)?;
        let disk_len = file.metadata()?.len();
        let mut all = self.pending.lock();
        let p = all.entry(key).or_default();
        p.len = p.len.max(disk_len).max(offset + buf.len() as u64);
        let end = offset + buf.len() as u64;
        let mut through = None;
        for sector in offset / SECTOR..end.div_ceil(SECTOR) {
            let start = sector * SECTOR;
            let size = (p.len - start).min(SECTOR) as usize;
            let mut bytes = match p.sectors.remove(&sector) {
                Some(b) => b,
                None => {
                    let mut b = vec![0; size];
                    read_file(file, &mut b, start)?;
                    b
                }
            };
            bytes.resize(size, 0);
            let (from, to) = (offset.max(start), end.min(start + SECTOR));
            bytes[(from - start) as usize..(to - start) as usize]
                .copy_from_slice(&buf[(from - offset) as usize..(to - offset) as usize]);
            if self.coin() {
                let f = match through.take() {
                    Some(f) => f,
                    None => plain(file)?,
                };
                f.write_all_at(&bytes, start)?;
                through = Some(f);
            } else {
                p.sectors.insert(sector, bytes);
            }
        }
        Ok(())
    }

    fn read_exact_at(&self, file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let key = inode(file)?;
        let all = self.pending.lock();
        let len = all
            .get(&key)
            .map_or(0, |p| p.len)
            .max(file.metadata()?.len());
        if offset + buf.len() as u64 > len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        read_file(file, buf, offset)?;
        let Some(p) = all.get(&key) else {
            return Ok(());
        };
        let end = offset + buf.len() as u64;
        for (&sector, bytes) in p.sectors.range(offset / SECTOR..end.div_ceil(SECTOR)) {
            let start = sector * SECTOR;
            let (from, to) = (offset.max(start), end.min(start + bytes.len() as u64));
            if from < to {
                buf[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&bytes[(from - start) as usize..(to - start) as usize]);
            }
        }
        Ok(())
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        let key = inode(file)?;
        if let Some(p) = self.pending.lock().remove(&key)
            && !p.sectors.is_empty()
        {
            let f = plain(file)?;
            for (sector, bytes) in p.sectors {
                f.write_all_at(&bytes, sector * SECTOR)?;
            }
        }
        Positional.sync_data(file)
    }

    fn name(&self) -> &'static str {
        "power-loss"
    }

    fn start_writeback(&self, _file: &File, _offset: u64, _len: u64) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synced_bytes_stay_and_unsynced_ones_are_torn_by_sector() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let io = PowerLoss::new(7);
        io.write_all_at(&file, &[1; 10_000], 0).unwrap();
        io.sync_data(&file).unwrap();
        io.write_all_at(&file, &[2; 40_000], 5_000).unwrap();
        // Reads see every write.
        let mut all = vec![0; 45_000];
        io.read_exact_at(&file, &mut all, 0).unwrap();
        assert!(all[..5_000].iter().all(|&b| b == 1) && all[5_000..].iter().all(|&b| b == 2));
        // The file itself (what a power loss leaves): the synced bytes, and
        // each later sector either whole or not at all.
        drop(io);
        let on_disk = std::fs::read(&path).unwrap();
        assert!(
            on_disk[..4096].iter().all(|&b| b == 1),
            "untouched synced sector"
        );
        let mut early = 0;
        for (i, sector) in on_disk.chunks(4096).enumerate().skip(3) {
            let whole = sector.iter().all(|&b| b == 2);
            let none = sector.iter().all(|&b| b == 0 || b == 1);
            assert!(whole || none, "sector {i} torn inside");
            early += usize::from(whole);
        }
        assert!(
            early > 0 && early < 9,
            "some sectors reached the file early: {early}"
        );
    }
}
