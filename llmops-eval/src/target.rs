//! What a suite evaluates: an OpenAI-compatible endpoint, an in-process [`Provider`], or an
//! in-process pipeline ([`BoxLlmService`]).
//!
//! [`OpenAiCompatible`] is a deliberately small client: non-streamed `POST
//! {base_url}/chat/completions` and `POST {base_url}/embeddings`, with errors classified into
//! [`ErrorKind`] by HTTP status and the OpenAI `error.code`/`error.type` (so a 429
//! `insufficient_quota` is not retried like a 429 `rate_limit_exceeded`). It does not retry:
//! the runner does, adapting its concurrency.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use llmops_core::types::response_to_chunks;
use llmops_core::{
    BoxLlmService, Capabilities, ChatRequest, ChatResponse, ChatStream, EmbeddingRequest,
    EmbeddingResponse, Error, ErrorKind, LlmRequest, Provider, RequestContext,
};
use serde_json::Value;
use tower::ServiceExt;

/// The system under test.
#[derive(Clone)]
#[non_exhaustive]
pub enum Target {
    /// Any provider: an HTTP client, a `MockProvider`, a local engine.
    Provider(Arc<dyn Provider>),
    /// A whole pipeline of layers (cache, budget, routing...) around providers.
    Service(BoxLlmService),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Provider(p) => f.debug_tuple("Provider").field(&p.name()).finish(),
            Self::Service(_) => f.debug_tuple("Service").finish(),
        }
    }
}

impl Target {
    /// A target calling `provider`.
    pub fn provider(provider: impl Provider) -> Self {
        Self::Provider(Arc::new(provider))
    }

    /// Sends one non-streamed chat request.
    pub async fn chat(
        &self,
        req: ChatRequest,
        ctx: RequestContext,
    ) -> llmops_core::Result<ChatResponse> {
        match self {
            Self::Provider(p) => p.chat(req, &ctx).await,
            Self::Service(svc) => svc
                .clone()
                .oneshot(LlmRequest::chat(ctx, req))
                .await?
                .into_chat(),
        }
    }
}

/// A minimal client of an OpenAI-compatible HTTP API (a gateway, vLLM, OpenAI, a fake).
#[derive(Clone)]
pub struct OpenAiCompatible {
    name: String,
    base_url: String,
    api_key: Option<String>,
    client: reqwest::Client,
}

impl std::fmt::Debug for OpenAiCompatible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: never printed.
        f.debug_struct("OpenAiCompatible")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl OpenAiCompatible {
    /// A client of `base_url` (e.g. `http://127.0.0.1:8080/v1`) with a 120 s request timeout.
    pub fn new(base_url: impl Into<String>) -> llmops_core::Result<Self> {
        Self::with_timeout(base_url, Duration::from_secs(120))
    }

    /// A client with a total request `timeout`.
    pub fn with_timeout(
        base_url: impl Into<String>,
        timeout: Duration,
    ) -> llmops_core::Result<Self> {
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(Error::invalid_request(
                format!("base_url must start with http:// or https://, got {base_url:?}"),
                Some("base_url"),
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| Error::internal(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            name: "openai_compatible".into(),
            base_url,
            api_key: None,
            client,
        })
    }

    /// Sends `Authorization: Bearer <key>` (builder style).
    #[must_use]
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Renames the provider (as errors and reports show it).
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    async fn post(&self, path: &str, body: &impl serde::Serialize) -> llmops_core::Result<Vec<u8>> {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base_url))
            .json(body);
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status().as_u16();
        // `retry-after-ms` (OpenAI, Azure) is more precise than `Retry-After` (seconds).
        let header = |name: &str, scale: f64| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Duration::from_secs_f64(s * scale))
        };
        let retry_after = header("retry-after-ms", 1e-3).or_else(|| header("retry-after", 1.0));
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(&e))?;
        if (200..300).contains(&status) {
            return Ok(bytes.to_vec());
        }
        let mut err = classify_http_error(status, &bytes).with_provider(self.name.clone());
        if let Some(d) = retry_after {
            err = err.with_retry_after(d);
        }
        Err(err)
    }

    fn transport_error(&self, e: &reqwest::Error) -> Error {
        let kind = if e.is_timeout() {
            ErrorKind::Timeout
        } else if e.is_decode() || e.is_body() {
            ErrorKind::Decode
        } else {
            ErrorKind::Connect
        };
        Error::new(kind, format!("{}: {e}", self.base_url)).with_provider(self.name.clone())
    }
}

