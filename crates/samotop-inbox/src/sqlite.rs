//! The SQLite store: one writer thread owns the writing connection and commits the jobs of
//! many sessions in one transaction (group commit, WAL with `synchronous=FULL`), readers take
//! connections from a small pool, and an indexer thread parses new messages after their
//! commit and fills the list fields and the FTS5 index.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params, params_from_iter};
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::model::{EnvelopeInfo, Filter, MAX_COUNT, MAX_PAGE, Page, Stats, Summary};
use crate::parse::Fields;
use crate::query::Query;
use crate::sql::{self, Dialect, SUMMARY_COLUMNS, Sql, Value};
use crate::staging::decompress;
use crate::store::{
    Hooks, IndexJob, NewMessage, PruneRun, Pruned, Retention, envelope_for, prune_victims,
};

/// Jobs taken into one transaction at most.
const MAX_BATCH: usize = 512;
/// Jobs waiting for the writer at most; a session waits for room beyond that.
const QUEUE: usize = 4096;
/// Reading connections kept open.
const READERS: usize = 8;
/// Messages parsed per indexer round.
const INDEX_BATCH: i64 = 32;
/// A background job (an index round, a prune step) waits at most this long while other
/// jobs keep coming. Indexing 32 messages of 100 KiB takes the writer tens of milliseconds;
/// stores queued behind it would wait as long for their reply.
const MAX_DEFER: Duration = Duration::from_millis(500);

/// Fills the totals from the tables when they are new (a store made before they existed);
/// from then on the triggers keep them.
const SEED_TOTALS: &str = "
INSERT INTO totals (id, messages, unread, bytes)
    SELECT 0, count(*), coalesce(sum(seen = 0), 0), coalesce(sum(size), 0) FROM message
    WHERE NOT EXISTS (SELECT 1 FROM totals);
INSERT OR REPLACE INTO mailbox_totals (mailbox, messages, unread)
    SELECT r.mailbox, count(*), coalesce(sum(m.seen = 0), 0)
    FROM recipient r JOIN message m ON m.id = r.message
    WHERE changes() > 0 GROUP BY r.mailbox;
";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS message (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uid TEXT NOT NULL UNIQUE,
    received INTEGER NOT NULL,
    size INTEGER NOT NULL,
    stored INTEGER NOT NULL,
    sender TEXT NOT NULL,
    envelope TEXT NOT NULL,
    seen INTEGER NOT NULL DEFAULT 0,
    indexed INTEGER NOT NULL DEFAULT 0,
    subject TEXT NOT NULL DEFAULT '',
    from_json TEXT NOT NULL DEFAULT '',
    to_json TEXT NOT NULL DEFAULT '[]',
    cc_json TEXT NOT NULL DEFAULT '[]',
    bcc_json TEXT NOT NULL DEFAULT '[]',
    reply_to_json TEXT NOT NULL DEFAULT '[]',
    date INTEGER,
    message_id TEXT NOT NULL DEFAULT '',
    snippet TEXT NOT NULL DEFAULT '',
    attachments INTEGER NOT NULL DEFAULT 0,
    inline INTEGER NOT NULL DEFAULT 0,
    parts TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS message_unindexed ON message(id) WHERE indexed = 0;
