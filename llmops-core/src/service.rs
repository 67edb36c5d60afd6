//! Tower glue: requests and responses of a pipeline, a [`Provider`] as a `tower::Service`, and
//! the pattern every layer of the workspace follows.
//!
//! A pipeline is a `tower::Service<LlmRequest, Response = LlmResponse, Error = Error>`. The
//! innermost service is a [`ProviderService`]; layers (retry, budget, cache, audit...) wrap it.
//! [`BoxLlmService`] names any such stack and is `Clone + Send + Sync`, as axum requires.
//!
//! # Writing a layer
//!
//! 1. A `Layer` that holds the layer's shared configuration/state behind an `Arc`.
//! 2. A `Service<LlmRequest>` that wraps the inner service. Clone the inner service in `call`
//!    with the `std::mem::replace` idiom (the clone is not ready; the original is).
//! 3. Before the call, read or amend [`LlmRequest::ctx`] and the body; refuse by returning an
//!    [`Error`] with a precise kind.
//! 4. After the call, a non-streamed answer is complete; a streamed one
//!    ([`ResponseBody::ChatStream`]) is not: wrap it in an
//!    [`ObservedStream`](crate::stream::ObservedStream) and do the end-of-request work in its
//!    callback, which runs when the stream ends, fails or is dropped. Never buffer a stream.
//!
//! [`InspectLayer`] is the reference implementation of that pattern; [`ContextLayer`] shows
//! the request side.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Layer, Service};

use crate::context::RequestContext;
use crate::error::{Error, Result};
use crate::provider::{ChatStream, Provider};
use crate::stream::{ObservedStream, StreamOutcome};
use crate::types::{ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, FinishReason};
use crate::usage::Usage;

/// A request entering a pipeline: its context and its body.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LlmRequest {
    /// Who asked, under which template, by when.
    pub ctx: RequestContext,
    /// What was asked.
    pub body: RequestBody,
}

impl LlmRequest {
    /// A chat request with a context.
    pub fn chat(ctx: RequestContext, req: ChatRequest) -> Self {
        Self {
            ctx,
            body: RequestBody::Chat(req),
        }
    }

    /// An embeddings request with a context.
    pub fn embeddings(ctx: RequestContext, req: EmbeddingRequest) -> Self {
        Self {
            ctx,
            body: RequestBody::Embeddings(req),
        }
    }

    /// The model name the request asks for.
    pub fn model(&self) -> &str {
        match &self.body {
            RequestBody::Chat(r) => &r.model,
            RequestBody::Embeddings(r) => &r.model,
        }
    }

    /// The operation name in OpenTelemetry GenAI terms (`chat`, `embeddings`).
    pub fn operation(&self) -> &'static str {
        match &self.body {
            RequestBody::Chat(_) => "chat",
            RequestBody::Embeddings(_) => "embeddings",
        }
    }

    /// Whether the request asks for a streamed answer.
    pub fn is_stream(&self) -> bool {
        matches!(&self.body, RequestBody::Chat(r) if r.is_stream())
    }
}

/// The body of an [`LlmRequest`].
///
/// Chat requests are held inline: a request is moved a handful of times per call, which is
/// cheaper than the allocation boxing would add to every request.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
#[non_exhaustive]
pub enum RequestBody {
    /// A chat completion (streamed when `stream` is set).
    Chat(ChatRequest),
    /// Embeddings.
    Embeddings(EmbeddingRequest),
}

/// A pipeline's answer: its body and what layers learned on the way.
#[non_exhaustive]
pub struct LlmResponse {
    /// The answer.
    pub body: ResponseBody,
    /// Which target answered, after how many attempts, and headers for the HTTP edge.
    pub meta: ResponseMeta,
}

impl LlmResponse {
    /// A response with default metadata.
    pub fn new(body: ResponseBody) -> Self {
        Self {
            body,
            meta: ResponseMeta::default(),
        }
    }

    /// The complete chat answer, or an error if this is not one.
    pub fn into_chat(self) -> Result<ChatResponse> {
        match self.body {
            ResponseBody::Chat(r) => Ok(r),
            _ => Err(Error::internal("expected a complete chat response")),
        }
    }

