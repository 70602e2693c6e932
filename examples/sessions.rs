//! A session store used from tokio that survives a restart: typed sessions
//! on a two-tier cache with a time to idle (a session nobody uses for a
//! while is gone; one in use lives on), opened and closed off the executor
//! (`build_async`, `close_async`); user profiles read from a real SQLite
//! file through a `StoreCache` (one query per user however many requests
//! miss at once); and a restart after which the sessions in use are still
//! there and the idle ones are not.
//!
//! `cargo run --example sessions --features serde,sqlite` (the test command runs it too).

use larder::{Cache, CheckpointStatus, Postcard, SqliteStore, Store, StoreCache, TypedCache};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a session lives unused (30 minutes in a real service).
const IDLE: Duration = Duration::from_millis(1_500);

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Session {
    user: u64,
    csrf: String,
    cart: Vec<u64>,
}

#[derive(Clone)]
struct Service {
    sessions: TypedCache<String, Session, Postcard>,
    /// `user:<id>` → display name, from the `profiles` table.
    profiles: Arc<StoreCache<SqliteStore>>,
}

impl Service {
    async fn open(dir: &Path) -> Result<Service, Box<dyn std::error::Error>> {
        let sessions = Cache::builder()
            .memory_capacity(1 << 20)
            .disk(dir.join("sessions"), 32 << 20)
            .segment_size(1 << 20)
            .time_to_idle(IDLE)
            .build_async()
            .await?;
        let profiles = Cache::builder().memory_capacity(1 << 20).build()?;
        let db = SqliteStore::open(dir.join("users.sqlite"), "profiles")?;
        Ok(Service {
            sessions: TypedCache::new(sessions),
            profiles: Arc::new(StoreCache::new(profiles, db)),
        })
    }

    fn login(&self, id: &str, user: u64) -> Result<(), larder::Error> {
        let session = Session {
            user,
            csrf: format!("csrf-{user}-{id}"),
            cart: vec![],
        };
        self.sessions.insert(id, &session)
    }

    /// A request: its session (reading it restarts its idle time), and its
    /// user's display name from SQLite on a miss, off the executor.
    async fn request(
        &self,
        id: &str,
    ) -> Result<Option<String>, Box<dyn std::error::Error + Send + Sync>> {
        let Some(session) = self.sessions.get(id) else {
            return Ok(None);
        };
        let profiles = Arc::clone(&self.profiles);
        let key = format!("user:{}", session.user);
        let name = tokio::task::spawn_blocking(move || profiles.get(key.as_bytes())).await??;
        Ok(name.map(|n| String::from_utf8_lossy(&n).into_owned()))
    }

    async fn close(self) -> Result<(), larder::Error> {
        self.sessions.cache().clone().close_async().await
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let dir = tempfile::tempdir()?;
    let service = Service::open(dir.path()).await.map_err(|e| e.to_string())?;
    for user in 0..500u64 {
        service.profiles.store().store(
            format!("user:{user}").as_bytes(),
            format!("user {user}").as_bytes(),
        )?;
    }
    for s in 0..2_000u64 {
        service.login(&format!("s{s}"), s % 500)?;
    }

    // 64 concurrent requests per user for 10 users: one query each.
    let tasks: Vec<_> = (0..640u64)
        .map(|i| {
            let service = service.clone();
            tokio::spawn(async move {
                service
                    .request(&format!("s{}", i % 10))
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    for t in tasks {
        assert!(t.await??.is_some());
    }
    let queries = service.profiles.cache().stats().loads;
    println!("640 concurrent requests over 10 users: {queries} profile queries");
    assert_eq!(queries, 10);

    // Sessions s0..s99 stay in use; the rest go idle.
    let start = Instant::now();
    while start.elapsed() < IDLE * 2 {
        for s in 0..100u64 {
            assert!(
                service.request(&format!("s{s}")).await?.is_some(),
                "s{s} is in use"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let idle_left = (100..2_000u64)
        .filter(|s| service.sessions.get(format!("s{s}").as_str()).is_some())
        .count();
    println!(
        "after {:?}: 100 sessions in use live on, {idle_left} idle ones left",
        IDLE * 2
    );
    assert_eq!(idle_left, 0);
    service.close().await?;

    // The restart: the sessions in use are still there, warm.
    let service = Service::open(dir.path()).await.map_err(|e| e.to_string())?;
    let recovery = service.sessions.cache().stats().disk.unwrap().recovery;
    assert_eq!(recovery.checkpoint, CheckpointStatus::Used);
    for s in 0..100u64 {
        let session = service.sessions.get(format!("s{s}").as_str());
        assert_eq!(session.map(|x| x.user), Some(s % 500), "session s{s}");
    }
    assert!(service.sessions.get("s1500").is_none());
    assert_eq!(service.request("s3").await?.as_deref(), Some("user 3"));
    println!(
        "after a restart: 100 sessions live, the idle ones gone, hit ratio {:.3}",
        service.sessions.cache().stats().hit_ratio()
    );
    service.close().await?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    run().await
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_runs() {
        super::main().unwrap();
    }
}
