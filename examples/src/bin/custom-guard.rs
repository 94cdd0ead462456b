//! Run with: cargo run -p examples --bin custom-guard
//!
//! Guards of your own, stacked: an IP allow-list checked at connect, and a recipient-domain
//! check at RCPT. Each implements only the hook it needs; [`Guards`] asks them in order and
//! the first refusal wins. Mail that passes is printed on standard output.
//!
//! Arguments: `[ADDR] [NETWORKS] [DOMAIN]` (default `127.0.0.1:2525`, `127.0.0.0/8,::1/128`
//! and `example.org`):
//!
//! ```text
//! cargo run -p examples --bin custom-guard -- 127.0.0.1:2525 127.0.0.0/8 example.org
//! swaks --server 127.0.0.1:2525 --to b@example.org     # 250
//! swaks --server 127.0.0.1:2525 --to b@example.com     # 550 5.7.1 Relay not permitted
//! ```
//!
//! A guard answers with a [`Verdict`]: `Accept`, `Note` (accept and prepend a header
//! field, e.g. a spam score), `Reject(reply)` (refuse this command, the session goes on) or
//! `Close(reply)` (refuse and hang up).

use std::sync::Arc;

use ipnet::IpNet;
use samotop_core::parser::{ForwardPath, Host};
use samotop_core::{
    Driver, Envelope, Guard, Guards, Peer, Recipient, SessionConfig, SessionInfo, Verdict, reply,
};
use samotop_delivery::Stdout;

/// Lets in only peers from these networks.
struct AllowList {
    networks: Vec<IpNet>,
}

impl Guard for AllowList {
    async fn connect(&self, info: &SessionInfo) -> Verdict {
        match info.peer.ip() {
            Some(ip) if self.networks.iter().any(|net| net.contains(&ip)) => Verdict::Accept,
            Some(ip) => {
                log::info!("refusing {ip}: not on the allow list");
                Verdict::Close(reply::CONNECTION_REFUSED)
            }
            // A Unix socket or stdio peer is local.
            None => Verdict::Accept,
        }
    }
}

/// Accepts recipients in one domain (and `Postmaster`), refuses the rest as relaying.
struct OnlyDomain(String);

impl Guard for OnlyDomain {
    async fn rcpt(&self, _: &SessionInfo, _: &Envelope, recipient: &Recipient) -> Verdict {
        let ours = match &recipient.path {
            ForwardPath::Postmaster => true,
            ForwardPath::Mailbox(m) => {
                matches!(&m.domain, Host::Domain(d) if d.eq_ignore_ascii_case(&self.0))
            }
        };
        if ours {
            Verdict::Accept
        } else {
            Verdict::Reject(reply::RELAY_DENIED)
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or("127.0.0.1:2525".into());
    let networks = args.next().unwrap_or("127.0.0.0/8,::1/128".into());
    let domain = args.next().unwrap_or("example.org".into());

    let networks = networks
        .split(',')
        .map(|n| n.trim().parse())
        .collect::<Result<Vec<IpNet>, _>>()
        .map_err(|e| format!("NETWORKS: {e}"))?;
    let guards = Guards::new()
        .with(AllowList { networks })
        .with(OnlyDomain(domain));
    let driver = Arc::new(Driver::new(Stdout, guards, SessionConfig::default()));

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    log::info!("listening on {addr}");
    loop {
        let (stream, peer) = listener.accept().await?;
        let driver = driver.clone();
        tokio::spawn(async move {
            let info = SessionInfo::new(Peer::Tcp(peer), "localhost");
            driver.run(stream, info).await
        });
    }
}
