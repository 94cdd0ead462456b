//! [`HttpFace`]: the web inbox and the JSON API (Mailpit's v1, plus per-address inboxes, the
//! envelope, a wait and live events), over axum.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query as QueryParams, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::Error;
use crate::model::{Address, Attachment, EnvelopeInfo, Filter, Summary};
use crate::parse::View;
use crate::query::Query;
use crate::store::{Event, Inbox};

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// The policy of the app's own pages: nothing but our own script, style and API.
const APP_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
/// The policy of a message's HTML: no script, no remote anything, only inline style and
/// embedded images, in a sandbox of its own.
const MAIL_CSP: &str = "default-src 'none'; img-src data: cid:; style-src 'unsafe-inline'; \
font-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'self'; sandbox";
/// The same once the reader asked for remote content: remote images and style too; still
/// no script, no forms, no frames.
const MAIL_CSP_REMOTE: &str = "default-src 'none'; img-src data: cid: http: https:; \
style-src 'unsafe-inline' http: https:; font-src data: http: https:; base-uri 'none'; \
form-action 'none'; frame-ancestors 'self'; sandbox";

/// Live-event streams at once.
const MAX_STREAMS: usize = 256;
/// Inline images embedded into a message's HTML at most, and the largest one.
const MAX_INLINE: usize = 32;
const MAX_INLINE_SIZE: usize = 2 * 1024 * 1024;

/// Settings of the [`HttpFace`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpConfig {
    /// When set, every request except `/livez` and `/readyz` must carry it: as
    /// `Authorization: Bearer TOKEN`, as the password of `Authorization: Basic` (what Mailpit
    /// clients send), or in the `samotop_token` cookie that `/login?token=TOKEN` sets.
    pub token: Option<String>,
    /// A label shown in the page title.
    pub label: String,
}

/// The web inbox and its JSON API.
///
/// Routes (all JSON unless said): Mailpit's `/api/v1/info`, `/api/v1/webui`,
/// `GET|PUT|DELETE /api/v1/messages`, `GET|DELETE /api/v1/search?query=`,
/// `/api/v1/message/{ID}` (`latest` works; marks it read), `.../headers`, `.../raw` (text),
/// `.../part/{PartID}` (the bytes), `/view/{ID}.html`, `/view/{ID}.txt`, `/api/v1/tags`;
/// ours: `/api/v1/message/{ID}/envelope`, `.../html` (the message's HTML for the sandboxed
/// frame, `?remote=1` for remote images), `/api/v1/inbox/{address}` (list, `?query=`,
/// `DELETE`), `/api/v1/inbox/{address}/message/{ID}` (and its `/raw`, `/envelope`, `/html`,
/// `/part/{PartID}`, `DELETE`), `/api/v1/wait?query=&mailbox=&after=&timeout=` (long poll),
/// `/api/v1/events` (server-sent events), `/livez`, `/readyz`; and the pages `/`,
/// `/inbox/{address}`, `/message/{ID}`.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use samotop_inbox::{HttpConfig, HttpFace, Inbox, Options};
/// let dir = tempfile::tempdir()?;
/// let runtime = tokio::runtime::Runtime::new()?;
/// runtime.block_on(async {
///     let inbox = Inbox::sqlite(dir.path().join("mail.db"), Options::default())?;
///     let face = HttpFace::new(inbox, HttpConfig::default());
///     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
///     let addr = listener.local_addr()?;
///     let server = tokio::spawn(face.serve(listener, std::future::pending()));
///     // GET /livez with a bare HTTP/1.1 request.
///     use tokio::io::{AsyncReadExt, AsyncWriteExt};
///     let mut s = tokio::net::TcpStream::connect(addr).await?;
///     s.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await?;
///     let mut reply = String::new();
///     s.read_to_string(&mut reply).await?;
///     assert!(reply.starts_with("HTTP/1.1 200"));
///     server.abort();
///     Ok::<_, Box<dyn std::error::Error>>(())
/// })?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpFace {
    state: Arc<AppState>,
}

impl std::fmt::Debug for HttpFace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpFace").finish_non_exhaustive()
    }
}

struct AppState {
    inbox: Inbox,
    config: HttpConfig,
    started: Instant,
    streams: AtomicUsize,
}

