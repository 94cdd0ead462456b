//! DMARC (RFC 9989) against real DNS: policy records served by dnsmasq, DKIM signatures
//! made by Debian's `dkimsign`, SPF results passed in as the SPF guard would.

mod common;

use std::sync::OnceLock;

use common::{Fixture, KeyKind, KeySpec, Split, check};
use samotop_auth::{
    Action, Config, Context, DMARC_REJECT, Disposition, DmarcMode, MultipleAuthors, Outcome,
    Policy, Report,
};

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        Fixture::start(
            "dmarc",
            &[KeySpec {
                name: "k",
                kind: KeyKind::Rsa(2048),
                domains: &[
                    "example.com",
                    "mail.example.com",
                    "other.net",
                    "strict.org",
                    "example.org",
                    "pct.net",
                    "testing.net",
                    "brand.example",
                ],
            }],
            &[
                (
                    "_dmarc.example.com",
                    "v=DMARC1; p=reject; sp=quarantine; rua=mailto:dmarc@example.com",
                ),
                ("news.example.com", "A 192.0.2.1"),
                ("_dmarc.strict.org", "v=DMARC1; p=reject; adkim=s; aspf=s"),
                ("news.strict.org", "A 192.0.2.2"),
                (
                    "_dmarc.example.org",
                    "v=DMARC1; p=none; sp=quarantine; np=reject",
                ),
                ("sub.example.org", "A 192.0.2.3"),
                ("_dmarc.other.net", "v=DMARC1; p=quarantine"),
                // RFC 7489 semantics: pct=0 applies the next less strict policy.
                ("_dmarc.pct.net", "v=DMARC1; p=reject; pct=0"),
                ("_dmarc.testing.net", "v=DMARC1; p=reject; t=y"),
                // A public suffix operator's record (psd=y) for the "example" TLD.
                ("_dmarc.example", "v=DMARC1; p=reject; psd=y"),
            ],
            &["com", "org", "net", "example"],
        )
    })
}

fn message(from: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: bob@example.net\r\nSubject: Invoice\r\n\
         Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <inv@x>\r\n\r\nPlease pay.\r\n"
    )
    .into_bytes()
}

fn signed(from: &str, d: &str) -> Vec<u8> {
    fixture().dkimsign(&message(from), "k", d, "relaxed", "relaxed")
}

async fn dmarc(msg: &[u8], context: &Context, config: Config) -> Report {
    check(&fixture().verifier(config), msg, Split::Random(3), context).await
}

fn tag() -> Config {
    Config::default()
}

fn enforce() -> Config {
    Config::with_policy(Policy {
        dmarc: DmarcMode::Enforce,
        ..Policy::default()
    })
}

fn ctx() -> Context {
    Context::new()
}

#[tokio::test]
async fn dkim_aligned_passes() {
    let r = dmarc(
        &signed("Amy <amy@example.com>", "example.com"),
        &ctx(),
        enforce(),
    )
    .await;
    assert_eq!(r.dkim[0].outcome, Outcome::Pass);
    assert_eq!(r.dmarc.outcome, Outcome::Pass);
    let e = &r.dmarc.evaluations[0];
    assert_eq!(e.dkim_aligned, ["example.com"]);
    assert_eq!(
        (e.requested, e.policy_domain.as_deref()),
        (Some(Disposition::Reject), Some("example.com"))
    );
    assert_eq!(r.action(), Action::Tag { quarantine: false });
    let field = r.authentication_results("mx.example.net").field();
    assert!(
        field.contains("dmarc=pass policy.dmarc=reject header.from=example.com"),
        "{field}"
    );
}

#[tokio::test]
async fn relaxed_alignment_of_a_subdomain() {
    // From a subdomain, signed by the organizational domain: relaxed alignment.
    let r = dmarc(
        &signed("amy@news.example.com", "example.com"),
        &ctx(),
        tag(),
    )
    .await;
    assert_eq!(r.dmarc.outcome, Outcome::Pass);
    let e = &r.dmarc.evaluations[0];
    assert_eq!(e.organizational_domain.as_deref(), Some("example.com"));
    assert_eq!(e.requested, Some(Disposition::Quarantine)); // sp= for an existing subdomain
    // From the organizational domain, signed by a subdomain.
    let r = dmarc(
        &signed("amy@example.com", "mail.example.com"),
        &ctx(),
        tag(),
    )
    .await;
    assert_eq!(r.dmarc.outcome, Outcome::Pass);
    // SPF only, relaxed: the bounce domain shares the organizational domain.
    let spf = ctx().spf_mailfrom(Outcome::Pass, "bounce.example.com");
    let r = dmarc(&message("amy@example.com"), &spf, tag()).await;
    assert_eq!(r.dkim[0].outcome, Outcome::None);
    assert!(r.dmarc.evaluations[0].spf_aligned);
    assert_eq!(r.dmarc.outcome, Outcome::Pass);
    // An SPF softfail is no authenticated identifier.
    let soft = ctx().spf_mailfrom(Outcome::SoftFail, "example.com");
    let r = dmarc(&message("amy@example.com"), &soft, tag()).await;
    assert_eq!(r.dmarc.outcome, Outcome::Fail);
}

