//! A do-nothing pass-through built from the gateway's own HTTP stack: the edge's server
//! (`llmops_serve::http::bind` and `serve_app_per_core` — or `serve_app` with
//! `--work-stealing` —, axum and hyper) and the providers' client (`HttpTransport`, reqwest,
//! one pool per thread), in the gateway's default threading. It forwards `POST /v1/chat/completions` to the upstream as
//! bytes — no parsing, no pipeline — and streams the answer back.
//!
//! Measured in the same run as `llmops serve` (`compare --gateway name=passthrough,...`), it
//! separates what the HTTP stack costs from what the gateway adds on top of it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use llmops_serve::providers::HttpTransport;

struct Upstream {
    transport: HttpTransport,
    url: String,
}

async fn forward(State(up): State<Arc<Upstream>>, headers: HeaderMap, body: Bytes) -> Response {
    let mut req = up.transport.client().post(&up.url).body(body);
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    match req.send().await {
        Ok(resp) => {
            let mut out = Response::builder().status(resp.status().as_u16());
            if let Some(ct) = resp.headers().get(header::CONTENT_TYPE) {
                out = out.header(header::CONTENT_TYPE, ct);
            }
            out.body(Body::from_stream(resp.bytes_stream()))
                .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// Binds the pass-through in front of `upstream` (a base URL ending in `/v1`) and serves it in
/// the background — on one single-threaded runtime per CPU like `llmops serve`, or on the
/// caller's runtime with `work_stealing` —; returns its address.
pub(crate) async fn spawn(
    listen: SocketAddr,
    upstream: &str,
    work_stealing: bool,
) -> anyhow::Result<SocketAddr> {
    let transport =
        HttpTransport::new(Duration::from_secs(5)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let state = Arc::new(Upstream {
        transport,
        url: format!("{}/chat/completions", upstream.trim_end_matches('/')),
    });
    let listener = llmops_serve::http::bind(listen, None)?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/v1/chat/completions", post(forward))
        .with_state(state);
    tokio::spawn(async move {
        let served = if work_stealing {
            llmops_serve::http::serve_app(listener, app, std::future::pending()).await
        } else {
            let workers = llmops_serve::http::default_workers();
            llmops_serve::http::serve_app_per_core(listener, app, workers, std::future::pending())
                .await
        };
        if let Err(e) = served {
            eprintln!("pass-through stopped: {e}");
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::{self, UpstreamConfig};

    const REQUEST: &str = r#"{"model":"bench","messages":[{"role":"user","content":"hi"}]}"#;

    async fn post(url: &str, body: &'static str) -> (u16, String) {
        let resp = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    #[tokio::test]
    async fn forwards_answers_and_streams_unchanged() {
        let cfg = UpstreamConfig {
            chunks: 4,
            chunk_delay: Duration::ZERO,
        };
        let up = upstream::spawn("127.0.0.1:0".parse().unwrap(), cfg)
            .await
            .unwrap();
        let pt = spawn(
            "127.0.0.1:0".parse().unwrap(),
            &format!("http://{up}/v1"),
            false,
        )
        .await
        .unwrap();
        let direct = post(&format!("http://{up}/v1/chat/completions"), REQUEST).await;
        let through = post(&format!("http://{pt}/v1/chat/completions"), REQUEST).await;
        assert_eq!(direct.0, 200);
        assert_eq!(through, direct);

        let streamed =
            r#"{"model":"bench","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let direct = post(&format!("http://{up}/v1/chat/completions"), streamed).await;
        let through = post(&format!("http://{pt}/v1/chat/completions"), streamed).await;
        assert!(
            through.1.trim_end().ends_with("data: [DONE]"),
            "{}",
            through.1
        );
        assert_eq!(through, direct);
    }

    #[tokio::test]
    async fn answers_502_when_the_upstream_is_down() {
        // A port that was free a moment ago: nothing listens there.
        let free = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let pt = spawn(
            "127.0.0.1:0".parse().unwrap(),
            &format!("http://{free}/v1"),
            true,
        )
        .await
        .unwrap();
        let (status, _) = post(&format!("http://{pt}/v1/chat/completions"), REQUEST).await;
        assert_eq!(status, 502);
    }
}