type St = State<Arc<AppState>>;

/// A failed request: status and plain text (Mailpit answers errors that way).
struct Fail(StatusCode, String);

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.1,
        )
            .into_response()
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        match e {
            Error::Query(q) => Fail(StatusCode::BAD_REQUEST, q.to_string()),
            Error::Busy => Fail(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            other => {
                log::warn!("inbox http: {other}");
                Fail(StatusCode::INTERNAL_SERVER_ERROR, "the store failed".into())
            }
        }
    }
}

fn not_found() -> Fail {
    Fail(StatusCode::NOT_FOUND, "not found".into())
}

type Res = Result<Response, Fail>;

impl HttpFace {
    /// A face over `inbox`.
    pub fn new(inbox: Inbox, config: HttpConfig) -> Self {
        HttpFace {
            state: Arc::new(AppState {
                inbox,
                config,
                started: Instant::now(),
                streams: AtomicUsize::new(0),
            }),
        }
    }

    /// Checks that listening on `addr` is allowed: a non-loopback address needs a token, or
    /// `allow_public` (`--http-public`).
    ///
    /// ```
    /// use samotop_inbox::HttpFace;
    /// assert!(HttpFace::check_bind("127.0.0.1:8025".parse()?, false, false).is_ok());
    /// assert!(HttpFace::check_bind("0.0.0.0:8025".parse()?, false, false).is_err());
    /// assert!(HttpFace::check_bind("0.0.0.0:8025".parse()?, true, false).is_ok());
    /// # Ok::<(), std::net::AddrParseError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A sentence saying why not.
    pub fn check_bind(addr: SocketAddr, has_token: bool, allow_public: bool) -> Result<(), String> {
        if addr.ip().is_loopback() || has_token || allow_public {
            return Ok(());
        }
        Err(format!(
            "--http {addr} is not a loopback address: give --http-token (or --http-public to serve the mail to anyone who can connect)"
        ))
    }

    /// The axum router, for embedding into a bigger application.
    pub fn router(&self) -> Router {
        let s = self.state.clone();
        let api = Router::new()
            .route("/api/v1/info", get(info))
            .route("/api/v1/webui", get(webui))
            .route("/api/v1/tags", get(tags))
            .route(
                "/api/v1/messages",
                get(messages).put(put_messages).delete(delete_messages),
            )
            .route("/api/v1/search", get(search).delete(delete_search))
            .route("/api/v1/wait", get(wait))
            .route("/api/v1/events", get(events))
            .route("/api/v1/message/{id}", get(message))
            .route("/api/v1/message/{id}/headers", get(headers))
            .route("/api/v1/message/{id}/raw", get(raw))
            .route("/api/v1/message/{id}/envelope", get(envelope))
            .route("/api/v1/message/{id}/html", get(html))
            .route("/api/v1/message/{id}/part/{part}", get(part))
            .route("/view/{file}", get(view_file))
            .route(
                "/api/v1/inbox/{address}",
                get(inbox_list).delete(inbox_delete_all),
            )
            .route(
                "/api/v1/inbox/{address}/message/{id}",
                get(inbox_message).delete(inbox_delete),
            )
            .route("/api/v1/inbox/{address}/message/{id}/raw", get(inbox_raw))
            .route(
                "/api/v1/inbox/{address}/message/{id}/envelope",
                get(inbox_envelope),
            )
            .route("/api/v1/inbox/{address}/message/{id}/html", get(inbox_html))
            .route(
                "/api/v1/inbox/{address}/message/{id}/part/{part}",
                get(inbox_part),
            )
            .route("/", get(page))
            .route("/inbox/{address}", get(page))
            .route("/message/{id}", get(page))
            .route("/search", get(page))
            .route("/static/app.js", get(app_js))
            .route("/static/app.css", get(app_css))
            .route("/login", get(login))
            .layer(middleware::from_fn_with_state(s.clone(), authorize));
        Router::new()
            .route("/livez", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .merge(api)
            .layer(middleware::from_fn(security_headers))
            .with_state(s)
    }

    /// Serves HTTP/1.1 on `listener` until `shutdown` resolves (then in-flight requests finish).
    ///
    /// # Errors
    ///
    /// The listener fails.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }
}

// ---- Authorization and headers ------------------------------------------------------------

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn presented_token(headers: &HeaderMap) -> Option<String> {
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(t) = auth.strip_prefix("Bearer ") {
            return Some(t.trim().to_string());
        }
        if let Some(b) = auth.strip_prefix("Basic ") {
            let decoded = base64_decode(b.trim())?;
            let text = String::from_utf8(decoded).ok()?;
            return text.split_once(':').map(|(_, p)| p.to_string());
        }
    }
    for cookie in headers.get_all(header::COOKIE) {
        let Ok(cookie) = cookie.to_str() else {
            continue;
        };
        for part in cookie.split(';') {
            if let Some(t) = part.trim().strip_prefix("samotop_token=") {
                return Some(t.to_string());
            }
        }
    }
    None
}

