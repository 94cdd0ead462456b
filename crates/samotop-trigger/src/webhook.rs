//! [`Webhook`]: one signed HTTP POST per message, acknowledged only when the endpoint took it.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use samotop_core::{
    Envelope, MailDispatch, Outcomes, Recipient, Refusal, SessionInfo, Spool, Transaction, reply,
};
use sha2::{Digest, Sha256};

use crate::json::{self, JsonOptions};
use crate::{Error, Secret, Signer, text};
use samotop_core::reply::{
    WEBHOOK_BUSY, WEBHOOK_FAILED, WEBHOOK_LOST, WEBHOOK_MISCONFIGURED, WEBHOOK_REFUSED,
    WEBHOOK_TIMEOUT, WEBHOOK_UNREACHABLE,
};

/// What the POST carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Format {
    /// The message as received, `Content-Type: message/rfc822` (the default).
    #[default]
    Raw,
    /// A JSON document: the envelope, the header fields, the text and HTML bodies and the
    /// attachments (see [`JsonOptions`] and `docs/TRIGGERS.md`).
    Json(JsonOptions),
}

/// The response header whose value (sanitised) becomes the reply text of a refusal.
pub const REPLY_HEADER: &str = "samotop-reply";
/// Response bytes read at most; a longer response is cut and its connection dropped.
pub const MAX_RESPONSE: usize = 64 * 1024;
/// How long the response body may take once the status came; then the status decides.
pub const RESPONSE_BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// A raw body signed at `begin` is signed again at `commit` when older than this (the
/// receiver checks the timestamp; Standard Webhooks suggests a 5 minute tolerance).
pub const RESIGN_AFTER: Duration = Duration::from_secs(60);

/// Delivers each message to an HTTP(S) endpoint: a [`MailDispatch`] that POSTs at commit
/// and answers the client by the endpoint's status (the table in the crate docs).
///
/// The body is held in a [`Spool`] while it arrives (memory, then an encrypted temporary
/// file) because the Standard Webhooks signature, a header, covers the whole body: it is
/// computed while the data streams in, and the spool then streams out as the request body
/// with its `Content-Length`. Connections are kept alive and reused (HTTP/1.1, or HTTP/2
/// where the server offers it over TLS).
///
/// ```
/// use std::time::Duration;
/// use samotop_trigger::{Format, Secret, Webhook};
/// let hook = Webhook::new("https://hooks.example.org/mail")?
///     .secret(Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?)
///     .timeout(Duration::from_secs(20))
///     .format(Format::Raw);
/// # Ok::<(), samotop_trigger::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Webhook {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    url: reqwest::Url,
    /// The URL for logs: no user, password or query (they may hold a token).
    shown: String,
    client: reqwest::Client,
    roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    secret: Option<Secret>,
    format: Format,
    timeout: Duration,
    spool_memory: usize,
}

impl Webhook {
    /// Default time for one request, from connecting to the response's status.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default bytes of a message held in memory before its spool moves to a file.
    pub const DEFAULT_SPOOL_MEMORY: usize = 256 * 1024;

