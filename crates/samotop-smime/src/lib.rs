//! Encryption at rest for Samotop: every stored message is an S/MIME message (RFC 8551)
//! that only its owner can read.
//!
//! # Brief overview
//!
//! A stolen disk, a backup or a curious administrator of the mail store sees only
//! ciphertext; the owner reads the mail in any S/MIME client (Thunderbird, Outlook, Apple
//! Mail, `openssl cms -decrypt`, `gpgsm`).
//!
//! * [`Encrypt`] wraps any [`MailDispatch`](samotop_core::MailDispatch) (Maildir, LMTP,
//!   SQL, webhook): each message becomes a CMS EnvelopedData (RFC 5652) before it reaches
//!   the backend, streamed chunk by chunk; the plaintext is never written anywhere.
//! * [`Keys`] says whom each copy is encrypted to: certificates for every message (the
//!   owner, an escrow key) and per recipient; [`KeyFiles`] loads them from files and
//!   directories, again on reload through a [`KeyHandle`]. [`Missing`] says what happens
//!   to a recipient without a certificate.
//! * [`Certificate`] is a checked recipient certificate: RSA (PKCS#1 v1.5, or RSAES-OAEP
//!   when the certificate asks for it) or EC P-256/P-384 (ECDH, RFC 5753). The content is
//!   AES-256-CBC, which every S/MIME client reads.
//! * [`Encryptor`] is the streaming EnvelopedData writer underneath; [`header`] finds the
//!   fields that stay readable ([`Headers`]).
//!
//! # Key handling
//!
//! The server needs only the recipients' **certificates** (public keys). The private keys
//! stay with their owners, in their mail clients or on a token; a certificate file that
//! also holds a private key is refused. Nothing on the server can decrypt the stored mail.
//!
//! # What stays readable
//!
//! By default ([`Headers::Listable`]) the stored message keeps its trace fields
//! (Return-Path, Received, Received-SPF, Authentication-Results) and From, Sender,
//! Reply-To, To, Cc, Date, Subject, Message-ID, In-Reply-To and References in clear, so
//! that the mailbox can still be listed, searched and threaded; everything else, the body
//! and its Content-* fields, is encrypted. With [`Headers::All`] only From, To, Date and
//! the Subject `Encrypted message` stay readable. Either way the encrypted part holds the
//! whole message as received, header fields included, byte for byte.
//!
//! # Example
//!
//! Encrypting what goes into a backend that prints each message's first line:
//!
//! ```
//! use samotop_core::{Envelope, MailDispatch, Outcomes, Recipient, Refusal, SessionInfo,
//!                    Transaction, Peer, parser};
//! use samotop_smime::{Certificate, Encrypt, Keys};
//!
//! /// A backend that keeps the last message in memory.
//! #[derive(Clone, Default)]
//! struct Memory(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
//! struct Tx(Memory, usize);
//! impl MailDispatch for Memory {
//!     type Transaction = Tx;
//!     async fn open(&self, _: &SessionInfo, _: &Envelope) -> Result<Tx, Refusal> {
//!         Ok(Tx(self.clone(), 0))
//!     }
//! }
//! impl Transaction for Tx {
//!     async fn add_recipient(&mut self, _: &Recipient) -> Result<(), Refusal> {
//!         self.1 += 1;
//!         Ok(())
//!     }
//!     async fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
//!         self.0.0.lock().unwrap().extend_from_slice(chunk);
//!         Ok(())
//!     }
//!     async fn commit(&mut self) -> Outcomes {
//!         vec![Ok(()); self.1]
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let pem = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/p256.pem"));
//! // At start: the owner's certificate (Certificate::load("owner.pem") in real life).
//! let owner = Certificate::from_bytes(pem, "owner.pem", std::time::SystemTime::now())?;
//! let store = Memory::default();
//! let encrypt = Encrypt::new(store.clone(), Keys::new().encrypt_to(owner));
//!
//! // What a session does with one message:
//! let info = SessionInfo::new(Peer::Stdio, "mx.example.org");
//! let mut envelope = Envelope::new(parser::ReversePath::Null, Default::default(), "1".into());
//! let rcpt: parser::ForwardPath = parser::ForwardPath::Postmaster;
//! let rcpt = Recipient::new(rcpt, Default::default());
//! tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
//!     let mut tx = encrypt.open(&info, &envelope).await?;
//!     tx.add_recipient(&rcpt).await?;
//!     envelope.recipients.push(rcpt);
//!     tx.begin(&info, &envelope).await?;
//!     tx.write(b"Subject: hello\r\nContent-Type: text/plain\r\n\r\nthe secret\r\n").await?;
//!     assert!(tx.commit().await.iter().all(Result::is_ok));
//!     Ok::<(), Refusal>(())
//! }).map_err(|refusal| refusal.to_string())?;
//!
//! let stored = String::from_utf8(store.0.lock().unwrap().clone())?;
//! assert!(stored.starts_with("Subject: hello\r\nMIME-Version: 1.0\r\n\
//!     Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"));
//! assert!(!stored.contains("the secret") && !stored.contains("text/plain"));
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod asn1;
mod cbc256;
mod certificate;
mod dispatch;
mod encryptor;
mod error;
pub mod header;
mod keys;

pub use certificate::{Certificate, MIN_RSA_BITS};
pub use dispatch::{Encrypt, EncryptTransaction, KeyHandle, Missing};
pub use encryptor::{Encryptor, Output};
pub use error::Error;
pub use header::Headers;
pub use keys::{KeyFiles, Keys, MapEntry};
