//! PROXY protocol (HAProxy, v1 text and v2 binary): which peers must send a header, and
//! reading it.
//!
//! A connection from a network listed in `--proxy-protocol-from` must open with a PROXY header
//! within [`ServerLimits::proxy_header_timeout`](crate::ServerLimits::proxy_header_timeout)
//! (default 10 s); its source address then stands for the peer everywhere after
//! (guards, per-IP limits, SPF, logs, the Received header). The header is read exactly: not a
//! byte of what follows it is consumed, so SMTP starts cleanly after it. A missing, slow or
//! malformed header closes the connection without a reply. `PROXY UNKNOWN` (v1) and `LOCAL`
//! (v2, e.g. HAProxy's health checks) keep the real peer.
//!
//! A header from a network that is *not* listed is never believed: the session sees it as
//! non-SMTP talk and closes (samotop-core, `session/smtp.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use tokio::net::TcpStream;

/// The longest v1 header, CR LF included (the PROXY protocol spec, 2.1).
const V1_MAX: usize = 107;
/// The fixed part of a v2 header: signature, version and command, family, length.
const V2_FIXED: usize = 16;
/// The longest v2 header we take: the fixed part, addresses (216 bytes for AF_UNIX) and up to
/// 4 KiB of TLVs. The format allows 64 KiB; a proxy we trust does not send that much.
const V2_MAX: usize = V2_FIXED + 4096;
const V1_SIGNATURE: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = ppp::v2::PROTOCOL_PREFIX;

/// Why a trusted peer's connection was closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// Nothing, or not all of the header, within the PROXY header timeout.
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
    /// The peer closed before the header was complete.
    #[error("closed before the end of the PROXY header")]
    Closed,
    /// The first bytes are not a PROXY header (a client that bypassed the proxy?).
    #[error("expected a PROXY header, got {0:?}")]
    Missing(String),
    /// Longer than the protocol (v1) or we (v2) allow.
    #[error("PROXY header longer than {0} bytes")]
    TooLong(usize),
    /// A header that ppp cannot parse.
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    /// The socket failed.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// The two ends of a connection as the client sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The client: from the PROXY header, else the TCP peer.
    pub peer: SocketAddr,
    /// The address the client connected to (the proxy's, from the header), else our socket's.
    pub local: Option<SocketAddr>,
}

/// The networks whose connections must begin with a PROXY header (`--proxy-protocol-from`).
#[derive(Debug, Clone, Default)]
pub struct ProxyPolicy {
    trusted: Vec<IpNet>,
}

impl ProxyPolicy {
    /// Trust these networks.
    pub fn new(trusted: Vec<IpNet>) -> Self {
        ProxyPolicy { trusted }
    }

    /// True when a connection from `ip` must open with a PROXY header.
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The real client's addresses: from the PROXY header for trusted peers (read within
    /// `timeout`, not a byte more than the header), else the connection's own.
    pub async fn resolve(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
        local: Option<SocketAddr>,
        timeout: Duration,
    ) -> Result<Addresses, ProxyError> {
        let real = Addresses { peer, local };
        if !self.trusts(peer.ip()) {
            return Ok(real);
        }
        let header = tokio::time::timeout(timeout, read_header(stream))
            .await
            .map_err(|_| ProxyError::Timeout(timeout))??;
        let resolved = parse(&header)?.unwrap_or(real);
        log::debug!(
            "PROXY header from {peer}: client {} to {:?}",
            resolved.peer,
            resolved.local
        );
        Ok(resolved)
    }
}

/// Reads exactly one PROXY header: peeks at what has arrived, takes only the bytes that belong
/// to the header. Each turn takes at least one byte, so the loop ends within [`V2_MAX`] turns.
async fn read_header(stream: &mut TcpStream) -> Result<Vec<u8>, ProxyError> {
    use tokio::io::AsyncReadExt;

    let mut header = Vec::with_capacity(V1_MAX);
    let mut peeked = vec![0u8; 512];
    for _ in 0..=V2_MAX {
        let n = stream.peek(&mut peeked).await?;
        if n == 0 {
            return Err(ProxyError::Closed);
        }
        let (take, complete) = step(&header, &peeked[..n])?;
        let start = header.len();
        header.resize(start + take, 0);
        stream.read_exact(&mut header[start..]).await?;
        if complete {
            return Ok(header);
        }
    }
    Err(ProxyError::TooLong(V2_MAX))
}

