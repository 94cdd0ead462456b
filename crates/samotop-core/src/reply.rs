//! SMTP replies with enhanced status codes, and the table of every reply Samotop sends.
//!
//! Reply codes live here and nowhere else: the session, the driver, the backends and the
//! server refer to these constants and builders.
//!
//! Two types: a [`Reply`] is anything a server may say; a [`Refusal`] is a reply that says
//! no (4xx or 5xx) and nothing else. Guards and backends answer with a `Refusal`, so a
//! "reject" with a `250` cannot be written: the constants are checked when they are
//! compiled, and a code that arrives at run time (a downstream server's odd `354` to `RCPT`)
//! becomes [`DELIVERY_FAILED`] with an error in the log.

use std::borrow::Cow;
use std::fmt;

use crate::envelope::Protocol;

/// One SMTP reply: a three-digit code, an optional enhanced status code (RFC 3463, RFC 2034)
/// and a human text. A text with `\n` in it is sent as a multi-line reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    enhanced: Option<[u16; 3]>,
    text: Cow<'static, str>,
}

impl Reply {
    /// A reply with an enhanced status code, e.g. `Reply::new(250, [2, 1, 0], "Sender OK")`.
    pub const fn new(code: u16, enhanced: [u16; 3], text: &'static str) -> Self {
        Reply {
            code,
            enhanced: Some(enhanced),
            text: Cow::Borrowed(text),
        }
    }

    /// A reply without an enhanced code (the greeting, EHLO, 354: RFC 2034 gives them none).
    pub const fn plain(code: u16, text: &'static str) -> Self {
        Reply {
            code,
            enhanced: None,
            text: Cow::Borrowed(text),
        }
    }

    /// A reply with a text made at run time. CR and LF in the text are neutralised when written,
    /// except that `\n` separates the lines of a multi-line reply. A code outside 200..=599 is
    /// written as 451 (see [`write_to`](Reply::write_to)).
    pub fn with_text(code: u16, enhanced: Option<[u16; 3]>, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced,
            text: Cow::Owned(text.into()),
        }
    }

    /// This reply with another text, same codes.
    pub fn text(self, text: impl Into<String>) -> Self {
        Reply {
            text: Cow::Owned(text.into()),
            ..self
        }
    }

    /// The three-digit reply code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The enhanced status code, if any.
    pub fn enhanced(&self) -> Option<[u16; 3]> {
        self.enhanced
    }

    /// The human text (lines separated by `\n`).
    pub fn message(&self) -> &str {
        &self.text
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        self.code / 100 == 2
    }

    /// 3xx: go on (354).
    pub fn is_intermediate(&self) -> bool {
        self.code / 100 == 3
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        self.code / 100 == 4
    }

    /// 5xx: do not retry.
    pub fn is_permanent(&self) -> bool {
        self.code / 100 == 5
    }

    /// Appends the reply in wire form (each line ends in CR LF) to `out`. A code outside
    /// 200..=599 cannot be sent: it is written as 451.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let code = if (200..=599).contains(&self.code) {
            self.code
        } else {
            451
        };
        let code = digits3(code);
        let mut lines = self.text.split('\n').peekable();
        while let Some(line) = lines.next() {
            let last = lines.peek().is_none();
            out.extend_from_slice(&code);
            out.push(if last { b' ' } else { b'-' });
            if let Some([a, b, c]) = self.enhanced {
                push_number(out, a);
                out.push(b'.');
                push_number(out, b);
                out.push(b'.');
                push_number(out, c);
                out.push(b' ');
            }
            // A peer-supplied fragment must never end the line early: drop CR and NUL.
            let start = out.len();
            out.extend_from_slice(line.as_bytes());
            for b in &mut out[start..] {
                if *b == b'\r' || *b == 0 {
                    *b = b' ';
                }
            }
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The reply in wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text.len() + 16);
        self.write_to(&mut out);
        out
    }
}

fn digits3(n: u16) -> [u8; 3] {
    [
        b'0' + (n / 100 % 10) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]
}

