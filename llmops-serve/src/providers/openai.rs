//! The OpenAI-compatible provider: OpenAI, Azure-style OpenAI-compatible endpoints, vLLM
//! (see [`super::vllm`] for its extras) and any server speaking Chat Completions.
//!
//! The request is the client's [`ChatRequest`] re-serialized, `extra` fields included, so
//! provider-specific parameters reach the upstream untouched. Streams are decoded with
//! [`decode_event`], a pure function tested on recorded payloads.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use http::HeaderMap;
use llmops_core::{
    Capabilities, ChatChunk, ChatRequest, ChatResponse, ChatStream, EmbeddingRequest,
    EmbeddingResponse, Error, ErrorKind, ModelInfo, ModelList, Provider, RequestContext,
};

use super::errors::{RateLimits, classify_openai};
use super::sse::SseItem;
use super::{HttpProviderConfig, HttpTransport, RateLimitCell};

/// What one `data:` event of a Chat Completions stream means.
#[derive(Debug)]
#[non_exhaustive]
pub enum StreamEvent {
    /// A chunk.
    Chunk(Box<ChatChunk>),
    /// `[DONE]`: the stream finished.
    Done,
    /// An in-band `{"error": ...}` event.
    Error(Error),
}

/// Decodes one `data:` payload of a Chat Completions stream.
pub fn decode_event(provider: &str, data: &str) -> Result<StreamEvent, Error> {
    let data = data.trim();
    if data == "[DONE]" {
        return Ok(StreamEvent::Done);
    }
    let value: serde_json::Value = serde_json::from_str(data).map_err(|e| {
        Error::new(
            ErrorKind::Decode,
            format!("upstream sent a malformed stream event: {e}"),
        )
        .with_provider(provider)
    })?;
    if value.get("error").is_some_and(|e| !e.is_null()) && value.get("choices").is_none() {
        let body = value.to_string();
        let status = value
            .pointer("/error/code")
            .and_then(serde_json::Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (400..600).contains(c))
            .unwrap_or(500);
        return Ok(StreamEvent::Error(classify_openai(
            provider,
            status,
            &HeaderMap::new(),
            body.as_bytes(),
        )));
    }
    serde_json::from_value(value)
        .map(|c| StreamEvent::Chunk(Box::new(c)))
        .map_err(|e| {
            Error::new(
                ErrorKind::Decode,
                format!("upstream sent a stream event that is not a chunk: {e}"),
            )
            .with_provider(provider)
        })
}

/// Re-classifies a stream error by position: before any content it stays retryable;
/// after content it becomes `StreamInterrupted { after_first_event: true }`.
pub(crate) fn positioned(err: Error, seen_content: bool) -> Error {
    if seen_content {
        err.with_kind(ErrorKind::StreamInterrupted {
            after_first_event: true,
        })
    } else if matches!(err.kind(), ErrorKind::StreamInterrupted { .. }) {
        err.with_kind(ErrorKind::StreamInterrupted {
            after_first_event: false,
        })
    } else {
        err
    }
}

const CHAT_PATH: &str = "/chat/completions";
const EMBEDDINGS_PATH: &str = "/embeddings";

/// `base` + `path`, keeping a query string (Azure's `?api-version=`) at the end.
pub(crate) fn endpoint(base: &str, path: &str) -> String {
    match base.split_once('?') {
        Some((b, q)) => format!("{}{path}?{q}", b.trim_end_matches('/')),
        None => format!("{}{path}", base.trim_end_matches('/')),
    }
}

struct Inner {
    name: Arc<str>,
    base: String,
    transport: HttpTransport,
    headers: HeaderMap,
    timeout: Option<Duration>,
    rate_limits: RateLimitCell,
    capabilities: Capabilities,
    /// The hot endpoints, parsed once: parsing the URL string on every call (what
    /// `Client::post(String)` does) was 4 % of the gateway's CPU at 2,000 req/s.
    chat_url: Option<reqwest::Url>,
    embeddings_url: Option<reqwest::Url>,
}

