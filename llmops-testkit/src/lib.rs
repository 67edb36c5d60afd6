//! Test support for llmops: [`FakeUpstream`], an in-process HTTP server speaking the
//! OpenAI, vLLM and Anthropic wire formats, whose answers and faults are scripted per request.
//!
//! # Design
//!
//! A test starts a server on a free loopback port, points a provider (or a whole gateway) at
//! [`FakeUpstream::url`], queues [`Reply`]s, runs its requests and then asserts on what the
//! server saw: [`FakeUpstream::calls`] counts generation requests (chat, messages,
//! embeddings), [`FakeUpstream::requests`] records each one with its path, headers, JSON body
//! and arrival time.
//!
//! Replies are served in FIFO order to generation requests, whatever the endpoint; when the
//! queue is empty the default reply ([`FakeUpstream::set_default`], initially
//! [`Reply::text`] of a short sentence) answers. Each reply can carry a fault:
//!
//! | builder | what the client sees |
//! |---|---|
//! | [`Reply::status`] (500, 502, 503, ...) | that status and an error JSON of the route's dialect |
//! | [`Reply::rate_limited`] | 429 `rate_limit_exceeded` / `rate_limit_error` with `Retry-After` |
//! | [`Reply::overloaded`] | 529 `overloaded_error` (Anthropic's capacity signal) |
//! | [`Reply::quota`] | 429 `insufficient_quota` (OpenAI) / `enforced_spend_limit_reached` (Anthropic) |
//! | [`Reply::reset`] | the TCP connection is reset before any response byte |
//! | [`Reply::stall_before_headers`] | nothing, ever: the request hangs until the client gives up |
//! | [`Reply::stall_mid_stream`] | a stream that stops sending after some chunks, connection open |
//! | [`Reply::truncated_sse`] | a stream whose body ends after some chunks, without `[DONE]` / `message_stop` |
//! | [`Reply::stream_error`] | an in-band error event after some chunks |
//! | [`Reply::malformed_json`] | a 200 whose JSON (or first SSE event) does not parse |
//! | [`Reply::slow_drip`] | a valid stream with a long pause before every chunk |
//!
//! Streams are written with every event split across two body frames at an arbitrary byte,
//! so clients' SSE parsers are exercised on split frames in every test.
//!
//! Besides generation, the server answers `GET /health` ([`FakeUpstream::set_healthy`]),
//! `GET /v1/models` with vLLM's `max_model_len` ([`FakeUpstream::set_max_model_len`]) and
//! `GET /metrics` in Prometheus text with vLLM's metric names
//! ([`FakeUpstream::set_load`]).
//!
//! Time is `tokio::time`: latencies, stalls and drips follow paused time in tests that pause
//! it, and recorded arrival times are `tokio::time::Instant`s.
//!
//! ```no_run
//! use llmops_testkit::{FakeUpstream, Reply};
//!
//! # #[tokio::main] async fn main() {
//! let up = FakeUpstream::start().await;
//! up.push(Reply::status(500)).push(Reply::text("recovered"));
//! // point an OpenAI-compatible client at up.openai_base() ...
//! # let _ = up.openai_base();
//! assert_eq!(up.calls(), 0);
//! # }
//! ```

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;

/// What a reply does wrong, if anything.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Fault {
    /// A well-formed answer.
    None,
    /// An HTTP error status with an error body of the route's dialect.
    Status(u16),
    /// HTTP 429 rate limit, with `Retry-After` (whole seconds) or `retry-after-ms`.
    RateLimited(Option<Duration>),
    /// HTTP 429 for an exhausted quota or spend limit (never worth retrying).
    Quota,
    /// HTTP 529 overloaded.
    Overloaded,
    /// The connection is reset before any response byte.
    Reset,
    /// No response, ever.
    StallBeforeHeaders,
    /// A stream that stops sending after this many content chunks, keeping the connection.
    StallMidStream(usize),
    /// A stream whose body ends after this many content chunks, without its end marker.
    TruncatedSse(usize),
    /// A stream carrying an in-band error event after this many content chunks.
    StreamError(usize),
    /// A 200 whose JSON (first SSE event, for streams) does not parse.
    MalformedJson,
}

