//! Redis's glob patterns (`SCAN … MATCH`): `*` any run of bytes, `?` any
//! one byte, `[abc]`, `[^abc]` and `[a-z]` a byte of (or not of) a set,
//! `\x` the byte `x`. As Redis reads them: a class left open runs to the
//! pattern's end, a range may be written backwards (`[z-a]`), and a `\`
//! ending the pattern is itself. Bytes, not characters; case matters.

/// Whether `text` matches `pattern`, in time O(pattern × text): at a
/// mismatch only the latest `*` is retried, one byte further on.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // The latest `*`'s place in the pattern, and where its run ends now.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
            continue;
        }
        if let Some(step) = one(&pattern[p..], text[t]) {
            p += step;
            t += 1;
            continue;
        }
        match star {
            // The `*` takes one more byte, and the rest is tried again.
            Some((sp, st)) => {
                star = Some((sp, st + 1));
                p = sp + 1;
                t = st + 1;
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// If the pattern's first element (not a `*`) matches byte `c`: how many
/// pattern bytes it took.
fn one(pattern: &[u8], c: u8) -> Option<usize> {
    match *pattern.first()? {
        b'?' => Some(1),
        b'[' => {
            let (hit, len) = class(pattern, c);
            hit.then_some(len)
        }
        b'\\' if pattern.len() >= 2 => (pattern[1] == c).then_some(2),
        b => (b == c).then_some(1),
    }
}

/// Whether `c` is in the class `pattern` opens (`pattern[0] == b'['`), and
/// the class's length.
fn class(pattern: &[u8], c: u8) -> (bool, usize) {
    let mut i = 1;
    let not = pattern.get(1) == Some(&b'^');
    if not {
        i += 1;
    }
    let mut hit = false;
    while i < pattern.len() {
        match pattern[i] {
            b'\\' if i + 1 < pattern.len() => {
                hit |= pattern[i + 1] == c;
                i += 2;
            }
            b']' => {
                i += 1;
                return (hit != not, i);
            }
            lo if i + 2 < pattern.len() && pattern[i + 1] == b'-' => {
                let hi = pattern[i + 2];
                let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                hit |= (lo..=hi).contains(&c);
                i += 3;
            }
            b => {
                hit |= b == c;
                i += 1;
            }
        }
    }
    (hit != not, i)
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn patterns_match_as_redis_reads_them() {
        let yes: &[(&str, &str)] = &[
            ("*", ""),
            ("*", "anything"),
            ("h?llo", "hello"),
            ("h*llo", "hllo"),
            ("h*llo", "heeeello"),
            ("h[ae]llo", "hallo"),
            ("h[^e]llo", "hallo"),
            ("h[a-b]llo", "hbllo"),
            ("h[b-a]llo", "hallo"),
            ("user:*:name", "user:42:name"),
            ("*:*:*", "a:b:c"),
            ("a\\*b", "a*b"),
            ("a\\", "a\\"),
            ("[\\]]", "]"),
            ("[abc", "b"),
            ("[^]", "x"),
            ("**a", "a"),
            ("*a*b*c*", "xxaxxbxxcxx"),
        ];
        for (p, t) in yes {
            assert!(matches(p.as_bytes(), t.as_bytes()), "{p} should match {t}");
        }
        let no: &[(&str, &str)] = &[
            ("", "a"),
            ("h?llo", "hllo"),
            ("h[ae]llo", "hillo"),
            ("h[^e]llo", "hello"),
            ("h[a-b]llo", "hcllo"),
            ("a\\*b", "axb"),
            ("[]", "x"),
            ("Hello", "hello"),
            ("*a*b*c", "xxaxxbxxcxxd"),
            ("user:*", "usr:1"),
        ];
        for (p, t) in no {
            assert!(
                !matches(p.as_bytes(), t.as_bytes()),
                "{p} should not match {t}"
            );
        }
    }

    #[test]
    fn a_pathological_pattern_takes_quadratic_time_not_exponential() {
        let text = vec![b'a'; 4096];
        let mut pattern = b"*a".repeat(64);
        pattern.push(b'b');
        assert!(!matches(&pattern, &text));
    }
}
