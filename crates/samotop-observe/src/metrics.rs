//! [`Metrics`]: Prometheus counters, gauges and histograms, fed by the core's observer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use samotop_core::{Observation, Observer, Origin, Refusal, SessionInfo};

/// The exposition format a scraper asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text (`application/openmetrics-text`): what Prometheus asks for.
    OpenMetrics,
    /// The classic Prometheus text format 0.0.4 (`text/plain; version=0.0.4`): what
    /// `promtool` and older scrapers read.
    Prometheus,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text`, else the classic text.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// The `Content-Type` of this format.
    pub fn content_type(&self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabels {
    listener: &'static str,
    end: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    listener: &'static str,
    result: &'static str,
    origin: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    origin: &'static str,
    class: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    method: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GuardLabels {
    guard: &'static str,
    origin: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

/// Prometheus metrics of every session: an [`Observer`] to hand to the `Server` (or a
/// `Driver`), and the registry to expose at `/metrics` ([`Metrics::encode`],
/// [`crate::router`]).
///
/// Every label value comes from a bounded set: listener kinds, end reasons, stages, status
/// classes (`5.7`, from the enhanced code, never the text), limit and guard names, TLS
/// versions, RFC 8601 result words. Nothing a peer says (an address, a HELO name) is ever a
/// label. The list, with what each means, is in `docs/OBSERVE.md`.
///
/// ```
/// use samotop_core::{Observation, Observer, Peer, SessionInfo};
/// use samotop_observe::{Format, Metrics};
/// let metrics = Metrics::new("maildir");
/// metrics.observe(&SessionInfo::new(Peer::Stdio, "mx"), &Observation::Start);
/// let text = metrics.encode(Format::Prometheus);
/// assert!(text.contains("# TYPE samotop_sessions_opened_total counter"));
/// ```
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    backend: &'static str,
    opened: Family<ListenerLabels, Counter>,
    closed: Family<ClosedLabels, Counter>,
    active: Family<ListenerLabels, Gauge>,
    messages: Family<MessageLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    received: Family<ListenerLabels, Counter>,
    size: Histogram,
    recipients: Histogram,
    latency: Family<BackendLabels, Histogram>,
    tls: Family<VersionLabels, Counter>,
    tls_failures: Counter,
    auth: Family<AuthLabels, Counter>,
    limits: Family<LimitLabels, Counter>,
    guards: Family<GuardLabels, Counter>,
    backend_errors: Family<StatusLabels, Counter>,
    connections_refused: Family<LimitLabels, Counter>,
}