async fn authorize(State(s): St, request: Request, next: Next) -> Response {
    let Some(token) = &s.config.token else {
        return next.run(request).await;
    };
    if request.uri().path() == "/login" {
        return next.run(request).await;
    }
    match presented_token(request.headers()) {
        Some(t) if constant_time_eq(t.as_bytes(), token.as_bytes()) => next.run(request).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"samotop\"")],
            "a token is needed: Authorization: Bearer TOKEN, or open /login?token=TOKEN",
        )
            .into_response(),
    }
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(APP_CSP),
        );
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn login(State(s): St, QueryParams(q): QueryParams<HashMap<String, String>>) -> Response {
    let given = q.get("token").cloned().unwrap_or_default();
    match &s.config.token {
        Some(token) if constant_time_eq(given.as_bytes(), token.as_bytes()) => {
            let cookie = format!("samotop_token={given}; Path=/; HttpOnly; SameSite=Strict");
            match HeaderValue::from_str(&cookie) {
                Ok(v) => (
                    StatusCode::SEE_OTHER,
                    [
                        (header::SET_COOKIE, v),
                        (header::LOCATION, HeaderValue::from_static("/")),
                    ],
                )
                    .into_response(),
                Err(_) => (StatusCode::BAD_REQUEST, "bad token").into_response(),
            }
        }
        None => (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response(),
        _ => (StatusCode::UNAUTHORIZED, "wrong token").into_response(),
    }
}

// ---- Pages --------------------------------------------------------------------------------

async fn page(State(s): St) -> Response {
    let label = if s.config.label.is_empty() {
        "Samotop inbox".to_string()
    } else {
        html_escape(&s.config.label)
    };
    let body = INDEX_HTML.replace("{{label}}", &label);
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

async fn app_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        APP_JS,
    )
        .into_response()
}

async fn app_css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        APP_CSS,
    )
        .into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

// ---- Health -------------------------------------------------------------------------------

