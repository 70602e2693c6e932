//! Sealed segments read through read-only memory maps, and the SIGBUS
//! handler that turns a file truncated under its map into a miss.
//! One of larder's three modules with `unsafe` code (with `image` and `io`).
//!
//! # Why a signal handler
//! A page of a shared file mapping past the file's end raises SIGBUS when it
//! is touched; so does a page the kernel cannot read in (a failing disk).
//! larder never truncates a file it has mapped, but another process can. So
//! every map is registered in a process-wide table, and a SIGBUS handler,
//! installed once, looks the faulting address up in it: inside a larder map,
//! it maps a private page of zeros over the faulting page (`MAP_FIXED`),
//! marks the map faulted, and returns; the faulting load runs again and reads
//! zeros. The copy then fails its crc32 (zeros are never a valid record
//! header), the reader sees the mark, and the segment becomes a miss and is
//! dropped from the index. Outside larder's maps, the handler hands the
//! signal to whatever handler was installed before it (Rust's own, which
//! reports stack overflows, or the default action, which kills the process
//! as it would have without larder).
//!
//! # Soundness of the handler
//! - **Async-signal-safety.** The handler reads the registry with atomic
//!   loads only (no lock, no allocation), calls `mmap` and `sigaction`
//!   (libc's wrappers are plain system calls on Linux and take no lock), saves and restores `errno`, and reads
//!   the previous handler from a `OnceLock` that was set before the handler
//!   was installed (`OnceLock::get` is an acquire load). It never touches
//!   the map's Rust objects.
//! - **A fault in a thread that holds a lock.** The handler takes no lock,
//!   so it cannot deadlock with the interrupted thread, whatever that holds.
//! - **Two faults at once.** Each thread's handler maps zeros over its own
//!   faulting page; two handlers on one page both map zeros there, and the
//!   second replaces one zero page with another. The faulted mark is a store
//!   of `true`, idempotent.
//! - **The registry cannot lie to the handler.** A thread faults on a map
//!   only while it copies from it, and it holds the map (`Arc`) meanwhile;
//!   a map is registered before it is shared and unregistered only when the
//!   last holder drops it, before `munmap`. So the faulting map's slot is
//!   stable during the fault. Other slots may be changing: each slot is a
//!   seqlock, and a slot read while it changes is skipped (it is not the
//!   faulting map's).
//! - **The zero page.** It replaces one page of the map's address range,
//!   which still belongs to the map: the map's `munmap` (when it drops)
//!   removes it with the rest. Nothing is ever written through a map.
//! - **Reading memory another process may change.** Bytes are copied out
//!   with `ptr::copy_nonoverlapping` from the map's raw pointer into the
//!   reader's buffer; no reference to the mapped bytes is ever formed, and
//!   the copy is checked (crc32, full key) before any byte is used.
//! - **ThreadSanitizer** sees the handler's `mmap` as a write to the page,
//!   racing with other threads' copies from it; the kernel swaps the page
//!   under all of them at once, so the report is suppressed by name
//!   (`.ci/tsan.supp` says why).

#![allow(unsafe_code)]

use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering};
use std::fs::File;
use std::io;
use std::sync::OnceLock;

/// Maps the process may register at once, over every tier (a tier's own
/// bound, `DiskConfig::max_maps`, is lower by default). A map that finds the
/// table full is not made, and its segment is read with `pread`.
pub(crate) const REGISTRY_SLOTS: usize = 1 << 15;

/// One registered map: its address range, and whether a fault hit it. A
/// seqlock: `seq` is odd while the range changes.
struct Slot {
    seq: AtomicUsize,
    start: AtomicUsize,
    end: AtomicUsize,
    faulted: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    seq: AtomicUsize::new(0),
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    faulted: AtomicBool::new(false),
};

static SLOTS: [Slot; REGISTRY_SLOTS] = [FREE; REGISTRY_SLOTS];
/// Which slots are taken (only maps being made or dropped touch it; the
/// handler never does).
static TAKEN: Mutex<Vec<bool>> = Mutex::new(Vec::new());
/// The handler that was installed before larder's.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
/// The page size, read once at install.
static PAGE: AtomicUsize = AtomicUsize::new(4096);

fn page_size() -> usize {
    PAGE.load(Ordering::Relaxed)
}

