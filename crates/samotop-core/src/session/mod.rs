//! The sans-io SMTP/LMTP session state machine.
//!
//! No socket, clock or task inside: bytes go in with [`Session::feed`] (with the time, which
//! the session needs only for the `Received:` field), events come out of
//! [`Session::poll_event`], and each event that asks a question gets one
//! [`Session::resolve`]. The driver owns the timers and calls [`Session::timed_out`]; the
//! session picks every reply.
//!
//! One question per event, in this order for a message:
//!
//! ```text
//! Guard(Connect)                        banner
//! Guard(Helo)                           EHLO reply (extensions from the backend's capabilities)
//! Guard(Mail) -> Open                   250 / refusal
//! Guard(Rcpt) -> AddRecipient           250 / refusal, per RCPT
//! Guard(Data)                           354 (DATA) or nothing (BDAT)
//! Begin -> Chunk* -> Commit             without end-of-data checks: the data streams
//! Spool* -> Guard(EndOfData) -> Begin -> Chunk -> Unspool -> Commit     with them
//! ```

mod data;
mod decode;
mod header;
mod lmtp;
mod smtp;

pub use decode::DataDecoder;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::dispatch::{Capabilities, Outcomes};
use crate::envelope::{Envelope, Protocol, Recipient, SessionInfo, TlsInfo};
use crate::guard::Verdict;
use crate::limits::Limits;
use crate::observe::{Limit, Note, Origin};
use crate::reply::{self, Refusal, Reply};

/// What a session is configured to do. Shared by all sessions of a listener.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Limits and timeouts.
    pub limits: Limits,
    /// SMTP or LMTP.
    pub protocol: Protocol,
    /// A TLS certificate is configured: offer STARTTLS (until TLS is up).
    pub starttls: bool,
    /// Refuse MAIL before TLS with [`crate::reply::TLS_REQUIRED`].
    pub require_tls: bool,
    /// Store messages with bare CR or LF as they are, instead of refusing them with
    /// [`crate::reply::BARE_NEWLINE`]. Default false. Either way they never end the data.
    pub accept_bare_newlines: bool,
    /// What the backend can carry: EHLO offers only that. A [`Driver`](crate::Driver) sets it
    /// from its dispatch's [`capabilities`](crate::MailDispatch::capabilities).
    pub capabilities: Capabilities,
    /// Spool each message for end-of-data checks before the backend sees it. A
    /// [`Driver`](crate::Driver) sets it when it has an active [`DataCheck`](crate::DataCheck).
    pub spool: bool,
    /// Note refusals (with their origin) and limits for an [`Observer`](crate::Observer). A
    /// [`Driver`](crate::Driver) sets it when it has one. Default false: nothing is noted.
    pub observe: bool,
    /// Also note each command line and each message's size and SHA-256 (transcripts).
    /// Default false.
    pub observe_detail: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            limits: Limits::default(),
            protocol: Protocol::Smtp,
            starttls: false,
            require_tls: false,
            accept_bare_newlines: false,
            capabilities: Capabilities::default(),
            spool: false,
            observe: false,
            observe_detail: false,
        }
    }
}

/// Where in the session a guard or a check is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// A peer connected; no banner yet ([`Guard::connect`](crate::Guard::connect)).
    Connect,
    /// HELO/EHLO/LHLO ([`Guard::helo`](crate::Guard::helo)).
    Helo,
    /// MAIL FROM ([`Guard::mail`](crate::Guard::mail)).
    Mail,
    /// RCPT TO; the recipient is [`Session::recipient`] ([`Guard::rcpt`](crate::Guard::rcpt)).
    Rcpt,
    /// DATA or the first BDAT ([`Guard::data`](crate::Guard::data)).
    Data,
    /// The data is complete and spooled ([`Scan::verdict`](crate::Scan::verdict)).
    EndOfData,
}

impl Stage {
    /// A short word for logs and metrics: `connect`, `helo`, `mail`, `rcpt`, `data`,
    /// `end_of_data`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Helo => "helo",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::EndOfData => "end_of_data",
        }
    }
}

