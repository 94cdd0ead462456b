//! Delivery into Maildirs, exactly as cr.yp.to/proto/maildir.html says.
//!
//! For each copy of a message: a file is made in `tmp/` under a name unique across
//! processes and hosts (`SECONDS.M<usec>P<pid>Q<n>.HOST`), the message is written to it, the
//! file is `fsync`ed and renamed into `new/`, and `new/` is `fsync`ed. Only then does
//! [`commit`](samotop_core::Transaction::commit) answer `Ok`, so the session's final `250`
//! means the message survives a crash. Missing `tmp/`, `new/` and `cur/` (and the Maildir
//! itself) are made on the way, mode 0700; message files are mode 0600.
//!
//! What is stored is `Return-Path: <sender>` followed by exactly the bytes the session
//! wrote (its trace header fields, then the message), byte for byte.
//!
//! When many sessions commit at once, one `fsync` of `new/` serves every rename made
//! before it started: commits that arrive while it runs share the next one (group commit),
//! so the directory is written once per batch rather than once per message.
//!
//! File work runs on tokio's blocking threads, never on the reactor. Data is gathered into
//! a buffer and written once 64 KiB have come, one write in flight while the next chunk
//! arrives, so a message of any size costs about 256 KiB per transaction; a small message
//! costs two trips to a blocking thread (open at DATA, everything else at commit).
//!
//! Errors: any failure removes what this transaction put in `tmp/`, logs a `warn!` line
//! with the path and the OS error, and answers `452 4.3.1` when the disk or the quota is
//! full, else `451 4.3.0`. A recipient whose name cannot be a directory (per-recipient
//! layout) is refused at RCPT with `550 5.1.3`.

mod layout;
mod name;
mod store;
mod sync;

use std::collections::HashSet;
use std::mem;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use samotop_core::{
    Envelope, MailDispatch, Outcomes, Protocol, Recipient, Refusal, SessionInfo, Transaction,
    reply, trace,
};
use tokio::task::JoinHandle;

use crate::Error;
pub use layout::Layout;
use store::Copy;
use sync::DirSyncs;

/// Data is handed to a blocking thread once this much is gathered.
const FLUSH_AT: usize = 64 * 1024;

/// The Maildir backend: stores each message durably in one Maildir, or in one per
/// recipient (see [`Layout`]).
///
/// Cheap to clone; all clones deliver to the same directory.
///
/// ```no_run
/// use samotop_delivery::{Layout, Maildir};
/// let maildir = Maildir::new("/var/mail/samotop", Layout::PerRecipient);
/// maildir.create_dirs()?; // fail at start-up, not at the first message
/// # Ok::<(), samotop_delivery::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Maildir {
    config: Arc<Config>,
}

#[derive(Debug)]
struct Config {
    root: PathBuf,
    layout: Layout,
    /// Lower-case local parts for [`Layout::PerRecipient`].
    fold_case: bool,
    /// The Maildir++ folder for messages a check asked to quarantine (`.Junk`).
    quarantine: Option<String>,
    /// At most this many per-recipient mailboxes.
    max_mailboxes: Option<usize>,
    /// `fsync`s of `new/` shared by the commits running at the same time.
    syncs: DirSyncs,
    /// The mailboxes known (per-recipient): found at start, or made since; and whether their
    /// stale `tmp/` files were cleaned yet.
    mailboxes: Mutex<Mailboxes>,
}

/// The per-recipient mailboxes this process knows of.
#[derive(Debug, Default)]
struct Mailboxes {
    /// Every mailbox directory known to exist (for the cap).
    known: HashSet<PathBuf>,
    /// Those whose `tmp/` was cleaned of leftovers in this process.
    cleaned: HashSet<PathBuf>,
}

/// Mailboxes whose `tmp/` cleaning is remembered; past it the memory starts over (a mailbox
/// is then cleaned once more: cheap and harmless).
const MAX_REMEMBERED: usize = 100_000;

impl Maildir {
    /// A Maildir backend storing under `dir` (`--deliver maildir:DIR`) with `layout`
    /// (`--maildir-layout`, default [`Layout::Single`]). Nothing is touched on disk until
    /// the first message, or [`create_dirs`](Maildir::create_dirs).
    pub fn new(dir: impl Into<PathBuf>, layout: Layout) -> Self {
        Maildir {
            config: Arc::new(Config {
                root: dir.into(),
                layout,
                fold_case: false,
                quarantine: None,
                max_mailboxes: None,
                syncs: DirSyncs::default(),
                mailboxes: Mutex::new(Mailboxes::default()),
            }),
        }
    }