/// One scripted answer.
#[derive(Clone, Debug)]
pub struct Reply {
    fault: Fault,
    text: String,
    latency: Duration,
    chunk_delay: Duration,
    cached_tokens: Option<u64>,
}

impl Reply {
    /// A successful answer with `text` (streamed word by word when the client streams).
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            fault: Fault::None,
            text: text.into(),
            latency: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            cached_tokens: None,
        }
    }

    fn fault(fault: Fault) -> Self {
        Self {
            fault,
            ..Self::text("The quick brown fox jumps over the lazy dog.")
        }
    }

    /// An error status (500, 502, 503, 400, 401, ...) with an error body.
    pub fn status(status: u16) -> Self {
        Self::fault(Fault::Status(status))
    }

    /// HTTP 429 rate limit asking to wait `retry_after` (sent as `Retry-After` in seconds when
    /// whole, as `retry-after-ms` otherwise).
    pub fn rate_limited(retry_after: Duration) -> Self {
        Self::fault(Fault::RateLimited(Some(retry_after)))
    }

    /// HTTP 429 rate limit without any retry hint.
    pub fn rate_limited_no_hint() -> Self {
        Self::fault(Fault::RateLimited(None))
    }

    /// HTTP 429 quota exhausted (`insufficient_quota`, or Anthropic's
    /// `enforced_spend_limit_reached`).
    pub fn quota() -> Self {
        Self::fault(Fault::Quota)
    }

    /// HTTP 529 overloaded.
    pub fn overloaded() -> Self {
        Self::fault(Fault::Overloaded)
    }

    /// The TCP connection is reset before any response byte.
    pub fn reset() -> Self {
        Self::fault(Fault::Reset)
    }

    /// The request is never answered.
    pub fn stall_before_headers() -> Self {
        Self::fault(Fault::StallBeforeHeaders)
    }

    /// A stream that goes silent after `chunks` content chunks (non-streamed requests stall
    /// before headers).
    pub fn stall_mid_stream(chunks: usize) -> Self {
        Self::fault(Fault::StallMidStream(chunks))
    }

    /// A stream that ends after `chunks` content chunks, without its end marker.
    pub fn truncated_sse(chunks: usize) -> Self {
        Self::fault(Fault::TruncatedSse(chunks))
    }

    /// A stream carrying an in-band error event after `chunks` content chunks.
    pub fn stream_error(chunks: usize) -> Self {
        Self::fault(Fault::StreamError(chunks))
    }

    /// A 200 whose body (or first event) is not valid JSON.
    pub fn malformed_json() -> Self {
        Self::fault(Fault::MalformedJson)
    }

    /// A valid answer, streamed with `delay` before every chunk.
    pub fn slow_drip(delay: Duration) -> Self {
        Self::text("The quick brown fox jumps over the lazy dog.").with_chunk_delay(delay)
    }

    /// Waits `latency` before the response headers.
    #[must_use]
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Waits `delay` before every streamed chunk.
    #[must_use]
    pub fn with_chunk_delay(mut self, delay: Duration) -> Self {
        self.chunk_delay = delay;
        self
    }

    /// Reports `tokens` of the prompt as read from the upstream's prefix cache
    /// (`usage.prompt_tokens_details.cached_tokens`, as vLLM and OpenAI do), capped at the
    /// prompt's tokens.
    #[must_use]
    pub fn with_cached_tokens(mut self, tokens: u64) -> Self {
        self.cached_tokens = Some(tokens);
        self
    }

    /// Replaces the answer text.
    #[must_use]
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = text.into();
        self
    }

    /// The reply's fault.
    pub fn fault_kind(&self) -> &Fault {
        &self.fault
    }
}

