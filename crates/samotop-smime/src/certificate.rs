//! [`Certificate`]: a recipient's X.509 certificate, checked once, ready to encrypt to.

use std::fmt;
use std::path::Path;
use std::time::SystemTime;

use der::asn1::{Any, ObjectIdentifier};
use der::{Decode, Encode, Sequence};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};
use spki_alg::AlgorithmIdentifierOwned;
use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage};

use crate::Error;
use crate::asn1;

// x509-cert re-exports spki.
use x509_cert::spki as spki_alg;

/// The smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// A recipient's certificate: parsed, checked (key type, key usage, validity) and ready to
/// encrypt to. Only the public key is ever needed; a file that also holds a private key is
/// refused ([`Error::PrivateKey`]), so that the owner's key never lands on the server.
///
/// What is accepted:
/// * RSA keys of 2048 to 8192 bits. `rsaEncryption` keys get the content key with
///   PKCS#1 v1.5 padding (what every S/MIME client reads); a certificate whose key is
///   `id-RSAES-OAEP` (RFC 4055) gets RSAES-OAEP with the hash it names (SHA-1, SHA-256,
///   SHA-384 or SHA-512; MGF1 with the same or another of those).
/// * EC keys on P-256 and P-384, for ECDH key agreement (RFC 5753).
/// * A key usage extension, when present, must allow `keyEncipherment` (RSA) or
///   `keyAgreement` (EC); an extended key usage, when present, must include
///   `emailProtection` (or `anyExtendedKeyUsage`), as RFC 8550 4.4 asks.
/// * The certificate must be valid now. Nothing else is checked: the operator chose it.
///
/// ```no_run
/// use samotop_smime::Certificate;
/// let cert = Certificate::load("/etc/samotop/owner.pem")?;
/// println!("encrypting to {}", cert.subject());
/// # Ok::<(), samotop_smime::Error>(())
/// ```
#[derive(Clone)]
pub struct Certificate {
    source: String,
    subject: String,
    not_after: SystemTime,
    /// DER `IssuerAndSerialNumber` (RFC 5652 10.2.4), the recipient identifier.
    issuer_and_serial: Vec<u8>,
    fingerprint: [u8; 32],
    pub(crate) key: RecipientKey,
}

/// The public key and how to encrypt the content key to it.
#[derive(Clone)]
pub(crate) enum RecipientKey {
    Rsa {
        key: Box<rsa::PublicKey>,
        oaep: Option<Oaep>,
    },
    P256(p256::PublicKey),
    P384(p384::PublicKey),
}

/// RSAES-OAEP parameters (RFC 4055 4.1); only an empty label is supported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Oaep {
    pub(crate) hash: Hash,
    pub(crate) mgf_hash: Hash,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn from_oid(oid: &ObjectIdentifier) -> Option<Hash> {
        match *oid {
            asn1::SHA1 => Some(Hash::Sha1),
            asn1::SHA256 => Some(Hash::Sha256),
            asn1::SHA384 => Some(Hash::Sha384),
            asn1::SHA512 => Some(Hash::Sha512),
            _ => None,
        }
    }

    pub(crate) fn oid(self) -> ObjectIdentifier {
        match self {
            Hash::Sha1 => asn1::SHA1,
            Hash::Sha256 => asn1::SHA256,
            Hash::Sha384 => asn1::SHA384,
            Hash::Sha512 => asn1::SHA512,
        }
    }
}

/// `RSAES-OAEP-params` (RFC 4055 4.1); the module uses explicit tags.
#[derive(Sequence)]
struct OaepParams {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    hash: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    mask_gen: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    p_source: Option<AlgorithmIdentifierOwned>,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("source", &self.source)
            .field("subject", &self.subject)
            .field("key", &self.key_description())
            .finish_non_exhaustive()
    }
}

impl PartialEq for Certificate {
    fn eq(&self, other: &Certificate) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for Certificate {}

impl Certificate {
    /// Reads and checks a certificate file (PEM or DER), at the current time.
    ///
    /// # Errors
    ///
    /// [`Error::Read`] when the file cannot be read; otherwise as
    /// [`from_bytes`](Certificate::from_bytes), naming the file.
    pub fn load(path: impl AsRef<Path>) -> Result<Certificate, Error> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Certificate::from_bytes(&bytes, path.display().to_string(), SystemTime::now())
    }

