//! SPF (Sender Policy Framework, RFC 7208) for Samotop: a [`Guard`](samotop_core::Guard) that
//! checks, at MAIL, whether the sender's domain permits the peer's IP address to send its mail.
//!
//! # Brief overview
//!
//! * [`SpfGuard`] evaluates SPF with the [`viaspf`] crate over an async
//!   [`hickory-resolver`](https://docs.rs/hickory-resolver) look-up: the identity is the whole
//!   MAIL FROM `local@domain` (`postmaster@` the HELO name for the null sender, RFC 7208 2.4),
//!   the IP is the peer's (never `ip:port`). The HELO identity is checked too, at the same
//!   time (RFC 7208 2.3; [`SpfGuard::with_helo_check`]): its result is recorded as
//!   `spf=... smtp.helo=NAME`, never decides.
//! * [`SpfGuard::with_resolver`] takes a hickory `TokioResolver` the server shares with its
//!   DKIM and DMARC checks (one cache for all); [`SpfGuard::new`] builds its own.
//! * [`Policy`] says what to do with the result: [`Policy::Off`] (no look-ups),
//!   [`Policy::Tag`] (the default: add a `Received-SPF` header field, RFC 7208 9.1) or
//!   [`Policy::Reject`] (refuse `fail` with [`SPF_FAIL`], 550 5.7.23, answer `temperror` with
//!   [`SPF_TEMPERROR`], 451 4.7.24, tag the rest). It parses from `off|tag|reject`.
//! * [`Error`]: what can go wrong when setting up (no system DNS configuration, an unknown
//!   policy name).
//!
//! Every check is bounded: 10 DNS-querying terms and 2 void look-ups (RFC 7208 4.6.4); 2 s per
//! DNS try with 1 retry and 5 s per look-up at most (an unreachable name server is `temperror`
//! after about 4 s); 20 s per check ([`DEFAULT_TIMEOUT`], the least RFC 7208 4.6.4 asks for).
//! Past a bound the result is `permerror` (limits) or `temperror` (time); `temperror` is never
//! a rejection: 451 under `reject`, a tag under `tag`.
//!
//! The check is exact against the OpenSPF RFC 7208 test suite (`tests/integration/
//! test_spf_rfc7208.py` runs it through the binary). Where viaspf 0.6 departs from the RFC
//! (CIDR `/0`, `c`/`r`/`t` macros in a domain-spec), the records it parses are rewritten for
//! it, per check; viaspf itself is not patched (the reports for upstream:
//! docs/upstream/viaspf.md).
//!
//! This crate is GPL-3.0-or-later, because viaspf is; the other Samotop crates are
//! MIT OR Apache-2.0 and do not depend on it.
//!
//! # Example
//!
//! A tagging guard that asks the name server on `127.0.0.1:5353` (no traffic until a check),
//! stacked with other guards; and an `off` guard, which accepts without a look-up:
//!
//! ```
//! use samotop_core::parser::{Host, MailParams, Mailbox, ReversePath};
//! use samotop_core::{Envelope, Guard, Guards, Peer, SessionInfo, Verdict};
//! use samotop_spf::{Policy, SpfGuard};
//!
//! let dns = "127.0.0.1:5353".parse().ok();
//! let spf = SpfGuard::new("tag".parse()?, dns, "mx.example.org")?;
//! assert_eq!(spf.policy(), Policy::Tag);
//! let _guards = Guards::new().with(spf);
//!
//! let off = SpfGuard::new(Policy::Off, None, "mx.example.org")?;
//! let mut info = SessionInfo::new(Peer::Tcp("192.0.2.1:4321".parse()?), "mx.example.org");
//! info.helo = Some(Host::Domain("mail.example.com".into()));
//! let sender = ReversePath::Mailbox(Mailbox {
//!     local: "amy".into(),
//!     domain: Host::Domain("example.com".into()),
//! });
//! let envelope = Envelope::new(sender, MailParams::default(), "1.1".into());
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! assert_eq!(runtime.block_on(off.mail(&info, &envelope)), Verdict::Accept);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod check_lookup;
mod error;
mod guard;
mod header;
mod lookup;
mod policy;
mod reply;
#[cfg(test)]
mod tests;

pub use error::Error;
pub use guard::{DEFAULT_TIMEOUT, SpfGuard};
pub use policy::Policy;
pub use reply::{SPF_FAIL, SPF_TEMPERROR};
