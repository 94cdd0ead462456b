//! [`Encrypt`]: a dispatch over any dispatch that stores every message encrypted.

use std::str::FromStr;
use std::sync::{Arc, RwLock};

use samotop_core::{
    Capabilities, Envelope, MailDispatch, Outcomes, Recipient, Refusal, SessionInfo, Transaction,
    reply,
};

use crate::header::{DEFAULT_HEAD_LIMIT, HeadBuffer, Headers, outer_header};
use crate::{Certificate, Encryptor, Keys, Output};

/// What happens to a recipient without a certificate of its own (see [`Keys`]):
/// `--encrypt-missing`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Missing {
    /// Refuse it at RCPT with [`reply::NO_CERTIFICATE`] (`550 5.7.1`), before any data: the
    /// default, since encryption at rest means no plaintext on disk.
    #[default]
    Refuse,
    /// Store its copy as it came, not encrypted. Then the dispatch carries only what the
    /// inner backend carries (a clear copy goes as it came).
    Deliver,
}

impl FromStr for Missing {
    type Err = String;
    /// `refuse` or `deliver`.
    fn from_str(s: &str) -> Result<Missing, String> {
        match s.to_ascii_lowercase().as_str() {
            "refuse" => Ok(Missing::Refuse),
            "deliver" => Ok(Missing::Deliver),
            _ => Err(format!("{s:?}: expected refuse or deliver")),
        }
    }
}

/// The certificates in use, shared by an [`Encrypt`] and whoever reloads them.
///
/// A transaction takes the current [`Keys`] when it opens and keeps them to its end, so a
/// reload never changes a message halfway.
#[derive(Debug, Clone, Default)]
pub struct KeyHandle(Arc<RwLock<Arc<Keys>>>);

impl KeyHandle {
    /// Puts `keys` in force for transactions opened from now on.
    pub fn replace(&self, keys: Keys) {
        let mut current = self.0.write().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(keys);
    }

