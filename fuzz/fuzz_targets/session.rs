//! The sans-io session fed arbitrary bytes in arbitrary splits, with STARTTLS, spooling and
//! LMTP chosen by the input, and a driver that answers from the input: never a panic, never
//! an unanswered question, every reply well-formed, never more committed messages than
//! DATA/BDAT commands, and the reply invariant: one reply per command, and after the data
//! (DATA's final dot, BDAT LAST) one per accepted recipient over LMTP.
#![no_main]

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use libfuzzer_sys::fuzz_target;
use samotop_core::parser::{Command, parse_command};
use samotop_core::{
    Answer, Capabilities, Event, Limits, Peer, Protocol, Refusal, Session, SessionConfig,
    SessionInfo, TlsInfo, Verdict, reply,
};

// Input: one byte of flags, one byte of split size, then the bytes the client sends.
fuzz_target!(|input: &[u8]| {
    let [flags, split, data @ ..] = input else {
        return;
    };
    let (flags, split, lmtp, data) = (*flags, u16::from(*split), flags & 0x80 != 0, data.to_vec());
    let config = SessionConfig {
        limits: Limits {
            max_line_length: 256,
            max_message_size: 4096,
            max_recipients: 4,
            max_errors: 20,
            max_rejected_recipients: 6,
            chunk_size: 64,
            ..Limits::default()
        },
        protocol: if lmtp { Protocol::Lmtp } else { Protocol::Smtp },
        starttls: flags & 1 != 0,
        require_tls: flags & 2 != 0,
        accept_bare_newlines: flags & 4 != 0,
        spool: flags & 0x40 != 0,
        observe: flags & 0x10 != 0,
        observe_detail: flags & 0x08 != 0,
        capabilities: Capabilities {
            chunking: flags & 0x20 == 0,
            ..Capabilities::default()
        },
    };
    let chunking = config.capabilities.chunking;
    let mut session = Session::new(Arc::new(config), SessionInfo::new(Peer::Stdio, "fuzz"));
    let split = usize::from(split).max(1);
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut commits = 0usize;
    let mut n = 0u32;
    // The reply invariant: what the session owes, and what it sent.
    let mut owed = 1usize; // the greeting (or the refusal at connect)
    let mut replies = 0usize;
    let mut live = false;
    let mut rcpts = 0usize;
    let mut in_data_content = false;
    // Replies owed by a BDAT command whose chunk has not all arrived yet.
    let mut bdat_owed = 0usize;
    for _ in 0..(data.len() * 4 + 64) {
        while let Some(event) = session.poll_event() {
            n = n.wrapping_add(1);
            let answer = match event {
                Event::Reply(r) => {
                    let wire = r.to_bytes();
                    assert!(wire.ends_with(b"\r\n"));
                    assert!((200..=599).contains(&r.code()));
                    replies += 1;
                    if r.code() == 354 {
                        in_data_content = true;
                    }
                    if r == reply::TOO_MANY_ERRORS.into()
                        || r == reply::TOO_MANY_REJECTED_RECIPIENTS.into()
                    {
                        owed += 1; // closing after the command's own reply
                    }
                    continue;
                }
                Event::Commit => {
                    commits += 1;
                    live = false;
                    let outcomes = (0..rcpts)
                        .map(|i| {
                            if (n as usize + i) % 5 == 0 {
                                Err(reply::INSUFFICIENT_STORAGE)
                            } else {
                                Ok(())
                            }
                        })
                        .collect();
                    rcpts = 0;
                    Answer::Committed(outcomes)
                }
                Event::Chunk(c) | Event::Spool(c) => {
                    // A chunk is bounded: the chunk size, plus a line the header scanner held
                    // back, plus (for the first) the trace fields.
                    assert!(c.len() <= 64 + 4096 + 2 + 4096, "{}", c.len());
                    Answer::Done(if n % 13 == 0 {
                        Err(reply::DELIVERY_FAILED)
                    } else {
                        Ok(())
                    })
                }
                Event::StartTls => {
                    session.tls_started(TlsInfo {
                        version: "TLS1.3".into(),
                        cipher: "X".into(),
                    });
                    continue;
                }
                Event::Abort => {
                    live = false;
                    rcpts = 0;
                    continue;
                }
                Event::Close => continue,
                Event::Open => {
                    let ok = (flags >> 3) as u32 ^ n;
                    if ok % 17 == 0 {
                        Answer::Done(Err(reply::DELIVERY_FAILED))
                    } else {
                        live = true;
                        rcpts = 0;
                        Answer::Done(Ok(()))
                    }
                }
                Event::AddRecipient => {
                    if ((flags >> 3) as u32 ^ n) % 5 == 0 {
                        Answer::Done(Err(reply::NO_SUCH_USER))
                    } else {
                        rcpts += 1;
                        Answer::Done(Ok(()))
                    }
                }
                Event::Begin | Event::Unspool => Answer::Done(Ok(())),
                Event::Guard(_) => {
                    let verdict = match (flags >> 3) as u32 ^ n {
                        v if v % 7 == 0 => Verdict::Reject(reply::RELAY_DENIED),
                        v if v % 11 == 0 => Verdict::add_header("X-Fuzz: 1"),
                        v if v % 23 == 0 => Verdict::Reject(Refusal::new(451, [4, 3, 0], "later")),
                        _ => Verdict::Accept,
                    };
                    Answer::Verdict(verdict)
                }
            };
            session.resolve(answer);
        }
        assert!(!session.is_waiting() || session.is_closed());
        if session.is_closed() {
            break;
        }
        let commands = session.stats().commands;
        let was_in_data = session.in_data();
        let used = session.feed(&buf, UNIX_EPOCH);
        if session.stats().commands > commands {
            // One command line: one reply, but BDAT LAST over LMTP in a live transaction
            // owes one per recipient.
            let line = buf[..used].strip_suffix(b"\n").unwrap_or(&buf[..used]);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let due = match parse_command(line) {
                Ok(Command::Bdat { last: true, .. }) if lmtp && live && rcpts > 0 && chunking => {
                    rcpts
                }
                _ => 1,
            };
            owed += due;
            if session.in_data() && !in_data_content {
                bdat_owed = due; // answered once the chunk has arrived
            }
        }
        if was_in_data && !in_data_content && !session.in_data() {
            bdat_owed = 0;
        }
        if was_in_data && in_data_content && !session.in_data() {
            // DATA's final dot: one reply, or one per recipient over LMTP.
            in_data_content = false;
            owed += if lmtp { rcpts.max(1) } else { 1 };
        }
        buf.drain(..used);
        if used == 0 {
            if fed >= data.len() {
                break;
            }
            let end = (fed + split).min(data.len());
            buf.extend_from_slice(&data[fed..end]);
            fed = end;
        }
    }
    // Drain what the last step asked.
    while let Some(event) = session.poll_event() {
        if let Event::Reply(_) = event {
            replies += 1;
        }
    }
    let starts = data
        .windows(4)
        .filter(|w| w.eq_ignore_ascii_case(b"DATA") || w.eq_ignore_ascii_case(b"BDAT"))
        .count();
    assert!(commits <= starts);
    if session.in_data() && !in_data_content {
        owed -= bdat_owed; // the input ended inside a BDAT chunk
    }
    if !session.is_waiting() {
        assert_eq!(
            replies, owed,
            "one reply per command, one per recipient after the data"
        );
    }
});
