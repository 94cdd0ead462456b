//! The header section of a message on its way through the session: forged verdicts are
//! renamed, and the section's digest identifies the message across retries.
//!
//! * RFC 8601 5: an `Authentication-Results` (or `ARC-Authentication-Results`) field that
//!   arrives with our authserv-id claims a verdict we never gave. It is renamed to
//!   `X-Forged-Authentication-Results` before anything stores it, so that Sieve scripts, mail
//!   clients and spam filters reading our verdicts cannot be fooled.
//! * The digest (SHA-256 over the sender and the header section as passed on) is the
//!   identity of a message that a client sends again after a 4xx: see
//!   [`Envelope::digest`](crate::Envelope::digest).
//!
//! The scanner works line by line on the unstuffed data, in any split, and holds back at
//! most one line ([`MAX_LINE`]) or one suspect field ([`MAX_HELD`]); everything else passes
//! through at once. Past the end of the header section it is a no-op.

use bytes::BytesMut;
use sha2::{Digest, Sha256};

/// A partial line longer than this is passed on without waiting for its end.
const MAX_LINE: usize = 4096;
/// A suspect field is decided once this much of it is known (its authserv-id comes first;
/// one that hides it behind more comments than this is renamed).
const MAX_HELD: usize = 4096;
/// The header section is digested up to this size; a longer one gets no digest.
const MAX_DIGESTED: usize = 256 * 1024;

/// The prefix given to a forged field's name.
pub(crate) const FORGED_PREFIX: &str = "X-Forged-";

/// The fields that carry verdicts.
const VERDICT_FIELDS: [&str; 2] = ["authentication-results", "arc-authentication-results"];

/// Where the scanner stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// In the header section.
    Header,
    /// Past the empty line that ends it (or the scanner was never started).
    Body,
}

/// Renames forged verdict fields and digests the header section. See the module docs.
#[derive(Debug)]
pub(crate) struct HeaderScanner {
    part: Part,
    /// Our authserv-id (the server name), lower case.
    authserv_id: String,
    /// The line being received, not yet passed on.
    line: Vec<u8>,
    /// A verdict field being held back until it is complete (or [`MAX_HELD`]).
    held: Vec<u8>,
    /// The held field was too long and is being passed on as it comes.
    streaming_held: bool,
    /// The start of the current line was already passed on ([`flush`](Self::flush)); the
    /// rest of it follows as it comes.
    mid_line: bool,
    hasher: Option<Sha256>,
    digested: usize,
    digest: Option<[u8; 32]>,
    renamed: usize,
}

impl HeaderScanner {
    /// A scanner at the start of a message from `sender`, for a server named `authserv_id`.
    pub(crate) fn new(authserv_id: &str, sender: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(sender.as_bytes());
        hasher.update([0u8]);
        HeaderScanner {
            part: Part::Header,
            authserv_id: authserv_id.to_ascii_lowercase(),
            line: Vec::new(),
            held: Vec::new(),
            streaming_held: false,
            mid_line: false,
            hasher: Some(hasher),
            digested: 0,
            digest: None,
            renamed: 0,
        }
    }

    /// A scanner that passes everything on untouched (no header section is expected).
    #[cfg(test)]
    pub(crate) fn body() -> Self {
        let mut s = HeaderScanner::new("", "");
        s.part = Part::Body;
        s.hasher = None;
        s
    }

    /// True once the empty line that ends the header section has passed.
    pub(crate) fn header_done(&self) -> bool {
        self.part == Part::Body
    }

    /// The header section's digest, once it ended within [`MAX_DIGESTED`] bytes.
    pub(crate) fn digest(&self) -> Option<[u8; 32]> {
        self.digest
    }

    /// How many forged fields were renamed.
    pub(crate) fn renamed(&self) -> usize {
        self.renamed
    }

    /// Passes `input` on to `out`, renaming what must be renamed. Bytes of an unfinished
    /// line or suspect field may be held back until the next call or [`finish`].
    pub(crate) fn scan(&mut self, input: &[u8], out: &mut BytesMut) {
        if self.part == Part::Body && self.line.is_empty() && self.held.is_empty() {
            out.extend_from_slice(input);
            return;
        }
        let mut rest = input;
        while !rest.is_empty() {
            if self.part == Part::Body {
                out.extend_from_slice(rest);
                return;
            }
            if self.mid_line {
                let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
                let (now, later) = rest.split_at(end);
                self.emit(now, out);
                self.mid_line = now.last() != Some(&b'\n');
                rest = later;
                continue;
            }
            match memchr::memchr(b'\n', rest) {
                Some(i) => {
                    self.line.extend_from_slice(&rest[..=i]);
                    rest = &rest[i + 1..];
                    let line = std::mem::take(&mut self.line);
                    self.header_line(line, out);
                }
                None => {
                    self.line.extend_from_slice(rest);
                    rest = &[];
                    if self.line.len() > MAX_LINE {
                        self.long_partial_line(out);
                    }
                }
            }
        }
    }

