//! What a check found: one [`Report`] per message.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::SystemTime;

use crate::lookup::LookupError;
use crate::policy::{Action, DMARC_REJECT, Disposition, DkimMode, DmarcMode, Policy};
use crate::results::AuthenticationResults;
use crate::signature::Algorithm;

/// A result name of RFC 8601 2.7 (and RFC 7208 for SPF). Each method uses some of them:
/// DKIM none/pass/fail/policy/neutral/temperror/permerror, DMARC none/pass/fail/
/// temperror/permerror, ARC none/pass/fail, SPF all but policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// `none`: nothing to check (no signature, no record).
    None,
    /// `pass`.
    Pass,
    /// `fail`.
    Fail,
    /// `softfail` (SPF only).
    SoftFail,
    /// `neutral`: DKIM, a signature with syntax errors or that could not be processed.
    Neutral,
    /// `policy`: DKIM, a signature that verifies or might, but that we do not accept
    /// (rsa-sha1, an RSA key under 1024 bits, body content beyond `l=`).
    Policy,
    /// `temperror`: a temporary (DNS) failure; a later try may succeed.
    TempError,
    /// `permerror`: a permanent error (no key, a revoked key, a bad record).
    PermError,
}

impl Outcome {
    /// The name as written in `Authentication-Results`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::None => "none",
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::SoftFail => "softfail",
            Outcome::Neutral => "neutral",
            Outcome::Policy => "policy",
            Outcome::TempError => "temperror",
            Outcome::PermError => "permerror",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = ();
    /// Reads a result name, any case (`"pass"`, `"SoftFail"`).
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "none" => Outcome::None,
            "pass" => Outcome::Pass,
            "fail" => Outcome::Fail,
            "softfail" => Outcome::SoftFail,
            "neutral" => Outcome::Neutral,
            "policy" => Outcome::Policy,
            "temperror" => Outcome::TempError,
            "permerror" => Outcome::PermError,
            _ => return Err(()),
        })
    }
}

/// An SPF result the caller already has (the SPF guard ran at MAIL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spf {
    /// The SPF result.
    pub outcome: Outcome,
    /// The domain checked: the MAIL FROM domain, or the HELO name (for the null sender,
    /// RFC 7208 2.4, the HELO name is the MAIL FROM identity too). A whole address
    /// (`local@domain`) is fine: DMARC uses the part after the last `@`.
    pub domain: String,
}

/// The inputs beside the message.
#[derive(Debug, Clone)]
pub struct Context {
    /// SPF for the MAIL FROM identity: reported as `spf=... smtp.mailfrom=`, and the
    /// SPF identifier of DMARC when it passed.
    pub spf_mailfrom: Option<Spf>,
    /// SPF for the HELO identity: reported as `spf=... smtp.helo=` (not used by DMARC).
    pub spf_helo: Option<Spf>,
    /// The peer's address, reported as `smtp.remote-ip` of `arc=` (RFC 8617 10.1).
    pub remote_ip: Option<IpAddr>,
    /// The time to check `t=` and `x=` against.
    pub now: SystemTime,
}

impl Default for Context {
    fn default() -> Self {
        Context {
            spf_mailfrom: None,
            spf_helo: None,
            remote_ip: None,
            now: SystemTime::now(),
        }
    }
}

impl Context {
    /// No SPF results, no address, the current time.
    pub fn new() -> Self {
        Context::default()
    }

    /// With the MAIL FROM SPF result.
    pub fn spf_mailfrom(mut self, outcome: Outcome, domain: impl Into<String>) -> Self {
        self.spf_mailfrom = Some(Spf {
            outcome,
            domain: domain.into(),
        });
        self
    }

    /// With the HELO SPF result.
    pub fn spf_helo(mut self, outcome: Outcome, domain: impl Into<String>) -> Self {
        self.spf_helo = Some(Spf {
            outcome,
            domain: domain.into(),
        });
        self
    }

    /// At another time.
    pub fn at(mut self, now: SystemTime) -> Self {
        self.now = now;
        self
    }

