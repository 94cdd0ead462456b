//! The tokio driver: runs a [`Session`] over any `AsyncRead + AsyncWrite`.
//!
//! It owns the socket, the buffers, the timers and the spool; it puts each question the
//! session asks to the guards, the checks or the transaction, bounded by
//! [`Limits::backend_timeout`](crate::Limits::backend_timeout); it decides no protocol (every
//! reply comes from the session).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use crate::check::{DataCheck, Scan};
use crate::dispatch::{MailDispatch, Transaction};
use crate::envelope::{SessionInfo, TlsInfo};
use crate::guard::Guard;
use crate::observe::{Limit, Observation, Observer};
use crate::reply;
use crate::session::{Answer, End, Event, Session, SessionConfig, Stage, Stats};
use crate::spool::Spool;

/// A byte stream a session can run over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A boxed [`Io`], so that STARTTLS can swap a plain stream for a TLS one.
pub type BoxIo = Box<dyn Io>;

/// The future returned by [`TlsUpgrade::upgrade`].
pub type UpgradeFuture = Pin<Box<dyn Future<Output = std::io::Result<(BoxIo, TlsInfo)>> + Send>>;

/// Turns a plain stream into a TLS one (server side). `samotop-server` implements it with
/// rustls; the core does not depend on a TLS library. The driver bounds the handshake by
/// [`Limits::handshake_timeout`](crate::Limits::handshake_timeout).
pub trait TlsUpgrade: Send + Sync {
    /// Runs the server handshake on `io`.
    fn upgrade(&self, io: BoxIo) -> UpgradeFuture;
}

/// How a session ended, with its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Counters.
    pub stats: Stats,
    /// Why it ended.
    pub end: End,
}

/// Runs sessions: the dispatch, the guards, the end-of-data checks, the session
/// configuration and the TLS upgrade, shared by every connection of a listener.
///
/// ```no_run
/// # async fn example() -> std::io::Result<()> {
/// use std::sync::Arc;
/// use samotop_core::{Driver, Peer, SessionConfig, SessionInfo};
/// # struct Null;
/// # impl samotop_core::MailDispatch for Null {
/// #     type Transaction = Box<dyn samotop_core::DynTransaction>;
/// #     async fn open(&self, _: &SessionInfo, _: &samotop_core::Envelope)
/// #         -> Result<Self::Transaction, samotop_core::Refusal> { Err(samotop_core::reply::DELIVERY_FAILED) }
/// # }
/// let driver = Arc::new(Driver::new(Null, (), SessionConfig::default()));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:2525").await?;
/// loop {
///     let (stream, peer) = listener.accept().await?;
///     let driver = driver.clone();
///     tokio::spawn(async move {
///         let info = SessionInfo::new(Peer::Tcp(peer), "mx.example.org");
///         driver.run(stream, info).await
///     });
/// }
/// # }
/// ```
///
/// (The `samotop-server` crate's `Server` does this with every limit, PROXY, TLS and a
/// graceful shutdown.)
pub struct Driver<D, G, C = ()> {
    dispatch: D,
    guard: G,
    checks: C,
    config: Arc<SessionConfig>,
    tls: Option<Arc<dyn TlsUpgrade>>,
    banner_delay: Duration,
    shutdown: Option<watch::Receiver<bool>>,
    observer: Option<Arc<dyn Observer>>,
}

impl<D: MailDispatch, G: Guard> Driver<D, G, ()> {
    /// A driver with no end-of-data checks, no TLS, no banner delay and no shutdown signal.
    /// EHLO offers what `dispatch` can carry ([`MailDispatch::capabilities`]).
    pub fn new(dispatch: D, guard: G, mut config: SessionConfig) -> Self {
        config.capabilities = config.capabilities.and(dispatch.capabilities());
        config.spool = false;
        Driver {
            dispatch,
            guard,
            checks: (),
            config: Arc::new(config),
            tls: None,
            banner_delay: Duration::ZERO,
            shutdown: None,
            observer: None,
        }
    }
}

impl<D: MailDispatch, G: Guard, C: DataCheck> Driver<D, G, C> {
    /// Runs these end-of-data checks on every message (when they are
    /// [active](DataCheck::is_active): messages are then spooled first).
    pub fn with_checks<C2: DataCheck>(self, checks: C2) -> Driver<D, G, C2> {
        let mut config = Arc::unwrap_or_clone(self.config);
        config.spool = checks.is_active();
        Driver {
            dispatch: self.dispatch,
            guard: self.guard,
            checks,
            config: Arc::new(config),
            tls: self.tls,
            banner_delay: self.banner_delay,
            shutdown: self.shutdown,
            observer: self.observer,
        }
    }