/// What the session wants from its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Send this reply (buffer it; flush before reading more input).
    Reply(Reply),
    /// Ask the guards (or, at [`Stage::EndOfData`], the checks); answer with
    /// [`Answer::Verdict`].
    Guard(Stage),
    /// Open a transaction for [`Session::envelope`] (no recipients yet); answer with
    /// [`Answer::Done`].
    Open,
    /// Add [`Session::recipient`] to the transaction; answer with [`Answer::Done`].
    AddRecipient,
    /// The data starts: call the transaction's `begin` with [`Session::envelope`]; answer
    /// with [`Answer::Done`].
    Begin,
    /// Write this chunk to the transaction; answer with [`Answer::Done`]. The first chunk
    /// starts with the trace header fields.
    Chunk(Bytes),
    /// Show this chunk to the end-of-data checks and add it to the spool; answer with
    /// [`Answer::Done`].
    Spool(Bytes),
    /// Write the whole spool to the transaction, chunk by chunk; answer with
    /// [`Answer::Done`].
    Unspool,
    /// Commit the transaction; answer with [`Answer::Committed`].
    Commit,
    /// Abort the transaction, if one is open, and drop any spool. No answer.
    Abort,
    /// Start TLS: flush the replies, discard any input already received, do the handshake,
    /// then call [`Session::tls_started`] (or [`Session::failed`]).
    StartTls,
    /// Flush the replies and close the connection.
    Close,
}

/// The driver's answer to the question an [`Event`] asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// For [`Event::Guard`].
    Verdict(Verdict),
    /// For `Open`, `AddRecipient`, `Begin`, `Chunk`, `Spool` and `Unspool`.
    Done(Result<(), Refusal>),
    /// For `Commit`: one outcome per recipient added.
    Committed(Outcomes),
    /// The question was not answered within [`Limits::backend_timeout`]. A transaction whose
    /// call timed out is dropped by the driver; the session answers `451 4.4.1`.
    TimedOut,
    /// The driver could not ask: it has no transaction (a bug in the driver or the session).
    /// The session answers `451 4.3.0` and gives the transaction up.
    Unanswerable,
}

/// Why a session ended, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Still running.
    Open,
    /// The client said QUIT.
    Quit,
    /// The client closed the connection.
    Eof,
    /// A timeout.
    Timeout,
    /// Too many errors, non-SMTP talk, early talk, or a guard closed it.
    Refused,
    /// The server is shutting down.
    Shutdown,
    /// STARTTLS handshake failed or I/O error.
    Failed,
}

impl End {
    /// A short word for logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            End::Open => "open",
            End::Quit => "quit",
            End::Eof => "eof",
            End::Timeout => "timeout",
            End::Refused => "refused",
            End::Shutdown => "shutdown",
            End::Failed => "failed",
        }
    }
}

/// Counters for the one log line per session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages accepted (250 after the data; over LMTP, at least one recipient's 250).
    pub mails: usize,
    /// Recipients accepted.
    pub rcpts: usize,
    /// Recipients refused.
    pub rejected_rcpts: usize,
    /// Message octets received (after unstuffing).
    pub bytes: u64,
    /// Bad commands.
    pub errors: usize,
    /// Command lines received.
    pub commands: usize,
}

/// The question the session waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Guard(Stage),
    Open,
    AddRecipient,
    Begin,
    Chunk,
    Spool,
    Unspool,
    Commit,
    Tls,
}

/// Where the input stream is.
#[derive(Debug)]
enum Input {
    /// Before the connect verdict.
    Connecting,
    /// Command lines.
    Command,
    /// Inside a command line that is too long: discard to the next LF.
    Discard,
    /// DATA content.
    Data(DataDecoder),
    /// BDAT content: `remaining` octets of this chunk, `last` as given.
    Bdat { remaining: u64, last: bool },
    /// Nothing more is read.
    Closed,
}

