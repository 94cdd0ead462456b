//! Observers: what a session does, for metrics, transcripts and logs, without any global
//! state in the library.
//!
//! The session notes what it decides (each command, each refusal and where it came from,
//! each limit hit, each message's size and digest) when a [`Driver`](crate::Driver) has an
//! observer; the driver adds what it sees (replies, TLS, the delivery's outcomes and
//! latency, the session's end) and the `Server` what happens before a session (connections
//! refused by a limit). Everything reaches [`Observer::observe`] as an [`Observation`]. With
//! no observer nothing is noted and nothing is copied.

use std::sync::Arc;
use std::time::Duration;

use crate::dispatch::Outcomes;
use crate::driver::Summary;
use crate::envelope::{Envelope, SessionInfo, TlsInfo};
use crate::reply::{Refusal, Reply};

/// Where a refusal came from: the command, a guard or check at a stage, or the backend.
/// A bounded set, fit for a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Origin {
    /// The connection, before the banner (a guard, a server limit).
    Connect,
    /// HELO/EHLO/LHLO (a guard).
    Helo,
    /// MAIL (a guard, a parameter, a limit).
    Mail,
    /// RCPT (a guard, a parameter, a limit).
    Rcpt,
    /// DATA or BDAT, and the content (a guard, the size, bare newlines).
    Data,
    /// The end-of-data checks (DKIM/DMARC, a user's check).
    EndOfData,
    /// The backend: opening, a recipient, writing or committing.
    Backend,
    /// The command itself: unknown, malformed, out of sequence.
    Command,
}

impl Origin {
    /// `connect`, `helo`, `mail`, `rcpt`, `data`, `end_of_data`, `backend`, `command`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Origin::Connect => "connect",
            Origin::Helo => "helo",
            Origin::Mail => "mail",
            Origin::Rcpt => "rcpt",
            Origin::Data => "data",
            Origin::EndOfData => "end_of_data",
            Origin::Backend => "backend",
            Origin::Command => "command",
        }
    }
}

/// A limit that was reached. A bounded set, fit for a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// [`Limits::max_line_length`](crate::Limits::max_line_length).
    LineLength,
    /// [`Limits::max_message_size`](crate::Limits::max_message_size).
    MessageSize,
    /// [`Limits::max_recipients`](crate::Limits::max_recipients).
    Recipients,
    /// [`Limits::max_errors`](crate::Limits::max_errors).
    Errors,
    /// [`Limits::max_rejected_recipients`](crate::Limits::max_rejected_recipients).
    RejectedRecipients,
    /// [`Limits::max_transactions`](crate::Limits::max_transactions).
    Transactions,
    /// The command or data timeout.
    Timeout,
    /// [`Limits::backend_timeout`](crate::Limits::backend_timeout).
    BackendTimeout,
    /// The TLS handshake timeout.
    HandshakeTimeout,
    /// Bare CR or LF in the data.
    BareNewline,
    /// Connections at once (the server's).
    Connections,
    /// Connections at once from one address (the server's).
    ConnectionsPerIp,
}

impl Limit {
    /// A short name: `line_length`, `message_size`, `recipients`, ...
    pub fn as_str(&self) -> &'static str {
        match self {
            Limit::LineLength => "line_length",
            Limit::MessageSize => "message_size",
            Limit::Recipients => "recipients",
            Limit::Errors => "errors",
            Limit::RejectedRecipients => "rejected_recipients",
            Limit::Transactions => "transactions",
            Limit::Timeout => "timeout",
            Limit::BackendTimeout => "backend_timeout",
            Limit::HandshakeTimeout => "handshake_timeout",
            Limit::BareNewline => "bare_newline",
            Limit::Connections => "connections",
            Limit::ConnectionsPerIp => "connections_per_ip",
        }
    }
}

