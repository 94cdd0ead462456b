//! Run with: cargo run -p examples --bin unix-socket
//!
//! LMTP on a Unix socket, storing one copy per recipient in `DIR/<domain>/<local>/`: a local
//! delivery agent behind another MTA. Over LMTP every recipient gets its own reply after the
//! data (RFC 2033), so one full mailbox does not bounce the message for the others.
//!
//! Arguments: `[SOCKET] [DIR]` (default `./samotop.sock` and `./maildir`). Postfix would hand
//! mail to it with `virtual_transport = lmtp:unix:/path/to/samotop.sock` in `main.cf`; by hand:
//!
//! ```text
//! cargo run -p examples --bin unix-socket -- /tmp/samotop.sock /tmp/mail
//! socat - UNIX-CONNECT:/tmp/samotop.sock     # then: LHLO me, MAIL FROM:<a@b>, ...
//! ```

use std::sync::Arc;

use samotop_core::{Driver, Peer, Protocol, SessionConfig, SessionInfo};
use samotop_delivery::{Layout, Maildir};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or("./samotop.sock".into());
    let dir = args.next().unwrap_or("./maildir".into());

    let maildir = Maildir::new(&dir, Layout::PerRecipient);
    maildir.create_dirs()?;
    let config = SessionConfig {
        protocol: Protocol::Lmtp,
        ..SessionConfig::default()
    };
    let driver = Arc::new(Driver::new(maildir, (), config));

    // A socket file left by an earlier run would make bind fail.
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    log::info!("LMTP on unix:{path}, delivering to {dir}/<domain>/<local>/");
    loop {
        let (stream, _) = listener.accept().await?;
        let driver = driver.clone();
        tokio::spawn(async move {
            let info = SessionInfo::new(Peer::Unix, "localhost");
            driver.run(stream, info).await
        });
    }
}
