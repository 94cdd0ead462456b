//! [`Inbox`]: the store, whichever database holds it, and what readers ask of it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{Semaphore, broadcast};

use crate::error::Error;
use crate::model::{EnvelopeInfo, Filter, Page, Stats, Summary, Waited, mailbox_key};
use crate::parse::{self, DEFAULT_PARSE_LIMIT, Fields, Part, View};
use crate::postgres::Postgres;
use crate::query::Query;
use crate::sqlite::Sqlite;
use crate::staging::{Spill, decompress};

/// The longest a [`wait`](Inbox::wait) waits.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// How long mail is kept; pruning runs in small steps, each its own short transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Messages older than this go. Default: 7 days (`--inbox-max-age`).
    pub max_age: Option<Duration>,
    /// At most this many messages, the oldest go first. Default: no limit.
    pub max_messages: Option<u64>,
    /// At most this many bytes (sizes as received), the oldest go first. Default: no limit.
    pub max_bytes: Option<u64>,
    /// How often pruning runs. Default: 60 s.
    pub interval: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: Some(Duration::from_secs(7 * 24 * 3600)),
            max_messages: None,
            max_bytes: None,
            interval: Duration::from_secs(60),
        }
    }
}

/// Settings of an [`Inbox`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// What is kept, and for how long.
    pub retention: Retention,
    /// Messages up to this size are parsed whole for display and search; bigger ones for
    /// their header section only (and are shown raw). Default 16 MiB.
    pub parse_limit: usize,
    /// Waits at once ([`Inbox::wait`]); one more is [`Error::Busy`]. Default 256.
    pub max_waiters: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retention: Retention::default(),
            parse_limit: DEFAULT_PARSE_LIMIT,
            max_waiters: 256,
        }
    }
}

/// What happened in the store, for live views ([`Inbox::events`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum Event {
    /// Messages were committed (not yet parsed).
    Stored,
    /// Messages up to this cursor were parsed and indexed.
    Indexed {
        /// The highest cursor of the batch.
        cursor: i64,
    },
    /// Messages were deleted or pruned, or their read state changed.
    Changed,
}

/// What a pruning step or run removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Messages removed.
    pub messages: u64,
    /// Their size as received.
    pub bytes: u64,
    /// `age`, `count` or `size`: the limit that removed them.
    pub reason: &'static str,
}

/// The steps of one pruning run added up: both stores loop `step` until it removes nothing
/// (at most [`PruneRun::MAX_STEPS`]), then [`finish`](PruneRun::finish) logs and tells.
#[derive(Debug, Default)]
pub(crate) struct PruneRun {
    total: Pruned,
}

impl PruneRun {
    /// A run stops after this many steps even if more would go (the next run goes on).
    pub(crate) const MAX_STEPS: usize = 1000;

    /// Counts one step's outcome (an error is logged and ends the run); whether to take
    /// another.
    pub(crate) fn step(&mut self, outcome: Result<Pruned, crate::Error>) -> bool {
        match outcome {
            Ok(p) => self.add(p),
            Err(e) => {
                log::warn!("inbox: pruning failed: {e}");
                false
            }
        }
    }

    /// Counts one step that removed `p`; whether to take another (not after an empty one).
    pub(crate) fn add(&mut self, p: Pruned) -> bool {
        if p.messages == 0 {
            return false;
        }
        self.total.messages += p.messages;
        self.total.bytes += p.bytes;
        self.total.reason = p.reason;
        true
    }

    /// Logs what the run removed and, if anything, calls `tell` (the readers' event); the
    /// total.
    pub(crate) fn finish(self, tell: impl FnOnce()) -> Pruned {
        let total = self.total;
        if total.messages > 0 {
            log::info!(
                "inbox: pruned {} messages ({} bytes) by {}",
                total.messages,
                total.bytes,
                total.reason
            );
            tell();
        }
        total
    }
}

/// Shared with the backends' threads: how to tell readers what happened.
#[derive(Clone)]
pub(crate) struct Hooks {
    events: broadcast::Sender<Event>,
    pub(crate) retention: Retention,
    pub(crate) parse_limit: usize,
}

