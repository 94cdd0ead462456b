//! Test support for the LMTP tests: a real Dovecot in a temporary directory, a counting
//! socket shim, and envelopes built the way the session builds them.
#![allow(dead_code)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use samotop_core::{Envelope, Peer, Recipient, SessionInfo};
use samotop_parser::{Command as SmtpCommand, ForwardPath, ReversePath, parse_command};

/// The users of every test Dovecot: one with a full address, one with a bare name such as a
/// recipient map makes (`--map '(.*)@(.*)=$2-$1'`).
pub const ALICE: &str = "alice@example.com";
/// See [`ALICE`].
pub const BOB: &str = "example.com-bob";

/// How long Dovecot may take to open its socket, and to exit.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A Dovecot LMTP server of our own, in a temporary directory; killed when dropped.
pub struct Dovecot {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Dovecot {
    /// Starts Dovecot with LMTP on a Unix socket and the users [`ALICE`] and [`BOB`], and
    /// waits (bounded) until the socket answers.
    pub fn start() -> Dovecot {
        let version = dovecot_version();
        let dir = tempfile::tempdir().expect("temporary directory");
        // Dovecot delivers as a non-root user (it refuses mail access as root): that user
        // must reach the mail directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod tempdir");
        let mail = dir.path().join("mail");
        std::fs::create_dir(&mail).expect("mail dir");
        std::fs::set_permissions(&mail, std::fs::Permissions::from_mode(0o777))
            .expect("chmod mail dir");
        let users = format!("{ALICE}:{{PLAIN}}x:::::\n{BOB}:{{PLAIN}}x:::::\n");
        std::fs::write(dir.path().join("users"), users).expect("users file");
        let config = config(dir.path(), &version);
        std::fs::write(dir.path().join("dovecot.conf"), config).expect("dovecot.conf");

        let child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(dir.path().join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("stderr.log")).expect("stderr log"),
            ))
            // Its own process group, so that `kill` ends Dovecot and all its children.
            .process_group(0)
            .spawn()
            .expect("dovecot is installed but does not start");
        let mut dovecot = Dovecot {
            dir,
            child: Some(child),
        };
        dovecot.wait_ready();
        dovecot
    }

    /// The LMTP socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("lmtp.sock")
    }

    /// The temporary directory (for sockets of the test's own).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The messages in a user's Maildir (`new/` and `cur/`), read whole.
    pub fn messages(&self, user: &str) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.dir.path().join("mail").join(user).join(sub))
            else {
                continue;
            };
            for entry in entries.flatten() {
                out.push(std::fs::read(entry.path()).expect("read message"));
            }
        }
        out
    }

    /// Dovecot's log, for failure messages.
    pub fn log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("dovecot.log"))
    }

    /// Stops Dovecot politely (SIGTERM) and waits (bounded) until it has exited.
    pub fn stop(&mut self) {
        self.signal("-TERM");
    }

    /// Kills Dovecot and its children at once (SIGKILL to its process group), e.g. in the
    /// middle of a transfer.
    pub fn kill(&mut self) {
        self.signal("-KILL");
    }

    fn signal(&mut self, signal: &str) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = format!("-{}", child.id());
        let _ = Command::new("kill").args([signal, "--", &group]).status();
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = child.wait();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("dovecot exited with {status} at start:\n{}", self.log());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "dovecot's LMTP socket did not open in {START_TIMEOUT:?}:\n{}",
            self.log()
        );
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `dovecot --version`, or a clear failure when it is not installed.
fn dovecot_version() -> String {
    let output = Command::new("dovecot")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "these tests need a real Dovecot, and `dovecot --version` failed ({e}); \
             install it with `apt-get install -y dovecot-core dovecot-lmtpd` (scripts/setup does)"
            )
        });
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The user and group mail is stored as: ours, or `nobody` when we are root (Dovecot refuses
/// mail access as root).
fn mail_owner(dir: &Path) -> (u32, u32, String) {
    let meta = std::fs::metadata(dir).expect("stat tempdir");
    if meta.uid() == 0 {
        return (65534, 65534, "root".to_string());
    }
    let name = Command::new("id")
        .arg("-un")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    (meta.uid(), meta.gid(), name)
}

/// A Dovecot configuration with LMTP on `DIR/lmtp.sock` and Maildirs in `DIR/mail/USER`.
fn config(dir: &Path, version: &str) -> String {
    let d = dir.display();
    let (uid, gid, internal) = mail_owner(dir);
    let common = format!(
        "base_dir = {d}/run\n\
         state_dir = {d}/state\n\
         log_path = {d}/dovecot.log\n\
         protocols = lmtp\n\
         listen = 127.0.0.1\n\
         ssl = no\n\
         first_valid_uid = 0\n\
         first_valid_gid = 0\n\
         mail_uid = {uid}\n\
         mail_gid = {gid}\n\
         default_internal_user = {internal}\n\
         default_internal_group = {internal}\n\
         default_login_user = {internal}\n\
         service lmtp {{\n  unix_listener {d}/lmtp.sock {{\n    mode = 0666\n  }}\n}}\n"
    );
    if version.starts_with("2.3") || version.starts_with("2.2") {
        format!(
            "{common}\
             mail_location = maildir:{d}/mail/%u\n\
             passdb {{\n  driver = passwd-file\n  args = {d}/users\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = {d}/users\n}}\n"
        )
    } else {
        // Dovecot 2.4 renamed these settings (untested here: this machine has 2.3).
        format!(
            "dovecot_config_version = 2.4.0\n\
             dovecot_storage_version = 2.4.0\n\
             {common}\
             mail_driver = maildir\n\
             mail_path = {d}/mail/%{{user}}\n\
             passdb passwd-file {{\n  passwd_file_path = {d}/users\n}}\n\
             userdb passwd-file {{\n  passwd_file_path = {d}/users\n}}\n"
        )
    }
}

/// A Unix socket that forwards every connection to `target` and counts them.
pub struct CountingShim {
    /// Where to connect instead of `target`.
    pub path: PathBuf,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingShim {
    /// Listens at `path`, forwarding to `target`. Must run inside a tokio runtime.
    pub fn start(path: PathBuf, target: PathBuf) -> CountingShim {
        let listener = tokio::net::UnixListener::bind(&path).expect("bind shim");
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let task = tokio::spawn(async move {
            // Ends with the test's runtime (or `abort` on drop).
            while let Ok((mut upstream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let target = target.clone();
                tokio::spawn(async move {
                    if let Ok(mut downstream) = tokio::net::UnixStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut upstream, &mut downstream).await;
                    }
                });
            }
        });
        CountingShim {
            path,
            connections,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for CountingShim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Session facts of an SMTP client on loopback, as the driver makes them.
pub fn session() -> SessionInfo {
    SessionInfo::new(
        Peer::Tcp("127.0.0.1:40000".parse().expect("address")),
        "mx.samotop.test",
    )
}

/// An envelope for `MAIL FROM:<sender>`; pass `""` for the null sender.
pub fn envelope(sender: &str) -> Envelope {
    let line = format!("MAIL FROM:<{sender}>");
    let (path, params) = match parse_command(line.as_bytes()) {
        Ok(SmtpCommand::Mail(path, params)) => (path, params),
        other => panic!("bad test sender {sender:?}: {other:?}"),
    };
    let _: &ReversePath = &path;
    Envelope::new(path, params, "test-1".into())
}

/// A recipient as given at RCPT, delivered to `address` (as a recipient map may rewrite it).
pub fn recipient(path: &str, address: &str) -> Recipient {
    let line = format!("RCPT TO:<{path}>");
    let (path, params): (ForwardPath, _) = match parse_command(line.as_bytes()) {
        Ok(SmtpCommand::Rcpt(path, params)) => (path, params),
        other => panic!("bad test recipient {path:?}: {other:?}"),
    };
    let mut recipient = Recipient::new(path, params);
    recipient.address = address.to_string();
    recipient
}

/// Warnings logged so far by any test of this binary.
static WARNINGS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let line = format!("{} {}", record.level(), record.args());
            eprintln!("{line}");
            WARNINGS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(line);
        }
    }
    fn flush(&self) {}
}

/// Captures `warn!` and `error!` records (once per test binary; later calls do nothing).
pub fn capture_logs() {
    if log::set_logger(&Capture).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}

/// The warnings captured so far.
pub fn warnings() -> Vec<String> {
    WARNINGS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}
