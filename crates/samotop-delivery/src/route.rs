//! [`Route`]: each recipient to the dispatch its address picks (`--route PATTERN=URI`),
//! each dispatch getting the message once for all its recipients.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use regex::{Regex, RegexBuilder};
use samotop_core::{
    Capabilities, Envelope, MailDispatch, Outcomes, Recipient, Refusal, SessionInfo, Transaction,
    reply,
};

use crate::tee::{Child, RetryMemory, combine, join_all, remember_successes};

/// A recipient pattern: a regex over the whole delivery address, or a glob such as
/// `alerts+*@example.org`. Both match case-insensitively and the whole address.
///
/// In a glob, `*` is any run of characters but `@`, `?` one character but `@`, anything
/// else itself. What is which: `re:REGEX` is a regex and `glob:GLOB` a glob; without a
/// prefix, a pattern with any of `^ $ ( ) [ ] { } | \` or `.*` `.+` in it is a regex, any
/// other a glob (so `b@example.org` is that address, its dots literal).
///
/// ```
/// use samotop_delivery::Pattern;
/// let glob = Pattern::parse("alerts+*@example.org")?;
/// assert!(glob.matches("ALERTS+env=prod@example.org"));
/// assert!(!glob.matches("alerts+x@example.org.evil"));
/// let re = Pattern::parse(r"^(ops|dev)@.*$")?;
/// assert!(re.matches("dev@example.com"));
/// assert!(Pattern::parse("re:(").is_err());
/// # Ok::<(), samotop_delivery::PatternError>(())
/// ```
#[derive(Clone)]
pub struct Pattern {
    text: String,
    regex: Regex,
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({})", self.text)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A route pattern that does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad route pattern {pattern:?}: {reason}")]
pub struct PatternError {
    /// The pattern as given.
    pub pattern: String,
    /// Why.
    pub reason: String,
}

/// Compiled patterns bigger than this are refused.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// The longest pattern taken.
const MAX_PATTERN: usize = 4096;

impl Pattern {
    /// Parses a pattern (see the type's docs).
    ///
    /// # Errors
    ///
    /// [`PatternError`]: empty, longer than 4096 bytes, or a regex that does not compile
    /// (or compiles to more than 1 MiB).
    pub fn parse(pattern: &str) -> Result<Pattern, PatternError> {
        let bad = |reason: &str| PatternError {
            pattern: pattern.to_string(),
            reason: reason.to_string(),
        };
        if pattern.len() > MAX_PATTERN {
            return Err(bad("longer than 4096 bytes"));
        }
        let source = if let Some(re) = pattern.strip_prefix("re:") {
            re.to_string()
        } else if let Some(glob) = pattern.strip_prefix("glob:") {
            glob_regex(glob)
        } else if looks_like_regex(pattern) {
            pattern.to_string()
        } else {
            glob_regex(pattern)
        };
        if source.is_empty() {
            return Err(bad("empty"));
        }
        let regex = RegexBuilder::new(&format!("^(?:{source})$"))
            .case_insensitive(true)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| bad(&e.to_string()))?;
        Ok(Pattern {
            text: pattern.to_string(),
            regex,
        })
    }

    /// True when the pattern matches the whole `address`.
    pub fn matches(&self, address: &str) -> bool {
        self.regex.is_match(address)
    }
}

fn looks_like_regex(p: &str) -> bool {
    p.contains(['^', '$', '(', ')', '[', ']', '{', '}', '|', '\\'])
        || p.contains(".*")
        || p.contains(".+")
}

