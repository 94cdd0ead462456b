//! Sans-io session scripts: what the client sends, what the server answers. No tokio, no
//! clock: time passes only through `timed_out()`.

use std::sync::Arc;

use samotop_core::{
    Answer, Event, Limits, Peer, Protocol, Reply, Session, SessionConfig, SessionInfo, TlsInfo,
    Verdict, reply,
};

/// What the test's "driver" answers.
#[derive(Clone)]
struct Policy {
    rcpt: fn(&str) -> Verdict,
    commit: fn(usize) -> Vec<Result<(), Reply>>,
    write: Result<(), Reply>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            rcpt: |_| Verdict::Accept,
            commit: |n| vec![Ok(()); n],
            write: Ok(()),
        }
    }
}

#[derive(Default, Debug)]
struct Outcome {
    replies: Vec<String>,
    messages: Vec<Vec<u8>>,
    aborts: usize,
    closed: bool,
    starttls: bool,
}

impl Outcome {
    fn codes(&self) -> Vec<u16> {
        self.replies
            .iter()
            .map(|r| r[..3].parse().unwrap())
            .collect()
    }
}

struct Harness {
    session: Session,
    policy: Policy,
    out: Outcome,
    current: Vec<u8>,
    rcpts: usize,
}

impl Harness {
    fn new(config: SessionConfig) -> Self {
        Self::with_policy(config, Policy::default())
    }

    fn with_policy(config: SessionConfig, policy: Policy) -> Self {
        let info = SessionInfo::new(Peer::Stdio, "mx.test");
        let mut h = Harness {
            session: Session::new(Arc::new(config), info),
            policy,
            out: Outcome::default(),
            current: Vec::new(),
            rcpts: 0,
        };
        h.drain();
        h
    }

    fn drain(&mut self) {
        for _ in 0..100_000 {
            let Some(event) = self.session.poll_event() else {
                return;
            };
            match event {
                Event::Reply(r) => {
                    let bytes = r.to_bytes();
                    let text = String::from_utf8(bytes).unwrap();
                    for line in text.split_terminator("\r\n") {
                        if line.as_bytes()[3] == b' ' {
                            self.out.replies.push(line.to_string());
                        }
                    }
                }
                Event::Connect | Event::Helo | Event::Mail | Event::DataStart => {
                    if event == Event::Mail {
                        self.rcpts = 0;
                        self.current.clear();
                    }
                    self.session.resolve(Answer::Verdict(Verdict::Accept))
                }
                Event::Rcpt(r) => {
                    let v = (self.policy.rcpt)(&r.address);
                    if matches!(v, Verdict::Accept) {
                        self.rcpts += 1;
                    }
                    self.session.resolve(Answer::Verdict(v))
                }
                Event::Chunk(c) => {
                    self.current.extend_from_slice(&c);
                    self.session
                        .resolve(Answer::Written(self.policy.write.clone()))
                }
                Event::Commit => {
                    self.out.messages.push(std::mem::take(&mut self.current));
                    let o = (self.policy.commit)(self.rcpts);
                    self.session.resolve(Answer::Committed(o))
                }
                Event::Abort => {
                    self.out.aborts += 1;
                    self.current.clear();
                }
                Event::StartTls => self.out.starttls = true,
                Event::Close => self.out.closed = true,
            }
        }
        panic!("event loop did not settle");
    }

    /// Feeds everything (in pieces of `split` bytes); returns bytes left unconsumed.
    fn send_split(&mut self, input: &[u8], split: usize) -> usize {
        let mut buf: Vec<u8> = Vec::new();
        let mut pos = 0;
        for _ in 0..10_000_000 {
            let used = self.session.feed(&buf);
            buf.drain(..used);
            self.drain();
            if used == 0 {
                if pos >= input.len() || self.session.is_closed() {
                    return buf.len() + input.len() - pos;
                }
                // Like a socket: more bytes arrive only when the session wants them.
                let end = pos.saturating_add(split).min(input.len());
                buf.extend_from_slice(&input[pos..end]);
                pos = end;
            }
        }
        panic!("feed loop did not settle");
    }

