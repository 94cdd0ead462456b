//! The store's scenarios, run against each database: `tests/store.rs` (SQLite) and
//! `tests/postgres.rs` (PostgreSQL). Each takes an open [`Inbox`] and goes through the calls a
//! session makes, then reads back: the envelope, one inbox per address (Bcc kept apart),
//! search, wait with a cursor, delete, read state, pruning, and a message that does not
//! parse.

use std::sync::Arc;
use std::time::Duration;

use samotop_core::{
    AuthResult, Envelope, MailDispatch, Peer, Recipient, SessionInfo, TlsInfo, Transaction,
};
use samotop_inbox::{Filter, Inbox, Options, Query, Retention};
use samotop_parser::{ForwardPath, Host, MailParams, Mailbox, RcptParams, ReversePath};

pub fn mailbox(address: &str) -> Mailbox {
    let (local, domain) = address.split_once('@').expect("an address");
    Mailbox {
        local: local.into(),
        domain: Host::Domain(domain.into()),
    }
}

pub fn info() -> SessionInfo {
    let mut info = SessionInfo::new(
        Peer::Tcp("192.0.2.7:4000".parse().expect("addr")),
        "mx.test",
    );
    info.helo = Some(Host::Domain("client.test".into()));
    info.extended = true;
    info.tls = Some(TlsInfo {
        version: "TLS1.3".into(),
        cipher: "TLS13_AES_128_GCM_SHA256".into(),
    });
    info
}

pub async fn deliver(
    inbox: &Inbox,
    from: &str,
    to: &[&str],
    data: &[u8],
) -> Vec<Result<(), String>> {
    let info = info();
    let sender = ReversePath::Mailbox(mailbox(from));
    let mut envelope = Envelope::new(sender, MailParams::default(), "T1".into());
    envelope
        .auth
        .push(AuthResult::new("spf", "pass").property("smtp.mailfrom", "example.com"));
    let mut tx = inbox.open(&info, &envelope).await.expect("open");
    for rcpt in to {
        let r = Recipient::new(ForwardPath::Mailbox(mailbox(rcpt)), RcptParams::default());
        tx.add_recipient(&r).await.expect("rcpt");
        envelope.recipients.push(r);
    }
    tx.begin(&info, &envelope).await.expect("begin");
    for chunk in data.chunks(7000) {
        tx.write(chunk).await.expect("write");
    }
    tx.commit()
        .await
        .into_iter()
        .map(|r| r.map_err(|e| e.to_string()))
        .collect()
}

/// One message from `a@example.com` to `to` (envelope and `To:`), its outcome.
pub async fn send(inbox: &Inbox, to: &str, subject: &str, body: &str) -> Vec<Result<(), String>> {
    deliver(inbox, "a@example.com", &[to], &message(subject, to, body)).await
}

