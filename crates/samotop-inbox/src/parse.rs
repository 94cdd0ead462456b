//! Parsing for display and search: lazy (after the commit, never on the path that decides the
//! SMTP reply) and bounded. A message that does not parse is still stored and shown raw.

use mail_parser::{MessageParser, MimeHeaders, PartType};

use crate::model::{Address, Attachment};

/// Messages up to this size are parsed whole; a bigger one only for its header section.
pub const DEFAULT_PARSE_LIMIT: usize = 16 * 1024 * 1024;
/// The header section looked at in a message too big to parse whole.
const HEADER_LIMIT: usize = 256 * 1024;
/// Text kept for the full-text index, per message.
const INDEX_TEXT_LIMIT: usize = 256 * 1024;
/// Header text kept for the full-text index, per message.
const INDEX_HEADER_LIMIT: usize = 64 * 1024;
/// Characters in a snippet.
const SNIPPET_CHARS: usize = 250;

/// The fields a list shows and the search indexes, from one parse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    /// Whether the message parsed (whole, or for its header section when too big).
    pub parsed: bool,
    /// `Subject:`.
    pub subject: String,
    /// `From:`.
    pub from: Address,
    /// `To:`.
    pub to: Vec<Address>,
    /// `Cc:`.
    pub cc: Vec<Address>,
    /// `Bcc:` as sent.
    pub bcc: Vec<Address>,
    /// `Reply-To:`.
    pub reply_to: Vec<Address>,
    /// `Date:` as Unix milliseconds.
    pub date: Option<i64>,
    /// `Message-ID:` without brackets.
    pub message_id: String,
    /// The first words of the text.
    pub snippet: String,
    /// Attachments (not inline parts).
    pub attachments: Vec<Attachment>,
    /// Inline parts (with a Content-ID, not marked as attachment).
    pub inline: Vec<Attachment>,
    /// Every header field's value, for the index.
    pub header_text: String,
    /// The text parts (HTML as text), for the index.
    pub body_text: String,
}

impl Fields {
    /// Parses a raw message (as received, our trace fields first) for the list and the
    /// index: whole when it is at most `limit` bytes, else its header section only (at most
    /// 256 KiB of it). Never fails: a message that does not parse gives
    /// [`parsed`](Fields::parsed) false. Text kept for the index is bounded (64 KiB of
    /// header text, 256 KiB of body text), and so are the address lists and attachments
    /// (1000 each).
    ///
    /// ```
    /// use samotop_inbox::{DEFAULT_PARSE_LIMIT, Fields};
    /// let f = Fields::parse(b"Subject: hi\r\nFrom: Al <al@x.org>\r\n\r\nHello\r\n", DEFAULT_PARSE_LIMIT);
    /// assert!(f.parsed);
    /// assert_eq!((f.subject.as_str(), f.from.address.as_str(), f.snippet.as_str()), ("hi", "al@x.org", "Hello"));
    /// ```
    pub fn parse(raw: &[u8], limit: usize) -> Fields {
        fields(raw, limit)
    }

    /// Addresses as the index sees them: `Name address, Name address`.
    pub fn addresses(list: &[Address]) -> String {
        let mut out = String::new();
        for a in list {
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(&a.name);
            out.push(' ');
            out.push_str(&a.address);
        }
        out
    }
}

/// Parses `raw` for the list and the index, within `limit` bytes.
pub fn fields(raw: &[u8], limit: usize) -> Fields {
    let whole = raw.len() <= limit;
    let slice = if whole { raw } else { header_section(raw) };
    let Some(message) = MessageParser::default().parse(slice) else {
        return Fields::default();
    };
    let mut f = Fields {
        parsed: true,
        subject: message.subject().unwrap_or("").to_string(),
        from: message
            .from()
            .and_then(|a| a.first())
            .map(address)
            .unwrap_or_default(),
        to: addresses(message.to()),
        cc: addresses(message.cc()),
        bcc: addresses(message.bcc()),
        reply_to: addresses(message.reply_to()),
        date: message
            .date()
            .map(|d| d.to_timestamp().saturating_mul(1000)),
        message_id: message.message_id().unwrap_or("").to_string(),
        ..Fields::default()
    };
    for (name, value) in message.headers_raw() {
        if f.header_text.len() >= INDEX_HEADER_LIMIT {
            break;
        }
        f.header_text.push_str(name);
        f.header_text.push_str(": ");
        push_bounded(&mut f.header_text, &unfold(value), INDEX_HEADER_LIMIT);
        f.header_text.push('\n');
    }
    // Decoded values too (RFC 2047 words), so that a search finds `Grüße` in an encoded subject.
    f.header_text.push_str(&f.subject.clone());
    if whole {
        for i in 0..message.text_body_count().max(message.html_body_count()) {
            if f.body_text.len() >= INDEX_TEXT_LIMIT {
                break;
            }
            if let Some(text) = message.body_text(i) {
                push_bounded(&mut f.body_text, &text, INDEX_TEXT_LIMIT);
                f.body_text.push('\n');
            }
        }
        f.snippet = snippet(&f.body_text);
        let (attachments, inline) = attachments(&message);
        f.attachments = attachments;
        f.inline = inline;
    }
    f
}

