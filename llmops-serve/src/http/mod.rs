//! The OpenAI-compatible HTTP edge: an axum [`Router`] over a [`Gateway`].
//!
//! Routes: `POST /v1/chat/completions` (JSON or server-sent events), `POST /v1/embeddings`,
//! `GET /v1/models`, `GET /health`. Every failure — a body that is not JSON, an unknown
//! model, a budget refusal, an upstream outage — is answered with the OpenAI error JSON
//! (`{"error": {"message", "type", "code", "param"}}`) and the status
//! [`Error::http_status`](llmops_core::Error::http_status) gives; nothing panics and no
//! request hangs past its deadline.
//!
//! Streams: the edge waits for the first chunk before it commits to a 200, so a stream that
//! fails before any output is still an ordinary HTTP error. After that, a failure is sent as
//! a final `data: {"error": ...}` event (which the OpenAI SDKs raise on) and no `[DONE]`
//! follows: a broken stream never looks like a finished one. The edge always asks the
//! pipeline for usage (`stream_options.include_usage`), so accounting layers see it, and
//! strips the usage chunk again when the client did not ask for it. When the client goes
//! away, the response stream is dropped, which drops the pipeline's stream and cancels the
//! upstream request.
//!
//! Load shedding: the model routes admit at most `[server] max_in_flight` requests at once
//! (see [`Admission`]). A request holds its slot from admission until its response body has
//! been sent to the end or dropped; over the limit it is answered at once with HTTP 503
//! `overloaded` and `Retry-After`, and no pipeline sees it. `/v1/models` and `/health` are
//! never shed.
//!
//! Threads: [`serve_app`] serves on the caller's runtime (typically tokio's work-stealing
//! one); [`serve_app_per_core`] hands each connection to one of several single-threaded
//! runtimes, so that a request never changes threads (what `llmops serve` does by default).

mod per_core;
mod shed;
mod sse;

pub use per_core::{default_workers, serve_app_per_core};
pub use shed::{Admission, InFlight, SHED_RETRY_AFTER};

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use llmops_core::{
    CacheControl, EmbeddingRequest, Error, ErrorKind, LlmRequest, LlmResponse, ModelList,
    PromptRef, RequestContext, ResponseBody, ResponseMeta, StreamOptions, TraceContext, json_error,
    parse_chat_request,
};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::gateway::Gateway;

/// Header naming the target that answered.
pub const HEADER_PROVIDER: &str = "x-llmops-provider";
/// Header counting upstream attempts.
pub const HEADER_ATTEMPTS: &str = "x-llmops-attempts";
/// Header carrying the request id.
pub const HEADER_REQUEST_ID: &str = "x-request-id";
/// Header naming the prompt template of the request.
pub const HEADER_PROMPT_ID: &str = "x-llmops-prompt-id";
/// Header naming the prompt template's version.
pub const HEADER_PROMPT_VERSION: &str = "x-llmops-prompt-version";

/// The edge's router, ready to serve or to nest in a larger axum application.
pub fn router(gateway: Gateway) -> Router {
    let limit = gateway.max_body_bytes();
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(embeddings))
        // Admission comes first, before the body is read: a shed request costs almost nothing.
        .route_layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            shed::admit,
        ))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(gateway)
}

/// The listen backlog [`bind`] asks for when none is configured: the kernel's own maximum
/// (`net.core.somaxconn` on Linux, read at bind time), or 4096 where it cannot be read.
///
/// tokio's and std's `TcpListener::bind` ask for 1024 (and Linux before 5.4 caps every request
/// at 128 by default). A gateway
/// receiving thousands of new connections a second — a cold start at full rate, or clients
/// without keep-alive — overflows that queue within a fraction of a second whenever the accept
/// loop falls behind, and the kernel then drops SYNs: each dropped client waits a full
/// SYN retransmission timeout (1 s, then 3 s) and opens yet more connections meanwhile.
pub fn default_backlog() -> u32 {
    #[cfg(target_os = "linux")]
    if let Ok(text) = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        && let Ok(max) = text.trim().parse::<u32>()
        && max > 0
    {
        return max;
    }
    4096
}

/// Binds a listening socket on `addr` with `SO_REUSEADDR` and a listen backlog of `backlog`
/// pending connections (the kernel caps it at its own maximum); `None` takes
/// [`default_backlog`].
///
/// # Errors
///
/// The socket cannot be created, bound (the address is in use or not local) or put into the
/// listening state.
///
/// # Panics
///
/// Outside a tokio runtime with I/O enabled, like tokio's own `TcpListener` constructors.
pub fn bind(addr: std::net::SocketAddr, backlog: Option<u32>) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(
        backlog
            .unwrap_or_else(default_backlog)
            .clamp(1, i32::MAX as u32),
    )
}

/// Serves `gateway` on `listener` until `shutdown` resolves, then finishes the requests in
/// flight.
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_app(listener, router(gateway), shutdown).await
}