CREATE INDEX IF NOT EXISTS message_received ON message(received);
CREATE INDEX IF NOT EXISTS message_seen ON message(seen, id);
-- The ids alone, narrow: a search that is only negations merges them against the words'
-- lists (sql::negated_ids) instead of reading every wide message row.
CREATE INDEX IF NOT EXISTS message_ids ON message(id);
CREATE TABLE IF NOT EXISTS raw (
    message INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (message, seq)
);
CREATE TABLE IF NOT EXISTS recipient (
    mailbox TEXT NOT NULL,
    message INTEGER NOT NULL,
    address TEXT NOT NULL,
    PRIMARY KEY (mailbox, message)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recipient_message ON recipient(message);
CREATE TABLE IF NOT EXISTS totals (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    messages INTEGER NOT NULL,
    unread INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS mailbox_totals (
    mailbox TEXT PRIMARY KEY,
    messages INTEGER NOT NULL,
    unread INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS message_counted AFTER INSERT ON message BEGIN
    UPDATE totals SET messages = messages + 1, unread = unread + (NEW.seen = 0),
        bytes = bytes + NEW.size WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS message_uncounted AFTER DELETE ON message BEGIN
    UPDATE totals SET messages = messages - 1, unread = unread - (OLD.seen = 0),
        bytes = bytes - OLD.size WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS message_seen_counted AFTER UPDATE OF seen ON message
WHEN (OLD.seen = 0) <> (NEW.seen = 0) BEGIN
    UPDATE totals SET unread = unread + (NEW.seen = 0) - (OLD.seen = 0) WHERE id = 0;
    UPDATE mailbox_totals SET unread = unread + (NEW.seen = 0) - (OLD.seen = 0)
        WHERE mailbox IN (SELECT mailbox FROM recipient WHERE message = NEW.id);
END;
CREATE TRIGGER IF NOT EXISTS recipient_counted AFTER INSERT ON recipient BEGIN
    INSERT INTO mailbox_totals (mailbox, messages, unread)
        VALUES (NEW.mailbox, 1, coalesce((SELECT seen = 0 FROM message WHERE id = NEW.message), 0))
        ON CONFLICT (mailbox) DO UPDATE SET messages = messages + 1,
            unread = unread + excluded.unread;
END;
CREATE TRIGGER IF NOT EXISTS recipient_uncounted AFTER DELETE ON recipient BEGIN
    UPDATE mailbox_totals SET messages = messages - 1,
        unread = unread - coalesce((SELECT seen = 0 FROM message WHERE id = OLD.message), 0)
        WHERE mailbox = OLD.mailbox;
    DELETE FROM mailbox_totals WHERE mailbox = OLD.mailbox AND messages <= 0;
END;
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(
    subject, from_addr, to_addr, cc_addr, bcc_addr, reply_to, message_id, headers, body,
    content='', contentless_delete=1, tokenize='unicode61 remove_diacritics 2',
    prefix='1 2'
);
";

type Output = Box<dyn Any + Send>;
type Run = Box<dyn FnOnce(&Connection) -> Result<Output, Error> + Send>;

struct Job {
    run: Run,
    reply: oneshot::Sender<Result<Output, Error>>,
    /// The job stores a message: wake the indexer after the commit.
    stores: bool,
    /// The job is the indexer's or pruning's: it waits while others keep coming (at most
    /// [`MAX_DEFER`]), so that no session's reply waits behind it.
    background: bool,
}

/// The SQLite store.
pub(crate) struct Sqlite {
    jobs: mpsc::Sender<Job>,
    readers: Arc<Readers>,
    path: PathBuf,
}

struct Readers {
    path: PathBuf,
    pool: Mutex<Vec<Connection>>,
}

impl Readers {
    fn open(&self) -> Result<Connection, Error> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .or_else(|_| {
            Connection::open_with_flags(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
        })?;
        conn.busy_timeout(Duration::from_secs(5))?;
        // The index's vocabulary, for the prefix expansion of searches (see `prefixes`); in
        // the connection's own temp schema, so a read-only database has it too.
        if let Err(e) = conn.execute_batch(
            "CREATE VIRTUAL TABLE IF NOT EXISTS temp.fts_terms USING fts5vocab(main, fts, 'instance');",
        ) {
            log::debug!("inbox: no FTS5 vocabulary for searches: {e}");
        }
        conn.execute_batch("PRAGMA query_only = 1;")?;
        Ok(conn)
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T, Error>) -> Result<T, Error> {
        let taken = self
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match taken {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = f(&conn);
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < READERS && conn.is_autocommit() {
            pool.push(conn);
        }
        result
    }
}

impl Sqlite {
    /// Opens (or creates) the database at `path`, and starts the writer and indexer threads.
    pub(crate) fn open(path: &Path, hooks: Hooks) -> Result<Sqlite, Error> {
        let open_error = |reason: String| Error::Open {
            what: path.display().to_string(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_error(e.to_string()))?;
        }
        let conn = Connection::open(path).map_err(|e| open_error(e.to_string()))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| open_error(e.to_string()))?;
        // WAL, and every commit fsyncs the WAL: a 250 means the message survives power loss.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| open_error(e.to_string()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_error(format!("journal_mode is {mode}, not wal")));
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF;")
            .map_err(|e| open_error(e.to_string()))?;
        let schema = format!("BEGIN IMMEDIATE; {SCHEMA} {SEED_TOTALS} COMMIT;");
        if let Err(e) = conn.execute_batch(&schema) {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            // A read-only database with the schema in place still serves reads (and answers
            // every delivery with 451 4.3.0).
            let has_schema = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE name = 'message'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap_or(0)
                > 0;
            if !has_schema {
                return Err(open_error(e.to_string()));
            }
            log::warn!("inbox: {}: cannot update the schema: {e}", path.display());
        }
        let (jobs, rx) = mpsc::channel(QUEUE);
        let readers = Arc::new(Readers {
            path: path.to_path_buf(),
            pool: Mutex::new(Vec::new()),
        });
        let (wake, woken) = std::sync::mpsc::channel::<()>();
        let writer_hooks = hooks.clone();
        std::thread::Builder::new()
            .name("inbox-writer".into())
            .spawn(move || writer(conn, rx, wake, writer_hooks))
            .map_err(|e| open_error(e.to_string()))?;
        let store = Sqlite {
            jobs: jobs.clone(),
            readers: readers.clone(),
            path: path.to_path_buf(),
        };
        let indexer_store = Sqlite {
            jobs,
            readers,
            path: path.to_path_buf(),
        };
        std::thread::Builder::new()
            .name("inbox-indexer".into())
            .spawn(move || indexer(indexer_store, woken, hooks))
            .map_err(|e| open_error(e.to_string()))?;
        Ok(store)
    }

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn job<T: Send + 'static>(
        &self,
        stores: bool,
        background: bool,
        f: impl FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    ) -> (Job, oneshot::Receiver<Result<Output, Error>>) {
        let (reply, rx) = oneshot::channel();
        let run: Run = Box::new(move |conn| f(conn).map(|t| Box::new(t) as Output));
        let job = Job {
            run,
            reply,
            stores,
            background,
        };
        (job, rx)
    }

    /// Runs `f` inside the writer's next transaction; returns once that transaction committed.
    async fn write<T: Send + 'static>(
        &self,
        stores: bool,
        f: impl FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let (job, rx) = self.job(stores, false, f);
        self.jobs.send(job).await.map_err(|_| Error::Closed)?;
        let out = rx.await.map_err(|_| Error::Closed)??;
        out.downcast::<T>()
            .map(|b| *b)
            .map_err(|_| Error::Database("job output of the wrong type".into()))
    }

    /// [`write`](Sqlite::write) from a thread that is not async, for background work
    /// (indexing, pruning): it runs when the writer has nothing else to do, or
    /// [`MAX_DEFER`] later.
    fn write_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let (job, rx) = self.job(false, true, f);
        self.jobs.blocking_send(job).map_err(|_| Error::Closed)?;
        let out = rx.blocking_recv().map_err(|_| Error::Closed)??;
        out.downcast::<T>()
            .map(|b| *b)
            .map_err(|_| Error::Database("job output of the wrong type".into()))
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || readers.with(f))
            .await
            .map_err(|e| Error::Database(format!("reader task: {e}")))?
    }

    pub(crate) async fn store(&self, message: NewMessage) -> Result<i64, Error> {
        self.write(true, move |conn| insert(conn, message)).await
    }

    pub(crate) async fn list(&self, filter: Filter) -> Result<Page, Error> {
        self.read(move |conn| list(conn, &filter)).await
    }

    pub(crate) async fn resolve(
        &self,
        id: String,
        mailbox: Option<String>,
    ) -> Result<Option<i64>, Error> {
        self.read(move |conn| {
            let (mut sql, order) = sql::select(
                Dialect::Sqlite,
                "m.id",
                mailbox.as_deref(),
                &Query::default(),
            );
            if id != "latest" {
                sql.push(" AND m.uid = ").param(Value::Text(id));
            }
            sql.push(&format!(" ORDER BY {order} DESC LIMIT 1"));
            let mut stmt = conn.prepare_cached(&sql.text)?;
            let mut rows = stmt.query(params_from_iter(sql.params.iter().map(to_sql)))?;
            Ok(match rows.next()? {
                Some(row) => Some(row.get(0)?),
                None => None,
            })
        })
        .await
    }

    pub(crate) async fn summary(&self, n: i64) -> Result<Option<Summary>, Error> {
        self.read(move |conn| {
            let q = format!("SELECT {SUMMARY_COLUMNS} FROM message m WHERE m.id = ?1");
            let mut stmt = conn.prepare_cached(&q)?;
            let mut rows = stmt.query([n])?;
            Ok(rows.next()?.map(|row| sql::summary(row)))
        })
        .await
    }

    pub(crate) async fn envelope(
        &self,
        n: i64,
        mailbox: Option<String>,
    ) -> Result<Option<EnvelopeInfo>, Error> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached("SELECT envelope FROM message WHERE id = ?1")?;
            let mut rows = stmt.query([n])?;
            Ok(match rows.next()? {
                Some(row) => Some(envelope_for(&row.get::<_, String>(0)?, mailbox.as_deref())),
                None => None,
            })
        })
        .await
    }

    pub(crate) async fn raw(&self, n: i64, max: usize) -> Result<Option<Vec<u8>>, Error> {
        self.read(move |conn| read_raw(conn, n, max)).await
    }

    pub(crate) async fn delete(&self, ids: Vec<i64>) -> Result<u64, Error> {
        self.write(false, move |conn| delete(conn, &ids)).await
    }

    pub(crate) async fn unlink(&self, ids: Vec<i64>, mailbox: String) -> Result<u64, Error> {
        self.write(false, move |conn| {
            let mut n = 0;
            let mut gone = Vec::new();
            {
                let mut rm = conn
                    .prepare_cached("DELETE FROM recipient WHERE mailbox = ?1 AND message = ?2")?;
                let mut left =
                    conn.prepare_cached("SELECT count(*) FROM recipient WHERE message = ?1")?;
                for id in ids {
                    n += rm.execute(params![mailbox, id])? as u64;
                    if left.query_row([id], |r| r.get::<_, i64>(0))? == 0 {
                        gone.push(id);
                    }
                }
            }
            delete(conn, &gone)?;
            Ok(n)
        })
        .await
    }

    pub(crate) async fn matching(&self, filter: Filter) -> Result<Vec<i64>, Error> {
        self.read(move |conn| {
            let prefixes = prefixes(conn, &filter.query);
            let (sql, _) = sql::select_expanded(
                Dialect::Sqlite,
                "m.id",
                filter.mailbox.as_deref(),
                &filter.query,
                &prefixes,
            );
            let mut stmt = conn.prepare(&sql.text)?;
            let ids = stmt
                .query_map(params_from_iter(sql.params.iter().map(to_sql)), |r| {
                    r.get(0)
                })?
                .collect::<Result<Vec<i64>, _>>()?;
            Ok(ids)
        })
        .await
    }

    pub(crate) async fn set_read(&self, ids: Option<Vec<i64>>, read: bool) -> Result<u64, Error> {
        self.write(false, move |conn| {
            let seen = i64::from(read);
            Ok(match ids {
                None => {
                    conn.execute("UPDATE message SET seen = ?1 WHERE seen <> ?1", [seen])? as u64
                }
                Some(ids) => {
                    let mut stmt =
                        conn.prepare_cached("UPDATE message SET seen = ?1 WHERE id = ?2")?;
                    let mut n = 0;
                    for id in ids {
                        n += stmt.execute([seen, id])? as u64;
                    }
                    n
                }
            })
        })
        .await
    }

    pub(crate) async fn wait_query(
        &self,
        mailbox: Option<String>,
        query: Query,
        after: i64,
        limit: u64,
    ) -> Result<(Vec<Summary>, i64), Error> {
        self.read(move |conn| {
            conn.execute_batch("BEGIN DEFERRED")?;
            let result = wait_query(conn, mailbox.as_deref(), &query, after, limit);
            let _ = conn.execute_batch("COMMIT");
            result
        })
        .await
    }

    pub(crate) async fn stats(&self) -> Result<Stats, Error> {
        self.read(|conn| {
            Ok(conn.query_row(
                "SELECT t.messages, t.bytes, coalesce((SELECT max(id) FROM message), 0), \
                 t.unread FROM totals t WHERE t.id = 0",
                [],
                |r| {
                    Ok(Stats {
                        messages: r.get::<_, i64>(0)?.max(0) as u64,
                        bytes: r.get::<_, i64>(1)?.max(0) as u64,
                        last_cursor: r.get(2)?,
                        unread: r.get::<_, i64>(3)?.max(0) as u64,
                    })
                },
            )?)
        })
        .await
    }

    /// One step of pruning in the writer: at most a few hundred messages.
    pub(crate) async fn prune_step(
        &self,
        retention: Retention,
        now_ms: i64,
    ) -> Result<Pruned, Error> {
        self.write(false, move |conn| prune_step(conn, &retention, now_ms))
            .await
    }

    fn prune_step_blocking(&self, retention: Retention, now_ms: i64) -> Result<Pruned, Error> {
        self.write_blocking(move |conn| prune_step(conn, &retention, now_ms))
    }

    /// Checks that the writer's connection is durable: `synchronous` is FULL (2) and the
    /// journal is a WAL.
    pub(crate) async fn durability(&self) -> Result<(i64, String), Error> {
        self.write(false, |conn| {
            let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
            let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            Ok((sync, mode))
        })
        .await
    }
}

