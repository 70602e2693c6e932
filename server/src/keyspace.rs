//! The commands on keys as keys: expiry (`EXPIRE` and its kin, `GETEX`,
//! `PERSIST`, `TTL`), `TOUCH`, `SCAN`, `OBJECT FREQ`, `MEMORY USAGE` and
//! larder's own `LARDER.INVALIDATE`; and the escaping that lets Redis's
//! empty key live in a cache whose keys hold at least one byte.

use crate::commands::{NOT_INTEGER, SYNTAX, Shared, int_arg, now_ms, remaining, store};
use crate::glob;
use crate::resp::Reply;
use bytes::{BufMut, Bytes, BytesMut};
use std::time::Duration;

/// The key a client's key is stored under. Redis allows the empty key; the
/// cache does not. A key that is empty or starts with a 0 byte is stored
/// with one more 0 byte in front; any other key as it is. No two keys
/// meet: only an escaped key starts with a 0 byte and is not itself empty.
pub fn escape(key: &Bytes) -> Bytes {
    if key.first().is_some_and(|&b| b != 0) {
        return key.clone();
    }
    let mut out = BytesMut::with_capacity(key.len() + 1);
    out.put_u8(0);
    out.put_slice(key);
    out.freeze()
}

/// The client's key for a stored key: [`escape`] undone.
pub fn unescape(key: Bytes) -> Bytes {
    if key.first() == Some(&0) {
        key.slice(1..)
    } else {
        key
    }
}

/// The client's key for a stored key, borrowed.
pub fn unescaped(key: &[u8]) -> &[u8] {
    key.strip_prefix(&[0]).unwrap_or(key)
}

/// Whether `key` would be stored as something else.
pub fn needs_escape(key: &[u8]) -> bool {
    key.first().is_none_or(|&b| b == 0)
}

fn invalid_expire(name: &str) -> Reply {
    Reply::err(format!(
        "invalid expire time in '{}' command",
        name.to_lowercase()
    ))
}

