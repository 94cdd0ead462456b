//! The SPF guard: checks the MAIL FROM identity against the peer's IP.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use samotop_core::parser::{Host, ReversePath};
use samotop_core::{AuthResult, Envelope, Guard, Note, SessionInfo, Verdict};
use viaspf::lookup::Lookup;
use viaspf::{Config, DomainName, ErrorCause, Sender, SpfResult, SpfResultCause};

use crate::check_lookup::CheckLookup;
use crate::error::Error;
use crate::header::{Fields, MAX_REPLY_TEXT, clean, cut};
use crate::lookup::DnsLookup;
use crate::policy::Policy;
use crate::reply::{SPF_FAIL, SPF_TEMPERROR};

/// Longest time one SPF check may take, all its DNS look-ups included: 20 s, the least that
/// RFC 7208 4.6.4 asks for ("SHOULD allow at least 20 seconds"). Past it the result is
/// `temperror`.
///
/// One look-up is bounded much lower (2 s per try, one retry, 5 s at most), so a name server
/// that never answers gives `temperror` after about 4 s, at the first look-up; this cap is for
/// a chain of slow answers. The sender's MAIL command waits: RFC 5321 4.5.3.2.3 gives it 5
/// minutes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// An SPF (RFC 7208) [`Guard`]: at MAIL, checks whether the sender's domain permits the
/// peer's IP address to send its mail, and tags or refuses by the [`Policy`].
///
/// * The identity checked is the whole MAIL FROM `local@domain`; for the null sender `<>` it
///   is `postmaster@` the HELO name (RFC 7208 2.4). A sender or HELO that is an address
///   literal, or not a valid domain, gives the result `none` (RFC 7208 4.3).
/// * The IP is the peer's address alone (an IPv4-mapped IPv6 address counts as IPv4). A peer
///   without an IP (Unix socket, stdio) is not checked: the mail is accepted untagged.
/// * [`Policy::Tag`] (and [`Policy::Reject`] for results other than `fail` and `temperror`)
///   answers [`Verdict::Note`] with a `Received-SPF` field and an `spf` [`AuthResult`] (RFC 7208 9.1), e.g.
///   `Received-SPF: pass (mx.example.org: domain of a@example.com designates 192.0.2.1 as
///   permitted sender) client-ip=192.0.2.1; envelope-from="a@example.com"; helo=mail.example.com;
///   receiver=mx.example.org; identity=mailfrom`. Peer-supplied parts are cleaned of control
///   characters and quoted, so the field is one line.
/// * The HELO identity (`postmaster@` the HELO name, when it is a domain and the sender is not
///   null) is checked at the same time and recorded as a second `spf` [`AuthResult`] with
///   `smtp.helo`; it never refuses and is not in `Received-SPF` ([`SpfGuard::with_helo_check`]).
/// * [`Policy::Reject`] refuses `fail` with [`SPF_FAIL`] (550 5.7.23) and answers `temperror`
///   with [`SPF_TEMPERROR`] (451 4.7.24); the session goes on.
///
/// Bounds: at most 10 DNS-querying terms and 2 void look-ups per check (RFC 7208 4.6.4; more
/// is `permerror`); each DNS try waits 2 s, a failed query is retried once, and one look-up
/// ends after 5 s at the latest; the whole check is cut at [`DEFAULT_TIMEOUT`], 20 s (see
/// [`SpfGuard::with_timeout`]). A timeout is `temperror`: answered 451 4.7.24 under
/// [`Policy::Reject`], only tagged under [`Policy::Tag`]. Look-ups are async and cached in the
/// guard: a slow DNS delays only the session that waits for it.
///
/// Evaluation is viaspf's, through a per-check view of the DNS that corrects two of its
/// departures from RFC 7208 (CIDR `/0`, and `c`/`r`/`t` macros in a domain-spec; see the
/// crate's `check_lookup` module).
pub struct SpfGuard {
    policy: Policy,
    receiver: String,
    timeout: Duration,
    config: Config,
    lookup: Option<DnsLookup>,
    check_helo: bool,
}

impl fmt::Debug for SpfGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpfGuard")
            .field("policy", &self.policy)
            .field("receiver", &self.receiver)
            .field("timeout", &self.timeout)
            .field("check_helo", &self.check_helo)
            .finish_non_exhaustive()
    }
}

