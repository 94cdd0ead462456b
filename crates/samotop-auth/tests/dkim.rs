//! DKIM against real signers and real DNS: keys from `opendkim-genkey` and `dknewkey`,
//! messages signed by Debian's `dkimsign`, dkimpy, OpenDKIM (test mode) and
//! `opendkim-testmsg`, keys served by dnsmasq; our verdict must equal dkimpy's
//! (`dkim.verify`, Debian's python3-dkim) on every message, fed whole, in random chunks
//! and byte by byte. Then each tampered case gets its own result.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use common::{Fixture, KeyKind, KeySpec, Split, check};
use samotop_auth::{BodyLength, Config, Context, Limits, Outcome, Resolver, Verifier};

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        Fixture::start(
            "dkim",
            &[
                KeySpec {
                    name: "r2048",
                    kind: KeyKind::Rsa(2048),
                    domains: &["example.com"],
                },
                KeySpec {
                    name: "r1024",
                    kind: KeyKind::Rsa(1024),
                    domains: &["example.com"],
                },
                KeySpec {
                    name: "ed",
                    kind: KeyKind::Ed25519,
                    domains: &["example.com"],
                },
                KeySpec {
                    name: "r512",
                    kind: KeyKind::Rsa(512),
                    domains: &["example.com"],
                },
                KeySpec {
                    name: "revoked",
                    kind: KeyKind::Rsa(1024),
                    domains: &[],
                },
            ],
            &[("revoked._domainkey.example.com", "v=DKIM1; k=rsa; p=")],
            &["com", "org", "net"],
        )
    })
}

const HEADER: &str = "From: Amy <amy@example.com>\r\n\
    To: Bob <bob@example.org>\r\n\
    Subject: Dinner\r\n\
    Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\
    Message-ID: <dinner@example.com>\r\n";

/// The bodies (and a header variant) every signer signs.
fn messages() -> Vec<(&'static str, Vec<u8>)> {
    let long_line = "x".repeat(3000);
    let line_998 = "y".repeat(996);
    let mut eight_bit = HEADER
        .replace("Subject: Dinner", "Subject: Gr\u{fc}\u{df}e aus K\u{f6}ln")
        .into_bytes();
    eight_bit
        .extend_from_slice(b"\r\nGr\xc3\xbc\xc3\x9fe,\r\n\xff\xfe\x80 raw bytes \xe9t\xe9\r\n");
    let folded = HEADER.replace(
        "Subject: Dinner",
        "Subject: A subject that is long enough to be folded\r\n\tover  two lines\r\n and three",
    );
    vec![
        (
            "plain",
            format!("{HEADER}\r\nHello Bob,\r\n\r\nSee you at eight.\r\n\r\nAmy\r\n").into_bytes(),
        ),
        // The edge mail-auth 0.13.3 gets wrong: lines of whitespace only at the end.
        (
            "trailing-wsp",
            format!("{HEADER}\r\nHello.\r\n\r\n  \r\n\t\r\n \t \r\n").into_bytes(),
        ),
        (
            "inner-wsp",
            format!("{HEADER}\r\n  leading  and\t\ttabs \r\nline with trailing   \r\n\r\n\r\n")
                .into_bytes(),
        ),
        (
            "long-lines",
            format!("{folded}\r\n{long_line}\r\n{line_998}\r\nend\r\n").into_bytes(),
        ),
        ("empty", format!("{HEADER}\r\n").into_bytes()),
        (
            "empty-lines",
            format!("{HEADER}\r\n\r\n\r\n\r\n").into_bytes(),
        ),
        ("8bit", eight_bit),
    ]
}

const CANONS: [(&str, &str); 4] = [
    ("simple", "simple"),
    ("relaxed", "relaxed"),
    ("relaxed", "simple"),
    ("simple", "relaxed"),
];

