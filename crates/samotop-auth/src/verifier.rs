//! The [`Verifier`]: DNS and configuration shared by every message; [`Config`] and its
//! [`Limits`].

use std::time::Duration;

use crate::dns::Dns;
use crate::header::{DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_HEADER_FIELDS};
use crate::key::KeyCache;
use crate::policy::Policy;
use crate::scanner::Scanner;

/// The bounds of one message's check. Each has a default; none is unlimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The header section kept in memory, in bytes: default 256 KiB. A larger section is
    /// not verified: every method reports `permerror` ("header section too large").
    pub max_header_bytes: usize,
    /// Header fields: default 4096; more is treated like a section too large.
    pub max_header_fields: usize,
    /// DKIM signatures verified, from the top: default 10. Those below get one
    /// `neutral` result saying how many were not verified.
    pub max_signatures: usize,
    /// ARC sets: default and at most 50 (RFC 8617 5.2 step 1); more is `arc=fail`.
    pub max_arc_sets: usize,
    /// Distinct body hashes (canonicalization, hash, `l=`) computed while the body
    /// streams: default 16. Each costs one pass of a hash over the body; a signature
    /// past the limit is `neutral` ("too many body hashes").
    pub max_body_hashes: usize,
    /// DNS questions for one message: default 64. Past it the question is not asked and
    /// what needed it is a `permerror` ("too many DNS queries").
    pub max_dns_queries: usize,
    /// Author domains evaluated when From names several (RFC 9989 11.5): default 5.
    pub max_author_domains: usize,
    /// The whole check, from [`Scanner::finish`] on: default 10 s. Past it, whatever
    /// still waits for DNS is `temperror`, never a rejection.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_header_fields: DEFAULT_MAX_HEADER_FIELDS,
            max_signatures: 10,
            max_arc_sets: 50,
            max_body_hashes: 16,
            max_dns_queries: 64,
            max_author_domains: 5,
            timeout: Duration::from_secs(10),
        }
    }
}

/// What a DKIM signature with `l=` is worth when the body goes on past the signed part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyLength {
    /// The default: `policy` ("l=N leaves M body bytes unsigned"), so it neither passes
    /// nor counts for DMARC: appended content cannot ride on the signature (RFC 6376
    /// 8.2).
    #[default]
    Refuse,
    /// `pass`, with the unsigned byte count in the reason and in
    /// [`DkimResult::unsigned_body_bytes`](crate::DkimResult).
    Accept,
}

/// What to do when From names several author domains (RFC 9989 5.3.1, 11.5).
///
/// RFC 9989 5.3.1: "If zero or more than one domain is extracted from the RFC5322.From
/// header field, then DMARC validation is not possible and the process terminates. In the
/// case where more than one domain is retrieved, the Mail Receiver MAY choose to go
/// forward with DMARC validation anyway." 4.4 adds that alignment "cannot occur with a
/// message that is not valid per \[RFC5322\], particularly one with a malformed, absent, or
/// repeated RFC5322.From header field". So a message with no From field, or no author
/// domain in it, is `dmarc=permerror` (no policy is applied; the registry's permerror is
/// "an error ... that is unrecoverable"), whatever this setting says. Several From
/// fields are read as one list of author domains (and the reason says how many fields).
/// This setting decides the several-domains case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MultipleAuthors {
    /// The default, RFC 9989 11.5's recommended approach (from RFC 7489 6.6.1):
    /// evaluate each author domain (up to [`Limits::max_author_domains`]); the message
    /// fails if any fails, and the strictest policy among the failing ones applies.
    /// More domains than the limit: a `fail` if one of those evaluated fails, else
    /// `permerror` (the evaluation is incomplete).
    #[default]
    EachDomain,
    /// RFC 9989 5.3.1 literally: "DMARC validation is not possible and the process
    /// terminates": `permerror`, no policy applied.
    PermError,
}

/// The configuration of a [`Verifier`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// What to check and what to do with the result.
    pub policy: Policy,
    /// The bounds.
    pub limits: Limits,
    /// DKIM `l=`.
    pub body_length: BodyLength,
    /// From with several author domains.
    pub multiple_authors: MultipleAuthors,
    /// How far in the future a signature's `t=` may be (senders' clocks drift):
    /// default 1 hour; beyond it the signature is `permerror`.
    pub clock_skew: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            policy: Policy::default(),
            limits: Limits::default(),
            body_length: BodyLength::default(),
            multiple_authors: MultipleAuthors::default(),
            clock_skew: Duration::from_secs(3600),
        }
    }
}

impl Config {
    /// The default configuration with `policy`.
    pub fn with_policy(policy: Policy) -> Self {
        Config {
            policy,
            ..Config::default()
        }
    }
}

/// What every message's check shares: the DNS and the configuration. Cheap to share
/// (`Arc` it); one per server.
#[derive(Debug)]
pub struct Verifier<D: Dns = crate::Resolver> {
    dns: D,
    config: Config,
    keys: KeyCache,
}

impl<D: Dns> Verifier<D> {
    /// A verifier asking `dns`.
    pub fn new(dns: D, config: Config) -> Self {
        Verifier {
            dns,
            config,
            keys: KeyCache::new(),
        }
    }

    /// A scanner for the next message.
    pub fn scanner(&self) -> Scanner {
        Scanner::new(&self.config)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The DNS.
    pub fn dns(&self) -> &D {
        &self.dns
    }

    /// The key records parsed so far.
    pub(crate) fn keys(&self) -> &KeyCache {
        &self.keys
    }
}
