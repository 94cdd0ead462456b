//! The sans-io SMTP/LMTP session state machine.
//!
//! No socket, clock or task inside: bytes go in with [`Session::feed`], events come out of
//! [`Session::poll_event`], and each event that asks a question gets one [`Session::resolve`].
//! The driver owns the timer and calls [`Session::timed_out`]; the session picks the reply.

mod data;
mod smtp;

pub use data::DataDecoder;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::dispatch::Outcomes;
use crate::envelope::{Envelope, Protocol, Recipient, SessionInfo, TlsInfo};
use crate::guard::Verdict;
use crate::limits::Limits;
use crate::reply::Reply;

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
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            limits: Limits::default(),
            protocol: Protocol::Smtp,
            starttls: false,
            require_tls: false,
            accept_bare_newlines: false,
        }
    }
}

/// What the session wants from its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Send this reply (buffer it; flush before reading more input).
    Reply(Reply),
    /// Ask the guards' `connect`; answer with [`Answer::Verdict`].
    Connect,
    /// Ask the guards' `helo` (`info().helo` is set); answer with [`Answer::Verdict`].
    Helo,
    /// Ask the guards' `mail`, then open a transaction for `envelope()`; answer with
    /// [`Answer::Verdict`].
    Mail,
    /// Ask the guards' `rcpt`, then the transaction's `add_recipient`; answer with
    /// [`Answer::Verdict`].
    Rcpt(Recipient),
    /// The data starts: ask the guards' `data`, then call the transaction's `begin` and write
    /// the trace header fields; answer with [`Answer::Verdict`].
    DataStart,
    /// Write this chunk of data to the transaction; answer with [`Answer::Written`].
    Chunk(Bytes),
    /// Commit the transaction; answer with [`Answer::Committed`].
    Commit,
    /// Abort the transaction, if one is open. No answer.
    Abort,
    /// Start TLS: flush the replies, discard any input already received, do the handshake,
    /// then call [`Session::tls_started`] (or close on failure).
    StartTls,
    /// Flush the replies and close the connection.
    Close,
}

/// The driver's answer to the question an [`Event`] asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// For `Connect`, `Helo`, `Mail`, `Rcpt` and `DataStart`.
    Verdict(Verdict),
    /// For `Chunk`.
    Written(Result<(), Reply>),
    /// For `Commit`.
    Committed(Outcomes),
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
    /// Messages accepted (250 after the data).
    pub mails: usize,
    /// Recipients accepted.
    pub rcpts: usize,
    /// Message octets received (after unstuffing).
    pub bytes: u64,
    /// Bad commands.
    pub errors: usize,
}

/// The question the session waits on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Waiting {
    Connect,
    Helo,
    Mail,
    Rcpt(Recipient),
    DataStart,
    Chunk,
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

/// The message data in flight.
#[derive(Debug, Default)]
struct Message {
    /// Unstuffed data not yet handed to the sink.
    chunk: BytesMut,
    /// Octets received so far.
    size: u64,
    /// The first failure; the data is then read and thrown away.
    failure: Option<Reply>,
    /// `begin` succeeded (first BDAT, or DATA): the transaction has data.
    begun: bool,
    /// The end of the data was seen; commit after the pending chunk is written.
    ended: bool,
}

/// One SMTP or LMTP session, from the greeting to the close. Driven as the [crate](crate) docs show.
///
/// Call order: poll events until `None`; `feed` input; repeat. When `feed` consumes nothing and
/// there is no event, read more input (flush the replies first). An event that asks gets one
/// `resolve` before the session goes on.
#[derive(Debug)]
pub struct Session {
    config: Arc<SessionConfig>,
    info: SessionInfo,
    input: Input,
    waiting: Option<Waiting>,
    events: VecDeque<Event>,
    envelope: Option<Envelope>,
    message: Message,
    transactions: usize,
    commands: usize,
    stats: Stats,
    end: End,
}

impl Session {
    /// A new session; its first event is [`Event::Connect`].
    pub fn new(config: Arc<SessionConfig>, mut info: SessionInfo) -> Self {
        info.protocol = config.protocol;
        let mut events = VecDeque::with_capacity(4);
        events.push_back(Event::Connect);
        Session {
            config,
            info,
            input: Input::Connecting,
            waiting: Some(Waiting::Connect),
            events,
            envelope: None,
            message: Message::default(),
            transactions: 0,
            commands: 0,
            stats: Stats::default(),
            end: End::Open,
        }
    }

    /// Facts about the connection.
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// The transaction in progress (set from MAIL on, also while `Event::Mail` is asked).
    pub fn envelope(&self) -> Option<&Envelope> {
        self.envelope.as_ref()
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
    pub(crate) fn is_discarding(&self) -> bool {
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

    /// Consumes input; returns how many bytes were used. The rest must be offered again.
    /// Returns 0 while the session waits for an answer, is closed, or needs more bytes.
    pub fn feed(&mut self, input: &[u8]) -> usize {
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
            (Waiting::Connect, Answer::Verdict(v)) => self.connect_verdict(v),
            (Waiting::Helo, Answer::Verdict(v)) => self.helo_verdict(v),
            (Waiting::Mail, Answer::Verdict(v)) => self.mail_verdict(v),
            (Waiting::Rcpt(r), Answer::Verdict(v)) => self.rcpt_verdict(r, v),
            (Waiting::DataStart, Answer::Verdict(v)) => self.data_verdict(v),
            (Waiting::Chunk, Answer::Written(r)) => self.chunk_written(r),
            (Waiting::Commit, Answer::Committed(o)) => self.committed(o),
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
        self.close_with(Some(crate::reply::TIMEOUT), End::Timeout);
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
        self.close_with(Some(crate::reply::EARLY_TALKER), End::Refused);
    }

    /// The server is shutting down. A session waiting for a command gets 421 4.3.2 and is
    /// closed; one inside a transaction's data is left to finish. Returns true when closed.
    pub fn shutdown(&mut self) -> bool {
        if self.waiting.is_none() && matches!(self.input, Input::Command | Input::Connecting) {
            self.close_with(Some(crate::reply::SHUTTING_DOWN), End::Shutdown);
            true
        } else {
            self.is_closed()
        }
    }

    fn reply(&mut self, reply: Reply) {
        self.events.push_back(Event::Reply(reply));
    }

    fn ask(&mut self, event: Event, waiting: Waiting) {
        self.events.push_back(event);
        self.waiting = Some(waiting);
    }

    /// Ends the transaction, telling the driver to abort it if one is open.
    fn abort_transaction(&mut self) {
        if self.envelope.take().is_some() {
            self.events.push_back(Event::Abort);
        }
        self.message = Message::default();
    }

    fn close_with(&mut self, reply: Option<Reply>, end: End) {
        if self.is_closed() {
            return;
        }
        self.abort_transaction();
        if let Some(reply) = reply {
            self.reply(reply);
        }
        self.events.push_back(Event::Close);
        self.input = Input::Closed;
        self.waiting = None;
        if self.end == End::Open {
            self.end = end;
        }
    }
}