    /// The chat stream, or an error if this is not one.
    pub fn into_stream(self) -> Result<ChatStream> {
        match self.body {
            ResponseBody::ChatStream(s) => Ok(s),
            _ => Err(Error::internal("expected a chat stream")),
        }
    }

    /// The embeddings, or an error if this is not one.
    pub fn into_embeddings(self) -> Result<EmbeddingResponse> {
        match self.body {
            ResponseBody::Embeddings(r) => Ok(r),
            _ => Err(Error::internal("expected an embeddings response")),
        }
    }
}

impl fmt::Debug for LlmResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmResponse")
            .field("body", &self.body)
            .field("meta", &self.meta)
            .finish()
    }
}

/// The body of an [`LlmResponse`].
#[non_exhaustive]
pub enum ResponseBody {
    /// A complete chat answer.
    Chat(ChatResponse),
    /// A streamed chat answer.
    ChatStream(ChatStream),
    /// Embeddings.
    Embeddings(EmbeddingResponse),
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Chat(r) => f.debug_tuple("Chat").field(r).finish(),
            Self::ChatStream(_) => f.write_str("ChatStream(..)"),
            Self::Embeddings(r) => f.debug_tuple("Embeddings").field(r).finish(),
        }
    }
}

/// What layers learned while serving a request.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ResponseMeta {
    /// The provider (target) that answered.
    pub provider: Option<Arc<str>>,
    /// How many upstream attempts were made (0 for a cache hit).
    pub attempts: u32,
    /// Whether the answer came from a response cache.
    pub cache_hit: bool,
    /// Headers the HTTP edge adds to the response (`x-llmops-*`).
    pub headers: http::HeaderMap,
    /// Typed data layers attach for outer layers.
    pub extensions: http::Extensions,
}

/// A type-erased pipeline: `Clone + Send + Sync`, usable as an axum handler state.
///
/// Cloning one is a reference-count increment, not an allocation. That matters because every
/// layer clones its inner service on every call (the `std::mem::replace` idiom above), and a
/// pipeline has a boxed boundary per routing target and per optional layer: with tower's
/// `BoxCloneSyncService`, each of those clones allocated.
///
/// Readiness: [`Service::poll_ready`] is always ready. Each call clones the wrapped service and
/// drives *that clone's* `poll_ready` before calling it, inside the returned future (as
/// [`tower::ServiceExt::oneshot`] does), so a wrapped service that applies backpressure
/// through readiness delays the call instead of the caller's `poll_ready`. Every layer of this
/// workspace is ready whenever its inner service is.
#[derive(Clone)]
pub struct BoxLlmService {
    inner: Arc<dyn ErasedService>,
}

/// The object-safe face of a cloneable pipeline service.
trait ErasedService: Send + Sync {
    fn call(&self, req: LlmRequest) -> BoxFuture<Result<LlmResponse>>;
}

impl<S> ErasedService for S
where
    S: Service<LlmRequest, Response = LlmResponse, Error = Error> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    fn call(&self, req: LlmRequest) -> BoxFuture<Result<LlmResponse>> {
        let mut svc = self.clone();
        // Fast path: a ready service is called at once, without the `Oneshot` state machine.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // (Fully qualified: `S` is an `ErasedService` too, whose `call` takes `&self`.)
        match Service::poll_ready(&mut svc, &mut cx) {
            Poll::Ready(Ok(())) => Box::pin(Service::call(&mut svc, req)),
            Poll::Ready(Err(e)) => Box::pin(std::future::ready(Err(e))),
            Poll::Pending => Box::pin(tower::ServiceExt::oneshot(svc, req)),
        }
    }
}

impl BoxLlmService {
    /// Erases the type of `service`.
    pub fn new<S>(service: S) -> Self
    where
        S: Service<LlmRequest, Response = LlmResponse, Error = Error>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Self {
            inner: Arc::new(service),
        }
    }
}

impl fmt::Debug for BoxLlmService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BoxLlmService")
    }
}