impl Hooks {
    #[cfg(test)]
    pub(crate) fn for_tests() -> Hooks {
        Hooks {
            events: broadcast::channel(16).0,
            retention: Retention::default(),
            parse_limit: DEFAULT_PARSE_LIMIT,
        }
    }

    pub(crate) fn stored(&self) {
        let _ = self.events.send(Event::Stored);
    }
    pub(crate) fn indexed(&self, cursor: i64) {
        let _ = self.events.send(Event::Indexed { cursor });
    }
    pub(crate) fn deleted(&self) {
        let _ = self.events.send(Event::Changed);
    }
}

/// A message on its way into the database.
pub(crate) struct NewMessage {
    pub(crate) uid: String,
    pub(crate) received_ms: i64,
    pub(crate) size: u64,
    pub(crate) sender: String,
    pub(crate) recipients: Vec<String>,
    pub(crate) envelope_json: String,
    pub(crate) raw: Spill,
}

/// The parse of one message, ready to be written.
pub(crate) struct IndexJob {
    pub(crate) id: i64,
    pub(crate) fields: Fields,
}

impl IndexJob {
    /// Decompresses (bounded) and parses, catching a parser panic: such a message is shown raw.
    pub(crate) fn parse(id: i64, size: i64, pieces: &[Vec<u8>], limit: usize) -> IndexJob {
        let whole = size.max(0) as usize <= limit;
        let max = if whole { limit } else { 256 * 1024 };
        let fields = match decompress(pieces, max) {
            Ok(raw) => {
                let raw_len = if whole { raw.len() } else { usize::MAX };
                std::panic::catch_unwind(|| {
                    parse::fields(&raw, if raw_len <= limit { limit } else { 0 })
                })
                .unwrap_or_else(|_| {
                    log::warn!("inbox: the parser panicked on message {id}; it is shown raw");
                    Fields::default()
                })
            }
            Err(e) => {
                log::warn!("inbox: message {id} does not decompress: {e}");
                Fields::default()
            }
        };
        IndexJob { id, fields }
    }

    pub(crate) fn parts_json(&self) -> String {
        serde_json::to_string(&self.fields.attachments).unwrap_or_else(|_| "[]".into())
    }
}

/// The envelope as stored, seen from `mailbox` (then only that recipient is listed).
pub(crate) fn envelope_for(json: &str, mailbox: Option<&str>) -> EnvelopeInfo {
    let mut env: EnvelopeInfo = serde_json::from_str(json).unwrap_or_default();
    if let Some(mailbox) = mailbox {
        let key = mailbox_key(mailbox);
        env.recipients.retain(|r| mailbox_key(r) == key);
    }
    env
}

/// Which of the oldest messages (`(id, size, received)`, oldest first) go, and why.
pub(crate) fn prune_victims(
    candidates: &[(i64, i64, i64)],
    count: i64,
    bytes: i64,
    retention: &Retention,
    now_ms: i64,
) -> (Vec<i64>, &'static str) {
    if let Some(age) = retention.max_age {
        let cutoff = now_ms.saturating_sub(age.as_millis().min(i64::MAX as u128) as i64);
        let old: Vec<i64> = candidates
            .iter()
            .filter(|c| c.2 < cutoff)
            .map(|c| c.0)
            .collect();
        if !old.is_empty() {
            return (old, "age");
        }
    }
    if let Some(max) = retention.max_messages {
        let max = max.min(i64::MAX as u64) as i64;
        if count > max {
            let n = ((count - max) as usize).min(candidates.len());
            return (candidates[..n].iter().map(|c| c.0).collect(), "count");
        }
    }
    if let Some(max) = retention.max_bytes {
        let max = max.min(i64::MAX as u64) as i64;
        if bytes > max {
            let mut excess = bytes - max;
            let mut out = Vec::new();
            for c in candidates {
                if excess <= 0 {
                    break;
                }
                out.push(c.0);
                excess -= c.1.max(1);
            }
            return (out, "size");
        }
    }
    (Vec::new(), "")
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A new message id: 22 characters of base 62 (128 random bits), like Mailpit's.
pub(crate) fn new_uid() -> Result<String, Error> {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| Error::Stage(format!("no randomness: {e}")))?;
    let mut n = u128::from_le_bytes(bytes);
    let mut out = String::with_capacity(22);
    for _ in 0..22 {
        out.push(DIGITS[(n % 62) as usize] as char);
        n /= 62;
    }
    Ok(out)
}

