//! The observe layer: one span per operation, the GenAI metrics, and a [`RequestRecord`] for
//! the engines.
//!
//! ```
//! use std::sync::Arc;
//! use llmops_core::mock::{MockProvider, MockReply};
//! use llmops_core::{BoxLlmService, ChatRequest, LlmRequest, Message, ProviderService, RequestContext};
//! use llmops_observe::{ObserveConfig, ObserveLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let mock = MockProvider::new("mock").default_reply(MockReply::text("hi"));
//! let pipeline = BoxLlmService::new(
//!     ServiceBuilder::new()
//!         .layer(ObserveLayer::new(ObserveConfig::builder().build()))
//!         .service(ProviderService::new(Arc::new(mock))),
//! );
//! let req = LlmRequest::chat(RequestContext::new(), ChatRequest::new("m", vec![Message::user("hello")]));
//! let resp = pipeline.oneshot(req).await.unwrap();
//! assert_eq!(resp.into_chat().unwrap().first_text(), "hi");
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use llmops_core::service::BoxFuture;
use llmops_core::stream::{ObservedStream, StreamOutcome, StreamSummary};
use llmops_core::{
    ChatRequest, ChatResponse, Error, ErrorKind, FinishReason, LlmRequest, LlmResponse, PromptRef,
    RequestBody, ResponseBody, ResponseCost, Role, Usage, Usd,
};
use metrics::{Counter, Histogram, Label};
use tokio::time::Instant;
use tower::{Layer, Service};
use tracing::{Instrument, Span, field};

use crate::content::{ContentFilter, ContentKind, NoRedaction};
use crate::labels::{LabelCaps, Limiters};
use crate::record::{EvalSample, RecordSink, RequestRecord, Sampler};
use crate::semconv::{self, label, metric};
use crate::telemetry::{CostUsd, RequestTelemetry, UpstreamTime};

/// Configuration of an [`ObserveLayer`]. Build it with [`ObserveConfig::builder`].
#[derive(Clone)]
pub struct ObserveConfig {
    caps: LabelCaps,
    capture_content: bool,
    content_filter: Arc<dyn ContentFilter>,
    sinks: Vec<Arc<dyn RecordSink>>,
    sampler: Option<Arc<dyn Sampler>>,
}

impl fmt::Debug for ObserveConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObserveConfig")
            .field("caps", &self.caps)
            .field("capture_content", &self.capture_content)
            .field("sinks", &self.sinks.len())
            .field("sampler", &self.sampler.is_some())
            .finish()
    }
}

impl Default for ObserveConfig {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl ObserveConfig {
    /// A builder with the defaults: default label caps, no content capture, no sinks, no
    /// sampling.
    pub fn builder() -> ObserveConfigBuilder {
        ObserveConfigBuilder {
            config: ObserveConfig {
                caps: LabelCaps::default(),
                capture_content: false,
                content_filter: Arc::new(NoRedaction),
                sinks: Vec::new(),
                sampler: None,
            },
        }
    }
}

/// Builds an [`ObserveConfig`].
#[derive(Debug)]
#[must_use]
pub struct ObserveConfigBuilder {
    config: ObserveConfig,
}

impl ObserveConfigBuilder {
    /// Caps on distinct label values (values past a cap become `other`).
    pub fn label_caps(mut self, caps: LabelCaps) -> Self {
        self.config.caps = caps;
        self
    }

    /// Records message content on spans (`gen_ai.input.messages`, `gen_ai.output.messages`)
    /// after passing it through `filter`. Off by default.
    pub fn capture_content(mut self, filter: Arc<dyn ContentFilter>) -> Self {
        self.config.capture_content = true;
        self.config.content_filter = filter;
        self
    }

    /// Adds a sink that hears about every finished request.
    pub fn sink(mut self, sink: Arc<dyn RecordSink>) -> Self {
        self.config.sinks.push(sink);
        self
    }

    /// Samples chat exchanges for online evaluation.
    pub fn sampler(mut self, sampler: Arc<dyn Sampler>) -> Self {
        self.config.sampler = Some(sampler);
        self
    }

