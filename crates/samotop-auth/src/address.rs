//! The author domains of a From field (RFC 5322 3.4, 3.6.2; RFC 6532 for UTF-8): enough
//! of the address grammar to find each mailbox's domain, and nothing a display name,
//! comment or quoted local part can fake.

use hickory_resolver::proto::rr::Name;

use crate::signature::is_dns_name;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An atom or dot-atom (`.` kept in it), or any run of ordinary bytes.
    Atom(Vec<u8>),
    /// A quoted string, unescaped.
    Quoted,
    /// A domain literal `[...]`.
    Literal,
    /// One of `< > , : ; @`.
    Special(u8),
}

fn is_wsp(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn tokens(value: &[u8]) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < value.len() {
        let b = value[i];
        match b {
            _ if is_wsp(b) => i += 1,
            b'(' => {
                // A comment, nested, with quoted pairs (RFC 5322 3.2.2).
                let mut depth = 0usize;
                while i < value.len() {
                    match value[i] {
                        b'\\' => i += 1,
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < value.len() && value[i] != b'"' {
                    if value[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push(Token::Quoted);
            }
            b'[' => {
                while i < value.len() && value[i] != b']' {
                    if value[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push(Token::Literal);
            }
            b'<' | b'>' | b',' | b':' | b';' | b'@' => {
                out.push(Token::Special(b));
                i += 1;
            }
            b')' | b']' | b'\\' => i += 1, // stray: ignored
            _ => {
                let start = i;
                while i < value.len() && !is_wsp(value[i]) && !b"()<>[]:;@\\,\"".contains(&value[i])
                {
                    i += 1;
                }
                // Atoms split by CFWS around dots (obs-domain) join up again.
                let atom = &value[start..i];
                match out.last_mut() {
                    Some(Token::Atom(prev)) if prev.ends_with(b".") || atom.starts_with(b".") => {
                        prev.extend_from_slice(atom);
                    }
                    _ => out.push(Token::Atom(atom.to_vec())),
                }
            }
        }
    }
    out
}

/// The domain of one mailbox (its tokens): the part after the last `@` of the angle
/// address if there is one, else of the whole mailbox.
fn mailbox_domain(mailbox: &[Token]) -> Option<Vec<u8>> {
    let addr = match mailbox.iter().position(|t| *t == Token::Special(b'<')) {
        Some(open) => {
            let rest = &mailbox[open + 1..];
            let close = rest
                .iter()
                .position(|t| *t == Token::Special(b'>'))
                .unwrap_or(rest.len());
            let inner = &rest[..close];
            // obs-route: "@a,@b:" before the address.
            match inner.iter().position(|t| *t == Token::Special(b':')) {
                Some(colon) => &inner[colon + 1..],
                None => inner,
            }
        }
        None => mailbox,
    };
    let at = addr.iter().rposition(|t| *t == Token::Special(b'@'))?;
    match &addr[at + 1..] {
        [Token::Atom(domain)] => Some(domain.clone()),
        _ => None, // a domain literal, nothing, or more than one token
    }
}

/// Normalizes a domain: lower case, no trailing dot, U-labels as A-labels (RFC 9989
/// 5.3.1, RFC 5890 2.3). `None` if it is not a DNS name.
pub(crate) fn normalize_domain(domain: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(domain).ok()?;
    let text = text.strip_suffix('.').unwrap_or(text);
    if text.is_ascii() {
        let lower = text.to_ascii_lowercase();
        return is_dns_name(&lower).then_some(lower);
    }
    let ascii = Name::from_utf8(text).ok()?.to_ascii();
    let ascii = ascii
        .strip_suffix('.')
        .unwrap_or(&ascii)
        .to_ascii_lowercase();
    is_dns_name(&ascii).then_some(ascii)
}

/// What one From field yields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Authors {
    /// The distinct domains, normalized, in order of appearance.
    pub domains: Vec<String>,
    /// Mailboxes without a usable domain (no `@`, a domain literal, a bad name).
    pub unusable: usize,
}

/// The author domains of a From field value (a mailbox-list; groups are read too,
/// though RFC 5322 3.6.2 does not allow them in From).
pub(crate) fn authors(value: &[u8], into: &mut Authors) {
    let tokens = tokens(value);
    let mut mailbox: Vec<Token> = Vec::new();
    let mut in_angle = false;
    let flush = |mailbox: &mut Vec<Token>, into: &mut Authors| {
        if mailbox.is_empty() {
            return;
        }
        match mailbox_domain(mailbox)
            .as_deref()
            .and_then(normalize_domain)
        {
            Some(domain) => {
                if !into.domains.contains(&domain) {
                    into.domains.push(domain);
                }
            }
            None => into.unusable += 1,
        }
        mailbox.clear();
    };
    for token in tokens {
        match token {
            Token::Special(b'<') => {
                in_angle = true;
                mailbox.push(token);
            }
            Token::Special(b'>') => {
                in_angle = false;
                mailbox.push(token);
            }
            Token::Special(b',') | Token::Special(b';') if !in_angle => {
                flush(&mut mailbox, into);
            }
            Token::Special(b':') if !in_angle && !mailbox.contains(&Token::Special(b'@')) => {
                // A group's display name ends here.
                mailbox.clear();
            }
            other => mailbox.push(other),
        }
    }
    flush(&mut mailbox, into);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains(value: &str) -> (Vec<String>, usize) {
        let mut a = Authors::default();
        authors(value.as_bytes(), &mut a);
        (a.domains, a.unusable)
    }

    fn d(list: &[&str], unusable: usize) -> (Vec<String>, usize) {
        (list.iter().map(|s| s.to_string()).collect(), unusable)
    }

    #[test]
    fn table() {
        let cases: &[(&str, (Vec<String>, usize))] = &[
            ("joe@example.com", d(&["example.com"], 0)),
            (" Joe <joe@Example.COM.>", d(&["example.com"], 0)),
            ("\"Joe, the one\" <joe@example.com>", d(&["example.com"], 0)),
            (
                "\"joe@evil.example\" <joe@example.com>",
                d(&["example.com"], 0),
            ),
            ("joe@example.com (joe@evil.example)", d(&["example.com"], 0)),
            ("(c@evil.example) joe@example.com", d(&["example.com"], 0)),
            (
                "joe@example.com, ann@example.org",
                d(&["example.com", "example.org"], 0),
            ),
            ("joe@example.com, ann@EXAMPLE.com", d(&["example.com"], 0)),
            ("<@relay.example:joe@example.com>", d(&["example.com"], 0)),
            ("\"a@b\"@example.com", d(&["example.com"], 0)),
            ("joe @ example . com", d(&["example.com"], 0)),
            (
                "Friends: joe@example.com, ann@example.org;",
                d(&["example.com", "example.org"], 0),
            ),
            ("undisclosed-recipients:;", d(&[], 0)),
            ("", d(&[], 0)),
            ("joe", d(&[], 1)),
            ("joe@[192.0.2.1]", d(&[], 1)),
            ("joe@exa mple.com", d(&[], 1)),
            (
                "=?utf-8?q?J=C3=B6?= <joe@example.com>",
                d(&["example.com"], 0),
            ),
            (
                "J\u{f6}rg <j@b\u{fc}cher.example>",
                d(&["xn--bcher-kva.example"], 0),
            ),
            ("joe@example.com <ann@example.org>", d(&["example.org"], 0)),
            ("<joe@example.com", d(&["example.com"], 0)),
            ("joe@exam_ple.com", d(&["exam_ple.com"], 0)),
        ];
        for (value, expected) in cases {
            assert_eq!(&domains(value), expected, "{value:?}");
        }
    }
}
