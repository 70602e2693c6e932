//! The server's commands (`larder-server`'s `execute`) on sequences of
//! commands built from the input: every command of the table, in any case,
//! with arguments drawn from the edge cases (huge and negative numbers,
//! options, globs, empty and zero-byte keys) or taken raw. Never a panic
//! (arithmetic overflow included: fuzz builds check it), and every reply
//! writes in RESP2 and RESP3.

#![no_main]

use bytes::Bytes;
use larder::Cache;
use larder_server::Shared;
use larder_server::commands::{COMMANDS, Session, execute};
use libfuzzer_sys::fuzz_target;

const WORDS: &[&str] = &[
    "", "k", "\0", "\0k", "{t}a", "0", "1", "-1", "100", "9223372036854775807",
    "-9223372036854775808", "9223372036854775808", "1.5", "abc", "EX", "PX", "EXAT", "PXAT",
    "KEEPTTL", "NX", "XX", "GT", "LT", "GET", "PERSIST", "MATCH", "COUNT", "TYPE", "*", "k*",
    "[a-", "\\", "FREQ", "USAGE", "SAMPLES", "TAG", "SETNAME", "GETNAME", "ID", "SETINFO", "3",
    "2", "AUTH", "default", "DOCS", "INFO", "string",
];

fuzz_target!(|data: &[u8]| {
    let cache = Cache::builder().memory_capacity(1 << 20).track_hot_keys().build().unwrap();
    let shared = Shared::new(cache, None, 0);
    let mut session = Session::new(&shared);
    let mut bytes = data.iter().copied();
    let mut out = Vec::new();
    while let Some(first) = bytes.next() {
        let spec = &COMMANDS[usize::from(first) % COMMANDS.len()];
        let name = if first & 0x80 != 0 { spec.name.to_lowercase() } else { spec.name.to_string() };
        let mut args = vec![Bytes::from(name)];
        let n = bytes.next().map_or(0, |b| b % 6);
        for _ in 0..n {
            let Some(b) = bytes.next() else { break };
            if b < 200 {
                args.push(Bytes::from_static(WORDS[usize::from(b) % WORDS.len()].as_bytes()));
            } else {
                // A raw argument: the next (b - 200) bytes.
                let raw: Vec<u8> = bytes.by_ref().take(usize::from(b - 200)).collect();
                args.push(Bytes::from(raw));
            }
        }
        if spec.name == "FLUSHALL" || spec.name == "FLUSHDB" {
            continue; // a walk per input is slow and finds nothing new
        }
        let reply = execute(&shared, &mut session, &args);
        out.clear();
        reply.write(2, &mut out);
        reply.write(3, &mut out);
        if session.quit {
            session = Session::new(&shared);
        }
    }
});