async fn readyz(State(s): St) -> Response {
    match s.inbox.ready().await {
        Ok(()) => "ok".into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

// ---- Lists --------------------------------------------------------------------------------

fn number(q: &HashMap<String, String>, key: &str, default: u64) -> u64 {
    q.get(key)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn filter(q: &HashMap<String, String>, mailbox: Option<String>) -> Result<Filter, Fail> {
    let query = match q.get("query") {
        Some(text) => Query::parse(text).map_err(Error::from)?,
        None => Query::default(),
    };
    Ok(Filter {
        mailbox,
        query,
        start: number(q, "start", 0),
        limit: number(q, "limit", 50),
    })
}

async fn list(s: &AppState, filter: Filter) -> Res {
    Ok(axum::Json(s.inbox.list(&filter).await?).into_response())
}

async fn messages(State(s): St, QueryParams(q): QueryParams<HashMap<String, String>>) -> Res {
    let mut f = filter(&q, None)?;
    f.query = Query::default();
    list(&s, f).await
}

async fn search(State(s): St, QueryParams(q): QueryParams<HashMap<String, String>>) -> Res {
    list(&s, filter(&q, None)?).await
}

async fn inbox_list(
    State(s): St,
    Path(address): Path<String>,
    QueryParams(q): QueryParams<HashMap<String, String>>,
) -> Res {
    list(&s, filter(&q, Some(address))?).await
}

#[derive(Debug, Default, Deserialize)]
struct IdsRequest {
    #[serde(rename = "IDs", alias = "ids", default)]
    ids: Option<Vec<String>>,
    #[serde(rename = "Read", alias = "read", default)]
    read: bool,
    #[serde(rename = "Search", alias = "search", default)]
    search: Option<String>,
}

fn ids_request(body: &Bytes) -> Result<IdsRequest, Fail> {
    let text = std::str::from_utf8(body).unwrap_or("").trim();
    if text.is_empty() || text == "null" {
        return Ok(IdsRequest::default());
    }
    serde_json::from_str(text)
        .map_err(|e| Fail(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))
}

fn ok_text() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "ok").into_response()
}

async fn put_messages(State(s): St, body: Bytes) -> Res {
    let req = ids_request(&body)?;
    match (
        req.ids.filter(|ids| !ids.is_empty()),
        req.search.filter(|q| !q.trim().is_empty()),
    ) {
        (Some(ids), _) => {
            s.inbox.set_read(Some(&ids), None, req.read).await?;
        }
        (None, Some(q)) => {
            let f = Filter {
                query: Query::parse(&q).map_err(Error::from)?,
                ..Filter::default()
            };
            s.inbox.set_read_matching(&f, req.read).await?;
        }
        (None, None) => {
            s.inbox.set_read(None, None, req.read).await?;
        }
    }
    Ok(ok_text())
}

async fn delete_messages(State(s): St, body: Bytes) -> Res {
    let req = ids_request(&body)?;
    let ids = req.ids.filter(|ids| !ids.is_empty());
    s.inbox.delete(ids.as_deref(), None).await?;
    Ok(ok_text())
}

async fn delete_search(State(s): St, QueryParams(q): QueryParams<HashMap<String, String>>) -> Res {
    let f = filter(&q, None)?;
    if f.query.is_empty() {
        return Err(Fail(StatusCode::BAD_REQUEST, "no search query".into()));
    }
    s.inbox.delete_matching(&f).await?;
    Ok(ok_text())
}

async fn inbox_delete_all(
    State(s): St,
    Path(address): Path<String>,
    QueryParams(q): QueryParams<HashMap<String, String>>,
) -> Res {
    let f = filter(&q, Some(address.clone()))?;
    if f.query.is_empty() {
        s.inbox.delete(None, Some(&address)).await?;
    } else {
        s.inbox.delete_matching(&f).await?;
    }
    Ok(ok_text())
}

async fn inbox_delete(State(s): St, Path((address, id)): Path<(String, String)>) -> Res {
    if s.inbox.delete(Some(&[id]), Some(&address)).await? == 0 {
        return Err(not_found());
    }
    Ok(ok_text())
}

// ---- Info ---------------------------------------------------------------------------------

async fn info(State(s): St) -> Res {
    let stats = s.inbox.stats().await?;
    let db_size = std::fs::metadata(s.inbox.database())
        .map(|m| m.len())
        .unwrap_or(0);
    Ok(axum::Json(json!({
        "Version": concat!("samotop-inbox ", env!("CARGO_PKG_VERSION")),
        "LatestVersion": "",
        "Database": s.inbox.database(),
        "DatabaseSize": db_size,
        "Messages": stats.messages,
        "Unread": stats.unread,
        "Tags": {},
        "RuntimeStats": {
            "Memory": 0,
            "MessagesDeleted": 0,
            "SMTPAccepted": 0,
            "SMTPAcceptedSize": 0,
            "SMTPIgnored": 0,
            "SMTPRejected": 0,
            "Uptime": s.started.elapsed().as_secs(),
        },
        "Backend": s.inbox.backend_name(),
        "Bytes": stats.bytes,
        "Cursor": stats.last_cursor,
    }))
    .into_response())
}

async fn webui(State(s): St) -> Res {
    Ok(axum::Json(json!({
        "Label": s.config.label,
        "MessageRelay": { "Enabled": false, "SMTPServer": "", "ReturnPath": "", "AllowedRecipients": "", "BlockedRecipients": "", "OverrideFrom": "", "PreserveMessageIDs": false },
        "SpamAssassin": false,
        "ChaosEnabled": false,
        "DuplicatesIgnored": false,
        "HideDeleteAllButton": false,
    }))
    .into_response())
}

async fn tags() -> Response {
    axum::Json(Vec::<String>::new()).into_response()
}

// ---- One message --------------------------------------------------------------------------

/// Mailpit's `Message`, plus our `Envelope` and `Cursor`.
#[derive(Serialize)]
struct MessageJson {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Cursor")]
    cursor: i64,
    #[serde(rename = "MessageID")]
    message_id: String,
    #[serde(rename = "From")]
    from: Address,
    #[serde(rename = "To")]
    to: Vec<Address>,
    #[serde(rename = "Cc")]
    cc: Vec<Address>,
    #[serde(rename = "Bcc")]
    bcc: Vec<Address>,
    #[serde(rename = "ReplyTo")]
    reply_to: Vec<Address>,
    #[serde(rename = "ReturnPath")]
    return_path: String,
    #[serde(rename = "Subject")]
    subject: String,
    #[serde(rename = "ListUnsubscribe")]
    list_unsubscribe: serde_json::Value,
    #[serde(rename = "Date")]
    date: String,
    #[serde(rename = "Created")]
    created: String,
    #[serde(rename = "Tags")]
    tags: Vec<String>,
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Text")]
    text: String,
    #[serde(rename = "HTML")]
    html: String,
    #[serde(rename = "Size")]
    size: u64,
    #[serde(rename = "Inline")]
    inline: Vec<Attachment>,
    #[serde(rename = "Attachments")]
    attachments: Vec<Attachment>,
    #[serde(rename = "Read")]
    read: bool,
    #[serde(rename = "Parsed")]
    parsed: bool,
    #[serde(rename = "Envelope")]
    envelope: Option<EnvelopeInfo>,
}

fn message_json(summary: Summary, view: View, envelope: Option<EnvelopeInfo>) -> MessageJson {
    let f = view.fields;
    let date = f
        .date
        .map(crate::model::rfc3339_ms)
        .unwrap_or_else(|| summary.created.clone());
    let links: Vec<String> = view
        .list_unsubscribe
        .split(',')
        .filter_map(|l| {
            let l = l.trim().trim_start_matches('<').trim_end_matches('>');
            (!l.is_empty()).then(|| l.to_string())
        })
        .collect();
    MessageJson {
        id: summary.id,
        cursor: summary.cursor,
        message_id: if f.parsed {
            f.message_id
        } else {
            summary.message_id
        },
        from: if f.parsed { f.from } else { summary.from },
        to: if f.parsed { f.to } else { summary.to },
        cc: f.cc,
        bcc: f.bcc,
        reply_to: f.reply_to,
        return_path: envelope
            .as_ref()
            .map(|e| e.mail_from.clone())
            .unwrap_or(view.return_path),
        subject: if f.parsed { f.subject } else { summary.subject },
        list_unsubscribe: json!({
            "Header": view.list_unsubscribe,
            "Links": links,
            "Errors": "",
            "HeaderPost": view.list_unsubscribe_post,
        }),
        date,
        created: summary.created,
        tags: Vec::new(),
        username: String::new(),
        text: view.text,
        html: view.html,
        size: summary.size,
        inline: f.inline,
        attachments: f.attachments,
        read: true,
        parsed: view.parsed,
        envelope,
    }
}

async fn one_message(s: &AppState, id: &str, mailbox: Option<&str>) -> Res {
    let Some((summary, view)) = s.inbox.view(id, mailbox).await? else {
        return Err(not_found());
    };
    let envelope = s.inbox.envelope(&summary.id, mailbox).await?;
    if !summary.read {
        s.inbox
            .set_read(Some(std::slice::from_ref(&summary.id)), mailbox, true)
            .await?;
    }
    Ok(axum::Json(message_json(summary, view, envelope)).into_response())
}

async fn message(State(s): St, Path(id): Path<String>) -> Res {
    one_message(&s, &id, None).await
}

async fn inbox_message(State(s): St, Path((address, id)): Path<(String, String)>) -> Res {
    one_message(&s, &id, Some(&address)).await
}

async fn headers(State(s): St, Path(id): Path<String>) -> Res {
    let Some((_, view)) = s.inbox.view(&id, None).await? else {
        return Err(not_found());
    };
    let mut map: serde_json::Map<String, serde_json::Value> = serde_json::Map::new();
    for (name, value) in view.headers {
        let entry = map.entry(name).or_insert_with(|| json!([]));
        if let Some(list) = entry.as_array_mut() {
            list.push(json!(value));
        }
    }
    Ok(axum::Json(map).into_response())
}

async fn raw_of(s: &AppState, id: &str, mailbox: Option<&str>) -> Res {
    let Some(raw) = s.inbox.raw(id, mailbox).await? else {
        return Err(not_found());
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], raw).into_response())
}

