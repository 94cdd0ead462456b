//! The trigger flags: webhooks (`--deliver https://...`), commands (`--deliver exec:...`),
//! per-address routes (`--route PATTERN=URI`) and fan-out (`--deliver` more than once),
//! mapped onto `samotop-trigger` and `samotop-delivery`'s `Route` and `Tee`.

use std::path::PathBuf;

use samotop_core::BoxDispatch;
use samotop_delivery::{Pattern, Route, Tee};
use samotop_trigger::{Exec, Format, JsonOptions, Secret, Webhook};

use crate::cli::{Deliver, seconds};

/// The flags of the webhook and command backends and of routes.
#[derive(Debug, clap::Args)]
pub struct TriggerArgs {
    /// Route recipients: PATTERN=URI[,URI...] (repeatable, first match wins; the others go
    /// to --deliver). PATTERN is a glob (alerts+*@example.org) or a regex (re:REGEX); a
    /// list of URIs hands the message to each.
    #[arg(long, env = "SAMOTOP_ROUTE", value_name = "PATTERN=URI")]
    pub route: Vec<String>,

    /// Webhook body: raw (message/rfc822) | json (envelope, headers, bodies, attachments).
    #[arg(
        long,
        env = "SAMOTOP_WEBHOOK_FORMAT",
        value_name = "F",
        default_value = "raw"
    )]
    pub webhook_format: WebhookFormat,

    /// Standard Webhooks signing secret, whsec_BASE64 (prefer the variable or
    /// --webhook-secret-file: a flag shows in ps).
    #[arg(
        long,
        env = "SAMOTOP_WEBHOOK_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub webhook_secret: Option<String>,

    /// A file holding the webhook signing secret.
    #[arg(long, env = "SAMOTOP_WEBHOOK_SECRET_FILE", value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,

    /// Seconds for one webhook request, until the response's status (default 30).
    #[arg(
        long,
        env = "SAMOTOP_WEBHOOK_TIMEOUT",
        value_name = "S",
        default_value = "30"
    )]
    pub webhook_timeout: f64,

    /// Also trust the CA certificates in this PEM file for https:// webhooks (repeatable;
    /// Mozilla's roots are built in).
    #[arg(long, env = "SAMOTOP_WEBHOOK_CA", value_name = "FILE")]
    pub webhook_ca: Vec<PathBuf>,

    /// JSON format: attachments bigger than this many bytes are listed without content.
    #[arg(
        long,
        env = "SAMOTOP_WEBHOOK_MAX_ATTACHMENT",
        value_name = "N",
        default_value = "10485760"
    )]
    pub webhook_max_attachment: u64,

    /// Run exec: commands once per recipient (default: once per message).
    #[arg(long, env = "SAMOTOP_EXEC_PER_RECIPIENT")]
    pub exec_per_recipient: bool,

    /// Seconds an exec: command may run before its process group is killed (default 60).
    #[arg(
        long,
        env = "SAMOTOP_EXEC_TIMEOUT",
        value_name = "S",
        default_value = "60"
    )]
    pub exec_timeout: f64,
}

/// The `--webhook-format` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WebhookFormat {
    /// The message as received, message/rfc822.
    Raw,
    /// A JSON document.
    Json,
}

/// The dispatch for the `--deliver`s and `--route`s: one backend, a `Tee` of several, and a
/// `Route` in front when routes are given. `backend` makes one `--deliver` URI's dispatch.
pub async fn dispatch(
    args: &TriggerArgs,
    delivers: &[Deliver],
    backend: impl AsyncFn(&Deliver) -> Result<BoxDispatch, String>,
) -> Result<BoxDispatch, String> {
    async fn all(
        uris: &[Deliver],
        backend: &impl AsyncFn(&Deliver) -> Result<BoxDispatch, String>,
    ) -> Result<BoxDispatch, String> {
        let mut made = Vec::with_capacity(uris.len());
        for uri in uris {
            made.push(backend(uri).await?);
        }
        match made.len() {
            1 => Ok(made.remove(0)),
            _ => Ok(BoxDispatch::new(Tee::new(made))),
        }
    }
    let default = all(delivers, &backend).await?;
    if args.route.is_empty() {
        return Ok(default);
    }
    let mut route = Route::new(default);
    for rule in &args.route {
        let (pattern, uris) = split_route(rule)?;
        let pattern = Pattern::parse(pattern).map_err(|e| format!("--route: {e}"))?;
        route = route.route(pattern, all(&uris, &backend).await?);
    }
    Ok(BoxDispatch::new(route))
}