fn spf_config(receiver: &str, timeout: Duration) -> Config {
    // Look-up limits stay at viaspf's defaults, which are RFC 7208's: 10 and 2.
    Config::builder()
        .hostname(receiver)
        .timeout(timeout)
        .build()
}

impl SpfGuard {
    /// A guard with this policy, asking the name server `dns` (UDP and TCP; e.g. a dnsmasq on
    /// `127.0.0.1:5353`), or with `None` the servers of the system configuration
    /// (`/etc/resolv.conf`). `receiver` is our host name, as written in `Received-SPF`
    /// and given to the `%{r}` macro.
    ///
    /// [`Policy::Off`] builds no resolver and reads no configuration.
    ///
    /// # Errors
    ///
    /// [`Error::SystemConfig`] when SPF is on, `dns` is `None` and the system configuration
    /// cannot be read; [`Error::Resolver`] when the resolver cannot be built. No network
    /// traffic happens here.
    pub fn new(
        policy: Policy,
        dns: Option<SocketAddr>,
        receiver: impl Into<String>,
    ) -> Result<SpfGuard, Error> {
        let lookup = match policy {
            Policy::Off => None,
            Policy::Tag | Policy::Reject => Some(DnsLookup::new(dns)?),
        };
        Ok(Self::with_lookup(policy, lookup, receiver.into()))
    }

    /// A guard with this policy asking `resolver`, a hickory resolver the server shares
    /// with other checks (DKIM and DMARC: `samotop_auth::Resolver::from_hickory`), so that
    /// they share one cache. Its timeouts are its own (build it with 2 s per try and one
    /// retry, as [`SpfGuard::new`] does); each look-up is bounded by 5 s on top.
    ///
    /// ```
    /// use samotop_spf::{Policy, SpfGuard};
    /// use hickory_resolver::TokioResolver;
    /// use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
    /// use hickory_resolver::net::runtime::TokioRuntimeProvider;
    ///
    /// let server = NameServerConfig::new("127.0.0.1".parse()?, true, vec![ConnectionConfig::udp()]);
    /// let resolver = TokioResolver::builder_with_config(
    ///     ResolverConfig::from_name_servers(vec![server]),
    ///     TokioRuntimeProvider::default(),
    /// ).build()?;
    /// let spf = SpfGuard::with_resolver(Policy::Tag, resolver.clone(), "mx.example.org");
    /// assert_eq!(spf.policy(), Policy::Tag);
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_resolver(
        policy: Policy,
        resolver: hickory_resolver::TokioResolver,
        receiver: impl Into<String>,
    ) -> SpfGuard {
        let lookup = match policy {
            Policy::Off => None,
            Policy::Tag | Policy::Reject => Some(DnsLookup::from_resolver(resolver)),
        };
        Self::with_lookup(policy, lookup, receiver.into())
    }

    fn with_lookup(policy: Policy, lookup: Option<DnsLookup>, receiver: String) -> SpfGuard {
        let receiver = clean(&receiver);
        SpfGuard {
            policy,
            config: spf_config(&receiver, DEFAULT_TIMEOUT),
            receiver,
            timeout: DEFAULT_TIMEOUT,
            lookup,
            check_helo: true,
        }
    }

    /// Whether the HELO identity is checked too (default yes; RFC 7208 2.3 recommends it).
    /// Its result is recorded (`spf=... smtp.helo=NAME` in [`Envelope::auth`], so in
    /// `Authentication-Results`) and never refuses; the MAIL FROM result alone decides,
    /// and alone goes into `Received-SPF`. Both checks run at once, so a slow DNS costs
    /// the time of one. For the null sender the HELO identity is the MAIL FROM identity
    /// (RFC 7208 2.4): one check.
    pub fn with_helo_check(mut self, check: bool) -> Self {
        self.check_helo = check;
        self
    }

    /// This guard with another limit on the time of one whole check (default
    /// [`DEFAULT_TIMEOUT`], 20 s; RFC 7208 4.6.4 asks for at least 20 s). A check that takes
    /// longer is `temperror`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self.config = spf_config(&self.receiver, timeout);
        self
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Our host name, as given to [`SpfGuard::new`] (control characters replaced).
    pub fn receiver(&self) -> &str {
        &self.receiver
    }

