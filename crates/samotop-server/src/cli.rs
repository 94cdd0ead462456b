//! The command line (DESIGN.md, "The `samotop` command line"). Every flag also reads from
//! `SAMOTOP_<FLAG>`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::Parser;

/// Receive mail over SMTP/LMTP and hand it, durably, to a Maildir, Dovecot, a smarthost or
/// stdout.
#[derive(Debug, Parser)]
#[command(name = "samotop", version, about, long_about = None)]
pub struct Cli {
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
    /// http(s)://URL | exec:PROGRAM ARG... | stdout | null. Repeatable: the message goes to
    /// each, and is accepted when all took it.
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

    /// Host name for the banner, the EHLO reply and the Received header.
    #[arg(
        long,
        env = "SAMOTOP_NAME",
        value_name = "NAME",
        default_value = "localhost"
    )]
    pub name: String,

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

    /// DNS server for SPF look-ups, IP:PORT (default: the system resolver).
    #[arg(long, env = "SAMOTOP_DNS", value_name = "ADDR")]
    pub dns: Option<std::net::SocketAddr>,

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

    /// Connections at once from one IP (IPv6 counted per /64); 0 = no per-IP limit.
    #[arg(
        long,
        env = "SAMOTOP_MAX_CONNECTIONS_PER_IP",
        value_name = "N",
        default_value_t = 0
    )]
    pub max_connections_per_ip: usize,

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
}

/// A listener address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `host:port`.
    Tcp(String),
    /// `unix:PATH`.
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
        } else if s.starts_with("http://") || s.starts_with("https://") {
            Ok(Deliver::Webhook(s.to_string()))
        } else if let Some(command) = s.strip_prefix("exec:") {
            Ok(Deliver::Exec(command.to_string()))
        } else {
            Err(format!(
                "'{s}' is not maildir:DIR, lmtp:unix:PATH, lmtp:HOST:PORT, smtp:HOST:PORT, http(s)://URL, exec:PROGRAM, stdout or null"
            ))
        }
    }
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
