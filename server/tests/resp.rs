//! The server end to end over TCP, in process: commands and their replies
//! in RESP2 and RESP3, pipelining, transactions, AUTH, and bad input (the
//! server answers with an error, closes that connection, serves others).

use larder_server::{Limits, ServeConfig};
use std::io::{BufRead, Write};
use std::time::Duration;

mod support;
use support::{Client, Server};

#[test]
fn string_commands_answer_as_redis_does() {
    let server = Server::start(None, ServeConfig::default());
    let mut c = server.connect();
    assert_eq!(c.call(&["PING"]), "+PONG");
    assert_eq!(c.call(&["ping", "hi"]), "$2 hi");
    assert_eq!(c.call(&["SET", "k", "v"]), "+OK");
    assert_eq!(c.call(&["GET", "k"]), "$1 v");
    assert_eq!(c.call(&["GET", "nope"]), "nil");
    assert_eq!(c.call(&["SET", "k", "w", "NX"]), "nil");
    assert_eq!(c.call(&["SET", "k", "w", "XX", "GET"]), "$1 v");
    assert_eq!(c.call(&["INCR", "n"]), ":1");
    assert_eq!(c.call(&["INCRBY", "n", "41"]), ":42");
    assert_eq!(c.call(&["DECRBY", "n", "2"]), ":40");
    assert_eq!(
        c.call(&["INCR", "k"]),
        "-ERR value is not an integer or out of range"
    );
    assert_eq!(c.call(&["SET", "big", "9223372036854775807"]), "+OK");
    assert_eq!(
        c.call(&["INCR", "big"]),
        "-ERR increment or decrement would overflow"
    );
    assert_eq!(c.call(&["APPEND", "k", "xyz"]), ":4");
    assert_eq!(c.call(&["STRLEN", "k"]), ":4");
    assert_eq!(c.call(&["MSET", "a", "1", "b", "2"]), "+OK");
    assert_eq!(c.call(&["MGET", "a", "nope", "b"]), "*3 [$1 1, nil, $1 2]");
    assert_eq!(c.call(&["EXISTS", "a", "b", "nope"]), ":2");
    assert_eq!(c.call(&["DEL", "a", "nope"]), ":1");
    assert_eq!(c.call(&["TYPE", "b"]), "+string");
    assert_eq!(c.call(&["TYPE", "a"]), "+none");
    assert_eq!(c.call(&["TTL", "b"]), ":-1");
    assert_eq!(c.call(&["TTL", "a"]), ":-2");
    assert_eq!(c.call(&["SET", "t", "v", "EX", "100"]), "+OK");
    assert_eq!(c.call(&["TTL", "t"]), ":100");
    assert_eq!(c.call(&["SET", "t", "w", "KEEPTTL"]), "+OK");
    let pttl: i64 = c.call(&["PTTL", "t"])[1..].parse().unwrap();
    assert!((95_000..=100_000).contains(&pttl), "{pttl}");
    assert_eq!(c.call(&["PERSIST", "t"]), ":1");
    assert_eq!(c.call(&["TTL", "t"]), ":-1");
    assert_eq!(c.call(&["EXPIRE", "t", "50"]), ":1");
    assert_eq!(c.call(&["TTL", "t"]), ":50");
    assert_eq!(
        c.call(&["SET", "t", "v", "PX", "0"]),
        "-ERR invalid expire time in 'set' command"
    );
    assert_eq!(
        c.call(&["SET", "t", "v", "EX", "x"]),
        "-ERR value is not an integer or out of range"
    );
    assert_eq!(c.call(&["SET", "t", "v", "NX", "XX"]), "-ERR syntax error");
    assert_eq!(c.call(&["SETNX", "t", "v"]), ":0");
    assert_eq!(
        c.call(&["SETEX", "t", "0", "v"]),
        "-ERR invalid expire time in 'setex' command"
    );
    assert_eq!(
        c.call(&["PSETEX", "t", "-5", "v"]),
        "-ERR invalid expire time in 'psetex' command"
    );
    assert_eq!(c.call(&["GETDEL", "t"]), "$1 w");
    assert_eq!(c.call(&["GETSET", "t", "1"]), "nil");
    assert_eq!(
        c.call(&["GET"]),
        "-ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        c.call(&["NOSUCH", "x"]),
        "-ERR unknown command 'NOSUCH', with args beginning with: 'x' "
    );
    assert_eq!(c.call(&["SELECT", "0"]), "+OK");
    assert_eq!(c.call(&["SELECT", "1"]), "-ERR DB index is out of range");
    assert_eq!(c.call(&["DBSIZE"]), ":5");
    assert_eq!(c.call(&["FLUSHDB"]), "+OK");
    assert_eq!(c.call(&["DBSIZE"]), ":0");
    assert!(c.call(&["INFO", "keyspace"]).contains("# Keyspace"));
    assert_eq!(c.call(&["CLIENT", "SETNAME", "me"]), "+OK");
    assert_eq!(c.call(&["CLIENT", "GETNAME"]), "$2 me");
    assert_eq!(c.call(&["QUIT"]), "+OK");
    assert!(c.closed());
}