fn all_splits(i: usize) -> [Split; 3] {
    [Split::Whole, Split::Random(i as u64), Split::Bytes]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_signer_every_canonicalization_agrees_with_dkimpy() {
    let f = fixture();
    let mut signed: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, msg) in messages() {
        for (h, b) in CANONS {
            for key in ["r2048", "ed"] {
                signed.push((
                    format!("{name} dkimsign {key} {h}/{b}"),
                    f.dkimsign(&msg, key, "example.com", h, b),
                ));
            }
            for key in ["r1024", "ed"] {
                signed.push((
                    format!("{name} opendkim {key} {h}/{b}"),
                    f.opendkim(&msg, key, "example.com", &format!("{h}/{b}"), None),
                ));
            }
        }
        // Two signatures on one message, and an i= with a local part.
        let twice = f.opendkim(
            &f.dkimsign(&msg, "r2048", "example.com", "simple", "simple"),
            "ed",
            "example.com",
            "relaxed/relaxed",
            None,
        );
        signed.push((format!("{name} two signatures"), twice));
        signed.push((
            format!("{name} dkimpy i="),
            f.dkimpy_sign(&msg, "r1024", "example.com", "\"identity\": \"amy@mail.example.com\", \"hcanon\": \"relaxed\", \"bcanon\": \"relaxed\""),
        ));
    }
    let messages: Vec<Vec<u8>> = signed.iter().map(|(_, m)| m.clone()).collect();
    let reference = f.dkimpy_verify(&messages);
    let verifier = f.verifier(Config::default());
    let mut passes = 0;
    let mut refused = Vec::new();
    for (i, ((what, msg), expected)) in signed.iter().zip(&reference).enumerate() {
        if !expected.iter().all(|&p| p) {
            refused.push(what.clone());
        }
        for split in all_splits(i) {
            let report = check(&verifier, msg, split, &Context::new()).await;
            let ours: Vec<bool> = report
                .dkim
                .iter()
                .map(|r| r.outcome == Outcome::Pass)
                .collect();
            if ours != *expected {
                let path = common::keep(&f.dir, &format!("mismatch-{i}.eml"), msg);
                panic!(
                    "{what} ({split:?}): ours {:?}, dkimpy {expected:?}; message in {}",
                    report.dkim,
                    path.display()
                );
            }
            passes += ours.iter().filter(|&&p| p).count();
        }
    }
    // OpenDKIM 2.11 signs ed25519 over its header with "; b=" on the h= line, then
    // writes the field with b= folded onto a line of its own: under simple header
    // canonicalization that whitespace is signed, so these signatures are invalid, and
    // dkimpy and we both say so. Every other signature verifies.
    let known_bad: Vec<String> = signed
        .iter()
        .map(|(what, _)| what.clone())
        .filter(|what| what.contains("opendkim ed simple/"))
        .collect();
    assert_eq!(refused, known_bad);
    assert_eq!(known_bad.len(), 7 * 2);
    assert_eq!(passes, 3 * 7 * 17);
}

#[tokio::test]
async fn a_pass_in_authentication_results() {
    let f = fixture();
    let (_, msg) = &messages()[0];
    let signed = f.dkimsign(msg, "r2048", "example.com", "relaxed", "relaxed");
    let report = check(
        &f.verifier(Config::default()),
        &signed,
        Split::Whole,
        &Context::new(),
    )
    .await;
    let dkim = &report.dkim[0];
    assert_eq!(dkim.outcome, Outcome::Pass);
    assert_eq!(dkim.key_bits, Some(2048));
    let field = report.authentication_results("mx.example.net").field();
    let b8 = &dkim.b.as_ref().unwrap()[..8];
    assert!(
        field.contains("dkim=pass header.d=example.com header.i=@example.com header.s=r2048"),
        "{field}"
    );
    assert!(field.contains(b8), "{field}");
}

fn body_modified(msg: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(msg).replace("See you at eight.", "See you at nine.");
    text.into_bytes()
}

async fn one(msg: &[u8], config: Config, context: &Context) -> samotop_auth::DkimResult {
    let f = fixture();
    let report = check(&f.verifier(config), msg, Split::Random(7), context).await;
    report.dkim[0].clone()
}

fn plain() -> Vec<u8> {
    messages()[0].1.clone()
}

#[tokio::test]
async fn modified_body_fails() {
    let f = fixture();
    for (h, b) in CANONS {
        let signed = f.dkimsign(&plain(), "r2048", "example.com", h, b);
        let tampered = body_modified(&signed);
        let r = one(&tampered, Config::default(), &Context::new()).await;
        assert_eq!(
            (r.outcome, r.reason.as_deref()),
            (Outcome::Fail, Some("body hash mismatch")),
            "{h}/{b}"
        );
        assert_eq!(f.dkimpy_verify(&[tampered]), vec![vec![false]]);
    }
}

