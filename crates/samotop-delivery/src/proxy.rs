//! [`Proxy`]: a [`MailDispatch`] that passes each transaction through to an LMTP or SMTP
//! server (Dovecot's LMTP socket, a smarthost), step by step as it happens upstream.
//!
//! The downstream transaction opens when the upstream one does (`MAIL FROM`), each recipient
//! is forwarded at once so that the downstream server's verdict (`550 5.1.1 User doesn't
//! exist`) is the upstream reply to `RCPT`, and the data streams through with dot-stuffing.
//! The final `250` upstream follows the downstream server's own final replies: over LMTP one
//! per recipient (RFC 2033), over SMTP one for all.
//!
//! Failures of the downstream server (down, hanging, dying mid-transfer, not speaking the
//! protocol) answer `451` and are logged with `warn!`; a half-sent message is never ended
//! with the final dot, so it is never delivered. Connections are kept in a small pool and
//! reused, with `RSET` (pipelined with `MAIL` where the server allows) before each reuse.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use samotop_core::{
    Envelope, MailDispatch, Outcomes, Recipient, Refusal, Reply, SessionInfo, Transaction, reply,
};

use crate::Error;
use crate::client::{Client, Dialect, Endpoint, Timeouts};

/// Passes mail through to an LMTP or SMTP server: a [`MailDispatch`] in proxy style.
///
/// ```no_run
/// use std::time::Duration;
/// use samotop_delivery::{Dialect, Endpoint, Proxy};
///
/// let dovecot = Proxy::new(Endpoint::Unix("/var/run/dovecot/lmtp".into()), Dialect::Lmtp)
///     .command_timeout(Duration::from_secs(30))
///     .max_idle(4);
/// # let _ = dovecot;
/// ```
///
/// Replies upstream:
/// * `MAIL`, `RCPT`, `DATA`: the downstream server's reply, code, enhanced code and text
///   (`421`, which would close the upstream session, becomes `451`);
/// * after the data: each recipient's downstream outcome (SMTP: the one reply, for each);
/// * the downstream server unreachable or silent: `451 4.4.1`; the connection lost:
///   `451 4.4.2`; anything else wrong with it: `451 4.3.0` (see [`Error::reply`]).
#[derive(Debug)]
pub struct Proxy {
    endpoint: Endpoint,
    dialect: Dialect,
    timeouts: Timeouts,
    helo: Option<String>,
    pool: Arc<Pool>,
}

impl Proxy {
    /// Connections kept open between transactions, by default.
    pub const DEFAULT_MAX_IDLE: usize = 8;

    /// A proxy to `endpoint`, speaking `dialect`, with default timeouts (see the setters) and
    /// up to [`DEFAULT_MAX_IDLE`](Proxy::DEFAULT_MAX_IDLE) idle connections.
    pub fn new(endpoint: Endpoint, dialect: Dialect) -> Self {
        Proxy {
            endpoint,
            dialect,
            timeouts: Timeouts::default(),
            helo: None,
            pool: Arc::new(Pool::new(Self::DEFAULT_MAX_IDLE)),
        }
    }

    /// Time to connect, to be greeted, and to get the reply to `LHLO`/`EHLO`, each.
    /// Default 30 s. Over it: `451 4.4.1` to `MAIL`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.connect = timeout;
        self
    }

    /// Time for the reply to `MAIL`, `RCPT`, `DATA` and `RSET`. Default 60 s (RFC 5321
    /// 4.5.3.2 allows 5 min; the upstream client waits that long for ours). Over it:
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

    /// Time for each final reply after the data. Default 5 min (RFC 5321 4.5.3.2.6 gives the
    /// client 10 min: we answer before the upstream client gives up). Over it: `451 4.4.1`
    /// for each recipient without a reply.
    pub fn final_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.final_reply = timeout;
        self
    }

    /// The most connections kept open while idle. Default
    /// [`DEFAULT_MAX_IDLE`](Proxy::DEFAULT_MAX_IDLE); `0` opens a connection per transaction.
    /// Connections in use are not limited here: there is one per upstream transaction.
    pub fn max_idle(mut self, connections: usize) -> Self {
        self.pool = Arc::new(Pool::new(connections));
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
        self.pool.len()
    }

    /// A pooled connection that answers `RSET` + `MAIL`, or a new one that answers `MAIL`.
    /// Returns the client and the reply to `MAIL`.
    async fn start(&self, helo: &str, envelope: &Envelope) -> Result<(Client, Reply), Error> {
        // Bounded by the pool's size: each turn takes one connection out.
        while let Some(mut client) = self.pool.take() {
            match client
                .reset_and_mail(&envelope.sender, &envelope.params)
                .await
            {
                Ok(reply) => return Ok((client, reply)),
                // A hanging server would hang the next one too: do not wait again.
                Err(e @ Error::DownstreamTimeout { .. }) => return Err(e),
                Err(e) => log::debug!("{}: pooled connection unusable: {e}", self.endpoint),
            }
        }
        let mut client =
            Client::connect(self.endpoint.clone(), self.dialect, helo, self.timeouts).await?;
        let reply = client.mail(&envelope.sender, &envelope.params).await?;
        Ok((client, reply))
    }

    /// The configured name, else the session's server name, else `localhost`: the first
    /// that is fit for `LHLO`/`EHLO`.
    fn helo<'a>(&'a self, info: &'a SessionInfo) -> &'a str {
        [self.helo.as_deref(), Some(info.server_name.as_str())]
            .into_iter()
            .flatten()
            .find(|name| is_helo_name(name))
            .unwrap_or("localhost")
    }
}

