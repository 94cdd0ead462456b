//! The tag=value list of RFC 6376 3.2, shared by DKIM-Signature, ARC-Seal,
//! ARC-Message-Signature, DKIM key records and DMARC records.
//!
//! ```text
//! tag-list  =  tag-spec *( ";" tag-spec ) [ ";" ]
//! tag-spec  =  [FWS] tag-name [FWS] "=" [FWS] tag-value [FWS]
//! tag-name  =  ALPHA *ALNUMPUNC
//! tag-value =  [ tval *( 1*(WSP / FWS) tval ) ]
//! tval      =  1*VALCHAR              ; %x21-3A / %x3C-7E
//! ```
//!
//! The parser borrows the input and keeps each value's position, so a verifier can blank
//! the `b=` value in the raw header field (RFC 6376 3.7) without re-serializing anything.

use std::ops::Range;

/// How many tags one list may carry; a longer list is refused. The largest registered
/// set (DKIM-Signature) has 14 tags, DMARC 11.
pub(crate) const MAX_TAGS: usize = 64;

/// One `name=value` of a tag list, borrowed from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tag<'a> {
    /// The tag name, as written (tag names are case-sensitive, RFC 6376 3.2).
    pub name: &'a [u8],
    /// The value without the surrounding whitespace; inner folding whitespace is kept.
    pub value: &'a [u8],
    /// Where the value sits in the parsed input, including the whitespace around it: from
    /// just after `=` to just before the next `;` (or the end).
    pub span: Range<usize>,
}

/// Why a tag list was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TagError {
    /// A tag-spec has no `=`.
    MissingEquals,
    /// A tag name is empty or has a character outside `ALPHA *(ALPHA / DIGIT / "_")`.
    BadName,
    /// A value holds a byte outside VALCHAR and whitespace (a control or 8-bit byte).
    BadValue,
    /// The same tag name twice: "the entire tag-list is invalid" (RFC 6376 3.2).
    Duplicate,
    /// More than [`MAX_TAGS`] tags.
    TooMany,
}

impl TagError {
    /// A short text for a result's reason.
    pub(crate) fn text(self) -> &'static str {
        match self {
            TagError::MissingEquals => "tag without '='",
            TagError::BadName => "bad tag name",
            TagError::BadValue => "bad character in tag value",
            TagError::Duplicate => "duplicate tag",
            TagError::TooMany => "too many tags",
        }
    }
}

/// A parsed tag list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TagList<'a> {
    tags: Vec<Tag<'a>>,
}

fn is_wsp(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn trim(input: &[u8], mut range: Range<usize>) -> Range<usize> {
    while range.start < range.end && is_wsp(input[range.start]) {
        range.start += 1;
    }
    while range.end > range.start && is_wsp(input[range.end - 1]) {
        range.end -= 1;
    }
    range
}

/// How strict the value syntax is: DKIM's VALCHAR excludes space inside a tval (spaces
/// are folding whitespace there, which is allowed anyway), DMARC's `dmarc-value` admits
/// `%x20`. Both refuse controls other than folding whitespace and all 8-bit bytes.
fn value_ok(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| matches!(b, 0x21..=0x3a | 0x3c..=0x7e) || is_wsp(b))
}

impl<'a> TagList<'a> {
    /// Parses `input` (a header field value, or a DNS TXT record).
    ///
    /// Empty tag-specs (`;;`, or a trailing `;`) are skipped: RFC 6376's grammar allows
    /// only the trailing one, but published records with `; ;` exist and skipping them
    /// changes no meaning.
    pub(crate) fn parse(input: &'a [u8]) -> Result<Self, TagError> {
        let mut tags: Vec<Tag<'a>> = Vec::new();
        let mut start = 0;
        while start <= input.len() {
            let end = memchr::memchr(b';', &input[start..]).map_or(input.len(), |p| start + p);
            let spec = trim(input, start..end);
            if !spec.is_empty() {
                let eq = memchr::memchr(b'=', &input[spec.clone()])
                    .map(|p| spec.start + p)
                    .ok_or(TagError::MissingEquals)?;
                let name_range = trim(input, spec.start..eq);
                let name = &input[name_range];
                let name_ok = name.first().is_some_and(u8::is_ascii_alphabetic)
                    && name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_');
                if !name_ok {
                    return Err(TagError::BadName);
                }
                let span = eq + 1..end;
                let value = &input[trim(input, span.clone())];
                if !value_ok(value) {
                    return Err(TagError::BadValue);
                }
                if tags.iter().any(|t| t.name == name) {
                    return Err(TagError::Duplicate);
                }
                if tags.len() == MAX_TAGS {
                    return Err(TagError::TooMany);
                }
                tags.push(Tag { name, value, span });
            }
            start = end + 1;
        }
        Ok(TagList { tags })
    }