    /// Tells this observer what each session does (metrics, transcripts, logs): the session
    /// then notes refusals, limits and, when the observer
    /// [wants them](Observer::wants_commands), command lines and content digests.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        let config = Arc::make_mut(&mut self.config);
        config.observe = true;
        config.observe_detail = observer.wants_commands();
        self.observer = Some(observer);
        self
    }

    /// Offers STARTTLS with this upgrade (sets [`SessionConfig::starttls`]).
    pub fn with_tls(mut self, tls: Arc<dyn TlsUpgrade>) -> Self {
        Arc::make_mut(&mut self.config).starttls = true;
        self.tls = Some(tls);
        self
    }

    /// Waits this long before the banner; a client that talks first gets
    /// [`reply::EARLY_TALKER`] and is disconnected. Default zero.
    pub fn with_banner_delay(mut self, delay: Duration) -> Self {
        self.banner_delay = delay;
        self
    }

    /// Ends idle sessions with [`reply::SHUTTING_DOWN`] once this turns true.
    pub fn with_shutdown(mut self, shutdown: watch::Receiver<bool>) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// The session configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The dispatch.
    pub fn dispatch(&self) -> &D {
        &self.dispatch
    }

    /// Runs one session to its end and logs one line about it.
    pub async fn run(&self, io: impl Io + 'static, info: SessionInfo) -> Summary {
        let limits = &self.config.limits;
        let mut conn = Conn {
            io: Box::new(io),
            input: BytesMut::new(),
            output: Vec::new(),
            high_water: limits.output_high_water,
            write_timeout: limits.command_timeout,
            stalled: false,
            deadline: None,
            busy: false,
        };
        let mut session = Session::new(self.config.clone(), info);
        let mut message = Message::default();
        let mut shutdown = self.shutdown.clone();
        if let Some(o) = &self.observer {
            o.observe(session.info(), &Observation::Start);
            if let Some(tls) = &session.info().tls {
                o.observe(session.info(), &Observation::Tls(tls));
            }
        }

        if !self.banner_delay.is_zero() {
            conn.input.reserve(512);
            let read = tokio::time::timeout(self.banner_delay, conn.io.read_buf(&mut conn.input));
            match read.await {
                Err(_elapsed) => {}
                Ok(Ok(0)) => session.eof(),
                Ok(Ok(_)) => session.early_talker(),
                Ok(Err(_)) => session.failed(),
            }
        }

        'session: loop {
            while let Some(event) = session.poll_event() {
                self.notes(&mut session);
                match event {
                    Event::Reply(r) => {
                        log::trace!("session {}: S: {r}", session.info().id);
                        if let Some(o) = &self.observer {
                            o.observe(session.info(), &Observation::Reply(&r));
                        }
                        if let Err(e) = conn.queue(&r).await {
                            write_failed(&mut session, &e);
                        }
                    }
                    Event::Close => break 'session,
                    Event::StartTls => {
                        if let Err(e) = self.start_tls(&mut conn, &mut session).await {
                            log::info!("session {}: TLS handshake failed: {e}", session.info().id);
                            session.failed();
                        }
                    }
                    Event::Abort => self.abort(&mut message).await,
                    question => {
                        let answer = self.answer(question, &session, &mut message).await;
                        session.resolve(answer);
                    }
                }
            }
            self.notes(&mut session);
            if session.is_closed() {
                break;
            }
            if !conn.input.is_empty() {
                let used = session.feed(&conn.input, SystemTime::now());
                if used > 0 {
                    conn.input.advance(used);
                    if !session.is_discarding() {
                        // A whole command (or data) arrived: the clock starts again.
                        conn.deadline = None;
                    }
                    continue;
                }
            }
            // Nothing more to do with what we have: flush (RFC 2920 3.1), then read.
            if let Err(e) = conn.flush().await {
                write_failed(&mut session, &e);
                continue;
            }
            self.read(&mut conn, &mut session, &mut shutdown).await;
        }

        self.abort(&mut message).await;
        let _ = conn.flush().await;
        conn.shutdown().await;
        let summary = Summary {
            stats: session.stats(),
            end: session.end(),
        };
        log_summary(&session, &summary);
        if let Some(o) = &self.observer {
            self.notes(&mut session);
            o.observe(session.info(), &Observation::End(&summary));
        }
        summary
    }

    /// Passes what the session noted on to the observer.
    fn notes(&self, session: &mut Session) {
        let Some(o) = &self.observer else {
            return;
        };
        // Bounded: the session notes a few things per command or event.
        while let Some(note) = session.poll_note() {
            o.observe(session.info(), &note.observation());
        }
    }

    /// Waits for input, a timeout, or the shutdown signal.
    async fn read(
        &self,
        conn: &mut Conn,
        session: &mut Session,
        shutdown: &mut Option<watch::Receiver<bool>>,
    ) {
        if let Some(rx) = shutdown.as_ref() {
            if *rx.borrow() && session.shutdown() {
                return;
            }
        }
        let (spare, lean) = conn.plan(session);
        // Message data: each read must come within the data timeout (RFC 5321 4.5.3.2.6).
        // Commands: the whole line must, so a client trickling a byte at a time cannot hold
        // its session past the command timeout.
        let now = tokio::time::Instant::now();
        let deadline = if session.in_data() {
            now + session.read_timeout()
        } else {
            *conn.deadline.get_or_insert(now + session.read_timeout())
        };
        // A client that pauses inside the data: what it sent goes on to the backend first.
        let pause = async {
            if session.has_pending_data() {
                tokio::time::sleep(session.config().limits.flush_after_idle).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let read = tokio::time::timeout_at(deadline, conn.read_some(spare, lean));
        let signal = async {
            match shutdown.as_mut() {
                Some(rx) if !*rx.borrow() => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                _ => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            result = read => match result {
                Err(_elapsed) => session.timed_out(),
                Ok(result) => conn.took(result, spare, session),
            },
            _ = pause => session.flush_data(),
            _ = signal => {
                session.shutdown();
            }
        }
    }

    async fn start_tls(&self, conn: &mut Conn, session: &mut Session) -> std::io::Result<()> {
        conn.flush().await?;
        // RFC 3207 / CVE-2011-0411: bytes pipelined after STARTTLS are never executed.
        if !conn.input.is_empty() {
            log::info!(
                "session {}: discarding {} bytes sent after STARTTLS",
                session.info().id,
                conn.input.len()
            );
            conn.input.clear();
        }
        let Some(tls) = self.tls.as_ref() else {
            return Err(std::io::Error::other("no TLS configured"));
        };
        let plain = std::mem::replace(&mut conn.io, Box::new(empty::empty_duplex()));
        let limit = self.config.limits.handshake_timeout;
        let upgraded = match tokio::time::timeout(limit, tls.upgrade(plain)).await {
            Ok(result) => result,
            Err(_elapsed) => {
                if let Some(o) = &self.observer {
                    o.observe(session.info(), &Observation::Limit(Limit::HandshakeTimeout));
                }
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no TLS handshake within {:?}", limit),
                ))
            }
        };
        let (io, info) = match upgraded {
            Ok(up) => up,
            Err(e) => {
                if let Some(o) = &self.observer {
                    o.observe(session.info(), &Observation::TlsFailed(&e.to_string()));
                }
                return Err(e);
            }
        };
        if let Some(o) = &self.observer {
            o.observe(session.info(), &Observation::Tls(&info));
        }
        conn.io = io;
        log::debug!(
            "session {}: TLS up: {} {}",
            session.info().id,
            info.version,
            info.cipher
        );
        session.tls_started(info);
        Ok(())
    }

    /// Aborts the transaction and drops the spool, if any.
    async fn abort(&self, message: &mut Message<D::Transaction, C::Scan>) {
        message.spool = None;
        message.scan = None;
        if let Some(mut tx) = message.tx.take() {
            let limit = self.config.limits.backend_timeout;
            if tokio::time::timeout(limit, tx.abort()).await.is_err() {
                log::warn!("a transaction did not abort within {limit:?}; dropped");
            }
        }
    }

    /// Asks the guards, the checks or the transaction the question of an event, within the
    /// backend timeout. A transaction whose call times out is dropped.
    async fn answer(
        &self,
        event: Event,
        session: &Session,
        message: &mut Message<D::Transaction, C::Scan>,
    ) -> Answer {
        let limit = self.config.limits.backend_timeout;
        let transactional = !matches!(event, Event::Guard(_));
        let answer = if matches!(event, Event::Unspool) {
            // The whole spooled message in one event: the bound is per write, as for a
            // message that streams (`ask` times each one).
            self.ask(event, session, message).await
        } else {
            tokio::time::timeout(limit, self.ask(event, session, message))
                .await
                .unwrap_or(Answer::TimedOut)
        };
        if transactional && matches!(answer, Answer::TimedOut) {
            message.tx = None;
        }
        answer
    }

    async fn ask(
        &self,
        event: Event,
        session: &Session,
        message: &mut Message<D::Transaction, C::Scan>,
    ) -> Answer {
        let info = session.info();
        let Some(env) = session.envelope() else {
            return match event {
                Event::Guard(Stage::Connect) => Answer::Verdict(self.guard.connect(info).await),
                Event::Guard(Stage::Helo) => Answer::Verdict(self.guard.helo(info).await),
                event => {
                    log::error!("session {}: no envelope to ask {event:?}", info.id);
                    Answer::Unanswerable
                }
            };
        };
        let event = match event {
            Event::Guard(stage) => {
                let verdict = match stage {
                    Stage::Connect => self.guard.connect(info).await,
                    Stage::Helo => self.guard.helo(info).await,
                    Stage::Mail => self.guard.mail(info, env).await,
                    Stage::Rcpt => match session.recipient() {
                        Some(rcpt) => self.guard.rcpt(info, env, rcpt).await,
                        None => return Answer::Unanswerable,
                    },
                    Stage::Data => self.guard.data(info, env).await,
                    Stage::EndOfData => {
                        let limit = self.config.limits.spool_memory;
                        let spool = message.spool.get_or_insert_with(|| Spool::new(limit));
                        let scan = match message.scan.take() {
                            Some(scan) => scan,
                            None => self.checks.scan(info, env),
                        };
                        scan.verdict(info, env, spool).await
                    }
                };
                return Answer::Verdict(verdict);
            }
            Event::Open => {
                // A transaction left over (the session never leaves one) is aborted first.
                if let Some(mut old) = message.tx.take() {
                    old.abort().await;
                }
                return match self.dispatch.open(info, env).await {
                    Ok(tx) => {
                        message.tx = Some(tx);
                        Answer::Done(Ok(()))
                    }
                    Err(refusal) => Answer::Done(Err(refusal)),
                };
            }
            Event::Spool(chunk) => {
                let scan = message
                    .scan
                    .get_or_insert_with(|| self.checks.scan(info, env));
                scan.update(&chunk);
                let limit = self.config.limits.spool_memory;
                let spool = message.spool.get_or_insert_with(|| Spool::new(limit));
                return Answer::Done(spool.push(chunk).await.map_err(|e| {
                    log::warn!("session {}: cannot spool the message: {e}", info.id);
                    reply::for_io_error(&e)
                }));
            }
            Event::Commit => {
                message.spool = None;
                let Some(mut tx) = message.tx.take() else {
                    return Answer::Unanswerable;
                };
                let started = tokio::time::Instant::now();
                let outcomes = tx.commit().await;
                if let Some(o) = &self.observer {
                    let delivered = Observation::Delivered {
                        envelope: env,
                        outcomes: &outcomes,
                        latency: started.elapsed(),
                    };
                    o.observe(info, &delivered);
                }
                return Answer::Committed(outcomes);
            }
            event => event,
        };
        let Some(tx) = message.tx.as_mut() else {
            log::error!("session {}: no transaction to ask {event:?}", info.id);
            return Answer::Unanswerable;
        };
        match event {
            Event::AddRecipient => match session.recipient() {
                Some(rcpt) => Answer::Done(tx.add_recipient(rcpt).await),
                None => Answer::Unanswerable,
            },
            Event::Begin => Answer::Done(tx.begin(info, env).await),
            Event::Chunk(chunk) => Answer::Done(tx.write(&chunk).await),
            Event::Unspool => {
                let Some(spool) = message.spool.as_ref() else {
                    return Answer::Done(Ok(()));
                };
                let mut reader = spool.reader();
                let size = self.config.limits.chunk_size;
                // Bounded: each turn reads at least one byte of a spool of known length.
                loop {
                    match reader.next_chunk(size).await {
                        Ok(Some(chunk)) => {
                            let limit = self.config.limits.backend_timeout;
                            match tokio::time::timeout(limit, tx.write(&chunk)).await {
                                Ok(Ok(())) => {}
                                Ok(Err(refusal)) => return Answer::Done(Err(refusal)),
                                Err(_elapsed) => return Answer::TimedOut,
                            }
                        }
                        Ok(None) => return Answer::Done(Ok(())),
                        Err(e) => {
                            log::warn!("session {}: cannot read the spool: {e}", info.id);
                            return Answer::Done(Err(reply::for_io_error(&e)));
                        }
                    }
                }
            }
            other => {
                log::error!("session {}: unexpected event {other:?}", info.id);
                Answer::Unanswerable
            }
        }
    }
}

