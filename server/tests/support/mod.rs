//! The servers and the client the server's tests share: a server in
//! process over TCP, and a plain RESP client whose replies read as text.

#![allow(dead_code)]

use larder::Cache;
use larder_server::{ServeConfig, Shared};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

pub struct Server {
    pub cache: Cache,
    pub addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(password: Option<&str>, config: ServeConfig) -> Server {
        let cache = Cache::builder().memory_capacity(8 << 20).build().unwrap();
        Server::over(cache, password, config)
    }

    /// A server over `cache` (a handle to it is kept in `cache`).
    pub fn over(cache: Cache, password: Option<&str>, config: ServeConfig) -> Server {
        let kept = cache.clone();
        let shared = Arc::new(Shared::new(
            cache,
            password.map(|p| bytes::Bytes::from(p.to_string())),
            0,
        ));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                larder_server::serve(listener, shared, config, stop_rx, Duration::from_secs(2))
                    .await;
            });
        });
        Server {
            cache: kept,
            addr: addr_rx.recv().unwrap(),
            stop,
            thread: Some(thread),
        }
    }

    pub fn connect(&self) -> Client {
        Client::to(self.addr)
    }
}

impl Client {
    /// A connection to `addr`.
    pub fn to(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub struct Client {
    pub w: TcpStream,
    pub r: BufReader<TcpStream>,
}

impl Client {
    pub fn send(&mut self, args: &[&[u8]]) {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.w.write_all(&out).unwrap();
    }

    /// One reply, as text: `+OK`, `:1`, `$3 abc`, `nil`, `*2 [...]`, `%1 {...}`.
    pub fn reply(&mut self) -> String {
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        let line = line.trim_end_matches("\r\n").to_string();
        let (kind, rest) = line.split_at(1.min(line.len()));
        match kind {
            "$" if rest == "-1" => "nil".into(),
            "$" | "=" => {
                let n: usize = rest.parse().unwrap();
                let mut b = vec![0; n + 2];
                self.r.read_exact(&mut b).unwrap();
                format!("${} {}", n, String::from_utf8_lossy(&b[..n]))
            }
            "*" | "%" if rest == "-1" => "nil".into(),
            "*" | "%" => {
                let n: usize = rest.parse().unwrap();
                let items = if kind == "%" { n * 2 } else { n };
                let parts: Vec<String> = (0..items).map(|_| self.reply()).collect();
                format!("{kind}{n} [{}]", parts.join(", "))
            }
            "_" => "nil".into(),
            _ => line,
        }
    }

    pub fn call(&mut self, args: &[&str]) -> String {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        self.send(&a);
        self.reply()
    }

    /// Whether the server closed the connection.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.r.read(&mut b), Ok(0))
    }
}