impl MailDispatch for Proxy {
    type Transaction = ProxyTransaction;

    async fn open(
        &self,
        info: &SessionInfo,
        envelope: &Envelope,
    ) -> Result<ProxyTransaction, Refusal> {
        let mut tx = ProxyTransaction {
            client: None,
            pool: self.pool.clone(),
            endpoint: self.endpoint.clone(),
            state: State::Envelope,
            accepted: 0,
            failure: None,
        };
        let (client, reply) = match self.start(self.helo(info), envelope).await {
            Ok(started) => started,
            Err(error) => return Err(tx.fail("MAIL", error)),
        };
        let refusal = unforwardable(&client, envelope);
        tx.client = Some(client);
        if let Some(refusal) = refusal {
            log::info!("{}: {refusal}", self.endpoint);
            tx.release();
            return Err(refusal);
        }
        if reply.is_positive() {
            return Ok(tx);
        }
        log::debug!("{}: MAIL refused: {reply}", self.endpoint);
        tx.release();
        Err(upstream(reply))
    }
}

/// Why a transaction cannot be passed on to this server, if it cannot: binary content
/// (RFC 3030) needs BDAT, which this client does not send, and a UTF-8 sender needs SMTPUTF8
/// downstream (RFC 6531 3.5).
fn unforwardable(client: &Client, envelope: &Envelope) -> Option<Refusal> {
    use samotop_core::parser::Body;
    if envelope.params.body == Some(Body::BinaryMime) {
        return Some(reply::BINARY_NOT_FORWARDABLE);
    }
    if !envelope.sender.to_string().is_ascii() && !client.supports("SMTPUTF8") {
        return Some(reply::NEXT_HOP_NO_SMTPUTF8);
    }
    None
}

/// Where a [`ProxyTransaction`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `MAIL` accepted; recipients may come.
    Envelope,
    /// `DATA` answered `354`: the data is on its way.
    Data,
    /// Committed, aborted or failed: the connection is back in the pool or closed.
    Done,
}

/// One transaction passed through to the downstream server; see [`Proxy`].
///
/// Dropped without [`commit`](Transaction::commit) or [`abort`](Transaction::abort), it
/// closes its connection: a message whose final dot was not sent is not delivered.
#[derive(Debug)]
pub struct ProxyTransaction {
    /// `None` once the connection failed or went back to the pool.
    client: Option<Client>,
    pool: Arc<Pool>,
    endpoint: Endpoint,
    state: State,
    /// Recipients the downstream server accepted: as many final replies over LMTP.
    accepted: usize,
    /// The reply of a failure during the data, given again to every later call.
    failure: Option<Refusal>,
}

impl ProxyTransaction {
    /// Logs a failure of the downstream server, drops the connection, and returns the reply.
    fn fail(&mut self, step: &str, error: Error) -> Refusal {
        let reply = error.reply();
        // Every downstream error names the endpoint.
        log::warn!("delivery failed at {step}: {error}; answering {reply}");
        self.client = None;
        self.state = State::Done;
        self.failure = Some(reply.clone());
        reply
    }

    /// Gives the connection back to the pool, unless it is broken.
    fn release(&mut self) {
        self.state = State::Done;
        if let Some(client) = self.client.take() {
            if !client.is_broken() && !client.in_data() {
                self.pool.put(client);
            }
        }
    }

    /// The connection, or the reply to give when there is none.
    fn client(&mut self) -> Result<&mut Client, Refusal> {
        let failure = self.failure.clone();
        self.client
            .as_mut()
            .ok_or_else(|| failure.unwrap_or(reply::DELIVERY_FAILED))
    }

    /// A downstream refusal as the upstream reply; a broken connection is dropped.
    fn refused(&mut self, step: &str, reply: Reply) -> Refusal {
        log::debug!("{}: {step} refused: {reply}", self.endpoint);
        if self.client.as_ref().is_some_and(Client::is_broken) {
            self.client = None;
            self.state = State::Done;
        }
        upstream(reply)
    }

