//! The PostgreSQL store, for several receivers sharing one database.
//!
//! * **Group commit.** One writer task per receiver owns a connection and commits the
//!   messages of all the sessions waiting (up to [`MAX_BATCH`]) in one transaction,
//!   pipelined: `BEGIN`, the order lock, one statement per message, `pg_notify`, `COMMIT`,
//!   with `synchronous_commit = on`. A session is answered only after that `COMMIT`
//!   returned. When a statement of one message fails for its data (SQLSTATE class 22 or
//!   23), the batch runs again one message per `SAVEPOINT`, so that only that message gets
//!   the 4xx; a failure of the whole transaction (read-only, disk full, connection lost)
//!   fails every message of the batch, and the next batch tries again.
//! * **Ids in commit order, across receivers.** A transaction that stores messages takes
//!   `pg_advisory_xact_lock(ORDER_LOCK)` first and draws its ids from the sequence under it
//!   (the sequence does not cache). A commit becomes visible before its locks are
//!   released, so a reader that sees id N sees every id below N that will ever commit: the
//!   wait's cursor (`id > cursor`) misses nothing, whichever receiver stored the mail.
//! * **Readers** take connections from a small pool ([`READERS`]), each with its own
//!   statement cache; a connection dropped inside a transaction (a cancelled request) is
//!   closed, never reused.
//! * **An indexer task** parses new messages after their commit, claiming them with
//!   `FOR UPDATE SKIP LOCKED` so that the receivers share the work, and writes the list
//!   fields and a `tsvector` (GIN index) built by [`sql::pg_tsvector`]. It also prunes,
//!   one receiver at a time (`pg_try_advisory_xact_lock`).
//! * **A listener** (`LISTEN samotop_inbox`) turns the notifications of the other
//!   receivers (`stored`, `indexed`, `changed`, sent inside their transactions, so
//!   delivered at commit) into this receiver's [`Event`](crate::Event)s: its waits and live
//!   pages see their mail at once.
//!
//! No TLS: connect over a Unix socket or loopback.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::{join, join_all, join3};
use tokio::sync::{Notify, Semaphore, SemaphorePermit, mpsc, oneshot, watch};
use tokio_postgres::config::Host;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, Statement};

use crate::error::Error;
use crate::model::{EnvelopeInfo, Filter, MAX_COUNT, MAX_PAGE, Page, Stats, Summary, mailbox_key};
use crate::query::Query;
use crate::sql::{self, Dialect, SUMMARY_COLUMNS, Sql, Value};
use crate::staging::{Spill, decompress};
use crate::store::{
    Hooks, IndexJob, NewMessage, PruneRun, Pruned, Retention, envelope_for, prune_victims,
};

/// Messages committed in one transaction at most.
const MAX_BATCH: usize = 256;
/// Messages waiting for the writer at most; a session waits for room beyond that.
const QUEUE: usize = 4096;
/// Reading connections at most (the indexer and pruning use them too).
const READERS: usize = 8;
/// Prepared statements kept per reading connection.
const MAX_STATEMENTS: usize = 128;
/// Messages parsed per indexer round.
const INDEX_BATCH: i64 = 32;
/// Held by every transaction that draws message ids: ids follow commit order.
const ORDER_LOCK: i64 = 0x5341_4d4f_5450_0001;
/// Held while the schema is made, so that receivers starting together do not collide.
const SCHEMA_LOCK: i64 = 0x5341_4d4f_5450_0002;
/// Tried by pruning: one receiver prunes at a time.
const PRUNE_LOCK: i64 = 0x5341_4d4f_5450_0003;
/// The notification channel.
const CHANNEL: &str = "samotop_inbox";

const SCHEMA: &str = "
CREATE SEQUENCE IF NOT EXISTS message_id_seq CACHE 1;
CREATE TABLE IF NOT EXISTS message (
    id BIGINT PRIMARY KEY,
    uid TEXT NOT NULL UNIQUE,
    received BIGINT NOT NULL,
    size BIGINT NOT NULL,
    stored BIGINT NOT NULL,
    sender TEXT NOT NULL,
    envelope TEXT NOT NULL,
    seen BIGINT NOT NULL DEFAULT 0,
    indexed BIGINT NOT NULL DEFAULT 0,
    subject TEXT NOT NULL DEFAULT '',
    from_json TEXT NOT NULL DEFAULT '',
    to_json TEXT NOT NULL DEFAULT '[]',
    cc_json TEXT NOT NULL DEFAULT '[]',
    bcc_json TEXT NOT NULL DEFAULT '[]',
    reply_to_json TEXT NOT NULL DEFAULT '[]',
    date BIGINT,
    message_id TEXT NOT NULL DEFAULT '',
    snippet TEXT NOT NULL DEFAULT '',
    attachments BIGINT NOT NULL DEFAULT 0,
    inline BIGINT NOT NULL DEFAULT 0,
    parts TEXT NOT NULL DEFAULT '[]',
    tsv TSVECTOR
);
CREATE INDEX IF NOT EXISTS message_unindexed ON message(id) WHERE indexed = 0;
CREATE INDEX IF NOT EXISTS message_received ON message(received);
CREATE INDEX IF NOT EXISTS message_seen ON message(seen, id);
CREATE INDEX IF NOT EXISTS message_tsv ON message USING GIN (tsv);
CREATE TABLE IF NOT EXISTS raw (
    message BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (message, seq)
);
ALTER TABLE raw ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE TABLE IF NOT EXISTS recipient (
    mailbox TEXT NOT NULL,
    message BIGINT NOT NULL,
    address TEXT NOT NULL,
    PRIMARY KEY (mailbox, message)
);
CREATE INDEX IF NOT EXISTS recipient_message ON recipient(message);
CREATE TABLE IF NOT EXISTS totals (
    id INT PRIMARY KEY CHECK (id = 0),
    messages BIGINT NOT NULL,
    unread BIGINT NOT NULL,
    bytes BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS mailbox_totals (
    mailbox TEXT PRIMARY KEY,
    messages BIGINT NOT NULL,
    unread BIGINT NOT NULL
);
CREATE OR REPLACE FUNCTION samotop_message_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE totals SET messages = messages + n.c, unread = unread + n.u, bytes = bytes + n.b
    FROM (SELECT count(*) AS c, count(*) FILTER (WHERE seen = 0) AS u,
          coalesce(sum(size), 0) AS b FROM new_rows) n
    WHERE id = 0;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION samotop_message_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE totals SET messages = messages - o.c, unread = unread - o.u, bytes = bytes - o.b
    FROM (SELECT count(*) AS c, count(*) FILTER (WHERE seen = 0) AS u,
          coalesce(sum(size), 0) AS b FROM old_rows) o
    WHERE id = 0 AND o.c > 0;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION samotop_message_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Only a change of the read state counts: the indexer's updates lock nothing here.
    WITH c AS (SELECT n.id, (n.seen = 0)::int - (o.seen = 0)::int AS d
               FROM new_rows n JOIN old_rows o ON o.id = n.id WHERE (n.seen = 0) <> (o.seen = 0))
    UPDATE totals SET unread = unread + (SELECT sum(d) FROM c)
    WHERE id = 0 AND EXISTS (SELECT 1 FROM c);
    WITH c AS (SELECT n.id, (n.seen = 0)::int - (o.seen = 0)::int AS d
               FROM new_rows n JOIN old_rows o ON o.id = n.id WHERE (n.seen = 0) <> (o.seen = 0))
    UPDATE mailbox_totals t SET unread = t.unread + x.d
    FROM (SELECT r.mailbox, sum(c.d) AS d FROM c JOIN recipient r ON r.message = c.id
          GROUP BY r.mailbox) x
    WHERE t.mailbox = x.mailbox;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION samotop_recipient_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mailbox_totals (mailbox, messages, unread)
        SELECT n.mailbox, count(*), count(*) FILTER (WHERE coalesce(m.seen, 0) = 0)
        FROM new_rows n LEFT JOIN message m ON m.id = n.message GROUP BY n.mailbox
    ON CONFLICT (mailbox) DO UPDATE SET messages = mailbox_totals.messages + EXCLUDED.messages,
        unread = mailbox_totals.unread + EXCLUDED.unread;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION samotop_recipient_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE mailbox_totals t SET messages = t.messages - x.c, unread = t.unread - x.u
    FROM (SELECT o.mailbox, count(*) AS c, count(*) FILTER (WHERE m.seen = 0) AS u
          FROM old_rows o LEFT JOIN message m ON m.id = o.message GROUP BY o.mailbox) x
    WHERE t.mailbox = x.mailbox;
    DELETE FROM mailbox_totals t USING (SELECT DISTINCT mailbox FROM old_rows) o
        WHERE t.mailbox = o.mailbox AND t.messages <= 0;
    RETURN NULL;
END $$;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'samotop_message_inserted') THEN
        CREATE TRIGGER samotop_message_inserted AFTER INSERT ON message
            REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION samotop_message_inserted();
        CREATE TRIGGER samotop_message_deleted AFTER DELETE ON message
            REFERENCING OLD TABLE AS old_rows
            FOR EACH STATEMENT EXECUTE FUNCTION samotop_message_deleted();
        CREATE TRIGGER samotop_message_updated AFTER UPDATE ON message
            REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION samotop_message_updated();
        CREATE TRIGGER samotop_recipient_inserted AFTER INSERT ON recipient
            REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION samotop_recipient_inserted();
        CREATE TRIGGER samotop_recipient_deleted AFTER DELETE ON recipient
            REFERENCING OLD TABLE AS old_rows
            FOR EACH STATEMENT EXECUTE FUNCTION samotop_recipient_deleted();
        -- The totals of what is already there (a store made before they existed).
        DELETE FROM totals;
        INSERT INTO totals SELECT 0, count(*), count(*) FILTER (WHERE seen = 0),
            coalesce(sum(size), 0) FROM message;
        DELETE FROM mailbox_totals;
        INSERT INTO mailbox_totals SELECT r.mailbox, count(*), count(*) FILTER (WHERE m.seen = 0)
            FROM recipient r JOIN message m ON m.id = r.message GROUP BY r.mailbox;
    END IF;
