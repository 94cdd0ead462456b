//! DKIM-Signature (RFC 6376 3.5), ARC-Message-Signature and ARC-Seal (RFC 8617 4.1)
//! header fields, parsed into what the verifier needs.

use std::ops::Range;

use base64::Engine as _;

use crate::canon::Canonicalization;
use crate::tag::{TagList, strip_wsp};

/// A signing algorithm (`a=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `rsa-sha1`: never a pass (RFC 8301 3.1), reported as `policy`.
    RsaSha1,
    /// `rsa-sha256` (RFC 6376 3.3).
    RsaSha256,
    /// `ed25519-sha256` (RFC 8463).
    Ed25519Sha256,
}

impl Algorithm {
    fn parse(value: &[u8]) -> Option<Self> {
        // Algorithm names are case-insensitive in practice; RFC 6376 3.5 gives them in
        // lower case.
        match value.to_ascii_lowercase().as_slice() {
            b"rsa-sha1" => Some(Algorithm::RsaSha1),
            b"rsa-sha256" => Some(Algorithm::RsaSha256),
            b"ed25519-sha256" => Some(Algorithm::Ed25519Sha256),
            _ => None,
        }
    }

    /// The name as written in `a=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RsaSha1 => "rsa-sha1",
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }

    /// The hash of this algorithm.
    pub(crate) fn hash(self) -> HashAlg {
        match self {
            Algorithm::RsaSha1 => HashAlg::Sha1,
            _ => HashAlg::Sha256,
        }
    }

    /// The key type (`k=` of the key record) this algorithm needs.
    pub(crate) fn key_type(self) -> &'static [u8] {
        match self {
            Algorithm::Ed25519Sha256 => b"ed25519",
            _ => b"rsa",
        }
    }
}

/// A hash algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum HashAlg {
    Sha1,
    Sha256,
}

impl HashAlg {
    pub(crate) fn as_bytes(self) -> &'static [u8] {
        match self {
            HashAlg::Sha1 => b"sha1",
            HashAlg::Sha256 => b"sha256",
        }
    }
}

/// A DKIM-Signature or ARC-Message-Signature, checked for syntax.
#[derive(Debug, Clone)]
pub(crate) struct Signature {
    pub algorithm: Algorithm,
    /// The signature (`b=`), decoded.
    pub b: Vec<u8>,
    /// The first characters of `b=` as written (whitespace removed), for `header.b`.
    pub b_text: String,
    /// The body hash (`bh=`), decoded.
    pub bh: Vec<u8>,
    pub header_canon: Canonicalization,
    pub body_canon: Canonicalization,
    /// The signing domain (`d=`), as written.
    pub domain: String,
    /// The selector (`s=`), as written.
    pub selector: String,
    /// Header field names to sign (`h=`), in order, lower case.
    pub headers: Vec<Vec<u8>>,
    /// The agent or user identifier (`i=`) of a DKIM-Signature, as written.
    pub identity: Option<String>,
    /// The body length count (`l=`).
    pub length: Option<u64>,
    /// Signature timestamp (`t=`), seconds since the epoch.
    pub timestamp: Option<u64>,
    /// Signature expiration (`x=`).
    pub expiration: Option<u64>,
    /// The ARC instance (`i=` of an ARC-Message-Signature).
    pub instance: Option<u32>,
    /// Where the `b=` value (with the whitespace around it) sits in the field value.
    pub b_span: Range<usize>,
}

/// An ARC-Seal (RFC 8617 4.1.3).
#[derive(Debug, Clone)]
pub(crate) struct Seal {
    pub instance: u32,
    pub cv: ChainStatus,
    pub algorithm: Algorithm,
    pub b: Vec<u8>,
    pub domain: String,
    pub selector: String,
    pub b_span: Range<usize>,
}

/// The chain validation status written in an ARC-Seal's `cv=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChainStatus {
    None,
    Pass,
    Fail,
}

/// What kind of field a signature was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dkim,
    ArcMessage,
}

/// Why a signature field is unusable. The text goes into a result's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SigError {
    /// Syntax: reported as `neutral` (RFC 8601 2.7.1).
    Syntax(String),
    /// An ARC-Seal with `rsa-sha1` (RFC 8301).
    Sha1,
    /// An ARC-Seal with `h=`.
    Invalid(String),
}

fn syntax(text: impl Into<String>) -> SigError {
    SigError::Syntax(text.into())
}

fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

fn decimal(value: &[u8], what: &str) -> Result<u64, SigError> {
    // RFC 6376 3.5: "l=" at most 76 digits, t= and x= 12 digits; values beyond u64 are
    // refused rather than wrapped.
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(syntax(format!("{what} is not a number")));
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| syntax(format!("{what} is too large")))
}