/// Classifies an upstream HTTP error by status and the OpenAI error body's `code`/`type`.
pub fn classify_http_error(status: u16, body: &[u8]) -> Error {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let err_obj = parsed.as_ref().and_then(|v| v.get("error"));
    let field = |k: &str| {
        err_obj
            .and_then(|e| e.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let code = field("code");
    let etype = field("type");
    let message = match field("message") {
        "" => {
            let text = String::from_utf8_lossy(body);
            let t = text.trim();
            if t.is_empty() {
                format!("upstream answered HTTP {status}")
            } else {
                t.chars().take(300).collect()
            }
        }
        m => m.to_owned(),
    };
    let is = |needle: &str| code == needle || etype == needle;
    let kind = match status {
        429 if is("insufficient_quota") || is("billing_hard_limit_reached") => {
            ErrorKind::QuotaExhausted
        }
        429 => ErrorKind::RateLimited,
        400 | 422 if is("context_length_exceeded") => ErrorKind::ContextLengthExceeded,
        400 | 422 if is("content_filter") || is("content_policy_violation") => {
            ErrorKind::ContentFiltered
        }
        400 | 422 => ErrorKind::InvalidRequest,
        401 => ErrorKind::Auth,
        403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::ModelNotFound,
        408 | 504 => ErrorKind::Timeout,
        413 => ErrorKind::PayloadTooLarge,
        503 | 529 => ErrorKind::Overloaded,
        500..=599 => ErrorKind::ServerError,
        _ => ErrorKind::InvalidRequest,
    };
    let mut err = Error::new(kind, message).with_status(status);
    if !code.is_empty() {
        err = err.with_code(code.to_owned());
    }
    err
}

#[async_trait]
impl Provider for OpenAiCompatible {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default().with_embeddings(true)
    }

    async fn chat(
        &self,
        mut req: ChatRequest,
        _ctx: &RequestContext,
    ) -> llmops_core::Result<ChatResponse> {
        req.stream = None;
        req.stream_options = None;
        let bytes = self.post("/chat/completions", &req).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(
                ErrorKind::Decode,
                format!("invalid chat completion JSON: {e}"),
            )
            .with_provider(self.name.clone())
        })
    }

    /// Evaluation never needs token-by-token output: this sends a non-streamed request and
    /// replays the complete answer as chunks.
    async fn chat_stream(
        &self,
        req: ChatRequest,
        ctx: &RequestContext,
    ) -> llmops_core::Result<ChatStream> {
        let include_usage = req.include_usage();
        let resp = self.chat(req, ctx).await?;
        let chunks = response_to_chunks(&resp, include_usage);
        Ok(Box::pin(futures_util::stream::iter(
            chunks.into_iter().map(Ok),
        )))
    }

    async fn embed(
        &self,
        req: EmbeddingRequest,
        _ctx: &RequestContext,
    ) -> llmops_core::Result<EmbeddingResponse> {
        let bytes = self.post("/embeddings", &req).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(ErrorKind::Decode, format!("invalid embeddings JSON: {e}"))
                .with_provider(self.name.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_status_and_code() {
        let q = classify_http_error(429, br#"{"error": {"message": "out of credit", "type": "insufficient_quota", "code": "insufficient_quota"}}"#);
        assert_eq!(q.kind(), ErrorKind::QuotaExhausted);
        assert_eq!(q.message(), "out of credit");
        let r = classify_http_error(
            429,
            br#"{"error": {"message": "slow down", "code": "rate_limit_exceeded"}}"#,
        );
        assert_eq!(r.kind(), ErrorKind::RateLimited);
        let c = classify_http_error(
            400,
            br#"{"error": {"message": "too long", "code": "context_length_exceeded"}}"#,
        );
        assert_eq!(c.kind(), ErrorKind::ContextLengthExceeded);
        assert_eq!(
            classify_http_error(400, b"").kind(),
            ErrorKind::InvalidRequest
        );
        assert_eq!(classify_http_error(401, b"").kind(), ErrorKind::Auth);
        assert_eq!(
            classify_http_error(404, b"").kind(),
            ErrorKind::ModelNotFound
        );
        assert_eq!(
            classify_http_error(503, b"busy").kind(),
            ErrorKind::Overloaded
        );
        assert_eq!(
            classify_http_error(502, b"<html>").kind(),
            ErrorKind::ServerError
        );
        assert_eq!(classify_http_error(502, b"<html>").message(), "<html>");
    }

    #[test]
    fn rejects_bad_base_urls_and_hides_keys() {
        assert!(OpenAiCompatible::new("localhost:8080").is_err());
        let c = OpenAiCompatible::new("http://127.0.0.1:1/v1/")
            .unwrap()
            .api_key("sk-secret");
        assert_eq!(c.base_url(), "http://127.0.0.1:1/v1");
        assert!(!format!("{c:?}").contains("sk-secret"));
    }
}