    /// Parses and checks a certificate (PEM, the first `CERTIFICATE` block, or DER) as of
    /// `now`. `source` names it in errors and logs (a file name).
    ///
    /// # Errors
    ///
    /// [`Error::PrivateKey`] when the input holds a private key, [`Error::Parse`] when it
    /// holds no certificate, [`Error::UnsupportedKey`], [`Error::Usage`] or
    /// [`Error::Expired`] when it cannot be encrypted to now.
    pub fn from_bytes(
        bytes: &[u8],
        source: impl Into<String>,
        now: SystemTime,
    ) -> Result<Certificate, Error> {
        let source = source.into();
        let parse = |reason: String| Error::Parse {
            source_name: source.clone(),
            reason,
        };
        let der = if bytes.starts_with(b"-----") || bytes.windows(11).any(|w| w == b"-----BEGIN ") {
            pem_certificate(bytes, &source)?
        } else {
            bytes.to_vec()
        };
        let cert = x509_cert::Certificate::from_der(&der).map_err(|e| parse(e.to_string()))?;
        let tbs = cert.tbs_certificate();
        let subject = tbs.subject().to_string();

        let not_before = tbs.validity().not_before.to_system_time();
        let not_after = tbs.validity().not_after.to_system_time();
        let expired = |reason: String| Error::Expired {
            source_name: source.clone(),
            subject: subject.clone(),
            reason,
        };
        if now > not_after {
            return Err(expired(format!("expired at {}", tbs.validity().not_after)));
        }
        if now < not_before {
            return Err(expired(format!(
                "not valid before {}",
                tbs.validity().not_before
            )));
        }

        let key = recipient_key(tbs.subject_public_key_info(), &source)?;
        let usage = |reason: &str| Error::Usage {
            source_name: source.clone(),
            subject: subject.clone(),
            reason: reason.to_string(),
        };
        match tbs.get_extension::<KeyUsage>() {
            Ok(Some((_, ku))) => match key {
                RecipientKey::Rsa { .. } if !ku.key_encipherment() => {
                    return Err(usage("key usage lacks keyEncipherment"));
                }
                RecipientKey::P256(_) | RecipientKey::P384(_) if !ku.key_agreement() => {
                    return Err(usage("key usage lacks keyAgreement"));
                }
                _ => {}
            },
            Ok(None) => {}
            Err(e) => return Err(parse(format!("key usage: {e}"))),
        }
        match tbs.get_extension::<ExtendedKeyUsage>() {
            Ok(Some((_, eku))) => {
                if !eku
                    .0
                    .iter()
                    .any(|o| *o == asn1::EKU_EMAIL_PROTECTION || *o == asn1::EKU_ANY)
                {
                    return Err(usage("extended key usage lacks emailProtection"));
                }
            }
            Ok(None) => {}
            Err(e) => return Err(parse(format!("extended key usage: {e}"))),
        }

        let issuer = tbs.issuer().to_der().map_err(|e| parse(e.to_string()))?;
        let serial = tbs
            .serial_number()
            .to_der()
            .map_err(|e| parse(e.to_string()))?;
        let issuer_and_serial = asn1::constructed(asn1::TAG_SEQUENCE, &[&issuer, &serial]);
        let fingerprint: [u8; 32] = Sha256::digest(&der).into();
        Ok(Certificate {
            source,
            subject,
            not_after,
            issuer_and_serial,
            fingerprint,
            key,
        })
    }

    /// Where the certificate came from (the file name given to [`load`](Certificate::load)).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The subject, as an RFC 4514 string (`CN=alice,...`).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The end of the validity period.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// SHA-256 of the certificate's DER encoding.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// The key and how it is used: `RSA 2048 PKCS#1 v1.5`, `RSA 3072 OAEP SHA-256`,
    /// `EC P-256 ECDH`.
    pub fn key_description(&self) -> String {
        match &self.key {
            RecipientKey::Rsa { key, oaep: None } => {
                format!("RSA {} PKCS#1 v1.5", key.size() * 8)
            }
            RecipientKey::Rsa { key, oaep: Some(o) } => {
                format!("RSA {} OAEP {:?}", key.size() * 8, o.hash)
            }
            RecipientKey::P256(_) => "EC P-256 ECDH".to_string(),
            RecipientKey::P384(_) => "EC P-384 ECDH".to_string(),
        }
    }

    pub(crate) fn issuer_and_serial(&self) -> &[u8] {
        &self.issuer_and_serial
    }
}

