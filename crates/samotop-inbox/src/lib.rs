//! Samotop's inbox: a durable SQL message store and its web face.
//!
//! # Brief overview
//!
//! * [`Inbox`] stores every message it receives in SQLite (embedded, `sqlite:PATH`) or
//!   PostgreSQL (shared by several receivers, `postgres://...`). It is a
//!   [`MailDispatch`](samotop_core::MailDispatch): a message is answered `250` only after its
//!   database transaction committed durably (SQLite: WAL with `synchronous=FULL`), and the
//!   commits of concurrent sessions share one transaction (group commit).
//! * What is kept: the raw message exactly as received (zstd), the envelope
//!   ([`EnvelopeInfo`]: MAIL FROM, every RCPT, HELO, peer, TLS, SPF/DKIM/DMARC verdicts), the
//!   time and size, one row per recipient (one inbox per address; a Bcc recipient sees its
//!   copy and nobody sees the others), and, parsed after the commit, the fields for lists
//!   ([`Summary`]) and a full-text index (FTS5 / `tsvector`).
//! * [`Query`]: Mailpit's search syntax plus `rcpt:`.
//! * [`Inbox::wait`]: a long poll that returns as soon as a matching message arrives, with a
//!   cursor so that nothing is missed between two calls.
//! * [`Retention`]: pruning by age, count and size in small steps.
//! * [`HttpFace`]: the web inbox and a Mailpit-compatible JSON API (`/api/v1/...`) over axum.
//!
//! # Example
//!
//! One message through the calls the session's driver makes, then read back:
//!
//! ```
//! use samotop_core::{Envelope, MailDispatch, Peer, Recipient, SessionInfo, Transaction};
//! use samotop_inbox::{Filter, Inbox, Options, Query};
//! use samotop_parser::{ForwardPath, Host, MailParams, Mailbox, RcptParams, ReversePath};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let runtime = tokio::runtime::Runtime::new()?;
//! runtime.block_on(async {
//!     let inbox = Inbox::sqlite(dir.path().join("mail.db"), Options::default())?;
//!     let info = SessionInfo::new(Peer::Stdio, "mx.example.org");
//!     let mut envelope = Envelope::new(ReversePath::Null, MailParams::default(), "1".into());
//!     let mut tx = inbox.open(&info, &envelope).await.map_err(|r| r.to_string())?;
//!     let bob = Mailbox { local: "bob".into(), domain: Host::Domain("example.org".into()) };
//!     let rcpt = Recipient::new(ForwardPath::Mailbox(bob), RcptParams::default());
//!     tx.add_recipient(&rcpt).await.map_err(|r| r.to_string())?;
//!     envelope.recipients.push(rcpt);
//!     tx.begin(&info, &envelope).await.map_err(|r| r.to_string())?;
//!     tx.write(b"Subject: hello\r\n\r\nHello, world\r\n").await.map_err(|r| r.to_string())?;
//!     assert_eq!(tx.commit().await, vec![Ok(())]); // durable now
//!
//!     // Parsing is lazy: wait for the message to be searchable.
//!     let query = Query::parse("subject:hello")?;
//!     let found = inbox.wait(Some("bob@example.org"), &query, 0, 10, Duration::from_secs(10)).await?;
//!     assert_eq!(found.messages[0].subject, "hello");
//!     let raw = inbox.raw(&found.messages[0].id, None).await?.ok_or("no message")?;
//!     assert_eq!(raw, b"Subject: hello\r\n\r\nHello, world\r\n");
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! * `store` (default): the stores, the dispatch and the web face. Without it
//!   (`default-features = false`) the crate is [`Query`] and the bounded parse for display
//!   ([`Fields::parse`], [`View::parse`], [`Part::find`]) only, with no database, zstd or
//!   HTTP dependency: what the fuzz targets build.
#![deny(missing_docs)]

#[cfg(feature = "store")]
mod dispatch;
#[cfg(feature = "store")]
mod error;
#[cfg(feature = "store")]
mod http;
mod model;
mod parse;
#[cfg(feature = "store")]
mod postgres;
mod query;
#[cfg(feature = "store")]
mod sql;
#[cfg(feature = "store")]
mod sqlite;
#[cfg(feature = "store")]
mod staging;
#[cfg(feature = "store")]
mod store;

#[cfg(feature = "store")]
pub use dispatch::InboxTransaction;
#[cfg(feature = "store")]
pub use error::Error;
#[cfg(feature = "store")]
pub use http::{HttpConfig, HttpFace};
pub use model::{
    Address, Attachment, AuthVerdict, EnvelopeInfo, Filter, MAX_COUNT, MAX_PAGE, Page, Stats,
    Summary, Waited, mailbox_key, rfc3339_ms,
};
pub use parse::{DEFAULT_PARSE_LIMIT, Fields, Part, View};
pub use query::{Field, MAX_QUERY_LEN, MAX_TERMS, Query, QueryError, Term, TermKind};
#[cfg(feature = "store")]
pub use store::{Event, Inbox, MAX_WAIT, Options, Pruned, Retention};