fn base64(value: &[u8], what: &str) -> Result<Vec<u8>, SigError> {
    base64::engine::general_purpose::STANDARD
        .decode(strip_wsp(value))
        .map_err(|_| syntax(format!("{what} is not base64")))
}

/// Whether `name` is a plausible DNS name for `d=` or `s=`: labels of letters, digits,
/// hyphens and underscores, 1-63 bytes each, 253 in all. Keeps control characters,
/// spaces and 8-bit bytes out of DNS queries and out of our header field.
pub(crate) fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The domain of an `i=` value (`[local-part] "@" domain`).
pub(crate) fn identity_domain(identity: &str) -> Option<&str> {
    identity.rsplit_once('@').map(|(_, domain)| domain)
}

/// Whether `sub` is `parent` or a subdomain of it, case-insensitively.
pub(crate) fn is_within(sub: &str, parent: &str) -> bool {
    let sub = sub.trim_end_matches('.');
    let parent = parent.trim_end_matches('.');
    if sub.eq_ignore_ascii_case(parent) {
        return true;
    }
    sub.len() > parent.len()
        && sub.as_bytes()[sub.len() - parent.len() - 1] == b'.'
        && sub[sub.len() - parent.len()..].eq_ignore_ascii_case(parent)
}

fn instance(value: &[u8]) -> Result<u32, SigError> {
    // RFC 8617 4.2.1: 1 to 50.
    match decimal(value, "i=")? {
        n @ 1..=50 => Ok(n as u32),
        _ => Err(syntax("i= is not an instance from 1 to 50")),
    }
}

fn required<'a>(tags: &TagList<'a>, name: &str) -> Result<&'a [u8], SigError> {
    tags.get(name)
        .ok_or_else(|| syntax(format!("missing {name}=")))
}

impl Signature {
    /// Parses the value of a DKIM-Signature (`kind` = Dkim) or ARC-Message-Signature
    /// field.
    pub(crate) fn parse(value: &[u8], kind: Kind) -> Result<Self, SigError> {
        let tags = TagList::parse(value).map_err(|e| syntax(e.text()))?;
        let instance = match kind {
            Kind::Dkim => {
                if required(&tags, "v")? != b"1" {
                    return Err(syntax("v= is not 1"));
                }
                None
            }
            Kind::ArcMessage => Some(instance(required(&tags, "i")?)?),
        };
        let algorithm =
            Algorithm::parse(required(&tags, "a")?).ok_or_else(|| syntax("unknown a="))?;
        let b_tag = tags.tag("b").ok_or_else(|| syntax("missing b="))?;
        let b = base64(b_tag.value, "b=")?;
        let b_text = text(&strip_wsp(b_tag.value));
        let bh = base64(required(&tags, "bh")?, "bh=")?;
        let (header_canon, body_canon) = match tags.get("c") {
            None => (Canonicalization::Simple, Canonicalization::Simple),
            Some(c) => Canonicalization::parse_pair(c).ok_or_else(|| syntax("unknown c="))?,
        };
        let domain = text(required(&tags, "d")?);
        if !is_dns_name(&domain) {
            return Err(syntax("d= is not a domain name"));
        }
        let selector = text(required(&tags, "s")?);
        if !is_dns_name(&selector) {
            return Err(syntax("s= is not a selector"));
        }
        let headers: Vec<Vec<u8>> = required(&tags, "h")?
            .split(|&b| b == b':')
            .map(|name| strip_wsp(name).to_ascii_lowercase())
            .collect();
        if headers.iter().any(Vec::is_empty) {
            return Err(syntax("empty name in h="));
        }
        if let Some(q) = tags.get("q") {
            // A colon-separated list of methods; dns/txt is the only one defined.
            let known = q
                .split(|&b| b == b':')
                .any(|m| strip_wsp(m).eq_ignore_ascii_case(b"dns/txt"));
            if !known {
                return Err(syntax("q= has no dns/txt"));
            }
        }
        let length = tags.get("l").map(|l| decimal(l, "l=")).transpose()?;
        let timestamp = tags.get("t").map(|t| decimal(t, "t=")).transpose()?;
        let expiration = tags.get("x").map(|x| decimal(x, "x=")).transpose()?;
        let identity = match kind {
            Kind::Dkim => tags.get("i").map(text),
            Kind::ArcMessage => None,
        };
        let signature = Signature {
            algorithm,
            b,
            b_text,
            bh,
            header_canon,
            body_canon,
            domain,
            selector,
            headers,
            identity,
            length,
            timestamp,
            expiration,
            instance,
            b_span: b_tag.span.clone(),
        };
        Ok(signature)
    }

