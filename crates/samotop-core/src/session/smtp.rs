//! Command handling: what each command does in each state, and what the answers lead to.

use samotop_parser::{
    Body, Command, ForwardPath, Host, MailParams, ParseError, RcptParams, ReversePath,
};

use super::{End, Event, Input, Session, Stage, Waiting};
use crate::envelope::{Envelope, Protocol, Recipient};
use crate::guard::Verdict;
use crate::observe::{Limit, Note, Origin};
use crate::reply::{self, Refusal};

impl Session {
    pub(super) fn feed_command(&mut self, input: &[u8]) -> usize {
        let limit = self.config.limits.max_line_length;
        let window = &input[..input.len().min(limit)];
        if self.stats.commands == 0 && (looks_like_tls(input) || looks_like_proxy_v2(input)) {
            if looks_like_proxy_v2(input) {
                log::info!(
                    "session {}: PROXY header from an untrusted peer",
                    self.info.id
                );
            }
            self.stats.commands += 1;
            self.close_with(Some(reply::NOT_SMTP), End::Refused);
            return input.len();
        }
        match memchr::memchr(b'\n', window) {
            Some(i) => {
                let mut line = &input[..i];
                if let Some(stripped) = line.strip_suffix(b"\r") {
                    line = stripped;
                }
                self.stats.commands += 1;
                self.command_line(line);
                i + 1
            }
            None if input.len() >= limit => {
                // Answer now (the client may never send LF), then skip to the end of this
                // line: its LF may already be here, or come later.
                self.stats.commands += 1;
                self.origin = Origin::Command;
                self.limit(Limit::LineLength);
                self.error(reply::LINE_TOO_LONG);
                match memchr::memchr(b'\n', &input[limit..]) {
                    Some(i) => limit + i + 1,
                    None => {
                        if !self.is_closed() {
                            self.input = Input::Discard;
                        }
                        input.len()
                    }
                }
            }
            None => 0,
        }
    }

    fn command_line(&mut self, line: &[u8]) {
        log::trace!(
            "session {}: C: {}",
            self.info.id,
            String::from_utf8_lossy(line)
        );
        self.origin = Origin::Command;
        if self.config.observe_detail {
            let shown = String::from_utf8_lossy(&line[..line.len().min(512)]).into_owned();
            self.notes.push_back(Note::Command(shown));
        }
        match samotop_parser::parse_command(line) {
            Ok(command) => self.command(command),
            Err(e) => {
                if looks_like_proxy_v1(line) {
                    log::info!(
                        "session {}: PROXY header from an untrusted peer",
                        self.info.id
                    );
                }
                if looks_like_http(line) || looks_like_proxy_v1(line) {
                    self.close_with(Some(reply::NOT_SMTP), End::Refused);
                    return;
                }
                log::debug!("session {}: bad command: {e}", self.info.id);
                let refusal = match e {
                    ParseError::UnknownCommand => reply::UNRECOGNIZED,
                    ParseError::BadPath { verb: "MAIL", .. } => reply::BAD_SENDER_SYNTAX,
                    ParseError::BadPath { .. } => reply::BAD_RECIPIENT_SYNTAX,
                    ParseError::Syntax {
                        verb: "STARTTLS", ..
                    } => reply::STARTTLS_NO_ARGS,
                    ParseError::Syntax {
                        verb: "HELO" | "EHLO" | "LHLO",
                        ..
                    } => reply::BAD_HELO,
                    ParseError::Syntax { expected, .. } => reply::syntax_error(expected),
                    _ => reply::SYNTAX_ERROR,
                };
                self.error(refusal);
            }
        }
    }

    /// A bad command: reply, count it, and close when the budget is spent.
    pub(super) fn error(&mut self, refusal: Refusal) {
        self.stats.errors += 1;
        self.origin = Origin::Command;
        self.refuse(refusal);
        if self.stats.errors >= self.config.limits.max_errors {
            self.limit(Limit::Errors);
            self.close_with(Some(reply::TOO_MANY_ERRORS), End::Refused);
        }
    }