fn glob_regex(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len() * 2);
    for c in glob.chars() {
        match c {
            '*' => out.push_str("[^@]*"),
            '?' => out.push_str("[^@]"),
            c => out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    out
}

/// Sends each recipient to the first target whose [`Pattern`] matches its delivery
/// address, else to the default; each target gets one transaction, and the message once,
/// for all its recipients.
///
/// * `RCPT`: the recipient's target opens its transaction (at its first recipient) and
///   takes the recipient; its refusal is the reply, so a downstream server's `550 5.1.1`
///   reaches the client at RCPT time.
/// * The data goes to every target that has recipients, at once; a target that fails
///   is left out from then on, and its recipients fail.
/// * After the data: each recipient's outcome is its target's. Over LMTP each recipient
///   gets that reply; over SMTP the session answers `250` only when all are stored, else a
///   4xx (mixed outcomes, the client retries the whole message).
///
/// So that such a retry does not deliver twice to the targets that stored it, the route
/// remembers for a while ([`remember`](Route::remember)) which target stored which
/// recipient of which message (the envelope's [`digest`](Envelope::digest)); on the retry a
/// target that has all its recipients already is left out and they count as delivered.
/// (A target that has only some of its recipients gets the message again for all: a
/// duplicate, never a loss.)
///
/// EHLO offers what every target can carry ([`Capabilities::and`]).
///
/// ```
/// use samotop_core::BoxDispatch;
/// use samotop_delivery::{Layout, Maildir, Null, Pattern, Route};
/// let route = Route::new(BoxDispatch::new(Maildir::new("/var/mail/in", Layout::Single)))
///     .route(Pattern::parse("noreply@*")?, BoxDispatch::new(Null));
/// # Ok::<(), samotop_delivery::PatternError>(())
/// ```
#[derive(Debug)]
pub struct Route<D> {
    /// Target 0 is the default.
    targets: Arc<Vec<Arc<D>>>,
    rules: Arc<Vec<(Pattern, usize)>>,
    delivered: Arc<RetryMemory>,
}

impl<D> Clone for Route<D> {
    fn clone(&self) -> Self {
        Route {
            targets: self.targets.clone(),
            rules: self.rules.clone(),
            delivered: self.delivered.clone(),
        }
    }
}

impl<D: MailDispatch> Route<D> {
    /// A route that sends every recipient to `default`, until [`route`](Route::route)s
    /// are added. Remembers deliveries for a day, at most 10 000 of them.
    pub fn new(default: D) -> Self {
        Route {
            targets: Arc::new(vec![Arc::new(default)]),
            rules: Arc::new(Vec::new()),
            delivered: Arc::new(RetryMemory::new(
                RetryMemory::DEFAULT_TTL,
                RetryMemory::DEFAULT_MAX,
            )),
        }
    }

    /// Adds a rule after the others: recipients that `pattern` matches (and no earlier
    /// rule) go to `target`.
    pub fn route(mut self, pattern: Pattern, target: D) -> Self {
        let targets = Arc::make_mut(&mut self.targets);
        targets.push(Arc::new(target));
        let index = targets.len() - 1;
        Arc::make_mut(&mut self.rules).push((pattern, index));
        self
    }

    /// How long, and how many, deliveries are remembered to skip on a retry (see
    /// [`Tee::remember`](crate::Tee::remember)); `max = 0` turns it off.
    pub fn remember(mut self, ttl: Duration, max: usize) -> Self {
        self.delivered = Arc::new(RetryMemory::new(ttl, max));
        self
    }

    /// The index of the target for `address`: 0 for the default, else 1 + the rule's
    /// position.
    pub fn target_of(&self, address: &str) -> usize {
        target_of(&self.rules, address)
    }
}

fn target_of(rules: &[(Pattern, usize)], address: &str) -> usize {
    rules
        .iter()
        .find(|(p, _)| p.matches(address))
        .map_or(0, |(_, target)| *target)
}

impl<D: MailDispatch> MailDispatch for Route<D> {
    type Transaction = RouteTransaction<D>;

    fn capabilities(&self) -> Capabilities {
        self.targets
            .iter()
            .map(|t| t.capabilities())
            .fold(Capabilities::default(), Capabilities::and)
    }

    async fn open(
        &self,
        info: &SessionInfo,
        envelope: &Envelope,
    ) -> Result<RouteTransaction<D>, Refusal> {
        Ok(RouteTransaction {
            targets: self.targets.clone(),
            rules: self.rules.clone(),
            delivered: self.delivered.clone(),
            info: info.clone(),
            envelope: envelope.clone(),
            children: (0..self.targets.len()).map(|_| None).collect(),
            recipients: Vec::new(),
        })
    }
}

/// The transaction of a [`Route`]: one transaction per target that has recipients.
#[derive(Debug)]
pub struct RouteTransaction<D: MailDispatch> {
    targets: Arc<Vec<Arc<D>>>,
    rules: Arc<Vec<(Pattern, usize)>>,
    delivered: Arc<RetryMemory>,
    info: SessionInfo,
    envelope: Envelope,
    children: Vec<Option<Child<D::Transaction>>>,
    recipients: Vec<Recipient>,
}

impl<D: MailDispatch> Transaction for RouteTransaction<D> {
    async fn add_recipient(&mut self, recipient: &Recipient) -> Result<(), Refusal> {
        let t = target_of(&self.rules, &recipient.address);
        let Some(slot) = self.children.get_mut(t) else {
            return Err(reply::DELIVERY_FAILED);
        };
        let child = match slot {
            Some(child) => child,
            None => {
                let tx = self.targets[t].open(&self.info, &self.envelope).await?;
                slot.insert(Child::new(tx))
            }
        };
        child.tx.add_recipient(recipient).await?;
        log::debug!("route: <{}> to target {t}", recipient.address);
        child.held.push(self.recipients.len());
        self.recipients.push(recipient.clone());
        Ok(())
    }

    async fn begin(&mut self, info: &SessionInfo, envelope: &Envelope) -> Result<(), Refusal> {
        let recipients = &self.recipients;
        let delivered = &*self.delivered;
        join_all(
            self.children
                .iter_mut()
                .enumerate()
                .filter_map(|(t, c)| c.as_mut().map(|c| (t, c)))
                .map(|(t, child)| child.begin(info, envelope, recipients, delivered, t))
                .collect(),
        )
        .await;
        self.envelope.digest = envelope.digest;
        Ok(())
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        join_all(
            self.children
                .iter_mut()
                .flatten()
                .map(|c| c.write(chunk))
                .collect(),
        )
        .await;
        Ok(())
    }

    async fn commit(&mut self) -> Outcomes {
        let per_child: Vec<Vec<(usize, Result<(), Refusal>)>> = join_all(
            self.children
                .iter_mut()
                .map(|c| async move {
                    match c {
                        Some(c) => c.commit().await,
                        None => Vec::new(),
                    }
                })
                .collect(),
        )
        .await;
        let mut outcomes: Outcomes = vec![Err(reply::DELIVERY_FAILED); self.recipients.len()];
        for (i, outcome) in per_child.iter().flatten() {
            if let Some(slot) = outcomes.get_mut(*i) {
                *slot = combine([outcome.clone()]);
            }
        }
        if outcomes.iter().any(Result::is_err) {
            let children = self
                .children
                .iter()
                .zip(&per_child)
                .enumerate()
                .filter_map(|(t, (c, o))| c.as_ref().map(|c| (t, (c, o))));
            remember_successes(
                &self.delivered,
                self.envelope.digest,
                &self.recipients,
                children,
            );
        }
        outcomes
    }

    async fn abort(&mut self) {
        join_all(
            self.children
                .iter_mut()
                .flatten()
                .map(Child::abort)
                .collect(),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let table: &[(&str, &str, bool)] = &[
            ("alerts+*@example.org", "alerts+env=prod@example.org", true),
            ("alerts+*@example.org", "alerts+@example.org", true),
            ("alerts+*@example.org", "alerts@example.org", false),
            ("alerts+*@example.org", "alerts+a@b@example.org", false),
            ("alerts+*@example.org", "alertsXenv@example.org", false),
            ("*@example.org", "x@example.org", true),
            ("*@example.org", "x@exampleXorg", false),
            ("b@example.org", "B@Example.Org", true),
            ("a?c@x", "abc@x", true),
            (".*@example\\.com", "a@example.com", true),
            ("^ops@.*$", "ops@x", true),
            ("re:a.c@x", "abc@x", true),
            ("glob:a.c@x", "abc@x", false),
            ("glob:a.c@x", "a.c@x", true),
            ("$(rm -rf)@x", "$(rm -rf)@x", false),
        ];
        for &(pattern, address, expected) in table {
            let p = Pattern::parse(pattern).expect(pattern);
            assert_eq!(p.matches(address), expected, "{pattern} ~ {address}");
        }
        for bad in ["", "re:", "re:(", "re:a{99999}", &"x".repeat(5000)] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }
}
