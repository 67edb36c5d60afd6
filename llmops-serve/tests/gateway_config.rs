//! Canary, shadow, batching, concurrency and balancing built from configuration sections, and
//! the configuration errors a user can make.

#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llmops_core::{ChatRequest, EmbeddingRequest, LlmRequest, Message, RequestContext};
use llmops_serve::config::{ModelConfig, ProviderConfig, ServeConfig, ServerConfig};
use llmops_serve::gateway::{BuildOptions, ConfigError, Gateway};
use llmops_serve::layers::shadow::ShadowRecord;
use llmops_testkit::{FakeUpstream, Reply};
use serde_json::{Value, json};
use tower::ServiceExt;

fn config(providers: Value, models: Value) -> ServeConfig {
    let providers: BTreeMap<String, ProviderConfig> = serde_json::from_value(providers).unwrap();
    let models: BTreeMap<String, ModelConfig> = serde_json::from_value(models).unwrap();
    ServeConfig::new(ServerConfig::default(), providers, models)
}

fn openai(up: &FakeUpstream) -> Value {
    json!({"kind": "openai", "base_url": up.openai_base()})
}

fn chat(model: &str) -> LlmRequest {
    LlmRequest::chat(
        RequestContext::new().with_timeout(Duration::from_secs(10)),
        ChatRequest::new(model, vec![Message::user("hi")]),
    )
}

#[tokio::test]
async fn canary_share_goes_to_the_candidate_and_is_labelled() {
    let (cur, cand) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let gw = Gateway::from_config(&config(
        json!({"cur": openai(&cur), "cand": openai(&cand)}),
        json!({"chat": {"targets": ["cur/m"], "canary": {"target": "cand/m-next", "share": 1.0}}}),
    ))
    .unwrap();
    let r = gw
        .service("chat")
        .unwrap()
        .oneshot(chat("chat"))
        .await
        .unwrap();
    assert_eq!(r.meta.provider.as_deref(), Some("cand"));
    assert_eq!(r.meta.headers["x-llmops-route"], "canary");
    assert_eq!(cand.requests()[0].body["model"], "m-next");
    // A failing candidate falls back to the current target.
    cand.set_default(Reply::status(500));
    let r = gw
        .service("chat")
        .unwrap()
        .oneshot(chat("chat"))
        .await
        .unwrap();
    assert_eq!(r.meta.provider.as_deref(), Some("cur"));
    assert_eq!(r.meta.headers["x-llmops-route"], "current");
}

