//! The data phase: DATA and BDAT content, the chunks handed to the backend (or the spool),
//! and the end of the data, up to the commit and its replies.
//!
//! Without end-of-data checks the data streams: `Begin` is asked once the client's header
//! section is complete (so that the envelope carries its digest), or the first chunk is
//! full, or the data ends, whichever comes first; then `Chunk`s, then `Commit`. With checks,
//! every chunk is `Spool`ed, the checks decide at `Guard(EndOfData)`, and only then come
//! `Begin`, the trace fields, `Unspool` and `Commit`.

use bytes::BytesMut;
use samotop_parser::Body;
use sha2::{Digest, Sha256};

use super::decode::BareNewlines;
use super::header::HeaderScanner;
use super::{End, Event, Input, Session, Stage, Waiting};
use crate::guard::Verdict;
use crate::observe::{Limit, Note, Origin};
use crate::reply::{self, Refusal};
use crate::trace;

/// The message data in flight.
#[derive(Debug, Default)]
pub(super) struct Message {
    /// Data not yet handed out.
    pub(super) chunk: BytesMut,
    /// Decoded data on its way through the header scanner.
    scratch: BytesMut,
    /// Octets received so far.
    pub(super) size: u64,
    /// The first failure; the data is then read and thrown away, and the failure answered.
    pub(super) failure: Option<Refusal>,
    /// Where the failure came from.
    failure_origin: Option<Origin>,
    /// The content's SHA-256 so far (only for an observer that wants the detail).
    hasher: Option<Box<Sha256>>,
    /// `Guard(Data)` accepted: content flows.
    pub(super) accepted: bool,
    /// The content comes in BDAT chunks.
    bdat: bool,
    /// A BDAT chunk outside a live transaction: read, thrown away, answered once.
    discard: bool,
    /// `Begin` was answered `Ok`.
    pub(super) begun: bool,
    /// `Begin` was asked.
    begin_asked: bool,
    /// The end of the data was seen.
    ended: bool,
    /// Spooling for end-of-data checks.
    spooling: bool,
    /// The end-of-data checks accepted.
    checked: bool,
    /// The spool was written to the transaction.
    unspooled: bool,
    /// Header fields of the end-of-data checks: first in the stored message.
    top: Vec<String>,
    /// Boxed (with the hasher): only a message in flight needs them.
    scanner: Option<Box<HeaderScanner>>,
    bare: BareNewlines,
}

impl Session {
    /// The message fails (the first failure stays): the rest of the data is read and thrown
    /// away, and the failure answered at its end.
    fn fail_message(&mut self, refusal: Refusal, origin: Origin) {
        if self.message.failure.is_none() {
            match refusal.clone() {
                r if r == reply::MESSAGE_TOO_BIG => self.limit(Limit::MessageSize),
                r if r == reply::BARE_NEWLINE => self.limit(Limit::BareNewline),
                _ => {}
            }
            self.message.failure = Some(refusal);
            self.message.failure_origin = Some(origin);
        }
    }

    /// Checks common to DATA and the first BDAT; `None` when the data may start.
    fn data_refusal(&self) -> Option<Refusal> {
        match self.envelope.as_ref() {
            None => Some(reply::NEED_MAIL),
            Some(env) if env.recipients.is_empty() => Some(reply::NO_VALID_RECIPIENTS),
            Some(_) => None,
        }
    }

    fn binary(&self) -> bool {
        self.envelope
            .as_ref()
            .is_some_and(|e| e.params.body == Some(Body::BinaryMime))
    }

    pub(super) fn data(&mut self) {
        if let Some(refusal) = self.data_refusal() {
            return self.error(refusal);
        }
        if self.message.accepted || self.binary() {
            return self.error(reply::DATA_AFTER_BDAT);
        }
        self.ask(Event::Guard(Stage::Data), Waiting::Guard(Stage::Data));
    }

    pub(super) fn bdat(&mut self, size: u64, last: bool) {
        // Whatever happens, the chunk's octets are read: never taken for commands.
        self.input = Input::Bdat {
            remaining: size,
            last,
        };
        let refusal = if !self.config.capabilities.chunking {
            Some(reply::CHUNKING_NOT_OFFERED)
        } else if self.message.accepted {
            None
        } else {
            self.data_refusal()
        };
        if let Some(refusal) = refusal {
            // Not part of a live transaction: one reply, after the chunk.
            self.stats.errors += 1;
            self.message.failure = Some(refusal);
            self.message.failure_origin = Some(Origin::Command);
            self.message.discard = true;
            if size == 0 {
                self.bdat_chunk_done(last);
            }
            return;
        }
        self.message.bdat = true;
        self.account(size);
        if self.message.accepted || self.message.failure.is_some() {
            if size == 0 {
                self.bdat_chunk_done(last);
            }
            return;
        }
        self.ask(Event::Guard(Stage::Data), Waiting::Guard(Stage::Data));
    }

