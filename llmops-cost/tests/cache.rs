//! The exact response cache: repeats never reach the upstream, tenants never share entries,
//! errors and broken streams are never stored.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use llmops_core::mock::{MockProvider, MockReply};
use llmops_core::stream::collect_stream;
use llmops_core::{
    Cache, ChatRequest, ErrorKind, LlmRequest, LlmResponse, Message, ProviderService,
    RequestContext, StreamOptions, Usage,
};
use llmops_cost::cache::{CacheControl, CacheLayer, CacheMode, MemoryCache};
use tower::{Layer, ServiceExt};

type Svc = llmops_cost::cache::CacheService<ProviderService>;

fn memory() -> Arc<MemoryCache> {
    Arc::new(MemoryCache::new(
        1000,
        16 << 20,
        Some(Duration::from_secs(60)),
    ))
}

fn pipeline(cache: Arc<dyn Cache>, mock: &Arc<MockProvider>, mode: CacheMode) -> Svc {
    CacheLayer::new(cache)
        .mode(mode)
        .layer(ProviderService::new(mock.clone()))
}

fn chat(tenant: &str, stream: bool) -> LlmRequest {
    let mut r = ChatRequest::new("m", vec![Message::user("What is 2+2?")]).with_temperature(0.0);
    if stream {
        r = r.with_stream(true);
        r.stream_options = Some(StreamOptions::include_usage(true));
    }
    LlmRequest::chat(RequestContext::new().with_tenant(tenant), r)
}

async fn text(resp: LlmResponse) -> String {
    match resp.body {
        llmops_core::ResponseBody::Chat(r) => r.first_text(),
        llmops_core::ResponseBody::ChatStream(s) => collect_stream(s).await.unwrap().first_text(),
        _ => panic!("unexpected body"),
    }
}

fn header(resp: &LlmResponse) -> &str {
    resp.meta
        .headers
        .get("x-llmops-cache")
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

fn answering(text: &str) -> Arc<MockProvider> {
    Arc::new(
        MockProvider::new("upstream").default_reply(
            MockReply::chunks(text.split_inclusive(' ')).with_usage(Usage::new(12, 3)),
        ),
    )
}

async fn wait_for_entry(cache: &MemoryCache, n: u64) {
    for _ in 0..100 {
        cache.run_pending_tasks().await;
        if cache.entry_count() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("the cache never held {n} entries");
}

#[tokio::test]
async fn a_repeat_is_answered_without_an_upstream_call() {
    let mock = answering("The answer is 4");
    let svc = pipeline(memory(), &mock, CacheMode::On);
    let first = svc.clone().oneshot(chat("a", false)).await.unwrap();
    assert_eq!(header(&first), "miss");
    assert!(!first.meta.cache_hit);
    assert_eq!(text(first).await, "The answer is 4");
    let second = svc.oneshot(chat("a", false)).await.unwrap();
    mock.assert_call_count(1);
    assert!(second.meta.cache_hit);
    assert_eq!(second.meta.attempts, 0);
    assert_eq!(header(&second), "hit");
    let body = second.into_chat().unwrap();
    assert_eq!(body.first_text(), "The answer is 4");
    assert_eq!(
        body.usage.unwrap().total_tokens(),
        0,
        "a hit costs nothing upstream"
    );
}

#[tokio::test]
async fn a_streamed_repeat_replays_as_a_stream() {
    let mock = answering("Four, of course");
    let cache = memory();
    let svc = pipeline(cache.clone(), &mock, CacheMode::On);
    let first = svc.clone().oneshot(chat("a", true)).await.unwrap();
    assert_eq!(text(first).await, "Four, of course");
    wait_for_entry(&cache, 1).await;
    let second = svc.clone().oneshot(chat("a", true)).await.unwrap();
    assert!(second.meta.cache_hit);
    let mut s = second.into_stream().unwrap();
    let mut chunks = Vec::new();
    while let Some(c) = s.next().await {
        chunks.push(c.unwrap());
    }
    assert!(chunks.len() >= 3, "role, content, finish (+usage)");
    let content: String = chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .filter_map(|c| c.delta.content.clone())
        .collect();
    assert_eq!(content, "Four, of course");
    assert_eq!(
        chunks
            .last()
            .unwrap()
            .usage
            .as_ref()
            .unwrap()
            .total_tokens(),
        0
    );
    // The same entry serves a non-streamed request too: the stream flag is not in the key.
    let third = svc.oneshot(chat("a", false)).await.unwrap();
    assert!(third.meta.cache_hit);
    mock.assert_call_count(1);
}

#[tokio::test]
async fn tenants_never_share_entries() {
    let mock = answering("secret of a");
    let svc = pipeline(memory(), &mock, CacheMode::On);
    svc.clone().oneshot(chat("a", false)).await.unwrap();
    let b = svc.clone().oneshot(chat("b", false)).await.unwrap();
    assert!(!b.meta.cache_hit);
    mock.assert_call_count(2);
    assert!(svc.oneshot(chat("b", false)).await.unwrap().meta.cache_hit);
}

#[tokio::test]
async fn json_key_order_does_not_change_the_key() {
    let mock = answering("ok");
    let svc = pipeline(memory(), &mock, CacheMode::On);
    let a: ChatRequest = serde_json::from_str(
        r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"x"}],"seed":7}"#,
    )
    .unwrap();
    let b: ChatRequest = serde_json::from_str(
        r#"{ "seed": 7, "messages": [ {"content": "x", "role": "user"} ], "temperature": 0.0, "model": "m" }"#,
    )
    .unwrap();
    let ctx = || RequestContext::new().with_tenant("t");
    svc.clone()
        .oneshot(LlmRequest::chat(ctx(), a))
        .await
        .unwrap();
    assert!(
        svc.oneshot(LlmRequest::chat(ctx(), b))
            .await
            .unwrap()
            .meta
            .cache_hit
    );
    mock.assert_call_count(1);
}