impl Service<LlmRequest> for BoxLlmService {
    type Response = LlmResponse;
    type Error = Error;
    type Future = BoxFuture<Result<LlmResponse>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: LlmRequest) -> Self::Future {
        ErasedService::call(&*self.inner, req)
    }
}

/// The future type of pipeline services in this workspace.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A [`Provider`] as a `tower::Service`: the innermost service of every pipeline.
///
/// Streamed chat requests (`stream: true`) call [`Provider::chat_stream`]; others call
/// [`Provider::chat`] or [`Provider::embed`]. The response's metadata names the provider and
/// counts one attempt.
pub struct ProviderService {
    provider: Arc<dyn Provider>,
    name: Arc<str>,
}

impl Clone for ProviderService {
    fn clone(&self) -> Self {
        Self {
            provider: self.provider.clone(),
            name: self.name.clone(),
        }
    }
}

impl fmt::Debug for ProviderService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderService")
            .field("provider", &self.name)
            .finish()
    }
}

impl ProviderService {
    /// Wraps a provider.
    pub fn new(provider: Arc<dyn Provider>) -> Self {
        let name = Arc::from(provider.name());
        Self { provider, name }
    }

    /// The wrapped provider.
    pub fn provider(&self) -> &Arc<dyn Provider> {
        &self.provider
    }
}

impl Service<LlmRequest> for ProviderService {
    type Response = LlmResponse;
    type Error = Error;
    type Future = BoxFuture<Result<LlmResponse>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: LlmRequest) -> Self::Future {
        let provider = self.provider.clone();
        let name = self.name.clone();
        Box::pin(async move {
            let LlmRequest { ctx, body } = req;
            let body = match body {
                RequestBody::Chat(r) if r.is_stream() => {
                    ResponseBody::ChatStream(provider.chat_stream(r, &ctx).await?)
                }
                RequestBody::Chat(r) => ResponseBody::Chat(provider.chat(r, &ctx).await?),
                RequestBody::Embeddings(r) => {
                    ResponseBody::Embeddings(provider.embed(r, &ctx).await?)
                }
            };
            let meta = ResponseMeta {
                provider: Some(name),
                attempts: 1,
                ..ResponseMeta::default()
            };
            Ok(LlmResponse { body, meta })
        })
    }
}

/// A layer that amends each request's context before the inner service sees it: default
/// tenant, tags, a default timeout — whatever the closure does.
///
/// ```
/// use std::time::Duration;
/// use llmops_core::service::ContextLayer;
///
/// let layer = ContextLayer::new(|ctx| {
///     ctx.tags.entry("env".into()).or_insert_with(|| "prod".into());
///     ctx.shrink_deadline(tokio::time::Instant::now() + Duration::from_secs(60));
/// });
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct ContextLayer {
    f: Arc<dyn Fn(&mut RequestContext) + Send + Sync>,
}

impl ContextLayer {
    /// A layer running `f` on every request's context.
    pub fn new(f: impl Fn(&mut RequestContext) + Send + Sync + 'static) -> Self {
        Self { f: Arc::new(f) }
    }
}

impl fmt::Debug for ContextLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContextLayer")
    }
}

impl<S> Layer<S> for ContextLayer {
    type Service = ContextService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ContextService {
            inner,
            f: self.f.clone(),
        }
    }
}

/// The service of [`ContextLayer`].
#[derive(Clone)]
pub struct ContextService<S> {
    inner: S,
    f: Arc<dyn Fn(&mut RequestContext) + Send + Sync>,
}

impl<S> fmt::Debug for ContextService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContextService")
    }
}

impl<S> Service<LlmRequest> for ContextService<S>
where
    S: Service<LlmRequest, Response = LlmResponse, Error = Error>,
{
    type Response = LlmResponse;
    type Error = Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: LlmRequest) -> Self::Future {
        (self.f)(&mut req.ctx);
        self.inner.call(req)
    }
}

