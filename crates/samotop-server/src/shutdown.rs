//! Signals: SIGTERM/SIGINT start a graceful shutdown, SIGHUP reloads the TLS certificate.

use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};

use crate::limits::ConnLimits;
use crate::tls::Tls;

/// Returns on SIGTERM or SIGINT; reloads TLS on each SIGHUP meanwhile.
pub async fn wait_for_signal(tls: Option<&Tls>) {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        log::error!("cannot install signal handlers; stop with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => match tls {
                Some(tls) => match tls.reload() {
                    Ok(()) => log::info!("SIGHUP: TLS certificate reloaded"),
                    Err(e) => log::error!("SIGHUP: TLS reload failed, keeping the old certificate: {e}"),
                },
                None => log::info!("SIGHUP: nothing to reload"),
            },
        }
    }
}

/// Waits until no session is open, or the grace period is over.
pub async fn drain(limits: &ConnLimits, grace: Duration) {
    let deadline = Instant::now() + grace;
    loop {
        let open = limits.open();
        if open == 0 {
            return;
        }
        if Instant::now() >= deadline {
            log::warn!("grace period over, {open} sessions cut off");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