    pub(crate) fn unix_now(&self) -> u64 {
        self.now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// The result of one DKIM-Signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimResult {
    /// pass, fail, policy, neutral, temperror or permerror (RFC 8601 2.7.1).
    pub outcome: Outcome,
    /// Why, when not a plain pass.
    pub reason: Option<String>,
    /// The signing domain `d=`, when the field could be read that far.
    pub domain: Option<String>,
    /// The selector `s=`.
    pub selector: Option<String>,
    /// The identity `i=`, when present.
    pub identity: Option<String>,
    /// The algorithm `a=`.
    pub algorithm: Option<Algorithm>,
    /// The signature `b=` as written (whitespace removed); `header.b` carries a prefix.
    pub b: Option<String>,
    /// The key size in bits, when the key was fetched.
    pub key_bits: Option<usize>,
    /// The body length count `l=`, when present.
    pub body_length: Option<u64>,
    /// Canonical body bytes after the first `l=` bytes: content the signature does not
    /// cover. A policy may treat a message with any as unsigned; with the default
    /// [`BodyLength::Refuse`](crate::BodyLength) such a signature is `policy`.
    pub unsigned_body_bytes: u64,
    /// The key is in test mode (`t=y`, RFC 6376 3.6.1).
    pub testing: bool,
}

impl DkimResult {
    pub(crate) fn bare(outcome: Outcome, reason: impl Into<String>) -> Self {
        DkimResult {
            outcome,
            reason: Some(reason.into()),
            domain: None,
            selector: None,
            identity: None,
            algorithm: None,
            b: None,
            key_bits: None,
            body_length: None,
            unsigned_body_bytes: 0,
            testing: false,
        }
    }
}

/// The result of ARC chain validation (RFC 8617 5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArcResult {
    /// none (no ARC sets), pass or fail.
    pub outcome: Outcome,
    /// Why, when it failed.
    pub reason: Option<String>,
    /// How many ARC sets the message carries (the highest instance).
    pub sets: u32,
    /// The oldest instance whose ARC-Message-Signature still validates, 0 when all do
    /// (`header.oldest-pass`, RFC 8617 5.2 step 5); `None` when not passing.
    pub oldest_pass: Option<u32>,
    /// The `d=` of the newest ARC-Seal: who sealed the chain last.
    pub sealer: Option<String>,
}

impl ArcResult {
    pub(crate) fn none() -> Self {
        ArcResult {
            outcome: Outcome::None,
            reason: None,
            sets: 0,
            oldest_pass: None,
            sealer: None,
        }
    }

    pub(crate) fn fail(sets: u32, reason: impl Into<String>) -> Self {
        ArcResult {
            outcome: Outcome::Fail,
            reason: Some(reason.into()),
            sets,
            oldest_pass: None,
            sealer: None,
        }
    }
}

/// DMARC for one author domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarcEvaluation {
    /// The author domain (from the RFC 5322 From field), lower case, A-labels.
    pub author_domain: String,
    /// none, pass, fail, temperror or permerror.
    pub outcome: Outcome,
    /// Why, when not pass.
    pub reason: Option<String>,
    /// Where the policy record was found.
    pub policy_domain: Option<String>,
    /// The author's organizational domain (RFC 9989 4.10.2).
    pub organizational_domain: Option<String>,
    /// The domain's policy for this author: `p=`, or `sp=`/`np=` for a subdomain.
    pub requested: Option<Disposition>,
    /// The author domain does not exist (NXDOMAIN), so `np=` applied.
    pub nonexistent: bool,
    /// The policy is in test mode (`t=y`) or sampled (`pct` below 100).
    pub testing: bool,
    /// What failing means after `t=` and `pct` (`none` for a pass).
    pub applied: Disposition,
    /// The SPF identifier aligned.
    pub spf_aligned: bool,
    /// The `d=` of each passing DKIM signature that aligned.
    pub dkim_aligned: Vec<String>,
}

impl DmarcEvaluation {
    pub(crate) fn new(author: &str) -> Self {
        DmarcEvaluation {
            author_domain: author.to_owned(),
            outcome: Outcome::None,
            reason: None,
            policy_domain: None,
            organizational_domain: None,
            requested: None,
            nonexistent: false,
            testing: false,
            applied: Disposition::None,
            spf_aligned: false,
            dkim_aligned: Vec::new(),
        }
    }

