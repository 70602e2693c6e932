//! Closes that the drop of a cache's last handle leaves to a thread of
//! their own, so that the dropping thread (an async worker, say) is not
//! held for the length of a close (a flush, an `fdatasync`, a checkpoint).
//!
//! What keeps the promise of a clean close: opening a directory (and
//! `verify_dir`) first waits for a close of it still under way, and the
//! process's exit waits for every one (an `atexit` hook, up to
//! [`EXIT_WAIT`]), so a program that drops its cache at the end of `main`
//! still leaves a cleanly closed directory.

use crate::sync::{Arc, Condvar, Mutex};
use crate::tiers::Tiers;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the process's exit waits for the closes under way.
pub(crate) const EXIT_WAIT: Duration = Duration::from_secs(60);

/// The closes under way: each cache's directory (`None`: no disk tier).
static UNDER_WAY: Mutex<Vec<Option<PathBuf>>> = Mutex::new(Vec::new());
static ENDED: Condvar = Condvar::new();

/// The name a directory is known by here (its canonical path, if it has one).
pub(crate) fn dir_key(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

fn hook_exit() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        if !crate::disk::io::at_exit(wait_at_exit) {
            log::warn!("cannot hook the process's exit: a cache dropped at exit may not close");
        }
    });
}

/// Notes that a close of `dir` (another directory than a cache's, such as
/// a journal's) has begun on a thread of its own; [`end`] notes its end.
pub(crate) fn begin(dir: &Path) {
    hook_exit();
    UNDER_WAY.lock().push(Some(dir_key(dir)));
}

/// Notes the end of a close [`begin`] noted.
pub(crate) fn end(dir: &Path) {
    ended(&Some(dir_key(dir)));
}

/// Closes `tiers` on a thread of its own (inline if no thread can be
/// started).
pub(crate) fn close_behind(tiers: Arc<Tiers>) {
    let dir = dir_of(&tiers);
    hook_exit();
    UNDER_WAY.lock().push(dir.clone());
    let closing = Arc::clone(&tiers);
    let spawned = std::thread::Builder::new()
        .name("larder-close".into())
        .spawn(move || {
            if let Err(e) = closing.close() {
                log::error!("closing a dropped cache failed: {e}");
            }
            ended(&dir);
        });
    if let Err(e) = spawned {
        log::warn!("cannot start a thread to close a dropped cache ({e}): closing it here");
        let _ = tiers.close();
        ended(&dir_of(&tiers));
    }
}

fn dir_of(tiers: &Tiers) -> Option<PathBuf> {
    tiers.lower().map(|l| dir_key(l.disk().dir()))
}

fn ended(dir: &Option<PathBuf>) {
    let mut under_way = UNDER_WAY.lock();
    if let Some(i) = under_way.iter().position(|d| d == dir) {
        under_way.swap_remove(i);
    }
    ENDED.notify_all();
}

/// Waits until no close of `dir` is under way.
pub(crate) fn wait_for(dir: &Path) {
    let dir = Some(dir_key(dir));
    let mut under_way = UNDER_WAY.lock();
    while under_way.contains(&dir) {
        ENDED.wait(&mut under_way);
    }
}

extern "C" fn wait_at_exit() {
    let end = Instant::now() + EXIT_WAIT;
    let mut under_way = UNDER_WAY.lock();
    while !under_way.is_empty() {
        if ENDED.wait_until(&mut under_way, end).timed_out() {
            return;
        }
    }
}
