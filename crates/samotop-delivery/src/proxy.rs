//! [`Proxy`]: a [`MailDispatch`] that passes each transaction through to an LMTP or SMTP
//! server (Dovecot's LMTP socket, a smarthost), step by step as it happens upstream.
//!
//! The downstream transaction opens at the first recipient (so a session that never gets
//! to RCPT costs the downstream server nothing), each recipient is forwarded at once so that
//! the downstream server's verdict (`550 5.1.1 User doesn't exist`) is the upstream reply to
//! `RCPT`, and the data streams through: as BDAT chunks when the server offers CHUNKING
//! (needed for `BODY=BINARYMIME`), else as DATA with dot-stuffing, bare CR and LF made CR LF.
//! The final `250` upstream follows the downstream server's own final replies: over LMTP one
//! per recipient (RFC 2033), over SMTP one for all.
//!
//! Partial failure keeps its promise: when an SMTP client's message reached some recipients
//! and failed for another (a full mailbox: Dovecot checks quota after the data), the client
//! gets `451` and retries, and the recipients already served are remembered ([`Delivered`],
//! keyed by the message's digest) and skipped on the retry: each gets one copy.
//!
//! Failures of the downstream server (down, hanging, dying mid-transfer, not speaking the
//! protocol) answer `451` and are logged with `warn!`; a half-sent message is never ended
//! with the final dot (or `BDAT LAST`), so it is never delivered. Connections are kept in a
//! small pool, expired before the server's own idle timeout, reused with `RSET` (pipelined
//! with `MAIL` where the server allows), and a stale one is replaced by a fresh dial once.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use samotop_core::parser::{Body, MailParams, ReversePath};
use samotop_core::{
    Capabilities, Envelope, MailDispatch, Outcomes, Protocol, Recipient, Refusal, Reply,
    SessionInfo, Transaction, reply,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
// Tokio's clock, so that the pool's idle time follows a test's paused time.
use tokio::time::Instant;

use crate::Error;
use crate::client::{Client, Dialect, Endpoint, Timeouts};
use crate::delivered::Delivered;

/// Passes mail through to an LMTP or SMTP server: a [`MailDispatch`] in proxy style.
///
/// ```no_run
/// use std::time::Duration;
/// use samotop_delivery::{Dialect, Endpoint, Proxy};
///
/// # async fn f() -> Result<(), samotop_delivery::Error> {
/// let dovecot = Proxy::new(Endpoint::Unix("/var/run/dovecot/lmtp".into()), Dialect::Lmtp)
///     .command_timeout(Duration::from_secs(30))
///     .max_idle(4);
/// // What EHLO may offer: learnt from the server's own LHLO reply.
/// let caps = dovecot.probe().await?;
/// # let _ = caps;
/// # Ok(()) }
/// ```
///
/// Replies upstream:
/// * `RCPT`: the downstream server's reply to `MAIL` (once) or `RCPT`, code, enhanced code
///   and text (`421`, which would close the upstream session, becomes `451`; anything that
///   is no refusal, such as a `354`, becomes `451 4.3.0`);
/// * after the data: each recipient's downstream outcome (SMTP: the one reply, for each);
/// * the downstream server unreachable or silent: `451 4.4.1`; the connection lost:
///   `451 4.4.2`; as many transactions in flight as [`max_in_flight`](Proxy::max_in_flight)
///   allows: `451 4.3.2`; anything else wrong with it: `451 4.3.0` (see [`Error::reply`]).
#[derive(Debug)]
pub struct Proxy {
    endpoint: Endpoint,
    dialect: Dialect,
    timeouts: Timeouts,
    helo: Option<String>,
    max_idle: usize,
    idle_time: Duration,
    max_in_flight: usize,
    state: Arc<State>,
}

/// What the transactions of one proxy share.
#[derive(Debug)]
struct State {
    pool: Pool,
    in_flight: Arc<Semaphore>,
    /// What the server offered last time we greeted it.
    caps: RwLock<Capabilities>,
    delivered: Delivered,
}

impl Proxy {
    /// Connections kept open between transactions, by default.
    pub const DEFAULT_MAX_IDLE: usize = 8;
    /// How long an idle connection is kept, by default: well before the server's own idle
    /// timeout (Dovecot's is minutes; Postfix caches LMTP connections 2 s).
    pub const DEFAULT_IDLE_TIME: Duration = Duration::from_secs(10);
    /// Downstream transactions at once, by default (Dovecot's `lmtp` service takes 100).
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

    /// A proxy to `endpoint`, speaking `dialect`, with default timeouts (see the setters),
    /// up to [`DEFAULT_MAX_IDLE`](Proxy::DEFAULT_MAX_IDLE) idle connections and
    /// [`DEFAULT_MAX_IN_FLIGHT`](Proxy::DEFAULT_MAX_IN_FLIGHT) transactions at once.
    pub fn new(endpoint: Endpoint, dialect: Dialect) -> Self {
        let mut proxy = Proxy {
            endpoint,
            dialect,
            timeouts: Timeouts::default(),
            helo: None,
            max_idle: Self::DEFAULT_MAX_IDLE,
            idle_time: Self::DEFAULT_IDLE_TIME,
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
            state: Arc::new(State::new(0, Duration::ZERO, 1)),
        };
        proxy.rebuild();
        proxy
    }

    fn rebuild(&mut self) {
        self.state = Arc::new(State::new(
            self.max_idle,
            self.idle_time,
            self.max_in_flight,
        ));
    }

    /// Time to connect, to be greeted, and to get the reply to `LHLO`/`EHLO`, each.
    /// Default 30 s. Over it: `451 4.4.1` to `RCPT`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.connect = timeout;
        self
    }

    /// Time for the reply to `MAIL`, `RCPT`, `DATA`, `BDAT` and `RSET`. Default 60 s (RFC
    /// 5321 4.5.3.2 allows 5 min; the upstream client waits that long for ours). Over it:
    /// `451 4.4.1`.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.command = timeout;
        self
    }

    /// Time for the downstream server to take one chunk of data. Default 3 min (RFC 5321
    /// 4.5.3.2.5). Over it: `451 4.4.1` to the data.
    pub fn data_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.data = timeout;
        self
    }

    /// Time for all the final replies after the data together (LMTP: one per recipient).
    /// Default 5 min (RFC 5321 4.5.3.2.6 gives the client 10 min: we answer before the
    /// upstream client gives up). Over it: `451 4.4.1` for each recipient without a reply.
    pub fn final_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.final_reply = timeout;
        self
    }

    /// The most connections kept open while idle. Default
    /// [`DEFAULT_MAX_IDLE`](Proxy::DEFAULT_MAX_IDLE); `0` opens a connection per transaction.
    pub fn max_idle(mut self, connections: usize) -> Self {
        self.max_idle = connections;
        self.rebuild();
        self
    }

    /// How long an idle connection stays in the pool. Default
    /// [`DEFAULT_IDLE_TIME`](Proxy::DEFAULT_IDLE_TIME); older ones are closed with `QUIT`.
    pub fn idle_time(mut self, time: Duration) -> Self {
        self.idle_time = time;
        self.rebuild();
        self
    }

    /// The most downstream transactions at once. Default
    /// [`DEFAULT_MAX_IN_FLIGHT`](Proxy::DEFAULT_MAX_IN_FLIGHT). Over it: `451 4.3.2` to the
    /// first `RCPT`, and the client retries later.
    pub fn max_in_flight(mut self, transactions: usize) -> Self {
        self.max_in_flight = transactions.max(1);
        self.rebuild();
        self
    }

    /// The name to give in `LHLO`/`EHLO`. Default: the session's server name (`--name`);
    /// a name unfit for it (spaces, control characters) is replaced by `localhost`.
    pub fn helo_name(mut self, name: impl Into<String>) -> Self {
        self.helo = Some(name.into());
        self
    }

    /// The endpoint mail goes to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// How many connections are open and idle in the pool now.
    pub fn idle_connections(&self) -> usize {
        self.state.pool.len()
    }

    /// How many recipients are remembered as delivered (for retries after a mixed outcome).
    pub fn remembered(&self) -> usize {
        self.state.delivered.len()
    }

    /// Greets the server once to learn what it takes (8BITMIME, BINARYMIME, SMTPUTF8, SIZE),
    /// which [`capabilities`](MailDispatch::capabilities) then reports, and says `QUIT`. Call
    /// it before handing the proxy to a driver: EHLO offers what this says. Until it
    /// succeeds the proxy assumes 8BITMIME only.
    ///
    /// # Errors
    ///
    /// The errors of [`Client::connect`].
    pub async fn probe(&self) -> Result<Capabilities, Error> {
        let helo = self.helo.as_deref().filter(|n| is_helo_name(n));
        let client = Client::connect(
            self.endpoint.clone(),
            self.dialect,
            helo.unwrap_or("localhost"),
            self.timeouts,
        )
        .await?;
        let caps = self.state.learn(&client);
        // Not pooled: sessions greet with their own server name.
        let _ = client.quit().await;
        Ok(caps)
    }

    /// The configured name, else the session's server name, else `localhost`: the first
    /// that is fit for `LHLO`/`EHLO`.
    fn helo(&self, info: &SessionInfo) -> String {
        [self.helo.as_deref(), Some(info.server_name.as_str())]
            .into_iter()
            .flatten()
            .find(|name| is_helo_name(name))
            .unwrap_or("localhost")
            .to_string()
    }
}