impl Metrics {
    /// Metrics for a server whose backend is called `backend` (`maildir`, `lmtp`, `sqlite`:
    /// the `backend` label of the delivery latency), with the process metrics (resident
    /// memory, open descriptors, start time) registered too.
    pub fn new(backend: &'static str) -> Metrics {
        let mut registry = Registry::with_prefix("samotop");
        let opened = Family::<ListenerLabels, Counter>::default();
        let closed = Family::<ClosedLabels, Counter>::default();
        let active = Family::<ListenerLabels, Gauge>::default();
        let messages = Family::<MessageLabels, Counter>::default();
        let refusals = Family::<RefusalLabels, Counter>::default();
        let received = Family::<ListenerLabels, Counter>::default();
        let size = Histogram::new(exponential_buckets(1024.0, 4.0, 10));
        let recipients = Histogram::new([1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0]);
        let latency = Family::<BackendLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.5, 14))
        });
        let tls = Family::<VersionLabels, Counter>::default();
        let tls_failures = Counter::default();
        let auth = Family::<AuthLabels, Counter>::default();
        let limits = Family::<LimitLabels, Counter>::default();
        let guards = Family::<GuardLabels, Counter>::default();
        let backend_errors = Family::<StatusLabels, Counter>::default();
        let connections_refused = Family::<LimitLabels, Counter>::default();
        registry.register(
            "sessions_opened",
            "Sessions started, by listener",
            opened.clone(),
        );
        registry.register(
            "sessions_closed",
            "Sessions ended, by listener and how they ended",
            closed.clone(),
        );
        registry.register("sessions_active", "Sessions open now", active.clone());
        registry.register(
            "messages",
            "Messages whose content arrived, by result (accepted, refused, failed) and where a refusal came from",
            messages.clone(),
        );
        registry.register(
            "refusals",
            "Refusals sent, by where they came from and the enhanced status class",
            refusals.clone(),
        );
        registry.register(
            "received_bytes",
            "Message octets received (after dot-unstuffing)",
            received.clone(),
        );
        registry.register(
            "message_size_bytes",
            "Size of messages received",
            size.clone(),
        );
        registry.register(
            "message_recipients",
            "Recipients per message delivered",
            recipients.clone(),
        );
        registry.register(
            "delivery_seconds",
            "Time from the end of the data to the backend's answer, by backend",
            latency.clone(),
        );
        registry.register(
            "tls_handshakes",
            "TLS handshakes done, by version",
            tls.clone(),
        );
        registry.register(
            "tls_failures",
            "TLS handshakes that failed or timed out",
            tls_failures.clone(),
        );
        registry.register(
            "auth_results",
            "Sender authentication results of delivered messages, by method and result",
            auth.clone(),
        );
        registry.register("limits", "Limits reached, by limit", limits.clone());
        registry.register(
            "guard_refusals",
            "Refusals by a guard or check, by its name and stage",
            guards.clone(),
        );
        registry.register(
            "backend_errors",
            "Refusals that came from the backend, by enhanced status class",
            backend_errors.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused before any session, by the limit reached",
            connections_refused.clone(),
        );
        registry.register_collector(Box::new(Process::new()));
        Metrics {
            registry,
            backend,
            opened,
            closed,
            active,
            messages,
            refusals,
            received,
            size,
            recipients,
            latency,
            tls,
            tls_failures,
            auth,
            limits,
            guards,
            backend_errors,
            connections_refused,
        }
    }

    /// Adds a collector of your own to the registry (transcripts' counters, a backend's).
    pub fn register_collector(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
    }

    /// The metrics now, in `format`.
    pub fn encode(&self, format: Format) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let result = match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
            }
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            }
        };
        if let Err(e) = result {
            log::error!("metrics: cannot encode: {e}");
        }
        out
    }

    fn refused(&self, refusal: &Refusal, origin: Origin) {
        let (class, status) = status(refusal);
        self.refusals
            .get_or_create(&RefusalLabels {
                origin: origin.as_str(),
                class,
                status,
            })
            .inc();
        if let Some(guard) = refusal.source() {
            self.guards
                .get_or_create(&GuardLabels {
                    guard,
                    origin: origin.as_str(),
                })
                .inc();
        }
        if origin == Origin::Backend {
            self.backend_errors
                .get_or_create(&StatusLabels { status })
                .inc();
        }
    }
}

impl Observer for Metrics {
    fn observe(&self, info: &SessionInfo, what: &Observation<'_>) {
        let listener = ListenerLabels {
            listener: info.listener,
        };
        match what {
            Observation::Start => {
                self.opened.get_or_create(&listener).inc();
                self.active.get_or_create(&listener).inc();
            }
            Observation::End(summary) => {
                self.closed
                    .get_or_create(&ClosedLabels {
                        listener: info.listener,
                        end: summary.end.as_str(),
                    })
                    .inc();
                self.active.get_or_create(&listener).dec();
            }
            Observation::Refused { refusal, origin } => self.refused(refusal, *origin),
            Observation::Limit(limit) => {
                self.limits
                    .get_or_create(&LimitLabels {
                        limit: limit.as_str(),
                    })
                    .inc();
            }
            Observation::Content { size, .. } => {
                self.received.get_or_create(&listener).inc_by(*size);
                self.size.observe(*size as f64);
            }
            Observation::MessageRefused { refusal, origin } => {
                let result = if refusal.is_permanent() {
                    "refused"
                } else {
                    "failed"
                };
                self.messages
                    .get_or_create(&MessageLabels {
                        listener: info.listener,
                        result,
                        origin: origin.as_str(),
                    })
                    .inc();
            }
            Observation::Delivered {
                envelope,
                outcomes,
                latency,
            } => {
                let ok = outcomes.iter().filter(|o| o.is_ok()).count();
                let permanent = outcomes
                    .iter()
                    .filter(|o| o.as_ref().is_err_and(|r| r.is_permanent()))
                    .count();
                let result = if ok == outcomes.len() {
                    "accepted"
                } else if permanent == outcomes.len() {
                    "refused"
                } else {
                    "failed"
                };
                self.messages
                    .get_or_create(&MessageLabels {
                        listener: info.listener,
                        result,
                        origin: Origin::Backend.as_str(),
                    })
                    .inc();
                self.recipients.observe(outcomes.len() as f64);
                self.latency
                    .get_or_create(&BackendLabels {
                        backend: self.backend,
                    })
                    .observe(latency.as_secs_f64());
                for r in &envelope.auth {
                    self.auth
                        .get_or_create(&AuthLabels {
                            method: bounded(&r.method, METHODS),
                            result: bounded(&r.result, RESULTS),
                        })
                        .inc();
                }
            }
            Observation::Tls(tls) => {
                let version = match tls.version.as_str() {
                    "TLS1.3" => "TLS1.3",
                    "TLS1.2" => "TLS1.2",
                    _ => "other",
                };
                self.tls.get_or_create(&VersionLabels { version }).inc();
            }
            Observation::TlsFailed(_) => {
                self.tls_failures.inc();
            }
            Observation::ConnectionRefused { limit, .. } => {
                self.connections_refused
                    .get_or_create(&LimitLabels {
                        limit: limit.as_str(),
                    })
                    .inc();
                self.limits
                    .get_or_create(&LimitLabels {
                        limit: limit.as_str(),
                    })
                    .inc();
            }
            _ => {}
        }
    }
}

