//! The DNS behind the checks: a small [`Dns`] trait, the hickory [`Resolver`] for real
//! use, and an in-memory [`Zone`] for tests.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData, RecordType};

use crate::error::Error;

/// Time to wait for one answer from a name server before trying again (our own
/// resolver, [`Resolver::new`]).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Retries after a failed try: with [`QUERY_TIMEOUT`], a query takes at most 4 s.
pub const QUERY_ATTEMPTS: usize = 1;
/// The bound on one query through a shared resolver ([`Resolver::from_hickory`]), whose
/// own timeouts we do not set: past it the query is a [`DnsError::Timeout`].
pub const QUERY_DEADLINE: Duration = Duration::from_secs(4);

/// A DNS failure that is not an answer. "No such name" and "no such record" are answers
/// (an empty list, or `false` from [`Dns::exists`]), not errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// No answer in time: a `temperror` (RFC 8601 2.7.1).
    #[error("DNS timeout")]
    Timeout,
    /// SERVFAIL, REFUSED, a network error: a `temperror`.
    #[error("DNS error: {0}")]
    Temporary(String),
    /// The name cannot be asked for (a label over 63 bytes, say): a `permerror`.
    #[error("invalid DNS name {0}")]
    InvalidName(String),
}

/// The look-ups the checks need. Names are absolute, without the trailing dot.
///
/// Implement it to put another resolver (or a test double) behind the checks; the crate
/// gives [`Resolver`] (hickory) and [`Zone`] (in memory).
pub trait Dns: Send + Sync {
    /// The TXT records at `name`, each record's strings joined in order (RFC 6376
    /// 3.6.2.2, RFC 9989 4.5). An empty list when the name or the records do not exist.
    fn txt(&self, name: &str) -> impl Future<Output = Result<Vec<Vec<u8>>, DnsError>> + Send;

    /// Whether `name` exists: `false` only for NXDOMAIN (RFC 9989 3.2.13, A.4; a name
    /// with no records of the type asked for exists).
    fn exists(&self, name: &str) -> impl Future<Output = Result<bool, DnsError>> + Send;
}

impl<D: Dns> Dns for &D {
    fn txt(&self, name: &str) -> impl Future<Output = Result<Vec<Vec<u8>>, DnsError>> + Send {
        (**self).txt(name)
    }
    fn exists(&self, name: &str) -> impl Future<Output = Result<bool, DnsError>> + Send {
        (**self).exists(name)
    }
}

impl<D: Dns> Dns for std::sync::Arc<D> {
    fn txt(&self, name: &str) -> impl Future<Output = Result<Vec<Vec<u8>>, DnsError>> + Send {
        (**self).txt(name)
    }
    fn exists(&self, name: &str) -> impl Future<Output = Result<bool, DnsError>> + Send {
        (**self).exists(name)
    }
}

/// The hickory resolver: shared, caching (hickory's own cache), fully async.
///
/// Build one with [`Resolver::new`], or wrap the `TokioResolver` the rest of the server
/// uses (SPF, say) with [`Resolver::from_hickory`]: clones share one cache.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    /// With `Some(addr)`, asks only that name server, over UDP then TCP; with `None`, the
    /// servers of the system configuration (`/etc/resolv.conf`).
    ///
    /// Each try waits [`QUERY_TIMEOUT`] (2 s), a failed query is retried
    /// [`QUERY_ATTEMPTS`] time, and `/etc/hosts` is not consulted. Needs no runtime and
    /// sends nothing until the first look-up.
    ///
    /// # Errors
    ///
    /// [`Error::SystemConfig`] when `None` and the system configuration cannot be read;
    /// [`Error::Resolver`] when hickory refuses the configuration.
    pub fn new(dns: Option<SocketAddr>) -> Result<Self, Error> {
        let mut builder = match dns {
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let server = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![server]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio().map_err(|e| Error::SystemConfig {
                source: Box::new(e),
            })?,
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = QUERY_TIMEOUT;
        opts.attempts = QUERY_ATTEMPTS;
        opts.use_hosts_file = ResolveHosts::Never;
        let inner = builder.build().map_err(|e| Error::Resolver {
            source: Box::new(e),
        })?;
        Ok(Resolver { inner })
    }

    /// Uses an existing resolver (a clone shares its cache). Its timeouts stay as they
    /// are; each of our queries is bounded by [`QUERY_DEADLINE`] on top.
    pub fn from_hickory(resolver: TokioResolver) -> Self {
        Resolver { inner: resolver }
    }

    /// The hickory resolver inside, to share it further.
    pub fn hickory(&self) -> &TokioResolver {
        &self.inner
    }
}

fn fqdn(name: &str) -> Result<Name, DnsError> {
    let absolute = if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    };
    Name::from_ascii(&absolute).map_err(|_| DnsError::InvalidName(name.to_owned()))
}

fn temporary(error: NetError) -> DnsError {
    if matches!(error, NetError::Timeout) {
        DnsError::Timeout
    } else {
        DnsError::Temporary(error.to_string())
    }
}

async fn bounded<T>(query: impl Future<Output = Result<T, DnsError>>) -> Result<T, DnsError> {
    tokio::time::timeout(QUERY_DEADLINE, query)
        .await
        .unwrap_or(Err(DnsError::Timeout))
}

