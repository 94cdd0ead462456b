//! The checks once the message has ended: DKIM (RFC 6376 6.1), ARC (RFC 8617 5.2), DMARC
//! (RFC 9989 5.3), with every DNS question under one deadline.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use futures_util::future::join_all;
use tokio::time::Instant;

use crate::address::{Authors, authors};
use crate::canon::{self, Canonicalization};
use crate::dmarc::{self, Identifiers};
use crate::dns::Dns;
use crate::key::{KeyCache, KeyRecord, MIN_RSA_BITS, PublicKey};
use crate::lookup::Lookups;
use crate::policy::{Disposition, DmarcMode};
use crate::report::{ArcResult, Context, DkimResult, DmarcResult, Outcome, Report};
use crate::scanner::{ArcPlan, ArcSet, BodyGroup, DkimEntry, Parsed};
use crate::signature::{Algorithm, ChainStatus, Kind, Seal, SigError, Signature, identity_domain};
use crate::verifier::{BodyLength, Config, MultipleAuthors};

/// The header hash input of a signature (RFC 6376 3.7): the fields named in `h=`, each
/// name taking the bottom-most instance not yet used (RFC 6376 5.4.2; a name with no
/// instance left adds nothing), then the signature's own field with its `b=` value
/// removed and without its final CRLF. All canonicalized with `canon`.
fn header_input(
    parsed: &Parsed,
    own: usize,
    names: &[Vec<u8>],
    canon: Canonicalization,
    b_span: &Range<usize>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut used: HashMap<&[u8], usize> = HashMap::new();
    for name in names {
        let Some(list) = parsed.by_name.get(name) else {
            continue;
        };
        let n = used.entry(name.as_slice()).or_insert(0);
        if let Some(&field) = list.iter().rev().filter(|&&i| i != own).nth(*n) {
            canon::header(canon, parsed.raw(field), true, &mut out);
            *n += 1;
        }
    }
    canon::header(canon, &blank_b(parsed, own, b_span), false, &mut out);
    out
}

/// Field `own` with its `b=` value (and the whitespace around it) removed.
fn blank_b(parsed: &Parsed, own: usize, b_span: &Range<usize>) -> Vec<u8> {
    let field = &parsed.fields[own];
    let raw = parsed.raw(own);
    let at = field.value.start - field.raw.start;
    let mut out = raw[..at + b_span.start].to_vec();
    out.extend_from_slice(&raw[at + b_span.end..]);
    out
}

/// The ARC-Seal hash input (RFC 8617 5.1.1): every ARC set from 1 to `upto` (an index),
/// each as ARC-Authentication-Results, ARC-Message-Signature, ARC-Seal, relaxed; the last
/// seal with `b=` removed and without its CRLF.
fn seal_input(parsed: &Parsed, sets: &[ArcSet], upto: usize, b_span: &Range<usize>) -> Vec<u8> {
    let relaxed = Canonicalization::Relaxed;
    let mut out = Vec::new();
    for (j, set) in sets.iter().enumerate().take(upto + 1) {
        canon::header(relaxed, parsed.raw(set.aar), true, &mut out);
        canon::header(relaxed, parsed.raw(set.ams), true, &mut out);
        if j < upto {
            canon::header(relaxed, parsed.raw(set.seal), true, &mut out);
        } else {
            canon::header(relaxed, &blank_b(parsed, set.seal, b_span), false, &mut out);
        }
    }
    out
}

type Failure = (Outcome, String);

async fn fetch_key<D: Dns>(
    selector: &str,
    domain: &str,
    lookups: &Lookups<'_, D>,
) -> Result<Arc<KeyRecord>, Failure> {
    let name = format!("{selector}._domainkey.{domain}");
    match lookups.txt(&name).await {
        Err(e) if e.is_temporary() => {
            Err((Outcome::TempError, format!("key {name}: {}", e.text())))
        }
        Err(e) => Err((Outcome::PermError, format!("key {name}: {}", e.text()))),
        Ok(records) => match lookups.keys().select(&records) {
            None => Err((Outcome::PermError, "no key for signature".into())),
            Some(Err(e)) => Err((Outcome::PermError, e.text())),
            Some(Ok(key)) => Ok(key),
        },
    }
}