    /// The configuration.
    pub fn build(self) -> ObserveConfig {
        self.config
    }
}

struct Shared {
    config: ObserveConfig,
    limiters: Limiters,
    handles: RwLock<HashMap<LabelKey, Arc<Handles>>>,
    none: Arc<str>,
}

/// Most label sets whose metric handles are kept; later sets resolve handles per request.
const MAX_CACHED_LABEL_SETS: usize = 4096;

/// Capped label values known at the start of a request.
struct StartLabels {
    model: Arc<str>,
    tenant: Arc<str>,
    prompt_id: Arc<str>,
    prompt_version: Arc<str>,
}

/// A full label set of the per-request metrics.
#[derive(Clone, PartialEq, Eq, Hash)]
struct LabelKey {
    operation: &'static str,
    model: Arc<str>,
    tenant: Arc<str>,
    prompt_id: Arc<str>,
    prompt_version: Arc<str>,
    provider: Arc<str>,
}

/// Metric handles of one label set, each resolved against the recorder on first use (so a
/// series appears only once it has a value) and reused after: a request records its metrics
/// with atomic operations instead of a registry lookup per metric.
struct Handles {
    labels: Vec<Label>,
    requests: OnceLock<Counter>,
    duration: OnceLock<Histogram>,
    cache_hits: OnceLock<Counter>,
    cache_misses: OnceLock<Counter>,
    tokens_in: OnceLock<Histogram>,
    tokens_out: OnceLock<Histogram>,
    ttfc: OnceLock<Histogram>,
    tpoc: OnceLock<Histogram>,
    cost: OnceLock<Counter>,
    prompt_cache_tokens: [OnceLock<Counter>; 3],
    prompt_cache_savings: OnceLock<Counter>,
    prompt_cache_premium: OnceLock<Counter>,
    retries: OnceLock<Counter>,
    fallbacks: OnceLock<Counter>,
    overhead: OnceLock<Histogram>,
}

impl Handles {
    fn new(key: &LabelKey) -> Self {
        let labels = vec![
            Label::new(semconv::GEN_AI_OPERATION_NAME, key.operation),
            Label::new(semconv::GEN_AI_REQUEST_MODEL, key.model.clone()),
            Label::new(semconv::LLMOPS_TENANT, key.tenant.clone()),
            Label::new(semconv::LLMOPS_PROMPT_ID, key.prompt_id.clone()),
            Label::new(semconv::LLMOPS_PROMPT_VERSION, key.prompt_version.clone()),
            Label::new(semconv::GEN_AI_PROVIDER_NAME, key.provider.clone()),
        ];
        Self {
            labels,
            requests: OnceLock::new(),
            duration: OnceLock::new(),
            cache_hits: OnceLock::new(),
            cache_misses: OnceLock::new(),
            tokens_in: OnceLock::new(),
            tokens_out: OnceLock::new(),
            ttfc: OnceLock::new(),
            tpoc: OnceLock::new(),
            cost: OnceLock::new(),
            prompt_cache_tokens: Default::default(),
            prompt_cache_savings: OnceLock::new(),
            prompt_cache_premium: OnceLock::new(),
            retries: OnceLock::new(),
            fallbacks: OnceLock::new(),
            overhead: OnceLock::new(),
        }
    }

    fn counter<'a>(&'a self, cell: &'a OnceLock<Counter>, name: &'static str) -> &'a Counter {
        cell.get_or_init(|| metrics::counter!(name, self.labels.clone()))
    }

    /// A counter of this label set with one more label.
    fn counter_with<'a>(
        &'a self,
        cell: &'a OnceLock<Counter>,
        name: &'static str,
        extra: (&'static str, &'static str),
    ) -> &'a Counter {
        cell.get_or_init(|| {
            let mut labels = self.labels.clone();
            labels.push(Label::new(extra.0, extra.1));
            metrics::counter!(name, labels)
        })
    }

    fn histogram<'a>(
        &'a self,
        cell: &'a OnceLock<Histogram>,
        name: &'static str,
        token_type: Option<&'static str>,
    ) -> &'a Histogram {
        cell.get_or_init(|| {
            let mut labels = self.labels.clone();
            if let Some(t) = token_type {
                labels.push(Label::new(semconv::GEN_AI_TOKEN_TYPE, t));
            }
            metrics::histogram!(name, labels)
        })
    }
}

