//! Command handling: what each command does in each state, and what the answers lead to.

use samotop_parser::{Body, Command, ForwardPath, Host, ParseError, ReversePath};

use super::{End, Event, Input, Message, Session, Waiting};
use crate::envelope::{Envelope, Protocol, Recipient};
use crate::guard::Verdict;
use crate::reply::{self, Reply};

impl Session {
    pub(super) fn feed_command(&mut self, input: &[u8]) -> usize {
        let limit = self.config.limits.max_line_length;
        let window = &input[..input.len().min(limit)];
        if self.commands == 0 && (looks_like_tls(input) || looks_like_proxy_v2(input)) {
            if looks_like_proxy_v2(input) {
                log::info!(
                    "session {}: PROXY header from an untrusted peer",
                    self.info.id
                );
            }
            self.close_with(Some(reply::NOT_SMTP), End::Refused);
            return input.len();
        }
        match memchr::memchr(b'\n', window) {
            Some(i) => {
                let mut line = &input[..i];
                if let Some(stripped) = line.strip_suffix(b"\r") {
                    line = stripped;
                }
                self.commands += 1;
                self.command_line(line);
                i + 1
            }
            None if input.len() >= limit => {
                // Answer now (the client may never send LF), then skip to the end of this
                // line: its LF may already be here, or come later.
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
                let reply = match e {
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
                    ParseError::Syntax { expected, .. } => {
                        reply::SYNTAX_ERROR.text(format!("Syntax error, expected: {expected}"))
                    }
                    _ => reply::SYNTAX_ERROR,
                };
                self.error(reply);
            }
        }
    }

    /// A bad command: reply, count it, and close when the budget is spent.
    pub(super) fn error(&mut self, reply: Reply) {
        self.stats.errors += 1;
        self.reply(reply);
        if self.stats.errors >= self.config.limits.max_errors {
            self.close_with(Some(reply::TOO_MANY_ERRORS), End::Refused);
        }
    }

