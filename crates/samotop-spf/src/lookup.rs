//! viaspf's [`Lookup`] over hickory's async tokio resolver.
//!
//! What crosses between the two, and how (each a regression test in `tests.rs` or below):
//!
//! * Names go to the DNS label by label, as bytes: an SPF target name may hold any visible
//!   character but `%` (RFC 7208 7.1: `a:foo:bar/baz.example.com`, or a macro expansion with
//!   spaces), which hickory's text parser refuses or reads as escapes.
//! * Names from the DNS (MX exchanges, PTR targets) come back from their label bytes, not from
//!   hickory's escaped presentation form; a name viaspf cannot hold is skipped.
//! * The strings of one TXT record are joined as bytes, then decoded (lossy): a UTF-8 sequence
//!   split over two strings stays one character, a NUL stays a NUL (and makes the record
//!   invalid SPF syntax, as it should). A TXT record with no strings at all is the empty string.
//! * NXDOMAIN and "no data" are both [`LookupError::NoRecords`] (a void look-up, RFC 7208
//!   4.6.4); a timeout is [`LookupError::Timeout`]; every other failure (SERVFAIL, REFUSED, a
//!   reply hickory cannot decode, no route) is [`LookupError::Dns`]: `temperror`, never a
//!   rejection.
//! * Every look-up is bounded by [`LOOKUP_TIMEOUT`], on top of hickory's own per-try timeout.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name as DnsName, RData, Record, RecordType};
use viaspf::lookup::{Lookup, LookupError, LookupResult, Name};

use crate::error::Error;

/// Time to wait for one answer from a name server before trying again: 2 s.
pub(crate) const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Retries of a query after a failed try (hickory's `attempts`): 1, so at most 2 tries.
pub(crate) const QUERY_ATTEMPTS: usize = 1;
/// The longest one look-up may take, all tries included: 5 s. Past it the look-up is
/// [`LookupError::Timeout`], whatever the resolver is still doing.
pub(crate) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The DNS side of the guard: a shared, caching, fully async hickory resolver.
#[derive(Clone)]
pub(crate) struct DnsLookup {
    resolver: TokioResolver,
}

impl DnsLookup {
    /// With `Some(addr)`, asks only that name server, over UDP and TCP; with `None`, the
    /// servers of the system configuration (`/etc/resolv.conf`).
    ///
    /// Either way each try waits [`QUERY_TIMEOUT`], a failed query is retried
    /// [`QUERY_ATTEMPTS`] times, a look-up ends after [`LOOKUP_TIMEOUT`] at the latest, and
    /// `/etc/hosts` is not consulted: SPF asks the DNS.
    pub(crate) fn new(dns: Option<SocketAddr>) -> Result<Self, Error> {
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
        let resolver = builder.build().map_err(|e| Error::Resolver {
            source: Box::new(e),
        })?;
        Ok(DnsLookup { resolver })
    }

    /// Asks a resolver someone else built (and shares): its options stay as they are; each
    /// look-up is still bounded by [`LOOKUP_TIMEOUT`].
    pub(crate) fn from_resolver(resolver: TokioResolver) -> Self {
        DnsLookup { resolver }
    }

    /// The answer records of one look-up, bounded by [`LOOKUP_TIMEOUT`].
    async fn records(&self, name: DnsName, rtype: RecordType) -> LookupResult<Vec<Record>> {
        let lookup = self.resolver.lookup(name.clone(), rtype);
        match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
            Err(_elapsed) => {
                log::debug!("spf dns {rtype} {name}: no answer within {LOOKUP_TIMEOUT:?}");
                Err(LookupError::Timeout)
            }
            Ok(Err(error)) => Err(to_lookup_error(&name, rtype, error)),
            Ok(Ok(lookup)) => Ok(lookup.answers().to_vec()),
        }
    }
}

