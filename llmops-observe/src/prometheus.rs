//! Prometheus exposition: install the recorder with the spec's buckets, serve `GET /metrics`.
//!
//! ```no_run
//! # #[tokio::main] async fn main() {
//! let (handle, router) = llmops_observe::prometheus::install().expect("no other recorder");
//! // Merge `router` into the gateway's axum router; `handle.render()` gives the text too.
//! # let _ = (handle, router);
//! # }
//! ```
//!
//! Names follow Prometheus conventions: dots become underscores, units are appended
//! (`gen_ai_client_operation_duration_seconds`) and counters end in `_total`. Histograms are
//! real histograms with the OpenTelemetry GenAI advisory buckets (durations: 0.01 s doubling
//! to 81.92 s; tokens: powers of 4 up to 67,108,864); the gateway-overhead histogram uses
//! buckets from 10 µs to 100 ms.

use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::ObserveError;
use crate::semconv::{DURATION_BUCKETS, OVERHEAD_BUCKETS, TOKEN_BUCKETS, metric};

/// How often histogram samples are folded and idle series cleaned up.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The recorder builder with our buckets and naming (for callers that compose recorders).
pub fn builder() -> Result<PrometheusBuilder, ObserveError> {
    let b = PrometheusBuilder::new().with_recommended_naming(true);
    let mut b = b;
    for name in [
        metric::OPERATION_DURATION,
        metric::TIME_TO_FIRST_CHUNK,
        metric::TIME_PER_OUTPUT_CHUNK,
    ] {
        b = b.set_buckets_for_metric(Matcher::Full(name.to_owned()), &DURATION_BUCKETS)?;
    }
    b = b.set_buckets_for_metric(
        Matcher::Full(metric::TOKEN_USAGE.to_owned()),
        &TOKEN_BUCKETS,
    )?;
    b = b.set_buckets_for_metric(
        Matcher::Full(metric::GATEWAY_OVERHEAD.to_owned()),
        &OVERHEAD_BUCKETS,
    )?;
    Ok(b)
}

/// Describes every metric of the crate (units and help texts) to the installed recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        metric::OPERATION_DURATION,
        Unit::Seconds,
        "GenAI operation duration."
    );
    describe_histogram!(
        metric::TOKEN_USAGE,
        Unit::Count,
        "Input and output tokens per operation."
    );
    describe_histogram!(
        metric::TIME_TO_FIRST_CHUNK,
        Unit::Seconds,
        "Time to the first content chunk of a streamed answer."
    );
    describe_histogram!(
        metric::TIME_PER_OUTPUT_CHUNK,
        Unit::Seconds,
        "Time per output chunk after the first, streamed answers."
    );
    describe_counter!(
        metric::REQUESTS,
        Unit::Count,
        "Requests finished, any outcome."
    );
    describe_counter!(
        metric::ERRORS,
        Unit::Count,
        "Failed requests by error.type."
    );
    describe_counter!(
        metric::COST,
        Unit::Count,
        "Spend in nano-dollars (1e-9 USD)."
    );
    describe_counter!(
        metric::PROMPT_CACHE_TOKENS,
        Unit::Count,
        "Input tokens by how the provider's prompt cache treated them (cached, written, uncached)."
    );
    describe_counter!(
        metric::PROMPT_CACHE_SAVINGS,
        Unit::Count,
        "What provider prompt-cache reads saved against the uncached input rate, in nano-dollars."
    );
    describe_counter!(
        metric::PROMPT_CACHE_WRITE_PREMIUM,
        Unit::Count,
        "What provider prompt-cache writes cost above the uncached input rate, in nano-dollars."
    );
    describe_counter!(
        metric::CACHE_HITS,
        Unit::Count,
        "Answers served from a response cache."
    );
    describe_counter!(
        metric::CACHE_MISSES,
        Unit::Count,
        "Answers not served from a response cache."
    );
    describe_counter!(
        metric::RETRIES,
        Unit::Count,
        "Upstream attempts beyond the first."
    );
    describe_counter!(
        metric::FALLBACKS,
        Unit::Count,
        "Requests that failed over to another target."
    );
    describe_counter!(
        metric::BUDGET_REJECTIONS,
        Unit::Count,
        "Requests refused by a budget, rate limit or cost ceiling."
    );
    describe_counter!(
        metric::GUARDRAIL_DECISIONS,
        Unit::Count,
        "Guardrail decisions."
    );
    describe_histogram!(
        metric::GATEWAY_OVERHEAD,
        Unit::Seconds,
        "Request time not spent waiting on upstreams."
    );
    describe_gauge!(
        metric::BUDGET_UTILIZATION,
        Unit::Count,
        "Spend over limit of a budget scope."
    );
    describe_counter!(
        metric::DROPPED_EVENTS,
        Unit::Count,
        "Telemetry events dropped on a full queue."
    );
    describe_counter!(
        metric::NOTIFICATIONS,
        Unit::Count,
        "Alert notifications by outcome."
    );
    describe_gauge!(
        metric::ALERTS_FIRING,
        Unit::Count,
        "Alerts currently firing."
    );
    describe_counter!(
        metric::ONLINE_EVALS,
        Unit::Count,
        "Online evaluations by result."
    );
}

/// Installs the Prometheus recorder as the global `metrics` recorder, describes our metrics,
/// starts its upkeep task (when called inside a tokio runtime) and returns the handle and an
/// axum router serving `GET /metrics`.
///
/// Fails when another global recorder is installed already.
pub fn install() -> Result<(PrometheusHandle, Router), ObserveError> {
    let handle = builder()?.install_recorder()?;
    describe();
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let h = handle.clone();
        rt.spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP_EVERY);
            loop {
                tick.tick().await;
                h.run_upkeep();
            }
        });
    }
    let router = router(handle.clone());
    Ok((handle, router))
}

/// An axum router serving `GET /metrics` from `handle` (Prometheus text format 0.0.4).
pub fn router<S: Clone + Send + Sync + 'static>(handle: PrometheusHandle) -> Router<S> {
    Router::new().route(
        "/metrics",
        get(move || {
            let h = handle.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    h.render(),
                )
                    .into_response()
            }
        }),
    )
}
