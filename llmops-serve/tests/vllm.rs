//! The vLLM provider against the fake upstream: metrics scraping (current and legacy
//! names), health probing removing and restoring replicas, the context window, cache salts
//! and pass-through parameters.

#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use llmops_core::{BoxLlmService, Provider};
use llmops_core::{ChatRequest, ErrorKind, LlmRequest, Message, RequestContext};
use llmops_serve::config::{ModelConfig, ProviderConfig, ServeConfig, ServerConfig};
use llmops_serve::gateway::Gateway;
use llmops_serve::gateway::TargetService;
use llmops_serve::layers::balance::{Balance, Endpoint, LoadSource, Strategy};
use llmops_serve::providers::vllm::{VllmOptions, VllmProvider};
use llmops_serve::providers::{HttpProviderConfig, HttpTransport};
use llmops_testkit::{FakeUpstream, VllmLoad};
use serde_json::{Value, json};
use tower::ServiceExt;

fn replica(up: &FakeUpstream, name: &str, options: VllmOptions) -> VllmProvider {
    let cfg = HttpProviderConfig::new(name, up.openai_base());
    VllmProvider::new(
        &cfg,
        options,
        HttpTransport::shared(Duration::from_secs(5)).unwrap(),
    )
    .unwrap()
}

fn gateway(providers: Value, models: Value) -> Gateway {
    let providers: BTreeMap<String, ProviderConfig> = serde_json::from_value(providers).unwrap();
    let models: BTreeMap<String, ModelConfig> = serde_json::from_value(models).unwrap();
    Gateway::from_config(&ServeConfig::new(
        ServerConfig::default(),
        providers,
        models,
    ))
    .unwrap()
}

fn chat(max_tokens: Option<u64>) -> LlmRequest {
    let mut req = ChatRequest::new("chat", vec![Message::user("hello")]);
    req.max_tokens = max_tokens;
    LlmRequest::chat(
        RequestContext::new()
            .with_timeout(Duration::from_secs(10))
            .with_tenant("acme"),
        req,
    )
}

#[tokio::test]
async fn scrapes_load_and_tolerates_renamed_metrics() {
    let up = FakeUpstream::start().await;
    let r = replica(&up, "v1", VllmOptions::default());
    up.set_load(VllmLoad {
        waiting: 4.0,
        running: 7.0,
        kv_cache_usage: 0.42,
        prefix_cache_queries: 100.0,
        prefix_cache_hits: 60.0,
        legacy_names: false,
    });
    let m = r.scrape_metrics().await.unwrap();
    assert_eq!(
        (m.waiting, m.running, m.kv_cache_usage),
        (4.0, 7.0, Some(0.42))
    );
    assert_eq!(
        (m.prefix_cache_queries, m.prefix_cache_hits),
        (Some(100.0), Some(60.0))
    );
    let load = r.replica().load();
    assert_eq!(load.queue_depth, Some(4.0));
    up.set_load(VllmLoad {
        kv_cache_usage: 0.9,
        legacy_names: true,
        ..VllmLoad::default()
    });
    assert_eq!(r.scrape_metrics().await.unwrap().kv_cache_usage, Some(0.9));
    assert_eq!(up.metrics_scrapes(), 2);
}

#[tokio::test]
async fn health_probes_remove_and_restore_a_replica() {
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let (ra, rb) = (
        replica(&a, "a", VllmOptions::default()),
        replica(&b, "b", VllmOptions::default()),
    );
    let endpoint = |r: &VllmProvider| {
        let svc = BoxLlmService::new(TargetService::new(Arc::new(r.clone()), "m"));
        Endpoint::new(r.name().to_owned(), svc).with_load_source(r.replica())
    };
    let balance = Balance::with_strategy(
        vec![endpoint(&ra), endpoint(&rb)],
        Strategy::LeastOutstanding,
    );
    a.set_healthy(false);
    assert!(!ra.probe_health().await);
    assert!(rb.probe_health().await);
    for _ in 0..10 {
        let r = balance.clone().oneshot(chat(None)).await.unwrap();
        assert_eq!(r.meta.provider.as_deref(), Some("b"));
    }
    assert_eq!(a.calls(), 0, "an unhealthy replica gets no traffic");
    a.set_healthy(true);
    assert!(ra.probe_health().await);
    for _ in 0..20 {
        balance.clone().oneshot(chat(None)).await.unwrap();
    }
    assert!(a.calls() > 0, "a restored replica gets traffic again");
}