/// viaspf's name (always with the final dot) as a DNS name, label by label as bytes, so that
/// `:`, `/`, `\`, spaces and the like reach the DNS as they are (RFC 7208 7.1 allows any
/// visible character but `%` in a domain-spec).
pub(crate) fn to_dns_name(name: &Name) -> LookupResult<DnsName> {
    let text = name.as_str();
    let text = text.strip_suffix('.').unwrap_or(text);
    let labels = text.split('.').map(str::as_bytes);
    DnsName::from_labels(labels).map_err(|e| LookupError::Dns(Some(Box::new(e))))
}

/// A name from the DNS (an MX exchange, a PTR target), from its label bytes, as viaspf wants
/// it. `None` for the root (a null MX, RFC 7505) and for names viaspf cannot hold: a label
/// that is not UTF-8 or that contains a dot.
pub(crate) fn to_spf_name(name: &DnsName) -> Option<Name> {
    if name.is_root() {
        return None;
    }
    let mut text = String::new();
    for label in name.iter() {
        let label = std::str::from_utf8(label).ok()?;
        if label.contains('.') {
            return None;
        }
        text.push_str(label);
        text.push('.');
    }
    Name::new(&text).ok()
}

/// NXDOMAIN and "no data" are both `NoRecords` (a void look-up, RFC 7208 4.6.4); a timeout
/// is `Timeout`; anything else is `Dns` (temperror). Logged at debug with the cause, which
/// viaspf does not keep.
fn to_lookup_error(name: &DnsName, rtype: RecordType, error: NetError) -> LookupError {
    log::debug!("spf dns {rtype} {name}: {error}");
    if error.is_no_records_found() {
        LookupError::NoRecords
    } else if matches!(error, NetError::Timeout) {
        LookupError::Timeout
    } else {
        LookupError::Dns(Some(Box::new(error)))
    }
}

