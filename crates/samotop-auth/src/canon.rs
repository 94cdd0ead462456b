//! Canonicalization, RFC 6376 3.4: "simple" and "relaxed", for header fields (whole, in
//! memory) and for the body (streaming, any split of the input).
//!
//! The body canonicalizers are small state machines: they hold back what they cannot
//! decide yet (a CR that may start a CRLF, whitespace that may end a line, empty lines
//! that may end the body) as counters, never as bytes, so a chunk boundary anywhere gives
//! the same output and memory does not depend on the input.

/// One canonicalization algorithm (RFC 6376 3.4.1 - 3.4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Canonicalization {
    /// "simple": header fields as they are; the body with its trailing empty lines
    /// reduced to one CRLF (an empty body is one CRLF).
    Simple,
    /// "relaxed": header names in lower case, values unfolded, runs of whitespace as one
    /// space, no whitespace at line ends, no trailing empty lines (an empty body is empty).
    Relaxed,
}

impl Canonicalization {
    /// The name as written in `c=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Canonicalization::Simple => "simple",
            Canonicalization::Relaxed => "relaxed",
        }
    }

    fn parse(value: &[u8]) -> Option<Self> {
        match value {
            b"simple" => Some(Canonicalization::Simple),
            b"relaxed" => Some(Canonicalization::Relaxed),
            _ => None,
        }
    }

    /// Parses a `c=` value: `header[/body]`, the body defaulting to simple (RFC 6376 3.5).
    pub(crate) fn parse_pair(value: &[u8]) -> Option<(Self, Self)> {
        let mut parts = value.splitn(2, |&b| b == b'/');
        let header = Self::parse(parts.next()?)?;
        let body = match parts.next() {
            Some(body) => Self::parse(body)?,
            None => Canonicalization::Simple,
        };
        Some((header, body))
    }
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Appends header field `field` (name, colon, value and its final CRLF, as received)
/// canonicalized with `canon` to `out`. `crlf` = false leaves the final CRLF off (the
/// signature's own field is hashed without it, RFC 6376 3.7).
pub(crate) fn header(canon: Canonicalization, field: &[u8], crlf: bool, out: &mut Vec<u8>) {
    match canon {
        Canonicalization::Simple => {
            let field = if crlf {
                field
            } else {
                field.strip_suffix(b"\r\n").unwrap_or(field)
            };
            out.extend_from_slice(field);
        }
        Canonicalization::Relaxed => {
            let colon = memchr::memchr(b':', field).unwrap_or(field.len());
            let mut name = &field[..colon];
            while let [rest @ .., last] = name {
                if is_wsp(*last) {
                    name = rest;
                } else {
                    break;
                }
            }
            out.extend(name.iter().map(u8::to_ascii_lowercase));
            out.push(b':');
            let value = field.get(colon + 1..).unwrap_or_default();
            let value = value.strip_suffix(b"\r\n").unwrap_or(value);
            let mut pending_space = false;
            let mut started = false;
            let mut i = 0;
            while i < value.len() {
                let b = value[i];
                if b == b'\r' && value.get(i + 1) == Some(&b'\n') {
                    // Unfolding: the CRLF goes, the whitespace after it counts as WSP.
                    i += 2;
                    continue;
                }
                if is_wsp(b) {
                    pending_space = started;
                } else {
                    if pending_space {
                        out.push(b' ');
                        pending_space = false;
                    }
                    out.push(b);
                    started = true;
                }
                i += 1;
            }
            if crlf {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
}

/// Where canonical body bytes go.
pub(crate) trait BodySink {
    /// Takes the next canonical bytes.
    fn write(&mut self, bytes: &[u8]);
}

impl BodySink for Vec<u8> {
    fn write(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Size of the output buffer between the canonicalizer and its sink.
const OUT: usize = 16 * 1024;
const CRLFS: &[u8; 512] = &{
    let mut a = [0u8; 512];
    let mut i = 0;
    while i < 512 {
        a[i] = if i % 2 == 0 { b'\r' } else { b'\n' };
        i += 1;
    }
    a
};

/// A streaming body canonicalizer (RFC 6376 3.4.3, 3.4.4). Only CR LF ends a line; a bare
/// CR or LF is an ordinary byte.
#[derive(Debug, Clone)]
pub(crate) struct BodyCanon {
    canon: Canonicalization,
    /// Line ends seen but not written: they are written only if content follows.
    pending_crlf: u64,
    /// Relaxed: whitespace seen in the current line and not written yet.
    pending_wsp: bool,
    /// The last input byte was a CR whose LF may come in the next chunk.
    saw_cr: bool,
    /// Something other than trailing empty lines was written.
    emitted: bool,
    out: Vec<u8>,
}

impl BodyCanon {
    pub(crate) fn new(canon: Canonicalization) -> Self {
        BodyCanon {
            canon,
            pending_crlf: 0,
            pending_wsp: false,
            saw_cr: false,
            emitted: false,
            out: Vec::with_capacity(OUT),
        }
    }

    fn flush(&mut self, sink: &mut impl BodySink) {
        if !self.out.is_empty() {
            sink.write(&self.out);
            self.out.clear();
        }
    }

    fn put(&mut self, bytes: &[u8], sink: &mut impl BodySink) {
        if self.out.len() + bytes.len() > OUT {
            self.flush(sink);
            if bytes.len() > OUT {
                sink.write(bytes);
                return;
            }
        }
        self.out.extend_from_slice(bytes);
    }

    /// Writes `run` (non-empty content of the current line), with the line ends and the
    /// whitespace held back before it.
    fn content(&mut self, run: &[u8], sink: &mut impl BodySink) {
        while self.pending_crlf > 0 {
            let n = self.pending_crlf.min((CRLFS.len() / 2) as u64);
            self.put(&CRLFS[..2 * n as usize], sink);
            self.pending_crlf -= n;
        }
        if self.pending_wsp {
            self.put(b" ", sink);
            self.pending_wsp = false;
        }
        self.put(run, sink);
        self.emitted = true;
    }

    /// Canonicalizes the next `input` bytes of the body into `sink`.
    pub(crate) fn update(&mut self, mut input: &[u8], sink: &mut impl BodySink) {
        if self.saw_cr {
            let Some(&first) = input.first() else { return };
            self.saw_cr = false;
            if first == b'\n' {
                self.pending_wsp = false;
                self.pending_crlf += 1;
                input = &input[1..];
            } else {
                self.content(b"\r", sink);
            }
        }
        match self.canon {
            Canonicalization::Simple => self.update_simple(input, sink),
            Canonicalization::Relaxed => self.update_relaxed(input, sink),
        }
        self.flush(sink);
    }

    fn update_simple(&mut self, input: &[u8], sink: &mut impl BodySink) {
        // The output is the input with the trailing line ends held back: everything up to
        // the run of CR LF pairs (and a lone CR) that ends the chunk goes out as it is.
        // CR LF pairs cannot overlap, so pairing from the end finds the same line ends
        // as reading from the start.
        let mut end = input.len();
        if input.last() == Some(&b'\r') {
            self.saw_cr = true;
            end -= 1;
        }
        let mut held = 0;
        while end >= 2 && &input[end - 2..end] == b"\r\n" {
            end -= 2;
            held += 1;
        }
        if end > 0 {
            self.content(&input[..end], sink);
        }
        self.pending_crlf += held;
    }

    fn update_relaxed(&mut self, input: &[u8], sink: &mut impl BodySink) {
        let mut pos = 0;
        while pos < input.len() {
            // A run of bytes that stay as they are: anything above space, and single
            // spaces before such bytes (unless whitespace is already held back: then
            // the space belongs to that run of whitespace).
            let start = pos;
            while pos < input.len() {
                let b = input[pos];
                if b > b' ' {
                    pos += 1;
                } else if b == b' '
                    && (pos > start || !self.pending_wsp)
                    && input.get(pos + 1).is_some_and(|&n| n > b' ')
                {
                    pos += 2;
                } else {
                    break;
                }
            }
            if pos > start {
                self.content(&input[start..pos], sink);
            }
            let Some(&b) = input.get(pos) else { break };
            match b {
                b' ' | b'\t' => {
                    self.pending_wsp = true;
                    pos += 1;
                    while pos < input.len() && is_wsp(input[pos]) {
                        pos += 1;
                    }
                }
                b'\r' => match input.get(pos + 1) {
                    None => {
                        self.saw_cr = true;
                        pos += 1;
                    }
                    Some(b'\n') => {
                        // Whitespace before a line end is dropped (RFC 6376 3.4.4 a).
                        self.pending_wsp = false;
                        self.pending_crlf += 1;
                        pos += 2;
                    }
                    Some(_) => {
                        self.content(b"\r", sink);
                        pos += 1;
                    }
                },
                _ => {
                    // Another control byte (a bare LF, say): ordinary content.
                    self.content(&input[pos..pos + 1], sink);
                    pos += 1;
                }
            }
        }
    }

    /// Ends the body: a CR held back is content, trailing empty lines go, and the body
    /// ends with one CRLF ("simple": always; "relaxed": unless it is empty).
    ///
    /// A last line without CRLF made of whitespace only is an empty line under "relaxed"
    /// and goes too (RFC 6376 3.4.4). SMTP DATA always ends a message with CRLF, so only a
    /// BDAT body can end that way.
    pub(crate) fn finish(&mut self, sink: &mut impl BodySink) {
        if self.saw_cr {
            self.saw_cr = false;
            self.content(b"\r", sink);
        }
        self.pending_wsp = false;
        self.pending_crlf = 0;
        if self.emitted || self.canon == Canonicalization::Simple {
            self.put(b"\r\n", sink);
        }
        self.flush(sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(canon: Canonicalization, input: &[u8]) -> Vec<u8> {
        let mut c = BodyCanon::new(canon);
        let mut out = Vec::new();
        c.update(input, &mut out);
        c.finish(&mut out);
        out
    }

    fn body_split(canon: Canonicalization, input: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut c = BodyCanon::new(canon);
        let mut out = Vec::new();
        let mut rest = input;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].clamp(1, rest.len());
            c.update(&rest[..n], &mut out);
            rest = &rest[n..];
            i += 1;
        }
        c.finish(&mut out);
        out
    }

    fn head(canon: Canonicalization, field: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        header(canon, field, true, &mut out);
        out
    }

    /// RFC 6376 3.4.5, the example message, both algorithms, byte for byte.
    #[test]
    fn rfc6376_3_4_5_examples() {
        let fields: [&[u8]; 2] = [b"A: X\r\n", b"B : Y\t\r\n\tZ  \r\n"];
        let body_in = b" C \r\nD \t E\r\n\r\n\r\n";

        let relaxed: Vec<u8> = fields
            .iter()
            .flat_map(|f| head(Canonicalization::Relaxed, f))
            .collect();
        assert_eq!(relaxed, b"a:X\r\nb:Y Z\r\n");
        assert_eq!(body(Canonicalization::Relaxed, body_in), b" C\r\nD E\r\n");

        let simple: Vec<u8> = fields
            .iter()
            .flat_map(|f| head(Canonicalization::Simple, f))
            .collect();
        assert_eq!(simple, b"A: X\r\nB : Y\t\r\n\tZ  \r\n");
        assert_eq!(
            body(Canonicalization::Simple, body_in),
            b" C \r\nD \t E\r\n"
        );
    }

    #[test]
    fn body_table() {
        use Canonicalization::{Relaxed as R, Simple as S};
        let cases: &[(Canonicalization, &[u8], &[u8])] = &[
            // Empty bodies (RFC 6376 3.4.3, 3.4.4 and errata 3192).
            (S, b"", b"\r\n"),
            (R, b"", b""),
            (S, b"\r\n", b"\r\n"),
            (R, b"\r\n", b""),
            (S, b"\r\n\r\n\r\n", b"\r\n"),
            (R, b"\r\n\r\n\r\n", b""),
            // A missing final CRLF is added.
            (S, b"abc", b"abc\r\n"),
            (R, b"abc", b"abc\r\n"),
            // Trailing empty lines go, inner ones stay.
            (S, b"a\r\n\r\nb\r\n\r\n", b"a\r\n\r\nb\r\n"),
            (R, b"a\r\n\r\nb\r\n\r\n", b"a\r\n\r\nb\r\n"),
            // Trailing lines of whitespace only: under relaxed they are empty lines and go
            // (mail-auth 0.13.3 kept them); under simple they are content.
            (R, b"Hello.\r\n\r\n  \r\n\t\r\n", b"Hello.\r\n"),
            (R, b"Hello.\r\n \t \r\n", b"Hello.\r\n"),
            (R, b"  \r\n\t\r\n", b""),
            (S, b"Hello.\r\n  \r\n\t\r\n", b"Hello.\r\n  \r\n\t\r\n"),
            // Whitespace-only lines in the middle become empty lines under relaxed.
            (R, b"a\r\n  \r\nb\r\n", b"a\r\n\r\nb\r\n"),
            // Runs of WSP inside a line are one space; at the start too.
            (R, b"  a \t b\t\r\n", b" a b\r\n"),
            // Bare CR and bare LF are ordinary bytes.
            (S, b"a\rb\nc\r\n", b"a\rb\nc\r\n"),
            (R, b"a \rb\n c\r\n", b"a \rb\n c\r\n"),
            (R, b"a\t\r\r\n", b"a \r\r\n"),
            (S, b"a\r", b"a\r\r\n"),
            (R, b"a\r", b"a\r\r\n"),
            (S, b"\r\r\n", b"\r\r\n"),
            // A last line of whitespace without CRLF is an empty line under relaxed.
            (R, b"abc\r\n   ", b"abc\r\n"),
            (S, b"abc\r\n   ", b"abc\r\n   \r\n"),
            // 8-bit bytes pass through.
            (R, b"caf\xc3\xa9 \xff\r\n", b"caf\xc3\xa9 \xff\r\n"),
        ];
        for (canon, input, expected) in cases {
            assert_eq!(
                body(*canon, input),
                *expected,
                "{canon:?} {:?}",
                String::from_utf8_lossy(input)
            );
            for split in [&[1usize][..], &[2], &[3, 1], &[7, 2, 1]] {
                assert_eq!(
                    body_split(*canon, input, split),
                    *expected,
                    "{canon:?} {:?} split {split:?}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn header_table() {
        use Canonicalization::Relaxed as R;
        let cases: &[(&[u8], &[u8])] = &[
            (b"Subject: Hello\r\n", b"subject:Hello\r\n"),
            (b"SUBJECT:Hello  World \t\r\n", b"subject:Hello World\r\n"),
            (b"Subject :\r\n Hello\r\n", b"subject:Hello\r\n"),
            (b"Subject:\r\n", b"subject:\r\n"),
            (b"To: a,\r\n\tb,\r\n  c\r\n", b"to:a, b, c\r\n"),
            (b"X: caf\xc3\xa9\r\n", b"x:caf\xc3\xa9\r\n"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                head(R, input),
                *expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let mut out = Vec::new();
        header(Canonicalization::Simple, b"A: b\r\n", false, &mut out);
        header(R, b"A: b\r\n", false, &mut out);
        assert_eq!(out, b"A: ba:b");
    }

    #[test]
    fn c_values() {
        use Canonicalization::{Relaxed as R, Simple as S};
        assert_eq!(Canonicalization::parse_pair(b"relaxed"), Some((R, S)));
        assert_eq!(
            Canonicalization::parse_pair(b"simple/relaxed"),
            Some((S, R))
        );
        assert_eq!(
            Canonicalization::parse_pair(b"relaxed/relaxed"),
            Some((R, R))
        );
        assert_eq!(Canonicalization::parse_pair(b"Relaxed"), None);
        assert_eq!(Canonicalization::parse_pair(b"relaxed/"), None);
        assert_eq!(Canonicalization::parse_pair(b"a/b/c"), None);
    }

    #[test]
    fn a_million_empty_lines_stay_bounded() {
        let mut c = BodyCanon::new(Canonicalization::Simple);
        let mut out = Vec::new();
        let lines = b"\r\n".repeat(1 << 20);
        c.update(&lines, &mut out);
        assert!(out.is_empty());
        c.update(b"x", &mut out);
        assert_eq!(out.len(), (2 << 20) + 1);
    }

    proptest::proptest! {
        #[test]
        fn any_split_gives_the_same_body(
            input in proptest::collection::vec(proptest::sample::select(
                vec![b'a', b' ', b'\t', b'\r', b'\n', 0xff]), 0..200),
            sizes in proptest::collection::vec(1usize..9, 1..8),
        ) {
            for canon in [Canonicalization::Simple, Canonicalization::Relaxed] {
                proptest::prop_assert_eq!(body(canon, &input), body_split(canon, &input, &sizes));
                proptest::prop_assert_eq!(body(canon, &input), reference(canon, &input));
            }
        }
    }

    /// A direct, in-memory reading of RFC 6376 3.4.3 / 3.4.4 to compare the state machine
    /// against.
    fn reference(canon: Canonicalization, input: &[u8]) -> Vec<u8> {
        // Split into lines at CRLF; the last element is what follows the last CRLF.
        let mut lines: Vec<Vec<u8>> = Vec::new();
        let mut cur = Vec::new();
        let mut i = 0;
        while i < input.len() {
            if input[i] == b'\r' && input.get(i + 1) == Some(&b'\n') {
                lines.push(std::mem::take(&mut cur));
                i += 2;
            } else {
                cur.push(input[i]);
                i += 1;
            }
        }
        lines.push(cur);
        if canon == Canonicalization::Relaxed {
            for line in &mut lines {
                let mut out = Vec::new();
                let mut wsp = false;
                for &b in line.iter() {
                    if is_wsp(b) {
                        wsp = true;
                    } else {
                        if wsp {
                            out.push(b' ');
                        }
                        wsp = false;
                        out.push(b);
                    }
                }
                *line = out;
            }
        }
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        let mut out = Vec::new();
        for line in &lines {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        if out.is_empty() && canon == Canonicalization::Simple {
            out.extend_from_slice(b"\r\n");
        }
        out
    }
}
