//! Listeners: TCP and Unix sockets for SMTP, implicit-TLS SMTP and LMTP; one task per
//! connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use samotop_core::{BoxDispatch, Driver, Guards, Peer, SessionInfo};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use crate::cli::ListenAddr;
use crate::limits::ConnLimits;
use crate::proxy::ProxyPolicy;
use crate::tls::Tls;

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SMTP, STARTTLS when a certificate is configured.
    Smtp,
    /// SMTP inside implicit TLS.
    Smtps,
    /// LMTP.
    Lmtp,
}

/// A bound socket.
pub enum Socket {
    /// TCP.
    Tcp(TcpListener),
    /// Unix; the path is removed when the listener ends.
    Unix(UnixListener, PathBuf),
}

/// Everything a connection task needs, shared.
pub struct Shared {
    /// SMTP driver (also used for implicit TLS).
    pub smtp: Arc<Driver<BoxDispatch, Guards>>,
    /// LMTP driver.
    pub lmtp: Arc<Driver<BoxDispatch, Guards>>,
    /// TLS, when configured.
    pub tls: Option<Tls>,
    /// Connection limits.
    pub limits: ConnLimits,
    /// PROXY protocol trust.
    pub proxy: ProxyPolicy,
    /// Host name.
    pub name: String,
}

/// Binds a listener address, with a clear error.
pub async fn bind(addr: &ListenAddr) -> Result<Socket, String> {
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
pub async fn serve(
    socket: Socket,
    kind: Kind,
    shared: Arc<Shared>,
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
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
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

async fn handle(conn: Conn, kind: Kind, shared: Arc<Shared>) {
    let mut slot = match shared.limits.admit() {
        Ok(slot) => slot,
        Err(reply) => {
            log::warn!("connection refused: {reply}");
            refuse(conn, &reply).await;
            return;
        }
    };
    let (io, peer, local): (samotop_core::BoxIo, Peer, _) = match conn {
        Conn::Tcp(mut stream, peer, local) => {
            // Behind a trusted proxy, the client from the PROXY header is the peer from here
            // on: per-IP limits, guards, SPF, logs and the Received header all see it.
            let (peer, local) = match shared.proxy.resolve(&mut stream, peer, local).await {
                Ok(a) => (a.peer, a.local),
                Err(e) => {
                    log::warn!("connection from {peer} closed: {e}");
                    return;
                }
            };
            if let Err(reply) = shared.limits.admit_ip(&mut slot, peer.ip()) {
                log::warn!("connection from {} refused: {reply}", peer.ip());
                let _ = stream.write_all(&reply.reply().to_bytes()).await;
                let _ = stream.shutdown().await;
                return;
            }
            (Box::new(stream), Peer::Tcp(peer), local)
        }
        Conn::Unix(stream) => (Box::new(stream), Peer::Unix, None),
    };
    let mut info = SessionInfo::new(peer, shared.name.clone());
    info.local = local;
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
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(30), tls.accept(io));
            match handshake.await {
                Ok(Ok((io, tls_info))) => {
                    info.tls = Some(tls_info);
                    shared.smtp.run(io, info).await;
                }
                Ok(Err(e)) => log::info!("TLS handshake with {} failed: {e}", info.peer),
                Err(_) => log::info!("TLS handshake with {} timed out", info.peer),
            }
        }
    }
    drop(slot);
}

async fn refuse(conn: Conn, reply: &samotop_core::Refusal) {
    let bytes = reply.reply().to_bytes();
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
