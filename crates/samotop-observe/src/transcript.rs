//! [`Transcripts`]: one file per session, every command and reply with its time, written off
//! the session's path and bounded.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::collector::Collector;
use samotop_core::{Observation, Observer, SessionInfo, trace};

use crate::metrics::Counters;

/// The bounds of a transcript directory. Every one is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptLimits {
    /// Transcript files kept; the oldest go first. Default 10 000.
    pub max_files: usize,
    /// Bytes of transcripts kept; the oldest go first. Default 1 GiB.
    pub max_bytes: u64,
    /// Bytes of one session's transcript; past it the rest is left out (and counted as
    /// dropped), so a 10 000-command session cannot fill the disk. Default 256 KiB.
    pub per_session: usize,
    /// Lines waiting for the writer; past it lines are dropped (and counted), so a slow or
    /// full disk never stalls a session. Default 65 536.
    pub queue: usize,
}

impl Default for TranscriptLimits {
    fn default() -> Self {
        TranscriptLimits {
            max_files: 10_000,
            max_bytes: 1 << 30,
            per_session: 256 * 1024,
            queue: 65_536,
        }
    }
}

enum Msg {
    Line(String, String),
    End(String),
}

/// Session transcripts: an [`Observer`] that writes, for each session, a file
/// `DIR/<time>-<session id>.transcript` with the peer, every command (`C:`) and reply (`S:`)
/// with its time, TLS, the authentication verdicts, each message's size and SHA-256, and
/// each delivery's outcome. Never the content of a message; an `AUTH` command's argument is
/// replaced by `[redacted]`.
///
/// Writing is done by a thread of its own: the session only hands it a line through a
/// bounded queue, and a full queue drops the line ([`dropped`](Transcripts::dropped)), so
/// that a slow or full disk, or a read-only directory, never stalls or stops mail.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// let dir = tempfile::tempdir()?;
/// let transcripts = samotop_observe::Transcripts::start(dir.path(), Default::default());
/// assert_eq!(transcripts.dropped(), 0);
/// # Ok(()) }
/// ```
pub struct Transcripts {
    tx: SyncSender<Msg>,
    written: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Transcripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcripts")
            .field("written", &self.written())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl Transcripts {
    /// Starts the writer for `dir` (made if missing). A directory that cannot be written is
    /// not an error: its transcripts are dropped and counted, and a warning is logged.
    pub fn start(dir: impl Into<PathBuf>, limits: TranscriptLimits) -> Transcripts {
        let dir = dir.into();
        let (tx, rx) = std::sync::mpsc::sync_channel(limits.queue.max(1));
        let written = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = Writer::new(dir, limits, written.clone(), dropped.clone());
        let spawned = std::thread::Builder::new()
            .name("samotop-transcripts".into())
            .spawn(move || writer.run(rx));
        if let Err(e) = spawned {
            log::error!("transcripts: cannot start the writer: {e}; none will be written");
        }
        Transcripts {
            tx,
            written,
            dropped,
        }
    }

    /// Lines written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Lines dropped so far (queue full, disk full, directory not writable, session cap).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The written and dropped counters as metrics (`samotop_transcript_lines_written_total`,
    /// `samotop_transcript_lines_dropped_total`), for [`Metrics::register_collector`](crate::Metrics::register_collector).
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(Counters {
                name: "transcript_lines_written",
                help: "Transcript lines written",
                value: self.written.clone(),
            }),
            Box::new(Counters {
                name: "transcript_lines_dropped",
                help: "Transcript lines dropped: queue full, disk full or read-only, session cap",
                value: self.dropped.clone(),
            }),
        ]
    }

    fn send(&self, msg: Msg) {
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn line(&self, info: &SessionInfo, text: String) {
        let mut line = trace::rfc3339(SystemTime::now());
        line.push(' ');
        line.push_str(&text);
        self.send(Msg::Line(info.id.clone(), line));
    }
}

impl Observer for Transcripts {
    fn wants_commands(&self) -> bool {
        true
    }