/// vLLM load figures served on `/metrics`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VllmLoad {
    /// `vllm:num_requests_waiting`.
    pub waiting: f64,
    /// `vllm:num_requests_running`.
    pub running: f64,
    /// `vllm:kv_cache_usage_perc` (0–1).
    pub kv_cache_usage: f64,
    /// `vllm:prefix_cache_queries_total`.
    pub prefix_cache_queries: f64,
    /// `vllm:prefix_cache_hits_total`.
    pub prefix_cache_hits: f64,
    /// Serve the pre-0.12 names (`gpu_cache_usage_perc`, `gpu_prefix_cache_*`) instead.
    pub legacy_names: bool,
}

/// One request the server received.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RecordedRequest {
    /// The request path (`/v1/chat/completions`, `/v1/messages`, ...).
    pub path: String,
    /// Request headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The JSON body (`Null` when it was not JSON).
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
}

impl RecordedRequest {
    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Shared {
    name: String,
    queue: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    requests: Mutex<Vec<RecordedRequest>>,
    calls: AtomicUsize,
    healthy: Mutex<bool>,
    health_checks: AtomicUsize,
    metrics_scrapes: AtomicUsize,
    load: Mutex<VllmLoad>,
    max_model_len: AtomicU64,
    ids: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running fake upstream. Dropping it stops the server.
pub struct FakeUpstream {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for FakeUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeUpstream")
            .field("name", &self.shared.name)
            .field("addr", &self.addr)
            .field("calls", &self.calls())
            .finish()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeUpstream {
    /// Starts a server named `fake` on a free loopback port.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound.
    pub async fn start() -> Self {
        Self::start_named("fake").await
    }

    /// Starts a server whose answers name it `name` (in `model` fields and response ids).
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound.
    #[allow(clippy::unwrap_used)]
    pub async fn start_named(name: &str) -> Self {
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            queue: Mutex::new(VecDeque::new()),
            default: Mutex::new(Reply::text("Hello from the fake upstream.")),
            requests: Mutex::new(Vec::new()),
            calls: AtomicUsize::new(0),
            healthy: Mutex::new(true),
            health_checks: AtomicUsize::new(0),
            metrics_scrapes: AtomicUsize::new(0),
            load: Mutex::new(VllmLoad::default()),
            max_model_len: AtomicU64::new(8192),
            ids: AtomicU64::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/messages", post(messages))
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/models", get(models))
            .route("/health", get(health))
            .route("/metrics", get(metrics))
            .with_state(shared.clone());
        let task = tokio::spawn(accept_loop(listener, router));
        Self { shared, addr, task }
    }

    /// `http://127.0.0.1:<port>` (the Anthropic base URL; paths start with `/v1/...`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:<port>/v1` (the OpenAI / vLLM base URL).
    pub fn openai_base(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues `reply` for the next generation request without a scripted reply.
    pub fn push(&self, reply: Reply) -> &Self {
        lock(&self.shared.queue).push_back(reply);
        self
    }

    /// Queues `n` copies of `reply`.
    pub fn push_n(&self, n: usize, reply: Reply) -> &Self {
        let mut q = lock(&self.shared.queue);
        for _ in 0..n {
            q.push_back(reply.clone());
        }
        drop(q);
        self
    }

    /// The reply used when the queue is empty.
    pub fn set_default(&self, reply: Reply) -> &Self {
        *lock(&self.shared.default) = reply;
        self
    }

    /// How many generation requests (chat, messages, embeddings) arrived.
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// Every generation request, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Scripted replies not yet used.
    pub fn remaining(&self) -> usize {
        lock(&self.shared.queue).len()
    }

    /// Whether `GET /health` answers 200 (`true`) or 503.
    pub fn set_healthy(&self, healthy: bool) -> &Self {
        *lock(&self.shared.healthy) = healthy;
        self
    }

    /// How many `GET /health` requests arrived.
    pub fn health_checks(&self) -> usize {
        self.shared.health_checks.load(Ordering::SeqCst)
    }

    /// The load served on `GET /metrics`.
    pub fn set_load(&self, load: VllmLoad) -> &Self {
        *lock(&self.shared.load) = load;
        self
    }

    /// How many `GET /metrics` requests arrived.
    pub fn metrics_scrapes(&self) -> usize {
        self.shared.metrics_scrapes.load(Ordering::SeqCst)
    }

    /// The `max_model_len` reported by `GET /v1/models`.
    pub fn set_max_model_len(&self, tokens: u64) -> &Self {
        self.shared.max_model_len.store(tokens, Ordering::SeqCst);
        self
    }
}

/// A handle the handlers use to reset the connection they are served on.
#[derive(Clone)]
struct Kill(Arc<Notify>);

async fn accept_loop(listener: tokio::net::TcpListener, router: Router) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let kill = Kill(Arc::new(Notify::new()));
        let svc = router.clone().layer(axum::Extension(kill.clone()));
        tokio::spawn(async move {
            // A second handle on the socket, to reset it from outside the connection task.
            let Ok(std_stream) = stream.into_std() else {
                return;
            };
            let twin = std_stream.try_clone().ok();
            let Ok(stream) = tokio::net::TcpStream::from_std(std_stream) else {
                return;
            };
            let io = hyper_util::rt::TokioIo::new(stream);
            let service = hyper_util::service::TowerToHyperService::new(svc);
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
            tokio::select! {
                _ = conn => {}
                () = kill.0.notified() => {
                    if let Some(twin) = &twin {
                        let _ = socket2::SockRef::from(twin).set_linger(Some(Duration::ZERO));
                    }
                }
            }
        });
    }
}

enum Dialect {
    OpenAi,
    Anthropic,
}

fn record(st: &Shared, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Reply {
    st.calls.fetch_add(1, Ordering::SeqCst);
    let body = serde_json::from_slice(body).unwrap_or(Value::Null);
    let headers = headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    lock(&st.requests).push(RecordedRequest {
        path: uri.path().to_owned(),
        headers,
        body,
        at: Instant::now(),
    });
    let next = lock(&st.queue).pop_front();
    next.unwrap_or_else(|| lock(&st.default).clone())
}

fn error_json(dialect: &Dialect, etype: &str, code: &str, message: &str) -> Value {
    match dialect {
        Dialect::OpenAi => {
            json!({"error": {"message": message, "type": etype, "param": null, "code": code}})
        }
        Dialect::Anthropic => {
            let mut err = json!({"type": etype, "message": message});
            if code == "enforced_spend_limit_reached" {
                err["details"] = json!({"error_code": code});
            }
            json!({"type": "error", "error": err, "request_id": "req_fake"})
        }
    }
}

fn json_response(status: u16, headers: &[(&str, String)], body: &Value) -> Response {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    for (n, v) in headers {
        if let (Ok(n), Ok(v)) = (
            header::HeaderName::try_from(*n),
            header::HeaderValue::try_from(v.as_str()),
        ) {
            h.insert(n, v);
        }
    }
    resp
}

/// The error response for a status-like fault, or `None` for stream and success faults.
async fn fault_response(reply: &Reply, dialect: &Dialect, kill: &Kill) -> Option<Response> {
    let (status, etype, code, msg, headers): (u16, &str, &str, &str, Vec<(&str, String)>) =
        match &reply.fault {
            Fault::Status(s) => {
                let (etype, code) = match (dialect, *s) {
                    (Dialect::Anthropic, 400) => ("invalid_request_error", "invalid_request"),
                    (Dialect::Anthropic, 401) => ("authentication_error", "invalid_api_key"),
                    (Dialect::Anthropic, 404) => ("not_found_error", "not_found"),
                    (Dialect::Anthropic, _) => ("api_error", "api_error"),
                    (Dialect::OpenAi, 400) => ("invalid_request_error", "invalid_request"),
                    (Dialect::OpenAi, 401) => ("invalid_request_error", "invalid_api_key"),
                    (Dialect::OpenAi, 404) => ("invalid_request_error", "model_not_found"),
                    (Dialect::OpenAi, _) => ("server_error", "server_error"),
                };
                (
                    *s,
                    etype,
                    code,
                    "the fake upstream failed as scripted",
                    Vec::new(),
                )
            }
            Fault::RateLimited(after) => {
                let mut h = vec![
                    ("x-ratelimit-limit-requests", "60".to_owned()),
                    ("x-ratelimit-remaining-requests", "0".to_owned()),
                    ("x-ratelimit-reset-requests", "1s".to_owned()),
                    ("anthropic-ratelimit-requests-remaining", "0".to_owned()),
                ];
                match after {
                    Some(d) if d.subsec_millis() == 0 && !d.is_zero() => {
                        h.push(("retry-after", d.as_secs().to_string()));
                    }
                    Some(d) => h.push(("retry-after-ms", d.as_millis().to_string())),
                    None => {}
                }
                let etype = match dialect {
                    Dialect::OpenAi => "requests",
                    Dialect::Anthropic => "rate_limit_error",
                };
                (
                    429,
                    etype,
                    "rate_limit_exceeded",
                    "Rate limit reached, slow down",
                    h,
                )
            }
            Fault::Quota => match dialect {
                Dialect::OpenAi => (
                    429,
                    "insufficient_quota",
                    "insufficient_quota",
                    "You exceeded your current quota, please check your plan and billing details.",
                    Vec::new(),
                ),
                Dialect::Anthropic => (
                    429,
                    "rate_limit_error",
                    "enforced_spend_limit_reached",
                    "You have reached your specified workspace spend limit.",
                    Vec::new(),
                ),
            },
            Fault::Overloaded => (
                529,
                "overloaded_error",
                "overloaded",
                "Overloaded",
                Vec::new(),
            ),
            Fault::Reset => {
                kill.0.notify_one();
                std::future::pending::<()>().await;
                return None;
            }
            Fault::StallBeforeHeaders => {
                std::future::pending::<()>().await;
                return None;
            }
            _ => return None,
        };
    let body = error_json(dialect, etype, code, msg);
    Some(json_response(status, &headers, &body))
}

fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, w) in text.split(' ').enumerate() {
        out.push(if i == 0 {
            w.to_owned()
        } else {
            format!(" {w}")
        });
    }
    out
}

fn token_count(body: &Value) -> u64 {
    let text = body.to_string();
    (text.len() as u64 / 4).max(1)
}

/// A body streaming `events`, each split across two frames, with per-event delays, then
/// ending as `end` says.
fn sse_body(events: Vec<String>, delay: Duration, end: StreamEnd) -> Body {
    let stream = futures_util::stream::unfold(
        (events.into_iter(), false, end),
        move |(mut it, ended, end)| async move {
            if ended {
                return None;
            }
            match it.next() {
                Some(ev) => {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    Some((Ok::<_, Infallible>(Bytes::from(ev)), (it, false, end)))
                }
                None => {
                    if end == StreamEnd::Stall {
                        std::future::pending::<()>().await;
                    }
                    None
                }
            }
        },
    )
    .flat_map(|item| {
        // Split each event at an arbitrary byte (a third of the way in, on a char boundary).
        let parts: Vec<Result<Bytes, Infallible>> = match item {
            Ok(b) if b.len() > 3 => {
                let mut cut = b.len() / 3;
                while std::str::from_utf8(&b[..cut]).is_err() && cut < b.len() {
                    cut += 1;
                }
                vec![Ok(b.slice(..cut)), Ok(b.slice(cut..))]
            }
            other => vec![other],
        };
        futures_util::stream::iter(parts)
    });
    Body::from_stream(stream)
}

use futures_util::StreamExt as _;

#[derive(Clone, Copy, PartialEq, Eq)]
enum StreamEnd {
    Close,
    Stall,
}

fn sse_response(body: Body) -> Response {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    resp
}

async fn chat(
    State(st): State<Arc<Shared>>,
    axum::Extension(kill): axum::Extension<Kill>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = record(&st, &uri, &headers, &body);
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    tokio::time::sleep(reply.latency).await;
    if let Some(resp) = fault_response(&reply, &Dialect::OpenAi, &kill).await {
        return resp;
    }
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake-model")
        .to_owned();
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let id = format!(
        "chatcmpl-{}-{}",
        st.name,
        st.ids.fetch_add(1, Ordering::SeqCst)
    );
    let prompt_tokens = token_count(&req["messages"]);
    let pieces = words(&reply.text);
    let completion_tokens = pieces.len() as u64;
    let mut usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    if let Some(cached) = reply.cached_tokens {
        usage["prompt_tokens_details"] = json!({"cached_tokens": cached.min(prompt_tokens)});
    }
    if !stream {
        if matches!(reply.fault, Fault::StallMidStream(_)) {
            std::future::pending::<()>().await;
        }
        if reply.fault == Fault::MalformedJson {
            let mut resp = Response::new(Body::from(format!("{{\"id\": \"{id}\", \"choices\": [")));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            return resp;
        }
        let body = json!({
            "id": id, "object": "chat.completion", "created": 1_700_000_000u64, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                         "finish_reason": "stop"}],
            "usage": usage,
        });
        return json_response(200, &[], &body);
    }
    let include_usage = req
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let chunk = |delta: Value, finish: Value| {
        let c = json!({"id": id, "object": "chat.completion.chunk", "created": 1_700_000_000u64,
                       "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {c}\n\n")
    };
    let mut events = Vec::new();
    if reply.fault == Fault::MalformedJson {
        events.push("data: {\"id\": \"broken\", \"choices\": [{\n\n".to_owned());
    }
    events.push(chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    ));
    let cut = match reply.fault {
        Fault::StallMidStream(n) | Fault::TruncatedSse(n) | Fault::StreamError(n) => Some(n),
        _ => None,
    };
    for (i, p) in pieces.iter().enumerate() {
        if cut == Some(i) {
            break;
        }
        events.push(chunk(json!({"content": p}), Value::Null));
    }
    let mut end = StreamEnd::Close;
    match reply.fault {
        Fault::StallMidStream(_) => end = StreamEnd::Stall,
        Fault::TruncatedSse(_) => {}
        Fault::StreamError(_) => {
            let e = error_json(
                &Dialect::OpenAi,
                "server_error",
                "server_error",
                "upstream failed mid-stream",
            );
            events.push(format!("data: {e}\n\n"));
        }
        _ => {
            events.push(chunk(json!({}), json!("stop")));
            if include_usage {
                let c = json!({"id": id, "object": "chat.completion.chunk", "created": 1_700_000_000u64,
                               "model": model, "choices": [], "usage": usage});
                events.push(format!("data: {c}\n\n"));
            }
            events.push("data: [DONE]\n\n".to_owned());
        }
    }
    sse_response(sse_body(events, reply.chunk_delay, end))
}

