//! The `Authentication-Results` header field writer (RFC 8601 2.2).
//!
//! ```text
//! authres-payload = [CFWS] authserv-id [ CFWS authres-version ]
//!                   ( no-result / 1*resinfo ) [CFWS] CRLF
//! resinfo         = [CFWS] ";" methodspec [ CFWS reasonspec ] [ CFWS 1*propspec ]
//! reasonspec      = "reason" [CFWS] "=" [CFWS] value
//! propspec        = ptype [CFWS] "." [CFWS] property [CFWS] "=" pvalue
//! pvalue          = [CFWS] ( value / [ [ local-part ] "@" ] domain-name ) [CFWS]
//! value           = token / quoted-string      ; RFC 2045 5.1
//! ```
//!
//! Every value that came from the peer is written as a token when it is one, else as a
//! quoted string in which only printable US-ASCII survives (anything else becomes `?`):
//! no CR, LF or other control character can reach the header. Each result goes on its
//! own folded line, and a result that is too long folds between its parts, so no line
//! exceeds 998 octets (RFC 5322 2.1.1) however long the values.

use crate::report::AuthResult;

/// The longest reason text kept; longer ones end in `...`.
pub const MAX_REASON: usize = 120;
/// The longest property value kept (a domain name is at most 253).
pub const MAX_VALUE: usize = 255;
/// Lines are folded before this many octets where possible (RFC 5322 2.1.1).
const FOLD_AT: usize = 78;

/// RFC 2045 tspecials.
const TSPECIALS: &[u8] = b"()<>@,;:\\\"/[]?=";

fn is_token(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| (0x21..0x7f).contains(&b) && !TSPECIALS.contains(&b))
}

/// `[local-part] "@" domain-name`, with a dot-atom local part: written as it is.
fn is_address(value: &str) -> bool {
    let Some((local, domain)) = value.rsplit_once('@') else {
        return false;
    };
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b);
    local.bytes().all(atext)
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && !domain.is_empty()
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `value` cut to at most `max` bytes (at a character boundary), and whether it was cut: a
/// cut value is written with `...` after it.
fn clip(value: &str, max: usize) -> (&str, bool) {
    if value.len() <= max {
        return (value, false);
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    (&value[..end], true)
}

/// Appends `value` (and `...` when `cut`) as an RFC 2045 token, or as a quoted string of
/// printable ASCII.
fn push_quoted(out: &mut String, value: &str, cut: bool) {
    if is_token(value) {
        out.push_str(value);
        if cut {
            out.push_str("...");
        }
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    if cut {
        out.push_str("...");
    }
    out.push('"');
}

/// Appends a property value: an address as it is, anything else as [`push_quoted`] writes it.
/// A cut value is never an address (its `...` would end the domain in empty labels).
fn push_pvalue(out: &mut String, value: &str) {
    let (value, cut) = clip(value, MAX_VALUE);
    if !cut && is_address(value) {
        out.push_str(value);
    } else {
        push_quoted(out, value, cut);
    }
}

/// Appends a keyword (method, result, ptype, property): `Keyword` of RFC 8601 is
/// `ALPHA / DIGIT / "-"`, plus `.` for the property names we write; anything else
/// is dropped.
fn push_keyword(out: &mut String, value: &str) {
    out.extend(
        value
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.' || *c == '_'),
    );
}

/// Writes the parts of one result onto its line, a space between two, folding (CRLF + two
/// tabs) before a part that would pass [`FOLD_AT`].
struct Line<'a> {
    out: &'a mut String,
    /// Where the part being written starts in `out`.
    part_start: usize,
    /// The length of the line so far, without the part being written.
    len: usize,
    parts: usize,
}

impl<'a> Line<'a> {
    fn start(out: &'a mut String) -> Self {
        out.push_str("\r\n\t");
        Line {
            part_start: out.len(),
            out,
            len: 8, // the tab
            parts: 0,
        }
    }

    /// Ends the part written since the last call (with the `;` that ends the result, when
    /// `semicolon`: it counts for the fold): a separator goes in front of it.
    fn end_part(&mut self, semicolon: bool) {
        if semicolon {
            self.out.push(';');
        }
        let part_len = self.out.len() - self.part_start;
        if self.parts > 0 {
            let separator = if self.len + 1 + part_len > FOLD_AT {
                self.len = 16;
                "\r\n\t\t"
            } else {
                self.len += 1;
                " "
            };
            self.out.insert_str(self.part_start, separator);
        }
        self.len += part_len;
        self.parts += 1;
        self.part_start = self.out.len();
    }
}

/// An `Authentication-Results` header field, ready to prepend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticationResults {
    value: String,
}

