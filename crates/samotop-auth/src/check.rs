//! [`AuthCheck`]: the checks as a samotop-core [`DataCheck`], to stack on a driver or a
//! `Server` like any other end-of-data check.

use std::sync::Arc;

use samotop_core::{
    AuthResult, DataCheck, Envelope, Note, Refusal as CoreRefusal, Scan, SessionInfo, Spool,
    Verdict,
};

use crate::dns::{Dns, Resolver};
use crate::policy::{Action, Refusal};
use crate::report::{Context, Outcome, Report};
use crate::results::AuthenticationResults;
use crate::scanner::Scanner;
use crate::verifier::Verifier;

/// DKIM, DMARC and ARC at the end of the data, as a samotop-core [`DataCheck`].
///
/// Each message streams through a [`Scanner`] while the session spools it; at the end of the
/// data [`Scanner::finish`] asks the DNS (bounded: [`Limits`](crate::Limits)) and the
/// [`Report`] becomes the verdict:
///
/// * one `Authentication-Results` field for `authserv_id` (RFC 8601), first in the stored
///   message: the SPF results the envelope already holds (`smtp.mailfrom`, `smtp.helo`, as
///   the SPF guard put them there at MAIL), then `dkim` (one per signature), `dmarc` and
///   `arc`, as the [`Policy`](crate::Policy) reports them;
/// * the DKIM, DMARC and ARC results as [`AuthResult`]s for [`Envelope::auth`];
/// * under [`DmarcMode::Enforce`](crate::DmarcMode::Enforce), a DMARC `fail` of a `p=reject`
///   domain is refused with [`DMARC_REJECT`](crate::DMARC_REJECT) (`550 5.7.1`: nothing is
///   stored; over LMTP every recipient gets it), a `p=quarantine` one is stored with the
///   quarantine flag ([`Envelope::quarantine`]: the Maildir's junk folder). A `temperror`
///   is never refused.
///
/// Inactive (the session does not spool) when the policy is [`Policy::OFF`](crate::Policy).
/// The session renames incoming fields that claim `authserv_id`
/// ([`claims_authserv_id`](crate::claims_authserv_id)) before the scanner sees them, so a
/// sender cannot forge our verdict.
///
/// ```
/// use samotop_auth::{AuthCheck, Config, Verifier, Zone};
/// use samotop_core::{DataCheck, DataChecks};
///
/// let zone = Zone::new().with_txt("_dmarc.example.com", "v=DMARC1; p=reject");
/// let check = AuthCheck::new(Verifier::new(zone, Config::default()), "mx.example.org");
/// assert!(check.is_active());
/// let checks = DataChecks::new().with(check); // stack it with checks of your own
/// assert!(checks.is_active());
/// ```
pub struct AuthCheck<D: Dns = Resolver> {
    verifier: Arc<Verifier<D>>,
    authserv_id: Arc<str>,
}

impl<D: Dns> std::fmt::Debug for AuthCheck<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthCheck")
            .field("authserv_id", &self.authserv_id)
            .field("policy", &self.verifier.config().policy)
            .finish_non_exhaustive()
    }
}

impl<D: Dns> AuthCheck<D> {
    /// A check with this verifier (its DNS and configuration), writing `authserv_id` (our
    /// host name: the binary's `--name`) into `Authentication-Results`.
    pub fn new(verifier: Verifier<D>, authserv_id: impl Into<String>) -> Self {
        Self::shared(Arc::new(verifier), authserv_id)
    }

    /// A check sharing a verifier with other users.
    pub fn shared(verifier: Arc<Verifier<D>>, authserv_id: impl Into<String>) -> Self {
        AuthCheck {
            verifier,
            authserv_id: Arc::from(authserv_id.into()),
        }
    }

    /// The verifier.
    pub fn verifier(&self) -> &Verifier<D> {
        &self.verifier
    }

    /// The authserv-id written.
    pub fn authserv_id(&self) -> &str {
        &self.authserv_id
    }
}