    /// Counts a BDAT chunk against the size limit before reading it.
    fn account(&mut self, size: u64) {
        self.message.size = self.message.size.saturating_add(size);
        if self.message.size > self.max_message_size() {
            self.fail_message(reply::MESSAGE_TOO_BIG, Origin::Data);
        }
    }

    /// The smaller of our limit and the backend's.
    pub(super) fn max_message_size(&self) -> u64 {
        let ours = self.config.limits.max_message_size;
        self.config
            .capabilities
            .max_message_size
            .map_or(ours, |theirs| ours.min(theirs))
    }

    pub(super) fn data_verdict(&mut self, verdict: Verdict) {
        let bdat = matches!(self.input, Input::Bdat { .. });
        match verdict {
            Verdict::Accept | Verdict::Note(_) => {
                self.note(verdict);
                self.start_content();
                if !bdat {
                    self.input = Input::Data(super::DataDecoder::new());
                    self.reply(reply::START_DATA);
                }
            }
            Verdict::Reject(refusal) if bdat => self.fail_message(refusal, Origin::Data),
            Verdict::Reject(refusal) => self.refuse(refusal),
            Verdict::Close(refusal) => return self.close_with(Some(refusal), End::Refused),
        }
        // A zero-sized BDAT has no bytes to wait for.
        if let Input::Bdat { remaining: 0, last } = self.input {
            self.bdat_chunk_done(last);
        }
    }

    /// The data phase is accepted: set up the scanner and the buffers.
    fn start_content(&mut self) {
        let sender = self
            .envelope
            .as_ref()
            .map(|e| e.sender.to_string())
            .unwrap_or_default();
        let m = &mut self.message;
        m.accepted = true;
        m.spooling = self.config.spool;
        if self.config.observe_detail {
            m.hasher = Some(Box::new(Sha256::new()));
        }
        m.scanner = Some(Box::new(HeaderScanner::new(
            &self.info.server_name,
            &sender,
        )));
        m.chunk
            .reserve(self.config.limits.chunk_size.min(16 * 1024));
    }

    /// Room left in the chunk (at least 1: the decoder must make progress).
    fn room(&self) -> usize {
        self.config
            .limits
            .chunk_size
            .saturating_sub(self.message.chunk.len())
            .max(1)
    }

    pub(super) fn feed_data(&mut self, input: &[u8]) -> usize {
        let room = self.room();
        let Input::Data(decoder) = &mut self.input else {
            return 0;
        };
        let m = &mut self.message;
        let (used, end, produced) = match m.scanner.as_mut() {
            Some(scanner) if !scanner.header_done() => {
                let (used, end) = decoder.decode(input, &mut m.scratch, room);
                let produced = m.scratch.len() as u64;
                if let Some(h) = m.hasher.as_mut() {
                    h.update(&m.scratch);
                }
                scanner.scan(&m.scratch, &mut m.chunk);
                m.scratch.clear();
                (used, end, produced)
            }
            _ => {
                let before = m.chunk.len();
                let (used, end) = decoder.decode(input, &mut m.chunk, room);
                if let Some(h) = m.hasher.as_mut() {
                    h.update(&m.chunk[before..]);
                }
                (used, end, (m.chunk.len() - before) as u64)
            }
        };
        let bare = decoder.saw_bare_newline();
        self.took(produced);
        if end {
            if bare && !self.config.accept_bare_newlines {
                self.fail_message(reply::BARE_NEWLINE, Origin::Data);
            }
            self.input = Input::Command;
            self.end_of_data();
        } else {
            self.maybe_emit();
        }
        used
    }

    pub(super) fn feed_bdat(&mut self, input: &[u8]) -> usize {
        let Input::Bdat { remaining, last } = self.input else {
            return 0;
        };
        let room = self.room();
        let take = (input.len() as u64).min(remaining).min(room as u64) as usize;
        let bytes = &input[..take];
        if self.message.failure.is_none() {
            if !self.binary() && !self.config.accept_bare_newlines {
                self.message.bare.scan(bytes);
            }
            let m = &mut self.message;
            if let Some(h) = m.hasher.as_mut() {
                h.update(bytes);
            }
            match m.scanner.as_mut() {
                Some(scanner) => scanner.scan(bytes, &mut m.chunk),
                None => m.chunk.extend_from_slice(bytes),
            }
            self.took(take as u64);
        }
        let remaining = remaining - take as u64;
        self.input = Input::Bdat { remaining, last };
        if remaining == 0 {
            self.bdat_chunk_done(last);
        } else {
            self.maybe_emit();
        }
        take
    }