/// The header section of a big message, with the blank line that ends it.
fn header_section(raw: &[u8]) -> &[u8] {
    let head = &raw[..raw.len().min(HEADER_LIMIT)];
    match head.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &raw[..i + 4],
        None => head,
    }
}

fn push_bounded(out: &mut String, text: &str, limit: usize) {
    let room = limit.saturating_sub(out.len());
    if text.len() <= room {
        out.push_str(text);
        return;
    }
    let mut end = room;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    out.push_str(&text[..end]);
}

/// Folded header lines as one line.
pub(crate) fn unfold(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut space = false;
    for c in value.chars() {
        if c == '\r' || c == '\n' || c == '\t' || c == ' ' {
            space = true;
        } else {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.push(c);
        }
    }
    out
}

fn snippet(text: &str) -> String {
    let mut out = String::new();
    let mut count = 0;
    for word in text.split_whitespace() {
        if count > 0 {
            out.push(' ');
            count += 1;
        }
        for c in word.chars() {
            if count >= SNIPPET_CHARS {
                return out;
            }
            out.push(c);
            count += 1;
        }
        if count >= SNIPPET_CHARS {
            break;
        }
    }
    out
}

fn address(a: &mail_parser::Addr<'_>) -> Address {
    Address {
        name: a.name().unwrap_or("").to_string(),
        address: a.address().unwrap_or("").to_string(),
    }
}

fn addresses(field: Option<&mail_parser::Address<'_>>) -> Vec<Address> {
    field
        .map(|a| a.iter().take(1000).map(address).collect())
        .unwrap_or_default()
}

fn content_type(part: &mail_parser::MessagePart<'_>) -> String {
    match part.content_type() {
        Some(ct) => match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub).to_lowercase(),
            None => ct.ctype().to_lowercase(),
        },
        None => "application/octet-stream".into(),
    }
}

fn attachments(message: &mail_parser::Message<'_>) -> (Vec<Attachment>, Vec<Attachment>) {
    let mut attachments = Vec::new();
    let mut inline = Vec::new();
    for &id in message.attachments.iter().take(1000) {
        let Some(part) = message.parts.get(id as usize) else {
            continue;
        };
        let info = Attachment {
            part_id: id.to_string(),
            file_name: part.attachment_name().unwrap_or("").to_string(),
            content_type: content_type(part),
            content_id: part
                .content_id()
                .unwrap_or("")
                .trim_matches(['<', '>'])
                .to_string(),
            size: part.len() as u64,
        };
        let is_attachment = part
            .content_disposition()
            .is_some_and(|cd| cd.is_attachment());
        if !info.content_id.is_empty() && !is_attachment {
            inline.push(info);
        } else {
            attachments.push(info);
        }
    }
    (attachments, inline)
}

/// A message parsed for its view: text, HTML, header fields, parts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Whether the message parsed; if not, only the raw source is shown.
    pub parsed: bool,
    /// The list fields.
    pub fields: Fields,
    /// The text part (or the HTML as text).
    pub text: String,
    /// The HTML part, empty if the message has none.
    pub html: String,
    /// Every header field in order, unfolded.
    pub headers: Vec<(String, String)>,
    /// `Return-Path:` (ours, the envelope sender).
    pub return_path: String,
    /// `List-Unsubscribe:`.
    pub list_unsubscribe: String,
    /// `List-Unsubscribe-Post:`.
    pub list_unsubscribe_post: String,
}

impl View {
    /// Parses a raw message for its page; a message over `limit` bytes is not parsed
    /// beyond [`Fields::parse`] ([`parsed`](View::parsed) false: it is shown raw).
    pub fn parse(raw: &[u8], limit: usize) -> View {
        view(raw, limit)
    }
}

impl Part {
    /// Part `part_id` (an [`Attachment::part_id`]) of a raw message of at most `limit`
    /// bytes, decoded; `None` when there is no such leaf part or the message is bigger.
    pub fn find(raw: &[u8], part_id: &str, limit: usize) -> Option<Part> {
        part(raw, part_id, limit)
    }
}

