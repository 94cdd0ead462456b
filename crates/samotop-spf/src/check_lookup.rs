//! The DNS as one SPF check sees it: any [`Lookup`], with each SPF record adjusted for the
//! places where viaspf 0.6 departs from RFC 7208. viaspf itself is used unchanged.
//!
//! Two departures, each worked around by rewriting the record viaspf is about to parse (only
//! records that parse; a record with a syntax error goes through as it is, and is `permerror`):
//!
//! * **CIDR prefix length `/0`** (RFC 7208 5.6, 5.3, 5.4: `ip4:1.1.1.1/0` matches every IPv4
//!   address, `a/0` every IPv4 client when the name has an A record). viaspf computes the mask
//!   as `u32::MAX << (32 - len)`, which for 0 overflows: a panic in a debug build, and in a
//!   release build a mask of all ones, so `/0` means `/32`. Rewritten so that viaspf never
//!   sees a `/0`:
//!   - `ip4:A/0` becomes `ip4:0.0.0.0/1 ip4:128.0.0.0/1` (with its qualifier), `ip6:A/0`
//!     becomes `ip6:::/1 ip6:8000::/1`: the same set of addresses, no look-up either way.
//!   - `a[:D]/0` and `mx[:D]/0` (the length of the client's family, `/0` or `//0`) get no
//!     prefix length and a target name tagged with a label unique to this check
//!     (`D.<tag>`, `%{d}.<tag>` when there is no `D`). Looked up here, a tagged name is
//!     looked up untagged, and a non-empty address answer becomes the client's own address,
//!     an empty one stays empty (a void look-up, as before). For `mx` the exchanges are
//!     handed to viaspf under synthetic names that map back to them. Look-up counts, void
//!     counts and the 10-exchange limit are those of the original record.
//!     Limitation: a target name longer than 253 characters is cut by viaspf (RFC 7208 7.3)
//!     with the tag on, so possibly by one label more than without it.
//! * **Macros `c`, `r`, `t` in a domain-spec** (RFC 7208 7.1: "allowed only in exp text"; a
//!   syntax error, so `permerror` wherever it is in the record, RFC 7208 4.6). viaspf finds
//!   them only when it expands the term, and ignores the error in `exp=`. Such a record is
//!   made invalid syntax (a `%` is appended), so viaspf returns `permerror` for it.
//!
//! Only TXT strings that begin `v=spf1` (as viaspf selects records, RFC 7208 4.5) are
//! rewritten. An explanation TXT record (`exp=`) that itself begins `v=spf1` and holds such a
//! term would be rewritten too; no other look-up is changed.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use viaspf::lookup::{Lookup, LookupError, LookupResult, Name};
use viaspf::record::{
    A, Directive, DomainSpec, DualCidrLength, Ip4, Ip4CidrLength, Ip6, Ip6CidrLength, MacroExpand,
    MacroKind, MacroString, MacroStringSegment, Mechanism, Modifier, Mx, SpfRecord, Term,
};

/// A [`Lookup`] for one check of `ip`: `dns`, with SPF records rewritten (see the module).
pub(crate) struct CheckLookup<'a, L: ?Sized> {
    dns: &'a L,
    ip: IpAddr,
    /// The label that tags the target names of rewritten `a`/`mx` terms.
    target_tag: String,
    /// The label under which the exchanges of a tagged `mx` are handed out: `<n>.<tag>.`.
    exchange_tag: String,
    exchanges: Mutex<Vec<Name>>,
    /// (rewritten mechanism, original mechanism), as displayed.
    rewritten: Mutex<Vec<(String, String)>>,
    /// Whether the last look-up that failed timed out.
    timed_out: AtomicBool,
}

impl<'a, L: Lookup + ?Sized> CheckLookup<'a, L> {
    /// A view of `dns` for checking the (canonical) address `ip`.
    pub(crate) fn new(dns: &'a L, ip: IpAddr) -> Self {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u8(0);
        let nonce = hasher.finish();
        CheckLookup {
            dns,
            ip: ip.to_canonical(),
            target_tag: format!("spf0-{nonce:016x}"),
            exchange_tag: format!("spf0mx-{nonce:016x}"),
            exchanges: Mutex::new(Vec::new()),
            rewritten: Mutex::new(Vec::new()),
            timed_out: AtomicBool::new(false),
        }
    }

    /// Whether the last look-up that failed timed out. viaspf reports a failed look-up of the
    /// SPF record itself as "DNS lookup failed" whatever the failure; the caller can say
    /// "timed out" instead.
    pub(crate) fn last_failure_was_timeout(&self) -> bool {
        self.timed_out.load(Ordering::Relaxed)
    }

    /// Notes how a look-up ended, and passes its result on.
    fn note<T>(&self, result: LookupResult<T>) -> LookupResult<T> {
        match &result {
            Err(LookupError::Timeout) => self.timed_out.store(true, Ordering::Relaxed),
            Err(LookupError::Dns(_)) => self.timed_out.store(false, Ordering::Relaxed),
            Ok(_) | Err(LookupError::NoRecords) => {}
        }
        result
    }