#[tokio::test]
async fn modified_signed_header_fails() {
    let f = fixture();
    let signed = f.opendkim(&plain(), "ed", "example.com", "relaxed/relaxed", None);
    let tampered = String::from_utf8(signed)
        .unwrap()
        .replace("Subject: Dinner", "Subject: Lunch")
        .into_bytes();
    let r = one(&tampered, Config::default(), &Context::new()).await;
    assert_eq!(
        (r.outcome, r.reason.as_deref()),
        (Outcome::Fail, Some("signature did not verify"))
    );
    // Whitespace inside a relaxed header is not a change.
    let signed = f.dkimsign(&plain(), "r2048", "example.com", "relaxed", "relaxed");
    let respaced = String::from_utf8(signed)
        .unwrap()
        .replace("Subject: Dinner", "SUBJECT:   Dinner  ")
        .into_bytes();
    assert_eq!(
        one(&respaced, Config::default(), &Context::new())
            .await
            .outcome,
        Outcome::Pass
    );
    assert_eq!(
        f.dkimpy_verify(&[tampered, respaced]),
        vec![vec![false], vec![true]]
    );
}

#[tokio::test]
async fn a_signature_replayed_on_another_message_fails() {
    let f = fixture();
    let signed =
        String::from_utf8(f.dkimsign(&plain(), "r2048", "example.com", "relaxed", "relaxed"))
            .unwrap();
    let signature = &signed[..signed.find("From: ").unwrap()];
    let other = format!(
        "{signature}From: Amy <amy@example.com>\r\nTo: Eve <eve@example.net>\r\nSubject: Dinner\r\n\
         Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <dinner@example.com>\r\n\r\nWire the money.\r\n"
    );
    let r = one(other.as_bytes(), Config::default(), &Context::new()).await;
    assert_eq!(r.outcome, Outcome::Fail);
}

#[tokio::test]
async fn revoked_key_is_a_permerror() {
    let f = fixture();
    let signed = f.dkimsign(&plain(), "revoked", "example.com", "relaxed", "relaxed");
    let r = one(&signed, Config::default(), &Context::new()).await;
    assert_eq!(
        (r.outcome, r.reason.as_deref()),
        (Outcome::PermError, Some("key revoked"))
    );
    assert_eq!(f.dkimpy_verify(&[signed]), vec![vec![false]]);
}

#[tokio::test]
async fn a_512_bit_key_is_policy() {
    let f = fixture();
    let signed = f.dkimsign(&plain(), "r512", "example.com", "relaxed", "relaxed");
    let r = one(&signed, Config::default(), &Context::new()).await;
    assert_eq!(r.outcome, Outcome::Policy);
    assert_eq!(
        r.reason.as_deref(),
        Some("512-bit RSA key (RFC 8301: at least 1024)")
    );
    // dkimpy refuses it too (minkey=1024).
    assert_eq!(f.dkimpy_verify(&[signed]), vec![vec![false]]);
}

#[tokio::test]
async fn rsa_sha1_is_policy() {
    let f = fixture();
    let signed = f.opendkim_testmsg(&plain(), "r1024", "example.com");
    assert!(String::from_utf8_lossy(&signed).contains("a=rsa-sha1"));
    let r = one(&signed, Config::default(), &Context::new()).await;
    assert_eq!(
        (r.outcome, r.reason.as_deref()),
        (
            Outcome::Policy,
            Some("rsa-sha1 is not acceptable (RFC 8301)")
        )
    );
}

#[tokio::test]
async fn expired_signature_is_a_permerror() {
    let f = fixture();
    let signed = f.opendkim(
        &plain(),
        "r1024",
        "example.com",
        "relaxed/relaxed",
        Some(60),
    );
    assert!(String::from_utf8_lossy(&signed).contains(" x="));
    assert_eq!(
        one(&signed, Config::default(), &Context::new())
            .await
            .outcome,
        Outcome::Pass
    );
    let later = Context::new().at(SystemTime::now() + Duration::from_secs(3600));
    let r = one(&signed, Config::default(), &later).await;
    assert_eq!(
        (r.outcome, r.reason.as_deref()),
        (Outcome::PermError, Some("signature expired (x=)"))
    );
    // A t= far in the future is refused as well.
    let earlier = Context::new().at(SystemTime::now() - Duration::from_secs(2 * 3600));
    assert_eq!(
        one(&signed, Config::default(), &earlier).await.outcome,
        Outcome::PermError
    );
}

