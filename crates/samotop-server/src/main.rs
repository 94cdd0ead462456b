//! `samotop`: receive mail over SMTP/LMTP and hand it, durably, to a Maildir, Dovecot's LMTP,
//! a smarthost or stdout. See `samotop --help` and DESIGN.md for the command line.

mod cli;
mod guards;
mod limits;
mod listen;
mod proxy;
mod shutdown;
mod tls;
mod trigger;

use std::num::NonZeroU32;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use samotop_core::{
    BoxDispatch, Driver, Guards, Limits, Peer, Protocol, SessionConfig, SessionInfo,
};
use samotop_delivery::{
    Dialect, Endpoint, Layout, Maildir, Mapped, Null, Proxy, RecipientMap, Stdout,
};
use tokio::sync::watch;

use crate::cli::{Cli, Deliver, ListenAddr, MaildirLayout, seconds};
use crate::listen::{Kind, Shared};

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
    let limits = Limits {
        max_message_size: cli.max_message_size,
        max_recipients: cli.max_recipients.max(1),
        max_errors: cli.max_errors.max(1),
        command_timeout: seconds("command-timeout", cli.command_timeout)?,
        data_timeout: seconds("data-timeout", cli.data_timeout)?,
        ..Limits::default()
    };
    let banner_delay = seconds("banner-delay", cli.banner_delay)?;
    let grace = seconds("shutdown-grace", cli.shutdown_grace)?;
    if cli.stdio && cli.deliver.contains(&Deliver::Stdout) {
        return Err("--stdio and --deliver stdout both want standard output".into());
    }

    let tls = tls_setup(&cli)?;
    let dispatch = dispatch(&cli)?;
    let guards = guards(&cli)?;
    let (stop, stopped) = watch::channel(false);

    let config = |protocol| SessionConfig {
        limits: limits.clone(),
        protocol,
        starttls: false,
        require_tls: cli.require_tls,
        accept_bare_newlines: cli.accept_bare_newlines,
        ..SessionConfig::default()
    };
    let driver = |protocol| {
        let mut d = Driver::new(dispatch.clone(), guards.clone(), config(protocol))
            .with_banner_delay(banner_delay)
            .with_shutdown(stopped.clone());
        if let Some(tls) = &tls {
            d = d.with_tls(Arc::new(tls.clone()));
        }
        Arc::new(d)
    };
    let smtp = driver(Protocol::Smtp);
    let lmtp = driver(Protocol::Lmtp);

    if cli.stdio {
        let io = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
        smtp.run(io, SessionInfo::new(Peer::Stdio, cli.name.clone()))
            .await;
        return Ok(());
    }

    let mut listeners = Vec::new();
    let mut smtp_addrs = cli.smtp.clone();
    if smtp_addrs.is_empty() && cli.smtps.is_empty() && cli.lmtp.is_empty() {
        smtp_addrs.push(ListenAddr::Tcp("127.0.0.1:2525".into()));
    }
    if !cli.smtps.is_empty() && tls.is_none() {
        return Err("--smtps needs --tls-cert and --tls-key (or --tls-self-signed)".into());
    }
    for (addrs, kind) in [
        (&smtp_addrs, Kind::Smtp),
        (&cli.smtps, Kind::Smtps),
        (&cli.lmtp, Kind::Lmtp),
    ] {
        for addr in addrs {
            let socket = listen::bind(addr).await?;
            log::info!("listening for {kind:?} on {addr}");
            listeners.push((socket, kind));
        }
    }

    let shared = Arc::new(Shared {
        smtp,
        lmtp,
        tls: tls.clone(),
        limits: limits::ConnLimits::new(cli.max_connections, cli.max_connections_per_ip),
        proxy: proxy::ProxyPolicy::new(cli.proxy_protocol_from.clone()),
        name: cli.name.clone(),
    });
    let mut tasks = Vec::new();
    for (socket, kind) in listeners {
        tasks.push(tokio::spawn(listen::serve(
            socket,
            kind,
            shared.clone(),
            stopped.clone(),
        )));
    }
    let targets: Vec<String> = cli.deliver.iter().map(trigger::shown).collect();
    log::info!(
        "samotop {} ready: delivering to {}",
        env!("CARGO_PKG_VERSION"),
        targets.join(" and ")
    );

    shutdown::wait_for_signal(tls.as_ref()).await;
    log::info!(
        "shutting down: no new connections, {}s grace for sessions in flight",
        grace.as_secs_f64()
    );
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
    shutdown::drain(&shared.limits, cli.max_connections, grace).await;
    log::info!("stopped");
    Ok(())
}

