//! The crate's one error type: what can go wrong when setting up. Checking a message
//! never fails: every problem is a result (`temperror`, `permerror`, ...) in the report.

/// What can go wrong when setting up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The system DNS configuration (`/etc/resolv.conf`) cannot be read: give a name
    /// server explicitly.
    #[error("cannot read the system DNS configuration: {source}")]
    SystemConfig {
        /// What hickory said.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// hickory refused the resolver configuration.
    #[error("cannot build the DNS resolver: {source}")]
    Resolver {
        /// What hickory said.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A policy name that is not one of the known ones (`--dkim`, `--dmarc`).
    #[error("unknown {what} policy {value:?} ({})", match *what { "dkim" => "off or tag", _ => "off, tag or enforce" })]
    UnknownPolicy {
        /// Which policy: `dkim` or `dmarc`.
        what: &'static str,
        /// What was given.
        value: String,
    },
}