/// Given the header bytes so far and the bytes that have arrived after them, how many of those
/// belong to the header, and whether it is then complete. Never takes a byte past the header.
fn step(head: &[u8], arrived: &[u8]) -> Result<(usize, bool), ProxyError> {
    let mut all = head.to_vec();
    all.extend_from_slice(arrived);
    let starts = |signature: &[u8]| {
        let n = all.len().min(signature.len());
        all[..n] == signature[..n]
    };
    if starts(V1_SIGNATURE) {
        let lf = all[head.len()..].iter().position(|&b| b == b'\n');
        match lf {
            Some(i) if head.len() + i < V1_MAX => Ok((i + 1, true)),
            Some(_) => Err(ProxyError::TooLong(V1_MAX)),
            None if all.len() >= V1_MAX => Err(ProxyError::TooLong(V1_MAX)),
            None => Ok((arrived.len(), false)),
        }
    } else if starts(V2_SIGNATURE) {
        if all.len() < V2_FIXED {
            // Every v2 header has at least the fixed part: all of it is ours.
            return Ok((arrived.len(), false));
        }
        let total = V2_FIXED + usize::from(u16::from_be_bytes([all[14], all[15]]));
        if total > V2_MAX {
            return Err(ProxyError::TooLong(V2_MAX));
        }
        let end = all.len().min(total);
        Ok((end - head.len(), end == total))
    } else {
        let shown = &all[..all.len().min(32)];
        Err(ProxyError::Missing(
            String::from_utf8_lossy(shown).into_owned(),
        ))
    }
}