    /// A webhook to `url` (`http://` or `https://`), unsigned, raw format, with the default
    /// timeout. TLS trusts the bundled Mozilla roots (`webpki-roots`), see
    /// [`ca_file`](Webhook::ca_file) for more.
    ///
    /// # Errors
    ///
    /// [`Error::BadUrl`], or [`Error::Client`] when the HTTP client cannot be built.
    pub fn new(url: &str) -> Result<Webhook, Error> {
        let bad = |reason: String| Error::BadUrl {
            url: url.to_string(),
            reason,
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad("only http:// and https:// are supported".into()));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(bad("no host".into()));
        }
        let roots = Vec::new();
        let client = client(&roots)?;
        Ok(Webhook {
            inner: Arc::new(Inner {
                shown: shown(&parsed),
                url: parsed,
                client,
                roots,
                secret: None,
                format: Format::Raw,
                timeout: Self::DEFAULT_TIMEOUT,
                spool_memory: Self::DEFAULT_SPOOL_MEMORY,
            }),
        })
    }

    fn with(mut self, change: impl FnOnce(&mut Inner)) -> Self {
        let inner = Arc::make_mut(&mut self.inner);
        change(inner);
        self
    }

    /// Signs every request with `secret` (`webhook-id`, `webhook-timestamp`,
    /// `webhook-signature`). Default: unsigned (the three headers are still sent, the
    /// signature left out).
    pub fn secret(self, secret: Secret) -> Self {
        self.with(|i| i.secret = Some(secret))
    }

    /// What the body is. Default [`Format::Raw`].
    pub fn format(self, format: Format) -> Self {
        self.with(|i| i.format = format)
    }

    /// The time for one request, from connecting until the response's status line; over
    /// it: `451 4.4.1`. Default [`DEFAULT_TIMEOUT`](Webhook::DEFAULT_TIMEOUT). Keep it
    /// below the session's backend timeout (120 s by default), which would answer first.
    pub fn timeout(self, timeout: Duration) -> Self {
        self.with(|i| i.timeout = timeout)
    }

    /// Bytes of each message kept in memory before its spool moves to an encrypted
    /// temporary file. Default [`DEFAULT_SPOOL_MEMORY`](Webhook::DEFAULT_SPOOL_MEMORY).
    /// Worst case memory: this much per message in progress.
    pub fn spool_memory(self, bytes: usize) -> Self {
        self.with(|i| i.spool_memory = bytes)
    }

    /// Also trusts the CA certificates in the PEM file at `path` (a private CA, a test's
    /// self-signed certificate), beside the bundled roots.
    ///
    /// # Errors
    ///
    /// [`Error::CaFile`] when the file cannot be read or has no certificate.
    pub fn ca_file(self, path: &Path) -> Result<Self, Error> {
        use rustls_pki_types::pem::PemObject;
        let bad = |reason: String| Error::CaFile {
            path: path.to_path_buf(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let certs = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no CERTIFICATE in it".into()));
        }
        let mut roots = self.inner.roots.clone();
        roots.extend(certs);
        let client = client(&roots)?;
        Ok(self.with(|i| {
            i.roots = roots;
            i.client = client;
        }))
    }

    /// The endpoint.
    pub fn url(&self) -> &str {
        self.inner.url.as_str()
    }

    /// The endpoint as logged: without user, password, query or fragment (they may hold a
    /// token).
    pub fn shown_url(&self) -> &str {
        &self.inner.shown
    }
}

