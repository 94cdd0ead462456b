//! The JSON format of a webhook: the envelope, the header fields, the text and HTML bodies
//! and the attachments, made from the spooled message by a streaming MIME walker.
//!
//! The walker reads the message line by line, keeps one line and the current part's header
//! section (each bounded), and decodes each leaf part (base64, quoted-printable) into a spool
//! of its own; at the end of a part an attachment is written out (base64) or dropped when it
//! is too big, while the first text and HTML bodies are kept in their spools until the end
//! of the document. So memory stays bounded whatever the message: spools move to encrypted
//! temporary files past their memory bound.

use std::io;

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use samotop_core::{Envelope, Peer, Recipient, SessionInfo, Spool};

use crate::text::{json_escape, json_string};
use crate::{Address, Signer};

/// Options of [`Format::Json`](crate::Format::Json).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonOptions {
    /// An attachment whose decoded size is over this is listed without its content
    /// (`"content": null, "omitted": true`). Default 10 MiB.
    pub max_attachment: u64,
    /// The text and HTML bodies are cut after this many decoded bytes (`"truncated": true`).
    /// Default 4 MiB.
    pub max_text: u64,
}

impl Default for JsonOptions {
    fn default() -> Self {
        JsonOptions {
            max_attachment: 10 << 20,
            max_text: 4 << 20,
        }
    }
}

/// What the document says about the delivery.
pub(crate) struct Facts<'a> {
    pub info: &'a SessionInfo,
    pub envelope: &'a Envelope,
    pub recipients: &'a [Recipient],
    pub id: &'a str,
}

/// Longest line kept whole; a longer one is content in pieces (never a boundary).
const MAX_LINE: usize = 8192;
/// Header section of one part, at most.
const MAX_PART_HEADER: usize = 64 * 1024;
/// Header fields listed for the message.
const MAX_FIELDS: usize = 1000;
/// Nested multiparts followed; deeper ones are one attachment.
const MAX_DEPTH: usize = 16;
/// Parts walked; the rest of the message is not.
const MAX_PARTS: usize = 1000;
/// Memory of each part's spool before it moves to a file.
const PART_MEMORY: usize = 64 * 1024;

/// The `reply` field of a JSON response body, sanitised.
pub(crate) fn reply_field(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    crate::text::reply_text(value.get("reply")?.as_str()?.as_bytes())
}

/// Writes the document for the message in `raw` into `out`, signing it as it goes.
pub(crate) async fn render(
    raw: &Spool,
    facts: &Facts<'_>,
    options: &JsonOptions,
    out: &mut Spool,
    signer: Option<&mut Signer>,
) -> io::Result<()> {
    let mut w = Out {
        spool: out,
        signer,
        buf: Vec::with_capacity(16 * 1024),
    };
    envelope(&mut w.buf, facts, raw.len());
    let mut walker = Walker::new(options.clone());
    let mut reader = raw.reader();
    while let Some(chunk) = reader.next_chunk(64 * 1024).await? {
        walker.feed(&chunk, &mut w).await?;
    }
    walker.finish(&mut w).await?;
    w.flush().await
}

struct Out<'a> {
    spool: &'a mut Spool,
    signer: Option<&'a mut Signer>,
    buf: Vec<u8>,
}

impl Out<'_> {
    async fn flush(&mut self) -> io::Result<()> {
        if let Some(s) = self.signer.as_mut() {
            s.update(&self.buf);
        }
        self.spool.write(&self.buf).await?;
        self.buf.clear();
        Ok(())
    }
    async fn maybe_flush(&mut self) -> io::Result<()> {
        if self.buf.len() >= 64 * 1024 {
            self.flush().await?;
        }
        Ok(())
    }
}

