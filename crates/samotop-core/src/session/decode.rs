//! The end-of-data scanner: dot-unstuffing, and the one true end of data, `CR LF . CR LF`;
//! and the bare CR / bare LF detector for BDAT content.
//!
//! RFC 5321 4.5.2 (transparency) and 2.3.8 (lines end in CR LF only). A bare LF or bare CR never
//! ends a line for this scanner, so `LF . LF`, `CR . CR LF`, `LF . CR LF` never end the data (the
//! SMTP smuggling family); they are noted so that the session can refuse the message.

use bytes::BytesMut;

/// Where the scanner stands between two calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Inside a line.
    Body,
    /// Inside a line, a CR seen and held back.
    Cr,
    /// At the start of a line (after CR LF, or at the start of the data).
    LineStart,
    /// A dot at the start of a line, held back.
    Dot,
    /// A dot and a CR at the start of a line, both held back.
    DotCr,
}

/// Decodes SMTP DATA: removes the transparency dot and finds the end of data.
///
/// Feed it bytes in any split; output is the same for every split. It keeps no more than the
/// three bytes it holds back.
///
/// ```
/// use bytes::BytesMut;
/// use samotop_core::DataDecoder;
///
/// let mut decoder = DataDecoder::new();
/// let mut out = BytesMut::new();
/// let (used, end) = decoder.decode(b"Hi\r\n..dot\r\n.\r\nQUIT\r\n", &mut out, usize::MAX);
/// assert!(end);
/// assert_eq!(used, 14);
/// assert_eq!(&out[..], b"Hi\r\n.dot\r\n");
/// ```
#[derive(Debug, Clone)]
pub struct DataDecoder {
    state: State,
    bare_newline: bool,
}

impl Default for DataDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl DataDecoder {
    /// A decoder at the start of message data.
    pub fn new() -> Self {
        DataDecoder {
            state: State::LineStart,
            bare_newline: false,
        }
    }

    /// True once a bare CR or bare LF was seen in the data.
    pub fn saw_bare_newline(&self) -> bool {
        self.bare_newline
    }

    /// Decodes `input` into `out`, stopping at the end of data or once about `room` bytes were
    /// produced (at most `room + 2`). Returns the bytes of `input` consumed and whether the end
    /// of data (`CR LF . CR LF`) was reached; bytes after the end are not consumed.
    pub fn decode(&mut self, input: &[u8], out: &mut BytesMut, room: usize) -> (usize, bool) {
        let start = out.len();
        let mut i = 0;
        while i < input.len() {
            let produced = out.len() - start;
            if produced >= room {
                break;
            }
            match self.state {
                State::Body => {
                    let limit = input.len().min(i.saturating_add(room - produced));
                    match memchr::memchr2(b'\r', b'\n', &input[i..limit]) {
                        None => {
                            out.extend_from_slice(&input[i..limit]);
                            i = limit;
                        }
                        Some(k) => {
                            out.extend_from_slice(&input[i..i + k]);
                            let b = input[i + k];
                            i += k + 1;
                            if b == b'\r' {
                                self.state = State::Cr;
                            } else {
                                self.bare_newline = true;
                                out.extend_from_slice(b"\n");
                            }
                        }
                    }
                }
                State::Cr => {
                    if input[i] == b'\n' {
                        out.extend_from_slice(b"\r\n");
                        i += 1;
                        self.state = State::LineStart;
                    } else {
                        self.bare_newline = true;
                        out.extend_from_slice(b"\r");
                        self.state = State::Body;
                    }
                }
                State::LineStart => {
                    if input[i] == b'.' {
                        i += 1;
                        self.state = State::Dot;
                    } else {
                        self.state = State::Body;
                    }
                }
                State::Dot => {
                    // The leading dot is transparency; it is dropped whatever follows.
                    if input[i] == b'\r' {
                        i += 1;
                        self.state = State::DotCr;
                    } else {
                        self.state = State::Body;
                    }
                }
                State::DotCr => {
                    if input[i] == b'\n' {
                        self.state = State::LineStart;
                        return (i + 1, true);
                    }
                    self.bare_newline = true;
                    out.extend_from_slice(b"\r");
                    self.state = State::Body;
                }
            }
        }
        (i, false)
    }
}

/// Finds bare CR and bare LF in content that has no end marker (BDAT chunks, RFC 3030),
/// across any split: a CR must be followed by LF, an LF preceded by CR (RFC 5321 2.3.8).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BareNewlines {
    /// The last byte seen was CR.
    cr: bool,
    found: bool,
}

