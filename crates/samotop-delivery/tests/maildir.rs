//! The Maildir backend driven through the `MailDispatch`/`Transaction` traits the way the
//! core's driver drives it: open → add_recipient → begin → write(trace header) →
//! write(chunks) → commit.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use samotop_core::{
    Envelope, MailDispatch, Outcomes, Peer, Protocol, Recipient, SessionInfo, Transaction, trace,
};
use samotop_delivery::{Layout, Maildir};
use samotop_parser::{ForwardPath, Host, MailParams, Mailbox, RcptParams, ReversePath};

/// A Maildir backend whose directories are made.
fn created(maildir: Maildir) -> Maildir {
    maildir.create_dirs().expect("create_dirs");
    maildir
}

fn mailbox(address: &str) -> Mailbox {
    let (local, domain) = address.rsplit_once('@').expect("address with @");
    Mailbox {
        local: local.to_string(),
        domain: Host::Domain(domain.to_string()),
    }
}

fn recipient(address: &str) -> Recipient {
    Recipient::new(
        ForwardPath::Mailbox(mailbox(address)),
        RcptParams::default(),
    )
}

fn info(protocol: Protocol) -> SessionInfo {
    let mut info = SessionInfo::new(Peer::Stdio, "mx.test");
    info.protocol = protocol;
    info
}

/// What one transaction did: the outcomes and the exact bytes that should be stored.
struct Delivery {
    outcomes: Outcomes,
    expected: Vec<u8>,
}

/// Drives one whole transaction like the core's driver does.
async fn deliver(
    maildir: &Maildir,
    protocol: Protocol,
    sender: ReversePath,
    recipients: &[&str],
    chunks: &[&[u8]],
) -> Delivery {
    let info = info(protocol);
    let mut env = Envelope::new(sender, MailParams::default(), format!("{}.1", info.id));
    let mut tx = maildir.open(&info, &env).await.expect("open");
    for r in recipients {
        let r = recipient(r);
        tx.add_recipient(&r).await.expect("recipient accepted");
        env.recipients.push(r);
    }
    tx.begin(&info, &env).await.expect("begin");
    let headers = trace::trace_headers(&info, &env, SystemTime::now());
    tx.write(headers.as_bytes()).await.expect("trace header");
    let mut expected = trace::return_path(&env).into_bytes();
    expected.extend_from_slice(headers.as_bytes());
    for chunk in chunks {
        tx.write(chunk).await.expect("chunk");
        expected.extend_from_slice(chunk);
    }
    let outcomes = tx.commit().await;
    Delivery { outcomes, expected }
}

