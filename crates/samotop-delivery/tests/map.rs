//! Recipient maps (`--map REGEX=REPLACE`) and the `Mapped` wrapper.

use std::sync::{Arc, Mutex};

use samotop_core::{
    Envelope, MailDispatch, Outcomes, Peer, Recipient, Refusal, SessionInfo, Transaction,
};
use samotop_delivery::{Error, Layout, Maildir, Mapped, RecipientMap};
use samotop_parser::{ForwardPath, Host, MailParams, Mailbox, RcptParams, ReversePath};

/// A Maildir backend whose directories are made.
fn created(maildir: Maildir) -> Maildir {
    maildir.create_dirs().expect("create_dirs");
    maildir
}

fn map(rules: &[&str]) -> RecipientMap {
    let rules: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
    RecipientMap::parse(&rules).expect("rules parse")
}

#[test]
fn rules_map_addresses() {
    // (rules, address, expected)
    let table: &[(&[&str], &str, &str)] = &[
        (&["(.*)@(.*)=$2-$1"], "user@example.com", "example.com-user"),
        // Anchored: the whole address must match.
        (
            &[r"a@example\.com=b"],
            "xa@example.com.evil",
            "xa@example.com.evil",
        ),
        (&[r"a@example\.com=b"], "a@example.com", "b"),
        // Case-insensitive by default, and (?-i) turns that off.
        (&[r"john@example\.com=jdoe"], "John@EXAMPLE.com", "jdoe"),
        (
            &[r"(?-i)john@example\.com=jdoe"],
            "John@example.com",
            "John@example.com",
        ),
        // First matching rule wins; no match keeps the address.
        (&[r"a@.*=first", r".*=second"], "a@x", "first"),
        (&[r"a@.*=first", r".*=second"], "b@x", "second"),
        (&[r"a@x=first"], "zzz", "zzz"),
        // Split at the last '=': the regex may contain '='.
        (
            &[r"prvs=[^=]+=(.*)=$1"],
            "prvs=1234abcd=user@example.com",
            "user@example.com",
        ),
        (&["a==b"], "a=", "b"),
        // Named groups, braces, a literal dollar.
        (
            &[r"(?P<user>[^@]+)@.*=${user}_x"],
            "bob@example.com",
            "bob_x",
        ),
        (&[r"(.*)@.*=${1}x"], "bob@example.com", "bobx"),
        (&[r"(.*)@.*=$$$1"], "bob@example.com", "$bob"),
        // UTF-8.
        (&[r"(.*)@bücher\.example=$1"], "jöhn@bücher.example", "jöhn"),
        (&[], "a@b", "a@b"),
    ];
    for (rules, address, expected) in table {
        assert_eq!(map(rules).map(address), *expected, "{rules:?} {address}");
    }
}

#[test]
fn bad_rules_are_errors_that_name_the_rule() {
    for rule in [
        "no-equals-sign",
        "=replacement",
        "regex=",
        "(unclosed=x",
        "a{99999999}=x",
    ] {
        match RecipientMap::parse(&[rule.to_string()]) {
            Err(e @ Error::BadMapRule { .. }) => {
                assert!(e.to_string().contains(rule), "{e}");
            }
            other => panic!("{rule:?} gave {other:?}"),
        }
    }
    assert!(RecipientMap::parse(&[]).expect("empty").is_empty());
}

/// Records what reaches it.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

struct Recording(Arc<Mutex<Vec<String>>>, usize);

impl MailDispatch for Recorder {
    type Transaction = Recording;
    async fn open(&self, _: &SessionInfo, _: &Envelope) -> Result<Recording, Refusal> {
        Ok(Recording(self.0.clone(), 0))
    }
}

impl Transaction for Recording {
    async fn add_recipient(&mut self, r: &Recipient) -> Result<(), Refusal> {
        self.0
            .lock()
            .expect("lock")
            .push(format!("rcpt {}", r.address));
        self.1 += 1;
        Ok(())
    }
    async fn begin(&mut self, _: &SessionInfo, env: &Envelope) -> Result<(), Refusal> {
        for r in &env.recipients {
            self.0
                .lock()
                .expect("lock")
                .push(format!("begin {}", r.address));
        }
        Ok(())
    }
    async fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        let text = String::from_utf8_lossy(chunk).into_owned();
        self.0.lock().expect("lock").push(format!("write {text}"));
        Ok(())
    }
    async fn commit(&mut self) -> Outcomes {
        vec![Ok(()); self.1]
    }
}

fn recipient(local: &str, domain: &str) -> Recipient {
    let mailbox = Mailbox {
        local: local.into(),
        domain: Host::Domain(domain.into()),
    };
    Recipient::new(ForwardPath::Mailbox(mailbox), RcptParams::default())
}

#[tokio::test]
async fn mapped_rewrites_the_address_and_passes_the_rest_through() {
    let recorder = Recorder::default();
    let dispatch = Mapped::new(map(&[r"(.*)@example\.com=$1"]), recorder.clone());
    let info = SessionInfo::new(Peer::Stdio, "mx.test");
    let mut env = Envelope::new(ReversePath::Null, MailParams::default(), "id".into());
    let mut tx = dispatch.open(&info, &env).await.expect("open");
    for r in [
        recipient("john", "example.com"),
        recipient("x", "other.org"),
    ] {
        tx.add_recipient(&r).await.expect("rcpt");
        env.recipients.push(r);
    }
    tx.begin(&info, &env).await.expect("begin");
    tx.write(b"data").await.expect("write");
    assert_eq!(tx.commit().await, vec![Ok(()), Ok(())]);
    assert_eq!(
        *recorder.0.lock().expect("lock"),
        [
            "rcpt john",
            "rcpt x@other.org",
            "begin john",
            "begin x@other.org",
            "write data"
        ]
    );
    // The path as the client gave it is untouched.
    assert_eq!(env.recipients[0].path.to_string(), "john@example.com");
}

#[tokio::test]
async fn mapped_into_a_per_recipient_maildir() {
    let root = tempfile::tempdir().expect("tempdir");
    let maildir = created(Maildir::new(root.path(), Layout::PerRecipient));
    let dispatch = Mapped::new(map(&["(.*)@(.*)=$1@mail.$2"]), maildir);
    let info = SessionInfo::new(Peer::Stdio, "mx.test");
    let mut env = Envelope::new(ReversePath::Null, MailParams::default(), "id".into());
    let mut tx = dispatch.open(&info, &env).await.expect("open");
    let r = recipient("john", "example.com");
    tx.add_recipient(&r).await.expect("rcpt");
    env.recipients.push(r);
    // A map cannot smuggle a path out either: the mapped name is checked.
    let dispatch2 = Mapped::new(
        map(&["(.*)=../$1"]),
        created(Maildir::new(root.path(), Layout::PerRecipient)),
    );
    let mut tx2 = dispatch2.open(&info, &env).await.expect("open");
    let refused = tx2
        .add_recipient(&recipient("a", "b"))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), 550);
    tx2.abort().await;

    tx.begin(&info, &env).await.expect("begin");
    tx.write(b"Subject: x\r\n\r\nbody\r\n")
        .await
        .expect("write");
    assert_eq!(tx.commit().await, vec![Ok(())]);
    let new = root.path().join("mail.example.com/john/new");
    assert_eq!(std::fs::read_dir(&new).expect("new/").count(), 1);
}