    fn config_mut(&mut self) -> &mut Config {
        // Setters run before the Maildir is shared; a clone made earlier keeps the old
        // settings.
        Arc::make_mut(&mut self.config)
    }

    /// [`Layout::PerRecipient`]: lower-case the local part too (`John@x` and `john@x` are
    /// one mailbox; `--maildir-fold-case`). Default off: RFC 5321 2.4 lets local parts be
    /// case-sensitive.
    pub fn fold_case(mut self, fold: bool) -> Self {
        self.config_mut().fold_case = fold;
        self
    }

    /// Messages a check asked to quarantine ([`Envelope::quarantine`], e.g. DMARC
    /// `p=quarantine` under `--dmarc enforce`) go into this Maildir++ folder of each mailbox
    /// (`.Junk`: `DIR/.Junk/new/`, which Dovecot shows as the folder `Junk`), instead of the
    /// inbox. The name must start with `.` and hold no `/`. Default: none (the inbox).
    ///
    /// # Errors
    ///
    /// [`Error::BadMailboxName`] for a name that is not a Maildir++ folder.
    pub fn quarantine_folder(mut self, folder: &str) -> Result<Self, Error> {
        let ok = folder.len() > 1
            && folder.starts_with('.')
            && folder != ".."
            && !folder.contains(['/', '\\'])
            && !folder.chars().any(char::is_control);
        if !ok {
            return Err(Error::BadMailboxName {
                address: folder.to_string(),
                reason: "a quarantine folder is a Maildir++ folder: '.' and a name, no '/'",
            });
        }
        self.config_mut().quarantine = Some(folder.to_string());
        Ok(self)
    }

    /// [`Layout::PerRecipient`]: at most this many mailboxes (those found at start count).
    /// A recipient that would need one more gets `452 4.3.1` at RCPT time. Default: no cap;
    /// the `samotop` binary wants this or `--accept-domain` for the per-recipient layout, so
    /// that anyone cannot make mailboxes without end.
    pub fn max_mailboxes(mut self, max: usize) -> Self {
        self.config_mut().max_mailboxes = Some(max);
        self
    }

    /// The directory given to [`new`](Maildir::new).
    pub fn dir(&self) -> &Path {
        &self.config.root
    }

    /// The layout given to [`new`](Maildir::new).
    pub fn layout(&self) -> Layout {
        self.config.layout
    }

    /// The Maildir that a delivery address's copy goes to: the directory itself for
    /// [`Layout::Single`], `DIR/<domain>/<local>` for [`Layout::PerRecipient`].
    ///
    /// An address that cannot be a safe directory name is [`Error::BadMailboxName`], whose
    /// reply is `550 5.1.3`.
    ///
    /// ```
    /// use samotop_delivery::{Layout, Maildir};
    /// let m = Maildir::new("/mail", Layout::PerRecipient);
    /// assert_eq!(m.mailbox_dir("Jo@Example.ORG")?, std::path::Path::new("/mail/example.org/Jo"));
    /// assert_eq!(m.mailbox_dir("../../etc/passwd@x").unwrap_err().reply().code(), 550);
    /// # Ok::<(), samotop_delivery::Error>(())
    /// ```
    pub fn mailbox_dir(&self, address: &str) -> Result<PathBuf, Error> {
        let c = &self.config;
        layout::mailbox_dir(&c.root, c.layout, c.fold_case, address)
    }

    /// Makes the directory now (and, for [`Layout::Single`], its `tmp/`, `new/`, `cur/`),
    /// so that a wrong path or permission shows at start-up ([`Error::CreateDir`]), not at
    /// the first message. Blocking, briefly; optional, since delivery makes whatever is
    /// missing.
    pub fn create_dirs(&self) -> Result<(), Error> {
        if self.config.layout == Layout::Single {
            let removed = store::clean_tmp(&self.config.root.join("tmp"), STALE_TMP);
            if removed > 0 {
                log::info!(
                    "removed {removed} stale files (older than 36 hours) from {}/tmp",
                    self.config.root.display()
                );
            }
        }
        match self.config.layout {
            Layout::Single => store::make_maildir(&self.config.root),
            Layout::PerRecipient => {
                std::fs::create_dir_all(&self.config.root).map_err(|source| Error::CreateDir {
                    path: self.config.root.clone(),
                    source,
                })?;
                let found = store::mailboxes(&self.config.root);
                log::info!(
                    "{} mailboxes under {}",
                    found.len(),
                    self.config.root.display()
                );
                self.config.mailboxes().known.extend(found);
                Ok(())
            }
        }
    }
}

