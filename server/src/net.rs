//! The network side: a tokio listener, one task per connection, requests
//! answered in order (pipelined requests are parsed from one read and their
//! replies written together), and a shutdown that stops accepting, lets the
//! connections finish the requests they have, and closes the cache.

use crate::commands::{Session, Shared, execute};
use crate::resp::{Limits, Reply, parse};
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How a server runs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Connections at once, at most (more are told so and closed).
    pub max_clients: usize,
    /// Threads serving connections (`None`: one per CPU), for [`run`].
    pub threads: Option<usize>,
    /// With a disk tier: `sync()` the cache this often (`None`: never but at
    /// close), so a crash or power loss loses at most about this much of
    /// the acknowledged writes (Redis's `appendfsync everysec` is 1 s).
    pub sync_every: Option<Duration>,
    /// A connection idle this long is closed (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Request limits.
    pub limits: Limits,
    /// Bytes of requests one connection may hold unanswered (read, not yet
    /// whole), at most: past it the client is told and closed.
    pub max_query_buffer: usize,
    /// Bytes of requests all connections together may hold unanswered, at
    /// most: a read that takes the total past it closes its connection with
    /// an error, if that connection holds more than 64 KiB. So the server's
    /// input memory stays bounded (by this, plus 64 KiB per client) however
    /// many clients send large requests slowly.
    pub max_input_total: usize,
}

impl Default for ServeConfig {
    /// 10,000 clients, no idle timeout, [`Limits::default`], 1 GiB per
    /// connection (Redis's `client-query-buffer-limit`) and 2 GiB in all.
    fn default() -> Self {
        ServeConfig {
            max_clients: 10_000,
            threads: None,
            sync_every: Some(Duration::from_secs(1)),
            idle_timeout: None,
            limits: Limits::default(),
            max_query_buffer: 1 << 30,
            max_input_total: 2 << 30,
        }
    }
}

/// Replies are written out once this many bytes of them are ready, so a
/// long pipeline does not pile up its replies in memory.
const WRITE_AT: usize = 1 << 20;

/// A connection holding at most this much input is never refused for the
/// total: the total is passed by large requests, and it is theirs that are
/// refused (small ones are bounded by the client limit).
const SMALL: usize = 64 << 10;

/// A connection's share of the servers' buffered input, given back on drop.
struct Held<'a> {
    total: &'a std::sync::atomic::AtomicUsize,
    mine: usize,
}

impl Held<'_> {
    /// Counts `now` bytes held by this connection; false if that takes the
    /// total past `max`.
    fn set(&mut self, now: usize, max: usize) -> bool {
        let total = if now >= self.mine {
            self.total.fetch_add(now - self.mine, Ordering::Relaxed) + (now - self.mine)
        } else {
            self.total.fetch_sub(self.mine - now, Ordering::Relaxed) - (self.mine - now)
        };
        self.mine = now;
        total <= max
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.total.fetch_sub(self.mine, Ordering::Relaxed);
    }
}

/// Syncs the cache every `every` until `stop` turns true (each sync on a
/// blocking thread: it waits for `fdatasync`).
async fn sync_every(shared: Arc<Shared>, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is at once
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        let s = Arc::clone(&shared);
        let synced = tokio::task::spawn_blocking(move || s.cache.sync()).await;
        let ok = matches!(synced, Ok(Ok(())));
        if let Ok(Err(e)) = &synced {
            log::warn!("sync failed: {e}");
        }
        shared.syncs.record(ok);
    }
}

/// Serves `shared` on `listener` until `stop` turns true; then waits (up to
/// `drain`) for the connections to finish what they have read.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    config: ServeConfig,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(1);
    if let Some(every) = config
        .sync_every
        .filter(|_| shared.cache.stats().disk.is_some())
    {
        tokio::spawn(sync_every(Arc::clone(&shared), every, stop.clone()));
    }
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                log::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.connections.fetch_add(1, Ordering::Relaxed);
        let clients = shared.clients.fetch_add(1, Ordering::SeqCst) + 1;
        if clients as usize > config.max_clients {
            shared.clients.fetch_sub(1, Ordering::SeqCst);
            let mut stream = stream;
            let _ = stream
                .write_all(b"-ERR max number of clients reached\r\n")
                .await;
            continue;
        }
        let (shared, config, stop, done) = (
            Arc::clone(&shared),
            config.clone(),
            stop.clone(),
            done_tx.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = connection(stream, &shared, &config, stop).await {
                log::debug!("connection {peer}: {e}");
            }
            shared.clients.fetch_sub(1, Ordering::SeqCst);
            drop(done);
        });
    }
    drop(done_tx);
    // Every connection task holds a sender: all gone, all done.
    let _ = tokio::time::timeout(drain, done_rx.recv()).await;
}

