//! The commands: Redis's string commands and the connection commands
//! clients send, over a [`larder::Cache`].
//!
//! Every value is a Redis string. A command that reads and writes a key
//! (`INCR`, `APPEND`, `SET NX`, `GETSET`, …) holds the key's stripe lock
//! (one of [`STRIPES`]) across both, so concurrent clients see each such
//! command whole. Errors use Redis's words where clients parse them.

use crate::connection;
use crate::keyspace;
use crate::resp::Reply;
use bytes::Bytes;
use larder::Cache;
use std::borrow::Cow;
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
    /// The periodic syncs: how many, and whether the last one succeeded.
    pub(crate) syncs: Syncs,
    /// Bytes the connections hold of requests not yet whole.
    pub(crate) buffered: std::sync::atomic::AtomicUsize,
    /// The walks of the `SCAN`s under way.
    pub(crate) scans: crate::scans::Scans,
    /// Connections accepted since the start.
    pub(crate) connections: AtomicU64,
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
            connections: AtomicU64::new(0),
            syncs: Default::default(),
            buffered: Default::default(),
            scans: Default::default(),
            commands: AtomicU64::new(0),
            started: std::time::Instant::now(),
            port,
        }
    }

    /// Connections open now, connections accepted since the start, and
    /// commands run since the start.
    pub fn counters(&self) -> (u64, u64, u64) {
        (
            self.clients.load(Ordering::Relaxed),
            self.connections.load(Ordering::Relaxed),
            self.commands.load(Ordering::Relaxed),
        )
    }

    /// The cache served.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// How long the server has run.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub(crate) fn lock(&self, key: &[u8]) -> std::sync::MutexGuard<'_, ()> {
        let i = (larder::hash_key(key) >> 32) as usize % STRIPES;
        self.stripes[i].lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The periodic syncs' record, for `INFO persistence`.
#[derive(Default)]
pub(crate) struct Syncs {
    pub(crate) done: AtomicU64,
    pub(crate) failed: AtomicU64,
    /// When the last one succeeded, in seconds since the epoch.
    pub(crate) last_ok_unix: AtomicU64,
}