fn push_number(out: &mut Vec<u8>, n: u16) {
    if n >= 100 {
        out.push(b'0' + (n / 100 % 10) as u8);
    }
    if n >= 10 {
        out.push(b'0' + (n / 10 % 10) as u8);
    }
    out.push(b'0' + (n % 10) as u8);
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some([a, b, c]) = self.enhanced {
            write!(f, " {a}.{b}.{c}")?;
        }
        write!(f, " {}", self.text.replace('\n', " / "))
    }
}

/// A reply that refuses: 4xx (try again later) or 5xx (do not retry), never anything else.
///
/// Guards, checks and backends say "no" with a `Refusal`. The table's constants are checked
/// when they are compiled (`Refusal::new(250, ...)` does not build); a reply that arrives at
/// run time, such as a downstream server's, goes through [`Refusal::from_reply`], which turns
/// anything that is not 4xx/5xx into [`DELIVERY_FAILED`] and logs an error.
///
/// ```
/// use samotop_core::{Refusal, Reply, reply};
///
/// const NO_SUCH_USER: Refusal = Refusal::new(550, [5, 1, 1], "No such user");
/// assert_eq!(NO_SUCH_USER.code(), 550);
///
/// // A downstream server that answers RCPT with 354 does not get that to our client:
/// let odd = Refusal::from_reply(Reply::plain(354, "go ahead"));
/// assert_eq!(odd, reply::DELIVERY_FAILED);
/// ```
#[derive(Debug, Clone)]
pub struct Refusal(Reply, Option<&'static str>);

/// Two refusals are equal when their replies are; who refused does not count.
impl PartialEq for Refusal {
    fn eq(&self, other: &Refusal) -> bool {
        self.0 == other.0
    }
}

impl Eq for Refusal {}

impl Refusal {
    /// A refusal from the table. Only 4xx and 5xx codes build, with an enhanced code of the
    /// same class (`4.x.x` for 4xx): anything else stops the compilation of a `const`.
    pub const fn new(code: u16, enhanced: [u16; 3], text: &'static str) -> Self {
        assert!(
            code >= 400 && code <= 599,
            "a refusal is a 4xx or 5xx reply"
        );
        assert!(
            enhanced[0] == code / 100,
            "the enhanced code must be of the reply's class"
        );
        Refusal(Reply::new(code, enhanced, text), None)
    }

    /// A refusal with a text made at run time: see [`from_reply`](Refusal::from_reply).
    pub fn with_text(code: u16, enhanced: Option<[u16; 3]>, text: impl Into<String>) -> Self {
        Refusal::from_reply(Reply::with_text(code, enhanced, text))
    }

    /// A reply that is meant to refuse, such as a downstream server's answer.
    ///
    /// A 4xx or 5xx stays as it is (an enhanced code of another class is dropped: RFC 3463 2
    /// wants the classes to agree). Anything else (2xx, 3xx, nonsense) cannot refuse: it
    /// becomes [`DELIVERY_FAILED`], `451 4.3.0`, and the odd reply is logged as an error.
    pub fn from_reply(reply: Reply) -> Self {
        if !(400..=599).contains(&reply.code) {
            log::error!("a refusal cannot be \"{reply}\"; answering {DELIVERY_FAILED} instead");
            return DELIVERY_FAILED;
        }
        let class = reply.code / 100;
        match reply.enhanced {
            Some([c, ..]) if c != class => Refusal(
                Reply {
                    enhanced: None,
                    ..reply
                },
                None,
            ),
            _ => Refusal(reply, None),
        }
    }

    /// This refusal with another text, same codes.
    pub fn text(self, text: impl Into<String>) -> Self {
        Refusal(self.0.text(text), self.1)
    }

    /// The same refusal made temporary: a 5xx becomes the 4xx of the same kind (`550 5.1.1`
    /// becomes `450 4.1.1`; RFC 3463 subjects and details carry over).
    pub fn transient(self) -> Self {
        if self.is_transient() {
            return self;
        }
        let Reply {
            code,
            enhanced,
            text,
        } = self.0.clone();
        Refusal(
            Reply {
                code: code - 100,
                enhanced: enhanced.map(|[_, s, d]| [4, s, d]),
                text,
            },
            self.1,
        )
    }

    /// This refusal, said by `source` (a guard's or check's [`name`](crate::Guard::name)),
    /// unless another source was named already. For metrics and logs; not sent.
    pub fn by(mut self, source: &'static str) -> Self {
        self.1.get_or_insert(source);
        self
    }

    /// Who refused, when a guard or check said so.
    pub fn source(&self) -> Option<&'static str> {
        self.1
    }

    /// The reply this refusal is.
    pub fn reply(&self) -> &Reply {
        &self.0
    }

    /// The reply this refusal is.
    pub fn into_reply(self) -> Reply {
        self.0
    }

    /// The three-digit code, 400..=599.
    pub fn code(&self) -> u16 {
        self.0.code
    }

    /// The enhanced status code, if any.
    pub fn enhanced(&self) -> Option<[u16; 3]> {
        self.0.enhanced
    }

    /// The human text.
    pub fn message(&self) -> &str {
        self.0.message()
    }

    /// 4xx: the client should try again later.
    pub fn is_transient(&self) -> bool {
        self.0.is_transient()
    }

    /// 5xx: the client should not retry.
    pub fn is_permanent(&self) -> bool {
        self.0.is_permanent()
    }
}