fn envelope(o: &mut Vec<u8>, f: &Facts<'_>, size: u64) {
    let info = f.info;
    let env = f.envelope;
    o.extend_from_slice(b"{\"id\":");
    json_string(o, f.id);
    o.extend_from_slice(b",\"envelope\":{\"sender\":");
    json_string(o, &env.sender.to_string());
    o.extend_from_slice(b",\"recipients\":[");
    for (i, r) in f.recipients.iter().enumerate() {
        if i > 0 {
            o.push(b',');
        }
        let a = Address::parse(&r.address);
        o.extend_from_slice(b"{\"address\":");
        json_string(o, &r.address);
        o.extend_from_slice(b",\"original\":");
        json_string(o, &original_recipient(r));
        o.extend_from_slice(b",\"user\":");
        json_string(o, a.user);
        o.extend_from_slice(b",\"domain\":");
        opt_string(o, a.domain);
        o.extend_from_slice(b",\"extension\":");
        opt_string(o, a.extension);
        o.extend_from_slice(b",\"args\":{");
        for (j, (k, v)) in a.args().enumerate() {
            if j > 0 {
                o.push(b',');
            }
            json_string(o, k);
            o.push(b':');
            json_string(o, v);
        }
        o.extend_from_slice(b"}}");
    }
    o.extend_from_slice(b"],\"helo\":");
    opt_string(o, info.helo.as_ref().map(|h| h.to_string()).as_deref());
    o.extend_from_slice(b",\"client_address\":");
    match &info.peer {
        Peer::Tcp(a) => {
            json_string(o, &a.ip().to_string());
            o.extend_from_slice(format!(",\"client_port\":{}", a.port()).as_bytes());
        }
        other => {
            json_string(o, &other.to_string());
            o.extend_from_slice(b",\"client_port\":null");
        }
    }
    o.extend_from_slice(b",\"protocol\":");
    json_string(o, info.with_protocol());
    o.extend_from_slice(b",\"tls\":");
    match &info.tls {
        Some(tls) => {
            o.extend_from_slice(b"{\"version\":");
            json_string(o, &tls.version);
            o.extend_from_slice(b",\"cipher\":");
            json_string(o, &tls.cipher);
            o.push(b'}');
        }
        None => o.extend_from_slice(b"null"),
    }
    o.extend_from_slice(b",\"auth\":[");
    for (i, a) in env.auth.iter().enumerate() {
        if i > 0 {
            o.push(b',');
        }
        o.extend_from_slice(b"{\"method\":");
        json_string(o, &a.method);
        o.extend_from_slice(b",\"result\":");
        json_string(o, &a.result);
        o.extend_from_slice(b",\"reason\":");
        opt_string(o, a.reason.as_deref());
        o.extend_from_slice(b",\"properties\":{");
        for (j, (k, v)) in a.properties.iter().enumerate() {
            if j > 0 {
                o.push(b',');
            }
            json_string(o, k);
            o.push(b':');
            json_string(o, v);
        }
        o.extend_from_slice(b"}}");
    }
    o.extend_from_slice(b"],\"server\":");
    json_string(o, &info.server_name);
    o.extend_from_slice(b",\"session\":");
    json_string(o, &env.id);
    o.extend_from_slice(format!(",\"quarantine\":{},\"size\":{size}}}", env.quarantine).as_bytes());
}

/// ORCPT's address when given (RFC 3461), else the address the client gave.
pub(crate) fn original_recipient(r: &Recipient) -> String {
    match &r.params.orcpt {
        Some((_, addr)) => addr.clone(),
        None => r.path.to_string(),
    }
}

