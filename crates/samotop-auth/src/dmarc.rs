//! DMARC (RFC 9989, "DMARCbis"): policy records, the DNS tree walk that finds the policy
//! and the organizational domain (no Public Suffix List), identifier alignment, and the
//! policy to apply. Records that still carry RFC 7489's `pct` are honoured as RFC 7489
//! 6.6.4 says.
//!
//! Section numbers are those of RFC 9989; the text was read in
//! draft-ietf-dmarc-dmarcbis-41, the version that went to the RFC Editor.

use crate::dns::Dns;
use crate::lookup::{LookupError, Lookups};
use crate::policy::Disposition;
use crate::report::{DmarcEvaluation, Outcome};
use crate::signature::is_within;

/// The most labels a tree walk asks for at once and the most queries one walk makes
/// (RFC 9989 4.10).
pub const MAX_WALK_QUERIES: usize = 8;

/// Identifier alignment mode (`adkim=`, `aspf=`; RFC 9989 3.2.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Alignment {
    /// `r`: the same organizational domain (the default).
    #[default]
    Relaxed,
    /// `s`: the same domain.
    Strict,
}

/// The `psd=` flag (RFC 9989 4.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Psd {
    Yes,
    No,
    #[default]
    Unknown,
}

/// A DMARC policy record, read leniently: "syntax errors in the remainder of the record
/// MUST be discarded in favor of default values" (RFC 9989 4.8).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Record {
    /// `p=`, when present and valid.
    pub p: Option<Disposition>,
    pub p_invalid: bool,
    pub sp: Option<Disposition>,
    pub np: Option<Disposition>,
    /// An `sp=` or `np=` that is present but not valid.
    pub sub_invalid: bool,
    pub adkim: Alignment,
    pub aspf: Alignment,
    pub psd: Psd,
    /// `t=y`: the domain tests its policy; apply one level less (RFC 9989 4.7).
    pub testing: bool,
    /// RFC 7489's `pct=` (0-100), when present and valid.
    pub pct: Option<u8>,
    /// `rua=` holds at least one syntactically valid URI.
    pub rua_valid: bool,
}

fn trim(value: &[u8]) -> &[u8] {
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let start = value.iter().position(|b| !is_ws(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ws(b))
        .map_or(start, |e| e + 1);
    &value[start..end]
}

fn uri_ok(uri: &[u8]) -> bool {
    // scheme ":" something (RFC 3986 3.1); the obsolete "!size" suffix is allowed.
    let Some(colon) = memchr::memchr(b':', uri) else {
        return false;
    };
    let scheme = &uri[..colon];
    scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && colon + 1 < uri.len()
        && uri.iter().all(|&b| (0x21..0x7f).contains(&b))
}

impl Record {
    /// Parses a TXT record; `None` when it is not a DMARC record (it does not start
    /// with `v=DMARC1`, RFC 9989 4.7 `v`).
    pub(crate) fn parse(txt: &[u8]) -> Option<Record> {
        let mut specs = txt.split(|&b| b == b';');
        let first = specs.next()?;
        let (name, value) = split_tag(first)?;
        if name != b"v" || value != b"DMARC1" {
            return None;
        }
        let mut record = Record::default();
        let mut seen: Vec<&[u8]> = Vec::new();
        for spec in specs {
            let Some((name, value)) = split_tag(spec) else {
                continue; // a syntax error: discarded
            };
            if seen.contains(&name) {
                continue; // a repeated tag: the first counts
            }
            seen.push(name);
            let lower = value.to_ascii_lowercase();
            match name {
                b"p" => match Disposition::parse(value) {
                    Some(p) => record.p = Some(p),
                    None => record.p_invalid = true,
                },
                b"sp" | b"np" => match Disposition::parse(value) {
                    Some(d) if name == b"sp" => record.sp = Some(d),
                    Some(d) => record.np = Some(d),
                    None => record.sub_invalid = true,
                },
                b"adkim" | b"aspf" => {
                    let mode = match lower.as_slice() {
                        b"s" => Alignment::Strict,
                        _ => Alignment::Relaxed,
                    };
                    if name == b"adkim" {
                        record.adkim = mode;
                    } else {
                        record.aspf = mode;
                    }
                }
                b"psd" => {
                    record.psd = match lower.as_slice() {
                        b"y" => Psd::Yes,
                        b"n" => Psd::No,
                        _ => Psd::Unknown,
                    }
                }
                b"t" => record.testing = lower == b"y",
                b"pct" => {
                    record.pct = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse::<u8>().ok())
                        .filter(|&v| v <= 100);
                }
                b"rua" => {
                    record.rua_valid = value.split(|&b| b == b',').any(|uri| uri_ok(trim(uri)));
                }
                _ => {} // unknown tags MUST be ignored (RFC 9989 4.7)
            }
        }
        Some(record)
    }

    /// The record as it applies: `None` when it has no valid `p=` (or a bad `sp=`/`np=`)
    /// and no valid `rua=`: then "the Mail Receiver applies no DMARC processing"; with a
    /// valid `rua=` it acts as `p=none` (RFC 9989 4.10.1).
    pub(crate) fn effective(&self) -> Option<Record> {
        if self.p.is_some() && !self.sub_invalid {
            return Some(self.clone());
        }
        self.rua_valid.then(|| Record {
            p: Some(Disposition::None),
            sp: None,
            np: None,
            ..self.clone()
        })
    }
}

