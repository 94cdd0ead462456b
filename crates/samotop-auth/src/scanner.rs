//! The per-message [`Scanner`]: header collection and body hashing as the data streams.

use std::collections::HashMap;

use sha1::Digest as _;

use crate::canon::{BodyCanon, BodySink, Canonicalization};
use crate::header::{Field, HeaderSection, Progress};
use crate::report::Report;
use crate::signature::{HashAlg, Kind, Seal, SigError, Signature, arc_instance};
use crate::verifier::{Config, Verifier};
use crate::{Context, Dns};

/// A running hash.
#[derive(Clone)]
pub(crate) enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Hasher {
    pub(crate) fn new(alg: HashAlg) -> Self {
        match alg {
            HashAlg::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            HashAlg::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(bytes),
            Hasher::Sha256(h) => h.update(bytes),
        }
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
        }
    }

    pub(crate) fn digest(alg: HashAlg, bytes: &[u8]) -> Vec<u8> {
        let mut h = Hasher::new(alg);
        h.update(bytes);
        h.finish()
    }
}

/// One body hash shared by every signature with the same canonicalization, hash and
/// `l=`.
pub(crate) struct BodyGroup {
    pub canon: Canonicalization,
    pub hash: HashAlg,
    pub limit: Option<u64>,
    hasher: Option<Hasher>,
    /// Canonical body bytes seen (all of them, also past `limit`).
    pub total: u64,
    /// Canonical body bytes hashed.
    hashed: u64,
    /// The digest, once the body ended.
    pub digest: Vec<u8>,
}

impl BodyGroup {
    fn write(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let take = match self.limit {
            Some(limit) => (limit.saturating_sub(self.hashed)).min(bytes.len() as u64) as usize,
            None => bytes.len(),
        };
        if take > 0 {
            if let Some(h) = &mut self.hasher {
                h.update(&bytes[..take]);
            }
            self.hashed += take as u64;
        }
    }

    fn finish(&mut self) {
        if let Some(h) = self.hasher.take() {
            self.digest = h.finish();
        }
    }
}

struct GroupSink<'a> {
    groups: &'a mut [BodyGroup],
    canon: Canonicalization,
}

impl BodySink for GroupSink<'_> {
    fn write(&mut self, bytes: &[u8]) {
        for g in self.groups.iter_mut().filter(|g| g.canon == self.canon) {
            g.write(bytes);
        }
    }
}

/// A DKIM-Signature field to verify.
pub(crate) struct DkimEntry {
    pub field: usize,
    pub sig: Result<Signature, SigError>,
    /// Its body hash; `None` past [`Limits::max_body_hashes`](crate::Limits).
    pub group: Option<usize>,
}

/// One ARC set (RFC 8617 4.2).
pub(crate) struct ArcSet {
    pub aar: usize,
    pub ams: usize,
    pub seal: usize,
    pub ams_sig: Result<Signature, SigError>,
    pub seal_sig: Result<Seal, SigError>,
    pub group: Option<usize>,
}

/// The ARC chain as found in the header.
pub(crate) enum ArcPlan {
    None,
    /// Structurally broken (RFC 8617 5.2 steps 1 and 3): `fail` without a look-up.
    Broken(u32, String),
    /// Sets 1..=N, in instance order.
    Chain(Vec<ArcSet>),
}

/// The header section, parsed once it is complete.
pub(crate) struct Parsed {
    pub buf: Vec<u8>,
    pub fields: Vec<Field>,
    /// Field indexes by lower-case name, top first.
    pub by_name: HashMap<Vec<u8>, Vec<usize>>,
    pub dkim: Vec<DkimEntry>,
    /// DKIM-Signature fields past the limit, not verified.
    pub dkim_skipped: usize,
    pub arc: ArcPlan,
    /// The From fields.
    pub from: Vec<usize>,
}

impl Parsed {
    pub(crate) fn raw(&self, field: usize) -> &[u8] {
        &self.buf[self.fields[field].raw.clone()]
    }

    pub(crate) fn value(&self, field: usize) -> &[u8] {
        &self.buf[self.fields[field].value.clone()]
    }

    fn named(&self, name: &str) -> &[usize] {
        self.by_name.get(name.as_bytes()).map_or(&[], Vec::as_slice)
    }
}

enum State {
    /// Collecting the header section.
    Header,
    /// Hashing the body.
    Body,
    /// The header section was over the bound: nothing is verified.
    Overflow,
    /// Every check is off.
    Off,
}