    fn command(&mut self, command: Command) {
        log::debug!("session {}: {}", self.info.id, command.verb());
        let lmtp = self.config.protocol == Protocol::Lmtp;
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
            Command::Expn(_) => self.reply(reply::NOT_IMPLEMENTED),
            Command::Help(_) => self.reply(reply::HELP),
            Command::Quit => self.close_with(Some(reply::BYE), End::Quit),
            Command::StartTls => self.starttls(),
        }
    }

    fn helo(&mut self, host: Host, extended: bool) {
        // A new greeting is an implicit RSET (RFC 5321 4.1.4).
        self.abort_transaction();
        self.info.helo = Some(host);
        self.info.extended = extended;
        self.ask(Event::Helo, Waiting::Helo);
    }

    pub(super) fn connect_verdict(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Accept | Verdict::AddHeader(_) => {
                self.input = Input::Command;
                let kind = match self.config.protocol {
                    Protocol::Smtp => "ESMTP",
                    Protocol::Lmtp => "LMTP",
                };
                let text = format!("{} {kind} Samotop ready", self.info.server_name);
                self.reply(Reply::with_text(220, None, text));
            }
            Verdict::Reject(reply) | Verdict::Close(reply) => {
                self.close_with(Some(reply), End::Refused)
            }
        }
    }

    pub(super) fn helo_verdict(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Accept | Verdict::AddHeader(_) => {
                let reply = if self.info.extended {
                    self.ehlo_reply()
                } else {
                    Reply::with_text(250, None, self.info.server_name.clone())
                };
                self.reply(reply);
            }
            Verdict::Reject(reply) => {
                self.info.helo = None;
                self.reply(reply);
            }
            Verdict::Close(reply) => self.close_with(Some(reply), End::Refused),
        }
    }

    fn ehlo_reply(&self) -> Reply {
        let mut text = format!(
            "{} greets you\nPIPELINING\nSIZE {}\n8BITMIME\nSMTPUTF8\nENHANCEDSTATUSCODES\nCHUNKING\nBINARYMIME",
            self.info.server_name, self.config.limits.max_message_size
        );
        if self.config.starttls && self.info.tls.is_none() {
            text.push_str("\nSTARTTLS");
        }
        Reply::with_text(250, None, text)
    }

    fn starttls(&mut self) {
        if self.info.tls.is_some() {
            self.error(reply::ALREADY_TLS);
        } else if !self.config.starttls {
            self.reply(reply::TLS_NOT_AVAILABLE);
        } else if self.envelope.is_some() {
            self.error(reply::STARTTLS_IN_TRANSACTION);
        } else {
            self.reply(reply::READY_FOR_TLS);
            self.events.push_back(Event::StartTls);
            self.waiting = Some(Waiting::Tls);
        }
    }

    fn mail(&mut self, from: ReversePath, params: samotop_parser::MailParams) {
        let limits = &self.config.limits;
        if self.info.helo.is_none() {
            let need = match self.config.protocol {
                Protocol::Smtp => reply::NEED_HELO,
                Protocol::Lmtp => reply::NEED_LHLO,
            };
            return self.error(need);
        }
        if self.config.require_tls && self.info.tls.is_none() {
            return self.reply(reply::TLS_REQUIRED);
        }
        if self.envelope.is_some() {
            return self.error(reply::NESTED_MAIL);
        }
        if !params.other.is_empty() {
            return self.reply(reply::UNSUPPORTED_PARAMETER);
        }
        if params.size.is_some_and(|s| s > limits.max_message_size) {
            return self.reply(reply::MESSAGE_TOO_BIG);
        }
        if matches!(&from, ReversePath::Mailbox(m) if m.is_utf8()) && !params.smtputf8 {
            return self.reply(reply::NEED_SMTPUTF8);
        }
        if self.transactions >= limits.max_transactions {
            return self.close_with(Some(reply::TOO_MANY_TRANSACTIONS), End::Refused);
        }
        self.transactions += 1;
        let id = format!("{}.{}", self.info.id, self.transactions);
        self.envelope = Some(Envelope::new(from, params, id));
        self.message = Message::default();
        self.ask(Event::Mail, Waiting::Mail);
    }

    pub(super) fn mail_verdict(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Accept => self.reply(reply::SENDER_OK),
            Verdict::AddHeader(h) => {
                self.add_headers(h);
                self.reply(reply::SENDER_OK);
            }
            Verdict::Reject(reply) => {
                // Nothing was opened: no abort to send.
                self.envelope = None;
                self.reply(reply);
            }
            Verdict::Close(reply) => {
                self.envelope = None;
                self.close_with(Some(reply), End::Refused)
            }
        }
    }

    fn add_headers(&mut self, headers: String) {
        if let Some(env) = self.envelope.as_mut() {
            env.headers.extend(
                headers
                    .split("\r\n")
                    .filter(|h| !h.is_empty())
                    .map(String::from),
            );
        }
    }

    fn rcpt(&mut self, to: ForwardPath, params: samotop_parser::RcptParams) {
        let Some(env) = self.envelope.as_ref() else {
            return self.error(reply::NEED_MAIL);
        };
        if self.message.begun {
            return self.error(reply::NESTED_MAIL.text("RCPT not allowed after BDAT"));
        }
        if !params.other.is_empty() {
            return self.reply(reply::UNSUPPORTED_PARAMETER);
        }
        if env.recipients.len() >= self.config.limits.max_recipients {
            return self.reply(reply::TOO_MANY_RECIPIENTS);
        }
        if matches!(&to, ForwardPath::Mailbox(m) if m.is_utf8()) && !env.params.smtputf8 {
            return self.reply(reply::NEED_SMTPUTF8);
        }
        let recipient = Recipient::new(to, params);
        self.ask(Event::Rcpt(recipient.clone()), Waiting::Rcpt(recipient));
    }

    pub(super) fn rcpt_verdict(&mut self, recipient: Recipient, verdict: Verdict) {
        match verdict {
            Verdict::Accept | Verdict::AddHeader(_) => {
                if let Verdict::AddHeader(h) = verdict {
                    self.add_headers(h);
                }
                if let Some(env) = self.envelope.as_mut() {
                    env.recipients.push(recipient);
                    self.stats.rcpts += 1;
                }
                self.reply(reply::RECIPIENT_OK);
            }
            Verdict::Reject(reply) => self.reply(reply),
            Verdict::Close(reply) => self.close_with(Some(reply), End::Refused),
        }
    }

    /// Checks common to DATA and the first BDAT; `None` when the data may start.
    fn data_refusal(&self) -> Option<Reply> {
        match self.envelope.as_ref() {
            None => Some(reply::NEED_MAIL),
            Some(env) if env.recipients.is_empty() => Some(reply::NO_VALID_RECIPIENTS),
            Some(_) => None,
        }
    }

    fn data(&mut self) {
        if let Some(refusal) = self.data_refusal() {
            return self.error(refusal);
        }
        let binary = self
            .envelope
            .as_ref()
            .is_some_and(|e| e.params.body == Some(Body::BinaryMime));
        if self.message.begun || binary {
            return self.error(reply::DATA_AFTER_BDAT);
        }
        self.ask(Event::DataStart, Waiting::DataStart);
    }

    fn bdat(&mut self, size: u64, last: bool) {
        self.input = Input::Bdat {
            remaining: size,
            last,
        };
        if self.message.begun || self.message.failure.is_some() {
            self.account(size);
            if size == 0 {
                self.bdat_chunk_done(last);
            }
            return;
        }
        if let Some(refusal) = self.data_refusal() {
            // The chunk is read and thrown away, then refused.
            self.stats.errors += 1;
            self.message.failure = Some(refusal);
            if size == 0 {
                self.bdat_chunk_done(last);
            }
            return;
        }
        self.account(size);
        if self.message.failure.is_none() {
            self.ask(Event::DataStart, Waiting::DataStart);
        } else if size == 0 {
            self.bdat_chunk_done(last);
        }
    }

    /// Counts a BDAT chunk against the size limit before reading it.
    fn account(&mut self, size: u64) {
        self.message.size = self.message.size.saturating_add(size);
        if self.message.size > self.config.limits.max_message_size {
            self.message.failure.get_or_insert(reply::MESSAGE_TOO_BIG);
        }
    }

    pub(super) fn data_verdict(&mut self, verdict: Verdict) {
        let bdat = matches!(self.input, Input::Bdat { .. });
        match verdict {
            Verdict::Accept | Verdict::AddHeader(_) => {
                if let Verdict::AddHeader(h) = verdict {
                    self.add_headers(h);
                }
                self.message.begun = true;
                self.message
                    .chunk
                    .reserve(self.config.limits.chunk_size.min(16 * 1024));
                if !bdat {
                    self.input = Input::Data(super::DataDecoder::new());
                    self.reply(reply::START_DATA);
                }
            }
            Verdict::Reject(reply) if bdat => {
                self.message.failure = Some(reply);
            }
            Verdict::Reject(reply) => self.reply(reply),
            Verdict::Close(reply) => self.close_with(Some(reply), End::Refused),
        }
        // A zero-sized BDAT has no bytes to wait for.
        if let Input::Bdat { remaining: 0, last } = self.input {
            self.bdat_chunk_done(last);
        }
    }

    pub(super) fn feed_data(&mut self, input: &[u8]) -> usize {
        let Input::Data(decoder) = &mut self.input else {
            return 0;
        };
        let chunk_size = self.config.limits.chunk_size;
        let room = chunk_size.saturating_sub(self.message.chunk.len()).max(1);
        let before = self.message.chunk.len();
        let (used, end) = decoder.decode(input, &mut self.message.chunk, room);
        let bare = decoder.saw_bare_newline();
        let produced = (self.message.chunk.len() - before) as u64;
        self.message.size += produced;
        self.stats.bytes += produced;
        if self.message.size > self.config.limits.max_message_size {
            self.message.failure.get_or_insert(reply::MESSAGE_TOO_BIG);
        }
        if self.message.failure.is_some() {
            self.message.chunk.clear();
        }
        if end {
            if bare && !self.config.accept_bare_newlines {
                self.message.failure.get_or_insert(reply::BARE_NEWLINE);
            }
            self.input = Input::Command;
            self.end_of_data();
        } else if self.message.chunk.len() >= chunk_size {
            self.send_chunk();
        }
        used
    }

    pub(super) fn feed_bdat(&mut self, input: &[u8]) -> usize {
        let Input::Bdat { remaining, last } = self.input else {
            return 0;
        };
        let chunk_size = self.config.limits.chunk_size;
        let room = chunk_size.saturating_sub(self.message.chunk.len()).max(1);
        let take = (input.len() as u64).min(remaining).min(room as u64) as usize;
        if self.message.failure.is_none() {
            self.message.chunk.extend_from_slice(&input[..take]);
            self.stats.bytes += take as u64;
        }
        let remaining = remaining - take as u64;
        self.input = Input::Bdat { remaining, last };
        if remaining == 0 {
            self.bdat_chunk_done(last);
        } else if self.message.chunk.len() >= chunk_size {
            self.send_chunk();
        }
        take
    }

    fn bdat_chunk_done(&mut self, last: bool) {
        self.input = Input::Command;
        if last || self.message.failure.is_some() {
            // A failed chunk ends the transaction (RFC 3030 3).
            self.end_of_data();
        } else {
            self.reply(reply::CHUNK_OK);
        }
    }

    fn send_chunk(&mut self) {
        let chunk = self.message.chunk.split().freeze();
        self.ask(Event::Chunk(chunk), Waiting::Chunk);
    }

    /// The data is complete (or failed): write what is left, then commit or refuse.
    fn end_of_data(&mut self) {
        self.message.ended = true;
        if let Some(failure) = self.message.failure.clone() {
            log::info!("session {}: message refused: {failure}", self.info.id);
            let n = self.reply_count();
            self.abort_transaction();
            for _ in 0..n {
                self.reply(failure.clone());
            }
        } else if !self.message.chunk.is_empty() {
            self.send_chunk();
        } else {
            self.ask(Event::Commit, Waiting::Commit);
        }
    }

    /// Replies due after the data: one for SMTP, one per accepted recipient for LMTP
    /// (RFC 2033 4.2).
    fn reply_count(&self) -> usize {
        match (self.config.protocol, self.envelope.as_ref()) {
            (Protocol::Lmtp, Some(env)) => env.recipients.len().max(1),
            _ => 1,
        }
    }

    pub(super) fn chunk_written(&mut self, result: Result<(), Reply>) {
        if let Err(reply) = result {
            log::warn!("session {}: delivery failed: {reply}", self.info.id);
            self.message.failure.get_or_insert(reply);
            self.message.chunk.clear();
        }
        if self.message.ended {
            self.end_of_data();
        }
    }

    pub(super) fn committed(&mut self, outcomes: crate::dispatch::Outcomes) {
        let Some(env) = self.envelope.take() else {
            return;
        };
        self.message = Message::default();
        let n = env.recipients.len();
        let outcome = |i: usize| -> Result<(), Reply> {
            outcomes
                .get(i)
                .cloned()
                .unwrap_or(Err(reply::DELIVERY_FAILED))
        };
        match self.config.protocol {
            Protocol::Lmtp => {
                for (i, rcpt) in env.recipients.iter().enumerate() {
                    match outcome(i) {
                        Ok(()) => {
                            self.stats.mails += 1;
                            self.reply(Reply::with_text(
                                250,
                                Some([2, 1, 5]),
                                format!("<{}> delivered", rcpt.path),
                            ));
                        }
                        Err(reply) => self.reply(reply),
                    }
                }
            }
            Protocol::Smtp => {
                let results: Vec<_> = (0..n).map(outcome).collect();
                let failures: Vec<&Reply> =
                    results.iter().filter_map(|r| r.as_ref().err()).collect();
                let reply = if failures.is_empty() {
                    self.stats.mails += 1;
                    reply::MESSAGE_ACCEPTED.text(format!("Message accepted as {}", env.id))
                } else if failures.len() == n
                    && failures
                        .iter()
                        .all(|f| f.code() / 100 == failures[0].code() / 100)
                {
                    failures[0].clone()
                } else {
                    // Mixed outcomes: the client retries; a duplicate beats a loss.
                    reply::DELIVERY_FAILED
                };
                if !reply.is_positive() {
                    log::warn!(
                        "session {}: delivery of {} failed: {reply}",
                        self.info.id,
                        env.id
                    );
                }
                self.reply(reply);
            }
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