impl From<Refusal> for Reply {
    fn from(refusal: Refusal) -> Reply {
        refusal.0
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

// ---- Replies made at run time -----------------------------------------------------------

/// 220: the greeting, `220 mx.example.org ESMTP Samotop ready` (LMTP: `LMTP`).
pub fn greeting(server_name: &str, protocol: Protocol) -> Reply {
    let kind = match protocol {
        Protocol::Smtp => "ESMTP",
        Protocol::Lmtp => "LMTP",
    };
    Reply::with_text(220, None, format!("{server_name} {kind} Samotop ready"))
}

/// 250: the answer to HELO, the server's name.
pub fn helo(server_name: &str) -> Reply {
    Reply::with_text(250, None, server_name)
}

/// 250: the answer to EHLO and LHLO, the name and then one extension keyword per line.
pub fn ehlo<'a>(server_name: &str, keywords: impl IntoIterator<Item = &'a str>) -> Reply {
    let mut text = format!("{server_name} greets you");
    for keyword in keywords {
        text.push('\n');
        text.push_str(keyword);
    }
    Reply::with_text(250, None, text)
}

/// 250 2.0.0: the message is durably stored (SMTP, after the data): `Message accepted as ID`.
pub fn message_accepted(id: &str) -> Reply {
    MESSAGE_ACCEPTED.text(format!("Message accepted as {id}"))
}

/// 250 2.0.0: one recipient's copy is durably stored (LMTP, after the data, one per
/// recipient; RFC 3463: X.0.0, the message, not X.1.5 which speaks of the address).
pub fn delivered(recipient: &str) -> Reply {
    DELIVERED.text(format!("<{recipient}> delivered"))
}

/// 501 5.5.4 with the usage the parser expected, e.g. `MAIL FROM:<reverse-path> [parameters]`.
pub fn syntax_error(expected: &str) -> Refusal {
    SYNTAX_ERROR.text(format!("Syntax error, expected: {expected}"))
}

/// 555 5.5.4 naming the parameter: `Parameter NOTIFY not supported`.
pub fn unsupported_parameter(keyword: &str) -> Refusal {
    UNSUPPORTED_PARAMETER.text(format!("Parameter {keyword} not supported"))
}

/// A downstream server's reply relayed to our client as a refusal: the same, except that
/// `421` (which would close our client's session) becomes `451`, and a reply that is no
/// refusal (a `354` to `RCPT`) becomes [`DELIVERY_FAILED`] (see [`Refusal::from_reply`]).
///
/// ```
/// use samotop_core::{Reply, reply};
/// let r = reply::relayed(Reply::new(421, [4, 4, 2], "Shutting down"));
/// assert_eq!((r.code(), r.enhanced()), (451, Some([4, 4, 2])));
/// assert_eq!(reply::relayed(Reply::plain(354, "go ahead")), reply::DELIVERY_FAILED);
/// ```
pub fn relayed(reply: Reply) -> Refusal {
    if reply.code == 421 {
        return Refusal::from_reply(Reply { code: 451, ..reply });
    }
    Refusal::from_reply(reply)
}

/// The refusal for a failed write to our own storage: `452 4.3.1` when the disk or quota is
/// full (`ENOSPC`, `EDQUOT`), else [`DELIVERY_FAILED`].
pub fn for_io_error(error: &std::io::Error) -> Refusal {
    match error.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => INSUFFICIENT_STORAGE,
        _ => DELIVERY_FAILED,
    }
}