/// The strings of one TXT record joined without a separator (RFC 7208 3.3), as bytes, then
/// decoded: invalid UTF-8 becomes U+FFFD (viaspf then finds the record invalid), it does not
/// fail the look-up.
pub(crate) fn txt_string<'a>(strings: impl IntoIterator<Item = &'a [u8]>) -> String {
    let bytes: Vec<u8> = strings.into_iter().flatten().copied().collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[async_trait]
impl Lookup for DnsLookup {
    async fn lookup_a(&self, name: &Name) -> LookupResult<Vec<Ipv4Addr>> {
        let records = self.records(to_dns_name(name)?, RecordType::A).await?;
        Ok(records
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect())
    }

    async fn lookup_aaaa(&self, name: &Name) -> LookupResult<Vec<Ipv6Addr>> {
        let records = self.records(to_dns_name(name)?, RecordType::AAAA).await?;
        Ok(records
            .iter()
            .filter_map(|r| match &r.data {
                RData::AAAA(a) => Some(a.0),
                _ => None,
            })
            .collect())
    }

    async fn lookup_mx(&self, name: &Name) -> LookupResult<Vec<Name>> {
        let records = self.records(to_dns_name(name)?, RecordType::MX).await?;
        let mut mxs: Vec<_> = records
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some((mx.preference, &mx.exchange)),
                _ => None,
            })
            .collect();
        // Stable: equal preferences keep the server's order.
        mxs.sort_by_key(|(preference, _)| *preference);
        Ok(mxs
            .into_iter()
            .filter_map(|(_, exchange)| to_spf_name(exchange))
            .collect())
    }

    async fn lookup_txt(&self, name: &Name) -> LookupResult<Vec<String>> {
        let records = self.records(to_dns_name(name)?, RecordType::TXT).await?;
        Ok(records
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(txt_string(txt.txt_data.iter().map(|s| &s[..]))),
                // A record of no strings at all (RDLENGTH 0) is not valid TXT (RFC 1035
                // 3.3.14), but it is a record: the empty string, which no SPF record is.
                RData::Update0(RecordType::TXT) => Some(String::new()),
                _ => None,
            })
            .collect())
    }

    async fn lookup_ptr(&self, ip: IpAddr) -> LookupResult<Vec<Name>> {
        let records = self.records(DnsName::from(ip), RecordType::PTR).await?;
        Ok(records
            .iter()
            .filter_map(|r| match &r.data {
                RData::PTR(ptr) => to_spf_name(&ptr.0),
                _ => None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_server_needs_no_runtime_and_no_network() {
        assert!(DnsLookup::new(Some("127.0.0.1:5353".parse().unwrap())).is_ok());
        assert!(DnsLookup::new(Some("[::1]:53".parse().unwrap())).is_ok());
    }

    /// Issue 14: `a:foo:bar/baz.example.com` was a temperror, because hickory's text parser
    /// refuses `:` and `/`; `%`-macro expansions with spaces likewise.
    #[test]
    fn names_reach_the_dns_byte_for_byte() {
        let table: &[(&str, &[&[u8]])] = &[
            ("example.com", &[b"example", b"com"]),
            (
                "foo:bar/baz.example.com",
                &[b"foo:bar/baz", b"example", b"com"],
            ),
            (
                "macro%percent  space%20url-space.example.com",
                &[b"macro%percent  space%20url-space", b"example", b"com"],
            ),
            (
                "back\\slash.example.com",
                &[b"back\\slash", b"example", b"com"],
            ),
            ("MiXeD.Example.COM", &[b"MiXeD", b"Example", b"COM"]),
        ];
        for (text, labels) in table {
            let name = to_dns_name(&Name::new(text).unwrap()).unwrap();
            assert!(name.is_fqdn(), "{text}");
            let got: Vec<&[u8]> = name.iter().collect();
            assert_eq!(&got, labels, "{text}");
        }
    }

    #[test]
    fn names_come_back_from_their_labels() {
        let name = DnsName::from_labels([&b"foo:bar/baz"[..], b"example", b"com"]).unwrap();
        assert_eq!(
            to_spf_name(&name).unwrap().as_str(),
            "foo:bar/baz.example.com."
        );
        assert!(to_spf_name(&DnsName::root()).is_none());
        let dotted = DnsName::from_labels([&b"a.b"[..], b"example"]).unwrap();
        assert!(to_spf_name(&dotted).is_none());
        let binary = DnsName::from_labels([&b"\xff\xfe"[..], b"example"]).unwrap();
        assert!(to_spf_name(&binary).is_none());
    }

    /// Issue 14: a name server that never answers (a UDP socket that reads and stays silent;
    /// TCP to it is refused) ends the look-up as a timeout within the bounds: 2 s per try, one
    /// retry, [`LOOKUP_TIMEOUT`] at most. Measured and printed, bounded loosely.
    #[tokio::test]
    async fn a_silent_name_server_is_a_timeout_within_the_bound() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dns = DnsLookup::new(Some(silent.local_addr().unwrap())).unwrap();
        let started = std::time::Instant::now();
        let result = dns.lookup_txt(&Name::new("pass.test").unwrap()).await;
        let elapsed = started.elapsed();
        println!("silent name server: {result:?} after {elapsed:?}");
        assert!(matches!(result, Err(LookupError::Timeout)), "{result:?}");
        assert!(
            elapsed < LOOKUP_TIMEOUT + Duration::from_secs(2),
            "{elapsed:?}"
        );
        drop(silent);
    }

    #[test]
    fn txt_strings_are_joined_as_bytes() {
        let table: &[(&[&[u8]], &str)] = &[
            (
                &[b"v=spf1 ip4:", b"192.0.2.5 -all"],
                "v=spf1 ip4:192.0.2.5 -all",
            ),
            // "é" split between two strings stays one character.
            (&[b"caf\xc3", b"\xa9"], "caf\u{e9}"),
            // A NUL is kept: the record is then invalid SPF syntax (permerror).
            (
                &[b"v=spf1 a:foo.example.com\0"],
                "v=spf1 a:foo.example.com\0",
            ),
            (&[b"v=spf1 \x80a -all"], "v=spf1 \u{fffd}a -all"),
            (&[], ""),
        ];
        for (strings, expected) in table {
            assert_eq!(txt_string(strings.iter().copied()), *expected);
        }
    }
}
