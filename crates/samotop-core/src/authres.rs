//! Does an incoming `Authentication-Results` (or `ARC-Authentication-Results`) claim to be
//! ours? RFC 8601 5: a receiver removes or renames such fields before it adds its own, or
//! anyone could forge our verdicts. The session renames them (`X-Forged-...`) on their way
//! through; `samotop-auth` re-exports this predicate, so both read a field the same way.

/// RFC 2045 tspecials: they end a token.
const TSPECIALS: &[u8] = b"()<>@,;:\\\"/[]?=";

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// What the authserv-id reader found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Id<'a> {
    /// A token, complete.
    Token(&'a [u8]),
    /// A quoted string, complete (its content still escaped).
    Quoted(&'a [u8]),
    /// No authserv-id: the value ends (or holds only CFWS and `;`) before one.
    Missing,
    /// It cannot be read within the bytes given: a comment or quoted string that does not
    /// end, or (in a value cut short) a token or CFWS that runs to the end.
    Hidden,
}

/// Skips CFWS (RFC 5322 3.2.2): white space, folding, and nested comments with quoted
/// pairs. `None` when a comment does not end within `value`.
fn skip_cfws(value: &[u8], mut i: usize) -> Option<usize> {
    while i < value.len() {
        match value[i] {
            b if is_ws(b) => i += 1,
            b'(' => {
                let mut depth = 0usize;
                loop {
                    match value.get(i)? {
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
    Some(i.min(value.len()))
}

/// Reads the authserv-id (a token or a quoted string) at `i`. `complete` says whether
/// `value` is the whole field value or only its start.
fn read_id(value: &[u8], i: usize, complete: bool) -> Id<'_> {
    let Some(i) = skip_cfws(value, i) else {
        return Id::Hidden;
    };
    match value.get(i) {
        None if complete => Id::Missing,
        None => Id::Hidden,
        Some(b'"') => {
            let mut j = i + 1;
            while j < value.len() {
                match value[j] {
                    b'"' => return Id::Quoted(&value[i + 1..j]),
                    b'\\' => j += 2,
                    _ => j += 1,
                }
            }
            Id::Hidden
        }
        Some(_) => {
            let end = value[i..]
                .iter()
                .position(|&b| b <= b' ' || b == 0x7f || TSPECIALS.contains(&b))
                .map(|p| i + p);
            match end {
                Some(end) if end == i => Id::Missing,
                Some(end) => Id::Token(&value[i..end]),
                None if complete => Id::Token(&value[i..]),
                None => Id::Hidden,
            }
        }
    }
}

/// Unescapes a quoted string's content (quoted pairs; folding removed).
fn unquote(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len());
    let mut j = 0;
    while j < content.len() {
        match content[j] {
            b'\\' => {
                if let Some(&b) = content.get(j + 1) {
                    out.push(b);
                }
                j += 2;
            }
            b'\r' | b'\n' => j += 1,
            b => {
                out.push(b);
                j += 1;
            }
        }
    }
    out
}

fn same_id(found: &[u8], ours: &str) -> bool {
    let trim = |s: &[u8]| -> Vec<u8> { s.strip_suffix(b".").unwrap_or(s).to_vec() };
    let ours = trim(ours.trim().as_bytes());
    !ours.is_empty() && trim(found).eq_ignore_ascii_case(&ours)
}

/// Where the authserv-id starts: after the instance `i=N;` of an
/// `ARC-Authentication-Results` (RFC 8617 4.1.1), at the start of an
/// `Authentication-Results`; `None` for any other field name.
fn id_start(name: &[u8], value: &[u8]) -> Option<usize> {
    let name = name.strip_suffix(b":").unwrap_or(name);
    let end = name.iter().rposition(|&b| !is_ws(b)).map_or(0, |e| e + 1);
    let name = &name[..end];
    if name.eq_ignore_ascii_case(b"Authentication-Results") {
        return Some(0);
    }
    if !name.eq_ignore_ascii_case(b"ARC-Authentication-Results") {
        return None;
    }
    // arc-info = instance [CFWS] ";" authres-payload; instance = "i" [CFWS] "=" [CFWS]
    // 1*DIGIT. A field without it is read from the start.
    let instance = || -> Option<usize> {
        let mut j = skip_cfws(value, 0)?;
        if value.get(j) != Some(&b'i') {
            return None;
        }
        j = skip_cfws(value, j + 1)?;
        if value.get(j) != Some(&b'=') {
            return None;
        }
        j = skip_cfws(value, j + 1)?;
        let digits = value[j..].iter().take_while(|b| b.is_ascii_digit()).count();
        j = skip_cfws(value, j + digits)?;
        (digits > 0 && value.get(j) == Some(&b';')).then_some(j + 1)
    };
    Some(instance().unwrap_or(0))
}

/// Whether header field `name: value` is an `Authentication-Results` or
/// `ARC-Authentication-Results` field that claims the authserv-id `authserv_id`, or hides
/// its authserv-id so that it cannot be read (such a field is not trusted either).
///
/// The authserv-id is read per RFC 8601 2.2: after optional CFWS (comments included), a
/// token or a quoted string; for `ARC-Authentication-Results` after the instance `i=N;`
/// (RFC 8617 4.1.1). The comparison ignores ASCII case and a trailing dot. A comment or
/// quoted string that does not end hides the id: `true`. Any other field name, or a value
/// with no authserv-id at all, gives `false`. `name` may carry the white space allowed
/// before the colon, and the colon.
///
/// ```
/// use samotop_core::claims_authserv_id;
/// let id = "mx.example.org";
/// assert!(claims_authserv_id(b"Authentication-Results", b" mx.example.org; dkim=pass", id));
/// assert!(claims_authserv_id(b"authentication-results",
///     b" (forged) \"MX.Example.Org\" 1; spf=pass", id));
/// assert!(claims_authserv_id(b"ARC-Authentication-Results",
///     b" i=1; mx.example.org; arc=none", id));
/// assert!(claims_authserv_id(b"Authentication-Results", b" (no end mx.example.org; x", id));
/// assert!(!claims_authserv_id(b"Authentication-Results", b" mx.example.org.evil; none", id));
/// assert!(!claims_authserv_id(b"Received", b" mx.example.org", id));
/// ```
pub fn claims_authserv_id(name: &[u8], value: &[u8], authserv_id: &str) -> bool {
    claims(name, value, authserv_id, true)
}

/// [`claims_authserv_id`] for a value that may be cut short (`complete` false): an id that
/// does not end within the bytes given, or that has not started yet, is hidden (`true`).
pub(crate) fn claims(name: &[u8], value: &[u8], authserv_id: &str, complete: bool) -> bool {
    let Some(start) = id_start(name, value) else {
        return false;
    };
    match read_id(value, start, complete) {
        Id::Token(id) => same_id(id, authserv_id),
        Id::Quoted(content) => same_id(&unquote(content), authserv_id),
        Id::Missing => false,
        Id::Hidden => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one table both the session's renaming and samotop-auth's predicate answer to.
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
            (b"Authentication-Results:", b" mx.example.org; none", true),
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
            (
                b"Authentication-Results",
                b" \"mx.example\r\n .org\"; x",
                false,
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
                b" evil (mx.example.org); none",
                false,
            ),
            (
                b"Authentication-Results",
                b" mx.example.org.evil; none",
                false,
            ),
            (b"Authentication-Results", b" mx.example.or; none", false),
            // Hidden: a quoted string or a comment that does not end.
            (b"Authentication-Results", b" \"mx.example.org; none", true),
            (
                b"Authentication-Results",
                b" (unterminated mx.example.org; none",
                true,
            ),
            (b"Authentication-Results", b" (\\", true),
            // No authserv-id at all: claims nobody.
            (b"Authentication-Results", b"", false),
            (b"Authentication-Results", b";", false),
            (b"Authentication-Results", b" ; none", false),
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
            (b"ARC-Authentication-Results", b"i\\", false),
            (b"X-Authentication-Results", b" mx.example.org; none", false),
            (b"Authentication-Results-X", b" mx.example.org; none", false),
            (b"Received", b" mx.example.org", false),
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

    /// A value cut short (the session decides on the first 4 KiB of a huge field): what
    /// has not ended, or not begun, hides the id.
    #[test]
    fn cut_values_hide_their_id() {
        let name = b"Authentication-Results";
        for (value, expected) in [
            (&b" mx.exa"[..], true),
            (b"      ", true),
            (b" (comment)\r\n (more)\r\n", true),
            (b" other.example; x", false),
            (b" mx.example.org; x", true),
        ] {
            assert_eq!(
                claims(name, value, "mx.example.org", false),
                expected,
                "{}",
                String::from_utf8_lossy(value)
            );
        }
    }

    /// Found by samotop-auth's auth_fields fuzz target: an unterminated comment ending in a
    /// backslash after "i" made the reader slice past the end.
    #[test]
    fn regression_trailing_backslash_in_a_comment() {
        let value = [
            105, 61, 40, 0, 61, 40, 0, 0, 19, 33, 0, 32, 105, 61, 0, 32, 92,
        ];
        for complete in [true, false] {
            let _ = claims(b"ARC-Authentication-Results", &value, "mx", complete);
            let _ = claims(b"ARC-Authentication-Results", b"i\\", "mx", complete);
            let _ = claims(b"Authentication-Results", b"(\\", "mx", complete);
            let _ = claims(b"Authentication-Results", b"\"\\", "mx", complete);
        }
    }
}