/// A read-only map of the first `len` bytes of a segment file.
pub(crate) struct Map {
    map: memmap2::Mmap,
    slot: usize,
    /// One bit per page: read before (see [`Map::seen`]).
    touched: Box<[AtomicU64]>,
}

impl Map {
    /// Maps `len` bytes of `file` (which must be at least that long: a map
    /// past the end would fault on every read), with random-access advice.
    /// Fails if the process's registry of maps is full.
    pub(crate) fn new(file: &File, len: usize) -> io::Result<Map> {
        install();
        // SAFETY: the map is read-only and only ever read through raw copies
        // (`copy_to`), never as a Rust reference, so a file changed or
        // truncated under it cannot break a reference's guarantees; faults
        // from truncation are the handler's (module docs).
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(file)? };
        map.advise(memmap2::Advice::Random)?;
        let slot = register(map.as_ptr() as usize, len)
            .ok_or_else(|| io::Error::other("the process's registry of memory maps is full"))?;
        let pages = len.div_ceil(page_size());
        let touched = (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        Ok(Map { map, slot, touched })
    }

    /// Whether every page of `offset..offset + len` (within the map) was
    /// asked for before; marks them. A page never asked for may not be in
    /// the page cache, and a fault on it reads that one page and waits (the
    /// map's advice is random: no readahead), so a record spanning two cold
    /// pages would wait for two device reads where `pread` waits for one. A
    /// caller reads unseen pages with `pread` instead, which also leaves
    /// them in the page cache for the map's next reads.
    pub(crate) fn seen(&self, offset: usize, len: usize) -> bool {
        let end = offset.saturating_add(len).min(self.map.len());
        if offset >= end {
            return true;
        }
        let page = page_size();
        let mut all = true;
        for page in offset / page..=(end - 1) / page {
            let (word, bit) = (&self.touched[page / 64], 1u64 << (page % 64));
            if word.load(Ordering::Relaxed) & bit == 0 {
                word.fetch_or(bit, Ordering::Relaxed);
                all = false;
            }
        }
        all
    }

    /// Copies the map's bytes at `offset..offset + out.len()` into `out`, if
    /// they lie inside the map. Whether no fault has hit the map, ever (a
    /// faulted map may have handed out zeros).
    pub(crate) fn copy_to(&self, offset: usize, out: &mut [u8]) -> Result<(), Faulted> {
        let end = offset.checked_add(out.len()).ok_or(Faulted::OutOfRange)?;
        if end > self.map.len() {
            return Err(Faulted::OutOfRange);
        }
        // SAFETY: `offset..end` lies inside the live map (checked above; the
        // map lives as long as `self`), `out` is a distinct buffer of that
        // length, and a page that cannot be read is replaced by zeros by the
        // handler, so the copy always completes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.map.as_ptr().add(offset),
                out.as_mut_ptr(),
                out.len(),
            );
        }
        if self.faulted() {
            return Err(Faulted::Fault);
        }
        Ok(())
    }

    /// The map's `len` bytes at `offset`, in a new buffer of exactly that
    /// size (not zeroed first: the copy fills it), if they lie inside the
    /// map and no fault has hit it.
    pub(crate) fn to_vec(&self, offset: usize, len: usize) -> Result<Vec<u8>, Faulted> {
        let end = offset.checked_add(len).ok_or(Faulted::OutOfRange)?;
        if end > self.map.len() {
            return Err(Faulted::OutOfRange);
        }
        let mut out = Vec::with_capacity(len);
        // SAFETY: as in `copy_to`, `offset..end` lies inside the live map and
        // always reads (zeros at worst); `out` has room for `len` bytes, and
        // `set_len` follows the copy that initialises all of them.
        unsafe {
            std::ptr::copy_nonoverlapping(self.map.as_ptr().add(offset), out.as_mut_ptr(), len);
            out.set_len(len);
        }
        if self.faulted() {
            return Err(Faulted::Fault);
        }
        Ok(out)
    }

    /// Whether a SIGBUS hit this map.
    pub(crate) fn faulted(&self) -> bool {
        SLOTS[self.slot].faulted.load(Ordering::Acquire)
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // Unregistered before `memmap2` unmaps it (after this body): no
        // thread reads it any more, so no fault can be looking for it.
        unregister(self.slot);
    }
}