async fn connection(
    mut stream: TcpStream,
    shared: &Shared,
    config: &ServeConfig,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut session = Session::new(shared);
    let mut input = BytesMut::with_capacity(16 << 10);
    let mut output = Vec::with_capacity(16 << 10);
    let mut held = Held {
        total: &shared.buffered,
        mine: 0,
    };
    loop {
        // Answer every whole request read so far, in order.
        loop {
            match parse(&mut input, &config.limits) {
                Ok(Some(args)) if args.is_empty() => continue,
                Ok(Some(args)) => {
                    execute(shared, &mut session, &args).write(session.proto, &mut output);
                    if session.quit {
                        stream.write_all(&output).await?;
                        return Ok(());
                    }
                    if output.len() >= WRITE_AT {
                        stream.write_all(&output).await?;
                        output.clear();
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    Reply::err(e).write(session.proto, &mut output);
                    stream.write_all(&output).await?;
                    return Ok(()); // as Redis: a protocol error closes the connection
                }
            }
        }
        if !output.is_empty() {
            stream.write_all(&output).await?;
            output.clear();
            output.shrink_to(16 << 10);
        }
        if input.is_empty() && input.capacity() > 64 << 10 {
            input = BytesMut::with_capacity(16 << 10); // give back a big request's room
        }
        if *stop.borrow() {
            return Ok(());
        }
        let read = async {
            match config.idle_timeout {
                Some(t) => tokio::time::timeout(t, stream.read_buf(&mut input))
                    .await
                    .unwrap_or(Ok(0)),
                None => stream.read_buf(&mut input).await,
            }
        };
        let n = tokio::select! {
            n = read => n?,
            _ = stop.changed() => return Ok(()),
        };
        if n == 0 {
            return Ok(()); // closed, or idle past the timeout
        }
        let refusal = if input.len() > config.max_query_buffer {
            Some("ERR Protocol error: query buffer limit reached")
        } else if !held.set(input.capacity(), config.max_input_total) && input.capacity() > SMALL {
            Some("ERR server input memory limit reached")
        } else {
            None
        };
        if let Some(why) = refusal {
            log::warn!("closing a connection: {why}");
            stream.write_all(format!("-{why}\r\n").as_bytes()).await?;
            return Ok(());
        }
    }
}

/// Binds `addr` and serves until SIGTERM or SIGINT; then stops accepting,
/// lets connections finish (up to 5 s), and closes the cache, so the next
/// start is warm. Returns the cache's close error, if any.
pub fn run(
    addr: SocketAddr,
    shared: Arc<Shared>,
    config: ServeConfig,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), Box<dyn std::error::Error>> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = config.threads {
        runtime.worker_threads(n.max(1));
    }
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let bound = listener.local_addr()?;
        ready(bound);
        let (stop_tx, stop_rx) = watch::channel(false);
        // Whatever ends the wait (a signal, or a failure to listen for
        // one), the server is told to stop, so `join!` never hangs.
        let signals = async {
            let heard = wait_for_signal().await;
            let _ = stop_tx.send(true);
            heard
        };
        let server = serve(
            listener,
            Arc::clone(&shared),
            config,
            stop_rx,
            Duration::from_secs(5),
        );
        let (_, signalled) = tokio::join!(server, signals);
        signalled?;
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    drop(runtime);
    shared.cache.clone().close()?;
    Ok(())
}

/// Waits for SIGTERM or SIGINT.
async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM: shutting down"),
        _ = int.recv() => log::info!("SIGINT: shutting down"),
    }
    Ok(())
}