    /// The checks of RFC 6376 6.1.1 beyond syntax: failing one is a `permerror`.
    pub(crate) fn check(&self, kind: Kind) -> Result<(), String> {
        if kind == Kind::Dkim && !self.headers.iter().any(|h| h == b"from") {
            return Err("h= does not sign From".into());
        }
        if kind == Kind::ArcMessage && self.headers.iter().any(|h| h == b"arc-seal") {
            // RFC 8617 4.1.2.
            return Err("h= signs ARC-Seal".into());
        }
        if let Some(identity) = &self.identity {
            match identity_domain(identity) {
                Some(domain) if is_within(domain, &self.domain) => {}
                _ => return Err("i= is not within d=".into()),
            }
        }
        if let (Some(t), Some(x)) = (self.timestamp, self.expiration) {
            if x < t {
                return Err("x= is before t=".into());
            }
        }
        Ok(())
    }
}

impl Seal {
    /// Parses the value of an ARC-Seal field.
    pub(crate) fn parse(value: &[u8]) -> Result<Self, SigError> {
        let tags = TagList::parse(value).map_err(|e| syntax(e.text()))?;
        let instance = instance(required(&tags, "i")?)?;
        let cv = match required(&tags, "cv")?.to_ascii_lowercase().as_slice() {
            b"none" => ChainStatus::None,
            b"pass" => ChainStatus::Pass,
            b"fail" => ChainStatus::Fail,
            _ => return Err(syntax("unknown cv=")),
        };
        if tags.get("h").is_some() {
            // RFC 8617 4.1.3: an h= tag in an ARC-Seal makes it invalid.
            return Err(SigError::Invalid("h= in ARC-Seal".into()));
        }
        let algorithm =
            Algorithm::parse(required(&tags, "a")?).ok_or_else(|| syntax("unknown a="))?;
        if algorithm == Algorithm::RsaSha1 {
            return Err(SigError::Sha1);
        }
        let b_tag = tags.tag("b").ok_or_else(|| syntax("missing b="))?;
        let b = base64(b_tag.value, "b=")?;
        let domain = text(required(&tags, "d")?);
        let selector = text(required(&tags, "s")?);
        if !is_dns_name(&domain) || !is_dns_name(&selector) {
            return Err(syntax("d= or s= is not a domain name"));
        }
        Ok(Seal {
            instance,
            cv,
            algorithm,
            b,
            domain,
            selector,
            b_span: b_tag.span.clone(),
        })
    }
}