/// The addresses a complete header carries; `None` for `LOCAL`, `UNKNOWN`, `UNSPEC` and Unix
/// sockets, where the connection's own addresses stand.
fn parse(header: &[u8]) -> Result<Option<Addresses>, ProxyError> {
    let pair = |peer: SocketAddr, local: SocketAddr| {
        Some(Addresses {
            peer,
            local: Some(local),
        })
    };
    if header.starts_with(V2_SIGNATURE) {
        use ppp::v2::{Addresses as A, Command, Header};
        let h = Header::try_from(header).map_err(|e| ProxyError::Malformed(e.to_string()))?;
        if h.command == Command::Local {
            return Ok(None);
        }
        Ok(match h.addresses {
            A::IPv4(a) => pair(
                (a.source_address, a.source_port).into(),
                (a.destination_address, a.destination_port).into(),
            ),
            A::IPv6(a) => pair(
                (a.source_address, a.source_port).into(),
                (a.destination_address, a.destination_port).into(),
            ),
            A::Unspecified | A::Unix(_) => None,
        })
    } else {
        use ppp::v1::{Addresses as A, Header};
        let h = Header::try_from(header).map_err(|e| ProxyError::Malformed(e.to_string()))?;
        if h.header.len() != header.len() {
            return Err(ProxyError::Malformed("bytes after CR LF".into()));
        }
        Ok(match h.addresses {
            A::Tcp4(a) => pair(
                (a.source_address, a.source_port).into(),
                (a.destination_address, a.destination_port).into(),
            ),
            A::Tcp6(a) => pair(
                (a.source_address, a.source_port).into(),
                (a.destination_address, a.destination_port).into(),
            ),
            A::Unknown => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        let len = (addresses.len() + tlvs.len()) as u16;
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(addresses);
        h.extend_from_slice(tlvs);
        h
    }

    const V4_ADDRS: [u8; 12] = [192, 0, 2, 1, 198, 51, 100, 7, 0x9c, 0x40, 0, 25];

    /// Feeds `input` in pieces of `size` bytes, as `read_header` would get them, with more
    /// bytes (`rest`) arriving after the header; returns the header taken.
    fn scan(input: &[u8], rest: &[u8], size: usize) -> Result<Vec<u8>, ProxyError> {
        let mut wire = input.to_vec();
        wire.extend_from_slice(rest);
        let mut head = Vec::new();
        let mut pos = 0;
        for _ in 0..=wire.len() {
            let end = wire.len().min(pos + size.max(1));
            let (take, complete) = step(&head, &wire[pos..end])?;
            head.extend_from_slice(&wire[pos..pos + take]);
            pos += take;
            if complete {
                return Ok(head);
            }
            assert!(pos < wire.len(), "ran out of input");
        }
        unreachable!("each step takes a byte")
    }

    #[test]
    fn v1_is_taken_to_its_lf_and_not_beyond() {
        let h = b"PROXY TCP4 192.0.2.1 198.51.100.7 40000 25\r\n";
        for size in [1, 2, 7, 44, 100, 512] {
            assert_eq!(scan(h, b"EHLO x\r\n", size).unwrap(), h, "pieces of {size}");
        }
        let a = parse(h).unwrap().unwrap();
        assert_eq!(a.peer, "192.0.2.1:40000".parse().unwrap());
        assert_eq!(a.local, Some("198.51.100.7:25".parse().unwrap()));
    }

    #[test]
    fn v1_ipv6_and_unknown() {
        let h = b"PROXY TCP6 2001:db8::1 2001:db8::2 40000 25\r\n";
        let a = parse(&scan(h, b"", 512).unwrap()).unwrap().unwrap();
        assert_eq!(a.peer, "[2001:db8::1]:40000".parse().unwrap());
        let h = b"PROXY UNKNOWN\r\n";
        assert_eq!(parse(&scan(h, b"QUIT\r\n", 512).unwrap()).unwrap(), None);
    }

    #[test]
    fn v2_is_taken_to_its_length_and_not_beyond() {
        let h = v2(1, 0x11, &V4_ADDRS, &[]);
        for size in [1, 5, 15, 16, 17, 28, 512] {
            assert_eq!(
                scan(&h, b"EHLO x\r\n", size).unwrap(),
                h,
                "pieces of {size}"
            );
        }
        let a = parse(&h).unwrap().unwrap();
        assert_eq!(a.peer, "192.0.2.1:40000".parse().unwrap());
        assert_eq!(a.local, Some("198.51.100.7:25".parse().unwrap()));
    }

    #[test]
    fn v2_with_tlvs_and_ipv6() {
        let mut addrs = Vec::new();
        addrs.extend_from_slice(
            &"2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        addrs.extend_from_slice(
            &"2001:db8::2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        addrs.extend_from_slice(&[0x9c, 0x40, 0, 25]);
        // PP2_TYPE_UNIQUE_ID (0x05), 3 bytes; PP2_TYPE_NOOP (0x04), 2 bytes.
        let h = v2(
            1,
            0x21,
            &addrs,
            &[0x05, 0, 3, b'a', b'b', b'c', 0x04, 0, 2, 0, 0],
        );
        let a = parse(&scan(&h, b"", 3).unwrap()).unwrap().unwrap();
        assert_eq!(a.peer, "[2001:db8::1]:40000".parse().unwrap());
    }

    #[test]
    fn v2_local_and_unspec_keep_the_real_peer() {
        assert_eq!(parse(&v2(0, 0x00, &[], &[])).unwrap(), None);
        assert_eq!(parse(&v2(0, 0x11, &V4_ADDRS, &[])).unwrap(), None);
        assert_eq!(parse(&v2(1, 0x00, &[], &[])).unwrap(), None);
    }

    #[test]
    fn not_a_header() {
        for input in [
            &b"EHLO x\r\n"[..],
            b"GET / HTTP/1.1\r\n",
            b"\x16\x03\x01",
            b"PROXZ",
        ] {
            assert!(
                matches!(scan(input, b"", 512), Err(ProxyError::Missing(_))),
                "{input:?}"
            );
        }
    }

    #[test]
    fn too_long() {
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200], b"\r\n"].concat();
        assert!(matches!(
            scan(&long, b"", 512),
            Err(ProxyError::TooLong(V1_MAX))
        ));
        assert!(matches!(
            scan(&long, b"", 1),
            Err(ProxyError::TooLong(V1_MAX))
        ));
        let mut h = v2(1, 0x11, &V4_ADDRS, &[]);
        h[14..16].copy_from_slice(&0xffffu16.to_be_bytes());
        assert!(matches!(
            scan(&h, b"", 512),
            Err(ProxyError::TooLong(V2_MAX))
        ));
    }

    #[test]
    fn malformed() {
        for h in [
            &b"PROXY TCP4 not-an-ip 198.51.100.7 40000 25\r\n"[..],
            b"PROXY TCP4 192.0.2.1 198.51.100.7 40000\r\n",
            b"PROXY TCP5 192.0.2.1 198.51.100.7 40000 25\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.7 40000 25\n",
        ] {
            let taken = scan(h, b"", 512).unwrap();
            assert!(
                matches!(parse(&taken), Err(ProxyError::Malformed(_))),
                "{h:?}"
            );
        }
        // Version 3, and an IPv4 family with too few address bytes.
        let mut bad = v2(1, 0x11, &V4_ADDRS, &[]);
        bad[12] = 0x31;
        assert!(matches!(parse(&bad), Err(ProxyError::Malformed(_))));
        let short = v2(1, 0x11, &V4_ADDRS[..6], &[]);
        assert!(matches!(parse(&short), Err(ProxyError::Malformed(_))));
    }

    #[test]
    fn trust() {
        let p = ProxyPolicy::new(vec![
            "127.0.0.1/32".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ]);
        assert!(p.trusts("127.0.0.1".parse().unwrap()));
        assert!(p.trusts("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!p.trusts("127.0.0.2".parse().unwrap()));
        assert!(p.trusts("fd12::1".parse().unwrap()));
        assert!(!ProxyPolicy::default().trusts("127.0.0.1".parse().unwrap()));
    }
}