impl<D: Dns + 'static> DataCheck for AuthCheck<D> {
    type Scan = AuthScan<D>;

    fn is_active(&self) -> bool {
        !self.verifier.config().policy.is_off()
    }

    fn scan(&self, _: &SessionInfo, _: &Envelope) -> AuthScan<D> {
        AuthScan {
            scanner: self.verifier.scanner(),
            verifier: self.verifier.clone(),
            authserv_id: self.authserv_id.clone(),
        }
    }
}

/// One message under an [`AuthCheck`]: its [`Scanner`], fed chunk by chunk.
pub struct AuthScan<D: Dns = Resolver> {
    verifier: Arc<Verifier<D>>,
    scanner: Scanner,
    authserv_id: Arc<str>,
}

impl<D: Dns> std::fmt::Debug for AuthScan<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthScan")
            .field("bytes", &self.scanner.bytes())
            .finish_non_exhaustive()
    }
}

impl<D: Dns + 'static> Scan for AuthScan<D> {
    fn update(&mut self, chunk: &[u8]) {
        self.scanner.update(chunk);
    }

    async fn verdict(self, info: &SessionInfo, envelope: &Envelope, _: &Spool) -> Verdict {
        let context = context(info, envelope);
        let report = self.scanner.finish(&self.verifier, &context).await;
        let verdict = verdict(&report, &self.authserv_id, &envelope.auth);
        log::debug!(
            "session {}: auth dkim={} dmarc={} arc={} dns_queries={} accepts={}",
            info.id,
            report
                .dkim
                .iter()
                .map(|d| d.outcome.as_str())
                .collect::<Vec<_>>()
                .join(","),
            report.dmarc.outcome,
            report.arc.outcome,
            report.dns_queries,
            verdict.accepts()
        );
        verdict
    }
}

/// The [`Context`] of a message: the SPF results the envelope holds (`spf` results with
/// `smtp.mailfrom` or `smtp.helo`), the peer's address, the time now.
fn context(info: &SessionInfo, envelope: &Envelope) -> Context {
    let mut context = Context::new();
    for r in envelope.auth.iter().filter(|r| r.method == "spf") {
        let outcome = r.result.parse().unwrap_or(Outcome::None);
        if let Some(domain) = r.get("smtp.mailfrom") {
            context = context.spf_mailfrom(outcome, domain);
        } else if let Some(name) = r.get("smtp.helo") {
            context = context.spf_helo(outcome, name);
        }
    }
    context.remote_ip = info.peer.ip();
    context
}

/// The core's refusal for ours.
fn refusal(refusal: Refusal) -> CoreRefusal {
    CoreRefusal::new(refusal.code, refusal.enhanced, refusal.text)
}

