//! The typed output of the command grammar.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// One SMTP or LMTP command line, parsed.
///
/// Verbs are case-insensitive on the wire; this type does not remember the case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `HELO domain` (RFC 5321 4.1.1.1).
    Helo(Host),
    /// `EHLO domain-or-address-literal` (RFC 5321 4.1.1.1).
    Ehlo(Host),
    /// `LHLO domain-or-address-literal` (RFC 2033 4.1).
    Lhlo(Host),
    /// `MAIL FROM:<reverse-path> [parameters]` (RFC 5321 4.1.1.2).
    Mail(ReversePath, MailParams),
    /// `RCPT TO:<forward-path> [parameters]` (RFC 5321 4.1.1.3).
    Rcpt(ForwardPath, RcptParams),
    /// `DATA` (RFC 5321 4.1.1.4).
    Data,
    /// `BDAT size [LAST]` (RFC 3030 2).
    Bdat {
        /// Octets of message data that follow the command line.
        size: u64,
        /// `LAST` was given: this is the final chunk.
        last: bool,
    },
    /// `RSET` (RFC 5321 4.1.1.5).
    Rset,
    /// `VRFY string` (RFC 5321 4.1.1.6).
    Vrfy(String),
    /// `EXPN string` (RFC 5321 4.1.1.7).
    Expn(String),
    /// `HELP [string]` (RFC 5321 4.1.1.8).
    Help(Option<String>),
    /// `NOOP [string]` (RFC 5321 4.1.1.9).
    Noop(Option<String>),
    /// `QUIT` (RFC 5321 4.1.1.10).
    Quit,
    /// `STARTTLS` (RFC 3207 4).
    StartTls,
}

impl Command {
    /// The verb of this command, upper case, as a client would send it.
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Helo(_) => "HELO",
            Command::Ehlo(_) => "EHLO",
            Command::Lhlo(_) => "LHLO",
            Command::Mail(..) => "MAIL",
            Command::Rcpt(..) => "RCPT",
            Command::Data => "DATA",
            Command::Bdat { .. } => "BDAT",
            Command::Rset => "RSET",
            Command::Vrfy(_) => "VRFY",
            Command::Expn(_) => "EXPN",
            Command::Help(_) => "HELP",
            Command::Noop(_) => "NOOP",
            Command::Quit => "QUIT",
            Command::StartTls => "STARTTLS",
        }
    }
}

/// The argument of HELO/EHLO/LHLO, and the domain part of a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A domain name, as written (RFC 5321 `Domain`, or a U-label domain per RFC 6531).
    Domain(String),
    /// `[1.2.3.4]`.
    Ipv4(Ipv4Addr),
    /// `[IPv6:...]`.
    Ipv6(Ipv6Addr),
    /// `[tag:content]`, a General-address-literal (RFC 5321 4.1.3).
    Other {
        /// The standardized tag, e.g. `X-Future`.
        tag: String,
        /// The literal content after the colon.
        content: String,
    },
}

impl Host {
    /// True when this is an address literal (`[...]`), not a domain name.
    pub fn is_literal(&self) -> bool {
        !matches!(self, Host::Domain(_))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::Ipv4(ip) => write!(f, "[{ip}]"),
            Host::Ipv6(ip) => write!(f, "[IPv6:{ip}]"),
            Host::Other { tag, content } => write!(f, "[{tag}:{content}]"),
        }
    }
}

/// A mailbox `local-part@domain` (RFC 5321 4.1.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    /// The local part exactly as written: a dot-atom, or a quoted string with its quotes and
    /// backslash escapes kept, so that it can be forwarded unchanged.
    pub local: String,
    /// The domain or address literal.
    pub domain: Host,
}

impl Mailbox {
    /// The local part with quoting removed (`"a b"` becomes `a b`, `"a\"b"` becomes `a"b`).
    pub fn local_unquoted(&self) -> String {
        let s = self.local.as_str();
        if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
            let mut out = String::with_capacity(s.len());
            let mut escaped = false;
            for c in s[1..s.len() - 1].chars() {
                if escaped {
                    out.push(c);
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else {
                    out.push(c);
                }
            }
            out
        } else {
            s.to_string()
        }
    }

    /// True when the local part or the domain has non-ASCII characters (RFC 6531).
    pub fn is_utf8(&self) -> bool {
        !self.local.is_ascii() || matches!(&self.domain, Host::Domain(d) if !d.is_ascii())
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// The argument of `MAIL FROM:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReversePath {
    /// `<>`: the null sender, used for bounces.
    Null,
    /// A mailbox (any source route was accepted and dropped).
    Mailbox(Mailbox),
}

impl fmt::Display for ReversePath {
    /// Formats the path without angle brackets; the null path is the empty string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => Ok(()),
            ReversePath::Mailbox(m) => m.fmt(f),
        }
    }
}

/// The argument of `RCPT TO:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ForwardPath {
    /// `<Postmaster>` with no domain (case-insensitive, RFC 5321 4.1.1.3).
    Postmaster,
    /// A mailbox (any source route was accepted and dropped).
    Mailbox(Mailbox),
}

impl fmt::Display for ForwardPath {
    /// Formats the path without angle brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardPath::Postmaster => f.write_str("Postmaster"),
            ForwardPath::Mailbox(m) => m.fmt(f),
        }
    }
}

/// The `BODY=` parameter of MAIL (RFC 6152, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Body {
    /// `BODY=7BIT`.
    SevenBit,
    /// `BODY=8BITMIME` (RFC 6152).
    EightBitMime,
    /// `BODY=BINARYMIME` (RFC 3030): only BDAT may carry the data.
    BinaryMime,
}

/// The `RET=` parameter of MAIL (RFC 3461 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ret {
    /// `RET=FULL`.
    Full,
    /// `RET=HDRS`.
    Hdrs,
}

/// Parameters of `MAIL FROM:`. Keywords are case-insensitive; each may appear once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=n` (RFC 1870): the client's estimate of the message size in octets.
    pub size: Option<u64>,
    /// `BODY=` (RFC 6152 / RFC 3030).
    pub body: Option<Body>,
    /// `SMTPUTF8` (RFC 6531 3.4).
    pub smtputf8: bool,
    /// `RET=` (RFC 3461 4.3).
    pub ret: Option<Ret>,
    /// `ENVID=` xtext-decoded (RFC 3461 4.4).
    pub envid: Option<String>,
    /// Any other `keyword[=value]`, keyword upper-cased, for the session to refuse (555 5.5.4).
    pub other: Vec<(String, Option<String>)>,
}

/// The `NOTIFY=` parameter of RCPT (RFC 3461 4.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Notify {
    /// `NEVER` (exclusive with the others).
    pub never: bool,
    /// `SUCCESS`.
    pub success: bool,
    /// `FAILURE`.
    pub failure: bool,
    /// `DELAY`.
    pub delay: bool,
}

/// Parameters of `RCPT TO:`. Keywords are case-insensitive; each may appear once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// `NOTIFY=` (RFC 3461 4.1).
    pub notify: Option<Notify>,
    /// `ORCPT=addr-type;xtext` (RFC 3461 4.2): the address type and the xtext-decoded address.
    pub orcpt: Option<(String, String)>,
    /// Any other `keyword[=value]`, keyword upper-cased, for the session to refuse (555 5.5.4).
    pub other: Vec<(String, Option<String>)>,
}
