//! The tokio driver: runs a [`Session`] over any `AsyncRead + AsyncWrite`.
//!
//! It owns the socket, the buffers and the timer; it asks the guards and the dispatch what the
//! session asks; it decides no protocol (every reply comes from the session).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::dispatch::{MailDispatch, Transaction};
use crate::envelope::{SessionInfo, TlsInfo};
use crate::guard::{Guard, Verdict};
use crate::reply;
use crate::session::{Answer, End, Event, Session, SessionConfig, Stats};
use crate::trace;

/// A byte stream a session can run over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A boxed [`Io`], so that STARTTLS can swap a plain stream for a TLS one.
pub type BoxIo = Box<dyn Io>;

/// The future returned by [`TlsUpgrade::upgrade`].
pub type UpgradeFuture = Pin<Box<dyn Future<Output = std::io::Result<(BoxIo, TlsInfo)>> + Send>>;

/// Turns a plain stream into a TLS one (server side). The server binary implements it with
/// rustls; the core does not depend on a TLS library.
pub trait TlsUpgrade: Send + Sync {
    /// Runs the server handshake on `io`.
    fn upgrade(&self, io: BoxIo) -> UpgradeFuture;
}

/// Flush replies once this many bytes are waiting, even mid-batch (a client that pipelines
/// thousands of commands gets its replies in bounded pieces).
const OUTPUT_HIGH_WATER: usize = 16 * 1024;

/// How a session ended, with its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Counters.
    pub stats: Stats,
    /// Why it ended.
    pub end: End,
}

/// Runs sessions: the dispatch, the guards, the session configuration and the TLS upgrade,
/// shared by every connection of a listener.
///
/// ```no_run
/// # async fn example() -> std::io::Result<()> {
/// use std::sync::Arc;
/// use samotop_core::{Driver, Peer, SessionConfig, SessionInfo};
/// # struct Null;
/// # impl samotop_core::MailDispatch for Null {
/// #     type Transaction = Box<dyn samotop_core::DynTransaction>;
/// #     async fn open(&self, _: &SessionInfo, _: &samotop_core::Envelope)
/// #         -> Result<Self::Transaction, samotop_core::Reply> { Err(samotop_core::reply::DELIVERY_FAILED) }
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
pub struct Driver<D, G> {
    dispatch: D,
    guard: G,
    config: Arc<SessionConfig>,
    tls: Option<Arc<dyn TlsUpgrade>>,
    banner_delay: Duration,
    shutdown: Option<watch::Receiver<bool>>,
}

impl<D: MailDispatch, G: Guard> Driver<D, G> {
    /// A driver with no TLS, no banner delay and no shutdown signal.
    pub fn new(dispatch: D, guard: G, config: SessionConfig) -> Self {
        Driver {
            dispatch,
            guard,
            config: Arc::new(config),
            tls: None,
            banner_delay: Duration::ZERO,
            shutdown: None,
        }
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
        let mut conn = Conn {
            io: Box::new(io),
            input: BytesMut::new(),
            output: Vec::new(),
            write_timeout: self.config.limits.command_timeout,
            stalled: false,
            deadline: None,
            busy: false,
        };
        let mut session = Session::new(self.config.clone(), info);
        let mut tx: Option<D::Transaction> = None;
        let mut shutdown = self.shutdown.clone();

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
                match event {
                    Event::Reply(r) => {
                        log::trace!("session {}: S: {r}", session.info().id);
                        r.write_to(&mut conn.output);
                        if conn.output.len() >= OUTPUT_HIGH_WATER {
                            if let Err(e) = conn.flush().await {
                                write_failed(&mut session, &e);
                            }
                        }
                    }
                    Event::Close => break 'session,
                    Event::StartTls => {
                        if let Err(e) = self.start_tls(&mut conn, &mut session).await {
                            log::info!("session {}: TLS handshake failed: {e}", session.info().id);
                            session.failed();
                        }
                    }
                    Event::Abort => {
                        if let Some(mut t) = tx.take() {
                            t.abort().await;
                        }
                    }
                    event => {
                        let answer = self.answer(event, &session, &mut tx).await;
                        session.resolve(answer);
                    }
                }
            }
            if session.is_closed() {
                break;
            }
            if !conn.input.is_empty() {
                let used = session.feed(&conn.input);
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

        if let Some(mut t) = tx.take() {
            t.abort().await;
        }
        let _ = conn.flush().await;
        conn.shutdown().await;
        let summary = Summary {
            stats: session.stats(),
            end: session.end(),
        };
        log_summary(&session, &summary);
        summary
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
        // Small for an idle session (memory per connection), larger once the peer fills what
        // it is given (pipelining, message data).
        let want = if session.in_data() {
            64 * 1024
        } else if conn.busy {
            16 * 1024
        } else {
            1024
        };
        let spare = conn.input.capacity() - conn.input.len();
        if spare < want / 4 {
            conn.input.reserve(want);
        }
        let spare = conn.input.capacity() - conn.input.len();
        // Message data: each read must come within the data timeout (RFC 5321 4.5.3.2.6).
        // Commands: the whole line must, so a client trickling a byte at a time cannot hold
        // its session past the command timeout.
        let now = tokio::time::Instant::now();
        let deadline = if session.in_data() {
            now + session.read_timeout()
        } else {
            *conn.deadline.get_or_insert(now + session.read_timeout())
        };
        let read = tokio::time::timeout_at(deadline, conn.io.read_buf(&mut conn.input));
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
                Ok(Ok(0)) => session.eof(),
                Ok(Ok(n)) => conn.busy = n == spare,
                Ok(Err(e)) => {
                    log::debug!("session {}: read failed: {e}", session.info().id);
                    session.failed();
                }
            },
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
        let (io, info) = tls.upgrade(plain).await?;
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

