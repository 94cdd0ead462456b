//! [`Encryptor`]: one message's CMS EnvelopedData (RFC 5652 6), made as the data streams.
//!
//! The output is BER with indefinite lengths, as `openssl smime -stream` makes it, so that
//! nothing has to be known in advance:
//!
//! ```text
//! ContentInfo          30 80  OID envelopedData  A0 80
//!   EnvelopedData      30 80  version  SET OF RecipientInfo (DER)
//!     EncryptedContentInfo   30 80  OID data  AlgorithmIdentifier aes256-CBC + IV
//!       [0] encryptedContent A0 80  04 len <ciphertext>  04 len <ciphertext> ...  00 00
//!   00 00  00 00  00 00  00 00
//! ```
//!
//! Content encryption is AES-256-CBC with PKCS#7 padding (RFC 3565), under a fresh random
//! key and IV per message. The content key goes to each recipient in its own RecipientInfo:
//! RSA in a KeyTransRecipientInfo (PKCS#1 v1.5, or RSAES-OAEP when the certificate's key
//! is `id-RSAES-OAEP`), EC in a KeyAgreeRecipientInfo (RFC 5753: an ephemeral key, ECDH,
//! the X9.63 KDF with SHA-256 for P-256 and SHA-384 for P-384, AES-256 key wrap).

use std::sync::Arc;

use aes::cipher::KeyInit;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use p256::elliptic_curve::Generate as _;
use rsa::rand_core::UnwrapErr;
use sha2::Digest;

use crate::Error;
use crate::asn1::{self, context};
use crate::cbc256::Cbc256;
use crate::certificate::{Certificate, Hash, Oaep, RecipientKey};

/// Bytes of BER per base64 line: 57 bytes make 76 characters (RFC 2045 6.8).
const LINE_BYTES: usize = 57;

/// The form of the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Base64 in lines of 76 characters, each ending in CR LF: the body of an
    /// `application/pkcs7-mime` part.
    Base64,
    /// The BER bytes themselves (`openssl cms -inform DER` reads them).
    Ber,
}

/// One message's encryption: feed the plaintext with [`update`](Encryptor::update), end with
/// [`finish`](Encryptor::finish); the EnvelopedData comes out as it goes.
///
/// Memory is a few buffers of at most the largest chunk given, whatever the message size.
///
/// ```
/// use samotop_smime::{Certificate, Encryptor, Output};
/// # let pem = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rsa2048.pem")).unwrap();
/// # let cert = std::sync::Arc::new(Certificate::from_bytes(&pem, "owner.pem", std::time::SystemTime::now())?);
/// let mut enc = Encryptor::new(&[cert], Output::Base64)?;
/// let mut out = Vec::new();
/// enc.update(b"Subject: hi\r\n\r\nHello\r\n", &mut out);
/// enc.finish(&mut out);
/// assert!(out.starts_with(b"MIAGCSqGSIb3DQEHA6CA")); // 30 80 06 09 ... envelopedData A0 80
/// assert!(out.split(|b| *b == b'\n').all(|line| line.len() <= 78));
/// # Ok::<(), samotop_smime::Error>(())
/// ```
pub struct Encryptor {
    cbc: Cbc256,
    output: Output,
    /// Plaintext short of a whole block.
    pending: Vec<u8>,
    /// BER not yet base64-encoded (less than a line's worth between calls).
    ber: Vec<u8>,
    /// Scratch for the base64 text of one update.
    text: Vec<u8>,
    finished: bool,
    plain_len: u64,
}

impl std::fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryptor")
            .field("output", &self.output)
            .field("plain_len", &self.plain_len)
            .finish_non_exhaustive()
    }
}