END $$;
";

/// One message, its raw data's first piece and its recipients, in one statement; the id is
/// drawn from the sequence (under the order lock).
const INSERT: &str = "
WITH m AS (
    INSERT INTO message (id, uid, received, size, stored, sender, envelope)
    VALUES (nextval('message_id_seq'), $1, $2, $3, $4, $5, $6)
    RETURNING id
), r AS (
    INSERT INTO raw (message, seq, data) SELECT m.id, 0, $7::bytea FROM m WHERE $7::bytea IS NOT NULL
), c AS (
    INSERT INTO recipient (mailbox, message, address)
    SELECT DISTINCT ON (u.k) u.k, m.id, u.a FROM m, unnest($8::text[], $9::text[]) AS u(k, a)
)
SELECT id FROM m";

const INSERT_PIECE: &str = "INSERT INTO raw (message, seq, data) VALUES ($1, $2, $3)";

const INDEX: &str = "UPDATE message SET indexed = $2, subject = $3, from_json = $4, \
to_json = $5, cc_json = $6, bcc_json = $7, reply_to_json = $8, date = $9, message_id = $10, \
snippet = $11, attachments = $12, inline = $13, parts = $14, tsv = CAST($15::text AS tsvector) \
WHERE id = $1 AND indexed = 0";

/// PostgreSQL text cannot hold NUL: it is dropped from what goes into text columns.
fn clean(s: &str) -> String {
    s.replace('\0', "")
}

fn params(values: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    values
        .iter()
        .map(|v| match v {
            Value::Int(i) => i as &(dyn ToSql + Sync),
            Value::Text(s) => s as &(dyn ToSql + Sync),
        })
        .collect()
}

/// The database as a URL without a password: `postgres://user@host:port/dbname`, or
/// `postgres://user@/dbname?host=/socket/dir` for a Unix socket.
fn describe(config: &Config) -> String {
    let user = config.get_user().unwrap_or("");
    let db = config.get_dbname().unwrap_or(user);
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let mut tcp = Vec::new();
    let mut unix = Vec::new();
    for host in config.get_hosts() {
        match host {
            Host::Tcp(name) => tcp.push(format!("{name}:{port}")),
            Host::Unix(path) => unix.push(path.display().to_string()),
        }
    }
    let mut out = format!("postgres://{user}@{}/{db}", tcp.join(","));
    if !unix.is_empty() {
        out.push_str("?host=");
        out.push_str(&unix.join(","));
    }
    out
}

/// Opens a connection and drives it on its own task.
async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            log::debug!("inbox: a PostgreSQL connection ended: {}", Error::from(e));
        }
    });
    Ok(client)
}

/// A piece of a staged message; a read of its temporary file runs off the async threads.
async fn piece(spill: &mut Spill, index: u64) -> Result<Option<Vec<u8>>, Error> {
    if spill.in_memory() {
        return Ok(spill.piece(index)?);
    }
    let mut owned = std::mem::take(spill);
    let (owned, result) = tokio::task::spawn_blocking(move || {
        let result = owned.piece(index);
        (owned, result)
    })
    .await
    .map_err(|e| Error::Stage(format!("reading the staged message: {e}")))?;
    *spill = owned;
    Ok(result?)
}

/// What the pool, the writer, the indexer and the listener share.
struct Shared {
    config: Config,
    pool: Pool,
    hooks: Hooks,
    /// Ours, in every notification we send: the listener skips them.
    origin: String,
    wake_indexer: Notify,
}

impl Shared {
    /// A notification's text: `KIND ORIGIN` (`stored`, `changed`), or
    /// `indexed ORIGIN CURSOR` with `cursor`.
    fn payload(&self, kind: &str, cursor: Option<i64>) -> String {
        match cursor {
            Some(cursor) => format!("{kind} {} {cursor}", self.origin),
            None => format!("{kind} {}", self.origin),
        }
    }
}