#[tokio::test]
async fn errors_and_broken_or_dropped_streams_are_never_stored() {
    let mock = Arc::new(
        MockProvider::new("upstream")
            .reply(MockReply::error(ErrorKind::ServerError))
            .reply(MockReply::chunks(["a ", "b ", "c"]).fail_after(1))
            .reply(MockReply::chunks(["a ", "b ", "c"]))
            .default_reply(MockReply::text("fine")),
    );
    let cache = memory();
    let svc = pipeline(cache.clone(), &mock, CacheMode::On);
    assert!(svc.clone().oneshot(chat("a", false)).await.is_err());
    // A stream that breaks mid-way.
    let broken = svc.clone().oneshot(chat("a", true)).await.unwrap();
    let mut s = broken.into_stream().unwrap();
    let mut failed = false;
    while let Some(c) = s.next().await {
        failed |= c.is_err();
    }
    assert!(failed);
    // A stream the client drops after the first chunk.
    let dropped = svc.clone().oneshot(chat("a", true)).await.unwrap();
    let mut s = dropped.into_stream().unwrap();
    let _ = s.next().await;
    drop(s);
    tokio::time::sleep(Duration::from_millis(10)).await;
    cache.run_pending_tasks().await;
    assert_eq!(cache.entry_count(), 0);
    let ok = svc.oneshot(chat("a", false)).await.unwrap();
    assert!(!ok.meta.cache_hit);
    assert_eq!(text(ok).await, "fine");
    mock.assert_call_count(4);
}

