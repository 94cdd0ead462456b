//! `samotop`: receive mail over SMTP/LMTP and hand it, durably, to a Maildir, Dovecot's LMTP,
//! a smarthost or stdout. See `samotop --help` and DESIGN.md for the command line.
//!
//! This is the command line mapped onto [`samotop_server::Server`]: the flags choose the
//! backend, the guards, the limits and the listeners; the library does the rest.

mod cli;
mod encrypt;

use std::num::NonZeroU32;
use std::process::ExitCode;

use clap::Parser;
use samotop_core::{BoxDispatch, Guards, Limits};
use samotop_delivery::{
    Dialect, Endpoint, Layout, Maildir, Mapped, Null, Proxy, RecipientMap, Stdout,
};
use samotop_server::{AcceptDomains, MessageRate, Server, ServerLimits, Tls, TlsSource};

use crate::cli::{Cli, Deliver, ListenAddr, MaildirLayout, seconds};

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("samotop: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("samotop: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let name = cli.name.clone().unwrap_or_else(host_name);
    let limits = Limits {
        max_message_size: cli.max_message_size,
        max_recipients: cli.max_recipients.max(1),
        max_errors: cli.max_errors.max(1),
        max_rejected_recipients: cli.max_rejected_recipients,
        max_transactions: cli.max_messages_per_session.max(1),
        command_timeout: seconds("command-timeout", cli.command_timeout)?,
        data_timeout: seconds("data-timeout", cli.data_timeout)?,
        backend_timeout: seconds("backend-timeout", cli.backend_timeout)?,
        handshake_timeout: seconds("handshake-timeout", cli.handshake_timeout)?,
        ..Limits::default()
    };
    let server_limits = ServerLimits {
        max_connections: cli.max_connections,
        max_connections_per_ip: cli.max_connections_per_ip,
        per_ip_exempt: cli.per_ip_limit_exempt.clone(),
        proxy_header_timeout: seconds("proxy-header-timeout", cli.proxy_header_timeout)?,
        shutdown_grace: seconds("shutdown-grace", cli.shutdown_grace)?,
    };
    if cli.stdio && cli.deliver == Deliver::Stdout {
        return Err("--stdio and --deliver stdout both want standard output".into());
    }

    let tls = tls_setup(&cli, &name)?;
    let dispatch = dispatch(&cli, &name).await?;
    let guards = guards(&cli, &name)?;

    let mut server = Server::new(dispatch)
        .guard(guards)
        .name(name)
        .limits(limits)
        .server_limits(server_limits)
        .proxy_protocol_from(cli.proxy_protocol_from.clone())
        .banner_delay(seconds("banner-delay", cli.banner_delay)?)
        .require_tls(cli.require_tls)
        .accept_bare_newlines(cli.accept_bare_newlines);
    if let Some(tls) = tls {
        server = server.tls(tls);
    }

    if cli.stdio {
        server.serve_stdio().await.map_err(|e| e.to_string())?;
        return Ok(());
    }

    let mut smtp = cli.smtp.clone();
    if smtp.is_empty() && cli.smtps.is_empty() && cli.lmtp.is_empty() {
        smtp.push(ListenAddr::Tcp("127.0.0.1:2525".into()));
    }
    for addr in smtp {
        server = server.smtp(addr);
    }
    for addr in cli.smtps.iter().cloned() {
        server = server.smtps(addr);
    }
    for addr in cli.lmtp.iter().cloned() {
        server = server.lmtp(addr);
    }
    let running = server.bind().await.map_err(|e| match e {
        samotop_server::Error::SmtpsWithoutTls => {
            "--smtps needs --tls-cert and --tls-key (or --tls-self-signed)".to_string()
        }
        e => e.to_string(),
    })?;
    log::info!(
        "samotop {} ready: delivering to {:?}",
        env!("CARGO_PKG_VERSION"),
        cli.deliver
    );
    running.until_signal().await;
    running.shutdown().await;
    Ok(())
}

/// This machine's host name (`uname -n`), or `localhost` when it has none.
fn host_name() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy();
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "localhost".into()
    } else {
        name.into_owned()
    }
}