/// The key checks of RFC 6376 6.1.2 and RFC 8301.
fn usable_key<'k>(
    key: &'k KeyRecord,
    algorithm: Algorithm,
    domain: &str,
    identity: Option<&str>,
) -> Result<&'k PublicKey, Failure> {
    let Some(public) = &key.key else {
        return Err((Outcome::PermError, "key revoked".into()));
    };
    if key.key_type != algorithm.key_type() {
        return Err((
            Outcome::PermError,
            format!(
                "key type k={} does not fit a={}",
                String::from_utf8_lossy(&key.key_type),
                algorithm.as_str()
            ),
        ));
    }
    if !key.allows(algorithm.hash()) {
        return Err((Outcome::PermError, "key h= does not allow the hash".into()));
    }
    if key.strict {
        if let Some(i) = identity.and_then(identity_domain) {
            if !i.eq_ignore_ascii_case(domain) {
                return Err((
                    Outcome::PermError,
                    "key t=s: i= must be in d= itself".into(),
                ));
            }
        }
    }
    if let PublicKey::Rsa(_) = public {
        let bits = public.bits();
        if bits < MIN_RSA_BITS {
            return Err((
                Outcome::Policy,
                format!("{bits}-bit RSA key (RFC 8301: at least {MIN_RSA_BITS})"),
            ));
        }
    }
    Ok(public)
}

fn dkim_result(sig: &Signature) -> DkimResult {
    DkimResult {
        outcome: Outcome::Pass,
        reason: None,
        domain: Some(sig.domain.clone()),
        selector: Some(sig.selector.clone()),
        identity: sig.identity.clone(),
        algorithm: Some(sig.algorithm),
        b: Some(sig.b_text.clone()),
        key_bits: None,
        body_length: sig.length,
        unsigned_body_bytes: 0,
        testing: false,
    }
}

async fn verify_dkim<D: Dns>(
    entry: &DkimEntry,
    parsed: &Parsed,
    groups: &[BodyGroup],
    lookups: &Lookups<'_, D>,
    now: u64,
    config: &Config,
) -> DkimResult {
    let sig = match &entry.sig {
        Ok(sig) => sig,
        Err(SigError::Syntax(why) | SigError::Invalid(why)) => {
            return DkimResult::bare(Outcome::Neutral, why.clone());
        }
        Err(SigError::Sha1) => return DkimResult::bare(Outcome::Policy, "rsa-sha1"),
    };
    let mut result = dkim_result(sig);
    let mut finish = |outcome: Outcome, reason: String| {
        result.outcome = outcome;
        result.reason = Some(reason);
    };
    if let Err(why) = sig.check(Kind::Dkim) {
        finish(Outcome::PermError, why);
        return result;
    }
    if sig.algorithm == Algorithm::RsaSha1 {
        finish(
            Outcome::Policy,
            "rsa-sha1 is not acceptable (RFC 8301)".into(),
        );
        return result;
    }
    if sig.expiration.is_some_and(|x| x < now) {
        finish(Outcome::PermError, "signature expired (x=)".into());
        return result;
    }
    if sig
        .timestamp
        .is_some_and(|t| t > now.saturating_add(config.clock_skew.as_secs()))
    {
        finish(
            Outcome::PermError,
            "signature timestamp in the future (t=)".into(),
        );
        return result;
    }
    let Some(group) = entry.group.map(|g| &groups[g]) else {
        finish(
            Outcome::Neutral,
            "not verified: too many body hashes".into(),
        );
        return result;
    };
    let key = match fetch_key(&sig.selector, &sig.domain, lookups).await {
        Ok(key) => key,
        Err((outcome, why)) => {
            finish(outcome, why);
            return result;
        }
    };
    result.testing = key.testing;
    let public = match usable_key(&key, sig.algorithm, &sig.domain, sig.identity.as_deref()) {
        Ok(public) => public,
        Err((outcome, why)) => {
            result.key_bits = key.key.as_ref().map(PublicKey::bits);
            result.outcome = outcome;
            result.reason = Some(why);
            return result;
        }
    };
    result.key_bits = Some(public.bits());
    let testing = if key.testing {
        " (key in test mode, t=y)"
    } else {
        ""
    };
    if group.digest != sig.bh {
        result.outcome = Outcome::Fail;
        result.reason = Some(format!("body hash mismatch{testing}"));
        return result;
    }
    let input = header_input(
        parsed,
        entry.field,
        &sig.headers,
        sig.header_canon,
        &sig.b_span,
    );
    if !public.verify(sig.algorithm, &input, &sig.b) {
        result.outcome = Outcome::Fail;
        result.reason = Some(format!("signature did not verify{testing}"));
        return result;
    }
    if let Some(l) = sig.length {
        result.unsigned_body_bytes = group.total.saturating_sub(l);
        if result.unsigned_body_bytes > 0 {
            let why = format!(
                "l={l} leaves {} body bytes unsigned",
                result.unsigned_body_bytes
            );
            result.outcome = match config.body_length {
                BodyLength::Refuse => Outcome::Policy,
                BodyLength::Accept => Outcome::Pass,
            };
            result.reason = Some(why);
            return result;
        }
        result.reason = Some(format!("l={l} covers the whole body"));
    }
    if key.testing {
        result.reason = Some(match result.reason.take() {
            Some(why) => format!("{why}; key in test mode (t=y)"),
            None => "key in test mode (t=y)".into(),
        });
    }
    result
}

