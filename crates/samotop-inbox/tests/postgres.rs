//! The PostgreSQL store against a real server: the scenarios of `common/mod.rs` (the same
//! as for SQLite), then what is PostgreSQL's own: durable settings, group commit, ids in
//! commit order across two receivers with a wait that misses nothing, notifications from
//! one receiver to the other, a read-only database and lost connections, NUL in header
//! fields, a message stored in several pieces.
//!
//! The server is a throw-away cluster (`initdb`, `pg_ctl`; Debian's server binaries, which
//! `scripts/setup` installs) on a Unix socket in a temporary directory, started once for this
//! test binary; each test has its own database. A small watcher process stops the cluster by
//! its PID and removes the directory once this test binary has exited. Without the server
//! binaries every test fails, saying so.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use samotop_inbox::{Event, Filter, Inbox, Options, Query};

use common::{deliver, message, send, wait_for};

/// The throw-away cluster.
struct Cluster {
    bin: PathBuf,
    socket: PathBuf,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// The directory of `initdb`/`pg_ctl`/`psql`: `$SAMOTOP_PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian).
fn pg_bin() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("SAMOTOP_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "PostgreSQL's server binaries (initdb, pg_ctl) are missing under /usr/lib/postgresql: \
         run scripts/setup, which installs Debian's postgresql package (or set SAMOTOP_PG_BIN)"
            .to_string()
    })
}

/// Runs a command as the `postgres` user when we are root (initdb refuses root).
fn as_owner(program: &Path) -> Command {
    if rustix_is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--clear-groups"])
            .arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn rustix_is_root() -> bool {
    // The owner of /proc/self is our effective user.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

fn run(mut command: Command, what: &str) -> Result<String, String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Cluster {
    fn start() -> Result<Cluster, String> {
        let bin = pg_bin()?;
        let base = tempfile::Builder::new()
            .prefix("samotop-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep();
        let data = base.join("data");
        let socket = base.join("sock");
        std::fs::create_dir(&socket).map_err(|e| e.to_string())?;
        if rustix_is_root() {
            let owner = run(
                {
                    let mut c = Command::new("id");
                    c.args(["-u", "postgres"]);
                    c
                },
                "id -u postgres",
            )?;
            let group = run(
                {
                    let mut c = Command::new("id");
                    c.args(["-g", "postgres"]);
                    c
                },
                "id -g postgres",
            )?;
            let (uid, gid) = (
                owner.trim().parse().map_err(|_| "no postgres user")?,
                group.trim().parse().map_err(|_| "no postgres group")?,
            );
            for dir in [&base, &socket] {
                std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
            }
        }
        let mut initdb = as_owner(&bin.join("initdb"));
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        ]);
        run(initdb, "initdb")?;
        let mut start = as_owner(&bin.join("pg_ctl"));
        start
            .arg("-D")
            .arg(&data)
            .args(["-w", "-t", "60", "-l"])
            .arg(base.join("server.log"))
            .arg("-o")
            .arg(format!(
                "-k {} -c listen_addresses='' -c max_connections=300",
                socket.display()
            ))
            .arg("start")
            .process_group(0);
        run(start, "pg_ctl start")?;
        let pid = std::fs::read_to_string(data.join("postmaster.pid"))
            .map_err(|e| e.to_string())?
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<u32>().ok())
            .ok_or("no PID in postmaster.pid")?;
        // Stops the server by its PID once this test binary has gone, then removes the
        // directory. Its own process group: a Ctrl-C of the tests does not stop it first.
        let watcher = format!(
            "while kill -0 {me} 2>/dev/null; do sleep 0.5; done; kill -INT {pid}; \
             for i in $(seq 1 200); do kill -0 {pid} 2>/dev/null || break; sleep 0.1; done; \
             kill -KILL {pid} 2>/dev/null; rm -rf '{base}'",
            me = std::process::id(),
            base = base.display()
        );
        Command::new("sh")
            .arg("-c")
            .arg(watcher)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("the watcher: {e}"))?;
        Ok(Cluster { bin, socket })
    }

    /// Runs SQL through `psql` as the superuser.
    fn psql(&self, db: &str, sql: &str) -> String {
        let mut c = Command::new(self.bin.join("psql"));
        c.arg("-h").arg(&self.socket).args([
            "-U",
            "postgres",
            "-d",
            db,
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ]);
        run(c, &format!("psql {sql}")).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A fresh database for one test.
    fn database(&self, name: &str) -> String {
        self.psql("postgres", &format!("DROP DATABASE IF EXISTS {name}"));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        format!("postgres://postgres@/{name}?host={}", self.socket.display())
    }
}

fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| Cluster::start().unwrap_or_else(|e| panic!("{e}")))
}

async fn open(name: &str, options: Options) -> Inbox {
    let url = tokio::task::spawn_blocking({
        let name = name.to_string();
        move || cluster().database(&name)
    })
    .await
    .expect("the cluster");
    Inbox::open(&url, options).await.expect("open")
}

async fn psql(db: &str, sql: &str) -> String {
    let (db, sql) = (db.to_string(), sql.to_string());
    tokio::task::spawn_blocking(move || cluster().psql(&db, &sql))
        .await
        .expect("psql")
}