#[tokio::test]
async fn strict_alignment() {
    let r = dmarc(
        &signed("amy@news.strict.org", "strict.org"),
        &ctx(),
        enforce(),
    )
    .await;
    assert_eq!(r.dkim[0].outcome, Outcome::Pass);
    assert_eq!(r.dmarc.outcome, Outcome::Fail);
    assert_eq!(r.dmarc.disposition, Disposition::Reject); // no sp=: p applies
    assert_eq!(r.action(), Action::Reject(DMARC_REJECT));
    // SPF with exactly the author domain aligns strictly.
    let spf = ctx().spf_mailfrom(Outcome::Pass, "news.strict.org");
    let r = dmarc(
        &signed("amy@news.strict.org", "strict.org"),
        &spf,
        enforce(),
    )
    .await;
    assert_eq!(r.dmarc.outcome, Outcome::Pass);
    // A sibling does not.
    let spf = ctx().spf_mailfrom(Outcome::Pass, "bounce.strict.org");
    let r = dmarc(&message("amy@news.strict.org"), &spf, enforce()).await;
    assert_eq!(r.dmarc.outcome, Outcome::Fail);
}

#[tokio::test]
async fn unaligned_fails_and_enforce_rejects() {
    let msg = signed("Amy <amy@example.com>", "other.net");
    let r = dmarc(&msg, &ctx(), tag()).await;
    assert_eq!(r.dkim[0].outcome, Outcome::Pass);
    assert_eq!(r.dmarc.outcome, Outcome::Fail);
    assert_eq!(r.disposition(), Disposition::Reject);
    assert_eq!(r.action(), Action::Tag { quarantine: false }); // tag never refuses
    let field = r.authentication_results("mx.example.net").field();
    assert!(
        field.contains("dmarc=fail policy.dmarc=reject header.from=example.com"),
        "{field}"
    );
    let r = dmarc(&msg, &ctx(), enforce()).await;
    let Action::Reject(refusal) = r.action() else {
        panic!("{:?}", r.action())
    };
    assert_eq!((refusal.code, refusal.enhanced), (550, [5, 7, 1]));
}

#[tokio::test]
async fn subdomain_policy_sp() {
    let r = dmarc(
        &signed("amy@sub.example.org", "other.net"),
        &ctx(),
        enforce(),
    )
    .await;
    assert_eq!(r.dmarc.outcome, Outcome::Fail);
    let e = &r.dmarc.evaluations[0];
    assert_eq!(
        (e.requested, e.nonexistent),
        (Some(Disposition::Quarantine), false)
    );
    assert_eq!(r.action(), Action::Tag { quarantine: true });
    // The organizational domain itself gets p=none.
    let r = dmarc(&signed("amy@example.org", "other.net"), &ctx(), enforce()).await;
    assert_eq!(r.dmarc.evaluations[0].requested, Some(Disposition::None));
    assert_eq!(r.action(), Action::Tag { quarantine: false });
}

#[tokio::test]
async fn nonexistent_subdomain_policy_np() {
    let r = dmarc(
        &signed("amy@ghost.example.org", "other.net"),
        &ctx(),
        enforce(),
    )
    .await;
    assert_eq!(r.dmarc.outcome, Outcome::Fail);
    let e = &r.dmarc.evaluations[0];
    assert_eq!(
        (e.requested, e.nonexistent),
        (Some(Disposition::Reject), true)
    );
    assert_eq!(r.action(), Action::Reject(DMARC_REJECT));
}