    /// The limit on the time of one check.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl Guard for SpfGuard {
    fn name(&self) -> &'static str {
        "spf"
    }

    async fn mail(&self, info: &SessionInfo, envelope: &Envelope) -> Verdict {
        match &self.lookup {
            Some(lookup) => {
                check(
                    lookup,
                    &self.config,
                    self.policy,
                    &self.receiver,
                    self.check_helo,
                    info,
                    envelope,
                )
                .await
            }
            None => Verdict::Accept,
        }
    }
}

/// An SPF result, as this crate reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Pass,
    Fail,
    Softfail,
    Neutral,
    None,
    Temperror,
    Permerror,
}

impl Kind {
    /// The result keyword of RFC 7208 8 / 9.1.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Pass => "pass",
            Kind::Fail => "fail",
            Kind::Softfail => "softfail",
            Kind::Neutral => "neutral",
            Kind::None => "none",
            Kind::Temperror => "temperror",
            Kind::Permerror => "permerror",
        }
    }
}

/// The outcome of one check, before the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) kind: Kind,
    /// The identity checked (`local@domain`, `postmaster@helo`), if there was one.
    pub(crate) identity: Option<String>,
    /// Its domain.
    pub(crate) domain: Option<String>,
    /// The peer's IP, canonical (IPv4-mapped IPv6 as IPv4).
    pub(crate) ip: IpAddr,
    /// Why an error result, e.g. "DNS lookup timed out".
    pub(crate) cause: Option<String>,
    /// The mechanism that decided the result, as published (`-all`, `ip4:192.0.2.0/24`), or
    /// `default` when none matched; `None` for `none` and the errors.
    pub(crate) mechanism: Option<String>,
    /// The domain's own explanation of a `fail` (the `exp=` modifier), if any.
    pub(crate) explanation: Option<String>,
}

/// The local part as SPF sees it, or `None` when there is none (RFC 7208 4.3: then it is
/// `postmaster`). A quoted-string is the same mailbox as its content (RFC 5321 4.1.2): `"amy"`
/// is `amy`, and `""` is an empty local part, so none; a quoted-string that is not a
/// dot-string (`"Macro Error"`) stays quoted, as SMTP spells it.
pub(crate) fn spf_local(local: &str) -> Option<Cow<'_, str>> {
    let Some(inner) = local
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    else {
        return (!local.is_empty()).then_some(Cow::Borrowed(local));
    };
    let mut content = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        content.push(if c == '\\' {
            chars.next().unwrap_or(c)
        } else {
            c
        });
    }
    if content.is_empty() {
        None
    } else if is_dot_string(&content) {
        Some(Cow::Owned(content))
    } else {
        Some(Cow::Borrowed(local))
    }
}

/// RFC 5321 `Dot-string` (atext of RFC 5322 3.2.3, plus UTF-8 by RFC 6531 3.3).
fn is_dot_string(s: &str) -> bool {
    let atext =
        |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii();
    s.split('.')
        .all(|atom| !atom.is_empty() && atom.chars().all(atext))
}

/// The identity of RFC 7208 2.4 and its domain, or `None` when there is no domain name to
/// check (address literal, no HELO for the null sender). An empty local part is `postmaster`
/// (RFC 7208 4.3).
fn identity(sender: &ReversePath, helo: Option<&Host>) -> Option<(String, String)> {
    match sender {
        ReversePath::Mailbox(m) => match &m.domain {
            Host::Domain(d) => {
                let local = spf_local(&m.local).unwrap_or(Cow::Borrowed("postmaster"));
                Some((format!("{local}@{d}"), d.clone()))
            }
            _ => None,
        },
        ReversePath::Null => match helo {
            Some(Host::Domain(h)) => Some((format!("postmaster@{h}"), h.clone())),
            _ => None,
        },
    }
}