// ---- the scenarios shared with SQLite ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_envelope_and_fields_are_kept() {
    common::raw_envelope_and_fields_are_kept(&open("raw_envelope", Options::default()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_inbox_per_address_and_bcc_stays_private() {
    let inbox = open("per_address", Options::default()).await;
    common::one_inbox_per_address_and_bcc_stays_private(&inbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_syntax_over_the_index() {
    common::search_syntax_over_the_index(&open("search", Options::default()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_prefixes_find_every_term_they_start() {
    let inbox = open("prefixes", Options::default()).await;
    common::search_prefixes_find_every_term_they_start(&inbox, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_on_arrival_and_its_cursor_misses_nothing() {
    let inbox = open("wait", Options::default()).await;
    common::wait_returns_on_arrival_and_its_cursor_misses_nothing(&inbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_share_transactions_and_all_land() {
    let inbox = open("group_commit", Options::default()).await;
    common::concurrent_commits_share_transactions_and_all_land(&inbox).await;
    // Group commit: the 64 messages' rows were written by fewer transactions than messages
    // (raw rows are never updated, so their xmin is the storing transaction).
    let transactions: u32 = psql("group_commit", "SELECT count(DISTINCT xmin::text) FROM raw")
        .await
        .trim()
        .parse()
        .expect("a count");
    println!("64 concurrent messages in {transactions} transactions");
    assert!(
        transactions < 64,
        "{transactions} transactions for 64 messages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_does_not_parse_is_stored_and_shown_raw() {
    let inbox = open("unparsed", Options::default()).await;
    common::a_message_that_does_not_parse_is_stored_and_shown_raw(&inbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_by_count_and_size() {
    let inbox = open("prune_count", common::pruning_by_count_and_size_options()).await;
    common::pruning_by_count_and_size(&inbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_by_age_reports_and_keeps_new_mail() {
    let options = common::pruning_by_age_reports_and_keeps_new_mail_options();
    let inbox = open("prune_age", options).await;
    common::pruning_by_age_reports_and_keeps_new_mail(&inbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_stay_exact() {
    common::totals_stay_exact(&open("totals", Options::default()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_over_the_cap_says_so() {
    common::a_search_over_the_cap_says_so(&open("cap", Options::default()).await).await;
}

// ---- PostgreSQL's own --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_commits_durably() {
    let inbox = open("durable", Options::default()).await;
    let (sync, fsync) = inbox
        .postgres_durability()
        .await
        .expect("settings")
        .expect("postgres");
    assert_eq!((sync.as_str(), fsync.as_str()), ("on", "on"));
    let socket = cluster().socket.display().to_string();
    assert_eq!(
        inbox.database(),
        format!("postgres://postgres@/durable?host={socket}")
    );
    assert_eq!(inbox.backend_name(), "postgres");
}

/// Two receivers store at once into one database while a reader follows the cursor: every
/// message is seen exactly once, in id order, and ids follow commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_receivers_ids_follow_commit_order_and_the_cursor_misses_nothing() {
    let a = open("two_receivers", Options::default()).await;
    let b = Inbox::open(
        &format!(
            "postgres://postgres@/two_receivers?host={}",
            cluster().socket.display()
        ),
        Options::default(),
    )
    .await
    .expect("open b");
    const EACH: usize = 60;
    let reader = {
        let a = a.clone();
        tokio::spawn(async move {
            let q = Query::parse("rcpt:@two.test").expect("query");
            let (mut seen, mut cursor) = (Vec::new(), 0);
            for _ in 0..1000 {
                let got = a
                    .wait(None, &q, cursor, 7, Duration::from_secs(20))
                    .await
                    .expect("wait");
                for m in &got.messages {
                    assert!(m.cursor > cursor, "a cursor goes forward");
                    seen.push(m.id.clone()); // not parsed yet, perhaps: no subject
                }
                cursor = got.cursor;
                if seen.len() >= 2 * EACH || got.timed_out {
                    break;
                }
            }
            seen
        })
    };
    let writers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .enumerate()
        .flat_map(|(r, inbox)| {
            (0..EACH).map(move |i| {
                let inbox = inbox.clone();
                tokio::spawn(async move {
                    let to = format!("u{}@two.test", i % 4);
                    send(&inbox, &to, &format!("r{r} m{i}"), "x").await
                })
            })
        })
        .collect();
    for w in writers {
        assert_eq!(w.await.expect("task"), vec![Ok(())]);
    }
    let seen = reader.await.expect("reader");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(seen.len(), 2 * EACH, "each message once: {seen:?}");
    assert_eq!(unique.len(), 2 * EACH);
    // Both receivers see the same store.
    let stats = b.stats().await.expect("stats");
    assert_eq!(stats.messages, 2 * EACH as u64);
    assert_eq!(
        a.stats().await.expect("stats").last_cursor,
        stats.last_cursor
    );
}

/// What one receiver stores reaches the other's events (LISTEN/NOTIFY): stored, then
/// indexed; a deletion on one is a change on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_hears_the_other_through_notifications() {
    let a = open("notify", Options::default()).await;
    let b = Inbox::open(
        &format!(
            "postgres://postgres@/notify?host={}",
            cluster().socket.display()
        ),
        Options::default(),
    )
    .await
    .expect("open b");
    let mut events = b.events();
    // The listener connects on its own task: give it a moment, then check it hears.
    let mut heard = Vec::new();
    for attempt in 0..20 {
        deliver(
            &a,
            "a@example.com",
            &["n@x.test"],
            &message(&format!("hello {attempt}"), "n@x.test", "x"),
        )
        .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(Ok(e)) = tokio::time::timeout_at(deadline, events.recv()).await {
            heard.push(e);
            if heard.iter().any(|e| matches!(e, Event::Indexed { .. })) {
                break;
            }
        }
        if heard.contains(&Event::Stored)
            && heard.iter().any(|e| matches!(e, Event::Indexed { .. }))
        {
            break;
        }
    }
    assert!(heard.contains(&Event::Stored), "{heard:?}");
    assert!(
        heard.iter().any(|e| matches!(e, Event::Indexed { .. })),
        "{heard:?}"
    );
    heard.clear();
    a.delete(None, None).await.expect("delete");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Ok(e)) = tokio::time::timeout_at(deadline, events.recv()).await {
        if e == Event::Changed {
            heard.push(e);
            break;
        }
    }
    assert_eq!(heard, [Event::Changed]);
}

/// A database made read-only answers every delivery with a 4xx and still serves reads;
/// connections lost to the server come back; once writable, mail is taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_is_4xx_and_reads_go_on() {
    let inbox = open("read_only", Options::default()).await;
    let kick = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                WHERE datname = 'read_only' AND application_name = 'samotop'";
    assert_eq!(
        deliver(
            &inbox,
            "a@example.com",
            &["r@x.test"],
            &message("before", "r@x.test", "x")
        )
        .await,
        vec![Ok(())]
    );
    wait_for(&inbox, None, "subject:before").await;
    psql(
        "postgres",
        "ALTER DATABASE read_only SET default_transaction_read_only = on",
    )
    .await;
    psql("postgres", kick).await;
    let mut refused = Vec::new();
    for i in 0..3 {
        let out = send(&inbox, "r@x.test", &format!("ro {i}"), "x").await;
        assert_eq!(out.len(), 1);
        let Err(reply) = &out[0] else {
            panic!("a read-only database took message {i}");
        };
        assert!(
            reply.starts_with("451") || reply.starts_with("452"),
            "{reply}"
        );
        refused.push(reply.clone());
    }
    assert!(refused.iter().any(|r| r.starts_with("451")), "{refused:?}");
    // Reads go on (the pool reconnects).
    let mut page = None;
    for _ in 0..3 {
        if let Ok(p) = inbox
            .list(&Filter {
                limit: 10,
                ..Filter::default()
            })
            .await
        {
            page = Some(p);
            break;
        }
    }
    let page = page.expect("a list from a read-only database");
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].subject, "before");
    psql(
        "postgres",
        "ALTER DATABASE read_only RESET default_transaction_read_only",
    )
    .await;
    psql("postgres", kick).await;
    let mut stored = false;
    for _ in 0..3 {
        let out = send(&inbox, "r@x.test", "after", "x").await;
        if out == vec![Ok(())] {
            stored = true;
            break;
        }
    }
    assert!(stored, "mail is taken again once the database is writable");
    assert_eq!(wait_for(&inbox, None, "subject:after").await.len(), 1);
}

/// Header fields with NUL (which PostgreSQL text cannot hold) are indexed, NUL dropped; a
/// message bigger than one stored piece (1 MiB compressed) comes back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_fields_and_a_message_in_several_pieces() {
    let inbox = open("pieces", Options::default()).await;
    let nul =
        b"Subject: =?utf-8?q?nul=00here?=\r\nFrom: =?utf-8?q?A=00B?= <a@x.test>\r\n\r\nbody\r\n";
    assert_eq!(
        deliver(&inbox, "a@example.com", &["p@x.test"], nul).await,
        vec![Ok(())]
    );
    let found = wait_for(&inbox, None, "subject:\"nul here\"").await;
    assert_eq!(found.len(), 1, "indexed, NUL dropped");
    assert_eq!(found[0].subject, "nulhere");
    let mut x: u32 = 7;
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    big.extend((0..3 * 1024 * 1024).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        b'!' + (x % 90) as u8
    }));
    big.extend_from_slice(b"\r\n");
    assert_eq!(
        deliver(&inbox, "a@example.com", &["p@x.test"], &big).await,
        vec![Ok(())]
    );
    let found = wait_for(&inbox, None, "subject:big").await;
    let raw = inbox
        .raw(&found[0].id, None)
        .await
        .expect("raw")
        .expect("kept");
    assert_eq!(raw.len(), big.len());
    assert!(raw == big, "byte for byte");
    let pieces = psql("pieces", "SELECT max(seq) FROM raw").await;
    assert!(
        pieces.trim().parse::<i64>().expect("a number") >= 2,
        "{pieces}"
    );
}