/// An OpenAI-compatible upstream. Cheap to clone.
#[derive(Clone)]
pub struct OpenAiProvider {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("name", &self.inner.name)
            .field("base", &self.inner.base)
            .finish()
    }
}

impl OpenAiProvider {
    /// A provider from its settings, on `transport`.
    pub fn new(cfg: &HttpProviderConfig, transport: HttpTransport) -> Result<Self, Error> {
        let mut headers = cfg.headers.clone();
        if let Some(key) = &cfg.api_key {
            let v = http::HeaderValue::try_from(format!("Bearer {key}")).map_err(|_| {
                Error::invalid_request(
                    format!(
                        "provider {}: the API key is not a valid header value",
                        cfg.name
                    ),
                    None,
                )
            })?;
            headers.insert(http::header::AUTHORIZATION, v);
        }
        let base = cfg.trimmed_base();
        let parsed = |path: &str| reqwest::Url::parse(&endpoint(base, path)).ok();
        Ok(Self {
            inner: Arc::new(Inner {
                chat_url: parsed(CHAT_PATH),
                embeddings_url: parsed(EMBEDDINGS_PATH),
                name: Arc::from(cfg.name.as_str()),
                base: base.to_owned(),
                transport,
                headers,
                timeout: cfg.timeout,
                rate_limits: RateLimitCell::default(),
                capabilities: Capabilities::default().with_embeddings(true),
            }),
        })
    }

    /// The rate-limit headers of the last response, if the upstream sends them.
    pub fn rate_limits(&self) -> Option<Arc<RateLimits>> {
        self.inner.rate_limits.get()
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    pub(crate) fn transport(&self) -> &HttpTransport {
        &self.inner.transport
    }

    pub(crate) fn auth_headers(&self) -> &HeaderMap {
        &self.inner.headers
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let client = self.inner.transport.client();
        let parsed = match path {
            CHAT_PATH => self.inner.chat_url.as_ref(),
            EMBEDDINGS_PATH => self.inner.embeddings_url.as_ref(),
            _ => None,
        };
        // A base URL that does not parse keeps failing at send time, as before.
        match parsed {
            Some(url) => client.post(url.clone()),
            None => client.post(endpoint(&self.inner.base, path)),
        }
        .headers(self.inner.headers.clone())
    }

    async fn send_json(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<reqwest::Response, Error> {
        let name = self.inner.name.as_ref();
        let resp = super::send(name, self.post(path).json(body), self.inner.timeout).await?;
        self.inner
            .rate_limits
            .set(RateLimits::from_headers(resp.headers()));
        if !resp.status().is_success() {
            return Err(super::read_error(name, resp, classify_openai).await);
        }
        Ok(resp)
    }

    async fn with_call_timeout<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        match self.inner.timeout {
            Some(t) => tokio::time::timeout(t, fut).await.unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!("no answer within {} ms", t.as_millis()),
                )
                .with_provider(self.inner.name.as_ref()))
            }),
            None => fut.await,
        }
    }
}