fn split_tag(spec: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = memchr::memchr(b'=', spec)?;
    let name = trim(&spec[..eq]);
    let value = trim(&spec[eq + 1..]);
    let name_ok = !name.is_empty() && name.iter().all(u8::is_ascii_alphanumeric);
    (name_ok && !value.is_empty()).then_some((name, value))
}

/// The names a tree walk queries for `domain` (RFC 9989 4.10): the domain itself, then
/// its parents, jumping to seven labels first for longer names; at most eight.
pub(crate) fn walk_targets(domain: &str) -> Vec<String> {
    let labels: Vec<&str> = domain.split('.').collect();
    let mut targets = vec![domain.to_owned()];
    let mut count = labels.len();
    if count > 1 {
        count = (count - 1).min(7);
        while count >= 1 {
            targets.push(labels[labels.len() - count..].join("."));
            count -= 1;
        }
    }
    targets
}

/// One tree walk: the records found, longest name first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Walk {
    pub start: String,
    pub found: Vec<(String, Record)>,
}

/// The DMARC record at `domain`: one that starts with `v=DMARC1`, none if there are
/// several (RFC 9989 4.10 step 2).
async fn record_at<D: Dns>(
    domain: &str,
    lookups: &Lookups<'_, D>,
) -> Result<Option<Record>, LookupError> {
    let txts = lookups.txt(&format!("_dmarc.{domain}")).await?;
    let mut records = txts.iter().filter_map(|t| Record::parse(t));
    let first = records.next();
    Ok(if records.next().is_some() {
        None
    } else {
        first
    })
}

/// Walks from `domain` up, stopping at a record with `psd=y` or `psd=n`.
pub(crate) async fn walk<D: Dns>(
    domain: &str,
    lookups: &Lookups<'_, D>,
) -> Result<Walk, LookupError> {
    let mut walk = Walk {
        start: domain.to_owned(),
        found: Vec::new(),
    };
    for target in walk_targets(domain) {
        if let Some(record) = record_at(&target, lookups).await? {
            let stop = record.psd != Psd::Unknown;
            walk.found.push((target, record));
            if stop {
                break;
            }
        }
    }
    Ok(walk)
}

/// The label-count order of `domain` names on one path.
fn labels(domain: &str) -> usize {
    domain.split('.').count()
}

impl Walk {
    /// The organizational domain (RFC 9989 4.10.2): from the longest name found, the
    /// first `psd=n` record's domain; or the name one label below a `psd=y` record (not
    /// the starting one); or else the record with the fewest labels; or else the start.
    pub(crate) fn organizational_domain(&self) -> String {
        for (domain, record) in &self.found {
            match record.psd {
                Psd::No => return domain.clone(),
                Psd::Yes if *domain != self.start => {
                    let want = labels(domain) + 1;
                    let start_labels: Vec<&str> = self.start.split('.').collect();
                    return start_labels[start_labels.len() - want..].join(".");
                }
                _ => {}
            }
        }
        self.found
            .iter()
            .min_by_key(|(domain, _)| labels(domain))
            .map_or_else(|| self.start.clone(), |(domain, _)| domain.clone())
    }

    fn record(&self, domain: &str) -> Option<&Record> {
        self.found
            .iter()
            .find(|(d, _)| d == domain)
            .map(|(_, record)| record)
    }

    /// The policy record and its domain (RFC 9989 4.10.1): the author domain's, else the
    /// organizational domain's, else the public suffix domain's (`psd=y`).
    pub(crate) fn policy(&self) -> Option<(String, Record)> {
        if let Some(record) = self.record(&self.start) {
            return Some((self.start.clone(), record.clone()));
        }
        let org = self.organizational_domain();
        if let Some(record) = self.record(&org) {
            return Some((org, record.clone()));
        }
        self.found
            .iter()
            .find(|(_, record)| record.psd == Psd::Yes)
            .cloned()
    }
}