/// What [`InspectLayer`] reports for each finished call.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CallRecord {
    /// The request's context.
    pub ctx: RequestContext,
    /// `chat` or `embeddings`.
    pub operation: &'static str,
    /// The model the request asked for.
    pub model: String,
    /// Whether the answer was streamed.
    pub stream: bool,
    /// The provider that answered, if any did.
    pub provider: Option<Arc<str>>,
    /// Usage, when the answer reported it.
    pub usage: Option<Usage>,
    /// Finish reasons.
    pub finish_reasons: Vec<FinishReason>,
    /// The error, if the call failed (for streams: failed mid-way).
    pub error: Option<Error>,
    /// Whether the client dropped a stream before its end.
    pub dropped: bool,
    /// Time from the call to the first content (streams) or the answer.
    pub time_to_first_content: Option<Duration>,
    /// Time from the call to the end of the answer (the stream's end, for streams).
    pub duration: Duration,
}

/// A layer that reports every finished call — including streams, at their end — to a
/// callback, without buffering anything. The reference implementation of the layer pattern
/// described in this module; useful on its own for logging and tests.
#[derive(Clone)]
pub struct InspectLayer {
    f: Arc<dyn Fn(CallRecord) + Send + Sync>,
}

impl InspectLayer {
    /// A layer calling `f` once per finished call.
    pub fn new(f: impl Fn(CallRecord) + Send + Sync + 'static) -> Self {
        Self { f: Arc::new(f) }
    }
}

impl fmt::Debug for InspectLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InspectLayer")
    }
}

impl<S> Layer<S> for InspectLayer {
    type Service = InspectService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        InspectService {
            inner,
            f: self.f.clone(),
        }
    }
}

/// The service of [`InspectLayer`].
#[derive(Clone)]
pub struct InspectService<S> {
    inner: S,
    f: Arc<dyn Fn(CallRecord) + Send + Sync>,
}

impl<S> fmt::Debug for InspectService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InspectService")
    }
}

impl<S> Service<LlmRequest> for InspectService<S>
where
    S: Service<LlmRequest, Response = LlmResponse, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = LlmResponse;
    type Error = Error;
    type Future = BoxFuture<Result<LlmResponse>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: LlmRequest) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let f = self.f.clone();
        Box::pin(async move {
            let start = Instant::now();
            let record = CallRecord {
                ctx: req.ctx.clone(),
                operation: req.operation(),
                model: req.model().to_owned(),
                stream: req.is_stream(),
                provider: None,
                usage: None,
                finish_reasons: Vec::new(),
                error: None,
                dropped: false,
                time_to_first_content: None,
                duration: Duration::ZERO,
            };
            match inner.call(req).await {
                Err(e) => {
                    f(CallRecord {
                        error: Some(e.clone()),
                        duration: start.elapsed(),
                        ..record
                    });
                    Err(e)
                }
                Ok(mut resp) => {
                    let mut record = CallRecord {
                        provider: resp.meta.provider.clone(),
                        ..record
                    };
                    resp.body = match resp.body {
                        ResponseBody::ChatStream(s) => ResponseBody::ChatStream(
                            ObservedStream::new(s, move |sum| {
                                record.usage = sum.usage;
                                record.finish_reasons = sum.finish_reasons;
                                record.time_to_first_content =
                                    sum.first_content_at.map(|t| t.duration_since(start));
                                record.duration = sum.ended_at.duration_since(start);
                                match sum.outcome {
                                    StreamOutcome::Failed(e) => record.error = Some(e),
                                    StreamOutcome::Dropped => record.dropped = true,
                                    _ => {}
                                }
                                f(record);
                            })
                            .boxed(),
                        ),
                        ResponseBody::Chat(r) => {
                            record.usage.clone_from(&r.usage);
                            record.finish_reasons = r.finish_reasons();
                            record.duration = start.elapsed();
                            record.time_to_first_content = Some(record.duration);
                            f(record);
                            ResponseBody::Chat(r)
                        }
                        ResponseBody::Embeddings(r) => {
                            record.usage.clone_from(&r.usage);
                            record.duration = start.elapsed();
                            f(record);
                            ResponseBody::Embeddings(r)
                        }
                    };
                    Ok(resp)
                }
            }
        })
    }
}
