//! SPF evaluation against an in-memory DNS: every result, the RFC 7208 limits, the time
//! bound, and what the policies make of them.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use samotop_core::parser::{Host, MailParams, Mailbox, ReversePath};
use samotop_core::{Envelope, Peer, SessionInfo, Verdict};
use viaspf::lookup::{Lookup, LookupError, LookupResult, Name};

use crate::guard::{Kind, Outcome, check, evaluate, spf_local, test_config};
use crate::header::MAX_REPLY_TEXT;
use crate::{DEFAULT_TIMEOUT, Policy, SpfGuard};

const RECEIVER: &str = "mx.test";

/// A DNS in a map. Names are lower case, without the final dot.
#[derive(Default)]
struct MapLookup {
    txt: HashMap<String, Vec<String>>,
    a: HashMap<String, Vec<Ipv4Addr>>,
    aaaa: HashMap<String, Vec<Ipv6Addr>>,
    mx: HashMap<String, Vec<Name>>,
    /// Every look-up of these names fails (SERVFAIL).
    broken: HashSet<String>,
    /// Every look-up of these names never answers.
    slow: HashSet<String>,
    /// Every look-up of these names times out (the resolver's own timeout).
    timeout: HashSet<String>,
    queries: AtomicUsize,
    /// The names asked, in order.
    asked: std::sync::Mutex<Vec<String>>,
}

impl MapLookup {
    fn new() -> Self {
        Self::default()
    }
    fn txt(mut self, name: &str, record: &str) -> Self {
        self.txt.entry(name.into()).or_default().push(record.into());
        self
    }
    fn a(mut self, name: &str, ip: [u8; 4]) -> Self {
        self.a.entry(name.into()).or_default().push(ip.into());
        self
    }
    fn aaaa(mut self, name: &str, ip: &str) -> Self {
        let ip: Ipv6Addr = ip.parse().unwrap();
        self.aaaa.entry(name.into()).or_default().push(ip);
        self
    }
    fn mx(mut self, name: &str, exchange: &str) -> Self {
        let exchange = Name::new(exchange).unwrap();
        self.mx.entry(name.into()).or_default().push(exchange);
        self
    }
    fn broken(mut self, name: &str) -> Self {
        self.broken.insert(name.into());
        self
    }
    fn timeout(mut self, name: &str) -> Self {
        self.timeout.insert(name.into());
        self
    }
    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
    fn slow(mut self, name: &str) -> Self {
        self.slow.insert(name.into());
        self
    }
    fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    async fn get<T: Clone>(
        &self,
        map: &HashMap<String, Vec<T>>,
        name: &Name,
    ) -> LookupResult<Vec<T>> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        let key = name.to_string().to_ascii_lowercase();
        self.asked.lock().unwrap().push(key.clone());
        if self.timeout.contains(&key) {
            return Err(LookupError::Timeout);
        }
        if self.slow.contains(&key) {
            std::future::pending::<()>().await;
        }
        if self.broken.contains(&key) {
            return Err(LookupError::Dns(None));
        }
        match map.get(&key) {
            Some(v) => Ok(v.clone()),
            None => Err(LookupError::NoRecords),
        }
    }
}

#[async_trait]
impl Lookup for MapLookup {
    async fn lookup_a(&self, name: &Name) -> LookupResult<Vec<Ipv4Addr>> {
        self.get(&self.a, name).await
    }
    async fn lookup_aaaa(&self, name: &Name) -> LookupResult<Vec<Ipv6Addr>> {
        self.get(&self.aaaa, name).await
    }
    async fn lookup_mx(&self, name: &Name) -> LookupResult<Vec<Name>> {
        self.get(&self.mx, name).await
    }
    async fn lookup_txt(&self, name: &Name) -> LookupResult<Vec<String>> {
        self.get(&self.txt, name).await
    }
    async fn lookup_ptr(&self, _ip: IpAddr) -> LookupResult<Vec<Name>> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        Err(LookupError::NoRecords)
    }
}

/// The usual test world.
fn dns() -> MapLookup {
    MapLookup::new()
        .txt("pass.test", "v=spf1 ip4:192.0.2.1 ip6:2001:db8::/32 -all")
        .txt("fail.test", "v=spf1 ip4:192.0.2.99 -all")
        .txt("softfail.test", "v=spf1 ip4:192.0.2.99 ~all")
        .txt("neutral.test", "v=spf1 ?all")
        .txt("other-txt.test", "site-verification=abc")
        .txt("syntax.test", "v=spf1 ip4:999.0.2.1 -all")
        .txt("two.test", "v=spf1 -all")
        .txt("two.test", "v=spf1 +all")
        .txt("broken-include.test", "v=spf1 include:servfail.test -all")
        .broken("servfail.test")
        .txt("slow.test", "v=spf1 include:hang.test -all")
        .slow("hang.test")
        .txt("helo.test", "v=spf1 ip4:192.0.2.1 -all")
        .txt(
            "macro.test",
            "v=spf1 exists:%{l}.users.test exists:%{i}.ips.test -all",
        )
        .a("amy.users.test", [127, 0, 0, 2])
        .a("192.0.2.7.ips.test", [127, 0, 0, 2])
        .txt("exp.test", "v=spf1 -all exp=why.exp.test")
        .txt("why.exp.test", "%{d} refuses %{i} (see http://exp.test/)")
        .txt("crlf.test", "v=spf1 -all exp=why.crlf.test")
        .txt("why.crlf.test", "%{d} refuses\r\nInjected: yes")
}

