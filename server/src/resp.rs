//! RESP requests and replies.
//!
//! A request is a RESP array of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`)
//! or an inline command (`PING\r\n`: words separated by spaces, as
//! `redis-benchmark` and `telnet` send them). The parser never reads past
//! the bytes it is given, never panics, and checks every declared length
//! against [`Limits`] *before* it waits for the bytes, so a client cannot
//! make the server buffer more than the limits allow. A request that breaks
//! the protocol or a limit is an error in Redis's wording; the connection is
//! then closed, as Redis closes it.

use bytes::{Bytes, BytesMut};

/// The bounds a request must keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one bulk string (an argument), at most.
    pub max_bulk: usize,
    /// Arguments of one request, at most.
    pub max_args: usize,
    /// Bytes of an inline request's line, at most.
    pub max_inline: usize,
}

impl Default for Limits {
    /// 64 MiB per argument, 65,536 arguments, 64 KiB inline lines.
    fn default() -> Self {
        Limits {
            max_bulk: 64 << 20,
            max_args: 1 << 16,
            max_inline: 64 << 10,
        }
    }
}

/// Why a request was refused (the text follows `-ERR `).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The array's length is not a number, or over the limit.
    #[error("Protocol error: invalid multibulk length")]
    MultibulkLength,
    /// A bulk string's length is not a number, or over the limit.
    #[error("Protocol error: invalid bulk length")]
    BulkLength,
    /// An array element is not a bulk string.
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    /// A bulk string is not followed by CRLF.
    #[error("Protocol error: bulk string not terminated by CRLF")]
    Unterminated,
    /// An inline line longer than the limit.
    #[error("Protocol error: too big inline request")]
    InlineTooBig,
    /// An inline line with an unbalanced quote.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
}

/// Reads a decimal length from `line` (no sign allowed but `-1`'s).
fn parse_len(line: &[u8]) -> Option<i64> {
    let (neg, digits) = match line.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
    Some(if neg { -n } else { n })
}

/// The line at the start of `buf` (without its CRLF) and the bytes it
/// takes with it; `None` if no CRLF yet.
fn line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    Some((&buf[..end], end + 2))
}

/// Takes the next whole request off the front of `buf`: its arguments
/// (`Some(vec![])` for an empty inline line, which Redis ignores), or
/// `None` if more bytes are needed.
pub fn parse(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != b'*' {
        return parse_inline(buf, limits);
    }
    let Some((header, mut at)) = line(&buf[1..]) else {
        if buf.len() > 32 {
            return Err(ProtocolError::MultibulkLength);
        }
        return Ok(None);
    };
    at += 1;
    let count = parse_len(header).ok_or(ProtocolError::MultibulkLength)?;
    if count > limits.max_args as i64 {
        return Err(ProtocolError::MultibulkLength);
    }
    if count <= 0 {
        let _ = buf.split_to(at);
        return Ok(Some(Vec::new()));
    }
    let mut ranges = Vec::with_capacity((count as usize).min(1024));
    for _ in 0..count {
        let Some(&first) = buf.get(at) else {
            return Ok(None);
        };
        if first != b'$' {
            return Err(ProtocolError::ExpectedBulk(first as char));
        }
        let Some((len_line, used)) = line(&buf[at + 1..]) else {
            if buf.len() - at > 32 {
                return Err(ProtocolError::BulkLength);
            }
            return Ok(None);
        };
        let len = parse_len(len_line).ok_or(ProtocolError::BulkLength)?;
        if len < 0 || len as u64 > limits.max_bulk as u64 {
            return Err(ProtocolError::BulkLength);
        }
        let start = at + 1 + used;
        let end = start + len as usize;
        if buf.len() < end + 2 {
            // Nothing is reserved for what the length declares: the buffer
            // grows only with bytes the client sends.
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::Unterminated);
        }
        ranges.push(start..end);
        at = end + 2;
    }
    let frame = buf.split_to(at).freeze();
    Ok(Some(ranges.into_iter().map(|r| frame.slice(r)).collect()))
}

fn parse_inline(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > limits.max_inline {
            return Err(ProtocolError::InlineTooBig);
        }
        return Ok(None);
    };
    if end > limits.max_inline {
        return Err(ProtocolError::InlineTooBig);
    }
    let frame = buf.split_to(end + 1).freeze();
    let text = frame.slice(..end);
    let text = text
        .strip_suffix(b"\r")
        .map_or(text.clone(), |t| text.slice(..t.len()));
    let args = split_inline(&text)?;
    if args.len() > limits.max_args {
        return Err(ProtocolError::MultibulkLength);
    }
    Ok(Some(args))
}