fn to_sql(v: &Value) -> rusqlite::types::Value {
    match v {
        Value::Int(i) => rusqlite::types::Value::Integer(*i),
        Value::Text(s) => rusqlite::types::Value::Text(s.clone()),
    }
}

/// The writer thread: batches, one transaction per batch, a savepoint per job. A background
/// job waits for a batch with nothing behind it, or [`MAX_DEFER`].
fn writer(
    conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    wake: std::sync::mpsc::Sender<()>,
    hooks: Hooks,
) {
    let mut deferred: Option<(Job, std::time::Instant)> = None;
    loop {
        let first = if deferred.is_some() {
            match rx.try_recv() {
                Ok(job) => Some(job),
                Err(mpsc::error::TryRecvError::Empty) => None,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    if let Some((job, _)) = deferred.take() {
                        run_batch(&conn, vec![job]);
                    }
                    break;
                }
            }
        } else {
            match rx.blocking_recv() {
                Some(job) => Some(job),
                None => break,
            }
        };
        let mut batch = Vec::new();
        match first {
            // Nothing else waits: the background job's turn.
            None => batch.extend(deferred.take().map(|(job, _)| job)),
            Some(job) => {
                take(job, &mut batch, &mut deferred);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(job) => take(job, &mut batch, &mut deferred),
                        Err(_) => break,
                    }
                }
                if let Some((_, since)) = &deferred {
                    if since.elapsed() >= MAX_DEFER {
                        batch.extend(deferred.take().map(|(job, _)| job));
                    }
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        let (results, stores) = run_batch(&conn, batch);
        if results.iter().zip(&stores).any(|(r, s)| r.is_ok() && *s) {
            let _ = wake.send(());
            hooks.stored();
        }
    }
    log::debug!("inbox: writer stopped");
}

/// Puts a job into the batch, or aside if it is the first background one.
fn take(job: Job, batch: &mut Vec<Job>, deferred: &mut Option<(Job, std::time::Instant)>) {
    if job.background && deferred.is_none() {
        *deferred = Some((job, std::time::Instant::now()));
    } else {
        batch.push(job);
    }
}

/// Runs a batch in one transaction. Returns each job's result (after the commit) and sends it.
fn run_batch(conn: &Connection, batch: Vec<Job>) -> (Vec<Result<(), ()>>, Vec<bool>) {
    let mut outputs: Vec<Result<Output, Error>> = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    let mut stores = Vec::with_capacity(batch.len());
    let mut failed: Option<Error> = conn.execute_batch("BEGIN IMMEDIATE").err().map(Error::from);
    for job in batch {
        if job.stores && job.reply.is_closed() {
            // The session stopped waiting (the backend timeout answered 451): storing the
            // message now would only make the client's retry a duplicate.
            log::info!("inbox: a message whose session gave up waiting is not stored");
            continue;
        }
        replies.push(job.reply);
        stores.push(job.stores);
        if let Some(e) = &failed {
            outputs.push(Err(e.clone()));
            continue;
        }
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            failed = Some(e.into());
            outputs.push(Err(failed.clone().unwrap_or(Error::Closed)));
            continue;
        }
        let out = (job.run)(conn);
        if out.is_err() && !conn.is_autocommit() {
            if let Err(e) = conn.execute_batch("ROLLBACK TO job") {
                // The failed job's rows would stay in the batch: none of it may commit.
                failed = Some(e.into());
            }
        }
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (SQLITE_FULL, an I/O error): every
            // job of the batch failed, whatever it said.
            failed = Some(match &out {
                Err(e) => e.clone(),
                Ok(_) => Error::Database("the transaction was rolled back".into()),
            });
        } else if let Err(e) = conn.execute_batch("RELEASE job") {
            failed = Some(e.into());
        }
        outputs.push(out);
    }
    if failed.is_none() {
        if let Err(e) = conn.execute_batch("COMMIT") {
            failed = Some(e.into());
        }
    }
    if failed.is_some() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    let mut results = Vec::with_capacity(outputs.len());
    for (out, reply) in outputs.into_iter().zip(replies) {
        let out = match &failed {
            Some(e) => Err(e.clone()),
            None => out,
        };
        results.push(out.as_ref().map(|_| ()).map_err(|_| ()));
        let _ = reply.send(out);
    }
    if let Some(e) = failed {
        log::warn!("inbox: a commit of {} jobs failed: {e}", results.len());
    }
    (results, stores)
}

