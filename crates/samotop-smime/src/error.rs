//! [`Error`]: what can go wrong while loading certificates or encrypting a message.

use std::path::PathBuf;

use samotop_core::{Refusal, reply};

/// What went wrong. Errors about a certificate name its source (the file, or the label a
/// library user gave), so that a start-up failure says which file to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A certificate or key-map file or directory cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file holds no certificate, or one that does not parse (PEM or DER X.509).
    #[error("{source_name}: not an X.509 certificate: {reason}")]
    Parse {
        /// The file (or label) the certificate came from.
        source_name: String,
        /// What the parser said.
        reason: String,
    },
    /// The file holds a private key. The server needs only the recipient's certificate;
    /// the private key belongs with the mailbox's owner and must not be on the server.
    #[error(
        "{source_name}: contains a private key; give the server only the certificate \
         (the private key stays with the mailbox's owner)"
    )]
    PrivateKey {
        /// The file (or label).
        source_name: String,
    },
    /// The certificate's validity period has ended (or not begun).
    #[error("{source_name}: certificate {subject} is not valid now ({reason})")]
    Expired {
        /// The file (or label).
        source_name: String,
        /// The certificate's subject.
        subject: String,
        /// "expired at ..." or "not valid before ...".
        reason: String,
    },
    /// The certificate's key usage (or extended key usage) does not allow it to receive
    /// encrypted mail: an RSA key needs `keyEncipherment`, an EC key `keyAgreement`, and an
    /// extended key usage, if any, must include `emailProtection`.
    #[error("{source_name}: certificate {subject} may not be used for encryption: {reason}")]
    Usage {
        /// The file (or label).
        source_name: String,
        /// The certificate's subject.
        subject: String,
        /// Which usage is missing.
        reason: String,
    },
    /// A public key this crate cannot encrypt to: not RSA (2048 to 8192 bits) and not EC
    /// P-256 or P-384.
    #[error("{source_name}: unsupported public key: {reason}")]
    UnsupportedKey {
        /// The file (or label).
        source_name: String,
        /// Which algorithm, curve or size.
        reason: String,
    },
    /// An `--encrypt-map` entry is neither `ADDRESS=FILE` nor a directory.
    #[error("bad encryption map entry {entry:?}: {reason}")]
    BadMap {
        /// The entry as given.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Nothing to encrypt to: no `--encrypt-to` certificate and an empty map.
    #[error("no encryption certificate configured")]
    NoCertificates,
    /// The system's random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(String),
    /// The blocking task that makes a message's keys did not finish (it panicked or the
    /// runtime is shutting down).
    #[error("key set-up task failed: {0}")]
    Task(String),
    /// Encrypting the content key to a recipient failed.
    #[error("cannot encrypt the content key to {subject}: {reason}")]
    KeyEncryption {
        /// The recipient certificate's subject.
        subject: String,
        /// What failed.
        reason: String,
    },
}

impl Error {
    /// The reply to a client when this error stops a message: `451 4.3.0` (the client
    /// retries; nothing was stored).
    pub fn reply(&self) -> Refusal {
        reply::DELIVERY_FAILED
    }
}