/// Validates one ARC-Message-Signature.
async fn verify_ams<D: Dns>(
    set: &ArcSet,
    parsed: &Parsed,
    groups: &[BodyGroup],
    lookups: &Lookups<'_, D>,
) -> Result<(), String> {
    let sig = match &set.ams_sig {
        Ok(sig) => sig,
        Err(SigError::Syntax(why) | SigError::Invalid(why)) => return Err(why.clone()),
        Err(SigError::Sha1) => return Err("rsa-sha1".into()),
    };
    sig.check(Kind::ArcMessage)?;
    if sig.instance != set.seal_sig.as_ref().ok().map(|s| s.instance) {
        return Err("instance does not match its set".into());
    }
    if sig.algorithm == Algorithm::RsaSha1 {
        return Err("rsa-sha1 is not acceptable (RFC 8301)".into());
    }
    let group = set
        .group
        .map(|g| &groups[g])
        .ok_or("not verified: too many body hashes")?;
    if group.digest != sig.bh {
        return Err("body hash mismatch".into());
    }
    let key = fetch_key(&sig.selector, &sig.domain, lookups)
        .await
        .map_err(|(_, why)| why)?;
    let public = usable_key(&key, sig.algorithm, &sig.domain, None).map_err(|(_, why)| why)?;
    let input = header_input(parsed, set.ams, &sig.headers, sig.header_canon, &sig.b_span);
    if !public.verify(sig.algorithm, &input, &sig.b) {
        return Err("signature did not verify".into());
    }
    Ok(())
}

async fn verify_seal<D: Dns>(
    sets: &[ArcSet],
    j: usize,
    seal: &Seal,
    parsed: &Parsed,
    lookups: &Lookups<'_, D>,
) -> Result<(), String> {
    let key = fetch_key(&seal.selector, &seal.domain, lookups)
        .await
        .map_err(|(_, why)| why)?;
    let public = usable_key(&key, seal.algorithm, &seal.domain, None).map_err(|(_, why)| why)?;
    let input = seal_input(parsed, sets, j, &seal.b_span);
    if !public.verify(seal.algorithm, &input, &seal.b) {
        return Err("seal did not verify".into());
    }
    Ok(())
}

