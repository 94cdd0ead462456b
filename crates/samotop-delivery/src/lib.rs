//! Delivery backends for Samotop: where accepted mail goes, durably.
//!
//! # Brief overview
//!
//! Each backend implements [`samotop_core::MailDispatch`]; the session drives its
//! transaction (recipients, data chunk by chunk, commit) and answers the client only after
//! the commit says each copy is durable.
//!
//! * [`Maildir`]: stores each message in a Maildir (`tmp/`, fsync, rename into `new/`,
//!   fsync of `new/`), in one directory or in one per recipient ([`Layout`]). The default
//!   backend of the `samotop` server (`--deliver maildir:DIR`).
//! * [`Proxy`]: passes each transaction through to an LMTP server such as Dovecot, or to
//!   another SMTP server, step by step (BDAT where the server takes it); [`Client`] is the
//!   LMTP/SMTP client under it, [`Delivered`] its memory of what a retry must skip.
//! * [`Stdout`]: prints each message; [`Null`]: accepts and forgets (benchmarks).
//! * [`RecipientMap`] and [`Mapped`]: rewrite recipients with `REGEX=REPLACE` rules before
//!   an inner backend sees them (`--map`).
//! * [`Error`]: what can go wrong, and the reply each error causes ([`Error::reply`]).
//!
//! A server hands a backend to [`samotop_core::Driver`]:
//! `Driver::new(Maildir::new("/var/mail", Layout::Single), (), SessionConfig::default())`.
//! The `examples/` crate has whole servers, and `docs/LIBRARY.md` walks through writing one.
//!
//! # Example
//!
//! One message into a Maildir, through the calls the session's driver makes (it would also
//! write the `Received:` header as the first chunk):
//!
//! ```
//! use samotop_core::{trace, Envelope, MailDispatch, Peer, Recipient, SessionInfo, Transaction};
//! use samotop_delivery::{Layout, Maildir};
//! use samotop_parser::{ForwardPath, MailParams, RcptParams, ReversePath};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let maildir = Maildir::new(dir.path(), Layout::Single);
//! let runtime = tokio::runtime::Builder::new_current_thread().build()?;
//! let outcomes = runtime.block_on(async {
//!     let info = SessionInfo::new(Peer::Stdio, "mx.example.org");
//!     let mut envelope = Envelope::new(ReversePath::Null, MailParams::default(), "1".into());
//!     let mut tx = maildir.open(&info, &envelope).await?;
//!     let recipient = Recipient::new(ForwardPath::Postmaster, RcptParams::default());
//!     tx.add_recipient(&recipient).await?;
//!     envelope.recipients.push(recipient);
//!     tx.begin(&info, &envelope).await?;
//!     tx.write(b"Subject: hello\r\n\r\nHello, world\r\n").await?;
//!     Ok::<_, samotop_core::Refusal>(tx.commit().await)
//! }).map_err(|reply| reply.to_string())?;
//! assert_eq!(outcomes, vec![Ok(())]);
//!
//! let stored = std::fs::read_dir(dir.path().join("new"))?.next().ok_or("no message")??;
//! let message = std::fs::read(stored.path())?;
//! assert_eq!(message, b"Return-Path: <>\r\nSubject: hello\r\n\r\nHello, world\r\n");
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod error;
pub use error::Error;

// Owned by the Maildir/stdout/null/map work:
mod maildir;
mod map;
mod null;
mod stdout;
pub use maildir::{Layout, Maildir, MaildirTransaction};
pub use map::{Mapped, MappedTransaction, RecipientMap};
pub use null::{Null, NullTransaction};
pub use stdout::{Stdout, StdoutTransaction};

// Owned by the LMTP/SMTP client work:
mod client;
mod delivered;
mod proxy;
pub use client::{Client, Dialect, Endpoint, Timeouts};
pub use delivered::Delivered;
pub use proxy::{Proxy, ProxyTransaction};

// Owned by the trigger work: the generic combinators.
mod route;
mod tee;
pub use route::{Pattern, PatternError, Route, RouteTransaction};
pub use tee::{Tee, TeeTransaction};
