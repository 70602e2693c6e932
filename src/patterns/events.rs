//! Event invalidation (after Redis's keyspace events): rules map an event
//! (a name and its key arguments) to keys and tags to invalidate, and
//! [`StoreCache::emit`] applies them. The `StoreCache`'s own writes emit
//! [`EVENT_PUT`] and [`EVENT_DELETE`] with the written key once the write is
//! done (write-through: in the store; write-behind: acknowledged), so an
//! update through the cache can invalidate what is derived from it (a
//! product's category listing, say).
//!
//! A key is invalidated under its stripe's lock, counted as a write, so a
//! load of it that read the store before the event does not cache what it
//! read after it (the same ordering as a write's). Rules run on the
//! emitting thread, with no lock of the cache held.

use super::store::{Store, StoreCache, StoreError};
use crate::sync::{Arc, RwLock};
use bytes::Bytes;
use std::collections::HashMap;

/// The event a [`StoreCache::put`] emits, with the key written.
pub const EVENT_PUT: &str = "put";
/// The event a [`StoreCache::delete`] emits, with the key deleted.
pub const EVENT_DELETE: &str = "delete";

/// Something that happened to the data behind the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// What happened (`"put"`, `"price-changed"`, …).
    pub name: String,
    /// The keys it concerns.
    pub keys: Vec<Bytes>,
}

impl Event {
    /// An event `name` about `keys`.
    pub fn new<K: AsRef<[u8]>>(name: impl Into<String>, keys: impl IntoIterator<Item = K>) -> Self {
        Event {
            name: name.into(),
            keys: keys
                .into_iter()
                .map(|k| Bytes::copy_from_slice(k.as_ref()))
                .collect(),
        }
    }
}

/// What a rule invalidates.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalidation {
    /// One key.
    Key(Bytes),
    /// Every entry with a tag (needs [`StoreCache::tags`]).
    Tag(String),
}

impl Invalidation {
    /// A key to invalidate.
    pub fn key(key: impl AsRef<[u8]>) -> Self {
        Invalidation::Key(Bytes::copy_from_slice(key.as_ref()))
    }

    /// A tag to invalidate.
    pub fn tag(tag: impl Into<String>) -> Self {
        Invalidation::Tag(tag.into())
    }
}

type Rule = dyn Fn(&Event) -> Vec<Invalidation> + Send + Sync;

/// The rules, by event name (shared by every handle of a `StoreCache`).
#[derive(Default)]
pub(crate) struct Rules(RwLock<HashMap<String, Vec<Arc<Rule>>>>);

impl<S: Store> StoreCache<S> {
    /// Adds a rule: on each event named `name`, invalidate what `rule`
    /// returns for it. Rules of one name run in the order they were added.
    ///
    /// ```
    /// use larder::{Cache, Event, Invalidation, Store, StoreCache, EVENT_PUT};
    /// # #[derive(Default)] struct Table;
    /// # impl Store for Table {
    /// #     type Error = std::io::Error;
    /// #     fn load(&self, _: &[u8]) -> std::io::Result<Option<larder::Bytes>> { Ok(None) }
    /// #     fn store(&self, _: &[u8], _: &[u8]) -> std::io::Result<()> { Ok(()) }
    /// #     fn delete(&self, _: &[u8]) -> std::io::Result<()> { Ok(()) }
    /// # }
    /// let products = StoreCache::new(Cache::builder().memory_capacity(1 << 20).build()?, Table);
    /// // A product's update drops the cached listing of its category.
    /// products.on_event(EVENT_PUT, |e: &Event| {
    ///     e.keys.iter().map(|_| Invalidation::key("listing:tea")).collect()
    /// });
    /// products.cache().insert(b"listing:tea", "[1, 2]")?;
    /// products.put(b"product:1", "green tea")?;
    /// assert!(products.cache().get(b"listing:tea").is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_event(
        &self,
        name: &str,
        rule: impl Fn(&Event) -> Vec<Invalidation> + Send + Sync + 'static,
    ) {
        self.rules()
            .0
            .write()
            .entry(name.to_string())
            .or_default()
            .push(Arc::new(rule));
    }

    /// Applies the rules for `event`: returns how many invalidations they
    /// made. Fails on the first tag invalidation that cannot be persisted
    /// (those before it are made).
    pub fn emit(&self, event: &Event) -> Result<u64, StoreError<S::Error>> {
        let rules: Vec<Arc<Rule>> = match self.rules().0.read().get(&event.name) {
            Some(rules) => rules.clone(),
            None => return Ok(0),
        };
        let mut made = 0;
        for rule in rules {
            for target in rule(event) {
                match target {
                    Invalidation::Key(key) => {
                        let mut order = self.stripe(&key).lock();
                        *order += 1;
                        self.cache().remove(&key);
                    }
                    Invalidation::Tag(tag) => self.invalidate_tag(&tag)?,
                }
                made += 1;
            }
        }
        Ok(made)
    }

    /// After a write of `key` through this layer: its event.
    pub(crate) fn emit_write(&self, name: &str, key: &[u8]) -> Result<(), StoreError<S::Error>> {
        if self.rules().0.read().contains_key(name) {
            self.emit(&Event::new(name, [key]))?;
        }
        Ok(())
    }
}