impl State {
    fn new(max_idle: usize, idle_time: Duration, max_in_flight: usize) -> Self {
        State {
            pool: Pool::new(max_idle, idle_time),
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            caps: RwLock::new(Capabilities {
                eight_bit_mime: true,
                binary_mime: false,
                smtputf8: false,
                chunking: true,
                max_message_size: None,
            }),
            delivered: Delivered::default_window(),
        }
    }

    /// What a greeted server takes, remembered for EHLO.
    fn learn(&self, client: &Client) -> Capabilities {
        let size = client
            .extension("SIZE")
            .and_then(|n| n.trim().parse::<u64>().ok())
            .filter(|&n| n > 0);
        let caps = Capabilities {
            eight_bit_mime: client.supports("8BITMIME"),
            // Binary content can only travel in BDAT chunks.
            binary_mime: client.supports("BINARYMIME") && client.supports("CHUNKING"),
            smtputf8: client.supports("SMTPUTF8"),
            // The session turns the client's chunks into one stream: any server takes them.
            chunking: true,
            max_message_size: size,
        };
        match self.caps.write() {
            Ok(mut c) => *c = caps,
            Err(p) => *p.into_inner() = caps,
        }
        caps
    }

    fn caps(&self) -> Capabilities {
        match self.caps.read() {
            Ok(c) => *c,
            Err(p) => *p.into_inner(),
        }
    }
}