#[tokio::test]
async fn the_gateway_runs_the_probes_in_the_background() {
    let up = FakeUpstream::start().await;
    up.set_load(VllmLoad {
        waiting: 3.0,
        running: 1.0,
        kv_cache_usage: 0.5,
        ..VllmLoad::default()
    });
    let gw = gateway(
        json!({"v": {"kind": "vllm", "base_url": up.openai_base(), "health_interval_ms": 20, "metrics_interval_ms": 20}}),
        json!({"chat": {"targets": ["v/m"], "strategy": "least-outstanding"}}),
    );
    let mut metrics = String::new();
    for _ in 0..250 {
        metrics = gw.autoscaling_metrics();
        if metrics.contains("llmops_upstream_queue_depth") && up.health_checks() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        metrics.contains("llmops_upstream_queue_depth{model=\"chat\",target=\"v\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("llmops_upstream_kv_cache_usage{model=\"chat\",target=\"v\"} 0.5"),
        "{metrics}"
    );
    assert!(up.health_checks() > 0);
    drop(gw);
}

#[tokio::test]
async fn context_window_refusal_falls_back_to_a_bigger_model() {
    let (small, big) = (FakeUpstream::start().await, FakeUpstream::start().await);
    small.set_max_model_len(1000);
    let gw = gateway(
        json!({"small": {"kind": "vllm", "base_url": small.openai_base()}, "big": {"kind": "openai", "base_url": big.openai_base()}}),
        json!({"chat": {"targets": ["small/m", "big/m"]}}),
    );
    // Wait until the background probe learned the context window.
    let r = replica(&small, "probe", VllmOptions::default());
    assert_eq!(r.fetch_max_model_len().await.unwrap(), Some(1000));
    let svc = gw.service("chat").unwrap();
    let mut learned = false;
    for _ in 0..250 {
        small.set_healthy(true);
        let resp = svc.clone().oneshot(chat(Some(4000))).await.unwrap();
        if resp.meta.provider.as_deref() == Some("big") {
            learned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(learned, "requests over the window go to the bigger model");
    let calls = small.calls();
    let resp = svc.clone().oneshot(chat(Some(100))).await.unwrap();
    assert_eq!(resp.meta.provider.as_deref(), Some("small"));
    assert_eq!(small.calls(), calls + 1);

    // The provider alone refuses before calling.
    let before = small.calls();
    let err = r
        .chat(
            ChatRequest::new("m", vec![Message::user("x")]).with_max_tokens(5000),
            &RequestContext::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ContextLengthExceeded);
    assert_eq!(small.calls(), before);
}

#[tokio::test]
async fn cache_salt_per_tenant_and_extra_params_pass_through() {
    let up = FakeUpstream::start().await;
    let mut opts = VllmOptions::default();
    opts.cache_salt_per_tenant = true;
    let r = replica(&up, "v", opts);
    let mut req = ChatRequest::new("m", vec![Message::user("x")]);
    req.extra.insert("top_k".into(), json!(20));
    req.extra.insert(
        "chat_template_kwargs".into(),
        json!({"enable_thinking": false}),
    );
    r.chat(req.clone(), &RequestContext::new().with_tenant("acme"))
        .await
        .unwrap();
    req.extra.insert("cache_salt".into(), json!("explicit"));
    r.chat(req, &RequestContext::new().with_tenant("acme"))
        .await
        .unwrap();
    let recorded = up.requests();
    assert_eq!(recorded[0].body["cache_salt"], "acme");
    assert_eq!(recorded[0].body["top_k"], 20);
    assert_eq!(
        recorded[0].body["chat_template_kwargs"]["enable_thinking"],
        false
    );
    assert_eq!(
        recorded[1].body["cache_salt"], "explicit",
        "a request's own salt is kept"
    );
}

#[tokio::test]
async fn a_replica_marked_down_is_skipped_by_a_fallback_chain() {
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    a.set_healthy(false);
    let gw = gateway(
        json!({"a": {"kind": "vllm", "base_url": a.openai_base(), "health_interval_ms": 20},
               "b": {"kind": "vllm", "base_url": b.openai_base(), "health_interval_ms": 20}}),
        json!({"chat": {"targets": ["a/m", "b/m"]}}),
    );
    let svc = gw.service("chat").unwrap();
    // Once the probe has seen `a` down, requests go straight to `b`.
    for _ in 0..250 {
        if a.health_checks() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = a.calls();
    for _ in 0..5 {
        let r = svc.clone().oneshot(chat(None)).await.unwrap();
        assert_eq!(r.meta.provider.as_deref(), Some("b"));
        assert_eq!(r.meta.attempts, 1, "a refused call is not an attempt");
    }
    assert_eq!(a.calls(), before);
}