async fn raw(State(s): St, Path(id): Path<String>) -> Res {
    raw_of(&s, &id, None).await
}

async fn inbox_raw(State(s): St, Path((address, id)): Path<(String, String)>) -> Res {
    raw_of(&s, &id, Some(&address)).await
}

async fn envelope_of(s: &AppState, id: &str, mailbox: Option<&str>) -> Res {
    match s.inbox.envelope(id, mailbox).await? {
        Some(env) => Ok(axum::Json(env).into_response()),
        None => Err(not_found()),
    }
}

async fn envelope(State(s): St, Path(id): Path<String>) -> Res {
    envelope_of(&s, &id, None).await
}

async fn inbox_envelope(State(s): St, Path((address, id)): Path<(String, String)>) -> Res {
    envelope_of(&s, &id, Some(&address)).await
}

fn safe_file_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '"' | '\\' | '/' | ';') {
                '_'
            } else {
                c
            }
        })
        .take(200)
        .collect();
    if cleaned.trim().is_empty() {
        "part".into()
    } else {
        cleaned
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn part_of(s: &AppState, id: &str, mailbox: Option<&str>, part_id: &str) -> Res {
    let Some(part) = s.inbox.part(id, mailbox, part_id).await? else {
        return Err(not_found());
    };
    let name = safe_file_name(&part.file_name);
    let ascii: String = name
        .chars()
        .map(|c| if c.is_ascii() { c } else { '_' })
        .collect();
    let disposition = format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        percent_encode(&name)
    );
    let mut response = Response::new(Body::from(part.data));
    let h = response.headers_mut();
    // Served as a download, never rendered in our origin.
    let ctype = HeaderValue::from_str(&part.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, ctype);
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    Ok(response)
}