impl MailDispatch for Proxy {
    type Transaction = ProxyTransaction;

    fn capabilities(&self) -> Capabilities {
        self.state.caps()
    }

    async fn open(
        &self,
        info: &SessionInfo,
        envelope: &Envelope,
    ) -> Result<ProxyTransaction, Refusal> {
        let caps = self.state.caps();
        if envelope.params.body == Some(Body::BinaryMime) && !caps.binary_mime {
            return Err(reply::BINARY_NOT_FORWARDABLE);
        }
        if !envelope.sender.to_string().is_ascii() && !caps.smtputf8 {
            return Err(reply::NEXT_HOP_NO_SMTPUTF8);
        }
        Ok(ProxyTransaction {
            state: self.state.clone(),
            endpoint: self.endpoint.clone(),
            dialect: self.dialect,
            timeouts: self.timeouts,
            helo: self.helo(info),
            sender: envelope.sender.clone(),
            params: envelope.params.clone(),
            smtp_upstream: info.protocol == Protocol::Smtp,
            permit: None,
            client: None,
            phase: Phase::Envelope,
            recipients: Vec::new(),
            slots: Vec::new(),
            mail_refusal: None,
            failure: None,
            digest: None,
        })
    }
}

/// Where a [`ProxyTransaction`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Recipients may come.
    Envelope,
    /// The data is on its way downstream.
    Data,
    /// Nothing goes downstream: every recipient was served on an earlier try (or refused
    /// again on this one).
    Skipped,
    /// Committed, aborted or failed.
    Done,
}

/// What happens to one upstream recipient after `begin`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    /// In the downstream transaction.
    Downstream,
    /// Delivered on an earlier try: skipped, `Ok`.
    Delivered,
    /// Refused by the server when the transaction was started again.
    Refused(Refusal),
}