    /// Reads the final replies: one per accepted recipient (LMTP) or one for all (SMTP).
    /// Recipients left without a reply by a failure get the failure's reply.
    async fn final_replies(&mut self) -> Outcomes {
        let smtp = self.client.as_ref().map(Client::dialect) == Some(Dialect::Smtp);
        let wanted = if smtp { 1 } else { self.accepted };
        let mut outcomes = Vec::with_capacity(self.accepted);
        for _ in 0..wanted {
            let Some(client) = self.client.as_mut() else {
                break;
            };
            match client.final_reply().await {
                Ok(reply) => outcomes.push(self.outcome(reply)),
                Err(error) => {
                    self.fail("end of data", error);
                }
            }
        }
        let rest = match (smtp, outcomes.first()) {
            (true, Some(only)) => only.clone(),
            _ => Err(self.failure.clone().unwrap_or(reply::DELIVERY_FAILED)),
        };
        outcomes.resize(self.accepted, rest);
        outcomes
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
}

impl Transaction for ProxyTransaction {
    async fn add_recipient(&mut self, recipient: &Recipient) -> Result<(), Refusal> {
        let client = self.client()?;
        if !recipient.address.is_ascii() && !client.supports("SMTPUTF8") {
            // RFC 6531 3.5: the next hop cannot take this address.
            return Err(reply::NEXT_HOP_NO_SMTPUTF8);
        }
        match client.rcpt(&recipient.address).await {
            Ok(reply) if reply.is_positive() => {
                self.accepted += 1;
                Ok(())
            }
            Ok(reply) => Err(self.refused("RCPT", reply)),
            Err(error @ Error::BadMailboxName { .. }) => {
                log::debug!("{}: {error}", self.endpoint);
                Err(error.reply())
            }
            Err(error) => Err(self.fail("RCPT", error)),
        }
    }

    async fn begin(&mut self, _info: &SessionInfo, envelope: &Envelope) -> Result<(), Refusal> {
        if envelope.recipients.len() != self.accepted {
            // The final replies would be miscounted; better not deliver at all.
            log::error!(
                "{}: {} recipients upstream but {} downstream",
                self.endpoint,
                envelope.recipients.len(),
                self.accepted
            );
            return Err(reply::DELIVERY_FAILED);
        }
        let client = self.client()?;
        match client.data().await {
            Ok(reply) if reply.code() == 354 => {
                self.state = State::Data;
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
        let client = self.client()?;
        match client.send_data(chunk).await {
            Ok(()) => Ok(()),
            Err(error) => Err(self.fail("data", error)),
        }
    }

    async fn commit(&mut self) -> Outcomes {
        if self.state != State::Data {
            let reply = self.failure.clone().unwrap_or(reply::DELIVERY_FAILED);
            self.client = None;
            self.state = State::Done;
            return vec![Err(reply); self.accepted];
        }
        let ended = match self.client() {
            Ok(client) => client.end_data().await,
            Err(reply) => return vec![Err(reply); self.accepted],
        };
        if let Err(error) = ended {
            let reply = self.fail("end of data", error);
            return vec![Err(reply); self.accepted];
        }
        let outcomes = self.final_replies().await;
        self.release();
        outcomes
    }

    async fn abort(&mut self) {
        match self.state {
            // Half a message: close without the final dot, so that nothing is delivered.
            State::Data => self.client = None,
            State::Envelope => {
                if let Some(client) = self.client.as_mut() {
                    match client.rset().await {
                        Ok(reply) if reply.code() == 250 => {}
                        _ => self.client = None,
                    }
                }
            }
            State::Done => {}
        }
        self.release();
    }
}

/// A downstream refusal as the upstream one: the same, except that `421` (which would close
/// the upstream session) becomes `451`, and a reply that is no refusal (a `354` to `RCPT`)
/// becomes `451 4.3.0` (see [`Refusal::from_reply`]).
fn upstream(reply: Reply) -> Refusal {
    if reply.code() == 421 {
        return Refusal::with_text(451, reply.enhanced(), reply.message().to_string());
    }
    Refusal::from_reply(reply)
}

/// A name fit for `LHLO`/`EHLO`: letters, digits, `-`, `.`, `_`, or an address literal.
fn is_helo_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._[]:".contains(c))
}

/// Idle connections, most recently used last.
#[derive(Debug)]
struct Pool {
    idle: Mutex<Vec<Client>>,
    max_idle: usize,
}

impl Pool {
    fn new(max_idle: usize) -> Self {
        Pool {
            idle: Mutex::new(Vec::with_capacity(max_idle)),
            max_idle,
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Client>> {
        // A panic elsewhere cannot leave the list inconsistent: push and pop are atomic.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The most recently used idle connection (the likeliest to be alive).
    fn take(&self) -> Option<Client> {
        self.idle().pop()
    }

    /// Keeps a connection for later, or closes it when the pool is full.
    fn put(&self, client: Client) {
        let mut idle = self.idle();
        if idle.len() < self.max_idle {
            idle.push(client);
        }
    }

    fn len(&self) -> usize {
        self.idle().len()
    }
}