// ---- The reply table --------------------------------------------------------------------

/// 221 2.0.0: answer to QUIT.
pub const BYE: Reply = Reply::new(221, [2, 0, 0], "Bye");
/// 250 2.0.0: RSET, NOOP.
pub const OK: Reply = Reply::new(250, [2, 0, 0], "OK");
/// 250 2.1.0: MAIL accepted.
pub const SENDER_OK: Reply = Reply::new(250, [2, 1, 0], "Sender OK");
/// 250 2.1.5: RCPT accepted.
pub const RECIPIENT_OK: Reply = Reply::new(250, [2, 1, 5], "Recipient OK");
/// 354: go ahead with DATA.
pub const START_DATA: Reply = Reply::plain(354, "End data with <CR><LF>.<CR><LF>");
/// 250 2.0.0: the message is durably stored; see [`message_accepted`].
pub const MESSAGE_ACCEPTED: Reply = Reply::new(250, [2, 0, 0], "Message accepted");
/// 250 2.0.0: one LMTP recipient's copy is durably stored; see [`delivered`].
pub const DELIVERED: Reply = Reply::new(250, [2, 0, 0], "Delivered");
/// 250 2.0.0: a non-final BDAT chunk was received.
pub const CHUNK_OK: Reply = Reply::new(250, [2, 0, 0], "Chunk received");
/// 252 2.5.0: VRFY is not answered (RFC 5321 3.5.3).
pub const CANNOT_VRFY: Reply = Reply::new(
    252,
    [2, 5, 0],
    "Cannot VRFY user, but will accept message and attempt delivery",
);
/// 214 2.0.0: HELP.
pub const HELP: Reply = Reply::new(
    214,
    [2, 0, 0],
    "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS",
);
/// 220 2.0.0: go ahead with the TLS handshake (RFC 3207).
pub const READY_FOR_TLS: Reply = Reply::new(220, [2, 0, 0], "Ready to start TLS");

/// 421 4.4.2: no command or data within the timeout (RFC 5321 4.5.3.2).
pub const TIMEOUT: Refusal = Refusal::new(421, [4, 4, 2], "Timeout, closing connection");
/// 421 4.7.0: the session made too many errors.
pub const TOO_MANY_ERRORS: Refusal =
    Refusal::new(421, [4, 7, 0], "Too many errors, closing connection");
/// 421 4.7.0: the session had too many recipients refused (a dictionary attack, or a very
/// stale list); the client may reconnect.
pub const TOO_MANY_REJECTED_RECIPIENTS: Refusal = Refusal::new(
    421,
    [4, 7, 0],
    "Too many rejected recipients, closing connection",
);
/// 421 4.3.2: the server is at its connection limit.
pub const TOO_MANY_CONNECTIONS: Refusal =
    Refusal::new(421, [4, 3, 2], "Too many connections, try again later");
/// 421 4.7.0: this peer has too many connections open.
pub const TOO_MANY_CONNECTIONS_FROM_IP: Refusal =
    Refusal::new(421, [4, 7, 0], "Too many connections from your address");
/// 421 4.7.0: one session ran its limit of transactions; the client may reconnect.
pub const TOO_MANY_TRANSACTIONS: Refusal = Refusal::new(
    421,
    [4, 7, 0],
    "Too many transactions in one session, please reconnect",
);
/// 421 4.3.2: the server is shutting down.
pub const SHUTTING_DOWN: Refusal =
    Refusal::new(421, [4, 3, 2], "Service shutting down, try again later");