/// One transaction passed through to the downstream server; see [`Proxy`].
///
/// Dropped without [`commit`](Transaction::commit) or [`abort`](Transaction::abort), it
/// closes its connection: a message whose final dot was not sent is not delivered.
#[derive(Debug)]
pub struct ProxyTransaction {
    state: Arc<State>,
    endpoint: Endpoint,
    dialect: Dialect,
    timeouts: Timeouts,
    helo: String,
    sender: ReversePath,
    params: MailParams,
    /// The client speaks SMTP: one reply for all, so a mixed outcome is retried.
    smtp_upstream: bool,
    /// One of the downstream transactions in flight.
    permit: Option<OwnedSemaphorePermit>,
    /// `None` before the first recipient, and once the connection failed or went back.
    client: Option<Client>,
    phase: Phase,
    /// The delivery addresses of the recipients accepted, in RCPT order.
    recipients: Vec<String>,
    /// Per recipient, what `begin` made of it.
    slots: Vec<Slot>,
    /// The server refused `MAIL`: every recipient gets it.
    mail_refusal: Option<Refusal>,
    /// The refusal of a failure during the data, given again to every later call.
    failure: Option<Refusal>,
    digest: Option<[u8; 32]>,
}

impl ProxyTransaction {
    /// Logs a failure of the downstream server, drops the connection, and returns the reply.
    fn fail(&mut self, step: &str, error: Error) -> Refusal {
        let refusal = error.reply();
        // Every downstream error names the endpoint.
        log::warn!("delivery failed at {step}: {error}; answering {refusal}");
        self.client = None;
        self.permit = None;
        self.phase = Phase::Done;
        self.failure = Some(refusal.clone());
        refusal
    }

    /// Gives the connection back to the pool when it is clean (RSET first if a transaction
    /// is open on it), and the permit back.
    async fn release(&mut self, reset: bool) {
        self.phase = Phase::Done;
        self.permit = None;
        let Some(mut client) = self.client.take() else {
            return;
        };
        if reset {
            match client.rset().await {
                Ok(r) if r.code() == 250 => {}
                _ => return,
            }
        }
        if client.is_clean() {
            self.state.pool.put(client);
        }
    }

    /// The connection, or the reply to give when there is none.
    fn client(&mut self) -> Result<&mut Client, Refusal> {
        let failure = self.failure.clone();
        self.client
            .as_mut()
            .ok_or_else(|| failure.unwrap_or(reply::DELIVERY_FAILED))
    }

    /// A downstream refusal as the upstream one; a broken connection is dropped.
    fn refused(&mut self, step: &str, reply: Reply) -> Refusal {
        log::debug!("{}: {step} refused: {reply}", self.endpoint);
        if self.client.as_ref().is_some_and(Client::is_broken) {
            self.client = None;
            self.permit = None;
            self.phase = Phase::Done;
        }
        upstream(reply)
    }

    /// The downstream transaction, opened at the first recipient: a permit, a connection
    /// (pooled, or a fresh one if that is stale), and `MAIL`.
    async fn start(&mut self) -> Result<(), Refusal> {
        if let Some(refusal) = &self.mail_refusal {
            return Err(refusal.clone());
        }
        if self.client.is_some() {
            return Ok(());
        }
        if self.permit.is_none() {
            match self.state.in_flight.clone().try_acquire_owned() {
                Ok(permit) => self.permit = Some(permit),
                Err(_) => {
                    log::warn!(
                        "{}: as many transactions in flight as allowed; answering {}",
                        self.endpoint,
                        reply::DOWNSTREAM_BUSY
                    );
                    return Err(reply::DOWNSTREAM_BUSY);
                }
            }
        }
        let started = self.dial_and_mail().await;
        let (client, mail) = match started {
            Ok(started) => started,
            Err(error) => return Err(self.fail("MAIL", error)),
        };
        self.client = Some(client);
        if mail.is_positive() {
            return Ok(());
        }
        log::debug!("{}: MAIL refused: {mail}", self.endpoint);
        let refusal = upstream(mail);
        self.mail_refusal = Some(refusal.clone());
        self.release(false).await;
        Err(refusal)
    }