pub(crate) enum Backend {
    Sqlite(Sqlite),
    Postgres(Postgres),
}

macro_rules! on {
    ($inbox:expr, $b:ident => $e:expr) => {
        match &$inbox.inner.backend {
            Backend::Sqlite($b) => $e,
            Backend::Postgres($b) => $e,
        }
    };
}

struct Inner {
    backend: Backend,
    events: broadcast::Sender<Event>,
    options: Options,
    waiters: Semaphore,
}

/// The inbox store: every message, durably, in SQLite or PostgreSQL, with its envelope and the
/// fields for lists and search. It is a [`MailDispatch`](samotop_core::MailDispatch) (see
/// [`InboxTransaction`](crate::InboxTransaction)), and it answers the reads of the web inbox
/// and the JSON API.
///
/// Cheap to clone; clones share the store.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use samotop_inbox::{Filter, Inbox, Options};
/// let dir = tempfile::tempdir()?;
/// let runtime = tokio::runtime::Runtime::new()?;
/// runtime.block_on(async {
///     let inbox = Inbox::open(&format!("sqlite:{}", dir.path().join("mail.db").display()),
///                             Options::default()).await?;
///     let page = inbox.list(&Filter { limit: 50, ..Filter::default() }).await?;
///     assert_eq!(page.total, 0);
///     Ok::<_, samotop_inbox::Error>(())
/// })?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Inbox {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("backend", &self.backend_name())
            .finish_non_exhaustive()
    }
}

