//! Encryption at rest for Samotop.
#![deny(missing_docs)]

mod asn1;
mod certificate;
mod encryptor;
mod error;

pub use certificate::{Certificate, MIN_RSA_BITS};
pub use encryptor::{Encryptor, Output};
pub use error::Error;
