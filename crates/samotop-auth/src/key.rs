//! DKIM key records (RFC 6376 3.6.1, RFC 8463 for ed25519) and the signature check itself.

use std::sync::Arc;

use base64::Engine as _;
use rsa::pkcs1::der::Decode as _;

use crate::scanner::Hasher;
use crate::signature::{Algorithm, HashAlg};
use crate::tag::{TagList, strip_wsp};

/// The smallest RSA key that can give a pass (RFC 8301 3.2).
pub const MIN_RSA_BITS: usize = 1024;
/// The largest RSA key we verify with; bigger keys are a cost (CPU) without a use.
pub const MAX_RSA_BITS: usize = 8192;

/// A public key from a key record.
#[derive(Debug, Clone)]
pub(crate) enum PublicKey {
    /// Modulus and exponent (big-endian, no leading zeros), checked with ring: its
    /// assembly-backed arithmetic verifies an RSA-2048 signature about ten times as fast as
    /// RustCrypto `rsa` (docs/PERFORMANCE.md), and rustls already brings it.
    Rsa(RsaKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// An RSA public key's components.
#[derive(Debug, Clone)]
pub(crate) struct RsaKey {
    n: Vec<u8>,
    e: Vec<u8>,
}

impl RsaKey {
    fn bits(&self) -> usize {
        bit_len(&self.n)
    }
}

/// The bits of a big-endian unsigned integer with no leading zero bytes.
fn bit_len(be: &[u8]) -> usize {
    match be.first() {
        Some(&top) => be.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    }
}

impl PublicKey {
    /// The key size in bits (256 for ed25519).
    pub(crate) fn bits(&self) -> usize {
        match self {
            PublicKey::Rsa(key) => key.bits(),
            PublicKey::Ed25519(_) => 256,
        }
    }

    /// Checks signature `sig` over `input` (the header hash input, RFC 6376 3.7): RSA
    /// PKCS#1 v1.5 over its hash; ed25519 over its SHA-256 (RFC 8463 3).
    pub(crate) fn verify(&self, algorithm: Algorithm, input: &[u8], sig: &[u8]) -> bool {
        use ring::signature::{self as ring_sig, RsaPublicKeyComponents};
        // ring's "legacy" parameters take 1024 to 8192 bits: the key size policy is ours
        // (MIN_RSA_BITS, checked before a key is used; MAX_RSA_BITS at parse).
        let rsa = |params: &'static ring_sig::RsaParameters, key: &RsaKey| {
            RsaPublicKeyComponents {
                n: &key.n,
                e: &key.e,
            }
            .verify(params, input, sig)
            .is_ok()
        };
        match (self, algorithm) {
            (PublicKey::Rsa(key), Algorithm::RsaSha256) => rsa(
                &ring_sig::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
                key,
            ),
            (PublicKey::Rsa(key), Algorithm::RsaSha1) => {
                rsa(&ring_sig::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY, key)
            }
            (PublicKey::Ed25519(key), Algorithm::Ed25519Sha256) => {
                match ed25519_dalek::Signature::from_slice(sig) {
                    Ok(sig) => {
                        let digest = Hasher::digest(HashAlg::Sha256, input);
                        key.verify_strict(&digest, &sig).is_ok()
                    }
                    Err(_) => false,
                }
            }
            _ => false,
        }
    }
}

/// A parsed key record.
#[derive(Debug, Clone)]
pub(crate) struct KeyRecord {
    /// The key; `None` when `p=` is empty: the key is revoked.
    pub key: Option<PublicKey>,
    /// `k=`, lower case (default `rsa`).
    pub key_type: Vec<u8>,
    /// `h=`: the acceptable hashes, `None` for all.
    pub hashes: Option<Vec<Vec<u8>>>,
    /// `t=y`: the domain is testing DKIM.
    pub testing: bool,
    /// `t=s`: `i=` must be in exactly `d=`, not a subdomain.
    pub strict: bool,
}

impl KeyRecord {
    /// Whether this key may be used with `hash` (the key's `h=`).
    pub(crate) fn allows(&self, hash: HashAlg) -> bool {
        match &self.hashes {
            None => true,
            Some(list) => list.iter().any(|h| h == hash.as_bytes()),
        }
    }
}

/// Why a key record is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyError {
    /// A `v=` other than `DKIM1`, or not first: "MUST be discarded" (RFC 6376 3.6.1).
    Version,
    /// Not a tag list, or no `p=`.
    Syntax(String),
    /// `s=` names neither `*` nor `email`.
    Service,
    /// `p=` does not decode to a key of type `k=`.
    BadKey(String),
}

impl KeyError {
    pub(crate) fn text(&self) -> String {
        match self {
            KeyError::Version => "key record v= is not DKIM1".into(),
            KeyError::Syntax(why) => format!("bad key record: {why}"),
            KeyError::Service => "key is not for email (s=)".into(),
            KeyError::BadKey(why) => format!("bad key: {why}"),
        }
    }
}

