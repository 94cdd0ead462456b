//! [`Tee`]: one message handed to several dispatches (a Maildir and a webhook), accepted
//! only when every one of them accepted it; and the small memory of what was delivered that
//! keeps a client's retry from delivering twice ([`Tee`] and [`Route`](crate::Route) share it).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use samotop_core::{
    Capabilities, Envelope, MailDispatch, Outcomes, Recipient, Refusal, SessionInfo, Transaction,
    reply,
};

/// Hands each message to every child dispatch, and answers `250` for a recipient only when
/// every child stored it (`--deliver` given more than once).
///
/// * `MAIL`: every child opens a transaction; a refusal by any is the reply.
/// * `RCPT`: every child must accept the recipient. When some accept and some refuse, the
///   recipient is refused (a permanent refusal wins over a transient one), and the children
///   that accepted it start their transaction again without it, so nothing is delivered
///   to a recipient the client was told was refused.
/// * The data goes to all children at once; a child that fails is left out from then on,
///   and its recipients fail at the end.
/// * After the data, a recipient's outcome is `Ok` when every child stored it; else the
///   first transient refusal (the client retries), else the first permanent one.
///
/// A failure after another child stored the message (the webhook `500`s, the Maildir has
/// it) makes the client retry. So that the retry does not store it a second time, the tee
/// remembers for a while ([`remember`](Tee::remember)) which child stored which recipient
/// of which message (the envelope's [`digest`](Envelope::digest)), and on the retry leaves
/// out a child that already has every recipient. The memory is per process and bounded; a
/// restart in between means a duplicate, never a loss.
///
/// EHLO offers what every child can carry ([`Capabilities::and`]).
///
/// ```
/// use samotop_core::BoxDispatch;
/// use samotop_delivery::{Layout, Maildir, Null, Tee};
/// let both = Tee::new(vec![
///     BoxDispatch::new(Maildir::new("/var/mail/in", Layout::Single)),
///     BoxDispatch::new(Null),
/// ]);
/// # let _ = both;
/// ```
#[derive(Debug)]
pub struct Tee<D> {
    children: Arc<Vec<D>>,
    delivered: Arc<RetryMemory>,
}

impl<D> Clone for Tee<D> {
    fn clone(&self) -> Self {
        Tee {
            children: self.children.clone(),
            delivered: self.delivered.clone(),
        }
    }
}

impl<D: MailDispatch> Tee<D> {
    /// A tee over `children` (at least one is useful; none accepts nothing: every recipient
    /// is refused with `451 4.3.0`). Remembers deliveries for a day, at most 10 000 of
    /// them (see [`remember`](Tee::remember)).
    pub fn new(children: Vec<D>) -> Self {
        Tee {
            children: Arc::new(children),
            delivered: Arc::new(RetryMemory::new(
                RetryMemory::DEFAULT_TTL,
                RetryMemory::DEFAULT_MAX,
            )),
        }
    }

    /// How long, and how many, deliveries are remembered to skip on a retry. `max = 0`
    /// turns the memory off (every retry delivers to every child again). Memory: about
    /// 100 bytes per entry plus the address.
    pub fn remember(mut self, ttl: Duration, max: usize) -> Self {
        self.delivered = Arc::new(RetryMemory::new(ttl, max));
        self
    }

    /// The children, in order.
    pub fn children(&self) -> &[D] {
        &self.children
    }
}

impl<D: MailDispatch> MailDispatch for Tee<D> {
    type Transaction = TeeTransaction<D>;

    fn capabilities(&self) -> Capabilities {
        self.children
            .iter()
            .map(MailDispatch::capabilities)
            .fold(Capabilities::default(), Capabilities::and)
    }

    async fn open(
        &self,
        info: &SessionInfo,
        envelope: &Envelope,
    ) -> Result<TeeTransaction<D>, Refusal> {
        let opened = join_all(
            self.children
                .iter()
                .map(|c| c.open(info, envelope))
                .collect(),
        )
        .await;
        let mut children = Vec::with_capacity(opened.len());
        let mut refusal = None;
        for result in opened {
            match result {
                Ok(tx) => children.push(Child::new(tx)),
                Err(r) => {
                    refusal.get_or_insert(r);
                }
            }
        }
        if let Some(refusal) = refusal {
            join_all(children.iter_mut().map(|c| c.tx.abort()).collect()).await;
            return Err(refusal);
        }
        Ok(TeeTransaction {
            dispatches: self.children.clone(),
            delivered: self.delivered.clone(),
            info: info.clone(),
            envelope: envelope.clone(),
            children,
            recipients: Vec::new(),
            lost: Vec::new(),
        })
    }
}

