//! [`Exec`]: runs a program for each message (or each recipient), the message on its
//! standard input and the envelope in its environment, and answers by its exit code.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use samotop_core::{
    Envelope, MailDispatch, Outcomes, Peer, Recipient, Refusal, SessionInfo, Spool, Transaction,
    reply,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Address, Error, text};
use samotop_core::reply::{
    COMMAND_CRASHED, COMMAND_FAILED, COMMAND_NOPERM, COMMAND_TEMPFAIL, COMMAND_TIMEOUT,
    COMMAND_UNAVAILABLE,
};

/// The longest value of one environment variable, in bytes; longer values are cut.
pub const MAX_ENV_VALUE: usize = 1024;
/// Programs run at once for one message in per-recipient mode.
pub const CONCURRENCY: usize = 4;

/// Runs a program per message: a [`MailDispatch`] like Postfix's `pipe(8)`, without a shell.
///
/// At commit the program is started with the arguments given (no shell, no expansion), in
/// its own process group, with an environment that holds only `PATH` and the variables
/// below; the message, as received (CR LF line ends, our `Received:` first), is written to
/// its standard input, which is closed at the end (a program that reads none of it is
/// fine). Its standard output is discarded; the first [`max_stderr`](Exec::max_stderr)
/// bytes of its standard error go to the log. When it exits, anything left in its process
/// group is killed; when it runs past the [`timeout`](Exec::timeout) the whole group is
/// killed (SIGKILL) and the client told `451 4.3.0`. Every child is waited for: no zombie.
///
/// The message is spooled first ([`Spool`]: memory, then an encrypted temporary file), so
/// that the program sees only a whole message and the time limit counts from the end of
/// the data.
///
/// | exit | reply |
/// | --- | --- |
/// | 0 | 250 (delivered) |
/// | 67 `EX_NOUSER` | `550 5.1.1` |
/// | 75 `EX_TEMPFAIL`, 71 `EX_OSERR` | `451 4.3.0` |
/// | 77 `EX_NOPERM` | `550 5.7.1` |
/// | any other | `554 5.3.0` |
/// | killed by a signal | `451 4.3.0` |
/// | past the time limit | `451 4.3.0` |
/// | cannot be started | `451 4.3.5` |
///
/// Environment (values: control characters become `_`, at most [`MAX_ENV_VALUE`] bytes):
/// `SENDER` (empty for `<>`), `RECIPIENT`, `ORIGINAL_RECIPIENT` (ORCPT, else the address
/// as given), `LOCAL`, `USER`, `EXTENSION`, `DOMAIN` and one `EXT_NAME` per extension
/// argument (`alerts+env=prod@x` gives `EXT_ENV=prod`; see [`Address`]) — these for the
/// recipient of a per-recipient run, or the only recipient; `RECIPIENTS` (all of this run,
/// space-separated), `CLIENT_ADDRESS`, `CLIENT_PORT`, `HELO`, `PROTOCOL` (`ESMTPS`...),
/// `TLS` (`TLS1.3 TLS13_AES_256_GCM_SHA384`, or empty), `QUEUE_ID`, `DIGEST` (hex, when
/// the header section came whole), `SIZE`, `SERVER_NAME`, `QUARANTINE` (`1` or `0`), and
/// `AUTH_SPF`, `AUTH_DKIM`, `AUTH_DMARC`... (the first verdict of each method).
///
/// ```
/// use std::time::Duration;
/// use samotop_trigger::Exec;
/// let exec = Exec::parse("/bin/cat -u")?
///     .per_recipient(true)
///     .timeout(Duration::from_secs(10));
/// # Ok::<(), samotop_trigger::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Exec {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    program: PathBuf,
    args: Vec<String>,
    per_recipient: bool,
    timeout: Duration,
    max_stderr: usize,
    spool_memory: usize,
    path: String,
}

impl Exec {
    /// Default time limit of one run.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
    /// Default bytes of standard error kept for the log.
    pub const DEFAULT_MAX_STDERR: usize = 4096;
    /// Default `PATH` of the program.
    pub const DEFAULT_PATH: &'static str = "/usr/local/bin:/usr/bin:/bin";

