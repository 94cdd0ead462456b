//! End-of-data checks: policy that needs the whole message (DKIM, DMARC, ARC, a virus
//! scanner, a user's own rule), decided before any backend commits.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::envelope::{Envelope, SessionInfo};
use crate::guard::Verdict;
use crate::spool::Spool;

/// A check that sees the whole message before it is stored.
///
/// When a driver has an active check, the session spools each message ([`Spool`]) instead of
/// streaming it into the backend: every chunk goes to the check's [`Scan::update`] and into
/// the spool; at the end of the data [`Scan::verdict`] decides. A refusal (4xx or 5xx) is the
/// reply to the data and nothing is delivered; an accepting verdict may add header fields,
/// which come first in the stored message, and authentication results; then the spool
/// streams into the backend. With no active check nothing is spooled.
///
/// ```
/// use samotop_core::{DataCheck, Envelope, Scan, SessionInfo, Spool, Verdict, reply};
///
/// /// Refuses messages that contain the word "lottery".
/// struct NoLottery;
/// struct Looking { tail: Vec<u8>, found: bool }
///
/// impl DataCheck for NoLottery {
///     type Scan = Looking;
///     fn scan(&self, _: &SessionInfo, _: &Envelope) -> Looking {
///         Looking { tail: Vec::new(), found: false }
///     }
/// }
///
/// impl Scan for Looking {
///     fn update(&mut self, chunk: &[u8]) {
///         // Keep the last few bytes: the word may be split between two chunks.
///         self.tail.extend_from_slice(chunk);
///         self.found |= self.tail.windows(7).any(|w| w.eq_ignore_ascii_case(b"lottery"));
///         let keep = self.tail.len().saturating_sub(6);
///         self.tail.drain(..keep);
///     }
///     async fn verdict(self, _: &SessionInfo, _: &Envelope, _: &Spool) -> Verdict {
///         if self.found {
///             Verdict::Reject(reply::POLICY_REJECTED)
///         } else {
///             Verdict::add_header("X-Lottery: no")
///         }
///     }
/// }
/// ```
pub trait DataCheck: Send + Sync + 'static {
    /// The per-message state.
    type Scan: Scan;

    /// A short name for metrics and logs (`auth`); refusals of a [`DataChecks`] stack are
    /// tagged with it ([`Refusal::source`](crate::Refusal::source)). Default `check`.
    fn name(&self) -> &'static str {
        "check"
    }

    /// False when the check would do nothing (it is configured off): the session then does
    /// not spool. Default true.
    fn is_active(&self) -> bool {
        true
    }

    /// A message starts (every recipient is in `envelope`).
    fn scan(&self, info: &SessionInfo, envelope: &Envelope) -> Self::Scan;
}

/// One message under a [`DataCheck`]: sees the data as it streams, then decides.
pub trait Scan: Send + 'static {
    /// The next chunk of the message, as the client sent it (dot-unstuffed, without our
    /// trace fields). CPU only: hash, count, look; keep what you need, bounded.
    fn update(&mut self, chunk: &[u8]) {
        let _ = chunk;
    }

    /// The data is complete: decide. `message` holds all of it, to read again if needed.
    fn verdict(
        self,
        info: &SessionInfo,
        envelope: &Envelope,
        message: &Spool,
    ) -> impl Future<Output = Verdict> + Send;
}

/// No check: nothing is spooled.
impl DataCheck for () {
    type Scan = ();
    fn is_active(&self) -> bool {
        false
    }
    fn scan(&self, _: &SessionInfo, _: &Envelope) {}
}

