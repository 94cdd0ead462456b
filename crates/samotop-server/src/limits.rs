//! Connection limits: at once overall, and at once per peer address (IPv6 per /64), and
//! [`ServerLimits`], the bounds of the [`Server`](crate::Server) around its sessions.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;

use samotop_core::{Refusal, reply};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bounds of a [`Server`](crate::Server) around its sessions (the sessions' own are
/// [`samotop_core::Limits`]). Every one is on by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections at once. Default 1000. Over it: [`reply::TOO_MANY_CONNECTIONS`]
    /// (`421 4.3.2`) at connect, and the connection is closed.
    pub max_connections: usize,
    /// Connections at once from one address (IPv4), or one /64 (IPv6), after the PROXY
    /// header. Default 20 (RFC 5321 does not say; Postfix's per-client limit is 50, at most
    /// half its processes); `0` turns it off. Over it: [`reply::TOO_MANY_CONNECTIONS_FROM_IP`]
    /// (`421 4.7.0`) at connect.
    pub max_connections_per_ip: usize,
    /// Networks the per-IP limit does not count (Postfix's
    /// `smtpd_client_event_limit_exceptions`). Default loopback (`127.0.0.0/8`, `::1/128`):
    /// the machine's own clients. A balancer without PROXY protocol belongs here too.
    pub per_ip_exempt: Vec<IpNet>,
    /// Time for a trusted proxy's PROXY header (HAProxy's PROXY protocol has no timeout of its
    /// own). Default 10 s. Over it: the connection is closed without a reply.
    pub proxy_header_timeout: Duration,
    /// Time that sessions in flight get to finish after the shutdown signal (SIGTERM or
    /// SIGINT). Default 30 s. Sessions still open after it are cut off.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 1000,
            max_connections_per_ip: 20,
            per_ip_exempt: loopback(),
            proxy_header_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// `127.0.0.0/8` and `::1/128`.
pub fn loopback() -> Vec<IpNet> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// The key a peer is counted under: the IPv4 address, or the IPv6 /64.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Counts connections; a [`Slot`] is held for the life of each.
#[derive(Clone)]
pub struct ConnLimits {
    total: Arc<Semaphore>,
    max: usize,
    per_ip: usize,
    exempt: Arc<Vec<IpNet>>,
    by_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's place; freed on drop.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    ip: Option<IpAddr>,
    by_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl ConnLimits {
    /// `total` connections at once; `per_ip` at once per key (0 = no per-IP limit), not
    /// counting peers in `exempt`.
    pub fn new(total: usize, per_ip: usize, exempt: Vec<IpNet>) -> Self {
        ConnLimits {
            total: Arc::new(Semaphore::new(total.max(1))),
            max: total.max(1),
            per_ip,
            exempt: Arc::new(exempt),
            by_ip: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Takes a place for a connection, or says which reply refuses it.
    pub fn admit(&self) -> Result<Slot, Refusal> {
        let permit = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| reply::TOO_MANY_CONNECTIONS)?;
        Ok(Slot {
            _permit: permit,
            ip: None,
            by_ip: self.by_ip.clone(),
        })
    }

    /// Counts the slot against its peer's address (after PROXY protocol, the real client).
    pub fn admit_ip(&self, slot: &mut Slot, ip: IpAddr) -> Result<(), Refusal> {
        if self.per_ip == 0 {
            return Ok(());
        }
        let plain = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.exempt.iter().any(|net| net.contains(&plain)) {
            return Ok(());
        }
        let key = ip_key(ip);
        let mut map = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        let count = map.entry(key).or_insert(0);
        if *count >= self.per_ip {
            return Err(reply::TOO_MANY_CONNECTIONS_FROM_IP);
        }
        *count += 1;
        slot.ip = Some(key);
        Ok(())
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max.saturating_sub(self.total.available_permits())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(key) = self.ip {
            let mut map = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(count) = map.get_mut(&key) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    map.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_counts_and_frees() {
        let limits = ConnLimits::new(10, 2, Vec::new());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut a = limits.admit().unwrap();
        limits.admit_ip(&mut a, ip).unwrap();
        let mut b = limits.admit().unwrap();
        limits.admit_ip(&mut b, ip).unwrap();
        let mut c = limits.admit().unwrap();
        assert!(limits.admit_ip(&mut c, ip).is_err());
        drop(a);
        assert!(limits.admit_ip(&mut c, ip).is_ok());
    }

    #[test]
    fn exempt_networks_are_not_counted() {
        let limits = ConnLimits::new(10, 1, loopback());
        let local: IpAddr = "127.0.0.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.3".parse().unwrap();
        for ip in [local, local, mapped, mapped, "::1".parse().unwrap()] {
            let mut slot = limits.admit().unwrap();
            limits.admit_ip(&mut slot, ip).unwrap();
            std::mem::forget(slot);
        }
        let other: IpAddr = "192.0.2.7".parse().unwrap();
        let mut a = limits.admit().unwrap();
        limits.admit_ip(&mut a, other).unwrap();
        let mut b = limits.admit().unwrap();
        assert!(limits.admit_ip(&mut b, other).is_err());
    }

    #[test]
    fn ipv6_by_64() {
        let a: IpAddr = "2001:db8:1:2:3::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
    }

    #[test]
    fn total() {
        let limits = ConnLimits::new(1, 0, Vec::new());
        let _a = limits.admit().unwrap();
        assert!(limits.admit().is_err());
    }
}
