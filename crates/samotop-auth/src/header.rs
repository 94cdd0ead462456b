//! The header section, collected from a stream of chunks up to a bound, then split into
//! fields (RFC 5322 2.2: a field is a line and the continuation lines after it).

use std::ops::Range;

/// Default bound on the header section: 256 KiB. RFC 5322 sets no limit; real messages
/// stay far below (a long Received chain is a few KiB).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 256 * 1024;
/// Default bound on the number of header fields.
pub const DEFAULT_MAX_HEADER_FIELDS: usize = 4096;

/// One header field of the collected section, as positions in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field {
    /// The whole field: name, colon, value, continuation lines, the final CRLF (absent
    /// only when the message ends without one).
    pub raw: Range<usize>,
    /// The name, without whitespace before the colon; empty for a line with no colon.
    pub name: Range<usize>,
    /// The value: after the colon, to the end of the field without its final CRLF.
    pub value: Range<usize>,
}

/// What [`HeaderSection::update`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// More header bytes are needed; the whole chunk was header.
    Partial,
    /// The header section ended; the body starts at this offset of the chunk.
    Complete(usize),
    /// The bound was hit: the section is not kept and nothing can be verified.
    Overflow,
}

/// Collects the header section.
#[derive(Debug)]
pub(crate) struct HeaderSection {
    buf: Vec<u8>,
    /// Scanning position: bytes before it are split into complete lines.
    scanned: usize,
    /// Where the current (unfinished) line starts.
    line_start: usize,
    fields: usize,
    max_bytes: usize,
    max_fields: usize,
    state: Progress,
}

impl HeaderSection {
    pub(crate) fn new(max_bytes: usize, max_fields: usize) -> Self {
        HeaderSection {
            buf: Vec::new(),
            scanned: 0,
            line_start: 0,
            fields: 0,
            max_bytes,
            max_fields,
            state: Progress::Partial,
        }
    }

    /// Takes the next chunk. Returns where the body starts in it, once.
    pub(crate) fn update(&mut self, chunk: &[u8]) -> Progress {
        match self.state {
            Progress::Partial => {}
            // After the end of the section, every chunk is body from its start.
            Progress::Complete(_) => return Progress::Complete(0),
            Progress::Overflow => return Progress::Overflow,
        }
        // While partial, the buffer holds at most `max_bytes + 1` bytes: a section of
        // exactly `max_bytes` is still seen to end when its empty line arrives.
        let old = self.buf.len();
        let take = chunk.len().min((self.max_bytes + 2).saturating_sub(old));
        self.buf.extend_from_slice(&chunk[..take]);
        while let Some(lf) = memchr::memchr(b'\n', &self.buf[self.scanned..]) {
            let lf = self.scanned + lf;
            self.scanned = lf + 1;
            if lf == 0 || self.buf[lf - 1] != b'\r' {
                continue; // a bare LF is part of the line
            }
            if lf + 1 - self.line_start == 2 {
                // The empty line: the header section is what came before it.
                let end = self.line_start;
                self.buf.truncate(end);
                self.state = Progress::Complete(lf + 1 - old);
                return self.state;
            }
            if !is_wsp(self.buf[self.line_start]) {
                self.fields += 1;
            }
            self.line_start = lf + 1;
            if self.fields > self.max_fields {
                return self.overflow();
            }
        }
        if self.line_start > self.max_bytes || self.buf.len() >= self.max_bytes + 2 {
            return self.overflow();
        }
        Progress::Partial
    }

    fn overflow(&mut self) -> Progress {
        self.buf = Vec::new();
        self.state = Progress::Overflow;
        self.state
    }

    /// Ends the message: a section with no empty line after it is all header.
    pub(crate) fn finish(&mut self) {
        if self.state == Progress::Partial {
            self.state = Progress::Complete(0);
        }
    }

    /// The raw header section (without the empty line).
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Splits the section into fields, in order (top first).
    #[cfg(test)]
    pub(crate) fn fields(&self) -> Vec<Field> {
        split_fields(&self.buf)
    }

