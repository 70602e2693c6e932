//! All disk I/O of the disk tier goes through [`Io`]: positional writes and
//! reads, and `fdatasync`. The trait is the seam for other backends (io_uring)
//! and for fault-injection tests (`Faulty`, compiled for tests only).
//! One of larder's two modules with `unsafe` code (the other is `image`):
//! system calls on open descriptors, each block with why it holds.

#![allow(unsafe_code)]

use crate::sync::Arc;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
#[cfg(test)]
use std::sync::atomic::{AtomicU64, Ordering};

/// How the disk tier touches its files.
pub(crate) trait Io: Send + Sync + 'static {
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Writes `bufs`, one after another, at `offset`: with direct writes, in
    /// as few system calls as the backend can (`pwritev`), since the device
    /// here takes large writes faster (benchmarks.md §6). The default writes
    /// them one by one.
    fn write_all_vectored_at(&self, file: &File, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        let mut at = offset;
        for buf in bufs {
            self.write_all_at(file, buf, at)?;
            at += buf.len() as u64;
        }
        Ok(())
    }
    /// Fills `buf` from `offset`; a file too short to fill it is an `UnexpectedEof` error.
    fn read_exact_at(&self, file: &File, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Makes everything written to `file` durable (`fdatasync`).
    fn sync_data(&self, file: &File) -> io::Result<()>;
    /// The backend's name, for stats.
    fn name(&self) -> &'static str;
    /// Starts writing `len` bytes at `offset` back to the device without
    /// waiting (a hint: the `fdatasync` at the seal then has little left).
    fn start_writeback(&self, file: &File, offset: u64, len: u64) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: plain syscall on an open descriptor; no memory is passed.
            unsafe {
                libc::sync_file_range(
                    file.as_raw_fd(),
                    offset as libc::off64_t,
                    len as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (file, offset, len);
    }
}

/// Plain positional I/O: `pwrite`, `pread`, `fdatasync`.
pub(crate) struct Positional;

impl Io for Positional {
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        file.write_all_at(buf, offset)
    }

    fn write_all_vectored_at(&self, file: &File, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        write_vectored(bufs, offset, |iov, at| {
            // SAFETY: `iov` points at live buffers the caller borrows for
            // the whole call; the kernel only reads them. The count fits an
            // i32 (`write_vectored` passes at most `IOV_MAX` entries).
            let n = unsafe {
                libc::pwritev(
                    file.as_raw_fd(),
                    iov.as_ptr(),
                    iov.len() as libc::c_int,
                    at as libc::off_t,
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        })
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

/// The most buffers one vectored write takes (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// Writes all of `bufs`, one after another, at `offset`, through `write`, a
/// vectored write at an offset that returns how many bytes it took: after a
/// short write, it goes on from the first byte not taken. An interrupted
/// call is retried; a call that takes nothing is an error.
fn write_vectored(
    bufs: &[&[u8]],
    offset: u64,
    mut write: impl FnMut(&[libc::iovec], u64) -> io::Result<usize>,
) -> io::Result<()> {
    let (mut first, mut skip, mut at) = (0, 0, offset); // next byte: bufs[first][skip..]
    let mut iov = Vec::new();
    while first < bufs.len() {
        iov.clear();
        for (i, buf) in bufs[first..].iter().take(IOV_MAX).enumerate() {
            let buf = if i == 0 { &buf[skip..] } else { buf };
            iov.push(libc::iovec {
                iov_base: buf.as_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            });
        }
        let mut done = match write(&iov, at) {
            Ok(0) if iov.iter().any(|v| v.iov_len > 0) => {
                return Err(io::ErrorKind::WriteZero.into());
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        at += done as u64;
        while first < bufs.len() && done >= bufs[first].len() - skip {
            done -= bufs[first].len() - skip;
            (first, skip) = (first + 1, 0);
        }
        skip += done;
    }
    Ok(())
}

/// The backend to use: io_uring when built with the `io-uring` feature and the
/// kernel accepts it, positional I/O otherwise. The note says why, on a fallback.
/// Has `f` run when the process exits (`atexit`); whether it was taken.
pub(crate) fn at_exit(f: extern "C" fn()) -> bool {
    // SAFETY: `atexit` stores a pointer to a function of the C ABI that takes
    // nothing and returns nothing, which `f`'s type guarantees; a function
    // item lives for the whole process, so the pointer stays valid until the
    // exit calls it.
    unsafe { libc::atexit(f) == 0 }
}

pub(crate) fn default_backend() -> (Arc<dyn Io>, Option<String>) {
    #[cfg(feature = "io-uring")]
    {
        match uring::Uring::new() {
            Ok(u) => return (Arc::new(u), None),
            Err(e) => {
                return (
                    Arc::new(Positional),
                    Some(format!("io_uring refused ({e}); using positional I/O")),
                );
            }
        }
    }
    #[allow(unreachable_code)]
    (Arc::new(Positional), None)
}

#[cfg(feature = "io-uring")]
pub(crate) mod uring {
    //! io_uring: one small ring, one operation in flight per call.

    use super::Io;
    use crate::sync::Mutex;
    use io_uring::{IoUring, opcode, squeue, types};
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;

    /// The largest single operation (the kernel takes u32 lengths).
    const MAX_OP: usize = 1 << 30;

    pub(crate) struct Uring {
        ring: Mutex<IoUring>,
    }

    impl Uring {
        pub(crate) fn new() -> io::Result<Self> {
            Ok(Uring {
                ring: Mutex::new(IoUring::new(8)?),
            })
        }

        /// Submits `entry` and waits for its completion; returns its result.
        ///
        /// The kernel owns the caller's buffer from the submission until the
        /// completion is reaped, so this never returns in between: an
        /// interrupted wait (EINTR, a signal arriving), or a busy ring, waits
        /// again. Only an error while the entry is still unsubmitted (the
        /// kernel never saw it) returns early, and then the ring is made new,
        /// so that the entry is never submitted later with a dangling buffer.
        fn run(&self, entry: &squeue::Entry) -> io::Result<usize> {
            let mut ring = self.ring.lock();
            // SAFETY: the entry points at a file descriptor and a buffer that the
            // caller borrows for the whole call, and this function does not return
            // while the kernel may still use them: it returns once the entry's
            // completion is reaped, or (below) once the entry is dropped unsubmitted
            // with the ring that held it. The ring holds only this entry (under
            // the mutex, and no call leaves one behind).
            unsafe { ring.submission().push(entry) }
                .map_err(|_| io::Error::other("io_uring submission queue is full"))?;
            let cqe = loop {
                if let Some(cqe) = ring.completion().next() {
                    break cqe;
                }
                match ring.submit_and_wait(1) {
                    Ok(_) => {}
                    Err(e) if retry_wait(&e) => {}
                    Err(e) if !ring.submission().is_empty() => {
                        // Never submitted: drop it with this ring, start anew.
                        *ring = IoUring::new(8)?;
                        return Err(e);
                    }
                    // Submitted: the kernel completes it; wait for that.
                    Err(_) => std::thread::yield_now(),
                }
            };
            let res = cqe.result();
            if res < 0 {
                Err(io::Error::from_raw_os_error(-res))
            } else {
                Ok(res as usize)
            }
        }
    }

    /// Whether a failed wait for a completion is to be waited again.
    fn retry_wait(e: &io::Error) -> bool {
        e.kind() == io::ErrorKind::Interrupted
            || matches!(
                e.raw_os_error(),
                Some(libc::EAGAIN | libc::EBUSY | libc::ETIME)
            )
    }

    impl Io for Uring {
        fn write_all_at(&self, file: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
            let fd = types::Fd(file.as_raw_fd());
            while !buf.is_empty() {
                let n = buf.len().min(MAX_OP);
                let e = opcode::Write::new(fd, buf.as_ptr(), n as u32)
                    .offset(offset)
                    .build();
                match self.run(&e)? {
                    0 => return Err(io::ErrorKind::WriteZero.into()),
                    done => {
                        buf = &buf[done..];
                        offset += done as u64;
                    }
                }
            }
            Ok(())
        }

        fn write_all_vectored_at(
            &self,
            file: &File,
            bufs: &[&[u8]],
            offset: u64,
        ) -> io::Result<()> {
            let fd = types::Fd(file.as_raw_fd());
            super::write_vectored(bufs, offset, |iov, at| {
                let e = opcode::Writev::new(fd, iov.as_ptr(), iov.len() as u32)
                    .offset(at)
                    .build();
                self.run(&e)
            })
        }

        fn read_exact_at(
            &self,
            file: &File,
            mut buf: &mut [u8],
            mut offset: u64,
        ) -> io::Result<()> {
            let fd = types::Fd(file.as_raw_fd());
            while !buf.is_empty() {
                let n = buf.len().min(MAX_OP);
                let e = opcode::Read::new(fd, buf.as_mut_ptr(), n as u32)
                    .offset(offset)
                    .build();
                match self.run(&e)? {
                    0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                    done => {
                        buf = &mut buf[done..];
                        offset += done as u64;
                    }
                }
            }
            Ok(())
        }

        fn sync_data(&self, file: &File) -> io::Result<()> {
            let e = opcode::Fsync::new(types::Fd(file.as_raw_fd()))
                .flags(types::FsyncFlags::DATASYNC)
                .build();
            self.run(&e).map(|_| ())
        }

        fn name(&self) -> &'static str {
            "io_uring"
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn write_read_sync_and_short_reads() {
            let u = Uring::new().expect("io_uring is available on this machine");
            let f = tempfile::tempfile().unwrap();
            u.write_all_at(&f, b"hello uring", 100).unwrap();
            u.sync_data(&f).unwrap();
            let mut buf = [0u8; 11];
            u.read_exact_at(&f, &mut buf, 100).unwrap();
            assert_eq!(&buf, b"hello uring");
            let mut past = [0u8; 4];
            let err = u.read_exact_at(&f, &mut past, 109).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        }

        /// Signals delivered during io_uring I/O (a no-op handler without
        /// `SA_RESTART`, so a waiting `io_uring_enter` returns EINTR) change
        /// no byte and fail no call: an interrupted wait waits again, and no
        /// later call takes an earlier one's completion as its own.
        #[test]
        fn io_under_a_storm_of_signals_loses_and_mixes_nothing() {
            extern "C" fn nothing(_: libc::c_int) {}
            // SAFETY: installs a handler that does nothing, for a signal
            // nothing else in the test binary uses; `sa` is fully initialised.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = nothing as *const () as usize;
                sa.sa_flags = 0; // no SA_RESTART: blocked calls return EINTR
                libc::sigemptyset(&mut sa.sa_mask);
                assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
            }
            // On a worker, watched: a lost completion hangs rather than fails.
            let (done, finished) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let outcome = std::panic::catch_unwind(signal_storm);
                let _ = done.send(outcome.map_err(|e| {
                    e.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()
                }));
            });
            match finished.recv_timeout(std::time::Duration::from_secs(60)) {
                Ok(Ok(sent)) => assert!(sent > 100, "signals were sent: {sent}"),
                Ok(Err(why)) => panic!("{why}"),
                Err(_) => panic!("io_uring I/O hung under signals (a completion was lost)"),
            }
        }

        /// Writes, reads and syncs under a storm of SIGUSR1 at this thread;
        /// returns how many signals were sent.
        fn signal_storm() -> u64 {
            let u = Uring::new().expect("io_uring is available on this machine");
            let f = tempfile::tempfile().unwrap();
            // SAFETY: `pthread_self` has no preconditions.
            let me = unsafe { libc::pthread_self() };
            let stop = std::sync::atomic::AtomicBool::new(false);
            let sent = std::sync::atomic::AtomicU64::new(0);
            std::thread::scope(|s| {
                s.spawn(|| {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        // SAFETY: `me` is this scope's thread, alive until
                        // `stop` is set (the scope joins this one first).
                        unsafe { libc::pthread_kill(me, libc::SIGUSR1) };
                        sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        std::thread::yield_now();
                    }
                });
                let block = 64 << 10;
                // At least 400 rounds, and on until the storm has sent 200
                // signals (a loaded machine runs the sender less often), for
                // 30 s at most.
                let started = std::time::Instant::now();
                let mut round = 0u32;
                while round < 400
                    || (sent.load(std::sync::atomic::Ordering::Relaxed) < 200
                        && started.elapsed() < std::time::Duration::from_secs(30))
                {
                    round += 1;
                    let data: Vec<u8> = (0..block as u32)
                        .map(|i| (i.wrapping_mul(2_654_435_761) ^ round) as u8)
                        .collect();
                    let at = u64::from(round % 16) * block as u64;
                    u.write_all_at(&f, &data, at)
                        .expect("a write under signals");
                    if round.is_multiple_of(8) {
                        u.sync_data(&f).expect("a sync under signals");
                    }
                    let mut back = vec![0u8; block];
                    u.read_exact_at(&f, &mut back, at)
                        .expect("a read under signals");
                    assert!(
                        back == data,
                        "round {round}: the bytes read are not those written"
                    );
                }
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            sent.load(std::sync::atomic::Ordering::Relaxed)
        }

        #[test]
        fn vectored_writes_land_in_order() {
            let u = Uring::new().expect("io_uring is available on this machine");
            let f = tempfile::tempfile().unwrap();
            let bufs: [&[u8]; 3] = [b"vec", b"", b"tored"];
            u.write_all_vectored_at(&f, &bufs, 5).unwrap();
            let mut back = [0u8; 8];
            u.read_exact_at(&f, &mut back, 5).unwrap();
            assert_eq!(&back, b"vectored");
        }
    }
}

/// Wraps a backend and fails writes or syncs on command: for tests.
#[cfg(test)]
pub(crate) struct Faulty {
    inner: Arc<dyn Io>,
    /// Writes still allowed before every write fails (u64::MAX: never fail).
    writes_left: AtomicU64,
    /// Syncs still allowed before every sync fails.
    syncs_left: AtomicU64,
    /// While set, writes wait (a stalled device).
    stalled: (std::sync::Mutex<bool>, std::sync::Condvar),
    /// While set, writes fail as on a full file system (`ENOSPC`).
    full: std::sync::atomic::AtomicBool,
}

#[cfg(test)]
impl Faulty {
    pub(crate) fn new(inner: Arc<dyn Io>) -> Self {
        Faulty {
            inner,
            writes_left: AtomicU64::new(u64::MAX),
            syncs_left: AtomicU64::new(u64::MAX),
            stalled: Default::default(),
            full: Default::default(),
        }
    }

    /// Makes every write fail with `ENOSPC` (`true`), as a full file system does.
    pub(crate) fn fill_up(&self, full: bool) {
        self.full.store(full, Ordering::SeqCst);
    }

    /// Stalls every write (`true`) until released (`false`).
    pub(crate) fn stall(&self, on: bool) {
        *self.stalled.0.lock().unwrap() = on;
        self.stalled.1.notify_all();
    }

    fn wait_if_stalled(&self) {
        let (lock, cond) = &self.stalled;
        let mut stalled = lock.lock().unwrap();
        while *stalled {
            stalled = cond.wait(stalled).unwrap();
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

#[cfg(test)]
impl Io for Faulty {
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        self.wait_if_stalled();
        if self.full.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Self::allow(&self.writes_left)?;
        self.inner.write_all_at(file, buf, offset)
    }

    fn write_all_vectored_at(&self, file: &File, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        self.wait_if_stalled();
        if self.full.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Self::allow(&self.writes_left)?;
        self.inner.write_all_vectored_at(file, bufs, offset)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Buffers of awkward lengths (one empty) and what they make together.
    fn pieces() -> (Vec<Vec<u8>>, Vec<u8>) {
        let bufs: Vec<Vec<u8>> = [3usize, 0, 4096, 1, 9000]
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| (i * 31 + j) as u8).collect())
            .collect();
        let joined = bufs.concat();
        (bufs, joined)
    }

    #[test]
    fn a_vectored_write_goes_on_after_short_and_interrupted_writes() {
        let (bufs, joined) = pieces();
        let slices: Vec<&[u8]> = bufs.iter().map(Vec::as_slice).collect();
        // A writer that takes at most 1000 bytes a call and is interrupted
        // every third call, into a file image starting at offset 100.
        let mut out = vec![0u8; 100 + joined.len()];
        let mut calls = 0;
        write_vectored(&slices, 100, |iov, at| {
            calls += 1;
            if calls % 3 == 0 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let mut room = 1000;
            let mut at = at as usize;
            for v in iov {
                // SAFETY (test): each iovec was made from a live slice.
                let buf = unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len) };
                let n = buf.len().min(room);
                out[at..at + n].copy_from_slice(&buf[..n]);
                (at, room) = (at + n, room - n);
            }
            Ok(1000 - room)
        })
        .unwrap();
        assert_eq!(&out[100..], &joined[..]);
        assert!(calls > 14, "{calls} calls");
    }

    #[test]
    fn a_vectored_write_that_takes_nothing_is_an_error() {
        let (bufs, _) = pieces();
        let slices: Vec<&[u8]> = bufs.iter().map(Vec::as_slice).collect();
        let err = write_vectored(&slices, 0, |_, _| Ok(0)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
        // Nothing to write at all is not.
        write_vectored(&[&[], &[]], 0, |_, _| Ok(0)).unwrap();
    }

    #[test]
    fn positional_vectored_writes_land_in_order() {
        let (bufs, joined) = pieces();
        let slices: Vec<&[u8]> = bufs.iter().map(Vec::as_slice).collect();
        let f = tempfile::tempfile().unwrap();
        Positional.write_all_vectored_at(&f, &slices, 7).unwrap();
        let mut back = vec![0u8; joined.len()];
        Positional.read_exact_at(&f, &mut back, 7).unwrap();
        assert_eq!(back, joined);
    }
}