/// One thing a session did or met.
#[derive(Debug)]
#[non_exhaustive]
pub enum Observation<'a> {
    /// The session starts (the connection was admitted).
    Start,
    /// A command line as received, without its line end; long lines are cut at 512 bytes,
    /// invalid UTF-8 is replaced.
    Command(&'a str),
    /// A reply sent.
    Reply(&'a Reply),
    /// A refusal sent, and where it came from.
    Refused {
        /// The refusal.
        refusal: &'a Refusal,
        /// Where it came from.
        origin: Origin,
    },
    /// A limit was reached (the refusal, if any, is observed too).
    Limit(Limit),
    /// TLS is up.
    Tls(&'a TlsInfo),
    /// A TLS handshake failed (or timed out).
    TlsFailed(&'a str),
    /// The content of a message has arrived whole: its size (octets, after unstuffing) and,
    /// for an observer that [wants the detail](Observer::wants_commands), its SHA-256. Never
    /// the content itself.
    Content {
        /// Octets.
        size: u64,
        /// SHA-256 of the content as received.
        sha256: Option<[u8; 32]>,
    },
    /// A message whose content arrived was refused before any backend committed it (too
    /// big, bare newlines, an end-of-data check, a backend write), with where that came from.
    MessageRefused {
        /// The refusal sent.
        refusal: &'a Refusal,
        /// Where it came from.
        origin: Origin,
    },
    /// The backend committed a message: the envelope, one outcome per recipient, and how long
    /// the commit took (end of data to the backend's answer).
    Delivered {
        /// The transaction.
        envelope: &'a Envelope,
        /// One per recipient, in RCPT order.
        outcomes: &'a Outcomes,
        /// From asking the commit to its answer.
        latency: Duration,
    },
    /// A connection the server refused before any session (a limit), with the refusal sent.
    ConnectionRefused {
        /// The refusal sent.
        refusal: &'a Refusal,
        /// The limit reached.
        limit: Limit,
    },
    /// The session ended.
    End(&'a Summary),
}

/// Sees what sessions do. Implement `observe` (cheap: it is called on the session's task;
/// send heavy work elsewhere) and hand it to the `Server` or the [`Driver`](crate::Driver).
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use samotop_core::{Observation, Observer, SessionInfo};
///
/// /// Counts refusals.
/// #[derive(Default)]
/// struct Refusals(AtomicUsize);
///
/// impl Observer for Refusals {
///     fn observe(&self, _: &SessionInfo, what: &Observation<'_>) {
///         if let Observation::Refused { .. } = what {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
/// ```
pub trait Observer: Send + Sync + 'static {
    /// One observation about the session `info`.
    fn observe(&self, info: &SessionInfo, what: &Observation<'_>);

    /// Whether the session should note command lines (for transcripts). Default false: no
    /// line is copied.
    fn wants_commands(&self) -> bool {
        false
    }
}

/// Several observers, each told everything.
///
/// ```
/// use std::sync::Arc;
/// use samotop_core::Observers;
/// let all = Observers::default();
/// assert!(all.is_empty());
/// ```
#[derive(Clone, Default)]
pub struct Observers(Vec<Arc<dyn Observer>>);

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Observers({})", self.0.len())
    }
}

impl Observers {
    /// Adds an observer.
    pub fn push(&mut self, observer: Arc<dyn Observer>) {
        self.0.push(observer);
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Observer for Observers {
    fn observe(&self, info: &SessionInfo, what: &Observation<'_>) {
        for o in &self.0 {
            o.observe(info, what);
        }
    }

    fn wants_commands(&self) -> bool {
        self.0.iter().any(|o| o.wants_commands())
    }
}

/// What the session noted, queued for its driver (owned: the session keeps no borrow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Note {
    Command(String),
    Refused(Refusal, Origin),
    Limit(Limit),
    Content { size: u64, sha256: Option<[u8; 32]> },
    MessageRefused(Refusal, Origin),
}

impl Note {
    /// The observation this note is.
    pub(crate) fn observation(&self) -> Observation<'_> {
        match self {
            Note::Command(line) => Observation::Command(line),
            Note::Refused(refusal, origin) => Observation::Refused {
                refusal,
                origin: *origin,
            },
            Note::Limit(limit) => Observation::Limit(*limit),
            Note::Content { size, sha256 } => Observation::Content {
                size: *size,
                sha256: *sha256,
            },
            Note::MessageRefused(refusal, origin) => Observation::MessageRefused {
                refusal,
                origin: *origin,
            },
        }
    }
}
