//! Encryption at rest for Samotop.
#![deny(missing_docs)]

mod asn1;
mod certificate;
mod dispatch;
mod encryptor;
mod error;
pub mod header;
mod keys;

pub use certificate::{Certificate, MIN_RSA_BITS};
pub use dispatch::{Encrypt, EncryptTransaction, KeyHandle, Missing, NO_CERTIFICATE};
pub use encryptor::{Encryptor, Output};
pub use error::Error;
pub use header::Headers;
pub use keys::{KeyFiles, Keys, MapEntry};
