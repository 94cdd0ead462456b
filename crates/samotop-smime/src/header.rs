//! The message's header section: where it ends, its fields, and the outer header of the
//! encrypted message (the fields that stay in clear, then the S/MIME part's own).
//!
//! The session hands a dispatch the message as one byte stream: its trace fields
//! (`Received:`, `Received-SPF:`, `Authentication-Results:`), then the client's header
//! section, an empty line and the body. [`HeadBuffer`] gathers that stream up to the empty
//! line, bounded; [`outer_header`] picks the fields to keep readable and writes the outer
//! header. Everything, those fields too, is also inside the encryption.
//!
//! ```
//! use samotop_smime::header::{HeadBuffer, Headers, outer_header};
//! let mut head = HeadBuffer::new(1024);
//! head.push(b"Received: from x\r\nSubject: hi\r\nX-Secret: 1\r\nContent-Type: text/plain\r\n");
//! assert!(head.head().is_none()); // no empty line yet
//! head.push(b"\r\nHello\r\n");
//! let mut out = Vec::new();
//! outer_header(head.head(), Headers::Listable, true, &mut out);
//! let out = String::from_utf8(out).unwrap();
//! assert!(out.starts_with("Received: from x\r\nSubject: hi\r\nMIME-Version: 1.0\r\n"));
//! assert!(!out.contains("X-Secret") && !out.contains("text/plain"));
//! assert!(out.ends_with("Content-Transfer-Encoding: base64\r\n\r\n"));
//! ```

/// How much of the header section [`HeadBuffer`] gathers, by default: 256 KiB. A longer
/// header section is encrypted whole like the rest, and nothing of it stays in clear.
pub const DEFAULT_HEAD_LIMIT: usize = 256 * 1024;

/// The fields that stay readable by default ([`Headers::Listable`]), so that a mailbox
/// can still be listed, searched by sender and subject, and threaded: the addresses, date,
/// subject and message ids, and the trace fields (RFC 5321 4.4, RFC 7208 9.1, RFC 8601).
/// `MIME-Version` is written anew.
pub const LISTABLE_FIELDS: &[&str] = &[
    "Return-Path",
    "Received",
    "Received-SPF",
    "Authentication-Results",
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Date",
    "Subject",
    "Message-ID",
    "In-Reply-To",
    "References",
];

/// The fields that stay readable with [`Headers::All`]; `Subject` is replaced by
/// [`HIDDEN_SUBJECT`].
pub const MINIMAL_FIELDS: &[&str] = &["From", "To", "Date"];

/// The outer `Subject` when the header fields are hidden ([`Headers::All`]).
pub const HIDDEN_SUBJECT: &str = "Encrypted message";

/// The S/MIME part's own fields, after the clear ones (RFC 8551 3.2 and 3.4).
pub const SMIME_FIELDS: &str = "MIME-Version: 1.0\r\n\
    Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n\
    Content-Disposition: attachment; filename=smime.p7m\r\n\
    Content-Transfer-Encoding: base64\r\n";

/// Which header fields stay readable in the stored message (`--encrypt-headers`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Headers {
    /// The default: [`LISTABLE_FIELDS`] stay in clear, beside their copy inside.
    #[default]
    Listable,
    /// Only [`MINIMAL_FIELDS`] and a fixed `Subject` ([`HIDDEN_SUBJECT`]) stay in clear
    /// (`--encrypt-headers all`): the metadata is hidden too.
    All,
}

impl std::str::FromStr for Headers {
    type Err = String;
    /// `default` or `listable`, `all`.
    fn from_str(s: &str) -> Result<Headers, String> {
        match s.to_ascii_lowercase().as_str() {
            "default" | "listable" => Ok(Headers::Listable),
            "all" => Ok(Headers::All),
            _ => Err(format!("{s:?}: expected default or all")),
        }
    }
}