/// A tower layer that observes every request: a `tracing` span named after the operation
/// (`chat`, `embeddings`) with `otel.name = "{operation} {model}"` and the OpenTelemetry GenAI
/// attributes, the metrics listed in [`semconv::metric`], and a [`RequestRecord`] for each
/// configured [`RecordSink`]. Streams are observed with [`ObservedStream`], never buffered
/// (they are collected only when content capture is on or the request was sampled for
/// online evaluation).
///
/// Metric handles are resolved once per label set, against the `metrics` recorder installed
/// at that moment, and reused: install the recorder (e.g. [`crate::prometheus::install`])
/// before the first request.
///
/// Put it outermost (right after authentication) so its duration and overhead cover the
/// whole pipeline; it installs a [`RequestTelemetry`] handle in the request context for inner
/// layers to report cost, upstream time and fallbacks.
#[derive(Clone)]
pub struct ObserveLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for ObserveLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObserveLayer")
            .field("config", &self.shared.config)
            .finish()
    }
}

impl ObserveLayer {
    /// A layer with `config`.
    pub fn new(config: ObserveConfig) -> Self {
        let limiters = Limiters::new(config.caps);
        Self {
            shared: Arc::new(Shared {
                config,
                limiters,
                handles: RwLock::new(HashMap::new()),
                none: Arc::from("none"),
            }),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = ObserveService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ObserveService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service of [`ObserveLayer`].
#[derive(Clone)]
pub struct ObserveService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> fmt::Debug for ObserveService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ObserveService")
    }
}

macro_rules! gen_ai_span {
    ($name:literal, $otel_name:expr, $op:expr, $model:expr, $tenant:expr, $rid:expr, $stream:expr) => {
        tracing::info_span!(
            target: "llmops_observe",
            $name,
            otel.name = %$otel_name,
            otel.kind = "client",
            otel.status_code = field::Empty,
            gen_ai.operation.name = $op,
            gen_ai.provider.name = field::Empty,
            gen_ai.request.model = %$model,
            gen_ai.request.stream = $stream,
            gen_ai.request.max_tokens = field::Empty,
            gen_ai.request.temperature = field::Empty,
            gen_ai.response.model = field::Empty,
            gen_ai.response.id = field::Empty,
            gen_ai.response.finish_reasons = field::Empty,
            gen_ai.response.time_to_first_chunk = field::Empty,
            gen_ai.usage.input_tokens = field::Empty,
            gen_ai.usage.output_tokens = field::Empty,
            gen_ai.usage.cache_read.input_tokens = field::Empty,
            gen_ai.usage.cache_creation.input_tokens = field::Empty,
            gen_ai.usage.reasoning.output_tokens = field::Empty,
            gen_ai.input.messages = field::Empty,
            gen_ai.output.messages = field::Empty,
            error.type = field::Empty,
            llmops.tenant = %$tenant,
            llmops.request_id = %$rid,
            llmops.prompt.id = field::Empty,
            llmops.prompt.version = field::Empty,
            llmops.cost.usd = field::Empty,
            llmops.cache.hit = field::Empty,
            llmops.attempt = field::Empty,
            llmops.gateway.overhead = field::Empty,
            llmops.stream.dropped = field::Empty,
        )
    };
}

/// What is known about a request when it starts.
struct Start {
    at: Instant,
    operation: &'static str,
    model: Arc<str>,
    tenant: Arc<str>,
    prompt: Option<PromptRef>,
    stream: bool,
    labels: StartLabels,
    telemetry: RequestTelemetry,
    span: Span,
    sample: Option<ChatRequest>,
}

/// How a request ended.
struct End {
    provider: Option<Arc<str>>,
    error: Option<Error>,
    usage: Option<Usage>,
    finish_reasons: Vec<FinishReason>,
    response_model: Option<String>,
    response_id: Option<String>,
    time_to_first_chunk: Option<Duration>,
    chunks: u64,
    first_chunk_to_end: Option<Duration>,
    cost: Option<f64>,
    response_cost: Option<ResponseCost>,
    cache_hit: bool,
    attempts: u32,
    overhead: Option<Duration>,
    dropped: bool,
    response: Option<ChatResponse>,
}

impl End {
    fn failed(error: Error, overhead: Option<Duration>) -> Self {
        Self {
            provider: error.provider().map(Arc::from),
            error: Some(error),
            usage: None,
            finish_reasons: Vec::new(),
            response_model: None,
            response_id: None,
            time_to_first_chunk: None,
            chunks: 0,
            first_chunk_to_end: None,
            cost: None,
            response_cost: None,
            cache_hit: false,
            attempts: 0,
            overhead,
            dropped: false,
            response: None,
        }
    }
}

impl<S> Service<LlmRequest> for ObserveService<S>
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

