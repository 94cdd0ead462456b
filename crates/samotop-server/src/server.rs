//! [`Server`]: listeners, limits, PROXY protocol, TLS and shutdown around the core's driver.

use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use samotop_core::{
    DataCheck, Driver, Guard, Limits, MailDispatch, Observer, Peer, Protocol, SessionConfig,
    SessionInfo, Summary,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::limits::{ConnLimits, ServerLimits};
use crate::listen::{self, Kind, ListenAddr, Shared};
use crate::proxy_protocol::ProxyPolicy;
use crate::shutdown;
use crate::tls::{Tls, TlsError};

/// Why a [`Server`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A listener could not be bound (the address is in use, a permission, a live server on
    /// the Unix socket); the text names the address.
    #[error("{0}")]
    Bind(String),
    /// No listener was given.
    #[error("no listener: give one with smtp(), smtps() or lmtp()")]
    NoListener,
    /// An implicit-TLS listener without TLS.
    #[error("an smtps listener needs TLS (a certificate and key)")]
    SmtpsWithoutTls,
    /// `require_tls` without TLS.
    #[error("require_tls needs TLS (a certificate and key)")]
    RequireTlsWithoutTls,
    /// TLS could not be set up.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
}

/// The listeners to bind, in order.
type Listeners = Vec<(ListenAddr, Kind)>;

/// A mail server: the core's [`Driver`] behind listeners, with every limit on by default.
///
/// Give it a [`MailDispatch`] (where mail goes), optionally a [`Guard`] (policy at connect,
/// HELO, MAIL, RCPT, DATA) and a [`DataCheck`] (policy on the whole message), listeners,
/// TLS; then [`run`](Server::run) it until SIGTERM, or [`bind`](Server::bind) it and drive
/// it yourself. What it does for each connection:
///
/// * the connection limit ([`ServerLimits::max_connections`], `421 4.3.2`) and the per-IP
///   limit ([`ServerLimits::max_connections_per_ip`], IPv6 per /64, `421 4.7.0`);
/// * the PROXY protocol v1/v2 from [`proxy_protocol_from`](Server::proxy_protocol_from)
///   networks (HAProxy), whose client address then stands for the peer everywhere;
/// * implicit TLS on `smtps` listeners and STARTTLS on `smtp` ones (rustls, TLS 1.2/1.3),
///   the handshake bounded by [`Limits::handshake_timeout`], the certificate reloaded on
///   SIGHUP;
/// * the session, with [`Limits`] (timeouts, sizes, errors; every one on);
/// * on SIGTERM/SIGINT: no new connections, idle sessions get `421 4.3.2`, sessions inside a
///   message get [`ServerLimits::shutdown_grace`] to finish.
///
/// ```no_run
/// use samotop_delivery::{Layout, Maildir};
/// use samotop_server::{Server, Tls, TlsSource};
///
/// # async fn main_() -> Result<(), samotop_server::Error> {
/// let tls = Tls::load(TlsSource::Files { cert: "cert.pem".into(), key: "key.pem".into() })?;
/// Server::new(Maildir::new("/var/mail/inbox", Layout::Single))
///     .name("mx.example.org")
///     .smtp("0.0.0.0:25".parse().map_err(samotop_server::Error::Bind)?)
///     .tls(tls)
///     .run()
///     .await
/// # }
/// ```
pub struct Server<D, G = (), C = ()> {
    dispatch: D,
    guard: G,
    checks: C,
    name: String,
    listeners: Listeners,
    session: SessionConfig,
    limits: ServerLimits,
    tls: Option<Tls>,
    proxy_from: Vec<IpNet>,
    banner_delay: Duration,
    observer: Option<Arc<dyn Observer>>,
}

impl<D: MailDispatch> Server<D, (), ()> {
    /// A server that delivers to `dispatch`, with no guard, no check, no listener yet, named
    /// `localhost` and the default limits.
    pub fn new(dispatch: D) -> Self {
        Server {
            dispatch,
            guard: (),
            checks: (),
            name: "localhost".into(),
            listeners: Vec::new(),
            session: SessionConfig::default(),
            limits: ServerLimits::default(),
            tls: None,
            proxy_from: Vec::new(),
            banner_delay: Duration::ZERO,
            observer: None,
        }
    }
}

