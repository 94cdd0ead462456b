//! Run with: cargo run -p examples --bin maildir
//!
//! Receives SMTP into a Maildir: each message is written to `DIR/tmp/`, fsynced, renamed into
//! `DIR/new/` and the directory fsynced, before the client gets its `250`.
//!
//! Arguments: `[ADDR] [DIR]` (default `127.0.0.1:2525` and `./maildir`):
//!
//! ```text
//! cargo run -p examples --bin maildir -- 127.0.0.1:2525 /tmp/mail
//! swaks --server 127.0.0.1:2525 --from a@example.com --to b@example.org
//! ls /tmp/mail/new
//! ```
//!
//! `Layout::PerRecipient` instead stores one copy per recipient in `DIR/<domain>/<local>/`.

use std::sync::Arc;

use samotop_core::{Driver, Peer, SessionConfig, SessionInfo};
use samotop_delivery::{Layout, Maildir};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or("127.0.0.1:2525".into());
    let dir = args.next().unwrap_or("./maildir".into());

    let maildir = Maildir::new(&dir, Layout::Single);
    // Optional: a wrong path or permission shows now rather than at the first message.
    maildir.create_dirs()?;
    let driver = Arc::new(Driver::new(maildir, (), SessionConfig::default()));

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    log::info!("listening on {addr}, delivering to the Maildir {dir}");
    loop {
        let (stream, peer) = listener.accept().await?;
        let driver = driver.clone();
        tokio::spawn(async move {
            let info = SessionInfo::new(Peer::Tcp(peer), "localhost");
            driver.run(stream, info).await
        });
    }
}
