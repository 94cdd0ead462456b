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
    /// Every look-up of these names fails (SERVFAIL).
    broken: HashSet<String>,
    /// Every look-up of these names never answers.
    slow: HashSet<String>,
    queries: AtomicUsize,
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
    fn broken(mut self, name: &str) -> Self {
        self.broken.insert(name.into());
        self
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
        self.get(&HashMap::<String, Vec<Name>>::new(), name).await
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
    check(lookup, &config, policy, RECEIVER, info, &envelope(from)).await
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
        Verdict::AddHeader(h) => {
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