/// The per-message scanner: feed it the message as it streams ([`Scanner::update`]),
/// then [`Scanner::finish`] it.
///
/// `update` is synchronous and does CPU work only: it keeps the header section (up to
/// [`Limits::max_header_bytes`](crate::Limits)) and, once the header section is complete,
/// canonicalizes and hashes the body for every signature at once: one canonicalizer
/// per canonicalization in use, one hash per distinct (canonicalization, hash, `l=`).
/// Nothing of the body is kept, so memory does not grow with the message: the bound is
/// the header section plus a few fixed buffers (about 32 KiB) and one hash state per
/// distinct body hash.
///
/// The input is the message as stored: dot-unstuffed, CR LF line ends, split anywhere.
/// Only CR LF ends a line (bare CR and bare LF are ordinary bytes), as in the session.
pub struct Scanner {
    config: Config,
    header: HeaderSection,
    state: State,
    parsed: Option<Parsed>,
    canons: Vec<BodyCanon>,
    canon_kinds: Vec<Canonicalization>,
    groups: Vec<BodyGroup>,
    bytes: u64,
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner")
            .field("bytes", &self.bytes)
            .field("header_complete", &self.header_complete())
            .field("body_hashes", &self.groups.len())
            .finish_non_exhaustive()
    }
}

impl Scanner {
    /// A scanner for one message under `config` (usually [`Verifier::scanner`]).
    pub fn new(config: &Config) -> Self {
        let state = if config.policy.is_off() {
            State::Off
        } else {
            State::Header
        };
        Scanner {
            config: config.clone(),
            header: HeaderSection::new(
                config.limits.max_header_bytes,
                config.limits.max_header_fields,
            ),
            state,
            parsed: None,
            canons: Vec::new(),
            canon_kinds: Vec::new(),
            groups: Vec::new(),
            bytes: 0,
        }
    }

    /// Message bytes seen so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether the header section is complete (the body is being hashed).
    pub fn header_complete(&self) -> bool {
        matches!(self.state, State::Body)
    }

    /// The DNS names the checks will ask for, known once the header section is complete:
    /// a caller may resolve them early (through the same caching resolver) to warm the
    /// cache while the body streams. Empty before.
    pub fn key_names(&self) -> Vec<String> {
        let Some(parsed) = &self.parsed else {
            return Vec::new();
        };
        let mut names: Vec<String> = Vec::new();
        let mut add = |selector: &str, domain: &str| {
            let name = format!("{selector}._domainkey.{domain}");
            if !names.contains(&name) {
                names.push(name);
            }
        };
        for entry in &parsed.dkim {
            if let Ok(sig) = &entry.sig {
                add(&sig.selector, &sig.domain);
            }
        }
        if let ArcPlan::Chain(sets) = &parsed.arc {
            for set in sets {
                if let Ok(s) = &set.seal_sig {
                    add(&s.selector, &s.domain);
                }
                if let Ok(s) = &set.ams_sig {
                    add(&s.selector, &s.domain);
                }
            }
        }
        names
    }

    /// Takes the next chunk of the message.
    pub fn update(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        match self.state {
            State::Off | State::Overflow => {}
            State::Body => self.hash_body(chunk),
            State::Header => match self.header.update(chunk) {
                Progress::Partial => {}
                Progress::Overflow => self.state = State::Overflow,
                Progress::Complete(at) => {
                    self.plan();
                    self.state = State::Body;
                    self.hash_body(&chunk[at..]);
                }
            },
        }
    }

    fn hash_body(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        for (canon, kind) in self.canons.iter_mut().zip(&self.canon_kinds) {
            canon.update(
                chunk,
                &mut GroupSink {
                    groups: &mut self.groups,
                    canon: *kind,
                },
            );
        }
    }

    fn group(
        &mut self,
        canon: Canonicalization,
        hash: HashAlg,
        limit: Option<u64>,
    ) -> Option<usize> {
        if let Some(i) = self
            .groups
            .iter()
            .position(|g| g.canon == canon && g.hash == hash && g.limit == limit)
        {
            return Some(i);
        }
        if self.groups.len() >= self.config.limits.max_body_hashes {
            return None;
        }
        self.groups.push(BodyGroup {
            canon,
            hash,
            limit,
            hasher: Some(Hasher::new(hash)),
            total: 0,
            hashed: 0,
            digest: Vec::new(),
        });
        if !self.canon_kinds.contains(&canon) {
            self.canon_kinds.push(canon);
            self.canons.push(BodyCanon::new(canon));
        }
        Some(self.groups.len() - 1)
    }