/// What the driver holds for the transaction in progress.
struct Message<T, S> {
    tx: Option<T>,
    spool: Option<Spool>,
    scan: Option<S>,
}

impl<T, S> Default for Message<T, S> {
    fn default() -> Self {
        Message {
            tx: None,
            spool: None,
            scan: None,
        }
    }
}

/// A write to the peer failed: a peer that stopped reading (the write timed out) ends like a
/// silent one, anything else as a failed connection.
fn write_failed(session: &mut Session, e: &std::io::Error) {
    log::debug!("session {}: write failed: {e}", session.info().id);
    if e.kind() == std::io::ErrorKind::TimedOut {
        session.timed_out();
    } else {
        session.failed();
    }
}

/// The connection's stream and buffers.
struct Conn {
    io: BoxIo,
    input: BytesMut,
    output: Vec<u8>,
    /// Flush replies once this many bytes wait, even mid-batch.
    high_water: usize,
    /// How long a write may wait for the peer to read (the command timeout): a peer that never
    /// reads must not hold its session, and its connection slot, forever.
    write_timeout: Duration,
    /// A write timed out: nothing more is written, the session is ending.
    stalled: bool,
    /// When the command being received must be complete; `None` until a read starts.
    deadline: Option<tokio::time::Instant>,
    /// The last read filled the buffer: the peer has more to say.
    busy: bool,
}