impl Inbox {
    /// Opens the store a URI names: `sqlite:PATH` (made if missing) or `postgres://...` /
    /// `postgresql://...` (libpq syntax; `host=/run/postgresql` for a Unix socket also works
    /// after `postgres:`). The schema is made when missing.
    ///
    /// # Errors
    ///
    /// [`Error::Open`]: the URI names no store, or the database cannot be opened or set up.
    pub async fn open(uri: &str, options: Options) -> Result<Inbox, Error> {
        if let Some(path) = uri.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            return Inbox::sqlite(path, options);
        }
        if uri.starts_with("postgres://") || uri.starts_with("postgresql://") {
            return Inbox::postgres(uri, options).await;
        }
        if let Some(conninfo) = uri.strip_prefix("postgres:") {
            return Inbox::postgres(conninfo, options).await;
        }
        Err(Error::Open {
            what: uri.to_string(),
            reason: "expected sqlite:PATH or postgres://...".into(),
        })
    }

    /// Opens (or makes) a SQLite store at `path`; starts its writer and indexer threads.
    ///
    /// # Errors
    ///
    /// [`Error::Open`].
    pub fn sqlite(path: impl AsRef<std::path::Path>, options: Options) -> Result<Inbox, Error> {
        let (events, _) = broadcast::channel(1024);
        let hooks = Hooks {
            events: events.clone(),
            retention: options.retention.clone(),
            parse_limit: options.parse_limit,
        };
        let backend = Backend::Sqlite(Sqlite::open(path.as_ref(), hooks)?);
        Ok(Inbox::with_backend(backend, events, options))
    }

    /// Connects to a PostgreSQL store (a `postgres://` URL or a libpq key=value string, as
    /// [`tokio_postgres::Config`] reads them; a Unix socket is `?host=/run/postgresql`) and
    /// makes the schema when missing. Several receivers may share one database: ids follow
    /// commit order across them (the wait's cursor misses nothing), and each one's web face
    /// sees the others' mail (`LISTEN`/`NOTIFY`). Every connection commits with
    /// `synchronous_commit = on`. TLS to the database is not supported: use a Unix socket
    /// or loopback. Starts the writer, indexer and listener tasks on the current tokio
    /// runtime.
    ///
    /// # Errors
    ///
    /// [`Error::Open`].
    pub async fn postgres(url: &str, options: Options) -> Result<Inbox, Error> {
        let (events, _) = broadcast::channel(1024);
        let hooks = Hooks {
            events: events.clone(),
            retention: options.retention.clone(),
            parse_limit: options.parse_limit,
        };
        let backend = Backend::Postgres(Postgres::connect(url, hooks).await?);
        Ok(Inbox::with_backend(backend, events, options))
    }

    fn with_backend(backend: Backend, events: broadcast::Sender<Event>, options: Options) -> Inbox {
        Inbox {
            inner: Arc::new(Inner {
                backend,
                events,
                waiters: Semaphore::new(options.max_waiters),
                options,
            }),
        }
    }

    /// `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        match &self.inner.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// A description of the database for `/api/v1/info`: the SQLite path, or
    /// `postgres://user@host/dbname` (never a password).
    pub fn database(&self) -> String {
        match &self.inner.backend {
            Backend::Sqlite(s) => s.path().display().to_string(),
            Backend::Postgres(p) => p.describe().to_string(),
        }
    }

    /// The settings.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// Live notifications: a receiver of every [`Event`] from now on.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    pub(crate) async fn store(&self, message: NewMessage) -> Result<i64, Error> {
        on!(self, b => b.store(message).await)
    }

    /// A page of messages, newest first.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn list(&self, filter: &Filter) -> Result<Page, Error> {
        on!(self, b => b.list(filter.clone()).await)
    }

    /// The internal number of a message id (or `latest`), seen from `mailbox` when given.
    async fn resolve(&self, id: &str, mailbox: Option<&str>) -> Result<Option<i64>, Error> {
        if id.len() > 64 {
            return Ok(None);
        }
        on!(self, b => b.resolve(id.to_string(), mailbox.map(str::to_string)).await)
    }

    /// The summary of a message (`id` or `latest`), if it exists (in `mailbox`, when given).
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn summary(&self, id: &str, mailbox: Option<&str>) -> Result<Option<Summary>, Error> {
        let Some(n) = self.resolve(id, mailbox).await? else {
            return Ok(None);
        };
        on!(self, b => b.summary(n).await)
    }

    /// The envelope and session facts of a message; seen from `mailbox`, the only recipient
    /// listed is that one.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn envelope(
        &self,
        id: &str,
        mailbox: Option<&str>,
    ) -> Result<Option<EnvelopeInfo>, Error> {
        let Some(n) = self.resolve(id, mailbox).await? else {
            return Ok(None);
        };
        on!(self, b => b.envelope(n, mailbox.map(str::to_string)).await)
    }

    /// The message exactly as received (our trace fields first).
    ///
    /// # Errors
    ///
    /// A database error, or stored data that does not decompress.
    pub async fn raw(&self, id: &str, mailbox: Option<&str>) -> Result<Option<Vec<u8>>, Error> {
        let Some(n) = self.resolve(id, mailbox).await? else {
            return Ok(None);
        };
        on!(self, b => b.raw(n, usize::MAX).await)
    }

    /// A message parsed for display (within the parse limit; past it, or when it does not
    /// parse, [`View::parsed`] is false and only the raw source is shown).
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn view(
        &self,
        id: &str,
        mailbox: Option<&str>,
    ) -> Result<Option<(Summary, View)>, Error> {
        let Some(n) = self.resolve(id, mailbox).await? else {
            return Ok(None);
        };
        let Some(summary) = on!(self, b => b.summary(n).await)? else {
            return Ok(None);
        };
        let limit = self.inner.options.parse_limit;
        let Some(raw) = on!(self, b => b.raw(n, limit.saturating_add(1)).await)? else {
            return Ok(None);
        };
        let view = tokio::task::spawn_blocking(move || {
            std::panic::catch_unwind(|| parse::view(&raw, limit)).unwrap_or_default()
        })
        .await
        .unwrap_or_default();
        Ok(Some((summary, view)))
    }

    /// One part of a message, decoded (an attachment's `PartID`).
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn part(
        &self,
        id: &str,
        mailbox: Option<&str>,
        part_id: &str,
    ) -> Result<Option<Part>, Error> {
        let Some(n) = self.resolve(id, mailbox).await? else {
            return Ok(None);
        };
        let limit = self.inner.options.parse_limit;
        let Some(raw) = on!(self, b => b.raw(n, limit.saturating_add(1)).await)? else {
            return Ok(None);
        };
        let part_id = part_id.to_string();
        Ok(tokio::task::spawn_blocking(move || {
            std::panic::catch_unwind(|| parse::part(&raw, &part_id, limit)).unwrap_or(None)
        })
        .await
        .unwrap_or(None))
    }

    /// Deletes messages by id; `None` deletes every message (of `mailbox`, when given).
    /// Seen from a mailbox, only that address's copy goes: the message itself goes with its
    /// last copy. Returns how many messages (or copies) went.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn delete(
        &self,
        ids: Option<&[String]>,
        mailbox: Option<&str>,
    ) -> Result<u64, Error> {
        let numbers = match ids {
            Some(ids) => {
                let mut numbers = Vec::new();
                for id in ids.iter().take(10_000) {
                    if let Some(n) = self.resolve(id, mailbox).await? {
                        numbers.push(n);
                    }
                }
                numbers
            }
            None => {
                let filter = Filter {
                    mailbox: mailbox.map(str::to_string),
                    ..Filter::default()
                };
                on!(self, b => b.matching(filter).await)?
            }
        };
        self.delete_numbers(numbers, mailbox).await
    }

    async fn delete_numbers(&self, numbers: Vec<i64>, mailbox: Option<&str>) -> Result<u64, Error> {
        let mut total = 0;
        for chunk in numbers.chunks(500) {
            total += match mailbox {
                None => on!(self, b => b.delete(chunk.to_vec()).await)?,
                Some(m) => on!(self, b => b.unlink(chunk.to_vec(), mailbox_key(m)).await)?,
            };
        }
        if total > 0 {
            let _ = self.inner.events.send(Event::Changed);
        }
        Ok(total)
    }

    /// Deletes every message that matches the filter's search (in its mailbox, when given).
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn delete_matching(&self, filter: &Filter) -> Result<u64, Error> {
        let numbers = on!(self, b => b.matching(filter.clone()).await)?;
        self.delete_numbers(numbers, filter.mailbox.as_deref())
            .await
    }

    /// Marks messages read or unread: by id, or all of them (`None`).
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn set_read(
        &self,
        ids: Option<&[String]>,
        mailbox: Option<&str>,
        read: bool,
    ) -> Result<u64, Error> {
        let numbers = match (ids, mailbox) {
            (Some(ids), _) => {
                let mut numbers = Vec::new();
                for id in ids.iter().take(10_000) {
                    if let Some(n) = self.resolve(id, mailbox).await? {
                        numbers.push(n);
                    }
                }
                Some(numbers)
            }
            (None, Some(m)) => {
                let filter = Filter {
                    mailbox: Some(m.to_string()),
                    ..Filter::default()
                };
                Some(on!(self, b => b.matching(filter).await)?)
            }
            (None, None) => None,
        };
        let n = on!(self, b => b.set_read(numbers, read).await)?;
        let _ = self.inner.events.send(Event::Changed);
        Ok(n)
    }

    /// Marks the messages matching a search read or unread.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn set_read_matching(&self, filter: &Filter, read: bool) -> Result<u64, Error> {
        let numbers = on!(self, b => b.matching(filter.clone()).await)?;
        let n = on!(self, b => b.set_read(Some(numbers), read).await)?;
        let _ = self.inner.events.send(Event::Changed);
        Ok(n)
    }

    /// Waits until a message that matches `query` (in `mailbox`, when given) arrives after
    /// `cursor` (`0`: any message), at most `timeout` (capped at [`MAX_WAIT`]), and returns the
    /// matches, oldest first, with the cursor for the next call: a message that arrives
    /// between two calls is returned by the second. A search on parsed fields waits for the
    /// parse of the messages before it, so that none is skipped.
    ///
    /// # Errors
    ///
    /// [`Error::Busy`] when [`Options::max_waiters`] waits are running; a database error.
    pub async fn wait(
        &self,
        mailbox: Option<&str>,
        query: &Query,
        cursor: i64,
        limit: u64,
        timeout: Duration,
    ) -> Result<Waited, Error> {
        let _permit = self.inner.waiters.try_acquire().map_err(|_| Error::Busy)?;
        // Subscribed before the first look: a commit after it wakes us.
        let mut events = self.events();
        let deadline = tokio::time::Instant::now() + timeout.min(MAX_WAIT);
        let mailbox = mailbox.map(str::to_string);
        // Bounded: one round per event or per second until the deadline.
        for _ in 0..100_000 {
            let (found, next) =
                on!(self, b => b.wait_query(mailbox.clone(), query.clone(), cursor, limit).await)?;
            if !found.is_empty() {
                return Ok(Waited {
                    messages: found,
                    cursor: next,
                    timed_out: false,
                });
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Waited {
                    messages: Vec::new(),
                    cursor: next,
                    timed_out: true,
                });
            }
            // Another process (a receiver sharing the PostgreSQL database) may commit without
            // telling us: look again at least every second.
            let until = deadline.min(now + Duration::from_secs(1));
            let _ = tokio::time::timeout_at(until, events.recv()).await;
        }
        Err(Error::Busy)
    }

    /// Totals.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn stats(&self) -> Result<Stats, Error> {
        on!(self, b => b.stats().await)
    }

    /// Runs pruning now (it also runs every [`Retention::interval`]): small steps until the
    /// limits hold. Logged when something went.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn prune(&self) -> Result<Pruned, Error> {
        self.prune_as_of(now_ms()).await
    }

    /// [`Inbox::prune`] as if the time were `now_ms` (Unix milliseconds): the age limit
    /// counts from there. For tests, and for a clock that is known to be off.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn prune_as_of(&self, now_ms: i64) -> Result<Pruned, Error> {
        let retention = self.inner.options.retention.clone();
        let mut run = PruneRun::default();
        for _ in 0..PruneRun::MAX_STEPS {
            let step = on!(self, b => b.prune_step(retention.clone(), now_ms).await)?;
            if !run.add(step) {
                break;
            }
        }
        Ok(run.finish(|| {
            let _ = self.inner.events.send(Event::Changed);
        }))
    }

    /// Answers when the database answers (for `/readyz`).
    ///
    /// # Errors
    ///
    /// The database does not answer.
    pub async fn ready(&self) -> Result<(), Error> {
        self.stats().await.map(|_| ())
    }

    /// For tests: the SQLite writer's `synchronous` setting and journal mode (`(2, "wal")`
    /// is FULL over a WAL); `None` for PostgreSQL.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn sqlite_durability(&self) -> Result<Option<(i64, String)>, Error> {
        match &self.inner.backend {
            Backend::Sqlite(s) => s.durability().await.map(Some),
            Backend::Postgres(_) => Ok(None),
        }
    }

    /// For tests: `synchronous_commit` and `fsync` as the PostgreSQL store's connections
    /// see them (`("on", "on")` is durable); `None` for SQLite.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn postgres_durability(&self) -> Result<Option<(String, String)>, Error> {
        match &self.inner.backend {
            Backend::Sqlite(_) => Ok(None),
            Backend::Postgres(p) => p.durability().await.map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn victims() {
        let c = [(1, 100, 0), (2, 100, 10), (3, 100, 20)];
        let r = Retention {
            max_age: Some(Duration::from_millis(15)),
            ..Retention::default()
        };
        assert_eq!(prune_victims(&c, 3, 300, &r, 30), (vec![1, 2], "age"));
        let r = Retention {
            max_age: None,
            max_messages: Some(1),
            ..Retention::default()
        };
        assert_eq!(prune_victims(&c, 3, 300, &r, 30), (vec![1, 2], "count"));
        let r = Retention {
            max_age: None,
            max_bytes: Some(150),
            ..Retention::default()
        };
        assert_eq!(prune_victims(&c, 3, 300, &r, 30), (vec![1, 2], "size"));
        let r = Retention {
            max_age: None,
            ..Retention::default()
        };
        assert_eq!(prune_victims(&c, 3, 300, &r, 30).0, Vec::<i64>::new());
    }

    #[test]
    fn uids_are_22_characters() {
        let a = new_uid().expect("uid");
        let b = new_uid().expect("uid");
        assert_eq!(a.len(), 22);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
    }
}