/// The PostgreSQL store.
pub(crate) struct Postgres {
    shared: Arc<Shared>,
    jobs: mpsc::Sender<StoreJob>,
    what: String,
    /// Dropped with the store: the indexer and the listener end.
    _stop: watch::Sender<()>,
}

struct StoreJob {
    message: NewMessage,
    reply: oneshot::Sender<Result<i64, Error>>,
}

impl Postgres {
    /// Connects, makes the schema when missing, and starts the writer, the indexer and the
    /// listener.
    pub(crate) async fn connect(url: &str, hooks: Hooks) -> Result<Postgres, Error> {
        let mut config: Config = url.parse().map_err(|e| Error::Open {
            what: "the PostgreSQL URI".into(),
            reason: format!("{e}"),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("samotop");
        }
        // Every connection commits durably, whatever the server's default; a lock wait
        // (another receiver's stuck transaction) ends in a 4xx, not a hang, and so does a
        // statement a stalled server never finishes (the writer is one connection: it must
        // not stay stuck behind it).
        let options = format!(
            "{} -c synchronous_commit=on -c lock_timeout=30s -c statement_timeout=120s",
            config.get_options().unwrap_or("")
        );
        config.options(options.trim_start());
        let what = describe(&config);
        let open_error = |e: Error| Error::Open {
            what: what.clone(),
            reason: e.to_string(),
        };
        let client = connect(&config).await.map_err(|e| open_error(e.into()))?;
        setup_schema(&client, &what).await.map_err(&open_error)?;
        // A server run with fsync=off acknowledges commits it may lose in a crash: the
        // inbox's 250 then promises more than the server keeps. Said once, at start.
        if let Ok(row) = client.query_one("SHOW fsync", &[]).await {
            if row.try_get::<_, String>(0).is_ok_and(|v| v != "on") {
                log::warn!(
                    "inbox: {what} runs with fsync=off: a crash of the server can lose \
                     messages it acknowledged"
                );
            }
        }
        drop(client);
        let mut origin = [0u8; 8];
        getrandom::fill(&mut origin).map_err(|e| open_error(Error::Stage(e.to_string())))?;
        let shared = Arc::new(Shared {
            pool: Pool {
                config: config.clone(),
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(READERS),
            },
            config,
            hooks,
            origin: origin.iter().map(|b| format!("{b:02x}")).collect(),
            wake_indexer: Notify::new(),
        });
        let (jobs, rx) = mpsc::channel(QUEUE);
        let (stop, stopped) = watch::channel(());
        tokio::spawn(writer(shared.clone(), rx));
        tokio::spawn(indexer(shared.clone(), stopped.clone()));
        tokio::spawn(listener(shared.clone(), stopped));
        Ok(Postgres {
            shared,
            jobs,
            what,
            _stop: stop,
        })
    }

    /// `postgres://user@host/dbname`.
    pub(crate) fn describe(&self) -> &str {
        &self.what
    }

    pub(crate) async fn store(&self, message: NewMessage) -> Result<i64, Error> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(StoreJob { message, reply })
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    pub(crate) async fn list(&self, filter: Filter) -> Result<Page, Error> {
        let mut conn = self.shared.pool.get().await?;
        let limit = filter.limit.clamp(1, MAX_PAGE);
        let mailbox = filter.mailbox.as_deref();
        let (total, unread) = conn.totals(mailbox).await?;
        let start = filter.start.min(i64::MAX as u64);
        let cap = MAX_COUNT + 1;
        if let Some(sql) = sql::negated_ids(
            Dialect::Postgres,
            mailbox,
            &filter.query,
            &sql::Prefixes::default(),
            (start + limit).max(cap),
        ) {
            // Only negations: one pass gives the ids of the page and of the count.
            let ids = conn
                .query(&sql)
                .await?
                .iter()
                .map(|r| r.try_get::<_, i64>(0))
                .collect::<Result<Vec<_>, _>>()?;
            let found = sql::NegatedIds::new(ids, start, limit, cap);
            let literal = |ids: &[i64]| sql::NegatedIds::literal(Dialect::Postgres, ids);
            let mut count = Sql::new(
                Dialect::Postgres,
                "SELECT count(*), count(*) FILTER (WHERE seen = 0) FROM message \
                 WHERE id = ANY(CAST(",
            );
            count
                .param(Value::Text(literal(&found.counted)))
                .push("::text AS bigint[]))");
            let (n, counted_unread) = conn.counts(&count).await?;
            let mut page = Sql::new(
                Dialect::Postgres,
                &format!("SELECT {SUMMARY_COLUMNS} FROM message m WHERE m.id = ANY(CAST("),
            );
            page.param(Value::Text(literal(&found.page)))
                .push("::text AS bigint[])) ORDER BY m.id DESC");
            let messages = conn
                .query(&page)
                .await?
                .iter()
                .map(|r| sql::summary(r))
                .collect();
            let counted = found.counted.len() as u64;
            return Ok(Page {
                total,
                unread,
                messages_count: n.min(counted).min(MAX_COUNT),
                messages_unread: counted_unread.min(MAX_COUNT),
                messages_count_capped: counted > MAX_COUNT,
                start: filter.start,
                tags: Vec::new(),
                messages,
            });
        }
        let (matching, matching_unread, capped) = if filter.query.is_empty() {
            (total, unread, false)
        } else {
            // Counting every match of a common word costs as much as reading them all:
            // counts stop past MAX_COUNT (and say so).
            let cap = MAX_COUNT + 1;
            let (n, u) = conn
                .counts(&sql::capped_count(
                    Dialect::Postgres,
                    mailbox,
                    &filter.query,
                    &sql::Prefixes::default(),
                    cap,
                ))
                .await?;
            (n.min(MAX_COUNT), u.min(MAX_COUNT), n > MAX_COUNT)
        };
        let (mut sql, order) =
            sql::select(Dialect::Postgres, SUMMARY_COLUMNS, mailbox, &filter.query);
        sql.push(&format!(" ORDER BY {order} DESC LIMIT "))
            .param(Value::Int(limit as i64))
            .push(" OFFSET ")
            .param(Value::Int(filter.start.min(i64::MAX as u64) as i64));
        let messages = conn
            .query(&sql)
            .await?
            .iter()
            .map(|r| sql::summary(r))
            .collect();
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

    pub(crate) async fn resolve(
        &self,
        id: String,
        mailbox: Option<String>,
    ) -> Result<Option<i64>, Error> {
        let (mut sql, order) = sql::select(
            Dialect::Postgres,
            "m.id",
            mailbox.as_deref(),
            &Query::default(),
        );
        if id != "latest" {
            sql.push(" AND m.uid = ").param(Value::Text(clean(&id)));
        }
        sql.push(&format!(" ORDER BY {order} DESC LIMIT 1"));
        let mut conn = self.shared.pool.get().await?;
        let rows = conn.query(&sql).await?;
        Ok(rows.first().and_then(|r| r.try_get::<_, i64>(0).ok()))
    }

    pub(crate) async fn summary(&self, n: i64) -> Result<Option<Summary>, Error> {
        let mut sql = Sql::new(
            Dialect::Postgres,
            &format!("SELECT {SUMMARY_COLUMNS} FROM message m WHERE m.id = "),
        );
        sql.param(Value::Int(n));
        let mut conn = self.shared.pool.get().await?;
        let rows = conn.query(&sql).await?;
        Ok(rows.first().map(|r| sql::summary(r)))
    }

    pub(crate) async fn envelope(
        &self,
        n: i64,
        mailbox: Option<String>,
    ) -> Result<Option<EnvelopeInfo>, Error> {
        let mut sql = Sql::new(
            Dialect::Postgres,
            "SELECT envelope FROM message WHERE id = ",
        );
        sql.param(Value::Int(n));
        let mut conn = self.shared.pool.get().await?;
        let rows = conn.query(&sql).await?;
        Ok(rows.first().map(|r| {
            let json: String = r.try_get(0).unwrap_or_default();
            envelope_for(&json, mailbox.as_deref())
        }))
    }

    pub(crate) async fn raw(&self, n: i64, max: usize) -> Result<Option<Vec<u8>>, Error> {
        let mut conn = self.shared.pool.get().await?;
        let mut sql = Sql::new(Dialect::Postgres, "SELECT data FROM raw WHERE message = ");
        sql.param(Value::Int(n)).push(" ORDER BY seq");
        let pieces: Vec<Vec<u8>> = conn
            .query(&sql)
            .await?
            .iter()
            .map(|r| r.try_get::<_, Vec<u8>>(0))
            .collect::<Result<_, _>>()?;
        if pieces.is_empty() {
            let mut exists = Sql::new(Dialect::Postgres, "SELECT 1 FROM message WHERE id = ");
            exists.param(Value::Int(n));
            if conn.query(&exists).await?.is_empty() {
                return Ok(None);
            }
        }
        drop(conn);
        let raw = tokio::task::spawn_blocking(move || decompress(&pieces, max))
            .await
            .map_err(|e| Error::Database(format!("decompressing: {e}")))??;
        Ok(Some(raw))
    }

    pub(crate) async fn delete(&self, ids: Vec<i64>) -> Result<u64, Error> {
        let mut conn = self.shared.pool.get().await?;
        conn.begin().await?;
        conn.order_lock().await?;
        let n = delete(&mut conn, &ids).await?;
        conn.commit().await?;
        if n > 0 {
            self.notify_changed(&mut conn).await;
        }
        Ok(n)
    }

    pub(crate) async fn unlink(&self, ids: Vec<i64>, mailbox: String) -> Result<u64, Error> {
        let mut conn = self.shared.pool.get().await?;
        conn.begin().await?;
        // One writer of the totals at a time (no deadlock between their rows), and two
        // addresses removing the last two copies of one message at once cannot both leave
        // it behind.
        conn.order_lock().await?;
        let rm = conn
            .statement("DELETE FROM recipient WHERE mailbox = $1 AND message = ANY($2)")
            .await?;
        let n = conn.client.execute(&rm, &[&mailbox, &ids]).await?;
        let orphans = conn
            .statement(
                "SELECT u.id FROM unnest($1::int8[]) AS u(id) \
                 WHERE NOT EXISTS (SELECT 1 FROM recipient r WHERE r.message = u.id)",
            )
            .await?;
        let gone: Vec<i64> = conn
            .client
            .query(&orphans, &[&ids])
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        delete(&mut conn, &gone).await?;
        conn.commit().await?;
        if n > 0 {
            self.notify_changed(&mut conn).await;
        }
        Ok(n)
    }

    pub(crate) async fn matching(&self, filter: Filter) -> Result<Vec<i64>, Error> {
        let (sql, _) = sql::select(
            Dialect::Postgres,
            "m.id",
            filter.mailbox.as_deref(),
            &filter.query,
        );
        let mut conn = self.shared.pool.get().await?;
        let ids = conn
            .query(&sql)
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        Ok(ids)
    }

    pub(crate) async fn set_read(&self, ids: Option<Vec<i64>>, read: bool) -> Result<u64, Error> {
        let seen = i64::from(read);
        let mut conn = self.shared.pool.get().await?;
        conn.begin().await?;
        conn.order_lock().await?;
        let n = match ids {
            None => {
                let s = conn
                    .statement("UPDATE message SET seen = $1 WHERE seen <> $1")
                    .await?;
                conn.client.execute(&s, &[&seen]).await?
            }
            Some(ids) => {
                let s = conn
                    .statement("UPDATE message SET seen = $1 WHERE id = ANY($2)")
                    .await?;
                conn.client.execute(&s, &[&seen, &ids]).await?
            }
        };
        conn.commit().await?;
        self.notify_changed(&mut conn).await;
        Ok(n)
    }

    /// Tells the other receivers that messages went or changed (a hint for live pages).
    async fn notify_changed(&self, conn: &mut Pooled<'_>) {
        let payload = self.shared.payload("changed", None);
        if let Err(e) = conn.notify(&payload).await {
            log::debug!("inbox: cannot notify the other receivers: {e}");
        }
    }

    pub(crate) async fn wait_query(
        &self,
        mailbox: Option<String>,
        query: Query,
        after: i64,
        limit: u64,
    ) -> Result<(Vec<Summary>, i64), Error> {
        let mut conn = self.shared.pool.get().await?;
        // The cursor moves only past messages whose fate is known: a search that needs the
        // parse looks only below the first message still waiting for it. Ids follow commit
        // order, so every id up to the watermark is committed when the watermark is seen.
        let watermark = if sql::needs_parse(&query) {
            "SELECT coalesce((SELECT min(id) - 1 FROM message WHERE indexed = 0), \
             (SELECT max(id) FROM message), 0)::int8"
        } else {
            "SELECT coalesce(max(id), 0)::int8 FROM message"
        };
        let watermark: i64 = conn
            .query(&Sql::new(Dialect::Postgres, watermark))
            .await?
            .first()
            .and_then(|r| r.try_get(0).ok())
            .unwrap_or(0);
        let limit = limit.clamp(1, MAX_PAGE);
        let (mut sql, order) = sql::select(
            Dialect::Postgres,
            SUMMARY_COLUMNS,
            mailbox.as_deref(),
            &query,
        );
        sql.push(&format!(" AND {order} > "))
            .param(Value::Int(after))
            .push(&format!(" AND {order} <= "))
            .param(Value::Int(watermark));
        sql.push(&format!(" ORDER BY {order} ASC LIMIT "))
            .param(Value::Int(limit as i64));
        let found: Vec<Summary> = conn
            .query(&sql)
            .await?
            .iter()
            .map(|r| sql::summary(r))
            .collect();
        let cursor = match found.last() {
            Some(last) if found.len() as u64 == limit => last.cursor,
            _ => watermark.max(after),
        };
        Ok((found, cursor))
    }

    pub(crate) async fn stats(&self) -> Result<Stats, Error> {
        let mut conn = self.shared.pool.get().await?;
        let rows = conn
            .query(&Sql::new(
                Dialect::Postgres,
                "SELECT t.messages, t.bytes, \
                 coalesce((SELECT max(id) FROM message), 0)::int8, t.unread \
                 FROM totals t WHERE t.id = 0",
            ))
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| Error::Database("no totals".into()))?;
        let int = |i| row.try_get::<_, i64>(i).unwrap_or(0);
        Ok(Stats {
            messages: int(0).max(0) as u64,
            bytes: int(1).max(0) as u64,
            last_cursor: int(2),
            unread: int(3).max(0) as u64,
        })
    }

    pub(crate) async fn prune_step(
        &self,
        retention: Retention,
        now_ms: i64,
    ) -> Result<Pruned, Error> {
        prune_step(&self.shared, &retention, now_ms).await
    }

    /// `synchronous_commit` and `fsync` as our connections see them.
    pub(crate) async fn durability(&self) -> Result<(String, String), Error> {
        let mut conn = self.shared.pool.get().await?;
        let rows = conn
            .query(&Sql::new(
                Dialect::Postgres,
                "SELECT current_setting('synchronous_commit'), current_setting('fsync')",
            ))
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| Error::Database("no settings".into()))?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }
}