fn insert(conn: &Connection, mut m: NewMessage) -> Result<i64, Error> {
    let stored = m.raw.len() as i64;
    conn.prepare_cached(
        "INSERT INTO message (uid, received, size, stored, sender, envelope) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        m.uid,
        m.received_ms,
        m.size as i64,
        stored,
        m.sender,
        m.envelope_json
    ])?;
    let id = conn.last_insert_rowid();
    let mut pieces = m.raw.pieces();
    let mut seq = 0i64;
    let mut raw =
        conn.prepare_cached("INSERT INTO raw (message, seq, data) VALUES (?1, ?2, ?3)")?;
    while let Some(piece) = pieces.next_piece()? {
        raw.execute(params![id, seq, piece])?;
        seq += 1;
    }
    let mut rcpt = conn.prepare_cached(
        "INSERT OR IGNORE INTO recipient (mailbox, message, address) VALUES (?1, ?2, ?3)",
    )?;
    for address in &m.recipients {
        rcpt.execute(params![crate::model::mailbox_key(address), id, address])?;
    }
    Ok(id)
}

fn read_raw(conn: &Connection, id: i64, max: usize) -> Result<Option<Vec<u8>>, Error> {
    let mut stmt = conn.prepare_cached("SELECT data FROM raw WHERE message = ?1 ORDER BY seq")?;
    let pieces = stmt
        .query_map([id], |r| r.get::<_, Vec<u8>>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    if pieces.is_empty() {
        let exists: i64 =
            conn.query_row("SELECT count(*) FROM message WHERE id = ?1", [id], |r| {
                r.get(0)
            })?;
        if exists == 0 {
            return Ok(None);
        }
    }
    Ok(Some(decompress(&pieces, max)?))
}

fn delete(conn: &Connection, ids: &[i64]) -> Result<u64, Error> {
    let mut n = 0;
    let mut raw = conn.prepare_cached("DELETE FROM raw WHERE message = ?1")?;
    let mut rcpt = conn.prepare_cached("DELETE FROM recipient WHERE message = ?1")?;
    let mut fts = conn.prepare_cached("DELETE FROM fts WHERE rowid = ?1")?;
    let mut msg = conn.prepare_cached("DELETE FROM message WHERE id = ?1")?;
    for &id in ids {
        raw.execute([id])?;
        rcpt.execute([id])?;
        fts.execute([id])?;
        n += msg.execute([id])? as u64;
    }
    Ok(n)
}

/// Two counts from a `SELECT count(*), count(...)`.
fn counts(conn: &Connection, sql: &Sql) -> Result<(u64, u64), Error> {
    let mut stmt = conn.prepare_cached(&sql.text)?;
    let (n, u): (i64, i64) = stmt
        .query_row(params_from_iter(sql.params.iter().map(to_sql)), |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    Ok((n.max(0) as u64, u.max(0) as u64))
}

/// The messages and unread messages of the store (`None`) or of one address's inbox, from
/// the totals the triggers keep.
fn totals(conn: &Connection, mailbox: Option<&str>) -> Result<(u64, u64), Error> {
    let row = match mailbox {
        None => conn
            .prepare_cached("SELECT messages, unread FROM totals WHERE id = 0")?
            .query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))),
        Some(m) => conn
            .prepare_cached("SELECT messages, unread FROM mailbox_totals WHERE mailbox = ?1")?
            .query_row([crate::model::mailbox_key(m)], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            }),
    };
    match row {
        Ok((n, u)) => Ok((n.max(0) as u64, u.max(0) as u64)),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok((0, 0)),
        Err(e) => Err(e.into()),
    }
}

fn list(conn: &Connection, filter: &Filter) -> Result<Page, Error> {
    conn.execute_batch("BEGIN DEFERRED")?;
    let page = list_in(conn, filter);
    let _ = conn.execute_batch("COMMIT");
    page
}

fn list_in(conn: &Connection, filter: &Filter) -> Result<Page, Error> {
    let limit = filter.limit.clamp(1, MAX_PAGE);
    let mailbox = filter.mailbox.as_deref();
    let (total, unread) = totals(conn, mailbox)?;
    let prefixes = prefixes(conn, &filter.query);
    let start = filter.start.min(i64::MAX as u64);
    let cap = MAX_COUNT + 1;
    let wanted = (start + limit).max(cap);
    let mut exact = None;
    let mut ids = None;
    if let (None, Some(excluded)) = (
        mailbox,
        sql::only_negations_sqlite(&filter.query, &prefixes),
    ) {
        // Negations of the whole store: counted from the index alone, and the few messages a
        // common word leaves found by counting ranges, not by reading every id.
        let (left, found) = sweep(conn, &excluded, total, wanted)?;
        if left == 0 {
            return Ok(Page {
                total,
                unread,
                messages_count: 0,
                messages_unread: 0,
                messages_count_capped: false,
                start: filter.start,
                tags: Vec::new(),
                messages: Vec::new(),
            });
        }
        exact = Some(left);
        ids = Some(found);
    } else if let Some(sql) =
        sql::negated_ids(Dialect::Sqlite, mailbox, &filter.query, &prefixes, wanted)
    {
        // Only negations: one merge gives the ids of the page and of the count.
        let mut stmt = conn.prepare_cached(&sql.text)?;
        ids = Some(
            stmt.query_map(params_from_iter(sql.params.iter().map(to_sql)), |r| {
                r.get::<_, i64>(0)
            })?
            .collect::<Result<Vec<_>, _>>()?,
        );
    }
    if let Some(ids) = ids {
        let found = sql::NegatedIds::new(ids, start, limit, cap);
        let literal = |ids: &[i64]| sql::NegatedIds::literal(Dialect::Sqlite, ids);
        let counted_unread: i64 = conn
            .prepare_cached(
                "SELECT coalesce(sum(seen = 0), 0) FROM message \
                 WHERE id IN (SELECT value FROM json_each(?1))",
            )?
            .query_row([literal(&found.counted)], |r| r.get(0))?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {SUMMARY_COLUMNS} FROM message m \
             WHERE m.id IN (SELECT value FROM json_each(?1)) ORDER BY m.id DESC"
        ))?;
        let messages = stmt
            .query_map([literal(&found.page)], |r| Ok(sql::summary(r)))?
            .collect::<Result<Vec<_>, _>>()?;
        let n = exact.unwrap_or(found.counted.len() as u64);
        return Ok(Page {
            total,
            unread,
            messages_count: n.min(MAX_COUNT),
            messages_unread: (counted_unread.max(0) as u64).min(MAX_COUNT),
            messages_count_capped: n > MAX_COUNT,
            start: filter.start,
            tags: Vec::new(),
            messages,
        });
    }
    let (matching, matching_unread, capped) = if filter.query.is_empty() {
        (total, unread, false)
    } else {
        // Counting every match of a common word costs as much as reading them all: counts
        // stop past MAX_COUNT (and say so).
        let cap = MAX_COUNT + 1;
        let (n, u) = counts(
            conn,
            &sql::capped_count(Dialect::Sqlite, mailbox, &filter.query, &prefixes, cap),
        )?;
        (n.min(MAX_COUNT), u.min(MAX_COUNT), n > MAX_COUNT)
    };
    let (mut sql, order) = sql::select_expanded(
        Dialect::Sqlite,
        SUMMARY_COLUMNS,
        mailbox,
        &filter.query,
        &prefixes,
    );
    sql.push(&format!(" ORDER BY {order} DESC LIMIT "))
        .param(Value::Int(limit as i64))
        .push(" OFFSET ")
        .param(Value::Int(filter.start.min(i64::MAX as u64) as i64));
    let mut stmt = conn.prepare_cached(&sql.text)?;
    let messages = stmt
        .query_map(params_from_iter(sql.params.iter().map(to_sql)), |r| {
            Ok(sql::summary(r))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page {
        total,
        unread,
        messages_count: matching,
        messages_unread: matching_unread,
        messages_count_capped: capped,
        start: filter.start,
        tags: Vec::new(),
        messages,
    })
}