impl Conn {
    /// Buffers a reply; flushes past the high-water mark.
    async fn queue(&mut self, reply: &crate::Reply) -> std::io::Result<()> {
        reply.write_to(&mut self.output);
        if self.output.len() >= self.high_water {
            self.flush().await
        } else {
            Ok(())
        }
    }

    /// Plans the next read: how much it may bring, and whether it goes through the worker
    /// thread's scratch buffer (`true`: a session waiting for a new command, with nothing
    /// buffered) or straight into the input buffer, made room for first (a partial command,
    /// message data). Small for an idle session, larger once the peer fills what it is given
    /// (pipelining, message data).
    fn plan(&mut self, session: &Session) -> (usize, bool) {
        let limits = &session.config().limits;
        let want = if session.in_data() {
            limits.read_size_data
        } else if self.busy {
            limits.read_size_busy
        } else {
            limits.read_size_idle
        }
        .max(64);
        if self.input.is_empty() && !session.in_data() {
            return (want, true);
        }
        let spare = self.input.capacity() - self.input.len();
        if spare < want / 4 {
            self.input.reserve(want);
        }
        (self.input.capacity() - self.input.len(), false)
    }

    /// Reads what the peer sent into `input`: up to `size` octets, through the scratch
    /// buffer when `lean` (see [`plan`](Conn::plan)).
    async fn read_some(&mut self, size: usize, lean: bool) -> std::io::Result<usize> {
        if lean {
            std::future::poll_fn(|cx| self.poll_lean(cx, size)).await
        } else {
            self.io.read_buf(&mut self.input).await
        }
    }

    /// One poll of a lean read: the stream reads into this worker thread's scratch buffer,
    /// and only what came is copied into `input`. While the peer is silent (the read is
    /// pending) the connection holds no buffer at all: the empty input and output buffers
    /// are given back, so an idle session costs its task and its socket, not its buffers.
    /// The stream keeps nothing of ours on `Pending` (the `AsyncRead` contract), so no input
    /// is lost between polls.
    fn poll_lean(&mut self, cx: &mut Context<'_>, size: usize) -> Poll<std::io::Result<usize>> {
        let poll = SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => {
                if scratch.len() < size {
                    scratch.resize(size, 0);
                }
                read_into(&mut self.io, cx, &mut scratch[..size], &mut self.input)
            }
            // Another lean read on this thread is inside its poll: cannot happen (a poll does
            // not poll another session), but a fresh buffer is correct too.
            Err(_) => read_into(&mut self.io, cx, &mut vec![0; size], &mut self.input),
        });
        if poll.is_pending() {
            self.release_idle();
        }
        poll
    }

    /// Gives back the buffers of a session that waits for its peer, when they are empty.
    fn release_idle(&mut self) {
        if self.input.is_empty() && self.input.capacity() > 0 {
            self.input = BytesMut::new();
        }
        if self.output.is_empty() && self.output.capacity() > 0 {
            self.output = Vec::new();
        }
    }

    /// The result of a read.
    fn took(&mut self, result: std::io::Result<usize>, spare: usize, session: &mut Session) {
        match result {
            Ok(0) => session.eof(),
            Ok(n) => self.busy = n == spare,
            Err(e) => {
                log::debug!("session {}: read failed: {e}", session.info().id);
                session.failed();
            }
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let result = if self.stalled {
            Err(std::io::ErrorKind::TimedOut.into())
        } else {
            let (io, output) = (&mut self.io, &self.output);
            let write = async move {
                io.write_all(output).await?;
                io.flush().await
            };
            match tokio::time::timeout(self.write_timeout, write).await {
                Ok(result) => result,
                Err(_elapsed) => {
                    self.stalled = true;
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the peer stopped reading",
                    ))
                }
            }
        };
        self.output.clear();
        if self.output.capacity() > self.high_water * 2 {
            self.output = Vec::new();
        }
        result
    }

    /// Closes the write side (a TLS close_notify may need the peer to read: bounded too).
    async fn shutdown(&mut self) {
        if !self.stalled {
            let _ = tokio::time::timeout(self.write_timeout, self.io.shutdown()).await;
        }
    }
}