fn tcp(ip: &str) -> Peer {
    let ip: IpAddr = ip.parse().unwrap();
    Peer::Tcp(SocketAddr::new(ip, 40123))
}

fn info(peer: Peer, helo: Option<Host>) -> SessionInfo {
    let mut info = SessionInfo::new(peer, RECEIVER);
    info.helo = helo;
    info
}

fn helo(name: &str) -> Option<Host> {
    Some(Host::Domain(name.into()))
}

fn mailbox(local: &str, domain: Host) -> ReversePath {
    ReversePath::Mailbox(Mailbox {
        local: local.into(),
        domain,
    })
}

fn sender(address: &str) -> ReversePath {
    let (local, domain) = address.rsplit_once('@').unwrap();
    mailbox(local, Host::Domain(domain.into()))
}

fn envelope(sender: ReversePath) -> Envelope {
    Envelope::new(sender, MailParams::default(), "test.1".into())
}

/// The SPF result for `address` sent from `ip` after `HELO client.test`.
async fn result(lookup: &MapLookup, address: &str, ip: &str) -> (Kind, Option<String>) {
    let config = test_config(RECEIVER, DEFAULT_TIMEOUT);
    let helo = Host::Domain("client.test".into());
    let o = evaluate(
        lookup,
        &config,
        ip.parse().unwrap(),
        Some(&helo),
        &sender(address),
    )
    .await;
    (o.kind, o.cause)
}

/// The guard's verdict under `policy`.
async fn verdict_with(
    lookup: &MapLookup,
    policy: Policy,
    info: &SessionInfo,
    from: ReversePath,
) -> Verdict {
    let config = test_config(RECEIVER, DEFAULT_TIMEOUT);
    check(
        lookup,
        &config,
        policy,
        RECEIVER,
        true,
        info,
        &envelope(from),
    )
    .await
}

async fn verdict(policy: Policy, address: &str, ip: &str) -> Verdict {
    verdict_with(
        &dns(),
        policy,
        &info(tcp(ip), helo("client.test")),
        sender(address),
    )
    .await
}

fn header(v: Verdict) -> String {
    match v {
        Verdict::Note(mut note) if note.headers.len() == 1 => {
            // The same verdict, for the Authentication-Results field and DMARC; then the
            // HELO identity's, when it was checked apart.
            assert!(matches!(note.results.len(), 1 | 2), "{note:?}");
            assert!(note.results.iter().all(|r| r.method == "spf"));
            if let Some(h) = note.results.get(1) {
                assert!(h.get("smtp.helo").is_some(), "{note:?}");
            }
            assert!(
                h_has_result(&note.headers[0], &note.results[0].result),
                "{note:?}"
            );
            assert!(
                note.results[0].get("smtp.mailfrom").is_some()
                    || note.results[0].get("smtp.helo").is_some(),
                "{note:?}"
            );
            let h = note.headers.remove(0);
            assert!(!h.contains(['\r', '\n']), "{h:?}");
            h
        }
        other => panic!("expected a header, got {other:?}"),
    }
}

