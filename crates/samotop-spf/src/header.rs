//! The `Received-SPF` header field (RFC 7208 9.1), made safe from what the peer sent.

use std::fmt::Write;
use std::net::IpAddr;

/// The longest piece of peer- or DNS-supplied text kept in a header field or reply, in chars.
/// Keeps the whole field well under the 998-octet line limit of RFC 5322 2.1.1.
pub(crate) const MAX_FIELD: usize = 255;

/// `s` without control characters (CR, LF, TAB, NUL, ...: each becomes `?`), cut at
/// [`MAX_FIELD`] chars. Everything that goes into a header field or a reply passes here.
pub(crate) fn clean(s: &str) -> String {
    s.chars()
        .take(MAX_FIELD)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
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

/// A key-value value (RFC 7208 9.1: `dot-atom / quoted-string`): as is when it is a dot-atom,
/// else quoted.
pub(crate) fn value(s: &str) -> String {
    let s = clean(s);
    if is_dot_atom(&s) { s } else { quoted(&s) }
}

/// A `quoted-string` (RFC 5322 3.2.4): `"` and `\` escaped.
pub(crate) fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in clean(s).chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Text for inside a `comment` (RFC 5322 3.2.2): parentheses and `\` escaped.
pub(crate) fn comment_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in clean(s).chars() {
        if matches!(c, '(' | ')' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
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
}

impl Fields<'_> {
    /// The whole field, `Received-SPF: ...`, on one line (no CR LF).
    pub(crate) fn to_header(&self) -> String {
        let mut h = String::with_capacity(256);
        let _ = write!(
            h,
            "Received-SPF: {} ({}: {}) client-ip={}; envelope-from={};",
            self.result,
            comment_text(self.receiver),
            comment_text(self.explanation),
            value(&self.client_ip.to_string()),
            quoted(self.envelope_from),
        );
        if let Some(helo) = self.helo {
            let _ = write!(h, " helo={};", value(helo));
        }
        let _ = write!(h, " receiver={}; identity=mailfrom", value(self.receiver));
        debug_assert!(!h.contains(['\r', '\n']));
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
        };
        assert_eq!(
            fields.to_header(),
            "Received-SPF: pass (mybox.example.org: domain of myname@example.com designates \
             192.0.2.1 as permitted sender) client-ip=192.0.2.1; \
             envelope-from=\"myname@example.com\"; helo=foo.example.com; \
             receiver=mybox.example.org; identity=mailfrom"
        );
    }
}