    /// Asks the guards and the dispatch the question of an event.
    async fn answer(
        &self,
        event: Event,
        session: &Session,
        tx: &mut Option<D::Transaction>,
    ) -> Answer {
        let info = session.info();
        match event {
            Event::Connect => Answer::Verdict(self.guard.connect(info).await),
            Event::Helo => Answer::Verdict(self.guard.helo(info).await),
            Event::Mail => {
                let Some(env) = session.envelope() else {
                    return Answer::Verdict(Verdict::Reject(reply::DELIVERY_FAILED));
                };
                let verdict = self.guard.mail(info, env).await;
                if !accepts(&verdict) {
                    return Answer::Verdict(verdict);
                }
                if let Some(mut old) = tx.take() {
                    old.abort().await;
                }
                match self.dispatch.open(info, env).await {
                    Ok(t) => {
                        *tx = Some(t);
                        Answer::Verdict(verdict)
                    }
                    Err(reply) => Answer::Verdict(Verdict::Reject(reply)),
                }
            }
            Event::Rcpt(rcpt) => {
                let (Some(env), Some(t)) = (session.envelope(), tx.as_mut()) else {
                    return Answer::Verdict(Verdict::Reject(reply::DELIVERY_FAILED));
                };
                let verdict = self.guard.rcpt(info, env, &rcpt).await;
                if !accepts(&verdict) {
                    return Answer::Verdict(verdict);
                }
                match t.add_recipient(&rcpt).await {
                    Ok(()) => Answer::Verdict(verdict),
                    Err(reply) => Answer::Verdict(Verdict::Reject(reply)),
                }
            }
            Event::DataStart => {
                let (Some(env), Some(t)) = (session.envelope(), tx.as_mut()) else {
                    return Answer::Verdict(Verdict::Reject(reply::DELIVERY_FAILED));
                };
                let verdict = self.guard.data(info, env).await;
                if !accepts(&verdict) {
                    return Answer::Verdict(verdict);
                }
                if let Err(reply) = t.begin(info, env).await {
                    return Answer::Verdict(Verdict::Reject(reply));
                }
                // Fields this guard verdict adds go straight into the trace block, which is
                // written now; the session is answered `Accept` so it adds them nowhere else.
                let extra = match &verdict {
                    Verdict::AddHeader(h) => Some(h.as_str()),
                    _ => None,
                };
                let headers = trace::trace_headers(info, env, extra, SystemTime::now());
                match t.write(headers.as_bytes()).await {
                    Ok(()) => Answer::Verdict(Verdict::Accept),
                    Err(reply) => Answer::Verdict(Verdict::Reject(reply)),
                }
            }
            Event::Chunk(chunk) => match tx.as_mut() {
                Some(t) => Answer::Written(t.write(&chunk).await),
                None => Answer::Written(Err(reply::DELIVERY_FAILED)),
            },
            Event::Commit => match tx.take() {
                Some(mut t) => Answer::Committed(t.commit().await),
                None => Answer::Committed(Vec::new()),
            },
            other => {
                log::error!("session {}: unexpected event {other:?}", info.id);
                Answer::Verdict(Verdict::Reject(reply::DELIVERY_FAILED))
            }
        }
    }
}

fn accepts(verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::Accept | Verdict::AddHeader(_))
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
        if self.output.capacity() > OUTPUT_HIGH_WATER * 2 {
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

fn log_summary(session: &Session, summary: &Summary) {
    let info = session.info();
    let helo = info.helo.as_ref().map(|h| h.to_string());
    log::info!(
        "session id={} peer={} helo={} tls={} mails={} rcpts={} bytes={} errors={} end={}",
        info.id,
        info.peer,
        helo.as_deref().unwrap_or("-"),
        info.tls.as_ref().map_or("no", |t| t.version.as_str()),
        summary.stats.mails,
        summary.stats.rcpts,
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
    use crate::{DynTransaction, Envelope, Limits, Peer, Reply};

    struct Refuse;

    impl MailDispatch for Refuse {
        type Transaction = Box<dyn DynTransaction>;
        async fn open(&self, _: &SessionInfo, _: &Envelope) -> Result<Self::Transaction, Reply> {
            Err(reply::DELIVERY_FAILED)
        }
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