fn rejection(v: Verdict) -> (u16, [u16; 3], String) {
    match v {
        Verdict::Reject(r) => (r.code(), r.enhanced().unwrap(), r.message().to_string()),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

// ---- SPF results ------------------------------------------------------------------------

#[tokio::test]
async fn results_table() {
    let dns = dns();
    let table: &[(&str, &str, Kind)] = &[
        ("a@pass.test", "192.0.2.1", Kind::Pass),
        ("a@pass.test", "2001:db8::1", Kind::Pass),
        ("a@pass.test", "::ffff:192.0.2.1", Kind::Pass),
        ("a@fail.test", "192.0.2.1", Kind::Fail),
        ("a@fail.test", "192.0.2.99", Kind::Pass),
        ("a@softfail.test", "192.0.2.1", Kind::Softfail),
        ("a@neutral.test", "192.0.2.1", Kind::Neutral),
        ("a@no-record.test", "192.0.2.1", Kind::None),
        ("a@other-txt.test", "192.0.2.1", Kind::None),
        ("a@syntax.test", "192.0.2.1", Kind::Permerror),
        ("a@two.test", "192.0.2.1", Kind::Permerror),
        ("a@servfail.test", "192.0.2.1", Kind::Temperror),
        ("a@broken-include.test", "192.0.2.1", Kind::Temperror),
        ("a@not_a_domain", "192.0.2.1", Kind::None),
    ];
    for (address, ip, expected) in table {
        let (kind, cause) = result(&dns, address, ip).await;
        assert_eq!(kind, *expected, "{address} from {ip}: cause {cause:?}");
    }
}

#[tokio::test]
async fn the_whole_local_part_and_the_bare_ip_reach_the_macros() {
    let dns = dns();
    // %{l} expands to the local part: only amy is listed.
    assert_eq!(
        result(&dns, "amy@macro.test", "198.51.100.1").await.0,
        Kind::Pass
    );
    assert_eq!(
        result(&dns, "bob@macro.test", "198.51.100.1").await.0,
        Kind::Fail
    );
    // %{i} expands to the IP alone, never ip:port.
    assert_eq!(
        result(&dns, "bob@macro.test", "192.0.2.7").await.0,
        Kind::Pass
    );
}

// ---- RFC 7208 4.6.4 processing limits -------------------------------------------------

fn chain(n: usize, resolving: bool) -> MapLookup {
    let terms: Vec<String> = (0..n).map(|i| format!("a:h{i}.limits.test")).collect();
    let mut dns = MapLookup::new().txt("limits.test", &format!("v=spf1 {} -all", terms.join(" ")));
    if resolving {
        for i in 0..n {
            dns = dns.a(&format!("h{i}.limits.test"), [198, 51, 100, i as u8]);
        }
    }
    dns
}

#[tokio::test]
async fn ten_dns_mechanisms_are_allowed() {
    let (kind, cause) = result(&chain(10, true), "a@limits.test", "192.0.2.1").await;
    assert_eq!(kind, Kind::Fail, "{cause:?}");
}

#[tokio::test]
async fn more_than_ten_dns_mechanisms_is_permerror() {
    let dns = chain(11, true);
    let (kind, cause) = result(&dns, "a@limits.test", "192.0.2.1").await;
    assert_eq!(kind, Kind::Permerror);
    assert_eq!(cause.as_deref(), Some("lookup limit exceeded"));
    // The 11th term is refused before its query: 1 TXT + 10 A.
    assert_eq!(dns.queries(), 11);
}

#[tokio::test]
async fn more_than_ten_includes_is_permerror() {
    let mut dns = MapLookup::new().txt(
        "inc.test",
        &format!(
            "v=spf1 {} -all",
            (0..11)
                .map(|i| format!("include:i{i}.inc.test"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    );
    for i in 0..11 {
        dns = dns.txt(&format!("i{i}.inc.test"), "v=spf1 ip4:198.51.100.1 -all");
    }
    let (kind, cause) = result(&dns, "a@inc.test", "192.0.2.1").await;
    assert_eq!(kind, Kind::Permerror);
    assert_eq!(cause.as_deref(), Some("lookup limit exceeded"));
}

#[tokio::test]
async fn two_void_lookups_are_allowed() {
    let (kind, cause) = result(&chain(2, false), "a@limits.test", "192.0.2.1").await;
    assert_eq!(kind, Kind::Fail, "{cause:?}");
}

#[tokio::test]
async fn more_than_two_void_lookups_is_permerror() {
    let (kind, cause) = result(&chain(3, false), "a@limits.test", "192.0.2.1").await;
    assert_eq!(kind, Kind::Permerror);
    assert_eq!(cause.as_deref(), Some("void lookup limit exceeded"));
}

#[tokio::test(start_paused = true)]
async fn a_dns_that_never_answers_is_temperror_after_the_timeout() {
    let started = tokio::time::Instant::now();
    let (kind, cause) = result(&dns(), "a@slow.test", "192.0.2.1").await;
    assert_eq!(kind, Kind::Temperror);
    assert_eq!(cause.as_deref(), Some("DNS lookup timed out"));
    // Simulated time: the check was cut at the timeout, not later.
    assert_eq!(started.elapsed(), DEFAULT_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn a_slow_check_does_not_hold_up_another() {
    let dns = Arc::new(dns());
    let slow = tokio::spawn({
        let dns = dns.clone();
        async move { result(&dns, "a@slow.test", "192.0.2.1").await.0 }
    });
    tokio::task::yield_now().await;
    let started = tokio::time::Instant::now();
    assert_eq!(result(&dns, "a@pass.test", "192.0.2.1").await.0, Kind::Pass);
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert!(!slow.is_finished());
    assert_eq!(slow.await.unwrap(), Kind::Temperror);
}

// ---- Policies -----------------------------------------------------------------------

/// RFC 7208 2.3: the HELO identity is checked apart (its result recorded, never deciding),
/// at the same time as MAIL FROM; not again for the null sender, whose identity it is.
#[tokio::test]
async fn the_helo_identity_is_checked_too() {
    let results = |v: Verdict| match v {
        Verdict::Note(note) => note
            .results
            .iter()
            .map(|r| {
                let (name, value) = &r.properties[0];
                format!("{} {name}={value}", r.result)
            })
            .collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    let lookup = dns();
    let peer = || tcp("192.0.2.1");
    let v = verdict_with(
        &lookup,
        Policy::Tag,
        &info(peer(), helo("pass.test")),
        sender("a@fail.test"),
    )
    .await;
    assert_eq!(
        results(v),
        ["fail smtp.mailfrom=fail.test", "pass smtp.helo=pass.test"]
    );
    // A failing HELO does not refuse under reject: MAIL FROM decides.
    let v = verdict_with(
        &lookup,
        Policy::Reject,
        &info(peer(), helo("fail.test")),
        sender("a@pass.test"),
    )
    .await;
    assert_eq!(
        results(v),
        ["pass smtp.mailfrom=pass.test", "fail smtp.helo=fail.test"]
    );
    let v = verdict_with(
        &lookup,
        Policy::Tag,
        &info(peer(), helo("pass.test")),
        ReversePath::Null,
    )
    .await;
    assert_eq!(results(v), ["pass smtp.helo=pass.test"]);
    // An address literal is no HELO identity.
    let literal = Some(Host::Ipv4("192.0.2.1".parse().unwrap()));
    let v = verdict_with(
        &lookup,
        Policy::Tag,
        &info(peer(), literal),
        sender("a@pass.test"),
    )
    .await;
    assert_eq!(results(v), ["pass smtp.mailfrom=pass.test"]);
    // Off on request.
    let config = test_config(RECEIVER, DEFAULT_TIMEOUT);
    let v = check(
        &lookup,
        &config,
        Policy::Tag,
        RECEIVER,
        false,
        &info(peer(), helo("pass.test")),
        &envelope(sender("a@fail.test")),
    )
    .await;
    assert_eq!(results(v), ["fail smtp.mailfrom=fail.test"]);
}

#[tokio::test]
async fn tag_writes_received_spf() {
    assert_eq!(
        header(verdict(Policy::Tag, "a@pass.test", "192.0.2.1").await),
        "Received-SPF: pass (mx.test: domain of a@pass.test designates 192.0.2.1 as permitted \
         sender) client-ip=192.0.2.1; envelope-from=\"a@pass.test\"; helo=client.test; \
         mechanism=\"ip4:192.0.2.1\"; receiver=mx.test; identity=mailfrom"
    );
    assert_eq!(
        header(verdict(Policy::Tag, "a@pass.test", "2001:db8::1").await),
        "Received-SPF: pass (mx.test: domain of a@pass.test designates 2001:db8::1 as permitted \
         sender) client-ip=\"2001:db8::1\"; envelope-from=\"a@pass.test\"; helo=client.test; \
         mechanism=\"ip6:2001:db8::/32\"; receiver=mx.test; identity=mailfrom"
    );
}

#[tokio::test]
async fn tag_tags_every_result() {
    let table = [
        ("a@pass.test", "pass"),
        ("a@fail.test", "fail"),
        ("a@softfail.test", "softfail"),
        ("a@neutral.test", "neutral"),
        ("a@no-record.test", "none"),
        ("a@syntax.test", "permerror"),
        ("a@servfail.test", "temperror"),
    ];
    for (address, result) in table {
        let h = header(verdict(Policy::Tag, address, "192.0.2.1").await);
        assert!(
            h.starts_with(&format!("Received-SPF: {result} (mx.test: ")),
            "{h}"
        );
        assert!(h.ends_with("; receiver=mx.test; identity=mailfrom"), "{h}");
    }
}

#[tokio::test]
async fn reject_refuses_fail_with_550_5_7_23() {
    let (code, enhanced, text) =
        rejection(verdict(Policy::Reject, "a@fail.test", "192.0.2.1").await);
    assert_eq!((code, enhanced), (550, [5, 7, 23]));
    assert_eq!(
        text,
        "SPF check failed: fail.test does not designate 192.0.2.1 as permitted sender"
    );
}

#[tokio::test]
async fn reject_answers_temperror_with_451_4_7_24() {
    let (code, enhanced, text) =
        rejection(verdict(Policy::Reject, "a@servfail.test", "192.0.2.1").await);
    assert_eq!((code, enhanced), (451, [4, 7, 24]));
    assert!(
        text.starts_with("SPF check of servfail.test could not be completed"),
        "{text}"
    );
}

#[tokio::test]
async fn reject_tags_the_other_results() {
    let table = [
        ("a@pass.test", "pass"),
        ("a@softfail.test", "softfail"),
        ("a@neutral.test", "neutral"),
        ("a@no-record.test", "none"),
        ("a@syntax.test", "permerror"),
        ("a@two.test", "permerror"),
    ];
    for (address, result) in table {
        let h = header(verdict(Policy::Reject, address, "192.0.2.1").await);
        assert!(h.starts_with(&format!("Received-SPF: {result} ")), "{h}");
    }
}

#[tokio::test]
async fn reject_quotes_the_domains_explanation() {
    let (code, _, text) = rejection(verdict(Policy::Reject, "a@exp.test", "192.0.2.1").await);
    assert_eq!(code, 550);
    assert_eq!(
        text,
        "SPF check failed: exp.test does not designate 192.0.2.1 as permitted sender \
         (exp.test refuses 192.0.2.1 (see http://exp.test/))"
    );
}

#[tokio::test]
async fn an_explanation_with_line_breaks_is_not_used() {
    // RFC 7208 6.2: an explanation that is not a valid macro string is ignored.
    let (code, _, text) = rejection(verdict(Policy::Reject, "a@crlf.test", "192.0.2.1").await);
    assert_eq!(code, 550);
    assert_eq!(
        text,
        "SPF check failed: crlf.test does not designate 192.0.2.1 as permitted sender"
    );
}

#[tokio::test]
async fn off_accepts_without_lookups() {
    let dns = dns();
    let v = verdict_with(
        &dns,
        Policy::Off,
        &info(tcp("192.0.2.1"), helo("client.test")),
        sender("a@fail.test"),
    )
    .await;
    assert_eq!(v, Verdict::Accept);
    assert_eq!(dns.queries(), 0);
}

#[tokio::test]
async fn a_peer_without_an_ip_is_not_checked() {
    for peer in [Peer::Unix, Peer::Stdio] {
        let dns = dns();
        let v = verdict_with(
            &dns,
            Policy::Reject,
            &info(peer, helo("client.test")),
            sender("a@fail.test"),
        )
        .await;
        assert_eq!(v, Verdict::Accept);
        assert_eq!(dns.queries(), 0);
    }
}

// ---- Identity: RFC 7208 2.4 ---------------------------------------------------------

#[tokio::test]
async fn the_null_sender_is_checked_as_postmaster_at_helo() {
    let dns = dns();
    let h = header(
        verdict_with(
            &dns,
            Policy::Reject,
            &info(tcp("192.0.2.1"), helo("helo.test")),
            ReversePath::Null,
        )
        .await,
    );
    assert_eq!(
        h,
        "Received-SPF: pass (mx.test: domain of postmaster@helo.test designates 192.0.2.1 as \
         permitted sender) client-ip=192.0.2.1; envelope-from=\"\"; helo=helo.test; \
         mechanism=\"ip4:192.0.2.1\"; receiver=mx.test; identity=mailfrom"
    );
    let (code, _, text) = rejection(
        verdict_with(
            &dns,
            Policy::Reject,
            &info(tcp("192.0.2.2"), helo("helo.test")),
            ReversePath::Null,
        )
        .await,
    );
    assert_eq!(code, 550);
    assert!(
        text.contains("helo.test does not designate 192.0.2.2"),
        "{text}"
    );
}

#[tokio::test]
async fn no_domain_to_check_is_none() {
    let dns = dns();
    let literal = info(tcp("192.0.2.1"), Some(Host::Ipv4([192, 0, 2, 1].into())));
    let h = header(verdict_with(&dns, Policy::Reject, &literal, ReversePath::Null).await);
    assert!(
        h.starts_with("Received-SPF: none (mx.test: no domain name to check"),
        "{h}"
    );
    assert!(h.contains(" helo=\"[192.0.2.1]\";"), "{h}");
    let to_literal = mailbox("a", Host::Ipv4([192, 0, 2, 1].into()));
    let h = header(verdict_with(&dns, Policy::Reject, &literal, to_literal).await);
    assert!(h.starts_with("Received-SPF: none "), "{h}");
    assert_eq!(dns.queries(), 0);
}

#[tokio::test]
async fn peer_supplied_text_cannot_break_the_header() {
    let dns = dns();
    let evil_helo = helo("client.test\r\nX-Injected: yes");
    let quoted_local = mailbox("\"a (b) \\\"c\"", Host::Domain("pass.test".into()));
    let h = header(
        verdict_with(
            &dns,
            Policy::Tag,
            &info(tcp("192.0.2.1"), evil_helo),
            quoted_local,
        )
        .await,
    );
    assert!(
        h.starts_with(
            "Received-SPF: pass (mx.test: domain of \"a \\(b\\) \\\\\"c\"@pass.test designates"
        ),
        "{h}"
    );
    assert!(
        h.contains("envelope-from=\"\\\"a (b) \\\\\\\"c\\\"@pass.test\";"),
        "{h}"
    );
    assert!(h.contains(" helo=\"client.test??X-Injected: yes\";"), "{h}");
}

// ---- The guard itself ---------------------------------------------------------------

#[test]
fn constructors() {
    let off = SpfGuard::new(Policy::Off, None, "mx.test").unwrap();
    assert_eq!(off.policy(), Policy::Off);
    let tag = SpfGuard::new(
        Policy::Tag,
        Some("127.0.0.1:5353".parse().unwrap()),
        "mx\r\n.test",
    )
    .unwrap()
    .with_timeout(Duration::from_secs(3));
    assert_eq!(tag.receiver(), "mx??.test");
    assert_eq!(tag.timeout(), Duration::from_secs(3));
    assert!(format!("{tag:?}").starts_with("SpfGuard { policy: Tag"));
}

#[tokio::test]
async fn an_off_guard_accepts() {
    use samotop_core::Guard;
    let off = SpfGuard::new(Policy::Off, None, "mx.test").unwrap();
    let info = info(tcp("192.0.2.1"), helo("client.test"));
    assert_eq!(
        off.mail(&info, &envelope(sender("a@fail.test"))).await,
        Verdict::Accept
    );
}

/// With no DNS server given, the system configuration decides: a missing or empty
/// `/etc/resolv.conf` is a clear error, never a panic. (Run under `unshare -m` with
/// `/dev/null` bound over `/etc/resolv.conf` to see the error branch.)
#[test]
fn system_configuration_or_a_clear_error() {
    let has_nameserver = std::fs::read_to_string("/etc/resolv.conf").is_ok_and(|conf| {
        conf.lines()
            .any(|l| l.trim_start().starts_with("nameserver"))
    });
    match SpfGuard::new(Policy::Tag, None, "mx.test") {
        Ok(guard) => assert!(has_nameserver, "{guard:?}"),
        Err(err @ crate::Error::SystemConfig { .. }) => {
            assert!(!has_nameserver, "{err}");
            assert!(err.to_string().contains("/etc/resolv.conf"), "{err}");
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
    // Off never reads it.
    assert!(SpfGuard::new(Policy::Off, None, "mx.test").is_ok());
}

// ---- Issue 14: RFC 7208 exactness. One regression test per cause found by the OpenSPF
// ---- suite (tests/integration/test_spf_rfc7208.py runs the whole suite through the binary).

/// The whole outcome for `local@domain` (the local part as SMTP carries it) from `ip`.
async fn outcome(lookup: &MapLookup, local: &str, domain: &str, ip: &str) -> Outcome {
    let config = test_config(RECEIVER, DEFAULT_TIMEOUT);
    let helo = Host::Domain("client.test".into());
    let from = mailbox(local, Host::Domain(domain.into()));
    evaluate(lookup, &config, ip.parse().unwrap(), Some(&helo), &from).await
}

/// Issue 14, CIDR `/0` (RFC 7208 5.3, 5.4, 5.6): viaspf 0.6 computes the mask as
/// `u32::MAX << (32 - len)`, which overflows for 0: a panic in a debug build (the session
/// died), `/32` in a release build. The records are rewritten for it (check_lookup.rs).
#[tokio::test]
async fn cidr_prefix_length_zero_matches_every_address_of_its_family() {
    let dns = MapLookup::new()
        .txt("ip4.test", "v=spf1 ip4:1.1.1.1/0 -all")
        .txt("ip4-fail.test", "v=spf1 -ip4:1.1.1.1/0 +all")
        .txt("ip6.test", "v=spf1 ip6:::1.1.1.1/0 -all")
        .txt("a.test", "v=spf1 a/0 -all")
        .a("a.test", [198, 51, 100, 1])
        .aaaa("a.test", "2001:db8::99")
        .txt("a6.test", "v=spf1 a//0 -all")
        .aaaa("a6.test", "2001:db8::99")
        .txt("a-none.test", "v=spf1 a/0 -all")
        .txt("a-dual.test", "v=spf1 a:host.test/0//128 -all")
        .a("host.test", [198, 51, 100, 1])
        .aaaa("host.test", "2001:db8::99")
        .txt("a-dot.test", "v=spf1 a:host.test./0 -all")
        .txt("a-macro.test", "v=spf1 a:%{l}.users.test/0 -all")
        .a("amy.users.test", [198, 51, 100, 7])
        .txt("mx.test", "v=spf1 mx/0 -all")
        .mx("mx.test", "mail.test")
        .a("mail.test", [198, 51, 100, 2])
        .txt("mx6.test", "v=spf1 mx:mx6.test//0 -all")
        .mx("mx6.test", "mail6.test")
        .aaaa("mail6.test", "2001:db8::2")
        .txt("mx-none.test", "v=spf1 mx/0 -all")
        .txt("mx-empty.test", "v=spf1 mx/0 -all")
        .mx("mx-empty.test", "nothing.test");
    let table: &[(&str, &str, &str, Kind, &str)] = &[
        ("a", "ip4.test", "192.0.2.1", Kind::Pass, "ip4:1.1.1.1/0"),
        ("a", "ip4.test", "2001:db8::1", Kind::Fail, "all"),
        (
            "a",
            "ip4.test",
            "::ffff:203.0.113.9",
            Kind::Pass,
            "ip4:1.1.1.1/0",
        ),
        (
            "a",
            "ip4-fail.test",
            "203.0.113.9",
            Kind::Fail,
            "ip4:1.1.1.1/0",
        ),
        (
            "a",
            "ip6.test",
            "2001:db8::1",
            Kind::Pass,
            "ip6:::101:101/0",
        ),
        ("a", "ip6.test", "192.0.2.1", Kind::Fail, "all"),
        ("a", "a.test", "192.0.2.1", Kind::Pass, "a/0"),
        // Only the IPv4 length is 0: an IPv6 client is compared with /128.
        ("a", "a.test", "2001:db8::1", Kind::Fail, "all"),
        ("a", "a.test", "2001:db8::99", Kind::Pass, "a/0"),
        ("a", "a6.test", "2001:db8::1", Kind::Pass, "a//0"),
        ("a", "a6.test", "192.0.2.1", Kind::Fail, "all"),
        // No address at all: no match, even with /0 (a-nxdomain).
        ("a", "a-none.test", "192.0.2.1", Kind::Fail, "all"),
        (
            "a",
            "a-dual.test",
            "192.0.2.1",
            Kind::Pass,
            "a:host.test/0//128",
        ),
        ("a", "a-dual.test", "2001:db8::1", Kind::Fail, "all"),
        (
            "a",
            "a-dual.test",
            "2001:db8::99",
            Kind::Pass,
            "a:host.test/0//128",
        ),
        ("a", "a-dot.test", "192.0.2.1", Kind::Pass, "a:host.test./0"),
        (
            "amy",
            "a-macro.test",
            "192.0.2.1",
            Kind::Pass,
            "a:%{l}.users.test/0",
        ),
        ("bob", "a-macro.test", "192.0.2.1", Kind::Fail, "all"),
        ("a", "mx.test", "192.0.2.1", Kind::Pass, "mx/0"),
        ("a", "mx6.test", "2001:db8::1", Kind::Pass, "mx:mx6.test//0"),
        ("a", "mx6.test", "192.0.2.1", Kind::Fail, "all"),
        ("a", "mx-none.test", "192.0.2.1", Kind::Fail, "all"),
        ("a", "mx-empty.test", "192.0.2.1", Kind::Fail, "all"),
    ];
    for (local, domain, ip, kind, mechanism) in table {
        let o = outcome(&dns, local, domain, ip).await;
        assert_eq!(o.kind, *kind, "{local}@{domain} from {ip}: {o:?}");
        assert_eq!(
            o.mechanism.as_deref(),
            Some(*mechanism),
            "{domain} from {ip}"
        );
    }
    // The DNS only ever saw the names of the records, never a rewritten one.
    for name in dns.asked() {
        assert!(!name.contains("spf0"), "{name}");
    }
}

/// Issue 14: the rewriting for `/0` keeps the look-up and void counts of RFC 7208 4.6.4.
#[tokio::test]
async fn cidr_zero_keeps_the_void_lookup_limit() {
    let dns = MapLookup::new()
        .txt("void2.test", "v=spf1 a:n1.test/0 mx:n2.test/0 -all")
        .txt(
            "void3.test",
            "v=spf1 a:n1.test/0 mx:n2.test/0 a:n3.test/0 -all",
        );
    let o = outcome(&dns, "a", "void2.test", "192.0.2.1").await;
    assert_eq!(o.kind, Kind::Fail, "{o:?}");
    let o = outcome(&dns, "a", "void3.test", "192.0.2.1").await;
    assert_eq!(o.kind, Kind::Permerror, "{o:?}");
    assert_eq!(o.cause.as_deref(), Some("void lookup limit exceeded"));
}

/// Issue 14, domain-specs with `:` or `/` (RFC 7208 7.1: any visible character but `%`):
/// the names reach the DNS as they are (the hickory side: lookup.rs tests).
#[tokio::test]
async fn names_with_colons_and_slashes_are_looked_up_as_they_are() {
    let dns = MapLookup::new()
        .txt("colon.test", "v=spf1 a:foo:bar/baz.test -all")
        .a("foo:bar/baz.test", [192, 0, 2, 1])
        .txt("colon-mx.test", "v=spf1 mx:foo:bar/baz.test -all")
        .mx("foo:bar/baz.test", "foo:bar/baz.test")
        .txt("port.test", "v=spf1 a:example.com:8080");
    assert_eq!(
        outcome(&dns, "a", "colon.test", "192.0.2.1").await.kind,
        Kind::Pass
    );
    assert_eq!(
        outcome(&dns, "a", "colon-mx.test", "192.0.2.1").await.kind,
        Kind::Pass
    );
    // A ':' in the last label is no domain-end: a syntax error.
    assert_eq!(
        outcome(&dns, "a", "port.test", "192.0.2.1").await.kind,
        Kind::Permerror
    );
}

/// Issue 14, TXT with a NUL byte: the NUL stays (lookup.rs joins the strings as bytes), so the
/// record is invalid syntax: permerror; in an explanation it is not valid either, and the
/// default explanation is used. Neither reaches a header or a reply.
#[tokio::test]
async fn a_nul_byte_makes_a_record_invalid_and_an_explanation_unused() {
    let dns = MapLookup::new()
        .txt("nul.test", "v=spf1 a:foo.example.com\0")
        .txt("nul-exp.test", "v=spf1 -all exp=why.nul-exp.test")
        .txt("why.nul-exp.test", "refused\0Injected: yes");
    let o = outcome(&dns, "a", "nul.test", "192.0.2.1").await;
    assert_eq!(o.kind, Kind::Permerror, "{o:?}");
    let o = outcome(&dns, "a", "nul-exp.test", "192.0.2.1").await;
    assert_eq!(
        (o.kind, o.explanation.as_deref()),
        (Kind::Fail, None),
        "{o:?}"
    );
    let h = header(
        verdict_with(
            &dns,
            Policy::Tag,
            &info(tcp("192.0.2.1"), helo("client.test")),
            sender("a@nul.test"),
        )
        .await,
    );
    assert!(!h.contains('\0'), "{h:?}");
    assert!(
        h.contains("; problem=\"invalid SPF record found\"; "),
        "{h}"
    );
}

/// Issue 14, `exp=` whose expansion is a macro only: an empty local part (SMTP `""`) is
/// `postmaster` (RFC 7208 4.3), so `%{l}` expands to it; before, to `""`.
#[tokio::test]
async fn an_empty_local_part_is_postmaster_in_macros() {
    let dns = MapLookup::new()
        .txt("example.net", "v=spf1 -all exp=exp.example.net")
        .txt("exp.example.net", "%{l}");
    for local in ["\"\"", ""] {
        let o = outcome(&dns, local, "example.net", "192.0.2.1").await;
        assert_eq!(o.kind, Kind::Fail, "{local:?}");
        assert_eq!(o.explanation.as_deref(), Some("postmaster"), "{local:?}");
        assert_eq!(o.identity.as_deref(), Some("postmaster@example.net"));
    }
    for (local, expanded) in [
        ("\"amy\"", "amy"),
        ("\"a.b\"", "a.b"),
        ("\"Macro Error\"", "\"Macro Error\""),
        ("amy", "amy"),
    ] {
        let o = outcome(&dns, local, "example.net", "192.0.2.1").await;
        assert_eq!(o.explanation.as_deref(), Some(expanded), "{local:?}");
    }
}

#[test]
fn local_parts_as_spf_sees_them() {
    let table: &[(&str, Option<&str>)] = &[
        ("amy", Some("amy")),
        ("", None),
        ("\"\"", None),
        ("\"amy\"", Some("amy")),
        ("\"a\\my\"", Some("amy")),
        ("\"a..b\"", Some("\"a..b\"")),
        ("\"Macro Error\"", Some("\"Macro Error\"")),
        ("\"quo\\\"te\"", Some("\"quo\\\"te\"")),
        ("\"jos\u{e9}\"", Some("jos\u{e9}")),
    ];
    for (local, expected) in table {
        assert_eq!(spf_local(local).as_deref(), *expected, "{local:?}");
    }
}

/// Issue 14 (exp-only-macro-char): `c`, `r` and `t` are allowed only in explanation text
/// (RFC 7208 7.1); in a domain-spec they are a syntax error, permerror wherever they are
/// (RFC 7208 4.6). viaspf ignored them in `exp=` and after a match.
#[tokio::test]
async fn exp_only_macros_in_a_domain_spec_are_permerror() {
    let dns = MapLookup::new()
        .txt("exp-r.test", "v=spf1 -all exp=%{r}.exp.test")
        .txt("late-c.test", "v=spf1 +all a:%{c}.x.test")
        .txt("redirect-t.test", "v=spf1 redirect=%{t}.x.test")
        .txt("include-upper.test", "v=spf1 include:%{C}.x.test ?all")
        .txt("unknown-mod.test", "v=spf1 -all foo=%{r}")
        .txt("exp-text.test", "v=spf1 -all exp=why.exp-text.test")
        .txt("why.exp-text.test", "%{r} refuses %{c}");
    for domain in [
        "exp-r.test",
        "late-c.test",
        "redirect-t.test",
        "include-upper.test",
    ] {
        let o = outcome(&dns, "a", domain, "192.0.2.1").await;
        assert_eq!(o.kind, Kind::Permerror, "{domain}: {o:?}");
    }
    // An unknown modifier's value is no domain-spec; explanation text may use them.
    assert_eq!(
        outcome(&dns, "a", "unknown-mod.test", "192.0.2.1")
            .await
            .kind,
        Kind::Fail
    );
    let o = outcome(&dns, "a", "exp-text.test", "192.0.2.1").await;
    assert_eq!(o.explanation.as_deref(), Some("mx.test refuses 192.0.2.1"));
}

/// A record that times out is `temperror` "DNS lookup timed out" (viaspf says "failed").
#[tokio::test]
async fn a_timed_out_record_lookup_says_so() {
    let dns = MapLookup::new().timeout("late.test");
    let o = outcome(&dns, "a", "late.test", "192.0.2.1").await;
    assert_eq!(o.kind, Kind::Temperror);
    assert_eq!(o.cause.as_deref(), Some("DNS lookup timed out"));
    let dns = MapLookup::new().broken("late.test");
    let o = outcome(&dns, "a", "late.test", "192.0.2.1").await;
    assert_eq!(o.cause.as_deref(), Some("DNS lookup failed"));
}

/// Received-SPF carries `mechanism=` (or `default`) and, for errors, `problem=` (RFC 7208
/// 9.1).
#[tokio::test]
async fn received_spf_names_the_mechanism_or_the_problem() {
    let table = [
        ("a@neutral.test", "; mechanism=all; "),
        ("a@softfail.test", "; mechanism=all; "),
        ("a@syntax.test", "; problem=\"invalid SPF record found\"; "),
        ("a@servfail.test", "; problem=\"DNS lookup failed\"; "),
    ];
    for (address, part) in table {
        let h = header(verdict(Policy::Tag, address, "192.0.2.1").await);
        assert!(h.contains(part), "{address}: {h}");
    }
    let dns = MapLookup::new().txt("default.test", "v=spf1 ip4:192.0.2.99");
    let h = header(
        verdict_with(
            &dns,
            Policy::Tag,
            &info(tcp("192.0.2.1"), helo("client.test")),
            sender("a@default.test"),
        )
        .await,
    );
    assert!(h.starts_with("Received-SPF: neutral "), "{h}");
    assert!(h.contains("; mechanism=default; "), "{h}");
}

/// A 550 reply line stays within 512 octets (RFC 5321 4.5.3.1.5), whatever the explanation.
#[tokio::test]
async fn a_long_explanation_is_cut_to_fit_the_reply_line() {
    let label = "l".repeat(60);
    let domain = format!("{label}.{label}.{label}.{label}.test");
    let dns = MapLookup::new()
        .txt(&domain, "v=spf1 -all exp=why.long.test")
        .txt("why.long.test", &"x%{o}".repeat(50));
    let v = verdict_with(
        &dns,
        Policy::Reject,
        &info(tcp("192.0.2.1"), helo("client.test")),
        mailbox("a", Host::Domain(domain.clone())),
    )
    .await;
    let (code, _, text) = rejection(v);
    assert_eq!(code, 550);
    assert!(text.len() <= MAX_REPLY_TEXT, "{} octets", text.len());
}

/// The suite's cases that SMTP cannot carry (samotop's parser refuses them with 501), run
/// here against the guard directly: an empty label in the sender's domain is `none`
/// (emptylabel, RFC 7208 4.3); a HELO that is no domain expands `%{h}` to `unknown`, which
/// names nothing (invalid-hello-macro, invalid-domain-long-via-macro: fail or permerror).
#[tokio::test]
async fn identities_smtp_cannot_carry() {
    let dns = MapLookup::new()
        .txt("e9.example.com", "v=spf1 a:%{H} -all")
        .txt("t12.example.com", "v=spf1 a:%{H}.bar -all");
    let config = test_config(RECEIVER, DEFAULT_TIMEOUT);
    let ip: IpAddr = "192.168.218.40".parse().unwrap();
    let good = Host::Domain("mail.example.net".into());
    let o = evaluate(
        &dns,
        &config,
        ip,
        Some(&good),
        &sender("lyme.eater@A...example.com"),
    )
    .await;
    assert_eq!(o.kind, Kind::None, "{o:?}");
    for (helo, address) in [
        ("JUMPIN' JUPITER", "test@e9.example.com"),
        ("%%%%%%%%%%%%%%%%%%%%%%", "foo@t12.example.com"),
    ] {
        let helo = Host::Domain(helo.into());
        let o = evaluate(&dns, &config, ip, Some(&helo), &sender(address)).await;
        assert_eq!(o.kind, Kind::Fail, "{helo:?}: {o:?}");
    }
}

/// `Received-SPF: <result> ...`
fn h_has_result(header: &str, result: &str) -> bool {
    header
        .strip_prefix("Received-SPF: ")
        .is_some_and(|rest| rest.starts_with(result))
}
