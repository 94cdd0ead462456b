//! Mail that does something: Samotop delivery backends that hand each message to a webhook
//! or a program, and answer the client only once it took the message.
//!
//! # Brief overview
//!
//! * [`Webhook`]: one HTTP(S) POST per message (per recipient group behind a `Route`),
//!   the raw message (`message/rfc822`) or a JSON document ([`Format`]), signed per the
//!   Standard Webhooks scheme ([`Secret`], [`Signer`]). The endpoint's status is the
//!   client's reply (table below).
//! * [`Exec`]: a program run per message or per recipient, the message on its standard
//!   input, the envelope in its environment, its exit code (sysexits.h) the reply.
//! * [`Address`]: a recipient taken apart, with the arguments in its extension
//!   (`alerts+env=prod@example.org`), which both backends pass on.
//!
//! Both are synchronous triggers: the final `250` comes only after the endpoint answered
//! 2xx or the program exited 0; a failure is a `4xx` that the sending MTA retries, for days
//! if need be. Nothing is queued here. Both take any bytes (8BITMIME, BINARYMIME, SMTPUTF8).
//! Routing recipients to different backends and handing one message to several are the
//! generic `Route` and `Tee` of `samotop-delivery`.
//!
//! | webhook answer | reply |
//! | --- | --- |
//! | 2xx | `250` |
//! | 404, 410 | `550 5.1.1` |
//! | 413 | `552 5.3.4` |
//! | 429, 421, 425 | `451 4.4.5` |
//! | 408 (the endpoint's own timeout) | `451 4.4.1` |
//! | other 4xx | `554 5.6.0` |
//! | 5xx | `451 4.4.0` |
//! | 1xx, 3xx (redirects are not followed) | `451 4.3.5` |
//! | no answer within the timeout | `451 4.4.1` |
//! | connection refused, no route, DNS failure | `451 4.4.1` |
//! | connection lost during the request | `451 4.4.2` |
//!
//! A refusal's text is the endpoint's, when it gives one: the `Samotop-Reply` response
//! header, or the `reply` field of a JSON response body, sanitised (printable ASCII, at
//! most 200 characters). At most 64 KiB of a response body is read, for at most 5 s after
//! the status; the rest is dropped with the connection. The command's table is on [`Exec`].
//!
//! # Example
//!
//! A webhook and a program behind one `Tee` (all must accept), driven here by hand through
//! the calls the session makes. The endpoint is a closed port, so the webhook answers
//! `451 4.4.1` and the whole message is refused (the program ran and accepted it):
//!
//! ```
//! use samotop_core::{Envelope, MailDispatch, Peer, Recipient, SessionInfo, Transaction};
//! use samotop_delivery::Tee;
//! use samotop_parser::{ForwardPath, MailParams, RcptParams, ReversePath};
//! use samotop_trigger::{Exec, Webhook};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
//! let hook = Webhook::new(&format!("http://127.0.0.1:{port}/hook"))?; // nothing listens
//! let exec = Exec::parse("/bin/true")?;
//! let tee = Tee::new(vec![samotop_core::BoxDispatch::new(exec), samotop_core::BoxDispatch::new(hook)]);
//!
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! let outcomes = runtime.block_on(async {
//!     let info = SessionInfo::new(Peer::Stdio, "mx.example.org");
//!     let mut envelope = Envelope::new(ReversePath::Null, MailParams::default(), "1".into());
//!     let mut tx = tee.open(&info, &envelope).await?;
//!     let recipient = Recipient::new(ForwardPath::Postmaster, RcptParams::default());
//!     tx.add_recipient(&recipient).await?;
//!     envelope.recipients.push(recipient);
//!     tx.begin(&info, &envelope).await?;
//!     tx.write(b"Subject: hello\r\n\r\nHello\r\n").await?;
//!     Ok::<_, samotop_core::Refusal>(tx.commit().await)
//! }).map_err(|r| r.to_string())?;
//! assert_eq!(outcomes.len(), 1);
//! let refusal = outcomes[0].clone().unwrap_err();
//! assert_eq!((refusal.code(), refusal.enhanced()), (451, Some([4, 4, 1])));
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod address;
mod error;
pub mod exec;
mod json;
mod signature;
pub mod text;
mod webhook;

/// For the fuzz targets (`fuzz/fuzz_targets/webhook_json.rs`); not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    /// The JSON document for a message (as a webhook with `Format::Json` would POST it),
    /// with small bounds so that every limit is reached.
    pub fn json_document(message: &[u8]) -> std::io::Result<Vec<u8>> {
        crate::json::document_for_fuzzing(message)
    }
}

pub use address::{Address, MAX_ARG_NAME, MAX_ARG_VALUE, MAX_ARGS};
pub use error::Error;
pub use exec::{Exec, ExecTransaction};
pub use json::JsonOptions;
pub use signature::{Secret, Signer};
pub use webhook::{
    Format, MAX_RESPONSE, REPLY_HEADER, RESIGN_AFTER, RESPONSE_BODY_TIMEOUT, Webhook,
    WebhookTransaction, status_refusal,
};
