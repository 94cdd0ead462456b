//! The `Received-SPF` header field (RFC 7208 9.1), made safe from what the peer and the DNS
//! sent: one line, no control characters, at most [`MAX_LINE`] octets.

use std::fmt::Write;
use std::net::IpAddr;

/// The longest piece of peer- or DNS-supplied text kept in a header field or reply, in chars.
pub(crate) const MAX_FIELD: usize = 255;

/// The longest `Received-SPF` field, in octets: the line limit of RFC 5322 2.1.1 (998, without
/// CR LF). Each part has a budget below (sum 833 + 114 of fixed text), so the field is one
/// line however long the sender, the HELO name or the explanation.
pub(crate) const MAX_LINE: usize = 998;

/// Budgets, in octets after escaping, of the parts of a `Received-SPF` field.
const RECEIVER_BYTES: usize = 64;
const EXPLANATION_BYTES: usize = 200;
const ENVELOPE_FROM_BYTES: usize = 160;
const HELO_BYTES: usize = 160;
const MECHANISM_BYTES: usize = 80;
const PROBLEM_BYTES: usize = 64;

/// The longest reply text, in octets: a reply line is at most 512 octets with its code and
/// CR LF (RFC 5321 4.5.3.1.5); `550 5.7.23 ` takes 11 of them.
pub(crate) const MAX_REPLY_TEXT: usize = 512 - 11 - 2;

/// True for characters that must not reach a header field or a reply: control characters
/// (CR, LF, TAB, NUL, DEL, C1) and the Unicode line and paragraph separators.
fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// `s` with each unsafe character (see [`is_unsafe`]) replaced by `?`, cut at [`MAX_FIELD`]
/// chars. Everything that goes into a header field or a reply passes here.
pub(crate) fn clean(s: &str) -> String {
    s.chars()
        .take(MAX_FIELD)
        .map(|c| if is_unsafe(c) { '?' } else { c })
        .collect()
}

/// `s` cut to at most `max` octets, on a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `atext` of RFC 5322 3.2.3 (ASCII only).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

/// True when `s` is a `dot-atom-text`: atoms of atext separated by single dots.
fn is_dot_atom(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

/// Appends `s` cleaned, each char escaped by `escape`, while it fits in `max` octets.
fn push_escaped(out: &mut String, s: &str, max: usize, escape: impl Fn(char) -> bool) {
    let start = out.len();
    for c in clean(s).chars() {
        let need = c.len_utf8() + usize::from(escape(c));
        if out.len() - start + need > max {
            break;
        }
        if escape(c) {
            out.push('\\');
        }
        out.push(c);
    }
}

/// A key-value value (RFC 7208 9.1: `dot-atom / quoted-string`) of at most `max` octets: as is
/// when it is a dot-atom, else quoted.
pub(crate) fn value_within(s: &str, max: usize) -> String {
    let s = clean(s);
    if is_dot_atom(&s) && s.len() <= max {
        s
    } else {
        quoted_within(&s, max)
    }
}

/// [`value_within`] with the budget of one whole piece, [`MAX_FIELD`] chars.
#[cfg(test)]
pub(crate) fn value(s: &str) -> String {
    value_within(s, MAX_FIELD * 4 + 2)
}

/// A `quoted-string` (RFC 5322 3.2.4) of at most `max` octets, quotes included: `"` and `\`
/// escaped, cut at a character (never inside an escape).
pub(crate) fn quoted_within(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max) + 2);
    out.push('"');
    push_escaped(&mut out, s, max.saturating_sub(2), |c| {
        c == '"' || c == '\\'
    });
    out.push('"');
    out
}

/// [`quoted_within`] with the budget of one whole piece.
#[cfg(test)]
pub(crate) fn quoted(s: &str) -> String {
    quoted_within(s, MAX_FIELD * 2 + 2)
}

/// Text for inside a `comment` (RFC 5322 3.2.2) of at most `max` octets: parentheses and `\`
/// escaped.
pub(crate) fn comment_within(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    push_escaped(&mut out, s, max, |c| matches!(c, '(' | ')' | '\\'));
    out
}

/// [`comment_within`] with the budget of one whole piece.
#[cfg(test)]
pub(crate) fn comment_text(s: &str) -> String {
    comment_within(s, MAX_FIELD * 2)
}

/// What goes into one `Received-SPF` field.
pub(crate) struct Fields<'a> {
    /// `pass`, `fail`, ...
    pub result: &'a str,
    /// The receiver (our host name).
    pub receiver: &'a str,
    /// The human explanation, without the receiver.
    pub explanation: &'a str,
    /// The peer's IP.
    pub client_ip: IpAddr,
    /// The MAIL FROM path as given (`local@domain`), empty for the null sender.
    pub envelope_from: &'a str,
    /// The HELO/EHLO argument, if any.
    pub helo: Option<&'a str>,
    /// The mechanism that matched, or `default` when none did (RFC 7208 9.1).
    pub mechanism: Option<&'a str>,
    /// What went wrong, for `temperror` and `permerror` (RFC 7208 9.1).
    pub problem: Option<&'a str>,
}