/// 421 4.4.1: a connect check did not answer in time; the connection is closed.
pub const NOT_READY: Refusal = Refusal::new(421, [4, 4, 1], "Service not ready, try again later");
/// 451 4.3.0: the message could not be stored; the client should retry.
pub const DELIVERY_FAILED: Refusal =
    Refusal::new(451, [4, 3, 0], "Local error in processing, try again later");
/// 451 4.4.1: a guard, check or backend did not answer within the backend timeout (a hung
/// disk, a slow webhook): the client retries later, the session goes on.
pub const BACKEND_TIMEOUT: Refusal = Refusal::new(
    451,
    [4, 4, 1],
    "Delivery backend did not answer in time, try again later",
);
/// 451 4.4.1: the downstream server cannot be reached or does not answer (RFC 3463).
pub const DOWNSTREAM_UNAVAILABLE: Refusal = Refusal::new(
    451,
    [4, 4, 1],
    "Delivery server unavailable, try again later",
);
/// 451 4.4.2: the connection to the downstream server was lost (RFC 3463).
pub const DOWNSTREAM_LOST: Refusal = Refusal::new(
    451,
    [4, 4, 2],
    "Connection to the delivery server lost, try again later",
);
/// 451 4.3.2: the downstream server already has as many transactions from us as we allow;
/// the client retries later.
pub const DOWNSTREAM_BUSY: Refusal =
    Refusal::new(451, [4, 3, 2], "Delivery server busy, try again later");
/// 451 4.7.1: this peer sends too many messages.
pub const RATE_LIMITED: Refusal = Refusal::new(
    451,
    [4, 7, 1],
    "Too many messages from your address, slow down",
);
/// 452 4.5.3: recipient limit of the transaction reached (RFC 5321 4.5.3.1.10).
pub const TOO_MANY_RECIPIENTS: Refusal = Refusal::new(452, [4, 5, 3], "Too many recipients");
/// 452 4.3.1: out of storage.
pub const INSUFFICIENT_STORAGE: Refusal =
    Refusal::new(452, [4, 3, 1], "Insufficient system storage");
/// 454 4.7.0: STARTTLS is not available (no certificate configured).
pub const TLS_NOT_AVAILABLE: Refusal = Refusal::new(454, [4, 7, 0], "TLS not available");

/// 500 5.5.2: unknown command.
pub const UNRECOGNIZED: Refusal = Refusal::new(500, [5, 5, 2], "Command not recognized");
/// 500 5.5.2: a command line longer than the limit.
pub const LINE_TOO_LONG: Refusal = Refusal::new(500, [5, 5, 2], "Line too long");
/// 500 5.5.1: HELO/EHLO on an LMTP listener (RFC 2033 4.1).
pub const LMTP_NEEDS_LHLO: Refusal = Refusal::new(500, [5, 5, 1], "This is LMTP, say LHLO");
/// 500 5.5.2: HTTP (or other non-SMTP talk) on an SMTP port; the connection is closed.
pub const NOT_SMTP: Refusal =
    Refusal::new(500, [5, 5, 2], "This is an SMTP server, closing connection");
/// 500 5.5.2: a BDAT chunk size we cannot take.
pub const BAD_CHUNK: Refusal = Refusal::new(500, [5, 5, 2], "Invalid BDAT chunk");
/// 501 5.5.4: syntax error in the arguments; see [`syntax_error`].
pub const SYNTAX_ERROR: Refusal = Refusal::new(501, [5, 5, 4], "Syntax error in parameters");
/// 501 5.1.7: malformed sender address.
pub const BAD_SENDER_SYNTAX: Refusal = Refusal::new(501, [5, 1, 7], "Bad sender address syntax");
/// 501 5.1.3: malformed recipient address.
pub const BAD_RECIPIENT_SYNTAX: Refusal =
    Refusal::new(501, [5, 1, 3], "Bad recipient address syntax");
/// 501 5.5.4: STARTTLS takes no arguments.
pub const STARTTLS_NO_ARGS: Refusal = Refusal::new(501, [5, 5, 4], "STARTTLS takes no arguments");
/// 501 5.5.4: invalid HELO/EHLO/LHLO argument.
pub const BAD_HELO: Refusal = Refusal::new(501, [5, 5, 4], "Invalid domain name");
/// 502 5.5.1: a command we do not implement (EXPN).
pub const NOT_IMPLEMENTED: Refusal = Refusal::new(502, [5, 5, 1], "Command not implemented");
/// 502 5.5.1: BDAT when CHUNKING is not offered (the backend cannot take it).
pub const CHUNKING_NOT_OFFERED: Refusal =
    Refusal::new(502, [5, 5, 1], "BDAT not available, use DATA");