    /// Runs `program` with `args`. A program without `/` is looked up in this process's
    /// `PATH` now.
    ///
    /// # Errors
    ///
    /// [`Error::BadCommand`]: an empty name, or no executable file by that name.
    pub fn new(program: impl AsRef<Path>, args: Vec<String>) -> Result<Exec, Error> {
        let given = program.as_ref();
        let bad = |reason: &str| Error::BadCommand {
            program: given.display().to_string(),
            reason: reason.to_string(),
        };
        if given.as_os_str().is_empty() {
            return Err(bad("no program"));
        }
        let program = if given.components().count() > 1 || given.is_absolute() {
            given.to_path_buf()
        } else {
            let path = std::env::var_os("PATH").unwrap_or_else(|| Self::DEFAULT_PATH.into());
            std::env::split_paths(&path)
                .map(|dir| dir.join(given))
                .find(|p| is_executable(p))
                .ok_or_else(|| bad("not found in PATH"))?
        };
        if !is_executable(&program) {
            return Err(bad("not an executable file"));
        }
        Ok(Exec {
            inner: Arc::new(Inner {
                program,
                args,
                per_recipient: false,
                timeout: Self::DEFAULT_TIMEOUT,
                max_stderr: Self::DEFAULT_MAX_STDERR,
                spool_memory: 256 * 1024,
                path: Self::DEFAULT_PATH.to_string(),
            }),
        })
    }

