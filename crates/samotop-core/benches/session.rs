//! A whole sans-io [`Session`] with no I/O: EHLO, MAIL, RCPT, DATA, body, dot, repeated.
//!
//! Run with: `cargo bench -p samotop-core --bench session` (add `-- --quick` for a short run).
//! Reports transactions/s: what the state machine, the command parser and the data scanner
//! cost per message, without sockets, tasks or a sink.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use samotop_core::{Answer, Event, Peer, Session, SessionConfig, SessionInfo, Verdict};

/// Transactions per session: below `Limits::max_transactions` (1000).
const TRANSACTIONS: usize = 100;

/// One pipelined script: EHLO, then `TRANSACTIONS` × (MAIL, RCPT × `rcpts`, DATA, body, dot),
/// then QUIT.
fn script(body_len: usize, rcpts: usize) -> Vec<u8> {
    let mut body = Vec::new();
    let mut n = 0;
    while body.len() < body_len {
        body.extend_from_slice(
            format!("{n:04} The quick brown fox jumps over the lazy dog, again and again.\r\n")
                .as_bytes(),
        );
        n += 1;
    }
    let mut s = b"EHLO client.example.com\r\n".to_vec();
    for t in 0..TRANSACTIONS {
        s.extend_from_slice(
            format!("MAIL FROM:<sender{t}@example.com> SIZE={body_len}\r\n").as_bytes(),
        );
        for r in 0..rcpts {
            s.extend_from_slice(format!("RCPT TO:<rcpt{r}@example.org>\r\n").as_bytes());
        }
        s.extend_from_slice(b"DATA\r\n");
        s.extend_from_slice(b"From: <sender@example.com>\r\nSubject: bench\r\n\r\n");
        s.extend_from_slice(&body);
        s.extend_from_slice(b".\r\n");
    }
    s.extend_from_slice(b"QUIT\r\n");
    s
}

/// Runs the session over `input`, fed in `read`-sized pieces as a driver would; answers
/// every question yes. Returns the number of replies (so nothing is optimised away).
fn run(input: &[u8], read: usize) -> usize {
    let info = SessionInfo::new(Peer::Stdio, "mx.example.org");
    let mut session = Session::new(Arc::new(SessionConfig::default()), info);
    let mut replies = 0;
    let mut buf: Vec<u8> = Vec::with_capacity(read * 2);
    let mut pos = 0;
    let mut recipients = 0;
    // Bounded: each step feeds, answers or reads.
    for _ in 0..input.len() * 4 + 100 {
        while let Some(event) = session.poll_event() {
            match event {
                Event::Reply(r) => {
                    replies += 1;
                    black_box(&r);
                }
                Event::Chunk(data) => {
                    black_box(&data);
                    session.resolve(Answer::Done(Ok(())));
                }
                Event::AddRecipient => {
                    recipients += 1;
                    session.resolve(Answer::Done(Ok(())));
                }
                Event::Commit => {
                    session.resolve(Answer::Committed(vec![Ok(()); recipients]));
                    recipients = 0;
                }
                Event::Open => {
                    recipients = 0;
                    session.resolve(Answer::Done(Ok(())));
                }
                Event::Guard(_) => session.resolve(Answer::Verdict(Verdict::Accept)),
                Event::Abort | Event::Close | Event::StartTls => {}
                _ => session.resolve(Answer::Done(Ok(()))),
            }
        }
        if session.is_closed() {
            return replies;
        }
        let used = session.feed(&buf, std::time::UNIX_EPOCH);
        if used > 0 {
            buf.drain(..used);
            continue;
        }
        if pos == input.len() {
            break;
        }
        let end = (pos + read).min(input.len());
        buf.extend_from_slice(&input[pos..end]);
        pos = end;
    }
    panic!("session did not end");
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("session");
    for (name, body, rcpts) in [
        ("1k-1rcpt", 1024, 1),
        ("1k-10rcpt", 1024, 10),
        ("100k-1rcpt", 100 * 1024, 1),
    ] {
        let input = script(body, rcpts);
        let expected = run(&input, 4096);
        // 220, EHLO, per transaction MAIL + RCPTs + 354 + 250, QUIT.
        assert_eq!(
            expected,
            3 + TRANSACTIONS * (3 + rcpts),
            "every command answered"
        );
        group.throughput(Throughput::Elements(TRANSACTIONS as u64));
        group.bench_function(name, |b| {
            b.iter_batched(
                || (),
                |()| run(black_box(&input), 4096),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
