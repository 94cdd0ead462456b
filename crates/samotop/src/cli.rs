//! The command line (DESIGN.md, "The `samotop` command line"). Every flag also reads from
//! `SAMOTOP_<FLAG>`.

use std::path::PathBuf;
use std::str::FromStr;

use clap::Parser;
pub use samotop_server::ListenAddr;

/// Receive mail over SMTP/LMTP and hand it, durably, to a Maildir, Dovecot, a smarthost or
/// stdout.
#[derive(Debug, Parser)]
#[command(name = "samotop", version, about, long_about = None)]
pub struct Cli {
    /// Read settings from this TOML file: keys are the long flag names, tables prefix them
    /// (`[inbox] max-age = 3600`); SAMOTOP_* variables and flags override it.
    #[arg(long, env = "SAMOTOP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Check the configuration (flags, variables, --config file), print it with where each
    /// value came from, and exit: 0 when it is good, 2 when not.
    #[arg(long)]
    pub check_config: bool,

    /// SMTP listener: host:port or unix:PATH (repeatable; default 127.0.0.1:2525 when no
    /// listener is given).
    #[arg(
        long = "smtp",
        env = "SAMOTOP_SMTP",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub smtp: Vec<ListenAddr>,

    /// SMTP listener with implicit TLS, port 465 style (repeatable; needs a certificate).
    #[arg(
        long = "smtps",
        env = "SAMOTOP_SMTPS",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub smtps: Vec<ListenAddr>,

    /// LMTP listener: host:port or unix:PATH (repeatable).
    #[arg(
        long = "lmtp",
        env = "SAMOTOP_LMTP",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub lmtp: Vec<ListenAddr>,

    /// Serve one SMTP session on stdin/stdout, then exit (inetd, pipes).
    #[arg(long, env = "SAMOTOP_STDIO")]
    pub stdio: bool,

