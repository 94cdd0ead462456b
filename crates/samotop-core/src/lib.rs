//! The core of Samotop: the mail-receiving session, and the traits that plug into it.
//!
//! # Brief overview
//!
//! * [`Session`] is a **sans-io** SMTP/LMTP state machine: bytes in ([`Session::feed`]),
//!   [`Event`]s out ([`Session::poll_event`]), one [`Answer`] per question
//!   ([`Session::resolve`]). No socket, clock or task inside.
//! * [`MailDispatch`] and [`Transaction`] are where mail goes: open a transaction at MAIL,
//!   accept or refuse each recipient, stream the data chunk by chunk, commit durably.
//! * [`Guard`] checks policy at connect, HELO, MAIL, RCPT and DATA; [`Guards`] stacks them.
//! * [`Driver`] runs a session over any tokio `AsyncRead + AsyncWrite`, with timeouts,
//!   pipelining, STARTTLS through a [`TlsUpgrade`], and graceful shutdown.
//! * [`Reply`] and the [`reply`] table: every reply the session sends, with its enhanced code.
//! * [`Limits`]: every bound, on by default.
//!
//! # Example
//!
//! A whole SMTP session in memory, without tokio:
//!
//! ```
//! use std::sync::Arc;
//! use samotop_core::{Answer, Event, Peer, Session, SessionConfig, SessionInfo, Verdict};
//!
//! let info = SessionInfo::new(Peer::Stdio, "mx.example.org");
//! let mut session = Session::new(Arc::new(SessionConfig::default()), info);
//! let mut input: &[u8] = b"EHLO client\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n\
//!     DATA\r\nSubject: hi\r\n\r\nHello\r\n.\r\nQUIT\r\n";
//! let mut replies = Vec::new();
//! let mut message = Vec::new();
//! for _ in 0..100 {
//!     while let Some(event) = session.poll_event() {
//!         match event {
//!             Event::Reply(reply) => replies.push(reply.code()),
//!             Event::Chunk(data) => {
//!                 message.extend_from_slice(&data);
//!                 session.resolve(Answer::Written(Ok(())));
//!             }
//!             Event::Commit => session.resolve(Answer::Committed(vec![Ok(())])),
//!             Event::Abort | Event::Close | Event::StartTls => {}
//!             _ => session.resolve(Answer::Verdict(Verdict::Accept)),
//!         }
//!     }
//!     if session.is_closed() { break; }
//!     let used = session.feed(input);
//!     input = &input[used..];
//! }
//! assert_eq!(replies, [220, 250, 250, 250, 354, 250, 221]);
//! assert_eq!(message, b"Subject: hi\r\n\r\nHello\r\n");
//! ```
#![deny(missing_docs)]

mod dispatch;
mod driver;
mod envelope;
mod guard;
mod id;
mod limits;
pub mod reply;
mod session;
pub mod trace;

pub use dispatch::{BoxDispatch, DynTransaction, MailDispatch, Outcomes, Transaction};
pub use driver::{BoxIo, Driver, Io, Summary, TlsUpgrade, UpgradeFuture};
pub use envelope::{Envelope, Peer, Protocol, Recipient, SessionInfo, TlsInfo};
pub use guard::{Guard, Guards, Verdict};
pub use limits::Limits;
pub use reply::Reply;
pub use session::{Answer, DataDecoder, End, Event, Session, SessionConfig, Stats};

/// The parser's types, re-exported so that users need one dependency.
pub use samotop_parser as parser;