thread_local! {
    /// The read buffer of lean reads on this thread (see [`Conn::poll_lean`]): one per worker
    /// thread instead of one per idle connection. It grows to the largest read size asked.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Polls `io` to read into `scratch`; appends what came to `input`.
fn read_into(
    io: &mut BoxIo,
    cx: &mut Context<'_>,
    scratch: &mut [u8],
    input: &mut BytesMut,
) -> Poll<std::io::Result<usize>> {
    let mut buf = ReadBuf::new(scratch);
    match Pin::new(&mut **io).poll_read(cx, &mut buf) {
        Poll::Ready(Ok(())) => {
            input.extend_from_slice(buf.filled());
            Poll::Ready(Ok(buf.filled().len()))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

fn log_summary(session: &Session, summary: &Summary) {
    let info = session.info();
    let helo = info.helo.as_ref().map(|h| h.to_string());
    log::info!(
        "session id={} peer={} helo={} tls={} mails={} rcpts={} rejected={} bytes={} errors={} end={}",
        info.id,
        info.peer,
        helo.as_deref().unwrap_or("-"),
        info.tls.as_ref().map_or("no", |t| t.version.as_str()),
        summary.stats.mails,
        summary.stats.rcpts,
        summary.stats.rejected_rcpts,
        summary.stats.bytes,
        summary.stats.errors,
        summary.end.as_str()
    );
}

/// A stream that reads nothing and swallows writes; stands in while the real one is being
/// upgraded to TLS.
mod empty {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    pub struct EmptyDuplex;

    pub fn empty_duplex() -> EmptyDuplex {
        EmptyDuplex
    }

    impl AsyncRead for EmptyDuplex {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for EmptyDuplex {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DynTransaction, Envelope, Limits, Peer, Refusal};

    struct Refuse;

    impl MailDispatch for Refuse {
        type Transaction = Box<dyn DynTransaction>;
        async fn open(&self, _: &SessionInfo, _: &Envelope) -> Result<Self::Transaction, Refusal> {
            Err(reply::DELIVERY_FAILED)
        }
    }

    fn conn(io: impl Io + 'static) -> Conn {
        Conn {
            io: Box::new(io),
            input: BytesMut::new(),
            output: Vec::new(),
            high_water: 16 * 1024,
            write_timeout: Duration::from_secs(300),
            stalled: false,
            deadline: None,
            busy: false,
        }
    }

    /// Issue 19: a connection whose peer is silent holds no read or write buffer; what the
    /// peer sends next is read whole, however it is split.
    #[tokio::test]
    async fn a_silent_peer_s_connection_holds_no_buffers() {
        let (server, mut client) = tokio::io::duplex(64 * 1024);
        let mut conn = conn(server);
        let session = Session::new(
            Arc::new(SessionConfig::default()),
            SessionInfo::new(Peer::Stdio, "mx.test"),
        );
        conn.queue(&reply::RECIPIENT_OK).await.expect("queued");
        conn.flush().await.expect("flushed");
        conn.input.reserve(4096);
        let (size, lean) = conn.plan(&session);
        assert!(lean && size >= 64, "{size} {lean}");
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(conn.poll_lean(&mut cx, size).is_pending());
        assert_eq!((conn.input.capacity(), conn.output.capacity()), (0, 0));
        client.write_all(b"NOOP\r\nNO").await.expect("written");
        let n = conn.read_some(size, lean).await.expect("read");
        assert_eq!((n, &conn.input[..]), (8, &b"NOOP\r\nNO"[..]));
        // A partial command is read straight into the input buffer, after what is there.
        conn.input.advance(6);
        let (_, lean) = conn.plan(&session);
        assert!(!lean);
        client.write_all(b"OP\r\n").await.expect("written");
        conn.read_some(size, lean).await.expect("read");
        assert_eq!(&conn.input[..], b"NOOP\r\n");
        let mut replies = vec![0; 64];
        let n = client.read(&mut replies).await.expect("replies");
        assert!(replies[..n].starts_with(b"250 "));
    }

    /// The per-transaction parts of a session are boxed: an idle session stays small (its
    /// size is part of every connection's task).
    #[test]
    fn an_idle_session_is_small() {
        let size = std::mem::size_of::<Session>();
        assert!(size <= 720, "Session is {size} bytes");
    }

    /// Regression: a peer that pipelines commands and never reads the replies used to hold its
    /// session (and connection slot) forever, the driver waiting to write with no timeout.
    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_times_out() {
        let limits = Limits {
            command_timeout: Duration::from_secs(300),
            ..Limits::default()
        };
        let config = SessionConfig {
            limits,
            ..SessionConfig::default()
        };
        let driver = Driver::new(Refuse, (), config);
        let (server, mut client) = tokio::io::duplex(1024);
        let writer = tokio::spawn(async move {
            let noops = b"NOOP\r\n".repeat(20_000);
            let _ = client.write_all(&noops).await;
        });
        let started = tokio::time::Instant::now();
        let run = driver.run(server, SessionInfo::new(Peer::Stdio, "mx.test"));
        let summary = tokio::time::timeout(Duration::from_secs(3600), run)
            .await
            .expect("the session ends");
        assert_eq!(summary.end, End::Timeout);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(300) && waited < Duration::from_secs(700));
        writer
            .await
            .expect("the writer ends once the session is gone");
    }

    /// A client trickling a command a byte at a time is dropped once the whole line has not
    /// arrived within the command timeout, though each byte came well within it.
    #[tokio::test(start_paused = true)]
    async fn a_trickled_command_times_out_as_a_whole() {
        let config = SessionConfig {
            limits: Limits {
                command_timeout: Duration::from_secs(10),
                ..Limits::default()
            },
            ..SessionConfig::default()
        };
        let driver = Driver::new(Refuse, (), config);
        let (server, mut client) = tokio::io::duplex(1024);
        let trickler = tokio::spawn(async move {
            for &b in b"NOOP NOOP NOOP NOOP\r\n" {
                if client.write_all(&[b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            let mut replies = Vec::new();
            let _ = client.read_to_end(&mut replies).await;
            replies
        });
        let started = tokio::time::Instant::now();
        let summary = driver
            .run(server, SessionInfo::new(Peer::Stdio, "mx.test"))
            .await;
        assert_eq!(summary.end, End::Timeout);
        assert!(started.elapsed() <= Duration::from_secs(12));
        let replies = trickler.await.expect("the client ends");
        assert!(replies.ends_with(b"421 4.4.2 Timeout, closing connection\r\n"));
    }
}

#[cfg(test)]
mod pump_tests {
    //! The driver as a pump, on paused time: every wait bounded, every chunk where it belongs.

    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::{
        Envelope, Limits, Outcomes, Peer, Recipient, Refusal, Scan, SessionInfo, Spool, Verdict,
    };

    /// Records what it is asked; hangs where told.
    #[derive(Clone, Default)]
    struct Probe {
        log: Arc<Mutex<Vec<String>>>,
        hang_at: Option<&'static str>,
        /// Each write takes this long.
        slow_write: Duration,
    }

    struct ProbeTx {
        probe: Probe,
        rcpts: usize,
    }

    impl Probe {
        fn note(&self, what: String) {
            self.log.lock().unwrap().push(what);
        }
        async fn maybe_hang(&self, step: &str) {
            if self.hang_at == Some(step) {
                std::future::pending::<()>().await;
            }
        }
        fn log(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }
    }

    impl MailDispatch for Probe {
        type Transaction = ProbeTx;
        async fn open(&self, _: &SessionInfo, _: &Envelope) -> Result<ProbeTx, Refusal> {
            self.maybe_hang("open").await;
            Ok(ProbeTx {
                probe: self.clone(),
                rcpts: 0,
            })
        }
    }

    impl Transaction for ProbeTx {
        async fn add_recipient(&mut self, _: &Recipient) -> Result<(), Refusal> {
            self.probe.maybe_hang("rcpt").await;
            self.rcpts += 1;
            Ok(())
        }
        async fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
            self.probe.note(format!(
                "write {} at {:?}",
                String::from_utf8_lossy(chunk).lines().last().unwrap_or(""),
                tokio::time::Instant::now()
            ));
            self.probe.maybe_hang("write").await;
            tokio::time::sleep(self.probe.slow_write).await;
            Ok(())
        }
        async fn commit(&mut self) -> Outcomes {
            self.probe.maybe_hang("commit").await;
            self.probe.note("commit".into());
            vec![Ok(()); self.rcpts]
        }
        async fn abort(&mut self) {
            self.probe.note("abort".into());
        }
    }

    fn config(limits: Limits) -> SessionConfig {
        SessionConfig {
            limits,
            ..SessionConfig::default()
        }
    }

    /// Runs a session: writes `script` (pieces with pauses), returns the replies.
    async fn talk<D: MailDispatch, G: Guard, C: DataCheck>(
        driver: Driver<D, G, C>,
        script: Vec<(&'static [u8], Duration)>,
    ) -> (Summary, String) {
        let (server, mut client) = tokio::io::duplex(64 * 1024);
        let writer = tokio::spawn(async move {
            for (bytes, pause) in script {
                tokio::time::sleep(pause).await;
                if client.write_all(bytes).await.is_err() {
                    break;
                }
            }
            let mut replies = Vec::new();
            let _ = client.read_to_end(&mut replies).await;
            String::from_utf8_lossy(&replies).into_owned()
        });
        let summary = driver
            .run(server, SessionInfo::new(Peer::Stdio, "mx.test"))
            .await;
        (summary, writer.await.unwrap_or_default())
    }

    const MAIL: &[u8] = b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n";

    /// The backend and guard timeout of the hung-step tests.
    const HUNG_AFTER: Duration = Duration::from_secs(5);

    /// Sends one message and a NOOP through `guard` and `probe` (the backend) with
    /// [`HUNG_AFTER`] as the backend timeout; checks the `451 4.4.1` and that the session
    /// went on to the NOOP and QUIT; how long the session waited.
    async fn one_message_past_a_hang<G: Guard>(probe: &Probe, guard: G, step: &str) -> Duration {
        let limits = Limits {
            backend_timeout: HUNG_AFTER,
            ..Limits::default()
        };
        let driver = Driver::new(probe.clone(), guard, config(limits));
        let started = tokio::time::Instant::now();
        let data: &[u8] = b"DATA\r\nSubject: s\r\n\r\nb\r\n.\r\nNOOP\r\nQUIT\r\n";
        let (summary, replies) =
            talk(driver, vec![(MAIL, Duration::ZERO), (data, Duration::ZERO)]).await;
        assert!(replies.contains("451 4.4.1 "), "{step}: {replies}");
        assert!(
            replies.ends_with("250 2.0.0 OK\r\n221 2.0.0 Bye\r\n"),
            "{step}: {replies}"
        );
        assert_eq!(summary.end, End::Quit, "{step}");
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(60), "{step}: {waited:?}");
        waited
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_backend_gets_451_4_4_1_and_the_session_goes_on() {
        for step in ["open", "rcpt", "write", "commit"] {
            let probe = Probe {
                hang_at: Some(step),
                ..Probe::default()
            };
            one_message_past_a_hang(&probe, (), step).await;
        }
    }

    /// A guard that never answers at one stage.
    struct HangingGuard(&'static str);

    impl HangingGuard {
        async fn maybe_hang(&self, stage: &str) -> Verdict {
            if self.0 == stage {
                std::future::pending::<()>().await;
            }
            Verdict::Accept
        }
    }

    impl Guard for HangingGuard {
        async fn connect(&self, _: &SessionInfo) -> Verdict {
            self.maybe_hang("connect").await
        }
        async fn helo(&self, _: &SessionInfo) -> Verdict {
            self.maybe_hang("helo").await
        }
        async fn mail(&self, _: &SessionInfo, _: &Envelope) -> Verdict {
            self.maybe_hang("mail").await
        }
        async fn rcpt(&self, _: &SessionInfo, _: &Envelope, _: &Recipient) -> Verdict {
            self.maybe_hang("rcpt").await
        }
        async fn data(&self, _: &SessionInfo, _: &Envelope) -> Verdict {
            self.maybe_hang("data").await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_guard_that_never_answers_gets_451_4_4_1_and_the_session_goes_on() {
        for stage in ["helo", "mail", "rcpt", "data"] {
            let probe = Probe::default();
            let waited = one_message_past_a_hang(&probe, HangingGuard(stage), stage).await;
            // Cut off after the backend timeout, not before.
            assert!(waited >= HUNG_AFTER, "{stage}: {waited:?}");
            // Nothing was delivered past a guard that did not answer.
            assert!(!probe.log().contains(&"commit".to_string()), "{stage}");
        }
        // At connect there is no session to go on with: 421 4.4.1, closed.
        let driver = Driver::new(
            Probe::default(),
            HangingGuard("connect"),
            config(Limits {
                backend_timeout: HUNG_AFTER,
                ..Limits::default()
            }),
        );
        let (_, replies) = talk(driver, vec![(b"EHLO x\r\n", Duration::ZERO)]).await;
        assert!(replies.starts_with("421 4.4.1 "), "{replies}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_starttls_client_is_dropped_after_the_handshake_timeout() {
        struct Never;
        impl TlsUpgrade for Never {
            fn upgrade(&self, _io: BoxIo) -> UpgradeFuture {
                Box::pin(std::future::pending())
            }
        }
        let limits = Limits {
            handshake_timeout: Duration::from_secs(7),
            ..Limits::default()
        };
        let driver = Driver::new(Probe::default(), (), config(limits)).with_tls(Arc::new(Never));
        let started = tokio::time::Instant::now();
        let (summary, replies) =
            talk(driver, vec![(b"EHLO x\r\nSTARTTLS\r\n", Duration::ZERO)]).await;
        assert!(
            replies.contains("220 2.0.0 Ready to start TLS"),
            "{replies}"
        );
        assert_eq!(summary.end, End::Failed);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(7) && waited < Duration::from_secs(60),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pausing_client_s_data_reaches_the_backend_before_it_goes_on() {
        let probe = Probe::default();
        let driver = Driver::new(probe.clone(), (), config(Limits::default()));
        let (_, replies) = talk(
            driver,
            vec![
                (MAIL, Duration::ZERO),
                (
                    b"DATA\r\nSubject: slow\r\n\r\nfirst part\r\n",
                    Duration::from_millis(10),
                ),
                (b"second part\r\n.\r\nQUIT\r\n", Duration::from_secs(100)),
            ],
        )
        .await;
        assert!(replies.contains("250 2.0.0 Message accepted"), "{replies}");
        let log = probe.log();
        let first = log
            .iter()
            .position(|l| l.starts_with("write first part"))
            .expect("flushed");
        let second = log
            .iter()
            .position(|l| l.starts_with("write second part"))
            .expect("rest");
        assert!(first < second, "{log:?}");
    }

    /// An end-of-data check through the driver: it sees every chunk, its field comes first,
    /// the spool streams after it, and a refusal delivers nothing.
    #[tokio::test(start_paused = true)]
    async fn checks_run_through_the_driver_with_the_spool() {
        struct Tag(bool);
        struct Seen(usize, bool);
        impl DataCheck for Tag {
            type Scan = Seen;
            fn scan(&self, _: &SessionInfo, _: &Envelope) -> Seen {
                Seen(0, self.0)
            }
        }
        impl Scan for Seen {
            fn update(&mut self, chunk: &[u8]) {
                self.0 += chunk.len();
            }
            async fn verdict(self, _: &SessionInfo, _: &Envelope, spool: &Spool) -> Verdict {
                assert_eq!(spool.len(), self.0 as u64);
                if self.1 {
                    Verdict::Reject(crate::reply::POLICY_REJECTED)
                } else {
                    Verdict::add_header(format!("X-Seen: {}", self.0))
                }
            }
        }
        for refuse in [false, true] {
            let probe = Probe::default();
            let driver =
                Driver::new(probe.clone(), (), config(Limits::default())).with_checks(Tag(refuse));
            let (_, replies) = talk(
                driver,
                vec![
                    (MAIL, Duration::ZERO),
                    (
                        b"DATA\r\nSubject: checked\r\n\r\nbody\r\n.\r\nQUIT\r\n",
                        Duration::ZERO,
                    ),
                ],
            )
            .await;
            let log = probe.log();
            if refuse {
                assert!(replies.contains("550 5.7.1 "), "{replies}");
                assert!(!log.iter().any(|l| l.starts_with("write")), "{log:?}");
            } else {
                assert!(replies.contains("250 2.0.0 Message accepted"), "{replies}");
                assert!(log.iter().any(|l| l.starts_with("write body")), "{log:?}");
                assert_eq!(log.last().map(String::as_str), Some("commit"));
            }
        }
    }
    /// A spooled message reaches the backend in many writes after the verdict: the backend
    /// timeout bounds each write, not the sum (a slow downstream gets a large message).
    #[tokio::test(start_paused = true)]
    async fn the_backend_timeout_bounds_each_write_of_a_spooled_message() {
        struct Spools;
        impl DataCheck for Spools {
            type Scan = ();
            fn scan(&self, _: &SessionInfo, _: &Envelope) {}
        }
        let probe = Probe {
            slow_write: Duration::from_secs(3),
            ..Probe::default()
        };
        let limits = Limits {
            backend_timeout: HUNG_AFTER,
            chunk_size: 1024,
            ..Limits::default()
        };
        let driver = Driver::new(probe.clone(), (), config(limits)).with_checks(Spools);
        let mut data = b"DATA\r\nSubject: big\r\n\r\n".to_vec();
        data.extend(std::iter::repeat_n(b"0123456789abcdef\r\n".as_slice(), 300).flatten());
        data.extend_from_slice(b".\r\nQUIT\r\n");
        let data: &'static [u8] = data.leak();
        let started = tokio::time::Instant::now();
        let (_, replies) = talk(driver, vec![(MAIL, Duration::ZERO), (data, Duration::ZERO)]).await;
        assert!(replies.contains("250 2.0.0 Message accepted"), "{replies}");
        let writes = probe
            .log()
            .iter()
            .filter(|l| l.starts_with("write"))
            .count();
        assert!(writes >= 5, "{writes} writes");
        assert!(started.elapsed() > HUNG_AFTER, "{:?}", started.elapsed());
    }
}

#[cfg(test)]
mod observe_tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::observe::{Limit, Observation, Observer, Origin};
    use crate::{Envelope, Limits, Peer, Recipient, SessionInfo, Verdict};

    /// Records every observation as a line.
    #[derive(Default)]
    struct Record(Mutex<Vec<String>>);

    impl Observer for Record {
        fn observe(&self, _: &SessionInfo, what: &Observation<'_>) {
            let line = match what {
                Observation::Start => "start".to_string(),
                Observation::Command(c) => format!("command {c}"),
                Observation::Reply(r) => format!("reply {}", r.code()),
                Observation::Refused { refusal, origin } => {
                    format!("refused {} {}", origin.as_str(), refusal.code())
                }
                Observation::Limit(l) => format!("limit {}", l.as_str()),
                Observation::Content { size, sha256 } => {
                    let h = sha256.unwrap_or_default();
                    format!("content {size} {:02x}{:02x}", h[0], h[1])
                }
                Observation::MessageRefused { origin, .. } => {
                    format!("message refused {}", origin.as_str())
                }
                Observation::Delivered { outcomes, .. } => {
                    format!("delivered {}", outcomes.len())
                }
                Observation::End(s) => format!("end {}", s.end.as_str()),
                other => format!("{other:?}"),
            };
            self.0.lock().unwrap().push(line);
        }
        fn wants_commands(&self) -> bool {
            true
        }
    }

    struct Sink;
    struct SinkTx(usize);
    impl MailDispatch for Sink {
        type Transaction = SinkTx;
        async fn open(&self, _: &SessionInfo, _: &Envelope) -> Result<SinkTx, crate::Refusal> {
            Ok(SinkTx(0))
        }
    }
    impl Transaction for SinkTx {
        async fn add_recipient(&mut self, _: &Recipient) -> Result<(), crate::Refusal> {
            self.0 += 1;
            Ok(())
        }
        async fn write(&mut self, _: &[u8]) -> Result<(), crate::Refusal> {
            Ok(())
        }
        async fn commit(&mut self) -> crate::Outcomes {
            vec![Ok(()); self.0]
        }
    }

    struct NoBob;
    impl Guard for NoBob {
        async fn rcpt(&self, _: &SessionInfo, _: &Envelope, r: &Recipient) -> Verdict {
            if r.address.starts_with("bob") {
                Verdict::Reject(crate::reply::RELAY_DENIED)
            } else {
                Verdict::Accept
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_observer_sees_commands_refusals_with_their_origin_limits_and_deliveries() {
        let record = Arc::new(Record::default());
        let config = SessionConfig {
            limits: Limits {
                max_message_size: 100,
                ..Limits::default()
            },
            ..SessionConfig::default()
        };
        let driver = Driver::new(Sink, NoBob, config).with_observer(record.clone());
        let (server, mut client) = tokio::io::duplex(64 * 1024);
        let script = b"EHLO x\r\nFOO\r\nMAIL FROM:<a@b>\r\nRCPT TO:<bob@d>\r\nRCPT TO:<c@d>\r\n\
            DATA\r\nSubject: s\r\n\r\nshort\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n";
        let big = "x".repeat(300);
        let writer = tokio::spawn(async move {
            client.write_all(script).await.ok();
            client.write_all(big.as_bytes()).await.ok();
            client.write_all(b"\r\n.\r\nQUIT\r\n").await.ok();
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.ok();
        });
        driver
            .run(server, SessionInfo::new(Peer::Stdio, "mx.test"))
            .await;
        writer.await.ok();
        let seen = record.0.lock().unwrap().clone();
        let has = |line: &str| seen.iter().any(|l| l == line);
        assert_eq!(seen.first().map(String::as_str), Some("start"));
        assert!(has("command EHLO x") && has("command FOO"), "{seen:?}");
        assert!(has("refused command 500"), "{seen:?}");
        assert!(has("refused rcpt 550"), "{seen:?}");
        assert!(has("delivered 1"), "{seen:?}");
        assert!(
            seen.iter().any(|l| l.starts_with("content 21 ")),
            "{seen:?}"
        );
        assert!(
            has(&format!("limit {}", Limit::MessageSize.as_str())),
            "{seen:?}"
        );
        assert!(
            has(&format!("refused {} 552", Origin::Data.as_str())),
            "{seen:?}"
        );
        assert_eq!(seen.last().map(String::as_str), Some("end quit"));
        // The command note comes before its reply.
        let foo = seen.iter().position(|l| l == "command FOO").unwrap();
        assert_eq!(seen[foo + 1], "refused command 500");
        assert_eq!(seen[foo + 2], "reply 500");
    }
}