    /// Counts octets received; over the size limit the message fails (and is read on).
    fn took(&mut self, produced: u64) {
        self.stats.bytes += produced;
        if !self.message.bdat {
            self.message.size += produced;
        }
        if self.message.size > self.max_message_size() {
            self.fail_message(reply::MESSAGE_TOO_BIG, Origin::Data);
        }
        if self.message.failure.is_some() {
            self.message.chunk.clear();
        }
    }

    fn bdat_chunk_done(&mut self, last: bool) {
        self.input = Input::Command;
        if self.message.discard {
            // Not a live transaction (no MAIL, no recipient, CHUNKING not offered): one reply,
            // and the transaction, if any, stays as it was.
            let failure = self.message.failure.take().unwrap_or(reply::NEED_MAIL);
            self.message.discard = false;
            if !self.message.accepted {
                self.message = Message::default();
            }
            self.origin = Origin::Command;
            self.refuse(failure);
            if self.stats.errors >= self.config.limits.max_errors {
                self.close_with(Some(reply::TOO_MANY_ERRORS), End::Refused);
            }
            return;
        }
        if last && self.message.bare.found() {
            self.fail_message(reply::BARE_NEWLINE, Origin::Data);
        }
        match (self.message.failure.clone(), last) {
            // A failed chunk ends the transaction (RFC 3030 3): one reply, as for any command.
            (Some(failure), false) => {
                log::info!("session {}: message refused: {failure}", self.info.id);
                let origin = self.message.failure_origin;
                self.abort_transaction();
                if let Some(origin) = origin {
                    self.origin = origin;
                }
                self.refuse(failure);
            }
            (None, false) => self.reply(reply::CHUNK_OK),
            (_, true) => self.end_of_data(),
        }
    }

    /// Hands out what has gathered, when it is time: a full chunk, or (streaming) the end
    /// of the header section, which lets the transaction begin with the message's digest.
    fn maybe_emit(&mut self) {
        let m = &self.message;
        if m.failure.is_some() || self.waiting.is_some() {
            return;
        }
        let full = m.chunk.len() >= self.config.limits.chunk_size;
        let header_done = m.scanner.as_ref().is_some_and(|s| s.header_done());
        if full || (!m.spooling && !m.begin_asked && header_done) {
            self.emit_data();
        }
    }

    /// Hands out the gathered data: into the spool, or to the transaction (asking `Begin`
    /// first).
    fn emit_data(&mut self) {
        if self.message.failure.is_some() {
            self.message.chunk.clear();
            return;
        }
        if self.message.spooling {
            if !self.message.chunk.is_empty() {
                let chunk = self.message.chunk.split().freeze();
                self.ask(Event::Spool(chunk), Waiting::Spool);
            }
        } else if !self.message.begin_asked {
            self.ask_begin();
        } else if !self.message.chunk.is_empty() {
            let chunk = self.message.chunk.split().freeze();
            self.ask(Event::Chunk(chunk), Waiting::Chunk);
        }
    }

    fn ask_begin(&mut self) {
        self.message.begin_asked = true;
        let digest = self.message.scanner.as_ref().and_then(|s| s.digest());
        if let Some(env) = self.envelope.as_mut() {
            env.digest = digest;
        }
        self.ask(Event::Begin, Waiting::Begin);
    }

    /// True when data has gathered that [`flush_data`](Session::flush_data) would hand out
    /// now: the driver calls it when the client pauses inside the data.
    pub fn has_pending_data(&self) -> bool {
        let m = &self.message;
        self.waiting.is_none()
            && m.accepted
            && !m.ended
            && !m.spooling
            && m.failure.is_none()
            && (!m.chunk.is_empty() || m.scanner.as_ref().is_some_and(|s| s.can_flush()))
    }

    /// The client pauses inside the data ([`Limits::flush_after_idle`]): what has gathered
    /// goes to the backend now, so that a downstream server waiting for it does not time out.
    /// Nothing happens while spooling (the spool is ours) or while a question is open.
    ///
    /// [`Limits::flush_after_idle`]: crate::Limits::flush_after_idle
    pub fn flush_data(&mut self) {
        if self.has_pending_data() {
            let m = &mut self.message;
            if let Some(scanner) = m.scanner.as_mut() {
                scanner.flush(&mut m.chunk);
            }
            self.emit_data();
        }
    }

