//! Tag invalidation: per-tag generations, checked on every read.
//!
//! A [`StoreCache`] with tags ([`StoreCache::tags`]) caches every value in
//! an envelope (`format/journal.rs`): the tags its tagger gave it, each
//! with the tag's generation at the time, and the tag table's identity.
//! [`StoreCache::invalidate_tag`] raises the tag's generation: from then on
//! every entry cached with the older one fails its check when read, in
//! memory or on disk, and is dropped and loaded again. That is O(1) per
//! invalidation (one journal record, synced) and O(tags) per read.
//!
//! **Persisted.** The generations live in a journal of their own, each
//! raise synced before `invalidate_tag` returns, so a crash right after it
//! cannot bring back an entry it invalidated. Opening compacts the journal
//! to one record per tag. A journal found damaged is set aside and a new
//! one, with a new identity, begins: every tagged entry cached under the
//! old identity then fails its check (nothing stale comes back, at the
//! price of reloading them). Entries without tags carry one byte and are
//! never checked.
//!
//! **Races.** A load that read the store before an invalidation and caches
//! after it could cache what the invalidation meant to drop. So every
//! invalidation also moves a global epoch; a load notes the epoch before it
//! reads the store, and if it moved meanwhile, the value is cached with
//! generations that match nothing (it is served to its caller, then loaded
//! again by the next read).
//!
//! **Cost.** Per tagged entry: 9 + 16 bytes per tag. Per tag ever
//! invalidated: one map entry (two `u64`s) in memory and one 24-byte record
//! in the journal after compaction.

use super::journal::Journal;
use super::store::{Store, StoreCache, StoreError};
use crate::format::journal::{
    JOURNAL_TAGS, MAX_TAGS, decode_envelope, decode_tag, encode_envelope, encode_tag,
};
use crate::sync::{Arc, AtomicU64, Mutex, Ordering, RwLock};
use bytes::Bytes;
use std::collections::HashMap;
use std::path::Path;

/// What gives a value its tags: called with the key and the value each
/// time one is cached.
pub type Tagger = dyn Fn(&[u8], &[u8]) -> Vec<String> + Send + Sync;

/// A generation no entry was cached with.
const NEVER: u64 = u64::MAX;

pub(crate) struct Tags {
    tagger: Box<Tagger>,
    table: u64,
    generations: RwLock<HashMap<u64, u64>>,
    journal: Mutex<Journal>,
    epoch: AtomicU64,
    damage: u64,
}

fn tag_hash(tag: &str) -> u64 {
    crate::key::hash_key(tag.as_bytes())
}

