//! The core of Samotop: the mail-receiving session, and the traits that plug into it.
//!
//! # Brief overview
//!
//! * [`Session`] is a **sans-io** SMTP/LMTP state machine: bytes in ([`Session::feed`], with
//!   the time), [`Event`]s out ([`Session::poll_event`]), one [`Answer`] per question
//!   ([`Session::resolve`]). No socket, clock or task inside; every protocol decision is its.
//! * [`MailDispatch`] and [`Transaction`] are where mail goes: open a transaction at MAIL,
//!   accept or refuse each recipient, stream the data chunk by chunk, commit durably. A
//!   dispatch says what it can carry ([`Capabilities`]) and EHLO offers only that.
//! * [`Guard`] checks policy at connect, HELO, MAIL, RCPT and DATA; [`Guards`] stacks them.
//!   [`DataCheck`] sees the whole message before it is stored (DKIM, DMARC, a scanner):
//!   the message is then spooled first ([`Spool`]), and a check may refuse it or add fields.
//! * [`Driver`] runs a session over any tokio `AsyncRead + AsyncWrite`, with timeouts,
//!   pipelining, STARTTLS through a [`TlsUpgrade`], and graceful shutdown; every call to a
//!   guard, check or backend is bounded.
//! * [`Reply`], [`Refusal`] and the [`reply`] table: every reply, with its enhanced code. A
//!   refusal is 4xx or 5xx by construction.
//! * [`Limits`]: every bound, on by default.
//!
//! # Example: a server
//!
//! A [`MailDispatch`] of your own, run by the [`Driver`] over a tokio stream. Here an
//! in-memory pipe stands in for the TCP connection that a listener would accept (the
//! `examples/` crate has whole servers; `docs/LIBRARY.md` walks through them):
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use samotop_core::{Driver, Envelope, MailDispatch, Outcomes, Peer, Recipient, Refusal,
//!                    SessionConfig, SessionInfo, Transaction};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! /// Counts the bytes of every message, and keeps none.
//! struct Sizes(Arc<AtomicUsize>);
//! struct Count { total: Arc<AtomicUsize>, bytes: usize, rcpts: usize }
//!
//! impl MailDispatch for Sizes {
//!     type Transaction = Count;
//!     async fn open(&self, _: &SessionInfo, _: &Envelope) -> Result<Count, Refusal> {
//!         Ok(Count { total: self.0.clone(), bytes: 0, rcpts: 0 })
//!     }
//! }
//!
//! impl Transaction for Count {
//!     async fn add_recipient(&mut self, _: &Recipient) -> Result<(), Refusal> {
//!         self.rcpts += 1;
//!         Ok(())
//!     }
//!     async fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
//!         self.bytes += chunk.len();
//!         Ok(())
//!     }
//!     async fn commit(&mut self) -> Outcomes {
//!         self.total.fetch_add(self.bytes, Ordering::SeqCst);
//!         vec![Ok(()); self.rcpts] // one outcome per recipient: all stored
//!     }
//! }
//!
//! # fn main() -> std::io::Result<()> {
//! let total = Arc::new(AtomicUsize::new(0));
//! let driver = Driver::new(Sizes(total.clone()), (), SessionConfig::default());
//! let (mut client, server) = tokio::io::duplex(64 * 1024);
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! let replies = runtime.block_on(async {
//!     let session = driver.run(server, SessionInfo::new(Peer::Stdio, "mx.example.org"));
//!     let talk = async {
//!         let script = b"EHLO client\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n\
//!             DATA\r\nSubject: hi\r\n\r\nHello\r\n.\r\nQUIT\r\n";
//!         client.write_all(script).await?;
//!         let mut replies = String::new();
//!         client.read_to_string(&mut replies).await?;
//!         Ok::<_, std::io::Error>(replies)
//!     };
//!     let (_summary, replies) = tokio::join!(session, talk);
//!     replies
//! })?;
//! assert!(replies.starts_with("220 mx.example.org"));
//! assert!(replies.contains("\r\n354 "));
//! assert!(replies.ends_with("221 2.0.0 Bye\r\n"));
//! // The message, after the Received: header field the session writes first.
//! assert!(total.load(Ordering::SeqCst) > b"Subject: hi\r\n\r\nHello\r\n".len());
//! # Ok(())
//! # }
//! ```
//!
//! # Example: the session alone
//!
//! A whole SMTP session in memory, without tokio:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::SystemTime;
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
//!             Event::Guard(_) => session.resolve(Answer::Verdict(Verdict::Accept)),
//!             Event::Chunk(data) => {
//!                 message.extend_from_slice(&data);
//!                 session.resolve(Answer::Done(Ok(())));
//!             }
//!             Event::Commit => session.resolve(Answer::Committed(vec![Ok(())])),
//!             Event::Abort | Event::Close | Event::StartTls => {}
//!             _ => session.resolve(Answer::Done(Ok(()))), // Open, AddRecipient, Begin
//!         }
//!     }
//!     if session.is_closed() { break; }
//!     let used = session.feed(input, SystemTime::now());
//!     input = &input[used..];
//! }
//! assert_eq!(replies, [220, 250, 250, 250, 354, 250, 221]);
//! // The message as stored: our Received: field first, then what the client sent.
//! assert!(message.starts_with(b"Received: from client (stdio)\r\n"));
//! assert!(message.ends_with(b"\r\nSubject: hi\r\n\r\nHello\r\n"));
//! ```
#![deny(missing_docs)]

mod authres;
mod check;
mod dispatch;
mod driver;
mod envelope;
mod guard;
mod id;
mod limits;
mod observe;
pub mod reply;
mod sealed;
mod session;
mod spool;
pub mod trace;

pub use authres::claims_authserv_id;
pub use check::{DataCheck, DataChecks, DataScans, Scan};
pub use dispatch::{
    BoxDispatch, Capabilities, DynTransaction, MailDispatch, Outcomes, Transaction,
};
pub use driver::{BoxIo, Driver, Io, Summary, TlsUpgrade, UpgradeFuture};
pub use envelope::{AuthResult, Envelope, Peer, Protocol, Recipient, SessionInfo, TlsInfo};
pub use guard::{Guard, Guards, Note, Verdict};
pub use limits::Limits;
pub use observe::{Limit, Observation, Observer, Observers, Origin};
pub use reply::{Refusal, Reply};
pub use sealed::SealedFile;
pub use session::{Answer, DataDecoder, End, Event, Session, SessionConfig, Stage, Stats};
pub use spool::{Spool, SpoolReader};

/// The parser's types, re-exported so that users need one dependency.
pub use samotop_parser as parser;