/// The RFC 8601 methods we count; others are `other`.
const METHODS: &[&str] = &["spf", "dkim", "dmarc", "arc"];
/// The RFC 8601 results we count; others are `other`.
const RESULTS: &[&str] = &[
    "pass",
    "fail",
    "softfail",
    "neutral",
    "none",
    "temperror",
    "permerror",
    "policy",
];

/// `value` when it is one of `known`, else `other`: a label never takes an unknown word.
fn bounded(value: &str, known: &[&'static str]) -> &'static str {
    known
        .iter()
        .find(|k| k.eq_ignore_ascii_case(value))
        .copied()
        .unwrap_or("other")
}

/// The class (`4xx`, `5xx`) and the status (`5.7`: class and subject of the enhanced code,
/// or `5.x` without one) of a refusal: bounded sets whatever a downstream server said.
fn status(refusal: &Refusal) -> (&'static str, &'static str) {
    const SUBJECTS: [[&str; 8]; 2] = [
        ["4.0", "4.1", "4.2", "4.3", "4.4", "4.5", "4.6", "4.7"],
        ["5.0", "5.1", "5.2", "5.3", "5.4", "5.5", "5.6", "5.7"],
    ];
    let permanent = refusal.is_permanent();
    let class = if permanent { "5xx" } else { "4xx" };
    let row = usize::from(permanent);
    let status = match refusal.enhanced() {
        Some([_, subject, _]) if subject < 8 => SUBJECTS[row][usize::from(subject)],
        _ if permanent => "5.x",
        _ => "4.x",
    };
    (class, status)
}

/// Process metrics read from `/proc/self` at each scrape: resident memory, open file
/// descriptors, the start time.
#[derive(Debug)]
struct Process {
    start: u64,
}

impl Process {
    fn new() -> Process {
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Process { start }
    }
}

fn resident_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rss = ConstGauge::new(resident_bytes() as i64);
        let m = encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory of the server process",
            None,
            rss.metric_type(),
        )?;
        rss.encode(m)?;
        let fds = ConstGauge::new(open_fds() as i64);
        let m = encoder.encode_descriptor(
            "process_open_fds",
            "File descriptors open in the server process",
            None,
            fds.metric_type(),
        )?;
        fds.encode(m)?;
        let start = ConstGauge::new(self.start as i64);
        let m = encoder.encode_descriptor(
            "process_start_time_seconds",
            "When the server process started, in seconds since the epoch",
            None,
            start.metric_type(),
        )?;
        start.encode(m)
    }
}

/// Two counters as a collector: for transcripts' written and dropped lines.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) name: &'static str,
    pub(crate) help: &'static str,
    pub(crate) value: Arc<AtomicU64>,
}

impl Collector for Counters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = ConstCounter::new(self.value.load(Ordering::Relaxed));
        let m = encoder.encode_descriptor(self.name, self.help, None, c.metric_type())?;
        c.encode(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use samotop_core::reply;

    #[test]
    fn label_values_are_bounded() {
        assert_eq!(status(&reply::RELAY_DENIED), ("5xx", "5.7"));
        assert_eq!(status(&reply::DELIVERY_FAILED), ("4xx", "4.3"));
        let odd = Refusal::with_text(554, Some([5, 250, 1]), "x");
        assert_eq!(status(&odd), ("5xx", "5.x"));
        assert_eq!(bounded("PASS", RESULTS), "pass");
        assert_eq!(bounded("<script>", RESULTS), "other");
    }

    #[test]
    fn both_formats_encode() {
        let m = Metrics::new("null");
        let om = m.encode(Format::OpenMetrics);
        assert!(om.ends_with("# EOF\n"), "{om}");
        let text = m.encode(Format::Prometheus);
        assert!(!text.contains("# EOF"), "{text}");
        assert!(
            text.contains("samotop_process_resident_memory_bytes"),
            "{text}"
        );
    }
}