/// `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT key n [NX|XX|GT|LT]`.
pub(crate) fn expire(shared: &Shared, name: &str, args: &[Bytes]) -> Reply {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in &args[2..] {
        match String::from_utf8_lossy(opt).to_ascii_uppercase().as_str() {
            "NX" => nx = true,
            "XX" => xx = true,
            "GT" => gt = true,
            "LT" => lt = true,
            _ => {
                return Reply::err(format!(
                    "Unsupported option {}",
                    String::from_utf8_lossy(opt)
                ));
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Reply::err("NX and XX, GT or LT options at the same time are not compatible");
    }
    if gt && lt {
        return Reply::err("GT and LT options at the same time are not compatible");
    }
    let Some(n) = int_arg(&args[1]) else {
        return Reply::err(NOT_INTEGER);
    };
    let seconds = matches!(name, "EXPIRE" | "EXPIREAT");
    let at = if seconds {
        n.checked_mul(1000)
    } else {
        Some(n)
    };
    let at = match (at, name) {
        (Some(ms), "EXPIRE" | "PEXPIRE") => ms.checked_add(now_ms()),
        (at, _) => at,
    };
    let Some(at) = at else {
        return invalid_expire(name);
    };
    let key = &args[0];
    let _lock = shared.lock(key);
    let Some(value) = shared.cache.get(key) else {
        return Reply::Int(0);
    };
    let now = now_ms();
    let current = remaining(&shared.cache, key).map(|left| now + left.as_millis() as i64);
    let refused = (nx && current.is_some())
        || (xx && current.is_none())
        || (gt && current.is_none_or(|c| at <= c))
        || (lt && current.is_some_and(|c| at >= c));
    if refused {
        return Reply::Int(0);
    }
    if at <= now {
        shared.cache.remove(key);
        return Reply::Int(1);
    }
    let ttl = Duration::from_millis((at - now) as u64);
    match store(&shared.cache, key, value, Some(ttl)) {
        Ok(()) => Reply::Int(1),
        Err(e) => e,
    }
}

/// `PERSIST key`.
pub(crate) fn persist(shared: &Shared, key: &[u8]) -> Reply {
    let _lock = shared.lock(key);
    match (shared.cache.get(key), remaining(&shared.cache, key)) {
        (Some(value), Some(_)) => match store(&shared.cache, key, value, None) {
            Ok(()) => Reply::Int(1),
            Err(e) => e,
        },
        _ => Reply::Int(0),
    }
}

/// `TTL` (seconds, rounded) and `PTTL` (milliseconds).
pub(crate) fn ttl(shared: &Shared, key: &[u8], millis: bool) -> Reply {
    if !shared.cache.contains(key) {
        return Reply::Int(-2);
    }
    match remaining(&shared.cache, key) {
        None => Reply::Int(-1),
        Some(left) if millis => Reply::Int(left.as_millis() as i64),
        Some(left) => Reply::Int(((left.as_millis() + 500) / 1000) as i64),
    }
}

/// `GETEX key [EX s|PX ms|EXAT s|PXAT ms|PERSIST]`.
pub(crate) fn getex(shared: &Shared, args: &[Bytes]) -> Reply {
    // The option: its unit word and its number (PERSIST: none).
    let mut option: Option<(String, Option<&Bytes>)> = None;
    let mut i = 1;
    while i < args.len() {
        let word = String::from_utf8_lossy(&args[i]).to_ascii_uppercase();
        match word.as_str() {
            // The same option again replaces its number; another is an error.
            "EX" | "PX" | "EXAT" | "PXAT"
                if option.as_ref().is_none_or(|(u, _)| *u == word) && i + 1 < args.len() =>
            {
                option = Some((word, Some(&args[i + 1])));
                i += 2;
            }
            "PERSIST" if option.as_ref().is_none_or(|(u, _)| u == "PERSIST") => {
                option = Some((word, None));
                i += 1;
            }
            _ => return Reply::err(SYNTAX),
        }
    }
    let key = &args[0];
    let _lock = shared.lock(key);
    let Some(value) = shared.cache.get(key) else {
        return Reply::Nil;
    };
    let at = match &option {
        None => return Reply::Bulk(value),
        Some((_, None)) => None,
        Some((unit, Some(n))) => {
            let Some(n) = int_arg(n) else {
                return Reply::err(NOT_INTEGER);
            };
            let ms = if unit.starts_with("EX") {
                n.checked_mul(1000)
            } else {
                Some(n)
            };
            let at = match ms {
                Some(ms) if !unit.ends_with("AT") => ms.checked_add(now_ms()),
                ms => ms,
            };
            match at {
                Some(at) if n > 0 => Some(at),
                _ => return invalid_expire("getex"),
            }
        }
    };
    let r = match at {
        None if remaining(&shared.cache, key).is_none() => Ok(()),
        None => store(&shared.cache, key, value.clone(), None),
        Some(at) if at <= now_ms() => {
            shared.cache.remove(key);
            Ok(())
        }
        Some(at) => {
            let ttl = Duration::from_millis((at - now_ms()).max(1) as u64);
            store(&shared.cache, key, value.clone(), Some(ttl))
        }
    };
    match r {
        Ok(()) => Reply::Bulk(value),
        Err(e) => e,
    }
}

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]`: `COUNT` keys
/// walked per page (10 by default), those matching returned; each key
/// present for the whole scan exactly once (see [`crate::scans`]).
pub(crate) fn scan(shared: &Shared, args: &[Bytes]) -> Reply {
    let Some(cursor) = std::str::from_utf8(&args[0])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return Reply::err("invalid cursor");
    };
    let (mut pattern, mut count, mut strings) = (None, 10usize, true);
    let mut i = 1;
    while i < args.len() {
        let word = String::from_utf8_lossy(&args[i]).to_ascii_uppercase();
        let Some(value) = args.get(i + 1) else {
            return Reply::err(SYNTAX);
        };
        match word.as_str() {
            "MATCH" => pattern = Some(value.clone()),
            "COUNT" => match int_arg(value) {
                Some(n) if n >= 1 => count = n as usize,
                Some(_) => return Reply::err(SYNTAX),
                None => return Reply::err(NOT_INTEGER),
            },
            "TYPE" => strings = value.eq_ignore_ascii_case(b"string"),
            _ => return Reply::err(SYNTAX),
        }
        i += 2;
    }
    let keep = |k: &[u8]| {
        strings
            && pattern
                .as_ref()
                .is_none_or(|p| glob::matches(p, unescaped(k)))
    };
    match shared.scans.page(&shared.cache, cursor, count, keep) {
        None => Reply::err("invalid cursor"),
        Some((next, keys)) => Reply::Array(vec![
            Reply::text(next.to_string()),
            Reply::Array(keys.into_iter().map(|k| Reply::Bulk(unescape(k))).collect()),
        ]),
    }
}

/// `OBJECT FREQ key` (the key escaped, as every key a command is given): the key's estimated requests from hot-key detection
/// (Redis answers with its LFU counter; `redis-cli --hotkeys` ranks by it).
pub(crate) fn object(shared: &Shared, args: &[Bytes]) -> Reply {
    let sub = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    match (sub.as_str(), args.len()) {
        ("FREQ", 2) => {
            let key = &args[1];
            if !shared.cache.contains(key) {
                return Reply::Nil;
            }
            match shared.cache.hot_key_estimate(key) {
                Some(n) => Reply::Int(n as i64),
                None => Reply::err(
                    "An LFU maxmemory policy is not selected, access frequency not tracked.",
                ),
            }
        }
        ("ENCODING", 2) => match shared.cache.get(&args[1]) {
            None => Reply::Nil,
            Some(v) if int_arg(&v).is_some() => Reply::text("int"),
            Some(v) if v.len() <= 44 => Reply::text("embstr"),
            Some(_) => Reply::text("raw"),
        },
        _ => Reply::err(format!(
            "unknown subcommand or wrong number of arguments for '{}'. Try OBJECT HELP.",
            String::from_utf8_lossy(&args[0])
        )),
    }
}

/// `MEMORY USAGE key [SAMPLES n]`: the entry's weight in the memory tier
/// (its key's and value's bytes and [`larder::ENTRY_OVERHEAD`]).
pub(crate) fn memory(shared: &Shared, args: &[Bytes]) -> Reply {
    let sub = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    let samples_ok = match &args[1..] {
        [_] => true,
        [_, word, n] => word.eq_ignore_ascii_case(b"SAMPLES") && int_arg(n).is_some(),
        _ => false,
    };
    if sub != "USAGE" || !samples_ok {
        return Reply::err(format!(
            "unknown subcommand or wrong number of arguments for '{}'. Try MEMORY HELP.",
            String::from_utf8_lossy(&args[0])
        ));
    }
    match shared.cache.get(&args[1]) {
        None => Reply::Nil,
        Some(v) => Reply::Int((args[1].len() + v.len()) as i64 + larder::ENTRY_OVERHEAD as i64),
    }
}

/// `LARDER.INVALIDATE TAG tag | MATCH pattern`: removes, from both tiers
/// and for good, every key whose hash tag (the part between the first `{`
/// and the next `}`, as twemproxy reads it) is `tag`, or that matches
/// `pattern`; replies how many it removed. One walk of the whole cache.
/// Not proxied by twemproxy: send it to each node.
pub(crate) fn invalidate(shared: &Shared, args: &[Bytes]) -> Reply {
    let [how, what] = args else {
        return Reply::err("wrong number of arguments for 'larder.invalidate' command");
    };
    let removed = match String::from_utf8_lossy(how).to_ascii_uppercase().as_str() {
        "TAG" => shared
            .cache
            .invalidate_entries_if(|k| hash_tag(unescaped(k)) == Some(&what[..])),
        "MATCH" => shared
            .cache
            .invalidate_entries_if(|k| glob::matches(what, unescaped(k))),
        _ => return Reply::err(SYNTAX),
    };
    Reply::Int(removed as i64)
}

/// The hash tag of `key`, as twemproxy's `hash_tag: "{}"` reads it: the
/// bytes between the first `{` and the first `}` after it, if not empty.
pub fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let len = key[open + 1..].iter().position(|&b| b == b'}')?;
    (len > 0).then(|| &key[open + 1..open + 1 + len])
}

/// `TOUCH key…`: how many exist (each an access).
pub(crate) fn touch(shared: &Shared, keys: &[Bytes]) -> Reply {
    Reply::Int(
        keys.iter()
            .filter(|k| shared.cache.get(k).is_some())
            .count() as i64,
    )
}