    fn observe(&self, info: &SessionInfo, what: &Observation<'_>) {
        let text = match what {
            Observation::Start => format!(
                "* session {} peer={} listener={} server={}",
                info.id,
                info.peer,
                info.listener,
                clean(&info.server_name)
            ),
            Observation::Command(line) => format!("C: {}", redact(line)),
            Observation::Reply(reply) => {
                let wire = reply.to_bytes();
                let text = String::from_utf8_lossy(&wire);
                let mut out = String::new();
                for (i, l) in text.split_terminator("\r\n").enumerate() {
                    if i > 0 {
                        out.push_str("\n  ");
                    }
                    let _ = write!(out, "S: {l}");
                }
                out
            }
            Observation::Tls(tls) => {
                format!("* TLS {} {}", clean(&tls.version), clean(&tls.cipher))
            }
            Observation::TlsFailed(e) => format!("* TLS failed: {}", clean(e)),
            Observation::Refused { refusal, origin } => match refusal.source() {
                Some(by) => format!("* refused at {} by {by}", origin.as_str()),
                None => format!("* refused at {}", origin.as_str()),
            },
            Observation::Limit(limit) => format!("* limit reached: {}", limit.as_str()),
            Observation::Content { size, sha256 } => match sha256 {
                Some(h) => format!("* message {size} bytes sha256={}", hex(h)),
                None => format!("* message {size} bytes"),
            },
            Observation::MessageRefused { refusal, origin } => {
                format!("* message refused at {}: {refusal}", origin.as_str())
            }
            Observation::Delivered {
                envelope,
                outcomes,
                latency,
            } => {
                let mut out = format!("* delivered in {} ms:", latency.as_millis());
                for (r, o) in envelope.recipients.iter().zip(outcomes.iter()) {
                    match o {
                        Ok(()) => {
                            let _ = write!(out, " <{}> stored;", clean(&r.address));
                        }
                        Err(e) => {
                            let _ = write!(out, " <{}> {e};", clean(&r.address));
                        }
                    }
                }
                for a in &envelope.auth {
                    let _ = write!(out, " {}={}", clean(&a.method), clean(&a.result));
                }
                out
            }
            Observation::ConnectionRefused { refusal, limit } => {
                format!("* connection refused ({}): {refusal}", limit.as_str())
            }
            Observation::End(summary) => {
                let line = format!(
                    "* end {} mails={} rcpts={} rejected={} bytes={} errors={}",
                    summary.end.as_str(),
                    summary.stats.mails,
                    summary.stats.rcpts,
                    summary.stats.rejected_rcpts,
                    summary.stats.bytes,
                    summary.stats.errors
                );
                self.line(info, line);
                self.send(Msg::End(info.id.clone()));
                return;
            }
            _ => return,
        };
        if let Observation::ConnectionRefused { .. } = what {
            // No session follows: a transcript of one line.
            self.line(info, text);
            self.send(Msg::End(info.id.clone()));
            return;
        }
        self.line(info, text);
    }
}

/// `AUTH PLAIN dXNlcgB...` becomes `AUTH PLAIN [redacted]`: nothing that looks like a
/// credential is written.
fn redact(line: &str) -> String {
    let clean = clean(line);
    let upper = clean.to_ascii_uppercase();
    if upper.starts_with("AUTH ") {
        let mut words = clean.split_whitespace();
        let verb = words.next().unwrap_or("AUTH");
        return match words.next() {
            Some(mech) => format!("{verb} {mech} [redacted]"),
            None => format!("{verb} [redacted]"),
        };
    }
    clean
}

/// Control characters shown as `?`: a transcript line is one line.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// One session's lines, until its end.
#[derive(Default)]
struct Open {
    text: String,
    truncated: bool,
    started: Option<String>,
}

/// How long the writer lets lines gather after a batch: short against the queue (65 536
/// lines hold far more than this at any rate a session can make), long against a wake-up.
const BATCH: std::time::Duration = std::time::Duration::from_millis(2);

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    limits: TranscriptLimits,
    written: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    open: HashMap<String, Open>,
    /// The files kept, oldest first, with their sizes.
    files: VecDeque<(PathBuf, u64)>,
    bytes: u64,
    warned: Option<Instant>,
}

impl Writer {
    fn new(
        dir: PathBuf,
        limits: TranscriptLimits,
        written: Arc<AtomicU64>,
        dropped: Arc<AtomicU64>,
    ) -> Writer {
        let mut w = Writer {
            dir,
            limits,
            written,
            dropped,
            open: HashMap::new(),
            files: VecDeque::new(),
            bytes: 0,
            warned: None,
        };
        if let Err(e) = std::fs::create_dir_all(&w.dir) {
            w.warn(&format!("cannot make {}: {e}", w.dir.display()));
        }
        w.scan();
        w
    }

    /// The transcripts already there count against the bounds.
    fn scan(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut found: Vec<(PathBuf, u64)> = entries
            .flatten()
            .take(1_000_000)
            .filter(|e| e.path().extension().is_some_and(|x| x == "transcript"))
            .filter_map(|e| Some((e.path(), e.metadata().ok()?.len())))
            .collect();
        found.sort();
        self.bytes = found.iter().map(|(_, n)| n).sum();
        self.files = found.into();
        self.rotate();
    }

