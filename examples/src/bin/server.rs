//! Run with: cargo run -p examples --bin server -- 127.0.0.1:2525
//!
//! A whole server with the library's `Server`: your own `MailDispatch` (here: it logs each
//! message's size), a guard (recipients in example.org only), STARTTLS (a throw-away
//! certificate; give `Tls::load(TlsSource::Files { .. })` your own), and every limit on by
//! default (timeouts, sizes, connections per IP, errors, PROXY header wait, graceful shutdown
//! on SIGTERM, certificate reload on SIGHUP).
//!
//! ```text
//! cargo run -p examples --bin server -- 127.0.0.1:2525
//! swaks --server 127.0.0.1:2525 --tls --from a@example.com --to b@example.org
//! ```

use samotop_core::{
    Envelope, MailDispatch, Outcomes, Recipient, Refusal, SessionInfo, Transaction,
};
use samotop_server::{AcceptDomains, Server, Tls, TlsSource};

/// Logs the size of each message; keeps nothing.
struct Sizes;
/// One message: its id, its size so far, its recipients.
struct Size(String, usize, usize);

impl MailDispatch for Sizes {
    type Transaction = Size;
    async fn open(&self, _: &SessionInfo, envelope: &Envelope) -> Result<Size, Refusal> {
        Ok(Size(envelope.id.clone(), 0, 0))
    }
}

impl Transaction for Size {
    async fn add_recipient(&mut self, _: &Recipient) -> Result<(), Refusal> {
        self.2 += 1;
        Ok(())
    }
    async fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        self.1 += chunk.len();
        Ok(())
    }
    async fn commit(&mut self) -> Outcomes {
        log::info!(
            "message {}: {} bytes for {} recipients",
            self.0,
            self.1,
            self.2
        );
        vec![Ok(()); self.2]
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:2525".into());
    Server::new(Sizes)
        .guard(AcceptDomains::new(&["example.org".to_string()]))
        .name("mx.example.org")
        .smtp(addr.parse()?)
        .tls(Tls::load(TlsSource::SelfSigned("mx.example.org".into()))?)
        .run()
        .await?;
    Ok(())
}