async fn messages(
    State(st): State<Arc<Shared>>,
    axum::Extension(kill): axum::Extension<Kill>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = record(&st, &uri, &headers, &body);
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    tokio::time::sleep(reply.latency).await;
    if let Some(resp) = fault_response(&reply, &Dialect::Anthropic, &kill).await {
        return resp;
    }
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("claude-fake")
        .to_owned();
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let id = format!("msg_{}_{}", st.name, st.ids.fetch_add(1, Ordering::SeqCst));
    let input_tokens = token_count(&req["messages"]);
    let pieces = words(&reply.text);
    let output_tokens = pieces.len() as u64;
    if !stream {
        if matches!(reply.fault, Fault::StallMidStream(_)) {
            std::future::pending::<()>().await;
        }
        if reply.fault == Fault::MalformedJson {
            let mut resp = Response::new(Body::from("{\"id\": \"msg\", \"content\": ["));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            return resp;
        }
        let body = json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": reply.text}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        });
        return json_response(200, &[], &body);
    }
    let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut events = Vec::new();
    if reply.fault == Fault::MalformedJson {
        events.push(
            "event: message_start\ndata: {\"type\": \"message_start\", \"message\": {\n\n"
                .to_owned(),
        );
    }
    events.push(ev(
        "message_start",
        json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant",
               "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
               "usage": {"input_tokens": input_tokens, "output_tokens": 1,
                         "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
    ));
    events.push(ev(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ));
    events.push(ev("ping", json!({"type": "ping"})));
    let cut = match reply.fault {
        Fault::StallMidStream(n) | Fault::TruncatedSse(n) | Fault::StreamError(n) => Some(n),
        _ => None,
    };
    for (i, p) in pieces.iter().enumerate() {
        if cut == Some(i) {
            break;
        }
        events.push(ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}),
        ));
    }
    let mut end = StreamEnd::Close;
    match reply.fault {
        Fault::StallMidStream(_) => end = StreamEnd::Stall,
        Fault::TruncatedSse(_) => {}
        Fault::StreamError(_) => events.push(ev(
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        )),
        _ => {
            events.push(ev("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
            events.push(ev(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                       "usage": {"output_tokens": output_tokens}}),
            ));
            events.push(ev("message_stop", json!({"type": "message_stop"})));
        }
    }
    sse_response(sse_body(events, reply.chunk_delay, end))
}