fn opt_string(o: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_string(o, s),
        None => o.extend_from_slice(b"null"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Plain,
    Base64,
    QuotedPrintable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Html,
    Attachment,
}

/// A leaf part being decoded.
struct Leaf {
    kind: Kind,
    content_type: String,
    charset: Option<String>,
    filename: Option<String>,
    encoding: Encoding,
    spool: Spool,
    size: u64,
    limit: u64,
    /// A line ending held back: the one before a boundary belongs to the boundary.
    pending_newline: bool,
    /// Base64 characters not yet decoded (fewer than 4).
    b64: Vec<u8>,
}

enum State {
    /// Reading a part's header section.
    Header { buf: Vec<u8>, top: bool },
    /// In a multipart's preamble or epilogue (between parts).
    Between,
    /// In a leaf part's body.
    Body(Box<Leaf>),
}

struct Walker {
    options: JsonOptions,
    line: Vec<u8>,
    /// Boundaries of the open multiparts, innermost last.
    stack: Vec<Vec<u8>>,
    state: State,
    parts: usize,
    truncated: bool,
    text: Option<Box<Leaf>>,
    html: Option<Box<Leaf>>,
    attachments: usize,
    headers_written: bool,
}

impl Walker {
    fn new(options: JsonOptions) -> Self {
        Walker {
            options,
            line: Vec::new(),
            stack: Vec::new(),
            state: State::Header {
                buf: Vec::new(),
                top: true,
            },
            parts: 0,
            truncated: false,
            text: None,
            html: None,
            attachments: 0,
            headers_written: false,
        }
    }

    async fn feed(&mut self, mut data: &[u8], w: &mut Out<'_>) -> io::Result<()> {
        while !data.is_empty() {
            let (take, whole) = match memchr(b'\n', data) {
                Some(i) => (i + 1, true),
                None => (data.len(), false),
            };
            self.line.extend_from_slice(&data[..take]);
            data = &data[take..];
            if whole || self.line.len() >= MAX_LINE {
                let line = std::mem::take(&mut self.line);
                self.on_line(&line, whole, w).await?;
                self.line = line;
                self.line.clear();
            }
        }
        Ok(())
    }

    async fn finish(&mut self, w: &mut Out<'_>) -> io::Result<()> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.on_line(&line, true, w).await?;
        }
        if let State::Header { buf, top } = &mut self.state {
            // A header section without a body (or cut short).
            let (buf, top) = (std::mem::take(buf), *top);
            self.state = State::Between;
            self.end_header(&buf, top, w).await?;
        }
        self.end_part(w).await?;
        if !self.headers_written {
            w.buf
                .extend_from_slice(b",\"headers\":[],\"attachments\":[");
        }
        w.buf.push(b']');
        for (name, leaf) in [("text", self.text.take()), ("html", self.html.take())] {
            w.buf.extend_from_slice(format!(",\"{name}\":").as_bytes());
            match leaf {
                None => w.buf.extend_from_slice(b"null"),
                Some(leaf) => write_text(&leaf, w).await?,
            }
        }
        w.buf
            .extend_from_slice(format!(",\"truncated\":{}}}", self.truncated).as_bytes());
        Ok(())
    }

    async fn on_line(&mut self, line: &[u8], whole: bool, w: &mut Out<'_>) -> io::Result<()> {
        // A boundary line, for any open multipart (innermost first).
        if whole && line.starts_with(b"--") && !self.stack.is_empty() {
            let body = trim_end(&line[2..]);
            let found = self.stack.iter().enumerate().rev().find_map(|(depth, b)| {
                let rest = body.strip_prefix(b.as_slice())?;
                (rest.is_empty() || rest == b"--").then_some((depth, rest == b"--"))
            });
            if let Some((depth, close)) = found {
                {
                    if let State::Header { buf, top } = &mut self.state {
                        let (buf, top) = (std::mem::take(buf), *top);
                        self.state = State::Between;
                        self.end_header(&buf, top, w).await?;
                    }
                    self.end_part(w).await?;
                    self.stack.truncate(depth + 1);
                    if close {
                        self.stack.pop();
                        self.state = State::Between;
                    } else if self.parts >= MAX_PARTS {
                        self.truncated = true;
                        self.stack.clear();
                        self.state = State::Between;
                    } else {
                        self.parts += 1;
                        self.state = State::Header {
                            buf: Vec::new(),
                            top: false,
                        };
                    }
                    return Ok(());
                }
            }
        }
        match &mut self.state {
            State::Header { buf, top } => {
                if trim_end(line).is_empty() && whole {
                    let (buf, top) = (std::mem::take(buf), *top);
                    self.state = State::Between;
                    self.end_header(&buf, top, w).await?;
                } else if buf.len() + line.len() <= MAX_PART_HEADER {
                    buf.extend_from_slice(line);
                }
            }
            State::Between => {}
            State::Body(leaf) => leaf.content(line, whole).await?,
        }
        w.maybe_flush().await
    }

    /// A header section ended: list the message's fields, then start the part's body.
    async fn end_header(&mut self, buf: &[u8], top: bool, w: &mut Out<'_>) -> io::Result<()> {
        let fields = unfold(buf);
        if top {
            w.buf.extend_from_slice(b",\"headers\":[");
            for (i, (name, value)) in fields.iter().take(MAX_FIELDS).enumerate() {
                if i > 0 {
                    w.buf.push(b',');
                }
                w.buf.extend_from_slice(b"{\"name\":");
                json_string(&mut w.buf, name);
                w.buf.extend_from_slice(b",\"value\":");
                json_string(&mut w.buf, &decode_words(value));
                w.buf.push(b'}');
                if w.buf.len() >= 64 * 1024 {
                    w.flush().await?;
                }
            }
            w.buf.extend_from_slice(b"],\"attachments\":[");
            self.headers_written = true;
        }
        let field = |n: &str| {
            fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.as_str())
        };
        let (mime, params) = parse_params(field("content-type").unwrap_or("text/plain"));
        let mime = if mime.contains('/') {
            mime
        } else {
            "text/plain".into()
        };
        let (disposition, dparams) = parse_params(field("content-disposition").unwrap_or(""));
        let param = |ps: &[(String, String)], n: &str| {
            ps.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
        };
        if mime.starts_with("multipart/") && self.stack.len() < MAX_DEPTH {
            if let Some(boundary) = param(&params, "boundary").filter(|b| !b.is_empty()) {
                self.stack.push(boundary.into_bytes());
                self.state = State::Between;
                return Ok(());
            }
        }
        let encoding = match field("content-transfer-encoding")
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            Some("base64") => Encoding::Base64,
            Some("quoted-printable") => Encoding::QuotedPrintable,
            _ => Encoding::Plain,
        };
        let filename = param(&dparams, "filename").or_else(|| param(&params, "name"));
        let attached = disposition == "attachment" || filename.is_some();
        let kind = match mime.as_str() {
            "text/plain" if !attached && self.text.is_none() => Kind::Text,
            "text/html" if !attached && self.html.is_none() => Kind::Html,
            _ => Kind::Attachment,
        };
        let limit = match kind {
            Kind::Attachment => self.options.max_attachment,
            _ => self.options.max_text,
        };
        self.state = State::Body(Box::new(Leaf {
            kind,
            charset: param(&params, "charset"),
            content_type: mime,
            filename: filename.map(|f| decode_words(&f)),
            encoding,
            spool: Spool::new(PART_MEMORY),
            size: 0,
            limit,
            pending_newline: false,
            b64: Vec::new(),
        }));
        Ok(())
    }

    /// The current leaf part ended: write it out, or keep it for the end.
    async fn end_part(&mut self, w: &mut Out<'_>) -> io::Result<()> {
        let State::Body(mut leaf) = std::mem::replace(&mut self.state, State::Between) else {
            return Ok(());
        };
        leaf.flush_base64(true).await?;
        match leaf.kind {
            Kind::Text => self.text = Some(leaf),
            Kind::Html => self.html = Some(leaf),
            Kind::Attachment => {
                if self.attachments > 0 {
                    w.buf.push(b',');
                }
                self.attachments += 1;
                write_attachment(&leaf, w).await?;
            }
        }
        Ok(())
    }
}

