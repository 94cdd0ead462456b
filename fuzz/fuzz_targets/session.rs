//! The sans-io session fed arbitrary bytes in arbitrary splits, with STARTTLS on and a
//! policy that answers from the input: never a panic, never an unanswered question, every
//! reply well-formed, and never more committed messages than DATA/BDAT commands.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use samotop_core::{
    Answer, Event, Limits, Peer, Protocol, Session, SessionConfig, SessionInfo, TlsInfo, Verdict,
    reply,
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
            chunk_size: 64,
            ..Limits::default()
        },
        protocol: if lmtp { Protocol::Lmtp } else { Protocol::Smtp },
        starttls: flags & 1 != 0,
        require_tls: flags & 2 != 0,
        accept_bare_newlines: flags & 4 != 0,
    };
    let mut session = Session::new(Arc::new(config), SessionInfo::new(Peer::Stdio, "fuzz"));
    let split = usize::from(split).max(1);
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut commits = 0usize;
    let mut n = 0u32;
    for _ in 0..(data.len() * 4 + 64) {
        while let Some(event) = session.poll_event() {
            n = n.wrapping_add(1);
            match event {
                Event::Reply(r) => {
                    let wire = r.to_bytes();
                    assert!(wire.ends_with(b"\r\n"));
                    assert!((200..=599).contains(&r.code()));
                }
                Event::Commit => {
                    commits += 1;
                    session.resolve(Answer::Committed(vec![Ok(()); 2]));
                }
                Event::Chunk(c) => {
                    assert!(c.len() <= 66);
                    session.resolve(Answer::Written(Ok(())));
                }
                Event::StartTls => session.tls_started(TlsInfo {
                    version: "TLS1.3".into(),
                    cipher: "X".into(),
                }),
                Event::Abort | Event::Close => {}
                _ => {
                    let verdict = match (flags >> 3) as u32 ^ n {
                        v if v % 7 == 0 => Verdict::Reject(reply::RELAY_DENIED),
                        v if v % 11 == 0 => Verdict::AddHeader("X-Fuzz: 1".into()),
                        _ => Verdict::Accept,
                    };
                    session.resolve(Answer::Verdict(verdict));
                }
            }
        }
        assert!(!session.is_waiting() || session.is_closed());
        if session.is_closed() {
            break;
        }
        let used = session.feed(&buf);
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
    let starts = data.windows(4).filter(|w| w.eq_ignore_ascii_case(b"DATA") || w.eq_ignore_ascii_case(b"BDAT")).count();
    assert!(commits <= starts);
});
