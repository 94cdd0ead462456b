//! Does an incoming `Authentication-Results` (or `ARC-Authentication-Results`) claim to
//! be ours? RFC 8601 5: a receiver removes or renames such fields before it adds its
//! own, or anyone could forge our verdicts.

/// RFC 2045 tspecials: they end a token.
const TSPECIALS: &[u8] = b"()<>@,;:\\\"/[]?=";

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Skips CFWS (RFC 5322 3.2.2): whitespace, folding, and comments, nested, with quoted
/// pairs. An unterminated comment runs to the end.
fn skip_cfws(value: &[u8], mut i: usize) -> usize {
    while i < value.len() {
        match value[i] {
            b if is_ws(b) => i += 1,
            b'(' => {
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
            _ => break,
        }
    }
    // A quoted pair at the very end steps one past it.
    i.min(value.len())
}

/// Reads an RFC 2045 `value` (token or quoted-string) at `i`: the unescaped text and the
/// position after it.
fn read_value(value: &[u8], i: usize) -> Option<(Vec<u8>, usize)> {
    match value.get(i)? {
        b'"' => {
            let mut out = Vec::new();
            let mut j = i + 1;
            while j < value.len() {
                match value[j] {
                    b'"' => return Some((out, j + 1)),
                    b'\\' => {
                        j += 1;
                        if let Some(&b) = value.get(j) {
                            out.push(b);
                        }
                    }
                    b'\r' | b'\n' => {} // folding inside the quoted string
                    b => out.push(b),
                }
                j += 1;
            }
            None // unterminated
        }
        _ => {
            let end = value[i..]
                .iter()
                .position(|&b| b <= b' ' || b == 0x7f || TSPECIALS.contains(&b))
                .map_or(value.len(), |p| i + p);
            (end > i).then(|| (value[i..end].to_vec(), end))
        }
    }
}

fn same_id(found: &[u8], ours: &str) -> bool {
    let trim = |s: &[u8]| -> Vec<u8> { s.strip_suffix(b".").unwrap_or(s).to_vec() };
    let ours = trim(ours.trim().as_bytes());
    !ours.is_empty() && trim(found).eq_ignore_ascii_case(&ours)
}

/// Whether header field `name: value` is an `Authentication-Results` or
/// `ARC-Authentication-Results` field whose authserv-id is `authserv_id`.
///
/// The authserv-id is read per RFC 8601 2.2: after optional CFWS (comments included),
/// a token or a quoted string; for `ARC-Authentication-Results` after the instance
/// `i=N;` (RFC 8617 4.1.1). The comparison ignores ASCII case and a trailing dot. Any
/// other field name, or a value with no authserv-id, gives `false`. `name` may carry the
/// whitespace allowed before the colon.
///
/// ```
/// use samotop_auth::claims_authserv_id;
/// let id = "mx.example.org";
/// assert!(claims_authserv_id(b"Authentication-Results", b" mx.example.org; dkim=pass", id));
/// assert!(claims_authserv_id(b"authentication-results",
///     b" (forged) \"MX.Example.Org\" 1; spf=pass", id));
/// assert!(claims_authserv_id(b"ARC-Authentication-Results",
///     b" i=1; mx.example.org; arc=none", id));
/// assert!(!claims_authserv_id(b"Authentication-Results", b" mx.example.org.evil; none", id));
/// assert!(!claims_authserv_id(b"Received", b" mx.example.org", id));
/// ```
pub fn claims_authserv_id(name: &[u8], value: &[u8], authserv_id: &str) -> bool {
    let name = name.strip_suffix(b":").unwrap_or(name);
    let end = name.iter().rposition(|&b| !is_ws(b)).map_or(0, |e| e + 1);
    let name = &name[..end];
    let mut i = if name.eq_ignore_ascii_case(b"Authentication-Results") {
        0
    } else if name.eq_ignore_ascii_case(b"ARC-Authentication-Results") {
        // arc-info = instance [CFWS] ";" authres-payload; instance = "i" [CFWS] "="
        // [CFWS] 1*DIGIT. A field without it is read from the start.
        let mut j = skip_cfws(value, 0);
        let mut skipped = None;
        if value.get(j) == Some(&b'i') {
            j = skip_cfws(value, j + 1);
            if value.get(j) == Some(&b'=') {
                j = skip_cfws(value, j + 1);
                let digits = value[j..].iter().take_while(|b| b.is_ascii_digit()).count();
                j = skip_cfws(value, j + digits);
                if digits > 0 && value.get(j) == Some(&b';') {
                    skipped = Some(j + 1);
                }
            }
        }
        skipped.unwrap_or(0)
    } else {
        return false;
    };
    i = skip_cfws(value, i);
    match read_value(value, i) {
        Some((id, _)) => same_id(&id, authserv_id),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let id = "mx.example.org";
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"Authentication-Results", b" mx.example.org; none", true),
            (b"Authentication-Results", b"mx.example.org;dkim=pass", true),
            (
                b"Authentication-Results ",
                b" mx.example.org 1; spf=pass",
                true,
            ),
            (
                b"Authentication-Results",
                b"\r\n\tmx.example.org;\r\n\tspf=pass",
                true,
            ),
            (
                b"Authentication-Results",
                b" (a (nested) comment) mx.example.org; none",
                true,
            ),
            (
                b"Authentication-Results",
                b" (a \\) tricky one) mx.example.org; none",
                true,
            ),
            (
                b"Authentication-Results",
                b" \"mx.example.org\"; none",
                true,
            ),
            (
                b"Authentication-Results",
                b" \"mx.exa\\mple.org\"; none",
                true,
            ),
            (b"Authentication-Results", b" MX.EXAMPLE.ORG.; none", true),
            (
                b"Authentication-Results",
                b" mx.example.org(comment); none",
                true,
            ),
            (b"Authentication-Results", b" mx.example.org", true),
            (
                b"Authentication-Results",
                b" other.example.org; mx.example.org",
                false,
            ),
            (
                b"Authentication-Results",
                b" mx.example.org.evil; none",
                false,
            ),
            (b"Authentication-Results", b" mx.example.or; none", false),
            (b"Authentication-Results", b" \"mx.example.org; none", false),
            (
                b"Authentication-Results",
                b" (unterminated mx.example.org; none",
                false,
            ),
            (b"Authentication-Results", b"", false),
            (b"Authentication-Results", b";", false),
            (
                b"ARC-Authentication-Results",
                b" i=1; mx.example.org; none",
                true,
            ),
            (
                b"arc-authentication-results",
                b" i = 12 ;(c) mx.example.org; none",
                true,
            ),
            (
                b"ARC-Authentication-Results",
                b" i=1; other.example; none",
                false,
            ),
            (
                b"ARC-Authentication-Results",
                b" mx.example.org; none",
                true,
            ),
            (b"X-Authentication-Results", b" mx.example.org; none", false),
            (b"Authentication-Results-X", b" mx.example.org; none", false),
        ];
        for (name, value, expected) in cases {
            assert_eq!(
                claims_authserv_id(name, value, id),
                *expected,
                "{}: {}",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(value)
            );
        }
        assert!(!claims_authserv_id(
            b"Authentication-Results",
            b" ; none",
            ""
        ));
    }

    /// Found by the auth_fields fuzz target: an unterminated comment ending in a
    /// backslash after "i" made the reader slice past the end.
    #[test]
    fn regression_trailing_backslash_in_a_comment() {
        let value = [
            105, 61, 40, 0, 61, 40, 0, 0, 19, 33, 0, 32, 105, 61, 0, 32, 92,
        ];
        assert!(!claims_authserv_id(
            b"ARC-Authentication-Results",
            &value,
            "mx"
        ));
        assert!(!claims_authserv_id(
            b"ARC-Authentication-Results",
            b"i\\",
            "mx"
        ));
        assert!(!claims_authserv_id(b"Authentication-Results", b"(\\", "mx"));
    }
}