    /// The mechanism as the domain published it, for one that viaspf reports as matched.
    pub(crate) fn original_mechanism(&self, mechanism: &Mechanism) -> String {
        let shown = mechanism.to_string();
        let rewritten = self.rewritten.lock().unwrap_or_else(|e| e.into_inner());
        rewritten
            .iter()
            .find(|(new, _)| *new == shown)
            .map_or(shown, |(_, original)| original.clone())
    }

    /// The untagged name behind a tagged target name, if `name` is one.
    fn target(&self, name: &Name) -> Option<LookupResult<Name>> {
        let inner = strip_label(name.as_str(), &self.target_tag)?;
        Some(Name::new(inner).map_err(|_| LookupError::NoRecords))
    }

    /// The exchange behind a synthetic exchange name, if `name` is one.
    fn exchange(&self, name: &Name) -> Option<LookupResult<Name>> {
        let index: usize = strip_label(name.as_str(), &self.exchange_tag)?
            .parse()
            .ok()?;
        let exchanges = self.exchanges.lock().unwrap_or_else(|e| e.into_inner());
        Some(exchanges.get(index).cloned().ok_or(LookupError::NoRecords))
    }

    /// The name to ask the DNS for, and whether it is a tagged `/0` name.
    fn resolve(&self, name: &Name) -> LookupResult<(Name, bool)> {
        match self.target(name).or_else(|| self.exchange(name)) {
            Some(real) => Ok((real?, true)),
            None => Ok((name.clone(), false)),
        }
    }

    /// The record as viaspf should see it.
    fn rewrite(&self, txt: String) -> String {
        if !is_spf_record(&txt) {
            return txt;
        }
        let Ok(record) = txt.parse::<SpfRecord>() else {
            return txt;
        };
        if record.terms.iter().any(term_has_exp_only_macro) {
            log::debug!("spf record {txt:?}: c, r or t macro in a domain-spec: permerror");
            return format!("{txt} %");
        }
        let mut changed = false;
        let mut terms = Vec::with_capacity(record.terms.len());
        for term in record.terms {
            let Term::Directive(directive) = &term else {
                terms.push(term);
                continue;
            };
            let Some(new) = self.rewrite_directive(directive) else {
                terms.push(term);
                continue;
            };
            let original = directive.mechanism.to_string();
            let mut rewritten = self.rewritten.lock().unwrap_or_else(|e| e.into_inner());
            for d in &new {
                rewritten.push((d.mechanism.to_string(), original.clone()));
            }
            terms.extend(new.into_iter().map(Term::Directive));
            changed = true;
        }
        if !changed {
            return txt;
        }
        let new = SpfRecord { terms }.to_string();
        log::debug!("spf record {txt:?} evaluated as {new:?} (CIDR /0)");
        new
    }

    /// The directives that replace `directive`, or `None` to keep it.
    fn rewrite_directive(&self, directive: &Directive) -> Option<Vec<Directive>> {
        let qualifier = directive.qualifier;
        let with = |mechanism| Directive {
            qualifier,
            mechanism,
        };
        let halves = |mechanisms: [Mechanism; 2]| Some(mechanisms.into_iter().map(with).collect());
        match &directive.mechanism {
            Mechanism::Ip4(ip4) if ip4.prefix_len.map(Ip4CidrLength::get) == Some(0) => {
                let half = Ip4CidrLength::new(1);
                halves([
                    Mechanism::Ip4(Ip4 {
                        addr: Ipv4Addr::UNSPECIFIED,
                        prefix_len: half,
                    }),
                    Mechanism::Ip4(Ip4 {
                        addr: Ipv4Addr::new(128, 0, 0, 0),
                        prefix_len: half,
                    }),
                ])
            }
            Mechanism::Ip6(ip6) if ip6.prefix_len.map(Ip6CidrLength::get) == Some(0) => {
                let half = Ip6CidrLength::new(1);
                halves([
                    Mechanism::Ip6(Ip6 {
                        addr: Ipv6Addr::UNSPECIFIED,
                        prefix_len: half,
                    }),
                    Mechanism::Ip6(Ip6 {
                        addr: Ipv6Addr::new(0x8000, 0, 0, 0, 0, 0, 0, 0),
                        prefix_len: half,
                    }),
                ])
            }
            Mechanism::A(a) if self.is_zero(a.prefix_len) => {
                let domain_spec = Some(self.tagged(a.domain_spec.as_ref())?);
                Some(vec![with(Mechanism::A(A {
                    domain_spec,
                    prefix_len: None,
                }))])
            }
            Mechanism::Mx(mx) if self.is_zero(mx.prefix_len) => {
                let domain_spec = Some(self.tagged(mx.domain_spec.as_ref())?);
                Some(vec![with(Mechanism::Mx(Mx {
                    domain_spec,
                    prefix_len: None,
                }))])
            }
            _ => None,
        }
    }

