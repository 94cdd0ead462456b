//! Run with: cargo run -p examples --bin console
//!
//! The smallest server: receives SMTP and prints every message on standard output.
//!
//! Arguments: `[ADDR]`, the address to listen on (default `127.0.0.1:2525`). Try it:
//!
//! ```text
//! cargo run -p examples --bin console -- 127.0.0.1:2525
//! swaks --server 127.0.0.1:2525 --from a@example.com --to b@example.org
//! ```

use std::sync::Arc;

use samotop_core::{Driver, Peer, SessionConfig, SessionInfo};
use samotop_delivery::Stdout;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:2525".into());

    // Where mail goes (Stdout), which policy applies (`()`: accept everything), and the
    // session's limits (all on, with their defaults).
    let driver = Arc::new(Driver::new(Stdout, (), SessionConfig::default()));

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    log::info!("listening on {addr}, printing mail to standard output");
    loop {
        let (stream, peer) = listener.accept().await?;
        let driver = driver.clone();
        tokio::spawn(async move {
            let info = SessionInfo::new(Peer::Tcp(peer), "localhost");
            driver.run(stream, info).await
        });
    }
}
