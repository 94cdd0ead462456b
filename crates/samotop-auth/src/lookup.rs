//! DNS for one evaluation: every question under one deadline, counted against a limit,
//! and asked once (the DMARC tree walks for the author and for each identifier share
//! most of their names).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::time::Instant;

use crate::dns::{Dns, DnsError};
use crate::key::KeyCache;

/// Why a look-up gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LookupError {
    /// The DNS failed, or the deadline passed ([`DnsError::Timeout`]).
    Dns(DnsError),
    /// This evaluation already asked its maximum of questions.
    Limit,
}

impl LookupError {
    /// Whether a later try could give an answer: a `temperror`, else a `permerror`.
    pub(crate) fn is_temporary(&self) -> bool {
        matches!(
            self,
            LookupError::Dns(DnsError::Timeout | DnsError::Temporary(_))
        )
    }

    /// A short reason.
    pub(crate) fn text(&self) -> String {
        match self {
            LookupError::Dns(e) => e.to_string(),
            LookupError::Limit => "too many DNS queries".into(),
        }
    }
}

#[derive(Debug, Clone)]
enum Cached {
    Txt(Result<Vec<Vec<u8>>, LookupError>),
    Exists(Result<bool, LookupError>),
}

pub(crate) struct Lookups<'d, D> {
    dns: &'d D,
    deadline: Instant,
    max: usize,
    asked: AtomicUsize,
    cache: Mutex<HashMap<(bool, String), Cached>>,
    keys: &'d KeyCache,
}

impl<'d, D: Dns> Lookups<'d, D> {
    /// Look-ups through `dns` until `deadline`, at most `max` questions; key records are
    /// parsed through `keys`, which outlives them.
    pub(crate) fn new(dns: &'d D, keys: &'d KeyCache, deadline: Instant, max: usize) -> Self {
        Lookups {
            dns,
            deadline,
            max,
            asked: AtomicUsize::new(0),
            cache: Mutex::new(HashMap::new()),
            keys,
        }
    }

    /// The key records' cache.
    pub(crate) fn keys(&self) -> &'d KeyCache {
        self.keys
    }

    /// How many questions went to the DNS.
    pub(crate) fn asked(&self) -> usize {
        self.asked.load(Ordering::Relaxed)
    }

    fn cached(&self, key: &(bool, String)) -> Option<Cached> {
        self.cache.lock().ok()?.get(key).cloned()
    }

    fn store(&self, key: (bool, String), value: Cached) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(key, value);
        }
    }

    fn admit(&self) -> Result<(), LookupError> {
        if self.asked.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.asked.fetch_sub(1, Ordering::Relaxed);
            return Err(LookupError::Limit);
        }
        Ok(())
    }

    pub(crate) async fn txt(&self, name: &str) -> Result<Vec<Vec<u8>>, LookupError> {
        let key = (false, name.to_ascii_lowercase());
        if let Some(Cached::Txt(answer)) = self.cached(&key) {
            return answer;
        }
        self.admit()?;
        let answer = tokio::time::timeout_at(self.deadline, self.dns.txt(name))
            .await
            .unwrap_or(Err(DnsError::Timeout))
            .map_err(LookupError::Dns);
        self.store(key, Cached::Txt(answer.clone()));
        answer
    }

    pub(crate) async fn exists(&self, name: &str) -> Result<bool, LookupError> {
        let key = (true, name.to_ascii_lowercase());
        if let Some(Cached::Exists(answer)) = self.cached(&key) {
            return answer;
        }
        self.admit()?;
        let answer = tokio::time::timeout_at(self.deadline, self.dns.exists(name))
            .await
            .unwrap_or(Err(DnsError::Timeout))
            .map_err(LookupError::Dns);
        self.store(key, Cached::Exists(answer.clone()));
        answer
    }
}