fn tls_setup(cli: &Cli) -> Result<Option<tls::Tls>, String> {
    let source = match (&cli.tls_cert, &cli.tls_key, cli.tls_self_signed) {
        (Some(cert), Some(key), _) => tls::Source::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        (_, _, true) => {
            log::warn!(
                "using a throw-away self-signed certificate for {}",
                cli.name
            );
            tls::Source::SelfSigned(cli.name.clone())
        }
        _ if cli.require_tls => {
            return Err(
                "--require-tls needs --tls-cert and --tls-key (or --tls-self-signed)".into(),
            );
        }
        _ => return Ok(None),
    };
    tls::Tls::load(source)
        .map(Some)
        .map_err(|e| format!("TLS: {e}"))
}

fn endpoint(addr: &ListenAddr) -> Endpoint {
    match addr {
        ListenAddr::Tcp(a) => Endpoint::Tcp(a.clone()),
        ListenAddr::Unix(p) => Endpoint::Unix(p.clone()),
    }
}

fn dispatch(cli: &Cli) -> Result<BoxDispatch, String> {
    let inner = trigger::dispatch(&cli.trigger, &cli.deliver, |d| backend(cli, d))?;
    if cli.map.is_empty() {
        return Ok(inner);
    }
    let map = RecipientMap::parse(&cli.map).map_err(|e| e.to_string())?;
    Ok(BoxDispatch::new(Mapped::new(map, inner)))
}

/// One `--deliver` URI's backend.
fn backend(cli: &Cli, deliver: &Deliver) -> Result<BoxDispatch, String> {
    Ok(match deliver {
        Deliver::Maildir(dir) => {
            let layout = match cli.maildir_layout {
                MaildirLayout::Single => Layout::Single,
                MaildirLayout::PerRecipient => Layout::PerRecipient,
            };
            let maildir = Maildir::new(dir.clone(), layout);
            maildir.create_dirs().map_err(|e| e.to_string())?;
            BoxDispatch::new(maildir)
        }
        Deliver::Lmtp(addr) => BoxDispatch::new(Proxy::new(endpoint(addr), Dialect::Lmtp)),
        Deliver::Smtp(addr) => BoxDispatch::new(Proxy::new(endpoint(addr), Dialect::Smtp)),
        Deliver::Stdout => BoxDispatch::new(Stdout),
        Deliver::Null => BoxDispatch::new(Null),
        Deliver::Webhook(url) => trigger::webhook(&cli.trigger, url)?,
        Deliver::Exec(command) => trigger::exec(&cli.trigger, command)?,
    })
}

fn guards(cli: &Cli) -> Result<Guards, String> {
    let mut guards = Guards::new();
    if let Some(n) = NonZeroU32::new(cli.max_messages_per_minute_per_ip) {
        guards.push(guards::MessageRate::new(n));
    }
    if !cli.accept_domain.is_empty() {
        guards.push(guards::AcceptDomains::new(&cli.accept_domain));
    }
    let policy: samotop_spf::Policy = cli.spf.parse().map_err(|e| format!("--spf: {e}"))?;
    if policy != samotop_spf::Policy::Off {
        let spf = samotop_spf::SpfGuard::new(policy, cli.dns, cli.name.clone())
            .map_err(|e| format!("SPF: {e}"))?;
        guards.push(spf);
    }
    Ok(guards)
}
