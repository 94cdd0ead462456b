//! Connection limits: at once overall, and at once per peer address (IPv6 per /64).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use samotop_core::Refusal;
use samotop_core::reply;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    per_ip: usize,
    by_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's place; freed on drop.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    ip: Option<IpAddr>,
    by_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl ConnLimits {
    /// `total` connections at once; `per_ip` at once per key (0 = no per-IP limit).
    pub fn new(total: usize, per_ip: usize) -> Self {
        ConnLimits {
            total: Arc::new(Semaphore::new(total.max(1))),
            per_ip,
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
    pub fn open(&self, max: usize) -> usize {
        max.saturating_sub(self.total.available_permits())
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
        let limits = ConnLimits::new(10, 2);
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
    fn ipv6_by_64() {
        let a: IpAddr = "2001:db8:1:2:3::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
    }

    #[test]
    fn total() {
        let limits = ConnLimits::new(1, 0);
        let _a = limits.admit().unwrap();
        assert!(limits.admit().is_err());
    }
}