/// Makes the schema when missing, under a lock. A database that cannot be written but has
/// the schema still serves reads (and answers every delivery with a 4xx).
async fn setup_schema(client: &Client, what: &str) -> Result<(), Error> {
    let script = format!("BEGIN; SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {SCHEMA} COMMIT;");
    let Err(e) = client.batch_execute(&script).await else {
        return Ok(());
    };
    let e = Error::from(e);
    let _ = client.batch_execute("ROLLBACK").await;
    let has_schema: bool = client
        .query_one(
            "SELECT to_regclass('message') IS NOT NULL AND to_regclass('raw') IS NOT NULL \
             AND to_regclass('recipient') IS NOT NULL",
            &[],
        )
        .await?
        .try_get(0)?;
    if !has_schema {
        return Err(e);
    }
    log::warn!("inbox: {what}: cannot update the schema: {e}");
    Ok(())
}

/// Deletes messages, inside the caller's transaction (which holds the order lock): their
/// recipients first, so that the totals' trigger still sees their read state.
async fn delete(conn: &mut Pooled<'_>, ids: &[i64]) -> Result<u64, Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    let ids = ids.to_vec();
    let recipients = conn
        .statement("DELETE FROM recipient WHERE message = ANY($1)")
        .await?;
    conn.client.execute(&recipients, &[&ids]).await?;
    let s = conn
        .statement(
            "WITH d AS (DELETE FROM message WHERE id = ANY($1) RETURNING id), \
             r AS (DELETE FROM raw WHERE message = ANY($1)) \
             SELECT count(*) FROM d",
        )
        .await?;
    let n: i64 = conn.client.query_one(&s, &[&ids]).await?.try_get(0)?;
    Ok(n.max(0) as u64)
}