    /// Takes the collected section out, leaving an empty one.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Splits a header section into fields. A continuation line (starting with WSP) belongs to
/// the field above it; one before any field becomes a field of its own with no name.
pub(crate) fn split_fields(buf: &[u8]) -> Vec<Field> {
    let mut fields: Vec<Field> = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        // Find the end of this line: the next CRLF (bare LF does not end a line).
        let mut end = buf.len();
        let mut from = pos;
        while let Some(lf) = memchr::memchr(b'\n', &buf[from..]) {
            let lf = from + lf;
            if lf > pos && buf[lf - 1] == b'\r' {
                end = lf + 1;
                break;
            }
            from = lf + 1;
        }
        let continuation = is_wsp(buf[pos]);
        match fields.last_mut() {
            Some(last) if continuation => {
                last.raw.end = end;
            }
            _ => fields.push(Field {
                raw: pos..end,
                name: 0..0,
                value: 0..0,
            }),
        }
        pos = end;
    }
    for field in &mut fields {
        let raw = &buf[field.raw.clone()];
        let body_end = if raw.ends_with(b"\r\n") {
            field.raw.end - 2
        } else {
            field.raw.end
        };
        match memchr::memchr(b':', raw) {
            Some(colon) if !is_wsp(raw[0]) => {
                let mut name_end = field.raw.start + colon;
                while name_end > field.raw.start && is_wsp(buf[name_end - 1]) {
                    name_end -= 1;
                }
                field.name = field.raw.start..name_end;
                field.value = (field.raw.start + colon + 1).min(body_end)..body_end;
            }
            _ => {
                field.name = field.raw.start..field.raw.start;
                field.value = field.raw.start..body_end;
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(chunks: &[&[u8]]) -> (HeaderSection, Vec<usize>) {
        let mut h = HeaderSection::new(1024, 100);
        let mut starts = Vec::new();
        for c in chunks {
            if let Progress::Complete(at) = h.update(c) {
                if starts.is_empty() {
                    starts.push(at);
                }
            }
        }
        (h, starts)
    }

    #[test]
    fn boundary_in_any_split() {
        let msg = b"A: 1\r\nB: 2\r\n continued\r\n\r\nbody\r\n\r\n";
        let header_len = msg.len() - b"body\r\n\r\n".len();
        for split in 0..=msg.len() {
            let (a, b) = msg.split_at(split);
            let (h, starts) = collect(&[a, b]);
            assert_eq!(h.bytes(), &msg[..header_len - 2], "split {split}");
            let offset = if split < header_len {
                header_len - split
            } else {
                header_len
            };
            assert_eq!(starts, vec![offset], "split {split}");
        }
        // Byte by byte.
        let mut h = HeaderSection::new(1024, 100);
        let mut found = None;
        for (i, b) in msg.iter().enumerate() {
            if let Progress::Complete(_) = h.update(std::slice::from_ref(b)) {
                found.get_or_insert(i);
            }
        }
        assert_eq!(found, Some(header_len - 1));
    }

    #[test]
    fn empty_header_section() {
        let (h, starts) = collect(&[b"\r\nbody"]);
        assert_eq!(h.bytes(), b"");
        assert_eq!(starts, vec![2]);
    }

    #[test]
    fn bare_lf_does_not_end_the_section() {
        let (h, starts) = collect(&[b"A: 1\n\nB: 2\r\n\r\n"]);
        assert_eq!(h.bytes(), b"A: 1\n\nB: 2\r\n");
        assert_eq!(starts, vec![14]);
        let fields = h.fields();
        assert_eq!(fields.len(), 1);
    }

    #[test]
    fn overflow() {
        let mut h = HeaderSection::new(16, 100);
        assert_eq!(h.update(b"Subject: 0123456"), Progress::Partial);
        assert_eq!(h.update(b"789\r\n\r\n"), Progress::Overflow);
        assert_eq!(h.update(b"more"), Progress::Overflow);
        assert!(h.bytes().is_empty());
        // A section that just fits.
        let mut h = HeaderSection::new(16, 100);
        assert_eq!(h.update(b"Subject: 012345\r\n\r\nbody"), Progress::Overflow);
        let mut h = HeaderSection::new(16, 100);
        assert_eq!(
            h.update(b"Subject: 01234\r\n\r\nbody"),
            Progress::Complete(18)
        );
        // Too many lines.
        let mut h = HeaderSection::new(1024, 1);
        assert_eq!(
            h.update(b"a:\r\nb:\r\nc:\r\nd:\r\ne:\r\n"),
            Progress::Overflow
        );
    }

    #[test]
    fn fields() {
        let buf = b" lead\r\nSubject : Hi\r\n there\r\nX:\r\nnocolon\r\nLast: v";
        let fields = split_fields(buf);
        let show: Vec<(&[u8], &[u8], &[u8])> = fields
            .iter()
            .map(|f| {
                (
                    &buf[f.raw.clone()],
                    &buf[f.name.clone()],
                    &buf[f.value.clone()],
                )
            })
            .collect();
        assert_eq!(
            show,
            vec![
                (&b" lead\r\n"[..], &b""[..], &b" lead"[..]),
                (b"Subject : Hi\r\n there\r\n", b"Subject", b" Hi\r\n there"),
                (b"X:\r\n", b"X", b""),
                (b"nocolon\r\n", b"", b"nocolon"),
                (b"Last: v", b"Last", b" v"),
            ]
        );
    }
}
