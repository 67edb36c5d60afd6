//! Every fault of the fake upstream against pipelines built from configuration: the right
//! behaviour (retry, fall back, open the circuit, clean error), the number of upstream calls,
//! and no hang past the configured deadlines.
//!
//! These tests use real loopback sockets, so tokio time cannot be paused: they bound every
//! wait with short configured limits and assert outcomes and call counts, never durations
//! (except the `Retry-After` test, which asserts the upstream's recorded arrival times).

#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use llmops_core::{
    ChatRequest, ErrorKind, LlmRequest, LlmResponse, Message, RequestContext, ResponseBody,
};
use llmops_serve::config::{ModelConfig, ProviderConfig, ServeConfig, ServerConfig};
use llmops_serve::gateway::Gateway;
use llmops_testkit::{FakeUpstream, Reply};
use serde_json::{Value, json};
use tower::ServiceExt;

/// A gateway from JSON renderings of the `[providers.*]` and `[models.*]` sections.
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

fn openai(up: &FakeUpstream) -> Value {
    json!({"kind": "openai", "base_url": up.openai_base()})
}

fn two(primary: &FakeUpstream, backup: &FakeUpstream, model: Value) -> Gateway {
    let mut m = json!({"targets": ["primary/gpt-4o-mini", "backup/gpt-4o-mini"]});
    if let (Some(dst), Some(src)) = (m.as_object_mut(), model.as_object()) {
        dst.extend(src.clone());
    }
    gateway(
        json!({"primary": openai(primary), "backup": openai(backup)}),
        json!({ "chat": m }),
    )
}

fn chat(stream: bool) -> LlmRequest {
    let req = ChatRequest::new("chat", vec![Message::user("Say something")]).with_stream(stream);
    LlmRequest::chat(
        RequestContext::new().with_timeout(Duration::from_secs(20)),
        req,
    )
}

async fn call(gw: &Gateway, stream: bool) -> Result<LlmResponse, llmops_core::Error> {
    let svc = gw.service("chat").unwrap();
    tokio::time::timeout(Duration::from_secs(30), svc.oneshot(chat(stream)))
        .await
        .expect("the pipeline must not hang past its deadlines")
}

/// Reads a stream to its end: the text, and the error it ended with, if any.
async fn drain(resp: LlmResponse) -> (String, Option<llmops_core::Error>) {
    let ResponseBody::ChatStream(mut s) = resp.body else {
        panic!("expected a stream")
    };
    let mut text = String::new();
    let drained = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(item) = s.next().await {
            match item {
                Ok(c) => {
                    for ch in &c.choices {
                        text.push_str(ch.delta.content.as_deref().unwrap_or_default());
                    }
                }
                Err(e) => return Some(e),
            }
        }
        None
    })
    .await
    .expect("the stream must not hang past its deadlines");
    (text, drained)
}

fn provider(resp: &LlmResponse) -> &str {
    resp.meta.provider.as_deref().unwrap_or_default()
}

#[tokio::test]
async fn server_error_500_is_retried_then_falls_back() {
    let (p, b) = (
        FakeUpstream::start_named("p").await,
        FakeUpstream::start_named("b").await,
    );
    p.set_default(Reply::status(500));
    b.set_default(Reply::text("from the backup"));
    let gw = two(
        &p,
        &b,
        json!({"retry": {"max_attempts": 3, "backoff_base_ms": 1}, "circuit": {"enabled": false}}),
    );
    for stream in [false, true] {
        let resp = call(&gw, stream).await.unwrap();
        assert_eq!(provider(&resp), "backup");
        assert_eq!(
            resp.meta.attempts, 4,
            "3 attempts on the primary, 1 on the backup"
        );
        if stream {
            let (text, err) = drain(resp).await;
            assert_eq!(text, "from the backup");
            assert!(err.is_none(), "{err:?}");
        } else {
            assert_eq!(resp.into_chat().unwrap().first_text(), "from the backup");
        }
    }
    assert_eq!((p.calls(), b.calls()), (6, 2));
}

