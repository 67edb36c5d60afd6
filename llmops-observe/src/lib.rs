//! Observability for llmops: OpenTelemetry GenAI spans and metrics, Prometheus `/metrics`,
//! gateway overhead, SLOs, alerts and quality-drift monitoring.
//!
//! # Design
//!
//! **Facades, not exporters.** The [`ObserveLayer`] emits `tracing` spans and `metrics`
//! through their facades; the application picks where they go. The gateway installs the
//! Prometheus recorder ([`prometheus::install`]) and serves `GET /metrics`; an OpenTelemetry
//! pipeline reads the same spans through `tracing-opentelemetry`, whose field conventions
//! (`otel.name`, `otel.kind`, `otel.status_code`) the spans follow — the `otlp` feature
//! ships that pipeline (`otlp::OtlpTracing`). Names are our own
//! constants ([`semconv`]) because the upstream Rust constants are experimental.
//!
//! **One span per operation.** Named after the operation (`chat`, `embeddings`), with
//! `otel.name = "{operation} {model}"` as the spec asks, the GenAI request/response/usage
//! attributes and ours (`llmops.tenant`, `llmops.prompt.*`, `llmops.cost.usd`,
//! `llmops.cache.hit`, `llmops.attempt`, `llmops.gateway.overhead`). A streamed answer's span
//! stays open until the stream ends or is dropped. Message content is recorded only when
//! configured, through a [`ContentFilter`] (the PII redactor's hook).
//!
//! **Bounded labels.** Model, provider, tenant and prompt labels pass a [`LabelLimiter`]:
//! values past a cap fold into `other`, so clients cannot blow up the series count.
//!
//! **What only inner layers know** — cost, time on upstreams, fallbacks — comes through a
//! [`RequestTelemetry`] handle in the request context, or typed values ([`CostUsd`],
//! [`UpstreamTime`]) in the response metadata. Gateway overhead is request time minus the
//! union of upstream-call intervals.
//!
//! **Nothing slow on the request path.** Every finished request becomes a [`RequestRecord`]
//! that sinks receive synchronously; the SLO/alert engine and the online evaluator only
//! `try_send` onto bounded queues and count what they drop. Alert rules are evaluated, and
//! notifications delivered (with retries), by background tasks. A dead Slack webhook can fill
//! its queue; it cannot slow a request.
//!
//! **Alerts** ([`alert`]) are identified by a stable `dedup_key` (a hash of rule id and
//! scope), notified once when they start firing and once when they resolve, to Slack,
//! PagerDuty Events v2 and Alertmanager-format webhooks. SLOs ([`slo`]) use multi-window
//! burn-rate rules over sliding windows. Online evaluation ([`online_eval`]) samples traffic,
//! scores it in the background and raises a drift alert when a rolling window's pass rate
//! drops significantly below its baseline (a one-sided two-proportion z-test).
//!
//! **Wiring** ([`config`]): the `[[slo]]`, `[alerts.*]` and `[online_eval]` TOML sections
//! deserialize into [`config::ObserveFileConfig`], whose [`start`](config::ObserveFileConfig::start)
//! spawns the engines and returns the sink and sampler to give the layer.

pub mod alert;
pub mod config;
pub mod content;
pub mod error;
pub mod labels;
pub mod layer;
pub mod online_eval;
#[cfg(feature = "otlp")]
pub mod otlp;
#[cfg(feature = "prometheus")]
pub mod prometheus;
pub mod record;
pub mod scrape;
pub mod semconv;
pub mod slo;
pub mod telemetry;
mod window;

pub use content::{ContentFilter, ContentKind, NoRedaction};
pub use error::ObserveError;
pub use labels::{LabelCaps, LabelLimiter};
pub use layer::{ObserveConfig, ObserveConfigBuilder, ObserveLayer, ObserveService};
pub use record::{EvalSample, RecordSink, RequestRecord, Sampler};
pub use telemetry::{CostUsd, RequestTelemetry, UpstreamTime, UpstreamTimingLayer};
