//! A full disk answers `452 4.3.1`, never `Ok`, and leaves nothing behind. Uses a 1 MiB
//! tmpfs; skipped (with a message) where `mount` is not allowed.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use samotop_core::{
    Envelope, MailDispatch, Peer, Recipient, Refusal, SessionInfo, Transaction, trace,
};
use samotop_delivery::{Layout, Maildir};
use samotop_parser::{ForwardPath, Host, MailParams, Mailbox, RcptParams, ReversePath};

/// A 1 MiB tmpfs, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(test: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => Some(Tmpfs { dir }),
            _ => {
                eprintln!(
                    "SKIPPED {test}: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)"
                );
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("could not unmount {}", self.dir.path().display());
        }
    }
}

/// A Maildir backend whose directories are made.
fn created(maildir: Maildir) -> Maildir {
    maildir.create_dirs().expect("create_dirs");
    maildir
}

fn files(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn is_storage_full(reply: &Refusal) -> bool {
    reply.code() == 452 && reply.enhanced() == Some([4, 3, 1])
}

/// Opens a transaction for one recipient and begins the data.
async fn begin(maildir: &Maildir) -> impl Transaction {
    let info = SessionInfo::new(Peer::Stdio, "mx.test");
    let mailbox = Mailbox {
        local: "a".into(),
        domain: Host::Domain("example.com".into()),
    };
    let mut env = Envelope::new(ReversePath::Null, MailParams::default(), "id".into());
    let mut tx = maildir.open(&info, &env).await.expect("open");
    let r = Recipient::new(ForwardPath::Mailbox(mailbox), RcptParams::default());
    tx.add_recipient(&r).await.expect("rcpt");
    env.recipients.push(r);
    tx.begin(&info, &env).await.expect("begin");
    let headers = trace::trace_headers(&info, &env, SystemTime::now());
    tx.write(headers.as_bytes()).await.expect("trace header");
    tx
}

#[tokio::test]
async fn a_two_megabyte_message_on_a_one_megabyte_disk_gives_452() {
    let Some(fs) = Tmpfs::mount("a_two_megabyte_message_on_a_one_megabyte_disk_gives_452") else {
        return;
    };
    let maildir = created(Maildir::new(fs.path(), Layout::Single));
    let mut tx = begin(&maildir).await;
    let chunk = vec![b'x'; 65_536];
    let mut refused = None;
    for _ in 0..32 {
        if let Err(reply) = tx.write(&chunk).await {
            refused = Some(reply);
            break;
        }
    }
    // The core would stop here and abort; a commit must not say Ok either.
    let outcomes = tx.commit().await;
    assert_eq!(outcomes.len(), 1);
    let reply = outcomes[0].clone().expect_err("never Ok on a full disk");
    assert!(is_storage_full(&reply), "{reply}");
    let refused = refused.expect("a write fails before 2 MiB");
    assert!(is_storage_full(&refused), "{refused}");
    tx.abort().await;
    assert!(files(&fs.path().join("tmp")).is_empty(), "tmp/ is clean");
    assert!(files(&fs.path().join("new")).is_empty(), "nothing in new/");
    drop(tx);
}

#[tokio::test]
async fn a_small_message_on_a_full_disk_gives_452_at_commit() {
    let Some(fs) = Tmpfs::mount("a_small_message_on_a_full_disk_gives_452_at_commit") else {
        return;
    };
    let maildir = created(Maildir::new(fs.path(), Layout::Single));
    let mut tx = begin(&maildir).await;
    // Fill the disk.
    let mut filler = fs::File::create(fs.path().join("filler")).expect("filler");
    let block = vec![0u8; 4096];
    for _ in 0..1024 {
        if filler.write_all(&block).is_err() {
            break;
        }
    }
    drop(filler);
    tx.write(&vec![b'y'; 20_000])
        .await
        .expect("gathered, not yet written");
    let outcomes = tx.commit().await;
    let reply = outcomes[0].clone().expect_err("never Ok on a full disk");
    assert!(is_storage_full(&reply), "{reply}");
    assert!(files(&fs.path().join("tmp")).is_empty(), "tmp/ is clean");
    assert!(files(&fs.path().join("new")).is_empty(), "nothing in new/");
}