#[test]
fn hello_3_speaks_resp3_and_pipelines_answer_in_order() {
    let server = Server::start(None, ServeConfig::default());
    let mut c = server.connect();
    let hello = c.call(&["HELLO", "3"]);
    assert!(hello.starts_with("%7 [$6 server, $5 redis"), "{hello}");
    assert_eq!(c.call(&["GET", "nope"]), "nil");
    // A RESP3 null is "_\r\n" on the wire.
    let mut c = server.connect();
    c.call(&["HELLO", "3"]);
    c.send(&[b"GET", b"nope"]);
    let mut line = String::new();
    c.r.read_line(&mut line).unwrap();
    assert_eq!(line, "_\r\n");

    // 200 requests in one write, inline and RESP mixed: 200 replies, in order.
    let mut c = server.connect();
    let mut batch = Vec::new();
    for i in 0..100 {
        batch.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n$2\r\nk{}\r\n$1\r\n{}\r\n",
                i % 10,
                i % 10
            )
            .as_bytes(),
        );
        batch.extend_from_slice(format!("GET k{}\r\n", i % 10).as_bytes());
    }
    c.w.write_all(&batch).unwrap();
    for i in 0..100 {
        assert_eq!(c.reply(), "+OK");
        assert_eq!(c.reply(), format!("$1 {}", i % 10));
    }
}

#[test]
fn transactions_queue_and_apply() {
    let server = Server::start(None, ServeConfig::default());
    let mut c = server.connect();
    assert_eq!(c.call(&["MULTI"]), "+OK");
    assert_eq!(c.call(&["SET", "a", "1"]), "+QUEUED");
    assert_eq!(c.call(&["INCR", "a"]), "+QUEUED");
    assert_eq!(c.call(&["EXEC"]), "*2 [+OK, :2]");
    assert_eq!(c.call(&["MULTI"]), "+OK");
    assert!(c.call(&["NOSUCH"]).starts_with("-ERR unknown command"));
    assert_eq!(
        c.call(&["EXEC"]),
        "-EXECABORT Transaction discarded because of previous errors."
    );
    assert_eq!(c.call(&["DISCARD"]), "-ERR DISCARD without MULTI");
    assert_eq!(c.call(&["GET", "a"]), "$1 2");
}

#[test]
fn auth_is_required_when_a_password_is_set() {
    let server = Server::start(Some("s3cret"), ServeConfig::default());
    let mut c = server.connect();
    assert_eq!(c.call(&["GET", "k"]), "-NOAUTH Authentication required.");
    assert!(c.call(&["AUTH", "wrong"]).starts_with("-WRONGPASS"));
    assert_eq!(c.call(&["AUTH", "s3cret"]), "+OK");
    assert_eq!(c.call(&["GET", "k"]), "nil");
    let mut c = server.connect();
    assert!(
        c.call(&["HELLO", "3", "AUTH", "default", "s3cret"])
            .starts_with("%7")
    );
    assert_eq!(c.call(&["PING"]), "+PONG");
}

#[test]
fn bad_input_gets_an_error_and_the_server_serves_others() {
    let limits = Limits {
        max_bulk: 1 << 20,
        max_args: 1000,
        max_inline: 1 << 10,
    };
    let server = Server::start(
        None,
        ServeConfig {
            limits,
            ..ServeConfig::default()
        },
    );
    let mut healthy = server.connect();
    assert_eq!(healthy.call(&["SET", "k", "v"]), "+OK");
    let cases: [&[u8]; 6] = [
        b"*1\r\n$99999999999\r\n", // a bulk over the limit: refused before its bytes arrive
        b"*100000\r\n",            // too many arguments
        b"*1\r\n$3\r\nGETxx\r\n",  // not terminated
        b"*1\r\n:3\r\n",           // not a bulk string
        b"*-x\r\n",                // not a length
        b"SET \"unbalanced\r\n",   // inline, bad quotes
    ];
    for case in cases {
        let mut c = server.connect();
        c.w.write_all(case).unwrap();
        let reply = c.reply();
        assert!(
            reply.starts_with("-ERR Protocol error"),
            "{case:?}: {reply}"
        );
        assert!(c.closed(), "{case:?}: the connection is closed");
    }
    // An inline line over the limit, and garbage without a newline.
    let mut c = server.connect();
    c.w.write_all(&[b'x'; 4096]).unwrap();
    assert_eq!(c.reply(), "-ERR Protocol error: too big inline request");
    // A truncated frame, then the client goes away.
    let mut c = server.connect();
    c.w.write_all(b"*2\r\n$3\r\nGET\r\n$10\r\nab").unwrap();
    drop(c);
    // 1,000 idle connections do not stop anyone.
    let idle: Vec<Client> = (0..1_000).map(|_| server.connect()).collect();
    assert_eq!(healthy.call(&["GET", "k"]), "$1 v");
    drop(idle);
}