impl Fields<'_> {
    /// The whole field, `Received-SPF: ...`, on one line (no CR LF) of at most [`MAX_LINE`]
    /// octets.
    pub(crate) fn to_header(&self) -> String {
        let mut h = String::with_capacity(256);
        let _ = write!(
            h,
            "Received-SPF: {} ({}: {}) client-ip={}; envelope-from={};",
            value_within(self.result, 16),
            comment_within(self.receiver, RECEIVER_BYTES),
            comment_within(self.explanation, EXPLANATION_BYTES),
            value_within(&self.client_ip.to_string(), 48),
            quoted_within(self.envelope_from, ENVELOPE_FROM_BYTES),
        );
        if let Some(helo) = self.helo {
            let _ = write!(h, " helo={};", value_within(helo, HELO_BYTES));
        }
        if let Some(mechanism) = self.mechanism {
            let _ = write!(
                h,
                " mechanism={};",
                value_within(mechanism, MECHANISM_BYTES)
            );
        }
        if let Some(problem) = self.problem {
            let _ = write!(h, " problem={};", value_within(problem, PROBLEM_BYTES));
        }
        let _ = write!(
            h,
            " receiver={}; identity=mailfrom",
            value_within(self.receiver, RECEIVER_BYTES)
        );
        debug_assert!(!h.contains(['\r', '\n']));
        debug_assert!(h.len() <= MAX_LINE, "{} octets", h.len());
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_table() {
        let table = [
            ("mx.example.org", "mx.example.org"),
            ("192.0.2.1", "192.0.2.1"),
            ("2001:db8::1", "\"2001:db8::1\""),
            ("[192.0.2.1]", "\"[192.0.2.1]\""),
            ("", "\"\""),
            ("a..b", "\"a..b\""),
            ("evil\r\nX-Injected: yes", "\"evil??X-Injected: yes\""),
            ("q\"uo\\te", "\"q\\\"uo\\\\te\""),
            // `?` is atext: a cleaned value may stay a dot-atom.
            ("nul\0byte", "nul?byte"),
            ("line\u{2028}sep\u{85}nel end", "\"line?sep?nel end\""),
        ];
        for (input, expected) in table {
            assert_eq!(value(input), expected, "{input:?}");
        }
    }

    #[test]
    fn comment_escapes_parentheses() {
        assert_eq!(comment_text("a (b) \\ c\n"), "a \\(b\\) \\\\ c?");
    }

    #[test]
    fn long_values_are_cut() {
        let long = "a".repeat(10_000);
        assert_eq!(clean(&long).chars().count(), MAX_FIELD);
        assert!(quoted(&long).len() <= MAX_FIELD + 2);
        // Never inside an escape, never inside a character.
        assert_eq!(quoted_within("ab\"cd", 5), "\"ab\"");
        assert_eq!(quoted_within("aé", 4), "\"a\"");
        assert_eq!(cut("aé", 2), "a");
        assert_eq!(cut("aé", 3), "aé");
    }

    #[test]
    fn rfc7208_example_shape() {
        let fields = Fields {
            result: "pass",
            receiver: "mybox.example.org",
            explanation: "domain of myname@example.com designates 192.0.2.1 as permitted sender",
            client_ip: "192.0.2.1".parse().unwrap(),
            envelope_from: "myname@example.com",
            helo: Some("foo.example.com"),
            mechanism: Some("ip4:192.0.2.0/24"),
            problem: None,
        };
        assert_eq!(
            fields.to_header(),
            "Received-SPF: pass (mybox.example.org: domain of myname@example.com designates \
             192.0.2.1 as permitted sender) client-ip=192.0.2.1; \
             envelope-from=\"myname@example.com\"; helo=foo.example.com; \
             mechanism=\"ip4:192.0.2.0/24\"; receiver=mybox.example.org; identity=mailfrom"
        );
    }

    /// Whatever the peer and the DNS send, the field is one line of at most 998 octets.
    #[test]
    fn the_longest_parts_still_make_one_line_within_998_octets() {
        let hostile = "\"(\\é\u{1F600}\r\n".repeat(400);
        let fields = Fields {
            result: "permerror",
            receiver: &hostile,
            explanation: &hostile,
            client_ip: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
            envelope_from: &hostile,
            helo: Some(&hostile),
            mechanism: Some(&hostile),
            problem: Some(&hostile),
        };
        let h = fields.to_header();
        assert!(h.len() <= MAX_LINE, "{} octets", h.len());
        assert!(!h.contains(['\r', '\n', '\0']), "{h:?}");
        assert!(h.ends_with("; identity=mailfrom"), "{h}");
    }
}