impl Leaf {
    async fn content(&mut self, line: &[u8], whole: bool) -> io::Result<()> {
        let (content, newline) = if whole {
            let body = line.strip_suffix(b"\n").unwrap_or(line);
            (body.strip_suffix(b"\r").unwrap_or(body), true)
        } else {
            (line, false)
        };
        match self.encoding {
            Encoding::Plain => {
                if self.pending_newline {
                    self.push(b"\r\n").await?;
                }
                self.push(content).await?;
                self.pending_newline = newline;
            }
            Encoding::Base64 => {
                self.b64.extend(content.iter().copied().filter(|b| {
                    b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/' || *b == b'='
                }));
                self.flush_base64(false).await?;
            }
            Encoding::QuotedPrintable => {
                if self.pending_newline {
                    self.push(b"\r\n").await?;
                }
                let content = if newline { trim_end(content) } else { content };
                let (content, soft) = match content.strip_suffix(b"=") {
                    Some(c) if newline => (c, true),
                    _ => (content, false),
                };
                let decoded = decode_qp(content);
                self.push(&decoded).await?;
                self.pending_newline = newline && !soft;
            }
        }
        Ok(())
    }

    async fn flush_base64(&mut self, end: bool) -> io::Result<()> {
        let usable = if end {
            self.b64.len()
        } else {
            self.b64.len() / 4 * 4
        };
        if usable == 0 {
            return Ok(());
        }
        let rest = self.b64.split_off(usable);
        let quads = std::mem::replace(&mut self.b64, rest);
        // Decode quad by quad so that a bad quad (or padding in the middle) loses only itself.
        let mut out = Vec::with_capacity(quads.len() / 4 * 3);
        if let Ok(all) = LENIENT.decode(&quads) {
            out = all;
        } else {
            for quad in quads.chunks(4) {
                if let Ok(bytes) = LENIENT.decode(quad) {
                    out.extend_from_slice(&bytes);
                }
            }
        }
        self.push(&out).await
    }