/// The verdict of a report: `Authentication-Results` for `authserv_id` carrying the
/// `spf` results given (`known`: the envelope's, from MAIL) and the report's other
/// results, those as [`AuthResult`]s, and [`Report::action`]'s quarantine or refusal.
fn verdict(report: &Report, authserv_id: &str, known: &[AuthResult]) -> Verdict {
    let quarantine = match report.action() {
        Action::Accept => return Verdict::Accept,
        Action::Reject(r) => return Verdict::Reject(refusal(r)),
        Action::Tag { quarantine } => quarantine,
    };
    // The envelope's SPF results first, then the report's others; the field shows all of
    // them, the note carries only the others (the envelope has its SPF results already).
    let mut all: Vec<AuthResult> = known
        .iter()
        .filter(|r| r.method == "spf")
        .cloned()
        .collect();
    let spf = all.len();
    all.extend(report.results().into_iter().filter(|r| r.method != "spf"));
    let field = AuthenticationResults::new(authserv_id, &all);
    Verdict::Note(Note {
        headers: vec![format!("{}:{}", AuthenticationResults::NAME, field.value())],
        results: all.split_off(spf),
        quarantine,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, DmarcMode, Policy, Zone};
    use samotop_core::parser::{Host, MailParams, Mailbox, ReversePath};
    use samotop_core::{Peer, Session, SessionConfig};

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(f)
    }

    fn envelope(spf: &[AuthResult]) -> Envelope {
        let sender = ReversePath::Mailbox(Mailbox {
            local: "amy".into(),
            domain: Host::Domain("example.com".into()),
        });
        let mut env = Envelope::new(sender, MailParams::default(), "1.1".into());
        env.auth = spf.to_vec();
        env
    }

    fn check(zone: Zone, dmarc: DmarcMode, msg: &[u8], spf: &[AuthResult]) -> Verdict {
        let policy = Policy {
            dmarc,
            ..Policy::default()
        };
        let check = AuthCheck::new(Verifier::new(zone, Config::with_policy(policy)), "mx.test");
        let info = SessionInfo::new(Peer::Tcp("192.0.2.1:25".parse().unwrap()), "mx.test");
        let env = envelope(spf);
        let mut scan = check.scan(&info, &env);
        for chunk in msg.chunks(5) {
            scan.update(chunk);
        }
        block_on(scan.verdict(&info, &env, &Spool::new(0)))
    }

    const UNSIGNED: &[u8] = b"From: a@example.com\r\nSubject: s\r\n\r\nhi\r\n";

    #[test]
    fn one_field_with_the_envelope_spf_first() {
        let spf = [
            AuthResult::new("spf", "pass")
                .property("smtp.mailfrom", "example.com")
                .reason("matched ip4"),
            AuthResult::new("spf", "none").property("smtp.helo", "client.example"),
        ];
        let zone = Zone::new().with_txt("_dmarc.example.com", "v=DMARC1; p=reject");
        let Verdict::Note(note) = check(zone, DmarcMode::Enforce, UNSIGNED, &spf) else {
            panic!("not a note");
        };
        assert_eq!(note.headers.len(), 1);
        let field = &note.headers[0];
        assert!(
            field.starts_with(
                "Authentication-Results: mx.test;\r\n\
                 \tspf=pass reason=\"matched ip4\" smtp.mailfrom=example.com;\r\n\
                 \tspf=none smtp.helo=client.example;\r\n\tdkim=none;\r\n\
                 \tdmarc=pass policy.dmarc=reject header.from=example.com;\r\n\tarc=none"
            ),
            "{field}"
        );
        assert!(!field.ends_with("\r\n"));
        // SPF is in the envelope already: the note adds the rest.
        let methods: Vec<&str> = note.results.iter().map(|r| r.method.as_str()).collect();
        assert_eq!(methods, ["dkim", "dmarc", "arc"]);
        assert!(!note.quarantine);
    }

    #[test]
    fn enforce_refuses_reject_and_quarantines_quarantine() {
        let spf = [AuthResult::new("spf", "fail").property("smtp.mailfrom", "example.com")];
        let zone = Zone::new().with_txt("_dmarc.example.com", "v=DMARC1; p=reject");
        let verdict = check(zone, DmarcMode::Enforce, UNSIGNED, &spf);
        let Verdict::Reject(refusal) = verdict else {
            panic!("{verdict:?}");
        };
        assert_eq!((refusal.code(), refusal.enhanced()), (550, Some([5, 7, 1])));
        // Tag only tags.
        let zone = Zone::new().with_txt("_dmarc.example.com", "v=DMARC1; p=reject");
        let Verdict::Note(note) = check(zone, DmarcMode::Tag, UNSIGNED, &spf) else {
            panic!("not a note");
        };
        assert!(note.headers[0].contains("dmarc=fail"));
        assert!(!note.quarantine);
        let zone = Zone::new().with_txt("_dmarc.example.com", "v=DMARC1; p=quarantine");
        let Verdict::Note(note) = check(zone, DmarcMode::Enforce, UNSIGNED, &spf) else {
            panic!("not a note");
        };
        assert!(note.quarantine);
        // A DNS failure is tagged, never refused.
        let zone = Zone::new().timeout("_dmarc.example.com");
        let Verdict::Note(note) = check(zone, DmarcMode::Enforce, UNSIGNED, &spf) else {
            panic!("not a note");
        };
        assert!(note.headers[0].contains("dmarc=temperror"), "{note:?}");
    }

    #[test]
    fn off_is_inactive_and_accepts() {
        let check = AuthCheck::new(
            Verifier::new(Zone::new(), Config::with_policy(Policy::OFF)),
            "mx.test",
        );
        assert!(!check.is_active());
        assert!(!samotop_core::DataChecks::new().with(check).is_active());
    }

    /// Through a whole SMTP session (samotop-core's sans-io machine): the forged field is
    /// renamed before the scanner and the store see it, ours comes first, above Received.
    #[test]
    fn through_the_session() {
        use samotop_core::{Answer, Event, Stage};
        use std::time::SystemTime;
        let zone = Zone::new().with_txt("_dmarc.example.com", "v=DMARC1; p=none");
        let check = AuthCheck::new(Verifier::new(zone, Config::default()), "mx.test");
        let config = SessionConfig {
            spool: check.is_active(),
            ..SessionConfig::default()
        };
        let info = SessionInfo::new(Peer::Tcp("192.0.2.1:25".parse().unwrap()), "mx.test");
        let mut session = Session::new(Arc::new(config), info);
        let mut input: &[u8] = b"EHLO client.example\r\nMAIL FROM:<amy@example.com>\r\n\
            RCPT TO:<b@mx.test>\r\nDATA\r\nAuthentication-Results: mx.test; dmarc=pass\r\n\
            From: a@example.com\r\n\r\nhi\r\n.\r\nQUIT\r\n";
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let mut scan = None;
        let mut spooled = Vec::new();
        let mut stored = Vec::new();
        let mut codes = Vec::new();
        for _ in 0..100 {
            while let Some(event) = session.poll_event() {
                match event {
                    Event::Reply(reply) => codes.push(reply.code()),
                    Event::Guard(Stage::EndOfData) => {
                        let scan: AuthScan<Zone> = scan.take().expect("scanned");
                        let verdict = runtime.block_on(scan.verdict(
                            session.info(),
                            session.envelope().expect("an envelope"),
                            &Spool::new(0),
                        ));
                        session.resolve(Answer::Verdict(verdict));
                    }
                    Event::Guard(_) => session.resolve(Answer::Verdict(Verdict::Accept)),
                    Event::Spool(data) => {
                        let s = scan.get_or_insert_with(|| {
                            check.scan(session.info(), session.envelope().expect("envelope"))
                        });
                        s.update(&data);
                        spooled.extend_from_slice(&data);
                        session.resolve(Answer::Done(Ok(())));
                    }
                    Event::Unspool => {
                        stored.extend_from_slice(&spooled);
                        session.resolve(Answer::Done(Ok(())));
                    }
                    Event::Chunk(data) => {
                        stored.extend_from_slice(&data);
                        session.resolve(Answer::Done(Ok(())));
                    }
                    Event::Commit => session.resolve(Answer::Committed(vec![Ok(())])),
                    Event::Abort | Event::Close | Event::StartTls => {}
                    _ => session.resolve(Answer::Done(Ok(()))),
                }
            }
            if session.is_closed() {
                break;
            }
            let used = session.feed(input, SystemTime::now());
            input = &input[used..];
        }
        assert_eq!(codes, [220, 250, 250, 250, 354, 250, 221]);
        let stored = String::from_utf8(stored).expect("ASCII");
        assert!(
            stored.starts_with("Authentication-Results: mx.test;\r\n\tdkim=none;\r\n"),
            "{stored}"
        );
        assert!(stored.contains("dmarc=fail"), "{stored}");
        assert_eq!(stored.matches("\nAuthentication-Results:").count(), 0);
        assert!(stored.contains("\r\nReceived: from client.example"));
        assert!(stored.contains("\r\nX-Forged-Authentication-Results: mx.test; dmarc=pass\r\n"));
    }
}