/// A deterministic vector for `text`: its length first, then bytes of a simple hash.
pub fn fake_embedding(text: &str) -> Vec<f32> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut v = vec![text.len() as f32];
    for i in 0..7 {
        v.push(((h >> (i * 8)) & 0xff) as f32 / 255.0);
    }
    v
}

async fn embeddings(
    State(st): State<Arc<Shared>>,
    axum::Extension(kill): axum::Extension<Kill>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = record(&st, &uri, &headers, &body);
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    tokio::time::sleep(reply.latency).await;
    if let Some(resp) = fault_response(&reply, &Dialect::OpenAi, &kill).await {
        return resp;
    }
    if reply.fault == Fault::MalformedJson {
        return Response::new(Body::from("{\"data\": ["));
    }
    let inputs: Vec<String> = match &req["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect(),
        _ => Vec::new(),
    };
    let tokens: u64 = inputs.iter().map(|s| (s.len() as u64 / 4).max(1)).sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"object": "embedding", "index": i, "embedding": fake_embedding(s)}))
        .collect();
    let model = req.get("model").cloned().unwrap_or(json!("fake-embed"));
    json_response(
        200,
        &[],
        &json!({"object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
}

async fn models(State(st): State<Arc<Shared>>) -> Response {
    let len = st.max_model_len.load(Ordering::SeqCst);
    json_response(
        200,
        &[],
        &json!({"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 1_700_000_000u64,
                 "owned_by": "vllm", "root": "fake-model", "max_model_len": len}]}),
    )
}