/// One child's transaction inside a [`Tee`] or a [`Route`](crate::Route).
#[derive(Debug)]
pub(crate) struct Child<T> {
    pub(crate) tx: T,
    /// The recipients it holds, as indexes into the combinator's accepted recipients, in the
    /// order it got them (its outcomes come in that order).
    pub(crate) held: Vec<usize>,
    /// It failed (at begin or with the data): its recipients fail with this.
    pub(crate) failure: Option<Refusal>,
    /// It already delivered this message to all it holds (a retry): left out.
    pub(crate) skipped: bool,
}

impl<T: Transaction> Child<T> {
    pub(crate) fn new(tx: T) -> Self {
        Child {
            tx,
            held: Vec::new(),
            failure: None,
            skipped: false,
        }
    }

    pub(crate) fn live(&self) -> bool {
        self.failure.is_none() && !self.skipped
    }

    /// Begins, or leaves itself out when `delivered` already has all it holds.
    pub(crate) async fn begin(
        &mut self,
        info: &SessionInfo,
        envelope: &Envelope,
        recipients: &[Recipient],
        delivered: &RetryMemory,
        route: usize,
    ) {
        if self.held.is_empty() {
            return;
        }
        if let Some(digest) = envelope.digest {
            if self
                .held
                .iter()
                .all(|&i| delivered.contains(&digest, route, &recipients[i].address))
            {
                log::info!(
                    "{}: already delivered through backend {route}: skipped",
                    envelope.id
                );
                self.skipped = true;
                self.tx.abort().await;
                return;
            }
        }
        let mut mine = envelope.clone();
        mine.recipients = self.held.iter().map(|&i| recipients[i].clone()).collect();
        if let Err(refusal) = self.tx.begin(info, &mine).await {
            self.failure = Some(refusal);
        }
    }

    pub(crate) async fn write(&mut self, chunk: &[u8]) {
        if self.live() && !self.held.is_empty() {
            if let Err(refusal) = self.tx.write(chunk).await {
                self.failure = Some(refusal);
                self.tx.abort().await;
            }
        }
    }

    /// Commits, and returns each held recipient's outcome as `(index, outcome)`.
    pub(crate) async fn commit(&mut self) -> Vec<(usize, Result<(), Refusal>)> {
        if self.held.is_empty() {
            return Vec::new();
        }
        if self.skipped {
            return self.held.iter().map(|&i| (i, Ok(()))).collect();
        }
        if let Some(f) = &self.failure {
            return self.held.iter().map(|&i| (i, Err(f.clone()))).collect();
        }
        let outcomes = self.tx.commit().await;
        if outcomes.len() != self.held.len() {
            log::error!(
                "a backend gave {} outcomes for {} recipients",
                outcomes.len(),
                self.held.len()
            );
        }
        self.held
            .iter()
            .enumerate()
            .map(|(j, &i)| {
                let outcome = outcomes.get(j).cloned();
                (i, outcome.unwrap_or(Err(reply::DELIVERY_FAILED)))
            })
            .collect()
    }

    pub(crate) async fn abort(&mut self) {
        if self.live() {
            self.tx.abort().await;
        }
    }
}

/// The outcome of several: `Ok` when all are; else the first transient refusal, else the
/// first permanent one.
pub(crate) fn combine(
    outcomes: impl IntoIterator<Item = Result<(), Refusal>>,
) -> Result<(), Refusal> {
    let mut permanent = None;
    for outcome in outcomes {
        match outcome {
            Ok(()) => {}
            Err(r) if r.is_transient() => return Err(r),
            Err(r) => {
                permanent.get_or_insert(r);
            }
        }
    }
    permanent.map_or(Ok(()), Err)
}