/// Serves any axum application — typically [`router`] merged with more routes, such as a
/// `/metrics` endpoint — until `shutdown` resolves.
///
/// Connections get `TCP_NODELAY`: streamed chunks are small writes, and with Nagle's
/// algorithm each would wait for the client's delayed ACK (40 ms on Linux).
pub async fn serve_app(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Turns an error into the OpenAI-style error response.
pub fn error_response(err: &Error, request_id: Option<&str>) -> Response {
    let status =
        StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(&err.to_body()).unwrap_or_default();
    let mut resp = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(after) = err.retry_after() {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        resp.headers_mut().insert(HEADER_REQUEST_ID, id);
    }
    resp
}

/// Builds the request context from the headers: authentication (virtual key → tenant),
/// request id, trace context and prompt template reference.
pub fn request_context(gw: &Gateway, headers: &HeaderMap) -> Result<RequestContext, Error> {
    let mut ctx = RequestContext::new().with_timeout(gw.request_timeout());
    if let Some(id) = header_str(headers, HEADER_REQUEST_ID)
        && !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_graphic())
    {
        ctx = ctx.with_request_id(id);
    }
    if gw.requires_key() {
        let presented = header_str(headers, header::AUTHORIZATION.as_str())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(secret) = presented.filter(|s| !s.is_empty()) else {
            return Err(Error::new(
                ErrorKind::Auth,
                "missing API key: send it as `Authorization: Bearer <key>`",
            ));
        };
        let Some(key) = gw.authenticate(secret) else {
            return Err(Error::new(ErrorKind::Auth, "invalid API key"));
        };
        ctx = ctx
            .with_tenant(key.tenant.clone())
            .with_api_key_id(key.id.clone());
    }
    if let Some(tp) = header_str(headers, "traceparent")
        && let Some(trace) = TraceContext::parse(tp, header_str(headers, "tracestate"))
    {
        ctx = ctx.with_trace(trace);
    }
    if let Some(id) = header_str(headers, HEADER_PROMPT_ID) {
        let version = header_str(headers, HEADER_PROMPT_VERSION).unwrap_or("unversioned");
        ctx = ctx.with_prompt(PromptRef::new(id, version));
    }
    if let Some(cc) =
        header_str(headers, header::CACHE_CONTROL.as_str()).and_then(CacheControl::from_header)
    {
        ctx.extensions.insert(cc);
    }
    Ok(ctx)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn body_error(rej: &BytesRejection, limit: usize) -> Error {
    if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::new(
            ErrorKind::PayloadTooLarge,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    } else {
        Error::invalid_request(format!("request body could not be read: {rej}"), None)
    }
}

fn unknown_model(gw: &Gateway, model: &str) -> Error {
    Error::new(
        ErrorKind::ModelNotFound,
        format!(
            "model `{model}` does not exist on this gateway; available models: {}",
            gw.model_names().join(", ")
        ),
    )
    .with_param("model")
}

fn meta_headers(resp: &mut Response, meta: &ResponseMeta, ctx_request_id: &str) {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(ctx_request_id) {
        h.insert(HEADER_REQUEST_ID, v);
    }
    if let Some(p) = meta
        .provider
        .as_deref()
        .and_then(|p| HeaderValue::from_str(p).ok())
    {
        h.insert(HeaderName::from_static(HEADER_PROVIDER), p);
    }
    h.insert(
        HeaderName::from_static(HEADER_ATTEMPTS),
        HeaderValue::from(meta.attempts),
    );
    for (name, value) in &meta.headers {
        h.insert(name.clone(), value.clone());
    }
}

/// What every POST handler does first: the context from the headers, then the body.
#[allow(clippy::result_large_err)] // the error is the finished HTTP response
fn prologue(
    gw: &Gateway,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(RequestContext, Bytes), Response> {
    let ctx = request_context(gw, headers).map_err(|e| error_response(&e, None))?;
    match body {
        Ok(b) => Ok((ctx, b)),
        Err(rej) => Err(error_response(
            &body_error(&rej, gw.max_body_bytes()),
            Some(&ctx.request_id),
        )),
    }
}

/// Calls the pipeline, bounded by the request's deadline.
async fn call_pipeline(
    service: llmops_core::BoxLlmService,
    req: LlmRequest,
) -> Result<LlmResponse, Error> {
    let deadline = req.ctx.deadline;
    let call = service.oneshot(req);
    match deadline {
        Some(d) => tokio::time::timeout_at(d, call).await.unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::Timeout,
                "the request's deadline passed",
            ))
        }),
        None => call.await,
    }
}