    fn group_for(&mut self, sig: &Signature) -> Option<usize> {
        self.group(sig.body_canon, sig.algorithm.hash(), sig.length)
    }

    /// The header section is complete: find the signatures and the ARC sets, and set up
    /// the body hashes.
    fn plan(&mut self) {
        let buf = self.header.take();
        let fields = crate::header::split_fields(&buf);
        let mut by_name: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
        for (i, f) in fields.iter().enumerate() {
            by_name
                .entry(buf[f.name.clone()].to_ascii_lowercase())
                .or_default()
                .push(i);
        }
        let mut parsed = Parsed {
            buf,
            fields,
            by_name,
            dkim: Vec::new(),
            dkim_skipped: 0,
            arc: ArcPlan::None,
            from: Vec::new(),
        };
        parsed.from = parsed.named("from").to_vec();
        let policy = self.config.policy;
        let limits = self.config.limits.clone();
        if policy.verifies_dkim() {
            let fields = parsed.named("dkim-signature").to_vec();
            for (n, field) in fields.into_iter().enumerate() {
                if n >= limits.max_signatures {
                    parsed.dkim_skipped += 1;
                    continue;
                }
                let sig = Signature::parse(parsed.value(field), Kind::Dkim);
                let group = match &sig {
                    Ok(sig) => self.group_for(sig),
                    Err(_) => None,
                };
                parsed.dkim.push(DkimEntry { field, sig, group });
            }
        }
        if policy.arc {
            parsed.arc = self.plan_arc(&parsed, limits.max_arc_sets);
        }
        self.parsed = Some(parsed);
    }

    fn plan_arc(&mut self, parsed: &Parsed, max_sets: usize) -> ArcPlan {
        let mut by_instance: Vec<[Vec<usize>; 3]> = Vec::new();
        let mut any = false;
        for (kind, name) in [
            "arc-authentication-results",
            "arc-message-signature",
            "arc-seal",
        ]
        .into_iter()
        .enumerate()
        {
            for &field in parsed.named(name) {
                any = true;
                let Some(i) = arc_instance(parsed.value(field)) else {
                    return ArcPlan::Broken(0, format!("{name} without a valid i="));
                };
                let i = i as usize;
                if i > max_sets {
                    return ArcPlan::Broken(i as u32, format!("more than {max_sets} ARC sets"));
                }
                if by_instance.len() < i {
                    by_instance.resize_with(i, Default::default);
                }
                by_instance[i - 1][kind].push(field);
            }
        }
        if !any {
            return ArcPlan::None;
        }
        let n = by_instance.len() as u32;
        let mut sets = Vec::new();
        for (i, fields) in by_instance.iter().enumerate() {
            let [aar, ams, seal] = fields;
            if aar.len() != 1 || ams.len() != 1 || seal.len() != 1 {
                return ArcPlan::Broken(n, format!("ARC set {} is incomplete or repeated", i + 1));
            }
            sets.push(ArcSet {
                aar: aar[0],
                ams: ams[0],
                seal: seal[0],
                ams_sig: Signature::parse(parsed.value(ams[0]), Kind::ArcMessage),
                seal_sig: Seal::parse(parsed.value(seal[0])),
                group: None,
            });
        }
        // Body hashes: the newest AMS first (it must validate), then older ones for
        // oldest-pass while the limit allows.
        for i in (0..sets.len()).rev() {
            let group = match &sets[i].ams_sig {
                Ok(sig) => self.group_for(sig),
                Err(_) => None,
            };
            sets[i].group = group;
        }
        ArcPlan::Chain(sets)
    }

    /// Ends the message and checks it: key and record look-ups through `verifier`'s DNS
    /// (all at once, each bounded, the whole bounded by
    /// [`Limits::timeout`](crate::Limits) — past it, what is missing is `temperror`),
    /// then DKIM, ARC and DMARC. Never fails: every problem is a result in the report.
    pub async fn finish<D: Dns>(mut self, verifier: &Verifier<D>, context: &Context) -> Report {
        if let State::Header = self.state {
            self.header.finish();
            self.plan();
            self.state = State::Body;
        }
        for (canon, kind) in self.canons.iter_mut().zip(&self.canon_kinds) {
            canon.finish(&mut GroupSink {
                groups: &mut self.groups,
                canon: *kind,
            });
        }
        for g in &mut self.groups {
            g.finish();
        }
        let overflow = matches!(self.state, State::Overflow);
        crate::verify::run(
            self.parsed,
            overflow,
            &self.groups,
            &self.config,
            verifier.dns(),
            verifier.keys(),
            context,
        )
        .await
    }
}