impl Clone for Config {
    /// The same settings, with fresh shared state (directory syncs, known mailboxes).
    fn clone(&self) -> Self {
        Config {
            root: self.root.clone(),
            layout: self.layout,
            fold_case: self.fold_case,
            quarantine: self.quarantine.clone(),
            max_mailboxes: self.max_mailboxes,
            syncs: DirSyncs::default(),
            mailboxes: Mutex::new(Mailboxes::default()),
        }
    }
}

impl Config {
    fn mailboxes(&self) -> std::sync::MutexGuard<'_, Mailboxes> {
        // Inserts only: a panic elsewhere cannot leave the sets inconsistent.
        self.mailboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place for a per-recipient mailbox, or says it would be one too many.
    fn admit_mailbox(&self, dir: &Path) -> Result<(), Error> {
        let mut boxes = self.mailboxes();
        if boxes.known.contains(dir) {
            return Ok(());
        }
        if let Some(max) = self.max_mailboxes {
            if boxes.known.len() >= max {
                return Err(Error::MailboxLimit { max });
            }
        }
        boxes.known.insert(dir.to_path_buf());
        Ok(())
    }

    /// The mailboxes among `dirs` whose `tmp/` this process has not cleaned yet (marked
    /// cleaned now).
    fn to_clean(&self, dirs: &[PathBuf]) -> Vec<PathBuf> {
        let mut boxes = self.mailboxes();
        if boxes.cleaned.len() > MAX_REMEMBERED {
            boxes.cleaned.clear();
        }
        dirs.iter()
            .filter(|d| boxes.cleaned.insert((*d).clone()))
            .cloned()
            .collect()
    }
}

/// Files in `tmp/` older than this are leftovers of a crash (the Maildir specification's
/// 36 hours): no delivery takes that long.
const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(36 * 3600);

impl MailDispatch for Maildir {
    type Transaction = MaildirTransaction;

    async fn open(
        &self,
        _: &SessionInfo,
        envelope: &Envelope,
    ) -> Result<Self::Transaction, Refusal> {
        Ok(MaildirTransaction {
            config: self.config.clone(),
            id: envelope.id.clone(),
            dirs: Vec::new(),
            targets: Vec::new(),
            lmtp: false,
            begun: false,
            failed: None,
            buf: Vec::new(),
            spare: Vec::new(),
            copies: None,
            in_flight: None,
            tmp: Vec::new(),
        })
    }
}

/// A blocking write of gathered data: gives back the files and the emptied buffer.
type Flush = JoinHandle<(Vec<Copy>, Vec<u8>, Result<(), Error>)>;

/// One message on its way into [`Maildir`]: made by [`Maildir`]'s `open`.
///
/// Over SMTP a commit is all or nothing: if one copy fails, the copies already in `new/`
/// are taken back where possible and every recipient gets the failure (a retry may
/// duplicate, never lose). Over LMTP each recipient gets its own copy's outcome.
/// Dropped without a commit, it removes its files from `tmp/`.
#[derive(Debug)]
pub struct MaildirTransaction {
    config: Arc<Config>,
    /// The envelope id, for log lines.
    id: String,
    /// Distinct Maildirs, one copy each.
    dirs: Vec<PathBuf>,
    /// Per accepted recipient, in RCPT order: its index in `dirs`.
    targets: Vec<usize>,
    /// Per-recipient outcomes (LMTP) rather than all or nothing (SMTP).
    lmtp: bool,
    begun: bool,
    /// Sticky: once set, every later call answers it and does no work.
    failed: Option<Refusal>,
    /// Data not yet handed to a blocking thread.
    buf: Vec<u8>,
    /// The other buffer, while `buf`'s twin is being written.
    spare: Vec<u8>,
    /// The open files, when no write is in flight.
    copies: Option<Vec<Copy>>,
    in_flight: Option<Flush>,
    /// Our files in `tmp/`, until they are renamed or removed.
    tmp: Vec<PathBuf>,
}