    /// A pooled connection that answers `RSET` + `MAIL`, else a fresh one that answers
    /// `MAIL`. Returns the client and the reply to `MAIL`.
    async fn dial_and_mail(&mut self) -> Result<(Client, Reply), Error> {
        if let Some(mut client) = self.state.pool.take() {
            match client.reset_and_mail(&self.sender, &self.params).await {
                Ok(reply) => return Ok((client, reply)),
                // A hanging server would hang the next connection too: do not wait again.
                Err(e @ Error::DownstreamTimeout { .. }) => return Err(e),
                Err(e) => log::debug!(
                    "{}: pooled connection unusable ({e}); dialing a fresh one",
                    self.endpoint
                ),
            }
        }
        let mut client = Client::connect(
            self.endpoint.clone(),
            self.dialect,
            &self.helo,
            self.timeouts,
        )
        .await?;
        self.state.learn(&client);
        let reply = client.mail(&self.sender, &self.params).await?;
        Ok((client, reply))
    }

    /// Sends one recipient; `Ok` when the server accepted it.
    async fn rcpt(&mut self, address: &str) -> Result<(), Refusal> {
        let client = self.client()?;
        if !address.is_ascii() && !client.supports("SMTPUTF8") {
            // RFC 6531 3.5: the next hop cannot take this address.
            return Err(reply::NEXT_HOP_NO_SMTPUTF8);
        }
        match client.rcpt(address).await {
            Ok(reply) if reply.is_positive() => Ok(()),
            Ok(reply) => Err(self.refused("RCPT", reply)),
            Err(error @ Error::BadMailboxName { .. }) => {
                log::debug!("{}: {error}", self.endpoint);
                Err(error.reply())
            }
            Err(error) => Err(self.fail("RCPT", error)),
        }
    }

    /// Starts the downstream transaction again without the recipients served before.
    async fn restart_without_delivered(&mut self) -> Result<(), Refusal> {
        let sender = self.sender.clone();
        let params = self.params.clone();
        let client = self.client()?;
        match client.reset_and_mail(&sender, &params).await {
            Ok(reply) if reply.is_positive() => {}
            Ok(reply) => {
                let refusal = self.refused("MAIL", reply);
                return Err(refusal);
            }
            Err(error) => return Err(self.fail("MAIL", error)),
        }
        for i in 0..self.recipients.len() {
            if self.slots[i] != Slot::Downstream {
                continue;
            }
            let address = self.recipients[i].clone();
            if let Err(refusal) = self.rcpt(&address).await {
                if self.phase == Phase::Done {
                    return Err(refusal);
                }
                self.slots[i] = Slot::Refused(refusal);
            }
        }
        Ok(())
    }

    /// How many recipients are in the downstream transaction (LMTP: as many final replies).
    fn downstream(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| **s == Slot::Downstream)
            .count()
    }

    /// Reads the final replies: one per downstream recipient (LMTP) or one for all (SMTP),
    /// all within the final timeout. Recipients left without a reply by a failure get the
    /// failure's reply.
    async fn final_replies(&mut self) -> Vec<Result<(), Refusal>> {
        let smtp = self.dialect == Dialect::Smtp;
        let n = self.downstream();
        let wanted = if smtp { 1 } else { n };
        let deadline = Instant::now() + self.timeouts.final_reply;
        let mut got = Vec::with_capacity(n);
        for _ in 0..wanted {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(client) = self.client.as_mut() else {
                break;
            };
            match client.final_reply_within(left).await {
                Ok(reply) => got.push(self.outcome(reply)),
                Err(error) => {
                    self.fail("end of data", error);
                }
            }
        }
        let rest = match (smtp, got.first()) {
            (true, Some(only)) => only.clone(),
            _ => Err(self.failure.clone().unwrap_or(reply::DELIVERY_FAILED)),
        };
        got.resize(n, rest);
        got
    }

    /// One final reply as an outcome.
    fn outcome(&mut self, reply: Reply) -> Result<(), Refusal> {
        if reply.is_positive() {
            return Ok(());
        }
        log::warn!(
            "delivery to {} refused after the data: {reply}",
            self.endpoint
        );
        Err(upstream(reply))
    }

    /// The outcome of each upstream recipient, from the downstream ones in order.
    fn outcomes(&self, downstream: Vec<Result<(), Refusal>>) -> Outcomes {
        let mut downstream = downstream.into_iter();
        self.slots
            .iter()
            .map(|slot| match slot {
                Slot::Downstream => downstream.next().unwrap_or(Err(reply::DELIVERY_FAILED)),
                Slot::Delivered => Ok(()),
                Slot::Refused(refusal) => Err(refusal.clone()),
            })
            .collect()
    }

    /// After a mixed outcome over SMTP, the client retries: remember who has the message.
    fn remember(&self, outcomes: &Outcomes) {
        let (true, Some(digest)) = (self.smtp_upstream, self.digest.as_ref()) else {
            return;
        };
        let failed = outcomes.iter().filter(|o| o.is_err()).count();
        if failed == 0 || failed == outcomes.len() {
            return;
        }
        let mut served = 0;
        for (address, outcome) in self.recipients.iter().zip(outcomes) {
            if outcome.is_ok() {
                self.state.delivered.remember(digest, address);
                served += 1;
            }
        }
        log::warn!(
            "{}: message {} reached {served} of {} recipients; they are remembered and \
             skipped when the client sends it again",
            self.endpoint,
            hex8(digest),
            outcomes.len()
        );
    }
}

