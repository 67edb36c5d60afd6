//! A canned OpenAI-compatible upstream, as fast as axum allows: the baseline every gateway
//! measurement is compared with.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

/// How the canned upstream answers.
#[derive(Clone, Debug)]
pub(crate) struct UpstreamConfig {
    /// Content chunks per streamed answer.
    pub(crate) chunks: usize,
    /// Delay between streamed chunks (0: as fast as possible).
    pub(crate) chunk_delay: Duration,
}

struct Canned {
    completion: Bytes,
    chunk: Bytes,
    tail: Bytes,
    cfg: UpstreamConfig,
}

fn canned(cfg: UpstreamConfig) -> Canned {
    let completion = serde_json::json!({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1_700_000_000u64,
        "model": "bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "The quick brown fox jumps over the lazy dog."},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 24, "completion_tokens": 10, "total_tokens": 34}
    });
    let chunk = "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" fox\"},\"finish_reason\":null}]}\n\n";
    let tail = "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
                data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench\",\"choices\":[],\"usage\":{\"prompt_tokens\":24,\"completion_tokens\":8,\"total_tokens\":32}}\n\n\
                data: [DONE]\n\n";
    Canned {
        completion: Bytes::from(completion.to_string()),
        chunk: Bytes::from_static(chunk.as_bytes()),
        tail: Bytes::from_static(tail.as_bytes()),
        cfg,
    }
}

async fn chat(state: axum::extract::State<Arc<Canned>>, body: Bytes) -> Response {
    // A real upstream parses the request; so does this one, to keep the baseline honest.
    let stream = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => v
            .get("stream")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
        Err(_) => return (StatusCode::BAD_REQUEST, "bad json").into_response(),
    };
    if !stream {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            state.completion.clone(),
        )
            .into_response();
    }
    let st = state.0.clone();
    let n = st.cfg.chunks;
    let delay = st.cfg.chunk_delay;
    let body = futures_util::stream::unfold(0usize, move |i| {
        let st = st.clone();
        async move {
            if i > n {
                return None;
            }
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let bytes = if i == n {
                st.tail.clone()
            } else {
                st.chunk.clone()
            };
            Some((Ok::<_, std::convert::Infallible>(bytes), i + 1))
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn models() -> Response {
    axum::Json(serde_json::json!({"object": "list", "data": [{"id": "bench", "object": "model", "created": 0, "owned_by": "loadgen"}]}))
        .into_response()
}

/// Binds the canned upstream and serves it in the background; returns its address.
pub(crate) async fn spawn(listen: SocketAddr, cfg: UpstreamConfig) -> anyhow::Result<SocketAddr> {
    use axum::serve::ListenerExt;
    let listener = llmops_serve::http::bind(listen, None)?;
    let addr = listener.local_addr()?;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .with_state(Arc::new(canned(cfg)));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("upstream stopped: {e}");
        }
    });
    Ok(addr)
}
