//! The guards the binary stacks from its flags: recipient domains and a per-IP message rate.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use samotop_core::parser::{ForwardPath, Host};
use samotop_core::{Envelope, Guard, Recipient, SessionInfo, Verdict, reply};

use crate::limits::ip_key;

/// Accepts recipients only in the listed domains (`--accept-domain`). `<Postmaster>` is
/// always accepted (RFC 5321 4.5.1); an address literal is accepted when it is our own
/// address. Others get [`reply::RELAY_DENIED`].
#[derive(Debug, Clone)]
pub struct AcceptDomains {
    domains: Vec<String>,
}

impl AcceptDomains {
    /// Domains compared case-insensitively, without a trailing dot.
    pub fn new(domains: &[String]) -> Self {
        AcceptDomains {
            domains: domains.iter().map(|d| normalize(d)).collect(),
        }
    }

    fn accepts(&self, info: &SessionInfo, path: &ForwardPath) -> bool {
        match path {
            ForwardPath::Postmaster => true,
            ForwardPath::Mailbox(m) => match &m.domain {
                Host::Domain(d) => self.domains.contains(&normalize(d)),
                Host::Ipv4(ip) => info.local.is_some_and(|l| l.ip() == IpAddr::V4(*ip)),
                Host::Ipv6(ip) => info.local.is_some_and(|l| l.ip() == IpAddr::V6(*ip)),
                Host::Other { .. } => false,
            },
        }
    }
}

fn normalize(domain: &str) -> String {
    domain.trim_end_matches('.').to_lowercase()
}

impl Guard for AcceptDomains {
    fn name(&self) -> &'static str {
        "accept_domains"
    }

    async fn rcpt(&self, info: &SessionInfo, _: &Envelope, recipient: &Recipient) -> Verdict {
        if self.accepts(info, &recipient.path) {
            Verdict::Accept
        } else {
            log::debug!("session {}: relay denied for <{}>", info.id, recipient.path);
            Verdict::Reject(reply::RELAY_DENIED)
        }
    }
}

/// At most N transactions per minute per peer address (IPv6 per /64); over it, MAIL gets
/// [`reply::RATE_LIMITED`].
pub struct MessageRate {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl MessageRate {
    /// `per_minute` transactions, with bursts of the same size.
    pub fn new(per_minute: NonZeroU32) -> Self {
        MessageRate {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
        }
    }
}

impl Guard for MessageRate {
    fn name(&self) -> &'static str {
        "rate"
    }

    async fn mail(&self, info: &SessionInfo, _: &Envelope) -> Verdict {
        let Some(ip) = info.peer.ip() else {
            return Verdict::Accept;
        };
        if self.limiter.len() > 100_000 {
            self.limiter.retain_recent();
        }
        match self.limiter.check_key(&ip_key(ip)) {
            Ok(()) => Verdict::Accept,
            Err(_) => {
                log::debug!("session {}: rate limit reached for {ip}", info.id);
                Verdict::Reject(reply::RATE_LIMITED)
            }
        }
    }
}