/// Gathers the start of the message until the header section has ended (an empty line),
/// or until the limit, whichever comes first. Bytes go on being kept after that: the caller
/// takes them with [`take`](HeadBuffer::take) once [`is_decided`](HeadBuffer::is_decided).
///
/// Memory: at most the limit plus one chunk.
#[derive(Debug, Clone)]
pub struct HeadBuffer {
    buf: Vec<u8>,
    limit: usize,
    /// Every `\n` before this offset has been looked at.
    scanned: usize,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Partial,
    /// The header section is `buf[..len]` (each field with its line end; no empty line).
    Complete(usize),
    TooLong,
}

impl HeadBuffer {
    /// A buffer that gives up on the header section past `limit` bytes
    /// ([`DEFAULT_HEAD_LIMIT`] in the dispatch).
    pub fn new(limit: usize) -> HeadBuffer {
        HeadBuffer {
            buf: Vec::new(),
            limit,
            scanned: 0,
            state: State::Partial,
        }
    }

    /// Appends a chunk and looks for the end of the header section in it.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
        if self.state != State::Partial {
            return;
        }
        if let Some(len) = self.scan() {
            self.state = State::Complete(len);
        } else if self.buf.len() > self.limit {
            self.state = State::TooLong;
        }
    }

    /// The message ended (no more chunks): what is gathered is the whole header section if
    /// no empty line came (a message without a body) and it is within the limit.
    pub fn end(&mut self) {
        if self.state == State::Partial {
            self.state = if self.buf.len() <= self.limit {
                State::Complete(self.buf.len())
            } else {
                State::TooLong
            };
        }
    }

    /// True once the header section ended or turned out too long.
    pub fn is_decided(&self) -> bool {
        self.state != State::Partial
    }

    /// The header section, once complete (`None` while partial, or when too long).
    pub fn head(&self) -> Option<&[u8]> {
        match self.state {
            State::Complete(len) => Some(&self.buf[..len]),
            _ => None,
        }
    }

    /// Bytes gathered.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing was gathered.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Everything gathered; the buffer is empty afterwards, and stays decided with no
    /// header section ([`head`](HeadBuffer::head) is `None`).
    pub fn take(&mut self) -> Vec<u8> {
        self.state = State::TooLong;
        self.scanned = 0;
        std::mem::take(&mut self.buf)
    }

    /// The length of the header section if its empty line has arrived.
    fn scan(&mut self) -> Option<usize> {
        let buf = self.buf.as_slice();
        // An empty header section: the stream starts with the empty line.
        if self.scanned == 0 {
            match buf {
                [b'\n', ..] | [b'\r', b'\n', ..] => return Some(0),
                [] | [b'\r'] => return None,
                _ => {}
            }
        }
        let mut from = self.scanned;
        while let Some(i) = memchr(b'\n', &buf[from..]) {
            let p = from + i;
            match (buf.get(p + 1), buf.get(p + 2)) {
                (Some(b'\n'), _) | (Some(b'\r'), Some(b'\n')) => return Some(p + 1),
                (None, _) | (Some(b'\r'), None) => {
                    // Not enough to tell: look at this line end again next time.
                    self.scanned = p;
                    return None;
                }
                _ => from = p + 1,
            }
        }
        self.scanned = buf.len();
        None
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|b| *b == needle)
}

/// One header field: its name and its raw bytes (all its lines, with their line ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// The name, before the colon (`None` for a line that is not a field: no colon, or a
    /// name with bytes RFC 5322 3.6.8 does not allow).
    pub name: Option<&'a [u8]>,
    /// The whole field as it came.
    pub raw: &'a [u8],
}

impl Field<'_> {
    /// True when the name is `name`, ignoring ASCII case.
    pub fn is(&self, name: &str) -> bool {
        self.name
            .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// The fields of a header section, in order. A continuation line (starting with space or
/// tab) belongs to the field before it; continuation lines at the very start are a field
/// without a name.
pub fn fields(head: &[u8]) -> impl Iterator<Item = Field<'_>> {
    let mut rest = head;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = 0;
        loop {
            end += match memchr(b'\n', &rest[end..]) {
                Some(i) => i + 1,
                None => rest.len() - end,
            };
            if end >= rest.len() || !matches!(rest[end], b' ' | b'\t') {
                break;
            }
        }
        let raw = &rest[..end];
        rest = &rest[end..];
        Some(Field {
            name: field_name(raw),
            raw,
        })
    })
}