    fn call(&mut self, mut req: LlmRequest) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        let start = shared.start(&mut req);
        let fut = {
            let _entered = start.span.enter();
            inner.call(req)
        };
        let span = start.span.clone();
        Box::pin(
            async move {
                match fut.await {
                    Err(e) => {
                        let overhead = overhead(&start, None, Instant::now());
                        shared.finish(start, End::failed(e.clone(), overhead));
                        Err(e)
                    }
                    Ok(resp) => Ok(shared.observe_response(start, resp)),
                }
            }
            .instrument(span),
        )
    }
}

fn overhead(start: &Start, reported: Option<UpstreamTime>, now: Instant) -> Option<Duration> {
    let upstream = reported.map_or_else(|| start.telemetry.upstream_time(), |u| u.0);
    Some(
        now.saturating_duration_since(start.at)
            .saturating_sub(upstream),
    )
}

impl Shared {
    fn handles(&self, key: LabelKey) -> Arc<Handles> {
        if let Some(h) = self
            .handles
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return h.clone();
        }
        let mut map = self.handles.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = map.get(&key) {
            return h.clone();
        }
        let h = Arc::new(Handles::new(&key));
        if map.len() < MAX_CACHED_LABEL_SETS {
            map.insert(key, h.clone());
        }
        h
    }

    fn start(&self, req: &mut LlmRequest) -> Start {
        let at = Instant::now();
        let telemetry = RequestTelemetry::install(&mut req.ctx);
        let operation = req.operation();
        let model: Arc<str> = Arc::from(req.model());
        let stream = req.is_stream();
        let ctx = &req.ctx;
        let l = &self.limiters;
        let (prompt_id, prompt_version) = match &ctx.prompt {
            Some(p) => (l.prompt_id.admit(&p.id), l.prompt_version.admit(&p.version)),
            None => (self.none.clone(), self.none.clone()),
        };
        let labels = StartLabels {
            model: l.model.admit(&model),
            tenant: l.tenant.admit(&ctx.tenant),
            prompt_id,
            prompt_version,
        };

        let otel_name = format_args!("{operation} {model}");
        let span = match operation {
            "embeddings" => gen_ai_span!(
                "embeddings",
                otel_name,
                operation,
                model,
                ctx.tenant,
                ctx.request_id,
                stream
            ),
            _ => gen_ai_span!(
                "chat",
                otel_name,
                operation,
                model,
                ctx.tenant,
                ctx.request_id,
                stream
            ),
        };
        let mut sample = None;
        if let RequestBody::Chat(chat) = &req.body {
            if !span.is_disabled() {
                if let Some(max) = chat.max_output_tokens() {
                    span.record(semconv::GEN_AI_REQUEST_MAX_TOKENS, max);
                }
                if let Some(t) = chat.temperature {
                    span.record(semconv::GEN_AI_REQUEST_TEMPERATURE, t);
                }
                if let Some(p) = &ctx.prompt {
                    span.record(semconv::LLMOPS_PROMPT_ID, &*p.id);
                    span.record(semconv::LLMOPS_PROMPT_VERSION, &*p.version);
                }
                if self.config.capture_content
                    && let Some(json) = input_messages(chat, &*self.config.content_filter)
                {
                    span.record(semconv::GEN_AI_INPUT_MESSAGES, json.as_str());
                }
            }
            if let Some(s) = &self.config.sampler
                && s.should_sample(&model)
            {
                sample = Some(chat.clone());
            }
        }
        Start {
            at,
            operation,
            model,
            tenant: ctx.tenant.clone(),
            prompt: ctx.prompt.clone(),
            stream,
            labels,
            telemetry,
            span,
            sample,
        }
    }

    fn observe_response(self: Arc<Self>, start: Start, mut resp: LlmResponse) -> LlmResponse {
        let now = Instant::now();
        let meta = &resp.meta;
        let overhead = overhead(&start, meta.extensions.get::<UpstreamTime>().copied(), now);
        let response_cost = meta.extensions.get::<ResponseCost>().copied();
        let cost = meta.extensions.get::<CostUsd>().map(|c| c.0);
        let provider = meta.provider.clone();
        let cache_hit = meta.cache_hit;
        let attempts = meta.attempts;
        let base = End {
            provider,
            error: None,
            usage: None,
            finish_reasons: Vec::new(),
            response_model: None,
            response_id: None,
            time_to_first_chunk: None,
            chunks: 0,
            first_chunk_to_end: None,
            cost,
            response_cost,
            cache_hit,
            attempts,
            overhead,
            dropped: false,
            response: None,
        };
        resp.body = match resp.body {
            ResponseBody::Chat(r) => {
                let elapsed = now.saturating_duration_since(start.at);
                let response =
                    (start.sample.is_some() || self.config.capture_content).then(|| r.clone());
                let end = End {
                    usage: r.usage.clone(),
                    finish_reasons: r.finish_reasons(),
                    response_model: Some(r.model.clone()),
                    response_id: Some(r.id.clone()),
                    time_to_first_chunk: Some(elapsed),
                    response,
                    ..base
                };
                self.finish(start, end);
                ResponseBody::Chat(r)
            }
            ResponseBody::Embeddings(r) => {
                let end = End {
                    usage: r.usage.clone(),
                    response_model: Some(r.model.clone()),
                    ..base
                };
                self.finish(start, end);
                ResponseBody::Embeddings(r)
            }
            ResponseBody::ChatStream(s) => {
                let collect = start.sample.is_some() || self.config.capture_content;
                let shared = self.clone();
                let on_end = move |sum: StreamSummary| {
                    let t0 = start.at;
                    let mut end = End {
                        usage: sum.usage,
                        finish_reasons: sum.finish_reasons,
                        time_to_first_chunk: sum.first_content_at.map(|t| t.duration_since(t0)),
                        chunks: sum.chunks,
                        first_chunk_to_end: sum
                            .first_content_at
                            .map(|t| sum.ended_at.duration_since(t)),
                        response_model: sum.response.as_ref().map(|r| r.model.clone()),
                        response_id: sum.response.as_ref().map(|r| r.id.clone()),
                        response: sum.response,
                        ..base
                    };
                    match sum.outcome {
                        StreamOutcome::Failed(e) => end.error = Some(e),
                        StreamOutcome::Dropped => end.dropped = true,
                        _ => {}
                    }
                    shared.finish(start, end);
                };
                ResponseBody::ChatStream(if collect {
                    ObservedStream::collecting(s, on_end).boxed()
                } else {
                    ObservedStream::new(s, on_end).boxed()
                })
            }
            other => {
                self.finish(start, base);
                other
            }
        };
        resp
    }

    fn finish(&self, start: Start, end: End) {
        let now = Instant::now();
        let duration = now.saturating_duration_since(start.at);
        // What a cost layer reported: in the response metadata, or (streams) through the
        // request's cost report.
        let reported = start.telemetry.cost_report().get();
        let usd = |c: ResponseCost| c.usd.as_f64();
        let cost = end
            .cost
            .or_else(|| end.response_cost.map(usd))
            .or_else(|| reported.map(usd));
        let response_cost = end.response_cost.or(reported);
        let fallbacks = start.telemetry.fallbacks();
        let provider: Arc<str> = end.provider.clone().unwrap_or_else(|| Arc::from("unknown"));
        let error_kind = end.error.as_ref().map(Error::kind);

        // Span.
        let span = &start.span;
        if !span.is_disabled() {
            span.record(semconv::GEN_AI_PROVIDER_NAME, &*provider);
            if let Some(m) = &end.response_model {
                span.record(semconv::GEN_AI_RESPONSE_MODEL, m.as_str());
            }
            if let Some(id) = &end.response_id {
                span.record(semconv::GEN_AI_RESPONSE_ID, id.as_str());
            }
            if !end.finish_reasons.is_empty() {
                let reasons: Vec<&str> = end
                    .finish_reasons
                    .iter()
                    .map(FinishReason::as_str)
                    .collect();
                let json = serde_json::to_string(&reasons).unwrap_or_default();
                span.record(semconv::GEN_AI_RESPONSE_FINISH_REASONS, json.as_str());
            }
            if let Some(u) = &end.usage {
                span.record(semconv::GEN_AI_USAGE_INPUT_TOKENS, u.input_tokens);
                span.record(semconv::GEN_AI_USAGE_OUTPUT_TOKENS, u.output_tokens);
                span.record(
                    semconv::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
                    u.cache_read_tokens,
                );
                span.record(
                    semconv::GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
                    u.cache_write_tokens,
                );
                span.record(
                    semconv::GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
                    u.reasoning_tokens,
                );
            }
            if start.stream
                && let Some(t) = end.time_to_first_chunk
            {
                span.record(
                    semconv::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
                    t.as_secs_f64(),
                );
            }
            if let Some(e) = &end.error {
                span.record(semconv::ERROR_TYPE, e.kind().as_str());
                span.record(semconv::OTEL_STATUS_CODE, "error");
            }
            if let Some(c) = cost {
                span.record(semconv::LLMOPS_COST_USD, c);
            }
            if end.error.is_none() {
                span.record(semconv::LLMOPS_CACHE_HIT, end.cache_hit);
                span.record(semconv::LLMOPS_ATTEMPT, u64::from(end.attempts));
            }
            if let Some(o) = end.overhead {
                span.record(semconv::LLMOPS_GATEWAY_OVERHEAD, o.as_secs_f64());
            }
            if end.dropped {
                span.record(semconv::LLMOPS_STREAM_DROPPED, true);
            }
            if self.config.capture_content
                && let Some(r) = &end.response
                && let Some(json) = output_messages(r, &*self.config.content_filter)
            {
                span.record(semconv::GEN_AI_OUTPUT_MESSAGES, json.as_str());
            }
        }

        // Metrics.
        let key = LabelKey {
            operation: start.operation,
            model: start.labels.model.clone(),
            tenant: start.labels.tenant.clone(),
            prompt_id: start.labels.prompt_id.clone(),
            prompt_version: start.labels.prompt_version.clone(),
            provider: self.limiters.provider.admit(&provider),
        };
        let h = self.handles(key);
        h.counter(&h.requests, metric::REQUESTS).increment(1);
        if let Some(k) = error_kind {
            let mut el = h.labels.clone();
            el.push(Label::new(semconv::ERROR_TYPE, k.as_str()));
            metrics::histogram!(metric::OPERATION_DURATION, el.clone())
                .record(duration.as_secs_f64());
            metrics::counter!(metric::ERRORS, el).increment(1);
            match k {
                ErrorKind::BudgetExceeded
                | ErrorKind::RateLimitExceeded
                | ErrorKind::CostCeilingExceeded => {
                    let mut bl = h.labels.clone();
                    bl.push(Label::new(label::REASON, k.as_str()));
                    metrics::counter!(metric::BUDGET_REJECTIONS, bl).increment(1);
                }
                ErrorKind::PromptInjection
                | ErrorKind::ResidencyViolation
                | ErrorKind::PolicyViolation => {
                    metrics::counter!(
                        metric::GUARDRAIL_DECISIONS,
                        label::GUARDRAIL => k.as_str(),
                        label::DECISION => "block"
                    )
                    .increment(1);
                }
                _ => {}
            }
        } else {
            h.histogram(&h.duration, metric::OPERATION_DURATION, None)
                .record(duration.as_secs_f64());
            if end.cache_hit {
                h.counter(&h.cache_hits, metric::CACHE_HITS).increment(1);
            } else {
                h.counter(&h.cache_misses, metric::CACHE_MISSES)
                    .increment(1);
            }
        }
        for g in start.telemetry.take_guardrails() {
            metrics::counter!(
                metric::GUARDRAIL_DECISIONS,
                label::GUARDRAIL => g.guardrail,
                label::DECISION => g.decision
            )
            .increment(1);
        }
        if let Some(u) = &end.usage {
            h.histogram(&h.tokens_in, metric::TOKEN_USAGE, Some("input"))
                .record(u.input_tokens as f64);
            h.histogram(&h.tokens_out, metric::TOKEN_USAGE, Some("output"))
                .record(u.output_tokens as f64);
        }
        if start.stream {
            if let Some(t) = end.time_to_first_chunk {
                h.histogram(&h.ttfc, metric::TIME_TO_FIRST_CHUNK, None)
                    .record(t.as_secs_f64());
            }
            if let (Some(rest), true) = (end.first_chunk_to_end, end.chunks >= 2) {
                // Each chunk after the first is approximated by the mean gap.
                let n = end.chunks - 1;
                let per = rest.as_secs_f64() / n as f64;
                h.histogram(&h.tpoc, metric::TIME_PER_OUTPUT_CHUNK, None)
                    .record_many(per, usize::try_from(n).unwrap_or(usize::MAX));
            }
        }
        if let Some(c) = cost {
            let nanos = u64::try_from(Usd::from_f64(c).nanos()).unwrap_or(0);
            h.counter(&h.cost, metric::COST).increment(nanos);
        }
        if let Some(u) = &end.usage
            && !end.cache_hit
        {
            let cached = u.cache_read_tokens.min(u.input_tokens);
            let written = u.cache_write_tokens.min(u.input_tokens - cached);
            let parts = [
                ("cached", cached),
                ("written", written),
                ("uncached", u.input_tokens - cached - written),
            ];
            for ((state, n), cell) in parts.into_iter().zip(&h.prompt_cache_tokens) {
                if n > 0 {
                    h.counter_with(
                        cell,
                        metric::PROMPT_CACHE_TOKENS,
                        (label::PROMPT_CACHE_STATE, state),
                    )
                    .increment(n);
                }
            }
        }
        if let Some(c) = response_cost {
            if c.cache_read_savings > Usd::ZERO {
                let n = u64::try_from(c.cache_read_savings.nanos()).unwrap_or(0);
                h.counter(&h.prompt_cache_savings, metric::PROMPT_CACHE_SAVINGS)
                    .increment(n);
            }
            if c.cache_write_premium > Usd::ZERO {
                let n = u64::try_from(c.cache_write_premium.nanos()).unwrap_or(0);
                h.counter(&h.prompt_cache_premium, metric::PROMPT_CACHE_WRITE_PREMIUM)
                    .increment(n);
            }
        }
        if end.attempts > 1 {
            h.counter(&h.retries, metric::RETRIES)
                .increment(u64::from(end.attempts - 1));
        }
        if fallbacks > 0 {
            h.counter(&h.fallbacks, metric::FALLBACKS)
                .increment(u64::from(fallbacks));
        }
        if let Some(o) = end.overhead {
            h.histogram(&h.overhead, metric::GATEWAY_OVERHEAD, None)
                .record(o.as_secs_f64());
        }

        // Engines.
        if !self.config.sinks.is_empty() {
            let record = RequestRecord {
                at: now,
                operation: start.operation,
                model: start.model.clone(),
                provider: end.provider.clone(),
                tenant: start.tenant.clone(),
                prompt: start.prompt.clone(),
                stream: start.stream,
                duration,
                time_to_first_chunk: end.time_to_first_chunk,
                error: error_kind,
                input_tokens: end.usage.as_ref().map(|u| u.input_tokens),
                output_tokens: end.usage.as_ref().map(|u| u.output_tokens),
                cost_usd: cost,
                cache_hit: end.cache_hit,
                attempts: end.attempts,
                overhead: end.overhead,
                dropped: end.dropped,
            };
            for sink in &self.config.sinks {
                sink.record(&record);
            }
        }
        if let (Some(sampler), Some(request), Some(response), None) =
            (&self.config.sampler, start.sample, end.response, error_kind)
            && !end.dropped
        {
            sampler.submit(EvalSample {
                model: start.model,
                prompt: start.prompt,
                tenant: start.tenant,
                request,
                response,
                latency: duration,
            });
        }
    }
}