    /// Whether the prefix length for the client's address family is 0.
    fn is_zero(&self, prefix_len: Option<DualCidrLength>) -> bool {
        let Some(len) = prefix_len else {
            return false;
        };
        match self.ip {
            IpAddr::V4(_) => len.ip4().map(Ip4CidrLength::get) == Some(0),
            IpAddr::V6(_) => len.ip6().map(Ip6CidrLength::get) == Some(0),
        }
    }

    /// `spec` (or `%{d}`) with the target tag as its last label.
    fn tagged(&self, spec: Option<&DomainSpec>) -> Option<DomainSpec> {
        let spec = spec.map_or_else(|| "%{d}".to_string(), ToString::to_string);
        let spec = spec.strip_suffix('.').unwrap_or(&spec);
        let macro_string: MacroString = format!("{spec}.{}", self.target_tag).parse().ok()?;
        DomainSpec::new(macro_string).ok()
    }

    /// The client's own address when a tagged look-up found addresses of its family.
    fn answer<T>(&self, tagged: bool, addrs: Vec<T>, own: Option<T>) -> Vec<T> {
        match (tagged, own) {
            (true, Some(own)) if !addrs.is_empty() => vec![own],
            _ => addrs,
        }
    }
}

/// `name` (with its final dot) without its last label when that is `label`.
fn strip_label<'n>(name: &'n str, label: &str) -> Option<&'n str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let (inner, last) = name.rsplit_once('.')?;
    last.eq_ignore_ascii_case(label).then_some(inner)
}

/// viaspf's record selection (RFC 7208 4.5): `v=spf1`, any case, then a space or the end.
fn is_spf_record(s: &str) -> bool {
    let prefix = "v=spf1";
    s.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        && (s.len() == prefix.len() || s[prefix.len()..].starts_with(' '))
}

/// True when a domain-spec of `term` uses `c`, `r` or `t` (RFC 7208 7.1: exp text only).
fn term_has_exp_only_macro(term: &Term) -> bool {
    let spec = match term {
        Term::Directive(d) => match &d.mechanism {
            Mechanism::Include(m) => Some(&m.domain_spec),
            Mechanism::A(m) => m.domain_spec.as_ref(),
            Mechanism::Mx(m) => m.domain_spec.as_ref(),
            Mechanism::Ptr(m) => m.domain_spec.as_ref(),
            Mechanism::Exists(m) => Some(&m.domain_spec),
            Mechanism::All | Mechanism::Ip4(_) | Mechanism::Ip6(_) => None,
        },
        Term::Modifier(Modifier::Redirect(m)) => Some(&m.domain_spec),
        Term::Modifier(Modifier::Explanation(m)) => Some(&m.domain_spec),
        Term::Modifier(Modifier::Unknown(_)) => None,
    };
    spec.is_some_and(|spec| {
        spec.as_ref().segments.iter().any(|s| {
            matches!(s, MacroStringSegment::MacroExpand(MacroExpand::Macro(m))
                if matches!(m.kind(), MacroKind::PrettyIp | MacroKind::Receiver | MacroKind::Timestamp))
        })
    })
}

#[async_trait]
impl<L: Lookup + ?Sized> Lookup for CheckLookup<'_, L> {
    async fn lookup_a(&self, name: &Name) -> LookupResult<Vec<Ipv4Addr>> {
        let (name, tagged) = self.resolve(name)?;
        let own = match self.ip {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => None,
        };
        let addrs = self.note(self.dns.lookup_a(&name).await)?;
        Ok(self.answer(tagged, addrs, own))
    }

    async fn lookup_aaaa(&self, name: &Name) -> LookupResult<Vec<Ipv6Addr>> {
        let (name, tagged) = self.resolve(name)?;
        let own = match self.ip {
            IpAddr::V6(ip) => Some(ip),
            IpAddr::V4(_) => None,
        };
        let addrs = self.note(self.dns.lookup_aaaa(&name).await)?;
        Ok(self.answer(tagged, addrs, own))
    }

    async fn lookup_mx(&self, name: &Name) -> LookupResult<Vec<Name>> {
        let Some(real) = self.target(name) else {
            return self.note(self.dns.lookup_mx(name).await);
        };
        let exchanges = self.note(self.dns.lookup_mx(&real?).await)?;
        let mut known = self.exchanges.lock().unwrap_or_else(|e| e.into_inner());
        let mut names = Vec::with_capacity(exchanges.len());
        for exchange in exchanges {
            if let Ok(name) = Name::new(&format!("{}.{}", known.len(), self.exchange_tag)) {
                known.push(exchange);
                names.push(name);
            }
        }
        Ok(names)
    }

    async fn lookup_txt(&self, name: &Name) -> LookupResult<Vec<String>> {
        let txts = self.note(self.dns.lookup_txt(name).await)?;
        Ok(txts.into_iter().map(|txt| self.rewrite(txt)).collect())
    }

    async fn lookup_ptr(&self, ip: IpAddr) -> LookupResult<Vec<Name>> {
        self.note(self.dns.lookup_ptr(ip).await)
    }
}