#[test]
fn a_slow_client_is_served_whole_and_holds_up_no_one() {
    let server = Server::start(None, ServeConfig::default());
    let mut healthy = server.connect();
    let mut slow = server.connect();
    let value = "s".repeat(100_000);
    let request = format!("*3\r\n$3\r\nSET\r\n$4\r\nslow\r\n$100000\r\n{value}\r\n");
    // The request in 200 pieces, others served between them.
    for (i, piece) in request
        .as_bytes()
        .chunks(request.len() / 200 + 1)
        .enumerate()
    {
        slow.w.write_all(piece).unwrap();
        if i % 20 == 0 {
            assert_eq!(healthy.call(&["PING"]), "+PONG");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert_eq!(slow.reply(), "+OK");
    assert_eq!(healthy.call(&["STRLEN", "slow"]), ":100000");
}

#[test]
fn buffered_input_is_bounded_per_connection_and_in_all() {
    let server = Server::start(
        None,
        ServeConfig {
            max_query_buffer: 256 << 10,
            max_input_total: 1 << 20,
            ..ServeConfig::default()
        },
    );
    let mut healthy = server.connect();
    let start = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10000000\r\n";
    // One connection past its own limit is told and closed.
    let mut big = server.connect();
    big.w.write_all(start).unwrap();
    big.w.write_all(&vec![b'x'; 300 << 10]).unwrap();
    assert_eq!(
        big.reply(),
        "-ERR Protocol error: query buffer limit reached"
    );
    assert!(big.closed());
    // Many connections, each under its limit, past the total together: the
    // one that takes it past is told and closed, the others keep theirs.
    let mut sent: Vec<Client> = Vec::new();
    for _ in 0..8 {
        let mut c = server.connect();
        c.w.write_all(start).unwrap();
        let _ = c.w.write_all(&vec![b'x'; 200 << 10]);
        sent.push(c);
    }
    // Time for the server to read them all (generous, for a loaded machine).
    std::thread::sleep(Duration::from_millis(500));
    let mut parts: Vec<Client> = Vec::new();
    let mut refused = 0;
    for mut c in sent {
        c.r.get_ref().set_nonblocking(true).unwrap();
        let mut line = String::new();
        let got = std::io::BufRead::read_line(&mut c.r, &mut line).is_ok();
        c.r.get_ref().set_nonblocking(false).unwrap();
        if got {
            assert_eq!(line.trim_end(), "-ERR server input memory limit reached");
            refused += 1;
        } else {
            parts.push(c);
        }
    }
    assert!(
        refused >= 3,
        "only {refused} of 8 refused under a 1 MiB total"
    );
    assert!(!parts.is_empty(), "those under the total are kept");
    assert_eq!(healthy.call(&["SET", "a", "1"]), "+OK");
    // Their room is given back when they go.
    drop(parts);
    std::thread::sleep(Duration::from_millis(100));
    let mut c = server.connect();
    c.w.write_all(start).unwrap();
    c.w.write_all(&vec![b'x'; 200 << 10]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(healthy.call(&["GET", "a"]), "$1 1");
    c.r.get_ref().set_nonblocking(true).unwrap();
    let mut line = String::new();
    assert!(
        std::io::BufRead::read_line(&mut c.r, &mut line).is_err(),
        "not refused once the others left: {line}"
    );
}

#[test]
fn a_client_over_the_limit_is_told_and_closed() {
    let server = Server::start(
        None,
        ServeConfig {
            max_clients: 2,
            ..ServeConfig::default()
        },
    );
    let mut a = server.connect();
    let mut b = server.connect();
    assert_eq!(a.call(&["PING"]), "+PONG");
    assert_eq!(b.call(&["PING"]), "+PONG");
    let mut c = server.connect();
    assert_eq!(c.reply(), "-ERR max number of clients reached");
    assert!(c.closed());
    drop(a);
    std::thread::sleep(Duration::from_millis(100));
    let mut d = server.connect();
    assert_eq!(d.call(&["PING"]), "+PONG");
}