/// 503 5.5.1: HELO/EHLO first.
pub const NEED_HELO: Refusal = Refusal::new(503, [5, 5, 1], "Send HELO/EHLO first");
/// 503 5.5.1: LHLO first.
pub const NEED_LHLO: Refusal = Refusal::new(503, [5, 5, 1], "Send LHLO first");
/// 503 5.5.1: MAIL first.
pub const NEED_MAIL: Refusal = Refusal::new(503, [5, 5, 1], "Send MAIL first");
/// 503 5.5.1: MAIL inside a transaction.
pub const NESTED_MAIL: Refusal = Refusal::new(503, [5, 5, 1], "Sender already specified");
/// 503 5.5.1: RCPT once BDAT chunks have come (RFC 3030 2).
pub const RCPT_AFTER_BDAT: Refusal = Refusal::new(503, [5, 5, 1], "RCPT not allowed after BDAT");
/// 503 5.5.1: DATA/BDAT without an accepted recipient.
pub const NEED_RCPT: Refusal = Refusal::new(503, [5, 5, 1], "Send RCPT first");
/// 554 5.5.1: DATA when every recipient was refused (RFC 5321 3.3).
pub const NO_VALID_RECIPIENTS: Refusal = Refusal::new(554, [5, 5, 1], "No valid recipients");
/// 503 5.5.1: DATA after BDAT, or DATA with BODY=BINARYMIME.
pub const DATA_AFTER_BDAT: Refusal = Refusal::new(
    503,
    [5, 5, 1],
    "DATA not allowed in a BDAT transaction or with BINARYMIME",
);
/// 503 5.5.1: STARTTLS inside TLS.
pub const ALREADY_TLS: Refusal = Refusal::new(503, [5, 5, 1], "TLS already active");
/// 503 5.5.1: STARTTLS inside a mail transaction.
pub const STARTTLS_IN_TRANSACTION: Refusal =
    Refusal::new(503, [5, 5, 1], "STARTTLS not allowed in a mail transaction");
/// 530 5.7.0: `--require-tls` and no STARTTLS yet.
pub const TLS_REQUIRED: Refusal =
    Refusal::new(530, [5, 7, 0], "Must issue a STARTTLS command first");