/// ARC chain validation, RFC 8617 5.2.
async fn verify_arc<D: Dns>(
    parsed: &Parsed,
    groups: &[BodyGroup],
    lookups: &Lookups<'_, D>,
) -> ArcResult {
    let sets = match &parsed.arc {
        ArcPlan::None => return ArcResult::none(),
        ArcPlan::Broken(n, why) => return ArcResult::fail(*n, why.clone()),
        ArcPlan::Chain(sets) => sets,
    };
    let n = sets.len();
    let mut seals = Vec::with_capacity(n);
    for (j, set) in sets.iter().enumerate() {
        match &set.seal_sig {
            Ok(seal) if seal.instance as usize == j + 1 => seals.push(seal),
            Ok(_) => {
                return ArcResult::fail(n as u32, format!("ARC-Seal i={} is misplaced", j + 1));
            }
            Err(e) => {
                let why = match e {
                    SigError::Syntax(why) | SigError::Invalid(why) => why.clone(),
                    SigError::Sha1 => "rsa-sha1".into(),
                };
                return ArcResult::fail(n as u32, format!("ARC-Seal i={}: {why}", j + 1));
            }
        }
    }
    // Step 2: the newest set says the chain failed.
    if seals[n - 1].cv == ChainStatus::Fail {
        return ArcResult::fail(n as u32, format!("ARC-Seal i={n} has cv=fail"));
    }
    // Step 3: cv= is none for the first set, pass for the others.
    for (j, seal) in seals.iter().enumerate() {
        let want = if j == 0 {
            ChainStatus::None
        } else {
            ChainStatus::Pass
        };
        if seal.cv != want {
            return ArcResult::fail(n as u32, format!("ARC-Seal i={} has a wrong cv=", j + 1));
        }
    }
    // Ask for every key at once; the checks below find them in the cache.
    let mut names: Vec<String> = Vec::new();
    for (seal, set) in seals.iter().zip(sets) {
        names.push(format!("{}._domainkey.{}", seal.selector, seal.domain));
        if let Ok(sig) = &set.ams_sig {
            names.push(format!("{}._domainkey.{}", sig.selector, sig.domain));
        }
    }
    names.sort();
    names.dedup();
    join_all(names.iter().map(|name| lookups.txt(name))).await;

    // Step 4: the newest ARC-Message-Signature.
    if let Err(why) = verify_ams(&sets[n - 1], parsed, groups, lookups).await {
        return ArcResult::fail(n as u32, format!("ARC-Message-Signature i={n}: {why}"));
    }
    // Step 6: every seal, newest first.
    for j in (0..n).rev() {
        if let Err(why) = verify_seal(sets, j, seals[j], parsed, lookups).await {
            return ArcResult::fail(n as u32, format!("ARC-Seal i={}: {why}", j + 1));
        }
    }
    // Step 5: how far back the message signatures still hold.
    let mut oldest = n;
    for j in (0..n - 1).rev() {
        if verify_ams(&sets[j], parsed, groups, lookups).await.is_err() {
            break;
        }
        oldest = j + 1;
    }
    ArcResult {
        outcome: Outcome::Pass,
        reason: None,
        sets: n as u32,
        oldest_pass: Some(if oldest == 1 { 0 } else { oldest as u32 }),
        sealer: Some(seals[n - 1].domain.clone()),
    }
}

/// The author domains to evaluate, or the final result when there are none to.
struct AuthorPlan {
    domains: Vec<String>,
    reason: Option<String>,
    incomplete: bool,
}

fn author_plan(parsed: &Parsed, config: &Config) -> Result<AuthorPlan, DmarcResult> {
    let permerror = |why: String| DmarcResult {
        outcome: Outcome::PermError,
        reason: Some(why),
        ..DmarcResult::none()
    };
    if parsed.from.is_empty() {
        return Err(permerror("no From field (RFC 9989 5.3.1)".into()));
    }
    let mut found = Authors::default();
    for &field in &parsed.from {
        authors(parsed.value(field), &mut found);
    }
    let count = found.domains.len();
    if count == 0 {
        return Err(permerror(
            "no author domain in From (RFC 9989 5.3.1)".into(),
        ));
    }
    let mut notes = Vec::new();
    if parsed.from.len() > 1 {
        notes.push(format!("{} From fields", parsed.from.len()));
    }
    if found.unusable > 0 {
        notes.push(format!(
            "{} From mailboxes without a domain",
            found.unusable
        ));
    }
    if count > 1 {
        if config.multiple_authors == MultipleAuthors::PermError {
            return Err(permerror(format!(
                "{count} author domains: DMARC not possible (RFC 9989 5.3.1)"
            )));
        }
        notes.push(format!("{count} author domains (RFC 9989 11.5)"));
    }
    let max = config.limits.max_author_domains.max(1);
    let incomplete = count > max;
    let mut domains = found.domains;
    domains.truncate(max);
    Ok(AuthorPlan {
        domains,
        reason: (!notes.is_empty()).then(|| notes.join(", ")),
        incomplete,
    })
}

/// The `d=` of the signatures with this outcome, lower case, each once.
fn domains(dkim: &[DkimResult], outcome: Outcome) -> Vec<String> {
    let mut d: Vec<String> = dkim
        .iter()
        .filter(|r| r.outcome == outcome)
        .filter_map(|r| r.domain.as_ref())
        .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    d.sort();
    d.dedup();
    d
}