/// Runs `check_host()` (RFC 7208 4) for the MAIL FROM identity with `lookup` as the DNS.
pub(crate) async fn evaluate<L: Lookup>(
    lookup: &L,
    config: &Config,
    ip: IpAddr,
    helo: Option<&Host>,
    sender: &ReversePath,
) -> Outcome {
    let ip = ip.to_canonical();
    let mut outcome = Outcome {
        kind: Kind::None,
        identity: None,
        domain: None,
        ip,
        cause: None,
        mechanism: None,
        explanation: None,
    };
    let Some((identity, domain)) = identity(sender, helo) else {
        outcome.cause = Some("no domain name to check".into());
        return outcome;
    };
    outcome.identity = Some(identity.clone());
    outcome.domain = Some(domain.clone());
    // A local part that viaspf does not take still leaves a domain to check (%{l} then
    // expands to "postmaster"); a domain that is not a valid FQDN is `none` (RFC 7208 4.3).
    let Ok(spf_sender) = Sender::from_address(&identity).or_else(|_| Sender::from_domain(&domain))
    else {
        outcome.cause = Some("sender domain is not a valid domain name".into());
        return outcome;
    };
    let helo_domain = match helo {
        Some(Host::Domain(h)) => DomainName::new(h).ok(),
        _ => None,
    };
    let dns = CheckLookup::new(lookup, ip);
    let result = viaspf::evaluate_sender(&dns, config, ip, &spf_sender, helo_domain.as_ref()).await;
    outcome.kind = match result.spf_result {
        SpfResult::Pass => Kind::Pass,
        SpfResult::Fail(exp) => {
            let exp = exp.as_ref().trim();
            if !exp.is_empty() {
                outcome.explanation = Some(exp.to_string());
            }
            Kind::Fail
        }
        SpfResult::Softfail => Kind::Softfail,
        SpfResult::Neutral => Kind::Neutral,
        SpfResult::None => Kind::None,
        SpfResult::Temperror => Kind::Temperror,
        SpfResult::Permerror => Kind::Permerror,
    };
    match result.cause {
        Some(SpfResultCause::Error(ErrorCause::Dns)) if dns.last_failure_was_timeout() => {
            outcome.cause = Some(ErrorCause::Timeout.to_string());
        }
        Some(SpfResultCause::Error(cause)) => outcome.cause = Some(cause.to_string()),
        Some(SpfResultCause::Match(mechanism)) => {
            outcome.mechanism = Some(dns.original_mechanism(&mechanism));
        }
        None => {}
    }
    if outcome.mechanism.is_none()
        && matches!(
            outcome.kind,
            Kind::Pass | Kind::Fail | Kind::Softfail | Kind::Neutral
        )
    {
        // RFC 7208 9.1: "if no mechanisms matched, substitute the word "default"".
        outcome.mechanism = Some("default".into());
    }
    outcome
}

/// The human explanation of an outcome, for the `Received-SPF` comment.
fn explain(o: &Outcome) -> String {
    let ip = o.ip;
    let Some(id) = o.identity.as_deref() else {
        return "no domain name to check, sender is null or an address literal".into();
    };
    let cause = o.cause.as_deref().unwrap_or("unknown error");
    match o.kind {
        Kind::Pass => format!("domain of {id} designates {ip} as permitted sender"),
        Kind::Fail => format!("domain of {id} does not designate {ip} as permitted sender"),
        Kind::Softfail => {
            format!("domain of transitioning {id} does not designate {ip} as permitted sender")
        }
        Kind::Neutral => format!("{ip} is neither permitted nor denied by domain of {id}"),
        Kind::None => match &o.cause {
            Some(cause) => format!("cannot check {id}: {cause}"),
            None => format!("domain of {id} does not designate permitted sender hosts"),
        },
        Kind::Temperror => format!("error in processing during lookup of {id}: {cause}"),
        Kind::Permerror => format!("permanent error in processing domain of {id}: {cause}"),
    }
}

/// The `Received-SPF` field for an outcome.
pub(crate) fn received_spf(
    o: &Outcome,
    receiver: &str,
    helo: Option<&Host>,
    sender: &ReversePath,
) -> String {
    let helo = helo.map(|h| h.to_string());
    let problem = match o.kind {
        Kind::Temperror | Kind::Permerror => o.cause.as_deref(),
        _ => None,
    };
    Fields {
        result: o.kind.as_str(),
        receiver,
        explanation: &explain(o),
        client_ip: o.ip,
        envelope_from: &sender.to_string(),
        helo: helo.as_deref(),
        mechanism: o.mechanism.as_deref(),
        problem,
    }
    .to_header()
}