// ---- the pool ---------------------------------------------------------------------------

/// A reading connection with its prepared statements.
struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

struct Pool {
    config: Config,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
}

impl Pool {
    /// A connection: an idle one, or a new one (at most [`READERS`] at once; one more
    /// waits for a free one).
    async fn get(&self) -> Result<Pooled<'_>, Error> {
        let permit = self.permits.acquire().await.map_err(|_| Error::Closed)?;
        let idle = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let mut found = None;
            while let Some(conn) = idle.pop() {
                if !conn.client.is_closed() {
                    found = Some(conn);
                    break;
                }
            }
            found
        };
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let client = connect(&self.config).await?;
                // A search is one prepared statement whatever its words: after five runs
                // PostgreSQL may keep a generic plan, made without the tsquery, which
                // reads every match of a common word from the GIN index and sorts them
                // (150 ms for a word in each of 100 000 messages, against 0.4 ms read in
                // id order). Each run is planned for its own words instead.
                if let Err(e) = client
                    .batch_execute("SET plan_cache_mode = force_custom_plan")
                    .await
                {
                    log::debug!("inbox: PostgreSQL keeps its plan cache mode: {e}");
                }
                Conn {
                    client,
                    statements: HashMap::new(),
                }
            }
        };
        Ok(Pooled {
            conn: Some(conn),
            pool: self,
            in_transaction: false,
            _permit: permit,
        })
    }
}

/// A connection taken from the [`Pool`]; back into it when dropped, unless it was dropped
/// inside a transaction or is closed.
struct Pooled<'a> {
    conn: Option<Conn>,
    pool: &'a Pool,
    in_transaction: bool,
    _permit: SemaphorePermit<'a>,
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if !self.in_transaction && !conn.client.is_closed() {
                self.pool
                    .idle
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(conn);
            }
        }
    }
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        // Taken only in drop.
        self.conn.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Pooled<'_> {
    async fn begin(&mut self) -> Result<(), Error> {
        self.in_transaction = true;
        self.client.batch_execute("BEGIN").await?;
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), Error> {
        self.client.batch_execute("COMMIT").await?;
        self.in_transaction = false;
        Ok(())
    }

    async fn rollback(&mut self) {
        if self.client.batch_execute("ROLLBACK").await.is_ok() {
            self.in_transaction = false;
        }
    }

    /// The order lock, for the rest of the transaction: every transaction that changes the
    /// totals holds it, so they change them one at a time.
    async fn order_lock(&mut self) -> Result<(), Error> {
        let s = self.statement("SELECT pg_advisory_xact_lock($1)").await?;
        self.client.execute(&s, &[&ORDER_LOCK]).await?;
        Ok(())
    }

    async fn notify(&mut self, payload: &str) -> Result<(), Error> {
        let s = self.statement("SELECT pg_notify($1, $2)").await?;
        self.client.execute(&s, &[&CHANNEL, &payload]).await?;
        Ok(())
    }
}

impl Conn {
    /// A prepared statement, from the cache or prepared now.
    async fn statement(&mut self, text: &str) -> Result<Statement, Error> {
        if let Some(s) = self.statements.get(text) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(text).await?;
        if self.statements.len() >= MAX_STATEMENTS {
            self.statements.clear();
        }
        self.statements.insert(text.to_string(), s.clone());
        Ok(s)
    }

    async fn query(&mut self, sql: &Sql) -> Result<Vec<tokio_postgres::Row>, Error> {
        let s = self.statement(&sql.text).await?;
        Ok(self.client.query(&s, &params(&sql.params)).await?)
    }

    /// Two counts from a `SELECT count(*), count(*) FILTER (...)`.
    async fn counts(&mut self, sql: &Sql) -> Result<(u64, u64), Error> {
        let rows = self.query(sql).await?;
        let row = rows
            .first()
            .ok_or_else(|| Error::Database("no count".into()))?;
        let (n, u): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        Ok((n.max(0) as u64, u.max(0) as u64))
    }

