//! Reply lines and multi-line replies, for the client side (RFC 5321 4.2, RFC 2034).

use crate::error::ParseError;
use crate::grammar::smtp;

/// One line of a reply, borrowed from the input: `250-PIPELINING`, `250 2.1.0 Ok`, `220 host`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyLine<'a> {
    /// The reply code, 200 to 599.
    pub code: u16,
    /// True for the last line of a reply (`250 ...` or a bare `250`), false for `250-...`.
    pub last: bool,
    /// The enhanced status code (RFC 3463) that starts the text, when there is one whose class
    /// equals the code's first digit.
    pub enhanced: Option<[u16; 3]>,
    /// The text after the code and the enhanced code; may be empty.
    pub text: &'a str,
}

/// Parses one reply line, given without its line ending.
///
/// The form is `Reply-code [ ( SP / "-" ) text ]` (RFC 5321 4.2). The text may hold tabs,
/// printable ASCII and UTF-8 (RFC 6531 3.7.4), no other control characters. When the text starts
/// with `class.subject.detail` followed by a space or the end, and `class` is the code's first
/// digit, that is taken as the enhanced status code (RFC 2034 4) and removed from the text.
///
/// ```
/// use samotop_parser::parse_reply_line;
///
/// let line = parse_reply_line(b"250 2.1.0 Ok")?;
/// assert_eq!((line.code, line.last, line.enhanced, line.text), (250, true, Some([2, 1, 0]), "Ok"));
/// let line = parse_reply_line(b"250-PIPELINING")?;
/// assert_eq!((line.code, line.last, line.enhanced, line.text), (250, false, None, "PIPELINING"));
/// # Ok::<(), samotop_parser::ParseError>(())
/// ```
///
/// # Errors
///
/// [`ParseError::InvalidUtf8`] when the line is not UTF-8, [`ParseError::BadReply`] when it does
/// not have the form above.
pub fn parse_reply_line(line: &[u8]) -> Result<ReplyLine<'_>, ParseError> {
    let line = std::str::from_utf8(line).map_err(|_| ParseError::InvalidUtf8)?;
    let (code, last, text) = smtp::reply_line(line).map_err(|_| ParseError::BadReply)?;
    let (enhanced, text) = split_enhanced(code, text);
    Ok(ReplyLine {
        code,
        last,
        enhanced,
        text,
    })
}

/// Takes an enhanced status code off the start of `text` when its class matches `code`.
fn split_enhanced(code: u16, text: &str) -> (Option<[u16; 3]>, &str) {
    match smtp::enhanced_code(text) {
        Ok((enhanced, rest)) if enhanced[0] == code / 100 => (Some(enhanced), rest),
        _ => (None, text),
    }
}

/// A complete reply, possibly of several lines (RFC 5321 4.2.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    /// The reply code, shared by every line.
    pub code: u16,
    /// The enhanced status code of the first line that has one (RFC 2034).
    pub enhanced: Option<[u16; 3]>,
    /// The text of each line, without code or enhanced code. An EHLO reply has the greeting
    /// first, then one extension per line.
    pub lines: Vec<String>,
}

/// Parses one reply from the start of `input`, which may hold only part of it.
///
/// Returns `Ok(None)` when more bytes are needed, or the reply and the number of bytes it took.
/// Lines end in CR LF; a bare LF is accepted too. Every line of the reply must carry the same
/// code. An incomplete line is checked as far as it goes, so that a peer that is not speaking
/// SMTP is noticed early.
///
/// ```
/// use samotop_parser::parse_reply;
///
/// let input = b"250-mx.example.org\r\n250-PIPELINING\r\n250 SIZE 1000\r\n220";
/// let (reply, used) = parse_reply(input)?.expect("a complete reply");
/// assert_eq!(reply.code, 250);
/// assert_eq!(reply.lines, ["mx.example.org", "PIPELINING", "SIZE 1000"]);
/// assert_eq!(&input[used..], b"220");
/// assert_eq!(parse_reply(&input[..30])?, None);
/// # Ok::<(), samotop_parser::ParseError>(())
/// ```
///
/// # Errors
///
/// [`ParseError::BadReply`] when a line is malformed or its code differs from the first line's,
/// [`ParseError::InvalidUtf8`] when a line is not UTF-8.
pub fn parse_reply(input: &[u8]) -> Result<Option<(Reply, usize)>, ParseError> {
    let mut reply = Reply::default();
    let mut start = 0;
    while let Some(len) = input[start..].iter().position(|&b| b == b'\n') {
        let raw = &input[start..start + len];
        let line = parse_reply_line(raw.strip_suffix(b"\r").unwrap_or(raw))?;
        if start == 0 {
            reply.code = line.code;
        } else if line.code != reply.code {
            return Err(ParseError::BadReply);
        }
        start += len + 1;
        reply.enhanced = reply.enhanced.or(line.enhanced);
        reply.lines.push(line.text.to_string());
        if line.last {
            return Ok(Some((reply, start)));
        }
    }
    check_partial(&input[start..], (start > 0).then_some(reply.code))?;
    Ok(None)
}

