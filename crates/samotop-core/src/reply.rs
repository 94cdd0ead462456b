//! SMTP replies with enhanced status codes, and the table of every reply the session sends.
//!
//! Reply codes live here and nowhere else: the session and the driver refer to these constants.

use std::borrow::Cow;
use std::fmt;

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
    /// except that `\n` separates the lines of a multi-line reply.
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

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        self.code / 100 == 4
    }

    /// 5xx: do not retry.
    pub fn is_permanent(&self) -> bool {
        self.code / 100 == 5
    }

    /// Appends the reply in wire form (each line ends in CR LF) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let code = digits3(self.code.min(599));
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

// ---- The reply table ---------------------------------------------------------------------

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
/// 250 2.0.0: the message is durably stored.
pub const MESSAGE_ACCEPTED: Reply = Reply::new(250, [2, 0, 0], "Message accepted");
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
pub const TIMEOUT: Reply = Reply::new(421, [4, 4, 2], "Timeout, closing connection");
/// 421 4.7.0: the session made too many errors.
pub const TOO_MANY_ERRORS: Reply =
    Reply::new(421, [4, 7, 0], "Too many errors, closing connection");
/// 421 4.3.2: the server is at its connection limit.
pub const TOO_MANY_CONNECTIONS: Reply =
    Reply::new(421, [4, 3, 2], "Too many connections, try again later");
/// 421 4.7.0: this peer has too many connections open.
pub const TOO_MANY_CONNECTIONS_FROM_IP: Reply =
    Reply::new(421, [4, 7, 0], "Too many connections from your address");
/// 421 4.7.0: one session ran its limit of transactions; the client may reconnect.
pub const TOO_MANY_TRANSACTIONS: Reply = Reply::new(
    421,
    [4, 7, 0],
    "Too many transactions in one session, please reconnect",
);
/// 421 4.3.2: the server is shutting down.
pub const SHUTTING_DOWN: Reply =
    Reply::new(421, [4, 3, 2], "Service shutting down, try again later");
/// 451 4.3.0: the message could not be stored; the client should retry.
pub const DELIVERY_FAILED: Reply =
    Reply::new(451, [4, 3, 0], "Local error in processing, try again later");
/// 451 4.7.1: this peer sends too many messages.
pub const RATE_LIMITED: Reply = Reply::new(
    451,
    [4, 7, 1],
    "Too many messages from your address, slow down",
);
/// 452 4.5.3: recipient limit of the transaction reached (RFC 5321 4.5.3.1.10).
pub const TOO_MANY_RECIPIENTS: Reply = Reply::new(452, [4, 5, 3], "Too many recipients");
/// 452 4.3.1: out of storage.
pub const INSUFFICIENT_STORAGE: Reply = Reply::new(452, [4, 3, 1], "Insufficient system storage");
/// 454 4.7.0: STARTTLS is not available (no certificate configured).
pub const TLS_NOT_AVAILABLE: Reply = Reply::new(454, [4, 7, 0], "TLS not available");

/// 500 5.5.2: unknown command.
pub const UNRECOGNIZED: Reply = Reply::new(500, [5, 5, 2], "Command not recognized");
/// 500 5.5.2: a command line longer than the limit.
pub const LINE_TOO_LONG: Reply = Reply::new(500, [5, 5, 2], "Line too long");
/// 500 5.5.1: HELO/EHLO on an LMTP listener (RFC 2033 4.1).
pub const LMTP_NEEDS_LHLO: Reply = Reply::new(500, [5, 5, 1], "This is LMTP, say LHLO");
/// 500 5.5.2: HTTP (or other non-SMTP talk) on an SMTP port; the connection is closed.
pub const NOT_SMTP: Reply =
    Reply::new(500, [5, 5, 2], "This is an SMTP server, closing connection");
