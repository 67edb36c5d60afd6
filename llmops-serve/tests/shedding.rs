//! Load shedding at the edge: `[server] max_in_flight` bounds the model requests in flight;
//! the excess gets HTTP 503 `overloaded` with `Retry-After` and never reaches a provider; a
//! slot is held until the response body ends or is dropped, streams included.
//!
//! Synchronisation is explicit: the provider signals each call it receives and waits on a
//! gate the test opens. Nothing sleeps to let something else happen.

#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use futures_util::StreamExt;
use llmops_core::mock::{MockProvider, MockReply};
use llmops_core::{
    BoxLlmService, ChatRequest, ChatResponse, ChatStream, EmbeddingRequest, EmbeddingResponse,
    Provider, ProviderService, RequestContext, Result,
};
use llmops_serve::config::ServeConfig;
use llmops_serve::gateway::Gateway;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tower::ServiceExt;

/// A provider that reports every call on `entered` and then waits for a permit of `gate`:
/// a non-streamed call before answering, a streamed one after its first chunk.
struct Gated {
    mock: MockProvider,
    calls: AtomicUsize,
    gate: Arc<Semaphore>,
    entered: mpsc::UnboundedSender<()>,
}

#[async_trait]
impl Provider for Gated {
    fn name(&self) -> &str {
        "gated"
    }

    async fn chat(&self, req: ChatRequest, ctx: &RequestContext) -> Result<ChatResponse> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let _ = self.entered.send(());
        self.gate.acquire().await.unwrap().forget();
        self.mock.chat(req, ctx).await
    }

    async fn chat_stream(&self, req: ChatRequest, ctx: &RequestContext) -> Result<ChatStream> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let _ = self.entered.send(());
        let mut inner = self.mock.chat_stream(req, ctx).await?;
        let first = inner.next().await;
        let gate = self.gate.clone();
        let wait = futures_util::stream::once(async move {
            gate.acquire_owned().await.unwrap().forget();
        })
        .filter_map(|()| std::future::ready(None));
        Ok(Box::pin(
            futures_util::stream::iter(first).chain(wait).chain(inner),
        ))
    }

    async fn embed(
        &self,
        req: EmbeddingRequest,
        ctx: &RequestContext,
    ) -> Result<EmbeddingResponse> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let _ = self.entered.send(());
        self.gate.acquire().await.unwrap().forget();
        self.mock.embed(req, ctx).await
    }
}

struct Fixture {
    gw: Gateway,
    app: Router,
    provider: Arc<Gated>,
    entered: mpsc::UnboundedReceiver<()>,
}

impl Fixture {
    fn new(max_in_flight: usize) -> Self {
        let (tx, entered) = mpsc::unbounded_channel();
        let provider = Arc::new(Gated {
            mock: MockProvider::new("gated")
                .default_reply(MockReply::chunks(["one ", "two ", "three"])),
            calls: AtomicUsize::new(0),
            gate: Arc::new(Semaphore::new(0)),
            entered: tx,
        });
        let gw = Gateway::builder()
            .model(
                "m",
                BoxLlmService::new(ProviderService::new(provider.clone())),
            )
            .max_in_flight(max_in_flight)
            .build();
        let app = llmops_serve::http::router(gw.clone());
        Self {
            gw,
            app,
            provider,
            entered,
        }
    }

    fn calls(&self) -> usize {
        self.provider.calls.load(Ordering::SeqCst)
    }

    fn in_flight(&self) -> usize {
        self.gw.admission().in_flight()
    }

    fn open(&self, permits: usize) {
        self.provider.gate.add_permits(permits);
    }

    /// Sends a request in the background; it is in the provider once `entered` says so.
    fn spawn(&self, req: Request<Body>) -> tokio::task::JoinHandle<Response<Body>> {
        let app = self.app.clone();
        tokio::spawn(async move { app.oneshot(req).await.unwrap() })
    }

    async fn send(&self, req: Request<Body>) -> Response<Body> {
        self.app.clone().oneshot(req).await.unwrap()
    }

    async fn wait_entered(&mut self, n: usize) {
        for _ in 0..n {
            self.entered.recv().await.unwrap();
        }
    }
}