/// Checks the start of an unfinished line: its code digits so far, and that they agree with
/// `code` from the earlier lines.
fn check_partial(partial: &[u8], code: Option<u16>) -> Result<(), ParseError> {
    let head = &partial[..partial.len().min(3)];
    let digits_ok = head.iter().enumerate().all(|(i, b)| match i {
        0 => (b'2'..=b'5').contains(b),
        _ => b.is_ascii_digit(),
    });
    if !digits_ok {
        return Err(ParseError::BadReply);
    }
    if let (Some(code), [a, b, c]) = (code, head) {
        let partial_code = [a, b, c]
            .iter()
            .fold(0u16, |n, &&d| n * 10 + u16::from(d - b'0'));
        if partial_code != code {
            return Err(ParseError::BadReply);
        }
    }
    match partial.get(3) {
        None | Some(b' ' | b'-') => Ok(()),
        Some(_) => Err(ParseError::BadReply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Code, last, enhanced code, text.
    type Fields<'a> = (u16, bool, Option<[u16; 3]>, &'a str);

    fn line(input: &str) -> Result<Fields<'_>, ParseError> {
        parse_reply_line(input.as_bytes()).map(|l| (l.code, l.last, l.enhanced, l.text))
    }

    #[test]
    fn reply_lines() {
        let cases: &[(&str, Result<Fields<'_>, ParseError>)] = &[
            ("250-PIPELINING", Ok((250, false, None, "PIPELINING"))),
            ("250 2.1.0 Ok", Ok((250, true, Some([2, 1, 0]), "Ok"))),
            ("220 host ESMTP", Ok((220, true, None, "host ESMTP"))),
            ("250", Ok((250, true, None, ""))),
            ("250 ", Ok((250, true, None, ""))),
            ("250-", Ok((250, false, None, ""))),
            (
                "550 5.1.1 No such user",
                Ok((550, true, Some([5, 1, 1]), "No such user")),
            ),
            (
                "451-4.3.0 Try later",
                Ok((451, false, Some([4, 3, 0]), "Try later")),
            ),
            ("554 5.7.1", Ok((554, true, Some([5, 7, 1]), ""))),
            // Class differs from the code: plain text.
            ("250 5.1.1 odd", Ok((250, true, None, "5.1.1 odd"))),
            ("250 2.1.0Ok", Ok((250, true, None, "2.1.0Ok"))),
            ("250 2.1.0000 x", Ok((250, true, None, "2.1.0000 x"))),
            (
                "250 2.0.0  two spaces",
                Ok((250, true, Some([2, 0, 0]), " two spaces")),
            ),
            ("250 tab\there", Ok((250, true, None, "tab\there"))),
            ("250 ünïcödé", Ok((250, true, None, "ünïcödé"))),
            ("199 x", Err(ParseError::BadReply)),
            ("600 x", Err(ParseError::BadReply)),
            ("099 x", Err(ParseError::BadReply)),
            ("25", Err(ParseError::BadReply)),
            ("", Err(ParseError::BadReply)),
            ("2500", Err(ParseError::BadReply)),
            ("250x", Err(ParseError::BadReply)),
            ("250 a\rb", Err(ParseError::BadReply)),
            ("250 a\0b", Err(ParseError::BadReply)),
            ("abc def", Err(ParseError::BadReply)),
        ];
        for (input, expected) in cases {
            assert_eq!(&line(input), expected, "{input:?}");
        }
        assert_eq!(
            parse_reply_line(b"250 \xff").unwrap_err(),
            ParseError::InvalidUtf8
        );
    }

    #[test]
    fn partial_checks() {
        assert_eq!(parse_reply(b""), Ok(None));
        assert_eq!(parse_reply(b"2"), Ok(None));
        assert_eq!(parse_reply(b"25"), Ok(None));
        assert_eq!(parse_reply(b"250"), Ok(None));
        assert_eq!(parse_reply(b"250-"), Ok(None));
        assert_eq!(parse_reply(b"250-a\r\n2"), Ok(None));
        assert_eq!(parse_reply(b"250-a\r\n25"), Ok(None));
        assert_eq!(parse_reply(b"x"), Err(ParseError::BadReply));
        assert_eq!(parse_reply(b"1"), Err(ParseError::BadReply));
        assert_eq!(parse_reply(b"2x"), Err(ParseError::BadReply));
        assert_eq!(parse_reply(b"2500"), Err(ParseError::BadReply));
        assert_eq!(parse_reply(b"250-a\r\n251"), Err(ParseError::BadReply));
    }
}
