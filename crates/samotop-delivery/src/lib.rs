//! Delivery backends for Samotop (being written).
#![deny(missing_docs)]

mod error;
pub use error::Error;

// Owned by the Maildir/stdout/null/map work:
mod map;
mod maildir;
mod null;
mod stdout;
pub use map::{Mapped, RecipientMap};
pub use maildir::{Layout, Maildir};
pub use null::Null;
pub use stdout::Stdout;

// Owned by the LMTP/SMTP client work:
mod client;
mod proxy;
pub use client::{Client, Dialect, Endpoint};
pub use proxy::Proxy;