    async fn push(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.size += bytes.len() as u64;
        let room = self.limit.saturating_sub(self.spool.len());
        let keep = bytes.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        if keep > 0 {
            self.spool.write(&bytes[..keep]).await?;
        }
        Ok(())
    }
}

const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

fn encode_into(bytes: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + bytes.len().div_ceil(3) * 4, 0);
    let n = STANDARD
        .encode_slice(bytes, &mut out[start..])
        .unwrap_or_default();
    out.truncate(start + n);
}

async fn write_attachment(leaf: &Leaf, w: &mut Out<'_>) -> io::Result<()> {
    let o = &mut w.buf;
    o.extend_from_slice(b"{\"content_type\":");
    json_string(o, &leaf.content_type);
    o.extend_from_slice(b",\"filename\":");
    opt_string(o, leaf.filename.as_deref());
    o.extend_from_slice(format!(",\"size\":{}", leaf.size).as_bytes());
    if leaf.size > leaf.limit {
        o.extend_from_slice(b",\"omitted\":true,\"content\":null}");
        return Ok(());
    }
    o.extend_from_slice(b",\"omitted\":false,\"content\":\"");
    let mut reader = leaf.spool.reader();
    let mut carry: Vec<u8> = Vec::new();
    while let Some(chunk) = reader.next_chunk(48 * 1024).await? {
        carry.extend_from_slice(&chunk);
        let whole = carry.len() / 3 * 3;
        let rest = carry.split_off(whole);
        encode_into(&carry, &mut w.buf);
        carry = rest;
        w.maybe_flush().await?;
    }
    encode_into(&carry, &mut w.buf);
    w.buf.extend_from_slice(b"\"}");
    Ok(())
}

/// A text body as a JSON string, converted from its charset, with `truncated` beside it.
async fn write_text(leaf: &Leaf, w: &mut Out<'_>) -> io::Result<()> {
    let encoding = leaf
        .charset
        .as_deref()
        .and_then(|c| encoding_rs::Encoding::for_label(c.trim().as_bytes()))
        .unwrap_or(encoding_rs::UTF_8);
    let mut decoder = encoding.new_decoder();
    w.buf.extend_from_slice(b"\"");
    let mut reader = leaf.spool.reader();
    let mut text = String::new();
    loop {
        let chunk = reader.next_chunk(32 * 1024).await?;
        let last = chunk.is_none();
        let bytes = chunk.unwrap_or_default();
        text.clear();
        let need = decoder
            .max_utf8_buffer_length(bytes.len())
            .unwrap_or(bytes.len() * 4 + 16);
        text.reserve(need);
        let _ = decoder.decode_to_string(&bytes, &mut text, last);
        json_escape(&mut w.buf, &text);
        w.maybe_flush().await?;
        if last {
            break;
        }
    }
    w.buf.extend_from_slice(b"\"");
    if leaf.size > leaf.limit {
        // The field after the string says it was cut.
        w.buf.extend_from_slice(b",\"");
        w.buf.extend_from_slice(if leaf.kind == Kind::Html {
            b"html_truncated"
        } else {
            b"text_truncated"
        });
        w.buf.extend_from_slice(b"\":true");
    }
    Ok(())
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|b| *b == needle)
}

fn trim_end(b: &[u8]) -> &[u8] {
    let mut end = b.len();
    while end > 0 && matches!(b[end - 1], b' ' | b'\t' | b'\r' | b'\n') {
        end -= 1;
    }
    &b[..end]
}

/// The header fields of a section: `(name, unfolded value)`, values as lossy UTF-8.
fn unfold(section: &[u8]) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in section.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if matches!(line[0], b' ' | b'\t') {
            if let Some((_, value)) = fields.last_mut() {
                value.push(' ');
                value.push_str(String::from_utf8_lossy(line).trim());
            }
            continue;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = String::from_utf8_lossy(&line[..colon]).trim().to_string();
        let value = String::from_utf8_lossy(&line[colon + 1..])
            .trim()
            .to_string();
        if !name.is_empty() {
            fields.push((name, value));
        }
    }
    fields
}