    pub(crate) fn error(mut self, e: LookupError, what: &str) -> Self {
        self.outcome = if e.is_temporary() {
            Outcome::TempError
        } else {
            Outcome::PermError
        };
        self.reason = Some(format!("{what}: {}", e.text()));
        self.applied = Disposition::None;
        self
    }
}

/// The DMARC result of the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarcResult {
    /// The combined result: fail if any author domain fails, else temperror, permerror,
    /// pass, none in that order.
    pub outcome: Outcome,
    /// Why, for the message as a whole (no author domain, several).
    pub reason: Option<String>,
    /// One evaluation per author domain (usually one).
    pub evaluations: Vec<DmarcEvaluation>,
    /// The strictest applied policy among failing author domains.
    pub disposition: Disposition,
}

impl DmarcResult {
    pub(crate) fn none() -> Self {
        DmarcResult {
            outcome: Outcome::None,
            reason: None,
            evaluations: Vec::new(),
            disposition: Disposition::None,
        }
    }
}

pub use samotop_core::AuthResult;

/// Everything one message's check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The operator's policy the check ran with.
    pub policy: Policy,
    /// SPF results as passed in.
    pub spf_mailfrom: Option<Spf>,
    /// SPF for HELO as passed in.
    pub spf_helo: Option<Spf>,
    /// One result per DKIM-Signature (top first), at most
    /// [`Limits::max_signatures`](crate::Limits) and then one `neutral` saying how many
    /// more were not verified; `none` when the message has no signature.
    pub dkim: Vec<DkimResult>,
    /// The ARC chain.
    pub arc: ArcResult,
    /// DMARC.
    pub dmarc: DmarcResult,
    /// The peer's address, reported with `arc=`.
    pub remote_ip: Option<IpAddr>,
    /// DNS questions asked.
    pub dns_queries: usize,
}

impl Report {
    /// What to do with the message under [`Report::policy`].
    ///
    /// Only [`DmarcMode::Enforce`] refuses or quarantines, and only a DMARC `fail`
    /// whose applied policy (after `t=` and `pct`) is `reject` (→ [`DMARC_REJECT`],
    /// 550 5.7.1) or `quarantine`. A `temperror` never refuses.
    pub fn action(&self) -> Action {
        if self.policy.is_off() {
            return Action::Accept;
        }
        if self.policy.dmarc == DmarcMode::Enforce && self.dmarc.outcome == Outcome::Fail {
            match self.dmarc.disposition {
                Disposition::Reject => return Action::Reject(DMARC_REJECT),
                Disposition::Quarantine => return Action::Tag { quarantine: true },
                Disposition::None => {}
            }
        }
        Action::Tag { quarantine: false }
    }

    /// The policy disposition after the operator's policy: what the domain's DMARC
    /// policy asks for and enforcement would apply (`none` unless DMARC failed).
    pub fn disposition(&self) -> Disposition {
        if self.dmarc.outcome == Outcome::Fail {
            self.dmarc.disposition
        } else {
            Disposition::None
        }
    }

    /// The `Authentication-Results` field (RFC 8601) for `authserv_id` (the host name
    /// of this receiver, as in `--name`).
    pub fn authentication_results(&self, authserv_id: &str) -> AuthenticationResults {
        AuthenticationResults::new(authserv_id, &self.results())
    }