    /// The data is complete (or failed): write what is left, then commit or refuse.
    fn end_of_data(&mut self) {
        self.message.ended = true;
        if self.config.observe {
            let note = Note::Content {
                size: self.message.size,
                sha256: self.message.hasher.take().map(|h| h.finalize().into()),
            };
            self.notes.push_back(note);
        }
        let m = &mut self.message;
        if let Some(scanner) = m.scanner.as_mut() {
            scanner.finish(&mut m.chunk);
            if scanner.renamed() > 0 {
                log::info!(
                    "session {}: renamed {} forged Authentication-Results fields",
                    self.info.id,
                    scanner.renamed()
                );
            }
        }
        self.advance_end();
    }

    /// The next step after the end of the data.
    fn advance_end(&mut self) {
        if let Some(failure) = self.message.failure.clone() {
            return self.finish_failed(failure);
        }
        let m = &self.message;
        if m.spooling {
            if !m.chunk.is_empty() {
                self.emit_data();
            } else if !m.checked {
                self.ask(
                    Event::Guard(Stage::EndOfData),
                    Waiting::Guard(Stage::EndOfData),
                );
            } else if !m.begin_asked {
                self.ask_begin();
            } else if !m.unspooled {
                self.message.unspooled = true;
                self.ask(Event::Unspool, Waiting::Unspool);
            } else {
                self.ask(Event::Commit, Waiting::Commit);
            }
        } else if !m.begin_asked {
            self.ask_begin();
        } else if !m.chunk.is_empty() {
            self.emit_data();
        } else {
            self.ask(Event::Commit, Waiting::Commit);
        }
    }

    pub(super) fn end_of_data_verdict(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Accept => {}
            Verdict::Note(note) => {
                self.message.top.extend(note.headers);
                if let Some(env) = self.envelope.as_mut() {
                    env.auth.extend(note.results);
                    env.quarantine |= note.quarantine;
                }
            }
            Verdict::Reject(refusal) => self.fail_message(refusal, Origin::EndOfData),
            Verdict::Close(refusal) => return self.close_with(Some(refusal), End::Refused),
        }
        self.message.checked = true;
        self.advance_end();
    }

    /// The answer to `Begin`: the first chunk carries the trace fields.
    pub(super) fn begun(&mut self, result: Result<(), Refusal>) {
        if let Err(refusal) = result {
            return self.write_failed(refusal);
        }
        self.message.begun = true;
        let Some(env) = self.envelope.as_ref() else {
            return self.write_failed(reply::DELIVERY_FAILED);
        };
        let mut first = String::new();
        for field in &self.message.top {
            first.push_str(&trace::sanitize_field(field));
            first.push_str("\r\n");
        }
        first.push_str(&trace::trace_headers(&self.info, env, self.now));
        let mut chunk = BytesMut::with_capacity(first.len() + self.message.chunk.len());
        chunk.extend_from_slice(first.as_bytes());
        if !self.message.spooling {
            chunk.extend_from_slice(&self.message.chunk);
            self.message.chunk.clear();
        }
        self.ask(Event::Chunk(chunk.freeze()), Waiting::Chunk);
    }

    /// The answer to `Chunk`, `Spool` or `Unspool`.
    pub(super) fn written(&mut self, result: Result<(), Refusal>) {
        if let Err(refusal) = result {
            return self.write_failed(refusal);
        }
        if self.message.ended {
            self.advance_end();
        } else {
            self.maybe_emit();
        }
    }

    fn write_failed(&mut self, refusal: Refusal) {
        log::warn!("session {}: delivery failed: {refusal}", self.info.id);
        self.fail_message(refusal, Origin::Backend);
        self.message.chunk.clear();
        if self.message.ended {
            self.advance_end();
        }
    }

    /// The data ended and the message failed: every reply the data owes is the failure.
    fn finish_failed(&mut self, failure: Refusal) {
        log::info!("session {}: message refused: {failure}", self.info.id);
        let n = self.reply_count();
        let origin = self.message.failure_origin;
        self.abort_transaction();
        for _ in 1..n {
            self.reply(failure.clone());
        }
        if let Some(origin) = origin {
            self.origin = origin;
        }
        if self.config.observe {
            let note = Note::MessageRefused(failure.clone(), self.origin);
            self.notes.push_back(note);
        }
        self.refuse(failure);
    }
}