/// `PATTERN=URI[,URI...]`: split at the first `=` that a URI follows, and the list at each
/// `,` that a URI follows (a pattern may hold `=`, a URL `=` and `,`).
pub(crate) fn split_route(rule: &str) -> Result<(&str, Vec<Deliver>), String> {
    let bad = || format!("--route {rule:?}: expected PATTERN=URI[,URI...]");
    let at = rule
        .match_indices('=')
        .map(|(i, _)| i)
        .find(|&i| starts_uri(&rule[i + 1..]))
        .ok_or_else(bad)?;
    let (pattern, list) = (&rule[..at], &rule[at + 1..]);
    let mut starts: Vec<usize> = vec![0];
    starts.extend(
        list.match_indices(',')
            .map(|(i, _)| i)
            .filter(|&i| starts_uri(&list[i + 1..]))
            .map(|i| i + 1),
    );
    let mut uris = Vec::new();
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(list.len(), |&next| next - 1);
        uris.push(
            list[start..end]
                .parse::<Deliver>()
                .map_err(|e| format!("--route {rule:?}: {e}"))?,
        );
    }
    Ok((pattern, uris))
}

fn starts_uri(s: &str) -> bool {
    [
        "maildir:",
        "lmtp:",
        "smtp:",
        "http://",
        "https://",
        "exec:",
        "sqlite:",
        "postgres://",
        "postgresql://",
    ]
    .iter()
    .any(|p| s.starts_with(p))
        || s == "stdout"
        || s == "null"
        || s.starts_with("stdout,")
        || s.starts_with("null,")
}

/// A `--deliver` for the log: a webhook URL without user, password or query (a token).
pub fn shown(deliver: &Deliver) -> String {
    match deliver {
        Deliver::Webhook(url) => match Webhook::new(url) {
            Ok(hook) => format!("Webhook({})", hook.shown_url()),
            Err(_) => "Webhook(?)".into(),
        },
        other => format!("{other:?}"),
    }
}

/// A trigger's own timeout, which must end before the session's `--backend-timeout`: past
/// that the client has its 451 and sends again while the endpoint or the command may still
/// take the message, which would then run twice.
fn before_backend(
    flag: &str,
    own: f64,
    backend: std::time::Duration,
) -> Result<std::time::Duration, String> {
    let own_timeout = seconds(flag, own)?;
    if own_timeout >= backend {
        return Err(format!(
            "--{flag} {own} must be shorter than --backend-timeout {}: past the backend \
             timeout the client has its 451 and sends the message again, while the first \
             attempt may still be taken",
            backend.as_secs_f64()
        ));
    }
    Ok(own_timeout)
}

/// `--deliver http(s)://...`; `backend` is the session's `--backend-timeout`.
pub fn webhook(
    args: &TriggerArgs,
    url: &str,
    backend: std::time::Duration,
) -> Result<BoxDispatch, String> {
    let mut hook = Webhook::new(url)
        .map_err(|e| e.to_string())?
        .timeout(before_backend(
            "webhook-timeout",
            args.webhook_timeout,
            backend,
        )?);
    let secret = match (&args.webhook_secret, &args.webhook_secret_file) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(file)) => Some(
            std::fs::read_to_string(file)
                .map_err(|e| format!("--webhook-secret-file {}: {e}", file.display()))?,
        ),
        (None, None) => None,
    };
    if let Some(secret) = secret {
        hook = hook.secret(Secret::parse(&secret).map_err(|e| e.to_string())?);
    } else {
        log::warn!(
            "webhook {}: unsigned (no --webhook-secret)",
            hook.shown_url()
        );
    }
    for ca in &args.webhook_ca {
        hook = hook.ca_file(ca).map_err(|e| e.to_string())?;
    }
    if args.webhook_format == WebhookFormat::Json {
        hook = hook.format(Format::Json(JsonOptions {
            max_attachment: args.webhook_max_attachment,
            ..JsonOptions::default()
        }));
    }
    Ok(BoxDispatch::new(hook))
}

/// `--deliver exec:PROGRAM ARG...`; `backend` is the session's `--backend-timeout`.
pub fn exec(
    args: &TriggerArgs,
    command: &str,
    backend: std::time::Duration,
) -> Result<BoxDispatch, String> {
    let exec = Exec::parse(command)
        .map_err(|e| e.to_string())?
        .per_recipient(args.exec_per_recipient)
        .timeout(before_backend("exec-timeout", args.exec_timeout, backend)?);
    Ok(BoxDispatch::new(exec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_split_where_a_uri_starts() {
        let (p, uris) = split_route("alerts+env=prod@x=https://h/?a=1,2").expect("route");
        assert_eq!(p, "alerts+env=prod@x");
        assert_eq!(uris, [Deliver::Webhook("https://h/?a=1,2".into())]);
        let (p, uris) = split_route("re:^a=b$=maildir:/m,exec:/bin/x a,b,http://h/").expect("list");
        assert_eq!(p, "re:^a=b$");
        assert_eq!(
            uris,
            [
                Deliver::Maildir("/m".into()),
                Deliver::Exec("/bin/x a,b".into()),
                Deliver::Webhook("http://h/".into())
            ]
        );
        assert_eq!(split_route("*@x=null").expect("null").1, [Deliver::Null]);
        let (_, uris) = split_route("a+*@x=sqlite:/i.db,postgres://h/db").expect("inbox");
        assert_eq!(
            uris,
            [
                Deliver::Inbox("sqlite:/i.db".into()),
                Deliver::Inbox("postgres://h/db".into())
            ]
        );
        assert!(split_route("no-uri").is_err());
        assert!(split_route("a=b").is_err());
    }
}