    /// The results as method/result/reason/properties, in header order: spf (mailfrom,
    /// helo), dkim, dmarc, arc. DKIM is left out under [`DkimMode::Off`], DMARC under
    /// [`DmarcMode::Off`], ARC when [`Policy::arc`] is off.
    pub fn results(&self) -> Vec<AuthResult> {
        let mut out = Vec::new();
        let entry = |method: &str, outcome: Outcome, reason: &Option<String>| AuthResult {
            method: method.into(),
            result: outcome.as_str().into(),
            reason: reason.clone(),
            properties: Vec::new(),
        };
        if let Some(spf) = &self.spf_mailfrom {
            let mut r = entry("spf", spf.outcome, &None);
            r.properties
                .push(("smtp.mailfrom".into(), spf.domain.clone()));
            out.push(r);
        }
        if let Some(spf) = &self.spf_helo {
            let mut r = entry("spf", spf.outcome, &None);
            r.properties.push(("smtp.helo".into(), spf.domain.clone()));
            out.push(r);
        }
        if self.policy.dkim == DkimMode::Tag {
            let prefixes = b_prefixes(&self.dkim);
            for (dkim, prefix) in self.dkim.iter().zip(prefixes) {
                let mut r = entry("dkim", dkim.outcome, &dkim.reason);
                if let Some(d) = &dkim.domain {
                    r.properties.push(("header.d".into(), d.clone()));
                }
                if let Some(i) = &dkim.identity {
                    r.properties.push(("header.i".into(), i.clone()));
                }
                if let Some(s) = &dkim.selector {
                    r.properties.push(("header.s".into(), s.clone()));
                }
                if let Some(a) = dkim.algorithm {
                    r.properties.push(("header.a".into(), a.as_str().into()));
                }
                if let Some(b) = prefix {
                    r.properties.push(("header.b".into(), b));
                }
                out.push(r);
            }
        }
        if self.policy.dmarc != DmarcMode::Off {
            if self.dmarc.evaluations.is_empty() {
                out.push(entry("dmarc", self.dmarc.outcome, &self.dmarc.reason));
            }
            for eval in &self.dmarc.evaluations {
                let reason = match (&eval.reason, &self.dmarc.reason) {
                    (Some(a), Some(b)) => Some(format!("{a}; {b}")),
                    (a, b) => a.clone().or_else(|| b.clone()),
                };
                let mut r = entry("dmarc", eval.outcome, &reason);
                if let Some(requested) = eval.requested {
                    let policy = if eval.outcome == Outcome::Fail {
                        eval.applied
                    } else {
                        requested
                    };
                    r.properties
                        .push(("policy.dmarc".into(), policy.as_str().into()));
                }
                r.properties
                    .push(("header.from".into(), eval.author_domain.clone()));
                out.push(r);
            }
        }
        if self.policy.arc {
            let mut r = entry("arc", self.arc.outcome, &self.arc.reason);
            if let Some(oldest) = self.arc.oldest_pass {
                r.properties
                    .push(("header.oldest-pass".into(), oldest.to_string()));
            }
            if let (Some(ip), true) = (self.remote_ip, self.arc.outcome != Outcome::None) {
                r.properties.push(("smtp.remote-ip".into(), ip.to_string()));
            }
            out.push(r);
        }
        out
    }
}

/// The `header.b` value of each signature: the shortest prefix of `b=`, at least 8
/// characters, that no other signature of the message shares (RFC 6008 2).
fn b_prefixes(results: &[DkimResult]) -> Vec<Option<String>> {
    let all: Vec<&str> = results.iter().filter_map(|r| r.b.as_deref()).collect();
    results
        .iter()
        .map(|r| {
            let b = r.b.as_deref()?;
            let mut n = 8.min(b.len());
            while n < b.len() && all.iter().filter(|o| o.starts_with(&b[..n])).count() > 1 {
                n += 1;
            }
            // b= is base64: ASCII, so any byte index is a char boundary.
            Some(b[..n].to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b_prefixes_are_unique() {
        let mk = |b: &str| DkimResult {
            b: Some(b.into()),
            ..DkimResult::bare(Outcome::Pass, "")
        };
        let results = vec![
            mk("abcdefghij1"),
            mk("abcdefghij2"),
            mk("zzzzzzzzzzzzz"),
            mk("abc"),
        ];
        assert_eq!(
            b_prefixes(&results),
            vec![
                Some("abcdefghij1".into()),
                Some("abcdefghij2".into()),
                Some("zzzzzzzz".into()),
                Some("abc".into())
            ]
        );
    }

    #[test]
    fn outcome_names() {
        for o in [
            Outcome::None,
            Outcome::Pass,
            Outcome::Fail,
            Outcome::SoftFail,
            Outcome::Neutral,
            Outcome::Policy,
            Outcome::TempError,
            Outcome::PermError,
        ] {
            assert_eq!(o.as_str().parse::<Outcome>(), Ok(o));
        }
        assert_eq!("PASS".parse::<Outcome>(), Ok(Outcome::Pass));
        assert!("maybe".parse::<Outcome>().is_err());
    }
}