    /// The value of tag `name`, if present.
    pub(crate) fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.tag(name).map(|t| t.value)
    }

    /// The whole tag `name`, if present.
    pub(crate) fn tag(&self, name: &str) -> Option<&Tag<'a>> {
        self.tags.iter().find(|t| t.name == name.as_bytes())
    }

    /// The tags in the order written.
    pub(crate) fn tags(&self) -> &[Tag<'a>] {
        &self.tags
    }
}

/// `value` with every whitespace byte removed (base64 values may be folded anywhere).
pub(crate) fn strip_wsp(value: &[u8]) -> Vec<u8> {
    // Sized once: a filter's size hint is 0, and `b=` is some 350 bytes, folded.
    let mut out = Vec::with_capacity(value.len());
    out.extend(value.iter().copied().filter(|&b| !is_wsp(b)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    type Pairs = Result<Vec<(String, String)>, TagError>;

    fn pairs(input: &str) -> Pairs {
        TagList::parse(input.as_bytes()).map(|list| {
            list.tags()
                .iter()
                .map(|t| {
                    (
                        String::from_utf8_lossy(t.name).into_owned(),
                        String::from_utf8_lossy(t.value).into_owned(),
                    )
                })
                .collect()
        })
    }

    fn p(list: &[(&str, &str)]) -> Pairs {
        Ok(list
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect())
    }

    #[test]
    fn table() {
        let cases: &[(&str, Pairs)] = &[
            ("", p(&[])),
            (";", p(&[])),
            ("v=1", p(&[("v", "1")])),
            ("v=1;", p(&[("v", "1")])),
            (
                " v = 1 ; a=rsa-sha256 ;",
                p(&[("v", "1"), ("a", "rsa-sha256")]),
            ),
            (
                "b=abc\r\n def ;bh=x",
                p(&[("b", "abc\r\n def"), ("bh", "x")]),
            ),
            ("k=;p=", p(&[("k", ""), ("p", "")])),
            ("v=DKIM1; ; p=abc", p(&[("v", "DKIM1"), ("p", "abc")])),
            ("x_y1=2", p(&[("x_y1", "2")])),
            ("v", Err(TagError::MissingEquals)),
            ("=1", Err(TagError::BadName)),
            ("1a=1", Err(TagError::BadName)),
            ("a-b=1", Err(TagError::BadName)),
            ("a=1; a=2", Err(TagError::Duplicate)),
            ("a=\x01", Err(TagError::BadValue)),
            ("a=caf\u{e9}", Err(TagError::BadValue)),
            ("h=from:to:subject", p(&[("h", "from:to:subject")])),
            ("a==b", p(&[("a", "=b")])),
        ];
        for (input, expected) in cases {
            assert_eq!(&pairs(input), expected, "{input:?}");
        }
    }

    #[test]
    fn spans_cover_the_whitespace_around_values() {
        let input = b"v=1; b= ab\r\n cd ; d=x";
        let list = TagList::parse(input).unwrap();
        let b = list.tag("b").unwrap();
        assert_eq!(&input[b.span.clone()], b" ab\r\n cd ");
        assert_eq!(b.value, b"ab\r\n cd");
        assert_eq!(strip_wsp(b.value), b"abcd");
    }

    #[test]
    fn too_many_tags() {
        let input: String = (0..=MAX_TAGS).map(|i| format!("t{i}=1;")).collect();
        assert_eq!(TagList::parse(input.as_bytes()), Err(TagError::TooMany));
    }
}