#[tokio::test]
async fn appended_content_beyond_l_is_not_signed() {
    let f = fixture();
    for bcanon in ["simple", "relaxed"] {
        let signed = f.dkimpy_sign(
            &plain(),
            "r2048",
            "example.com",
            &format!("\"length\": true, \"bcanon\": \"{bcanon}\""),
        );
        assert!(String::from_utf8_lossy(&signed).contains(" l="));
        let whole = one(&signed, Config::default(), &Context::new()).await;
        assert_eq!(whole.outcome, Outcome::Pass);
        let why = whole.reason.as_deref().unwrap_or_default();
        assert!(why.ends_with("covers the whole body"), "{whole:?}");
        let mut appended = signed.clone();
        appended.extend_from_slice(b"\r\nClick here: http://evil.example/\r\n");
        let extra = (appended.len() - signed.len()) as u64;
        let r = one(&appended, Config::default(), &Context::new()).await;
        assert_eq!(r.outcome, Outcome::Policy, "{bcanon}");
        assert_eq!(r.unsigned_body_bytes, extra, "{bcanon}");
        let why = format!("leaves {extra} body bytes unsigned");
        assert!(r.reason.as_deref().unwrap().ends_with(&why), "{r:?}");
        // Accepted on request, the count stays in the result.
        let lenient = Config {
            body_length: BodyLength::Accept,
            ..Config::default()
        };
        let r = one(&appended, lenient, &Context::new()).await;
        assert_eq!((r.outcome, r.unsigned_body_bytes), (Outcome::Pass, extra));
        // dkimpy trusts l= and passes it.
        assert_eq!(f.dkimpy_verify(&[appended]), vec![vec![true]]);
    }
}

#[tokio::test]
async fn missing_key_is_a_permerror() {
    let f = fixture();
    let signed = f.dkimpy_sign(&plain(), "r1024", "example.com", "\"selector\": \"nokey\"");
    let r = one(&signed, Config::default(), &Context::new()).await;
    assert_eq!(
        (r.outcome, r.reason.as_deref()),
        (Outcome::PermError, Some("no key for signature"))
    );
    assert_eq!(f.dkimpy_verify(&[signed]), vec![vec![false]]);
}

#[tokio::test]
async fn dns_timeout_is_a_temperror() {
    let f = fixture();
    let signed = f.dkimsign(&plain(), "r2048", "example.com", "relaxed", "relaxed");
    // A name server that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let verifier = Verifier::new(
        Resolver::new(Some(silent.local_addr().unwrap())).unwrap(),
        Config {
            limits: Limits {
                timeout: Duration::from_secs(1),
                ..Limits::default()
            },
            ..Config::default()
        },
    );
    let started = std::time::Instant::now();
    let report = check(&verifier, &signed, Split::Whole, &Context::new()).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        report.dkim[0].outcome,
        Outcome::TempError,
        "{:?}",
        report.dkim[0]
    );
    assert_eq!(report.dmarc.outcome, Outcome::TempError);
    assert_eq!(
        report.action(),
        samotop_auth::Action::Tag { quarantine: false }
    );
}

#[tokio::test]
async fn more_signatures_than_the_limit() {
    let f = fixture();
    let mut msg = plain();
    for _ in 0..3 {
        msg = f.dkimsign(&msg, "ed", "example.com", "relaxed", "relaxed");
    }
    let config = Config {
        limits: Limits {
            max_signatures: 2,
            ..Limits::default()
        },
        ..Config::default()
    };
    let report = check(&f.verifier(config), &msg, Split::Whole, &Context::new()).await;
    let outcomes: Vec<_> = report.dkim.iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, [Outcome::Pass, Outcome::Pass, Outcome::Neutral]);
    assert_eq!(
        report.dkim[2].reason.as_deref(),
        Some("1 more signatures not verified (limit 2)")
    );
}