impl<D: MailDispatch, G: Guard, C: DataCheck> Server<D, G, C> {
    /// Asks this guard (a [`Guards`](samotop_core::Guards) stack, or your own) at every step.
    pub fn guard<G2: Guard>(self, guard: G2) -> Server<D, G2, C> {
        Server {
            dispatch: self.dispatch,
            guard,
            checks: self.checks,
            name: self.name,
            listeners: self.listeners,
            session: self.session,
            limits: self.limits,
            tls: self.tls,
            proxy_from: self.proxy_from,
            banner_delay: self.banner_delay,
            observer: self.observer,
        }
    }

    /// Runs these end-of-data checks on every message (each is spooled first; see
    /// [`DataCheck`]).
    pub fn checks<C2: DataCheck>(self, checks: C2) -> Server<D, G, C2> {
        Server {
            dispatch: self.dispatch,
            guard: self.guard,
            checks,
            name: self.name,
            listeners: self.listeners,
            session: self.session,
            limits: self.limits,
            tls: self.tls,
            proxy_from: self.proxy_from,
            banner_delay: self.banner_delay,
            observer: self.observer,
        }
    }

    /// Our host name: the banner, the EHLO reply, `Received:` and the authserv-id of
    /// `Authentication-Results`. Default `localhost`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// An SMTP listener (STARTTLS when TLS is set).
    pub fn smtp(self, addr: ListenAddr) -> Self {
        self.listen(addr, Kind::Smtp)
    }

    /// An SMTP listener inside implicit TLS (port 465); needs [`tls`](Server::tls).
    pub fn smtps(self, addr: ListenAddr) -> Self {
        self.listen(addr, Kind::Smtps)
    }

    /// An LMTP listener.
    pub fn lmtp(self, addr: ListenAddr) -> Self {
        self.listen(addr, Kind::Lmtp)
    }

    /// A listener of any kind.
    pub fn listen(mut self, addr: ListenAddr, kind: Kind) -> Self {
        self.listeners.push((addr, kind));
        self
    }

