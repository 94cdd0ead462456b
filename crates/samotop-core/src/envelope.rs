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

/// The mail transaction in progress: sender, recipients accepted so far, and the header
/// fields that guards asked to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The MAIL FROM path.
    pub sender: ReversePath,
    /// The MAIL FROM parameters.
    pub params: MailParams,
    /// Recipients accepted so far, in RCPT order.
    pub recipients: Vec<Recipient>,
    /// Header fields to prepend, each a complete `Name: value` without CR LF (e.g.
    /// `Received-SPF: pass ...`), added by guards.
    pub headers: Vec<String>,
    /// Per-session-unique id of this transaction (the session id plus a counter).
    pub id: String,
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
        }
    }
}