impl Transaction for ProxyTransaction {
    async fn add_recipient(&mut self, recipient: &Recipient) -> Result<(), Refusal> {
        if let Some(refusal) = &self.mail_refusal {
            return Err(refusal.clone());
        }
        if self.phase != Phase::Envelope {
            return Err(self.failure.clone().unwrap_or(reply::DELIVERY_FAILED));
        }
        self.start().await?;
        self.rcpt(&recipient.address).await?;
        self.recipients.push(recipient.address.clone());
        Ok(())
    }

    async fn begin(&mut self, _info: &SessionInfo, envelope: &Envelope) -> Result<(), Refusal> {
        if envelope.recipients.len() != self.recipients.len() {
            // The final replies would be miscounted; better not deliver at all.
            log::error!(
                "{}: {} recipients upstream but {} downstream",
                self.endpoint,
                envelope.recipients.len(),
                self.recipients.len()
            );
            return Err(reply::DELIVERY_FAILED);
        }
        self.digest = envelope.digest;
        let digest = if self.smtp_upstream {
            self.digest
        } else {
            None
        };
        self.slots = self
            .recipients
            .iter()
            .map(|address| match &digest {
                Some(d) if self.state.delivered.contains(d, address) => Slot::Delivered,
                _ => Slot::Downstream,
            })
            .collect();
        let skipped = self.slots.len() - self.downstream();
        if skipped > 0 {
            log::info!(
                "{}: message {} was already delivered to {skipped} of {} recipients on an \
                 earlier try; skipping them",
                self.endpoint,
                digest.as_ref().map(hex8).unwrap_or_default(),
                self.slots.len()
            );
            if self.downstream() > 0 {
                self.restart_without_delivered().await?;
            }
            if self.downstream() == 0 {
                self.release(true).await;
                self.phase = Phase::Skipped;
                return Ok(());
            }
        }
        let binary = envelope.params.body == Some(Body::BinaryMime);
        let client = self.client()?;
        if client.supports("CHUNKING") {
            if let Err(error) = client.bdat(binary) {
                return Err(self.fail("BDAT", error));
            }
            self.phase = Phase::Data;
            return Ok(());
        }
        if binary {
            return Err(reply::BINARY_NOT_FORWARDABLE);
        }
        match client.data().await {
            Ok(reply) if reply.code() == 354 => {
                self.phase = Phase::Data;
                Ok(())
            }
            Ok(reply) if reply.is_positive() => {
                let error = Error::DownstreamProtocol {
                    endpoint: self.endpoint.to_string(),
                    detail: format!("DATA answered {reply}, not 354"),
                };
                Err(self.fail("DATA", error))
            }
            Ok(reply) => Err(self.refused("DATA", reply)),
            Err(error) => Err(self.fail("DATA", error)),
        }
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        match self.phase {
            Phase::Skipped => return Ok(()),
            Phase::Data => {}
            _ => return Err(self.failure.clone().unwrap_or(reply::DELIVERY_FAILED)),
        }
        let client = self.client()?;
        match client.send_data(chunk).await {
            Ok(()) => Ok(()),
            Err(Error::DownstreamRefused { reply, .. }) => {
                // A refused BDAT chunk: the message cannot go on (nothing is delivered).
                let refusal = upstream(reply);
                self.client = None;
                self.permit = None;
                self.phase = Phase::Done;
                self.failure = Some(refusal.clone());
                Err(refusal)
            }
            Err(error) => Err(self.fail("data", error)),
        }
    }