    /// The messages and unread messages of the store (`None`) or of one address's inbox,
    /// from the totals the triggers keep.
    async fn totals(&mut self, mailbox: Option<&str>) -> Result<(u64, u64), Error> {
        let sql = match mailbox {
            None => Sql::new(
                Dialect::Postgres,
                "SELECT messages, unread FROM totals WHERE id = 0",
            ),
            Some(m) => {
                let mut sql = Sql::new(
                    Dialect::Postgres,
                    "SELECT messages, unread FROM mailbox_totals WHERE mailbox = ",
                );
                sql.param(Value::Text(clean(&mailbox_key(m))));
                sql
            }
        };
        let rows = self.query(&sql).await?;
        Ok(match rows.first() {
            Some(row) => {
                let (n, u): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
                (n.max(0) as u64, u.max(0) as u64)
            }
            None => (0, 0),
        })
    }
}

// ---- the writer -------------------------------------------------------------------------

/// Why a batch failed, and whether only one message's data is to blame.
struct BatchError {
    error: Error,
    per_message: bool,
}

impl From<tokio_postgres::Error> for BatchError {
    fn from(e: tokio_postgres::Error) -> Self {
        // Class 22 (data exception) and 23 (integrity constraint): the message's own data.
        let per_message = e
            .code()
            .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"));
        BatchError {
            error: e.into(),
            per_message,
        }
    }
}

impl From<Error> for BatchError {
    fn from(error: Error) -> Self {
        BatchError {
            error,
            per_message: false,
        }
    }
}

/// The writer's connection and its statements.
struct Writer {
    client: Client,
    lock: Statement,
    insert: Statement,
    insert_piece: Statement,
    notify: Statement,
}

impl Writer {
    async fn connect(config: &Config) -> Result<Writer, Error> {
        let client = connect(config).await?;
        let lock = client.prepare("SELECT pg_advisory_xact_lock($1)").await?;
        let insert = client.prepare(INSERT).await?;
        let insert_piece = client.prepare(INSERT_PIECE).await?;
        let notify = client.prepare("SELECT pg_notify($1, $2)").await?;
        Ok(Writer {
            client,
            lock,
            insert,
            insert_piece,
            notify,
        })
    }

    /// Inserts one message with its first piece (the statement is sent when first polled:
    /// several of these polled in order are pipelined).
    async fn insert(
        &self,
        m: &NewMessage,
        first: Option<&[u8]>,
    ) -> Result<i64, tokio_postgres::Error> {
        let size = i64::try_from(m.size).unwrap_or(i64::MAX);
        let stored = i64::try_from(m.raw.len()).unwrap_or(i64::MAX);
        let keys: Vec<String> = m
            .recipients
            .iter()
            .map(|a| clean(&mailbox_key(a)))
            .collect();
        let addresses: Vec<String> = m.recipients.iter().map(|a| clean(a)).collect();
        let sender = clean(&m.sender);
        let envelope = clean(&m.envelope_json);
        let row = self
            .client
            .query_one(
                &self.insert,
                &[
                    &m.uid,
                    &m.received_ms,
                    &size,
                    &stored,
                    &sender,
                    &envelope,
                    &first,
                    &keys,
                    &addresses,
                ],
            )
            .await?;
        row.try_get(0)
    }

    /// The pieces after the first, one statement each (messages over 1 MiB compressed).
    async fn rest(&self, m: &mut NewMessage, id: i64) -> Result<(), BatchError> {
        for seq in 1..m.raw.piece_count() {
            let Some(data) = piece(&mut m.raw, seq).await? else {
                break;
            };
            let seq = i64::try_from(seq).unwrap_or(i64::MAX);
            self.client
                .execute(&self.insert_piece, &[&id, &seq, &data])
                .await?;
        }
        Ok(())
    }

    /// The fast way: everything pipelined, all or nothing.
    async fn pipelined(
        &self,
        jobs: &mut [StoreJob],
        payload: &str,
    ) -> Result<Vec<i64>, BatchError> {
        let mut firsts = Vec::with_capacity(jobs.len());
        for job in jobs.iter_mut() {
            firsts.push(piece(&mut job.message.raw, 0).await?);
        }
        let inserts = jobs
            .iter()
            .zip(&firsts)
            .map(|(job, first)| self.insert(&job.message, first.as_deref()));
        // `join3` polls in order, so the requests go out in this order, in one go.
        let (begin, lock, inserted) = join3(
            self.client.batch_execute("BEGIN"),
            self.client.execute(&self.lock, &[&ORDER_LOCK]),
            join_all(inserts),
        )
        .await;
        begin?;
        lock?;
        let mut ids = Vec::with_capacity(inserted.len());
        for id in inserted {
            ids.push(id?);
        }
        for (job, id) in jobs.iter_mut().zip(&ids) {
            self.rest(&mut job.message, *id).await?;
        }
        let (notify, commit) = join(
            self.client.execute(&self.notify, &[&CHANNEL, &payload]),
            self.client.batch_execute("COMMIT"),
        )
        .await;
        // A failed NOTIFY turns the COMMIT into a rollback: check it first.
        notify?;
        commit?;
        Ok(ids)
    }

    /// The careful way, after a message's data failed the fast one: one savepoint per
    /// message, so that only that message fails.
    async fn one_by_one(
        &self,
        jobs: &mut [StoreJob],
        payload: &str,
    ) -> Result<Vec<Result<i64, Error>>, BatchError> {
        self.client.batch_execute("BEGIN").await?;
        self.client.execute(&self.lock, &[&ORDER_LOCK]).await?;
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs.iter_mut() {
            self.client.batch_execute("SAVEPOINT one").await?;
            let stored = async {
                let first = piece(&mut job.message.raw, 0).await?;
                let id = self.insert(&job.message, first.as_deref()).await?;
                self.rest(&mut job.message, id).await?;
                Ok::<_, BatchError>(id)
            }
            .await;
            match stored {
                Ok(id) => {
                    self.client.batch_execute("RELEASE SAVEPOINT one").await?;
                    out.push(Ok(id));
                }
                Err(e) if e.per_message => {
                    self.client
                        .batch_execute("ROLLBACK TO SAVEPOINT one")
                        .await?;
                    out.push(Err(e.error));
                }
                Err(e) => return Err(e),
            }
        }
        if out.iter().any(Result::is_ok) {
            self.client
                .execute(&self.notify, &[&CHANNEL, &payload])
                .await?;
        }
        self.client.batch_execute("COMMIT").await?;
        Ok(out)
    }
}

/// The writer task: batches, one transaction per batch. Ends when the store is dropped.
async fn writer(shared: Arc<Shared>, mut rx: mpsc::Receiver<StoreJob>) {
    let mut conn: Option<Writer> = None;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // A session that stopped waiting (the backend timeout answered 451): storing its
        // message now would only make the client's retry a duplicate.
        let before = batch.len();
        batch.retain(|job| !job.reply.is_closed());
        if batch.len() < before {
            log::info!(
                "inbox: {} messages whose sessions gave up waiting are not stored",
                before - batch.len()
            );
        }
        if batch.is_empty() {
            continue;
        }
        let results = commit(&shared, &mut conn, &mut batch).await;
        let stored = results.iter().any(Result::is_ok);
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
        if stored {
            shared.hooks.stored();
            shared.wake_indexer.notify_one();
        }
    }
    log::debug!("inbox: PostgreSQL writer stopped");
}