impl Tags {
    fn open(dir: &Path, tagger: Box<Tagger>) -> std::io::Result<Tags> {
        let fresh_id = || {
            crate::key::hash_key(
                format!("{:?}{}tags", std::time::Instant::now(), std::process::id()).as_bytes(),
            )
        };
        let mut opened = Journal::open(dir, JOURNAL_TAGS, "tags", fresh_id(), 0)?;
        let mut damage = opened.damage.len() as u64;
        let mut generations = HashMap::new();
        for payload in &opened.records {
            match decode_tag(payload) {
                Ok((tag, generation)) => {
                    let g = generations.entry(tag).or_insert(0);
                    *g = generation.max(*g);
                }
                Err(_) => damage += 1,
            }
        }
        if damage > 0 {
            // What was lost may have raised a generation: start over under
            // a new identity, so no entry cached under the old one passes.
            log::error!(
                "tag journal {}: damaged, set aside; every tagged entry will be loaded again",
                dir.display()
            );
            drop(opened);
            for entry in std::fs::read_dir(dir)? {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "tags") {
                    let mut to = path.clone().into_os_string();
                    to.push(".quarantined");
                    std::fs::rename(&path, &to)?;
                }
            }
            opened = Journal::open(dir, JOURNAL_TAGS, "tags", fresh_id(), 0)?;
            generations.clear();
        }
        let mut journal = opened.journal;
        // Compaction: one record per tag in the new file, then the old go.
        for (&tag, &generation) in &generations {
            journal.append(&encode_tag(tag, generation))?;
        }
        journal.current().sync_data()?;
        journal.mark_older(0);
        journal.retire_below(1);
        Ok(Tags {
            tagger,
            table: journal.id(),
            generations: RwLock::new(generations),
            journal: Mutex::new(journal),
            epoch: AtomicU64::new(0),
            damage,
        })
    }

    fn invalidate(&self, tag: &str) -> std::io::Result<()> {
        let hash = tag_hash(tag);
        let mut journal = self.journal.lock();
        let generation = self.generations.read().get(&hash).copied().unwrap_or(0) + 1;
        journal.append(&encode_tag(hash, generation))?;
        journal.current().sync_data()?;
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.generations.write().insert(hash, generation);
        drop(journal);
        Ok(())
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// `value` in its envelope, for `key`; with generations that match
    /// nothing if an invalidation came since `epoch`, or if the value has
    /// more tags than an envelope holds (so it is served, never hit).
    pub(crate) fn wrap(&self, key: &[u8], value: &[u8], epoch: u64) -> Bytes {
        let mut names = (self.tagger)(key, value);
        let mut stale = false;
        if names.len() > MAX_TAGS {
            log::warn!(
                "a value with {} tags is never hit (at most {MAX_TAGS})",
                names.len()
            );
            names.truncate(1);
            stale = true;
        }
        let tags: Vec<(u64, u64)> = {
            let generations = self.generations.read();
            names
                .iter()
                .map(|t| {
                    let hash = tag_hash(t);
                    (hash, generations.get(&hash).copied().unwrap_or(0))
                })
                .collect()
        };
        let stale = stale || self.epoch() != epoch;
        let tags: Vec<(u64, u64)> = if stale {
            tags.into_iter().map(|(h, _)| (h, NEVER)).collect()
        } else {
            tags
        };
        let mut out = Vec::with_capacity(1 + 8 + 16 * tags.len() + value.len());
        encode_envelope(self.table, &tags, value, &mut out);
        Bytes::from(out)
    }

    /// The value in `stored`'s envelope if every tag's generation is still
    /// the current one (`check`), or regardless (`!check`).
    pub(crate) fn unwrap(&self, stored: Bytes, check: bool) -> Option<Bytes> {
        let (table, mut tags, start) = decode_envelope(&stored).ok()?;
        if check && start > 1 {
            if table != self.table {
                return None;
            }
            let generations = self.generations.read();
            if !tags.all(|(hash, g)| generations.get(&hash).copied().unwrap_or(0) == g) {
                return None;
            }
        }
        Some(stored.slice(start..))
    }
}

impl<S: Store> StoreCache<S> {
    /// Turns tags on: every value this `StoreCache` caches is given the
    /// tags `tagger` returns for it (its key and value), and
    /// [`invalidate_tag`](Self::invalidate_tag) makes every entry with a
    /// tag unreachable in both tiers at once. The generations persist in
    /// `dir` (a directory of their own). Values in the cache are kept in an
    /// envelope: read them through this `StoreCache`, not through
    /// [`cache`](Self::cache). Call this before
    /// [`refresh_after`](Self::refresh_after).
    pub fn tags(
        mut self,
        dir: impl AsRef<Path>,
        tagger: impl Fn(&[u8], &[u8]) -> Vec<String> + Send + Sync + 'static,
    ) -> Result<Self, StoreError<S::Error>> {
        let tags = Tags::open(dir.as_ref(), Box::new(tagger))
            .map_err(|e| StoreError::Journal(Arc::new(e)))?;
        self.set_tags(tags)?;
        Ok(self)
    }

    /// Makes every entry cached with `tag` unreachable, in memory and on
    /// disk, now and after a restart or a crash (the raise is synced before
    /// this returns). Without tags on, nothing happens.
    pub fn invalidate_tag(&self, tag: &str) -> Result<(), StoreError<S::Error>> {
        match self.tag_table() {
            Some(t) => t
                .invalidate(tag)
                .map_err(|e| StoreError::Journal(Arc::new(e))),
            None => Ok(()),
        }
    }

    /// Damaged tag journals found on open (each set aside, see the log).
    pub fn tag_journal_damage(&self) -> u64 {
        self.tag_table().map_or(0, |t| t.damage)
    }
}
