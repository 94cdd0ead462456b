//! What the session knows: about the connection ([`SessionInfo`]) and about the mail
//! transaction in progress ([`Envelope`]).

use std::fmt;
use std::net::SocketAddr;

use samotop_parser::{ForwardPath, Host, MailParams, RcptParams, ReversePath};

/// The kind of peer address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A TCP peer (after PROXY protocol, the original client).
    Tcp(SocketAddr),
    /// A Unix-socket peer.
    Unix,
    /// Standard input/output.
    Stdio,
}

impl Peer {
    /// The peer's IP address, if it has one.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Peer::Tcp(a) => Some(a.ip()),
            _ => None,
        }
    }
}

impl fmt::Display for Peer {
    /// The IP address alone (never `ip:port`), or `unix` / `stdio`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "{}", a.ip()),
            Peer::Unix => f.write_str("unix"),
            Peer::Stdio => f.write_str("stdio"),
        }
    }
}

/// The negotiated TLS parameters of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// e.g. `TLS1.3`.
    pub version: String,
    /// e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
}

/// Which protocol the session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// SMTP (RFC 5321), with ESMTP extensions after EHLO.
    Smtp,
    /// LMTP (RFC 2033): LHLO, one reply per recipient after the data.
    Lmtp,
}

/// Facts about the connection, kept for the life of the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The peer (the original client when PROXY protocol is in use).
    pub peer: Peer,
    /// Our end of the connection, when known.
    pub local: Option<SocketAddr>,
    /// Our host name, for the banner, EHLO and Received.
    pub server_name: String,
    /// The peer's HELO/EHLO/LHLO argument, once given; forgotten at STARTTLS.
    pub helo: Option<Host>,
    /// True after EHLO or LHLO (ESMTP), false after HELO.
    pub extended: bool,
    /// Set once TLS is up (STARTTLS or implicit TLS).
    pub tls: Option<TlsInfo>,
    /// The protocol spoken.
    pub protocol: Protocol,
    /// A short unique id for logs and the Received header.
    pub id: String,
    /// The kind of listener the session came in on (`smtp`, `smtps`, `lmtp`, `stdio`), for
    /// metrics and logs. Default `smtp`.
    pub listener: &'static str,
}

impl SessionInfo {
    /// New session facts for a peer; the id is made unique per process.
    pub fn new(peer: Peer, server_name: impl Into<String>) -> Self {
        SessionInfo {
            peer,
            local: None,
            server_name: server_name.into(),
            helo: None,
            extended: false,
            tls: None,
            protocol: Protocol::Smtp,
            id: crate::id::next_id(),
            listener: "smtp",
        }
    }

    /// The RFC 3848 `with` keyword for the Received header: SMTP, ESMTP, ESMTPS, LMTP.
    pub fn with_protocol(&self) -> &'static str {
        match (self.protocol, self.extended, self.tls.is_some()) {
            (Protocol::Lmtp, _, false) => "LMTP",
            (Protocol::Lmtp, _, true) => "LMTPS",
            (Protocol::Smtp, false, false) => "SMTP",
            (Protocol::Smtp, false, true) => "SMTPS",
            (Protocol::Smtp, true, false) => "ESMTP",
            (Protocol::Smtp, true, true) => "ESMTPS",
        }
    }
}

/// A recipient as accepted at RCPT time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address the client gave.
    pub path: ForwardPath,
    /// Its parameters.
    pub params: RcptParams,
    /// Where to deliver: `local@domain` as given (or `Postmaster`), until a recipient map
    /// rewrites it (then it may be any string, e.g. a bare Dovecot user name).
    pub address: String,
}

impl Recipient {
    /// A recipient whose delivery address is the path as given.
    pub fn new(path: ForwardPath, params: RcptParams) -> Self {
        let address = path.to_string();
        Recipient {
            path,
            params,
            address,
        }
    }
}

/// One sender-authentication result, as `Authentication-Results` (RFC 8601) names it: a
/// method (`spf`, `dkim`, `dmarc`, `arc`), its result (`pass`, `fail`, `softfail`, `neutral`,
/// `none`, `temperror`, `permerror`, `policy`), an optional reason, and properties such as
/// `smtp.mailfrom=example.org` or `header.d=example.org`.
///
/// Guards and checks add them to [`Envelope::auth`] (the SPF guard at MAIL, the DKIM/DMARC
/// checks at the end of the data); stores, webhooks and metrics read them there.
///
/// ```
/// use samotop_core::AuthResult;
/// let spf = AuthResult::new("spf", "pass").property("smtp.mailfrom", "example.org");
/// assert_eq!(spf.get("smtp.mailfrom"), Some("example.org"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthResult {
    /// The method, lower case: `spf`, `dkim`, `dmarc`, `arc`.
    pub method: String,
    /// The result, lower case: `pass`, `fail`, `none`, `temperror`...
    pub result: String,
    /// Why, in words (`reason=` in the header).
    pub reason: Option<String>,
    /// `(ptype.property, value)` pairs, in order: `("smtp.mailfrom", "example.org")`.
    pub properties: Vec<(String, String)>,
}

impl AuthResult {
    /// A result without reason or properties.
    pub fn new(method: impl Into<String>, result: impl Into<String>) -> Self {
        AuthResult {
            method: method.into(),
            result: result.into(),
            reason: None,
            properties: Vec::new(),
        }
    }

    /// Adds a property, e.g. `("header.from", "example.org")`.
    pub fn property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((name.into(), value.into()));
        self
    }

    /// Sets the reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// The value of the first property with this name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The mail transaction in progress: sender, recipients accepted so far, the header fields
/// that guards asked to add, and what the session learnt about the message on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Envelope {
    /// The MAIL FROM path.
    pub sender: ReversePath,
    /// The MAIL FROM parameters.
    pub params: MailParams,
    /// Recipients accepted so far, in RCPT order.
    pub recipients: Vec<Recipient>,
    /// Header fields to prepend, each a complete `Name: value` without the final CR LF
    /// (e.g. `Received-SPF: pass ...`), added by guards and checks.
    pub headers: Vec<String>,
    /// Per-session-unique id of this transaction (the session id plus a counter).
    pub id: String,
    /// Sender-authentication results so far: SPF from MAIL on, DKIM/DMARC/ARC once the
    /// end-of-data checks ran.
    pub auth: Vec<AuthResult>,
    /// A check asked that the message be filed as junk (DMARC `p=quarantine`): a backend with
    /// a junk folder (the Maildir's `--quarantine-folder`) stores it there.
    pub quarantine: bool,
    /// The identity of the message across retries, set before
    /// [`Transaction::begin`](crate::Transaction::begin) when the client's header section
    /// arrived whole: SHA-256 over the sender and the header section as received. The same
    /// message sent again (a client retrying after a 4xx) has the same digest; a backend that
    /// delivered some recipients of it already can skip them (no duplicate storm).
    pub digest: Option<[u8; 32]>,
}

impl Envelope {
    /// A new transaction for a sender.
    pub fn new(sender: ReversePath, params: MailParams, id: String) -> Self {
        Envelope {
            sender,
            params,
            recipients: Vec::new(),
            headers: Vec::new(),
            id,
            auth: Vec::new(),
            quarantine: false,
            digest: None,
        }
    }
}