    /// Where mail goes: maildir:DIR | lmtp:unix:PATH | lmtp:HOST:PORT | smtp:HOST:PORT |
    /// stdout | null | sqlite:PATH | postgres://... (the inbox store) | http(s)://URL |
    /// exec:PROGRAM ARG... Repeatable: the message goes to each, and is accepted when all
    /// took it.
    #[arg(
        long,
        env = "SAMOTOP_DELIVER",
        value_name = "URI",
        default_value = "maildir:./maildir"
    )]
    pub deliver: Vec<Deliver>,

    #[command(flatten)]
    pub trigger: crate::trigger::TriggerArgs,

    /// Maildir layout: single (one Maildir) | per-recipient (DIR/domain/local/).
    #[arg(
        long,
        env = "SAMOTOP_MAILDIR_LAYOUT",
        value_name = "L",
        default_value = "single"
    )]
    pub maildir_layout: MaildirLayout,

    /// Per-recipient layout: lower-case local parts too (John@x and john@x share a mailbox).
    #[arg(long, env = "SAMOTOP_MAILDIR_FOLD_CASE")]
    pub maildir_fold_case: bool,

    /// Per-recipient layout: at most N mailboxes (a new one past it: 452 4.3.1). The
    /// per-recipient layout needs this or --accept-domain.
    #[arg(long, env = "SAMOTOP_MAX_MAILBOXES", value_name = "N")]
    pub max_mailboxes: Option<usize>,

    /// Maildir++ folder (e.g. .Junk) for messages a check quarantines (DMARC p=quarantine
    /// under --dmarc enforce); default: the inbox.
    #[arg(long, env = "SAMOTOP_QUARANTINE_FOLDER", value_name = "FOLDER")]
    pub quarantine_folder: Option<String>,

    /// Serve Prometheus metrics at http://ADDR/metrics (host:port, or a bare port for
    /// 127.0.0.1); also on the --http listener when both are given.
    #[arg(long, env = "SAMOTOP_METRICS", value_name = "ADDR")]
    pub metrics: Option<String>,

    /// Write one transcript per session (every command and reply, never message content)
    /// into DIR.
    #[arg(long, env = "SAMOTOP_TRANSCRIPT", value_name = "DIR")]
    pub transcript: Option<PathBuf>,

    /// Transcript files kept in --transcript DIR; the oldest go first.
    #[arg(
        long,
        env = "SAMOTOP_TRANSCRIPT_MAX_FILES",
        value_name = "N",
        default_value_t = 10_000
    )]
    pub transcript_max_files: usize,

    /// Bytes of transcripts kept in --transcript DIR; the oldest go first.
    #[arg(
        long,
        env = "SAMOTOP_TRANSCRIPT_MAX_BYTES",
        value_name = "N",
        default_value_t = 1 << 30
    )]
    pub transcript_max_bytes: u64,

    /// Bytes of one session's transcript; the rest of a longer session is left out.
    #[arg(
        long,
        env = "SAMOTOP_TRANSCRIPT_MAX_SESSION_BYTES",
        value_name = "N",
        default_value_t = 256 * 1024
    )]
    pub transcript_max_session_bytes: usize,

    /// Log format on standard error: text (for people) or json (one object per line, for
    /// log shippers).
    #[arg(
        long,
        env = "SAMOTOP_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Host name for the banner, the EHLO reply, the Received header and the authserv-id of
    /// Authentication-Results (default: this machine's host name).
    #[arg(long, env = "SAMOTOP_NAME", value_name = "NAME")]
    pub name: Option<String>,

    /// TLS certificate chain (PEM); enables STARTTLS and --smtps; reloaded on SIGHUP.
    #[arg(
        long,
        env = "SAMOTOP_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "SAMOTOP_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Generate a throw-away self-signed certificate for --name (for trying things out).
    #[arg(long, env = "SAMOTOP_TLS_SELF_SIGNED", conflicts_with = "tls_cert")]
    pub tls_self_signed: bool,

    /// Refuse MAIL before STARTTLS (530 5.7.0).
    #[arg(long, env = "SAMOTOP_REQUIRE_TLS")]
    pub require_tls: bool,

    /// SPF policy: off | tag (add Received-SPF) | reject (refuse fail, 451 on temperror).
    #[arg(
        long,
        env = "SAMOTOP_SPF",
        value_name = "POLICY",
        default_value = "tag"
    )]
    pub spf: String,

    /// DNS server for SPF, DKIM and DMARC look-ups, IP:PORT (default: the system resolver);
    /// one shared, caching resolver, 2 s per try, one retry.
    #[arg(long, env = "SAMOTOP_DNS", value_name = "ADDR")]
    pub dns: Option<std::net::SocketAddr>,

    /// DKIM: off | tag (verify every signature, report each in Authentication-Results).
    /// With it on, each message is spooled until its verdict (docs/AUTH.md, "Performance").
    #[arg(
        long,
        env = "SAMOTOP_DKIM",
        value_name = "POLICY",
        default_value = "tag"
    )]
    pub dkim: String,

    /// DMARC: off | tag (report it) | enforce (p=reject: 550 5.7.1 at end of data;
    /// p=quarantine: stored in --quarantine-folder). A temperror is never refused.
    #[arg(
        long,
        env = "SAMOTOP_DMARC",
        value_name = "POLICY",
        default_value = "tag"
    )]
    pub dmarc: String,

    /// Accept recipients only in these domains (repeatable; default: any).
    #[arg(
        long = "accept-domain",
        env = "SAMOTOP_ACCEPT_DOMAIN",
        value_name = "D",
        value_delimiter = ','
    )]
    pub accept_domain: Vec<String>,

    /// Rewrite recipients before delivery: REGEX=REPLACE, first match wins (repeatable).
    #[arg(long = "map", env = "SAMOTOP_MAP", value_name = "REGEX=REPLACE")]
    pub map: Vec<String>,

    /// Expect a PROXY v1/v2 header from these networks (repeatable CIDR).
    #[arg(
        long = "proxy-protocol-from",
        env = "SAMOTOP_PROXY_PROTOCOL_FROM",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub proxy_protocol_from: Vec<ipnet::IpNet>,

    /// Largest message in bytes (RFC 1870 SIZE).
    #[arg(
        long,
        env = "SAMOTOP_MAX_MESSAGE_SIZE",
        value_name = "N",
        default_value_t = 26_214_400
    )]
    pub max_message_size: u64,

    /// Recipients per transaction.
    #[arg(
        long,
        env = "SAMOTOP_MAX_RECIPIENTS",
        value_name = "N",
        default_value_t = 100
    )]
    pub max_recipients: usize,

    /// Connections at once; more get 421 4.3.2.
    #[arg(
        long,
        env = "SAMOTOP_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = 1000
    )]
    pub max_connections: usize,

    /// Connections at once from one IP (IPv6 counted per /64); more get 421 4.7.0; 0 = no
    /// per-IP limit.
    #[arg(
        long,
        env = "SAMOTOP_MAX_CONNECTIONS_PER_IP",
        value_name = "N",
        default_value_t = 20
    )]
    pub max_connections_per_ip: usize,

    /// Networks the per-IP connection limit does not count (repeatable CIDR; default
    /// loopback, 127.0.0.0/8 and ::1/128).
    #[arg(
        long = "per-ip-limit-exempt",
        env = "SAMOTOP_PER_IP_LIMIT_EXEMPT",
        value_name = "CIDR",
        value_delimiter = ',',
        default_values_t = samotop_server::loopback()
    )]
    pub per_ip_limit_exempt: Vec<ipnet::IpNet>,

    /// Messages (transactions) in one session; MAIL after that gets 421 4.7.0 and the
    /// client reconnects.
    #[arg(
        long,
        env = "SAMOTOP_MAX_MESSAGES_PER_SESSION",
        value_name = "N",
        default_value_t = 1000
    )]
    pub max_messages_per_session: usize,

    /// Recipients refused by policy or the backend in one session before 421 4.7.0 and
    /// close (a dictionary attack).
    #[arg(
        long,
        env = "SAMOTOP_MAX_REJECTED_RECIPIENTS",
        value_name = "N",
        default_value_t = 20
    )]
    pub max_rejected_recipients: usize,

    /// Transactions per minute from one IP (IPv6 per /64); 0 = no rate limit.
    #[arg(
        long,
        env = "SAMOTOP_MAX_MESSAGES_PER_MINUTE_PER_IP",
        value_name = "N",
        default_value_t = 0
    )]
    pub max_messages_per_minute_per_ip: u32,

    /// Bad commands per session before 421 4.7.0 and close.
    #[arg(
        long,
        env = "SAMOTOP_MAX_ERRORS",
        value_name = "N",
        default_value_t = 10
    )]
    pub max_errors: usize,

    /// Seconds to wait before the banner; clients that talk first get 554 5.5.1.
    #[arg(
        long,
        env = "SAMOTOP_BANNER_DELAY",
        value_name = "S",
        default_value_t = 0.0
    )]
    pub banner_delay: f64,

    /// Seconds to wait for a command (RFC 5321: 300).
    #[arg(
        long,
        env = "SAMOTOP_COMMAND_TIMEOUT",
        value_name = "S",
        default_value_t = 300.0
    )]
    pub command_timeout: f64,

    /// Seconds to wait for a block of message data (RFC 5321: 180).
    #[arg(
        long,
        env = "SAMOTOP_DATA_TIMEOUT",
        value_name = "S",
        default_value_t = 180.0
    )]
    pub data_timeout: f64,

    /// Seconds for each answer of a guard, check or backend (a hung disk, a slow DNS or
    /// webhook); over it 451 4.4.1.
    #[arg(
        long,
        env = "SAMOTOP_BACKEND_TIMEOUT",
        value_name = "S",
        default_value_t = 120.0
    )]
    pub backend_timeout: f64,

    /// Seconds for a whole TLS handshake (STARTTLS and --smtps).
    #[arg(
        long,
        env = "SAMOTOP_HANDSHAKE_TIMEOUT",
        value_name = "S",
        default_value_t = 30.0
    )]
    pub handshake_timeout: f64,

    /// Seconds a trusted proxy has to send its PROXY header.
    #[arg(
        long,
        env = "SAMOTOP_PROXY_HEADER_TIMEOUT",
        value_name = "S",
        default_value_t = 10.0
    )]
    pub proxy_header_timeout: f64,

    /// Seconds that sessions in flight get to finish after SIGTERM/SIGINT.
    #[arg(
        long,
        env = "SAMOTOP_SHUTDOWN_GRACE",
        value_name = "S",
        default_value_t = 30.0
    )]
    pub shutdown_grace: f64,

    /// Store messages with bare CR or LF as they are instead of refusing them (550 5.6.0).
    #[arg(long, env = "SAMOTOP_ACCEPT_BARE_NEWLINES")]
    pub accept_bare_newlines: bool,

    /// Serve the web inbox and its Mailpit-compatible API on ADDR (host:port, or a bare port
    /// for 127.0.0.1); needs --deliver sqlite:PATH or postgres://...
    #[arg(long, env = "SAMOTOP_HTTP", value_name = "ADDR")]
    pub http: Option<String>,

    /// Bearer token that every HTTP request must carry (also the Basic password, or
    /// /login?token=TOKEN for a browser).
    #[arg(long, env = "SAMOTOP_HTTP_TOKEN", value_name = "TOKEN")]
    pub http_token: Option<String>,

    /// Allow --http on a non-loopback address without --http-token.
    #[arg(long, env = "SAMOTOP_HTTP_PUBLIC")]
    pub http_public: bool,

    /// Inbox: remove messages older than S seconds (default 7 days; 0 keeps them).
    #[arg(
        long,
        env = "SAMOTOP_INBOX_MAX_AGE",
        value_name = "S",
        default_value_t = 604800
    )]
    pub inbox_max_age: u64,

    /// Inbox: keep at most N messages, the oldest go first (default 0: no limit).
    #[arg(
        long,
        env = "SAMOTOP_INBOX_MAX_MESSAGES",
        value_name = "N",
        default_value_t = 0
    )]
    pub inbox_max_messages: u64,

    /// Inbox: keep at most N bytes of mail, the oldest go first (default 0: no limit).
    #[arg(
        long,
        env = "SAMOTOP_INBOX_MAX_BYTES",
        value_name = "N",
        default_value_t = 0
    )]
    pub inbox_max_bytes: u64,

    /// Encryption at rest (S/MIME): `--encrypt-to` and its companions.
    #[command(flatten)]
    pub encrypt: crate::encrypt::EncryptArgs,
}

