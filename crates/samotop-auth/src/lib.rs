//! Sender authentication for Samotop: who really sent this message?
//!
//! # Brief overview
//!
//! * **DKIM** (RFC 6376; RFC 8301: `rsa-sha1` and RSA keys under 1024 bits are never a
//!   pass; RFC 8463: `ed25519-sha256`): every signature is verified (up to
//!   [`Limits::max_signatures`]), each with its own [`DkimResult`].
//! * **DMARC** (RFC 9989): the DNS tree walk finds the policy and the organizational
//!   domain (no Public Suffix List); SPF (passed in by the caller) and DKIM identifiers
//!   are aligned strictly or relaxed; `p`, `sp`, `np` (with an NXDOMAIN test), `t=y`,
//!   and RFC 7489's `pct` decide the [`Disposition`].
//! * **ARC** (RFC 8617): the chain is validated (structure, `cv=`, the newest
//!   ARC-Message-Signature, every ARC-Seal, oldest-pass) into `arc=pass|fail|none`.
//!   No sealing.
//! * **`Authentication-Results`** (RFC 8601): [`Report::authentication_results`] writes
//!   the field; nothing a peer controls can break it. [`claims_authserv_id`] says whether
//!   an incoming one claims our authserv-id (so the session can rename it).
//!
//! The work is split in two. A [`Scanner`] takes the message chunk by chunk
//! ([`Scanner::update`]: synchronous, CPU only, memory bounded by construction: the
//! header section up to 256 KiB, fixed buffers, a hash state per distinct body hash; the
//! body is canonicalized and hashed as it streams and never kept). Then
//! [`Scanner::finish`] (async) fetches keys and records through the [`Dns`] of the
//! [`Verifier`] (hickory's [`Resolver`], shareable with SPF; or an in-memory [`Zone`] in
//! tests), all at once, each query bounded and the whole check bounded by
//! [`Limits::timeout`] (10 s) — past it, `temperror`, never a rejection — and returns a
//! [`Report`]. [`Report::action`] applies the operator's [`Policy`]: tag (the default),
//! quarantine, or refuse with [`DMARC_REJECT`] (550 5.7.1) for DMARC `enforce`.
//!
//! This crate is MIT OR Apache-2.0. Its cryptography is ring (RSA PKCS#1 v1.5
//! verification only; ISC-style), RustCrypto's `sha1` and `sha2`, and `ed25519-dalek`
//! (BSD-3-Clause); no GPL code.
//!
//! # Example
//!
//! The example message of RFC 8463 Appendix A, signed with ed25519-sha256, checked
//! against an in-memory zone holding its key and a DMARC record:
//!
//! ```
//! use samotop_auth::{Action, Config, Context, Outcome, Verifier, Zone};
//!
//! let zone = Zone::new()
//!     .with_txt("brisbane._domainkey.football.example.com",
//!          "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
//!     .with_txt("_dmarc.football.example.com", "v=DMARC1; p=reject");
//! let verifier = Verifier::new(zone, Config::default());
//!
//! let message = concat!(
//!     "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n",
//!     " d=football.example.com; i=@football.example.com;\r\n",
//!     " q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n",
//!     " subject : date : message-id : from : subject : date;\r\n",
//!     " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n",
//!     " b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\r\n",
//!     " Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\r\n",
//!     "From: Joe SixPack <joe@football.example.com>\r\n",
//!     "To: Suzie Q <suzie@shopping.example.net>\r\n",
//!     "Subject: Is dinner ready?\r\n",
//!     "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n",
//!     "Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n",
//!     "\r\n",
//!     "Hi.\r\n",
//!     "\r\n",
//!     "We lost the game.  Are you hungry yet?\r\n",
//!     "\r\n",
//!     "Joe.\r\n",
//! );
//!
//! let mut scanner = verifier.scanner();
//! for chunk in message.as_bytes().chunks(7) {  // any split gives the same result
//!     scanner.update(chunk);
//! }
//! let context = Context::new().spf_mailfrom(Outcome::Fail, "shopping.example.net");
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! let report = runtime.block_on(scanner.finish(&verifier, &context));
//!
//! assert_eq!(report.dkim[0].outcome, Outcome::Pass);
//! assert_eq!(report.dmarc.outcome, Outcome::Pass);   // DKIM d= aligns with From
//! assert_eq!(report.action(), Action::Tag { quarantine: false });
//! let field = report.authentication_results("mx.example.net").field();
//! assert!(field.starts_with("Authentication-Results: mx.example.net;\r\n"));
//! assert!(field.contains("dkim=pass header.d=football.example.com"));
//! assert!(field.contains("dmarc=pass policy.dmarc=reject header.from=football.example.com"));
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```
//!
//! # With samotop-core
//!
//! [`AuthCheck`] is the whole thing as a samotop-core `DataCheck`: stack it on a `Driver`
//! or a `Server` (`Server::checks`) beside checks of your own. Each message is spooled
//! while its [`Scanner`] hashes it; at the end of the data the check builds the
//! [`Context`] from the envelope's SPF results (the SPF guard's, from MAIL) and the peer's
//! address, and turns the [`Report`] into the core's verdict: one `Authentication-Results`
//! field on top of the stored message (SPF, DKIM, DMARC, ARC), the results for
//! `Envelope::auth`, the quarantine flag, or `550 5.7.1` ([`DMARC_REJECT`]). The session
//! renames incoming fields that claim our authserv-id before anything sees them
//! ([`claims_authserv_id`], samotop-core's predicate).
//!
//! One resolver for everything: build a hickory `TokioResolver`, give it to the SPF guard
//! and wrap it with [`Resolver::from_hickory`] here, and SPF, DKIM and DMARC share one cache.
//!
//! ```
//! use samotop_auth::{AuthCheck, Config, DmarcMode, Policy, Resolver, Verifier};
//! use samotop_core::DataChecks;
//!
//! // --dns 127.0.0.1:5353 --dkim tag --dmarc enforce (no traffic until a message comes)
//! let resolver = Resolver::new(Some("127.0.0.1:5353".parse()?))?;
//! let policy = Policy { dmarc: DmarcMode::Enforce, ..Policy::default() };
//! let verifier = Verifier::new(resolver.clone(), Config::with_policy(policy));
//! let checks = DataChecks::new().with(AuthCheck::new(verifier, "mx.example.org"));
//! // samotop_server::Server::new(dispatch).checks(checks) ...
//! # let _ = checks;
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod address;
mod canon;
mod check;
mod dmarc;
mod dns;
mod error;
mod header;
mod key;
mod lookup;
mod policy;
mod report;
mod results;
mod scanner;
mod signature;
mod tag;
mod verifier;
mod verify;

