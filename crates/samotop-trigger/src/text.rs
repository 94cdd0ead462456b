//! Small text helpers: what a peer or an endpoint controls is made safe here before it
//! becomes a reply line, an HTTP header, an environment value or a JSON string.

/// The longest reply text taken from an endpoint.
pub const MAX_REPLY_TEXT: usize = 200;

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// A reply text from an endpoint, fit for an SMTP reply line: printable ASCII only
/// (anything else becomes a space, runs of spaces one), trimmed, at most
/// [`MAX_REPLY_TEXT`] characters; `None` when nothing is left.
///
/// ```
/// use samotop_trigger::text::reply_text;
/// assert_eq!(reply_text(b"  no\r\n250 ok\x00 \xff"), Some("no 250 ok".into()));
/// assert_eq!(reply_text(b"\r\n"), None);
/// ```
pub fn reply_text(raw: &[u8]) -> Option<String> {
    let mut out = String::new();
    for &b in raw {
        if out.len() >= MAX_REPLY_TEXT {
            break;
        }
        let c = if (0x21..=0x7e).contains(&b) {
            b as char
        } else {
            ' '
        };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    let out = out.trim_end().to_string();
    (!out.is_empty()).then_some(out)
}

/// A value for an HTTP header or an environment variable: control characters (CR, LF,
/// NUL, ...) become `_`, and at most `max` bytes are kept (cut at a character boundary).
///
/// ```
/// use samotop_trigger::text::field_value;
/// assert_eq!(field_value("a\r\nb\0c", 100), "a__b_c");
/// assert_eq!(field_value("ééé", 3), "é");
/// ```
pub fn field_value(value: &str, max: usize) -> String {
    let mut out = String::with_capacity(value.len().min(max));
    for c in value.chars() {
        let c = if c.is_control() { '_' } else { c };
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// [`field_value`] bounded to 1000 bytes, for HTTP headers.
pub(crate) fn header_safe(value: &str) -> String {
    field_value(value, 1000)
}

/// Appends `s` as a JSON string (with quotes) to `out`.
pub(crate) fn json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    json_escape(out, s);
    out.push(b'"');
}

/// Appends `s` JSON-escaped (without quotes) to `out`.
pub(crate) fn json_escape(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_what_it_must() {
        let mut out = Vec::new();
        json_string(&mut out, "a\"b\\c\nd\u{1}\u{7f}é</script>");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "\"a\\\"b\\\\c\\nd\\u0001\\u007fé</script>\""
        );
    }

    #[test]
    fn reply_text_is_bounded() {
        let long = "x".repeat(10_000);
        assert_eq!(
            reply_text(long.as_bytes()).map(|s| s.len()),
            Some(MAX_REPLY_TEXT)
        );
    }
}