/// The `--deliver` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deliver {
    /// `maildir:DIR`.
    Maildir(PathBuf),
    /// `lmtp:unix:PATH` or `lmtp:HOST:PORT`.
    Lmtp(ListenAddr),
    /// `smtp:HOST:PORT`.
    Smtp(ListenAddr),
    /// `stdout`.
    Stdout,
    /// `null`.
    Null,
    /// `sqlite:PATH` or `postgres://...`: the inbox store.
    Inbox(String),
    /// `http://...` or `https://...`: a webhook.
    Webhook(String),
    /// `exec:PROGRAM ARG...`: a command.
    Exec(String),
}

impl FromStr for Deliver {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(dir) = s.strip_prefix("maildir:") {
            if dir.is_empty() {
                return Err("maildir: needs a directory, e.g. maildir:/mail".into());
            }
            Ok(Deliver::Maildir(PathBuf::from(dir)))
        } else if let Some(addr) = s.strip_prefix("lmtp:") {
            Ok(Deliver::Lmtp(addr.parse()?))
        } else if let Some(addr) = s.strip_prefix("smtp:") {
            Ok(Deliver::Smtp(addr.parse()?))
        } else if s == "stdout" {
            Ok(Deliver::Stdout)
        } else if s == "null" {
            Ok(Deliver::Null)
        } else if s.starts_with("sqlite:")
            || s.starts_with("postgres://")
            || s.starts_with("postgresql://")
        {
            Ok(Deliver::Inbox(s.to_string()))
        } else if s.starts_with("http://") || s.starts_with("https://") {
            Ok(Deliver::Webhook(s.to_string()))
        } else if let Some(command) = s.strip_prefix("exec:") {
            Ok(Deliver::Exec(command.to_string()))
        } else {
            Err(format!(
                "'{s}' is not maildir:DIR, lmtp:unix:PATH, lmtp:HOST:PORT, smtp:HOST:PORT, stdout, null, sqlite:PATH, postgres://..., http(s)://URL or exec:PROGRAM"
            ))
        }
    }
}