fn sender() -> ReversePath {
    ReversePath::Mailbox(mailbox("sender@example.org"))
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

fn only_file(dir: &Path) -> Vec<u8> {
    let f = files(dir);
    assert_eq!(f.len(), 1, "{f:?} in {}", dir.display());
    fs::read(&f[0]).expect("read message")
}

const MESSAGE: &[u8] = b"Subject: hi\r\n\r\nHello \xff\xfe 8-bit, not UTF-8\r\n";

#[tokio::test]
async fn a_message_is_stored_byte_for_byte() {
    let root = tempfile::tempdir().expect("tempdir");
    let maildir = created(Maildir::new(root.path(), Layout::Single));
    for sub in ["tmp", "new", "cur"] {
        assert!(
            root.path().join(sub).is_dir(),
            "{sub} made by create_dirs()"
        );
    }
    let d = deliver(
        &maildir,
        Protocol::Smtp,
        sender(),
        &["a@example.com", "b@example.com"],
        &[MESSAGE],
    )
    .await;
    assert_eq!(d.outcomes, vec![Ok(()), Ok(())]);
    let stored = only_file(&root.path().join("new"));
    assert_eq!(stored, d.expected);
    assert!(stored.starts_with(b"Return-Path: <sender@example.org>\r\nReceived: from "));
    assert!(stored.ends_with(MESSAGE));
    assert!(files(&root.path().join("tmp")).is_empty());
    assert!(files(&root.path().join("cur")).is_empty());
}

#[tokio::test]
async fn file_names_follow_the_maildir_spec() {
    let root = tempfile::tempdir().expect("tempdir");
    let maildir = created(Maildir::new(root.path(), Layout::Single));
    deliver(
        &maildir,
        Protocol::Smtp,
        sender(),
        &["a@example.com"],
        &[MESSAGE],
    )
    .await;
    let f = files(&root.path().join("new"));
    let name = f[0]
        .file_name()
        .and_then(|n| n.to_str())
        .expect("utf-8 name");
    let (secs, rest) = name.split_once('.').expect("SECONDS.");
    assert!(secs.parse::<u64>().is_ok(), "{name}");
    let (unique, host) = rest.split_once('.').expect("UNIQUE.HOST");
    assert!(
        unique.starts_with('M') && unique.contains('P') && unique.contains('Q'),
        "{name}"
    );
    assert!(!host.is_empty() && !host.contains(['/', ':']), "{name}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&f[0]).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn the_null_sender_is_an_empty_return_path() {
    let root = tempfile::tempdir().expect("tempdir");
    let maildir = created(Maildir::new(root.path(), Layout::Single));
    let d = deliver(
        &maildir,
        Protocol::Smtp,
        ReversePath::Null,
        &["a@example.com"],
        &[MESSAGE],
    )
    .await;
    assert_eq!(d.outcomes, vec![Ok(())]);
    assert!(only_file(&root.path().join("new")).starts_with(b"Return-Path: <>\r\n"));
}

#[tokio::test]
async fn a_big_message_in_chunks_is_stored_exactly() {
    let root = tempfile::tempdir().expect("tempdir");
    let maildir = created(Maildir::new(root.path(), Layout::Single));
    // 3 MiB and a bit, in 64 KiB chunks and odd sizes, every byte value.
    let data: Vec<u8> = (0..3_200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let chunks: Vec<&[u8]> = data
        .chunks(65_536)
        .flat_map(|c| {
            let (a, b) = c.split_at(c.len().min(1000));
            [a, b]
        })
        .collect();
    let d = deliver(
        &maildir,
        Protocol::Smtp,
        sender(),
        &["a@example.com"],
        &chunks,
    )
    .await;
    assert_eq!(d.outcomes, vec![Ok(())]);
    assert!(
        only_file(&root.path().join("new")) == d.expected,
        "content differs"
    );
    assert!(files(&root.path().join("tmp")).is_empty());
}

#[tokio::test]
async fn abort_leaves_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let maildir = created(Maildir::new(root.path(), Layout::Single));
    let info = info(Protocol::Smtp);
    let mut env = Envelope::new(sender(), MailParams::default(), "id".into());
    let mut tx = maildir.open(&info, &env).await.expect("open");
    let r = recipient("a@example.com");
    tx.add_recipient(&r).await.expect("rcpt");
    env.recipients.push(r);
    tx.begin(&info, &env).await.expect("begin");
    assert_eq!(
        files(&root.path().join("tmp")).len(),
        1,
        "begin opens the file in tmp/"
    );
    let big = vec![b'x'; 200_000];
    tx.write(&big).await.expect("write"); // a write in flight
    tx.abort().await;
    assert!(files(&root.path().join("tmp")).is_empty());
    assert!(files(&root.path().join("new")).is_empty());
    // Nothing after an abort can deliver.
    assert!(tx.write(b"more").await.is_err());
    assert!(tx.commit().await.iter().all(|o| o.is_err()));
    assert!(files(&root.path().join("new")).is_empty());
}

#[tokio::test]
async fn a_dropped_transaction_leaves_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let maildir = created(Maildir::new(root.path(), Layout::Single));
    let info = info(Protocol::Smtp);
    let mut env = Envelope::new(sender(), MailParams::default(), "id".into());
    let mut tx = maildir.open(&info, &env).await.expect("open");
    let r = recipient("a@example.com");
    tx.add_recipient(&r).await.expect("rcpt");
    env.recipients.push(r);
    tx.begin(&info, &env).await.expect("begin");
    tx.write(&vec![b'y'; 100_000]).await.expect("write");
    drop(tx);
    // The removal runs on a blocking thread: wait for it, boundedly.
    for _ in 0..200 {
        if files(&root.path().join("tmp")).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(files(&root.path().join("tmp")).is_empty());
    assert!(files(&root.path().join("new")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_transactions_give_two_hundred_files() {
    let root = tempfile::tempdir().expect("tempdir");
    let maildir = created(Maildir::new(root.path(), Layout::Single));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let maildir = maildir.clone();
            tokio::spawn(async move {
                let body = format!("Subject: {i}\r\n\r\nmessage {i}\r\n");
                deliver(
                    &maildir,
                    Protocol::Smtp,
                    sender(),
                    &["a@example.com"],
                    &[body.as_bytes()],
                )
                .await
            })
        })
        .collect();
    let mut expected = Vec::new();
    for t in tasks {
        let d = t.await.expect("task");
        assert_eq!(d.outcomes, vec![Ok(())]);
        expected.push(d.expected);
    }
    let stored = files(&root.path().join("new"));
    assert_eq!(stored.len(), 200);
    assert!(files(&root.path().join("tmp")).is_empty());
    let mut contents: Vec<Vec<u8>> = stored.iter().map(|p| fs::read(p).expect("read")).collect();
    contents.sort();
    expected.sort();
    assert!(
        contents == expected,
        "stored messages differ from those sent"
    );
}

#[tokio::test]
async fn per_recipient_layout_makes_one_maildir_per_recipient() {
    let root = tempfile::tempdir().expect("tempdir");
    let maildir = created(Maildir::new(root.path(), Layout::PerRecipient));
    let rcpts = [
        "john@Example.COM",
        "jane@example.com",
        "john@example.com",
        "x@other.org",
    ];
    let d = deliver(&maildir, Protocol::Smtp, sender(), &rcpts, &[MESSAGE]).await;
    assert_eq!(d.outcomes, vec![Ok(()); 4]);
    for (domain, local) in [
        ("example.com", "john"),
        ("example.com", "jane"),
        ("other.org", "x"),
    ] {
        let dir = root.path().join(domain).join(local);
        for sub in ["tmp", "new", "cur"] {
            assert!(dir.join(sub).is_dir(), "{}/{sub}", dir.display());
        }
        // john@Example.COM and john@example.com share one copy.
        assert_eq!(only_file(&dir.join("new")), d.expected, "{}", dir.display());
        assert!(files(&dir.join("tmp")).is_empty());
    }
    assert_eq!(
        files(root.path()).len(),
        2,
        "only the domain directories at the top"
    );
}

#[tokio::test]
async fn per_recipient_layout_refuses_hostile_names_at_rcpt() {
    let root = tempfile::tempdir().expect("tempdir");
    let maildir = created(Maildir::new(root.path(), Layout::PerRecipient));
    let info = info(Protocol::Smtp);
    let env = Envelope::new(sender(), MailParams::default(), "id".into());
    let mut tx = maildir.open(&info, &env).await.expect("open");
    let long = "a".repeat(256);
    let hostile = [
        "../../etc/passwd".to_string(),
        "a/b".to_string(),
        "..".to_string(),
        ".".to_string(),
        "a\0b".to_string(),
        long,
    ];
    for local in &hostile {
        let mut r = recipient("x@example.com");
        r.address = format!("{local}@example.com");
        let reply = tx.add_recipient(&r).await.expect_err(local);
        assert_eq!(
            (reply.code(), reply.enhanced()),
            (550, Some([5, 1, 3])),
            "{local:?}"
        );
    }
    let mut r = recipient("x@example.com");
    r.address = "x@../..".into();
    assert!(tx.add_recipient(&r).await.is_err());
    r.address = "user".into(); // an address a map made, without @
    assert!(tx.add_recipient(&r).await.is_ok());
    tx.abort().await;
    assert_eq!(
        files(root.path()),
        Vec::<PathBuf>::new(),
        "nothing made for refused names"
    );
}

#[tokio::test]
async fn utf8_recipients_are_kept() {
    let root = tempfile::tempdir().expect("tempdir");
    let maildir = created(Maildir::new(root.path(), Layout::PerRecipient));
    let d = deliver(
        &maildir,
        Protocol::Smtp,
        sender(),
        &["jöhn@Bücher.example"],
        &[MESSAGE],
    )
    .await;
    assert_eq!(d.outcomes, vec![Ok(())]);
    assert_eq!(
        only_file(&root.path().join("bücher.example/jöhn/new")),
        d.expected
    );
}

#[tokio::test]
async fn a_broken_maildir_gives_451_and_leaves_tmp_clean() {
    let root = tempfile::tempdir().expect("tempdir");
    let maildir = created(Maildir::new(root.path(), Layout::Single));
    fs::remove_dir(root.path().join("new")).expect("rmdir new");
    fs::write(root.path().join("new"), b"a file where new/ should be").expect("file");
    let d = deliver(
        &maildir,
        Protocol::Smtp,
        sender(),
        &["a@example.com"],
        &[MESSAGE],
    )
    .await;
    let reply = d.outcomes[0].as_ref().expect_err("must fail");
    assert_eq!((reply.code(), reply.enhanced()), (451, Some([4, 3, 0])));
    assert!(files(&root.path().join("tmp")).is_empty());
}

#[tokio::test]
async fn create_dirs_fails_on_a_file_in_the_way() {
    let root = tempfile::tempdir().expect("tempdir");
    let file = root.path().join("file");
    fs::write(&file, b"x").expect("file");
    let maildir = Maildir::new(file.join("maildir"), Layout::Single);
    let err = maildir.create_dirs().expect_err("must fail");
    assert!(err.to_string().contains("cannot create directory"), "{err}");
}

#[tokio::test]
async fn missing_directories_are_made_again() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("mail");
    let maildir = created(Maildir::new(&dir, Layout::Single));
    fs::remove_dir_all(&dir).expect("operator removes it");
    let d = deliver(
        &maildir,
        Protocol::Smtp,
        sender(),
        &["a@example.com"],
        &[MESSAGE],
    )
    .await;
    assert_eq!(d.outcomes, vec![Ok(())]);
    assert_eq!(only_file(&dir.join("new")), d.expected);
}

/// Two recipients in two Maildirs, the second one broken.
async fn one_good_one_broken(protocol: Protocol) -> (tempfile::TempDir, Outcomes) {
    let root = tempfile::tempdir().expect("tempdir");
    let maildir = created(Maildir::new(root.path(), Layout::PerRecipient));
    let broken = root.path().join("example.com/broken");
    fs::create_dir_all(broken.join("tmp")).expect("tmp");
    fs::create_dir_all(broken.join("cur")).expect("cur");
    fs::write(broken.join("new"), b"not a directory").expect("new");
    let d = deliver(
        &maildir,
        protocol,
        sender(),
        &["good@example.com", "broken@example.com"],
        &[MESSAGE],
    )
    .await;
    assert!(files(&broken.join("tmp")).is_empty());
    assert!(files(&root.path().join("example.com/good/tmp")).is_empty());
    (root, d.outcomes)
}

#[tokio::test]
async fn over_smtp_one_failed_copy_fails_all_and_takes_the_others_back() {
    let (root, outcomes) = one_good_one_broken(Protocol::Smtp).await;
    assert_eq!(outcomes.len(), 2);
    for o in &outcomes {
        let reply = o.as_ref().expect_err("all fail");
        assert_eq!(reply.code(), 451);
    }
    assert!(
        files(&root.path().join("example.com/good/new")).is_empty(),
        "taken back"
    );
}

#[tokio::test]
async fn over_lmtp_each_recipient_gets_its_own_outcome() {
    let (root, outcomes) = one_good_one_broken(Protocol::Lmtp).await;
    assert_eq!(outcomes[0], Ok(()));
    assert_eq!(outcomes[1].as_ref().map_err(|r| r.code()), Err(451));
    assert_eq!(
        files(&root.path().join("example.com/good/new")).len(),
        1,
        "kept"
    );
}

#[tokio::test]
async fn a_failed_begin_is_sticky() {
    let root = tempfile::tempdir().expect("tempdir");
    let maildir = created(Maildir::new(root.path(), Layout::Single));
    fs::remove_dir(root.path().join("tmp")).expect("rmdir tmp");
    fs::write(root.path().join("tmp"), b"file").expect("file");
    let info = info(Protocol::Smtp);
    let mut env = Envelope::new(sender(), MailParams::default(), "id".into());
    let mut tx = maildir.open(&info, &env).await.expect("open");
    let r = recipient("a@example.com");
    tx.add_recipient(&r).await.expect("rcpt");
    env.recipients.push(r);
    let reply = tx.begin(&info, &env).await.expect_err("begin fails");
    assert_eq!((reply.code(), reply.enhanced()), (451, Some([4, 3, 0])));
    assert_eq!(tx.write(b"x").await, Err(reply.clone()));
    assert_eq!(tx.commit().await, vec![Err(reply)]);
    assert!(files(&root.path().join("new")).is_empty());
}

/// A message a check quarantined goes into the Maildir++ folder of each mailbox.
#[tokio::test]
async fn quarantined_messages_go_into_the_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let maildir = created(
        Maildir::new(dir.path(), Layout::PerRecipient)
            .quarantine_folder(".Junk")
            .expect("a Maildir++ folder"),
    );
    let info = info(Protocol::Smtp);
    let mut env = Envelope::new(sender(), MailParams::default(), "q.1".into());
    let mut tx = maildir.open(&info, &env).await.expect("open");
    let r = recipient("alice@example.org");
    tx.add_recipient(&r).await.expect("recipient");
    env.recipients.push(r);
    env.quarantine = true;
    tx.begin(&info, &env).await.expect("begin");
    tx.write(b"Subject: suspicious\r\n\r\nx\r\n")
        .await
        .expect("data");
    assert_eq!(tx.commit().await, vec![Ok(())]);
    let junk = dir.path().join("example.org/alice/.Junk/new");
    assert_eq!(fs::read_dir(&junk).expect("the folder").count(), 1);
    assert!(!dir.path().join("example.org/alice/new").exists());
    for bad in ["Junk", ".", "..", "./x", ".a/b", ""] {
        assert!(
            Maildir::new(dir.path(), Layout::Single)
                .quarantine_folder(bad)
                .is_err(),
            "{bad:?}"
        );
    }
}