    fn send(&mut self, input: &[u8]) -> usize {
        self.send_split(input, usize::MAX)
    }
}

fn smtp() -> SessionConfig {
    SessionConfig::default()
}

fn codes(input: &[u8]) -> Vec<u16> {
    let mut h = Harness::new(smtp());
    h.send(input);
    h.out.codes()
}

const HAPPY: &[u8] = b"EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n";

#[test]
fn happy_path() {
    let mut h = Harness::new(smtp());
    assert_eq!(h.send(HAPPY), 0);
    assert_eq!(h.out.codes(), [220, 250, 250, 250, 354, 250, 221]);
    assert_eq!(h.out.messages, [b"Subject: hi\r\n\r\nbody\r\n".to_vec()]);
    assert!(h.out.closed);
    assert!(h.out.replies[0].starts_with("220 mx.test ESMTP"));
    assert!(h.out.replies[5].starts_with("250 2.0.0 Message accepted"));
}

#[test]
fn byte_by_byte_is_the_same() {
    for split in [1, 2, 3, 5, 7, 64] {
        let mut h = Harness::new(smtp());
        h.send_split(HAPPY, split);
        assert_eq!(
            h.out.codes(),
            [220, 250, 250, 250, 354, 250, 221],
            "split {split}"
        );
        assert_eq!(h.out.messages, [b"Subject: hi\r\n\r\nbody\r\n".to_vec()]);
    }
}

#[test]
fn ehlo_advertises_every_extension() {
    let mut h = Harness::new(smtp());
    let mut out = Vec::new();
    h.session.feed(b"EHLO x\r\n");
    while let Some(e) = h.session.poll_event() {
        match e {
            Event::Reply(r) => r.write_to(&mut out),
            _ => h.session.resolve(Answer::Verdict(Verdict::Accept)),
        }
    }
    let text = String::from_utf8(out).unwrap();
    for ext in [
        "PIPELINING",
        "SIZE 26214400",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
    ] {
        assert!(
            text.contains(&format!("250-{ext}\r\n")) || text.contains(&format!("250 {ext}\r\n")),
            "{ext} in {text}"
        );
    }
    assert!(!text.contains("STARTTLS"));
}

#[test]
fn helo_is_one_line() {
    let mut h = Harness::new(smtp());
    h.send(b"HELO client\r\n");
    assert_eq!(
        h.out.replies,
        ["220 mx.test ESMTP Samotop ready", "250 mx.test"]
    );
}