impl Encryptor {
    /// Starts a message for these recipients: makes the content key and IV, and encrypts the
    /// key to each recipient (one RSA operation or two EC scalar multiplications each).
    ///
    /// # Errors
    ///
    /// [`Error::NoCertificates`] for an empty list, [`Error::Random`] when the system's
    /// random number generator fails, [`Error::KeyEncryption`] when a key operation fails.
    pub fn new(recipients: &[Arc<Certificate>], output: Output) -> Result<Encryptor, Error> {
        if recipients.is_empty() {
            return Err(Error::NoCertificates);
        }
        let mut cek = [0u8; 32];
        let mut iv = [0u8; 16];
        getrandom::fill(&mut cek).map_err(|e| Error::Random(e.to_string()))?;
        getrandom::fill(&mut iv).map_err(|e| Error::Random(e.to_string()))?;
        let mut infos = Vec::with_capacity(recipients.len());
        let mut all_ktri = true;
        for cert in recipients {
            let info = recipient_info(cert, &cek)?;
            all_ktri &= matches!(cert.key, RecipientKey::Rsa { .. });
            infos.push(info);
        }
        // RFC 5652 6.1: 0 when every RecipientInfo is version 0 (KTRI with
        // issuerAndSerialNumber), else 2 (a KARI is version 3).
        let version = if all_ktri { 0 } else { 2 };

        let mut ber = Vec::with_capacity(512 * recipients.len() + 64);
        ber.extend_from_slice(&[asn1::TAG_SEQUENCE, 0x80]);
        ber.extend_from_slice(&asn1::oid(&asn1::ID_ENVELOPED_DATA));
        ber.extend_from_slice(&[context(0), 0x80, asn1::TAG_SEQUENCE, 0x80]);
        ber.extend_from_slice(&asn1::small_integer(version));
        ber.extend_from_slice(&asn1::set_of(infos));
        ber.extend_from_slice(&[asn1::TAG_SEQUENCE, 0x80]);
        ber.extend_from_slice(&asn1::oid(&asn1::ID_DATA));
        ber.extend_from_slice(&asn1::algorithm_with(
            &asn1::AES256_CBC,
            &asn1::tlv(asn1::TAG_OCTET_STRING, &iv),
        ));
        ber.extend_from_slice(&[context(0), 0x80]);

        let cbc = Cbc256::new(&cek, &iv);
        cek.fill(0);
        Ok(Encryptor {
            cbc,
            output,
            pending: Vec::with_capacity(16),
            ber,
            text: Vec::new(),
            finished: false,
            plain_len: 0,
        })
    }

    /// Plaintext bytes taken so far.
    pub fn plain_len(&self) -> u64 {
        self.plain_len
    }

    /// Encrypts `plain` and appends what is ready of the output to `out`. Ignored after
    /// [`finish`](Encryptor::finish).
    pub fn update(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.plain_len += plain.len() as u64;
        let total = self.pending.len() + plain.len();
        let whole = total / 16 * 16;
        if whole == 0 {
            self.pending.extend_from_slice(plain);
            return;
        }
        let from_plain = whole - self.pending.len();
        // The segment goes straight into the BER buffer and is encrypted there.
        self.ber.push(asn1::TAG_OCTET_STRING);
        asn1::push_len(&mut self.ber, whole);
        let start = self.ber.len();
        self.ber.extend_from_slice(&self.pending);
        self.ber.extend_from_slice(&plain[..from_plain]);
        self.cbc.encrypt(&mut self.ber[start..]);
        self.pending.clear();
        self.pending.extend_from_slice(&plain[from_plain..]);
        self.emit(out, false);
    }

    /// Pads and encrypts the last block, closes the structure and appends the rest of the
    /// output (base64: the last line, with its CR LF). Later calls do nothing.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let pad = 16 - self.pending.len() % 16;
        self.ber.push(asn1::TAG_OCTET_STRING);
        asn1::push_len(&mut self.ber, self.pending.len() + pad);
        let start = self.ber.len();
        self.ber.extend_from_slice(&self.pending);
        self.ber.extend(std::iter::repeat_n(pad as u8, pad));
        self.pending.fill(0);
        self.pending.clear();
        self.cbc.encrypt(&mut self.ber[start..]);
        // [0] encryptedContent, EncryptedContentInfo, EnvelopedData, [0] content, ContentInfo.
        for _ in 0..5 {
            self.ber.extend_from_slice(&asn1::END_OF_CONTENTS);
        }
        self.emit(out, true);
    }

    fn emit(&mut self, out: &mut Vec<u8>, last: bool) {
        match self.output {
            Output::Ber => {
                out.extend_from_slice(&self.ber);
                self.ber.clear();
            }
            Output::Base64 => {
                let lines = self.ber.len() / LINE_BYTES;
                // One encoding call for every whole line (57 bytes make exactly 76
                // characters), then the lines are copied out with their CR LF.
                self.text.resize(lines * 76, 0);
                let _ = BASE64.encode_slice(&self.ber[..lines * LINE_BYTES], &mut self.text);
                out.reserve(lines * 78 + 80);
                for line in self.text.chunks_exact(76) {
                    out.extend_from_slice(line);
                    out.extend_from_slice(b"\r\n");
                }
                self.ber.drain(..lines * LINE_BYTES);
                if last && !self.ber.is_empty() {
                    let start = out.len();
                    out.resize(start + self.ber.len().div_ceil(3) * 4, 0);
                    let _ = BASE64.encode_slice(&self.ber, &mut out[start..]);
                    out.extend_from_slice(b"\r\n");
                    self.ber.clear();
                }
            }
        }
    }
}