async fn verify_dmarc<D: Dns>(
    plan: AuthorPlan,
    dkim: &[DkimResult],
    context: &Context,
    lookups: &Lookups<'_, D>,
) -> DmarcResult {
    let ids = Identifiers {
        spf: context
            .spf_mailfrom
            .as_ref()
            .filter(|s| s.outcome == Outcome::Pass)
            // The caller may give the whole MAIL FROM address: the domain is what counts.
            .map(|s| s.domain.rsplit('@').next().unwrap_or_default())
            .map(|d| d.trim_end_matches('.').to_ascii_lowercase()),
        dkim: domains(dkim, Outcome::Pass),
        spf_temp: context
            .spf_mailfrom
            .as_ref()
            .filter(|s| s.outcome == Outcome::TempError)
            .map(|s| s.domain.rsplit('@').next().unwrap_or_default())
            .map(|d| d.trim_end_matches('.').to_ascii_lowercase()),
        dkim_temp: domains(dkim, Outcome::TempError),
    };
    let roll = dmarc::percent_roll();
    let evaluations = join_all(
        plan.domains
            .iter()
            .map(|a| dmarc::evaluate(a, &ids, lookups, roll)),
    )
    .await;
    let has = |o: Outcome| evaluations.iter().any(|e| e.outcome == o);
    let mut outcome = [
        Outcome::Fail,
        Outcome::TempError,
        Outcome::PermError,
        Outcome::Pass,
    ]
    .into_iter()
    .find(|&o| has(o))
    .unwrap_or(Outcome::None);
    let mut reason = plan.reason;
    if plan.incomplete && outcome != Outcome::Fail {
        outcome = Outcome::PermError;
        reason = Some(format!(
            "{}; more author domains than evaluated (RFC 9989 11.5)",
            reason.unwrap_or_default()
        ));
    }
    let disposition = evaluations
        .iter()
        .filter(|e| e.outcome == Outcome::Fail)
        .map(|e| e.applied)
        .max()
        .unwrap_or(Disposition::None);
    DmarcResult {
        outcome,
        reason,
        evaluations,
        disposition,
    }
}

fn too_large(report: &mut Report, config: &Config) {
    let why = format!(
        "header section over {} bytes or {} fields: not verified",
        config.limits.max_header_bytes, config.limits.max_header_fields
    );
    report.dkim = vec![DkimResult::bare(Outcome::PermError, why.clone())];
    if config.policy.arc {
        report.arc = ArcResult::fail(0, why.clone());
    }
    report.dmarc = DmarcResult {
        outcome: Outcome::PermError,
        reason: Some(why),
        ..DmarcResult::none()
    };
}

pub(crate) async fn run<D: Dns>(
    parsed: Option<Parsed>,
    overflow: bool,
    groups: &[BodyGroup],
    config: &Config,
    dns: &D,
    keys: &KeyCache,
    context: &Context,
) -> Report {
    let policy = config.policy;
    let mut report = Report {
        policy,
        spf_mailfrom: context.spf_mailfrom.clone(),
        spf_helo: context.spf_helo.clone(),
        dkim: Vec::new(),
        arc: ArcResult::none(),
        dmarc: DmarcResult::none(),
        remote_ip: context.remote_ip,
        dns_queries: 0,
    };
    if policy.is_off() {
        return report;
    }
    let parsed = match parsed {
        Some(parsed) if !overflow => parsed,
        _ => {
            too_large(&mut report, config);
            return report;
        }
    };
    let lookups = Lookups::new(
        dns,
        keys,
        Instant::now() + config.limits.timeout,
        config.limits.max_dns_queries,
    );
    let now = context.unix_now();
    let dmarc_on = policy.dmarc != DmarcMode::Off;
    let plan = if dmarc_on {
        Some(author_plan(&parsed, config))
    } else {
        None
    };

    // DKIM keys, ARC keys and the author domains' tree walks, all at once.
    let dkim = join_all(
        parsed
            .dkim
            .iter()
            .map(|e| verify_dkim(e, &parsed, groups, &lookups, now, config)),
    );
    let arc = async {
        if policy.arc {
            verify_arc(&parsed, groups, &lookups).await
        } else {
            ArcResult::none()
        }
    };
    let walks = async {
        if let Some(Ok(plan)) = &plan {
            join_all(plan.domains.iter().map(|a| dmarc::walk(a, &lookups))).await;
        }
    };
    let (mut dkim, arc, ()) = futures_util::join!(dkim, arc, walks);
    if parsed.dkim.is_empty() && parsed.dkim_skipped == 0 {
        dkim.push(DkimResult {
            reason: None,
            ..DkimResult::bare(Outcome::None, "")
        });
    }
    if parsed.dkim_skipped > 0 {
        dkim.push(DkimResult::bare(
            Outcome::Neutral,
            format!(
                "{} more signatures not verified (limit {})",
                parsed.dkim_skipped, config.limits.max_signatures
            ),
        ));
    }
    report.dmarc = match plan {
        None => DmarcResult::none(),
        Some(Err(result)) => result,
        Some(Ok(plan)) => verify_dmarc(plan, &dkim, context, &lookups).await,
    };
    report.dkim = dkim;
    report.arc = arc;
    report.dns_queries = lookups.asked();
    report
}