async fn health(State(st): State<Arc<Shared>>) -> Response {
    st.health_checks.fetch_add(1, Ordering::SeqCst);
    if *lock(&st.healthy) {
        StatusCode::OK.into_response()
    } else {
        StatusCode::SERVICE_UNAVAILABLE.into_response()
    }
}

async fn metrics(State(st): State<Arc<Shared>>) -> Response {
    st.metrics_scrapes.fetch_add(1, Ordering::SeqCst);
    let l = lock(&st.load).clone();
    let (kv, pq, ph) = if l.legacy_names {
        (
            "vllm:gpu_cache_usage_perc",
            "vllm:gpu_prefix_cache_queries_total",
            "vllm:gpu_prefix_cache_hits_total",
        )
    } else {
        (
            "vllm:kv_cache_usage_perc",
            "vllm:prefix_cache_queries_total",
            "vllm:prefix_cache_hits_total",
        )
    };
    let labels = "{engine=\"0\",model_name=\"fake-model\"}";
    let text = format!(
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n\
         # TYPE vllm:num_requests_running gauge\n\
         vllm:num_requests_running{labels} {}\n\
         # HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n\
         # TYPE vllm:num_requests_waiting gauge\n\
         vllm:num_requests_waiting{labels} {}\n\
         # TYPE {kv} gauge\n\
         {kv}{labels} {}\n\
         # TYPE {pq} counter\n\
         {pq}{labels} {}\n\
         # TYPE {ph} counter\n\
         {ph}{labels} {}\n\
         # TYPE vllm:time_to_first_token_seconds histogram\n\
         vllm:time_to_first_token_seconds_bucket{{le=\"0.001\",model_name=\"fake-model\"}} 0\n\
         vllm:time_to_first_token_seconds_count{labels} 0\n",
        l.running, l.waiting, l.kv_cache_usage, l.prefix_cache_queries, l.prefix_cache_hits
    );
    let mut resp = Response::new(Body::from(text));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}
