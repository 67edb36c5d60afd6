//! What the observe layer learned about one finished request, and who else hears about it.
//!
//! After the span and metrics are recorded, each finished request becomes a [`RequestRecord`]
//! handed to every [`RecordSink`] (the SLO and alert engine, a cost tracker, a test probe).
//! Sinks run on the request path — at the end of a stream, in the stream's poll — so a sink
//! must never block or await: the engines in this crate only `try_send` onto a bounded queue
//! and count what they drop.

use std::sync::Arc;
use std::time::Duration;

use llmops_core::{ChatRequest, ChatResponse, ErrorKind, PromptRef};
use tokio::time::Instant;

/// One finished request.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RequestRecord {
    /// When the request finished (the end of the stream, for streams).
    pub at: Instant,
    /// `chat` or `embeddings`.
    pub operation: &'static str,
    /// The model the request asked for (uncapped).
    pub model: Arc<str>,
    /// The provider that answered, or that failed.
    pub provider: Option<Arc<str>>,
    /// The tenant.
    pub tenant: Arc<str>,
    /// The prompt template and version.
    pub prompt: Option<PromptRef>,
    /// Whether the answer was streamed.
    pub stream: bool,
    /// Total time, to the last byte.
    pub duration: Duration,
    /// Time to the first content (a complete answer's first content is its end).
    pub time_to_first_chunk: Option<Duration>,
    /// The error class, when the request failed (streams: failed mid-way).
    pub error: Option<ErrorKind>,
    /// Input tokens (cached included), when reported.
    pub input_tokens: Option<u64>,
    /// Output tokens, when reported.
    pub output_tokens: Option<u64>,
    /// The cost in USD, when a cost layer reported it.
    pub cost_usd: Option<f64>,
    /// Whether a response cache answered.
    pub cache_hit: bool,
    /// Upstream attempts.
    pub attempts: u32,
    /// Gateway overhead: time not spent waiting on upstreams.
    pub overhead: Option<Duration>,
    /// Whether the client dropped the stream before its end.
    pub dropped: bool,
}

impl RequestRecord {
    /// A successful, non-streamed record (for tests and for feeding engines by hand).
    pub fn success(model: impl Into<Arc<str>>, duration: Duration) -> Self {
        Self {
            at: Instant::now(),
            operation: "chat",
            model: model.into(),
            provider: None,
            tenant: Arc::from(llmops_core::context::DEFAULT_TENANT),
            prompt: None,
            stream: false,
            duration,
            time_to_first_chunk: Some(duration),
            error: None,
            input_tokens: None,
            output_tokens: None,
            cost_usd: None,
            cache_hit: false,
            attempts: 1,
            overhead: None,
            dropped: false,
        }
    }

    /// Sets the error (builder style).
    #[must_use]
    pub fn with_error(mut self, kind: ErrorKind) -> Self {
        self.error = Some(kind);
        self
    }

    /// Sets the tenant (builder style).
    #[must_use]
    pub fn with_tenant(mut self, tenant: impl Into<Arc<str>>) -> Self {
        self.tenant = tenant.into();
        self
    }

    /// Sets the cost (builder style).
    #[must_use]
    pub fn with_cost(mut self, usd: f64) -> Self {
        self.cost_usd = Some(usd);
        self
    }

    /// Whether the request failed.
    pub fn is_error(&self) -> bool {
        self.error.is_some()
    }
}

/// Hears about every finished request. Must not block (see the module docs).
pub trait RecordSink: Send + Sync + 'static {
    /// Called once per finished request.
    fn record(&self, record: &RequestRecord);
}

impl<F: Fn(&RequestRecord) + Send + Sync + 'static> RecordSink for F {
    fn record(&self, record: &RequestRecord) {
        self(record)
    }
}

/// A sampled exchange handed to online evaluation.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EvalSample {
    /// The model the request asked for.
    pub model: Arc<str>,
    /// The prompt template and version.
    pub prompt: Option<PromptRef>,
    /// The tenant.
    pub tenant: Arc<str>,
    /// The request.
    pub request: ChatRequest,
    /// The complete answer (a stream folded back into one).
    pub response: ChatResponse,
    /// Total time of the request.
    pub latency: Duration,
}

impl EvalSample {
    /// A sample of `request` answered by `response`.
    pub fn new(model: impl Into<Arc<str>>, request: ChatRequest, response: ChatResponse) -> Self {
        Self {
            model: model.into(),
            prompt: None,
            tenant: Arc::from(llmops_core::context::DEFAULT_TENANT),
            request,
            response,
            latency: Duration::ZERO,
        }
    }

    /// Sets the prompt reference (builder style).
    #[must_use]
    pub fn with_prompt(mut self, prompt: PromptRef) -> Self {
        self.prompt = Some(prompt);
        self
    }
}

/// Decides which requests are sampled for online evaluation and receives the samples.
///
/// [`should_sample`](Self::should_sample) runs at the start of every chat request and must be
/// a cheap coin flip; only sampled requests are cloned and, when streamed, collected.
/// [`submit`](Self::submit) must not block (the online evaluator `try_send`s onto a bounded
/// queue and scores in the background).
pub trait Sampler: Send + Sync + 'static {
    /// Whether to sample this request.
    fn should_sample(&self, model: &str) -> bool;
    /// Receives a sampled exchange.
    fn submit(&self, sample: EvalSample);
}
