//! `Proxy` against a real Dovecot LMTP server (issue 6), driven as the core driver drives a
//! dispatch: open at MAIL, add_recipient per RCPT, begin at DATA, write per chunk, commit.
//!
//! Needs `dovecot` (Debian: `dovecot-lmtpd`); each test runs its own in a temporary directory.

mod lmtp_support;

use std::path::PathBuf;
use std::time::Duration;

use lmtp_support::{ALICE, BOB, CountingShim, Dovecot, envelope, recipient, session};
use samotop_core::{Envelope, MailDispatch, Refusal, Transaction};
use samotop_delivery::{Dialect, Endpoint, Proxy};

/// Every step of these tests is bounded by this.
const STEP: Duration = Duration::from_secs(10);

fn proxy(socket: PathBuf) -> Proxy {
    Proxy::new(Endpoint::Unix(socket), Dialect::Lmtp)
        .connect_timeout(STEP)
        .command_timeout(STEP)
        .data_timeout(STEP)
        .final_timeout(STEP)
}

/// Opens a transaction for `env` and adds `recipients` (path, address), all of which must be
/// accepted; the envelope gets them as the session would add them.
async fn open_with(
    proxy: &Proxy,
    env: &mut Envelope,
    recipients: &[(&str, &str)],
) -> <Proxy as MailDispatch>::Transaction {
    let mut tx = proxy.open(&session(), env).await.expect("MAIL accepted");
    for (path, address) in recipients {
        let rcpt = recipient(path, address);
        tx.add_recipient(&rcpt).await.expect("RCPT accepted");
        env.recipients.push(rcpt);
    }
    tx
}

/// Delivers one small message to `recipients`, returning the outcomes.
async fn deliver(
    proxy: &Proxy,
    recipients: &[(&str, &str)],
    body: &[&[u8]],
) -> Vec<Result<(), Refusal>> {
    let mut env = envelope("sender@example.net");
    let mut tx = open_with(proxy, &mut env, recipients).await;
    tx.begin(&session(), &env).await.expect("DATA accepted");
    for chunk in body {
        tx.write(chunk).await.expect("chunk written");
    }
    tx.commit().await
}

#[tokio::test]
async fn a_message_to_two_users_lands_in_both_maildirs() {
    let dovecot = Dovecot::start();
    let proxy = proxy(dovecot.socket());
    // Split so that a line-starting dot comes at the start of a chunk, and the data does not
    // end in CR LF: the client must stuff the one and complete the other.
    let body: &[&[u8]] = &[
        b"Subject: issue 6\r\nFrom: <sender@example.net>\r\n\r\nfirst line\r\n",
        b".hidden behind a dot\r\n8-bit: \xe9t\xe9\r\n..",
        b"two dots",
    ];
    let outcomes = deliver(&proxy, &[(ALICE, ALICE), ("bob@example.com", BOB)], body).await;
    assert_eq!(outcomes, [Ok(()), Ok(())], "{}", dovecot.log());
    for user in [ALICE, BOB] {
        let messages = dovecot.messages(user);
        assert_eq!(messages.len(), 1, "{user}: {}", dovecot.log());
        let text = &messages[0];
        let has = |needle: &[u8]| text.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"Subject: issue 6"), "{user}");
        assert!(has(b"\n.hidden behind a dot"), "{user}");
        assert!(!has(b"..hidden"), "{user}: dot-stuffing undone exactly");
        assert!(has(b"\n..two dots"), "{user}");
        assert!(
            has(b"8-bit: \xe9t\xe9"),
            "{user}: 8-bit bytes kept as they are"
        );
    }
    assert_eq!(proxy.idle_connections(), 1);
}

#[tokio::test]
async fn an_unknown_user_gets_dovecots_550_at_rcpt_time() {
    let dovecot = Dovecot::start();
    let proxy = proxy(dovecot.socket());
    let env = envelope("sender@example.net");
    let mut tx = proxy.open(&session(), &env).await.expect("MAIL accepted");
    let nobody = recipient("nobody@example.com", "nobody@example.com");
    let reply = tx
        .add_recipient(&nobody)
        .await
        .expect_err("unknown user refused");
    assert_eq!(
        (reply.code(), reply.enhanced()),
        (550, Some([5, 1, 1])),
        "{reply}"
    );
    assert!(reply.message().contains("doesn't exist"), "{reply}");
    // The transaction goes on: a known user is still accepted.
    tx.add_recipient(&recipient(ALICE, ALICE))
        .await
        .expect("alice accepted");
    tx.abort().await;
    assert_eq!(
        proxy.idle_connections(),
        1,
        "RSET answered, connection kept"
    );
    assert!(dovecot.messages(ALICE).is_empty());
}

