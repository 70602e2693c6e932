//! The commands: Redis's string commands and the connection commands
//! clients send, over a [`larder::Cache`].
//!
//! Every value is a Redis string. A command that reads and writes a key
//! (`INCR`, `APPEND`, `SET NX`, `GETSET`, …) holds the key's stripe lock
//! (one of [`STRIPES`]) across both, so concurrent clients see each such
//! command whole. Errors use Redis's words where clients parse them.

use crate::resp::Reply;
use bytes::Bytes;
use larder::Cache;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Stripes of the per-key lock of read-modify-write commands.
pub const STRIPES: usize = 1024;

/// The state the connections share.
pub struct Shared {
    pub(crate) cache: Cache,
    pub(crate) password: Option<Bytes>,
    stripes: Vec<Mutex<()>>,
    next_client: AtomicU64,
    pub(crate) clients: AtomicU64,
    pub(crate) commands: AtomicU64,
    started: std::time::Instant,
    pub(crate) port: u16,
}

impl Shared {
    /// The state over `cache`, with `password` if `AUTH` is required.
    pub fn new(cache: Cache, password: Option<Bytes>, port: u16) -> Self {
        Shared {
            cache,
            password,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            next_client: AtomicU64::new(1),
            clients: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            started: std::time::Instant::now(),
            port,
        }
    }