/// The identifiers that may align: SPF's MAIL FROM domain when SPF passed, and the `d=`
/// of each passing DKIM signature; and those that might have passed but met a temporary
/// DNS failure (SPF `temperror`, a DKIM key look-up that timed out).
#[derive(Debug, Clone, Default)]
pub(crate) struct Identifiers {
    pub spf: Option<String>,
    pub dkim: Vec<String>,
    pub spf_temp: Option<String>,
    pub dkim_temp: Vec<String>,
}

/// A source of randomness for RFC 7489 `pct` sampling: a number below 100.
pub(crate) fn percent_roll() -> u8 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x5a17_0b0e);
    (h.finish() % 100) as u8
}

/// Whether `identifier` aligns with `author` in `mode`, given the author's
/// organizational domain.
async fn aligned<D: Dns>(
    identifier: &str,
    author: &str,
    author_org: &str,
    mode: Alignment,
    lookups: &Lookups<'_, D>,
) -> Result<bool, LookupError> {
    if identifier.eq_ignore_ascii_case(author) {
        return Ok(true);
    }
    if mode == Alignment::Strict || !is_within(identifier, author_org) {
        // A domain outside the author's organizational domain cannot have it as its own.
        return Ok(false);
    }
    let org = walk(&identifier.to_ascii_lowercase(), lookups)
        .await?
        .organizational_domain();
    Ok(org.eq_ignore_ascii_case(author_org))
}