async fn chat_completions(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (ctx, body) = match prologue(&gw, &headers, body) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let request_id: Arc<str> = ctx.request_id.clone();
    let fail = |e: Error| error_response(&e, Some(&request_id));
    let mut req = match parse_chat_request(&body) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let Some(service) = gw.service(&req.model) else {
        return fail(unknown_model(&gw, &req.model));
    };
    let mut ctx = ctx;
    if let Some(user) = &req.user {
        ctx = ctx.with_user(user.as_str());
    }
    let deadline = ctx.deadline;
    let stream = req.is_stream();
    let client_wants_usage = req.include_usage();
    if stream {
        let opts = req
            .stream_options
            .get_or_insert_with(StreamOptions::default);
        opts.include_usage = Some(true);
    }
    let result = call_pipeline(service, LlmRequest::chat(ctx, req)).await;
    let LlmResponse { body, meta, .. } = match result {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    match body {
        ResponseBody::Chat(resp) => {
            let json = match serde_json::to_vec(&resp) {
                Ok(j) => j,
                Err(e) => return fail(Error::internal(format!("cannot encode response: {e}"))),
            };
            let mut out = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                json,
            )
                .into_response();
            meta_headers(&mut out, &meta, &request_id);
            out
        }
        ResponseBody::ChatStream(mut s) => {
            // Peek the first chunk: an error before any output is still an HTTP error.
            let first = match deadline {
                Some(d) => match tokio::time::timeout_at(d, s.next()).await {
                    Ok(item) => item,
                    Err(_) => {
                        return fail(Error::new(
                            ErrorKind::Timeout,
                            "no response from upstream before the request's deadline",
                        ));
                    }
                },
                None => s.next().await,
            };
            let first = match first {
                Some(Ok(chunk)) => Some(chunk),
                Some(Err(e)) => return fail(e),
                None => None,
            };
            let body = sse::encode(first, s, client_wants_usage, deadline);
            let mut out = Response::new(Body::from_stream(body));
            let h = out.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert("x-accel-buffering", HeaderValue::from_static("no"));
            meta_headers(&mut out, &meta, &request_id);
            out
        }
        _ => fail(Error::internal(
            "the pipeline answered a chat request with another kind",
        )),
    }
}

async fn embeddings(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (ctx, body) = match prologue(&gw, &headers, body) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let request_id: Arc<str> = ctx.request_id.clone();
    let fail = |e: Error| error_response(&e, Some(&request_id));
    let req: EmbeddingRequest = match std::str::from_utf8(&body)
        .map_err(|e| {
            Error::invalid_request(
                format!(
                    "request body is not valid UTF-8 (at byte {})",
                    e.valid_up_to()
                ),
                None,
            )
        })
        .and_then(|text| serde_json::from_str(text).map_err(|e| json_error(&e)))
    {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if let Err(e) = req.validate() {
        return fail(e);
    }
    let Some(service) = gw.service(&req.model) else {
        return fail(unknown_model(&gw, &req.model));
    };
    let result = call_pipeline(service, LlmRequest::embeddings(ctx, req)).await;
    match result {
        Ok(LlmResponse {
            body: ResponseBody::Embeddings(resp),
            meta,
            ..
        }) => match serde_json::to_vec(&resp) {
            Ok(json) => {
                let mut out = (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    json,
                )
                    .into_response();
                meta_headers(&mut out, &meta, &request_id);
                out
            }
            Err(e) => fail(Error::internal(format!("cannot encode response: {e}"))),
        },
        Ok(_) => fail(Error::internal(
            "the pipeline answered an embeddings request with another kind",
        )),
        Err(e) => fail(e),
    }
}

async fn models(State(gw): State<Gateway>, headers: HeaderMap) -> Response {
    if let Err(e) = request_context(&gw, &headers) {
        return error_response(&e, None);
    }
    axum::Json(ModelList::new(gw.models())).into_response()
}

async fn health() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn not_found(uri: axum::http::Uri) -> Response {
    let err = Error::new(
        ErrorKind::InvalidRequest,
        format!(
            "no route for {}: this gateway serves /v1/chat/completions, /v1/embeddings, \
             /v1/models and /health",
            uri.path()
        ),
    )
    .with_code("not_found");
    let mut resp = error_response(&err, None);
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let err = Error::new(
        ErrorKind::InvalidRequest,
        format!("method {method} is not allowed on {}", uri.path()),
    )
    .with_code("method_not_allowed");
    let mut resp = error_response(&err, None);
    *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bind_listens_and_accepts() {
        for backlog in [None, Some(0), Some(16)] {
            let listener = bind("127.0.0.1:0".parse().unwrap(), backlog).unwrap();
            let addr = listener.local_addr().unwrap();
            assert_ne!(addr.port(), 0);
            let (client, accepted) =
                tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
            assert_eq!(
                client.unwrap().local_addr().unwrap(),
                accepted.unwrap().1,
                "backlog {backlog:?}"
            );
        }
    }

    #[tokio::test]
    async fn bind_reports_an_address_in_use() {
        let first = bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let err = bind(first.local_addr().unwrap(), None).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    }

    #[test]
    fn default_backlog_is_the_kernel_maximum() {
        let backlog = default_backlog();
        #[cfg(target_os = "linux")]
        if let Ok(text) = std::fs::read_to_string("/proc/sys/net/core/somaxconn") {
            assert_eq!(backlog.to_string(), text.trim());
            return;
        }
        assert_eq!(backlog, 4096);
    }
}