/// Accepts.
impl Scan for () {
    async fn verdict(self, _: &SessionInfo, _: &Envelope, _: &Spool) -> Verdict {
        Verdict::Accept
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe twin of [`DataCheck`].
trait DynCheck: Send + Sync {
    fn name(&self) -> &'static str;
    fn is_active(&self) -> bool;
    fn scan(&self, info: &SessionInfo, envelope: &Envelope) -> Box<dyn DynScan>;
}

impl<C: DataCheck> DynCheck for C {
    fn name(&self) -> &'static str {
        DataCheck::name(self)
    }
    fn is_active(&self) -> bool {
        DataCheck::is_active(self)
    }
    fn scan(&self, info: &SessionInfo, envelope: &Envelope) -> Box<dyn DynScan> {
        Box::new(DataCheck::scan(self, info, envelope))
    }
}

/// The object-safe twin of [`Scan`].
trait DynScan: Send {
    fn update(&mut self, chunk: &[u8]);
    fn verdict<'a>(
        self: Box<Self>,
        info: &'a SessionInfo,
        envelope: &'a Envelope,
        message: &'a Spool,
    ) -> BoxFuture<'a, Verdict>;
}

impl<S: Scan> DynScan for S {
    fn update(&mut self, chunk: &[u8]) {
        Scan::update(self, chunk);
    }
    fn verdict<'a>(
        self: Box<Self>,
        info: &'a SessionInfo,
        envelope: &'a Envelope,
        message: &'a Spool,
    ) -> BoxFuture<'a, Verdict> {
        Box::pin(Scan::verdict(*self, info, envelope, message))
    }
}

/// An ordered stack of checks, itself a check: each sees every chunk; the verdicts are asked
/// in order, notes add up and the first refusal decides.
///
/// ```
/// use samotop_core::DataChecks;
/// let checks = DataChecks::new().with(());
/// assert_eq!(checks.len(), 1);
/// assert!(!samotop_core::DataCheck::is_active(&checks)); // `()` does nothing
/// ```
#[derive(Clone, Default)]
pub struct DataChecks {
    stack: Vec<Arc<dyn DynCheck>>,
}

impl std::fmt::Debug for DataChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataChecks({} checks)", self.stack.len())
    }
}

impl DataChecks {
    /// An empty stack: inactive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a check at the end.
    pub fn with(mut self, check: impl DataCheck) -> Self {
        self.push(check);
        self
    }

    /// Adds a check at the end.
    pub fn push(&mut self, check: impl DataCheck) {
        self.stack.push(Arc::new(check));
    }

    /// How many checks are stacked.
    pub fn len(&self) -> usize {
        self.stack.len()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.stack.is_empty()
    }
}

/// The scans of a [`DataChecks`] stack for one message, each with its check's name.
pub struct DataScans(Vec<(&'static str, Box<dyn DynScan>)>);

impl std::fmt::Debug for DataScans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataScans({})", self.0.len())
    }
}

impl DataCheck for DataChecks {
    type Scan = DataScans;

    fn is_active(&self) -> bool {
        self.stack.iter().any(|c| c.is_active())
    }

    fn scan(&self, info: &SessionInfo, envelope: &Envelope) -> DataScans {
        DataScans(
            self.stack
                .iter()
                .filter(|c| c.is_active())
                .map(|c| (c.name(), c.scan(info, envelope)))
                .collect(),
        )
    }
}

impl Scan for DataScans {
    fn update(&mut self, chunk: &[u8]) {
        for (_, scan) in &mut self.0 {
            scan.update(chunk);
        }
    }

    async fn verdict(self, info: &SessionInfo, envelope: &Envelope, message: &Spool) -> Verdict {
        let mut verdict = Verdict::Accept;
        for (name, scan) in self.0 {
            let answer = match scan.verdict(info, envelope, message).await {
                Verdict::Reject(r) => Verdict::Reject(r.by(name)),
                Verdict::Close(r) => Verdict::Close(r.by(name)),
                accepted => accepted,
            };
            verdict = verdict.and(answer);
            if !verdict.accepts() {
                break;
            }
        }
        verdict
    }
}

impl<C: DataCheck> DataCheck for Arc<C> {
    type Scan = C::Scan;
    fn name(&self) -> &'static str {
        self.as_ref().name()
    }
    fn is_active(&self) -> bool {
        self.as_ref().is_active()
    }
    fn scan(&self, info: &SessionInfo, envelope: &Envelope) -> C::Scan {
        self.as_ref().scan(info, envelope)
    }
}
