//! A ready mail server around Samotop's session: listeners, limits, PROXY protocol, TLS with
//! timeouts and reload, graceful shutdown.
//!
//! # Brief overview
//!
//! * [`Server`]: give it a [`MailDispatch`](samotop_core::MailDispatch), a guard, checks,
//!   listeners and TLS; [`Server::run`] serves until SIGTERM, [`Server::bind`] gives a
//!   [`Running`] server to drive yourself (tests, your own signal handling).
//! * [`ListenAddr`] and [`Kind`]: `host:port` or `unix:PATH`, for SMTP, SMTPS or LMTP.
//! * [`Tls`] and [`TlsSource`]: rustls (ring), TLS 1.2 and 1.3 only, certificate and key
//!   checked to fit, reloaded on SIGHUP.
//! * [`ServerLimits`]: connections at once, per IP, the PROXY header wait, the shutdown
//!   grace; the sessions' own bounds are [`samotop_core::Limits`]. Every limit is on.
//! * Guards for common policy: [`AcceptDomains`] (`550 5.7.1` for other domains) and
//!   [`MessageRate`] (transactions per minute per IP).
//!
//! The `samotop` binary is this crate plus a command line. `docs/LIBRARY.md` compares it with
//! go-smtp's `Server` and aiosmtpd's `Controller`.
//!
//! # Example
//!
//! A server on a free loopback port, one message through it, and a graceful stop:
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use samotop_core::{Envelope, MailDispatch, Outcomes, Recipient, Refusal, SessionInfo,
//!                    Transaction};
//! use samotop_server::{Kind, ListenAddr, Server};
//! use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
//!
//! /// Keeps each message in memory.
//! #[derive(Clone, Default)]
//! struct Memory(Arc<Mutex<Vec<Vec<u8>>>>);
//! struct Message { store: Memory, data: Vec<u8>, rcpts: usize }
//!
//! impl MailDispatch for Memory {
//!     type Transaction = Message;
//!     async fn open(&self, _: &SessionInfo, _: &Envelope) -> Result<Message, Refusal> {
//!         Ok(Message { store: self.clone(), data: Vec::new(), rcpts: 0 })
//!     }
//! }
//!
//! impl Transaction for Message {
//!     async fn add_recipient(&mut self, _: &Recipient) -> Result<(), Refusal> {
//!         self.rcpts += 1;
//!         Ok(())
//!     }
//!     async fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
//!         self.data.extend_from_slice(chunk);
//!         Ok(())
//!     }
//!     async fn commit(&mut self) -> Outcomes {
//!         let data = std::mem::take(&mut self.data);
//!         self.store.0.lock().map(|mut all| all.push(data)).ok();
//!         vec![Ok(()); self.rcpts]
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
//! runtime.block_on(async {
//!     let store = Memory::default();
//!     let running = Server::new(store.clone())
//!         .name("mx.example.org")
//!         .smtp("127.0.0.1:0".parse()?)
//!         .bind()
//!         .await?;
//!     let Some((Kind::Smtp, ListenAddr::Tcp(addr))) = running.local_addrs().first().cloned()
//!     else {
//!         return Err("no listener".into());
//!     };
//!
//!     let stream = tokio::net::TcpStream::connect(addr.as_str()).await?;
//!     let (read, mut write) = stream.into_split();
//!     write.write_all(b"EHLO client\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n\
//!         DATA\r\nSubject: hi\r\n\r\nHello\r\n.\r\nQUIT\r\n").await?;
//!     let mut lines = BufReader::new(read).lines();
//!     let mut last = String::new();
//!     while let Some(line) = lines.next_line().await? {
//!         last = line;
//!     }
//!     assert_eq!(last, "221 2.0.0 Bye");
//!
//!     running.shutdown().await;
//!     let stored = store.0.lock().map_err(|_| "poisoned")?;
//!     assert!(stored[0].ends_with(b"Subject: hi\r\n\r\nHello\r\n"));
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })
//! # }
//! ```
#![deny(missing_docs)]

mod guards;
mod limits;
mod listen;
mod proxy_protocol;
mod server;
mod shutdown;
mod tls;

pub use guards::{AcceptDomains, MessageRate};
pub use limits::{ServerLimits, ip_key, loopback};
pub use listen::{Kind, ListenAddr};
pub use proxy_protocol::ProxyError;
pub use server::{Error, Running, Server};
pub use tls::{Source as TlsSource, Tls, TlsError};