/// `type/subtype; a=1; b="x y"` as (`type/subtype` lower case, [(name lower case, value)]);
/// RFC 2231 `name*=charset''percent` values are decoded.
fn parse_params(value: &str) -> (String, Vec<(String, String)>) {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in value.chars() {
        match c {
            _ if escaped => {
                current.push(c);
                escaped = false;
            }
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    parts.push(current);
    let mut iter = parts.into_iter();
    let head = iter.next().unwrap_or_default().trim().to_ascii_lowercase();
    let params = iter
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim().to_string();
            match k.strip_suffix('*') {
                Some(k) => Some((k.to_string(), decode_2231(&v))),
                None => Some((k, v)),
            }
        })
        .collect();
    (head, params)
}

fn decode_2231(v: &str) -> String {
    let mut it = v.splitn(3, '\'');
    let (Some(charset), Some(_lang), Some(text)) = (it.next(), it.next(), it.next()) else {
        return v.to_string();
    };
    let bytes = percent_decode(text);
    decode_charset(charset, &bytes)
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hexval(b[i + 1]), hexval(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn hexval(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn decode_qp(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hexval(b[i + 1]), hexval(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn decode_charset(charset: &str, bytes: &[u8]) -> String {
    let encoding =
        encoding_rs::Encoding::for_label(charset.trim().as_bytes()).unwrap_or(encoding_rs::UTF_8);
    encoding.decode_without_bom_handling(bytes).0.into_owned()
}

/// RFC 2047 encoded words (`=?utf-8?B?...?=`, `=?iso-8859-1?Q?...?=`) decoded; white space
/// between two encoded words dropped (RFC 2047 6.2).
fn decode_words(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, from) = rest.split_at(start);
        let word = from[2..].splitn(3, '?').collect::<Vec<_>>();
        let decoded = match word.as_slice() {
            [charset, enc, tail] => tail.find("?=").and_then(|end| {
                let text = &tail[..end];
                let bytes = match enc.to_ascii_lowercase().as_str() {
                    "b" => LENIENT.decode(text).ok()?,
                    "q" => decode_qp(text.replace('_', " ").as_bytes()),
                    _ => return None,
                };
                let used = 2 + charset.len() + 1 + enc.len() + 1 + end + 2;
                let charset = charset.split('*').next().unwrap_or(charset);
                Some((decode_charset(charset, &bytes), used))
            }),
            _ => None,
        };
        match decoded {
            Some((text, used)) => {
                if !(last_was_word && before.trim().is_empty()) {
                    out.push_str(before);
                }
                out.push_str(&text);
                rest = &from[used..];
                last_was_word = true;
            }
            None => {
                out.push_str(before);
                out.push_str("=?");
                rest = &from[2..];
                last_was_word = false;
            }
        }
    }
    out.push_str(rest);
    out
}

/// See [`crate::fuzzing::json_document`].
pub(crate) fn document_for_fuzzing(message: &[u8]) -> io::Result<Vec<u8>> {
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    runtime.block_on(async {
        let mut raw = Spool::new(1 << 20);
        raw.write(message).await?;
        let info = SessionInfo::new(Peer::Stdio, "mx.test");
        let env = Envelope::new(
            samotop_parser::ReversePath::Null,
            samotop_parser::MailParams::default(),
            "f".into(),
        );
        let facts = Facts {
            info: &info,
            envelope: &env,
            recipients: &[],
            id: "msg_f",
        };
        let options = JsonOptions {
            max_attachment: 100,
            max_text: 100,
        };
        let mut out = Spool::new(16 << 20);
        render(&raw, &facts, &options, &mut out, None).await?;
        let mut bytes = Vec::new();
        let mut r = out.reader();
        while let Some(c) = r.next_chunk(1 << 20).await? {
            bytes.extend_from_slice(&c);
        }
        Ok(bytes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use samotop_parser::{ForwardPath, Host, MailParams, Mailbox, RcptParams, ReversePath};

    async fn doc(message: &[u8], options: JsonOptions) -> serde_json::Value {
        let mut raw = Spool::new(1 << 20);
        raw.write(message).await.expect("spool");
        let info = SessionInfo::new(Peer::Stdio, "mx.test");
        let env = Envelope::new(ReversePath::Null, MailParams::default(), "s1.1".into());
        let rcpt = Recipient::new(
            ForwardPath::Mailbox(Mailbox {
                local: "alerts+env=prod".into(),
                domain: Host::Domain("example.org".into()),
            }),
            RcptParams::default(),
        );
        let facts = Facts {
            info: &info,
            envelope: &env,
            recipients: std::slice::from_ref(&rcpt),
            id: "msg_1",
        };
        let mut out = Spool::new(1 << 20);
        render(&raw, &facts, &options, &mut out, None)
            .await
            .expect("render");
        let mut bytes = Vec::new();
        let mut r = out.reader();
        while let Some(c) = r.next_chunk(1 << 20).await.expect("read") {
            bytes.extend_from_slice(&c);
        }
        match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)),
        }
    }

    #[tokio::test]
    async fn a_plain_message() {
        let v = doc(
            b"Subject: =?utf-8?B?xb1sdcWlb3XEjWvDvQ==?= =?utf-8?Q?_k=C5=AF=C5=88?=\r\nFrom: a@b\r\n\r\nHello\r\nworld\r\n",
            JsonOptions::default(),
        )
        .await;
        assert_eq!(v["headers"][0]["value"], "Žluťoučký kůň");
        assert_eq!(v["text"], "Hello\r\nworld");
        assert_eq!(v["html"], serde_json::Value::Null);
        assert_eq!(v["envelope"]["recipients"][0]["args"]["env"], "prod");
        assert_eq!(v["envelope"]["recipients"][0]["extension"], "env=prod");
        assert_eq!(v["truncated"], false);
    }

    #[tokio::test]
    async fn multipart_with_attachments() {
        let msg = b"Subject: x\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n\
--b1\r\nContent-Type: multipart/alternative; boundary=b2\r\n\r\n\
--b2\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nP=F8=\r\nkn=E9\r\n\
--b2\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n--b2--\r\n\
--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename*=utf-8''%C5%BE.bin\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\nAw==\r\n\
--b1\r\nContent-Type: image/png; name=big.png\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQFBgcICQ==\r\n\
--b1--\r\nepilogue\r\n";
        let v = doc(
            msg,
            JsonOptions {
                max_attachment: 5,
                max_text: 100,
            },
        )
        .await;
        assert_eq!(v["text"], "Pøkné", "{v}");
        assert_eq!(v["html"], "<p>hi</p>");
        let a = &v["attachments"];
        assert_eq!(a[0]["filename"], "ž.bin");
        assert_eq!(a[0]["content"], "AAECAw==");
        assert_eq!(a[0]["size"], 4);
        assert_eq!(a[1]["filename"], "big.png");
        assert_eq!(a[1]["omitted"], true);
        assert_eq!(a[1]["size"], 10);
        assert_eq!(a.as_array().map(Vec::len), Some(2));
    }

    #[tokio::test]
    async fn hostile_structure_stays_bounded() {
        // Deep nesting, an unclosed multipart, a long line, binary bytes.
        let mut msg = Vec::new();
        for i in 0..100 {
            msg.extend_from_slice(
                format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n")
                    .as_bytes(),
            );
        }
        msg.extend_from_slice(b"\r\n");
        msg.extend_from_slice(&vec![0xffu8; 100_000]);
        msg.extend_from_slice(b"\r\n\x00\"\\\r\n");
        let v = doc(&msg, JsonOptions::default()).await;
        assert!(v["attachments"].is_array());
        let few = doc(b"", JsonOptions::default()).await;
        assert_eq!(few["headers"], serde_json::json!([]));
        let header_only = doc(b"Subject: x", JsonOptions::default()).await;
        assert_eq!(header_only["headers"][0]["name"], "Subject");
    }

    #[test]
    fn reply_field_is_sanitised() {
        assert_eq!(
            reply_field(br#"{"reply":"no\r\nway"}"#),
            Some("no way".into())
        );
        assert_eq!(reply_field(br#"{"reply":3}"#), None);
        assert_eq!(reply_field(b"not json"), None);
    }
}