fn list(value: &[u8]) -> Vec<Vec<u8>> {
    value
        .split(|&b| b == b':')
        .map(|v| strip_wsp(v).to_ascii_lowercase())
        .filter(|v| !v.is_empty())
        .collect()
}

fn rsa_key(der: &[u8]) -> Result<RsaKey, KeyError> {
    use rsa::pkcs8::spki::SubjectPublicKeyInfoRef;
    // RFC 6376 3.6.1: a SubjectPublicKeyInfo; some publishers put a bare RSAPublicKey
    // (PKCS#1) there, which is accepted too.
    let pkcs1 = match SubjectPublicKeyInfoRef::from_der(der) {
        Ok(spki) => {
            if spki.algorithm.oid != rsa::pkcs1::ALGORITHM_OID {
                return Err(KeyError::BadKey("not an RSA key".into()));
            }
            spki.subject_public_key
                .as_bytes()
                .ok_or_else(|| KeyError::BadKey("bit string".into()))?
        }
        Err(_) => der,
    };
    let key = rsa::pkcs1::RsaPublicKey::from_der(pkcs1)
        .map_err(|_| KeyError::BadKey("not an RSA public key".into()))?;
    let key = RsaKey {
        n: key.modulus.as_bytes().to_vec(),
        e: key.public_exponent.as_bytes().to_vec(),
    };
    // What RustCrypto's RsaPublicKey::new checked, and ring checks again when verifying.
    let e_bits = bit_len(&key.e);
    if key.bits() > MAX_RSA_BITS {
        return Err(KeyError::BadKey(format!(
            "{} bits: more than {MAX_RSA_BITS}",
            key.bits()
        )));
    }
    if !(2..=33).contains(&e_bits) || key.e.last().is_some_and(|b| b & 1 == 0) {
        return Err(KeyError::BadKey(
            "the public exponent is out of range".into(),
        ));
    }
    if key.n.last().is_some_and(|b| b & 1 == 0) {
        return Err(KeyError::BadKey("the modulus is even".into()));
    }
    Ok(key)
}

/// Parses one key record (the TXT strings already joined).
pub(crate) fn parse(record: &[u8]) -> Result<KeyRecord, KeyError> {
    let tags = TagList::parse(record).map_err(|e| KeyError::Syntax(e.text().into()))?;
    if let Some(v) = tags.get("v") {
        if v != b"DKIM1" || tags.tags().first().map(|t| t.name) != Some(b"v") {
            return Err(KeyError::Version);
        }
    }
    let key_type = tags
        .get("k")
        .map(|k| strip_wsp(k).to_ascii_lowercase())
        .unwrap_or_else(|| b"rsa".to_vec());
    let hashes = tags.get("h").map(list);
    if let Some(services) = tags.get("s").map(list) {
        if !services.iter().any(|s| s == b"*" || s == b"email") {
            return Err(KeyError::Service);
        }
    }
    let flags = tags.get("t").map(list).unwrap_or_default();
    let p = tags
        .get("p")
        .ok_or_else(|| KeyError::Syntax("no p=".into()))?;
    let p = strip_wsp(p);
    let key = if p.is_empty() {
        None
    } else {
        let der = base64::engine::general_purpose::STANDARD
            .decode(&p)
            .map_err(|_| KeyError::BadKey("p= is not base64".into()))?;
        Some(match key_type.as_slice() {
            b"rsa" => PublicKey::Rsa(rsa_key(&der)?),
            b"ed25519" => {
                let bytes: [u8; 32] = der
                    .as_slice()
                    .try_into()
                    .map_err(|_| KeyError::BadKey("ed25519 key is not 32 bytes".into()))?;
                PublicKey::Ed25519(
                    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                        .map_err(|_| KeyError::BadKey("not an ed25519 point".into()))?,
                )
            }
            _ => return Err(KeyError::BadKey("unknown k=".into())),
        })
    };
    Ok(KeyRecord {
        key,
        key_type,
        hashes,
        testing: flags.iter().any(|f| f == b"y"),
        strict: flags.iter().any(|f| f == b"s"),
    })
}

/// The most parsed key records kept; past it the cache starts again, empty.
pub const MAX_CACHED_KEYS: usize = 1024;

/// A parse's outcome, shared by every message the key signs.
type Parsed = Result<Arc<KeyRecord>, KeyError>;

/// Key records parsed before, by their exact text: a key signs many messages, and parsing
/// it (base64, DER, for ed25519 the point's decompression) is work the DNS answer's cache
/// does not save. The text is the key: a changed record is a new entry, and what the DNS
/// cache expires is simply not asked for again. Bounded by [`MAX_CACHED_KEYS`].
#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    parsed: std::sync::Mutex<std::collections::HashMap<Box<[u8]>, Parsed>>,
}