#[tokio::test]
async fn modes_and_per_request_opt_out() {
    let cache = memory();
    // Off: never read nor written.
    let mock = answering("x");
    let off = pipeline(cache.clone(), &mock, CacheMode::Off);
    off.clone().oneshot(chat("a", false)).await.unwrap();
    let r = off.oneshot(chat("a", false)).await.unwrap();
    assert_eq!(header(&r), "bypass");
    mock.assert_call_count(2);
    // Read-only: does not store.
    let ro = pipeline(cache.clone(), &mock, CacheMode::ReadOnly);
    ro.clone().oneshot(chat("a", false)).await.unwrap();
    assert!(!ro.oneshot(chat("a", false)).await.unwrap().meta.cache_hit);
    // Write-only: stores, never serves.
    let wo = pipeline(cache.clone(), &mock, CacheMode::WriteOnly);
    wo.clone().oneshot(chat("a", false)).await.unwrap();
    assert!(!wo.oneshot(chat("a", false)).await.unwrap().meta.cache_hit);
    // ...and what it stored serves an `on` pipeline.
    let on = pipeline(cache.clone(), &mock, CacheMode::On);
    let before = mock.call_count();
    assert!(
        on.clone()
            .oneshot(chat("a", false))
            .await
            .unwrap()
            .meta
            .cache_hit
    );
    assert_eq!(mock.call_count(), before);
    // Per-request opt-out.
    let mut req = chat("a", false);
    req.ctx.extensions.insert(CacheControl::no_store());
    assert!(!on.oneshot(req).await.unwrap().meta.cache_hit);
    assert_eq!(mock.call_count(), before + 1);
}

#[tokio::test]
async fn identical_requests_in_flight_are_coalesced() {
    let mock = Arc::new(
        MockProvider::new("upstream")
            .default_reply(MockReply::text("shared").with_latency(Duration::from_millis(50))),
    );
    let svc = pipeline(memory(), &mock, CacheMode::On);
    let calls: Vec<_> = (0..10)
        .map(|_| svc.clone().oneshot(chat("a", false)))
        .collect();
    let results = futures_util::future::join_all(calls).await;
    mock.assert_call_count(1);
    let mut coalesced = 0;
    for r in results {
        let r = r.unwrap();
        coalesced += usize::from(header(&r) == "coalesced");
        assert_eq!(text(r).await, "shared");
    }
    assert_eq!(coalesced, 9);
}

#[tokio::test]
async fn waiters_go_upstream_themselves_when_the_leader_fails() {
    let mock = Arc::new(
        MockProvider::new("upstream")
            .reply(MockReply::error(ErrorKind::ServerError).with_latency(Duration::from_millis(30)))
            .default_reply(MockReply::text("second try")),
    );
    let svc = pipeline(memory(), &mock, CacheMode::On);
    let (a, b) = tokio::join!(
        svc.clone().oneshot(chat("a", false)),
        svc.clone().oneshot(chat("a", false))
    );
    assert!(
        a.is_err() != b.is_err(),
        "one failed, the other went upstream itself"
    );
    mock.assert_call_count(2);
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_cache_is_shared_by_replicas() {
    use llmops_cost::cache::RedisCache;
    let url =
        std::env::var("LLMOPS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let ns = format!("test-{}", uuid::Uuid::now_v7().simple());
    let connect = || async {
        Arc::new(
            RedisCache::connect(&url, ns.clone(), Duration::from_secs(60))
                .await
                .unwrap_or_else(|e| {
                    panic!("cannot reach Redis at {url} (set LLMOPS_TEST_REDIS_URL): {e}")
                }),
        )
    };
    let mock = answering("from redis");
    let replica1 = pipeline(connect().await, &mock, CacheMode::On);
    let replica2 = pipeline(connect().await, &mock, CacheMode::On);
    replica1.oneshot(chat("a", false)).await.unwrap();
    let hit = replica2.clone().oneshot(chat("a", false)).await.unwrap();
    assert!(hit.meta.cache_hit);
    assert_eq!(text(hit).await, "from redis");
    assert!(
        !replica2
            .oneshot(chat("b", false))
            .await
            .unwrap()
            .meta
            .cache_hit
    );
    mock.assert_call_count(2);
}