#[cfg(test)]
mod tests {
    use crate::{
        Action, Config, Context, DkimMode, Limits, Outcome, Policy, Report, Scanner, Verifier, Zone,
    };

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn run(zone: Zone, config: Config, msg: &[u8]) -> (Report, Vec<String>) {
        let verifier = Verifier::new(zone, config);
        let mut scanner = verifier.scanner();
        scanner.update(msg);
        let report = block_on(scanner.finish(&verifier, &Context::new()));
        let queries = verifier.dns().queries();
        (report, queries)
    }

    #[test]
    fn finish_is_send() {
        fn send<T: Send>(_: &T) {}
        let verifier = Verifier::new(Zone::new(), Config::default());
        let context = Context::new();
        let future = verifier.scanner().finish(&verifier, &context);
        send(&future);
        send(&verifier.scanner());
    }

    #[test]
    fn a_long_author_domain_costs_at_most_eight_queries() {
        let msg = b"From: a@a.b.c.d.e.f.g.h.i.j.mail.example.com\r\n\r\nhi\r\n";
        let (report, queries) = run(Zone::new(), Config::default(), msg);
        assert_eq!(report.dmarc.outcome, Outcome::None);
        assert_eq!(queries.len(), crate::MAX_WALK_QUERIES, "{queries:?}");
        assert_eq!(queries[1], "txt _dmarc.g.h.i.j.mail.example.com");
    }

    #[test]
    fn np_needs_an_existence_query_and_sp_does_not() {
        let msg = b"From: a@x.example.com\r\n\r\nhi\r\n";
        let zone = Zone::new().with_txt("_dmarc.example.com", "v=DMARC1; p=reject; sp=none");
        let (report, queries) = run(zone, Config::default(), msg);
        assert_eq!(
            report.dmarc.evaluations[0].requested,
            Some(crate::Disposition::None)
        );
        assert!(
            !queries.iter().any(|q| q.starts_with("exists")),
            "{queries:?}"
        );
        let zone = Zone::new().with_txt(
            "_dmarc.example.com",
            "v=DMARC1; p=reject; sp=none; np=quarantine",
        );
        let (report, queries) = run(zone, Config::default(), msg);
        let e = &report.dmarc.evaluations[0];
        assert!(e.nonexistent);
        assert_eq!(e.requested, Some(crate::Disposition::Quarantine));
        assert!(
            queries.contains(&"exists x.example.com".to_string()),
            "{queries:?}"
        );
    }

    #[test]
    fn a_hanging_name_server_ends_in_temperror_at_the_deadline() {
        let msg =
            b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s; h=from; bh=YWJj; b=YWJj\r\n\
            From: a@example.com\r\n\r\nhi\r\n";
        let zone = Zone::new()
            .hang("s._domainkey.example.com")
            .hang("_dmarc.example.com");
        let config = Config {
            limits: Limits {
                timeout: std::time::Duration::from_millis(200),
                ..Limits::default()
            },
            ..Config::default()
        };
        let started = std::time::Instant::now();
        let (report, _) = run(zone, config, msg);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(report.dkim[0].outcome, Outcome::TempError);
        assert_eq!(report.dmarc.outcome, Outcome::TempError);
    }

