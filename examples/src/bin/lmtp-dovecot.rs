//! Run with: cargo run -p examples --bin lmtp-dovecot
//!
//! SMTP on the internet side, Dovecot behind it: every transaction is passed through to
//! Dovecot's LMTP socket as it happens. Each RCPT is forwarded at once, so an unknown user is
//! refused at RCPT time with Dovecot's own `550 5.1.1`, and the final `250` is sent only after
//! Dovecot has stored the message.
//!
//! Arguments: `[ADDR] [LMTP]` (default `127.0.0.1:2525` and `/var/run/dovecot/lmtp`). LMTP is
//! a socket path (anything with a `/`) or `host:port` for Dovecot's LMTP over TCP:
//!
//! ```text
//! cargo run -p examples --bin lmtp-dovecot -- 127.0.0.1:2525 /var/run/dovecot/lmtp
//! swaks --server 127.0.0.1:2525 --from a@example.com --to alice@example.org
//! ```
//!
//! # Dovecot configuration
//!
//! Dovecot must speak LMTP, and let the user this example runs as open the socket
//! (`/etc/dovecot/conf.d/10-master.conf` and `dovecot.conf`, Dovecot 2.3):
//!
//! ```text
//! protocols = imap lmtp
//!
//! service lmtp {
//!   unix_listener lmtp {      # /var/run/dovecot/lmtp
//!     mode = 0660
//!     user = samotop          # the user that runs this example
//!     group = dovecot
//!   }
//! }
//!
//! # Recipients arrive as given (alice@example.org). If Dovecot's users are bare names
//! # (alice), strip the domain there:
//! auth_username_format = %Ln
//! ```
//!
//! (Or rewrite recipients on this side: wrap the proxy in `samotop_delivery::Mapped` with a
//! `RecipientMap` rule such as `(.*)@example\.org=$1`, as `samotop --map` does.)

use std::sync::Arc;
use std::time::Duration;

use samotop_core::{Driver, Peer, SessionConfig, SessionInfo};
use samotop_delivery::{Dialect, Endpoint, Proxy};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or("127.0.0.1:2525".into());
    let lmtp = args.next().unwrap_or("/var/run/dovecot/lmtp".into());

    let endpoint = if lmtp.contains('/') {
        Endpoint::Unix(lmtp.into())
    } else {
        Endpoint::Tcp(lmtp)
    };
    log::info!("listening on {addr}, passing mail to Dovecot at {endpoint}");
    let dovecot = Proxy::new(endpoint, Dialect::Lmtp)
        .helo_name("localhost")
        .command_timeout(Duration::from_secs(60));
    let driver = Arc::new(Driver::new(dovecot, (), SessionConfig::default()));

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    loop {
        let (stream, peer) = listener.accept().await?;
        let driver = driver.clone();
        tokio::spawn(async move {
            let info = SessionInfo::new(Peer::Tcp(peer), "localhost");
            driver.run(stream, info).await
        });
    }
}
