//! The connection commands: `AUTH`, `HELLO`, `CLIENT`, `COMMAND` and
//! `CONFIG`, which clients send as they connect.

use crate::commands::{COMMANDS, SYNTAX, Session, Shared, Spec, bulk_or_nil, int_arg};
use crate::resp::Reply;
use bytes::Bytes;

pub(crate) fn auth(shared: &Shared, session: &mut Session, args: &[Bytes]) -> Reply {
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
pub(crate) fn hello(shared: &Shared, session: &mut Session, args: &[Bytes]) -> Reply {
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

pub(crate) fn client(session: &mut Session, args: &[Bytes]) -> Reply {
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

pub(crate) fn command(args: &[Bytes]) -> Reply {
    let sub = args
        .first()
        .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase());
    let entry = |c: &Spec| {
        let write = matches!(
            c.name,
            "SET"
                | "SETEX"
                | "PSETEX"
                | "SETNX"
                | "GETSET"
                | "GETDEL"
                | "GETEX"
                | "MSET"
                | "DEL"
                | "UNLINK"
                | "INCR"
                | "DECR"
                | "INCRBY"
                | "DECRBY"
                | "APPEND"
                | "EXPIRE"
                | "PEXPIRE"
                | "EXPIREAT"
                | "PEXPIREAT"
                | "PERSIST"
        );
        let flags = vec![Reply::Simple(if write { "write" } else { "readonly" })];
        Reply::Array(vec![
            Reply::text(c.name.to_lowercase()),
            Reply::Int(i64::from(c.arity)),
            Reply::Array(flags),
            Reply::Int(i64::from(c.keys.0)),
            Reply::Int(i64::from(c.keys.1)),
            Reply::Int(i64::from(c.keys.2)),
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
                        .find(|c| c.name == name)
                        .map_or(Reply::Nil, entry)
                })
                .collect(),
        ),
        Some(other) => Reply::err(format!("unknown subcommand '{other}'. Try COMMAND HELP.")),
    }
}

/// `CONFIG GET` answers what `redis-benchmark` and clients ask; `CONFIG
/// SET` is refused.
pub(crate) fn config(args: &[Bytes]) -> Reply {
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