/// The transaction of a [`Tee`].
#[derive(Debug)]
pub struct TeeTransaction<D: MailDispatch> {
    dispatches: Arc<Vec<D>>,
    delivered: Arc<RetryMemory>,
    info: SessionInfo,
    envelope: Envelope,
    children: Vec<Child<D::Transaction>>,
    recipients: Vec<Recipient>,
    /// A recipient that a child lost while starting again (see [`Tee`]).
    lost: Vec<Option<Refusal>>,
}

impl<D: MailDispatch> TeeTransaction<D> {
    /// Starts `child` again without the recipient it just accepted (the others refused it).
    async fn restart(&mut self, c: usize) {
        let dispatch = &self.dispatches[c];
        let child = &mut self.children[c];
        child.tx.abort().await;
        match dispatch.open(&self.info, &self.envelope).await {
            Ok(tx) => child.tx = tx,
            Err(refusal) => {
                child.failure = Some(refusal);
                return;
            }
        }
        let held = std::mem::take(&mut child.held);
        for i in held {
            match child.tx.add_recipient(&self.recipients[i]).await {
                Ok(()) => child.held.push(i),
                Err(refusal) => self.lost[i] = Some(refusal),
            }
        }
    }
}

impl<D: MailDispatch> Transaction for TeeTransaction<D> {
    async fn add_recipient(&mut self, recipient: &Recipient) -> Result<(), Refusal> {
        if self.children.is_empty() {
            return Err(reply::DELIVERY_FAILED);
        }
        let results = join_all(
            self.children
                .iter_mut()
                .map(|c| async move {
                    if c.failure.is_some() {
                        return Err(c.failure.clone().unwrap_or(reply::DELIVERY_FAILED));
                    }
                    c.tx.add_recipient(recipient).await
                })
                .collect(),
        )
        .await;
        if results.iter().all(Result::is_ok) {
            let i = self.recipients.len();
            self.recipients.push(recipient.clone());
            self.lost.push(None);
            for c in &mut self.children {
                c.held.push(i);
            }
            return Ok(());
        }
        let mut refusals = results.iter().filter_map(|r| r.as_ref().err());
        let first = refusals.clone().next().cloned();
        let refusal = refusals
            .find(|r| r.is_permanent())
            .cloned()
            .or(first)
            .unwrap_or(reply::DELIVERY_FAILED);
        // Those that accepted must forget it: start them again without it.
        let accepted: Vec<usize> = (0..results.len()).filter(|&c| results[c].is_ok()).collect();
        for c in accepted {
            self.restart(c).await;
        }
        Err(refusal)
    }

    async fn begin(&mut self, info: &SessionInfo, envelope: &Envelope) -> Result<(), Refusal> {
        let recipients = &self.recipients;
        let delivered = &*self.delivered;
        join_all(
            self.children
                .iter_mut()
                .enumerate()
                .map(|(c, child)| child.begin(info, envelope, recipients, delivered, c))
                .collect(),
        )
        .await;
        self.envelope.digest = envelope.digest;
        Ok(())
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        join_all(self.children.iter_mut().map(|c| c.write(chunk)).collect()).await;
        Ok(())
    }

    async fn commit(&mut self) -> Outcomes {
        let per_child = join_all(self.children.iter_mut().map(Child::commit).collect()).await;
        let n = self.recipients.len();
        let mut each: Vec<Vec<Result<(), Refusal>>> = vec![Vec::new(); n];
        for (i, lost) in self.lost.iter().enumerate() {
            if let Some(refusal) = lost {
                each[i].push(Err(refusal.clone()));
            }
        }
        for outcomes in &per_child {
            for (i, outcome) in outcomes {
                if let Some(slot) = each.get_mut(*i) {
                    slot.push(outcome.clone());
                }
            }
        }
        let outcomes: Outcomes = each.into_iter().map(combine).collect();
        if outcomes.iter().any(Result::is_err) {
            remember_successes(
                &self.delivered,
                self.envelope.digest,
                &self.recipients,
                self.children.iter().zip(&per_child).enumerate(),
            );
        }
        outcomes
    }

    async fn abort(&mut self) {
        join_all(self.children.iter_mut().map(Child::abort).collect()).await;
    }
}

