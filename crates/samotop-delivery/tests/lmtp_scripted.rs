//! `Proxy` against a scripted LMTP/SMTP server on a Unix socket: the replies a real Dovecot
//! does not give on demand (SMTP dialect, 421, 5xx at MAIL, mixed LMTP outcomes, silence).

mod lmtp_support;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lmtp_support::{envelope, recipient, session};
use samotop_core::{MailDispatch, Refusal, Transaction};
use samotop_delivery::{Dialect, Endpoint, Proxy};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::Notify;

/// How the scripted server answers.
#[derive(Clone, Copy)]
struct Script {
    greeting: &'static str,
    /// The whole reply to LHLO/EHLO.
    hello: &'static str,
    mail: &'static str,
    /// The reply to `RCPT TO:<address>`.
    rcpt: fn(&str) -> &'static str,
    /// The final replies for the accepted recipients; none: stay silent.
    finals: fn(&[String]) -> Vec<String>,
    /// Close the connection after the final replies (an idle timeout, a restart).
    hang_up_after_data: bool,
    /// Bytes nobody asked for, sent in the same write as the final replies.
    after_finals: &'static str,
    /// Bytes nobody asked for, sent on an idle connection when the test pokes it.
    when_poked: &'static str,
}

const LMTP: Script = Script {
    greeting: "220 fake LMTP\r\n",
    hello: "250-fake\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n",
    mail: "250 2.1.0 OK\r\n",
    rcpt: |_| "250 2.1.5 OK\r\n",
    finals: |rcpts| {
        rcpts
            .iter()
            .map(|r| format!("250 2.0.0 <{r}> Saved\r\n"))
            .collect()
    },
    hang_up_after_data: false,
    after_finals: "",
    when_poked: "",
};

/// LMTP with CHUNKING: the message comes in `BDAT` chunks.
const LMTP_CHUNKING: Script = Script {
    hello: "250-fake\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-CHUNKING\r\n\
            250-BINARYMIME\r\n250 ENHANCEDSTATUSCODES\r\n",
    ..LMTP
};

/// What the server saw: every command line, and the message data (still dot-stuffed).
#[derive(Default)]
struct Seen {
    commands: Vec<String>,
    data: Vec<u8>,
    connections: usize,
    /// Connections that ended (QUIT, or closed by the client).
    closed: usize,
    /// Times the unsolicited bytes of [`Script::when_poked`] went out.
    poked: usize,
}

struct Fake {
    path: PathBuf,
    seen: Arc<Mutex<Seen>>,
    poke: Arc<Notify>,
    _dir: tempfile::TempDir,
}

impl Fake {
    fn start(script: Script) -> Fake {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fake.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let poke = Arc::new(Notify::new());
        let shared = seen.clone();
        let poked = poke.clone();
        tokio::spawn(async move {
            // Ends with the test's runtime.
            while let Ok((stream, _)) = listener.accept().await {
                shared.lock().unwrap().connections += 1;
                let (seen, poke) = (shared.clone(), poked.clone());
                tokio::spawn(async move {
                    serve(stream, script, seen.clone(), poke).await;
                    seen.lock().unwrap().closed += 1;
                });
            }
        });
        Fake {
            path,
            seen,
            poke,
            _dir: dir,
        }
    }