    async fn commit(&mut self) -> Outcomes {
        let n = self.recipients.len();
        match self.phase {
            Phase::Skipped => {
                self.phase = Phase::Done;
                return self.outcomes(Vec::new());
            }
            Phase::Data => {}
            _ => {
                let refusal = self.failure.clone().unwrap_or(reply::DELIVERY_FAILED);
                self.client = None;
                self.permit = None;
                self.phase = Phase::Done;
                return vec![Err(refusal); n];
            }
        }
        let ended = match self.client() {
            Ok(client) => client.end_data().await,
            Err(refusal) => return vec![Err(refusal); n],
        };
        let downstream = match ended {
            Ok(()) => self.final_replies().await,
            Err(Error::DownstreamRefused { reply, .. }) => {
                let refusal = upstream(reply);
                self.client = None;
                vec![Err(refusal); self.downstream()]
            }
            Err(error) => {
                let refusal = self.fail("end of data", error);
                vec![Err(refusal); self.downstream()]
            }
        };
        let outcomes = self.outcomes(downstream);
        self.remember(&outcomes);
        self.release(false).await;
        outcomes
    }

    async fn abort(&mut self) {
        match self.phase {
            // Half a message: close without the final dot, so that nothing is delivered.
            Phase::Data => {
                self.client = None;
                self.permit = None;
                self.phase = Phase::Done;
            }
            Phase::Envelope => self.release(self.client.is_some()).await,
            Phase::Skipped | Phase::Done => {
                self.permit = None;
            }
        }
    }
}

/// The first 8 bytes of a digest in hex, for logs.
fn hex8(digest: &[u8; 32]) -> String {
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A downstream refusal as the upstream one ([`reply::relayed`]).
fn upstream(reply: Reply) -> Refusal {
    reply::relayed(reply)
}

/// A name fit for `LHLO`/`EHLO`: letters, digits, `-`, `.`, `_`, or an address literal.
fn is_helo_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._[]:".contains(c))
}

/// Idle connections, most recently used last, each with the time it went idle.
#[derive(Debug)]
struct Pool {
    idle: Mutex<Vec<(Client, Instant)>>,
    max_idle: usize,
    idle_time: Duration,
}

impl Pool {
    fn new(max_idle: usize, idle_time: Duration) -> Self {
        Pool {
            idle: Mutex::new(Vec::with_capacity(max_idle)),
            max_idle,
            idle_time,
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<(Client, Instant)>> {
        // A panic elsewhere cannot leave the list inconsistent: push and pop are atomic.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The most recently used idle connection that is not too old (the likeliest to be
    /// alive) and still clean; older ones are closed with `QUIT`. One on which the server
    /// sent something while it was idle (or that it closed) is dropped: those bytes would be
    /// read as the reply to our next command, and every reply after it out of step.
    fn take(&self) -> Option<Client> {
        let mut idle = self.idle();
        // Bounded by the pool's size: each turn takes one connection out.
        while let Some((mut client, since)) = idle.pop() {
            if since.elapsed() > self.idle_time {
                quit_later(client);
            } else if client.is_clean() {
                return Some(client);
            } else {
                log::debug!(
                    "{}: pooled connection got unsolicited bytes or was closed; dropped",
                    client.endpoint()
                );
            }
        }
        None
    }

    /// Keeps a clean connection for later, or closes it when the pool is full.
    fn put(&self, client: Client) {
        let mut idle = self.idle();
        let (fresh, old): (Vec<_>, Vec<_>) = idle
            .drain(..)
            .partition(|(_, since)| since.elapsed() <= self.idle_time);
        *idle = fresh;
        for (client, _) in old {
            quit_later(client);
        }
        if idle.len() < self.max_idle {
            idle.push((client, Instant::now()));
        } else {
            quit_later(client);
        }
    }

    fn len(&self) -> usize {
        self.idle().len()
    }
}

/// Says `QUIT` on a connection we no longer want, in the background, bounded.
fn quit_later(client: Client) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), client.quit()).await;
        });
    }
}
