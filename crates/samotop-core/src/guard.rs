//! Guards: policy checks at connect, HELO, MAIL, RCPT and DATA.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::envelope::{AuthResult, Envelope, Recipient, SessionInfo};
use crate::reply::Refusal;

/// A guard's or a check's answer to one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on.
    Accept,
    /// Go on, and record this: header fields to add to the message, authentication results,
    /// a request to file the message as junk. Only meaningful at MAIL, RCPT, DATA and the end
    /// of the data; elsewhere it is the same as `Accept`.
    Note(Note),
    /// Refuse this command with the refusal; the session goes on. A `421` refusal closes the
    /// session, as the code says (RFC 5321 3.8).
    Reject(Refusal),
    /// Refuse with the refusal and close the connection.
    Close(Refusal),
}

impl Verdict {
    /// Go on and add this header field (`Name: value`, no final CR LF; it may be folded with
    /// CR LF followed by white space).
    pub fn add_header(field: impl Into<String>) -> Self {
        Verdict::Note(Note {
            headers: vec![field.into()],
            ..Note::default()
        })
    }

    /// True for `Accept` and `Note`.
    pub fn accepts(&self) -> bool {
        matches!(self, Verdict::Accept | Verdict::Note(_))
    }

    /// Joins two verdicts of the same question: notes add up, the first refusal wins.
    pub fn and(self, other: Verdict) -> Verdict {
        match (self, other) {
            (refusal @ (Verdict::Reject(_) | Verdict::Close(_)), _) => refusal,
            (_, refusal @ (Verdict::Reject(_) | Verdict::Close(_))) => refusal,
            (Verdict::Accept, v) | (v, Verdict::Accept) => v,
            (Verdict::Note(mut a), Verdict::Note(b)) => {
                a.headers.extend(b.headers);
                a.results.extend(b.results);
                a.quarantine |= b.quarantine;
                Verdict::Note(a)
            }
        }
    }
}

/// What an accepting verdict asks to record; see [`Verdict::Note`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Note {
    /// Header fields to add, each `Name: value` without the final CR LF. Fields of guards
    /// (MAIL, RCPT, DATA) follow our `Received:`; fields of end-of-data checks come first in
    /// the stored message (RFC 8601 5: `Authentication-Results` at the top).
    pub headers: Vec<String>,
    /// Authentication results for [`Envelope::auth`].
    pub results: Vec<AuthResult>,
    /// File the message as junk ([`Envelope::quarantine`]).
    pub quarantine: bool,
}

/// A policy check. Every hook defaults to [`Verdict::Accept`]: implement only those you need.
///
/// The session calls the hooks at the matching commands, in order; several guards stack in a
/// [`Guards`] list (the first that does not accept decides).
///
/// ```
/// use samotop_core::{Guard, SessionInfo, Verdict, reply};
///
/// /// Refuses peers that are not on loopback.
/// struct LoopbackOnly;
///
/// impl Guard for LoopbackOnly {
///     async fn connect(&self, info: &SessionInfo) -> Verdict {
///         match info.peer.ip() {
///             Some(ip) if ip.is_loopback() => Verdict::Accept,
///             _ => Verdict::Close(reply::CONNECTION_REFUSED),
///         }
///     }
/// }
/// ```
pub trait Guard: Send + Sync + 'static {
    /// A short name for metrics and logs (`spf`, `accept_domains`); refusals of a
    /// [`Guards`] stack are tagged with it ([`Refusal::source`]). Default `guard`.
    fn name(&self) -> &'static str {
        "guard"
    }

    /// A peer connected; the banner has not been sent yet.
    fn connect(&self, info: &SessionInfo) -> impl Future<Output = Verdict> + Send {
        let _ = info;
        async { Verdict::Accept }
    }
    /// HELO/EHLO/LHLO; the name is in `info.helo`.
    fn helo(&self, info: &SessionInfo) -> impl Future<Output = Verdict> + Send {
        let _ = info;
        async { Verdict::Accept }
    }
    /// MAIL FROM; the sender is in `envelope.sender`, no recipients yet.
    fn mail(
        &self,
        info: &SessionInfo,
        envelope: &Envelope,
    ) -> impl Future<Output = Verdict> + Send {
        let _ = (info, envelope);
        async { Verdict::Accept }
    }
    /// RCPT TO; `recipient` is not in the envelope yet.
    fn rcpt(
        &self,
        info: &SessionInfo,
        envelope: &Envelope,
        recipient: &Recipient,
    ) -> impl Future<Output = Verdict> + Send {
        let _ = (info, envelope, recipient);
        async { Verdict::Accept }
    }
    /// DATA or the first BDAT; every recipient is in the envelope.
    fn data(
        &self,
        info: &SessionInfo,
        envelope: &Envelope,
    ) -> impl Future<Output = Verdict> + Send {
        let _ = (info, envelope);
        async { Verdict::Accept }
    }
}

/// Accepts everything.
impl Guard for () {}