impl Drop for Encryptor {
    fn drop(&mut self) {
        self.pending.fill(0);
    }
}

/// The RecipientInfo for one certificate, carrying `cek`.
fn recipient_info(cert: &Certificate, cek: &[u8; 32]) -> Result<Vec<u8>, Error> {
    let fail = |reason: String| Error::KeyEncryption {
        subject: cert.subject().to_string(),
        reason,
    };
    match &cert.key {
        RecipientKey::Rsa { key, oaep } => {
            let mut rng = UnwrapErr(getrandom::SysRng);
            let (encrypted, algorithm) = match oaep {
                None => (
                    key.encrypt(&mut rng, rsa::Pkcs1v15Encrypt, cek),
                    asn1::algorithm_with(&asn1::RSA_ENCRYPTION, &[asn1::TAG_NULL, 0]),
                ),
                Some(o) => (oaep_encrypt(key, *o, cek), oaep_algorithm(*o)),
            };
            let encrypted = encrypted.map_err(|e| fail(e.to_string()))?;
            // KeyTransRecipientInfo, version 0, rid issuerAndSerialNumber (RFC 5652 6.2.1).
            Ok(asn1::constructed(
                asn1::TAG_SEQUENCE,
                &[
                    &asn1::small_integer(0),
                    cert.issuer_and_serial(),
                    &algorithm,
                    &asn1::tlv(asn1::TAG_OCTET_STRING, &encrypted),
                ],
            ))
        }
        RecipientKey::P256(public) => {
            let secret = p256::ecdh::EphemeralSecret::try_generate_from_rng(&mut getrandom::SysRng)
                .map_err(|e| Error::Random(e.to_string()))?;
            let ephemeral = secret.public_key().to_sec1_bytes();
            let shared = secret.diffie_hellman(public);
            let kek = kdf::<sha2::Sha256>(shared.raw_secret_bytes());
            kari(cert, &asn1::ECDH_SHA256_KDF, &ephemeral, &kek, cek).map_err(fail)
        }
        RecipientKey::P384(public) => {
            let secret = p384::ecdh::EphemeralSecret::try_generate_from_rng(&mut getrandom::SysRng)
                .map_err(|e| Error::Random(e.to_string()))?;
            let ephemeral = secret.public_key().to_sec1_bytes();
            let shared = secret.diffie_hellman(public);
            let kek = kdf::<sha2::Sha384>(shared.raw_secret_bytes());
            kari(cert, &asn1::ECDH_SHA384_KDF, &ephemeral, &kek, cek).map_err(fail)
        }
    }
}

fn oaep_encrypt(key: &rsa::PublicKey, o: Oaep, cek: &[u8]) -> rsa::Result<Vec<u8>> {
    use sha1::Sha1;
    use sha2::{Sha256, Sha384, Sha512};
    let mut rng = UnwrapErr(getrandom::SysRng);
    macro_rules! with {
        ($h:ty, $m:ty) => {
            key.encrypt(&mut rng, rsa::Oaep::<$h, $m>::new_with_mgf_hash(), cek)
        };
    }
    macro_rules! mgf {
        ($h:ty) => {
            match o.mgf_hash {
                Hash::Sha1 => with!($h, Sha1),
                Hash::Sha256 => with!($h, Sha256),
                Hash::Sha384 => with!($h, Sha384),
                Hash::Sha512 => with!($h, Sha512),
            }
        };
    }
    match o.hash {
        Hash::Sha1 => mgf!(Sha1),
        Hash::Sha256 => mgf!(Sha256),
        Hash::Sha384 => mgf!(Sha384),
        Hash::Sha512 => mgf!(Sha512),
    }
}