/// The `i=` of an ARC field, read leniently (the field may be otherwise broken): the
/// instance it claims, for grouping fields into sets.
pub(crate) fn arc_instance(value: &[u8]) -> Option<u32> {
    // ARC-Authentication-Results starts "i=N;" and is not a tag list after that; the
    // seals and signatures are tag lists. Either way the i= tag comes first or is found
    // as a tag.
    let first = value.split(|&b| b == b';').next()?;
    let mut parts = first.splitn(2, |&b| b == b'=');
    let name = strip_wsp(parts.next()?);
    if name == b"i" {
        return instance(&strip_wsp(parts.next()?)).ok();
    }
    let tags = TagList::parse(value).ok()?;
    instance(tags.get("i")?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG: &str = "v=1; a=rsa-sha256; c=relaxed/simple; d=example.com; s=sel;\r\n \
        h=From : To:subject; bh=MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=;\r\n \
        i=joe@mail.example.com; l=100; t=1000; x=2000;\r\n b=YWJj\r\n ZGVm";

    #[test]
    fn parses_a_full_signature() {
        let s = Signature::parse(SIG.as_bytes(), Kind::Dkim).unwrap();
        assert_eq!(s.algorithm, Algorithm::RsaSha256);
        assert_eq!(s.header_canon, Canonicalization::Relaxed);
        assert_eq!(s.body_canon, Canonicalization::Simple);
        assert_eq!(s.domain, "example.com");
        assert_eq!(s.selector, "sel");
        assert_eq!(
            s.headers,
            vec![b"from".to_vec(), b"to".to_vec(), b"subject".to_vec()]
        );
        assert_eq!(s.identity.as_deref(), Some("joe@mail.example.com"));
        assert_eq!(
            (s.length, s.timestamp, s.expiration),
            (Some(100), Some(1000), Some(2000))
        );
        assert_eq!(s.b, b"abcdef");
        assert_eq!(s.b_text, "YWJjZGVm");
        assert_eq!(&SIG.as_bytes()[s.b_span.clone()], b"YWJj\r\n ZGVm");
    }

    fn err(value: &str) -> SigError {
        match Signature::parse(value.as_bytes(), Kind::Dkim) {
            Ok(sig) => SigError::Invalid(sig.check(Kind::Dkim).unwrap_err()),
            Err(e) => e,
        }
    }

    #[test]
    fn refusals() {
        let base = "v=1; a=rsa-sha256; d=example.com; s=sel; h=from; bh=YWJj; b=YWJj";
        assert!(Signature::parse(base.as_bytes(), Kind::Dkim).is_ok());
        let cases: &[(&str, SigError)] = &[
            (
                "v=2; a=rsa-sha256; d=e.com; s=s; h=from; bh=YWJj; b=YWJj",
                syntax("v= is not 1"),
            ),
            (
                "a=rsa-sha256; d=e.com; s=s; h=from; bh=YWJj; b=YWJj",
                syntax("missing v="),
            ),
            (
                "v=1; a=rsa-md5; d=e.com; s=s; h=from; bh=YWJj; b=YWJj",
                syntax("unknown a="),
            ),
            (
                "v=1; a=rsa-sha256; d=e.com; s=s; h=to; bh=YWJj; b=YWJj",
                SigError::Invalid("h= does not sign From".into()),
            ),
            (
                "v=1; a=rsa-sha256; d=e.com; s=s; h=from; bh=YWJj; b=Y!Jj",
                syntax("b= is not base64"),
            ),
            (
                "v=1; a=rsa-sha256; d=e com; s=s; h=from; bh=YWJj; b=YWJj",
                syntax("d= is not a domain name"),
            ),
            (
                "v=1; a=rsa-sha256; d=e.com; s=s; h=from; bh=YWJj; b=YWJj; i=@other.com",
                SigError::Invalid("i= is not within d=".into()),
            ),
            (
                "v=1; a=rsa-sha256; d=e.com; s=s; h=from; bh=YWJj; b=YWJj; i=@xe.com",
                SigError::Invalid("i= is not within d=".into()),
            ),
            (
                "v=1; a=rsa-sha256; d=e.com; s=s; h=from; bh=YWJj; b=YWJj; t=5; x=4",
                SigError::Invalid("x= is before t=".into()),
            ),
            (
                "v=1; a=rsa-sha256; d=e.com; s=s; h=from; bh=YWJj; b=YWJj; l=-1",
                syntax("l= is not a number"),
            ),
            (
                "v=1; a=rsa-sha256; d=e.com; s=s; h=from; bh=YWJj; b=YWJj; l=99999999999999999999999",
                syntax("l= is too large"),
            ),
            (
                "v=1; a=rsa-sha256; d=e.com; s=s; h=from; bh=YWJj; b=YWJj; q=http",
                syntax("q= has no dns/txt"),
            ),
            (
                "v=1; a=rsa-sha256; d=e.com; s=s; h=from::to; bh=YWJj; b=YWJj",
                syntax("empty name in h="),
            ),
            ("v=1; v=1; a=rsa-sha256", syntax("duplicate tag")),
        ];
        for (value, expected) in cases {
            assert_eq!(&err(value), expected, "{value}");
        }
    }

    #[test]
    fn identity_within_domain() {
        assert!(is_within("mail.example.com", "example.com"));
        assert!(is_within("Example.COM", "example.com"));
        assert!(!is_within("badexample.com", "example.com"));
        assert!(!is_within("example.com", "mail.example.com"));
        assert_eq!(identity_domain("@a.b"), Some("a.b"));
        assert_eq!(identity_domain("x@y@a.b"), Some("a.b"));
        assert_eq!(identity_domain("nobody"), None);
    }

    #[test]
    fn seals() {
        let s =
            Seal::parse(b"i=2; a=rsa-sha256; cv=pass; d=example.org; s=arc; t=1; b=YWJj").unwrap();
        assert_eq!((s.instance, s.cv), (2, ChainStatus::Pass));
        assert!(Seal::parse(b"i=2; a=rsa-sha256; cv=maybe; d=e.org; s=a; b=YWJj").is_err());
        assert!(Seal::parse(b"i=0; a=rsa-sha256; cv=none; d=e.org; s=a; b=YWJj").is_err());
        assert!(Seal::parse(b"i=51; a=rsa-sha256; cv=none; d=e.org; s=a; b=YWJj").is_err());
        assert!(matches!(
            Seal::parse(b"i=1; a=rsa-sha256; cv=none; d=e.org; s=a; h=from; b=YWJj"),
            Err(SigError::Invalid(_))
        ));
        assert_eq!(arc_instance(b" i=3; mx.example.org; spf=pass"), Some(3));
        assert_eq!(arc_instance(b"a=rsa-sha256; i=4; b=x"), Some(4));
        assert_eq!(arc_instance(b"i=x; foo"), None);
    }
}