impl MaildirTransaction {
    /// Hands the gathered data to a blocking thread, after the previous write is done.
    async fn flush(&mut self) -> Result<(), Refusal> {
        let mut copies = self.reclaim().await?;
        let mut data = mem::replace(&mut self.buf, mem::take(&mut self.spare));
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            let result = store::write_all(&mut copies, &data);
            data.clear();
            (copies, data, result)
        }));
        Ok(())
    }

    /// Waits for the write in flight, if any, and takes the files.
    async fn reclaim(&mut self) -> Result<Vec<Copy>, Refusal> {
        if let Some(task) = self.in_flight.take() {
            match task.await {
                Ok((copies, spare, result)) => {
                    self.copies = Some(copies);
                    self.spare = spare;
                    if let Err(e) = result {
                        return Err(self.fail(e).await);
                    }
                }
                Err(e) => {
                    let reason = e.to_string();
                    return Err(self.fail(Error::Task { reason }).await);
                }
            }
        }
        match self.copies.take() {
            Some(copies) => Ok(copies),
            None => {
                let reason = "no open files".to_string();
                Err(self.fail(Error::Task { reason }).await)
            }
        }
    }

    /// Records a failure (sticky), logs it, removes our files; the reply to give.
    async fn fail(&mut self, error: Error) -> Refusal {
        let reply = error.reply();
        log::warn!("maildir {}: {error}; replying {reply}", self.id);
        self.failed = Some(reply.clone());
        self.cleanup().await;
        reply
    }

    /// Waits for the write in flight, closes and removes our files in `tmp/`.
    async fn cleanup(&mut self) {
        if let Some(task) = self.in_flight.take() {
            if let Ok((copies, _, _)) = task.await {
                self.copies = Some(copies);
            }
        }
        if self.tmp.is_empty() && self.copies.is_none() {
            return;
        }
        let copies = self.copies.take();
        let paths = self.tmp.clone();
        let removed = tokio::task::spawn_blocking(move || {
            drop(copies);
            store::remove_all(&paths);
        })
        .await;
        if removed.is_ok() {
            self.tmp.clear();
        }
    }

    /// Every recipient's outcome is this failure.
    fn all(&self, reply: Refusal) -> Outcomes {
        vec![Err(reply); self.targets.len()]
    }
}

impl Transaction for MaildirTransaction {
    /// Accepts any recipient for [`Layout::Single`]. For [`Layout::PerRecipient`], works out
    /// the recipient's Maildir from `recipient.address`; `550 5.1.3` if it cannot be one.
    async fn add_recipient(&mut self, recipient: &Recipient) -> Result<(), Refusal> {
        if self.begun {
            return Err(reply::DELIVERY_FAILED);
        }
        let c = &self.config;
        let dir = layout::mailbox_dir(&c.root, c.layout, c.fold_case, &recipient.address)
            .and_then(|dir| {
                if c.layout == Layout::PerRecipient {
                    c.admit_mailbox(&dir)?;
                }
                Ok(dir)
            })
            .map_err(|e| {
                log::info!("maildir {}: refusing recipient: {e}", self.id);
                e.reply()
            })?;
        let index = match self.dirs.iter().position(|d| *d == dir) {
            Some(index) => index,
            None => {
                self.dirs.push(dir);
                self.dirs.len() - 1
            }
        };
        self.targets.push(index);
        Ok(())
    }