#[test]
fn bad_sequences() {
    let cases: &[(&[u8], &[u16])] = &[
        (b"EHLO x\r\nRCPT TO:<a@b>\r\n", &[220, 250, 503]),
        (b"EHLO x\r\nDATA\r\n", &[220, 250, 503]),
        (b"EHLO x\r\nMAIL FROM:<>\r\nDATA\r\n", &[220, 250, 250, 554]),
        (
            b"EHLO x\r\nMAIL FROM:<>\r\nMAIL FROM:<>\r\n",
            &[220, 250, 250, 503],
        ),
        (b"MAIL FROM:<a@b>\r\n", &[220, 503]),
        (
            b"EHLO x\r\nBDAT 3 LAST\r\nabcNOOP\r\n",
            &[220, 250, 503, 250],
        ),
        (b"EHLO x\r\nFOO\r\n", &[220, 250, 500]),
        (b"EHLO x\r\nMAIL FROM:a@b\r\n", &[220, 250, 501]),
        (
            b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:b\r\n",
            &[220, 250, 250, 501],
        ),
        (
            b"EHLO x\r\nVRFY a\r\nEXPN a\r\nHELP\r\nNOOP\r\n",
            &[220, 250, 252, 502, 214, 250],
        ),
        (b"LHLO x\r\n", &[220, 500]),
    ];
    for (input, expected) in cases {
        assert_eq!(
            &codes(input),
            expected,
            "{}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn enhanced_codes_of_bad_sequences() {
    let mut h = Harness::new(smtp());
    h.send(b"EHLO x\r\nRCPT TO:<a@b>\r\n");
    assert!(
        h.out.replies[2].starts_with("503 5.5.1"),
        "{:?}",
        h.out.replies
    );
}

#[test]
fn rset_anywhere() {
    assert_eq!(codes(b"RSET\r\n"), [220, 250]);
    let mut h = Harness::new(smtp());
    h.send(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRSET\r\nRCPT TO:<c@d>\r\nMAIL FROM:<a@b>\r\n");
    assert_eq!(h.out.codes(), [220, 250, 250, 250, 250, 503, 250]);
    assert_eq!(h.out.aborts, 1);
}

#[test]
fn ehlo_resets_transaction() {
    let mut h = Harness::new(smtp());
    h.send(b"EHLO x\r\nMAIL FROM:<a@b>\r\nEHLO y\r\nMAIL FROM:<a@b>\r\n");
    assert_eq!(h.out.codes(), [220, 250, 250, 250, 250]);
    assert_eq!(h.out.aborts, 1);
}

#[test]
fn liberal_space_after_colon() {
    assert_eq!(
        codes(b"EHLO x\r\nMAIL FROM: <a@b>\r\nRCPT TO: <c@d>\r\n"),
        [220, 250, 250, 250]
    );
}

#[test]
fn too_many_recipients() {
    let config = SessionConfig {
        limits: Limits {
            max_recipients: 2,
            ..Limits::default()
        },
        ..smtp()
    };
    let mut h = Harness::new(config);
    h.send(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<1@d>\r\nRCPT TO:<2@d>\r\nRCPT TO:<3@d>\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(h.out.codes(), [220, 250, 250, 250, 250, 452, 354, 250]);
    assert!(h.out.replies[5].starts_with("452 4.5.3"));
}

#[test]
fn line_too_long_is_answered_and_the_session_goes_on() {
    let config = SessionConfig {
        limits: Limits {
            max_line_length: 512,
            ..Limits::default()
        },
        ..smtp()
    };
    let mut h = Harness::new(config);
    let mut input = b"EHLO x\r\nNOOP ".to_vec();
    input.extend(std::iter::repeat_n(b'a', 100_000));
    input.extend_from_slice(b"\r\nNOOP\r\n");
    h.send_split(&input, 4096);
    assert_eq!(h.out.codes(), [220, 250, 500, 250]);
    assert!(h.out.replies[2].starts_with("500 5.5.2"));
}

#[test]
fn line_too_long_without_newline_is_answered_at_once() {
    let config = SessionConfig {
        limits: Limits {
            max_line_length: 512,
            ..Limits::default()
        },
        ..smtp()
    };
    let mut h = Harness::new(config);
    let consumed_all = h.send_split(&vec![b'x'; 1_000_000], 4096) == 0;
    assert!(consumed_all);
    assert_eq!(h.out.codes(), [220, 500]);
}

#[test]
fn error_budget() {
    let config = SessionConfig {
        limits: Limits {
            max_errors: 3,
            ..Limits::default()
        },
        ..smtp()
    };
    let mut h = Harness::new(config);
    let left = h.send(b"FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n");
    assert_eq!(h.out.codes(), [220, 500, 500, 500, 421]);
    assert!(h.out.replies[4].starts_with("421 4.7.0"));
    assert!(h.out.closed);
    assert_eq!(left, 6, "nothing after the close is read");
}

#[test]
fn declared_size_too_big() {
    let config = SessionConfig {
        limits: Limits {
            max_message_size: 100,
            ..Limits::default()
        },
        ..smtp()
    };
    let mut h = Harness::new(config);
    h.send(b"EHLO x\r\nMAIL FROM:<a@b> SIZE=101\r\nMAIL FROM:<a@b> SIZE=100\r\n");
    assert_eq!(h.out.codes(), [220, 250, 552, 250]);
    assert!(h.out.replies[2].starts_with("552 5.3.4"));
}

#[test]
fn actual_size_too_big() {
    let config = SessionConfig {
        limits: Limits {
            max_message_size: 100,
            chunk_size: 16,
            ..Limits::default()
        },
        ..smtp()
    };
    let mut h = Harness::new(config);
    let mut input = b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n".to_vec();
    input.extend(std::iter::repeat_n(b'a', 1000));
    input.extend_from_slice(b"\r\n.\r\nNOOP\r\n");
    h.send(&input);
    assert_eq!(h.out.codes(), [220, 250, 250, 250, 354, 552, 250]);
    assert!(h.out.messages.is_empty());
    assert_eq!(h.out.aborts, 1);
}

#[test]
fn timeout() {
    let mut h = Harness::new(smtp());
    h.send(b"EHLO x\r\n");
    h.session.timed_out();
    h.drain();
    assert_eq!(h.out.codes(), [220, 250, 421]);
    assert!(h.out.replies[2].starts_with("421 4.4.2"));
    assert!(h.out.closed);
}

#[test]
fn read_timeout_depends_on_state() {
    let config = SessionConfig {
        limits: Limits {
            command_timeout: std::time::Duration::from_secs(7),
            data_timeout: std::time::Duration::from_secs(3),
            ..Limits::default()
        },
        ..smtp()
    };
    let mut h = Harness::new(config);
    assert_eq!(h.session.read_timeout().as_secs(), 7);
    h.send(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\npartial");
    assert_eq!(h.session.read_timeout().as_secs(), 3);
}

#[test]
fn dot_stuffing_round_trip() {
    let mut h = Harness::new(smtp());
    h.send(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n..leading\r\n...two\r\n.\r\n");
    assert_eq!(h.out.messages, [b".leading\r\n..two\r\n".to_vec()]);
}

#[test]
fn smuggling_never_makes_two_messages() {
    let smuggled = b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nsmuggled\r\n";
    for end in [
        &b"\n.\n"[..],
        b"\r.\r\n",
        b"\n.\r\n",
        b"\r\n.\n",
        b"\r\n.\r",
    ] {
        for split in [1, 3, usize::MAX] {
            let mut input = b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nfirst".to_vec();
            input.extend_from_slice(end);
            input.extend_from_slice(smuggled);
            input.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
            let mut h = Harness::new(smtp());
            h.send_split(&input, split);
            assert!(
                h.out.messages.is_empty(),
                "end {end:?}: {:?}",
                h.out.messages
            );
            assert_eq!(
                h.out.codes(),
                [220, 250, 250, 250, 354, 550, 221],
                "end {end:?}"
            );
            assert!(h.out.replies[5].starts_with("550 5.6.0"));
        }
    }
}

#[test]
fn bare_newlines_accepted_when_configured_still_one_message() {
    let config = SessionConfig {
        accept_bare_newlines: true,
        ..smtp()
    };
    let mut h = Harness::new(config);
    h.send(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\na\n.\nMAIL FROM:<e@f>\r\n.\r\n");
    assert_eq!(h.out.codes(), [220, 250, 250, 250, 354, 250]);
    // A bare LF does not start a line: the dot after it is content.
    assert_eq!(h.out.messages, [b"a\n.\nMAIL FROM:<e@f>\r\n".to_vec()]);
}

#[test]
fn eight_bit_data_is_stored_as_is() {
    let mut h = Harness::new(smtp());
    h.send(b"EHLO x\r\nMAIL FROM:<a@b> BODY=8BITMIME\r\nRCPT TO:<c@d>\r\nDATA\r\n\xff\xfe\x80\x00\r\n.\r\n");
    assert_eq!(h.out.messages, [b"\xff\xfe\x80\x00\r\n".to_vec()]);
}

#[test]
fn large_message_streams_in_bounded_chunks() {
    let config = SessionConfig {
        limits: Limits {
            chunk_size: 1024,
            ..Limits::default()
        },
        ..smtp()
    };
    let mut h = Harness::new(config);
    h.send(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
    let line = b"0123456789012345678901234567890123456789012345678901234567890123456789\r\n";
    let mut chunks = 0;
    for _ in 0..2000 {
        let mut buf = line.to_vec();
        while !buf.is_empty() {
            let n = h.session.feed(&buf);
            buf.drain(..n);
            while let Some(e) = h.session.poll_event() {
                match e {
                    Event::Chunk(c) => {
                        assert!(c.len() <= 1026);
                        chunks += 1;
                        h.session.resolve(Answer::Written(Ok(())));
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }
    assert!(chunks >= 130, "{chunks} chunks");
}

#[test]
fn bdat_chunks() {
    let mut h = Harness::new(smtp());
    h.send(b"EHLO x\r\nMAIL FROM:<a@b> BODY=BINARYMIME\r\nRCPT TO:<c@d>\r\nBDAT 5\r\nhelloBDAT 7 LAST\r\n world\nNOOP\r\n");
    assert_eq!(h.out.codes(), [220, 250, 250, 250, 250, 250, 250]);
    assert_eq!(h.out.messages, [b"hello world\n".to_vec()]);
}

#[test]
fn bdat_zero_last() {
    let mut h = Harness::new(smtp());
    h.send(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 3\r\nabcBDAT 0 LAST\r\nNOOP\r\n");
    assert_eq!(h.out.codes(), [220, 250, 250, 250, 250, 250, 250]);
    assert_eq!(h.out.messages, [b"abc".to_vec()]);
}

#[test]
fn bdat_only_zero_last() {
    let mut h = Harness::new(smtp());
    h.send(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 0 LAST\r\nNOOP\r\n");
    assert_eq!(h.out.codes(), [220, 250, 250, 250, 250, 250]);
    assert_eq!(h.out.messages, [Vec::<u8>::new()]);
}

#[test]
fn bdat_then_data_is_refused() {
    let mut h = Harness::new(smtp());
    h.send(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 3\r\nabcDATA\r\nRSET\r\n");
    assert_eq!(h.out.codes(), [220, 250, 250, 250, 250, 503, 250]);
    assert!(h.out.messages.is_empty());
}

#[test]
fn bdat_too_big_is_read_and_refused() {
    let config = SessionConfig {
        limits: Limits {
            max_message_size: 10,
            ..Limits::default()
        },
        ..smtp()
    };
    let mut h = Harness::new(config);
    let mut input = b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 20 LAST\r\n".to_vec();
    input.extend_from_slice(&[b'z'; 20]);
    input.extend_from_slice(b"NOOP\r\n");
    h.send(&input);
    assert_eq!(h.out.codes(), [220, 250, 250, 250, 552, 250]);
    assert!(h.out.messages.is_empty());
}

#[test]
fn starttls_not_configured() {
    assert_eq!(codes(b"EHLO x\r\nSTARTTLS\r\n"), [220, 250, 454]);
}

#[test]
fn starttls_flow() {
    let config = SessionConfig {
        starttls: true,
        ..smtp()
    };
    let mut h = Harness::new(config);
    let left = h.send(b"EHLO x\r\nSTARTTLS\r\nRSET\r\n");
    assert_eq!(h.out.codes(), [220, 250, 220]);
    assert!(h.out.starttls);
    assert_eq!(left, 6, "the session reads nothing until TLS is up");
    h.session.tls_started(TlsInfo {
        version: "TLS1.3".into(),
        cipher: "X".into(),
    });
    assert!(h.session.info().helo.is_none(), "the greeting is forgotten");
    h.send(b"MAIL FROM:<a@b>\r\nEHLO y\r\nSTARTTLS\r\n");
    assert_eq!(h.out.codes(), [220, 250, 220, 503, 250, 503]);
}

#[test]
fn starttls_with_arguments() {
    let config = SessionConfig {
        starttls: true,
        ..smtp()
    };
    let mut h = Harness::new(config);
    h.send(b"EHLO x\r\nSTARTTLS now\r\n");
    assert_eq!(h.out.codes(), [220, 250, 501]);
    assert!(h.out.replies[2].starts_with("501 5.5.4"));
}

#[test]
fn require_tls() {
    let config = SessionConfig {
        require_tls: true,
        starttls: true,
        ..smtp()
    };
    let mut h = Harness::new(config);
    h.send(b"EHLO x\r\nMAIL FROM:<a@b>\r\n");
    assert_eq!(h.out.codes(), [220, 250, 530]);
    assert!(h.out.replies[2].starts_with("530 5.7.0 Must issue a STARTTLS command first"));
}

#[test]
fn smtputf8_needs_the_parameter() {
    let mut h = Harness::new(smtp());
    h.send("EHLO x\r\nMAIL FROM:<δοκιμή@παράδειγμα.δοκιμή>\r\nMAIL FROM:<δοκιμή@παράδειγμα.δοκιμή> SMTPUTF8\r\nRCPT TO:<用户@例子.广告>\r\n".as_bytes());
    assert_eq!(h.out.codes(), [220, 250, 553, 250, 250]);
}

#[test]
fn unknown_parameter() {
    assert_eq!(
        codes(b"EHLO x\r\nMAIL FROM:<a@b> FOO=BAR\r\n"),
        [220, 250, 555]
    );
}

#[test]
fn http_is_refused_and_closed() {
    let mut h = Harness::new(smtp());
    h.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(h.out.codes(), [220, 500]);
    assert!(h.out.closed);
}

#[test]
fn tls_hello_on_plain_port_is_closed() {
    let mut h = Harness::new(smtp());
    h.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
    assert!(h.out.closed);
    assert_eq!(h.out.codes(), [220, 500]);
}

#[test]
fn proxy_v1_header_from_an_untrusted_peer_is_refused_and_closed() {
    let mut h = Harness::new(smtp());
    h.send(b"PROXY TCP4 192.0.2.1 192.0.2.2 4000 25\r\nEHLO x\r\n");
    assert_eq!(h.out.codes(), [220, 500]);
    assert!(h.out.closed);
}

#[test]
fn proxy_v2_header_from_an_untrusted_peer_is_refused_and_closed() {
    let mut h = Harness::new(smtp());
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    header.extend_from_slice(&[192, 0, 2, 1, 192, 0, 2, 2, 0x0f, 0xa0, 0, 25]);
    h.send(&header);
    assert_eq!(h.out.codes(), [220, 500]);
    assert!(h.out.closed);
}

#[test]
fn early_talker() {
    let info = SessionInfo::new(Peer::Stdio, "mx.test");
    let mut s = Session::new(Arc::new(smtp()), info);
    s.early_talker();
    let events: Vec<Event> = std::iter::from_fn(|| s.poll_event()).collect();
    assert!(events.contains(&Event::Reply(reply::EARLY_TALKER)));
    assert_eq!(events.last(), Some(&Event::Close));
}

#[test]
fn rejected_recipient() {
    let policy = Policy {
        rcpt: |a| {
            if a.starts_with("bad") {
                Verdict::Reject(reply::RELAY_DENIED)
            } else {
                Verdict::Accept
            }
        },
        ..Policy::default()
    };
    let mut h = Harness::with_policy(smtp(), policy);
    h.send(
        b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<bad@d>\r\nRCPT TO:<good@d>\r\nDATA\r\nx\r\n.\r\n",
    );
    assert_eq!(h.out.codes(), [220, 250, 250, 550, 250, 354, 250]);
}

#[test]
fn failed_commit_is_never_250() {
    let policy = Policy {
        commit: |n| {
            let mut v = vec![Ok(()); n];
            v[0] = Err(reply::DELIVERY_FAILED);
            v
        },
        ..Policy::default()
    };
    let mut h = Harness::with_policy(smtp(), policy);
    h.send(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<1@d>\r\nRCPT TO:<2@d>\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(h.out.codes(), [220, 250, 250, 250, 250, 354, 451]);
}

#[test]
fn failed_write_is_never_250() {
    let policy = Policy {
        write: Err(reply::INSUFFICIENT_STORAGE),
        ..Policy::default()
    };
    let config = SessionConfig {
        limits: Limits {
            chunk_size: 8,
            ..Limits::default()
        },
        ..smtp()
    };
    let mut h = Harness::with_policy(config, policy);
    h.send(
        b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n0123456789abcdef\r\n.\r\nNOOP\r\n",
    );
    assert_eq!(h.out.codes(), [220, 250, 250, 250, 354, 452, 250]);
    assert!(h.out.messages.is_empty());
}

#[test]
fn lmtp_replies_per_recipient() {
    let config = SessionConfig {
        protocol: Protocol::Lmtp,
        ..smtp()
    };
    let policy = Policy {
        rcpt: |a| {
            if a.starts_with("bad") {
                Verdict::Reject(reply::RELAY_DENIED)
            } else {
                Verdict::Accept
            }
        },
        commit: |n| {
            let mut v = vec![Ok(()); n];
            v[1] = Err(reply::INSUFFICIENT_STORAGE);
            v
        },
        ..Policy::default()
    };
    let mut h = Harness::with_policy(config, policy);
    h.send(b"EHLO x\r\nLHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<1@d>\r\nRCPT TO:<bad@d>\r\nRCPT TO:<2@d>\r\nRCPT TO:<3@d>\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(
        h.out.codes(),
        [220, 500, 250, 250, 250, 550, 250, 250, 354, 250, 452, 250]
    );
    assert!(h.out.replies[0].contains("LMTP"));
}

#[test]
fn lmtp_refused_message_gets_one_reply_per_recipient() {
    let config = SessionConfig {
        protocol: Protocol::Lmtp,
        limits: Limits {
            max_message_size: 4,
            ..Limits::default()
        },
        ..smtp()
    };
    let mut h = Harness::new(config);
    h.send(b"LHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<1@d>\r\nRCPT TO:<2@d>\r\nDATA\r\n0123456789\r\n.\r\n");
    assert_eq!(h.out.codes(), [220, 250, 250, 250, 250, 354, 552, 552]);
}

#[test]
fn shutdown_closes_idle_session() {
    let mut h = Harness::new(smtp());
    h.send(b"EHLO x\r\n");
    assert!(h.session.shutdown());
    h.drain();
    assert_eq!(h.out.codes(), [220, 250, 421]);
    assert!(h.out.replies[2].starts_with("421 4.3.2"));
}

#[test]
fn header_injection_cannot_reach_received() {
    use samotop_core::trace;
    let mut h = Harness::new(smtp());
    h.send(b"EHLO evil\rBcc: x\r\n");
    // The name with a CR is refused by the grammar; nothing reaches the header.
    assert_eq!(h.out.codes(), [220, 501]);
    let env = samotop_core::Envelope::new(
        samotop_core::parser::ReversePath::Null,
        Default::default(),
        "id\r\nX: y".into(),
    );
    let header = trace::received(h.session.info(), &env, std::time::SystemTime::now());
    assert_eq!(
        header.matches("\r\n").count(),
        header.matches("\r\n\t").count() + 1
    );
}

/// Regression: a line just over the limit, its LF in the same read, swallowed the next
/// command (found by tests/integration/test_limits.py).
#[test]
fn command_after_a_slightly_too_long_line_is_answered() {
    let config = SessionConfig {
        limits: Limits {
            max_line_length: 512,
            ..Limits::default()
        },
        ..smtp()
    };
    for len in [513, 600, 1000] {
        let mut input = b"EHLO x\r\nNOOP ".to_vec();
        input.extend(std::iter::repeat_n(b'x', len));
        input.extend_from_slice(b"\r\nNOOP\r\n");
        for split in [usize::MAX, 700, 1] {
            let mut h = Harness::new(config.clone());
            h.send_split(&input, split);
            assert_eq!(
                h.out.codes(),
                [220, 250, 500, 250],
                "len {len} split {split}"
            );
        }
    }
}