impl Dns for Resolver {
    fn txt(&self, name: &str) -> impl Future<Output = Result<Vec<Vec<u8>>, DnsError>> + Send {
        let name = fqdn(name);
        bounded(async move {
            let lookup = match self.inner.txt_lookup(name?).await {
                Ok(lookup) => lookup,
                Err(e) if e.is_no_records_found() => return Ok(Vec::new()),
                Err(e) => return Err(temporary(e)),
            };
            Ok(lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => Some(
                        txt.txt_data
                            .iter()
                            .flat_map(|s| s.iter())
                            .copied()
                            .collect(),
                    ),
                    _ => None,
                })
                .collect())
        })
    }

    fn exists(&self, name: &str) -> impl Future<Output = Result<bool, DnsError>> + Send {
        let name = fqdn(name);
        bounded(async move {
            match self.inner.lookup(name?, RecordType::A).await {
                Ok(_) => Ok(true),
                Err(e) if e.is_nx_domain() => Ok(false),
                Err(e) if e.is_no_records_found() => Ok(true),
                Err(e) => Err(temporary(e)),
            }
        })
    }
}

/// What a [`Zone`] answers for one name.
#[derive(Debug, Clone)]
enum Answer {
    Txt(Vec<Vec<u8>>),
    Fail(DnsError),
    Hang,
}

/// An in-memory DNS zone for tests: TXT records by name, failures on demand, and a log
/// of the questions asked.
///
/// ```
/// use samotop_auth::{Dns, Zone};
/// let zone = Zone::new()
///     .with_txt("_dmarc.example.com", "v=DMARC1; p=reject")
///     .timeout("_dmarc.slow.example");
/// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// assert_eq!(rt.block_on(Dns::txt(&zone, "_dmarc.example.com")).unwrap().len(), 1);
/// assert!(rt.block_on(Dns::txt(&zone, "nothing.example.com")).unwrap().is_empty());
/// assert!(rt.block_on(zone.exists("example.com")).unwrap()); // an empty non-terminal
/// assert!(!rt.block_on(zone.exists("other.example")).unwrap());
/// assert_eq!(zone.queries(), ["txt _dmarc.example.com", "txt nothing.example.com",
///     "exists example.com", "exists other.example"]);
/// ```
#[derive(Debug, Default)]
pub struct Zone {
    names: HashMap<String, Answer>,
    log: Mutex<Vec<String>>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Zone {
    /// An empty zone: every name is NXDOMAIN.
    pub fn new() -> Self {
        Zone::default()
    }

    /// Adds a TXT record at `name` (one string; add several for several records).
    pub fn with_txt(mut self, name: &str, record: impl AsRef<[u8]>) -> Self {
        let entry = self
            .names
            .entry(key(name))
            .or_insert_with(|| Answer::Txt(Vec::new()));
        if let Answer::Txt(records) = entry {
            records.push(record.as_ref().to_vec());
        }
        self
    }

    /// Makes every question about `name` a [`DnsError::Timeout`], at once.
    pub fn timeout(self, name: &str) -> Self {
        self.fail(name, DnsError::Timeout)
    }

    /// Makes every question about `name` fail with `error`.
    pub fn fail(mut self, name: &str, error: DnsError) -> Self {
        self.names.insert(key(name), Answer::Fail(error));
        self
    }

    /// Makes every question about `name` wait forever (for deadline tests).
    pub fn hang(mut self, name: &str) -> Self {
        self.names.insert(key(name), Answer::Hang);
        self
    }

    /// The questions asked so far, as `txt NAME` and `exists NAME`.
    pub fn queries(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn ask(&self, what: &str, name: &str) -> Option<Answer> {
        if let Ok(mut log) = self.log.lock() {
            log.push(format!("{what} {name}"));
        }
        self.names.get(&key(name)).cloned()
    }
}

impl Dns for Zone {
    async fn txt(&self, name: &str) -> Result<Vec<Vec<u8>>, DnsError> {
        match self.ask("txt", name) {
            None => Ok(Vec::new()),
            Some(Answer::Txt(records)) => Ok(records),
            Some(Answer::Fail(e)) => Err(e),
            Some(Answer::Hang) => std::future::pending().await,
        }
    }

    async fn exists(&self, name: &str) -> Result<bool, DnsError> {
        let name_key = key(name);
        match self.ask("exists", name) {
            Some(Answer::Fail(e)) => Err(e),
            Some(Answer::Hang) => std::future::pending().await,
            Some(Answer::Txt(_)) => Ok(true),
            None => {
                let suffix = format!(".{name_key}");
                Ok(self.names.keys().any(|k| k.ends_with(&suffix)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_server_needs_no_runtime_and_no_network() {
        assert!(Resolver::new(Some("127.0.0.1:5353".parse().unwrap())).is_ok());
        assert!(Resolver::new(Some("[::1]:53".parse().unwrap())).is_ok());
    }

    #[test]
    fn names() {
        assert!(fqdn("sel._domainkey.example.com").is_ok());
        assert!(fqdn("example.com.").is_ok());
        assert!(matches!(
            fqdn(&"a".repeat(64)),
            Err(DnsError::InvalidName(_))
        ));
    }
}