/// Commits a batch; one result per job, `Ok` only after the `COMMIT` returned.
async fn commit(
    shared: &Shared,
    conn: &mut Option<Writer>,
    batch: &mut [StoreJob],
) -> Vec<Result<i64, Error>> {
    let n = batch.len();
    if conn.as_ref().is_none_or(|w| w.client.is_closed()) {
        *conn = None;
        match Writer::connect(&shared.config).await {
            Ok(w) => *conn = Some(w),
            Err(e) => {
                log::warn!("inbox: cannot connect to PostgreSQL to store {n} messages: {e}");
                return vec![Err(e); n];
            }
        }
    }
    let Some(w) = conn.as_ref() else {
        return vec![Err(Error::Closed); n];
    };
    let payload = shared.payload("stored", None);
    let result = match w.pipelined(batch, &payload).await {
        Ok(ids) => Ok(ids.into_iter().map(Ok).collect()),
        Err(e) if e.per_message => {
            log::debug!("inbox: a batch failed ({}); one message at a time", e.error);
            let _ = w.client.batch_execute("ROLLBACK").await;
            w.one_by_one(batch, &payload).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(results) => {
            if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
                log::warn!("inbox: a message could not be stored: {e}");
            }
            results
        }
        Err(e) => {
            log::warn!("inbox: a commit of {n} messages failed: {}", e.error);
            if w.client.batch_execute("ROLLBACK").await.is_err() {
                *conn = None;
            }
            vec![Err(e.error); n]
        }
    }
}

// ---- the indexer and pruning ------------------------------------------------------------

/// The indexer task: parses new messages after their commit (woken by our commits, and
/// every 500 ms for the other receivers'), and prunes now and then. Ends with the store.
async fn indexer(shared: Arc<Shared>, mut stop: watch::Receiver<()>) {
    let started = Instant::now();
    let mut last_prune: Option<Instant> = None;
    let mut failing = false;
    loop {
        tokio::select! {
            changed = stop.changed() => if changed.is_err() { break },
            _ = shared.wake_indexer.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        // Bounded: at most 100 batches, then a look at pruning.
        for _ in 0..100 {
            match index_round(&shared).await {
                Ok(0) => break,
                Ok(_) => failing = false,
                Err(e) => {
                    // Once per failing stretch (a read-only database fails every round).
                    if !failing {
                        log::warn!("inbox: indexing failed: {e}");
                    }
                    failing = true;
                    break;
                }
            }
        }
        let due = match last_prune {
            None => started.elapsed() >= Duration::from_secs(1),
            Some(t) => t.elapsed() >= shared.hooks.retention.interval,
        };
        if due {
            last_prune = Some(Instant::now());
            prune_all(&shared).await;
        }
    }
    log::debug!("inbox: PostgreSQL indexer stopped");
}

/// Parses up to [`INDEX_BATCH`] messages that no other receiver is parsing.
async fn index_round(shared: &Shared) -> Result<usize, Error> {
    let limit = shared.hooks.parse_limit;
    let mut conn = shared.pool.get().await?;
    conn.begin().await?;
    let claim = conn
        .statement(
            "SELECT id, size FROM message WHERE indexed = 0 ORDER BY id LIMIT $1 \
             FOR UPDATE SKIP LOCKED",
        )
        .await?;
    let todo: Vec<(i64, i64)> = conn
        .client
        .query(&claim, &[&INDEX_BATCH])
        .await?
        .iter()
        .filter_map(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?)))
        .collect();
    if todo.is_empty() {
        conn.commit().await?;
        return Ok(0);
    }
    // A message too big to parse whole is parsed for its header section: its first piece
    // (1 MiB compressed) holds more than that.
    let fetch = conn
        .statement("SELECT data FROM raw WHERE message = $1 AND seq < $2 ORDER BY seq")
        .await?;
    let mut messages = Vec::with_capacity(todo.len());
    for (id, size) in todo {
        let pieces: i64 = if size.max(0) as usize > limit {
            1
        } else {
            i64::MAX
        };
        let data: Vec<Vec<u8>> = conn
            .client
            .query(&fetch, &[&id, &pieces])
            .await?
            .iter()
            .filter_map(|r| r.try_get(0).ok())
            .collect();
        messages.push((id, size, data));
    }
    let jobs = tokio::task::spawn_blocking(move || {
        messages
            .into_iter()
            .map(|(id, size, pieces)| {
                let job = IndexJob::parse(id, size, &pieces, limit);
                let tsv = job.fields.parsed.then(|| sql::pg_tsvector(&job.fields));
                (job, tsv)
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| Error::Database(format!("parsing: {e}")))?;
    let n = jobs.len();
    let last = jobs.iter().map(|(j, _)| j.id).max().unwrap_or(0);
    let update = conn.statement(INDEX).await?;
    let results = join_all(
        jobs.iter()
            .map(|(job, tsv)| index(&conn.client, &update, job, tsv.as_deref())),
    )
    .await;
    if let Some(e) = results.into_iter().find_map(Result::err) {
        // One message's fields were refused: the others are indexed, that one is marked
        // as not parsed (it is shown raw).
        log::warn!("inbox: indexing a batch failed ({e}); one message at a time");
        conn.rollback().await;
        conn.begin().await?;
        for (job, tsv) in &jobs {
            conn.client.batch_execute("SAVEPOINT one").await?;
            if index(&conn.client, &update, job, tsv.as_deref())
                .await
                .is_err()
            {
                conn.client
                    .batch_execute("ROLLBACK TO SAVEPOINT one")
                    .await?;
                let unparsed = IndexJob {
                    id: job.id,
                    fields: crate::parse::Fields::default(),
                };
                index(&conn.client, &update, &unparsed, None).await?;
            }
            conn.client.batch_execute("RELEASE SAVEPOINT one").await?;
        }
    }
    let payload = shared.payload("indexed", Some(last));
    conn.notify(&payload).await?;
    conn.commit().await?;
    shared.hooks.indexed(last);
    Ok(n)
}

async fn index(
    client: &Client,
    update: &Statement,
    job: &IndexJob,
    tsv: Option<&str>,
) -> Result<u64, tokio_postgres::Error> {
    let f = &job.fields;
    let json = |v: &dyn erased::Json| v.json();
    let attachments = f.attachments.len() as i64;
    let inline = f.inline.len() as i64;
    let indexed: i64 = if f.parsed { 1 } else { 2 };
    client
        .execute(
            update,
            &[
                &job.id,
                &indexed,
                &clean(&f.subject),
                &json(&f.from),
                &json(&f.to),
                &json(&f.cc),
                &json(&f.bcc),
                &json(&f.reply_to),
                &f.date,
                &clean(&f.message_id),
                &clean(&f.snippet),
                &attachments,
                &inline,
                &job.parts_json(),
                &tsv,
            ],
        )
        .await
}

mod erased {
    /// Serializes anything serde can, to a JSON string ("" when it cannot). JSON escapes
    /// NUL, so the text is safe for PostgreSQL.
    pub(crate) trait Json {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_string(self).unwrap_or_default()
        }
    }
}

/// One step of pruning: at most 500 messages, in one transaction, by one receiver at a
/// time (a step that finds another receiver pruning removes nothing).
async fn prune_step(shared: &Shared, retention: &Retention, now_ms: i64) -> Result<Pruned, Error> {
    let mut conn = shared.pool.get().await?;
    conn.begin().await?;
    let try_lock = conn
        .statement("SELECT pg_try_advisory_xact_lock($1)")
        .await?;
    let locked: bool = conn
        .client
        .query_one(&try_lock, &[&PRUNE_LOCK])
        .await?
        .try_get(0)?;
    if !locked {
        conn.commit().await?;
        return Ok(Pruned::default());
    }
    conn.order_lock().await?;
    let totals = conn
        .statement("SELECT messages, bytes FROM totals WHERE id = 0")
        .await?;
    let row = conn.client.query_one(&totals, &[]).await?;
    let (count, bytes): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    let oldest = conn
        .statement("SELECT id, size, received FROM message ORDER BY id LIMIT 500")
        .await?;
    let candidates: Vec<(i64, i64, i64)> = conn
        .client
        .query(&oldest, &[])
        .await?
        .iter()
        .filter_map(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?, r.try_get(2).ok()?)))
        .collect();
    let (victims, reason) = prune_victims(&candidates, count, bytes, retention, now_ms);
    let freed: i64 = candidates
        .iter()
        .filter(|c| victims.contains(&c.0))
        .map(|c| c.1)
        .sum();
    let n = delete(&mut conn, &victims).await?;
    if n > 0 {
        let payload = shared.payload("changed", None);
        conn.notify(&payload).await?;
    }
    conn.commit().await?;
    Ok(Pruned {
        messages: n,
        bytes: freed.max(0) as u64,
        reason,
    })
}