#[tokio::test]
async fn dovecot_stopped_means_4xx_at_the_first_rcpt() {
    let mut dovecot = Dovecot::start();
    let proxy = proxy(dovecot.socket());
    let outcomes = deliver(&proxy, &[(ALICE, ALICE)], &[b"Subject: one\r\n\r\nx\r\n"]).await;
    assert_eq!(outcomes, [Ok(())]);
    assert_eq!(proxy.idle_connections(), 1);
    dovecot.stop();

    // The pooled connection is dead, and a new one cannot be made: the first RCPT says so.
    let mut tx = proxy
        .open(&session(), &envelope("sender@example.net"))
        .await
        .expect("nothing asked of Dovecot yet");
    let reply = tx
        .add_recipient(&recipient(ALICE, ALICE))
        .await
        .expect_err("no Dovecot, no transaction");
    assert_eq!(
        (reply.code(), reply.enhanced()),
        (451, Some([4, 4, 1])),
        "{reply}"
    );
    assert_eq!(proxy.idle_connections(), 0);

    // A socket that never existed: the same.
    let nowhere = self::proxy(dovecot.dir().join("no-such.sock"));
    let mut tx = nowhere
        .open(&session(), &envelope(""))
        .await
        .expect("nothing asked yet");
    let reply = tx
        .add_recipient(&recipient(ALICE, ALICE))
        .await
        .expect_err("nothing listens");
    assert!(reply.is_transient(), "{reply}");
}

#[tokio::test]
async fn dovecot_killed_mid_transfer_is_never_ok() {
    killed_at(2 * 1024 * 1024).await;
}

#[tokio::test]
async fn dovecot_killed_before_the_final_dot_is_never_ok() {
    killed_at(TOTAL).await;
}

const TOTAL: usize = 20 * 1024 * 1024;

/// Sends a 20 MB message and kills Dovecot after `KILL_AT` bytes of it: the write or the
/// commit must fail with a 4xx, nothing may be delivered, and the failure is logged.
async fn killed_at(kill_at: usize) {
    lmtp_support::capture_logs();
    let mut dovecot = Dovecot::start();
    let proxy = proxy(dovecot.socket());
    let mut env = envelope("sender@example.net");
    let mut tx = open_with(&proxy, &mut env, &[(ALICE, ALICE)]).await;
    tx.begin(&session(), &env).await.expect("DATA accepted");
    tx.write(b"Subject: big\r\n\r\n")
        .await
        .expect("header written");

    let line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n";
    let chunk: Vec<u8> = line.iter().copied().cycle().take(64 * 1024).collect();
    let mut failed = None;
    let mut sent = 0;
    while sent < TOTAL {
        if sent == kill_at {
            dovecot.kill();
        }
        if let Err(reply) = tx.write(&chunk).await {
            eprintln!("write failed after {sent} bytes: {reply}");
            failed = Some(reply);
            break;
        }
        sent += chunk.len();
    }
    if sent == kill_at {
        dovecot.kill();
    }
    assert!(sent >= kill_at, "the kill came after {sent} bytes");
    match failed {
        Some(reply) => {
            assert!(reply.is_transient(), "write failed with {reply}");
            // The session reads the rest and answers the error; the transaction is dropped.
            tx.abort().await;
        }
        None => {
            let outcomes = tx.commit().await;
            eprintln!("all {sent} bytes written; commit answered {outcomes:?}");
            assert_eq!(outcomes.len(), 1);
            let Err(reply) = &outcomes[0] else {
                panic!("a message to a killed Dovecot was committed");
            };
            assert!(reply.is_transient(), "commit answered {reply}");
        }
    }
    assert!(dovecot.messages(ALICE).is_empty(), "nothing delivered");
    assert_eq!(
        proxy.idle_connections(),
        0,
        "a failed connection is not pooled"
    );
    let endpoint = format!("unix:{}", dovecot.socket().display());
    let warnings = lmtp_support::warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains(&endpoint) && w.contains("failed")),
        "a warning names {endpoint}: {warnings:?}"
    );
}

#[tokio::test]
async fn two_transactions_in_a_row_use_one_connection() {
    let dovecot = Dovecot::start();
    let shim = CountingShim::start(dovecot.dir().join("shim.sock"), dovecot.socket());
    let proxy = proxy(shim.path.clone());
    for n in 1..=2 {
        let outcomes = deliver(&proxy, &[(ALICE, ALICE)], &[b"Subject: again\r\n\r\nx\r\n"]).await;
        assert_eq!(outcomes, [Ok(())], "message {n}: {}", dovecot.log());
        assert_eq!(proxy.idle_connections(), 1);
    }
    assert_eq!(shim.connections(), 1);
    assert_eq!(dovecot.messages(ALICE).len(), 2);
}

#[tokio::test]
async fn abort_mid_data_delivers_nothing_and_the_next_message_goes_through() {
    let dovecot = Dovecot::start();
    let shim = CountingShim::start(dovecot.dir().join("shim.sock"), dovecot.socket());
    let proxy = proxy(shim.path.clone());
    let mut env = envelope("sender@example.net");
    let mut tx = open_with(&proxy, &mut env, &[(ALICE, ALICE)]).await;
    tx.begin(&session(), &env).await.expect("DATA accepted");
    tx.write(b"Subject: half\r\n\r\nthe first half\r\n")
        .await
        .expect("written");
    tx.abort().await;
    assert_eq!(
        proxy.idle_connections(),
        0,
        "a half-sent message's connection is closed"
    );

    let outcomes = deliver(&proxy, &[(ALICE, ALICE)], &[b"Subject: whole\r\n\r\nx\r\n"]).await;
    assert_eq!(outcomes, [Ok(())]);
    assert_eq!(shim.connections(), 2);
    let messages = dovecot.messages(ALICE);
    assert_eq!(messages.len(), 1, "{}", dovecot.log());
    assert!(String::from_utf8_lossy(&messages[0]).contains("Subject: whole"));
}
