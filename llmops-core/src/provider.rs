//! The [`Provider`] trait: one model backend.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use futures_core::Stream;

use crate::context::RequestContext;
use crate::error::{Error, ErrorKind, Result};
use crate::types::{
    ChatChunk, ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, ModelInfo,
};

/// A stream of chat chunks. Dropping it must cancel the upstream work.
pub type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatChunk>> + Send + 'static>>;

/// What a provider can do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Non-streamed chat completions.
    pub chat: bool,
    /// Streamed chat completions.
    pub streaming: bool,
    /// Embeddings.
    pub embeddings: bool,
    /// Tool calling.
    pub tools: bool,
    /// The context window in tokens, when known.
    pub max_context_tokens: Option<u64>,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            chat: true,
            streaming: true,
            embeddings: false,
            tools: true,
            max_context_tokens: None,
        }
    }
}

impl Capabilities {
    /// Sets embeddings support (builder style).
    #[must_use]
    pub fn with_embeddings(mut self, yes: bool) -> Self {
        self.embeddings = yes;
        self
    }

    /// Sets the context window (builder style).
    #[must_use]
    pub fn with_max_context_tokens(mut self, tokens: u64) -> Self {
        self.max_context_tokens = Some(tokens);
        self
    }
}

/// A model backend: an upstream API client, a local engine, a mock.
///
/// # Contract
///
/// An implementation must guarantee:
///
/// - **Classified errors.** Every failure is an [`Error`] with the most precise
///   [`ErrorKind`] (a quota 429 is `QuotaExhausted`, not `RateLimited`) and, for upstream
///   failures, the provider name ([`Error::with_provider`]) and any `Retry-After`.
/// - **Lazy, cancellable streams.** [`chat_stream`](Provider::chat_stream) resolves once the
///   upstream has accepted the request (an error before that is returned as `Err`, so callers
///   can still retry or fall back). Dropping the returned stream stops the upstream work:
///   the HTTP response is dropped, spawned readers notice the closed channel.
/// - **Stream errors are classified by position.** A stream that breaks before any content
///   delta yields `StreamInterrupted { after_first_event: false }`; after content, `true`.
///   After yielding an error the stream ends.
/// - **Usage when asked.** When `stream_options.include_usage` is set, the last chunk
///   carries the request's [`Usage`](crate::Usage); non-streamed responses carry usage when
///   the upstream reports it.
/// - **No hidden retries.** Retrying, falling back and timing out are the pipeline's job
///   (layers in `llmops-serve`), so that every attempt is visible and budgeted.
///
/// The trait is object-safe; pipelines hold `Arc<dyn Provider>`.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The provider's name (the `<provider>` of a `<provider>/<model>` target).
    fn name(&self) -> &str;

    /// What the provider supports.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// A complete chat answer.
    async fn chat(&self, req: ChatRequest, ctx: &RequestContext) -> Result<ChatResponse>;

    /// A streamed chat answer. See the trait docs for the cancellation contract.
    async fn chat_stream(&self, req: ChatRequest, ctx: &RequestContext) -> Result<ChatStream>;

    /// Embeddings. The default answers [`ErrorKind::Unsupported`].
    async fn embed(
        &self,
        req: EmbeddingRequest,
        ctx: &RequestContext,
    ) -> Result<EmbeddingResponse> {
        let _ = (req, ctx);
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("provider {} does not support embeddings", self.name()),
        )
        .with_provider(self.name()))
    }

    /// The models the provider serves. The default is an empty list.
    async fn models(&self) -> Result<Vec<ModelInfo>> {
        Ok(Vec::new())
    }
}

#[async_trait]
impl<P: Provider + ?Sized> Provider for Arc<P> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    async fn chat(&self, req: ChatRequest, ctx: &RequestContext) -> Result<ChatResponse> {
        (**self).chat(req, ctx).await
    }
    async fn chat_stream(&self, req: ChatRequest, ctx: &RequestContext) -> Result<ChatStream> {
        (**self).chat_stream(req, ctx).await
    }
    async fn embed(
        &self,
        req: EmbeddingRequest,
        ctx: &RequestContext,
    ) -> Result<EmbeddingResponse> {
        (**self).embed(req, ctx).await
    }
    async fn models(&self) -> Result<Vec<ModelInfo>> {
        (**self).models().await
    }
}