/// The `--log-format` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `[time LEVEL target] message`, for people.
    Text,
    /// One JSON object per line: ts, level, target, session (when the line is about one),
    /// msg.
    Json,
}

/// The `--maildir-layout` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MaildirLayout {
    /// One Maildir for all mail.
    Single,
    /// `DIR/<domain>/<local>/`, one copy per recipient.
    PerRecipient,
}

/// Seconds from the command line, checked.
pub fn seconds(name: &str, value: f64) -> Result<std::time::Duration, String> {
    if (0.0..1e9).contains(&value) {
        Ok(std::time::Duration::from_secs_f64(value))
    } else {
        Err(format!("--{name} must be a number of seconds, got {value}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            "127.0.0.1:25".parse(),
            Ok(ListenAddr::Tcp("127.0.0.1:25".into()))
        );
        assert_eq!("[::1]:25".parse(), Ok(ListenAddr::Tcp("[::1]:25".into())));
        assert_eq!("unix:/x".parse(), Ok(ListenAddr::Unix("/x".into())));
        assert!("25".parse::<ListenAddr>().is_err());
        assert!("host:port".parse::<ListenAddr>().is_err());
    }

    #[test]
    fn defaults_keep_every_limit_on() {
        let cli = Cli::try_parse_from(["samotop"]).expect("parses");
        assert_eq!(cli.max_connections_per_ip, 20);
        assert_eq!(cli.per_ip_limit_exempt, samotop_server::loopback());
        assert_eq!(cli.max_messages_per_session, 1000);
        assert_eq!(cli.name, None);
        // Every sender check tags; none refuses unless told to (docs/AUTH.md).
        assert_eq!(
            (cli.spf.as_str(), cli.dkim.as_str(), cli.dmarc.as_str()),
            ("tag", "tag", "tag")
        );
    }

    #[test]
    fn deliver() {
        assert_eq!("null".parse(), Ok(Deliver::Null));
        assert_eq!("maildir:/m".parse(), Ok(Deliver::Maildir("/m".into())));
        assert_eq!(
            "lmtp:unix:/run/dovecot/lmtp".parse(),
            Ok(Deliver::Lmtp(ListenAddr::Unix("/run/dovecot/lmtp".into())))
        );
        assert_eq!(
            "smtp:127.0.0.1:25".parse(),
            Ok(Deliver::Smtp(ListenAddr::Tcp("127.0.0.1:25".into())))
        );
        assert!("mbox:/x".parse::<Deliver>().is_err());
    }

    #[test]
    fn parses_flags() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
