//! Run with: cargo run -p examples --bin stdio
//!
//! One SMTP session on standard input and output, then exit: the inetd (or systemd
//! `Accept=yes`, or `ssh host prog`) style, where something else accepts the connection.
//! Mail goes into a Maildir, since standard output carries the session. Logs go to
//! standard error.
//!
//! Arguments: `[DIR]` (default `./maildir`). Try it from a shell:
//!
//! ```text
//! printf 'EHLO me\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubject: hi\r\n\r\nhello\r\n.\r\nQUIT\r\n' \
//!     | cargo run -q -p examples --bin stdio -- /tmp/mail
//! ```
//!
//! or from `/etc/inetd.conf`:
//!
//! ```text
//! smtp stream tcp nowait mail /usr/local/bin/stdio stdio /var/mail/inbox
//! ```

use samotop_core::{Driver, Peer, SessionConfig, SessionInfo};
use samotop_delivery::{Layout, Maildir};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
    let dir = std::env::args().nth(1).unwrap_or("./maildir".into());

    let maildir = Maildir::new(&dir, Layout::Single);
    maildir.create_dirs()?;
    let driver = Driver::new(maildir, (), SessionConfig::default());

    // Reading stdin and writing stdout as one duplex stream.
    let io = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
    let summary = driver
        .run(io, SessionInfo::new(Peer::Stdio, "localhost"))
        .await;
    log::debug!("session ended: {summary:?}");
    // tokio reads stdin on a thread whose read cannot be cancelled: exit now rather than
    // wait for the peer to close its end.
    std::process::exit(0)
}
