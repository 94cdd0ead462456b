//! The one error type of this crate, and the reply each error causes.

use std::io;
use std::path::PathBuf;

use samotop_core::{Refusal, Reply, reply};

/// What went wrong in a delivery backend or its configuration.
///
/// An error that reaches a peer becomes a [`Refusal`] through [`Error::reply`]: a full disk
/// is `452 4.3.1`, a recipient that cannot be a mailbox name is `550 5.1.3`, anything
/// else `451 4.3.0` (the client retries later).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A directory of a Maildir (`DIR`, `DIR/domain/local`, or its `tmp`, `new`, `cur`)
    /// could not be created: permissions, a regular file in the way, a full disk.
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file in a Maildir's `tmp/` could not be created.
    #[error("cannot create {path}: {source}")]
    CreateFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Writing message data failed; most often the disk or the quota is full.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// `fsync` of a file or a directory failed: the data may not be on disk.
    #[error("cannot fsync {path}: {source}")]
    Sync {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Moving a message from `tmp/` into `new/` failed, e.g. because `new` is not a directory.
    #[error("cannot move {from} to {to}: {source}")]
    Rename {
        /// The file in `tmp/`.
        from: PathBuf,
        /// The name in `new/`.
        to: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Writing to standard output failed (a closed pipe, a full disk behind a redirect).
    #[error("cannot write to standard output: {source}")]
    Stdout {
        /// The OS error.
        source: io::Error,
    },
    /// A blocking file task ended without an answer (it panicked or the runtime is shutting
    /// down); what it wrote is removed.
    #[error("delivery task failed: {reason}")]
    Task {
        /// Why, as the runtime tells it.
        reason: String,
    },
    /// A recipient address that cannot safely be used as a directory name under the Maildir
    /// root (empty, `.`, `..`, a `/`, `\`, NUL or control character, longer than 255 bytes).
    #[error("recipient {address:?} cannot be a mailbox name: {reason}")]
    BadMailboxName {
        /// The address, as given or as mapped.
        address: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Nothing answers at the downstream LMTP/SMTP endpoint: the socket file is missing, no
    /// one listens on the port, or the connection is refused.
    #[error("cannot connect to {endpoint}: {source}")]
    DownstreamConnect {
        /// The endpoint, as `unix:PATH` or `host:port`.
        endpoint: String,
        /// The OS error.
        source: io::Error,
    },
    /// The connection to the downstream server failed while in use: it closed or reset the
    /// connection (it died, or was restarted), or it was used after an earlier failure.
    #[error("connection to {endpoint} failed: {source}")]
    DownstreamIo {
        /// The endpoint.
        endpoint: String,
        /// The OS error.
        source: io::Error,
    },
    /// The downstream server did not answer a step, or take the data, in time: it hangs or
    /// is overloaded.
    #[error("{endpoint} did not answer {step} within {after:?}")]
    DownstreamTimeout {
        /// The endpoint.
        endpoint: String,
        /// What we waited for: `connect`, `greeting`, `LHLO`, `MAIL`, `RCPT`, `data`...
        step: &'static str,
        /// How long we waited.
        after: std::time::Duration,
    },
    /// The downstream server sent something that is not an SMTP/LMTP reply: it does not speak
    /// the protocol (a wrong port or socket), or it is broken.
    #[error("{endpoint} broke the protocol: {detail}")]
    DownstreamProtocol {
        /// The endpoint.
        endpoint: String,
        /// What was wrong.
        detail: String,
    },
    /// The downstream server refused a step without which the connection cannot be used: its
    /// greeting was not `220` (`421`/`554`: busy, or refusing us), or it refused
    /// `LHLO`/`EHLO` or `RSET`.
    #[error("{endpoint} refused {step}: {reply}")]
    DownstreamRefused {
        /// The endpoint.
        endpoint: String,
        /// The step: `greeting`, `LHLO`, `EHLO`, `HELO`, `RSET`.
        step: &'static str,
        /// The server's reply.
        reply: Reply,
    },
    /// A `--map REGEX=REPLACE` rule that does not parse.
    #[error("bad recipient map rule {rule:?}: {reason}")]
    BadMapRule {
        /// The rule as given.
        rule: String,
        /// What is wrong with it (for a bad regex, the regex crate's message).
        reason: String,
    },
    /// A per-recipient Maildir already has as many mailboxes as allowed
    /// ([`Maildir::max_mailboxes`](crate::Maildir::max_mailboxes)).
    #[error("the mailbox limit ({max}) is reached")]
    MailboxLimit {
        /// The limit.
        max: usize,
    },
    /// A `--maildir-layout` value other than `single` or `per-recipient`.
    #[error("unknown Maildir layout {value:?}: expected single or per-recipient")]
    BadLayout {
        /// The value as given.
        value: String,
    },
}

impl Error {
    /// The reply a peer gets for this error.
    ///
    /// * disk or quota full (`ENOSPC`, `EDQUOT`): [`reply::INSUFFICIENT_STORAGE`], `452 4.3.1`;
    /// * [`Error::BadMailboxName`]: [`reply::BAD_MAILBOX_NAME`], `550 5.1.3`;
    /// * the downstream LMTP/SMTP server unreachable or not answering
    ///   ([`Error::DownstreamConnect`], [`Error::DownstreamTimeout`]): `451 4.4.1`;
    /// * the connection to it lost ([`Error::DownstreamIo`]): `451 4.4.2`;
    /// * [`Error::MailboxLimit`]: `452 4.3.1`;
    /// * anything else: [`reply::DELIVERY_FAILED`], `451 4.3.0`.
    ///
    /// ```
    /// use samotop_delivery::Error;
    /// let e = Error::Write {
    ///     path: "x".into(),
    ///     source: std::io::Error::from(std::io::ErrorKind::StorageFull),
    /// };
    /// assert_eq!(e.reply().code(), 452);
    /// ```
    pub fn reply(&self) -> Refusal {
        match self {
            Error::BadMailboxName { .. } => reply::BAD_MAILBOX_NAME,
            Error::DownstreamConnect { .. } | Error::DownstreamTimeout { .. } => {
                reply::DOWNSTREAM_UNAVAILABLE
            }
            Error::DownstreamIo { .. } => reply::DOWNSTREAM_LOST,
            Error::MailboxLimit { .. } => reply::INSUFFICIENT_STORAGE,
            _ if self.is_storage_full() => reply::INSUFFICIENT_STORAGE,
            _ => reply::DELIVERY_FAILED,
        }
    }

    /// True when the cause is a full disk or a full quota (`ENOSPC`, `EDQUOT`).
    pub fn is_storage_full(&self) -> bool {
        self.io_source().is_some_and(|e| {
            matches!(
                e.kind(),
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
            )
        })
    }

    /// The OS error behind this error, if there is one.
    pub fn io_source(&self) -> Option<&io::Error> {
        match self {
            Error::CreateDir { source, .. }
            | Error::CreateFile { source, .. }
            | Error::Write { source, .. }
            | Error::Sync { source, .. }
            | Error::Rename { source, .. }
            | Error::Stdout { source }
            | Error::DownstreamConnect { source, .. }
            | Error::DownstreamIo { source, .. } => Some(source),
            _ => None,
        }
    }
}