fn field_name(raw: &[u8]) -> Option<&[u8]> {
    // The name and its colon are on the field's first line.
    let first = &raw[..memchr(b'\n', raw).unwrap_or(raw.len())];
    let colon = memchr(b':', first)?;
    let name = &raw[..colon];
    // Some senders put spaces before the colon (obsolete syntax, RFC 5322 4.5.8).
    let name = name.trim_ascii_end();
    let ok = !name.is_empty() && name.iter().all(|b| (33..=126).contains(b) && *b != b':');
    ok.then_some(name)
}

/// Writes the outer header of the encrypted message into `out`: the fields of `head` that
/// `policy` keeps readable, in their order, then [`SMIME_FIELDS`] and the empty line.
///
/// `head` is `None` when the header section was too long (nothing is kept then, and the
/// `Subject` is [`HIDDEN_SUBJECT`]). Every kept field has its lines ended in CR LF and a
/// bare CR made a space, so that nothing a sender wrote can end the header early. With
/// `eight_bit` false (the backend cannot carry UTF-8 header fields), a field with a byte
/// above 127 stays only inside.
pub fn outer_header(head: Option<&[u8]>, policy: Headers, eight_bit: bool, out: &mut Vec<u8>) {
    let keep: &[&str] = match (head, policy) {
        (None, _) => &[],
        (Some(_), Headers::Listable) => LISTABLE_FIELDS,
        (Some(_), Headers::All) => MINIMAL_FIELDS,
    };
    for field in fields(head.unwrap_or_default()) {
        if !keep.iter().any(|name| field.is(name)) {
            continue;
        }
        if !eight_bit && !field.raw.is_ascii() {
            continue;
        }
        push_normalized(field.raw, out);
    }
    if policy == Headers::All || head.is_none() {
        out.extend_from_slice(b"Subject: ");
        out.extend_from_slice(HIDDEN_SUBJECT.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(SMIME_FIELDS.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends a field with every line ended in CR LF, bare CRs made spaces, and no empty line.
fn push_normalized(raw: &[u8], out: &mut Vec<u8>) {
    for (i, line) in raw.split_inclusive(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if i > 0 && line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
            // A whitespace-only continuation line would read as the end of the header to a
            // lenient reader; it carries nothing.
            continue;
        }
        let start = out.len();
        out.extend_from_slice(line);
        for b in &mut out[start..] {
            if *b == b'\r' {
                *b = b' ';
            }
        }
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(input: &[u8]) -> Option<usize> {
        let mut h = HeadBuffer::new(1 << 20);
        h.push(input);
        h.head().map(<[u8]>::len)
    }

    #[test]
    fn the_header_ends_at_the_first_empty_line() {
        let cases: [(&[u8], Option<usize>); 10] = [
            (b"", None),
            (b"\r\n", Some(0)),
            (b"\n", Some(0)),
            (b"A: b\r\n", None),
            (b"A: b\r\n\r", None),
            (b"A: b\r\n\r\nbody", Some(6)),
            (b"A: b\n\nbody", Some(5)),
            (b"A: b\r\n c\r\n\r\n", Some(10)),
            (b"A: b\r\n \r\n\r\n", Some(9)),
            (b"A: b\r\nB: \r\r\n\r\n", Some(12)),
        ];
        for (input, want) in cases {
            assert_eq!(complete(input), want, "{input:?}");
            // Byte by byte, the same.
            let mut h = HeadBuffer::new(1 << 20);
            for b in input {
                h.push(std::slice::from_ref(b));
            }
            assert_eq!(h.head().map(<[u8]>::len), want, "{input:?} byte by byte");
        }
    }

    #[test]
    fn too_long_is_decided_and_keeps_the_bytes() {
        let mut h = HeadBuffer::new(10);
        h.push(b"Subject: 0123456789");
        assert!(h.is_decided() && h.head().is_none());
        h.push(b"\r\n\r\n");
        assert!(h.head().is_none());
        assert_eq!(h.take(), b"Subject: 0123456789\r\n\r\n");
    }

    #[test]
    fn after_take_there_is_no_head() {
        let mut h = HeadBuffer::new(100);
        h.push(b"A: b\r\n\r\nbody");
        assert!(h.head().is_some());
        assert_eq!(h.take().len(), 12);
        assert!(h.is_decided() && h.head().is_none() && h.is_empty());
        h.push(b"more");
        assert!(h.head().is_none());
    }

    #[test]
    fn a_message_without_a_body_is_all_header() {
        let mut h = HeadBuffer::new(100);
        h.push(b"Subject: x\r\n");
        h.end();
        assert_eq!(h.head(), Some(&b"Subject: x\r\n"[..]));
    }

    #[test]
    fn fields_keep_their_continuation_lines() {
        let head = b" stray\r\nSubject: a\r\n b\r\nNo colon here\r\nX : y\n\tz\nBad Name: v\r\nFrom\n :x\n";
        let got: Vec<_> = fields(head)
            .map(|f| {
                (
                    f.name.map(|n| String::from_utf8_lossy(n).into_owned()),
                    f.raw,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (None, &b" stray\r\n"[..]),
                (Some("Subject".into()), &b"Subject: a\r\n b\r\n"[..]),
                (None, &b"No colon here\r\n"[..]),
                (Some("X".into()), &b"X : y\n\tz\n"[..]),
                (None, &b"Bad Name: v\r\n"[..]),
                (None, &b"From\n :x\n"[..]), // fuzz: the colon must be on the first line
            ]
        );
    }

    #[test]
    fn listable_keeps_the_listing_fields_in_order() {
        let head = b"Received: from a\r\n\tby b\r\nFrom: A <a@x>\r\nX-Mailer: m\r\n\
            content-type: text/plain\r\nsubject: S\nMIME-Version: 1.0\r\nDKIM-Signature: v=1\r\n";
        let mut out = Vec::new();
        outer_header(Some(head), Headers::Listable, true, &mut out);
        let want = [
            "Received: from a\r\n\tby b\r\nFrom: A <a@x>\r\nsubject: S\r\n",
            SMIME_FIELDS,
            "\r\n",
        ]
        .concat();
        assert_eq!(String::from_utf8_lossy(&out), want);
    }

    #[test]
    fn all_hides_everything_but_from_to_date() {
        let head = b"Received: r\r\nFrom: a\r\nTo: b\r\nCc: c\r\nDate: d\r\nSubject: secret\r\n";
        let mut out = Vec::new();
        outer_header(Some(head), Headers::All, true, &mut out);
        let want = [
            "From: a\r\nTo: b\r\nDate: d\r\nSubject: Encrypted message\r\n",
            SMIME_FIELDS,
            "\r\n",
        ]
        .concat();
        assert_eq!(String::from_utf8_lossy(&out), want);
    }

    #[test]
    fn nothing_a_sender_wrote_ends_the_outer_header() {
        let head = b"Subject: a\rb\r\n \r\n\t\r\nFrom: x\r\r\n";
        let mut out = Vec::new();
        outer_header(Some(head), Headers::Listable, true, &mut out);
        assert!(
            out.starts_with(b"Subject: a b\r\nFrom: x \r\nMIME-Version"),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
    }

    #[test]
    fn eight_bit_fields_stay_inside_when_the_backend_cannot_carry_them() {
        let head = "Subject: caf\u{e9}\r\nFrom: a\r\n".as_bytes();
        let mut out = Vec::new();
        outer_header(Some(head), Headers::Listable, false, &mut out);
        assert!(out.starts_with(b"From: a\r\nMIME-Version"));
    }

    #[test]
    fn too_long_keeps_nothing() {
        let mut out = Vec::new();
        outer_header(None, Headers::Listable, true, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            ["Subject: Encrypted message\r\n", SMIME_FIELDS, "\r\n"].concat()
        );
    }
}