async fn part(State(s): St, Path((id, part_id)): Path<(String, String)>) -> Res {
    part_of(&s, &id, None, &part_id).await
}

async fn inbox_part(
    State(s): St,
    Path((address, id, part_id)): Path<(String, String, String)>,
) -> Res {
    part_of(&s, &id, Some(&address), &part_id).await
}

/// Neutralises what could fetch or navigate despite the CSP: `<meta http-equiv>` (refresh)
/// becomes an inert attribute.
fn defuse(html: &str) -> String {
    let lower = html.to_ascii_lowercase();
    let mut out = String::with_capacity(html.len());
    let mut last = 0;
    let mut from = 0;
    while let Some(pos) = lower[from..].find("http-equiv") {
        let at = from + pos;
        out.push_str(&html[last..at]);
        out.push_str("data-removed-http-equiv");
        last = at + "http-equiv".len();
        from = last;
    }
    out.push_str(&html[last..]);
    out
}

async fn html_of(
    s: &AppState,
    id: &str,
    mailbox: Option<&str>,
    q: &HashMap<String, String>,
) -> Res {
    let Some((summary, view)) = s.inbox.view(id, mailbox).await? else {
        return Err(not_found());
    };
    let mut html = if view.html.is_empty() {
        format!(
            "<pre style=\"white-space:pre-wrap\">{}</pre>",
            html_escape(&view.text)
        )
    } else {
        defuse(&view.html)
    };
    // Inline images (cid:) become data: URLs, so that the policy needs nothing remote.
    for inline in view.fields.inline.iter().take(MAX_INLINE) {
        if inline.content_id.is_empty() || inline.size as usize > MAX_INLINE_SIZE {
            continue;
        }
        let needle = format!("cid:{}", inline.content_id);
        if !html.contains(&needle) {
            continue;
        }
        if let Some(part) = s.inbox.part(&summary.id, mailbox, &inline.part_id).await? {
            let data = format!(
                "data:{};base64,{}",
                part.content_type,
                base64_encode(&part.data)
            );
            html = html.replace(&needle, &data);
        }
    }
    let remote = q.get("remote").is_some_and(|v| v == "1" || v == "true");
    let csp = if remote { MAIL_CSP_REMOTE } else { MAIL_CSP };
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, csp),
            (
                header::HeaderName::from_static("x-frame-options"),
                "SAMEORIGIN",
            ),
        ],
        html,
    )
        .into_response())
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

