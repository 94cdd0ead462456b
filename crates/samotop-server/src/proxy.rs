//! PROXY protocol (HAProxy v1/v2): which peers must send a header, and reading it.

use std::net::SocketAddr;

use ipnet::IpNet;
use tokio::net::TcpStream;

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

    /// The real client address: from the PROXY header for trusted peers, else the peer.
    pub async fn resolve(
        &self,
        _stream: &mut TcpStream,
        peer: SocketAddr,
    ) -> Result<SocketAddr, String> {
        if self.trusted.iter().any(|net| net.contains(&peer.ip())) {
            return Err("PROXY protocol is not available yet".into());
        }
        Ok(peer)
    }
}
