//! `strategy = "prefix-aware"` against two fake vLLM replicas with `/metrics`: requests sharing
//! a long prefix stay on one replica until its reported queue passes the imbalance guard, then
//! spill to the other.

#![allow(clippy::unwrap_used)] // test fixtures

use std::collections::BTreeMap;
use std::time::Duration;

use llmops_core::{ChatRequest, LlmRequest, Message, RequestContext};
use llmops_serve::config::{ModelConfig, ProviderConfig, ServeConfig, ServerConfig};
use llmops_serve::gateway::Gateway;
use llmops_testkit::{FakeUpstream, VllmLoad};
use serde_json::json;
use tower::ServiceExt;

fn request(question: &str) -> LlmRequest {
    let context = "Background document. ".repeat(200); // ~4 KB shared prefix
    let req = ChatRequest::new(
        "chat",
        vec![Message::system(context), Message::user(question)],
    );
    LlmRequest::chat(
        RequestContext::new().with_timeout(Duration::from_secs(10)),
        req,
    )
}

#[tokio::test]
async fn shared_prefix_sticks_then_spills_past_the_guard() {
    let a = FakeUpstream::start().await;
    let b = FakeUpstream::start().await;
    let providers: BTreeMap<String, ProviderConfig> = serde_json::from_value(json!({
        "a": {"kind": "vllm", "base_url": a.openai_base(), "metrics_interval_ms": 20},
        "b": {"kind": "vllm", "base_url": b.openai_base(), "metrics_interval_ms": 20},
    }))
    .unwrap();
    let models: BTreeMap<String, ModelConfig> = serde_json::from_value(json!({
        "chat": {"targets": ["a/m", "b/m"], "strategy": "prefix-aware"}
    }))
    .unwrap();
    let gw = Gateway::from_config(&ServeConfig::new(
        ServerConfig::default(),
        providers,
        models,
    ))
    .unwrap();
    let svc = gw.service("chat").unwrap();

    // Every request shares the prefix: after the first, all go where it went.
    for i in 0..6 {
        svc.clone()
            .oneshot(request(&format!("question {i}")))
            .await
            .unwrap();
    }
    let (first, other) = if a.calls() > b.calls() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!(
        (first.calls(), other.calls()),
        (6, 0),
        "the prefix did not stick"
    );

    // The chosen replica reports a long queue: past the guard, load wins.
    first.set_load(VllmLoad {
        waiting: 100.0,
        ..VllmLoad::default()
    });
    tokio::time::sleep(Duration::from_millis(300)).await; // a few scrape intervals
    for i in 6..10 {
        svc.clone()
            .oneshot(request(&format!("question {i}")))
            .await
            .unwrap();
    }
    assert_eq!(
        first.calls(),
        6,
        "requests kept going to the overloaded replica"
    );
    assert_eq!(other.calls(), 4);

    // The queue drains: both replicas now hold the prefix, the less loaded one serves.
    first.set_load(VllmLoad::default());
    tokio::time::sleep(Duration::from_millis(300)).await;
    svc.clone().oneshot(request("question 10")).await.unwrap();
    assert_eq!(first.calls() + other.calls(), 11);
}