    fn run(mut self, rx: Receiver<Msg>) {
        // Ends when every sender is gone (the server stopped): what is open is written.
        while let Ok(msg) = rx.recv() {
            self.take(msg);
            // Take what else came, then let the queue fill for a moment: a wake-up of this
            // thread per batch of lines, not per line (a futex and a context switch each).
            while let Ok(msg) = rx.try_recv() {
                self.take(msg);
            }
            std::thread::sleep(BATCH);
        }
        let ids: Vec<String> = self.open.keys().cloned().collect();
        for id in ids {
            self.finish(&id);
        }
    }

    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Line(id, line) => self.line(id, line),
            Msg::End(id) => self.finish(&id),
        }
    }

    fn line(&mut self, id: String, line: String) {
        let cap = self.limits.per_session;
        let open = self.open.entry(id).or_default();
        if open.started.is_none() {
            open.started = Some(line.chars().take(23).collect());
        }
        if open.truncated {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if open.text.len() + line.len() + 1 > cap {
            open.truncated = true;
            open.text
                .push_str("* transcript cut: the session went on past the size limit\n");
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        open.text.push_str(&line);
        open.text.push('\n');
    }

    fn finish(&mut self, id: &str) {
        let Some(open) = self.open.remove(id) else {
            return;
        };
        let lines = open.text.lines().count() as u64;
        let stamp: String = open
            .started
            .unwrap_or_default()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        let name = format!("{stamp}-{id}.transcript");
        // Session ids are letters and digits; anything else is refused as a file name.
        if !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            self.dropped.fetch_add(lines, Ordering::Relaxed);
            return;
        }
        let path = self.dir.join(name);
        let size = open.text.len() as u64;
        // Room first: the directory is never over its bounds, not even for a moment.
        self.rotate_to(
            self.limits.max_files.saturating_sub(1),
            self.limits.max_bytes.saturating_sub(size),
        );
        match write_file(&path, open.text.as_bytes()) {
            Ok(()) => {
                self.written.fetch_add(lines, Ordering::Relaxed);
                self.bytes += size;
                self.files.push_back((path, size));
            }
            Err(e) => {
                self.dropped.fetch_add(lines, Ordering::Relaxed);
                self.warn(&format!("cannot write {}: {e}", path.display()));
            }
        }
    }

    /// Removes the oldest files while over a bound.
    fn rotate(&mut self) {
        self.rotate_to(self.limits.max_files, self.limits.max_bytes);
    }

    /// Removes the oldest files while there are more than `files`, or more than `bytes`.
    fn rotate_to(&mut self, files: usize, bytes: u64) {
        // Bounded: each turn removes one file from the list.
        while self.files.len() > files || self.bytes > bytes {
            let Some((path, size)) = self.files.pop_front() else {
                break;
            };
            self.bytes = self.bytes.saturating_sub(size);
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    self.warn(&format!("cannot remove {}: {e}", path.display()));
                }
            }
        }
    }

    /// A warning at most once a minute: a broken disk must not flood the log.
    fn warn(&mut self, what: &str) {
        let now = Instant::now();
        if self
            .warned
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(60))
        {
            self.warned = Some(now);
            log::warn!("transcripts: {what}; transcripts are dropped and counted");
        }
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use samotop_core::{End, Peer, Reply, Stats, Summary};

    fn info() -> SessionInfo {
        SessionInfo::new(Peer::Stdio, "mx.test")
    }

    fn wait_for(dir: &Path, n: usize) -> Vec<PathBuf> {
        for _ in 0..500 {
            let files: Vec<PathBuf> = std::fs::read_dir(dir)
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            if files.len() >= n {
                return files;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no transcript appeared in {}", dir.display());
    }

    fn end() -> Summary {
        Summary {
            stats: Stats::default(),
            end: End::Quit,
        }
    }

    #[test]
    fn a_session_reads_back_in_order_and_credentials_are_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let t = Transcripts::start(dir.path(), TranscriptLimits::default());
        let i = info();
        t.observe(&i, &Observation::Start);
        t.observe(&i, &Observation::Command("EHLO x"));
        t.observe(&i, &Observation::Reply(&Reply::new(250, [2, 0, 0], "OK")));
        t.observe(&i, &Observation::Command("AUTH PLAIN c2VjcmV0"));
        t.observe(&i, &Observation::End(&end()));
        let files = wait_for(dir.path(), 1);
        let text = std::fs::read_to_string(&files[0]).unwrap();
        let lines: Vec<&str> = text.lines().map(|l| &l[25..]).collect();
        assert!(lines[0].starts_with("* session"), "{text}");
        assert_eq!(
            lines[1..4],
            ["C: EHLO x", "S: 250 2.0.0 OK", "C: AUTH PLAIN [redacted]"]
        );
        assert!(!text.contains("c2VjcmV0"));
    }

    #[test]
    fn the_directory_stays_within_its_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let limits = TranscriptLimits {
            max_files: 5,
            per_session: 200,
            ..TranscriptLimits::default()
        };
        let t = Transcripts::start(dir.path(), limits);
        for _ in 0..30 {
            let i = info();
            t.observe(&i, &Observation::Start);
            for _ in 0..100 {
                t.observe(&i, &Observation::Command("NOOP"));
            }
            t.observe(&i, &Observation::End(&end()));
        }
        drop(t);
        std::thread::sleep(Duration::from_millis(300));
        let files: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(files.len() <= 5, "{}", files.len());
        for f in files {
            assert!(std::fs::metadata(&f).unwrap().len() <= 200 + 80);
        }
    }
}
