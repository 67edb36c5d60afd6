//! `strategy = "prefix-aware"` against two fake vLLM replicas with `/metrics`: requests sharing
//! a long prefix stay on one replica until its reported queue passes the imbalance guard, then
//! spill to the other; and a replica that restarts (its prefix-cache counter goes down) loses
//! its prefixes in the index.

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

/// The index learns from the replicas' own counters: when a replica's
/// `vllm:prefix_cache_queries_total` goes down, it restarted with an empty cache, and the
/// gateway stops routing to it for prefixes it no longer holds.
#[tokio::test]
async fn a_replica_that_restarts_loses_its_prefixes_in_the_index() {
    let a = FakeUpstream::start().await;
    let b = FakeUpstream::start().await;
    let counters = |waiting: f64, queries: f64| VllmLoad {
        waiting,
        prefix_cache_queries: queries,
        ..VllmLoad::default()
    };
    a.set_load(counters(0.0, 5_000.0));
    b.set_load(counters(0.0, 5_000.0));
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
    tokio::time::sleep(Duration::from_millis(200)).await; // the first scrapes
    for i in 0..3 {
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
    assert_eq!((first.calls(), other.calls()), (3, 0));

    // A short queue on the replica holding the prefix: the prefix still wins.
    first.set_load(counters(1.0, 6_000.0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    svc.clone().oneshot(request("question 3")).await.unwrap();
    assert_eq!(first.calls(), 4, "a short queue outweighed the prefix");

    // The replica restarts (its counter starts again from zero): with the prefix forgotten,
    // the same short queue now sends the request to the other replica.
    first.set_load(counters(1.0, 40.0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    svc.clone().oneshot(request("question 4")).await.unwrap();
    assert_eq!(
        (first.calls(), other.calls()),
        (4, 1),
        "the index still believed the restarted replica held the prefix"
    );
}