/// What the policy makes of an outcome.
pub(crate) fn verdict(
    policy: Policy,
    o: &Outcome,
    helo_outcome: Option<&Outcome>,
    receiver: &str,
    helo: Option<&Host>,
    sender: &ReversePath,
) -> Verdict {
    let domain = clean(o.domain.as_deref().unwrap_or("the sender's domain"));
    match (policy, o.kind) {
        (Policy::Off, _) => Verdict::Accept,
        (Policy::Reject, Kind::Fail) => {
            let mut text = format!(
                "SPF check failed: {domain} does not designate {} as permitted sender",
                o.ip
            );
            if let Some(exp) = &o.explanation {
                text.push_str(&format!(" ({})", clean(exp)));
            }
            Verdict::Reject(SPF_FAIL.text(cut(&text, MAX_REPLY_TEXT)))
        }
        (Policy::Reject, Kind::Temperror) => {
            let cause = clean(o.cause.as_deref().unwrap_or("DNS error"));
            let text =
                format!("SPF check of {domain} could not be completed ({cause}), try again later");
            Verdict::Reject(SPF_TEMPERROR.text(cut(&text, MAX_REPLY_TEXT)))
        }
        (Policy::Tag | Policy::Reject, _) => {
            let mut results = vec![auth_result(o, helo, sender)];
            if let Some(h) = helo_outcome {
                results.push(auth_result(h, helo, &ReversePath::Null));
            }
            Verdict::Note(Note {
                headers: vec![received_spf(o, receiver, helo, sender)],
                results,
                quarantine: false,
            })
        }
    }
}

/// The outcome as an RFC 8601 result, for the `Authentication-Results` field and DMARC:
/// `spf=pass smtp.mailfrom=example.org`, or `smtp.helo=...` for the null sender (RFC 7208
/// 2.4: then the HELO identity was checked).
pub(crate) fn auth_result(o: &Outcome, helo: Option<&Host>, sender: &ReversePath) -> AuthResult {
    let mut result = AuthResult::new("spf", o.kind.as_str());
    match (sender, &o.domain) {
        (ReversePath::Null, _) => {
            let helo = helo.map(|h| h.to_string()).unwrap_or_default();
            result = result.property("smtp.helo", clean(&helo));
        }
        (_, Some(domain)) => result = result.property("smtp.mailfrom", clean(domain)),
        (ReversePath::Mailbox(m), None) => {
            result = result.property("smtp.mailfrom", clean(&m.domain.to_string()))
        }
    }
    if let Some(cause) = &o.cause {
        result = result.reason(clean(cause));
    }
    result
}

/// The whole MAIL check with `lookup` as the DNS: the guard's logic, testable without a
/// network.
pub(crate) async fn check<L: Lookup>(
    lookup: &L,
    config: &Config,
    policy: Policy,
    receiver: &str,
    check_helo: bool,
    info: &SessionInfo,
    envelope: &Envelope,
) -> Verdict {
    if policy == Policy::Off {
        return Verdict::Accept;
    }
    let Some(ip) = info.peer.ip() else {
        log::debug!("spf skipped peer={} (no IP address)", info.peer);
        return Verdict::Accept;
    };
    let helo = info.helo.as_ref();
    let helo_identity = check_helo
        && matches!(envelope.sender, ReversePath::Mailbox(_))
        && matches!(helo, Some(Host::Domain(_)));
    let helo_check = async {
        if helo_identity {
            Some(evaluate(lookup, config, ip, helo, &ReversePath::Null).await)
        } else {
            None
        }
    };
    let (outcome, helo_outcome) = tokio::join!(
        evaluate(lookup, config, ip, helo, &envelope.sender),
        helo_check
    );
    if let Some(h) = &helo_outcome {
        log::debug!(
            "spf helo result={} identity={:?} cause={:?}",
            h.kind.as_str(),
            h.identity.as_deref().unwrap_or(""),
            h.cause.as_deref().unwrap_or(""),
        );
    }
    log::debug!(
        "spf result={} identity={:?} ip={} cause={:?}",
        outcome.kind.as_str(),
        outcome.identity.as_deref().unwrap_or(""),
        outcome.ip,
        outcome.cause.as_deref().unwrap_or(""),
    );
    verdict(
        policy,
        &outcome,
        helo_outcome.as_ref(),
        receiver,
        helo,
        &envelope.sender,
    )
}

#[cfg(test)]
pub(crate) fn test_config(receiver: &str, timeout: Duration) -> Config {
    spf_config(receiver, timeout)
}
