//! A session store used from tokio that survives a restart: typed sessions
//! on a two-tier cache, opened and closed off the executor
//! (`build_async`, `close_async`), each session with its own lifetime, user
//! profiles loaded once however many requests miss at once
//! (`get_with_async`), and a restart after which the live sessions are
//! still there and the expired ones are not.
//!
//! `cargo run --example sessions --features serde` (the test command runs it too).

use larder::{Cache, CheckpointStatus, Postcard, TypedCache};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Session {
    user: u64,
    csrf: String,
    cart: Vec<u64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Profile {
    user: u64,
    display_name: String,
}

#[derive(Clone)]
struct Store {
    sessions: TypedCache<String, Session, Postcard>,
    profiles: TypedCache<u64, Profile, Postcard>,
    /// Calls to the (simulated) user service.
    profile_loads: Arc<AtomicU64>,
}

impl Store {
    async fn open(dir: &Path) -> Result<Store, larder::BuildError> {
        let cache = Cache::builder()
            .memory_capacity(1 << 20)
            .disk(dir, 32 << 20)
            .segment_size(1 << 20)
            .build_async()
            .await?;
        Ok(Store {
            sessions: TypedCache::new(cache.clone()),
            profiles: TypedCache::new(cache),
            profile_loads: Arc::new(AtomicU64::new(0)),
        })
    }

    fn login(&self, id: &str, user: u64, lifetime: Duration) -> Result<(), larder::Error> {
        let session = Session {
            user,
            csrf: format!("csrf-{user}-{id}"),
            cart: vec![],
        };
        self.sessions.insert_with_ttl(id, &session, lifetime)
    }

    /// A request: its session, and its user's profile from the user service
    /// on a miss (one call per user, however many requests miss at once).
    async fn request(&self, id: &str) -> Result<Option<Profile>, larder::Error> {
        let Some(session) = self.sessions.get(id) else {
            return Ok(None);
        };
        let loads = Arc::clone(&self.profile_loads);
        let profile = self
            .profiles
            .get_with_async(&session.user, async move {
                loads.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await; // the user service
                Profile {
                    user: session.user,
                    display_name: format!("user {}", session.user),
                }
            })
            .await?;
        Ok(Some(profile))
    }

    async fn close(self) -> Result<(), larder::Error> {
        self.sessions.cache().clone().close_async().await
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path()).await?;
    for s in 0..2_000u64 {
        store.login(&format!("s{s}"), s % 500, Duration::from_secs(1800))?;
    }
    // Sessions that end soon (a "public computer" login).
    for s in 0..50u64 {
        store.login(&format!("short{s}"), s, Duration::from_millis(200))?;
    }

    // 64 concurrent requests per user for a few users: one profile load each.
    let tasks: Vec<_> = (0..640u64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.request(&format!("s{}", i % 10)).await })
        })
        .collect();
    for t in tasks {
        assert!(t.await??.is_some());
    }
    let loads = store.profile_loads.load(Ordering::Relaxed);
    println!("640 concurrent requests over 10 users: {loads} profile loads");
    assert_eq!(loads, 10);

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(store.request("short1").await?.is_none(), "expired");
    store.close().await?;

    // The restart: sessions are still there, warm.
    let store = Store::open(dir.path()).await?;
    let recovery = store.sessions.cache().stats().disk.unwrap().recovery;
    assert_eq!(recovery.checkpoint, CheckpointStatus::Used);
    let mut live = 0;
    for s in 0..2_000u64 {
        let session = store.sessions.get(format!("s{s}").as_str());
        assert_eq!(session.map(|x| x.user), Some(s % 500), "session s{s}");
        live += 1;
    }
    for s in 0..50u64 {
        assert!(store.sessions.get(format!("short{s}").as_str()).is_none());
    }
    assert!(store.request("s3").await?.is_some());
    println!(
        "after a restart: {live} sessions live, the 50 expired ones gone, hit ratio {:.3}",
        store.sessions.cache().stats().hit_ratio()
    );
    store.close().await?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    run().await
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_runs() {
        super::main().unwrap();
    }
}
