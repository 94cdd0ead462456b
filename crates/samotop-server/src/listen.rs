//! Listeners: TCP and Unix sockets for SMTP, implicit-TLS SMTP and LMTP; one task per
//! connection.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use samotop_core::{
    DataCheck, Driver, Guard, Limit, MailDispatch, Observation, Observer, Peer, SessionInfo,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use crate::limits::ConnLimits;
use crate::proxy_protocol::ProxyPolicy;
use crate::tls::Tls;

/// Where a listener listens: `host:port` or `unix:PATH`, as on the command line.
///
/// ```
/// use samotop_server::ListenAddr;
/// assert_eq!("127.0.0.1:25".parse(), Ok(ListenAddr::Tcp("127.0.0.1:25".into())));
/// assert_eq!("unix:/run/s.sock".parse(), Ok(ListenAddr::Unix("/run/s.sock".into())));
/// assert!("25".parse::<ListenAddr>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `host:port` (port 0: any free port, see [`Running::local_addrs`](crate::Running)).
    Tcp(String),
    /// `unix:PATH`. A stale socket file left by a dead server is replaced; a live one is not.
    Unix(PathBuf),
}

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a path, e.g. unix:/run/samotop.sock".into());
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(ListenAddr::Tcp(s.to_string()))
            }
            _ => Err(format!("'{s}' is not host:port or unix:PATH")),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => f.write_str(a),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// SMTP, with STARTTLS when TLS is configured.
    Smtp,
    /// SMTP inside implicit TLS (port 465, RFC 8314).
    Smtps,
    /// LMTP (RFC 2033).
    Lmtp,
}

impl Kind {
    /// `smtp`, `smtps` or `lmtp`, for logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Smtp => "smtp",
            Kind::Smtps => "smtps",
            Kind::Lmtp => "lmtp",
        }
    }
}

/// A bound socket.
pub(crate) enum Socket {
    Tcp(TcpListener),
    /// The path is removed when the listener ends.
    Unix(UnixListener, PathBuf),
}

impl Socket {
    /// The address it listens on, with the port the system chose for port 0.
    pub(crate) fn local_addr(&self) -> ListenAddr {
        match self {
            Socket::Tcp(l) => match l.local_addr() {
                Ok(a) => ListenAddr::Tcp(a.to_string()),
                Err(_) => ListenAddr::Tcp("?".into()),
            },
            Socket::Unix(_, path) => ListenAddr::Unix(path.clone()),
        }
    }
}

/// The driver of each protocol, and everything else a connection task needs.
pub(crate) struct Shared<D, G, C> {
    pub smtp: Driver<Arc<D>, Arc<G>, Arc<C>>,
    pub lmtp: Driver<Arc<D>, Arc<G>, Arc<C>>,
    pub tls: Option<Tls>,
    pub limits: ConnLimits,
    pub proxy: ProxyPolicy,
    pub proxy_timeout: Duration,
    pub handshake_timeout: Duration,
    pub name: String,
    pub observer: Option<Arc<dyn Observer>>,
}

impl<D, G, C> Shared<D, G, C> {
    fn observe(&self, info: &SessionInfo, what: &Observation<'_>) {
        if let Some(o) = &self.observer {
            o.observe(info, what);
        }
    }
}

/// Binds a listener address, with a clear error.
pub(crate) async fn bind(addr: &ListenAddr) -> Result<Socket, String> {
    match addr {
        ListenAddr::Tcp(a) => bind_tcp(a)
            .await
            .map(Socket::Tcp)
            .map_err(|e| format!("cannot listen on {a}: {e}")),
        ListenAddr::Unix(path) => bind_unix(path).await,
    }
}

/// Connections the kernel queues before we accept them: bursts of connects must not overflow
/// the standard library's default of 128.
const BACKLOG: u32 = 1024;

async fn bind_tcp(addr: &str) -> std::io::Result<TcpListener> {
    let addr = tokio::net::lookup_host(addr).await?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no address")
    })?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