fn tls_setup(cli: &Cli, name: &str) -> Result<Option<Tls>, String> {
    let source = match (&cli.tls_cert, &cli.tls_key, cli.tls_self_signed) {
        (Some(cert), Some(key), _) => TlsSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        (_, _, true) => {
            log::warn!("using a throw-away self-signed certificate for {name}");
            TlsSource::SelfSigned(name.to_string())
        }
        _ if cli.require_tls => {
            return Err(
                "--require-tls needs --tls-cert and --tls-key (or --tls-self-signed)".into(),
            );
        }
        _ => return Ok(None),
    };
    Tls::load(source).map(Some).map_err(|e| format!("TLS: {e}"))
}

fn endpoint(addr: &ListenAddr) -> Endpoint {
    match addr {
        ListenAddr::Tcp(a) => Endpoint::Tcp(a.clone()),
        ListenAddr::Unix(p) => Endpoint::Unix(p.clone()),
    }
}

async fn dispatch(cli: &Cli, name: &str) -> Result<BoxDispatch, String> {
    let inner = match &cli.deliver {
        Deliver::Maildir(dir) => {
            let layout = match cli.maildir_layout {
                MaildirLayout::Single => Layout::Single,
                MaildirLayout::PerRecipient => Layout::PerRecipient,
            };
            if layout == Layout::PerRecipient
                && cli.accept_domain.is_empty()
                && cli.max_mailboxes.is_none()
            {
                return Err(
                    "--maildir-layout per-recipient makes a mailbox for every address \
                            it accepts: give --accept-domain (the domains it receives for) or \
                            --max-mailboxes N"
                        .into(),
                );
            }
            let mut maildir = Maildir::new(dir.clone(), layout).fold_case(cli.maildir_fold_case);
            if let Some(max) = cli.max_mailboxes {
                maildir = maildir.max_mailboxes(max);
            }
            if let Some(folder) = &cli.quarantine_folder {
                maildir = maildir
                    .quarantine_folder(folder)
                    .map_err(|e| format!("--quarantine-folder: {e}"))?;
            }
            maildir.create_dirs().map_err(|e| e.to_string())?;
            BoxDispatch::new(maildir)
        }
        Deliver::Lmtp(addr) => BoxDispatch::new(
            probed(Proxy::new(endpoint(addr), Dialect::Lmtp).helo_name(name)).await,
        ),
        Deliver::Smtp(addr) => BoxDispatch::new(
            probed(Proxy::new(endpoint(addr), Dialect::Smtp).helo_name(name)).await,
        ),
        Deliver::Stdout => BoxDispatch::new(Stdout),
        Deliver::Null => BoxDispatch::new(Null),
    };
    let inner = encrypt::wrap(&cli.encrypt, inner)?;
    if cli.map.is_empty() {
        return Ok(inner);
    }
    let map = RecipientMap::parse(&cli.map).map_err(|e| e.to_string())?;
    Ok(BoxDispatch::new(Mapped::new(map, inner)))
}

/// The proxy, after learning what its server takes (EHLO offers only that). A server that is
/// down at start-up is not fatal: the proxy then offers 8BITMIME only, and learns later.
async fn probed(proxy: Proxy) -> Proxy {
    match tokio::time::timeout(std::time::Duration::from_secs(10), proxy.probe()).await {
        Ok(Ok(caps)) => log::info!("{}: the next hop takes {caps:?}", proxy.endpoint()),
        Ok(Err(e)) => log::warn!(
            "{}: cannot learn what it takes ({e}); offering 8BITMIME only",
            proxy.endpoint()
        ),
        Err(_) => log::warn!(
            "{}: no answer within 10 s; offering 8BITMIME only",
            proxy.endpoint()
        ),
    }
    proxy
}

fn guards(cli: &Cli, name: &str) -> Result<Guards, String> {
    let mut guards = Guards::new();
    if let Some(n) = NonZeroU32::new(cli.max_messages_per_minute_per_ip) {
        guards.push(MessageRate::new(n));
    }
    if !cli.accept_domain.is_empty() {
        guards.push(AcceptDomains::new(&cli.accept_domain));
    }
    let policy: samotop_spf::Policy = cli.spf.parse().map_err(|e| format!("--spf: {e}"))?;
    if policy != samotop_spf::Policy::Off {
        let spf = samotop_spf::SpfGuard::new(policy, cli.dns, name.to_string())
            .map_err(|e| format!("SPF: {e}"))?;
        guards.push(spf);
    }
    Ok(guards)
}
