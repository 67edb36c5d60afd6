//! The HTTP edge over real sockets: OpenAI-shaped answers, streams, and every kind of bad
//! input answered with the right status and error JSON.

#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use llmops_core::mock::{MockProvider, MockReply};
use llmops_core::sim::SimProvider;
use llmops_core::{BoxLlmService, ErrorKind, ProviderService};
use llmops_serve::gateway::Gateway;
use serde_json::{Value, json};

struct Server {
    base: String,
    client: reqwest::Client,
}

async fn start(gateway: Gateway) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(llmops_serve::http::serve(
        listener,
        gateway,
        std::future::pending(),
    ));
    Server {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
    }
}

fn sim_gateway() -> Gateway {
    let sim = Arc::new(SimProvider::builder().name("local").build());
    Gateway::builder()
        .model("sim", BoxLlmService::new(ProviderService::new(sim)))
        .build()
}

fn mock_gateway(mock: &MockProvider) -> Gateway {
    Gateway::builder()
        .model(
            "mock",
            BoxLlmService::new(ProviderService::new(Arc::new(mock.clone()))),
        )
        .max_body_bytes(64 * 1024)
        .build()
}

impl Server {
    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
        (status, json)
    }

    async fn sse(&self, body: Value) -> Vec<String> {
        let resp = self
            .client
            .post(format!("{}/v1/chat/completions", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let mut events = Vec::new();
        let mut buf = String::new();
        let mut stream = resp.bytes_stream();
        while let Some(bytes) = stream.next().await {
            buf.push_str(std::str::from_utf8(&bytes.unwrap()).unwrap());
            while let Some(end) = buf.find("\n\n") {
                let ev = buf[..end].to_owned();
                buf.drain(..end + 2);
                events.push(ev.strip_prefix("data: ").expect("data: prefix").to_owned());
            }
        }
        assert!(buf.is_empty(), "trailing bytes: {buf:?}");
        events
    }
}

#[tokio::test]
async fn chat_completion_has_openai_shape_and_headers() {
    let s = start(sim_gateway()).await;
    let resp = s
        .client
        .post(format!("{}/v1/chat/completions", s.base))
        .header("x-request-id", "req-42")
        .json(&json!({"model": "sim", "messages": [{"role": "user", "content": "Hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-llmops-provider"], "local");
    assert_eq!(resp.headers()["x-llmops-attempts"], "1");
    assert_eq!(resp.headers()["x-request-id"], "req-42");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("Simulated")
    );
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        body["usage"]["total_tokens"].as_u64().unwrap(),
        body["usage"]["prompt_tokens"].as_u64().unwrap()
            + body["usage"]["completion_tokens"].as_u64().unwrap()
    );
}

#[tokio::test]
async fn stream_ends_with_done_and_usage_only_when_asked() {
    let s = start(sim_gateway()).await;
    let req =
        json!({"model": "sim", "messages": [{"role": "user", "content": "Hi"}], "stream": true});
    let events = s.sse(req.clone()).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "usage not asked for"
    );
    assert!(chunks.len() > 3);

    let mut with_usage = req;
    with_usage["stream_options"] = json!({"include_usage": true});
    let events = s.sse(with_usage).await;
    let last: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(last["choices"], json!([]));
    assert!(last["usage"]["completion_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn mid_stream_failure_is_an_error_event_not_a_clean_end() {
    let mock = MockProvider::new("m").reply(MockReply::chunks(["a", "b", "c"]).fail_after(2));
    let s = start(mock_gateway(&mock)).await;
    let events = s
        .sse(json!({"model": "mock", "messages": [{"role": "user", "content": "x"}], "stream": true}))
        .await;
    assert_ne!(events.last().unwrap(), "[DONE]");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted");
    assert!(!events.iter().any(|e| e == "[DONE]"));
}

#[tokio::test]
async fn stream_failing_before_output_is_an_http_error() {
    let mock = MockProvider::new("m").reply(MockReply::error(ErrorKind::Overloaded));
    let s = start(mock_gateway(&mock)).await;
    let (status, body) = s
        .post(
            "/v1/chat/completions",
            json!({"model": "mock", "messages": [{"role": "user", "content": "x"}], "stream": true})
                .to_string(),
        )
        .await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "overloaded");
}

#[tokio::test]
async fn dropping_the_response_stops_the_provider() {
    let mock = MockProvider::new("m")
        .chunk_delay(Duration::from_millis(20))
        .default_reply(MockReply::chunks((0..500).map(|i| format!("{i} "))));
    let stats = mock.stream_stats();
    let s = start(mock_gateway(&mock)).await;
    let resp = s
        .client
        .post(format!("{}/v1/chat/completions", s.base))
        .json(&json!({"model": "mock", "messages": [{"role": "user", "content": "x"}], "stream": true}))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut seen = 0;
    while seen < 3 {
        let bytes = body.next().await.unwrap().unwrap();
        seen += std::str::from_utf8(&bytes)
            .unwrap()
            .matches("data: ")
            .count();
    }
    drop(body);
    // The server notices the closed connection and drops the provider's stream.
    for _ in 0..500 {
        if stats.dropped() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stats.dropped(), 1, "provider stream was not dropped");
    assert_eq!(stats.completed(), 0);
    let produced = stats.chunks_produced();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        stats.chunks_produced(),
        produced,
        "provider kept producing after the drop"
    );
    assert!(produced < 500);
}

#[tokio::test]
async fn embeddings_and_models() {
    let s = start(sim_gateway()).await;
    let (status, body) = s
        .post(
            "/v1/embeddings",
            json!({"model": "sim", "input": ["a", "b"]}).to_string(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["data"][1]["index"], 1);

    let models: Value = s
        .client
        .get(format!("{}/v1/models", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "sim");
    let health = s
        .client
        .get(format!("{}/health", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

/// Each malformed request gets the right status and an OpenAI error body.
#[tokio::test]
async fn bad_input_gets_status_and_error_json() {
    let mock = MockProvider::new("m").default_reply(MockReply::text("ok"));
    let s = start(mock_gateway(&mock)).await;
    let huge = format!(
        r#"{{"model":"mock","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(100 * 1024)
    );
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "broken JSON",
            "/v1/chat/completions",
            b"{\"model\": \"mock\", ".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "not JSON at all",
            "/v1/chat/completions",
            b"hello".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "empty body",
            "/v1/chat/completions",
            Vec::new(),
            400,
            "invalid_request",
        ),
        (
            "JSON array",
            "/v1/chat/completions",
            b"[]".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "messages of wrong type",
            "/v1/chat/completions",
            br#"{"model":"mock","messages":"hi"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "temperature as string",
            "/v1/chat/completions",
            br#"{"model":"mock","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#
                .to_vec(),
            400,
            "invalid_request",
        ),
        (
            "missing model",
            "/v1/chat/completions",
            br#"{"messages":[{"role":"user","content":"x"}]}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "empty messages",
            "/v1/chat/completions",
            br#"{"model":"mock","messages":[]}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "unknown role",
            "/v1/chat/completions",
            br#"{"model":"mock","messages":[{"role":"wizard","content":"x"}]}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "temperature out of range",
            "/v1/chat/completions",
            br#"{"model":"mock","messages":[{"role":"user","content":"x"}],"temperature":7}"#
                .to_vec(),
            400,
            "invalid_request",
        ),
        (
            "n = 0",
            "/v1/chat/completions",
            br#"{"model":"mock","messages":[{"role":"user","content":"x"}],"n":0}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "invalid UTF-8",
            "/v1/chat/completions",
            b"{\"model\":\"mock\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}"
                .to_vec(),
            400,
            "invalid_request",
        ),
        (
            "unknown model",
            "/v1/chat/completions",
            br#"{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}"#.to_vec(),
            404,
            "model_not_found",
        ),
        (
            "huge body",
            "/v1/chat/completions",
            huge.into_bytes(),
            413,
            "payload_too_large",
        ),
        (
            "embeddings without input",
            "/v1/embeddings",
            br#"{"model":"mock"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "embeddings with empty input",
            "/v1/embeddings",
            br#"{"model":"mock","input":[]}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "embeddings of unknown model",
            "/v1/embeddings",
            br#"{"model":"nope","input":"x"}"#.to_vec(),
            404,
            "model_not_found",
        ),
        (
            "unknown route",
            "/v1/completions/legacy",
            b"{}".to_vec(),
            404,
            "not_found",
        ),
    ];
    for (what, path, body, status, code) in cases {
        let (got, json) = s.post(path, body).await;
        assert_eq!(got, status, "{what}: {json}");
        assert_eq!(json["error"]["code"], code, "{what}: {json}");
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        assert!(json["error"]["type"].is_string(), "{what}");
    }
    let resp = s
        .client
        .get(format!("{}/v1/chat/completions", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    let json: Value = resp.json().await.unwrap();
    assert_eq!(json["error"]["code"], "method_not_allowed");
    // None of the bad requests reached the provider.
    mock.assert_call_count(0);
}

#[tokio::test]
async fn virtual_keys_decide_the_tenant() {
    let mock = MockProvider::new("m").default_reply(MockReply::text("ok"));
    let gw = Gateway::builder()
        .model(
            "mock",
            BoxLlmService::new(ProviderService::new(Arc::new(mock.clone()))),
        )
        .key("sk-team-a".into(), "team-a", "TEAM_A_KEY")
        .build();
    let s = start(gw).await;
    let body = json!({"model": "mock", "messages": [{"role": "user", "content": "x"}]});
    let no_key = s
        .client
        .post(format!("{}/v1/chat/completions", s.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), 401);
    let bad = s
        .client
        .post(format!("{}/v1/chat/completions", s.base))
        .bearer_auth("sk-wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    assert_eq!(
        bad.json::<Value>().await.unwrap()["error"]["type"],
        "authentication_error"
    );
    let ok = s
        .client
        .post(format!("{}/v1/chat/completions", s.base))
        .bearer_auth("sk-team-a")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let call = &mock.calls()[0];
    assert_eq!(&*call.ctx.tenant, "team-a");
    assert_eq!(call.ctx.api_key_id.as_deref(), Some("TEAM_A_KEY"));
}