/// One SMTP or LMTP session, from the greeting to the close. Driven as the [crate](crate) docs
/// show.
///
/// Call order: poll events until `None`; `feed` input; repeat. When `feed` consumes nothing and
/// there is no event, read more input (flush the replies first; inside message data, call
/// [`flush_data`](Session::flush_data) before waiting). An event that asks gets one `resolve`
/// before the session goes on.
#[derive(Debug)]
pub struct Session {
    config: Arc<SessionConfig>,
    info: SessionInfo,
    input: Input,
    waiting: Option<Waiting>,
    events: VecDeque<Event>,
    /// Boxed, like the other per-transaction parts: an idle session holds only a pointer.
    envelope: Option<Box<Envelope>>,
    /// The transaction was opened at the backend (it must be aborted or committed).
    opened: bool,
    /// The recipient being asked about.
    recipient: Option<Box<Recipient>>,
    message: data::Message,
    transactions: usize,
    stats: Stats,
    end: End,
    now: SystemTime,
    /// Where a refusal now would come from.
    origin: Origin,
    /// What was noted for the observer (only with [`SessionConfig::observe`]).
    notes: VecDeque<Note>,
}

impl Session {
    /// A new session; its first event is [`Event::Guard`]`(`[`Stage::Connect`]`)`.
    pub fn new(config: Arc<SessionConfig>, mut info: SessionInfo) -> Self {
        info.protocol = config.protocol;
        let mut events = VecDeque::with_capacity(4);
        events.push_back(Event::Guard(Stage::Connect));
        Session {
            config,
            info,
            input: Input::Connecting,
            waiting: Some(Waiting::Guard(Stage::Connect)),
            events,
            envelope: None,
            opened: false,
            recipient: None,
            message: data::Message::default(),
            transactions: 0,
            stats: Stats::default(),
            end: End::Open,
            now: UNIX_EPOCH,
            origin: Origin::Connect,
            notes: VecDeque::new(),
        }
    }

    /// The next thing noted for the observer, if any.
    pub(crate) fn poll_note(&mut self) -> Option<Note> {
        self.notes.pop_front()
    }

    /// Notes a limit reached (for the observer).
    pub(super) fn limit(&mut self, limit: Limit) {
        if self.config.observe {
            self.notes.push_back(Note::Limit(limit));
        }
    }

    /// Notes a refusal sent, with where it came from (and logs it once: the reply, where,
    /// and who refused).
    fn noted_refusal(&mut self, refusal: &Refusal) {
        let by = refusal
            .source()
            .map(|s| format!(" by {s}"))
            .unwrap_or_default();
        if self.origin == Origin::Command {
            log::debug!(
                "session {}: refused at {}{by}: {refusal}",
                self.info.id,
                self.origin.as_str()
            );
        } else if self.origin == Origin::Backend {
            // The backend logged the cause, naming the message (`SESSION.N`).
            log::warn!(
                "session {}: refused at {}{by}: {refusal}",
                self.info.id,
                self.origin.as_str()
            );
        } else {
            log::info!(
                "session {}: refused at {}{by}: {refusal}",
                self.info.id,
                self.origin.as_str()
            );
        }
        if self.config.observe {
            self.notes
                .push_back(Note::Refused(refusal.clone(), self.origin));
        }
    }

    /// Facts about the connection.
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The transaction in progress (set from MAIL on, also while `Guard(Mail)` is asked).
    pub fn envelope(&self) -> Option<&Envelope> {
        self.envelope.as_deref()
    }

    /// The recipient that `Guard(Rcpt)` and `AddRecipient` ask about.
    pub fn recipient(&self) -> Option<&Recipient> {
        self.recipient.as_deref()
    }

    /// Counters for logging.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Why the session ended, or [`End::Open`].
    pub fn end(&self) -> End {
        self.end
    }

    /// True once the session asked to close; nothing more is read.
    pub fn is_closed(&self) -> bool {
        matches!(self.input, Input::Closed)
    }

    /// True while the session waits for a [`resolve`](Session::resolve) or for TLS.
    pub fn is_waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// True while message data is being read (DATA or BDAT content).
    pub fn in_data(&self) -> bool {
        matches!(self.input, Input::Data(_) | Input::Bdat { .. })
    }

    /// True while the rest of an over-long command line is being thrown away.
    pub fn is_discarding(&self) -> bool {
        matches!(self.input, Input::Discard)
    }

