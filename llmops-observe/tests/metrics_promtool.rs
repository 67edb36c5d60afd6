//! `/metrics` of a pipeline that served traffic: the names, buckets and label caps, and
//! `promtool check metrics`.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use futures_util::StreamExt;
use llmops_core::mock::{MockProvider, MockReply};
use llmops_core::types::StreamOptions;
use llmops_core::{
    BoxLlmService, ChatRequest, EmbeddingRequest, ErrorKind, LlmRequest, LlmResponse, Message,
    PromptRef, ProviderService, RequestContext, Usage,
};
use llmops_observe::{CostUsd, LabelCaps, ObserveConfig, ObserveLayer, RequestTelemetry};
use tower::{ServiceBuilder, ServiceExt};

fn promtool() -> String {
    std::env::var("LLMOPS_TEST_PROMTOOL").unwrap_or_else(|_| "promtool".to_owned())
}

#[tokio::test]
async fn metrics_after_traffic_pass_promtool() {
    let (handle, router) =
        llmops_observe::prometheus::install().expect("first recorder of this process");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let mock = MockProvider::new("primary")
        .reply(MockReply::text("one").with_usage(Usage::new(20, 5)))
        .reply(MockReply::chunks(["a", "b", "c", "d"]).with_usage(Usage::new(9, 4)))
        .reply(MockReply::error(ErrorKind::RateLimited))
        .reply(MockReply::error(ErrorKind::BudgetExceeded))
        .default_reply(MockReply::text("ok").with_usage(Usage::new(3, 1)));
    let config = ObserveConfig::builder()
        .label_caps(LabelCaps::default().with_tenant(2))
        .build();
    let svc = BoxLlmService::new(
        ServiceBuilder::new()
            .layer(ObserveLayer::new(config))
            // Stand-ins for the cost and retry layers: cost in the response metadata, a
            // fallback through the telemetry handle, three attempts.
            .map_request(|req: LlmRequest| {
                if let Some(t) = RequestTelemetry::of(&req.ctx)
                    && req.ctx.tenant.as_ref() == "t3"
                {
                    t.record_fallback();
                }
                req
            })
            .map_response(|mut r: LlmResponse| {
                r.meta.extensions.insert(CostUsd(0.000_25));
                if r.meta.provider.is_some() {
                    r.meta.attempts = 3;
                }
                r
            })
            .service(ProviderService::new(Arc::new(mock))),
    );
    let ctx = |tenant: &str| {
        RequestContext::new()
            .with_tenant(tenant)
            .with_prompt(PromptRef::new("support", "v7"))
    };
    let chat = || ChatRequest::new("gpt-test", vec![Message::user("hi")]);

    svc.clone()
        .oneshot(LlmRequest::chat(ctx("t1"), chat()))
        .await
        .unwrap();
    let mut sreq = chat().with_stream(true);
    sreq.stream_options = Some(StreamOptions::include_usage(true));
    let stream = svc
        .clone()
        .oneshot(LlmRequest::chat(ctx("t1"), sreq))
        .await
        .unwrap()
        .into_stream()
        .unwrap();
    assert!(stream.collect::<Vec<_>>().await.iter().all(Result::is_ok));
    assert!(
        svc.clone()
            .oneshot(LlmRequest::chat(ctx("t2"), chat()))
            .await
            .is_err()
    );
    assert!(
        svc.clone()
            .oneshot(LlmRequest::chat(ctx("t2"), chat()))
            .await
            .is_err()
    );
    for tenant in ["t3", "t4", "t5"] {
        svc.clone()
            .oneshot(LlmRequest::chat(ctx(tenant), chat()))
            .await
            .unwrap();
    }
    svc.clone()
        .oneshot(LlmRequest::embeddings(
            ctx("t1"),
            EmbeddingRequest::new("emb-test", vec!["x".into()]),
        ))
        .await
        .unwrap();

    let body = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        handle
            .render()
            .contains("# TYPE llmops_requests_total counter"),
        "the handle renders the same registry"
    );
    for needle in [
        "# TYPE gen_ai_client_operation_duration_seconds histogram",
        r#"le="0.01""#,
        r#"le="81.92""#,
        "# TYPE gen_ai_client_token_usage histogram",
        r#"le="67108864""#,
        r#"gen_ai_token_type="input""#,
        r#"gen_ai_token_type="output""#,
        "# TYPE gen_ai_client_operation_time_to_first_chunk_seconds histogram",
        "# TYPE gen_ai_client_operation_time_per_output_chunk_seconds histogram",
        "# TYPE llmops_gateway_overhead_seconds histogram",
        r#"le="0.00001""#,
        "# TYPE llmops_requests_total counter",
        "# TYPE llmops_errors_total counter",
        r#"error_type="rate_limited""#,
        "# TYPE llmops_budget_rejections_total counter",
        r#"reason="budget_exceeded""#,
        "# TYPE llmops_cost_nanodollars_total counter",
        "# TYPE llmops_cache_misses_total counter",
        "# TYPE llmops_retries_total counter",
        "# TYPE llmops_fallbacks_total counter",
        r#"gen_ai_operation_name="embeddings""#,
        r#"gen_ai_provider_name="primary""#,
        r#"gen_ai_request_model="gpt-test""#,
        r#"llmops_prompt_id="support""#,
        r#"llmops_prompt_version="v7""#,
        r#"llmops_tenant="t1""#,
        r#"llmops_tenant="t2""#,
        r#"llmops_tenant="other""#,
    ] {
        assert!(body.contains(needle), "/metrics lacks {needle}:\n{body}");
    }
    assert!(
        !body.contains(r#"llmops_tenant="t3""#),
        "tenants past the cap fold into other"
    );
    // Seven successful requests cost 250,000 nano-dollars each.
    let cost: u64 = body
        .lines()
        .filter(|l| l.starts_with("llmops_cost_nanodollars_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(cost, 6 * 250_000);

    let tool = promtool();
    let child = Command::new(&tool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => panic!(
            "promtool is needed to check /metrics and could not be run as {tool:?} ({e}); install \
             it (Debian: apt-get install prometheus) or point LLMOPS_TEST_PROMTOOL at it"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