impl KeyCache {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// [`parse`], or what it gave for the same text before.
    pub(crate) fn parse(&self, record: &[u8]) -> Parsed {
        if let Some(hit) = self.parsed.lock().ok().and_then(|m| m.get(record).cloned()) {
            return hit;
        }
        let parsed = parse(record).map(Arc::new);
        if let Ok(mut map) = self.parsed.lock() {
            if map.len() >= MAX_CACHED_KEYS {
                map.clear();
            }
            map.insert(record.into(), parsed.clone());
        }
        parsed
    }

    /// Picks the key record among the TXT records at a key name: the first that parses.
    /// Records with another `v=` are skipped (RFC 6376 3.6.1); if none parses, the error
    /// of the first.
    pub(crate) fn select(&self, records: &[Vec<u8>]) -> Option<Parsed> {
        let mut first_error = None;
        for record in records {
            match self.parse(record) {
                Ok(key) => return Some(Ok(key)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map(Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A 1024-bit RSA key (SubjectPublicKeyInfo), from RFC 6376 Appendix C.
    const RFC_KEY: &str = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDwIRP/UC3SBsEmGqZ9ZJW3/DkMoGeLnQg1fWn7/zYtIxN2SnFCjxOCKG9v3b4jYfcTNh5ijSsq631uBItLa7od+v/RtdC2UzJ1lWT947qR+Rcac2gbto/NMqJ0fzfVjH4OuKhitdY9tf6mcwGjaNBcWToIMmPSPDdQPNUYckcQ2QIDAQAB";

    #[test]
    fn records() {
        let ok = parse(format!("v=DKIM1; k=rsa; p={RFC_KEY}").as_bytes()).unwrap();
        assert_eq!(ok.key.as_ref().map(PublicKey::bits), Some(1024));
        assert!(!ok.testing && !ok.strict && ok.hashes.is_none());

        let flags =
            parse(format!("k=rsa; t=y:s; h=sha256; s=email; p={RFC_KEY}").as_bytes()).unwrap();
        assert!(flags.testing && flags.strict);
        assert!(flags.allows(HashAlg::Sha256) && !flags.allows(HashAlg::Sha1));

        let revoked = parse(b"v=DKIM1; p=").unwrap();
        assert!(revoked.key.is_none());

        let cases: &[(&[u8], KeyError)] = &[
            (b"v=DKIM2; p=abc", KeyError::Version),
            (b"k=rsa; v=DKIM1; p=abc", KeyError::Version),
            (b"v=DKIM1; k=rsa", KeyError::Syntax("no p=".into())),
            (b"v=DKIM1; s=tlsrpt; p=", KeyError::Service),
            (
                b"v=DKIM1; p=!!!!",
                KeyError::BadKey("p= is not base64".into()),
            ),
            (
                b"v=DKIM1; k=dsa; p=YWJj",
                KeyError::BadKey("unknown k=".into()),
            ),
            (
                b"v=DKIM1; k=ed25519; p=YWJj",
                KeyError::BadKey("ed25519 key is not 32 bytes".into()),
            ),
            (
                b"v=DKIM1; k=rsa; p=YWJj",
                KeyError::BadKey("not an RSA public key".into()),
            ),
            (b"v=DKIM1; p", KeyError::Syntax("tag without '='".into())),
        ];
        for (record, expected) in cases {
            assert_eq!(
                parse(record).unwrap_err(),
                *expected,
                "{}",
                String::from_utf8_lossy(record)
            );
        }
        // The service list may hold several; "*" and "email" both do.
        assert!(parse(b"s=tlsrpt:email; p=").is_ok());
        assert!(parse(b"s=*; p=").is_ok());
    }

    #[test]
    fn the_cache_parses_a_record_once_and_stays_bounded() {
        let cache = KeyCache::new();
        let record = format!("v=DKIM1; k=rsa; p={RFC_KEY}");
        let a = cache.parse(record.as_bytes()).unwrap();
        let b = cache.parse(record.as_bytes()).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "the second look-up is the first parse");
        // A changed record is a new entry; an error is kept as an error.
        let revoked = cache.parse(b"v=DKIM1; p=").unwrap();
        assert!(revoked.key.is_none());
        assert_eq!(cache.parse(b"v=DKIM2; p=").unwrap_err(), KeyError::Version);
        assert_eq!(cache.parse(b"v=DKIM2; p=").unwrap_err(), KeyError::Version);
        for i in 0..MAX_CACHED_KEYS * 2 {
            let _ = cache.parse(format!("v=DKIM1; n={i}; p=").as_bytes());
            assert!(cache.parsed.lock().unwrap().len() <= MAX_CACHED_KEYS);
        }
    }

    #[test]
    fn select_skips_other_versions() {
        let records = vec![b"v=spf1 -all".to_vec(), b"v=DKIM1; p=".to_vec()];
        let select = |records: &[Vec<u8>]| KeyCache::new().select(records);
        assert!(matches!(select(&records), Some(Ok(_))));
        assert!(select(&[]).is_none());
        assert!(matches!(select(&[b"v=x".to_vec()]), Some(Err(_))));
    }
}
