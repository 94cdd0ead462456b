//! The replies after the data: one for SMTP, one per recipient for LMTP (RFC 2033 4.2).

use super::Session;
use crate::dispatch::Outcomes;
use crate::envelope::Protocol;
use crate::reply::{self, Refusal};

impl Session {
    /// Replies the data owes at its end: one for SMTP; for LMTP one per accepted recipient
    /// (at least one).
    pub(super) fn reply_count(&self) -> usize {
        match (self.config.protocol, self.envelope.as_ref()) {
            (Protocol::Lmtp, Some(env)) => env.recipients.len().max(1),
            _ => 1,
        }
    }

    /// The answer to `Commit`: the replies after the data.
    pub(super) fn committed(&mut self, outcomes: Outcomes) {
        let Some(env) = self.envelope.take() else {
            return;
        };
        self.opened = false;
        self.message = super::data::Message::default();
        let n = env.recipients.len();
        if outcomes.len() != n {
            log::error!(
                "session {}: the backend gave {} outcomes for {n} recipients",
                self.info.id,
                outcomes.len()
            );
        }
        let outcome = |i: usize| -> Result<(), Refusal> {
            outcomes
                .get(i)
                .cloned()
                .unwrap_or(Err(reply::DELIVERY_FAILED))
        };
        match self.config.protocol {
            Protocol::Lmtp => {
                let mut any = false;
                for (i, rcpt) in env.recipients.iter().enumerate() {
                    match outcome(i) {
                        Ok(()) => {
                            any = true;
                            self.reply(reply::delivered(&rcpt.path.to_string()));
                        }
                        Err(refusal) => {
                            log::warn!(
                                "session {}: delivery of {} to <{}> failed: {refusal}",
                                self.info.id,
                                env.id,
                                rcpt.address
                            );
                            self.reply(refusal);
                        }
                    }
                }
                if any {
                    self.stats.mails += 1;
                }
            }
            Protocol::Smtp => {
                let results: Vec<_> = (0..n).map(outcome).collect();
                let failures: Vec<&Refusal> =
                    results.iter().filter_map(|r| r.as_ref().err()).collect();
                if failures.is_empty() {
                    self.stats.mails += 1;
                    self.reply(reply::message_accepted(&env.id));
                    return;
                }
                let same_class = failures
                    .iter()
                    .all(|f| f.code() / 100 == failures[0].code() / 100);
                let refusal = if failures.len() == n && same_class {
                    failures[0].clone()
                } else {
                    // Mixed outcomes: the client retries; a duplicate beats a loss. A backend
                    // that remembers what it delivered (the envelope's digest) skips those.
                    let each: Vec<String> = env
                        .recipients
                        .iter()
                        .zip(&results)
                        .map(|(r, o)| match o {
                            Ok(()) => format!("<{}> stored", r.address),
                            Err(f) => format!("<{}> {f}", r.address),
                        })
                        .collect();
                    log::warn!(
                        "session {}: mixed outcome for {}: {}; answering {}",
                        self.info.id,
                        env.id,
                        each.join(", "),
                        reply::DELIVERY_FAILED
                    );
                    reply::DELIVERY_FAILED
                };
                log::debug!(
                    "session {}: delivery of {} failed: {refusal}",
                    self.info.id,
                    env.id
                );
                self.refuse(refusal);
            }
        }
    }
}