/// 501 5.5.4: syntax error in the arguments.
pub const SYNTAX_ERROR: Reply = Reply::new(501, [5, 5, 4], "Syntax error in parameters");
/// 501 5.1.7: malformed sender address.
pub const BAD_SENDER_SYNTAX: Reply = Reply::new(501, [5, 1, 7], "Bad sender address syntax");
/// 501 5.1.3: malformed recipient address.
pub const BAD_RECIPIENT_SYNTAX: Reply = Reply::new(501, [5, 1, 3], "Bad recipient address syntax");
/// 501 5.5.4: STARTTLS takes no arguments.
pub const STARTTLS_NO_ARGS: Reply = Reply::new(501, [5, 5, 4], "STARTTLS takes no arguments");
/// 501 5.5.4: invalid HELO/EHLO/LHLO argument.
pub const BAD_HELO: Reply = Reply::new(501, [5, 5, 4], "Invalid domain name");
/// 502 5.5.1: a command we do not implement (EXPN).
pub const NOT_IMPLEMENTED: Reply = Reply::new(502, [5, 5, 1], "Command not implemented");
/// 503 5.5.1: HELO/EHLO first.
pub const NEED_HELO: Reply = Reply::new(503, [5, 5, 1], "Send HELO/EHLO first");
/// 503 5.5.1: LHLO first.
pub const NEED_LHLO: Reply = Reply::new(503, [5, 5, 1], "Send LHLO first");
/// 503 5.5.1: MAIL first.
pub const NEED_MAIL: Reply = Reply::new(503, [5, 5, 1], "Send MAIL first");
/// 503 5.5.1: MAIL inside a transaction.
pub const NESTED_MAIL: Reply = Reply::new(503, [5, 5, 1], "Sender already specified");
/// 503 5.5.1: DATA/BDAT without an accepted recipient.
pub const NEED_RCPT: Reply = Reply::new(503, [5, 5, 1], "Send RCPT first");
/// 554 5.5.1: DATA when every recipient was refused (RFC 5321 3.3).
pub const NO_VALID_RECIPIENTS: Reply = Reply::new(554, [5, 5, 1], "No valid recipients");
/// 503 5.5.1: DATA after BDAT, or DATA with BODY=BINARYMIME.
pub const DATA_AFTER_BDAT: Reply = Reply::new(
    503,
    [5, 5, 1],
    "DATA not allowed in a BDAT transaction or with BINARYMIME",
);
/// 503 5.5.1: STARTTLS inside TLS.
pub const ALREADY_TLS: Reply = Reply::new(503, [5, 5, 1], "TLS already active");
/// 503 5.5.1: STARTTLS inside a mail transaction.
pub const STARTTLS_IN_TRANSACTION: Reply =
    Reply::new(503, [5, 5, 1], "STARTTLS not allowed in a mail transaction");
/// 530 5.7.0: `--require-tls` and no STARTTLS yet.
pub const TLS_REQUIRED: Reply = Reply::new(530, [5, 7, 0], "Must issue a STARTTLS command first");
/// 550 5.6.0: bare CR or LF in DATA (RFC 5321 2.3.8; SMTP smuggling defence).
pub const BARE_NEWLINE: Reply = Reply::new(
    550,
    [5, 6, 0],
    "Message contains bare CR or LF, line endings must be CRLF",
);
/// 550 5.7.1: recipient domain is not ours.
pub const RELAY_DENIED: Reply = Reply::new(550, [5, 7, 1], "Relay not permitted");
/// 550 5.1.3: recipient name cannot be used as a mailbox.
pub const BAD_MAILBOX_NAME: Reply = Reply::new(
    550,
    [5, 1, 3],
    "Recipient address cannot be used as a mailbox",
);
/// 552 5.3.4: message bigger than the limit (RFC 1870).
pub const MESSAGE_TOO_BIG: Reply = Reply::new(
    552,
    [5, 3, 4],
    "Message size exceeds fixed maximum message size",
);
/// 553 5.6.7: non-ASCII address without SMTPUTF8 (RFC 6531 3.5).
pub const NEED_SMTPUTF8: Reply = Reply::new(
    553,
    [5, 6, 7],
    "Non-ASCII addresses require the SMTPUTF8 parameter",
);
/// 554 5.5.1: the client talked before the greeting; the connection is closed.
pub const EARLY_TALKER: Reply = Reply::new(
    554,
    [5, 5, 1],
    "Protocol error: talking before the greeting",
);
/// 554 5.7.1: the connection is refused by policy.
pub const CONNECTION_REFUSED: Reply = Reply::new(554, [5, 7, 1], "Connection refused");
/// 550 5.7.23: SPF `fail`, the sender's domain does not permit the peer's IP (RFC 7208 8.4,
/// RFC 7372 3.2). The SPF guard replaces the text with the domain and the IP.
pub const SPF_FAIL: Reply = Reply::new(550, [5, 7, 23], "SPF check failed");
/// 451 4.7.24: SPF `temperror`, the check could not be completed (RFC 7208 8.6, RFC 7372 3.2).
pub const SPF_TEMPERROR: Reply = Reply::new(
    451,
    [4, 7, 24],
    "SPF check could not be completed, try again later",
);
/// 555 5.5.4: a MAIL/RCPT parameter we do not support (RFC 5321 4.1.1.11).
pub const UNSUPPORTED_PARAMETER: Reply = Reply::new(555, [5, 5, 4], "Unsupported parameter");
/// 500 5.5.2: a BDAT chunk size we cannot take.
pub const BAD_CHUNK: Reply = Reply::new(500, [5, 5, 2], "Invalid BDAT chunk");

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
        let r = Reply::with_text(250, None, "mx greets you\nPIPELINING\nSIZE 10");
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
}
