//! All disk I/O of the disk tier goes through [`Io`]: positional writes and
//! reads, and `fdatasync`. The trait is the seam for other backends (io_uring)
//! and for fault-injection tests ([`Faulty`]).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

/// How the disk tier touches its files.
pub(crate) trait Io: Send + Sync + 'static {
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Fills `buf` from `offset`; a file too short to fill it is an `UnexpectedEof` error.
    fn read_exact_at(&self, file: &File, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Makes everything written to `file` durable (`fdatasync`).
    fn sync_data(&self, file: &File) -> io::Result<()>;
    /// The backend's name, for stats.
    fn name(&self) -> &'static str;
}

/// Plain positional I/O: `pwrite`, `pread`, `fdatasync`.
pub(crate) struct Positional;

impl Io for Positional {
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        file.write_all_at(buf, offset)
    }

    fn read_exact_at(&self, file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
        file.read_exact_at(buf, offset)
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }

    fn name(&self) -> &'static str {
        "pwrite"
    }
}

/// Wraps a backend and fails writes or syncs on command: for tests.
pub(crate) struct Faulty<I> {
    inner: I,
    /// Writes still allowed before every write fails (u64::MAX: never fail).
    writes_left: AtomicU64,
    /// Syncs still allowed before every sync fails.
    syncs_left: AtomicU64,
}

impl<I: Io> Faulty<I> {
    pub(crate) fn new(inner: I) -> Self {
        Faulty {
            inner,
            writes_left: AtomicU64::new(u64::MAX),
            syncs_left: AtomicU64::new(u64::MAX),
        }
    }

    /// From now on, allow `n` more writes, then fail every write.
    pub(crate) fn fail_writes_after(&self, n: u64) {
        self.writes_left.store(n, Ordering::SeqCst);
    }

    /// From now on, allow `n` more syncs, then fail every sync.
    pub(crate) fn fail_syncs_after(&self, n: u64) {
        self.syncs_left.store(n, Ordering::SeqCst);
    }

    fn allow(budget: &AtomicU64) -> io::Result<()> {
        let take = budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
            u64::MAX => Some(u64::MAX),
            0 => None,
            n => Some(n - 1),
        });
        take.map(|_| ())
            .map_err(|_| io::Error::other("injected I/O fault"))
    }
}

impl<I: Io> Io for Faulty<I> {
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        Self::allow(&self.writes_left)?;
        self.inner.write_all_at(file, buf, offset)
    }

    fn read_exact_at(&self, file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(file, buf, offset)
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        Self::allow(&self.syncs_left)?;
        self.inner.sync_data(file)
    }

    fn name(&self) -> &'static str {
        "faulty"
    }
}