impl BareNewlines {
    /// Looks at the next bytes.
    pub(crate) fn scan(&mut self, input: &[u8]) {
        if self.found {
            return;
        }
        let mut i = 0;
        if self.cr {
            match input.first() {
                None => return,
                Some(b'\n') => i = 1,
                Some(_) => {
                    self.found = true;
                    return;
                }
            }
            self.cr = false;
        }
        while let Some(k) = memchr::memchr2(b'\r', b'\n', &input[i..]) {
            let at = i + k;
            if input[at] == b'\n' {
                self.found = true;
                return;
            }
            match input.get(at + 1) {
                Some(b'\n') => i = at + 2,
                Some(_) => {
                    self.found = true;
                    return;
                }
                None => {
                    self.cr = true;
                    return;
                }
            }
        }
    }

    /// True once a bare CR or LF was seen, or the content ended on a CR.
    pub(crate) fn found(&self) -> bool {
        self.found || self.cr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference model: find the first CRLF.CRLF (or .CRLF at the very start), then undo
    /// the dot-stuffing line by line.
    fn reference(input: &[u8]) -> Option<(Vec<u8>, usize, bool)> {
        let mut data = b"\r\n".to_vec();
        data.extend_from_slice(input);
        let pos = data.windows(5).position(|w| w == b"\r\n.\r\n")?;
        let body = &data[2..pos + 2];
        let end = pos + 5 - 2;
        let mut out = Vec::new();
        let mut line_start = true;
        for (idx, &b) in body.iter().enumerate() {
            if line_start && b == b'.' {
                line_start = false;
                continue;
            }
            out.push(b);
            line_start = b == b'\n' && idx > 0 && body[idx - 1] == b'\r';
        }
        let bare = body.iter().enumerate().any(|(i, &b)| {
            (b == b'\n' && (i == 0 || body[i - 1] != b'\r'))
                || (b == b'\r' && body.get(i + 1) != Some(&b'\n'))
        });
        Some((out, end, bare))
    }

    fn decode_split(input: &[u8], split: usize, room: usize) -> Option<(Vec<u8>, usize, bool)> {
        let mut d = DataDecoder::new();
        let mut out = BytesMut::new();
        let mut pos = 0;
        let mut steps = 0;
        while pos < input.len() && steps < 100_000 {
            steps += 1;
            let end = (pos + split).min(input.len());
            let (n, done) = d.decode(&input[pos..end], &mut out, room);
            pos += n;
            if done {
                return Some((out.to_vec(), pos, d.saw_bare_newline()));
            }
        }
        None
    }

    #[test]
    fn table() {
        let cases: &[&[u8]] = &[
            b".\r\n",
            b"a\r\n.\r\n",
            b"..\r\n.\r\n",
            b"..a\r\n.b\r\n.\r\n",
            b"a\n.\nb\r\n.\r\n",
            b"a\r.\r\nb\r\n.\r\n",
            b"a\n.\r\nMAIL FROM:<x@y>\r\n.\r\n",
            b"a\r\n.\rb\r\n.\r\n",
            b"a\r\n.\nb\r\n.\r\n",
            b"\r\n\r\n.\r\n",
            b"x\r\r\n.\r\n",
            b"\xff\x00\x80\r\n.\r\nQUIT\r\n",
            b"a\r\n..\r\n.\r\n",
            b"no end\r\n",
            b"no end\n.\n",
        ];
        for &case in cases {
            let expected = reference(case);
            for split in [1, 2, 3, 7, 1000] {
                for room in [1, 3, 64, usize::MAX] {
                    let got = decode_split(case, split, room);
                    assert_eq!(got, expected, "case {:?} split {split} room {room}", case);
                }
            }
        }
    }

    #[test]
    fn bare_newlines_in_any_split() {
        let cases: &[(&[u8], bool)] = &[
            (b"", false),
            (b"a\r\nb\r\n", false),
            (b"a\nb", true),
            (b"a\rb", true),
            (b"a\r", true),
            (b"\n", true),
            (b"\r\n\r\n\r\n", false),
            (b"a\r\r\n", true),
        ];
        for (input, bare) in cases {
            for split in 1..=3 {
                let mut d = BareNewlines::default();
                for part in input.chunks(split) {
                    d.scan(part);
                }
                assert_eq!(d.found(), *bare, "{input:?} split {split}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn matches_reference(input in proptest::collection::vec(
            proptest::sample::select(vec![b'\r', b'\n', b'.', b'a', 0u8, 0xffu8]), 0..64),
            split in 1usize..9, room in 1usize..16) {
            let mut data = input.clone();
            data.extend_from_slice(b"\r\n.\r\n");
            proptest::prop_assert_eq!(decode_split(&data, split, room), reference(&data));
        }
    }
}