    /// Opens one file in `tmp/` per distinct Maildir (making missing directories) and
    /// starts the message with `Return-Path:`.
    async fn begin(&mut self, info: &SessionInfo, envelope: &Envelope) -> Result<(), Refusal> {
        if let Some(reply) = &self.failed {
            return Err(reply.clone());
        }
        if self.begun || self.dirs.is_empty() {
            return Err(reply::DELIVERY_FAILED);
        }
        self.begun = true;
        self.lmtp = info.protocol == Protocol::Lmtp;
        if let (true, Some(folder)) = (envelope.quarantine, &self.config.quarantine) {
            log::info!("maildir {}: quarantined into {folder}", self.id);
            self.dirs = self.dirs.iter().map(|d| d.join(folder)).collect();
        }
        let dirs = self.dirs.clone();
        let clean = match self.config.layout {
            Layout::PerRecipient => self.config.to_clean(&dirs),
            Layout::Single => Vec::new(),
        };
        let open = move || {
            for dir in &clean {
                let removed = store::clean_tmp(&dir.join("tmp"), STALE_TMP);
                if removed > 0 {
                    log::info!(
                        "removed {removed} stale files (older than 36 hours) from {}/tmp",
                        dir.display()
                    );
                }
            }
            store::open_all(&dirs)
        };
        match tokio::task::spawn_blocking(open).await {
            Ok(Ok(copies)) => {
                self.tmp = copies.iter().map(Copy::tmp_path).collect();
                self.copies = Some(copies);
                self.buf
                    .extend_from_slice(trace::return_path(envelope).as_bytes());
                Ok(())
            }
            Ok(Err(e)) => Err(self.fail(e).await),
            Err(e) => {
                let reason = e.to_string();
                Err(self.fail(Error::Task { reason }).await)
            }
        }
    }

    /// Gathers the chunk; writes once 64 KiB are gathered. A write error is answered here or
    /// at the next call (`451 4.3.0`, or `452 4.3.1` when the disk is full).
    async fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        if let Some(reply) = &self.failed {
            return Err(reply.clone());
        }
        if !self.begun {
            return Err(reply::DELIVERY_FAILED);
        }
        self.buf.extend_from_slice(chunk);
        if self.buf.len() >= FLUSH_AT {
            self.flush().await
        } else {
            Ok(())
        }
    }

    /// Writes the rest, `fsync`s, renames into `new/`, `fsync`s `new/`; `Ok` per recipient
    /// only after that.
    async fn commit(&mut self) -> Outcomes {
        if let Some(reply) = self.failed.clone() {
            self.cleanup().await;
            return self.all(reply);
        }
        if !self.begun {
            log::warn!("maildir {}: commit without data", self.id);
            return self.all(reply::DELIVERY_FAILED);
        }
        let copies = match self.reclaim().await {
            Ok(copies) => copies,
            Err(reply) => return self.all(reply),
        };
        let tail = mem::take(&mut self.buf);
        let config = self.config.clone();
        let deliver = move || store::deliver(&config.syncs, copies, &tail);
        let results = match tokio::task::spawn_blocking(deliver).await {
            Ok(results) => results,
            Err(e) => {
                let reason = e.to_string();
                let reply = self.fail(Error::Task { reason }).await;
                return self.all(reply);
            }
        };
        // `deliver` left nothing of ours in tmp/.
        self.tmp.clear();
        self.failed = Some(reply::DELIVERY_FAILED); // a second commit must not answer Ok
        let mut copies: Vec<Result<(), Refusal>> = Vec::with_capacity(results.len());
        let mut delivered = Vec::new();
        for result in results {
            match result {
                Ok(path) => {
                    log::debug!("maildir {}: delivered {}", self.id, path.display());
                    delivered.push(path);
                    copies.push(Ok(()));
                }
                Err(e) => {
                    let reply = e.reply();
                    log::warn!("maildir {}: {e}; replying {reply}", self.id);
                    copies.push(Err(reply));
                }
            }
        }
        let first_failure = copies.iter().find_map(|c| c.as_ref().err()).cloned();
        if let (Some(reply), false) = (first_failure, self.lmtp) {
            if !delivered.is_empty() {
                log::warn!(
                    "maildir {}: taking back {} delivered copies: another copy failed",
                    self.id,
                    delivered.len()
                );
                let _ = tokio::task::spawn_blocking(move || store::remove_all(&delivered)).await;
            }
            return self.all(reply);
        }
        self.targets.iter().map(|&i| copies[i].clone()).collect()
    }

    /// Removes this transaction's files from `tmp/`.
    async fn abort(&mut self) {
        self.failed = Some(reply::DELIVERY_FAILED);
        self.cleanup().await;
    }
}

impl Drop for MaildirTransaction {
    /// The safety net: files still in `tmp/` (no commit, no abort) are removed.
    fn drop(&mut self) {
        if self.tmp.is_empty() {
            return;
        }
        let paths = mem::take(&mut self.tmp);
        let copies = self.copies.take();
        let job = move || {
            drop(copies);
            store::remove_all(&paths);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(job)),
            Err(_) => job(),
        }
    }
}