#[tokio::test]
async fn bad_gateway_502_is_retried_on_the_same_target() {
    let up = FakeUpstream::start().await;
    up.push(Reply::status(502)).push(Reply::text("recovered"));
    let gw = gateway(
        json!({"only": openai(&up)}),
        json!({"chat": {"targets": ["only/m"], "retry": {"max_attempts": 2, "backoff_base_ms": 1}}}),
    );
    let resp = call(&gw, false).await.unwrap();
    assert_eq!(resp.meta.attempts, 2);
    assert_eq!(resp.into_chat().unwrap().first_text(), "recovered");
    assert_eq!(up.calls(), 2);
}

#[tokio::test]
async fn overload_503_moves_on_without_retrying_but_is_retried_on_the_last_target() {
    let (p, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    p.set_default(Reply::status(503));
    let gw = two(
        &p,
        &b,
        json!({"retry": {"max_attempts": 3, "backoff_base_ms": 1}}),
    );
    let resp = call(&gw, false).await.unwrap();
    assert_eq!(provider(&resp), "backup");
    assert_eq!(
        (p.calls(), b.calls()),
        (1, 1),
        "overload on a non-last target moves on at once"
    );

    let only = FakeUpstream::start().await;
    only.push(Reply::status(503)).push(Reply::text("ok"));
    let gw = gateway(
        json!({"only": openai(&only)}),
        json!({"chat": {"targets": ["only/m"], "retry": {"backoff_base_ms": 1}}}),
    );
    assert!(call(&gw, false).await.is_ok());
    assert_eq!(only.calls(), 2);
}

#[tokio::test]
async fn retry_after_is_honoured_never_sooner() {
    let up = FakeUpstream::start().await;
    up.push(Reply::rate_limited(Duration::from_secs(1)))
        .push(Reply::text("after the pause"));
    let gw = gateway(
        json!({"only": openai(&up)}),
        json!({"chat": {"targets": ["only/m"], "retry": {"max_attempts": 3}}}),
    );
    let resp = call(&gw, false).await.unwrap();
    assert_eq!(resp.into_chat().unwrap().first_text(), "after the pause");
    let r = up.requests();
    assert_eq!(r.len(), 2);
    assert!(
        r[1].at - r[0].at >= Duration::from_secs(1),
        "retried after {:?}",
        r[1].at - r[0].at
    );
}

#[tokio::test]
async fn rate_limit_longer_than_the_limit_falls_back_at_once() {
    let (p, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    p.set_default(Reply::rate_limited(Duration::from_secs(120)));
    let gw = two(
        &p,
        &b,
        json!({"retry": {"max_attempts": 3, "max_retry_after_ms": 5000}}),
    );
    let resp = call(&gw, false).await.unwrap();
    assert_eq!(provider(&resp), "backup");
    assert_eq!((p.calls(), b.calls()), (1, 1));
}

#[tokio::test]
async fn quota_429_is_never_retried_but_falls_back() {
    let (p, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    p.set_default(Reply::quota());
    let gw = two(
        &p,
        &b,
        json!({"retry": {"max_attempts": 3, "backoff_base_ms": 1}}),
    );
    let resp = call(&gw, true).await.unwrap();
    assert_eq!(provider(&resp), "backup");
    assert_eq!((p.calls(), b.calls()), (1, 1));

    // Alone, the quota error reaches the caller as it is, after one call.
    let only = FakeUpstream::start().await;
    only.set_default(Reply::quota());
    let gw = gateway(
        json!({"only": openai(&only)}),
        json!({"chat": {"targets": ["only/m"], "retry": {"max_attempts": 3}}}),
    );
    let err = call(&gw, false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::QuotaExhausted);
    assert_eq!(err.http_status(), 429);
    assert_eq!(only.calls(), 1);
}

#[tokio::test]
async fn anthropic_529_overloaded_falls_back() {
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    a.set_default(Reply::overloaded());
    let gw = gateway(
        json!({"claude": {"kind": "anthropic", "base_url": a.url()}, "backup": openai(&b)}),
        json!({"chat": {"targets": ["claude/claude-sonnet-4", "backup/gpt-4o-mini"], "retry": {"max_attempts": 3}}}),
    );
    let resp = call(&gw, false).await.unwrap();
    assert_eq!(provider(&resp), "backup");
    assert_eq!((a.calls(), b.calls()), (1, 1));
    assert_eq!(a.requests()[0].path, "/v1/messages");
}

#[tokio::test]
async fn connection_reset_is_retried() {
    let up = FakeUpstream::start().await;
    let gw = gateway(
        json!({"only": openai(&up)}),
        json!({"chat": {"targets": ["only/m"], "retry": {"max_attempts": 2, "backoff_base_ms": 1}}}),
    );
    for stream in [false, true] {
        up.push(Reply::reset()).push(Reply::text("second try"));
        let resp = call(&gw, stream).await.unwrap();
        assert_eq!(resp.meta.attempts, 2);
    }
    assert_eq!(up.calls(), 4);
}

#[tokio::test]
async fn stall_before_headers_hits_ttft_then_falls_back() {
    let (p, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    p.set_default(Reply::stall_before_headers());
    let gw = two(
        &p,
        &b,
        json!({"retry": {"max_attempts": 1}, "timeouts": {"ttft_ms": 200, "attempt_ms": 200, "total_ms": 5000}}),
    );
    let resp = call(&gw, true).await.unwrap();
    assert_eq!(provider(&resp), "backup");
    assert!(drain(resp).await.1.is_none());
    let resp = call(&gw, false).await.unwrap();
    assert_eq!(provider(&resp), "backup");
    assert_eq!((p.calls(), b.calls()), (2, 2));
}

#[tokio::test]
async fn stall_before_headers_alone_ends_at_the_total_deadline() {
    let up = FakeUpstream::start().await;
    up.set_default(Reply::stall_before_headers());
    let gw = gateway(
        json!({"only": openai(&up)}),
        json!({"chat": {"targets": ["only/m"], "retry": {"max_attempts": 5}, "timeouts": {"total_ms": 300}}}),
    );
    let err = call(&gw, false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(
        up.calls(),
        1,
        "the stalled attempt used the whole deadline: no time for a retry"
    );
}

#[tokio::test]
async fn stall_mid_stream_ends_with_a_clean_error_after_the_idle_limit() {
    let up = FakeUpstream::start().await;
    up.push(Reply::stall_mid_stream(2));
    let gw = gateway(
        json!({"only": openai(&up)}),
        json!({"chat": {"targets": ["only/m"], "retry": {"max_attempts": 3}, "timeouts": {"idle_ms": 200}}}),
    );
    let resp = call(&gw, true).await.unwrap();
    let (text, err) = drain(resp).await;
    assert_eq!(text, "The quick");
    let err = err.expect("a stalled stream must end with an error, never look finished");
    assert_eq!(
        err.kind(),
        ErrorKind::StreamInterrupted {
            after_first_event: true
        }
    );
    assert_eq!(up.calls(), 1, "content was delivered: no retry");
}

#[tokio::test]
async fn truncated_stream_after_content_is_an_error_before_content_a_retry() {
    let up = FakeUpstream::start().await;
    up.push(Reply::truncated_sse(3));
    let gw = gateway(
        json!({"only": openai(&up)}),
        json!({"chat": {"targets": ["only/m"], "retry": {"max_attempts": 3, "backoff_base_ms": 1}}}),
    );
    let (text, err) = drain(call(&gw, true).await.unwrap()).await;
    assert_eq!(text, "The quick brown");
    assert_eq!(
        err.unwrap().kind(),
        ErrorKind::StreamInterrupted {
            after_first_event: true
        }
    );
    assert_eq!(up.calls(), 1);

    // Cut before any content (only the role chunk went out): retried transparently.
    up.push(Reply::truncated_sse(0))
        .push(Reply::text("whole answer"));
    let resp = call(&gw, true).await.unwrap();
    assert_eq!(resp.meta.attempts, 2);
    let (text, err) = drain(resp).await;
    assert_eq!(text, "whole answer");
    assert!(err.is_none(), "{err:?}");
    assert_eq!(up.calls(), 3);
}

#[tokio::test]
async fn in_band_stream_error_after_content_is_surfaced() {
    let up = FakeUpstream::start().await;
    up.push(Reply::stream_error(1));
    let gw = gateway(
        json!({"only": openai(&up)}),
        json!({"chat": {"targets": ["only/m"]}}),
    );
    let (text, err) = drain(call(&gw, true).await.unwrap()).await;
    assert_eq!(text, "The");
    assert_eq!(
        err.unwrap().kind(),
        ErrorKind::StreamInterrupted {
            after_first_event: true
        }
    );
    assert_eq!(up.calls(), 1);
}

#[tokio::test]
async fn malformed_json_is_a_decode_error_and_retried() {
    let up = FakeUpstream::start().await;
    let gw = gateway(
        json!({"only": openai(&up)}),
        json!({"chat": {"targets": ["only/m"], "retry": {"max_attempts": 2, "backoff_base_ms": 1}}}),
    );
    for stream in [false, true] {
        up.push(Reply::malformed_json()).push(Reply::text("valid"));
        let resp = call(&gw, stream).await.unwrap();
        assert_eq!(resp.meta.attempts, 2, "stream: {stream}");
    }
    up.push(Reply::malformed_json())
        .push(Reply::malformed_json());
    let err = call(&gw, false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
    assert_eq!(up.calls(), 6);
}

#[tokio::test]
async fn slow_drip_passes_under_the_idle_limit_and_fails_over_it() {
    let up = FakeUpstream::start().await;
    let gw = gateway(
        json!({"only": openai(&up)}),
        json!({"chat": {"targets": ["only/m"], "timeouts": {"idle_ms": 300}}}),
    );
    up.push(Reply::slow_drip(Duration::from_millis(20)));
    let (text, err) = drain(call(&gw, true).await.unwrap()).await;
    assert!(err.is_none());
    assert_eq!(text, "The quick brown fox jumps over the lazy dog.");
    up.push(Reply::text("one two three").with_chunk_delay(Duration::from_millis(600)));
    let gw = gateway(
        json!({"only": openai(&up)}),
        json!({"chat": {"targets": ["only/m"], "timeouts": {"ttft_ms": 5000, "idle_ms": 300}}}),
    );
    let resp = call(&gw, true).await;
    let err = match resp {
        Ok(r) => drain(r).await.1,
        Err(e) => Some(e),
    };
    assert!(err.is_some(), "a drip slower than the idle limit must fail");
    assert_eq!(up.calls(), 2);
}

#[tokio::test]
async fn circuit_opens_after_consecutive_failures_and_skips_the_target() {
    let (p, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    p.set_default(Reply::status(500));
    let gw = two(
        &p,
        &b,
        json!({"retry": {"max_attempts": 1}, "circuit": {"consecutive_failures": 2, "cooldown_ms": 60000}}),
    );
    for _ in 0..5 {
        let resp = call(&gw, false).await.unwrap();
        assert_eq!(provider(&resp), "backup");
    }
    assert_eq!(
        p.calls(),
        2,
        "after 2 failures the open circuit keeps requests away"
    );
    assert_eq!(b.calls(), 5);
}

#[tokio::test]
async fn bad_request_is_neither_retried_nor_fallen_back() {
    let (p, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    p.set_default(Reply::status(400));
    let gw = two(&p, &b, json!({"retry": {"max_attempts": 3}}));
    let err = call(&gw, false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert_eq!((p.calls(), b.calls()), (1, 0));
}

#[tokio::test]
async fn anthropic_provider_round_trip_streamed_and_not() {
    let a = FakeUpstream::start().await;
    let gw = gateway(
        json!({"claude": {"kind": "anthropic", "base_url": a.url(), "headers": {"x-api-key": "sk-ant-test"}}}),
        json!({"chat": {"targets": ["claude/claude-sonnet-4"]}}),
    );
    a.push(Reply::text("Bonjour tout le monde"));
    let resp = call(&gw, false).await.unwrap().into_chat().unwrap();
    assert_eq!(resp.first_text(), "Bonjour tout le monde");
    assert!(resp.usage.unwrap().output_tokens > 0);
    a.push(Reply::text("Hello there"));
    let (text, err) = drain(call(&gw, true).await.unwrap()).await;
    assert_eq!((text.as_str(), err.is_none()), ("Hello there", true));
    let r = &a.requests()[0];
    assert_eq!(r.header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(r.body["model"], "claude-sonnet-4");
    assert_eq!(r.body["max_tokens"], 4096);
    // A mid-stream `error` event after content is a clean stream error.
    a.push(Reply::stream_error(2));
    let (_, err) = drain(call(&gw, true).await.unwrap()).await;
    assert_eq!(
        err.unwrap().kind(),
        ErrorKind::StreamInterrupted {
            after_first_event: true
        }
    );
}
