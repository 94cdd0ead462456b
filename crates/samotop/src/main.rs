//! `samotop`: receive mail over SMTP/LMTP and hand it, durably, to a Maildir, Dovecot's LMTP,
//! a smarthost or stdout. See `samotop --help` and DESIGN.md for the command line.
//!
//! This is the command line mapped onto [`samotop_server::Server`]: the flags choose the
//! backend, the guards, the limits and the listeners; the library does the rest.

mod cli;
mod config;
mod encrypt;
mod trigger;

use std::num::NonZeroU32;
use std::process::ExitCode;
use std::sync::Arc;

use samotop_core::{BoxDispatch, DataChecks, Guards, Limits, Observers};
use samotop_delivery::{
    Dialect, Endpoint, Layout, Maildir, Mapped, Null, Proxy, RecipientMap, Stdout,
};
use samotop_observe::{Metrics, TranscriptLimits, Transcripts};
use samotop_server::{AcceptDomains, MessageRate, Server, ServerLimits, Tls, TlsSource};

use crate::cli::{Cli, Deliver, ListenAddr, LogFormat, MaildirLayout, seconds};

fn main() -> ExitCode {
    let (cli, effective) = match config::parse() {
        Ok(parsed) => parsed,
        Err(config::Failure::Usage(e)) => e.exit(),
        Err(config::Failure::Config(e)) => {
            eprintln!("samotop: {e}");
            return ExitCode::from(2);
        }
    };
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    logger.target(env_logger::Target::Stderr);
    if cli.log_format == LogFormat::Json {
        logger.format(json_line);
    }
    logger.init();
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
    if cli.check_config {
        print!("{}", effective.render());
    }
    // The human log already says it on standard error; JSON lines (or no log) need it said.
    let say_it = cli.log_format == LogFormat::Json || !log::log_enabled!(log::Level::Error);
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let e = effective.locate(&e);
            log::error!("{e}");
            if say_it {
                eprintln!("samotop: {e}");
            }
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
    if cli.stdio && cli.deliver.contains(&Deliver::Stdout) {
        return Err("--stdio and --deliver stdout both want standard output".into());
    }

    let tls = tls_setup(&cli, &name)?;
    if cli.check_config {
        return check(&cli, &name).await;
    }
    let inbox_uri = cli.deliver.iter().find_map(|d| match d {
        Deliver::Inbox(uri) => Some(uri.clone()),
        _ => None,
    });
    let inbox = match &inbox_uri {
        Some(uri) => Some(open_inbox(&cli, uri).await?),
        None => None,
    };
    let store = inbox_uri.as_deref().zip(inbox.as_ref());
    let dispatch = dispatch(&cli, &name, store).await?;
    let policies = Policies::parse(&cli)?;
    let dns = shared_resolver(&cli, &policies)?;
    let guards = guards(&cli, &name, &policies, dns.as_ref())?;
    let checks = auth_checks(&name, &policies, dns.as_ref());

    let mut server = Server::new(dispatch)
        .guard(guards)
        .checks(checks)
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
    let (observers, metrics) = observers(&cli);
    if !observers.is_empty() {
        server = server.observer(Arc::new(observers));
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
    let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
    let http_task = match &cli.http {
        Some(addr) => Some(
            http(
                &cli,
                addr,
                inbox.clone(),
                metrics.clone(),
                http_stopped.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let metrics_task = match (&cli.metrics, &metrics) {
        (Some(addr), Some(metrics)) => {
            Some(serve_metrics(addr, metrics.clone(), http_stopped).await?)
        }
        _ => None,
    };
    let running = server.bind().await.map_err(|e| match e {
        samotop_server::Error::SmtpsWithoutTls => {
            "--smtps needs --tls-cert and --tls-key (or --tls-self-signed)".to_string()
        }
        e => e.to_string(),
    })?;
    let targets: Vec<String> = cli.deliver.iter().map(trigger::shown).collect();
    log::info!(
        "samotop {} ready: delivering to {}",
        env!("CARGO_PKG_VERSION"),
        targets.join(" and ")
    );
    running.until_signal().await;
    let _ = stop_http.send(true);
    running.shutdown().await;
    for task in [http_task, metrics_task].into_iter().flatten() {
        let _ = task.await;
    }
    Ok(())
}

/// The observers the flags ask for: Prometheus metrics (`--metrics`, or `--http` with an
/// inbox) and transcripts (`--transcript`).
fn observers(cli: &Cli) -> (Observers, Option<Arc<Metrics>>) {
    let mut observers = Observers::default();
    let transcripts = cli.transcript.as_ref().map(|dir| {
        let limits = TranscriptLimits {
            max_files: cli.transcript_max_files.max(1),
            max_bytes: cli.transcript_max_bytes,
            per_session: cli.transcript_max_session_bytes,
            ..TranscriptLimits::default()
        };
        log::info!("session transcripts into {}", dir.display());
        Arc::new(Transcripts::start(dir.clone(), limits))
    });
    let metrics = (cli.metrics.is_some() || cli.http.is_some()).then(|| {
        let mut metrics = Metrics::new(backend_name(cli));
        if let Some(t) = &transcripts {
            for c in t.collectors() {
                metrics.register_collector(c);
            }
        }
        Arc::new(metrics)
    });
    if let Some(m) = &metrics {
        observers.push(m.clone());
    }
    if let Some(t) = transcripts {
        observers.push(t);
    }
    (observers, metrics)
}

/// The backend's name for the delivery latency metric: `mixed` for routes or fan-out.
fn backend_name(cli: &Cli) -> &'static str {
    match cli.deliver.as_slice() {
        [one] if cli.trigger.route.is_empty() => match one {
            Deliver::Maildir(_) => "maildir",
            Deliver::Lmtp(_) => "lmtp",
            Deliver::Smtp(_) => "smtp",
            Deliver::Stdout => "stdout",
            Deliver::Null => "null",
            Deliver::Inbox(uri) if uri.starts_with("sqlite:") => "sqlite",
            Deliver::Inbox(_) => "postgres",
            Deliver::Webhook(_) => "webhook",
            Deliver::Exec(_) => "exec",
        },
        _ => "mixed",
    }
}

/// `host:port`, or a bare port on 127.0.0.1.
fn http_addr(addr: &str) -> String {
    if addr.bytes().all(|b| b.is_ascii_digit()) {
        format!("127.0.0.1:{addr}")
    } else {
        addr.to_string()
    }
}

/// `--metrics ADDR`: Prometheus at http://ADDR/metrics, stopped with the rest.
async fn serve_metrics(
    addr: &str,
    metrics: Arc<Metrics>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let addr = http_addr(addr);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("--metrics {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    log::info!("metrics on http://{local}/metrics");
    let shutdown = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    Ok(tokio::spawn(async move {
        if let Err(e) = samotop_observe::serve(listener, metrics, shutdown).await {
            log::error!("metrics: {e}");
        }
    }))
}

/// `--log-format json`: one object per line; `session` when the message is about one
/// (`session ID: ...` or `session id=ID ...`).
fn json_line(
    buf: &mut env_logger::fmt::Formatter,
    record: &log::Record<'_>,
) -> std::io::Result<()> {
    use std::io::Write;
    let text = record.args().to_string();
    let (session, msg) = split_session(&text);
    let mut line = serde_json::json!({
        "ts": samotop_core::trace::rfc3339(std::time::SystemTime::now()),
        "level": record.level().as_str(),
        "target": record.target(),
        "msg": msg,
    });
    if let (Some(id), Some(map)) = (session, line.as_object_mut()) {
        map.insert("session".into(), serde_json::Value::String(id.to_string()));
    }
    writeln!(buf, "{line}")
}

/// The session id a log message is about, and the message without it.
fn split_session(text: &str) -> (Option<&str>, &str) {
    if let Some(rest) = text.strip_prefix("session id=") {
        let id = rest.split_whitespace().next().unwrap_or("");
        return (Some(id).filter(|s| !s.is_empty()), text);
    }
    if let Some(rest) = text.strip_prefix("session ") {
        if let Some((id, msg)) = rest.split_once(": ") {
            if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
                // A message's id (`SESSION.N`) is about its session; the line keeps it.
                return match id.split_once('.') {
                    Some((session, _)) if !session.is_empty() => (Some(session), text),
                    _ => (Some(id), msg),
                };
            }
        }
    }
    // A backend's line names the message (`maildir ABC1230000.1: ...`, `exec P for ...`).
    let message = text.split_whitespace().find_map(|word| {
        let word = word.trim_end_matches([':', ',', ';']);
        let (session, n) = word.split_once('.')?;
        let ours = session.len() >= 10
            && session
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
            && !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit());
        ours.then_some(session)
    });
    (message, text)
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
    let flags = match (&cli.tls_cert, &cli.tls_key) {
        (Some(_), Some(_)) => "--tls-cert/--tls-key",
        _ => "--tls-self-signed",
    };
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
    Tls::load(source)
        .map(Some)
        .map_err(|e| format!("TLS ({flags}): {e}"))
}

fn endpoint(addr: &ListenAddr) -> Endpoint {
    match addr {
        ListenAddr::Tcp(a) => Endpoint::Tcp(a.clone()),
        ListenAddr::Unix(p) => Endpoint::Unix(p.clone()),
    }
}

/// The `--deliver`s (several: a `Tee`) and `--route`s (a `Route` in front), `--map` around.
async fn dispatch(
    cli: &Cli,
    name: &str,
    inbox: Option<(&str, &samotop_inbox::Inbox)>,
) -> Result<BoxDispatch, String> {
    let backend = async |d: &Deliver| backend(cli, name, d, inbox).await;
    let inner = trigger::dispatch(&cli.trigger, &cli.deliver, backend).await?;
    mapped(cli, inner)
}

/// One `--deliver` URI's backend, encrypted when `--encrypt-*` asks (every backend but
/// `null`: what it is handed is what it keeps or passes on).
async fn backend(
    cli: &Cli,
    name: &str,
    deliver: &Deliver,
    inbox: Option<(&str, &samotop_inbox::Inbox)>,
) -> Result<BoxDispatch, String> {
    let plain = match deliver {
        Deliver::Maildir(dir) => {
            let maildir = maildir(cli, dir)?;
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
        Deliver::Null => return Ok(BoxDispatch::new(Null)),
        Deliver::Inbox(uri) => match inbox {
            Some((opened, inbox)) if opened == uri => BoxDispatch::new(inbox.clone()),
            _ => {
                return Err(format!(
                    "{uri}: only one inbox store, the first --deliver one"
                ));
            }
        },
        Deliver::Webhook(url) => trigger::webhook(&cli.trigger, url, backend_timeout(cli)?)?,
        Deliver::Exec(command) => trigger::exec(&cli.trigger, command, backend_timeout(cli)?)?,
    };
    encrypt::wrap(&cli.encrypt, plain)
}

/// `--backend-timeout`, which a trigger's own timeout must stay below.
fn backend_timeout(cli: &Cli) -> Result<std::time::Duration, String> {
    seconds("backend-timeout", cli.backend_timeout)
}

/// The Maildir the flags describe (its directories not made yet).
fn maildir(cli: &Cli, dir: &std::path::Path) -> Result<Maildir, String> {
    let layout = match cli.maildir_layout {
        MaildirLayout::Single => Layout::Single,
        MaildirLayout::PerRecipient => Layout::PerRecipient,
    };
    if layout == Layout::PerRecipient && cli.accept_domain.is_empty() && cli.max_mailboxes.is_none()
    {
        return Err(
            "--maildir-layout per-recipient makes a mailbox for every address it \
                    accepts: give --accept-domain (the domains it receives for) or \
                    --max-mailboxes N"
                .into(),
        );
    }
    let mut maildir = Maildir::new(dir.to_path_buf(), layout).fold_case(cli.maildir_fold_case);
    if let Some(max) = cli.max_mailboxes {
        maildir = maildir.max_mailboxes(max);
    }
    if let Some(folder) = &cli.quarantine_folder {
        maildir = maildir
            .quarantine_folder(folder)
            .map_err(|e| format!("--quarantine-folder: {e}"))?;
    }
    Ok(maildir)
}

/// `--check-config`: everything [`run`] would check before it makes a directory, opens a
/// store or dials a server (those backends stand in as `null`).
async fn check(cli: &Cli, name: &str) -> Result<(), String> {
    seconds("banner-delay", cli.banner_delay)?;
    let has_inbox = cli.deliver.iter().any(|d| matches!(d, Deliver::Inbox(_)));
    if cli.http.is_some() && !has_inbox {
        return Err("--http needs --deliver sqlite:PATH or postgres://...".into());
    }
    let dry = async |d: &Deliver| -> Result<BoxDispatch, String> {
        match d {
            Deliver::Maildir(dir) => Ok(BoxDispatch::new(maildir(cli, dir)?)),
            Deliver::Webhook(url) => trigger::webhook(&cli.trigger, url, backend_timeout(cli)?),
            Deliver::Exec(command) => trigger::exec(&cli.trigger, command, backend_timeout(cli)?),
            _ => Ok(BoxDispatch::new(Null)),
        }
    };
    let inner = trigger::dispatch(&cli.trigger, &cli.deliver, dry).await?;
    mapped(cli, inner)?;
    encrypt::check(&cli.encrypt)?;
    // SPF, DKIM, DMARC: the policies, the shared resolver (reads /etc/resolv.conf without
    // --dns; no query is sent), the guard and the end-of-data check.
    let policies = Policies::parse(cli)?;
    let dns = shared_resolver(cli, &policies)?;
    guards(cli, name, &policies, dns.as_ref())?;
    auth_checks(name, &policies, dns.as_ref());
    eprintln!("samotop: the configuration is good");
    Ok(())
}

/// `--map` around a dispatch.
fn mapped(cli: &Cli, inner: BoxDispatch) -> Result<BoxDispatch, String> {
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

fn guards(
    cli: &Cli,
    name: &str,
    policies: &Policies,
    dns: Option<&samotop_auth::Resolver>,
) -> Result<Guards, String> {
    let mut guards = Guards::new();
    if let Some(n) = NonZeroU32::new(cli.max_messages_per_minute_per_ip) {
        guards.push(MessageRate::new(n));
    }
    if !cli.accept_domain.is_empty() {
        guards.push(AcceptDomains::new(&cli.accept_domain));
    }
    if let (true, Some(dns)) = (policies.spf != samotop_spf::Policy::Off, dns) {
        let spf = samotop_spf::SpfGuard::with_resolver(
            policies.spf,
            dns.hickory().clone(),
            name.to_string(),
        );
        guards.push(spf);
    }
    Ok(guards)
}

// ---- sender authentication: --spf, --dkim, --dmarc, --dns ------------------------------

/// The sender-authentication flags, parsed.
struct Policies {
    spf: samotop_spf::Policy,
    auth: samotop_auth::Policy,
}

impl Policies {
    fn parse(cli: &Cli) -> Result<Self, String> {
        let spf = cli.spf.parse().map_err(|e| format!("--spf: {e}"))?;
        let dkim = cli.dkim.parse().map_err(|e| format!("--dkim: {e}"))?;
        let dmarc = cli.dmarc.parse().map_err(|e| format!("--dmarc: {e}"))?;
        let auth = samotop_auth::Policy {
            dkim,
            dmarc,
            // ARC rides with the others: --dkim off --dmarc off checks nothing at the end
            // of the data (and spools nothing).
            arc: dkim != samotop_auth::DkimMode::Off || dmarc != samotop_auth::DmarcMode::Off,
        };
        Ok(Policies { spf, auth })
    }
}

/// One caching resolver for SPF, DKIM and DMARC (`--dns`, or the system's), when any of
/// them is on: 2 s per try, one retry, no hosts file.
fn shared_resolver(
    cli: &Cli,
    policies: &Policies,
) -> Result<Option<samotop_auth::Resolver>, String> {
    if policies.spf == samotop_spf::Policy::Off && policies.auth.is_off() {
        return Ok(None);
    }
    samotop_auth::Resolver::new(cli.dns)
        .map(Some)
        .map_err(|e| match e {
            samotop_auth::Error::SystemConfig { source } => format!(
                "cannot read the system DNS configuration (/etc/resolv.conf) for SPF, DKIM and \
                 DMARC look-ups: {source}; give a DNS server (--dns IP:PORT) or turn them off \
                 (--spf off --dkim off --dmarc off)"
            ),
            e => format!("DNS: {e}"),
        })
}

/// The end-of-data checks: DKIM, DMARC and ARC into one `Authentication-Results` (with the
/// SPF results of MAIL); none when `--dkim off --dmarc off`.
fn auth_checks(
    name: &str,
    policies: &Policies,
    dns: Option<&samotop_auth::Resolver>,
) -> DataChecks {
    let mut checks = DataChecks::new();
    if let (false, Some(dns)) = (policies.auth.is_off(), dns) {
        let config = samotop_auth::Config::with_policy(policies.auth);
        let verifier = samotop_auth::Verifier::new(dns.clone(), config);
        checks.push(samotop_auth::AuthCheck::new(verifier, name));
    }
    checks
}

/// `--deliver sqlite:PATH | postgres://...`: the inbox store, with the `--inbox-*` limits.
async fn open_inbox(cli: &Cli, uri: &str) -> Result<samotop_inbox::Inbox, String> {
    let nonzero = |n: u64| (n > 0).then_some(n);
    let options = samotop_inbox::Options {
        retention: samotop_inbox::Retention {
            max_age: nonzero(cli.inbox_max_age).map(std::time::Duration::from_secs),
            max_messages: nonzero(cli.inbox_max_messages),
            max_bytes: nonzero(cli.inbox_max_bytes),
            ..samotop_inbox::Retention::default()
        },
        ..samotop_inbox::Options::default()
    };
    samotop_inbox::Inbox::open(uri, options)
        .await
        .map_err(|e| e.to_string())
}

/// `--http ADDR`: the web inbox, stopped with the rest.
async fn http(
    cli: &Cli,
    addr: &str,
    inbox: Option<samotop_inbox::Inbox>,
    metrics: Option<Arc<Metrics>>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let inbox = inbox.ok_or("--http needs --deliver sqlite:PATH or postgres://...")?;
    let addr = http_addr(addr);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("--http {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    samotop_inbox::HttpFace::check_bind(local, cli.http_token.is_some(), cli.http_public)?;
    let face = samotop_inbox::HttpFace::new(
        inbox,
        samotop_inbox::HttpConfig {
            token: cli.http_token.clone(),
            label: String::new(),
        },
    );
    log::info!("web inbox on http://{local}/");
    let shutdown = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    Ok(tokio::spawn(async move {
        let mut router = face.router();
        if let Some(metrics) = metrics {
            router = router.merge(samotop_observe::router(metrics));
        }
        let served = axum::serve(listener, router).with_graceful_shutdown(shutdown);
        if let Err(e) = served.await {
            log::error!("web inbox: {e}");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::split_session;

    #[test]
    fn log_lines_about_a_session_carry_its_id() {
        assert_eq!(
            split_session("session 1a2b: refused at rcpt by rate: 450 4.7.0 slow down"),
            (Some("1a2b"), "refused at rcpt by rate: 450 4.7.0 slow down")
        );
        let line = "session 1a2b.3: delivered";
        assert_eq!(split_session(line), (Some("1a2b"), line));
        let line = "exec /bin/false for TPEARR0000.1: exit status: 1; answering 554 5.3.0";
        assert_eq!(split_session(line), (Some("TPEARR0000"), line));
        let line = "maildir TPEARR00001.12: disk full; replying 452 4.3.1";
        assert_eq!(split_session(line), (Some("TPEARR00001"), line));
        let line = "session id=77 peer=127.0.0.1:4000 started";
        assert_eq!(split_session(line), (Some("77"), line));
    }

    #[test]
    fn other_lines_are_left_alone() {
        for text in [
            "listening on 127.0.0.1:25",
            "session : empty id",
            "session a b: spaces in the id",
            "session id=",
            "sessions 12: not ours",
            "version 1.2 of ABC",
            "at 127.0.0.1:25",
            "SHORT0.1 is too short",
        ] {
            assert_eq!(split_session(text), (None, text), "{text}");
        }
    }
}