impl Syncs {
    pub(crate) fn record(&self, ok: bool) {
        if ok {
            self.done.fetch_add(1, Ordering::Relaxed);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.last_ok_unix.store(now, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One connection's state.
pub struct Session {
    /// The protocol version replies are written in (2 or 3).
    pub proto: u8,
    pub(crate) authed: bool,
    pub(crate) name: Option<Bytes>,
    pub(crate) id: u64,
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
pub(crate) const NOT_INTEGER: &str = "value is not an integer or out of range";
pub(crate) const SYNTAX: &str = "syntax error";

fn wrong_args(name: &str) -> Reply {
    Reply::err(format!("{WRONG_ARGS} '{}' command", name.to_lowercase()))
}

pub(crate) fn int_arg(b: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty()
        || s.starts_with('+')
        || (s.len() > 1 && (s.starts_with('0') || s.starts_with("-0")))
    {
        return None;
    }
    s.parse().ok()
}

pub(crate) fn now_ms() -> i64 {
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
                // Redis checks the name and the arity as it queues.
                let Some(spec) = find(&name) else {
                    *refused = true;
                    return unknown(args);
                };
                if !arity_ok(spec, args.len()) {
                    *refused = true;
                    return wrong_args(&name);
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

/// Whether `n` arguments (the name included) suit `spec`'s arity.
fn arity_ok(spec: &Spec, n: usize) -> bool {
    let (n, arity) = (n as i32, spec.arity);
    (arity > 0 && n == arity) || (arity < 0 && n >= -arity)
}

fn unknown(args: &[Bytes]) -> Reply {
    // As Redis writes it: each argument quoted and followed by a space,
    // until 128 bytes are written (the last one cut to fit).
    let mut rest = String::new();
    for a in &args[1..] {
        if rest.len() >= 128 {
            break;
        }
        let a = String::from_utf8_lossy(a);
        let room = 128 - rest.len();
        let cut: String = a
            .char_indices()
            .take_while(|(i, _)| *i < room)
            .map(|(_, c)| c)
            .collect();
        rest.push('\'');
        rest.push_str(&cut);
        rest.push_str("' ");
    }
    Reply::err(format!(
        "unknown command '{}', with args beginning with: {rest}",
        String::from_utf8_lossy(&args[0]),
    ))
}

/// A command: its name, its arity (Redis's: negative is "at least"), and
/// where its keys are (Redis's first key, last key (negative: from the
/// end) and step; 0, 0, 0: none).
pub struct Spec {
    /// The name, in capitals.
    pub name: &'static str,
    /// Arguments with the name: exactly this many, or at least `-arity`.
    pub arity: i32,
    /// First key, last key (negative: counted from the end), step.
    pub keys: (i32, i32, i32),
}

const fn spec(name: &'static str, arity: i32, keys: (i32, i32, i32)) -> Spec {
    Spec { name, arity, keys }
}

const NONE: (i32, i32, i32) = (0, 0, 0);
const ONE: (i32, i32, i32) = (1, 1, 1);
const ALL: (i32, i32, i32) = (1, -1, 1);

/// The commands this server runs.
pub const COMMANDS: &[Spec] = &[
    spec("PING", -1, NONE),
    spec("ECHO", 2, NONE),
    spec("QUIT", -1, NONE),
    spec("HELLO", -1, NONE),
    spec("AUTH", -2, NONE),
    spec("SELECT", 2, NONE),
    spec("CLIENT", -2, NONE),
    spec("COMMAND", -1, NONE),
    spec("CONFIG", -2, NONE),
    spec("INFO", -1, NONE),
    spec("DBSIZE", 1, NONE),
    spec("TIME", 1, NONE),
    spec("FLUSHDB", -1, NONE),
    spec("FLUSHALL", -1, NONE),
    spec("GET", 2, ONE),
    spec("SET", -3, ONE),
    spec("SETEX", 4, ONE),
    spec("PSETEX", 4, ONE),
    spec("SETNX", 3, ONE),
    spec("GETSET", 3, ONE),
    spec("GETDEL", 2, ONE),
    spec("GETEX", -2, ONE),
    spec("MGET", -2, ALL),
    spec("MSET", -3, (1, -1, 2)),
    spec("DEL", -2, ALL),
    spec("UNLINK", -2, ALL),
    spec("EXISTS", -2, ALL),
    spec("TOUCH", -2, ALL),
    spec("INCR", 2, ONE),
    spec("DECR", 2, ONE),
    spec("INCRBY", 3, ONE),
    spec("DECRBY", 3, ONE),
    spec("APPEND", 3, ONE),
    spec("STRLEN", 2, ONE),
    spec("TYPE", 2, ONE),
    spec("TTL", 2, ONE),
    spec("PTTL", 2, ONE),
    spec("EXPIRE", -3, ONE),
    spec("PEXPIRE", -3, ONE),
    spec("EXPIREAT", -3, ONE),
    spec("PEXPIREAT", -3, ONE),
    spec("PERSIST", 2, ONE),
    spec("SCAN", -2, NONE),
    spec("OBJECT", -2, (2, 2, 1)),
    spec("MEMORY", -2, (2, 2, 1)),
    spec("MULTI", 1, NONE),
    spec("EXEC", 1, NONE),
    spec("DISCARD", 1, NONE),
    spec("LARDER.INVALIDATE", 3, NONE),
];

fn find(name: &str) -> Option<&'static Spec> {
    COMMANDS.iter().find(|c| c.name == name)
}

/// `args` with every key [`escape`](keyspace::escape)d (borrowed when no
/// key needs it, as nearly always).
fn escaped<'a>(spec: &Spec, args: &'a [Bytes]) -> Cow<'a, [Bytes]> {
    let (first, last, step) = spec.keys;
    if step == 0 || args.len() <= first as usize {
        return Cow::Borrowed(args);
    }
    let last = if last < 0 {
        args.len() as i32 + last
    } else {
        last.min(args.len() as i32 - 1)
    };
    let at = (first..=last).step_by(step as usize).map(|i| i as usize);
    if !at.clone().any(|i| keyspace::needs_escape(&args[i])) {
        return Cow::Borrowed(args);
    }
    let mut out = args.to_vec();
    for i in at {
        out[i] = keyspace::escape(&args[i]);
    }
    Cow::Owned(out)
}

fn run(shared: &Shared, session: &mut Session, args: &[Bytes]) -> Reply {
    let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    let Some(spec) = find(&name) else {
        return unknown(args);
    };
    if !arity_ok(spec, args.len()) {
        return wrong_args(&name);
    }
    let args = &escaped(spec, args)[..];
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
        "AUTH" => connection::auth(shared, session, &args[1..]),
        "HELLO" => connection::hello(shared, session, &args[1..]),
        "SELECT" => match int_arg(&args[1]) {
            Some(0) => Reply::Simple("OK"),
            Some(_) => Reply::err("DB index is out of range"),
            None => Reply::err(NOT_INTEGER),
        },
        "CLIENT" => connection::client(session, &args[1..]),
        "COMMAND" => connection::command(&args[1..]),
        "CONFIG" => connection::config(&args[1..]),
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
                if let Err(e) = store(cache, &pair[0], pair[1].clone(), None) {
                    return e;
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
        "TTL" | "PTTL" => keyspace::ttl(shared, &args[1], name == "PTTL"),
        "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT" => {
            keyspace::expire(shared, &name, &args[1..])
        }
        "PERSIST" => keyspace::persist(shared, &args[1]),
        "GETEX" => keyspace::getex(shared, &args[1..]),
        "TOUCH" => keyspace::touch(shared, &args[1..]),
        "SCAN" => keyspace::scan(shared, &args[1..]),
        "OBJECT" => keyspace::object(shared, &args[1..]),
        "MEMORY" => keyspace::memory(shared, &args[1..]),
        "LARDER.INVALIDATE" => keyspace::invalidate(shared, &args[1..]),
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

pub(crate) fn bulk_or_nil(v: Option<Bytes>) -> Reply {
    v.map_or(Reply::Nil, Reply::Bulk)
}

/// The time `key` has left to live, if it expires.
pub(crate) fn remaining(cache: &Cache, key: &[u8]) -> Option<Duration> {
    cache.time_to_expiry(key).flatten()
}

/// Stores `value` with `ttl` (none: no expiry).
pub(crate) fn store(
    cache: &Cache,
    key: &[u8],
    value: Bytes,
    ttl: Option<Duration>,
) -> Result<(), Reply> {
    // A value parsed from a request is a slice of the connection's read
    // buffer: kept as it is, it would hold the whole buffer (and the other
    // requests read with it) for as long as it is cached. Its own copy
    // holds only itself.
    let value = Bytes::copy_from_slice(&value);
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
    // The expiry option and its number, checked once every option is read
    // (as Redis does: a syntax error comes before a bad number).
    let mut expiry: Option<(String, &Bytes)> = None;
    let mut i = 2;
    while i < args.len() {
        let opt = String::from_utf8_lossy(&args[i]).to_ascii_uppercase();
        match opt.as_str() {
            "NX" if !xx => nx = true,
            "XX" if !nx => xx = true,
            "GET" => get = true,
            "KEEPTTL" if expiry.is_none() => keep = true,
            // The same option again replaces its number; another is an error.
            "EX" | "PX" | "EXAT" | "PXAT"
                if expiry.as_ref().is_none_or(|(u, _)| *u == opt)
                    && !keep
                    && i + 1 < args.len() =>
            {
                expiry = Some((opt, &args[i + 1]));
                i += 1;
            }
            _ => return Reply::err(SYNTAX),
        }
        i += 1;
    }
    // A deadline, in ms since the epoch.
    let expiry = match expiry {
        None => None,
        Some((unit, n)) => {
            let Some(n) = int_arg(n) else {
                return Reply::err(NOT_INTEGER);
            };
            let deadline = match unit.as_str() {
                "EX" => n.checked_mul(1000).and_then(|ms| ms.checked_add(now_ms())),
                "PX" => n.checked_add(now_ms()),
                "EXAT" => n.checked_mul(1000),
                _ => Some(n),
            };
            if n <= 0 || deadline.is_none() {
                return Reply::err("invalid expire time in 'set' command");
            }
            deadline
        }
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_value_is_its_own_copy_not_a_slice_of_the_request() {
        let shared = Shared::new(
            Cache::builder().memory_capacity(1 << 20).build().unwrap(),
            None,
            0,
        );
        let mut session = Session::new(&shared);
        for command in [&["SET", "k", "value"][..], &["MSET", "k", "value"]] {
            // As the parser gives them: slices of one frame of the read buffer.
            let frame = Bytes::from(command.join(" "));
            let mut at = 0;
            let args: Vec<Bytes> = command
                .iter()
                .map(|a| {
                    let arg = frame.slice(at..at + a.len());
                    at += a.len() + 1;
                    arg
                })
                .collect();
            let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
            execute(&shared, &mut session, &args);
            let stored = shared.cache.get(b"k").unwrap();
            assert_eq!(stored, "value");
            assert!(
                !range.contains(&(stored.as_ptr() as usize)),
                "{command:?}: the value pins the request's buffer"
            );
        }
    }
}