pub fn message(subject: &str, to: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Alice <alice@example.com>\r\nTo: {to}\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.com>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

pub async fn wait_for(
    inbox: &Inbox,
    mailbox: Option<&str>,
    q: &str,
) -> Vec<samotop_inbox::Summary> {
    let query = Query::parse(q).expect("query");
    inbox
        .wait(mailbox, &query, 0, 100, Duration::from_secs(20))
        .await
        .expect("wait")
        .messages
}

/// How many messages `mailbox`'s inbox lists.
async fn total(inbox: &Inbox, mailbox: &str) -> u64 {
    let filter = Filter {
        mailbox: Some(mailbox.into()),
        limit: 50,
        ..Filter::default()
    };
    inbox.list(&filter).await.expect("list").total
}

/// Deletes `mailbox`'s copy of message `id`; how many copies went.
async fn delete_copy(inbox: &Inbox, id: &str, mailbox: &str) -> u64 {
    let ids = [id.to_string()];
    inbox
        .delete(Some(&ids), Some(mailbox))
        .await
        .expect("delete")
}

/// The raw message byte for byte, the envelope and the parsed fields.
pub async fn raw_envelope_and_fields_are_kept(inbox: &Inbox) {
    let data = message(
        "hello",
        "Bob <bob@example.org>",
        "Hi \u{e9} there \u{1F600}",
    );
    let mut data = data;
    data.extend_from_slice(b"8bit: \xff\xfe bytes\r\n");
    let out = deliver(
        inbox,
        "alice@example.com",
        &["bob@example.org", "Carol@Example.NET"],
        &data,
    )
    .await;
    assert_eq!(out, vec![Ok(()), Ok(())]);
    let found = wait_for(inbox, None, "subject:hello").await;
    assert_eq!(found.len(), 1);
    let s = &found[0];
    assert_eq!(s.from.address, "alice@example.com");
    assert_eq!(s.to[0].name, "Bob");
    assert_eq!(s.message_id, "hello@example.com");
    assert!(s.snippet.starts_with("Hi \u{e9} there"), "{}", s.snippet);
    assert_eq!(s.size, data.len() as u64);
    assert!(s.parsed);
    let raw = inbox.raw(&s.id, None).await.expect("raw").expect("exists");
    assert_eq!(raw, data, "byte for byte, 8-bit included");
    let env = inbox
        .envelope(&s.id, None)
        .await
        .expect("env")
        .expect("exists");
    assert_eq!(env.mail_from, "alice@example.com");
    assert_eq!(env.recipients, ["bob@example.org", "Carol@Example.NET"]);
    assert_eq!(env.helo, "client.test");
    assert_eq!(env.peer, "192.0.2.7");
    assert_eq!(env.protocol, "ESMTPS");
    assert_eq!(env.tls_version, "TLS1.3");
    assert_eq!(env.tls_cipher, "TLS13_AES_128_GCM_SHA256");
    assert_eq!(env.auth[0].method, "spf");
    assert_eq!(env.auth[0].result, "pass");
    assert_eq!(
        inbox
            .summary("latest", None)
            .await
            .expect("latest")
            .expect("one")
            .id,
        s.id
    );
}

/// One inbox per envelope address; a Bcc recipient sees its copy and nobody sees the others; a copy goes alone, the message with its last copy.
pub async fn one_inbox_per_address_and_bcc_stays_private(inbox: &Inbox) {
    // To: bob; Bcc (envelope only): eve.
    let data = message("secret", "bob@example.org", "for bob");
    deliver(
        inbox,
        "alice@example.com",
        &["bob@example.org", "eve@example.org"],
        &data,
    )
    .await;
    deliver(
        inbox,
        "alice@example.com",
        &["zed@example.org"],
        &message("other", "zed@example.org", "x"),
    )
    .await;
    wait_for(inbox, None, "subject:other").await;
    let page = |m: &str| Filter {
        mailbox: Some(m.into()),
        limit: 50,
        ..Filter::default()
    };
    let eve = inbox.list(&page("EVE@example.org")).await.expect("list");
    assert_eq!(eve.total, 1);
    assert_eq!(eve.messages[0].subject, "secret");
    assert!(
        eve.messages[0].bcc.is_empty(),
        "envelope recipients are not pushed into Bcc"
    );
    let id = eve.messages[0].id.clone();
    let env = inbox
        .envelope(&id, Some("eve@example.org"))
        .await
        .expect("env")
        .expect("eve's");
    assert_eq!(env.recipients, ["eve@example.org"], "eve does not see bob");
    let env = inbox
        .envelope(&id, Some("bob@example.org"))
        .await
        .expect("env")
        .expect("bob's");
    assert_eq!(env.recipients, ["bob@example.org"], "bob does not see eve");
    assert!(
        inbox
            .summary(&id, Some("zed@example.org"))
            .await
            .expect("summary")
            .is_none()
    );
    assert_eq!(total(inbox, "zed@example.org").await, 1);
    assert_eq!(total(inbox, "nobody@example.org").await, 0);
    // Bob deletes his copy: eve keeps hers.
    assert_eq!(delete_copy(inbox, &id, "bob@example.org").await, 1);
    assert_eq!(total(inbox, "bob@example.org").await, 0);
    assert_eq!(total(inbox, "eve@example.org").await, 1);
    assert_eq!(delete_copy(inbox, &id, "eve@example.org").await, 1);
    assert!(
        inbox.summary(&id, None).await.expect("summary").is_none(),
        "gone with its last copy"
    );
}

/// Mailpit's search syntax and `rcpt:` over the full-text index; read state; delete by search.
/// How many messages match the search `q` (the capped count of a list).
pub async fn count(inbox: &Inbox, q: &str) -> u64 {
    let f = Filter {
        query: Query::parse(q).expect("query"),
        limit: 50,
        ..Filter::default()
    };
    inbox.list(&f).await.expect("list").messages_count
}

pub async fn search_syntax_over_the_index(inbox: &Inbox) {
    send(inbox, "x@one.test", "quarterly report", "numbers inside").await;
    send(inbox, "y@two.test", "lunch", "pizza today").await;
    let att = b"From: b@example.com\r\nTo: z@two.test\r\nSubject: with file\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\nContent-Type: text/plain\r\n\r\nsee file\r\n\
--q\r\nContent-Type: text/csv; name=data.csv\r\nContent-Disposition: attachment; filename=data.csv\r\n\r\n\
a,b\r\n--q--\r\n";
    deliver(inbox, "b@example.com", &["z@two.test"], att).await;
    wait_for(inbox, None, "subject:file").await;
    assert_eq!(count(inbox, "").await, 3);
    assert_eq!(count(inbox, "report").await, 1);
    assert_eq!(count(inbox, "repo").await, 1, "prefix");
    assert_eq!(count(inbox, "pizza").await, 1, "body text");
    assert_eq!(count(inbox, "-pizza").await, 2);
    // Negations alone (one merge of ids), and after positive terms (inside the MATCH).
    assert_eq!(count(inbox, "-pizza -report").await, 1);
    assert_eq!(count(inbox, "-pizza -subject:file").await, 1);
    assert_eq!(count(inbox, "-subject:lunch -has:attachment").await, 1);
    assert_eq!(count(inbox, "-pizza rcpt:two.test").await, 1);
    assert_eq!(count(inbox, "-nowhere").await, 3);
    assert_eq!(count(inbox, "-pizza -report -file").await, 0, "none left");
    let oldest = inbox
        .list(&Filter {
            query: Query::parse("-pizza -file").expect("query"),
            ..Filter::default()
        })
        .await
        .expect("list");
    let got: Vec<&str> = oldest.messages.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(got, ["quarterly report"], "the one left is the oldest");
    assert_eq!(oldest.messages_count, 1);
    assert_eq!(count(inbox, "report -pizza").await, 1);
    assert_eq!(count(inbox, "numbers -report").await, 0);
    assert_eq!(count(inbox, "numbers -subject:lunch -nowhere").await, 1);
    for (mailbox, q, subjects) in [
        ("y@two.test", "-pizza", vec![]),
        ("z@two.test", "-pizza", vec!["with file"]),
        ("Z@two.test", "-pizza is:unread", vec!["with file"]),
        ("x@one.test", "-lunch", vec!["quarterly report"]),
    ] {
        let page = inbox
            .list(&Filter {
                mailbox: Some(mailbox.into()),
                query: Query::parse(q).expect("query"),
                limit: 50,
                ..Filter::default()
            })
            .await
            .expect("list");
        let got: Vec<&str> = page.messages.iter().map(|m| m.subject.as_str()).collect();
        assert_eq!(got, subjects, "{mailbox} {q}");
        assert_eq!(page.messages_count, subjects.len() as u64, "{mailbox} {q}");
        assert_eq!(page.messages_unread, subjects.len() as u64, "{mailbox} {q}");
    }
    // A page of negations, newest first, from its start.
    let page = |start: u64| Filter {
        query: Query::parse("-nowhere").expect("query"),
        start,
        limit: 2,
        ..Filter::default()
    };
    let first = inbox.list(&page(0)).await.expect("list");
    let second = inbox.list(&page(2)).await.expect("list");
    let subjects = |p: &samotop_inbox::Page| -> Vec<String> {
        p.messages.iter().map(|m| m.subject.clone()).collect()
    };
    assert_eq!(subjects(&first), ["with file", "lunch"]);
    assert_eq!(subjects(&second), ["quarterly report"]);
    assert_eq!((first.messages_count, second.messages_count), (3, 3));
    assert!(
        inbox
            .list(&page(9))
            .await
            .expect("list")
            .messages
            .is_empty()
    );
    assert_eq!(count(inbox, "subject:\"quarterly report\"").await, 1);
    assert_eq!(count(inbox, "subject:lunch pizza").await, 1);
    assert_eq!(count(inbox, "subject:pizza").await, 0);
    assert_eq!(count(inbox, "from:b@example.com").await, 1);
    assert_eq!(count(inbox, "has:attachment").await, 1);
    assert_eq!(count(inbox, "-has:attachment").await, 2);
    assert_eq!(count(inbox, "rcpt:y@two.test").await, 1);
    assert_eq!(count(inbox, "rcpt:two.test").await, 2);
    assert_eq!(count(inbox, "rcpt:@one.test").await, 1);
    assert_eq!(count(inbox, "is:unread").await, 3);
    assert_eq!(count(inbox, "larger:100k").await, 0);
    assert_eq!(count(inbox, "smaller:100k").await, 3);
    assert_eq!(count(inbox, "after:2000-01-01").await, 3);
    assert_eq!(count(inbox, "before:2000-01-01").await, 0);
    assert_eq!(
        count(inbox, "\"\" !!! -").await,
        3,
        "terms without words match everything"
    );
    let all = inbox
        .list(&Filter {
            limit: 50,
            ..Filter::default()
        })
        .await
        .expect("list");
    let ids: Vec<String> = all.messages.iter().take(2).map(|m| m.id.clone()).collect();
    inbox.set_read(Some(&ids), None, true).await.expect("read");
    assert_eq!(count(inbox, "is:read").await, 2);
    assert_eq!(count(inbox, "is:unread").await, 1);
    let page = inbox
        .list(&Filter {
            limit: 50,
            ..Filter::default()
        })
        .await
        .expect("list");
    assert_eq!((page.total, page.unread), (3, 1));
    inbox.set_read(None, None, false).await.expect("unread all");
    assert_eq!(count(inbox, "is:unread").await, 3);
    let f = Filter {
        query: Query::parse("rcpt:two.test").expect("q"),
        ..Filter::default()
    };
    assert_eq!(inbox.delete_matching(&f).await.expect("delete"), 2);
    assert_eq!(count(inbox, "").await, 1);
}

/// The wait returns on arrival, and its cursor misses nothing between two calls.
pub async fn wait_returns_on_arrival_and_its_cursor_misses_nothing(inbox: &Inbox) {
    let q = Query::parse("subject:ping").expect("query");
    // Nothing yet: times out, with a cursor.
    let none = inbox
        .wait(None, &q, 0, 10, Duration::from_millis(200))
        .await
        .expect("wait");
    assert!(none.timed_out && none.messages.is_empty());
    let waiter = {
        let inbox = inbox.clone();
        let q = q.clone();
        let cursor = none.cursor;
        tokio::spawn(async move {
            inbox
                .wait(Some("w@x.test"), &q, cursor, 10, Duration::from_secs(30))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    send(inbox, "w@x.test", "ping 1", "1").await;
    let first = waiter.await.expect("task").expect("wait");
    assert_eq!(first.messages.len(), 1);
    assert_eq!(first.messages[0].subject, "ping 1");
    // Two arrive before the next call: both are returned by it, in order.
    send(inbox, "w@x.test", "ping 2", "2").await;
    send(inbox, "w@x.test", "pong", "-").await;
    send(inbox, "w@x.test", "ping 3", "3").await;
    let next = inbox
        .wait(
            Some("w@x.test"),
            &q,
            first.cursor,
            10,
            Duration::from_secs(20),
        )
        .await
        .expect("wait");
    let subjects: Vec<&str> = next.messages.iter().map(|m| m.subject.as_str()).collect();
    assert!(
        subjects == ["ping 2", "ping 3"] || subjects == ["ping 2"],
        "{subjects:?}"
    );
    if subjects.len() == 1 {
        let last = inbox
            .wait(
                Some("w@x.test"),
                &q,
                next.cursor,
                10,
                Duration::from_secs(20),
            )
            .await
            .expect("wait");
        assert_eq!(last.messages[0].subject, "ping 3");
    }
}

/// 64 concurrent deliveries all land, each seen once through the cursor.
pub async fn concurrent_commits_share_transactions_and_all_land(inbox: &Inbox) {
    let inbox = Arc::new(inbox.clone());
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let inbox = inbox.clone();
            tokio::spawn(async move {
                let to = format!("u{}@load.test", i % 8);
                send(&inbox, &to, &format!("load {i}"), "x").await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("task"), vec![Ok(())]);
    }
    let stats = inbox.stats().await.expect("stats");
    assert_eq!(stats.messages, 64);
    let q = Query::parse("subject:load").expect("query");
    let (mut seen, mut cursor) = (0, 0);
    for _ in 0..100 {
        let got = inbox
            .wait(
                Some("u3@load.test"),
                &q,
                cursor,
                100,
                Duration::from_secs(20),
            )
            .await
            .expect("wait");
        seen += got.messages.len();
        cursor = got.cursor;
        if seen >= 8 || got.timed_out {
            break;
        }
    }
    assert_eq!(seen, 8, "each message once, none missed");
}

/// A message that does not parse is stored and shown raw.
pub async fn a_message_that_does_not_parse_is_stored_and_shown_raw(inbox: &Inbox) {
    let junk = b"\x00\x01\x02 not a message at all \xff\r\n".to_vec();
    assert_eq!(
        deliver(inbox, "a@example.com", &["r@x.test"], &junk).await,
        vec![Ok(())]
    );
    let q = Query::parse("rcpt:r@x.test").expect("query");
    let got = inbox
        .wait(None, &q, 0, 10, Duration::from_secs(10))
        .await
        .expect("wait");
    let id = &got.messages[0].id;
    assert_eq!(inbox.raw(id, None).await.expect("raw").expect("kept"), junk);
    let (_, view) = inbox.view(id, None).await.expect("view").expect("exists");
    let _ = view.parsed; // parsed or not, the view does not fail
}

/// The options of [`pruning_by_count_and_size`].
pub fn pruning_by_count_and_size_options() -> Options {
    Options {
        retention: Retention {
            max_age: None,
            max_messages: Some(5),
            max_bytes: None,
            interval: Duration::from_secs(3600),
        },
        ..Options::default()
    }
}

/// Pruning keeps the newest messages within the count limit.
pub async fn pruning_by_count_and_size(inbox: &Inbox) {
    for i in 0..12 {
        send(inbox, "p@x.test", &format!("m{i}"), "x").await;
    }
    let pruned = inbox.prune().await.expect("prune");
    // The background pass (1 s after start) may have taken some first.
    assert!(pruned.messages <= 7, "{pruned:?}");
    let page = inbox
        .list(&Filter {
            limit: 50,
            ..Filter::default()
        })
        .await
        .expect("list");
    assert_eq!(page.total, 5);
    // The newest stay.
    assert_eq!(wait_for(inbox, None, "subject:m11").await.len(), 1);
    assert!(
        inbox
            .list(&Filter {
                query: Query::parse("subject:m0").expect("q"),
                limit: 5,
                ..Filter::default()
            })
            .await
            .expect("list")
            .messages
            .is_empty()
    );
}

/// The options of [`pruning_by_age_reports_and_keeps_new_mail`].
pub fn pruning_by_age_reports_and_keeps_new_mail_options() -> Options {
    Options {
        retention: Retention {
            max_age: Some(Duration::from_secs(3600)),
            interval: Duration::from_secs(3600),
            ..Retention::default()
        },
        ..Options::default()
    }
}

/// Pruning by age removes the old message only and says why. The clock is the test's: the
/// prune runs as of one hour after the new message arrived, so the old one (received at
/// least a millisecond earlier) is past the hour and the new one is not, however slow the
/// machine.
pub async fn pruning_by_age_reports_and_keeps_new_mail(inbox: &Inbox) {
    let received = |subject: String| {
        let inbox = inbox.clone();
        async move {
            let found = wait_for(&inbox, None, &format!("subject:{subject}")).await;
            found.first().map(|m| m.received_ms).expect("found")
        }
    };
    let send = |subject: String| {
        let inbox = inbox.clone();
        async move {
            let out = send(&inbox, "p@x.test", &subject, "x").await;
            assert!(out.iter().all(Result::is_ok));
        }
    };
    send("old".into()).await;
    let old = received("old".into()).await;
    // Until one is received in a later millisecond (bounded: the clock moves).
    let mut new = old;
    let mut sent = 1;
    for attempt in 0..100 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        send(format!("new{attempt}")).await;
        sent += 1;
        new = received(format!("new{attempt}")).await;
        if new > old {
            break;
        }
    }
    assert!(new > old, "the clock did not move");
    // Everything but the last one was received before it.
    let pruned = inbox.prune_as_of(new + 3_600_000).await.expect("prune");
    assert_eq!((pruned.messages, pruned.reason), (sent - 1, "age"));
    assert_eq!(inbox.stats().await.expect("stats").messages, 1);
}

/// The totals a list shows (kept by triggers, not counted per request) stay exact through
/// delivery, read and unread, deleting one address's copy, deleting a message, and
/// delete-all; a search's count is exact below the cap.
pub async fn totals_stay_exact(inbox: &Inbox) {
    let to = |i: usize| -> Vec<&'static str> {
        match i % 3 {
            0 => vec!["a@t.test"],
            1 => vec!["a@t.test", "b@t.test"],
            _ => vec!["b@t.test", "c@t.test"],
        }
    };
    for i in 0..9 {
        let rcpts = to(i);
        let out = deliver(
            inbox,
            "s@example.com",
            &rcpts,
            &message(&format!("t{i}"), rcpts[0], "x"),
        )
        .await;
        assert!(out.iter().all(Result::is_ok));
    }
    wait_for(inbox, None, "subject:t8").await;
    let page = |m: Option<&str>| Filter {
        mailbox: m.map(str::to_string),
        limit: 50,
        ..Filter::default()
    };
    let totals = |m: Option<&'static str>| {
        let inbox = inbox.clone();
        async move {
            let p = inbox.list(&page(m)).await.expect("list");
            assert!(!p.messages_count_capped);
            (p.total, p.unread)
        }
    };
    assert_eq!(totals(None).await, (9, 9));
    assert_eq!(totals(Some("A@t.test")).await, (6, 6));
    assert_eq!(totals(Some("b@t.test")).await, (6, 6));
    assert_eq!(totals(Some("c@t.test")).await, (3, 3));
    assert_eq!(totals(Some("nobody@t.test")).await, (0, 0));
    let a = inbox.list(&page(Some("a@t.test"))).await.expect("list");
    let ids: Vec<String> = a.messages.iter().take(3).map(|m| m.id.clone()).collect();
    inbox.set_read(Some(&ids), None, true).await.expect("read");
    let unread_b = inbox
        .list(&page(Some("b@t.test")))
        .await
        .expect("list")
        .messages
        .iter()
        .filter(|m| !m.read)
        .count() as u64;
    assert_eq!(totals(None).await, (9, 6));
    assert_eq!(totals(Some("a@t.test")).await, (6, 3));
    assert_eq!(totals(Some("b@t.test")).await, (6, unread_b));
    // The same again changes nothing.
    inbox.set_read(Some(&ids), None, true).await.expect("read");
    assert_eq!(totals(None).await, (9, 6));
    // b's copy of a message a and b share goes; a keeps it.
    let shared = a
        .messages
        .iter()
        .find(|m| m.subject == "t7")
        .expect("t7 is a's and b's")
        .id
        .clone();
    assert_eq!(
        inbox
            .delete(Some(std::slice::from_ref(&shared)), Some("b@t.test"))
            .await
            .expect("unlink"),
        1
    );
    assert_eq!(totals(None).await.0, 9);
    assert_eq!(totals(Some("b@t.test")).await.0, 5);
    assert_eq!(totals(Some("a@t.test")).await.0, 6);
    // The whole message goes, from every inbox.
    inbox
        .delete(Some(std::slice::from_ref(&shared)), None)
        .await
        .expect("delete");
    assert_eq!(totals(None).await.0, 8);
    assert_eq!(totals(Some("a@t.test")).await.0, 5);
    let search = inbox
        .list(&Filter {
            query: Query::parse("is:unread rcpt:c@t.test").expect("query"),
            limit: 50,
            ..Filter::default()
        })
        .await
        .expect("search");
    assert_eq!(
        (search.messages_count, search.messages_count_capped),
        (3, false)
    );
    inbox.set_read(None, None, false).await.expect("unread all");
    let (total, unread) = totals(None).await;
    assert_eq!(total, unread);
    inbox.set_read(None, None, true).await.expect("read all");
    assert_eq!(totals(None).await.1, 0);
    assert_eq!(totals(Some("b@t.test")).await.1, 0);
    inbox.delete(None, None).await.expect("delete all");
    assert_eq!(totals(None).await, (0, 0));
    assert_eq!(totals(Some("b@t.test")).await, (0, 0));
    let stats = inbox.stats().await.expect("stats");
    assert_eq!((stats.messages, stats.unread, stats.bytes), (0, 0, 0));
}

/// A search that matches more than [`samotop_inbox::MAX_COUNT`] messages says its count is
/// capped, and still lists the newest page; a narrower one is counted exactly.
pub async fn a_search_over_the_cap_says_so(inbox: &Inbox) {
    let n = samotop_inbox::MAX_COUNT as usize + 10;
    let mut sent = 0;
    while sent < n {
        let batch: Vec<_> = (sent..n.min(sent + 64))
            .map(|i| {
                let inbox = inbox.clone();
                tokio::spawn(async move {
                    let body = if i % 100 == 0 {
                        "common rare"
                    } else {
                        "common"
                    };
                    deliver(
                        &inbox,
                        "s@example.com",
                        &["cap@t.test"],
                        &message(&format!("c{i}"), "cap@t.test", body),
                    )
                    .await
                })
            })
            .collect();
        for task in batch {
            assert!(task.await.expect("task").iter().all(Result::is_ok));
        }
        sent = n.min(sent + 64);
    }
    wait_for(inbox, None, &format!("subject:c{}", n - 1)).await;
    let search = |q: &str| Filter {
        query: Query::parse(q).expect("query"),
        limit: 20,
        ..Filter::default()
    };
    // The lazy parse indexes them in id order, not in the order sent: until every one is
    // indexed (bounded).
    let mut wide = inbox.list(&search("common")).await.expect("search");
    for _ in 0..2000 {
        if wide.messages_count_capped {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        wide = inbox.list(&search("common")).await.expect("search");
    }
    assert!(wide.messages_count_capped);
    assert_eq!(wide.messages_count, samotop_inbox::MAX_COUNT);
    assert_eq!(wide.messages.len(), 20);
    assert_eq!(wide.total, n as u64);
    let mut narrow = inbox.list(&search("rare")).await.expect("search");
    for _ in 0..2000 {
        if narrow.messages_count == n.div_ceil(100) as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        narrow = inbox.list(&search("rare")).await.expect("search");
    }
    assert!(!narrow.messages_count_capped);
    assert_eq!(narrow.messages_count, n.div_ceil(100) as u64);
    // Negations alone count the same way: past the cap, and none of a word in every one.
    let not_rare = inbox.list(&search("-rare")).await.expect("search");
    assert!(!not_rare.messages_count_capped);
    let common_only = (n - n.div_ceil(100)) as u64;
    assert_eq!(not_rare.messages_count, common_only);
    assert_eq!(not_rare.messages_unread, common_only);
    assert_eq!(not_rare.messages.len(), 20);
    assert!(
        not_rare
            .messages
            .iter()
            .all(|m| !m.snippet.contains("rare"))
    );
    let not_absent = inbox.list(&search("-absent")).await.expect("search");
    assert!(not_absent.messages_count_capped);
    assert_eq!(not_absent.messages_count, samotop_inbox::MAX_COUNT);
    assert_eq!(not_absent.messages_unread, samotop_inbox::MAX_COUNT);
    assert_eq!(not_absent.messages.len(), 20);
    let not_common = inbox.list(&search("-common")).await.expect("search");
    assert!(!not_common.messages_count_capped);
    assert_eq!(not_common.messages_count, 0);
    assert!(not_common.messages.is_empty());
}

/// A word's prefix finds every term it starts, however many: one term, a few (the SQLite
/// store reads them from the FTS5 vocabulary as exact terms), more than the expansion takes
/// (a prefix query again), inside a phrase and a field, and words with diacritics
/// (`folds_diacritics`: SQLite's `unicode61 remove_diacritics 2` finds `café` for `cafe`;
/// PostgreSQL's words keep their diacritics).
pub async fn search_prefixes_find_every_term_they_start(inbox: &Inbox, folds_diacritics: bool) {
    let many: Vec<String> = (1..=40).map(|i| format!("zq{i}")).collect();
    send(inbox, "a@p.test", "quarterly report", &many.join(" ")).await;
    send(
        inbox,
        "b@p.test",
        "replies",
        "caf\u{e9} cr\u{e8}me br\u{fb}l\u{e9}e",
    )
    .await;
    send(inbox, "c@p.test", "other", "nothing here").await;
    wait_for(inbox, None, "subject:other").await;
    let cases: &[(&str, u64)] = &[
        ("report", 1),
        ("rep", 2),
        ("subject:rep", 2),
        ("-rep", 1),
        ("zq", 1),
        ("zq3", 1),
        ("zq40", 1),
        ("zq41", 0),
        ("\"zq3 zq4\"", 1),
        ("\"zq3 zq5\"", 0),
        ("-zq", 2),
        ("cafe", u64::from(folds_diacritics)),
        ("caf", 1),
        ("caf\u{e9}", 1),
        ("br\u{fb}l", 1),
        ("to:a@p.te", 1),
        ("to:p.test", 3),
        ("from:alice@exa", 3),
        ("xyzzy", 0),
    ];
    for &(q, want) in cases {
        assert_eq!(count(inbox, q).await, want, "{q}");
    }
}
