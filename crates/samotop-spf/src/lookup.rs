//! viaspf's [`Lookup`] over hickory's async tokio resolver.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name as DnsName, RData};
use viaspf::lookup::{Lookup, LookupError, LookupResult, Name};

use crate::error::Error;

/// Time to wait for one answer from a name server before trying again.
pub(crate) const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Retries of a query after a failed try (hickory's `attempts`): at most 3 tries.
pub(crate) const QUERY_ATTEMPTS: usize = 2;

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
    /// [`QUERY_ATTEMPTS`] times, and `/etc/hosts` is not consulted: SPF asks the DNS.
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
}

fn to_dns_name(name: &Name) -> LookupResult<DnsName> {
    DnsName::from_ascii(name.as_str()).map_err(|e| LookupError::Dns(Some(Box::new(e))))
}

/// NXDOMAIN and "no data" are both `NoRecords` (a void look-up, RFC 7208 4.6.4).
fn to_lookup_error(error: NetError) -> LookupError {
    if error.is_no_records_found() {
        LookupError::NoRecords
    } else if matches!(error, NetError::Timeout) {
        LookupError::Timeout
    } else {
        LookupError::Dns(Some(Box::new(error)))
    }
}

/// A name from the DNS, as viaspf wants it; the root (a null MX, RFC 7505) and names that
/// viaspf cannot take are skipped.
fn to_spf_name(name: &DnsName) -> Option<Name> {
    if name.is_root() {
        return None;
    }
    Name::new(&name.to_ascii()).ok()
}

#[async_trait]
impl Lookup for DnsLookup {
    async fn lookup_a(&self, name: &Name) -> LookupResult<Vec<Ipv4Addr>> {
        let lookup = self
            .resolver
            .ipv4_lookup(to_dns_name(name)?)
            .await
            .map_err(to_lookup_error)?;
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect())
    }

    async fn lookup_aaaa(&self, name: &Name) -> LookupResult<Vec<Ipv6Addr>> {
        let lookup = self
            .resolver
            .ipv6_lookup(to_dns_name(name)?)
            .await
            .map_err(to_lookup_error)?;
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::AAAA(a) => Some(a.0),
                _ => None,
            })
            .collect())
    }

    async fn lookup_mx(&self, name: &Name) -> LookupResult<Vec<Name>> {
        let lookup = self
            .resolver
            .mx_lookup(to_dns_name(name)?)
            .await
            .map_err(to_lookup_error)?;
        let mut mxs: Vec<_> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some((mx.preference, mx.exchange.clone())),
                _ => None,
            })
            .collect();
        mxs.sort_by_key(|(preference, _)| *preference);
        Ok(mxs
            .iter()
            .filter_map(|(_, exchange)| to_spf_name(exchange))
            .collect())
    }

    async fn lookup_txt(&self, name: &Name) -> LookupResult<Vec<String>> {
        let lookup = self
            .resolver
            .txt_lookup(to_dns_name(name)?)
            .await
            .map_err(to_lookup_error)?;
        // One record of several strings is one string, joined without a separator
        // (RFC 7208 3.3); bytes that are not UTF-8 do not fail the look-up.
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|part| String::from_utf8_lossy(part))
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect())
    }

    async fn lookup_ptr(&self, ip: IpAddr) -> LookupResult<Vec<Name>> {
        let lookup = self
            .resolver
            .reverse_lookup(DnsName::from(ip))
            .await
            .map_err(to_lookup_error)?;
        Ok(lookup
            .answers()
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
}