/// Prune steps until nothing more goes (at most [`PruneRun::MAX_STEPS`]), logged.
async fn prune_all(shared: &Shared) {
    let mut run = PruneRun::default();
    for _ in 0..PruneRun::MAX_STEPS {
        let step = prune_step(shared, &shared.hooks.retention, crate::store::now_ms()).await;
        if !run.step(step) {
            break;
        }
    }
    run.finish(|| shared.hooks.deleted());
}

// ---- the listener -----------------------------------------------------------------------

/// The listener task: `LISTEN samotop_inbox`, the other receivers' notifications into our
/// events; reconnects a second after its connection ends. Ends with the store.
async fn listener(shared: Arc<Shared>, mut stop: watch::Receiver<()>) {
    let mut connected_before = false;
    // Ends when the store is dropped (`stop`); one round per connection.
    loop {
        let session = listen(&shared, &mut stop, connected_before);
        match session.await {
            Ok(Listen::Stopped) => break,
            Ok(Listen::Ended) => {
                connected_before = true;
                log::warn!("inbox: the PostgreSQL notification connection ended; reconnecting");
            }
            Err(e) => log::warn!("inbox: cannot listen for notifications: {e}"),
        }
        tokio::select! {
            changed = stop.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    log::debug!("inbox: PostgreSQL listener stopped");
}

enum Listen {
    Stopped,
    Ended,
}

async fn listen(
    shared: &Shared,
    stop: &mut watch::Receiver<()>,
    reconnected: bool,
) -> Result<Listen, Error> {
    let (client, mut connection) = shared.config.connect(NoTls).await?;
    let (tx, mut rx) = mpsc::channel::<String>(1024);
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = futures_util::StreamExt::next(&mut messages).await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    // A hint: when we lag this far behind, dropping one loses nothing the
                    // next wait round does not find.
                    let _ = tx.try_send(n.payload().to_string());
                }
                Ok(_) => {}
                Err(e) => {
                    log::debug!("inbox: notification connection: {}", Error::from(e));
                    break;
                }
            }
        }
    });
    let result = async {
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        if reconnected {
            // Something may have happened while we were away.
            shared.hooks.stored();
            shared.hooks.deleted();
        }
        loop {
            tokio::select! {
                changed = stop.changed() => if changed.is_err() { return Ok(Listen::Stopped) },
                payload = rx.recv() => match payload {
                    Some(payload) => on_notification(shared, &payload),
                    None => return Ok(Listen::Ended),
                },
            }
        }
    }
    .await;
    drop(client);
    driver.abort();
    result
}

/// A notification's kind, origin and cursor (see [`Shared::payload`]).
fn parse_notification(payload: &str) -> Option<(&str, &str, Option<i64>)> {
    let mut words = payload.split(' ');
    let kind = words.next()?;
    let origin = words.next()?;
    Some((kind, origin, words.next().and_then(|c| c.parse().ok())))
}

/// `stored ORIGIN`, `indexed ORIGIN CURSOR`, `changed ORIGIN`; our own are skipped.
fn on_notification(shared: &Shared, payload: &str) {
    let Some((kind, origin, cursor)) = parse_notification(payload) else {
        return;
    };
    if origin == shared.origin {
        return;
    }
    match (kind, cursor) {
        ("stored", _) => {
            shared.hooks.stored();
            shared.wake_indexer.notify_one();
        }
        ("indexed", Some(cursor)) => shared.hooks.indexed(cursor),
        ("changed", _) => shared.hooks.deleted(),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_round_trip() {
        let shared = Shared {
            config: Config::new(),
            pool: Pool {
                config: Config::new(),
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(1),
            },
            hooks: Hooks::for_tests(),
            origin: "0a1b".into(),
            wake_indexer: Notify::new(),
        };
        let indexed = shared.payload("indexed", Some(42));
        assert_eq!(indexed, "indexed 0a1b 42");
        assert_eq!(
            parse_notification(&indexed),
            Some(("indexed", "0a1b", Some(42)))
        );
        assert_eq!(
            parse_notification(&shared.payload("stored", None)),
            Some(("stored", "0a1b", None))
        );
        assert_eq!(parse_notification("junk"), None);
        assert_eq!(
            parse_notification("indexed x y"),
            Some(("indexed", "x", None))
        );
    }

    #[test]
    fn descriptions_carry_no_password() {
        let config: Config = "postgres://u:secret@db.example:5433/inbox"
            .parse()
            .expect("config");
        assert_eq!(describe(&config), "postgres://u@db.example:5433/inbox");
        let config: Config = "postgres://u@/inbox?host=/run/postgresql&password=secret"
            .parse()
            .expect("config");
        assert_eq!(
            describe(&config),
            "postgres://u@/inbox?host=/run/postgresql"
        );
    }
}