fn shown(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// The HTTP client: rustls with the ring provider, the bundled roots and `extra`, ALPN for
/// HTTP/2 and HTTP/1.1, keep-alive, no redirects, no proxy.
fn client(extra: &[rustls_pki_types::CertificateDer<'static>]) -> Result<reqwest::Client, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra {
        roots
            .add(cert.clone())
            .map_err(|e| Error::Client(format!("a CA certificate is not usable: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Client(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .user_agent(concat!("samotop/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Client(e.to_string()))
}

impl MailDispatch for Webhook {
    type Transaction = WebhookTransaction;

    async fn open(&self, _: &SessionInfo, _: &Envelope) -> Result<WebhookTransaction, Refusal> {
        Ok(WebhookTransaction {
            hook: self.inner.clone(),
            recipients: Vec::new(),
            begun: None,
            spool: Spool::new(self.inner.spool_memory),
        })
    }
}

/// The transaction of a [`Webhook`]: spools and signs the data, POSTs at commit.
#[derive(Debug)]
pub struct WebhookTransaction {
    hook: Arc<Inner>,
    recipients: Vec<Recipient>,
    begun: Option<Begun>,
    spool: Spool,
}

#[derive(Debug)]
struct Begun {
    info: SessionInfo,
    envelope: Envelope,
    id: String,
    timestamp: u64,
    signer: Option<Signer>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `webhook-id`: the same for the same message to the same recipients (a retry after
/// a 4xx), so that the endpoint can tell a retry; random when the message has no digest.
pub(crate) fn message_id(envelope: &Envelope, recipients: &[Recipient]) -> String {
    let Some(digest) = envelope.digest else {
        let mut random = [0u8; 16];
        if getrandom::fill(&mut random).is_err() {
            // No randomness: the session-unique id still tells messages apart.
            return format!("msg_{}", text::hex(envelope.id.as_bytes()));
        }
        return format!("msg_{}", text::hex(&random));
    };
    let mut h = Sha256::new();
    h.update(digest);
    for r in recipients {
        h.update(r.address.as_bytes());
        h.update([0]);
    }
    format!("msg_{}", text::hex(&h.finalize()[..16]))
}

impl Transaction for WebhookTransaction {
    async fn add_recipient(&mut self, recipient: &Recipient) -> Result<(), Refusal> {
        self.recipients.push(recipient.clone());
        Ok(())
    }

    async fn begin(&mut self, info: &SessionInfo, envelope: &Envelope) -> Result<(), Refusal> {
        let id = message_id(envelope, &self.recipients);
        let timestamp = now();
        let signer = match (&self.hook.format, &self.hook.secret) {
            (Format::Raw, Some(secret)) => Some(secret.signer(&id, timestamp)),
            _ => None,
        };
        self.begun = Some(Begun {
            info: info.clone(),
            envelope: envelope.clone(),
            id,
            timestamp,
            signer,
        });
        Ok(())
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        if let Some(signer) = self.begun.as_mut().and_then(|b| b.signer.as_mut()) {
            signer.update(chunk);
        }
        self.spool.write(chunk).await.map_err(|e| {
            log::warn!("webhook {}: spool: {e}", self.hook.shown);
            reply::for_io_error(&e)
        })
    }

    async fn commit(&mut self) -> Outcomes {
        let n = self.recipients.len();
        let outcome = self.deliver().await;
        if let Err(refusal) = &outcome {
            log::warn!("webhook {}: {refusal}", self.hook.shown);
        }
        vec![outcome; n]
    }

    async fn abort(&mut self) {
        self.spool = Spool::new(0);
        self.begun = None;
    }
}

impl WebhookTransaction {
    async fn deliver(&mut self) -> Result<(), Refusal> {
        let Some(begun) = self.begun.take() else {
            log::error!("webhook {}: commit without begin", self.hook.shown);
            return Err(reply::DELIVERY_FAILED);
        };
        let hook = self.hook.clone();
        let raw = std::mem::replace(&mut self.spool, Spool::new(0));
        let (body, content_type, timestamp, signature) = match &hook.format {
            Format::Raw => {
                let (timestamp, signature) = match (&hook.secret, begun.signer) {
                    (Some(secret), Some(signer)) => {
                        if now().saturating_sub(begun.timestamp) > RESIGN_AFTER.as_secs() {
                            let timestamp = now();
                            let signer = secret.signer(&begun.id, timestamp);
                            (timestamp, Some(sign_spool(&raw, signer).await?))
                        } else {
                            (begun.timestamp, Some(signer.finish()))
                        }
                    }
                    _ => (begun.timestamp, None),
                };
                (raw, "message/rfc822", timestamp, signature)
            }
            Format::Json(options) => {
                let timestamp = now();
                let mut signer = hook.secret.as_ref().map(|s| s.signer(&begun.id, timestamp));
                let mut out = Spool::new(hook.spool_memory);
                let facts = json::Facts {
                    info: &begun.info,
                    envelope: &begun.envelope,
                    recipients: &self.recipients,
                    id: &begun.id,
                };
                json::render(&raw, &facts, options, &mut out, signer.as_mut())
                    .await
                    .map_err(|e| {
                        log::warn!("webhook {}: JSON spool: {e}", hook.shown);
                        reply::for_io_error(&e)
                    })?;
                drop(raw);
                (
                    out,
                    "application/json",
                    timestamp,
                    signer.map(Signer::finish),
                )
            }
        };
        let len = body.len();
        let mut request = hook
            .client
            .post(hook.url.clone())
            .header(CONTENT_TYPE, content_type)
            .header(CONTENT_LENGTH, len)
            .header("webhook-id", &begun.id)
            .header("webhook-timestamp", timestamp);
        if let Some(signature) = signature {
            request = request.header("webhook-signature", signature);
        }
        // The envelope, for raw bodies (unsigned: the JSON format carries it signed).
        if let Ok(v) = HeaderValue::from_bytes(
            text::header_safe(&begun.envelope.sender.to_string()).as_bytes(),
        ) {
            request = request.header("samotop-sender", v);
        }
        for r in &self.recipients {
            if let Ok(v) = HeaderValue::from_bytes(text::header_safe(&r.address).as_bytes()) {
                request = request.header("samotop-recipient", v);
            }
        }
        let request = request.body(body_of(body));
        let started = std::time::Instant::now();
        let response = match tokio::time::timeout(hook.timeout, request.send()).await {
            Err(_) => return Err(WEBHOOK_TIMEOUT),
            Ok(Err(e)) => return Err(request_error(&e)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let header_text = response
            .headers()
            .get(REPLY_HEADER)
            .and_then(|v| text::reply_text(v.as_bytes()));
        let is_json = response
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        let left = hook.timeout.saturating_sub(started.elapsed());
        let body = read_bounded(response, left.min(RESPONSE_BODY_TIMEOUT)).await;
        let body_text = if is_json {
            json::reply_field(&body)
        } else {
            None
        };
        log::debug!("webhook {}: {} for {}", hook.shown, status, begun.id);
        let refusal = match status_refusal(status) {
            None => return Ok(()),
            Some(refusal) => refusal,
        };
        Err(match header_text.or(body_text) {
            Some(text) => refusal.text(text),
            None => {
                let text = format!("{} (HTTP {})", refusal.message(), status.as_u16());
                refusal.text(text)
            }
        })
    }
}

/// The reply for a response status, `None` for a 2xx: the table in the crate docs.
pub fn status_refusal(status: StatusCode) -> Option<Refusal> {
    Some(match status.as_u16() {
        200..=299 => return None,
        404 | 410 => reply::NO_SUCH_USER,
        413 => reply::MESSAGE_TOO_BIG,
        429 => WEBHOOK_BUSY,
        // Request Timeout, Misdirected Request, Too Early: HTTP says "try again", so does SMTP.
        408 => WEBHOOK_TIMEOUT,
        421 | 425 => WEBHOOK_BUSY,
        400..=499 => WEBHOOK_REFUSED,
        500..=599 => WEBHOOK_FAILED,
        _ => WEBHOOK_MISCONFIGURED,
    })
}

fn request_error(e: &reqwest::Error) -> Refusal {
    use std::error::Error as _;
    let mut detail = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    log::debug!("webhook request failed: {detail}");
    if e.is_timeout() {
        WEBHOOK_TIMEOUT
    } else if e.is_connect() {
        WEBHOOK_UNREACHABLE
    } else {
        WEBHOOK_LOST
    }
}

/// Reads at most [`MAX_RESPONSE`] bytes of the response body within `limit`; the rest is
/// dropped with the connection.
async fn read_bounded(mut response: reqwest::Response, limit: Duration) -> Vec<u8> {
    let mut body = Vec::new();
    let read = async {
        while let Ok(Some(chunk)) = response.chunk().await {
            let room = MAX_RESPONSE - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if chunk.len() >= room {
                return false;
            }
        }
        true
    };
    match tokio::time::timeout(limit, read).await {
        Ok(true) => {}
        Ok(false) => log::debug!("webhook response longer than {MAX_RESPONSE} bytes: cut"),
        Err(_) => log::debug!("webhook response body too slow: cut"),
    }
    body
}

async fn sign_spool(spool: &Spool, mut signer: Signer) -> Result<String, Refusal> {
    let mut reader = spool.reader();
    loop {
        match reader.next_chunk(64 * 1024).await {
            Ok(Some(chunk)) => signer.update(&chunk),
            Ok(None) => return Ok(signer.finish()),
            Err(e) => {
                log::warn!("webhook: spool: {e}");
                return Err(reply::DELIVERY_FAILED);
            }
        }
    }
}

/// The request body: the spool, read as the request goes out. A spool still in memory is
/// one buffer; one in a file is pumped through a small channel.
fn body_of(spool: Spool) -> reqwest::Body {
    if !spool.in_file() {
        let len = spool.len() as usize;
        let mut reader = spool.reader();
        let bytes = futures_util::FutureExt::now_or_never(reader.next_chunk(len));
        if let Some(Ok(chunk)) = bytes {
            return reqwest::Body::from(chunk.unwrap_or_default());
        }
    }
    let spool = Arc::new(spool);
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(2);
    tokio::spawn(async move {
        let mut reader = spool.reader();
        loop {
            let item = reader.next_chunk(64 * 1024).await.transpose();
            let end = !matches!(item, Some(Ok(_)));
            match item {
                Some(item) => {
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
                None => return,
            }
            if end {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    reqwest::Body::wrap_stream(stream)
}