fn chat(stream: bool) -> Request<Body> {
    let body =
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream});
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn embeddings() -> Request<Body> {
    let body = json!({"model": "m", "input": "hi"});
    Request::post("/v1/embeddings")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

async fn body_text(resp: Response<Body>) -> String {
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Asserts `resp` is the shedding answer.
async fn assert_shed(resp: Response<Body>) {
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = serde_json::from_str(&body_text(resp).await).unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error");
    assert_eq!(body["error"]["code"], "overloaded");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requests in flight"),
        "{body}"
    );
}

#[tokio::test]
async fn over_the_limit_is_503_with_retry_after_and_never_reaches_the_provider() {
    let mut f = Fixture::new(2);
    let held = [f.spawn(chat(false)), f.spawn(chat(false))];
    f.wait_entered(2).await;
    assert_eq!(f.in_flight(), 2);

    assert_shed(f.send(chat(false)).await).await;
    assert_shed(f.send(chat(true)).await).await;
    assert_shed(f.send(embeddings()).await).await;
    assert_eq!(f.calls(), 2, "a shed request must not reach the provider");
    assert_eq!(f.gw.admission().shed(), 3);
    assert_eq!(f.in_flight(), 2, "shed requests take no slot");

    // What is not a model request is never shed.
    assert_eq!(f.send(get("/health")).await.status(), StatusCode::OK);
    assert_eq!(f.send(get("/v1/models")).await.status(), StatusCode::OK);

    let metrics = f.gw.autoscaling_metrics();
    assert!(
        metrics.contains("llmops_gateway_in_flight 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("llmops_gateway_max_in_flight 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("llmops_gateway_shed_total 3\n"),
        "{metrics}"
    );

    // The held requests finish; once their bodies are sent, new requests are admitted.
    f.open(2);
    for h in held {
        let resp = h.await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = serde_json::from_str(&body_text(resp).await).unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "one two three");
    }
    assert_eq!(f.in_flight(), 0);
    f.open(2);
    assert_eq!(f.send(chat(false)).await.status(), StatusCode::OK);
    assert_eq!(f.send(embeddings()).await.status(), StatusCode::OK);
    assert_eq!(f.calls(), 4);
    assert_eq!(f.gw.admission().shed(), 3);
}

#[tokio::test]
async fn a_response_holds_its_slot_until_its_body_is_consumed() {
    let f = Fixture::new(1);
    f.open(1);
    // The pipeline has answered, but the body has not been sent yet: the slot is still held.
    let resp = f.send(chat(false)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(f.in_flight(), 1);
    assert_shed(f.send(chat(false)).await).await;
    assert!(body_text(resp).await.contains("one two three"));
    assert_eq!(f.in_flight(), 0);
}

#[tokio::test]
async fn a_stream_holds_its_slot_until_it_ends() {
    let mut f = Fixture::new(1);
    // The edge commits to a 200 after the first chunk; the rest waits for the gate.
    let resp = f.send(chat(true)).await;
    f.wait_entered(1).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(f.in_flight(), 1);
    assert_shed(f.send(chat(true)).await).await;
    assert_eq!(f.calls(), 1);

    f.open(1);
    let text = body_text(resp).await;
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(f.in_flight(), 0);

    f.open(1);
    let next = f.send(chat(true)).await;
    assert_eq!(next.status(), StatusCode::OK);
    assert!(body_text(next).await.ends_with("data: [DONE]\n\n"));
    assert_eq!(f.calls(), 2);
}

#[tokio::test]
async fn a_dropped_stream_releases_its_slot() {
    let mut f = Fixture::new(1);
    let resp = f.send(chat(true)).await;
    f.wait_entered(1).await;
    assert_eq!(f.in_flight(), 1);
    assert_shed(f.send(chat(true)).await).await;

    // The client went away: the body is dropped, and so is the slot.
    drop(resp);
    assert_eq!(f.in_flight(), 0);
    f.open(1);
    let next = f.send(chat(false)).await;
    assert_eq!(next.status(), StatusCode::OK);
    assert_eq!(f.calls(), 2);
}

#[tokio::test]
async fn a_request_cancelled_before_its_answer_releases_its_slot() {
    let mut f = Fixture::new(1);
    let held = f.spawn(chat(false));
    f.wait_entered(1).await;
    assert_eq!(f.in_flight(), 1);
    held.abort();
    assert!(held.await.unwrap_err().is_cancelled());
    assert_eq!(f.in_flight(), 0);
    f.open(1);
    assert_eq!(f.send(chat(false)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn zero_means_no_limit() {
    let mut f = Fixture::new(0);
    let held: Vec<_> = (0..8).map(|_| f.spawn(chat(false))).collect();
    f.wait_entered(8).await;
    assert_eq!(f.in_flight(), 8);
    assert_eq!(f.gw.admission().max(), None);
    assert!(
        f.gw.autoscaling_metrics()
            .contains("llmops_gateway_max_in_flight 0\n")
    );
    f.open(8);
    for h in held {
        let resp = h.await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        drop(resp);
    }
    assert_eq!(f.in_flight(), 0);
    assert_eq!(f.gw.admission().shed(), 0);
}

#[tokio::test]
async fn the_limit_comes_from_the_server_section() {
    let mut cfg = ServeConfig::embedded_default();
    assert_eq!(
        Gateway::from_config(&cfg).unwrap().admission().max(),
        Some(llmops_serve::config::DEFAULT_MAX_IN_FLIGHT)
    );
    cfg.server.max_in_flight = 7;
    assert_eq!(
        Gateway::from_config(&cfg).unwrap().admission().max(),
        Some(7)
    );
    cfg.server.max_in_flight = 0;
    assert_eq!(Gateway::from_config(&cfg).unwrap().admission().max(), None);
}

/// Over a real socket: the 503 reaches the client with its headers, and a client that hangs
/// up on a stream gives its slot back.
#[tokio::test]
async fn over_http_a_client_hanging_up_on_a_stream_frees_its_slot() {
    let mut f = Fixture::new(1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(llmops_serve::http::serve(
        listener,
        f.gw.clone(),
        std::future::pending(),
    ));
    let client = reqwest::Client::new();
    let url = format!("{base}/v1/chat/completions");
    let body = |stream: bool| json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream});

    let resp = client.post(&url).json(&body(true)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut events = resp.bytes_stream();
    let first = events.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    f.wait_entered(1).await;

    let shed = client.post(&url).json(&body(false)).send().await.unwrap();
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["retry-after"], "1");
    let err: Value = shed.json().await.unwrap();
    assert_eq!(err["error"]["code"], "overloaded");
    assert_eq!(f.calls(), 1);

    drop(events);
    // The server sees the connection close; wait for it (bounded), without fixed sleeps.
    tokio::time::timeout(Duration::from_secs(10), async {
        while f.in_flight() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the slot of a dropped stream is released");

    f.open(1);
    let ok = client.post(&url).json(&body(false)).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(f.calls(), 2);
}