#[tokio::test]
async fn shadow_answers_reach_the_sink_not_the_client() {
    let (prim, shadow) = (FakeUpstream::start().await, FakeUpstream::start().await);
    prim.set_default(Reply::text("primary says hi"));
    shadow.set_default(Reply::text("candidate says hi"));
    let records: Arc<Mutex<Vec<ShadowRecord>>> = Arc::default();
    let sink = {
        let records = records.clone();
        move |r: ShadowRecord| records.lock().unwrap().push(r)
    };
    let opts = BuildOptions::default().shadow_sink(Arc::new(sink));
    let gw = Gateway::from_config_with(
        &config(
            json!({"prim": openai(&prim), "shadow": openai(&shadow)}),
            json!({"chat": {"targets": ["prim/m"], "shadow": {"target": "shadow/m2", "share": 1.0}}}),
        ),
        &opts,
    )
    .unwrap();
    let r = gw
        .service("chat")
        .unwrap()
        .oneshot(chat("chat"))
        .await
        .unwrap();
    assert_eq!(r.meta.provider.as_deref(), Some("prim"));
    assert_eq!(r.into_chat().unwrap().first_text(), "primary says hi");
    for _ in 0..250 {
        if !records.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let recs = records.lock().unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(
        recs[0].shadow.as_ref().unwrap().first_text(),
        "candidate says hi"
    );
    assert_eq!(
        recs[0].primary.as_ref().unwrap().first_text(),
        "primary says hi"
    );
    assert_eq!(shadow.calls(), 1);
}

#[tokio::test]
async fn embedding_batches_merge_concurrent_callers_into_one_upstream_call() {
    let up = FakeUpstream::start().await;
    let gw = Gateway::from_config(&config(
        json!({"emb": openai(&up)}),
        json!({"embed": {"targets": ["emb/text-embedding-3-small"], "batch": {"max_batch": 32, "max_wait_ms": 50}}}),
    ))
    .unwrap();
    let svc = gw.service("embed").unwrap();
    let calls: Vec<_> = ["alpha", "beta", "gamma", "delta"]
        .iter()
        .map(|t| {
            let req = EmbeddingRequest::new("embed", vec![(*t).to_owned()]);
            svc.clone()
                .oneshot(LlmRequest::embeddings(RequestContext::new(), req))
        })
        .collect();
    let results = futures_util::future::join_all(calls).await;
    assert_eq!(up.calls(), 1, "one upstream call for four callers");
    assert_eq!(up.requests()[0].body["input"].as_array().unwrap().len(), 4);
    for (t, r) in ["alpha", "beta", "gamma", "delta"].iter().zip(results) {
        let e = r.unwrap().into_embeddings().unwrap();
        assert_eq!(e.data.len(), 1);
        assert_eq!(e.data[0].embedding, llmops_testkit::fake_embedding(t));
    }
}

#[tokio::test]
async fn weighted_models_spread_by_weight() {
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let gw = Gateway::from_config(&config(
        json!({"a": openai(&a), "b": openai(&b)}),
        json!({"chat": {"targets": ["a/m", "b/m"], "strategy": "weighted", "weights": [1, 0]}}),
    ))
    .unwrap();
    for _ in 0..20 {
        gw.service("chat")
            .unwrap()
            .oneshot(chat("chat"))
            .await
            .unwrap();
    }
    assert_eq!((a.calls(), b.calls()), (20, 0));
}

#[test]
fn configuration_mistakes_are_named() {
    let p = json!({"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}});
    let cases = [
        (
            json!({"p": {"kind": "openai"}}),
            json!({"m": {"targets": ["p/x"]}}),
            "base_url",
        ),
        (
            json!({"p": {"kind": "openai", "base_url": "ftp://x"}}),
            json!({"m": {"targets": ["p/x"]}}),
            "http://",
        ),
        (
            json!({"p": {"kind": "openai", "base_url": "http://x", "ttft_ms": 5}}),
            json!({"m": {"targets": ["p/x"]}}),
            "sim",
        ),
        (
            json!({"p": {"kind": "openai", "base_url": "http://x", "cache_salt_per_tenant": true}}),
            json!({"m": {"targets": ["p/x"]}}),
            "vllm",
        ),
        (
            p.clone(),
            json!({"m": {"targets": ["p/x", "p/y"], "strategy": "weighted", "weights": [1]}}),
            "one weight per target",
        ),
        (
            p.clone(),
            json!({"m": {"targets": ["p/x"], "weights": [1]}}),
            "weighted",
        ),
        (
            p.clone(),
            json!({"m": {"targets": ["p/x"], "retry": {"max_attempts": 0}}}),
            "max_attempts",
        ),
        (
            p.clone(),
            json!({"m": {"targets": ["p/x"], "canary": {"target": "p/y", "share": 1.5}}}),
            "share",
        ),
        (
            p.clone(),
            json!({"m": {"targets": ["p/x"], "shadow": {"target": "q/y", "share": 0.1}}}),
            "q",
        ),
        (p.clone(), json!({"m": {"targets": []}}), "at least one"),
        (
            p.clone(),
            json!({"m": {"targets": ["p/x"], "max_concurrency": 0}}),
            "max_concurrency",
        ),
        (
            json!({"p": {"kind": "openai", "base_url": "http://x", "api_key_env": "LLMOPS_TEST_SURELY_UNSET_VAR"}}),
            json!({"m": {"targets": ["p/x"]}}),
            "LLMOPS_TEST_SURELY_UNSET_VAR",
        ),
    ];
    for (i, (providers, models, needle)) in cases.into_iter().enumerate() {
        let err: ConfigError = Gateway::from_config(&config(providers, models)).unwrap_err();
        assert!(err.to_string().contains(needle), "case {i}: {err}");
    }
}
