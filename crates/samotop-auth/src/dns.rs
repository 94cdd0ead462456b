//! The DNS behind the checks: a small [`Dns`] trait, the hickory [`Resolver`] for real
//! use, and an in-memory [`Zone`] for tests.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError, NoRecords};
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

/// Answers a [`Resolver`] keeps in front of hickory's cache: at most this many names.
pub const MAX_CACHED_ANSWERS: usize = 4096;

/// The hickory resolver: shared, caching, fully async.
///
/// Build one with [`Resolver::new`], or wrap the `TokioResolver` the rest of the server
/// uses (SPF, say) with [`Resolver::from_hickory`]: clones share one cache.
///
/// Answers (records, and "no such name or record" when the name server gave a negative
/// TTL) are kept for their TTL, up to [`MAX_CACHED_ANSWERS`] names, in a table in front of
/// hickory's own cache: every message signed by one domain asks the same two or three
/// names, and a hit there is a hash look-up, where hickory's cache costs a name parse, a
/// timer and its own locking (docs/PERFORMANCE.md). Failures are never kept.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
    answers: Arc<Answers>,
}

/// What a [`Resolver`] keeps of one answer.
#[derive(Debug, Clone)]
enum Kept {
    Txt(Vec<Vec<u8>>),
    Exists(bool),
}

/// The answers a [`Resolver`] keeps, by question, with the instant each expires.
#[derive(Debug, Default)]
struct Answers {
    table: Mutex<HashMap<(bool, String), (Instant, Kept)>>,
}

impl Answers {
    fn get(&self, exists: bool, name: &str) -> Option<Kept> {
        let table = self.table.lock().ok()?;
        let (until, kept) = table.get(&(exists, key(name)))?;
        (*until > Instant::now()).then(|| kept.clone())
    }

    fn put(&self, exists: bool, name: &str, until: Option<Instant>, kept: Kept) {
        let Some(until) = until.filter(|u| *u > Instant::now()) else {
            return; // TTL 0, or no TTL known: not kept
        };
        let Ok(mut table) = self.table.lock() else {
            return;
        };
        if table.len() >= MAX_CACHED_ANSWERS {
            let now = Instant::now();
            table.retain(|_, (u, _)| *u > now);
            if table.len() >= MAX_CACHED_ANSWERS {
                table.clear(); // bounded: full of live answers, start again
            }
        }
        table.insert((exists, key(name)), (until, kept));
    }
}