/// 550 5.6.0: bare CR or LF in DATA or BDAT content (RFC 5321 2.3.8; SMTP smuggling defence).
pub const BARE_NEWLINE: Refusal = Refusal::new(
    550,
    [5, 6, 0],
    "Message contains bare CR or LF, line endings must be CRLF",
);
/// 550 5.7.1: recipient domain is not ours.
pub const RELAY_DENIED: Refusal = Refusal::new(550, [5, 7, 1], "Relay not permitted");
/// 550 5.7.1: the message is refused by policy after its content was checked (DMARC
/// `p=reject`, a user's check).
pub const POLICY_REJECTED: Refusal = Refusal::new(550, [5, 7, 1], "Message refused by policy");
/// 550 5.7.1 at RCPT: the recipient has no encryption certificate and
/// `--encrypt-missing refuse` (samotop-smime's `Encrypt`).
pub const NO_CERTIFICATE: Refusal = Refusal::new(
    550,
    [5, 7, 1],
    "Recipient has no encryption certificate, mail to it is not accepted",
);
/// 550 5.1.1: no such recipient.
pub const NO_SUCH_USER: Refusal = Refusal::new(550, [5, 1, 1], "No such user");
/// 550 5.1.3: recipient name cannot be used as a mailbox.
pub const BAD_MAILBOX_NAME: Refusal = Refusal::new(
    550,
    [5, 1, 3],
    "Recipient address cannot be used as a mailbox",
);
/// 552 5.3.4: message bigger than the limit (RFC 1870).
pub const MESSAGE_TOO_BIG: Refusal = Refusal::new(
    552,
    [5, 3, 4],
    "Message size exceeds fixed maximum message size",
);
/// 553 5.6.7: non-ASCII address without SMTPUTF8 (RFC 6531 3.5).
pub const NEED_SMTPUTF8: Refusal = Refusal::new(
    553,
    [5, 6, 7],
    "Non-ASCII addresses require the SMTPUTF8 parameter",
);
/// 553 5.6.7: a UTF-8 address that the next hop cannot take (it lacks SMTPUTF8).
pub const NEXT_HOP_NO_SMTPUTF8: Refusal = Refusal::new(
    553,
    [5, 6, 7],
    "The next hop does not accept UTF-8 addresses",
);
/// 554 5.6.3: binary content the next hop cannot take (it lacks BINARYMIME/CHUNKING).
pub const BINARY_NOT_FORWARDABLE: Refusal = Refusal::new(
    554,
    [5, 6, 3],
    "Binary content (BODY=BINARYMIME) cannot be forwarded, send it as 8BITMIME",
);
/// 554 5.5.1: the client talked before the greeting; the connection is closed.
pub const EARLY_TALKER: Refusal = Refusal::new(
    554,
    [5, 5, 1],
    "Protocol error: talking before the greeting",
);
/// 554 5.7.1: the connection is refused by policy.
pub const CONNECTION_REFUSED: Refusal = Refusal::new(554, [5, 7, 1], "Connection refused");
/// 550 5.7.23: SPF `fail`, the sender's domain does not permit the peer's IP (RFC 7208 8.4,
/// RFC 7372 3.2). The SPF guard replaces the text with the domain and the IP.
pub const SPF_FAIL: Refusal = Refusal::new(550, [5, 7, 23], "SPF check failed");
/// 451 4.7.24: SPF `temperror`, the check could not be completed (RFC 7208 8.6, RFC 7372 3.2).
pub const SPF_TEMPERROR: Refusal = Refusal::new(
    451,
    [4, 7, 24],
    "SPF check could not be completed, try again later",
);
/// 550 5.7.24: SPF `permerror` refused (RFC 7372 3.2), when a policy refuses it.
pub const SPF_PERMERROR: Refusal = Refusal::new(550, [5, 7, 24], "SPF record is invalid");
/// 555 5.5.4: a MAIL/RCPT parameter we do not offer (RFC 5321 4.1.1.11); see
/// [`unsupported_parameter`].
pub const UNSUPPORTED_PARAMETER: Refusal = Refusal::new(555, [5, 5, 4], "Unsupported parameter");

// ---- The webhook and command backends (samotop-trigger) ---------------------------------

/// 554 5.6.0: the webhook refused the message for good (a 4xx other than 404, 410, 413,
/// 429). RFC 3463 X.6.0: other media error.
pub const WEBHOOK_REFUSED: Refusal = Refusal::new(554, [5, 6, 0], "Message refused by the webhook");
/// 451 4.4.1: the webhook cannot be reached (connection refused, no route, DNS).
pub const WEBHOOK_UNREACHABLE: Refusal =
    Refusal::new(451, [4, 4, 1], "Webhook unreachable, try again later");