    fn command(&mut self, command: Command) {
        log::debug!("session {}: {}", self.info.id, command.verb());
        let lmtp = self.config.protocol == Protocol::Lmtp;
        self.origin = match command {
            Command::Helo(_) | Command::Ehlo(_) | Command::Lhlo(_) => Origin::Helo,
            Command::Mail(..) => Origin::Mail,
            Command::Rcpt(..) => Origin::Rcpt,
            Command::Data | Command::Bdat { .. } => Origin::Data,
            _ => Origin::Command,
        };
        match command {
            Command::Helo(_) | Command::Ehlo(_) if lmtp => self.error(reply::LMTP_NEEDS_LHLO),
            Command::Lhlo(_) if !lmtp => self.error(reply::UNRECOGNIZED),
            Command::Helo(host) => self.helo(host, false),
            Command::Ehlo(host) | Command::Lhlo(host) => self.helo(host, true),
            Command::Mail(from, params) => self.mail(from, params),
            Command::Rcpt(to, params) => self.rcpt(to, params),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.abort_transaction();
                self.reply(reply::OK);
            }
            Command::Noop(_) => self.reply(reply::OK),
            Command::Vrfy(_) => self.reply(reply::CANNOT_VRFY),
            Command::Expn(_) => self.refuse(reply::NOT_IMPLEMENTED),
            Command::Help(_) => self.reply(reply::HELP),
            Command::Quit => self.close(Some(reply::BYE), End::Quit),
            Command::StartTls => self.starttls(),
        }
    }

    fn helo(&mut self, host: Host, extended: bool) {
        // A new greeting is an implicit RSET (RFC 5321 4.1.4).
        self.abort_transaction();
        self.info.helo = Some(host);
        self.info.extended = extended;
        self.ask(Event::Guard(Stage::Helo), Waiting::Guard(Stage::Helo));
    }

    pub(super) fn connect_verdict(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Accept | Verdict::Note(_) => {
                self.input = Input::Command;
                self.reply(reply::greeting(
                    &self.info.server_name,
                    self.config.protocol,
                ));
            }
            Verdict::Reject(refusal) | Verdict::Close(refusal) => {
                self.close_with(Some(refusal), End::Refused)
            }
        }
    }

    pub(super) fn helo_verdict(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Accept | Verdict::Note(_) => {
                let reply = if self.info.extended {
                    self.ehlo_reply()
                } else {
                    reply::helo(&self.info.server_name)
                };
                self.reply(reply);
            }
            Verdict::Reject(refusal) => {
                self.info.helo = None;
                self.refuse(refusal);
            }
            Verdict::Close(refusal) => self.close_with(Some(refusal), End::Refused),
        }
    }

    /// The extensions we offer: what the session does, and what the backend can carry.
    fn ehlo_reply(&self) -> crate::reply::Reply {
        let caps = self.config.capabilities;
        let size = format!("SIZE {}", self.max_message_size());
        let mut keywords = vec!["PIPELINING", size.as_str()];
        if caps.eight_bit_mime {
            keywords.push("8BITMIME");
        }
        if caps.smtputf8 {
            keywords.push("SMTPUTF8");
        }
        keywords.push("ENHANCEDSTATUSCODES");
        if caps.chunking {
            keywords.push("CHUNKING");
            if caps.binary_mime {
                keywords.push("BINARYMIME");
            }
        }
        if self.config.starttls && self.info.tls.is_none() {
            keywords.push("STARTTLS");
        }
        reply::ehlo(&self.info.server_name, keywords)
    }

    fn starttls(&mut self) {
        if self.info.tls.is_some() {
            self.error(reply::ALREADY_TLS);
        } else if !self.config.starttls {
            self.refuse(reply::TLS_NOT_AVAILABLE);
        } else if self.envelope.is_some() {
            self.error(reply::STARTTLS_IN_TRANSACTION);
        } else {
            self.reply(reply::READY_FOR_TLS);
            self.events.push_back(Event::StartTls);
            self.waiting = Some(Waiting::Tls);
        }
    }

    /// A MAIL parameter we do not offer here, if any (RFC 5321 4.1.1.11: 555).
    fn mail_params_refusal(&self, params: &MailParams) -> Option<Refusal> {
        let caps = self.config.capabilities;
        let named = |k: &str| Some(reply::unsupported_parameter(k));
        if let Some((keyword, _)) = params.other.first() {
            return named(keyword);
        }
        if !self.info.extended {
            // After plain HELO no extension is offered (RFC 5321 4.1.1.11).
            if params.size.is_some() {
                return named("SIZE");
            }
            if params.body.is_some() {
                return named("BODY");
            }
            if params.smtputf8 {
                return named("SMTPUTF8");
            }
        }
        // DSN (RFC 3461) is not offered: we relay no notifications.
        if params.ret.is_some() {
            return named("RET");
        }
        if params.envid.is_some() {
            return named("ENVID");
        }
        match params.body {
            Some(Body::EightBitMime) if !caps.eight_bit_mime => return named("BODY=8BITMIME"),
            Some(Body::BinaryMime) if !(caps.binary_mime && caps.chunking) => {
                return named("BODY=BINARYMIME");
            }
            _ => {}
        }
        if params.smtputf8 && !caps.smtputf8 {
            return named("SMTPUTF8");
        }
        None
    }

    fn mail(&mut self, from: ReversePath, params: MailParams) {
        if self.info.helo.is_none() {
            let need = match self.config.protocol {
                Protocol::Smtp => reply::NEED_HELO,
                Protocol::Lmtp => reply::NEED_LHLO,
            };
            return self.error(need);
        }
        if self.config.require_tls && self.info.tls.is_none() {
            return self.refuse(reply::TLS_REQUIRED);
        }
        if self.envelope.is_some() {
            return self.error(reply::NESTED_MAIL);
        }
        if let Some(refusal) = self.mail_params_refusal(&params) {
            return self.refuse(refusal);
        }
        if params.size.is_some_and(|s| s > self.max_message_size()) {
            self.limit(Limit::MessageSize);
            return self.refuse(reply::MESSAGE_TOO_BIG);
        }
        if matches!(&from, ReversePath::Mailbox(m) if m.is_utf8()) && !params.smtputf8 {
            return self.refuse(reply::NEED_SMTPUTF8);
        }
        if self.transactions >= self.config.limits.max_transactions {
            self.limit(Limit::Transactions);
            return self.close_with(Some(reply::TOO_MANY_TRANSACTIONS), End::Refused);
        }
        self.transactions += 1;
        let id = format!("{}.{}", self.info.id, self.transactions);
        self.envelope = Some(Box::new(Envelope::new(from, params, id)));
        self.message = super::data::Message::default();
        self.ask(Event::Guard(Stage::Mail), Waiting::Guard(Stage::Mail));
    }

    pub(super) fn mail_verdict(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Accept | Verdict::Note(_) => {
                self.note(verdict);
                self.ask(Event::Open, Waiting::Open);
            }
            Verdict::Reject(refusal) => {
                // Nothing was opened: no abort to send.
                self.envelope = None;
                self.refuse(refusal);
            }
            Verdict::Close(refusal) => {
                self.envelope = None;
                self.close_with(Some(refusal), End::Refused)
            }
        }
    }

    /// The answer to `Open`.
    pub(super) fn opened(&mut self, result: Result<(), Refusal>) {
        match result {
            Ok(()) => {
                self.opened = true;
                self.reply(reply::SENDER_OK);
            }
            Err(refusal) => {
                log::debug!("session {}: MAIL refused: {refusal}", self.info.id);
                self.envelope = None;
                self.refuse(refusal);
            }
        }
    }

    /// A RCPT parameter we do not offer, if any.
    fn rcpt_params_refusal(&self, params: &RcptParams) -> Option<Refusal> {
        if let Some((keyword, _)) = params.other.first() {
            return Some(reply::unsupported_parameter(keyword));
        }
        if params.notify.is_some() {
            return Some(reply::unsupported_parameter("NOTIFY"));
        }
        if params.orcpt.is_some() {
            return Some(reply::unsupported_parameter("ORCPT"));
        }
        None
    }

    fn rcpt(&mut self, to: ForwardPath, params: RcptParams) {
        let Some(env) = self.envelope.as_ref() else {
            return self.error(reply::NEED_MAIL);
        };
        if self.message.accepted {
            return self.error(reply::RCPT_AFTER_BDAT);
        }
        let full = env.recipients.len() >= self.config.limits.max_recipients;
        let utf8 = matches!(&to, ForwardPath::Mailbox(m) if m.is_utf8()) && !env.params.smtputf8;
        let refusal = if let Some(refusal) = self.rcpt_params_refusal(&params) {
            Some(refusal)
        } else if full {
            self.limit(Limit::Recipients);
            Some(reply::TOO_MANY_RECIPIENTS)
        } else if utf8 {
            Some(reply::NEED_SMTPUTF8)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            // A limit or a parameter: answered, not counted as a refused address (a client
            // over the recipient limit sends the rest in another transaction, RFC 5321
            // 4.5.3.1.10).
            return self.refuse(refusal);
        }
        self.recipient = Some(Box::new(Recipient::new(to, params)));
        self.ask(Event::Guard(Stage::Rcpt), Waiting::Guard(Stage::Rcpt));
    }

    pub(super) fn rcpt_verdict(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Accept | Verdict::Note(_) => {
                self.note(verdict);
                self.ask(Event::AddRecipient, Waiting::AddRecipient);
            }
            Verdict::Reject(refusal) => {
                self.recipient = None;
                self.recipient_refused(refusal);
            }
            Verdict::Close(refusal) => self.close_with(Some(refusal), End::Refused),
        }
    }

    /// The answer to `AddRecipient`.
    pub(super) fn recipient_added(&mut self, result: Result<(), Refusal>) {
        let recipient = self.recipient.take();
        match (result, recipient, self.envelope.as_mut()) {
            (Ok(()), Some(recipient), Some(env)) => {
                env.recipients.push(*recipient);
                self.stats.rcpts += 1;
                self.reply(reply::RECIPIENT_OK);
            }
            (Ok(()), ..) => self.recipient_refused(reply::DELIVERY_FAILED),
            (Err(refusal), ..) => self.recipient_refused(refusal),
        }
    }

    /// A recipient refused by a guard or the backend: counted (an unknown user, a relay
    /// refused), and the session closes past the limit.
    fn recipient_refused(&mut self, refusal: Refusal) {
        self.stats.rejected_rcpts += 1;
        self.refuse(refusal);
        if self.stats.rejected_rcpts > self.config.limits.max_rejected_recipients {
            self.limit(Limit::RejectedRecipients);
            log::info!(
                "session {}: {} recipients refused, closing",
                self.info.id,
                self.stats.rejected_rcpts
            );
            self.close_with(Some(reply::TOO_MANY_REJECTED_RECIPIENTS), End::Refused);
        }
    }
}