/// Evaluates DMARC for one author domain.
pub(crate) async fn evaluate<D: Dns>(
    author: &str,
    ids: &Identifiers,
    lookups: &Lookups<'_, D>,
    roll: u8,
) -> DmarcEvaluation {
    let mut eval = DmarcEvaluation::new(author);
    let walk = match walk(author, lookups).await {
        Ok(walk) => walk,
        Err(e) => return eval.error(e, "DMARC record"),
    };
    let Some((policy_domain, record)) = walk.policy() else {
        eval.outcome = Outcome::None;
        eval.reason = Some("no DMARC record".into());
        return eval;
    };
    let org = walk.organizational_domain();
    eval.policy_domain = Some(policy_domain.clone());
    eval.organizational_domain = Some(org.clone());
    let Some(record) = record.effective() else {
        eval.outcome = Outcome::PermError;
        eval.reason = Some(format!(
            "DMARC record at {policy_domain} has no valid p= and no valid rua="
        ));
        return eval;
    };
    // The policy asked for (RFC 9989 4.10.1): p for the policy domain itself; for a
    // subdomain sp, or np when the author domain does not exist, else p.
    let requested = if policy_domain == author {
        record.p
    } else {
        let mut requested = record.sp.or(record.p);
        if let Some(np) = record.np {
            match lookups.exists(author).await {
                Ok(true) => {}
                Ok(false) => {
                    requested = Some(np);
                    eval.nonexistent = true;
                }
                Err(e) => return eval.error(e, "existence of the author domain"),
            }
        }
        requested
    }
    .unwrap_or_default();
    eval.requested = Some(requested);
    eval.testing = record.testing || record.pct.is_some_and(|p| p < 100);

    let mut error = None;
    if let Some(spf) = &ids.spf {
        match aligned(spf, author, &org, record.aspf, lookups).await {
            Ok(true) => eval.spf_aligned = true,
            Ok(false) => {}
            Err(e) => error = Some(e),
        }
    }
    for d in &ids.dkim {
        match aligned(d, author, &org, record.adkim, lookups).await {
            Ok(true) => {
                eval.dkim_aligned.push(d.clone());
            }
            Ok(false) => {}
            Err(e) => error = error.or(Some(e)),
        }
    }
    if eval.spf_aligned || !eval.dkim_aligned.is_empty() {
        eval.outcome = Outcome::Pass;
        return eval;
    }
    if let Some(e) = error {
        return eval.error(e, "alignment");
    }
    // An identifier that would align but could not be checked (a temporary DNS failure)
    // might have passed: the result is `temperror`, never a `fail` that a policy could
    // turn into a rejection.
    let pending = ids
        .spf_temp
        .iter()
        .map(|d| ("SPF", d, record.aspf))
        .chain(ids.dkim_temp.iter().map(|d| ("DKIM", d, record.adkim)));
    for (method, d, mode) in pending {
        if !matches!(aligned(d, author, &org, mode, lookups).await, Ok(false)) {
            eval.outcome = Outcome::TempError;
            eval.reason = Some(format!("{method} for {d} met a temporary DNS failure"));
            return eval;
        }
    }
    eval.outcome = Outcome::Fail;
    // The policy to apply after the options (RFC 9989 4.7 t=, RFC 7489 6.6.4 pct=).
    eval.applied = if record.testing {
        requested.downgrade()
    } else {
        match record.pct {
            Some(pct) if roll >= pct => requested.downgrade(),
            _ => requested,
        }
    };
    eval
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::Zone;

    #[test]
    fn records() {
        let r = Record::parse(b"v=DMARC1; p=reject; sp=quarantine; np=none; adkim=s; aspf=r; t=y; pct=0; rua=mailto:d@example.com").unwrap();
        assert_eq!(r.p, Some(Disposition::Reject));
        assert_eq!(r.sp, Some(Disposition::Quarantine));
        assert_eq!(r.np, Some(Disposition::None));
        assert_eq!((r.adkim, r.aspf), (Alignment::Strict, Alignment::Relaxed));
        assert!(r.testing && r.rua_valid);
        assert_eq!(r.pct, Some(0));

        assert!(Record::parse(b"v=DMARC2; p=none").is_none());
        assert!(Record::parse(b"v=dmarc1; p=none").is_none());
        assert!(Record::parse(b"p=none; v=DMARC1").is_none());
        assert!(Record::parse(b"v=spf1 -all").is_none());
        assert!(Record::parse(b" v = DMARC1 ;p=none").is_some());

        let lenient =
            Record::parse(b"v=DMARC1; p=REJECT; foo=bar; junk; pct=200; adkim=x; p=none").unwrap();
        assert_eq!(lenient.p, Some(Disposition::Reject));
        assert_eq!(lenient.pct, None);
        assert_eq!(lenient.adkim, Alignment::Relaxed);

        let no_p = Record::parse(b"v=DMARC1; rua=mailto:x@example.com").unwrap();
        assert_eq!(no_p.effective().unwrap().p, Some(Disposition::None));
        let bad_p = Record::parse(b"v=DMARC1; p=bogus").unwrap();
        assert!(bad_p.p_invalid && bad_p.effective().is_none());
        let bad_sp = Record::parse(b"v=DMARC1; p=reject; sp=bogus; rua=mailto:a@b").unwrap();
        assert_eq!(bad_sp.effective().unwrap().p, Some(Disposition::None));
        assert!(
            !Record::parse(b"v=DMARC1; p=none; rua=nothing")
                .unwrap()
                .rua_valid
        );
    }

    #[test]
    fn walk_targets_follow_rfc_9989_4_10() {
        assert_eq!(walk_targets("example.com"), ["example.com", "com"]);
        assert_eq!(walk_targets("com"), ["com"]);
        assert_eq!(
            walk_targets("a.b.c.d.e.f.g.h.i.j.mail.example.com"),
            [
                "a.b.c.d.e.f.g.h.i.j.mail.example.com",
                "g.h.i.j.mail.example.com",
                "h.i.j.mail.example.com",
                "i.j.mail.example.com",
                "j.mail.example.com",
                "mail.example.com",
                "example.com",
                "com",
            ]
        );
        let eight = "a.b.c.d.e.f.g.h";
        assert_eq!(walk_targets(eight).len(), 8);
        assert_eq!(walk_targets(eight)[1], "b.c.d.e.f.g.h");
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn org_of(zone: &Zone, domain: &str) -> String {
        let keys = crate::key::KeyCache::new();
        let lookups = Lookups::new(
            zone,
            &keys,
            tokio::time::Instant::now() + std::time::Duration::from_secs(5),
            100,
        );
        rt().block_on(walk(domain, &lookups))
            .unwrap()
            .organizational_domain()
    }

    /// The three examples at the end of RFC 9989 4.10.2.
    #[test]
    fn organizational_domain_examples() {
        let zone = Zone::new()
            .with_txt("_dmarc.mail.example.com", "v=DMARC1; p=none")
            .with_txt("_dmarc.example.com", "v=DMARC1; p=reject");
        assert_eq!(org_of(&zone, "a.mail.example.com"), "example.com");
        let zone = Zone::new()
            .with_txt("_dmarc.mail.example.com", "v=DMARC1; p=none; psd=n")
            .with_txt("_dmarc.example.com", "v=DMARC1; p=reject");
        assert_eq!(org_of(&zone, "a.mail.example.com"), "mail.example.com");
        let zone = Zone::new().with_txt("_dmarc.com", "v=DMARC1; p=none; psd=y");
        assert_eq!(org_of(&zone, "a.mail.example.com"), "example.com");
        assert_eq!(
            org_of(&Zone::new(), "a.mail.example.com"),
            "a.mail.example.com"
        );
        // Two records at one name: both discarded.
        let zone = Zone::new()
            .with_txt("_dmarc.example.com", "v=DMARC1; p=reject")
            .with_txt("_dmarc.example.com", "v=DMARC1; p=none");
        assert_eq!(org_of(&zone, "a.example.com"), "a.example.com");
    }
}
