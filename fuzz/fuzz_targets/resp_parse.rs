//! The server's request parser (`larder-server`'s `resp::parse`) on
//! arbitrary bytes, fed in two pieces: never a panic, every request within
//! the limits, and every request it returns parses back the same when
//! written as a RESP array.

#![no_main]

use bytes::BytesMut;
use larder_server::resp::{Limits, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_bulk: 512,
        max_args: 16,
        max_inline: 256,
    };
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut buf = BytesMut::from(&data[..split]);
    let mut rest = &data[split..];
    loop {
        match parse(&mut buf, &limits) {
            Ok(Some(args)) => {
                assert!(args.len() <= limits.max_args);
                assert!(args.iter().all(|a| a.len() <= limits.max_bulk.max(limits.max_inline)));
                let mut again = format!("*{}\r\n", args.len()).into_bytes();
                for a in &args {
                    again.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                    again.extend_from_slice(a);
                    again.extend_from_slice(b"\r\n");
                }
                let mut again = BytesMut::from(&again[..]);
                let back = parse(&mut again, &Limits { max_bulk: usize::MAX >> 1, max_args: usize::MAX >> 1, max_inline: usize::MAX >> 1 });
                assert_eq!(back, Ok(Some(args)));
                assert!(again.is_empty());
            }
            Ok(None) if rest.is_empty() => break,
            Ok(None) => {
                buf.extend_from_slice(rest);
                rest = &[];
            }
            Err(_) => break,
        }
    }
});