/// A TLS record header (handshake, TLS 1.0-1.3) where a command was expected.
fn looks_like_tls(input: &[u8]) -> bool {
    input.len() >= 3 && input[0] == 0x16 && input[1] == 0x03 && input[2] <= 0x04
}

/// The start of a PROXY protocol v2 header (`\r\n\r\n\0\r\nQUIT\n`, HAProxy): a proxy that we
/// were not told to trust (`--proxy-protocol-from`). No SMTP client opens with a blank line
/// followed by NUL.
fn looks_like_proxy_v2(input: &[u8]) -> bool {
    input.starts_with(b"\r\n\r\n\0")
}

/// A PROXY protocol v1 header line (`PROXY TCP4 ...`): a proxy that we were not told to trust.
fn looks_like_proxy_v1(line: &[u8]) -> bool {
    line.starts_with(b"PROXY ")
}

/// An HTTP request line: `GET /x HTTP/1.1` and friends.
fn looks_like_http(line: &[u8]) -> bool {
    const METHODS: [&[u8]; 7] = [
        b"GET ",
        b"POST ",
        b"HEAD ",
        b"PUT ",
        b"OPTIONS ",
        b"CONNECT ",
        b"DELETE ",
    ];
    METHODS.iter().any(|m| line.starts_with(m)) && memchr::memmem::find(line, b" HTTP/").is_some()
}