pub use canon::Canonicalization;
pub use check::{AuthCheck, AuthScan};
pub use dmarc::{Alignment, MAX_WALK_QUERIES};
pub use dns::{
    Dns, DnsError, MAX_CACHED_ANSWERS, QUERY_ATTEMPTS, QUERY_DEADLINE, QUERY_TIMEOUT, Resolver,
    Zone,
};
pub use error::Error;
pub use header::{DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_HEADER_FIELDS};
pub use key::{MAX_RSA_BITS, MIN_RSA_BITS};
pub use policy::{Action, DMARC_REJECT, Disposition, DkimMode, DmarcMode, Policy, Refusal};
pub use report::{
    ArcResult, AuthResult, Context, DkimResult, DmarcEvaluation, DmarcResult, Outcome, Report, Spf,
};
pub use results::{AuthenticationResults, MAX_REASON, MAX_VALUE};
/// Whether an incoming `Authentication-Results` claims our authserv-id: samotop-core's
/// predicate, the one the session renames forged fields by (so both read a field alike).
pub use samotop_core::claims_authserv_id;
pub use scanner::Scanner;
pub use signature::Algorithm;
pub use verifier::{BodyLength, Config, Limits, MultipleAuthors, Verifier};

/// Fuzzing entry points: the parsers that read what a peer or a DNS zone controls.
/// Not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    /// Parses `input` as a tag list (RFC 6376 3.2) and as a DKIM-Signature, an
    /// ARC-Message-Signature and an ARC-Seal value.
    pub fn signature(input: &[u8]) {
        let _ = crate::tag::TagList::parse(input);
        if let Ok(sig) = crate::signature::Signature::parse(input, crate::signature::Kind::Dkim) {
            let _ = sig.check(crate::signature::Kind::Dkim);
        }
        let _ = crate::signature::Signature::parse(input, crate::signature::Kind::ArcMessage);
        let _ = crate::signature::Seal::parse(input);
        let _ = crate::signature::arc_instance(input);
    }

    /// Parses `input` as a DKIM key record and as a DMARC record.
    pub fn records(input: &[u8]) {
        let _ = crate::key::parse(input);
        if let Some(record) = crate::dmarc::Record::parse(input) {
            let _ = record.effective();
        }
    }

    /// Reads `input` as an Authentication-Results value and a From value.
    pub fn fields(input: &[u8]) {
        let _ = crate::claims_authserv_id(b"Authentication-Results", input, "mx.example.org");
        let _ = crate::claims_authserv_id(b"ARC-Authentication-Results", input, "mx.example.org");
        let mut authors = crate::address::Authors::default();
        crate::address::authors(input, &mut authors);
    }

    /// Checks `input` as a whole message against an in-memory zone (one key, one DMARC
    /// record): whatever it holds, the `Authentication-Results` field stays one field.
    pub fn verify(input: &[u8]) {
        use std::sync::OnceLock;
        static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
        let runtime = RUNTIME.get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a runtime")
        });
        let zone = crate::Zone::new()
            .with_txt(
                "sel._domainkey.example.com",
                "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
            )
            .with_txt(
                "_dmarc.example.com",
                "v=DMARC1; p=reject; sp=quarantine; np=reject",
            );
        let verifier = crate::Verifier::new(zone, crate::Config::default());
        let mut scanner = verifier.scanner();
        scanner.update(input);
        let context = crate::Context::new().spf_mailfrom(crate::Outcome::Pass, "example.com");
        let report = runtime.block_on(scanner.finish(&verifier, &context));
        let field = report.authentication_results("mx.example.org").field();
        let body = field.strip_suffix("\r\n").expect("a final CRLF");
        assert!(
            !body.replace("\r\n\t", "").contains(['\r', '\n']),
            "{field:?}"
        );
        assert!(body.lines().all(|l| l.len() <= 998));
    }

    /// Splits `input` into chunks at the sizes given by its first bytes and feeds a
    /// scanner, checking the header and body state machines against one whole feed.
    pub fn scanner(input: &[u8]) {
        let (sizes, message) = input.split_at(input.len().min(4));
        let config = crate::Config::default();
        let mut whole = crate::Scanner::new(&config);
        whole.update(message);
        let mut split = crate::Scanner::new(&config);
        let mut rest = message;
        let mut i = 0;
        while !rest.is_empty() {
            let n = (sizes.get(i % sizes.len().max(1)).copied().unwrap_or(1) as usize)
                .clamp(1, rest.len());
            split.update(&rest[..n]);
            rest = &rest[n..];
            i += 1;
        }
        assert_eq!(whole.header_complete(), split.header_complete());
        assert_eq!(whole.key_names(), split.key_names());
        for canon in [
            crate::Canonicalization::Simple,
            crate::Canonicalization::Relaxed,
        ] {
            let mut a = crate::canon::BodyCanon::new(canon);
            let mut b = crate::canon::BodyCanon::new(canon);
            let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
            a.update(message, &mut out_a);
            for chunk in message.chunks(sizes.first().copied().unwrap_or(1).max(1) as usize) {
                b.update(chunk, &mut out_b);
            }
            a.finish(&mut out_a);
            b.finish(&mut out_b);
            assert_eq!(out_a, out_b);
        }
    }
}