/// Remembers, for a retry, what each (not skipped) child stored.
pub(crate) fn remember_successes<'a, T: 'a>(
    delivered: &RetryMemory,
    digest: Option<[u8; 32]>,
    recipients: &[Recipient],
    children: impl Iterator<Item = (usize, (&'a Child<T>, &'a Vec<(usize, Result<(), Refusal>)>))>,
) {
    let Some(digest) = digest else { return };
    for (route, (child, outcomes)) in children {
        if child.skipped {
            continue;
        }
        for (i, outcome) in outcomes {
            if outcome.is_ok() {
                delivered.insert(digest, route, &recipients[*i].address);
            }
        }
    }
}

/// What was delivered lately: (message digest, backend, recipient) for a while, so that a
/// retry after a mixed outcome skips the backends that have it. Bounded in time and
/// entries; the oldest go first.
#[derive(Debug)]
pub(crate) struct RetryMemory {
    ttl: Duration,
    max: usize,
    state: Mutex<DeliveredState>,
}

type Key = ([u8; 32], usize, String);

#[derive(Debug, Default)]
struct DeliveredState {
    map: HashMap<Key, Instant>,
    order: VecDeque<(Instant, Key)>,
}

impl RetryMemory {
    /// How long a delivery is remembered by default: a day, longer than most MTAs' retries
    /// of a 4xx take to come (Postfix: 5 min, then doubling up to 66 min).
    pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
    /// Deliveries remembered at most, by default.
    pub const DEFAULT_MAX: usize = 10_000;

    pub(crate) fn new(ttl: Duration, max: usize) -> Self {
        RetryMemory {
            ttl,
            max,
            state: Mutex::new(DeliveredState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DeliveredState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn contains(&self, digest: &[u8; 32], route: usize, address: &str) -> bool {
        if self.max == 0 {
            return false;
        }
        let key = (*digest, route, address.to_string());
        self.lock()
            .map
            .get(&key)
            .is_some_and(|at| at.elapsed() < self.ttl)
    }

    pub(crate) fn insert(&self, digest: [u8; 32], route: usize, address: &str) {
        if self.max == 0 {
            return;
        }
        let now = Instant::now();
        let key = (digest, route, address.to_string());
        let mut state = self.lock();
        // Oldest first: expired ones, and over the cap.
        while let Some((at, _)) = state.order.front() {
            if now.duration_since(*at) < self.ttl && state.order.len() < self.max {
                break;
            }
            if let Some((at, old)) = state.order.pop_front() {
                if state.map.get(&old) == Some(&at) {
                    state.map.remove(&old);
                }
            }
        }
        state.map.insert(key.clone(), now);
        state.order.push_back((now, key));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map.len()
    }
}

/// Polls the futures together until all are ready; their outputs in order. One allocation
/// per future.
pub(crate) async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    if futures.len() == 1 {
        let mut out = Vec::with_capacity(1);
        for f in futures {
            out.push(f.await);
        }
        return out;
    }
    let mut pending: Vec<Option<Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (slot, out) in pending.iter_mut().zip(outputs.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *out = Some(v);
                        *slot = None;
                    }
                    Poll::Pending => all = false,
                }
            }
        }
        if all { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_is_bounded_and_forgets() {
        let d = RetryMemory::new(Duration::from_secs(3600), 3);
        for i in 0..10u8 {
            d.insert([i; 32], 0, "a@b");
        }
        assert_eq!(d.len(), 3);
        assert!(d.contains(&[9; 32], 0, "a@b"));
        assert!(!d.contains(&[0; 32], 0, "a@b"));
        assert!(!d.contains(&[9; 32], 1, "a@b"));
        let gone = RetryMemory::new(Duration::ZERO, 10);
        gone.insert([1; 32], 0, "a@b");
        assert!(!gone.contains(&[1; 32], 0, "a@b"));
        let off = RetryMemory::new(Duration::from_secs(1), 0);
        off.insert([1; 32], 0, "a@b");
        assert!(!off.contains(&[1; 32], 0, "a@b"));
    }

    #[test]
    fn transient_wins() {
        let perm = reply::NO_SUCH_USER;
        let temp = reply::DELIVERY_FAILED;
        assert_eq!(combine([Ok(()), Ok(())]), Ok(()));
        assert_eq!(combine([Err(perm.clone()), Err(temp.clone())]), Err(temp));
        assert_eq!(combine([Ok(()), Err(perm.clone())]), Err(perm));
    }
}