    /// A command line `PROGRAM ARG...` split into words like a shell would, but without one:
    /// white space separates words, `'...'` and `"..."` quote, `\` escapes; nothing is
    /// expanded (`$`, `*`, `~` are plain characters).
    ///
    /// ```
    /// use samotop_trigger::exec::split_words;
    /// assert_eq!(split_words(r#"/bin/hook --tag "a b" 'c$d' e\ f"#).unwrap(),
    ///            ["/bin/hook", "--tag", "a b", "c$d", "e f"]);
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::BadCommand`]: an unclosed quote, no program, or see [`new`](Exec::new).
    pub fn parse(command_line: &str) -> Result<Exec, Error> {
        let words = split_words(command_line).map_err(|reason| Error::BadCommand {
            program: command_line.to_string(),
            reason: reason.to_string(),
        })?;
        let mut words = words.into_iter();
        let program = words.next().unwrap_or_default();
        Exec::new(program, words.collect())
    }

    fn with(mut self, change: impl FnOnce(&mut Inner)) -> Self {
        change(Arc::make_mut(&mut self.inner));
        self
    }

    /// Runs the program once per recipient (`RECIPIENT` set for each), up to
    /// [`CONCURRENCY`] at once, each recipient answered by its own run; default: once per
    /// message, every recipient answered by that run.
    pub fn per_recipient(self, yes: bool) -> Self {
        self.with(|i| i.per_recipient = yes)
    }

    /// The time limit of one run; past it the process group is killed and the client told
    /// `451 4.3.0`. Default [`DEFAULT_TIMEOUT`](Exec::DEFAULT_TIMEOUT); keep it below the
    /// session's backend timeout (120 s by default).
    pub fn timeout(self, timeout: Duration) -> Self {
        self.with(|i| i.timeout = timeout)
    }

    /// Bytes of standard error kept for the log (the rest is read and dropped). Default
    /// [`DEFAULT_MAX_STDERR`](Exec::DEFAULT_MAX_STDERR).
    pub fn max_stderr(self, bytes: usize) -> Self {
        self.with(|i| i.max_stderr = bytes)
    }

    /// The program's `PATH`. Default [`DEFAULT_PATH`](Exec::DEFAULT_PATH).
    pub fn path_env(self, path: impl Into<String>) -> Self {
        self.with(|i| i.path = path.into())
    }

    /// The program run.
    pub fn program(&self) -> &Path {
        &self.inner.program
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Splits a command line into words (see [`Exec::parse`]).
///
/// # Errors
///
/// An unclosed quote or a trailing `\`.
pub fn split_words(line: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("unclosed '"),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => w.push(c),
                            None => return Err("unclosed \""),
                        },
                        Some(c) => w.push(c),
                        None => return Err("unclosed \""),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err("trailing \\"),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(w) = word {
        words.push(w);
    }
    if words.is_empty() {
        return Err("no program");
    }
    Ok(words)
}

impl MailDispatch for Exec {
    type Transaction = ExecTransaction;

    async fn open(&self, _: &SessionInfo, _: &Envelope) -> Result<ExecTransaction, Refusal> {
        Ok(ExecTransaction {
            exec: self.inner.clone(),
            recipients: Vec::new(),
            begun: None,
            spool: Spool::new(self.inner.spool_memory),
        })
    }
}

/// The transaction of an [`Exec`]: spools the message, runs the program at commit.
#[derive(Debug)]
pub struct ExecTransaction {
    exec: Arc<Inner>,
    recipients: Vec<Recipient>,
    begun: Option<(SessionInfo, Envelope)>,
    spool: Spool,
}

impl Transaction for ExecTransaction {
    async fn add_recipient(&mut self, recipient: &Recipient) -> Result<(), Refusal> {
        self.recipients.push(recipient.clone());
        Ok(())
    }

    async fn begin(&mut self, info: &SessionInfo, envelope: &Envelope) -> Result<(), Refusal> {
        self.begun = Some((info.clone(), envelope.clone()));
        Ok(())
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        self.spool.write(chunk).await.map_err(|e| {
            log::warn!("exec {}: spool: {e}", self.exec.program.display());
            reply::for_io_error(&e)
        })
    }

    async fn commit(&mut self) -> Outcomes {
        let n = self.recipients.len();
        let Some((info, envelope)) = self.begun.take() else {
            log::error!("exec: commit without begin");
            return vec![Err(reply::DELIVERY_FAILED); n];
        };
        let exec = &self.exec;
        if !exec.per_recipient {
            let vars = environment(exec, &info, &envelope, &self.recipients, self.spool.len());
            let outcome = run(exec, &self.spool, vars, &envelope.id).await;
            return vec![outcome; n];
        }
        let mut outcomes = Vec::with_capacity(n);
        for group in self.recipients.chunks(CONCURRENCY) {
            let runs = group.iter().map(|r| {
                let vars = environment(
                    exec,
                    &info,
                    &envelope,
                    std::slice::from_ref(r),
                    self.spool.len(),
                );
                run(exec, &self.spool, vars, &envelope.id)
            });
            outcomes.extend(futures_util::future::join_all(runs).await);
        }
        outcomes
    }

    async fn abort(&mut self) {
        self.spool = Spool::new(0);
        self.begun = None;
    }
}

/// The environment of one run (see [`Exec`]).
fn environment(
    exec: &Inner,
    info: &SessionInfo,
    envelope: &Envelope,
    recipients: &[Recipient],
    size: u64,
) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = Vec::with_capacity(32);
    let mut set = |name: &str, value: &str| {
        vars.push((name.to_string(), text::field_value(value, MAX_ENV_VALUE)));
    };
    set("PATH", &exec.path);
    set("SENDER", &envelope.sender.to_string());
    if let [r] = recipients {
        let a = Address::parse(&r.address);
        set("RECIPIENT", &r.address);
        set("ORIGINAL_RECIPIENT", &crate::json::original_recipient(r));
        set("LOCAL", a.local);
        set("USER", a.user);
        set("EXTENSION", a.extension.unwrap_or(""));
        set("DOMAIN", a.domain.unwrap_or(""));
        for (name, value) in a.args() {
            let name: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            set(&format!("EXT_{name}"), value);
        }
    }
    let all: Vec<&str> = recipients.iter().map(|r| r.address.as_str()).collect();
    set("RECIPIENTS", &all.join(" "));
    match &info.peer {
        Peer::Tcp(a) => {
            set("CLIENT_ADDRESS", &a.ip().to_string());
            set("CLIENT_PORT", &a.port().to_string());
        }
        other => {
            set("CLIENT_ADDRESS", &other.to_string());
            set("CLIENT_PORT", "");
        }
    }
    set(
        "HELO",
        &info
            .helo
            .as_ref()
            .map(|h| h.to_string())
            .unwrap_or_default(),
    );
    set("PROTOCOL", info.with_protocol());
    let tls = info
        .tls
        .as_ref()
        .map(|t| format!("{} {}", t.version, t.cipher))
        .unwrap_or_default();
    set("TLS", &tls);
    set("QUEUE_ID", &envelope.id);
    set(
        "DIGEST",
        &envelope.digest.map(|d| text::hex(&d)).unwrap_or_default(),
    );
    set("SIZE", &size.to_string());
    set("SERVER_NAME", &info.server_name);
    set("QUARANTINE", if envelope.quarantine { "1" } else { "0" });
    let mut methods: Vec<String> = Vec::new();
    for auth in &envelope.auth {
        let method: String = auth
            .method
            .chars()
            .take(16)
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        if !methods.contains(&method) {
            set(&format!("AUTH_{method}"), &auth.result);
            methods.push(method);
        }
    }
    vars
}

/// Kills a process group when dropped (the commit abandoned by the session's timeout).
struct Group(Option<i32>);

impl Group {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            kill_group(pgid);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

fn kill_group(pgid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pgid) {
        // ESRCH (nothing left in the group) is the usual answer.
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// One run of the program: feed it the message, keep some of its stderr, wait, map.
async fn run(
    exec: &Inner,
    spool: &Spool,
    vars: Vec<(String, String)>,
    id: &str,
) -> Result<(), Refusal> {
    let program = exec.program.display();
    let mut command = tokio::process::Command::new(&exec.program);
    command
        .args(&exec.args)
        .env_clear()
        .envs(vars)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            log::warn!("exec {program}: cannot start: {e}");
            return Err(COMMAND_UNAVAILABLE);
        }
    };
    let mut group = Group(child.id().and_then(|pid| i32::try_from(pid).ok()));
    let stdin = child.stdin.take();
    let stderr = child.stderr.take();
    let mut captured = Vec::new();
    let limit = exec.max_stderr;

    let feed = async move {
        let Some(mut stdin) = stdin else { return };
        let mut reader = spool.reader();
        loop {
            match reader.next_chunk(64 * 1024).await {
                Ok(Some(chunk)) => {
                    if let Err(e) = stdin.write_all(&chunk).await {
                        // EPIPE: the program does not read (all) of it; that is its right.
                        if e.kind() != std::io::ErrorKind::BrokenPipe {
                            log::debug!("exec: stdin: {e}");
                        }
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    log::warn!("exec: spool: {e}");
                    return;
                }
            }
        }
    };
    let capture = async {
        let Some(mut stderr) = stderr else { return };
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                return;
            }
            let room = limit.saturating_sub(captured.len());
            captured.extend_from_slice(&buf[..n.min(room)]);
        }
    };
    let status: Option<std::io::Result<ExitStatus>> = {
        let work = async { tokio::join!(feed, child.wait()).1 };
        tokio::pin!(work);
        tokio::pin!(capture);
        let deadline = tokio::time::sleep(exec.timeout);
        tokio::pin!(deadline);
        let mut captured_all = false;
        let status = loop {
            tokio::select! {
                status = &mut work => break Some(status),
                () = &mut capture, if !captured_all => captured_all = true,
                () = &mut deadline => break None,
            }
        };
        // Whatever is left of the group goes: after a timeout, the program itself too.
        group.kill();
        if !captured_all {
            // The pipe closes once the group is gone; bounded in case someone escaped it.
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut capture).await;
        }
        status
    };
    let status = match status {
        Some(status) => status,
        None => {
            // Reap the killed program (SIGKILL cannot be ignored).
            let _ = child.wait().await;
            log::warn!(
                "exec {program} for {id}: killed after {:?}; stderr: {}",
                exec.timeout,
                stderr_text(&captured)
            );
            return Err(COMMAND_TIMEOUT);
        }
    };
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            log::warn!("exec {program} for {id}: wait failed: {e}");
            return Err(reply::DELIVERY_FAILED);
        }
    };
    let outcome = exit_refusal(status);
    match &outcome {
        Ok(()) if captured.is_empty() => log::debug!("exec {program} for {id}: exit 0"),
        Ok(()) => log::info!(
            "exec {program} for {id}: exit 0; stderr: {}",
            stderr_text(&captured)
        ),
        Err(refusal) => log::warn!(
            "exec {program} for {id}: {status}; answering {refusal}; stderr: {}",
            stderr_text(&captured)
        ),
    }
    outcome
}

fn stderr_text(captured: &[u8]) -> String {
    String::from_utf8_lossy(captured)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// The reply for an exit status: the table in [`Exec`]'s docs (sysexits.h).
pub fn exit_refusal(status: ExitStatus) -> Result<(), Refusal> {
    match status.code() {
        Some(0) => Ok(()),
        Some(67) => Err(reply::NO_SUCH_USER),
        Some(71 | 75) => Err(COMMAND_TEMPFAIL),
        Some(77) => Err(COMMAND_NOPERM),
        Some(_) => Err(COMMAND_FAILED),
        None => Err(COMMAND_CRASHED),
    }
}
