//! The fake upstream seen from a plain HTTP client: each fault does what it says.

#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures

use std::time::Duration;

use llmops_testkit::{FakeUpstream, Reply, VllmLoad};
use serde_json::{Value, json};

async fn post(
    up: &FakeUpstream,
    path: &str,
    body: Value,
) -> Result<reqwest::Response, reqwest::Error> {
    reqwest::Client::new()
        .post(format!("{}{path}", up.url()))
        .json(&body)
        .timeout(Duration::from_secs(5))
        .send()
        .await
}

fn chat(stream: bool) -> Value {
    json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn scripted_replies_are_served_in_order_then_the_default() {
    let up = FakeUpstream::start().await;
    up.push(Reply::status(502))
        .push(Reply::rate_limited(Duration::from_secs(2)))
        .push(Reply::quota());
    let r = post(&up, "/v1/chat/completions", chat(false))
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let r = post(&up, "/v1/chat/completions", chat(false))
        .await
        .unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["retry-after"].to_str().unwrap()
        ),
        (429, "2")
    );
    let r = post(&up, "/v1/chat/completions", chat(false))
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "insufficient_quota");
    let r = post(&up, "/v1/chat/completions", chat(false))
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from the fake upstream."
    );
    assert_eq!(up.calls(), 4);
    assert_eq!(up.remaining(), 0);
}

#[tokio::test]
async fn anthropic_dialect_errors_and_overload() {
    let up = FakeUpstream::start().await;
    up.push(Reply::overloaded()).push(Reply::quota());
    let r = post(&up, "/v1/messages", chat(false)).await.unwrap();
    assert_eq!(r.status(), 529);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error");
    let body: Value = post(&up, "/v1/messages", chat(false))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["error"]["details"]["error_code"],
        "enforced_spend_limit_reached"
    );
}

#[tokio::test]
async fn reset_and_stall_fail_at_the_client() {
    let up = FakeUpstream::start().await;
    up.push(Reply::reset());
    let err = post(&up, "/v1/chat/completions", chat(false))
        .await
        .unwrap_err();
    assert!(!err.is_timeout(), "a reset is not a timeout: {err}");
    up.push(Reply::stall_before_headers());
    let err = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", up.url()))
        .json(&chat(false))
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(up.calls(), 2);
}

#[tokio::test]
async fn streams_end_as_scripted() {
    let up = FakeUpstream::start().await;
    let body = post(&up, "/v1/chat/completions", chat(true))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.ends_with("data: [DONE]\n\n"));
    up.push(Reply::truncated_sse(2));
    let body = post(&up, "/v1/chat/completions", chat(true))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !body.contains("[DONE]")
            && body.contains("\"The\"")
            && body.contains("\" quick\"")
            && !body.contains("\" brown\"")
    );
    up.push(Reply::stream_error(1));
    let body = post(&up, "/v1/messages", chat(true))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("event: error") && !body.contains("message_stop"));
    up.push(Reply::malformed_json());
    let body = post(&up, "/v1/chat/completions", chat(true))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.starts_with("data: {\"id\": \"broken\""));
}

#[tokio::test]
async fn vllm_side_endpoints() {
    let up = FakeUpstream::start().await;
    up.set_load(VllmLoad {
        waiting: 5.0,
        legacy_names: true,
        ..VllmLoad::default()
    })
    .set_max_model_len(2048);
    let c = reqwest::Client::new();
    let metrics = c
        .get(format!("{}/metrics", up.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("vllm:num_requests_waiting{engine=\"0\",model_name=\"fake-model\"} 5")
    );
    assert!(metrics.contains("vllm:gpu_cache_usage_perc"));
    let models: Value = c
        .get(format!("{}/v1/models", up.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["max_model_len"], 2048);
    up.set_healthy(false);
    assert_eq!(
        c.get(format!("{}/health", up.url()))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        (up.health_checks(), up.metrics_scrapes(), up.calls()),
        (1, 1, 0)
    );
}

#[tokio::test]
async fn embeddings_are_deterministic_per_text() {
    let up = FakeUpstream::start().await;
    let body: Value = post(
        &up,
        "/v1/embeddings",
        json!({"model": "e", "input": ["a", "bb", "a"]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let v = |i: usize| body["data"][i]["embedding"].clone();
    assert_eq!(v(0), v(2));
    assert_ne!(v(0), v(1));
    assert_eq!(v(1)[0], 2.0, "the first component is the text's length");
}