/// A negation sweep counts ranges of at least this many ids.
const SWEEP_RANGE: i64 = 16384;

/// And at most this many ranges: a bigger store has bigger ranges.
const SWEEP_RANGES: i64 = 1024;

/// For negations of the whole store, whose excluded messages are the FTS5 match `excluded`:
/// how many messages the search matches (the store's `total` less the excluded), and the
/// newest `want` of them.
///
/// Every indexed message is a stored one, so a range of ids that holds as many ids as
/// matches of `excluded` holds no answer. The matches are counted range by range, newest
/// first (`MATCH ... AND rowid BETWEEN`: FTS5 seeks to each range, so all the ranges cost
/// little more than one count of the words); when they leave none, that is the answer. Else
/// the ids are counted on the narrow index, range by range until enough are found, and a
/// range whose counts differ is listed by a merge of the two.
///
/// In 100 000 messages, with the word in all but the oldest: 10-11 ms, where a merge of every
/// id against the word's list took 17-21 ms (halving the ranges with counts, tried first,
/// counts every message twice and is no faster). With the word in all of them: 6.4 ms, where
/// the one count of the word took 4.7.
fn sweep(
    conn: &Connection,
    excluded: &str,
    total: u64,
    want: u64,
) -> Result<(u64, Vec<i64>), Error> {
    // Apart: SQLite reads a lone min() or max() off the end of the index, both at once by a scan.
    let lo: Option<i64> = conn
        .prepare_cached("SELECT min(id) FROM message")?
        .query_row([], |r| r.get(0))?;
    let hi: Option<i64> = conn
        .prepare_cached("SELECT max(id) FROM message")?
        .query_row([], |r| r.get(0))?;
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Ok((0, Vec::new()));
    };
    let size = (hi.saturating_sub(lo) / SWEEP_RANGES)
        .saturating_add(1)
        .max(SWEEP_RANGE);
    let mut matches_in = conn.prepare_cached(
        "SELECT count(*) FROM fts WHERE fts MATCH ?1 AND rowid BETWEEN ?2 AND ?3",
    )?;
    let mut ranges = Vec::new();
    let mut matched = 0u64;
    let mut top = hi;
    loop {
        let bottom = top.saturating_sub(size - 1).max(lo);
        let n: i64 = matches_in.query_row(params![excluded, bottom, top], |r| r.get(0))?;
        matched = matched.saturating_add(n.max(0) as u64);
        ranges.push((bottom, top, n.max(0) as u64));
        if bottom <= lo {
            break;
        }
        top = bottom - 1;
    }
    let left = total.saturating_sub(matched);
    let want = want.min(left);
    let mut out = Vec::new();
    if want == 0 {
        return Ok((left, out));
    }
    let mut ids_in = conn.prepare_cached(
        "SELECT count(*) FROM message INDEXED BY message_ids WHERE id BETWEEN ?1 AND ?2",
    )?;
    let mut list = conn.prepare_cached(
        "SELECT id FROM message INDEXED BY message_ids WHERE id BETWEEN ?2 AND ?3 \
         EXCEPT SELECT rowid FROM fts WHERE fts MATCH ?1 AND rowid BETWEEN ?2 AND ?3 \
         ORDER BY 1 DESC LIMIT ?4",
    )?;
    for (bottom, top, matches) in ranges {
        let found = out.len() as u64;
        if found >= want {
            break;
        }
        let ids: i64 = ids_in.query_row([bottom, top], |r| r.get(0))?;
        let here = (ids.max(0) as u64).saturating_sub(matches);
        if here == 0 {
            continue;
        }
        let limit = i64::try_from(here.min(want - found)).unwrap_or(i64::MAX);
        for id in list.query_map(params![excluded, bottom, top, limit], |r| {
            r.get::<_, i64>(0)
        })? {
            out.push(id?);
        }
    }
    Ok((left, out))
}

/// At most this many terms stand for the last word of a phrase; a word that starts more
/// (a letter or two, typed into a search box) stays an FTS5 prefix query.
const MAX_EXPANSION: usize = 32;

/// The longest prefix the FTS5 table keeps an index of its own for (`prefix='1 2'`): a
/// phrase whose last word is this short is one doclist there, read in rowid order like a
/// plain word, so it is not expanded.
const INDEXED_PREFIX: usize = 2;

/// True when the store's FTS5 table has the one- and two-letter prefix indexes (stores made
/// before them do not: there, short words are expanded like the others).
fn has_prefix_index(conn: &Connection) -> bool {
    conn.prepare_cached(
        "SELECT count(*) FROM sqlite_master WHERE name = 'fts' AND sql LIKE '%prefix=''1 2''%'",
    )
    .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
    .map(|n| n > 0)
    .unwrap_or(false)
}

/// The terms of the index that each expandable last word of `query`'s phrases starts
/// ([`sql::Prefixes`]), read from the FTS5 vocabulary one seek per term (`term >= next`, with
/// `next` just past the previous term: FTS5 terms hold no control characters). A word whose
/// look-up fails or finds more than [`MAX_EXPANSION`] terms is left out: it stays a prefix
/// query, slower but the same matches.
fn prefixes(conn: &Connection, query: &Query) -> sql::Prefixes {
    let mut out = sql::Prefixes::default();
    let mut indexed: Option<bool> = None;
    for word in sql::prefix_words(query) {
        if word.len() <= INDEXED_PREFIX && *indexed.get_or_insert_with(|| has_prefix_index(conn)) {
            continue;
        }
        match expand(conn, &word) {
            Ok(Some(terms)) => out.insert(word, terms),
            Ok(None) => {}
            Err(e) => log::debug!("inbox: search prefix {word:?} not expanded: {e}"),
        }
    }
    out
}

