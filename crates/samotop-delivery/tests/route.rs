//! `Route` and `Tee` through the real session driver, over SMTP and LMTP: each target gets
//! the message once for its recipients, mixed outcomes follow the protocol's rules, and a
//! client's retry after a mixed outcome delivers exactly once more.

use std::sync::{Arc, Mutex};

use samotop_core::{
    BoxDispatch, Capabilities, Driver, Envelope, MailDispatch, Outcomes, Peer, Protocol, Recipient,
    Refusal, SessionConfig, SessionInfo, Transaction, reply,
};
use samotop_delivery::{Pattern, Route, Tee};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every stored message: (recipients, data).
type Stored = Vec<(Vec<String>, Vec<u8>)>;

/// A backend that records what it stored and can be told to fail.
#[derive(Clone, Default)]
struct Store {
    name: &'static str,
    /// Every stored message: (recipients, data).
    stored: Arc<Mutex<Stored>>,
    /// Fail the commit of the next N messages with 451.
    fail_next: Arc<Mutex<usize>>,
    /// Refuse these recipients at RCPT with 550.
    refuse: Vec<&'static str>,
    caps: Option<Capabilities>,
    opened: Arc<Mutex<usize>>,
}

impl Store {
    fn new(name: &'static str) -> Self {
        Store {
            name,
            ..Store::default()
        }
    }
    fn messages(&self) -> Stored {
        self.stored.lock().expect("lock").clone()
    }
    fn fail(&self, n: usize) {
        *self.fail_next.lock().expect("lock") = n;
    }
}

struct StoreTx {
    store: Store,
    rcpts: Vec<String>,
    data: Vec<u8>,
}

impl MailDispatch for Store {
    type Transaction = StoreTx;
    fn capabilities(&self) -> Capabilities {
        self.caps.unwrap_or_default()
    }
    async fn open(&self, _: &SessionInfo, _: &Envelope) -> Result<StoreTx, Refusal> {
        *self.opened.lock().expect("lock") += 1;
        Ok(StoreTx {
            store: self.clone(),
            rcpts: Vec::new(),
            data: Vec::new(),
        })
    }
}

impl Transaction for StoreTx {
    async fn add_recipient(&mut self, r: &Recipient) -> Result<(), Refusal> {
        if self.store.refuse.contains(&r.address.as_str()) {
            return Err(reply::NO_SUCH_USER);
        }
        self.rcpts.push(r.address.clone());
        Ok(())
    }
    async fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        self.data.extend_from_slice(chunk);
        Ok(())
    }
    async fn commit(&mut self) -> Outcomes {
        {
            let mut fail = self.store.fail_next.lock().expect("lock");
            if *fail > 0 {
                *fail -= 1;
                return vec![Err(reply::DELIVERY_FAILED); self.rcpts.len()];
            }
        }
        let _ = self.store.name;
        self.store
            .stored
            .lock()
            .expect("lock")
            .push((self.rcpts.clone(), std::mem::take(&mut self.data)));
        vec![Ok(()); self.rcpts.len()]
    }
}

/// Runs one session with `script` and returns the reply codes after the greeting.
async fn session(dispatch: impl MailDispatch, protocol: Protocol, script: &str) -> Vec<u16> {
    let config = SessionConfig {
        protocol,
        ..SessionConfig::default()
    };
    let driver = Driver::new(dispatch, (), config);
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let info = SessionInfo::new(Peer::Stdio, "mx.test");
    let run = driver.run(server, info);
    let talk = async {
        client.write_all(script.as_bytes()).await.expect("write");
        let mut out = String::new();
        client.read_to_string(&mut out).await.expect("read");
        out
    };
    let (_, out) = tokio::join!(run, talk);
    out.lines()
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .filter_map(|l| l[..3].parse().ok())
        .skip(1) // the greeting
        .collect()
}