/// Splits an inline line into words: spaces separate, double quotes group
/// (with `\"`, `\\`, `\n`, `\r`, `\t` and `\xHH` escapes) and single quotes
/// group literally, as Redis's `sdssplitargs` does.
fn split_inline(text: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if text[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let mut word = Vec::new();
        match text[i] {
            b'"' => {
                i += 1;
                loop {
                    let Some(&c) = text.get(i) else {
                        return Err(ProtocolError::UnbalancedQuotes);
                    };
                    i += 1;
                    match c {
                        b'"' => break,
                        b'\\' => {
                            let Some(&e) = text.get(i) else {
                                return Err(ProtocolError::UnbalancedQuotes);
                            };
                            i += 1;
                            match e {
                                b'n' => word.push(b'\n'),
                                b'r' => word.push(b'\r'),
                                b't' => word.push(b'\t'),
                                b'x' if text.len() >= i + 2 => {
                                    match std::str::from_utf8(&text[i..i + 2])
                                        .ok()
                                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                                    {
                                        Some(b) => {
                                            word.push(b);
                                            i += 2;
                                        }
                                        None => word.push(b'x'),
                                    }
                                }
                                other => word.push(other),
                            }
                        }
                        _ => word.push(c),
                    }
                }
                if text.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    let Some(&c) = text.get(i) else {
                        return Err(ProtocolError::UnbalancedQuotes);
                    };
                    i += 1;
                    if c == b'\'' {
                        break;
                    }
                    word.push(c);
                }
                if text.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
            }
            _ => {
                while let Some(&c) = text.get(i) {
                    if c.is_ascii_whitespace() {
                        break;
                    }
                    word.push(c);
                    i += 1;
                }
            }
        }
        args.push(Bytes::from(word));
    }
    Ok(args)
}

/// A reply, written for the connection's protocol version.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+OK`.
    Simple(&'static str),
    /// A simple string made at run time (`+PONG` with an argument is a bulk).
    Status(String),
    /// `-ERR …`, `-WRONGTYPE …`: the whole text after the `-`.
    Error(String),
    /// `:n`.
    Int(i64),
    /// `$n\r\n…`.
    Bulk(Bytes),
    /// RESP2 `$-1`, RESP3 `_`.
    Nil,
    /// RESP2 `*-1`, RESP3 `_`: a null array (an aborted `EXEC`).
    NilArray,
    /// `*n`.
    Array(Vec<Reply>),
    /// RESP3 `%n` (RESP2: an array of the pairs, flattened).
    Map(Vec<(Reply, Reply)>),
    /// RESP3 `,x` (RESP2: a bulk string).
    Double(f64),
    /// Verbatim text (RESP3 `=n\r\ntxt:…`; RESP2: a bulk string), for `INFO`.
    Verbatim(String),
}

impl Reply {
    /// `-ERR <text>`.
    pub fn err(text: impl std::fmt::Display) -> Reply {
        Reply::Error(format!("ERR {text}"))
    }

    /// A bulk string of `text`.
    pub fn text(text: impl Into<String>) -> Reply {
        Reply::Bulk(Bytes::from(text.into()))
    }

    /// Appends the reply's bytes, for protocol 2 or 3.
    pub fn write(&self, proto: u8, out: &mut Vec<u8>) {
        match self {
            Reply::Simple(s) => push_line(out, b'+', s.as_bytes()),
            Reply::Status(s) => push_line(out, b'+', s.as_bytes()),
            Reply::Error(s) => push_line(out, b'-', s.as_bytes()),
            Reply::Int(n) => push_line(out, b':', n.to_string().as_bytes()),
            Reply::Bulk(b) => {
                push_line(out, b'$', b.len().to_string().as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Nil if proto >= 3 => out.extend_from_slice(b"_\r\n"),
            Reply::Nil => out.extend_from_slice(b"$-1\r\n"),
            Reply::NilArray if proto >= 3 => out.extend_from_slice(b"_\r\n"),
            Reply::NilArray => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(items) => {
                push_line(out, b'*', items.len().to_string().as_bytes());
                for item in items {
                    item.write(proto, out);
                }
            }
            Reply::Map(pairs) => {
                if proto >= 3 {
                    push_line(out, b'%', pairs.len().to_string().as_bytes());
                } else {
                    push_line(out, b'*', (pairs.len() * 2).to_string().as_bytes());
                }
                for (k, v) in pairs {
                    k.write(proto, out);
                    v.write(proto, out);
                }
            }
            Reply::Double(d) if proto >= 3 => push_line(out, b',', d.to_string().as_bytes()),
            Reply::Double(d) => Reply::text(d.to_string()).write(proto, out),
            Reply::Verbatim(text) if proto >= 3 => {
                push_line(out, b'=', (text.len() + 4).to_string().as_bytes());
                out.extend_from_slice(b"txt:");
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Verbatim(text) => Reply::text(text.clone()).write(proto, out),
        }
    }
}

fn push_line(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    out.push(kind);
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8], limits: &Limits) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(args) = parse(&mut buf, limits)? {
            out.push(args);
        }
        Ok(out)
    }