    /// How long the server has run.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    fn lock(&self, key: &[u8]) -> std::sync::MutexGuard<'_, ()> {
        let i = (larder::hash_key(key) >> 32) as usize % STRIPES;
        self.stripes[i].lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One connection's state.
pub struct Session {
    /// The protocol version replies are written in (2 or 3).
    pub proto: u8,
    authed: bool,
    name: Option<Bytes>,
    id: u64,
    /// Commands queued by `MULTI`, and whether one was refused.
    multi: Option<(Vec<Vec<Bytes>>, bool)>,
    /// Set by `QUIT`: close after the reply.
    pub quit: bool,
}

impl Session {
    /// A new connection's state.
    pub fn new(shared: &Shared) -> Self {
        Session {
            proto: 2,
            authed: shared.password.is_none(),
            name: None,
            id: shared.next_client.fetch_add(1, Ordering::Relaxed),
            multi: None,
            quit: false,
        }
    }
}

const WRONG_ARGS: &str = "wrong number of arguments for";
const NOT_INTEGER: &str = "value is not an integer or out of range";
const SYNTAX: &str = "syntax error";

fn wrong_args(name: &str) -> Reply {
    Reply::err(format!("{WRONG_ARGS} '{}' command", name.to_lowercase()))
}

fn int_arg(b: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty()
        || s.starts_with('+')
        || (s.len() > 1 && (s.starts_with('0') || s.starts_with("-0")))
    {
        return None;
    }
    s.parse().ok()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs one request; `MULTI` queues (outside `EXEC`).
pub fn execute(shared: &Shared, session: &mut Session, args: &[Bytes]) -> Reply {
    shared.commands.fetch_add(1, Ordering::Relaxed);
    let Some(first) = args.first() else {
        return Reply::err("empty command");
    };
    let name = String::from_utf8_lossy(first).to_ascii_uppercase();
    if !session.authed && !matches!(name.as_str(), "AUTH" | "HELLO" | "QUIT") {
        return Reply::Error("NOAUTH Authentication required.".into());
    }
    if let Some((queued, refused)) = &mut session.multi {
        match name.as_str() {
            "EXEC" | "DISCARD" | "MULTI" | "QUIT" => {}
            _ => {
                if !known(&name) {
                    *refused = true;
                    return unknown(args);
                }
                queued.push(args.to_vec());
                return Reply::Simple("QUEUED");
            }
        }
    }
    match name.as_str() {
        "MULTI" => {
            if session.multi.is_some() {
                return Reply::err("MULTI calls can not be nested");
            }
            session.multi = Some((Vec::new(), false));
            Reply::Simple("OK")
        }
        "DISCARD" => match session.multi.take() {
            Some(_) => Reply::Simple("OK"),
            None => Reply::err("DISCARD without MULTI"),
        },
        "EXEC" => match session.multi.take() {
            None => Reply::err("EXEC without MULTI"),
            Some((_, true)) => {
                Reply::Error("EXECABORT Transaction discarded because of previous errors.".into())
            }
            Some((queued, false)) => {
                Reply::Array(queued.iter().map(|a| run(shared, session, a)).collect())
            }
        },
        _ => run(shared, session, args),
    }
}

/// Whether `name` is a command this server runs.
fn known(name: &str) -> bool {
    COMMANDS.iter().any(|(n, _)| *n == name)
}

fn unknown(args: &[Bytes]) -> Reply {
    let rest: Vec<String> = args[1..]
        .iter()
        .take(8)
        .map(|a| format!("'{}'", String::from_utf8_lossy(a)))
        .collect();
    Reply::err(format!(
        "unknown command '{}', with args beginning with: {}",
        String::from_utf8_lossy(&args[0]),
        rest.join(" ")
    ))
}

/// The commands and their arity (Redis's: negative is "at least").
pub const COMMANDS: &[(&str, i32)] = &[
    ("PING", -1),
    ("ECHO", 2),
    ("QUIT", -1),
    ("HELLO", -1),
    ("AUTH", -2),
    ("SELECT", 2),
    ("CLIENT", -2),
    ("COMMAND", -1),
    ("CONFIG", -2),
    ("INFO", -1),
    ("DBSIZE", 1),
    ("TIME", 1),
    ("FLUSHDB", -1),
    ("FLUSHALL", -1),
    ("GET", 2),
    ("SET", -3),
    ("SETEX", 4),
    ("PSETEX", 4),
    ("SETNX", 3),
    ("GETSET", 3),
    ("GETDEL", 2),
    ("MGET", -2),
    ("MSET", -3),
    ("DEL", -2),
    ("UNLINK", -2),
    ("EXISTS", -2),
    ("INCR", 2),
    ("DECR", 2),
    ("INCRBY", 3),
    ("DECRBY", 3),
    ("APPEND", 3),
    ("STRLEN", 2),
    ("TYPE", 2),
    ("TTL", 2),
    ("PTTL", 2),
    ("EXPIRE", -3),
    ("PEXPIRE", -3),
    ("PERSIST", 2),
    ("MULTI", 1),
    ("EXEC", 1),
    ("DISCARD", 1),
];

fn run(shared: &Shared, session: &mut Session, args: &[Bytes]) -> Reply {
    let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    let Some(&(_, arity)) = COMMANDS.iter().find(|(n, _)| *n == name) else {
        return unknown(args);
    };
    let n = args.len() as i32;
    if (arity > 0 && n != arity) || (arity < 0 && n < -arity) {
        return wrong_args(&name);
    }
    let cache = &shared.cache;
    match name.as_str() {
        "PING" => match args.len() {
            1 => Reply::Simple("PONG"),
            2 => Reply::Bulk(args[1].clone()),
            _ => wrong_args("ping"),
        },
        "ECHO" => Reply::Bulk(args[1].clone()),
        "QUIT" => {
            session.quit = true;
            Reply::Simple("OK")
        }
        "AUTH" => auth(shared, session, &args[1..]),
        "HELLO" => hello(shared, session, &args[1..]),
        "SELECT" => match int_arg(&args[1]) {
            Some(0) => Reply::Simple("OK"),
            Some(_) => Reply::err("DB index is out of range"),
            None => Reply::err(NOT_INTEGER),
        },
        "CLIENT" => client(session, &args[1..]),
        "COMMAND" => command(&args[1..]),
        "CONFIG" => config(&args[1..]),
        "INFO" => Reply::Verbatim(crate::info::info(shared, &args[1..])),
        "DBSIZE" => Reply::Int(cache.entry_count() as i64),
        "TIME" => {
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            Reply::Array(vec![
                Reply::text(t.as_secs().to_string()),
                Reply::text(t.subsec_micros().to_string()),
            ])
        }
        "FLUSHDB" | "FLUSHALL" => {
            cache.invalidate_all();
            Reply::Simple("OK")
        }
        "GET" => bulk_or_nil(cache.get(&args[1])),
        "SET" => set(shared, &args[1..]),
        "SETEX" | "PSETEX" => {
            let unit = if name == "SETEX" { "EX" } else { "PX" };
            let reply = set(
                shared,
                &[
                    args[1].clone(),
                    args[3].clone(),
                    Bytes::from(unit),
                    args[2].clone(),
                ],
            );
            named_for(reply, &name)
        }
        "SETNX" => match set(
            shared,
            &[args[1].clone(), args[2].clone(), Bytes::from("NX")],
        ) {
            Reply::Simple(_) => Reply::Int(1),
            Reply::Nil => Reply::Int(0),
            other => other,
        },
        "GETSET" => set(
            shared,
            &[args[1].clone(), args[2].clone(), Bytes::from("GET")],
        ),
        "GETDEL" => {
            let _lock = shared.lock(&args[1]);
            bulk_or_nil(cache.remove(&args[1]))
        }
        "MGET" => Reply::Array(
            args[1..]
                .iter()
                .map(|k| bulk_or_nil(cache.get(k)))
                .collect(),
        ),
        "MSET" => {
            if args.len().is_multiple_of(2) {
                return wrong_args("mset");
            }
            for pair in args[1..].chunks(2) {
                let _lock = shared.lock(&pair[0]);
                if let Err(e) = cache.insert(&pair[0], pair[1].clone()) {
                    return Reply::err(e);
                }
            }
            Reply::Simple("OK")
        }
        "DEL" | "UNLINK" => Reply::Int(
            args[1..]
                .iter()
                .filter(|k| cache.remove(k).is_some())
                .count() as i64,
        ),
        "EXISTS" => Reply::Int(args[1..].iter().filter(|k| cache.contains(k)).count() as i64),
        "INCR" => incr_by(shared, &args[1], 1),
        "DECR" => incr_by(shared, &args[1], -1),
        "INCRBY" | "DECRBY" => match int_arg(&args[2]) {
            Some(by) if name == "INCRBY" => incr_by(shared, &args[1], by),
            Some(by) => match by.checked_neg() {
                Some(by) => incr_by(shared, &args[1], by),
                None => Reply::err("decrement would overflow"),
            },
            None => Reply::err(NOT_INTEGER),
        },
        "APPEND" => {
            let _lock = shared.lock(&args[1]);
            let ttl = remaining(cache, &args[1]);
            let mut value = cache.get(&args[1]).map(|v| v.to_vec()).unwrap_or_default();
            value.extend_from_slice(&args[2]);
            let len = value.len() as i64;
            match store(cache, &args[1], Bytes::from(value), ttl) {
                Ok(()) => Reply::Int(len),
                Err(e) => e,
            }
        }
        "STRLEN" => Reply::Int(cache.get(&args[1]).map_or(0, |v| v.len() as i64)),
        "TYPE" => Reply::Simple(if cache.contains(&args[1]) {
            "string"
        } else {
            "none"
        }),
        "TTL" | "PTTL" => match cache.get(&args[1]) {
            None => Reply::Int(-2),
            Some(_) => match remaining(cache, &args[1]) {
                None => Reply::Int(-1),
                Some(left) if name == "TTL" => Reply::Int(((left.as_millis() + 500) / 1000) as i64),
                Some(left) => Reply::Int(left.as_millis() as i64),
            },
        },
        "EXPIRE" | "PEXPIRE" => {
            let Some(n) = int_arg(&args[2]) else {
                return Reply::err(NOT_INTEGER);
            };
            if args.len() > 3 {
                return Reply::err("EXPIRE options (NX, XX, GT, LT) are not supported");
            }
            let _lock = shared.lock(&args[1]);
            let Some(value) = cache.get(&args[1]) else {
                return Reply::Int(0);
            };
            let ms = if name == "EXPIRE" {
                n.checked_mul(1000)
            } else {
                Some(n)
            };
            match ms {
                None => Reply::err(format!(
                    "invalid expire time in '{}' command",
                    name.to_lowercase()
                )),
                Some(ms) if ms <= 0 => {
                    cache.remove(&args[1]);
                    Reply::Int(1)
                }
                Some(ms) => match store(
                    cache,
                    &args[1],
                    value,
                    Some(Duration::from_millis(ms as u64)),
                ) {
                    Ok(()) => Reply::Int(1),
                    Err(e) => e,
                },
            }
        }
        "PERSIST" => {
            let _lock = shared.lock(&args[1]);
            match (cache.get(&args[1]), remaining(cache, &args[1])) {
                (Some(value), Some(_)) => match store(cache, &args[1], value, None) {
                    Ok(()) => Reply::Int(1),
                    Err(e) => e,
                },
                _ => Reply::Int(0),
            }
        }
        _ => unknown(args),
    }
}

/// `SETEX`'s and `PSETEX`'s errors name their command, not `set`.
fn named_for(reply: Reply, name: &str) -> Reply {
    match reply {
        Reply::Error(e) if e.contains("invalid expire time") => Reply::err(format!(
            "invalid expire time in '{}' command",
            name.to_lowercase()
        )),
        other => other,
    }
}

fn bulk_or_nil(v: Option<Bytes>) -> Reply {
    v.map_or(Reply::Nil, Reply::Bulk)
}

/// The time `key` has left to live, if it expires.
fn remaining(cache: &Cache, key: &[u8]) -> Option<Duration> {
    cache.time_to_expiry(key).flatten()
}

/// Stores `value` with `ttl` (none: no expiry).
fn store(cache: &Cache, key: &[u8], value: Bytes, ttl: Option<Duration>) -> Result<(), Reply> {
    let r = match ttl {
        Some(ttl) => cache.insert_with_ttl(key, value, ttl),
        None => cache.insert(key, value),
    };
    r.map_err(Reply::err)
}

fn incr_by(shared: &Shared, key: &[u8], by: i64) -> Reply {
    let cache = &shared.cache;
    let _lock = shared.lock(key);
    let now = match cache.get(key) {
        None => 0,
        Some(v) => match std::str::from_utf8(&v)
            .ok()
            .and_then(|s| int_arg(s.as_bytes()))
        {
            Some(n) => n,
            None => return Reply::err(NOT_INTEGER),
        },
    };
    let Some(next) = now.checked_add(by) else {
        return Reply::err("increment or decrement would overflow");
    };
    let ttl = remaining(cache, key);
    match store(cache, key, Bytes::from(next.to_string()), ttl) {
        Ok(()) => Reply::Int(next),
        Err(e) => e,
    }
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]`.
fn set(shared: &Shared, args: &[Bytes]) -> Reply {
    let cache = &shared.cache;
    let (key, value) = (&args[0], args[1].clone());
    let (mut nx, mut xx, mut get, mut keep) = (false, false, false, false);
    let mut expiry: Option<i64> = None; // a deadline, in ms since the epoch
    let mut i = 2;
    while i < args.len() {
        let opt = String::from_utf8_lossy(&args[i]).to_ascii_uppercase();
        match opt.as_str() {
            "NX" if !xx => nx = true,
            "XX" if !nx => xx = true,
            "GET" => get = true,
            "KEEPTTL" if expiry.is_none() => keep = true,
            "EX" | "PX" | "EXAT" | "PXAT" if expiry.is_none() && !keep => {
                let Some(n) = args.get(i + 1).and_then(|a| int_arg(a)) else {
                    return Reply::err(if args.get(i + 1).is_some() {
                        NOT_INTEGER
                    } else {
                        SYNTAX
                    });
                };
                let deadline = match opt.as_str() {
                    "EX" => n.checked_mul(1000).and_then(|ms| ms.checked_add(now_ms())),
                    "PX" => n.checked_add(now_ms()),
                    "EXAT" => n.checked_mul(1000),
                    _ => Some(n),
                };
                if n <= 0 || deadline.is_none() {
                    return Reply::err("invalid expire time in 'set' command");
                }
                expiry = deadline;
                i += 1;
            }
            _ => return Reply::err(SYNTAX),
        }
        i += 1;
    }
    let _lock = shared.lock(key);
    let old = if get || nx || xx || keep {
        cache.get(key)
    } else {
        None
    };
    if (nx && old.is_some()) || (xx && old.is_none()) {
        return if get { bulk_or_nil(old) } else { Reply::Nil };
    }
    let ttl = match expiry {
        Some(at) => {
            let left = at - now_ms();
            if left <= 0 {
                // A deadline already past: the key is gone (as Redis does).
                cache.remove(key);
                return if get {
                    bulk_or_nil(old)
                } else {
                    Reply::Simple("OK")
                };
            }
            Some(Duration::from_millis(left as u64))
        }
        None if keep => remaining(cache, key),
        None => None,
    };
    if let Err(e) = store(cache, key, value, ttl) {
        return e;
    }
    if get {
        bulk_or_nil(old)
    } else {
        Reply::Simple("OK")
    }
}

fn auth(shared: &Shared, session: &mut Session, args: &[Bytes]) -> Reply {
    let password = match args {
        [p] => p,
        [user, p] if &user[..] == b"default" => p,
        [_, _] => {
            return Reply::Error(
                "WRONGPASS invalid username-password pair or user is disabled.".into(),
            );
        }
        _ => return Reply::err(SYNTAX),
    };
    match &shared.password {
        None => Reply::err(
            "AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        ),
        Some(p) if p == password => {
            session.authed = true;
            Reply::Simple("OK")
        }
        Some(_) => {
            Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
        }
    }
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
fn hello(shared: &Shared, session: &mut Session, args: &[Bytes]) -> Reply {
    let mut proto = session.proto;
    let mut i = 0;
    if let Some(v) = args.first() {
        match int_arg(v) {
            Some(v @ (2 | 3)) => proto = v as u8,
            Some(_) => return Reply::Error("NOPROTO unsupported protocol version".into()),
            None => return Reply::err("Protocol version is not an integer or out of range"),
        }
        i = 1;
    }
    while i < args.len() {
        let opt = String::from_utf8_lossy(&args[i]).to_ascii_uppercase();
        match (opt.as_str(), args.get(i + 1), args.get(i + 2)) {
            ("AUTH", Some(user), Some(pass)) => {
                if let Reply::Error(e) = auth(shared, session, &[user.clone(), pass.clone()]) {
                    return Reply::Error(e);
                }
                i += 3;
            }
            ("SETNAME", Some(name), _) => {
                session.name = Some(name.clone());
                i += 2;
            }
            _ => return Reply::err(format!("Syntax error in HELLO option '{opt}'")),
        }
    }
    if !session.authed {
        return Reply::Error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into());
    }
    session.proto = proto;
    Reply::Map(vec![
        (Reply::text("server"), Reply::text("redis")),
        (
            Reply::text("version"),
            Reply::text(crate::info::REDIS_VERSION),
        ),
        (Reply::text("proto"), Reply::Int(i64::from(proto))),
        (Reply::text("id"), Reply::Int(session.id as i64)),
        (Reply::text("mode"), Reply::text("standalone")),
        (Reply::text("role"), Reply::text("master")),
        (Reply::text("modules"), Reply::Array(vec![])),
    ])
}

fn client(session: &mut Session, args: &[Bytes]) -> Reply {
    let sub = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    match (sub.as_str(), args.len()) {
        ("SETNAME", 2) => {
            if args[1].iter().any(|b| *b == b' ' || *b == b'\n') {
                return Reply::err(
                    "Client names cannot contain spaces, newlines or special characters.",
                );
            }
            session.name = Some(args[1].clone());
            Reply::Simple("OK")
        }
        ("GETNAME", 1) => bulk_or_nil(session.name.clone()),
        ("ID", 1) => Reply::Int(session.id as i64),
        ("SETINFO", 3) => Reply::Simple("OK"),
        _ => Reply::err(format!(
            "unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
            String::from_utf8_lossy(&args[0])
        )),
    }
}

fn command(args: &[Bytes]) -> Reply {
    let sub = args
        .first()
        .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase());
    let entry = |(name, arity): &(&str, i32)| {
        Reply::Array(vec![
            Reply::text(name.to_lowercase()),
            Reply::Int(i64::from(*arity)),
            Reply::Array(vec![]),
            Reply::Int(if *arity == 1 || name.starts_with('M') {
                0
            } else {
                1
            }),
            Reply::Int(if *arity == 1 { 0 } else { 1 }),
            Reply::Int(1),
        ])
    };
    match sub.as_deref() {
        None => Reply::Array(COMMANDS.iter().map(entry).collect()),
        Some("COUNT") => Reply::Int(COMMANDS.len() as i64),
        // redis-cli asks for the docs at start; an empty map is a valid answer.
        Some("DOCS") => Reply::Map(vec![]),
        Some("INFO") => Reply::Array(
            args[1..]
                .iter()
                .map(|a| {
                    let name = String::from_utf8_lossy(a).to_ascii_uppercase();
                    COMMANDS
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map_or(Reply::Nil, entry)
                })
                .collect(),
        ),
        Some(other) => Reply::err(format!("unknown subcommand '{other}'. Try COMMAND HELP.")),
    }
}

/// `CONFIG GET` answers what `redis-benchmark` and clients ask; `CONFIG
/// SET` is refused.
fn config(args: &[Bytes]) -> Reply {
    let sub = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    if sub != "GET" || args.len() < 2 {
        return Reply::err(format!("unknown subcommand '{sub}'. Try CONFIG HELP."));
    }
    let known = [
        ("save", ""),
        ("appendonly", "no"),
        ("databases", "1"),
        ("maxmemory", "0"),
    ];
    let mut pairs = Vec::new();
    for pattern in &args[1..] {
        let p = String::from_utf8_lossy(pattern).to_lowercase();
        for (k, v) in known {
            if p == "*" || p == k {
                pairs.push((Reply::text(k), Reply::text(v)));
            }
        }
    }
    Reply::Map(pairs)
}
