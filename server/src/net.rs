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
    /// A connection idle this long is closed (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Request limits.
    pub limits: Limits,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            max_clients: 10_000,
            idle_timeout: None,
            limits: Limits::default(),
        }
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
    }
}

/// Binds `addr` and serves until SIGTERM or SIGINT; then stops accepting,
/// lets connections finish (up to 5 s), and closes the cache, so the next
/// start is warm. Returns the cache's close error, if any.
pub fn run(
    addr: SocketAddr,
    shared: Shared,
    config: ServeConfig,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let shared = Arc::new(shared);
    runtime.block_on(async {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let bound = listener.local_addr()?;
        ready(bound);
        let (stop_tx, stop_rx) = watch::channel(false);
        let signals = async {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate())?;
            let mut int = signal(SignalKind::interrupt())?;
            tokio::select! {
                _ = term.recv() => log::info!("SIGTERM: shutting down"),
                _ = int.recv() => log::info!("SIGINT: shutting down"),
            }
            let _ = stop_tx.send(true);
            Ok::<(), std::io::Error>(())
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