/// Why a copy from a map failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Faulted {
    /// The range is not inside the map.
    OutOfRange,
    /// A fault hit the map: its bytes cannot be trusted.
    Fault,
}

fn register(start: usize, len: usize) -> Option<usize> {
    let mut taken = TAKEN.lock();
    if taken.is_empty() {
        taken.resize(REGISTRY_SLOTS, false);
    }
    let slot = taken.iter().position(|t| !t)?;
    taken[slot] = true;
    let s = &SLOTS[slot];
    let seq = s.seq.load(Ordering::Relaxed);
    s.seq.store(seq + 1, Ordering::Relaxed);
    std::sync::atomic::fence(Ordering::Release);
    s.start.store(start, Ordering::Relaxed);
    s.end.store(start + len, Ordering::Relaxed);
    s.faulted.store(false, Ordering::Relaxed);
    s.seq.store(seq + 2, Ordering::Release);
    Some(slot)
}

fn unregister(slot: usize) {
    let mut taken = TAKEN.lock();
    let s = &SLOTS[slot];
    let seq = s.seq.load(Ordering::Relaxed);
    s.seq.store(seq + 1, Ordering::Relaxed);
    std::sync::atomic::fence(Ordering::Release);
    s.start.store(0, Ordering::Relaxed);
    s.end.store(0, Ordering::Relaxed);
    s.seq.store(seq + 2, Ordering::Release);
    taken[slot] = false;
}

/// The slot whose map holds `addr`, read without a lock (for the handler).
fn slot_of(addr: usize) -> Option<usize> {
    SLOTS.iter().position(|s| {
        let before = s.seq.load(Ordering::Acquire);
        if before % 2 == 1 {
            return false;
        }
        let (start, end) = (
            s.start.load(Ordering::Relaxed),
            s.end.load(Ordering::Relaxed),
        );
        std::sync::atomic::fence(Ordering::Acquire);
        s.seq.load(Ordering::Relaxed) == before && start <= addr && addr < end
    })
}