async fn html(
    State(s): St,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<HashMap<String, String>>,
) -> Res {
    html_of(&s, &id, None, &q).await
}

async fn inbox_html(
    State(s): St,
    Path((address, id)): Path<(String, String)>,
    QueryParams(q): QueryParams<HashMap<String, String>>,
) -> Res {
    html_of(&s, &id, Some(&address), &q).await
}

/// Mailpit's `/view/{ID}.html` and `/view/{ID}.txt`.
async fn view_file(
    State(s): St,
    Path(file): Path<String>,
    QueryParams(q): QueryParams<HashMap<String, String>>,
) -> Res {
    if let Some(id) = file.strip_suffix(".html") {
        return html_of(&s, id, None, &q).await;
    }
    let Some(id) = file.strip_suffix(".txt") else {
        return Err(not_found());
    };
    let Some((_, view)) = s.inbox.view(id, None).await? else {
        return Err(not_found());
    };
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        view.text,
    )
        .into_response())
}

// ---- Wait and events ----------------------------------------------------------------------

async fn wait(State(s): St, QueryParams(q): QueryParams<HashMap<String, String>>) -> Res {
    let f = filter(&q, q.get("mailbox").filter(|m| !m.is_empty()).cloned())?;
    let after: i64 = q
        .get("after")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let timeout =
        Duration::from_secs(number(&q, "timeout", 30).min(crate::store::MAX_WAIT.as_secs()));
    let limit = number(&q, "limit", 50);
    let waited = s
        .inbox
        .wait(f.mailbox.as_deref(), &f.query, after, limit, timeout)
        .await?;
    Ok(axum::Json(waited).into_response())
}

struct StreamGuard(Arc<AppState>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn events(State(s): St) -> Res {
    if s.streams.fetch_add(1, Ordering::SeqCst) >= MAX_STREAMS {
        s.streams.fetch_sub(1, Ordering::SeqCst);
        return Err(Fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many event streams".into(),
        ));
    }
    let guard = StreamGuard(s.clone());
    let rx = s.inbox.events();
    let stream = futures_util::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        let event = match rx.recv().await {
            Ok(Event::Stored) => SseEvent::default().event("stored").data("{}"),
            Ok(Event::Indexed { cursor }) => SseEvent::default()
                .event("new")
                .data(json!({ "cursor": cursor }).to_string()),
            Ok(_) => SseEvent::default().event("changed").data("{}"),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                SseEvent::default().event("changed").data("{}")
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<_, Infallible>(event), (rx, guard)))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        for data in [&b""[..], b"a", b"ab", b"abc", b"user:secret token"] {
            assert_eq!(base64_decode(&base64_encode(data)).as_deref(), Some(data));
        }
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
    }

    #[test]
    fn tokens_from_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(presented_token(&h).as_deref(), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dTpzM2NyZXQ="),
        );
        assert_eq!(presented_token(&h).as_deref(), Some("s3cret"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; samotop_token=xyz"),
        );
        assert_eq!(presented_token(&h).as_deref(), Some("xyz"));
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd"));
    }

    #[test]
    fn meta_refresh_is_defused() {
        let out = defuse("<META HTTP-EQUIV=\"refresh\" content=\"0;url=http://x/\"><p>hi");
        assert!(!out.to_ascii_lowercase().contains(" http-equiv"), "{out}");
        assert!(out.contains("<p>hi"));
    }

    #[test]
    fn file_names_are_safe() {
        assert_eq!(safe_file_name("../../etc/passwd"), ".._.._etc_passwd");
        assert_eq!(safe_file_name("a\r\nb\"c"), "a__b_c");
        assert_eq!(safe_file_name(""), "part");
    }
}