fn expand(conn: &Connection, word: &str) -> Result<Option<Vec<String>>, rusqlite::Error> {
    // The first string past every term that starts with `word` (ASCII, so one byte more).
    let Some((&last, head)) = word.as_bytes().split_last() else {
        return Ok(None);
    };
    let mut end = head.to_vec();
    end.push(last.saturating_add(1));
    let end = String::from_utf8_lossy(&end).into_owned();
    let mut stmt = conn
        .prepare_cached("SELECT term FROM temp.fts_terms WHERE term >= ?1 AND term < ?2 LIMIT 1")?;
    let mut terms: Vec<String> = Vec::new();
    let mut next = word.to_string();
    // Bounded: one seek per term, at most MAX_EXPANSION + 1.
    for _ in 0..=MAX_EXPANSION {
        let term: Option<String> = match stmt.query_row(params![next, end], |r| r.get(0)) {
            Ok(term) => Some(term),
            Err(rusqlite::Error::QueryReturnedNoRows) => None,
            Err(e) => return Err(e),
        };
        let Some(term) = term else {
            return Ok(Some(terms));
        };
        next = format!("{term}\u{1}");
        terms.push(term);
    }
    Ok(None)
}

fn wait_query(
    conn: &Connection,
    mailbox: Option<&str>,
    query: &Query,
    after: i64,
    limit: u64,
) -> Result<(Vec<Summary>, i64), Error> {
    // The cursor moves only past messages whose fate is known: a search that needs the parse
    // looks only below the first message still waiting for it.
    let watermark: i64 = if sql::needs_parse(query) {
        conn.query_row(
            "SELECT coalesce((SELECT min(id) - 1 FROM message WHERE indexed = 0), \
             (SELECT max(id) FROM message), 0)",
            [],
            |r| r.get(0),
        )?
    } else {
        conn.query_row("SELECT coalesce(max(id), 0) FROM message", [], |r| r.get(0))?
    };
    let limit = limit.clamp(1, MAX_PAGE);
    let prefixes = prefixes(conn, query);
    let (mut sql, order) =
        sql::select_expanded(Dialect::Sqlite, SUMMARY_COLUMNS, mailbox, query, &prefixes);
    sql.push(&format!(" AND {order} > "))
        .param(Value::Int(after))
        .push(&format!(" AND {order} <= "))
        .param(Value::Int(watermark));
    sql.push(&format!(" ORDER BY {order} ASC LIMIT "))
        .param(Value::Int(limit as i64));
    let mut stmt = conn.prepare_cached(&sql.text)?;
    let found = stmt
        .query_map(params_from_iter(sql.params.iter().map(to_sql)), |r| {
            Ok(sql::summary(r))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let cursor = match found.last() {
        Some(last) if found.len() as u64 == limit => last.cursor,
        _ => watermark.max(after),
    };
    Ok((found, cursor))
}

fn prune_step(conn: &Connection, retention: &Retention, now_ms: i64) -> Result<Pruned, Error> {
    let (count, bytes): (i64, i64) =
        conn.query_row("SELECT messages, bytes FROM totals WHERE id = 0", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let mut oldest =
        conn.prepare_cached("SELECT id, size, received FROM message ORDER BY id LIMIT 500")?;
    let candidates = oldest
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let (victims, reason) = prune_victims(&candidates, count, bytes, retention, now_ms);
    let freed: i64 = candidates
        .iter()
        .filter(|c| victims.contains(&c.0))
        .map(|c| c.1)
        .sum();
    let n = delete(conn, &victims)?;
    Ok(Pruned {
        messages: n,
        bytes: freed.max(0) as u64,
        reason,
    })
}

/// The indexer thread: parses new messages after their commit, and prunes now and then.
fn indexer(store: Sqlite, woken: std::sync::mpsc::Receiver<()>, hooks: Hooks) {
    let started = std::time::Instant::now();
    let mut last_prune: Option<std::time::Instant> = None;
    loop {
        match woken.recv_timeout(Duration::from_millis(500)) {
            Ok(()) => while woken.try_recv().is_ok() {},
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        // Bounded: a round parses at most 100 batches, then looks at pruning.
        for _ in 0..100 {
            match index_round(&store, &hooks) {
                Ok(0) => break,
                Ok(_) => {}
                Err(Error::Closed) => return,
                Err(e) => {
                    log::warn!("inbox: indexing failed: {e}");
                    break;
                }
            }
        }
        let due = match last_prune {
            None => started.elapsed() >= Duration::from_secs(1),
            Some(t) => t.elapsed() >= hooks.retention.interval,
        };
        if due {
            last_prune = Some(std::time::Instant::now());
            prune_all(&hooks, |r, now| store.prune_step_blocking(r, now));
        }
    }
    log::debug!("inbox: indexer stopped");
}

/// Runs prune steps until nothing more goes (at most [`PruneRun::MAX_STEPS`]), and logs the
/// total.
pub(crate) fn prune_all(
    hooks: &Hooks,
    mut step: impl FnMut(Retention, i64) -> Result<Pruned, Error>,
) {
    let mut run = PruneRun::default();
    for _ in 0..PruneRun::MAX_STEPS {
        if !run.step(step(hooks.retention.clone(), crate::store::now_ms())) {
            break;
        }
    }
    run.finish(|| hooks.deleted());
}

fn index_round(store: &Sqlite, hooks: &Hooks) -> Result<usize, Error> {
    let limit = hooks.parse_limit;
    // Each message is parsed as soon as it is read, so one message's pieces are in memory at
    // a time; one too big to parse whole is parsed for its header section, which its first
    // piece (1 MiB compressed) holds more than.
    let jobs: Vec<IndexJob> = store.readers.with(|conn| {
        let mut stmt = conn.prepare_cached(
            "SELECT id, size FROM message WHERE indexed = 0 ORDER BY id LIMIT ?1",
        )?;
        let ids = stmt
            .query_map([INDEX_BATCH], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut raw = conn
            .prepare_cached("SELECT data FROM raw WHERE message = ?1 AND seq < ?2 ORDER BY seq")?;
        let mut jobs = Vec::with_capacity(ids.len());
        for (id, size) in ids {
            let pieces: i64 = if size.max(0) as usize > limit {
                1
            } else {
                i64::MAX
            };
            let data = raw
                .query_map(params![id, pieces], |r| r.get::<_, Vec<u8>>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            jobs.push(IndexJob::parse(id, size, &data, limit));
        }
        Ok(jobs)
    })?;
    if jobs.is_empty() {
        return Ok(0);
    }
    let n = jobs.len();
    let last = jobs.iter().map(|j| j.id).max().unwrap_or(0);
    store.write_blocking(move |conn| {
        for job in &jobs {
            index(conn, job)?;
        }
        Ok(())
    })?;
    hooks.indexed(last);
    Ok(n)
}

fn index(conn: &Connection, job: &IndexJob) -> Result<(), Error> {
    let f: &Fields = &job.fields;
    let json = |v: &dyn erased_json::Json| v.json();
    let changed = conn
        .prepare_cached(
            "UPDATE message SET indexed = ?2, subject = ?3, from_json = ?4, to_json = ?5, \
             cc_json = ?6, bcc_json = ?7, reply_to_json = ?8, date = ?9, message_id = ?10, \
             snippet = ?11, attachments = ?12, inline = ?13, parts = ?14 WHERE id = ?1 AND indexed = 0",
        )?
        .execute(params![
            job.id,
            if f.parsed { 1 } else { 2 },
            f.subject,
            json(&f.from),
            json(&f.to),
            json(&f.cc),
            json(&f.bcc),
            json(&f.reply_to),
            f.date,
            f.message_id,
            f.snippet,
            f.attachments.len() as i64,
            f.inline.len() as i64,
            job.parts_json(),
        ])?;
    if changed == 1 && f.parsed {
        conn.prepare_cached(
            "INSERT INTO fts (rowid, subject, from_addr, to_addr, cc_addr, bcc_addr, reply_to, \
             message_id, headers, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            job.id,
            f.subject,
            Fields::addresses(std::slice::from_ref(&f.from)),
            Fields::addresses(&f.to),
            Fields::addresses(&f.cc),
            Fields::addresses(&f.bcc),
            Fields::addresses(&f.reply_to),
            f.message_id,
            f.header_text,
            f.body_text,
        ])?;
    }
    Ok(())
}

mod erased_json {
    /// Serializes anything serde can, to a JSON string ("" when it cannot).
    pub(crate) trait Json {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_string(self).unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(stores: bool, x: i64) -> (Job, oneshot::Receiver<Result<Output, Error>>) {
        let (reply, rx) = oneshot::channel();
        let run: Run = Box::new(move |conn: &Connection| {
            conn.execute("INSERT INTO t (x) VALUES (?1)", [x])?;
            Ok(Box::new(()) as Output)
        });
        let background = false;
        (
            Job {
                run,
                reply,
                stores,
                background,
            },
            rx,
        )
    }

    /// A job that writes nothing and notes `x` in `log` when it runs.
    fn noted(
        background: bool,
        x: i64,
        log: &Arc<Mutex<Vec<i64>>>,
    ) -> (Job, oneshot::Receiver<Result<Output, Error>>) {
        let (reply, rx) = oneshot::channel();
        let log = log.clone();
        let run: Run = Box::new(move |_: &Connection| {
            if !background && x > 0 {
                // A foreground job that takes a while, so that the queue never empties.
                std::thread::sleep(Duration::from_millis(2));
            }
            log.lock().unwrap_or_else(PoisonError::into_inner).push(x);
            Ok(Box::new(()) as Output)
        });
        let stores = false;
        (
            Job {
                run,
                reply,
                stores,
                background,
            },
            rx,
        )
    }

    /// Runs the writer over `jobs`, queued before it starts; returns the order they ran in.
    fn writer_order(jobs: &[(bool, i64)]) -> Vec<i64> {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel(16);
        let mut replies = Vec::new();
        for &(background, x) in jobs {
            let (job, reply) = noted(background, x, &log);
            tx.try_send(job).map_err(|_| ()).expect("room in the queue");
            replies.push(reply);
        }
        drop(tx);
        let conn = Connection::open_in_memory().expect("memory database");
        let (wake, _woken) = std::sync::mpsc::channel();
        writer(conn, rx, wake, Hooks::for_tests());
        for mut reply in replies {
            assert!(
                matches!(reply.try_recv(), Ok(Ok(_))),
                "every job is answered"
            );
        }
        log.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    #[test]
    fn a_background_job_waits_for_the_jobs_behind_it() {
        assert_eq!(
            writer_order(&[(true, 1), (false, 2), (false, 3)]),
            vec![2, 3, 1]
        );
        assert_eq!(
            writer_order(&[(false, 1), (true, 2), (false, 3)]),
            vec![1, 3, 2]
        );
        // Alone, or a second one while the first waits: at once.
        assert_eq!(writer_order(&[(true, 1)]), vec![1]);
        assert_eq!(
            writer_order(&[(true, 1), (true, 2), (false, 3)]),
            vec![2, 3, 1]
        );
    }

    #[test]
    fn a_background_job_waits_no_longer_than_max_defer() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel(16);
        let (wake, _woken) = std::sync::mpsc::channel();
        let conn = Connection::open_in_memory().expect("memory database");
        let writer = std::thread::spawn(move || writer(conn, rx, wake, Hooks::for_tests()));
        let (job, mut background) = noted(true, 0, &log);
        // Foreground jobs of 2 ms come without a pause (the queue is never empty) for up to
        // ten times MAX_DEFER: the background one still runs among them, after waiting.
        let mut pending = vec![{
            let (first, reply) = noted(false, 1, &log);
            tx.blocking_send(first).map_err(|_| ()).expect("queue");
            reply
        }];
        tx.blocking_send(job).map_err(|_| ()).expect("queue");
        let until = std::time::Instant::now() + 10 * MAX_DEFER;
        let mut x = 2;
        while background.try_recv().is_err() && std::time::Instant::now() < until {
            let (job, reply) = noted(false, x, &log);
            tx.blocking_send(job).map_err(|_| ()).expect("queue");
            pending.push(reply);
            x += 1;
        }
        drop(tx);
        writer.join().expect("writer");
        let order = log.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let at = order
            .iter()
            .position(|&x| x == 0)
            .expect("the background job ran");
        assert!(
            at < order.len() - 1,
            "it ran only when the others stopped: {at}"
        );
        drop(pending);
    }

    #[test]
    fn a_message_whose_session_stopped_waiting_is_not_stored() {
        let conn = Connection::open_in_memory().expect("memory database");
        conn.execute_batch("CREATE TABLE t (x INTEGER)")
            .expect("table");
        let (gave_up, rx) = job(true, 1);
        drop(rx); // the session's backend timeout answered 451 and went on
        let (waiting, mut rx) = job(true, 2);
        let (results, _) = run_batch(&conn, vec![gave_up, waiting]);
        assert_eq!(results, vec![Ok(())]);
        assert!(matches!(rx.try_recv(), Ok(Ok(_))));
        let xs: Vec<i64> = conn
            .prepare("SELECT x FROM t")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("rows");
        assert_eq!(xs, vec![2]);
    }

    /// The vocabulary look-up behind the prefix expansion: the terms a word starts, in order,
    /// nothing past the word's range, and no expansion for a word that starts too many.
    #[test]
    fn a_prefix_expands_to_the_terms_it_starts() {
        let conn = Connection::open_in_memory().expect("memory database");
        conn.execute_batch(
            "CREATE VIRTUAL TABLE fts USING fts5(body, content='', contentless_delete=1, \
             tokenize='unicode61 remove_diacritics 2');
             CREATE VIRTUAL TABLE temp.fts_terms USING fts5vocab(main, fts, 'instance');",
        )
        .expect("tables");
        let many: Vec<String> = (0..40).map(|i| format!("many{i}")).collect();
        let bodies = [
            "report reports repo Caf\u{e9} sour",
            "reporter source sources",
            &many.join(" "),
        ];
        for (i, body) in bodies.iter().enumerate() {
            conn.execute(
                "INSERT INTO fts (rowid, body) VALUES (?1, ?2)",
                params![i as i64 + 1, body],
            )
            .expect("insert");
        }
        let terms = |w: &str| expand(&conn, w).expect("vocabulary");
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            terms("rep"),
            Some(strings(&["repo", "report", "reporter", "reports"]))
        );
        assert_eq!(terms("source"), Some(strings(&["source", "sources"])));
        assert_eq!(terms("cafe"), Some(strings(&["cafe"])));
        assert_eq!(terms("zz"), Some(Vec::new()));
        assert_eq!(
            terms("many3"),
            Some(strings(&[
                "many3", "many30", "many31", "many32", "many33", "many34", "many35", "many36",
                "many37", "many38", "many39"
            ]))
        );
        assert_eq!(terms("many"), None, "40 terms: more than MAX_EXPANSION");
        let q = Query::parse("rep from:sour -many \"x y sou\"").expect("query");
        let p = prefixes(&conn, &q);
        let (sql, _) = sql::select_expanded(Dialect::Sqlite, "m.id", None, &q, &p);
        let expanded = "(\"repo\" OR \"report\" OR \"reporter\" OR \"reports\") AND \
                        from_addr : (\"sour\" OR \"source\" OR \"sources\") AND \
                        (\"x y sour\" OR \"x y source\" OR \"x y sources\")";
        assert_eq!(
            sql.params,
            vec![Value::Text(format!("({expanded}) NOT ((\"many\"*))"))],
            "a word with too many terms stays a prefix query"
        );
    }
    /// One- and two-letter words are left to the FTS5 prefix index where the store has it
    /// (`prefix='1 2'`), and find the same messages as in a store without it, where they
    /// are expanded.
    #[test]
    fn short_words_use_the_prefix_index_where_there_is_one() {
        let search = |prefix: &str| {
            let conn = Connection::open_in_memory().expect("memory database");
            conn.execute_batch(&format!(
                "CREATE VIRTUAL TABLE fts USING fts5(subject, body, content='', \
                 contentless_delete=1, tokenize='unicode61 remove_diacritics 2'{prefix});
                 CREATE VIRTUAL TABLE temp.fts_terms USING fts5vocab(main, fts, 'instance');"
            ))
            .expect("tables");
            let rows = [
                ("xmas", "report"),
                ("hello", "x-ray"),
                ("re: x", "Caf\u{e9}"),
                ("other", "words"),
            ];
            for (i, (subject, body)) in rows.iter().enumerate() {
                conn.execute(
                    "INSERT INTO fts (rowid, subject, body) VALUES (?1, ?2, ?3)",
                    params![i as i64 + 1, subject, body],
                )
                .expect("insert");
            }
            let found = |q: &str| -> (Vec<Value>, Vec<i64>) {
                let q = Query::parse(q).expect("query");
                let p = prefixes(&conn, &q);
                let (mut sql, _) = sql::select_expanded(Dialect::Sqlite, "m.id", None, &q, &p);
                let expr = sql.params.clone();
                sql.text = "SELECT rowid FROM fts WHERE fts MATCH ?1 ORDER BY rowid".into();
                sql.params.truncate(1);
                let ids = conn
                    .prepare(&sql.text)
                    .and_then(|mut s| {
                        s.query_map(params_from_iter(sql.params.iter().map(to_sql)), |r| {
                            r.get(0)
                        })?
                        .collect()
                    })
                    .expect("search");
                (expr, ids)
            };
            (
                has_prefix_index(&conn),
                found("x"),
                found("re"),
                found("ca"),
            )
        };
        let (indexed, x, re, ca) = search(", prefix='1 2'");
        assert!(indexed);
        assert_eq!(x, (vec![Value::Text("\"x\"*".into())], vec![1, 2, 3]));
        assert_eq!(re, (vec![Value::Text("\"re\"*".into())], vec![1, 3]));
        assert_eq!(ca.1, vec![3]);
        let (indexed, x_old, re_old, ca_old) = search("");
        assert!(!indexed);
        assert_eq!(x_old.1, x.1);
        assert_eq!(
            re_old,
            (
                vec![Value::Text("(\"re\" OR \"report\")".into())],
                vec![1, 3]
            )
        );
        assert_eq!(ca_old.1, ca.1);
    }
}

#[cfg(test)]
mod sweep_tests {
    use super::*;

    /// A store of `n` messages (ids 1..=n, with gaps where `gone`), every one indexed with
    /// the word `source` except those `lone` says.
    fn store(n: i64, gone: impl Fn(i64) -> bool, lone: impl Fn(i64) -> bool) -> Connection {
        let conn = Connection::open_in_memory().expect("memory database");
        conn.execute_batch(&format!("BEGIN; {SCHEMA} {SEED_TOTALS}"))
            .expect("schema");
        {
            let mut message = conn
                .prepare(
                    "INSERT INTO message (id, uid, received, size, stored, sender, envelope) \
                     VALUES (?1, ?1, 0, 1, 1, '', '{}')",
                )
                .expect("insert");
            let mut fts = conn
                .prepare("INSERT INTO fts (rowid, body) VALUES (?1, ?2)")
                .expect("index");
            for id in (1..=n).filter(|&id| !gone(id)) {
                message.execute([id]).expect("message");
                let body = if lone(id) { "lone" } else { "source lone" };
                fts.execute(params![id, body]).expect("fts row");
            }
        }
        conn.execute_batch("COMMIT").expect("commit");
        conn
    }

    fn left(conn: &Connection, want: u64) -> Vec<i64> {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM fts WHERE fts MATCH 'source'",
                [],
                |r| r.get(0),
            )
            .expect("count");
        let (total, _) = totals(conn, None).expect("totals");
        let (left, ids) = sweep(conn, "source", total, want).expect("sweep");
        assert_eq!(left, total - n as u64);
        ids
    }

    #[test]
    fn the_few_left_are_found_by_range_counts() {
        let conn = store(20_000, |id| id % 1000 == 7, |id| id == 1 || id == 9_999);
        assert_eq!(left(&conn, 1001), vec![9_999, 1]);
        assert_eq!(left(&conn, 1), vec![9_999]);
    }

    #[test]
    fn spread_and_dense_answers_come_newest_first() {
        let lone = |id: i64| id % 613 == 0 || (15_000..15_100).contains(&id);
        let conn = store(30_000, |id| id % 97 == 0, lone);
        let want: Vec<i64> = (1..=30_000)
            .rev()
            .filter(|&id| id % 97 != 0 && lone(id))
            .collect();
        assert_eq!(left(&conn, 1001), want);
        assert_eq!(left(&conn, 10), want[..10]);
    }
}