/// Turns an SSE response into a chunk stream, classifying failures by position.
pub(crate) fn chunk_stream(provider: Arc<str>, resp: reqwest::Response) -> ChatStream {
    let events = super::sse::events(provider.clone(), resp);
    let stream = futures_util::stream::unfold(
        (Box::pin(events), false, false),
        move |(mut events, mut seen_content, finished)| {
            let provider = provider.clone();
            async move {
                if finished {
                    return None;
                }
                let item = events.next().await?;
                Some(match item {
                    Err(e) => (
                        Err(positioned(e, seen_content)),
                        (events, seen_content, true),
                    ),
                    Ok(SseItem::End { cut }) => {
                        let what = if cut {
                            "mid-event"
                        } else {
                            "without its end marker"
                        };
                        let err = Error::new(
                            ErrorKind::StreamInterrupted {
                                after_first_event: seen_content,
                            },
                            format!("the upstream stream ended {what}: the answer is truncated"),
                        )
                        .with_provider(provider.as_ref());
                        (Err(err), (events, seen_content, true))
                    }
                    Ok(SseItem::Event(ev)) => match decode_event(&provider, &ev.data) {
                        Ok(StreamEvent::Chunk(c)) => {
                            seen_content |= c.has_content();
                            (Ok(*c), (events, seen_content, false))
                        }
                        Ok(StreamEvent::Done) => return None,
                        Ok(StreamEvent::Error(e)) | Err(e) => (
                            Err(positioned(e, seen_content)),
                            (events, seen_content, true),
                        ),
                    },
                })
            }
        },
    );
    Box::pin(stream)
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities.clone()
    }

    async fn chat(
        &self,
        mut req: ChatRequest,
        _ctx: &RequestContext,
    ) -> Result<ChatResponse, Error> {
        req.stream = None;
        req.stream_options = None;
        self.with_call_timeout(async {
            let resp = self.send_json(CHAT_PATH, &req).await?;
            super::read_json(&self.inner.name, resp).await
        })
        .await
    }

    async fn chat_stream(
        &self,
        mut req: ChatRequest,
        _ctx: &RequestContext,
    ) -> Result<ChatStream, Error> {
        req.stream = Some(true);
        let resp = self.send_json(CHAT_PATH, &req).await?;
        Ok(chunk_stream(self.inner.name.clone(), resp))
    }

    async fn embed(
        &self,
        req: EmbeddingRequest,
        _ctx: &RequestContext,
    ) -> Result<EmbeddingResponse, Error> {
        self.with_call_timeout(async {
            let resp = self.send_json(EMBEDDINGS_PATH, &req).await?;
            super::read_json(&self.inner.name, resp).await
        })
        .await
    }

    async fn models(&self) -> Result<Vec<ModelInfo>, Error> {
        let name = self.inner.name.as_ref();
        let req = self
            .inner
            .transport
            .client()
            .get(endpoint(&self.inner.base, "/models"))
            .headers(self.inner.headers.clone());
        let resp = super::send(
            name,
            req,
            self.inner.timeout.or(Some(Duration::from_secs(30))),
        )
        .await?;
        if !resp.status().is_success() {
            return Err(super::read_error(name, resp, classify_openai).await);
        }
        let list: ModelList = super::read_json(name, resp).await?;
        Ok(list.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_recorded_openai_stream_events() {
        let role = r#"{"id":"chatcmpl-B9","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_06737a9306","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#;
        let text = r#"{"id":"chatcmpl-B9","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}"#;
        let usage = r#"{"id":"chatcmpl-B9","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}"#;
        let StreamEvent::Chunk(c) = decode_event("p", role).unwrap() else {
            panic!()
        };
        assert!(!c.has_content());
        let StreamEvent::Chunk(c) = decode_event("p", text).unwrap() else {
            panic!()
        };
        assert!(c.has_content());
        let StreamEvent::Chunk(c) = decode_event("p", usage).unwrap() else {
            panic!()
        };
        assert_eq!(c.usage.unwrap().input_tokens, 19);
        assert!(matches!(
            decode_event("p", "[DONE]").unwrap(),
            StreamEvent::Done
        ));
        assert_eq!(
            decode_event("p", "{\"id\": ").unwrap_err().kind(),
            ErrorKind::Decode
        );
        let StreamEvent::Error(e) = decode_event(
            "p",
            r#"{"error":{"message":"overloaded","type":"server_error","code":503}}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(e.kind(), ErrorKind::Overloaded);
    }

    #[test]
    fn azure_query_strings_stay_at_the_end() {
        assert_eq!(
            endpoint(
                "https://x.openai.azure.com/openai/deployments/d?api-version=2024-10-21",
                "/chat/completions"
            ),
            "https://x.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(endpoint("http://h/v1/", "/models"), "http://h/v1/models");
    }

    #[test]
    fn position_decides_retryability() {
        let e = Error::new(ErrorKind::ServerError, "x");
        assert_eq!(positioned(e.clone(), false).kind(), ErrorKind::ServerError);
        assert_eq!(
            positioned(e, true).kind(),
            ErrorKind::StreamInterrupted {
                after_first_event: true
            }
        );
    }
}