async fn bind_unix(path: &Path) -> Result<Socket, String> {
    if path.exists() {
        // A live server answers on it: refuse. A stale socket file: replace it.
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(format!(
                "cannot listen on unix:{}: another server is using it",
                path.display()
            ));
        }
        let meta = std::fs::symlink_metadata(path)
            .map_err(|e| format!("cannot listen on unix:{}: {e}", path.display()))?;
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(format!(
                "cannot listen on unix:{}: the path exists and is not a socket",
                path.display()
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
    }
    UnixListener::bind(path)
        .map(|l| Socket::Unix(l, path.to_path_buf()))
        .map_err(|e| format!("cannot listen on unix:{}: {e}", path.display()))
}

/// Accepts connections until shutdown; each runs in its own task.
pub(crate) async fn serve<D: MailDispatch, G: Guard, C: DataCheck>(
    socket: Socket,
    kind: Kind,
    shared: Arc<Shared<D, G, C>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = accept(&socket) => a,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok(conn) => {
                let shared = shared.clone();
                tokio::spawn(async move { handle(conn, kind, shared).await });
            }
            Err(e) => {
                // EMFILE and friends: log, breathe, go on.
                log::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    if let Socket::Unix(_, path) = &socket {
        let _ = std::fs::remove_file(path);
    }
}

/// An accepted connection.
enum Conn {
    Tcp(
        tokio::net::TcpStream,
        std::net::SocketAddr,
        Option<std::net::SocketAddr>,
    ),
    Unix(tokio::net::UnixStream),
}

async fn accept(socket: &Socket) -> std::io::Result<Conn> {
    match socket {
        Socket::Tcp(l) => {
            let (stream, peer) = l.accept().await?;
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().ok();
            Ok(Conn::Tcp(stream, peer, local))
        }
        Socket::Unix(l, _) => Ok(Conn::Unix(l.accept().await?.0)),
    }
}

async fn handle<D: MailDispatch, G: Guard, C: DataCheck>(
    conn: Conn,
    kind: Kind,
    shared: Arc<Shared<D, G, C>>,
) {
    let mut slot = match shared.limits.admit() {
        Ok(slot) => slot,
        Err(refusal) => {
            log::warn!("connection refused: {refusal}");
            let peer = match &conn {
                Conn::Tcp(_, peer, _) => Peer::Tcp(*peer),
                Conn::Unix(_) => Peer::Unix,
            };
            let info = SessionInfo::new(peer, shared.name.clone());
            let what = Observation::ConnectionRefused {
                refusal: &refusal,
                limit: Limit::Connections,
            };
            shared.observe(&info, &what);
            refuse(conn, &refusal).await;
            return;
        }
    };
    let (io, peer, local): (samotop_core::BoxIo, Peer, _) = match conn {
        Conn::Tcp(mut stream, peer, local) => {
            // Behind a trusted proxy, the client from the PROXY header is the peer from here
            // on: per-IP limits, guards, SPF, logs and the Received header all see it.
            let resolved = shared
                .proxy
                .resolve(&mut stream, peer, local, shared.proxy_timeout)
                .await;
            let (peer, local) = match resolved {
                Ok(a) => (a.peer, a.local),
                Err(e) => {
                    log::warn!("connection from {peer} closed: {e}");
                    return;
                }
            };
            if let Err(refusal) = shared.limits.admit_ip(&mut slot, peer.ip()) {
                log::warn!("connection from {} refused: {refusal}", peer.ip());
                let info = SessionInfo::new(Peer::Tcp(peer), shared.name.clone());
                let what = Observation::ConnectionRefused {
                    refusal: &refusal,
                    limit: Limit::ConnectionsPerIp,
                };
                shared.observe(&info, &what);
                let _ = stream.write_all(&refusal.reply().to_bytes()).await;
                let _ = stream.shutdown().await;
                return;
            }
            (Box::new(stream), Peer::Tcp(peer), local)
        }
        Conn::Unix(stream) => (Box::new(stream), Peer::Unix, None),
    };
    let mut info = SessionInfo::new(peer, shared.name.clone());
    info.local = local;
    info.listener = kind.as_str();
    match kind {
        Kind::Smtp => {
            shared.smtp.run(io, info).await;
        }
        Kind::Lmtp => {
            shared.lmtp.run(io, info).await;
        }
        Kind::Smtps => {
            let Some(tls) = shared.tls.as_ref() else {
                return;
            };
            // Boxed: the handshake's state (a rustls connection, ~1 KiB) would otherwise be
            // part of every connection's task, plain ones included, for its whole life.
            let accept = Box::pin(tls.accept(io));
            let handshake = tokio::time::timeout(shared.handshake_timeout, accept);
            match handshake.await {
                Ok(Ok((io, tls_info))) => {
                    info.tls = Some(tls_info);
                    shared.smtp.run(io, info).await;
                }
                Ok(Err(e)) => {
                    log::info!("TLS handshake with {} failed: {e}", info.peer);
                    shared.observe(&info, &Observation::TlsFailed(&e.to_string()));
                }
                Err(_) => {
                    log::info!("TLS handshake with {} timed out", info.peer);
                    shared.observe(&info, &Observation::Limit(Limit::HandshakeTimeout));
                    shared.observe(&info, &Observation::TlsFailed("timed out"));
                }
            }
        }
    }
    drop(slot);
}

async fn refuse(conn: Conn, refusal: &samotop_core::Refusal) {
    let bytes = refusal.reply().to_bytes();
    match conn {
        Conn::Tcp(mut s, ..) => {
            let _ = s.write_all(&bytes).await;
            let _ = s.shutdown().await;
        }
        Conn::Unix(mut s) => {
            let _ = s.write_all(&bytes).await;
            let _ = s.shutdown().await;
        }
    }
}