    /// How long the driver should wait for more input before calling
    /// [`timed_out`](Session::timed_out): the data timeout inside message data, else the
    /// command timeout.
    pub fn read_timeout(&self) -> Duration {
        if self.in_data() {
            self.config.limits.data_timeout
        } else {
            self.config.limits.command_timeout
        }
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Consumes input received at `now`; returns how many bytes were used. The rest must be
    /// offered again. Returns 0 while the session waits for an answer, is closed, or needs
    /// more bytes. `now` dates the `Received:` field of a message whose data starts here.
    pub fn feed(&mut self, input: &[u8], now: SystemTime) -> usize {
        self.now = now;
        if self.waiting.is_some() || input.is_empty() {
            return 0;
        }
        match self.input {
            Input::Connecting | Input::Closed => 0,
            Input::Command => self.feed_command(input),
            Input::Discard => match memchr::memchr(b'\n', input) {
                Some(i) => {
                    self.input = Input::Command;
                    i + 1
                }
                None => input.len(),
            },
            Input::Data(_) => self.feed_data(input),
            Input::Bdat { .. } => self.feed_bdat(input),
        }
    }

    /// Answers the question of the last asking event.
    pub fn resolve(&mut self, answer: Answer) {
        let Some(waiting) = self.waiting.take() else {
            log::warn!(
                "session {}: answer without a question: {answer:?}",
                self.info.id
            );
            return;
        };
        match (waiting, answer) {
            (Waiting::Guard(stage), Answer::Verdict(v)) => self.verdict(stage, v),
            (Waiting::Guard(Stage::Connect), Answer::TimedOut | Answer::Unanswerable) => {
                log::warn!("session {}: the connect check did not answer", self.info.id);
                self.verdict(Stage::Connect, Verdict::Close(reply::NOT_READY))
            }
            (Waiting::Open, Answer::Done(r)) => {
                self.origin = Origin::Backend;
                self.opened(r)
            }
            (Waiting::AddRecipient, Answer::Done(r)) => {
                self.origin = Origin::Backend;
                self.recipient_added(r)
            }
            (Waiting::Begin, Answer::Done(r)) => {
                self.origin = Origin::Backend;
                self.begun(r)
            }
            (Waiting::Chunk | Waiting::Spool | Waiting::Unspool, Answer::Done(r)) => {
                self.origin = Origin::Backend;
                self.written(r)
            }
            (Waiting::Commit, Answer::Committed(o)) => {
                self.origin = Origin::Backend;
                self.committed(o)
            }
            (waiting, Answer::TimedOut) => {
                self.origin = Origin::Backend;
                self.backend_timed_out(waiting, reply::BACKEND_TIMEOUT)
            }
            (waiting, Answer::Unanswerable) => {
                log::error!(
                    "session {}: the driver could not answer {waiting:?}",
                    self.info.id
                );
                self.origin = Origin::Backend;
                self.backend_timed_out(waiting, reply::DELIVERY_FAILED)
            }
            (waiting, answer) => {
                log::error!(
                    "session {}: answer {answer:?} does not fit {waiting:?}",
                    self.info.id
                );
                self.waiting = Some(waiting);
            }
        }
    }

    /// TLS is up after [`Event::StartTls`]: the session starts over (RFC 3207 4.2), the client
    /// must greet again, and STARTTLS is no longer offered.
    pub fn tls_started(&mut self, tls: TlsInfo) {
        self.info.tls = Some(tls);
        self.info.helo = None;
        self.info.extended = false;
        self.envelope = None;
        self.waiting = None;
        self.input = Input::Command;
    }

    /// No input arrived within [`read_timeout`](Session::read_timeout): 421 4.4.2 and close.
    pub fn timed_out(&mut self) {
        if !self.is_closed() {
            self.limit(Limit::Timeout);
        }
        self.close_with(Some(reply::TIMEOUT), End::Timeout);
    }

    /// The peer closed its side.
    pub fn eof(&mut self) {
        self.close_with(None, End::Eof);
    }

    /// The connection failed (I/O error, TLS handshake failure).
    pub fn failed(&mut self) {
        self.close_with(None, End::Failed);
    }

    /// The peer spoke before the greeting: 554 5.5.1 and close.
    pub fn early_talker(&mut self) {
        self.close_with(Some(reply::EARLY_TALKER), End::Refused);
    }

    /// The server is shutting down. A session waiting for a command gets 421 4.3.2 and is
    /// closed; one inside a transaction's data is left to finish. Returns true when closed.
    pub fn shutdown(&mut self) -> bool {
        if self.waiting.is_none() && matches!(self.input, Input::Command | Input::Connecting) {
            self.close_with(Some(reply::SHUTTING_DOWN), End::Shutdown);
            true
        } else {
            self.is_closed()
        }
    }

    fn reply(&mut self, reply: impl Into<Reply>) {
        self.events.push_back(Event::Reply(reply.into()));
    }

    /// Sends a refusal (noted with the current origin); a `421` closes the session, as the
    /// code says.
    fn refuse(&mut self, refusal: Refusal) {
        self.noted_refusal(&refusal);
        if refusal.code() == 421 {
            self.close_with(Some(refusal), End::Refused);
        } else {
            self.reply(refusal);
        }
    }

    fn ask(&mut self, event: Event, waiting: Waiting) {
        self.events.push_back(event);
        self.waiting = Some(waiting);
    }

    /// Ends the transaction, telling the driver to abort it if one is open.
    fn abort_transaction(&mut self) {
        self.envelope = None;
        self.recipient = None;
        if std::mem::take(&mut self.opened) {
            self.events.push_back(Event::Abort);
        }
        self.message = data::Message::default();
    }

    fn close_with(&mut self, refusal: Option<Refusal>, end: End) {
        if let Some(refusal) = &refusal {
            if !self.is_closed() {
                self.noted_refusal(refusal);
            }
        }
        self.close(refusal.map(Reply::from), end)
    }

    /// Aborts the transaction, sends the last reply, closes.
    fn close(&mut self, last: Option<Reply>, end: End) {
        if self.is_closed() {
            return;
        }
        self.abort_transaction();
        if let Some(reply) = last {
            self.reply(reply);
        }
        self.events.push_back(Event::Close);
        self.input = Input::Closed;
        self.waiting = None;
        if self.end == End::Open {
            self.end = end;
        }
    }

    /// A guard's or check's verdict.
    fn verdict(&mut self, stage: Stage, verdict: Verdict) {
        self.origin = match stage {
            Stage::Connect => Origin::Connect,
            Stage::Helo => Origin::Helo,
            Stage::Mail => Origin::Mail,
            Stage::Rcpt => Origin::Rcpt,
            Stage::Data => Origin::Data,
            Stage::EndOfData => Origin::EndOfData,
        };
        match stage {
            Stage::Connect => self.connect_verdict(verdict),
            Stage::Helo => self.helo_verdict(verdict),
            Stage::Mail => self.mail_verdict(verdict),
            Stage::Rcpt => self.rcpt_verdict(verdict),
            Stage::Data => self.data_verdict(verdict),
            Stage::EndOfData => self.end_of_data_verdict(verdict),
        }
    }

    /// A backend question got no answer (in time): the transaction is given up, the
    /// question answered with `refusal`.
    fn backend_timed_out(&mut self, waiting: Waiting, refusal: Refusal) {
        log::warn!(
            "session {}: no answer to {waiting:?}; answering {refusal}",
            self.info.id
        );
        if refusal == reply::BACKEND_TIMEOUT {
            self.limit(Limit::BackendTimeout);
        }
        // The driver dropped the transaction whose call did not end.
        match waiting {
            Waiting::Open => self.opened(Err(refusal)),
            Waiting::AddRecipient => {
                self.recipient_added(Err(refusal));
                self.abort_transaction();
            }
            Waiting::Begin => self.begun(Err(refusal)),
            Waiting::Chunk | Waiting::Spool | Waiting::Unspool => self.written(Err(refusal)),
            Waiting::Commit => {
                let n = self.envelope.as_ref().map_or(0, |e| e.recipients.len());
                self.committed(vec![Err(refusal); n])
            }
            Waiting::Guard(stage) => self.verdict(stage, Verdict::Reject(refusal)),
            Waiting::Tls => self.failed(),
        }
    }

    /// Applies an accepting verdict's note to the transaction in progress.
    fn note(&mut self, verdict: Verdict) {
        let Verdict::Note(note) = verdict else {
            return;
        };
        if let Some(env) = self.envelope.as_mut() {
            env.headers.extend(note.headers);
            env.auth.extend(note.results);
            env.quarantine |= note.quarantine;
        }
    }
}
