//! The store as a [`MailDispatch`]: a message is committed durably, then answered.

use samotop_core::{
    Envelope, MailDispatch, Outcomes, Recipient, Refusal, SessionInfo, Transaction, reply,
};

use crate::model::{AuthVerdict, EnvelopeInfo};
use crate::staging::Staging;
use crate::store::{Inbox, NewMessage, new_uid, now_ms};

impl MailDispatch for Inbox {
    type Transaction = InboxTransaction;

    async fn open(
        &self,
        _: &SessionInfo,
        envelope: &Envelope,
    ) -> Result<InboxTransaction, Refusal> {
        Ok(InboxTransaction {
            inbox: self.clone(),
            id: envelope.id.clone(),
            recipients: 0,
            staging: None,
            envelope: None,
            failed: None,
        })
    }
}

/// One message on its way into an [`Inbox`].
///
/// The data is compressed (zstd) as it arrives, in memory up to 1 MiB of compressed data and
/// then in an unlinked temporary file; at the commit the store writes the message, its
/// envelope and one row per recipient in one database transaction, shared with the commits
/// of other sessions (group commit). Every recipient gets the same outcome: `Ok` only once
/// that transaction is durable, else `451 4.3.0` (`452 4.3.1` when the database is full).
/// Parsing happens after the commit, never before the reply.
pub struct InboxTransaction {
    inbox: Inbox,
    id: String,
    recipients: usize,
    staging: Option<Staging>,
    envelope: Option<(String, Vec<String>, String)>,
    failed: Option<Refusal>,
}

impl std::fmt::Debug for InboxTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxTransaction")
            .field("id", &self.id)
            .field("recipients", &self.recipients)
            .finish_non_exhaustive()
    }
}

impl InboxTransaction {
    fn fail(&mut self, error: crate::Error) -> Refusal {
        let reply = error.reply();
        log::warn!("inbox {}: {error}; replying {reply}", self.id);
        self.failed = Some(reply.clone());
        self.staging = None;
        reply
    }
}

impl Transaction for InboxTransaction {
    /// Every recipient is accepted: any address at the domain has an inbox.
    async fn add_recipient(&mut self, _: &Recipient) -> Result<(), Refusal> {
        self.recipients += 1;
        Ok(())
    }

    async fn begin(&mut self, info: &SessionInfo, envelope: &Envelope) -> Result<(), Refusal> {
        let recipients: Vec<String> = envelope
            .recipients
            .iter()
            .map(|r| r.address.clone())
            .collect();
        let sender = envelope.sender.to_string();
        let facts = EnvelopeInfo {
            mail_from: sender.clone(),
            recipients: recipients.clone(),
            helo: info
                .helo
                .as_ref()
                .map(|h| h.to_string())
                .unwrap_or_default(),
            peer: info.peer.to_string(),
            protocol: info.with_protocol().to_string(),
            tls_version: info
                .tls
                .as_ref()
                .map(|t| t.version.clone())
                .unwrap_or_default(),
            tls_cipher: info
                .tls
                .as_ref()
                .map(|t| t.cipher.clone())
                .unwrap_or_default(),
            server: info.server_name.clone(),
            transaction_id: envelope.id.clone(),
            auth: envelope
                .auth
                .iter()
                .map(|a| AuthVerdict {
                    method: a.method.clone(),
                    result: a.result.clone(),
                    reason: a.reason.clone(),
                    properties: a.properties.clone(),
                })
                .collect(),
            quarantine: envelope.quarantine,
        };
        let json = serde_json::to_string(&facts)
            .map_err(|e| self.fail(crate::Error::Stage(e.to_string())))?;
        self.envelope = Some((sender, recipients, json));
        match Staging::new() {
            Ok(s) => {
                self.staging = Some(s);
                Ok(())
            }
            Err(e) => Err(self.fail(e.into())),
        }
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        if let Some(reply) = &self.failed {
            return Err(reply.clone());
        }
        let Some(staging) = self.staging.as_mut() else {
            return Err(reply::DELIVERY_FAILED);
        };
        if let Err(e) = staging.write(chunk) {
            return Err(self.fail(e.into()));
        }
        Ok(())
    }

    async fn commit(&mut self) -> Outcomes {
        let n = self.recipients.max(1);
        if let Some(reply) = self.failed.clone() {
            return vec![Err(reply); n];
        }
        let (Some(staging), Some((sender, recipients, envelope_json))) =
            (self.staging.take(), self.envelope.take())
        else {
            log::warn!("inbox {}: commit without data", self.id);
            return vec![Err(reply::DELIVERY_FAILED); n];
        };
        let size = staging.size();
        let raw = match staging.finish() {
            Ok(raw) => raw,
            Err(e) => return vec![Err(self.fail(e.into())); n],
        };
        let uid = match new_uid() {
            Ok(uid) => uid,
            Err(e) => return vec![Err(self.fail(e)); n],
        };
        let message = NewMessage {
            uid: uid.clone(),
            received_ms: now_ms(),
            size,
            sender,
            recipients,
            envelope_json,
            raw,
        };
        match self.inbox.store(message).await {
            Ok(cursor) => {
                log::debug!(
                    "inbox {}: stored as {uid} (cursor {cursor}, {size} bytes)",
                    self.id
                );
                self.failed = Some(reply::DELIVERY_FAILED); // a second commit must not answer Ok
                vec![Ok(()); n]
            }
            Err(e) => vec![Err(self.fail(e)); n],
        }
    }

    async fn abort(&mut self) {
        self.staging = None;
        self.failed = Some(reply::DELIVERY_FAILED);
    }
}