    /// Waits (bounded, generously) until `done` holds of what the server saw.
    async fn wait_for(&self, what: &str, done: impl Fn(&Seen) -> bool) {
        for _ in 0..1000 {
            if done(&self.seen.lock().unwrap()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the fake server never saw {what}");
    }

    fn proxy(&self, dialect: Dialect) -> Proxy {
        let step = Duration::from_secs(10);
        Proxy::new(Endpoint::Unix(self.path.clone()), dialect)
            .connect_timeout(step)
            .command_timeout(step)
            .data_timeout(step)
            .final_timeout(step)
    }

    fn commands(&self) -> Vec<String> {
        self.seen.lock().unwrap().commands.clone()
    }
}

/// One connection: line by line until QUIT or EOF (bounded by what the client sends).
async fn serve(
    stream: tokio::net::UnixStream,
    script: Script,
    seen: Arc<Mutex<Seen>>,
    poke: Arc<Notify>,
) {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let _ = wr.write_all(script.greeting.as_bytes()).await;
    let mut accepted = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        // A poke comes only while the client is idle: no line is half read then.
        let read = tokio::select! {
            read = rd.read_line(&mut line) => read.unwrap_or(0),
            () = poke.notified() => {
                if wr.write_all(script.when_poked.as_bytes()).await.is_err() {
                    return;
                }
                seen.lock().unwrap().poked += 1;
                continue;
            }
        };
        if read == 0 {
            return;
        }
        let command = line.trim_end().to_string();
        seen.lock().unwrap().commands.push(command.clone());
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply = match verb.as_str() {
            "LHLO" | "EHLO" => script.hello.to_string(),
            "MAIL" => script.mail.to_string(),
            "RCPT" => {
                let address = command[9..command.len() - 1].to_string();
                let reply = (script.rcpt)(&address);
                if reply.starts_with('2') {
                    accepted.push(address);
                }
                reply.to_string()
            }
            "RSET" => {
                accepted.clear();
                "250 2.0.0 OK\r\n".to_string()
            }
            "QUIT" => {
                let _ = wr.write_all(b"221 2.0.0 Bye\r\n").await;
                return;
            }
            "DATA" => {
                let _ = wr.write_all(b"354 go ahead\r\n").await;
                if !read_data(&mut rd, &seen).await {
                    return;
                }
                let finals = (script.finals)(&accepted).concat() + script.after_finals;
                if script.hang_up_after_data {
                    let _ = wr.write_all(finals.as_bytes()).await;
                    return;
                }
                finals
            }
            "BDAT" => {
                let mut words = command.split_whitespace().skip(1);
                let size = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                let last = words.next().is_some_and(|w| w.eq_ignore_ascii_case("LAST"));
                let mut chunk = vec![0; size];
                if rd.read_exact(&mut chunk).await.is_err() {
                    return;
                }
                seen.lock().unwrap().data.extend_from_slice(&chunk);
                if last {
                    (script.finals)(&accepted).concat() + script.after_finals
                } else {
                    "250 2.0.0 chunk OK\r\n".to_string()
                }
            }
            _ => "500 5.5.2 what?\r\n".to_string(),
        };
        if wr.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads message data up to the lone dot; false on EOF.
async fn read_data(
    rd: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    seen: &Arc<Mutex<Seen>>,
) -> bool {
    let mut line = Vec::new();
    loop {
        line.clear();
        if rd.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
            return false;
        }
        if line == b".\r\n" {
            return true;
        }
        seen.lock().unwrap().data.extend_from_slice(&line);
    }
}

/// open + RCPT each + DATA + one chunk + commit.
async fn deliver(proxy: &Proxy, rcpts: &[&str]) -> Vec<Result<(), Refusal>> {
    let mut env = envelope("a@example.net");
    let mut tx = proxy.open(&session(), &env).await.expect("MAIL accepted");
    for address in rcpts {
        let r = recipient(address, address);
        tx.add_recipient(&r).await.expect("RCPT accepted");
        env.recipients.push(r);
    }
    tx.begin(&session(), &env).await.expect("DATA accepted");
    tx.write(b"Subject: x\r\n\r\n.dot\r\n")
        .await
        .expect("written");
    tx.commit().await
}

#[tokio::test]
async fn lmtp_gives_each_recipient_its_own_outcome() {
    let fake = Fake::start(Script {
        finals: |rcpts| {
            rcpts
                .iter()
                .map(|r| match r.as_str() {
                    "full@example.com" => format!("452 4.2.2 <{r}> Mailbox is full\r\n"),
                    _ => format!("250 2.0.0 <{r}> Saved\r\n"),
                })
                .collect()
        },
        ..LMTP
    });
    let proxy = fake.proxy(Dialect::Lmtp);
    let outcomes = deliver(
        &proxy,
        &["a@example.com", "full@example.com", "b@example.com"],
    )
    .await;
    assert_eq!(outcomes.len(), 3);
    assert_eq!(outcomes[0], Ok(()));
    let full = outcomes[1].as_ref().expect_err("full mailbox");
    assert_eq!((full.code(), full.enhanced()), (452, Some([4, 2, 2])));
    assert_eq!(full.message(), "<full@example.com> Mailbox is full");
    assert_eq!(outcomes[2], Ok(()));
    assert_eq!(
        fake.seen.lock().unwrap().data,
        b"Subject: x\r\n\r\n..dot\r\n"
    );
    assert_eq!(proxy.idle_connections(), 1);
}

#[tokio::test]
async fn smtp_copies_the_one_reply_to_every_recipient() {
    let fake = Fake::start(Script {
        greeting: "220 fake ESMTP\r\n",
        finals: |_| vec!["250 2.0.0 queued as 1234\r\n".to_string()],
        ..LMTP
    });
    let proxy = fake.proxy(Dialect::Smtp);
    let outcomes = deliver(&proxy, &["a@example.com", "b@example.com"]).await;
    assert_eq!(outcomes, [Ok(()), Ok(())]);
    let commands = fake.commands();
    assert!(commands[0].starts_with("EHLO "), "{commands:?}");

    // The second transaction reuses the connection: RSET and MAIL pipelined.
    let outcomes = deliver(&proxy, &["a@example.com"]).await;
    assert_eq!(outcomes, [Ok(())]);
    assert_eq!(fake.seen.lock().unwrap().connections, 1);
    assert!(fake.commands().contains(&"RSET".to_string()));
}

#[tokio::test]
async fn a_5xx_at_mail_passes_through_and_keeps_the_connection() {
    let fake = Fake::start(Script {
        mail: "550 5.7.1 Sender blocked\r\n",
        ..LMTP
    });
    let proxy = fake.proxy(Dialect::Lmtp);
    // The downstream transaction starts at the first recipient: MAIL's refusal is its reply,
    // and every later recipient's.
    let mut tx = proxy
        .open(&session(), &envelope("spam@example.net"))
        .await
        .expect("nothing asked of the server yet");
    assert_eq!(fake.seen.lock().unwrap().connections, 0);
    for _ in 0..2 {
        let reply = tx
            .add_recipient(&recipient("a@example.com", "a@example.com"))
            .await
            .expect_err("sender refused");
        assert_eq!((reply.code(), reply.enhanced()), (550, Some([5, 7, 1])));
        assert_eq!(reply.message(), "Sender blocked");
    }
    assert_eq!(proxy.idle_connections(), 1);
    assert_eq!(fake.seen.lock().unwrap().connections, 1);
}

#[tokio::test]
async fn parameters_go_only_where_advertised() {
    let fake = Fake::start(LMTP);
    let proxy = fake.proxy(Dialect::Lmtp);
    let env = match samotop_parser::parse_command(b"MAIL FROM:<a@b> BODY=8BITMIME SMTPUTF8 SIZE=10")
    {
        Ok(samotop_parser::Command::Mail(path, params)) => {
            samotop_core::Envelope::new(path, params, "t".into())
        }
        other => panic!("{other:?}"),
    };
    let mut tx = proxy.open(&session(), &env).await.expect("opened");
    tx.add_recipient(&recipient("x@example.com", "x@example.com"))
        .await
        .expect("RCPT accepted");
    // 8BITMIME is advertised, SIZE and SMTPUTF8 are not.
    assert!(
        fake.commands()
            .contains(&"MAIL FROM:<a@b> BODY=8BITMIME".to_string())
    );
}

#[tokio::test]
async fn a_421_greeting_is_a_451_upstream() {
    let fake = Fake::start(Script {
        greeting: "421 4.3.2 Too busy\r\n",
        ..LMTP
    });
    let proxy = fake.proxy(Dialect::Lmtp);
    let mut tx = proxy
        .open(&session(), &envelope(""))
        .await
        .expect("nothing asked yet");
    let reply = tx
        .add_recipient(&recipient("a@example.com", "a@example.com"))
        .await
        .expect_err("no greeting, no transaction");
    assert_eq!(reply.code(), 451, "{reply}");
}

#[tokio::test]
async fn a_421_at_rcpt_is_a_451_and_drops_the_connection() {
    let fake = Fake::start(Script {
        rcpt: |_| "421 4.4.2 Shutting down\r\n",
        ..LMTP
    });
    let proxy = fake.proxy(Dialect::Lmtp);
    let mut tx = proxy
        .open(&session(), &envelope(""))
        .await
        .expect("MAIL accepted");
    let reply = tx
        .add_recipient(&recipient("a@example.com", "a@example.com"))
        .await
        .expect_err("refused");
    assert_eq!((reply.code(), reply.enhanced()), (451, Some([4, 4, 2])));
    tx.abort().await;
    assert_eq!(proxy.idle_connections(), 0);
}

#[tokio::test]
async fn a_silent_server_after_the_data_is_a_451() {
    let fake = Fake::start(Script {
        finals: |_| Vec::new(),
        ..LMTP
    });
    let proxy = fake
        .proxy(Dialect::Lmtp)
        .final_timeout(Duration::from_millis(200));
    let outcomes = deliver(&proxy, &["a@example.com", "b@example.com"]).await;
    assert_eq!(outcomes.len(), 2);
    for outcome in outcomes {
        let reply = outcome.expect_err("no reply, no delivery");
        assert_eq!((reply.code(), reply.enhanced()), (451, Some([4, 4, 1])));
    }
    assert_eq!(proxy.idle_connections(), 0);
}

#[tokio::test]
async fn a_stale_pooled_connection_is_replaced() {
    let fake = Fake::start(Script {
        hang_up_after_data: true,
        ..LMTP
    });
    let proxy = fake.proxy(Dialect::Lmtp);
    assert_eq!(deliver(&proxy, &["a@example.com"]).await, [Ok(())]);
    // The server hung up after the data: either the pool saw it (a connection the server
    // closed is never pooled) or the pooled connection fails its RSET; a new one takes over,
    // unseen upstream.
    assert!(proxy.idle_connections() <= 1);
    assert_eq!(deliver(&proxy, &["a@example.com"]).await, [Ok(())]);
    assert_eq!(fake.seen.lock().unwrap().connections, 2);
}

fn odd_rcpt(address: &str) -> &'static str {
    match address {
        "odd@example.com" => "354 go ahead\r\n",
        "maybe@example.com" => "252 2.1.5 Cannot verify, will try\r\n",
        _ => "250 2.1.5 OK\r\n",
    }
}

#[tokio::test]
async fn the_transaction_over_max_in_flight_gets_451_4_3_2_until_a_slot_frees() {
    let fake = Fake::start(LMTP);
    let proxy = fake.proxy(Dialect::Lmtp).max_in_flight(1);
    let a = recipient("a@example.com", "a@example.com");
    let mut env = envelope("s@example.net");
    let mut first = proxy.open(&session(), &env).await.expect("opened");
    first.add_recipient(&a).await.expect("the one slot");
    let mut second = proxy.open(&session(), &env).await.expect("opened");
    let busy = second.add_recipient(&a).await.expect_err("no slot left");
    assert_eq!(
        (busy.code(), busy.enhanced()),
        (451, Some([4, 3, 2])),
        "{busy}"
    );
    // The refused transaction cost the server nothing.
    assert_eq!(fake.seen.lock().unwrap().connections, 1);

    env.recipients.push(a.clone());
    first.begin(&session(), &env).await.expect("DATA accepted");
    first
        .write(b"Subject: one\r\n\r\nx\r\n")
        .await
        .expect("written");
    assert_eq!(first.commit().await, [Ok(())]);

    // The slot is free again: the refused recipient, retried, and a new transaction go through.
    second.add_recipient(&a).await.expect("a free slot");
    second.begin(&session(), &env).await.expect("DATA accepted");
    second
        .write(b"Subject: two\r\n\r\nx\r\n")
        .await
        .expect("written");
    assert_eq!(second.commit().await, [Ok(())]);
    assert_eq!(deliver(&proxy, &["a@example.com"]).await, [Ok(())]);
}

#[tokio::test]
async fn an_idle_pooled_connection_expires_after_idle_time_and_gets_quit() {
    let fake = Fake::start(LMTP);
    let idle_time = Duration::from_secs(30);
    let proxy = fake.proxy(Dialect::Lmtp).idle_time(idle_time);
    assert_eq!(deliver(&proxy, &["a@example.com"]).await, [Ok(())]);
    assert_eq!(proxy.idle_connections(), 1);
    // Within the idle time the pooled connection is reused.
    assert_eq!(deliver(&proxy, &["a@example.com"]).await, [Ok(())]);
    assert_eq!(fake.seen.lock().unwrap().connections, 1);

    // Past it (on tokio's clock, paused only while it jumps), a new connection is opened.
    tokio::time::pause();
    tokio::time::advance(idle_time + Duration::from_secs(1)).await;
    tokio::time::resume();
    assert_eq!(deliver(&proxy, &["a@example.com"]).await, [Ok(())]);
    assert_eq!(fake.seen.lock().unwrap().connections, 2);
    // The expired one was said QUIT to, and closed.
    fake.wait_for("the old connection closed", |s| s.closed >= 1)
        .await;
    assert!(fake.commands().contains(&"QUIT".to_string()));
    assert_eq!(proxy.idle_connections(), 1);
}

#[tokio::test]
async fn a_connection_with_unread_bytes_after_the_data_is_not_pooled() {
    let fake = Fake::start(Script {
        after_finals: "250 2.0.0 nobody asked\r\n",
        ..LMTP
    });
    let proxy = fake.proxy(Dialect::Lmtp);
    assert_eq!(deliver(&proxy, &["a@example.com"]).await, [Ok(())]);
    assert_eq!(proxy.idle_connections(), 0);
    assert_eq!(deliver(&proxy, &["a@example.com"]).await, [Ok(())]);
    assert_eq!(fake.seen.lock().unwrap().connections, 2);
}

#[tokio::test]
async fn a_pooled_connection_that_got_unsolicited_bytes_is_not_reused() {
    let fake = Fake::start(Script {
        when_poked: "250 2.0.0 nobody asked\r\n",
        ..LMTP
    });
    let proxy = fake.proxy(Dialect::Lmtp);
    assert_eq!(deliver(&proxy, &["a@example.com"]).await, [Ok(())]);
    assert_eq!(proxy.idle_connections(), 1);
    // While it is idle in the pool, the server says something nobody asked for.
    fake.poke.notify_one();
    fake.wait_for("the unsolicited bytes sent", |s| s.poked == 1)
        .await;
    // One park of the runtime, so that its reactor sees them arrive.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let data_before = fake.seen.lock().unwrap().data.len();
    // The next message goes over a fresh connection, with every reply in step.
    let outcomes = deliver(&proxy, &["a@example.com", "b@example.com"]).await;
    assert_eq!(outcomes, [Ok(()), Ok(())]);
    assert_eq!(fake.seen.lock().unwrap().connections, 2);
    assert_eq!(
        &fake.seen.lock().unwrap().data[data_before..],
        b"Subject: x\r\n\r\n..dot\r\n"
    );
}

#[tokio::test]
async fn an_odd_reply_to_rcpt_is_a_451_and_the_transaction_goes_on() {
    let fake = Fake::start(Script {
        rcpt: odd_rcpt,
        ..LMTP
    });
    let proxy = fake.proxy(Dialect::Lmtp);
    let mut env = envelope("s@example.net");
    let mut tx = proxy.open(&session(), &env).await.expect("opened");
    // A 354 to RCPT is no refusal a client could act on: a 451 4.3.0, never the 354.
    let odd = tx
        .add_recipient(&recipient("odd@example.com", "odd@example.com"))
        .await
        .expect_err("a 354 is no acceptance");
    assert_eq!(
        (odd.code(), odd.enhanced()),
        (451, Some([4, 3, 0])),
        "{odd}"
    );
    // A 2xx is an acceptance (RFC 5321 4.2.1: the first digit decides); our client gets the
    // session's own 250, not the 252.
    for address in ["maybe@example.com", "b@example.com"] {
        let r = recipient(address, address);
        tx.add_recipient(&r).await.expect("accepted");
        env.recipients.push(r);
    }
    tx.begin(&session(), &env).await.expect("DATA accepted");
    tx.write(b"Subject: odd\r\n\r\nx\r\n")
        .await
        .expect("written");
    assert_eq!(tx.commit().await, [Ok(()), Ok(())]);
    // And the next message goes through as well.
    assert_eq!(deliver(&proxy, &["b@example.com"]).await, [Ok(())]);
}

#[tokio::test]
async fn a_reply_code_outside_2xx_to_5xx_at_rcpt_is_a_451_and_the_next_message_goes() {
    let fake = Fake::start(Script {
        rcpt: |address| match address {
            "odd@example.com" => "199 what\r\n",
            _ => "250 2.1.5 OK\r\n",
        },
        ..LMTP
    });
    let proxy = fake.proxy(Dialect::Lmtp);
    let mut tx = proxy.open(&session(), &envelope("")).await.expect("opened");
    let odd = tx
        .add_recipient(&recipient("odd@example.com", "odd@example.com"))
        .await
        .expect_err("no acceptance");
    assert_eq!(odd.code(), 451, "{odd}");
    assert_eq!(odd.enhanced().map(|e| e[0]), Some(4), "{odd}");
    tx.abort().await;
    assert_eq!(deliver(&proxy, &["b@example.com"]).await, [Ok(())]);
}

#[tokio::test]
async fn bdat_downstream_makes_every_line_end_crlf_without_dot_stuffing() {
    let fake = Fake::start(LMTP_CHUNKING);
    let proxy = fake.proxy(Dialect::Lmtp);
    let mut env = envelope("s@example.net");
    let mut tx = proxy.open(&session(), &env).await.expect("opened");
    let r = recipient("a@example.com", "a@example.com");
    tx.add_recipient(&r).await.expect("accepted");
    env.recipients.push(r);
    tx.begin(&session(), &env).await.expect("chunking");
    // Bare LF, bare CR, a CR at the end of a chunk whose LF starts the next, a leading dot,
    // and no line end at the end.
    for chunk in [
        &b"Subject: bdat\n\nbare lf\nbare cr\rcrlf split\r"[..],
        b"\n.dot\r\nlast",
    ] {
        tx.write(chunk).await.expect("written");
    }
    assert_eq!(tx.commit().await, [Ok(())]);
    assert_eq!(
        fake.seen.lock().unwrap().data,
        b"Subject: bdat\r\n\r\nbare lf\r\nbare cr\r\ncrlf split\r\n.dot\r\nlast\r\n"
    );
    let commands = fake.commands();
    assert!(!commands.contains(&"DATA".to_string()), "{commands:?}");
    let bdat: Vec<_> = commands.iter().filter(|c| c.starts_with("BDAT")).collect();
    assert_eq!(
        bdat.last().map(|c| c.as_str()),
        Some("BDAT 2 LAST"),
        "{bdat:?}"
    );
}

#[tokio::test]
async fn bdat_downstream_sends_binarymime_byte_for_byte() {
    let fake = Fake::start(LMTP_CHUNKING);
    let proxy = fake.proxy(Dialect::Lmtp);
    assert!(proxy.probe().await.expect("probed").binary_mime);
    let mut env = match samotop_parser::parse_command(b"MAIL FROM:<s@example.net> BODY=BINARYMIME")
    {
        Ok(samotop_parser::Command::Mail(path, params)) => {
            samotop_core::Envelope::new(path, params, "t".into())
        }
        other => panic!("{other:?}"),
    };
    let mut tx = proxy.open(&session(), &env).await.expect("opened");
    let r = recipient("a@example.com", "a@example.com");
    tx.add_recipient(&r).await.expect("accepted");
    env.recipients.push(r);
    tx.begin(&session(), &env).await.expect("chunking");
    let body = b"Subject: bin\r\n\r\n\x00\n.\r\x01";
    tx.write(body).await.expect("written");
    assert_eq!(tx.commit().await, [Ok(())]);
    assert_eq!(fake.seen.lock().unwrap().data, body);
}