    /// TLS: STARTTLS on SMTP listeners, and the certificate of `smtps` ones.
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The sessions' limits (default [`Limits::default`]: every one on).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.session.limits = limits;
        self
    }

    /// The server's own limits (default [`ServerLimits::default`]).
    pub fn server_limits(mut self, limits: ServerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Connections from these networks must open with a PROXY v1/v2 header (HAProxy); the
    /// client it names is the peer from then on. Default: none.
    pub fn proxy_protocol_from(mut self, networks: Vec<IpNet>) -> Self {
        self.proxy_from = networks;
        self
    }

    /// Waits this long before the banner; a client that talks first gets `554 5.5.1` and is
    /// disconnected (Postfix's postscreen pregreet test). Default zero.
    pub fn banner_delay(mut self, delay: Duration) -> Self {
        self.banner_delay = delay;
        self
    }

    /// Refuses MAIL before STARTTLS (`530 5.7.0`); needs [`tls`](Server::tls).
    pub fn require_tls(mut self, require: bool) -> Self {
        self.session.require_tls = require;
        self
    }

    /// Tells this observer what every session and connection does (metrics, transcripts;
    /// several: [`Observers`](samotop_core::Observers)). Default none.
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Stores messages with bare CR or LF as they are instead of refusing them (`550
    /// 5.6.0`). Default false.
    pub fn accept_bare_newlines(mut self, accept: bool) -> Self {
        self.session.accept_bare_newlines = accept;
        self
    }

    fn drivers(self, stop: &watch::Receiver<bool>) -> Result<(Shared<D, G, C>, Listeners), Error> {
        if self.session.require_tls && self.tls.is_none() {
            return Err(Error::RequireTlsWithoutTls);
        }
        let dispatch = Arc::new(self.dispatch);
        let guard = Arc::new(self.guard);
        let checks = Arc::new(self.checks);
        let driver = |protocol| {
            let config = SessionConfig {
                protocol,
                ..self.session.clone()
            };
            let mut d = Driver::new(dispatch.clone(), guard.clone(), config)
                .with_checks(checks.clone())
                .with_banner_delay(self.banner_delay)
                .with_shutdown(stop.clone());
            if let Some(tls) = &self.tls {
                d = d.with_tls(Arc::new(tls.clone()));
            }
            if let Some(o) = &self.observer {
                d = d.with_observer(o.clone());
            }
            d
        };
        let shared = Shared {
            smtp: driver(Protocol::Smtp),
            lmtp: driver(Protocol::Lmtp),
            tls: self.tls.clone(),
            limits: ConnLimits::new(
                self.limits.max_connections,
                self.limits.max_connections_per_ip,
                self.limits.per_ip_exempt.clone(),
            ),
            proxy: ProxyPolicy::new(self.proxy_from.clone()),
            proxy_timeout: self.limits.proxy_header_timeout,
            handshake_timeout: self.session.limits.handshake_timeout,
            name: self.name.clone(),
            observer: self.observer.clone(),
        };
        Ok((shared, self.listeners))
    }

    /// Binds every listener and starts accepting. Returns once they all listen (or with the
    /// first that cannot: nothing is left bound).
    ///
    /// # Errors
    ///
    /// [`Error::NoListener`], [`Error::Bind`], [`Error::SmtpsWithoutTls`],
    /// [`Error::RequireTlsWithoutTls`].
    pub async fn bind(self) -> Result<Running, Error> {
        if self.listeners.is_empty() {
            return Err(Error::NoListener);
        }
        if self.tls.is_none() && self.listeners.iter().any(|(_, k)| *k == Kind::Smtps) {
            return Err(Error::SmtpsWithoutTls);
        }
        let grace = self.limits.shutdown_grace;
        let (stop, stopped) = watch::channel(false);
        let (shared, listeners) = self.drivers(&stopped)?;
        let mut sockets = Vec::new();
        for (addr, kind) in &listeners {
            let socket = listen::bind(addr).await.map_err(Error::Bind)?;
            log::info!("listening for {} on {}", kind.as_str(), socket.local_addr());
            sockets.push((socket, *kind));
        }
        let shared = Arc::new(shared);
        let mut addrs = Vec::new();
        let mut tasks = Vec::new();
        for (socket, kind) in sockets {
            addrs.push((kind, socket.local_addr()));
            tasks.push(tokio::spawn(listen::serve(
                socket,
                kind,
                shared.clone(),
                stopped.clone(),
            )));
        }
        Ok(Running {
            addrs,
            stop,
            tasks,
            limits: shared.limits.clone(),
            tls: shared.tls.clone(),
            grace,
        })
    }

    /// Binds, serves until SIGTERM or SIGINT (reloading TLS on SIGHUP), then shuts down
    /// gracefully.
    ///
    /// # Errors
    ///
    /// As [`bind`](Server::bind).
    pub async fn run(self) -> Result<(), Error> {
        let running = self.bind().await?;
        running.until_signal().await;
        running.shutdown().await;
        Ok(())
    }

    /// Serves one SMTP session on standard input and output (inetd, pipes), then returns.
    ///
    /// # Errors
    ///
    /// [`Error::RequireTlsWithoutTls`].
    pub async fn serve_stdio(self) -> Result<Summary, Error> {
        let (_stop, stopped) = watch::channel(false);
        let name = self.name.clone();
        let (shared, _) = self.drivers(&stopped)?;
        let io = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
        Ok(shared
            .smtp
            .run(io, SessionInfo::new(Peer::Stdio, name))
            .await)
    }
}

/// A bound [`Server`]: its listeners accept until [`shutdown`](Running::shutdown).
pub struct Running {
    addrs: Vec<(Kind, ListenAddr)>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    limits: ConnLimits,
    tls: Option<Tls>,
    grace: Duration,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// Each listener and the address it listens on (a TCP port 0 shows the port chosen).
    pub fn local_addrs(&self) -> &[(Kind, ListenAddr)] {
        &self.addrs
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.limits.open()
    }

    /// Reads the TLS certificate and key again (what SIGHUP does). New handshakes use them;
    /// on error the old ones stay.
    ///
    /// # Errors
    ///
    /// The files cannot be read, or do not fit.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        match &self.tls {
            Some(tls) => tls.reload(),
            None => Ok(()),
        }
    }

    /// Returns on SIGTERM or SIGINT; reloads TLS on each SIGHUP meanwhile.
    pub async fn until_signal(&self) {
        shutdown::wait_for_signal(self.tls.as_ref()).await;
    }

    /// Stops accepting, closes idle sessions (`421 4.3.2`), and waits up to the grace period
    /// for the others to finish.
    pub async fn shutdown(self) {
        log::info!(
            "shutting down: no new connections, {}s grace for sessions in flight",
            self.grace.as_secs_f64()
        );
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        shutdown::drain(&self.limits, self.grace).await;
        log::info!("stopped");
    }
}