#[tokio::test]
async fn a_from_with_two_domains() {
    // RFC 9989 11.5: each author domain is evaluated; one failing fails the message.
    let msg = signed("amy@example.com, eve@other.net", "example.com");
    let r = dmarc(&msg, &ctx(), enforce()).await;
    let outcomes: Vec<_> = r
        .dmarc
        .evaluations
        .iter()
        .map(|e| (e.author_domain.as_str(), e.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [("example.com", Outcome::Pass), ("other.net", Outcome::Fail)]
    );
    assert_eq!(r.dmarc.outcome, Outcome::Fail);
    assert_eq!(r.dmarc.disposition, Disposition::Quarantine);
    assert_eq!(r.action(), Action::Tag { quarantine: true });
    assert!(
        r.dmarc
            .reason
            .as_deref()
            .unwrap()
            .contains("2 author domains")
    );
    let field = r.authentication_results("mx.example.net").field();
    assert!(
        field.contains("header.from=example.com") && field.contains("header.from=other.net"),
        "{field}"
    );
    // Two From fields: the same.
    let two_fields = fixture().dkimsign(
        &[
            b"From: amy@example.com\r\n".as_slice(),
            &message("eve@other.net"),
        ]
        .concat(),
        "k",
        "example.com",
        "relaxed",
        "relaxed",
    );
    let r = dmarc(&two_fields, &ctx(), enforce()).await;
    assert_eq!(r.dmarc.outcome, Outcome::Fail);
    assert!(
        r.dmarc.reason.as_deref().unwrap().contains("2 From fields"),
        "{:?}",
        r.dmarc
    );
    // RFC 9989 5.3.1 read literally: no DMARC result.
    let literal = Config {
        multiple_authors: MultipleAuthors::PermError,
        ..enforce()
    };
    let r = dmarc(&msg, &ctx(), literal).await;
    assert_eq!(r.dmarc.outcome, Outcome::PermError);
    assert_eq!(r.action(), Action::Tag { quarantine: false });
}

#[tokio::test]
async fn pct_zero_and_t_y_apply_one_level_less() {
    let r = dmarc(&signed("amy@pct.net", "other.net"), &ctx(), enforce()).await;
    let e = &r.dmarc.evaluations[0];
    assert_eq!(
        (r.dmarc.outcome, e.requested, e.applied),
        (
            Outcome::Fail,
            Some(Disposition::Reject),
            Disposition::Quarantine
        )
    );
    assert!(e.testing);
    assert_eq!(r.action(), Action::Tag { quarantine: true });
    let field = r.authentication_results("mx").field();
    assert!(field.contains("policy.dmarc=quarantine"), "{field}");
    let r = dmarc(&signed("amy@testing.net", "other.net"), &ctx(), enforce()).await;
    assert_eq!(r.dmarc.evaluations[0].applied, Disposition::Quarantine);
}

#[tokio::test]
async fn a_public_suffix_policy() {
    // No record for shop.brand.example or brand.example: the PSD record (psd=y) at
    // "example" applies, and the organizational domain is brand.example.
    let r = dmarc(
        &signed("amy@shop.brand.example", "brand.example"),
        &ctx(),
        enforce(),
    )
    .await;
    let e = &r.dmarc.evaluations[0];
    assert_eq!(e.policy_domain.as_deref(), Some("example"));
    assert_eq!(e.organizational_domain.as_deref(), Some("brand.example"));
    assert_eq!(r.dmarc.outcome, Outcome::Pass);
    let r = dmarc(&message("amy@shop.brand.example"), &ctx(), enforce()).await;
    assert_eq!(r.dmarc.outcome, Outcome::Fail);
    assert_eq!(r.action(), Action::Reject(DMARC_REJECT));
}

#[tokio::test]
async fn no_record_is_none() {
    let r = dmarc(&message("amy@norecord.net"), &ctx(), enforce()).await;
    assert_eq!(r.dmarc.outcome, Outcome::None);
    assert_eq!(r.action(), Action::Tag { quarantine: false });
}

#[tokio::test]
async fn dns_errors_are_temperror_and_never_reject() {
    // dnsmasq refuses names outside its local domains: a temporary error.
    let r = dmarc(&message("amy@refused.zz"), &ctx(), enforce()).await;
    assert_eq!(r.dmarc.outcome, Outcome::TempError, "{:?}", r.dmarc);
    assert_eq!(r.action(), Action::Tag { quarantine: false });
}

#[tokio::test]
async fn no_author_domain_is_a_permerror() {
    let msg = b"To: bob@example.net\r\nSubject: x\r\n\r\nhi\r\n";
    let r = dmarc(msg, &ctx(), enforce()).await;
    assert_eq!(r.dmarc.outcome, Outcome::PermError);
    assert_eq!(
        r.dmarc.reason.as_deref(),
        Some("no From field (RFC 9989 5.3.1)")
    );
    let r = dmarc(&message("undisclosed-recipients:;"), &ctx(), enforce()).await;
    assert_eq!(r.dmarc.outcome, Outcome::PermError);
}

#[tokio::test]
async fn dmarc_off_asks_nothing() {
    let off = Config::with_policy(Policy {
        dmarc: DmarcMode::Off,
        ..Policy::default()
    });
    let r = dmarc(&message("amy@example.com"), &ctx(), off).await;
    assert_eq!(r.dmarc.outcome, Outcome::None);
    assert_eq!(r.dns_queries, 0);
    assert!(!r.authentication_results("mx").field().contains("dmarc="));
}