    /// The keys in force.
    pub fn current(&self) -> Arc<Keys> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Stores every message encrypted: a [`MailDispatch`] that wraps any other (a Maildir, an
/// LMTP server, a SQL store, a webhook) and hands it, instead of the message, an S/MIME
/// message (RFC 8551) whose body is a CMS EnvelopedData of the whole original message.
///
/// What the inner backend receives, per copy:
///
/// ```text
/// Received: ...             } the fields that stay readable (`Headers`), copied
/// From: ... Subject: ...    }
/// MIME-Version: 1.0
/// Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m
/// Content-Disposition: attachment; filename=smime.p7m
/// Content-Transfer-Encoding: base64
///
/// MIAGCSqGSIb3DQEHA6CAMIACAQAxggE...    (76 columns; decrypts to the message as received,
/// ...                                     trace fields first, byte for byte)
/// ```
///
/// * **Per recipient.** Recipients are grouped by the certificates their copy goes to
///   ([`Keys`]); each group gets an inner transaction of its own and its own ciphertext, and
///   [`commit`](Transaction::commit) maps the groups' outcomes back to the recipients in
///   RCPT order. A recipient without a certificate follows [`Missing`].
/// * **Streaming.** Only the header section is gathered (up to 256 KiB; a longer one is
///   encrypted whole and nothing stays readable); the rest is encrypted chunk by chunk as
///   it comes and written on. Nothing is written to disk by this wrapper: the plaintext
///   is only ever in memory, a few buffers of at most a chunk each.
/// * **Failures.** A backend or encryption error aborts that group's inner transaction (so
///   nothing of it is stored) and answers its recipients with the backend's refusal or
///   `451 4.3.0`, with a `warn!` line. Nothing but ciphertext and the readable fields ever
///   reaches the inner backend.
/// * **Capabilities.** What reaches the backend is 7-bit base64, so 8BITMIME, BINARYMIME
///   and CHUNKING are offered whatever the backend takes; SMTPUTF8 as the backend; SIZE
///   shrunk by the growth of base64 and CMS (×1/0.72, plus 64 KiB). With
///   [`Missing::Deliver`], what the backend offers.
///
/// The private keys are never needed: only the recipients' certificates.
pub struct Encrypt<D> {
    inner: Arc<D>,
    keys: KeyHandle,
    missing: Missing,
    headers: Headers,
    head_limit: usize,
}

impl<D> std::fmt::Debug for Encrypt<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encrypt")
            .field("missing", &self.missing)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl<D: MailDispatch> Encrypt<D> {
    /// Wraps `inner`: every message to it is encrypted to `keys`. Defaults:
    /// [`Missing::Refuse`], [`Headers::Listable`].
    pub fn new(inner: D, keys: Keys) -> Encrypt<D> {
        let handle = KeyHandle::default();
        handle.replace(keys);
        Encrypt {
            inner: Arc::new(inner),
            keys: handle,
            missing: Missing::default(),
            headers: Headers::default(),
            head_limit: DEFAULT_HEAD_LIMIT,
        }
    }

    /// What happens to recipients without a certificate (`--encrypt-missing`).
    pub fn missing(mut self, missing: Missing) -> Encrypt<D> {
        self.missing = missing;
        self
    }

    /// Which header fields stay readable (`--encrypt-headers`).
    pub fn headers(mut self, headers: Headers) -> Encrypt<D> {
        self.headers = headers;
        self
    }

    /// How much of the header section is gathered to find the readable fields (default
    /// [`DEFAULT_HEAD_LIMIT`], 256 KiB): memory per transaction.
    pub fn head_limit(mut self, bytes: usize) -> Encrypt<D> {
        self.head_limit = bytes;
        self
    }

    /// The handle that reloads the certificates (on SIGHUP, say).
    pub fn key_handle(&self) -> KeyHandle {
        self.keys.clone()
    }

    /// The wrapped dispatch.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// True when a copy may go in clear ([`Missing::Deliver`]).
    fn clear_possible(&self) -> bool {
        self.missing == Missing::Deliver
    }
}

/// The largest message whose encrypted form fits in `limit`.
fn plain_limit(limit: u64) -> u64 {
    limit.saturating_sub(64 * 1024) / 100 * 72
}

/// The size of the encrypted form of a message of `size` (at most).
fn encrypted_size(size: u64) -> u64 {
    (size / 72)
        .saturating_mul(100)
        .saturating_add(64 * 1024 + 100)
}

/// The envelope for an inner transaction: what it receives is 7-bit and larger.
fn inner_envelope(envelope: &Envelope, encrypted_only: bool) -> Envelope {
    let mut env = envelope.clone();
    if encrypted_only {
        env.params.body = None;
        env.params.size = env.params.size.map(encrypted_size);
    }
    env
}

impl<D: MailDispatch> MailDispatch for Encrypt<D> {
    type Transaction = EncryptTransaction<D>;

    fn capabilities(&self) -> Capabilities {
        let inner = self.inner.capabilities();
        if self.clear_possible() {
            return Capabilities {
                max_message_size: inner.max_message_size.map(plain_limit),
                ..inner
            };
        }
        Capabilities {
            eight_bit_mime: true,
            binary_mime: true,
            chunking: true,
            smtputf8: inner.smtputf8,
            max_message_size: inner.max_message_size.map(plain_limit),
        }
    }

    /// Opens one inner transaction at once (so that the backend's answer to MAIL comes at
    /// MAIL); more are opened at RCPT when recipients need other certificates.
    async fn open(
        &self,
        info: &SessionInfo,
        envelope: &Envelope,
    ) -> Result<EncryptTransaction<D>, Refusal> {
        let env = inner_envelope(envelope, !self.clear_possible());
        let spare = self.inner.open(info, &env).await?;
        Ok(EncryptTransaction {
            dispatch: self.inner.clone(),
            keys: self.keys.current(),
            missing: self.missing,
            headers: self.headers,
            eight_bit_headers: self.inner.capabilities().smtputf8,
            encrypted_only: !self.clear_possible(),
            info: info.clone(),
            envelope: env,
            spare: Some(spare),
            groups: Vec::new(),
            accepted: Vec::new(),
            head: HeadBuffer::new(self.head_limit),
            stage: Stage::Envelope,
            failed: None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Envelope,
    Head,
    Body,
    Done,
}

/// The recipients whose copies go to the same certificates, and their inner transaction.
struct Group<T> {
    certs: Vec<Arc<Certificate>>,
    /// Sorted fingerprints of `certs`: the group's identity. Empty: a clear copy.
    ids: Vec<[u8; 32]>,
    tx: T,
    count: usize,
    encryptor: Option<Encryptor>,
    /// Set once the group failed (its inner transaction is aborted).
    failure: Option<Refusal>,
    out: Vec<u8>,
}

impl<T: Transaction> Group<T> {
    async fn fail(&mut self, id: &str, why: &str, reply: Refusal) {
        log::warn!(
            "encrypt {id}: {why}; aborting the copy for {} recipient(s), replying {reply}",
            self.count
        );
        self.failure = Some(reply);
        self.encryptor = None;
        self.tx.abort().await;
    }

    /// Encrypts (or, for a clear copy, passes on) `data` and writes it to the backend.
    async fn feed(&mut self, id: &str, prefix: &[u8], data: &[u8]) {
        if self.failure.is_some() {
            return;
        }
        let result = match &mut self.encryptor {
            Some(enc) => {
                self.out.clear();
                self.out.extend_from_slice(prefix);
                enc.update(data, &mut self.out);
                if self.out.is_empty() {
                    Ok(())
                } else {
                    self.tx.write(&self.out).await
                }
            }
            None if data.is_empty() => Ok(()),
            None => self.tx.write(data).await,
        };
        if let Err(reply) = result {
            self.fail(id, "the backend refused the data", reply).await;
        }
    }
}

/// One message on its way through [`Encrypt`]: made by its `open`.
///
/// Dropped without a commit, it drops its inner transactions, which undo what they wrote.
pub struct EncryptTransaction<D: MailDispatch> {
    dispatch: Arc<D>,
    keys: Arc<Keys>,
    missing: Missing,
    headers: Headers,
    eight_bit_headers: bool,
    encrypted_only: bool,
    info: SessionInfo,
    /// The inner envelope as at MAIL (no recipients), for the groups opened later.
    envelope: Envelope,
    /// The inner transaction opened at MAIL, until a group takes it.
    spare: Option<D::Transaction>,
    groups: Vec<Group<D::Transaction>>,
    /// Per recipient accepted, in RCPT order: its group, and itself.
    accepted: Vec<(usize, Recipient)>,
    head: HeadBuffer,
    stage: Stage,
    /// Sticky: every later call answers it.
    failed: Option<Refusal>,
}

impl<D: MailDispatch> std::fmt::Debug for EncryptTransaction<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptTransaction")
            .field("id", &self.envelope.id)
            .field("groups", &self.groups.len())
            .field("recipients", &self.accepted.len())
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

impl<D: MailDispatch> EncryptTransaction<D> {
    fn id(&self) -> &str {
        &self.envelope.id
    }

    /// After a failure of some groups: the sticky failure when none is left.
    fn check_alive(&mut self) -> Result<(), Refusal> {
        if self.groups.iter().any(|g| g.failure.is_none()) {
            return Ok(());
        }
        let reply = self
            .groups
            .iter()
            .find_map(|g| g.failure.clone())
            .unwrap_or(reply::DELIVERY_FAILED);
        self.failed = Some(reply.clone());
        Err(reply)
    }

    /// The header section is complete (or too long): write every copy's start.
    async fn release_head(&mut self) -> Result<(), Refusal> {
        let mut outer = Vec::new();
        if self.head.head().is_none() {
            log::info!(
                "encrypt {}: header section longer than {} bytes, nothing of it stays readable",
                self.envelope.id,
                self.head.len()
            );
        }
        outer_header(
            self.head.head(),
            self.headers,
            self.eight_bit_headers,
            &mut outer,
        );
        let data = self.head.take();
        self.stage = Stage::Body;
        let id = self.envelope.id.clone();
        for group in &mut self.groups {
            let prefix: &[u8] = if group.encryptor.is_some() {
                &outer
            } else {
                &[]
            };
            group.feed(&id, prefix, &data).await;
        }
        self.check_alive()
    }
}

impl<D: MailDispatch> Transaction for EncryptTransaction<D> {
    /// Finds the recipient's certificates, and the group of recipients with the same ones
    /// (opening an inner transaction for a new group), and adds it there. A recipient
    /// without a certificate of its own: [`reply::NO_CERTIFICATE`] (`550 5.7.1`) with
    /// [`Missing::Refuse`].
    async fn add_recipient(&mut self, recipient: &Recipient) -> Result<(), Refusal> {
        if self.stage != Stage::Envelope {
            return Err(reply::DELIVERY_FAILED);
        }
        let certs = match self.keys.for_recipient(recipient) {
            Some(certs) if !certs.is_empty() => certs,
            _ => match self.missing {
                Missing::Refuse => {
                    log::info!(
                        "encrypt {}: no certificate for <{}>, refusing it",
                        self.envelope.id,
                        recipient.address
                    );
                    return Err(reply::NO_CERTIFICATE);
                }
                Missing::Deliver => {
                    log::info!(
                        "encrypt {}: no certificate for <{}>, its copy is stored in clear",
                        self.envelope.id,
                        recipient.address
                    );
                    Vec::new()
                }
            },
        };
        let mut ids: Vec<[u8; 32]> = certs.iter().map(|c| c.fingerprint()).collect();
        ids.sort_unstable();
        ids.dedup();
        let existing = self.groups.iter().position(|g| g.ids == ids);
        let index = match existing {
            Some(index) => index,
            None => {
                let tx = match self.spare.take() {
                    Some(tx) => tx,
                    None => self.dispatch.open(&self.info, &self.envelope).await?,
                };
                self.groups.push(Group {
                    certs,
                    ids,
                    tx,
                    count: 0,
                    encryptor: None,
                    failure: None,
                    out: Vec::new(),
                });
                self.groups.len() - 1
            }
        };
        match self.groups[index].tx.add_recipient(recipient).await {
            Ok(()) => {
                self.groups[index].count += 1;
                self.accepted.push((index, recipient.clone()));
                Ok(())
            }
            Err(refusal) => {
                if self.groups[index].count == 0 {
                    // A new group whose only recipient was refused: keep its transaction
                    // for the next group.
                    if let Some(group) = self.groups.pop() {
                        match self.spare {
                            None => self.spare = Some(group.tx),
                            Some(_) => {
                                let mut tx = group.tx;
                                tx.abort().await;
                            }
                        }
                    }
                }
                Err(refusal)
            }
        }
    }

    /// Begins every group's inner transaction (its envelope holds its recipients only) and
    /// encrypts a fresh content key to its certificates.
    async fn begin(&mut self, info: &SessionInfo, envelope: &Envelope) -> Result<(), Refusal> {
        if let Some(reply) = &self.failed {
            return Err(reply.clone());
        }
        if self.stage != Stage::Envelope || self.accepted.is_empty() {
            return Err(reply::DELIVERY_FAILED);
        }
        if let Some(mut tx) = self.spare.take() {
            tx.abort().await;
        }
        self.stage = Stage::Head;
        let id = self.envelope.id.clone();
        for (index, group) in self.groups.iter_mut().enumerate() {
            let mut env = inner_envelope(envelope, self.encrypted_only);
            env.recipients = self
                .accepted
                .iter()
                .filter(|(g, _)| *g == index)
                .map(|(_, r)| r.clone())
                .collect();
            if let Err(reply) = group.tx.begin(info, &env).await {
                group.fail(&id, "the backend refused to begin", reply).await;
                continue;
            }
            if group.certs.is_empty() {
                continue;
            }
            // The RSA or ECDH operations (0.1 to 4 ms) run on a blocking thread, not on the
            // reactor that serves the other sessions.
            let certs = group.certs.clone();
            let made = tokio::task::spawn_blocking(move || Encryptor::new(&certs, Output::Base64))
                .await
                .unwrap_or_else(|e| Err(crate::Error::Task(e.to_string())));
            match made {
                Ok(enc) => group.encryptor = Some(enc),
                Err(e) => {
                    let why = format!("cannot encrypt: {e}");
                    group.fail(&id, &why, e.reply()).await;
                }
            }
        }
        self.check_alive()
    }

    /// Gathers the header section, then encrypts and writes each chunk to every group. A
    /// group whose backend fails is aborted; the call fails only when every group failed.
    async fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        if let Some(reply) = &self.failed {
            return Err(reply.clone());
        }
        match self.stage {
            Stage::Head => {
                self.head.push(chunk);
                if self.head.is_decided() {
                    self.release_head().await?;
                }
                Ok(())
            }
            Stage::Body => {
                let id = self.envelope.id.clone();
                for group in &mut self.groups {
                    group.feed(&id, &[], chunk).await;
                }
                self.check_alive()
            }
            Stage::Envelope | Stage::Done => Err(reply::DELIVERY_FAILED),
        }
    }

    /// Ends each copy's encryption, commits each group, and answers per recipient in RCPT
    /// order.
    async fn commit(&mut self) -> Outcomes {
        let n = self.accepted.len();
        if let Some(reply) = self.failed.clone() {
            self.abort().await;
            return vec![Err(reply); n];
        }
        if self.stage == Stage::Head {
            self.head.end();
            if let Err(reply) = self.release_head().await {
                return vec![Err(reply); n];
            }
        }
        if self.stage != Stage::Body {
            log::warn!("encrypt {}: commit without data", self.id());
            self.abort().await;
            return vec![Err(reply::DELIVERY_FAILED); n];
        }
        self.stage = Stage::Done;
        let id = self.envelope.id.clone();
        let mut outcomes: Vec<std::vec::IntoIter<Result<(), Refusal>>> = Vec::new();
        for group in &mut self.groups {
            if let Some(enc) = &mut group.encryptor {
                group.out.clear();
                enc.finish(&mut group.out);
                if let Err(reply) = group.tx.write(&group.out).await {
                    group.fail(&id, "the backend refused the data", reply).await;
                }
            }
            let results = match &group.failure {
                Some(reply) => vec![Err(reply.clone()); group.count],
                None => {
                    let results = group.tx.commit().await;
                    if results.len() == group.count {
                        results
                    } else {
                        log::warn!(
                            "encrypt {id}: the backend answered {} outcomes for {} recipients",
                            results.len(),
                            group.count
                        );
                        vec![Err(reply::DELIVERY_FAILED); group.count]
                    }
                }
            };
            outcomes.push(results.into_iter());
        }
        self.accepted
            .iter()
            .map(|(g, _)| {
                outcomes
                    .get_mut(*g)
                    .and_then(Iterator::next)
                    .unwrap_or(Err(reply::DELIVERY_FAILED))
            })
            .collect()
    }

    /// Aborts every inner transaction.
    async fn abort(&mut self) {
        self.stage = Stage::Done;
        self.failed.get_or_insert(reply::DELIVERY_FAILED);
        if let Some(mut tx) = self.spare.take() {
            tx.abort().await;
        }
        for group in &mut self.groups {
            group.encryptor = None;
            if group.failure.is_none() {
                group.failure = Some(reply::DELIVERY_FAILED);
                group.tx.abort().await;
            }
        }
    }
}