    #[test]
    fn pipelined_requests_come_out_in_order_and_binary_safe() {
        let got = parse_all(
            b"*2\r\n$3\r\nGET\r\n$4\r\na\r\nb\r\n*1\r\n$4\r\nPING\r\nPING\r\n",
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], vec![Bytes::from("GET"), Bytes::from("a\r\nb")]);
        assert_eq!(got[1], vec![Bytes::from("PING")]);
        assert_eq!(got[2], vec![Bytes::from("PING")]);
    }

    #[test]
    fn every_prefix_of_a_request_waits_for_more() {
        let req = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n";
        for cut in 0..req.len() {
            let mut buf = BytesMut::from(&req[..cut]);
            assert_eq!(
                parse(&mut buf, &Limits::default()),
                Ok(None),
                "cut at {cut}"
            );
            assert_eq!(buf.len(), cut, "nothing consumed");
        }
    }

    #[test]
    fn limits_are_checked_before_the_bytes_arrive() {
        let limits = Limits {
            max_bulk: 10,
            max_args: 3,
            max_inline: 16,
        };
        assert_eq!(
            parse_all(b"*4\r\n", &limits),
            Err(ProtocolError::MultibulkLength)
        );
        assert_eq!(
            parse_all(b"*1\r\n$11\r\n", &limits),
            Err(ProtocolError::BulkLength)
        );
        assert_eq!(
            parse_all(b"*1\r\n$99999999999999999999\r\n", &limits),
            Err(ProtocolError::BulkLength)
        );
        assert_eq!(
            parse_all(b"*1\r\n$-5\r\n", &limits),
            Err(ProtocolError::BulkLength)
        );
        assert_eq!(
            parse_all(b"*x\r\n", &limits),
            Err(ProtocolError::MultibulkLength)
        );
        assert_eq!(
            parse_all(b"*1\r\n:5\r\n", &limits),
            Err(ProtocolError::ExpectedBulk(':'))
        );
        assert_eq!(
            parse_all(b"*1\r\n$1\r\nab\r\n", &limits),
            Err(ProtocolError::Unterminated)
        );
        assert_eq!(
            parse_all(&[b'A'; 40], &limits),
            Err(ProtocolError::InlineTooBig)
        );
        assert_eq!(
            parse_all(b"*11111111111111111111111111111111111", &limits),
            Err(ProtocolError::MultibulkLength)
        );
        assert_eq!(
            parse_all(b"*0\r\n*-1\r\n", &limits).unwrap(),
            vec![Vec::<Bytes>::new(), vec![]]
        );
    }

    #[test]
    fn inline_commands_split_like_redis() {
        let got = parse_all(
            b"SET k \"a b\\x41\\n\" 'c d'\r\n\r\nping\n",
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(
            got[0],
            vec![
                Bytes::from("SET"),
                Bytes::from("k"),
                Bytes::from("a bA\n"),
                Bytes::from("c d")
            ]
        );
        assert!(got[1].is_empty(), "an empty line is no command");
        assert_eq!(got[2], vec![Bytes::from("ping")]);
        assert_eq!(
            parse_all(b"SET \"k\r\n", &Limits::default()),
            Err(ProtocolError::UnbalancedQuotes)
        );
        assert_eq!(
            parse_all(b"SET \"k\"x\r\n", &Limits::default()),
            Err(ProtocolError::UnbalancedQuotes)
        );
    }

    #[test]
    fn replies_in_both_protocols() {
        let mut out = Vec::new();
        Reply::Nil.write(2, &mut out);
        Reply::Nil.write(3, &mut out);
        Reply::Map(vec![(Reply::text("a"), Reply::Int(1))]).write(2, &mut out);
        Reply::Map(vec![(Reply::text("a"), Reply::Int(1))]).write(3, &mut out);
        assert_eq!(
            out,
            b"$-1\r\n_\r\n*2\r\n$1\r\na\r\n:1\r\n%1\r\n$1\r\na\r\n:1\r\n"
        );
    }
}