    /// A key that cannot be fetched (a DNS timeout) under `p=reject`: the signature might
    /// have passed and aligned, so DMARC is `temperror` and nothing is refused; an
    /// unaligned one does not stop a `fail`.
    #[test]
    fn a_temporary_failure_that_might_align_is_never_a_fail() {
        let msg =
            b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s; h=from; bh=YWJj; b=YWJj\r\n\
            From: a@example.com\r\n\r\nhi\r\n";
        let policy = crate::Policy {
            dmarc: crate::DmarcMode::Enforce,
            ..crate::Policy::default()
        };
        let zone = || {
            Zone::new()
                .timeout("s._domainkey.example.com")
                .with_txt("_dmarc.example.com", "v=DMARC1; p=reject")
        };
        let (report, _) = run(zone(), Config::with_policy(policy), msg);
        assert_eq!(report.dkim[0].outcome, Outcome::TempError);
        assert_eq!(report.dmarc.outcome, Outcome::TempError);
        assert_eq!(report.action(), Action::Tag { quarantine: false });
        // The same through SPF: a temperror for the author's own domain.
        let verifier = Verifier::new(zone(), Config::with_policy(policy));
        let mut scanner = verifier.scanner();
        scanner.update(b"From: a@example.com\r\n\r\nhi\r\n");
        let context = Context::new().spf_mailfrom(Outcome::TempError, "example.com");
        let report = block_on(scanner.finish(&verifier, &context));
        assert_eq!(report.dmarc.outcome, Outcome::TempError);
        assert_eq!(report.action(), Action::Tag { quarantine: false });
        // A temperror for a domain that cannot align changes nothing: fail, refused.
        let other = String::from_utf8_lossy(msg)
            .replace("d=example.com", "d=other.example")
            .into_bytes();
        let zone = Zone::new()
            .timeout("s._domainkey.other.example")
            .with_txt("_dmarc.example.com", "v=DMARC1; p=reject");
        let (report, _) = run(zone, Config::with_policy(policy), &other);
        assert_eq!(report.dmarc.outcome, Outcome::Fail);
        assert_eq!(report.action(), Action::Reject(crate::DMARC_REJECT));
    }

    #[test]
    fn an_oversized_header_section_is_not_verified() {
        let mut msg = b"From: a@example.com\r\n".to_vec();
        msg.extend_from_slice(format!("X-Big: {}\r\n\r\nhi\r\n", "x".repeat(2000)).as_bytes());
        let config = Config {
            limits: Limits {
                max_header_bytes: 1024,
                ..Limits::default()
            },
            ..Config::default()
        };
        let (report, queries) = run(Zone::new(), config, &msg);
        assert!(queries.is_empty());
        assert_eq!(report.dkim[0].outcome, Outcome::PermError);
        assert_eq!(report.arc.outcome, Outcome::Fail);
        assert_eq!(report.dmarc.outcome, Outcome::PermError);
        assert_eq!(report.action(), Action::Tag { quarantine: false });
    }

    #[test]
    fn everything_off_does_nothing() {
        let config = Config::with_policy(Policy::OFF);
        let mut scanner = Scanner::new(&config);
        scanner.update(b"From: a@example.com\r\n\r\nhi\r\n");
        assert!(!scanner.header_complete());
        let (report, queries) = run(Zone::new(), config, b"From: a@example.com\r\n\r\nhi\r\n");
        assert!(queries.is_empty());
        assert_eq!(report.action(), Action::Accept);
        assert!(report.results().is_empty());
    }

    #[test]
    fn dkim_off_keeps_dkim_out_of_the_field() {
        let config = Config::with_policy(Policy {
            dkim: DkimMode::Off,
            ..Policy::default()
        });
        let (report, _) = run(Zone::new(), config, b"From: a@example.com\r\n\r\nhi\r\n");
        let field = report.authentication_results("mx").field();
        assert!(!field.contains("dkim="), "{field}");
        assert!(field.contains("dmarc=none"), "{field}");
    }

    #[test]
    fn signature_errors_are_reported_with_what_was_readable() {
        let msg =
            b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s; h=to; bh=YWJj; b=YWJj\r\n\
            DKIM-Signature: v=1; a=rsa-sha256; d=example.com\r\n\
            From: a@example.com\r\n\r\nhi\r\n";
        let (report, _) = run(Zone::new(), Config::default(), msg);
        let first = &report.dkim[0];
        assert_eq!(
            (first.outcome, first.reason.as_deref()),
            (Outcome::PermError, Some("h= does not sign From"))
        );
        assert_eq!(first.domain.as_deref(), Some("example.com"));
        assert_eq!(
            (report.dkim[1].outcome, report.dkim[1].reason.as_deref()),
            (Outcome::Neutral, Some("missing b="))
        );
    }
}
