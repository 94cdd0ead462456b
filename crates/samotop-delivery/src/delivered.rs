//! [`Delivered`]: what was already delivered of a message, so that a client's retry after a
//! mixed outcome does not deliver it again (no duplicate storm).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// A bounded memory of (message, recipient) pairs already delivered.
///
/// Over SMTP a message that reached some recipients and failed for another is answered with a
/// 4xx (a duplicate beats a loss), and the client retries it for days. A backend that passes
/// mail on (the LMTP proxy in front of Dovecot, a route, a fan-out) remembers each recipient
/// it delivered, keyed by the message's identity
/// ([`Envelope::digest`](samotop_core::Envelope::digest)), and skips it when the same message
/// comes again: each recipient gets one copy.
///
/// The memory is bounded by construction: entries expire after `ttl` (the retry window) and
/// the oldest go first past `capacity` (a recipient then gets a duplicate, never a loss). It
/// lives in the process: a restart forgets (duplicates again possible, as without it).
///
/// ```
/// use std::time::Duration;
/// use samotop_delivery::Delivered;
/// let delivered = Delivered::new(Duration::from_secs(3600), 1000);
/// let message = [7u8; 32];
/// delivered.remember(&message, "alice@example.org");
/// assert!(delivered.contains(&message, "ALICE@example.org"));
/// assert!(!delivered.contains(&message, "bob@example.org"));
/// ```
#[derive(Debug)]
pub struct Delivered {
    ttl: Duration,
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    until: HashMap<[u8; 32], Instant>,
    order: VecDeque<([u8; 32], Instant)>,
}

impl Delivered {
    /// Remembers up to `capacity` pairs for `ttl` each.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Delivered {
            ttl,
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The default memory: 5 days (the usual retry window of an MTA) and 100 000 pairs
    /// (about 10 MB).
    pub fn default_window() -> Self {
        Delivered::new(Duration::from_secs(5 * 24 * 3600), 100_000)
    }

    fn key(message: &[u8; 32], recipient: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(message);
        h.update([0u8]);
        h.update(recipient.to_lowercase().as_bytes());
        h.finalize().into()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Insert and remove keep the two structures consistent at every step.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `recipient` (its address, any case) has `message` stored.
    pub fn remember(&self, message: &[u8; 32], recipient: &str) {
        let key = Self::key(message, recipient);
        let now = Instant::now();
        let until = now + self.ttl;
        let mut inner = self.inner();
        inner.expire(now);
        if inner.until.insert(key, until).is_none() {
            inner.order.push_back((key, until));
        }
        // Bounded: each turn removes one entry.
        while inner.until.len() > self.capacity {
            match inner.order.pop_front() {
                Some((old, _)) => {
                    inner.until.remove(&old);
                }
                None => break,
            }
        }
    }

    /// True when `recipient` has `message` stored, within the window.
    pub fn contains(&self, message: &[u8; 32], recipient: &str) -> bool {
        let key = Self::key(message, recipient);
        let now = Instant::now();
        let mut inner = self.inner();
        inner.expire(now);
        inner.until.get(&key).is_some_and(|&until| until > now)
    }

    /// Pairs remembered now.
    pub fn len(&self) -> usize {
        self.inner().until.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    /// Drops expired entries from the front (the oldest first).
    fn expire(&mut self, now: Instant) {
        while let Some((key, until)) = self.order.front().copied() {
            if until > now {
                break;
            }
            self.order.pop_front();
            if self.until.get(&key).is_some_and(|&u| u <= now) {
                self.until.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_capacity() {
        let d = Delivered::new(Duration::from_secs(60), 3);
        for i in 0..10u8 {
            d.remember(&[i; 32], "a@b");
        }
        assert_eq!(d.len(), 3);
        assert!(d.contains(&[9; 32], "a@b"));
        assert!(!d.contains(&[0; 32], "a@b"), "the oldest went first");
    }

    #[test]
    fn entries_expire() {
        let d = Delivered::new(Duration::ZERO, 10);
        d.remember(&[1; 32], "a@b");
        assert!(!d.contains(&[1; 32], "a@b"));
        assert!(d.is_empty());
    }
}
