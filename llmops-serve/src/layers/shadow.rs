//! Shadow traffic: a share of requests is also sent to a candidate target, asynchronously.
//!
//! [`ShadowLayer`] answers every request from the inner pipeline, as if it were not there.
//! For a sampled share it also sends a copy (non-streamed) to the candidate in a background
//! task, waits for the primary answer to finish (a stream is folded back into a response as
//! it passes, without delaying it), and hands both to a [`ShadowSink`] for later evaluation.
//!
//! The shadow answer is never returned to the client, and the copy runs outside the
//! pipeline's budget and accounting layers (which sit outside the router) with its own
//! attempt log and the context tag `llmops.shadow = "true"`: it is never charged to the
//! tenant. At most `max_in_flight` shadow calls run at once; beyond that, samples are skipped.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use llmops_core::service::BoxFuture;
use llmops_core::stream::ObservedStream;
use llmops_core::{
    BoxLlmService, ChatRequest, ChatResponse, Error, LlmRequest, LlmResponse, RequestBody,
    ResponseBody,
};
use rand::Rng;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::AttemptLog;

/// A primary answer and its shadow, for evaluation.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ShadowRecord {
    /// The request id.
    pub request_id: Arc<str>,
    /// The tenant.
    pub tenant: Arc<str>,
    /// The request as the primary pipeline received it.
    pub request: ChatRequest,
    /// The candidate's name.
    pub candidate: Arc<str>,
    /// The primary answer, when it completed (`None` when it failed or the client left).
    pub primary: Option<ChatResponse>,
    /// The candidate's answer or error.
    pub shadow: Result<ChatResponse, Error>,
    /// How long the candidate took.
    pub shadow_latency: Duration,
}

/// Where shadow results go (an evaluation queue, a file, a database).
pub trait ShadowSink: Send + Sync + 'static {
    /// Records one result. Called from a background task; keep it quick or hand off.
    fn record(&self, record: ShadowRecord);
}

/// A sink logging a summary of each record as a `tracing` event.
#[derive(Clone, Copy, Debug, Default)]
pub struct TracingShadowSink;

impl ShadowSink for TracingShadowSink {
    fn record(&self, r: ShadowRecord) {
        let same = match (&r.primary, &r.shadow) {
            (Some(p), Ok(s)) => Some(p.first_text() == s.first_text()),
            _ => None,
        };
        tracing::info!(
            target: "llmops_serve::shadow",
            request_id = %r.request_id,
            candidate = %r.candidate,
            ok = r.shadow.is_ok(),
            same_text = ?same,
            latency_ms = r.shadow_latency.as_millis() as u64,
            "shadow answer recorded"
        );
    }
}

impl<F: Fn(ShadowRecord) + Send + Sync + 'static> ShadowSink for F {
    fn record(&self, record: ShadowRecord) {
        self(record);
    }
}

/// Copies a share of chat requests to a candidate.
#[derive(Clone)]
pub struct ShadowLayer {
    candidate: BoxLlmService,
    name: Arc<str>,
    share: f64,
    sink: Arc<dyn ShadowSink>,
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for ShadowLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowLayer")
            .field("candidate", &self.name)
            .field("share", &self.share)
            .finish()
    }
}

impl ShadowLayer {
    /// Copies `share` (0–1) of chat requests to `candidate` (named `name`), recording into
    /// `sink`; at most 64 shadow calls at once.
    pub fn new(
        name: impl Into<Arc<str>>,
        candidate: BoxLlmService,
        share: f64,
        sink: Arc<dyn ShadowSink>,
    ) -> Self {
        Self {
            candidate,
            name: name.into(),
            share: if share.is_finite() {
                share.clamp(0.0, 1.0)
            } else {
                0.0
            },
            sink,
            slots: Arc::new(Semaphore::new(64)),
        }
    }

    /// Sets the cap on concurrent shadow calls (builder style).
    #[must_use]
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.slots = Arc::new(Semaphore::new(n.max(1)));
        self
    }
}

impl<S> Layer<S> for ShadowLayer {
    type Service = ShadowService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ShadowService {
            inner,
            cfg: self.clone(),
        }
    }
}

/// The service of [`ShadowLayer`].
#[derive(Clone, Debug)]
pub struct ShadowService<S> {
    inner: S,
    cfg: ShadowLayer,
}

impl<S> Service<LlmRequest> for ShadowService<S>
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
        let inner = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, inner);
        let sampled = matches!(req.body, RequestBody::Chat(_))
            && self.cfg.share > 0.0
            && rand::rng().random_bool(self.cfg.share);
        let permit = if sampled {
            self.cfg.slots.clone().try_acquire_owned().ok()
        } else {
            None
        };
        let Some(permit) = permit else {
            return Box::pin(inner.oneshot(req));
        };
        let cfg = self.cfg.clone();
        Box::pin(async move {
            let RequestBody::Chat(chat) = &req.body else {
                return inner.oneshot(req).await;
            };
            let mut shadow_req = chat.clone();
            shadow_req.stream = None;
            shadow_req.stream_options = None;
            let original = chat.clone();
            let mut ctx = req.ctx.clone();
            ctx.extensions.remove::<AttemptLog>();
            ctx.tags
                .insert("llmops.shadow".to_owned(), "true".to_owned());
            let (tx, rx) = tokio::sync::oneshot::channel::<Option<ChatResponse>>();
            let result = inner.oneshot(req).await;
            let mut result = match result {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(None);
                    return Err(e);
                }
            };
            result.body = match result.body {
                ResponseBody::Chat(r) => {
                    let _ = tx.send(Some(r.clone()));
                    ResponseBody::Chat(r)
                }
                ResponseBody::ChatStream(s) => ResponseBody::ChatStream(
                    ObservedStream::collecting(s, move |sum| {
                        let done = sum.is_complete();
                        let _ = tx.send(sum.response.filter(|_| done));
                    })
                    .boxed(),
                ),
                other => other,
            };
            tokio::spawn(async move {
                let _permit = permit;
                let start = Instant::now();
                let shadow = cfg
                    .candidate
                    .oneshot(LlmRequest::chat(ctx.clone(), shadow_req))
                    .await
                    .and_then(LlmResponse::into_chat);
                let shadow_latency = start.elapsed();
                let primary = rx.await.ok().flatten();
                cfg.sink.record(ShadowRecord {
                    request_id: ctx.request_id.clone(),
                    tenant: ctx.tenant.clone(),
                    request: original,
                    candidate: cfg.name.clone(),
                    primary,
                    shadow,
                    shadow_latency,
                });
            });
            Ok(result)
        })
    }
}