/// Parses `raw` for its view; a message over `limit` bytes is shown raw only.
pub fn view(raw: &[u8], limit: usize) -> View {
    let mut v = View {
        fields: fields(raw, limit),
        ..View::default()
    };
    if raw.len() > limit {
        return v;
    }
    let Some(message) = MessageParser::default().parse(raw) else {
        return v;
    };
    v.parsed = true;
    for (name, value) in message.headers_raw() {
        let value = unfold(value);
        if name.eq_ignore_ascii_case("Return-Path") && v.return_path.is_empty() {
            v.return_path = value.trim_matches(['<', '>', ' ']).to_string();
        } else if name.eq_ignore_ascii_case("List-Unsubscribe") {
            v.list_unsubscribe = value.clone();
        } else if name.eq_ignore_ascii_case("List-Unsubscribe-Post") {
            v.list_unsubscribe_post = value.clone();
        }
        v.headers.push((name.to_string(), value));
    }
    if let Some(text) = message.body_text(0) {
        v.text = text.into_owned();
    }
    let html = message
        .html_body
        .first()
        .and_then(|&id| message.parts.get(id as usize))
        .filter(|part| part.is_text_html());
    if let Some(part) = html {
        v.html = part.text_contents().unwrap_or("").to_string();
    }
    v
}

/// One part of a message: content type, file name, decoded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// `type/subtype`.
    pub content_type: String,
    /// The file name, or empty.
    pub file_name: String,
    /// The decoded content.
    pub data: Vec<u8>,
}

/// Part `part_id` of `raw` (an id from [`Attachment::part_id`]).
pub fn part(raw: &[u8], part_id: &str, limit: usize) -> Option<Part> {
    if raw.len() > limit {
        return None;
    }
    let id: usize = part_id.parse().ok()?;
    let message = MessageParser::default().parse(raw)?;
    let part = message.parts.get(id)?;
    if matches!(part.body, PartType::Multipart(_)) {
        return None;
    }
    Some(Part {
        content_type: content_type(part),
        file_name: part.attachment_name().unwrap_or("").to_string(),
        data: part.contents().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIXED: &[u8] =
        b"From: Alice <alice@example.com>\r\nTo: bob@example.org, Carol <c@example.net>\r\n\
Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMessage-ID: <m1@example.com>\r\n\
Date: Tue, 02 Jan 2024 03:04:05 +0000\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
Hello   there,\r\nsee the report.\r\n--b\r\nContent-Type: application/pdf; name=report.pdf\r\n\
Content-Disposition: attachment; filename=report.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n\
JVBERi0xLjQK\r\n--b--\r\n";

    #[test]
    fn fields_of_a_mixed_message() {
        let f = fields(MIXED, DEFAULT_PARSE_LIMIT);
        assert!(f.parsed);
        assert_eq!(f.subject, "Grüße");
        assert_eq!(f.from.address, "alice@example.com");
        assert_eq!(f.from.name, "Alice");
        assert_eq!(f.to.len(), 2);
        assert_eq!(f.to[1].name, "Carol");
        assert_eq!(f.message_id, "m1@example.com");
        assert_eq!(f.date, Some(1_704_164_645_000));
        assert_eq!(f.snippet, "Hello there, see the report.");
        assert_eq!(f.attachments.len(), 1);
        assert_eq!(f.attachments[0].file_name, "report.pdf");
        assert_eq!(f.attachments[0].content_type, "application/pdf");
        assert_eq!(f.attachments[0].size, 9);
        let p = part(MIXED, &f.attachments[0].part_id, DEFAULT_PARSE_LIMIT).expect("part");
        assert_eq!(p.data, b"%PDF-1.4\n");
        assert!(f.body_text.contains("report"));
        assert!(f.header_text.contains("Grüße"));
    }

    #[test]
    fn a_big_message_gives_its_header_fields_only() {
        let f = fields(MIXED, 100);
        assert!(f.parsed);
        assert_eq!(f.subject, "Grüße");
        assert!(f.body_text.is_empty() && f.attachments.is_empty());
        let v = view(MIXED, 100);
        assert!(!v.parsed);
    }

    #[test]
    fn garbage_does_not_panic() {
        for raw in [
            &b""[..],
            b"\r\n\r\n",
            b"\xff\xfe\x00",
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n--x\r\n",
            b"Subject: \xe9t\xe9\r\n\r\nbody \xff\r\n",
        ] {
            let _ = fields(raw, DEFAULT_PARSE_LIMIT);
            let _ = view(raw, DEFAULT_PARSE_LIMIT);
            let _ = part(raw, "0", DEFAULT_PARSE_LIMIT);
        }
    }

    #[test]
    fn html_view() {
        let raw = b"Subject: h\r\nContent-Type: text/html\r\n\r\n<p>Hi <b>there</b></p>\r\n";
        let v = view(raw, DEFAULT_PARSE_LIMIT);
        assert!(v.html.contains("<b>there</b>"));
        assert!(v.text.contains("there"));
        let t = view(b"Subject: t\r\n\r\nplain\r\n", DEFAULT_PARSE_LIMIT);
        assert!(t.html.is_empty(), "a text-only message has no HTML");
    }
}
