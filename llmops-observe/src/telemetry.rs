//! How other layers report what only they know: cost, time spent on upstreams, fallbacks.
//!
//! The observe layer sits outside the others, so it learns most things from the response
//! ([`ResponseMeta`](llmops_core::ResponseMeta): provider, attempts, cache hit) and the
//! usage. Three facts need a channel of their own:
//!
//! - **Cost.** The cost layer computes it after the answer — for a stream, only at its end,
//!   after the response metadata has left. It reports it either as a [`CostUsd`] or a
//!   [`ResponseCost`] in `ResponseMeta::extensions` (complete
//!   answers) or through the request's cost slot — [`CostReport`], which the
//!   [`RequestTelemetry`] handle shares (works for both; use it for streams).
//! - **Upstream time.** Gateway overhead is request time minus time spent waiting on
//!   upstreams. Whatever calls an upstream wraps each call in
//!   [`RequestTelemetry::upstream_call`] (or sits under an [`UpstreamTimingLayer`], which does
//!   it for every call of the service it wraps). Overlapping calls (hedging, best-of-n) are
//!   merged as a union of intervals, so parallel upstream time is not counted twice. A layer
//!   that measured upstream time itself may instead put an [`UpstreamTime`] in
//!   `ResponseMeta::extensions`; it wins over the handle.
//! - **Fallbacks and guardrail decisions**, through the same handle.
//!
//! The observe layer inserts the handle into `RequestContext::extensions` before calling the
//! inner service (layers clone the context, and clones share the handle). Without an observe
//! layer there is no handle, and [`RequestTelemetry::of`] returns `None`: reporting is always
//! optional.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use llmops_core::service::BoxFuture;
use llmops_core::{CostReport, Error, LlmRequest, LlmResponse, RequestContext, ResponseCost, Usd};
use tokio::time::Instant;
use tower::{Layer, Service};

/// The cost of a request in US dollars, as the cost layer computed it. Put it in
/// `ResponseMeta::extensions` of a complete answer, or report it with
/// [`RequestTelemetry::record_cost`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CostUsd(pub f64);

/// Time a layer spent waiting on upstreams for this request, measured by the layer itself.
/// Put it in `ResponseMeta::extensions`; it overrides what [`RequestTelemetry`] measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpstreamTime(pub Duration);

/// A guardrail's decision on a request, reported with
/// [`RequestTelemetry::record_guardrail`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GuardrailDecision {
    /// The guardrail (`pii`, `injection`, `residency`, ...).
    pub guardrail: &'static str,
    /// What it decided (`allow`, `redact`, `block`, ...).
    pub decision: &'static str,
}

#[derive(Debug, Default)]
struct State {
    in_flight: u32,
    busy_since: Option<Instant>,
    upstream: Duration,
    fallbacks: u32,
    guardrails: Vec<GuardrailDecision>,
}

/// A per-request handle through which inner layers report cost, upstream time, fallbacks and
/// guardrail decisions to the observe layer. Cheap to clone; clones share the record.
#[derive(Clone, Default)]
pub struct RequestTelemetry {
    state: Arc<Mutex<State>>,
    /// The request's cost slot, shared with the cost layers ([`CostReport`]).
    cost: CostReport,
}

impl fmt::Debug for RequestTelemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestTelemetry")
            .field("state", &*self.lock())
            .finish()
    }
}

impl RequestTelemetry {
    /// A fresh handle.
    pub fn new() -> Self {
        Self::default()
    }

    /// The handle of a request, when an observe layer installed one.
    pub fn of(ctx: &RequestContext) -> Option<&RequestTelemetry> {
        ctx.extensions.get::<RequestTelemetry>()
    }

