//! The crate's one error type.

/// What can go wrong when setting up SPF checking.
///
/// Checking itself never fails: a DNS problem during a check is the SPF result `temperror`
/// (RFC 7208 2.6.6), answered by the policy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// SPF is on, no DNS server was given, and the system resolver configuration
    /// (`/etc/resolv.conf` on Unix) could not be read: it is missing or unreadable.
    /// Give a name server (`--dns ADDR`) or turn SPF off (`--spf off`).
    #[error(
        "cannot read the system DNS configuration (/etc/resolv.conf) for SPF look-ups: {source}; \
         give a DNS server (--dns) or turn SPF off (--spf off)"
    )]
    SystemConfig {
        /// The resolver's reason.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The DNS resolver could not be built from its configuration.
    #[error("cannot set up the DNS resolver for SPF look-ups: {source}")]
    Resolver {
        /// The resolver's reason.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A policy name other than `off`, `tag` or `reject` (e.g. a typo in `--spf`).
    #[error("unknown SPF policy {0:?}: expected off, tag or reject")]
    UnknownPolicy(String),
}