    /// True when [`flush`](Self::flush) would pass bytes on.
    pub(crate) fn can_flush(&self) -> bool {
        self.part == Part::Header
            && !self.line.is_empty()
            && self.held.is_empty()
            && !could_be_verdict_field(&self.line)
    }

    /// A pause in the data: passes the unfinished line on if it cannot be a verdict field
    /// (which must wait until its authserv-id is known).
    pub(crate) fn flush(&mut self, out: &mut BytesMut) {
        if self.can_flush() {
            let line = std::mem::take(&mut self.line);
            self.emit(&line, out);
            self.mid_line = true;
        }
    }

    /// The end of the data: whatever is held back goes out.
    pub(crate) fn finish(&mut self, out: &mut BytesMut) {
        if !self.held.is_empty() {
            self.decide_held(out, true);
        }
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.emit(&line, out);
        }
        self.part = Part::Body;
        self.hasher = None;
    }

    /// One complete line of the header section (ending in LF).
    fn header_line(&mut self, line: Vec<u8>, out: &mut BytesMut) {
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if continuation {
            if self.streaming_held {
                self.emit(&line, out);
            } else if !self.held.is_empty() {
                self.held.extend_from_slice(&line);
                if self.held.len() > MAX_HELD {
                    self.decide_held(out, false);
                    self.streaming_held = true;
                }
            } else {
                self.emit(&line, out);
            }
            return;
        }
        // A new field, or the end of the section: the held field is complete.
        if !self.held.is_empty() {
            self.decide_held(out, true);
        }
        self.streaming_held = false;
        if line == b"\r\n" || line == b"\n" {
            self.emit(&line, out);
            self.end_of_header();
            return;
        }
        if is_verdict_field(&line) {
            self.held = line;
            if self.held.len() > MAX_HELD {
                self.decide_held(out, false);
                self.streaming_held = true;
            }
        } else {
            self.emit(&line, out);
        }
    }

    /// A line that does not end within [`MAX_LINE`]: pass it on, deciding now if it starts a
    /// verdict field (renamed: its authserv-id could not be read).
    fn long_partial_line(&mut self, out: &mut BytesMut) {
        let line = std::mem::take(&mut self.line);
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if continuation && !self.held.is_empty() && !self.streaming_held {
            self.held.extend_from_slice(&line);
            self.decide_held(out, false);
            self.streaming_held = true;
            return;
        }
        if !continuation {
            if !self.held.is_empty() {
                self.decide_held(out, true);
            }
            self.streaming_held = false;
            if is_verdict_field(&line) {
                self.held = line;
                self.decide_held(out, false);
                self.streaming_held = true;
                return;
            }
        }
        self.emit(&line, out);
    }

    /// Passes the held field on, renamed if it claims our authserv-id. `complete`: the
    /// field ends here (else more of it follows, unseen: an id not yet read is hidden).
    fn decide_held(&mut self, out: &mut BytesMut, complete: bool) {
        let held = std::mem::take(&mut self.held);
        if claims(&held, &self.authserv_id, complete) {
            self.renamed += 1;
            let mut renamed = Vec::with_capacity(held.len() + FORGED_PREFIX.len());
            renamed.extend_from_slice(FORGED_PREFIX.as_bytes());
            renamed.extend_from_slice(&held);
            self.emit(&renamed, out);
        } else {
            self.emit(&held, out);
        }
    }

    fn emit(&mut self, bytes: &[u8], out: &mut BytesMut) {
        out.extend_from_slice(bytes);
        if let Some(hasher) = self.hasher.as_mut() {
            self.digested += bytes.len();
            if self.digested > MAX_DIGESTED {
                self.hasher = None;
            } else {
                hasher.update(bytes);
            }
        }
    }

    fn end_of_header(&mut self) {
        self.part = Part::Body;
        if let Some(hasher) = self.hasher.take() {
            self.digest = Some(hasher.finalize().into());
        }
    }
}