/// A shared guard.
impl<G: Guard> Guard for Arc<G> {
    fn name(&self) -> &'static str {
        self.as_ref().name()
    }
    fn connect(&self, info: &SessionInfo) -> impl Future<Output = Verdict> + Send {
        self.as_ref().connect(info)
    }
    fn helo(&self, info: &SessionInfo) -> impl Future<Output = Verdict> + Send {
        self.as_ref().helo(info)
    }
    fn mail(
        &self,
        info: &SessionInfo,
        envelope: &Envelope,
    ) -> impl Future<Output = Verdict> + Send {
        self.as_ref().mail(info, envelope)
    }
    fn rcpt(
        &self,
        info: &SessionInfo,
        envelope: &Envelope,
        recipient: &Recipient,
    ) -> impl Future<Output = Verdict> + Send {
        self.as_ref().rcpt(info, envelope, recipient)
    }
    fn data(
        &self,
        info: &SessionInfo,
        envelope: &Envelope,
    ) -> impl Future<Output = Verdict> + Send {
        self.as_ref().data(info, envelope)
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe twin of [`Guard`], for stacks chosen at run time.
trait DynGuard: Send + Sync {
    fn name(&self) -> &'static str;
    fn connect<'a>(&'a self, info: &'a SessionInfo) -> BoxFuture<'a, Verdict>;
    fn helo<'a>(&'a self, info: &'a SessionInfo) -> BoxFuture<'a, Verdict>;
    fn mail<'a>(&'a self, info: &'a SessionInfo, env: &'a Envelope) -> BoxFuture<'a, Verdict>;
    fn rcpt<'a>(
        &'a self,
        info: &'a SessionInfo,
        env: &'a Envelope,
        rcpt: &'a Recipient,
    ) -> BoxFuture<'a, Verdict>;
    fn data<'a>(&'a self, info: &'a SessionInfo, env: &'a Envelope) -> BoxFuture<'a, Verdict>;
}

impl<G: Guard> DynGuard for G {
    fn name(&self) -> &'static str {
        Guard::name(self)
    }
    fn connect<'a>(&'a self, info: &'a SessionInfo) -> BoxFuture<'a, Verdict> {
        Box::pin(Guard::connect(self, info))
    }
    fn helo<'a>(&'a self, info: &'a SessionInfo) -> BoxFuture<'a, Verdict> {
        Box::pin(Guard::helo(self, info))
    }
    fn mail<'a>(&'a self, info: &'a SessionInfo, env: &'a Envelope) -> BoxFuture<'a, Verdict> {
        Box::pin(Guard::mail(self, info, env))
    }
    fn rcpt<'a>(
        &'a self,
        info: &'a SessionInfo,
        env: &'a Envelope,
        rcpt: &'a Recipient,
    ) -> BoxFuture<'a, Verdict> {
        Box::pin(Guard::rcpt(self, info, env, rcpt))
    }
    fn data<'a>(&'a self, info: &'a SessionInfo, env: &'a Envelope) -> BoxFuture<'a, Verdict> {
        Box::pin(Guard::data(self, info, env))
    }
}

/// An ordered stack of guards, itself a guard. Each hook asks the guards in order; the first
/// that rejects or closes decides, and the notes of those that accept all add up.
///
/// ```
/// use samotop_core::Guards;
/// let guards = Guards::new().with(()).with(());
/// assert_eq!(guards.len(), 2);
/// ```
#[derive(Clone, Default)]
pub struct Guards {
    stack: Vec<Arc<dyn DynGuard>>,
}

impl std::fmt::Debug for Guards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Guards({} guards)", self.stack.len())
    }
}

impl Guards {
    /// An empty stack: accepts everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a guard at the end of the stack.
    pub fn with(mut self, guard: impl Guard) -> Self {
        self.stack.push(Arc::new(guard));
        self
    }

    /// Adds a guard at the end of the stack.
    pub fn push(&mut self, guard: impl Guard) {
        self.stack.push(Arc::new(guard));
    }

    /// How many guards are stacked.
    pub fn len(&self) -> usize {
        self.stack.len()
    }

    /// True when no guard is stacked.
    pub fn is_empty(&self) -> bool {
        self.stack.is_empty()
    }
}

/// Folds verdicts: notes add up, the first refusal wins and the guards after it are not asked.
async fn fold<'a, F>(stack: &'a [Arc<dyn DynGuard>], mut ask: F) -> Verdict
where
    F: FnMut(&'a dyn DynGuard) -> BoxFuture<'a, Verdict>,
{
    let mut verdict = Verdict::Accept;
    for guard in stack {
        let answer = match ask(guard.as_ref()).await {
            Verdict::Reject(r) => Verdict::Reject(r.by(guard.name())),
            Verdict::Close(r) => Verdict::Close(r.by(guard.name())),
            accepted => accepted,
        };
        verdict = verdict.and(answer);
        if !verdict.accepts() {
            break;
        }
    }
    verdict
}

impl Guard for Guards {
    async fn connect(&self, info: &SessionInfo) -> Verdict {
        fold(&self.stack, |g| g.connect(info)).await
    }
    async fn helo(&self, info: &SessionInfo) -> Verdict {
        fold(&self.stack, |g| g.helo(info)).await
    }
    async fn mail(&self, info: &SessionInfo, envelope: &Envelope) -> Verdict {
        fold(&self.stack, |g| g.mail(info, envelope)).await
    }
    async fn rcpt(
        &self,
        info: &SessionInfo,
        envelope: &Envelope,
        recipient: &Recipient,
    ) -> Verdict {
        fold(&self.stack, |g| g.rcpt(info, envelope, recipient)).await
    }
    async fn data(&self, info: &SessionInfo, envelope: &Envelope) -> Verdict {
        fold(&self.stack, |g| g.data(info, envelope)).await
    }
}