/// `id-RSAES-OAEP` with its `RSAES-OAEP-params`, defaults left out (RFC 4055 4.1).
fn oaep_algorithm(o: Oaep) -> Vec<u8> {
    let mut params = Vec::new();
    if o.hash != Hash::Sha1 {
        params.extend(asn1::tlv(context(0), &asn1::algorithm(&o.hash.oid())));
    }
    if o.mgf_hash != Hash::Sha1 {
        let mgf = asn1::algorithm_with(&asn1::MGF1, &asn1::algorithm(&o.mgf_hash.oid()));
        params.extend(asn1::tlv(context(1), &mgf));
    }
    asn1::algorithm_with(&asn1::RSAES_OAEP, &asn1::tlv(asn1::TAG_SEQUENCE, &params))
}

/// The DER `ECC-CMS-SharedInfo` for an AES-256 key wrap without UKM (RFC 5753 7.2).
pub(crate) fn shared_info() -> Vec<u8> {
    asn1::constructed(
        asn1::TAG_SEQUENCE,
        &[
            &asn1::algorithm(&asn1::AES256_WRAP),
            &asn1::tlv(
                context(2),
                &asn1::tlv(asn1::TAG_OCTET_STRING, &256u32.to_be_bytes()),
            ),
        ],
    )
}

/// ANSI X9.63 KDF (RFC 5753 7.2, SEC 1 3.6.1): the 256-bit key-encryption key from the
/// shared secret `z`, `Hash(Z || counter || SharedInfo)` with counter 1 (one hash output
/// is at least 256 bits).
pub(crate) fn kdf<D: Digest>(z: &[u8]) -> [u8; 32] {
    let mut h = D::new();
    h.update(z);
    h.update(1u32.to_be_bytes());
    h.update(shared_info());
    let out = h.finalize();
    let mut kek = [0u8; 32];
    kek.copy_from_slice(&out[..32]);
    kek
}

/// KeyAgreeRecipientInfo (RFC 5652 6.2.2, RFC 5753 3.1.1): `[1]` of version 3, the
/// ephemeral public key as originatorKey, the content key wrapped under `kek`.
fn kari(
    cert: &Certificate,
    scheme: &der::asn1::ObjectIdentifier,
    ephemeral: &[u8],
    kek: &[u8; 32],
    cek: &[u8; 32],
) -> Result<Vec<u8>, String> {
    let wrapper = aes_kw::KwAes256::new(kek.into());
    let mut wrapped = [0u8; 40];
    let wrapped = wrapper
        .wrap_key(cek, &mut wrapped)
        .map_err(|e| format!("key wrap: {e}"))?;
    let mut point = Vec::with_capacity(ephemeral.len() + 1);
    point.push(0); // no unused bits
    point.extend_from_slice(ephemeral);
    let originator_key = asn1::constructed(
        context(1),
        &[
            &asn1::algorithm(&asn1::EC_PUBLIC_KEY),
            &asn1::tlv(asn1::TAG_BIT_STRING, &point),
        ],
    );
    let recipient_encrypted_key = asn1::constructed(
        asn1::TAG_SEQUENCE,
        &[
            cert.issuer_and_serial(),
            &asn1::tlv(asn1::TAG_OCTET_STRING, wrapped),
        ],
    );
    Ok(asn1::constructed(
        context(1),
        &[
            &asn1::small_integer(3),
            &asn1::tlv(context(0), &originator_key),
            &asn1::algorithm_with(scheme, &asn1::algorithm(&asn1::AES256_WRAP)),
            &asn1::tlv(asn1::TAG_SEQUENCE, &recipient_encrypted_key),
        ],
    ))
}