/// The DER of the first `CERTIFICATE` block; a private key anywhere is an error.
fn pem_certificate(bytes: &[u8], source: &str) -> Result<Vec<u8>, Error> {
    let text = String::from_utf8_lossy(bytes);
    let mut found = None;
    let mut rest = text.as_ref();
    for _ in 0..1000 {
        let Some(start) = rest.find("-----BEGIN ") else {
            break;
        };
        let after = &rest[start + 11..];
        let Some(label_end) = after.find("-----") else {
            break;
        };
        let label = &after[..label_end];
        if label.contains("PRIVATE KEY") {
            return Err(Error::PrivateKey {
                source_name: source.to_string(),
            });
        }
        let end_marker = format!("-----END {label}-----");
        let Some(end) = after.find(&end_marker) else {
            break;
        };
        let block = &rest[start..start + 11 + end + end_marker.len()];
        if label == "CERTIFICATE" && found.is_none() {
            found = Some(block.to_string());
        }
        rest = &after[end + end_marker.len()..];
    }
    let Some(block) = found else {
        return Err(Error::Parse {
            source_name: source.to_string(),
            reason: "no CERTIFICATE block".to_string(),
        });
    };
    let (_, der) = der::pem::decode_vec(block.as_bytes()).map_err(|e| Error::Parse {
        source_name: source.to_string(),
        reason: e.to_string(),
    })?;
    Ok(der)
}

fn recipient_key(
    spki: &x509_cert::spki::SubjectPublicKeyInfoOwned,
    source: &str,
) -> Result<RecipientKey, Error> {
    let unsupported = |reason: String| Error::UnsupportedKey {
        source_name: source.to_string(),
        reason,
    };
    let bits = spki.subject_public_key.raw_bytes();
    let alg = &spki.algorithm;
    match alg.oid {
        asn1::RSA_ENCRYPTION | asn1::RSAES_OAEP => {
            let key = rsa::PublicKey::from_pkcs1_der(bits)
                .map_err(|e| unsupported(format!("RSA key: {e}")))?;
            if key.size() * 8 < MIN_RSA_BITS {
                return Err(unsupported(format!(
                    "RSA {} bits is too weak (at least {MIN_RSA_BITS})",
                    key.size() * 8
                )));
            }
            let oaep = if alg.oid == asn1::RSAES_OAEP {
                Some(oaep_params(alg.parameters.as_ref()).map_err(unsupported)?)
            } else {
                None
            };
            Ok(RecipientKey::Rsa {
                key: Box::new(key),
                oaep,
            })
        }
        asn1::EC_PUBLIC_KEY => {
            let curve = alg
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
                .ok_or_else(|| unsupported("EC key without a named curve".to_string()))?;
            match curve {
                asn1::SECP256R1 => p256::PublicKey::from_sec1_bytes(bits)
                    .map(RecipientKey::P256)
                    .map_err(|_| unsupported("P-256 point is not on the curve".to_string())),
                asn1::SECP384R1 => p384::PublicKey::from_sec1_bytes(bits)
                    .map(RecipientKey::P384)
                    .map_err(|_| unsupported("P-384 point is not on the curve".to_string())),
                other => Err(unsupported(format!(
                    "EC curve {other} (P-256 and P-384 are supported)"
                ))),
            }
        }
        other => Err(unsupported(format!(
            "algorithm {other} (RSA and EC P-256/P-384 are supported)"
        ))),
    }
}

fn oaep_params(params: Option<&Any>) -> Result<Oaep, String> {
    let Some(params) = params else {
        // Absent: any parameters the sender picks; the defaults are SHA-1 throughout.
        return Ok(Oaep {
            hash: Hash::Sha1,
            mgf_hash: Hash::Sha1,
        });
    };
    let p: OaepParams = params
        .decode_as()
        .map_err(|e| format!("RSAES-OAEP parameters: {e}"))?;
    let hash = match &p.hash {
        None => Hash::Sha1,
        Some(a) => Hash::from_oid(&a.oid).ok_or(format!("OAEP hash {}", a.oid))?,
    };
    let mgf_hash = match &p.mask_gen {
        None => Hash::Sha1,
        Some(a) if a.oid == asn1::MGF1 => {
            let inner: AlgorithmIdentifierOwned = a
                .parameters
                .as_ref()
                .ok_or("MGF1 without a hash")?
                .decode_as()
                .map_err(|e| format!("MGF1 hash: {e}"))?;
            Hash::from_oid(&inner.oid).ok_or(format!("MGF1 hash {}", inner.oid))?
        }
        Some(a) => return Err(format!("OAEP mask generation {}", a.oid)),
    };
    if let Some(source) = &p.p_source {
        let empty = source.oid == asn1::P_SPECIFIED
            && source
                .parameters
                .as_ref()
                .map(|v| v.value().is_empty())
                .unwrap_or(true);
        if !empty {
            return Err("OAEP with a label".to_string());
        }
    }
    Ok(Oaep { hash, mgf_hash })
}