/// True when the line starts a field named `Authentication-Results` or
/// `ARC-Authentication-Results` (any case, white space before the colon allowed).
fn is_verdict_field(line: &[u8]) -> bool {
    let Some(colon) = memchr::memchr(b':', &line[..line.len().min(64)]) else {
        return false;
    };
    let name = line[..colon].trim_ascii_end();
    VERDICT_FIELDS
        .iter()
        .any(|f| name.eq_ignore_ascii_case(f.as_bytes()))
}

/// True when an unfinished line may still turn out to start a verdict field (or a
/// continuation of one: only held fields have those held back).
fn could_be_verdict_field(partial: &[u8]) -> bool {
    if matches!(partial.first(), Some(b' ' | b'\t')) {
        return false;
    }
    if memchr::memchr(b':', partial).is_some() {
        return is_verdict_field(partial);
    }
    let name = partial.trim_ascii_end();
    name.len() <= 64
        && VERDICT_FIELDS
            .iter()
            .any(|f| f.len() >= name.len() && f.as_bytes()[..name.len()].eq_ignore_ascii_case(name))
}

/// True when a verdict field (name, colon, value, folded lines) claims `ours` as its
/// authserv-id, or hides it: [`crate::claims_authserv_id`], the predicate samotop-auth
/// shares; a field cut short (`complete` false) whose id is not read yet is hidden.
pub(crate) fn claims(field: &[u8], ours: &str, complete: bool) -> bool {
    let Some(colon) = memchr::memchr(b':', field) else {
        return false;
    };
    crate::authres::claims(&field[..colon], &field[colon + 1..], ours, complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8], split: usize) -> (Vec<u8>, HeaderScanner) {
        let mut s = HeaderScanner::new("mx.example", "a@b");
        let mut out = BytesMut::new();
        for part in input.chunks(split.max(1)) {
            s.scan(part, &mut out);
        }
        s.finish(&mut out);
        (out.to_vec(), s)
    }

    #[test]
    fn forged_verdicts_are_renamed_in_any_split() {
        let input: &[u8] = b"Received: x\r\n\
            Authentication-Results: mx.example; dmarc=pass\r\n\
            authentication-results : (c (nested)) MX.EXAMPLE;\r\n\tdkim=pass\r\n\
            Authentication-Results: other.example; spf=pass\r\n\
            ARC-Authentication-Results: i=1; mx.example; arc=none\r\n\
            ARC-Authentication-Results: i=2; other.example; arc=pass\r\n\
            Subject: Authentication-Results: mx.example\r\n\
            \r\n\
            Authentication-Results: mx.example; in the body\r\n";
        let expected: &[u8] = b"Received: x\r\n\
            X-Forged-Authentication-Results: mx.example; dmarc=pass\r\n\
            X-Forged-authentication-results : (c (nested)) MX.EXAMPLE;\r\n\tdkim=pass\r\n\
            Authentication-Results: other.example; spf=pass\r\n\
            X-Forged-ARC-Authentication-Results: i=1; mx.example; arc=none\r\n\
            ARC-Authentication-Results: i=2; other.example; arc=pass\r\n\
            Subject: Authentication-Results: mx.example\r\n\
            \r\n\
            Authentication-Results: mx.example; in the body\r\n";
        for split in [1, 2, 3, 5, 7, 13, 64, 10_000] {
            let (out, s) = run(input, split);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(expected),
                "split {split}"
            );
            assert_eq!(s.renamed(), 3);
            assert!(s.header_done());
        }
    }

    #[test]
    fn authserv_id_forms() {
        let ours = "mx.example";
        for (field, claims_ours) in [
            (&b"Authentication-Results: mx.example; none"[..], true),
            (b"Authentication-Results: mx.example 1; none", true),
            (b"Authentication-Results: \"mx.example\"; none", true),
            (b"Authentication-Results:mx.example;none", true),
            (b"Authentication-Results: mx.example.evil; none", false),
            (b"Authentication-Results: (unclosed mx.example; none", true),
            (b"Authentication-Results: ; none", false),
            (b"Authentication-Results: evil (mx.example); none", false),
            (b"Authentication-Results:", false),
        ] {
            assert_eq!(
                claims(field, ours, true),
                claims_ours,
                "{}",
                String::from_utf8_lossy(field)
            );
        }
    }

    #[test]
    fn the_digest_is_the_header_section() {
        let a = run(b"Subject: x\r\nMessage-ID: <1@x>\r\n\r\nbody one\r\n", 3).1;
        let b = run(b"Subject: x\r\nMessage-ID: <1@x>\r\n\r\nbody two\r\n", 100).1;
        let c = run(b"Subject: y\r\nMessage-ID: <1@x>\r\n\r\nbody one\r\n", 3).1;
        assert!(a.digest().is_some());
        assert_eq!(a.digest(), b.digest());
        assert_ne!(a.digest(), c.digest());
        // No end of the header section: no digest.
        assert_eq!(run(b"Subject: x\r\n", 1).1.digest(), None);
    }

    #[test]
    fn a_huge_suspect_field_is_renamed_and_streamed() {
        let mut input = b"Authentication-Results: (".to_vec();
        input.extend(std::iter::repeat_n(b'x', 20_000));
        input.extend_from_slice(b") mx.example; dmarc=pass\r\n\tmore\r\nSubject: s\r\n\r\nb");
        let (out, s) = run(&input, 1000);
        assert!(out.starts_with(b"X-Forged-Authentication-Results: ("));
        assert!(out.ends_with(b") mx.example; dmarc=pass\r\n\tmore\r\nSubject: s\r\n\r\nb"));
        assert_eq!(out.len(), input.len() + FORGED_PREFIX.len());
        assert_eq!(s.renamed(), 1);
    }

    #[test]
    fn a_pause_passes_an_innocent_partial_line_on() {
        let mut s = HeaderScanner::new("mx.example", "a@b");
        let mut out = BytesMut::new();
        s.scan(b"Subject: slo", &mut out);
        assert!(out.is_empty() && s.can_flush());
        s.flush(&mut out);
        assert_eq!(&out[..], b"Subject: slo");
        s.scan(b"w\r\nAuthentication-Res", &mut out);
        assert!(!s.can_flush(), "this may be a verdict field");
        s.scan(b"ults: mx.example; x\r\n\r\n", &mut out);
        s.finish(&mut out);
        assert_eq!(
            &out[..],
            b"Subject: slow\r\nX-Forged-Authentication-Results: mx.example; x\r\n\r\n"
        );
        // The digest is the same as without the pause.
        let mut t = HeaderScanner::new("mx.example", "a@b");
        let mut out2 = BytesMut::new();
        t.scan(
            b"Subject: slow\r\nAuthentication-Results: mx.example; x\r\n\r\n",
            &mut out2,
        );
        assert_eq!(s.digest(), t.digest());
    }

    /// A forged field whose authserv-id comes only after more than [`MAX_HELD`] bytes of
    /// folded comments, or after a line longer than [`MAX_LINE`] of white space, cannot
    /// slip through: its id is not read yet when it must be decided, so it is renamed.
    #[test]
    fn an_id_pushed_past_the_held_bound_is_renamed() {
        let mut folded = b"Authentication-Results: (c)\r\n".to_vec();
        for _ in 0..400 {
            folded.extend_from_slice(b" (comment)\r\n");
        }
        folded.extend_from_slice(b" mx.example; dmarc=pass\r\n\r\nb");
        let mut spaces = b"Authentication-Results:".to_vec();
        spaces.extend(std::iter::repeat_n(b' ', MAX_LINE + 100));
        spaces.extend_from_slice(b"mx.example; dmarc=pass\r\n\r\nb");
        let mut cut_token = b"Authentication-Results:".to_vec();
        cut_token.extend(std::iter::repeat_n(b' ', MAX_LINE - 30));
        cut_token.extend_from_slice(b"mx.example; dmarc=pass\r\n\r\nb");
        for input in [folded, spaces, cut_token] {
            for split in [1, 100, 4000, 100_000] {
                let (out, s) = run(&input, split);
                assert!(
                    out.starts_with(b"X-Forged-Authentication-Results:"),
                    "split {split}"
                );
                assert_eq!(s.renamed(), 1);
            }
        }
        // An honest long field of another receiver is left alone.
        let mut other = b"Authentication-Results: other.example;".to_vec();
        for _ in 0..400 {
            other.extend_from_slice(b"\r\n (comment)");
        }
        other.extend_from_slice(b"\r\n\r\nb");
        let (out, s) = run(&other, 1000);
        assert_eq!(out, other);
        assert_eq!(s.renamed(), 0);
    }

    #[test]
    fn bodies_pass_untouched() {
        let mut s = HeaderScanner::body();
        let mut out = BytesMut::new();
        s.scan(b"Authentication-Results: mx.example;\r\n", &mut out);
        s.finish(&mut out);
        assert_eq!(&out[..], b"Authentication-Results: mx.example;\r\n");
    }
}
