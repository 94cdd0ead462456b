//! ARC (RFC 8617) chains built by dkimpy's `arc_sign` over one and two hops, keys in
//! dnsmasq; our `arc=` must equal dkimpy's `arc_verify`, then each tampering fails.

mod common;

use std::sync::OnceLock;

use common::{Fixture, KeyKind, KeySpec, Split, check};
use samotop_auth::{Config, Context, Outcome, Report, claims_authserv_id};

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        Fixture::start(
            "arc",
            &[
                KeySpec {
                    name: "k",
                    kind: KeyKind::Rsa(2048),
                    domains: &["example.com"],
                },
                KeySpec {
                    name: "arc",
                    kind: KeyKind::Rsa(2048),
                    domains: &["fwd1.example", "fwd2.example"],
                },
            ],
            &[("_dmarc.example.com", "v=DMARC1; p=reject")],
            &["com", "org", "net", "example"],
        )
    })
}

const MESSAGE: &str = "From: Amy <amy@example.com>\r\nTo: list@fwd1.example\r\nSubject: Dinner\r\n\
    Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <dinner@example.com>\r\n\r\n\
    See you at eight.\r\n";

fn original() -> Vec<u8> {
    fixture().dkimsign(MESSAGE.as_bytes(), "k", "example.com", "relaxed", "relaxed")
}

/// One forwarder: its own Authentication-Results, then an ARC set over it.
fn hop(msg: &[u8], forwarder: &str, results: &str) -> Vec<u8> {
    let mut with_ar = format!("Authentication-Results: {forwarder}; {results}\r\n").into_bytes();
    with_ar.extend_from_slice(msg);
    fixture().arc_sign(&with_ar, "arc", forwarder, forwarder)
}

fn two_hops() -> Vec<u8> {
    let one = hop(
        &original(),
        "fwd1.example",
        "dkim=pass header.d=example.com",
    );
    hop(&one, "fwd2.example", "arc=pass")
}

async fn arc(msg: &[u8]) -> Report {
    check(
        &fixture().verifier(Config::default()),
        msg,
        Split::Random(11),
        &Context::new(),
    )
    .await
}

fn replace(msg: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8(msg.to_vec()).unwrap();
    assert!(text.contains(from), "{from}");
    text.replacen(from, to, 1).into_bytes()
}

#[tokio::test]
async fn one_and_two_hops_pass() {
    let f = fixture();
    let one = hop(
        &original(),
        "fwd1.example",
        "dkim=pass header.d=example.com",
    );
    let two = hop(&one, "fwd2.example", "arc=pass");
    assert_eq!(f.arc_verify(&[one.clone(), two.clone()]), ["pass", "pass"]);
    for (msg, sets) in [(&one, 1), (&two, 2)] {
        let r = arc(msg).await;
        assert_eq!(r.arc.outcome, Outcome::Pass, "{:?}", r.arc);
        assert_eq!((r.arc.sets, r.arc.oldest_pass), (sets, Some(0)));
        assert_eq!(r.dkim[0].outcome, Outcome::Pass);
        let field = r.authentication_results("mx.example.net").field();
        assert!(field.contains("arc=pass header.oldest-pass=0"), "{field}");
    }
    assert_eq!(arc(&two).await.arc.sealer.as_deref(), Some("fwd2.example"));
    // No ARC at all.
    assert_eq!(arc(&original()).await.arc.outcome, Outcome::None);
}

#[tokio::test]
async fn a_mailing_list_that_modifies_keeps_the_chain() {
    let f = fixture();
    let one = hop(
        &original(),
        "fwd1.example",
        "dkim=pass header.d=example.com",
    );
    // The list rewrites the subject and adds a footer, then seals.
    let modified = replace(&one, "Subject: Dinner", "Subject: [list] Dinner");
    let mut modified = replace(
        &modified,
        "See you at eight.\r\n",
        "See you at eight.\r\n-- \r\nlist footer\r\n",
    );
    modified = hop(&modified, "fwd2.example", "arc=pass");
    assert_eq!(f.arc_verify(std::slice::from_ref(&modified)), ["pass"]);
    let r = arc(&modified).await;
    assert_eq!(r.dkim[0].outcome, Outcome::Fail); // the author's signature broke
    assert_eq!(r.arc.outcome, Outcome::Pass);
    assert_eq!(r.arc.oldest_pass, Some(2)); // AMS i=1 no longer validates
}

#[tokio::test]
async fn tampering_fails_the_chain() {
    let f = fixture();
    let two = two_hops();
    let cases = [
        (
            "body",
            replace(&two, "See you at eight.", "See you at nine."),
        ),
        (
            "a signed header",
            replace(&two, "Subject: Dinner", "Subject: Lunch"),
        ),
        (
            "an ARC-Authentication-Results",
            replace(
                &two,
                "i=1; fwd1.example;",
                "i=1; fwd1.example; spf=pass smtp.mailfrom=evil.example;",
            ),
        ),
        ("a seal's cv", replace(&two, "cv=pass", "cv=none")),
    ];
    let verdicts = f.arc_verify(&cases.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>());
    for ((what, msg), reference) in cases.iter().zip(verdicts) {
        let r = arc(msg).await;
        assert_eq!(r.arc.outcome, Outcome::Fail, "{what}: {:?}", r.arc);
        assert_eq!(reference, "fail", "dkimpy on {what}");
    }
    // A set with a field missing.
    let text = String::from_utf8(two.clone()).unwrap();
    let start = text.rfind("ARC-Seal: i=1").unwrap();
    let end = start + text[start..].find("\r\nARC-").unwrap() + 2;
    let missing = format!("{}{}", &text[..start], &text[end..]);
    let r = arc(missing.as_bytes()).await;
    assert_eq!(r.arc.outcome, Outcome::Fail);
    assert_eq!(
        r.arc.reason.as_deref(),
        Some("ARC set 1 is incomplete or repeated")
    );
}

#[tokio::test]
async fn a_chain_that_says_it_failed() {
    let f = fixture();
    let one = hop(
        &original(),
        "fwd1.example",
        "dkim=pass header.d=example.com",
    );
    let failed = hop(
        &replace(&one, "See you at eight.", "Changed."),
        "fwd2.example",
        "arc=fail",
    );
    assert!(String::from_utf8_lossy(&failed).contains("cv=fail"));
    let r = arc(&failed).await;
    assert_eq!(r.arc.outcome, Outcome::Fail);
    assert_eq!(r.arc.reason.as_deref(), Some("ARC-Seal i=2 has cv=fail"));
    // dkimpy reports the terminated chain as no result.
    assert_ne!(f.arc_verify(&[failed]), ["pass"]);
}

#[test]
fn arc_authentication_results_claim_their_authserv_id() {
    let two = String::from_utf8(two_hops()).unwrap();
    let claims: Vec<&str> = two
        .lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, value)| {
            claims_authserv_id(name.as_bytes(), value.as_bytes(), "fwd1.example")
        })
        .map(|(name, _)| name)
        .collect();
    // Its own Authentication-Results and its ARC-Authentication-Results.
    assert_eq!(
        claims,
        ["ARC-Authentication-Results", "Authentication-Results"],
        "{two}"
    );
}