fn role_kind(role: &Role) -> ContentKind {
    match role {
        Role::System | Role::Developer => ContentKind::System,
        Role::Assistant => ContentKind::Assistant,
        Role::Tool => ContentKind::Tool,
        _ => ContentKind::User,
    }
}

fn input_messages(req: &ChatRequest, filter: &dyn ContentFilter) -> Option<String> {
    let msgs: Vec<serde_json::Value> = req
        .messages
        .iter()
        .filter_map(|m| {
            let text = m.text();
            let kept = filter.filter(role_kind(&m.role), &text)?;
            Some(serde_json::json!({
                "role": m.role.as_str(),
                "parts": [{"type": "text", "content": kept}],
            }))
        })
        .collect();
    serde_json::to_string(&msgs).ok()
}

fn output_messages(resp: &ChatResponse, filter: &dyn ContentFilter) -> Option<String> {
    let msgs: Vec<serde_json::Value> = resp
        .choices
        .iter()
        .filter_map(|c| {
            let text = c.message.text();
            let kept = filter.filter(ContentKind::Output, &text)?;
            Some(serde_json::json!({
                "role": "assistant",
                "parts": [{"type": "text", "content": kept}],
                "finish_reason": c.finish_reason.as_ref().map(FinishReason::as_str),
            }))
        })
        .collect();
    serde_json::to_string(&msgs).ok()
}