    /// The handle of a request, installing a fresh one when there is none.
    pub fn install(ctx: &mut RequestContext) -> RequestTelemetry {
        if let Some(t) = ctx.extensions.get::<RequestTelemetry>() {
            return t.clone();
        }
        let t = RequestTelemetry {
            state: Arc::default(),
            cost: CostReport::install(ctx),
        };
        ctx.extensions.insert(t.clone());
        t
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the start of an upstream call; the call ends when the guard is dropped.
    pub fn upstream_started(&self) -> UpstreamGuard {
        let mut st = self.lock();
        if st.in_flight == 0 {
            st.busy_since = Some(Instant::now());
        }
        st.in_flight += 1;
        UpstreamGuard {
            telemetry: self.clone(),
        }
    }

    /// Runs `fut` as an upstream call: its time counts as upstream time.
    pub async fn upstream_call<F: Future>(&self, fut: F) -> F::Output {
        let _guard = self.upstream_started();
        fut.await
    }

    fn upstream_ended(&self) {
        let mut st = self.lock();
        st.in_flight = st.in_flight.saturating_sub(1);
        if st.in_flight == 0
            && let Some(since) = st.busy_since.take()
        {
            st.upstream += since.elapsed();
        }
    }

    /// Upstream time so far (the union of upstream-call intervals; a call still running
    /// counts up to now).
    pub fn upstream_time(&self) -> Duration {
        let st = self.lock();
        st.upstream + st.busy_since.map_or(Duration::ZERO, |s| s.elapsed())
    }

    /// Reports the request's cost (the last report wins). The same slot as the request's
    /// [`CostReport`], which the cost layers of `llmops-cost` write.
    pub fn record_cost(&self, usd: f64) {
        if usd.is_finite() && usd >= 0.0 {
            self.cost.set(ResponseCost::new(Usd::from_f64(usd), 0));
        }
    }

    /// The reported cost.
    pub fn cost(&self) -> Option<f64> {
        self.cost.get().map(|c| c.usd.as_f64())
    }

    /// The request's cost slot: what a cost layer reported, with the prompt-cache savings.
    pub fn cost_report(&self) -> &CostReport {
        &self.cost
    }

    /// Reports that a fallback target answered (or was tried) after the primary failed.
    pub fn record_fallback(&self) {
        self.lock().fallbacks += 1;
    }

    /// Fallbacks reported so far.
    pub fn fallbacks(&self) -> u32 {
        self.lock().fallbacks
    }

    /// Reports a guardrail decision.
    pub fn record_guardrail(&self, guardrail: &'static str, decision: &'static str) {
        self.lock().guardrails.push(GuardrailDecision {
            guardrail,
            decision,
        });
    }

    pub(crate) fn take_guardrails(&self) -> Vec<GuardrailDecision> {
        std::mem::take(&mut self.lock().guardrails)
    }
}

/// Ends an upstream-call interval when dropped (see [`RequestTelemetry::upstream_started`]).
#[derive(Debug)]
#[must_use = "the upstream call ends when the guard is dropped"]
pub struct UpstreamGuard {
    telemetry: RequestTelemetry,
}

impl Drop for UpstreamGuard {
    fn drop(&mut self) {
        self.telemetry.upstream_ended();
    }
}

/// A layer that counts every call of the service it wraps as upstream time. Put it directly
/// around the service that talks to the upstream (e.g. around a `ProviderService`, under
/// retries), so that backoff sleeps and other layers' work count as gateway overhead.
///
/// For a streamed answer the upstream call ends when the stream is handed back (headers or
/// first chunk received); chunk pacing after that is the upstream's and is not overhead.
#[derive(Clone, Copy, Debug, Default)]
pub struct UpstreamTimingLayer;

impl UpstreamTimingLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for UpstreamTimingLayer {
    type Service = UpstreamTimingService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        UpstreamTimingService { inner }
    }
}

/// The service of [`UpstreamTimingLayer`].
#[derive(Clone, Debug)]
pub struct UpstreamTimingService<S> {
    inner: S,
}

impl<S> Service<LlmRequest> for UpstreamTimingService<S>
where
    S: Service<LlmRequest, Response = LlmResponse, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = LlmResponse;
    type Error = Error;
    type Future = BoxFuture<Result<LlmResponse, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: LlmRequest) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = RequestTelemetry::of(&req.ctx).map(RequestTelemetry::upstream_started);
        Box::pin(async move {
            let out = inner.call(req).await;
            drop(guard);
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn overlapping_upstream_calls_count_once() {
        let t = RequestTelemetry::new();
        let a = t.upstream_started();
        tokio::time::advance(Duration::from_millis(10)).await;
        let b = t.upstream_started();
        tokio::time::advance(Duration::from_millis(10)).await;
        drop(a);
        tokio::time::advance(Duration::from_millis(10)).await;
        drop(b);
        tokio::time::advance(Duration::from_millis(50)).await;
        assert_eq!(t.upstream_time(), Duration::from_millis(30));
    }

    #[test]
    fn bad_costs_are_ignored() {
        let t = RequestTelemetry::new();
        t.record_cost(f64::NAN);
        t.record_cost(-1.0);
        assert_eq!(t.cost(), None);
        t.record_cost(0.25);
        assert_eq!(t.cost(), Some(0.25));
    }

    #[test]
    fn install_reuses_an_existing_handle() {
        let mut ctx = RequestContext::new();
        let a = RequestTelemetry::install(&mut ctx);
        a.record_fallback();
        let b = RequestTelemetry::install(&mut ctx);
        assert_eq!(b.fallbacks(), 1);
    }
}