fn script(hello: &str, rcpts: &[&str]) -> String {
    let mut s = format!("{hello} client\r\nMAIL FROM:<a@example.com>\r\n");
    for r in rcpts {
        s.push_str(&format!("RCPT TO:<{r}>\r\n"));
    }
    s.push_str("DATA\r\nMessage-ID: <1@example.com>\r\nSubject: t\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    s
}

fn routes(hook: &Store, cmd: &Store, maildir: &Store) -> Route<BoxDispatch> {
    Route::new(BoxDispatch::new(maildir.clone()))
        .route(
            Pattern::parse("alerts+*@example.org").expect("glob"),
            BoxDispatch::new(hook.clone()),
        )
        .route(
            Pattern::parse(r"^run-.*@example\.org$").expect("regex"),
            BoxDispatch::new(cmd.clone()),
        )
}

#[tokio::test]
async fn each_route_gets_the_message_once_for_its_recipients() {
    let (hook, cmd, maildir) = (Store::new("hook"), Store::new("cmd"), Store::new("maildir"));
    let route = routes(&hook, &cmd, &maildir);
    let rcpts = [
        "alerts+env=prod@example.org",
        "bob@example.org",
        "run-a@example.org",
        "alerts+x@example.org",
        "carol@example.org",
    ];
    let codes = session(route, Protocol::Smtp, &script("EHLO", &rcpts)).await;
    assert_eq!(codes, [250, 250, 250, 250, 250, 250, 250, 354, 250, 221]);
    let h = hook.messages();
    assert_eq!(h.len(), 1);
    assert_eq!(
        h[0].0,
        ["alerts+env=prod@example.org", "alerts+x@example.org"]
    );
    assert!(h[0].1.ends_with(b"Subject: t\r\n\r\nbody\r\n"));
    assert_eq!(cmd.messages().len(), 1);
    assert_eq!(cmd.messages()[0].0, ["run-a@example.org"]);
    assert_eq!(
        maildir.messages()[0].0,
        ["bob@example.org", "carol@example.org"]
    );
    // A target without recipients was never opened.
    let idle = Store::new("idle");
    let route = Route::new(BoxDispatch::new(maildir.clone())).route(
        Pattern::parse("nobody@x").expect("p"),
        BoxDispatch::new(idle.clone()),
    );
    session(route, Protocol::Smtp, &script("EHLO", &["bob@example.org"])).await;
    assert_eq!(*idle.opened.lock().expect("lock"), 0);
}

#[tokio::test]
async fn smtp_mixed_outcome_is_451_and_the_retry_delivers_exactly_once_more() {
    let (hook, cmd, maildir) = (Store::new("hook"), Store::new("cmd"), Store::new("maildir"));
    let route = Arc::new(routes(&hook, &cmd, &maildir));
    let rcpts = [
        "alerts+a@example.org",
        "bob@example.org",
        "run-1@example.org",
    ];
    hook.fail(1);
    let codes = session(route.clone(), Protocol::Smtp, &script("EHLO", &rcpts)).await;
    assert_eq!(codes[codes.len() - 2], 451, "{codes:?}");
    assert_eq!(
        (
            hook.messages().len(),
            maildir.messages().len(),
            cmd.messages().len()
        ),
        (0, 1, 1)
    );
    // The client retries the same message: only the webhook gets it now.
    let codes = session(route.clone(), Protocol::Smtp, &script("EHLO", &rcpts)).await;
    assert_eq!(codes[codes.len() - 2], 250, "{codes:?}");
    assert_eq!(
        (
            hook.messages().len(),
            maildir.messages().len(),
            cmd.messages().len()
        ),
        (1, 1, 1)
    );
    // A new message (another header section) is not a retry.
    let other = script("EHLO", &rcpts).replace("Subject: t", "Subject: u");
    session(route.clone(), Protocol::Smtp, &other).await;
    assert_eq!(
        (
            hook.messages().len(),
            maildir.messages().len(),
            cmd.messages().len()
        ),
        (2, 2, 2)
    );
}

#[tokio::test]
async fn lmtp_answers_each_recipient_by_its_route() {
    let (hook, cmd, maildir) = (Store::new("hook"), Store::new("cmd"), Store::new("maildir"));
    let route = routes(&hook, &cmd, &maildir);
    hook.fail(1);
    let rcpts = [
        "alerts+a@example.org",
        "bob@example.org",
        "alerts+b@example.org",
    ];
    let codes = session(route, Protocol::Lmtp, &script("LHLO", &rcpts)).await;
    // LHLO, MAIL, 3 RCPT, 354, one reply per recipient in RCPT order, QUIT.
    assert_eq!(codes, [250, 250, 250, 250, 250, 354, 451, 250, 451, 221]);
    assert_eq!(maildir.messages().len(), 1);
    assert!(hook.messages().is_empty());
}

#[tokio::test]
async fn a_refusal_at_rcpt_comes_from_the_recipients_route() {
    let hook = Store {
        refuse: vec!["alerts+gone@example.org"],
        ..Store::new("hook")
    };
    let (cmd, maildir) = (Store::new("cmd"), Store::new("maildir"));
    let route = routes(&hook, &cmd, &maildir);
    let rcpts = ["alerts+gone@example.org", "bob@example.org"];
    let codes = session(route, Protocol::Smtp, &script("EHLO", &rcpts)).await;
    assert_eq!(codes, [250, 250, 550, 250, 354, 250, 221]);
    assert_eq!(maildir.messages()[0].0, ["bob@example.org"]);
}

#[tokio::test]
async fn tee_stores_in_all_or_answers_4xx_and_the_retry_skips_who_has_it() {
    let (a, b) = (Store::new("maildir"), Store::new("hook"));
    let tee = Arc::new(Tee::new(vec![a.clone(), b.clone()]));
    let codes = session(
        tee.clone(),
        Protocol::Smtp,
        &script("EHLO", &["x@example.org"]),
    )
    .await;
    assert_eq!(codes, [250, 250, 250, 354, 250, 221]);
    assert_eq!((a.messages().len(), b.messages().len()), (1, 1));
    b.fail(1);
    let msg = script("EHLO", &["y@example.org", "z@example.org"]);
    let codes = session(tee.clone(), Protocol::Smtp, &msg).await;
    assert_eq!(codes[codes.len() - 2], 451);
    assert_eq!((a.messages().len(), b.messages().len()), (2, 1));
    let codes = session(tee.clone(), Protocol::Smtp, &msg).await;
    assert_eq!(codes[codes.len() - 2], 250);
    assert_eq!(
        (a.messages().len(), b.messages().len()),
        (2, 2),
        "the maildir is not stored twice"
    );
}

#[tokio::test]
async fn tee_refuses_a_recipient_that_one_child_refuses_and_the_others_forget_it() {
    let a = Store::new("maildir");
    let b = Store {
        refuse: vec!["gone@example.org"],
        ..Store::new("lmtp")
    };
    let tee = Tee::new(vec![a.clone(), b.clone()]);
    let rcpts = ["one@example.org", "gone@example.org", "two@example.org"];
    let codes = session(tee, Protocol::Smtp, &script("EHLO", &rcpts)).await;
    assert_eq!(codes, [250, 250, 250, 550, 250, 354, 250, 221]);
    for s in [&a, &b] {
        assert_eq!(s.messages().len(), 1);
        assert_eq!(
            s.messages()[0].0,
            ["one@example.org", "two@example.org"],
            "{}",
            s.name
        );
    }
}

#[tokio::test]
async fn combinators_offer_what_every_child_carries() {
    let narrow = Store {
        caps: Some(Capabilities {
            binary_mime: false,
            max_message_size: Some(1000),
            ..Capabilities::default()
        }),
        ..Store::new("narrow")
    };
    let wide = Store::new("wide");
    let tee = Tee::new(vec![wide.clone(), narrow.clone()]);
    assert!(!tee.capabilities().binary_mime);
    assert_eq!(tee.capabilities().max_message_size, Some(1000));
    let route = Route::new(wide).route(Pattern::parse("a@b").expect("p"), narrow);
    assert!(!route.capabilities().binary_mime);
    assert!(route.capabilities().smtputf8);
}
