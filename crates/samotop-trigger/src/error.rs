//! [`Error`]: what can be wrong with a backend's configuration.

use std::path::PathBuf;

/// A webhook or command that cannot be set up. These happen at start-up, from the
/// operator's configuration; what goes wrong while delivering is a
/// [`Refusal`](samotop_core::Refusal) to the client instead (see [`samotop_core::reply`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The webhook URL does not parse, or is not `http://` or `https://`.
    #[error("bad webhook URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// Why it is refused.
        reason: String,
    },
    /// The webhook secret is not `whsec_` followed by base64 (or plain base64).
    #[error("bad webhook secret: {0}")]
    BadSecret(String),
    /// A file of CA certificates cannot be read or holds none.
    #[error("cannot use CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The HTTP client cannot be built (its TLS set-up).
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// The command is empty, or its program cannot be found or run.
    #[error("bad command {program:?}: {reason}")]
    BadCommand {
        /// The program as given.
        program: String,
        /// Why.
        reason: String,
    },
}
