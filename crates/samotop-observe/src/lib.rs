//! Seeing what Samotop does: Prometheus metrics and session transcripts, as observers of the
//! core's sessions.
//!
//! # Brief overview
//!
//! * [`Metrics`]: counters, gauges and histograms of sessions, messages, refusals (by where
//!   they came from and their status class), limits, guards, TLS, authentication results,
//!   delivery latency, and the process; encoded as OpenMetrics or the classic Prometheus
//!   text ([`Format`]); served at `/metrics` by [`router`] / [`serve`].
//! * [`Transcripts`]: a file per session with every command and reply, written by a thread
//!   of its own through a bounded queue, the directory bounded by count and bytes.
//!
//! Both implement [`samotop_core::Observer`]: hand them to `Server::observer` (several at
//! once with [`samotop_core::Observers`]). No global state: a library user who wants none
//! of this pays nothing.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use samotop_core::{Observation, Observer, Peer, SessionInfo};
//! use samotop_observe::{Format, Metrics};
//!
//! let metrics = Arc::new(Metrics::new("maildir"));
//! let mut info = SessionInfo::new(Peer::Stdio, "mx.example.org");
//! info.listener = "smtp";
//! metrics.observe(&info, &Observation::Start);
//! let text = metrics.encode(Format::Prometheus);
//! assert!(text.contains("samotop_sessions_opened_total{listener=\"smtp\"} 1"));
//! assert!(text.contains("samotop_sessions_active{listener=\"smtp\"} 1"));
//! ```
#![deny(missing_docs)]

mod http;
mod metrics;
mod transcript;

pub use http::{router, serve};
pub use metrics::{Format, Metrics};
pub use transcript::{TranscriptLimits, Transcripts};