/// A cheap, lock-free coin for sampling: a SplitMix64 sequence shared by all threads.
#[derive(Debug)]
pub(crate) struct Coin {
    state: AtomicU64,
}

impl Coin {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// A uniform number in `[0, 1)`.
    pub(crate) fn next_f64(&self) -> f64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_fields_are_the_semconv_constants() {
        let _g = tracing::subscriber::set_default(tracing_subscriber_noop());
        let span = gen_ai_span!("chat", "chat m", "chat", "m", "t", "r", false);
        check(span.metadata().map(tracing::Metadata::fields));
    }

    fn check(fields: Option<&tracing::field::FieldSet>) {
        let fields: Vec<&str> = fields
            .expect("an enabled span has metadata")
            .iter()
            .map(|f| f.name())
            .collect();
        for name in [
            semconv::OTEL_NAME,
            semconv::OTEL_KIND,
            semconv::OTEL_STATUS_CODE,
            semconv::GEN_AI_OPERATION_NAME,
            semconv::GEN_AI_PROVIDER_NAME,
            semconv::GEN_AI_REQUEST_MODEL,
            semconv::GEN_AI_REQUEST_STREAM,
            semconv::GEN_AI_REQUEST_MAX_TOKENS,
            semconv::GEN_AI_REQUEST_TEMPERATURE,
            semconv::GEN_AI_RESPONSE_MODEL,
            semconv::GEN_AI_RESPONSE_ID,
            semconv::GEN_AI_RESPONSE_FINISH_REASONS,
            semconv::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
            semconv::GEN_AI_USAGE_INPUT_TOKENS,
            semconv::GEN_AI_USAGE_OUTPUT_TOKENS,
            semconv::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
            semconv::GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
            semconv::GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
            semconv::GEN_AI_INPUT_MESSAGES,
            semconv::GEN_AI_OUTPUT_MESSAGES,
            semconv::ERROR_TYPE,
            semconv::LLMOPS_TENANT,
            semconv::LLMOPS_REQUEST_ID,
            semconv::LLMOPS_PROMPT_ID,
            semconv::LLMOPS_PROMPT_VERSION,
            semconv::LLMOPS_COST_USD,
            semconv::LLMOPS_CACHE_HIT,
            semconv::LLMOPS_ATTEMPT,
            semconv::LLMOPS_GATEWAY_OVERHEAD,
            semconv::LLMOPS_STREAM_DROPPED,
        ] {
            assert!(
                fields.contains(&name),
                "the span declares no field {name}: {fields:?}"
            );
        }
    }

    fn tracing_subscriber_noop() -> impl tracing::Subscriber {
        struct Sub;
        impl tracing::Subscriber for Sub {
            fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
                true
            }
            fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
                tracing::span::Id::from_u64(1)
            }
            fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
            fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
            fn event(&self, _: &tracing::Event<'_>) {}
            fn enter(&self, _: &tracing::span::Id) {}
            fn exit(&self, _: &tracing::span::Id) {}
        }
        Sub
    }

    #[test]
    fn the_coin_is_roughly_uniform() {
        let c = Coin::new(1);
        let n = 100_000;
        let below: usize = (0..n).filter(|_| c.next_f64() < 0.05).count();
        assert!((4_000..6_000).contains(&below), "{below}");
    }
}