/// Installs the SIGBUS handler, once per process.
fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sysconf` has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            PAGE.store(page as usize, Ordering::Relaxed);
        }
        // SAFETY: a zeroed `sigaction` is a valid value of the C struct; the
        // new action names a handler of the `SA_SIGINFO` signature, with an
        // empty mask; the previous action is stored before the handler can
        // run (it is installed by the second call, and reads `PREVIOUS`).
        unsafe {
            let mut previous: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous);
            let _ = PREVIOUS.set(previous);
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) != 0 {
                log::warn!(
                    "cannot install the SIGBUS handler: a segment file truncated under its map will crash the process"
                );
            }
        }
    });
}

/// The SIGBUS handler (module docs: what it may do and why).
extern "C" fn on_sigbus(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid `siginfo_t` to an `SA_SIGINFO`
    // handler; `errno` is this thread's, saved and restored around the
    // system calls below.
    unsafe {
        let errno = *libc::__errno_location();
        let addr = (*info).si_addr() as usize;
        if let Some(slot) = slot_of(addr) {
            let page = PAGE.load(Ordering::Relaxed);
            let at = addr & !(page - 1);
            let zeros = libc::mmap(
                at as *mut libc::c_void,
                page,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            );
            if zeros != libc::MAP_FAILED {
                SLOTS[slot].faulted.store(true, Ordering::Release);
                *libc::__errno_location() = errno;
                return;
            }
        }
        chain(signal, info, context);
        *libc::__errno_location() = errno;
    }
}

/// Hands a SIGBUS that is not larder's to the handler installed before.
///
/// # Safety
/// Called from the SIGBUS handler with the kernel's arguments.
unsafe fn chain(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let previous = PREVIOUS.get();
    let handler = previous.map_or(libc::SIG_DFL, |p| p.sa_sigaction);
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // Restore the default action and return: the faulting instruction
        // runs again and the kernel delivers the signal as it would have
        // without larder (a SIGBUS from a fault cannot be ignored).
        // SAFETY: a zeroed `sigaction` with `SIG_DFL` is valid.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
        return;
    }
    let flags = previous.map_or(0, |p| p.sa_flags);
    if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous action declared the three-argument signature.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        f(signal, info, context);
    } else {
        // SAFETY: without `SA_SIGINFO` the handler takes the signal only.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_of(len: usize) -> (tempfile::NamedTempFile, File) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        f.write_all(&bytes).unwrap();
        f.flush().unwrap();
        let file = File::open(f.path()).unwrap();
        (f, file)
    }

    #[test]
    fn copies_inside_the_map_and_refuses_outside() {
        let (_f, file) = file_of(3 * 4096);
        let map = Map::new(&file, 3 * 4096).unwrap();
        let mut out = [0u8; 10];
        map.copy_to(4096 + 5, &mut out).unwrap();
        let want: Vec<u8> = (4096 + 5..4096 + 15).map(|i| (i % 251) as u8).collect();
        assert_eq!(&out[..], &want[..]);
        assert_eq!(
            map.copy_to(3 * 4096 - 5, &mut out),
            Err(Faulted::OutOfRange)
        );
        assert_eq!(map.copy_to(usize::MAX, &mut out), Err(Faulted::OutOfRange));
        assert!(!map.faulted());
    }

    /// A file truncated under its map: the next copy of a page past the new
    /// end reads zeros and reports the fault, and the process goes on.
    #[test]
    fn a_file_truncated_under_its_map_is_a_fault_not_a_crash() {
        let (f, file) = file_of(4 * 4096);
        let map = Map::new(&file, 4 * 4096).unwrap();
        let mut out = vec![0u8; 4096];
        map.copy_to(2 * 4096, &mut out).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(f.path())
            .unwrap()
            .set_len(4096)
            .unwrap();
        assert_eq!(map.copy_to(2 * 4096 + 100, &mut out), Err(Faulted::Fault));
        assert!(out.iter().all(|&b| b == 0), "the faulting page reads zeros");
        assert!(map.faulted());
        // The page before the cut still reads, but the map is marked.
        assert_eq!(map.copy_to(10, &mut out[..10]), Err(Faulted::Fault));
        // Another map is not affected.
        let (_g, other) = file_of(4096);
        let other = Map::new(&other, 4096).unwrap();
        other.copy_to(0, &mut out[..10]).unwrap();
    }

    #[test]
    fn slots_are_reused_after_a_map_drops() {
        let (_f, file) = file_of(4096);
        let a = Map::new(&file, 4096).unwrap();
        let slot = a.slot;
        let start = a.map.as_ptr() as usize;
        assert_eq!(slot_of(start + 10), Some(slot));
        drop(a);
        assert_eq!(slot_of(start + 10), None);
        let b = Map::new(&file, 4096).unwrap();
        assert!(!b.faulted());
    }

    /// A SIGBUS outside larder's maps is not swallowed: it reaches the
    /// handler installed before (here Rust's own, which falls back to the
    /// default action) and the process dies of it, as it would without
    /// larder. Run in a child process.
    #[test]
    fn a_fault_outside_larders_maps_kills_as_before() {
        const NAME: &str = "disk::mapped::tests::a_fault_outside_larders_maps_kills_as_before";
        if std::env::var_os("LARDER_SIGBUS_CHILD").is_some() {
            let (_f, file) = file_of(4096);
            let _ours = Map::new(&file, 4096).unwrap(); // installs the handler
            let (g, other) = file_of(2 * 4096);
            // SAFETY: a test's own read-only map, read once below.
            let foreign = unsafe {
                memmap2::MmapOptions::new()
                    .len(2 * 4096)
                    .map(&other)
                    .unwrap()
            };
            std::fs::OpenOptions::new()
                .write(true)
                .open(g.path())
                .unwrap()
                .set_len(0)
                .unwrap();
            // SAFETY: inside the map; the page is past the file's end, so
            // this faults, which is the point.
            let byte = unsafe { std::ptr::read_volatile(foreign.as_ptr().add(4096)) };
            std::process::exit(i32::from(byte) + 100); // not reached
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--test-threads=1"])
            .env("LARDER_SIGBUS_CHILD", "1")
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        // Under a sanitizer, its handler came before larder's and reports it.
        let sanitizer = String::from_utf8_lossy(&out.stderr).contains("Sanitizer: BUS");
        assert!(
            out.status.signal() == Some(libc::SIGBUS) || (sanitizer && !out.status.success()),
            "{out:?}"
        );
    }
}
