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

fn truncate(value: &str, max: usize) -> String {
    if value.len() <= max {
        return value.to_owned();
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &value[..end])
}

/// `value` as an RFC 2045 token, or a quoted string of printable ASCII.
pub(crate) fn quote(value: &str) -> String {
    if is_token(value) {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len() + 2);
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
    out.push('"');
    out
}

fn pvalue(value: &str) -> String {
    let value = truncate(value, MAX_VALUE);
    if is_address(&value) {
        value
    } else {
        quote(&value)
    }
}

/// A keyword (method, result, ptype, property): `Keyword` of RFC 8601 is
/// `ALPHA / DIGIT / "-"`, plus `.` for the property names we write; anything else
/// is dropped.
fn keyword(value: &str) -> String {
    value
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.' || *c == '_')
        .collect()
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
        let mut lines: Vec<String> = Vec::new();
        // The first line holds the name too; the id is ours (the operator's), quoted
        // anyway if it is not a token.
        let id = quote(&truncate(authserv_id, MAX_VALUE));
        if results.is_empty() {
            return AuthenticationResults {
                value: format!(" {id}; none"),
            };
        }
        let mut value = format!(" {id}");
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
                parts.push(format!("{}={}", keyword(name), pvalue(v)));
            }
            if n + 1 < results.len() {
                if let Some(last) = parts.last_mut() {
                    last.push(';');
                }
            }
            lines.push(fold(&parts));
        }
        value.push(';');
        for line in lines {
            value.push_str("\r\n\t");
            value.push_str(&line);
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

/// Joins `parts` with spaces, folding (CRLF + two tabs) before a part that would pass
/// [`FOLD_AT`].
fn fold(parts: &[String]) -> String {
    let mut out = String::new();
    let mut line = 8; // the tab
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

#[cfg(test)]
mod tests {
    use super::*;

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