/// When a "no records" answer expires: its negative TTL (RFC 2308), if the server gave one.
fn negative_until(error: &NetError) -> Option<Instant> {
    match error {
        NetError::Dns(HickoryDnsError::NoRecordsFound(NoRecords {
            negative_ttl: Some(ttl),
            ..
        })) => Instant::now().checked_add(Duration::from_secs(u64::from(*ttl))),
        _ => None,
    }
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
        Ok(Self::from_hickory(inner))
    }

    /// Uses an existing resolver (a clone shares its cache). Its timeouts stay as they
    /// are; each of our queries is bounded by [`QUERY_DEADLINE`] on top.
    pub fn from_hickory(resolver: TokioResolver) -> Self {
        Resolver {
            inner: resolver,
            answers: Arc::default(),
        }
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
    async fn txt(&self, name: &str) -> Result<Vec<Vec<u8>>, DnsError> {
        if let Some(Kept::Txt(records)) = self.answers.get(false, name) {
            return Ok(records); // a hit: no name parse, no copy of the question
        }
        bounded(async {
            let lookup = match self.inner.txt_lookup(fqdn(name)?).await {
                Ok(lookup) => lookup,
                Err(e) if e.is_no_records_found() => {
                    self.answers
                        .put(false, name, negative_until(&e), Kept::Txt(Vec::new()));
                    return Ok(Vec::new());
                }
                Err(e) => return Err(temporary(e)),
            };
            let records: Vec<Vec<u8>> = lookup
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
                .collect();
            let until = Some(lookup.valid_until());
            self.answers
                .put(false, name, until, Kept::Txt(records.clone()));
            Ok(records)
        })
        .await
    }

    async fn exists(&self, name: &str) -> Result<bool, DnsError> {
        if let Some(Kept::Exists(exists)) = self.answers.get(true, name) {
            return Ok(exists);
        }
        bounded(async {
            let (exists, until) = match self.inner.lookup(fqdn(name)?, RecordType::A).await {
                Ok(lookup) => (true, Some(lookup.valid_until())),
                Err(e) if e.is_nx_domain() => (false, negative_until(&e)),
                Err(e) if e.is_no_records_found() => (true, negative_until(&e)),
                Err(e) => return Err(temporary(e)),
            };
            self.answers.put(true, name, until, Kept::Exists(exists));
            Ok(exists)
        })
        .await
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

/// The answer table, and the resolver against a name server on loopback that counts the
/// questions it is asked.
#[cfg(test)]
mod cache_tests {
    use super::*;
    use std::net::UdpSocket;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;

    #[test]
    fn answers_expire_and_stay_bounded() {
        let answers = Answers::default();
        let later = Instant::now() + Duration::from_secs(60);
        answers.put(
            false,
            "A.Example.",
            Some(later),
            Kept::Txt(vec![b"x".to_vec()]),
        );
        assert!(matches!(answers.get(false, "a.example"), Some(Kept::Txt(r)) if r == [b"x"]));
        assert!(
            answers.get(true, "a.example").is_none(),
            "txt and exists apart"
        );
        answers.put(
            true,
            "gone.example",
            Some(Instant::now()),
            Kept::Exists(true),
        );
        answers.put(true, "unknown.example", None, Kept::Exists(true));
        assert!(answers.get(true, "gone.example").is_none());
        assert!(answers.get(true, "unknown.example").is_none());
        for i in 0..MAX_CACHED_ANSWERS + 10 {
            answers.put(
                false,
                &format!("n{i}.example"),
                Some(later),
                Kept::Exists(true),
            );
        }
        let len = answers.table.lock().map(|t| t.len()).unwrap_or(usize::MAX);
        assert!(len <= MAX_CACHED_ANSWERS, "{len}");
    }

    /// A name server for the zone `example.`: `ttl<N>.example` has a TXT record with TTL N,
    /// `broken.example` answers SERVFAIL, every other name NXDOMAIN with an SOA whose
    /// minimum is 3600 (a negative TTL). Counts the questions by name.
    struct Server {
        addr: SocketAddr,
        asked: Arc<Mutex<Vec<String>>>,
        stop: Arc<AtomicUsize>,
    }

    impl Server {
        fn start() -> Server {
            let socket = UdpSocket::bind("127.0.0.1:0").expect("binds");
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .expect("timeout");
            let addr = socket.local_addr().expect("addr");
            let asked = Arc::new(Mutex::new(Vec::new()));
            let stop = Arc::new(AtomicUsize::new(0));
            let (log, done) = (asked.clone(), stop.clone());
            thread::spawn(move || {
                let mut buf = [0u8; 512];
                // Bounded: at most 20 s, or until the test stops it.
                for _ in 0..400 {
                    if done.load(Ordering::Relaxed) != 0 {
                        break;
                    }
                    let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    if let Some((name, reply)) = answer(&buf[..n]) {
                        log.lock().expect("log").push(name);
                        let _ = socket.send_to(&reply, peer);
                    }
                }
            });
            Server { addr, asked, stop }
        }

        fn count(&self, name: &str) -> usize {
            let asked = self.asked.lock().expect("log");
            asked.iter().filter(|n| n.as_str() == name).count()
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.store(1, Ordering::Relaxed);
        }
    }

    /// The reply to one query, and the name asked.
    fn answer(query: &[u8]) -> Option<(String, Vec<u8>)> {
        let mut labels = Vec::new();
        let mut at = 12;
        loop {
            let len = usize::from(*query.get(at)?);
            at += 1;
            if len == 0 {
                break;
            }
            labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
            at += len;
        }
        let question = query.get(12..at + 4)?; // name, type, class
        let qtype = u16::from_be_bytes([query[at], query[at + 1]]);
        let name = labels.join(".");
        let mut reply = query[..2].to_vec(); // id
        let ttl = name
            .strip_prefix("ttl")
            .and_then(|rest| rest.strip_suffix(".example"))
            .and_then(|n| n.parse::<u32>().ok());
        let (rcode, answers, authority) = match (ttl, name.as_str()) {
            (Some(_), _) if qtype == 16 => (0, 1, 0),
            (Some(_), _) => (0, 0, 1), // the name exists, no record of that type
            (None, "broken.example") => (2, 0, 0),
            _ => (3, 0, 1),
        };
        reply.extend_from_slice(&[0x81, 0x80 | rcode, 0, 1, 0, answers, 0, authority, 0, 0]);
        reply.extend_from_slice(question);
        if answers == 1 {
            let text = b"v=test";
            reply.extend_from_slice(&[0xc0, 12, 0, 16, 0, 1]);
            reply.extend_from_slice(&ttl.unwrap_or(0).to_be_bytes());
            reply.extend_from_slice(&[0, text.len() as u8 + 1, text.len() as u8]);
            reply.extend_from_slice(text);
        }
        if authority == 1 {
            // SOA of `example.` (label 7 + 0): mname ".", rname ".", 5 numbers, minimum 3600.
            reply.extend_from_slice(&[7]);
            reply.extend_from_slice(b"example");
            reply.extend_from_slice(&[0, 0, 6, 0, 1, 0, 0, 0x0e, 0x10, 0, 22, 0, 0]);
            for n in [1u32, 3600, 600, 86400, 3600] {
                reply.extend_from_slice(&n.to_be_bytes());
            }
        }
        Some((name, reply))
    }

    #[tokio::test]
    async fn answers_are_kept_for_their_ttl_and_failures_never() {
        let server = Server::start();
        let resolver = Resolver::new(Some(server.addr)).expect("resolver");
        for _ in 0..3 {
            let records = resolver.txt("TTL3600.example").await.expect("answer");
            assert_eq!(records, [b"v=test".to_vec()]);
            assert_eq!(resolver.txt("none.example").await, Ok(Vec::new()));
            assert_eq!(resolver.exists("none.example").await, Ok(false));
            assert_eq!(resolver.exists("ttl60.example").await, Ok(true));
        }
        assert_eq!(server.count("ttl3600.example"), 1, "kept for its TTL");
        assert_eq!(
            server.count("none.example"),
            2,
            "negative, kept: one txt, one a"
        );
        assert_eq!(
            server.count("ttl60.example"),
            1,
            "no A record, kept by the SOA"
        );

        // TTL 1: asked again once it has expired.
        assert!(resolver.txt("ttl1.example").await.is_ok());
        assert!(resolver.txt("ttl1.example").await.is_ok());
        assert_eq!(server.count("ttl1.example"), 1);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(resolver.txt("ttl1.example").await.is_ok());
        assert_eq!(server.count("ttl1.example"), 2, "expired, asked again");

        // SERVFAIL: a temporary failure, asked again every time.
        let mut asked = Vec::new();
        for _ in 0..2 {
            let failed = resolver.txt("broken.example").await;
            assert!(matches!(failed, Err(DnsError::Temporary(_))), "{failed:?}");
            asked.push(server.count("broken.example"));
        }
        // hickory may retry within one look-up: the second look-up must ask again.
        assert!(
            asked[0] >= 1 && asked[1] > asked[0],
            "failures are not kept: {asked:?}"
        );
    }
}
