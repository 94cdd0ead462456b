//! Recipient maps: `REGEX=REPLACEMENT` rules that rewrite a recipient's delivery address
//! before a backend sees it (the server's `--map`), and [`Mapped`], the dispatch wrapper
//! that applies them.

use std::fmt;
use std::sync::Arc;

use regex::{Regex, RegexBuilder};
use samotop_core::{
    Envelope, MailDispatch, Outcomes, Recipient, Refusal, SessionInfo, Transaction,
};

use crate::Error;

/// Ordered rewrite rules for delivery addresses; the first rule that matches wins, and an
/// address that no rule matches is kept as it is.
///
/// A rule is `REGEX=REPLACEMENT`, split at the **last** `=`: a regex may contain `=` (as in
/// SRS or BATV addresses, `prvs=...`), a replacement cannot. The regex must match the
/// **whole** address (it is anchored, as if written `^(?:REGEX)$`), and it matches
/// **case-insensitively** (addresses mostly are; write `(?-i)` to turn that off). The
/// replacement uses the regex crate's syntax: `$1`, `${name}`, `$$` for a dollar; write
/// `${1}x` rather than `$1x` when a letter, digit or `_` follows.
///
/// The result is the delivery address ([`Recipient::address`]): a Maildir per-recipient
/// layout makes directories from it, an LMTP backend sends it as the recipient. It may be
/// any string, e.g. a bare user name.
///
/// ```
/// use samotop_delivery::RecipientMap;
/// let map = RecipientMap::parse(&[
///     r"postmaster@.*=admin@example.com".to_string(),
///     r"(.*)@(.*)=$2-$1".to_string(),
/// ])?;
/// assert_eq!(map.map("user@example.com"), "example.com-user");
/// assert_eq!(map.map("PostMaster@example.org"), "admin@example.com");
/// assert_eq!(map.map("no-at-sign"), "no-at-sign");
/// # Ok::<(), samotop_delivery::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct RecipientMap {
    rules: Vec<Rule>,
}

#[derive(Clone)]
struct Rule {
    regex: Regex,
    replacement: String,
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.regex.as_str(), self.replacement)
    }
}

/// Compiled regexes bigger than this are refused (the regex crate's default is 10 MiB).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl RecipientMap {
    /// Parses rules in order, as given to `--map`.
    ///
    /// A rule without `=`, with an empty regex or replacement, or whose regex does not
    /// compile is [`Error::BadMapRule`], naming the rule and why.
    pub fn parse(rules: &[String]) -> Result<RecipientMap, Error> {
        let rules = rules
            .iter()
            .map(|rule| {
                let bad = |reason: String| Error::BadMapRule {
                    rule: rule.clone(),
                    reason,
                };
                let (regex, replacement) = rule
                    .rsplit_once('=')
                    .ok_or_else(|| bad("expected REGEX=REPLACEMENT".into()))?;
                if regex.is_empty() {
                    return Err(bad("empty regex".into()));
                }
                if replacement.is_empty() {
                    return Err(bad("empty replacement".into()));
                }
                let regex = RegexBuilder::new(&format!("^(?:{regex})$"))
                    .case_insensitive(true)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| bad(e.to_string()))?;
                Ok(Rule {
                    regex,
                    replacement: replacement.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(RecipientMap { rules })
    }

    /// True when there are no rules (every address is kept).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The delivery address for `address`: the first matching rule's replacement, with
    /// captures expanded, or `address` itself when no rule matches.
    pub fn map(&self, address: &str) -> String {
        for rule in &self.rules {
            if let Some(caps) = rule.regex.captures(address) {
                let mut out = String::new();
                caps.expand(&rule.replacement, &mut out);
                return out;
            }
        }
        address.to_string()
    }
}

/// A dispatch that rewrites each recipient's delivery address with a [`RecipientMap`], then
/// hands it to the inner dispatch (`--map`). Everything else passes through unchanged; the
/// inner dispatch's replies are the replies.
///
/// ```
/// use samotop_delivery::{Mapped, Null, RecipientMap};
/// let map = RecipientMap::parse(&[r"(.*)@example\.com=$1".to_string()])?;
/// let dispatch = Mapped::new(map, Null);
/// # Ok::<(), samotop_delivery::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Mapped<D> {
    map: Arc<RecipientMap>,
    inner: D,
}

impl<D: MailDispatch> Mapped<D> {
    /// Wraps `inner`, rewriting recipients with `map`.
    pub fn new(map: RecipientMap, inner: D) -> Self {
        Mapped {
            map: Arc::new(map),
            inner,
        }
    }
}

impl<D: MailDispatch> MailDispatch for Mapped<D> {
    type Transaction = MappedTransaction<D::Transaction>;

    async fn open(
        &self,
        info: &SessionInfo,
        envelope: &Envelope,
    ) -> Result<Self::Transaction, Refusal> {
        let inner = self.inner.open(info, envelope).await?;
        Ok(MappedTransaction {
            map: self.map.clone(),
            inner,
        })
    }
}

/// The transaction of [`Mapped`]: the inner transaction, seeing mapped addresses.
#[derive(Debug)]
pub struct MappedTransaction<T> {
    map: Arc<RecipientMap>,
    inner: T,
}

impl<T> MappedTransaction<T> {
    fn mapped(&self, recipient: &Recipient) -> Recipient {
        Recipient {
            address: self.map.map(&recipient.address),
            ..recipient.clone()
        }
    }
}

impl<T: Transaction> Transaction for MappedTransaction<T> {
    /// Passes the recipient on with its address mapped.
    async fn add_recipient(&mut self, recipient: &Recipient) -> Result<(), Refusal> {
        let mapped = self.mapped(recipient);
        if mapped.address != recipient.address {
            log::debug!("map: {} -> {}", recipient.address, mapped.address);
        }
        self.inner.add_recipient(&mapped).await
    }

    /// Passes the envelope on with its recipients' addresses mapped.
    async fn begin(&mut self, info: &SessionInfo, envelope: &Envelope) -> Result<(), Refusal> {
        let mut envelope = envelope.clone();
        for r in &mut envelope.recipients {
            r.address = self.map.map(&r.address);
        }
        self.inner.begin(info, &envelope).await
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        self.inner.write(chunk).await
    }

    async fn commit(&mut self) -> Outcomes {
        self.inner.commit().await
    }

    async fn abort(&mut self) {
        self.inner.abort().await
    }
}