/// 451 4.4.1: the webhook did not answer within its timeout.
pub const WEBHOOK_TIMEOUT: Refusal = Refusal::new(
    451,
    [4, 4, 1],
    "Webhook did not answer in time, try again later",
);
/// 451 4.4.2: the connection to the webhook broke during the request.
pub const WEBHOOK_LOST: Refusal = Refusal::new(
    451,
    [4, 4, 2],
    "Connection to the webhook lost, try again later",
);
/// 451 4.4.5: the webhook answered 429 Too Many Requests (RFC 3463 X.4.5: congestion).
pub const WEBHOOK_BUSY: Refusal = Refusal::new(451, [4, 4, 5], "Webhook busy, try again later");
/// 451 4.4.0: the webhook answered 5xx.
pub const WEBHOOK_FAILED: Refusal = Refusal::new(451, [4, 4, 0], "Webhook failed, try again later");
/// 451 4.3.5: the webhook answered something we do not take as an answer (1xx, a 3xx
/// redirect: redirects are not followed, the URL wants fixing). RFC 3463 X.3.5: system
/// incorrectly configured; temporary so that nothing is lost while it is fixed.
pub const WEBHOOK_MISCONFIGURED: Refusal = Refusal::new(
    451,
    [4, 3, 5],
    "Webhook answered with a redirect or an odd status, try again later",
);
/// 554 5.3.0: the command failed (an exit code that is not one of the mapped sysexits).
pub const COMMAND_FAILED: Refusal = Refusal::new(554, [5, 3, 0], "Command failed");
/// 451 4.3.0: the command exited 75 (`EX_TEMPFAIL`) or 71 (`EX_OSERR`).
pub const COMMAND_TEMPFAIL: Refusal = Refusal::new(
    451,
    [4, 3, 0],
    "Command failed temporarily, try again later",
);
/// 550 5.7.1: the command exited 77 (`EX_NOPERM`).
pub const COMMAND_NOPERM: Refusal =
    Refusal::new(550, [5, 7, 1], "Delivery not authorized, message refused");
/// 451 4.3.0: the command ran past its time limit; its process group was killed.
pub const COMMAND_TIMEOUT: Refusal = Refusal::new(
    451,
    [4, 3, 0],
    "Command time limit exceeded, try again later",
);
/// 451 4.3.0: the command was killed by a signal (a crash, the OOM killer).
pub const COMMAND_CRASHED: Refusal =
    Refusal::new(451, [4, 3, 0], "Command crashed, try again later");
/// 451 4.3.5: the command could not be started (missing, not executable, out of processes).
pub const COMMAND_UNAVAILABLE: Refusal =
    Refusal::new(451, [4, 3, 5], "Command cannot be started, try again later");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line() {
        assert_eq!(OK.to_bytes(), b"250 2.0.0 OK\r\n");
        assert_eq!(
            START_DATA.to_bytes(),
            b"354 End data with <CR><LF>.<CR><LF>\r\n"
        );
    }

    #[test]
    fn multi_line() {
        let r = ehlo("mx", ["PIPELINING", "SIZE 10"]);
        assert_eq!(
            r.to_bytes(),
            b"250-mx greets you\r\n250-PIPELINING\r\n250 SIZE 10\r\n"
        );
    }

    #[test]
    fn enhanced_codes_of_every_width() {
        let r = Reply::new(550, [5, 7, 23], "x");
        assert_eq!(r.to_bytes(), b"550 5.7.23 x\r\n");
        let r = Reply::new(451, [4, 100, 0], "y");
        assert_eq!(r.to_bytes(), b"451 4.100.0 y\r\n");
    }

    #[test]
    fn cr_cannot_end_a_line() {
        let r = Reply::with_text(550, Some([5, 0, 0]), "bad\r thing");
        assert_eq!(r.to_bytes(), b"550 5.0.0 bad  thing\r\n");
    }

    #[test]
    fn a_code_out_of_range_is_not_sent() {
        assert_eq!(Reply::with_text(999, None, "x").to_bytes(), b"451 x\r\n");
        assert_eq!(Reply::with_text(0, None, "x").to_bytes(), b"451 x\r\n");
    }

    #[test]
    fn only_4xx_and_5xx_refuse() {
        for code in [200, 250, 354, 199, 600, 0] {
            let r = Refusal::with_text(code, None, "odd");
            assert_eq!(r, DELIVERY_FAILED, "{code}");
        }
        let r = Refusal::with_text(550, Some([5, 1, 1]), "no");
        assert_eq!((r.code(), r.enhanced()), (550, Some([5, 1, 1])));
        // Classes that disagree: the enhanced code goes, the reply stays.
        let r = Refusal::with_text(550, Some([4, 1, 1]), "no");
        assert_eq!((r.code(), r.enhanced()), (550, None));
    }

    #[test]
    fn transient_keeps_the_detail() {
        let r = NO_SUCH_USER.transient();
        assert_eq!((r.code(), r.enhanced()), (450, Some([4, 1, 1])));
        assert_eq!(DELIVERY_FAILED.transient(), DELIVERY_FAILED);
    }
}