impl AuthenticationResults {
    /// The field name.
    pub const NAME: &'static str = "Authentication-Results";

    /// Writes the field for `authserv_id` with `results` (in order); none gives
    /// `authserv-id; none` (RFC 8601 2.2 no-result).
    pub fn new(authserv_id: &str, results: &[AuthResult]) -> Self {
        // One string, written in place: a result's parts are not gathered first.
        let mut value = String::with_capacity(16 + authserv_id.len() + 96 * results.len());
        value.push(' ');
        // The first line holds the name too; the id is ours (the operator's), quoted
        // anyway if it is not a token.
        let (id, cut) = clip(authserv_id, MAX_VALUE);
        push_quoted(&mut value, id, cut);
        if results.is_empty() {
            value.push_str("; none");
            return AuthenticationResults { value };
        }
        value.push(';');
        for (n, result) in results.iter().enumerate() {
            let more = n + 1 < results.len();
            let mut parts = 1 + usize::from(result.reason.is_some()) + result.properties.len();
            let mut line = Line::start(&mut value);
            push_keyword(line.out, &result.method);
            line.out.push('=');
            push_keyword(line.out, &result.result);
            parts -= 1;
            line.end_part(more && parts == 0);
            if let Some(reason) = &result.reason {
                line.out.push_str("reason=");
                let (reason, cut) = clip(reason, MAX_REASON);
                push_quoted(line.out, reason, cut);
                parts -= 1;
                line.end_part(more && parts == 0);
            }
            for (name, v) in &result.properties {
                push_keyword(line.out, name);
                line.out.push('=');
                push_pvalue(line.out, v);
                parts -= 1;
                line.end_part(more && parts == 0);
            }
        }
        AuthenticationResults { value }
    }

    /// The field value (after the colon), folded with CRLF + tab, no final CRLF.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The whole field: `Authentication-Results:` + value + CRLF.
    pub fn field(&self) -> String {
        format!("{}:{}\r\n", Self::NAME, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote(value: &str) -> String {
        let mut out = String::new();
        push_quoted(&mut out, value, false);
        out
    }

    fn pvalue(value: &str) -> String {
        let mut out = String::new();
        push_pvalue(&mut out, value);
        out
    }

    fn keyword(value: &str) -> String {
        let mut out = String::new();
        push_keyword(&mut out, value);
        out
    }

    fn r(method: &str, result: &str, reason: Option<&str>, props: &[(&str, &str)]) -> AuthResult {
        AuthResult {
            method: method.into(),
            result: result.into(),
            reason: reason.map(Into::into),
            properties: props
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_full_field() {
        let results = [
            r("spf", "pass", None, &[("smtp.mailfrom", "example.com")]),
            r(
                "dkim",
                "pass",
                None,
                &[
                    ("header.d", "example.com"),
                    ("header.i", "@example.com"),
                    ("header.s", "sel"),
                    ("header.b", "ab/cd+EF"),
                ],
            ),
            r(
                "dmarc",
                "fail",
                Some("no aligned identifier"),
                &[("policy.dmarc", "reject"), ("header.from", "example.org")],
            ),
            r("arc", "none", None, &[]),
        ];
        let field = AuthenticationResults::new("mx.example.net", &results).field();
        assert_eq!(
            field,
            "Authentication-Results: mx.example.net;\r\n\
             \tspf=pass smtp.mailfrom=example.com;\r\n\
             \tdkim=pass header.d=example.com header.i=@example.com header.s=sel\r\n\
             \t\theader.b=\"ab/cd+EF\";\r\n\
             \tdmarc=fail reason=\"no aligned identifier\" policy.dmarc=reject\r\n\
             \t\theader.from=example.org;\r\n\
             \tarc=none\r\n"
        );
    }

    #[test]
    fn no_results() {
        assert_eq!(
            AuthenticationResults::new("mx", &[]).field(),
            "Authentication-Results: mx; none\r\n"
        );
    }

    #[test]
    fn hostile_values_cannot_break_the_field() {
        let evil = "x\r\nBcc: victim@example.com\r\n\r\nbody\" (\u{7f}\u{0}é";
        let results = [r(
            "dkim",
            "fail",
            Some(evil),
            &[("header.d", evil), ("header.s", &"s".repeat(5000))],
        )];
        let field = AuthenticationResults::new("mx\r\nX: y", &results).field();
        // The only CR LF pairs are our folds (followed by a tab) and the end.
        let body = field.strip_suffix("\r\n").unwrap();
        for (i, _) in body.match_indices("\r\n") {
            assert_eq!(&body[i + 2..i + 3], "\t", "{field:?}");
        }
        assert!(
            !body
                .replace("\r\n\t", "")
                .contains(['\r', '\n', '\0', '\u{7f}'])
        );
        assert!(body.lines().all(|l| l.len() <= 998));
        assert!(
            field.contains("header.d=\"x??Bcc: victim@example.com????body\\\" (???\""),
            "{field}"
        );
        assert!(field.starts_with("Authentication-Results: \"mx??X: y\";"));
    }

    /// The writer as it was before it wrote in place (one string per part, then folded):
    /// the reference the in-place writer must match byte for byte.
    fn reference(authserv_id: &str, results: &[AuthResult]) -> String {
        fn truncate(value: &str, max: usize) -> String {
            let (head, cut) = clip(value, max);
            if cut {
                format!("{head}...")
            } else {
                head.to_owned()
            }
        }
        fn pv(value: &str) -> String {
            let value = truncate(value, MAX_VALUE);
            if is_address(&value) {
                value
            } else {
                quote(&value)
            }
        }
        fn fold(parts: &[String]) -> String {
            let mut out = String::new();
            let mut line = 8;
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    if line + 1 + part.len() > FOLD_AT {
                        out.push_str("\r\n\t\t");
                        line = 16;
                    } else {
                        out.push(' ');
                        line += 1;
                    }
                }
                out.push_str(part);
                line += part.len();
            }
            out
        }
        let id = quote(&truncate(authserv_id, MAX_VALUE));
        if results.is_empty() {
            return format!(" {id}; none");
        }
        let mut value = format!(" {id};");
        for (n, result) in results.iter().enumerate() {
            let mut parts = vec![format!(
                "{}={}",
                keyword(&result.method),
                keyword(&result.result)
            )];
            if let Some(reason) = &result.reason {
                parts.push(format!("reason={}", quote(&truncate(reason, MAX_REASON))));
            }
            for (name, v) in &result.properties {
                parts.push(format!("{}={}", keyword(name), pv(v)));
            }
            if n + 1 < results.len() {
                if let Some(last) = parts.last_mut() {
                    last.push(';');
                }
            }
            value.push_str("\r\n\t");
            value.push_str(&fold(&parts));
        }
        value
    }

    proptest::proptest! {
        #[test]
        fn writes_what_the_reference_writes(
            id in "[a-z.é\" ]{0,300}",
            results in proptest::collection::vec(
                (
                    "[a-z;]{1,8}",
                    "[a-z]{1,8}",
                    proptest::option::of("[ -~é]{0,200}"),
                    proptest::collection::vec(("[a-z.]{1,12}", "[a-z@.\" x]{0,300}"), 0..6),
                ),
                0..5,
            ),
        ) {
            let results: Vec<AuthResult> = results
                .into_iter()
                .map(|(method, result, reason, properties)| AuthResult {
                    method,
                    result,
                    reason,
                    properties,
                })
                .collect();
            let field = AuthenticationResults::new(&id, &results);
            proptest::prop_assert_eq!(field.value(), reference(&id, &results));
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("example.com"), "example.com");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("a\"b\\"), "\"a\\\"b\\\\\"");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(pvalue("joe@example.com"), "joe@example.com");
        assert_eq!(pvalue("@example.com"), "@example.com");
        assert_eq!(pvalue("a b@example.com"), "\"a b@example.com\"");
        assert_eq!(pvalue("rsa-sha256"), "rsa-sha256");
        assert_eq!(keyword("dkim"), "dkim");
        assert_eq!(keyword("d;k i\r\nm"), "dkim");
    }
}
