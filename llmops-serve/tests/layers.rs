//! The routing layers in-process, over `MockProvider`, with paused tokio time: balancing,
//! retries and deadlines, concurrency held for a stream's life, canary, shadow, batching.

#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use llmops_core::mock::{MockProvider, MockReply};
use llmops_core::{
    BoxLlmService, ChatRequest, EmbeddingRequest, Error, ErrorKind, LlmRequest, Message,
    ProviderService, RequestContext,
};
use llmops_serve::layers::balance::{Balance, Endpoint, ExternalLoad, LoadSource, Strategy};
use llmops_serve::layers::batch::{BatchConfig, EmbeddingBatchLayer};
use llmops_serve::layers::canary::{Canary, HEADER_ROUTE};
use llmops_serve::layers::circuit::{Circuit, CircuitBreakerLayer, CircuitConfig};
use llmops_serve::layers::concurrency::ConcurrencyLimitLayer;
use llmops_serve::layers::fallback::Fallback;
use llmops_serve::layers::retry::{RetryBudget, RetryLayer, RetryPolicy};
use llmops_serve::layers::shadow::{ShadowLayer, ShadowRecord};
use llmops_serve::layers::timeout::{DeadlineLayer, TimeoutLayer, Timeouts};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

fn svc(mock: &MockProvider) -> BoxLlmService {
    BoxLlmService::new(ProviderService::new(Arc::new(mock.clone())))
}

fn chat(stream: bool) -> LlmRequest {
    LlmRequest::chat(
        RequestContext::new(),
        ChatRequest::new("m", vec![Message::user("hello")]).with_stream(stream),
    )
}

#[tokio::test(start_paused = true)]
async fn least_latency_sends_most_traffic_to_the_faster_upstream() {
    let fast = MockProvider::new("fast")
        .latency(Duration::from_millis(5))
        .default_reply(MockReply::text("f"));
    let slow = MockProvider::new("slow")
        .latency(Duration::from_millis(200))
        .default_reply(MockReply::text("s"));
    let balance = Balance::with_strategy(
        vec![
            Endpoint::new("fast", svc(&fast)),
            Endpoint::new("slow", svc(&slow)),
        ],
        Strategy::LeastLatency,
    );
    // 200 requests, 4 at a time.
    let mut done = 0;
    while done < 200 {
        let batch: Vec<_> = (0..4)
            .map(|_| balance.clone().oneshot(chat(false)))
            .collect();
        for r in futures_util::future::join_all(batch).await {
            r.unwrap();
        }
        done += 4;
    }
    let (f, s) = (fast.call_count(), slow.call_count());
    assert_eq!(f + s, 200);
    assert!(f >= 180, "fast got {f}, slow got {s}");
}

#[tokio::test(start_paused = true)]
async fn latency_is_measured_to_the_end_of_the_stream() {
    // Both answer headers at once; `slow` drips its chunks.
    let quick = MockProvider::new("quick").default_reply(MockReply::chunks(["a", "b", "c"]));
    let drip = MockProvider::new("drip").default_reply(
        MockReply::chunks(["a", "b", "c"]).with_chunk_delay(Duration::from_millis(100)),
    );
    let balance = Balance::with_strategy(
        vec![
            Endpoint::new("quick", svc(&quick)),
            Endpoint::new("drip", svc(&drip)),
        ],
        Strategy::LeastLatency,
    );
    for _ in 0..50 {
        let resp = balance.clone().oneshot(chat(true)).await.unwrap();
        let mut s = resp.into_stream().unwrap();
        while s.next().await.is_some() {}
    }
    assert!(
        quick.call_count() >= 45,
        "quick {} drip {}",
        quick.call_count(),
        drip.call_count()
    );
}

#[derive(Debug)]
struct FixedLoad(Mutex<ExternalLoad>);

impl LoadSource for FixedLoad {
    fn load(&self) -> ExternalLoad {
        *self.0.lock().unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn replica_queue_and_health_feed_the_choice() {
    let a = MockProvider::new("a").default_reply(MockReply::text("a"));
    let b = MockProvider::new("b").default_reply(MockReply::text("b"));
    let load_a = Arc::new(FixedLoad(Mutex::new(ExternalLoad::default())));
    let mut busy = ExternalLoad::default();
    busy.queue_depth = Some(20.0);
    let load_b = Arc::new(FixedLoad(Mutex::new(busy)));
    let balance = Balance::with_strategy(
        vec![
            Endpoint::new("a", svc(&a)).with_load_source(load_a.clone()),
            Endpoint::new("b", svc(&b)).with_load_source(load_b.clone()),
        ],
        Strategy::LeastOutstanding,
    );
    for _ in 0..20 {
        balance.clone().oneshot(chat(false)).await.unwrap();
    }
    assert_eq!(
        (a.call_count(), b.call_count()),
        (20, 0),
        "b reports a deep queue"
    );
    // `a` goes down (health probe): everything moves to `b`, however busy.
    load_a.0.lock().unwrap().available = false;
    for _ in 0..5 {
        let r = balance.clone().oneshot(chat(false)).await.unwrap();
        assert_eq!(r.meta.provider.as_deref(), Some("b"));
    }
    // Both down: a clear error, no call.
    load_b.0.lock().unwrap().available = false;
    let err = balance.clone().oneshot(chat(false)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Overloaded);
    assert_eq!(err.code(), "no_available_target");
    assert_eq!(a.call_count() + b.call_count(), 25);
}

#[tokio::test(start_paused = true)]
async fn retry_lands_on_another_replica_and_counts_attempts() {
    let bad = MockProvider::new("bad").default_reply(MockReply::error(ErrorKind::ServerError));
    let good = MockProvider::new("good").default_reply(MockReply::text("ok"));
    let balance = Balance::with_strategy(
        vec![
            Endpoint::new("bad", svc(&bad)),
            Endpoint::new("good", svc(&good)),
        ],
        Strategy::LeastOutstanding,
    );
    let pipeline = RetryLayer::new(RetryPolicy::new(2)).layer(balance);
    for _ in 0..10 {
        let r = pipeline.clone().oneshot(chat(false)).await.unwrap();
        assert_eq!(r.meta.provider.as_deref(), Some("good"));
        assert!(r.meta.attempts <= 2);
    }
    assert!(bad.call_count() <= 10 && good.call_count() == 10);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_waited_exactly_and_the_deadline_is_respected() {
    let mock = MockProvider::new("m")
        .reply(MockReply::failure(
            Error::new(ErrorKind::RateLimited, "slow down")
                .with_retry_after(Duration::from_secs(3)),
        ))
        .default_reply(MockReply::text("ok"));
    let pipeline = RetryLayer::new(RetryPolicy::new(3)).layer(svc(&mock));
    let start = Instant::now();
    let r = pipeline.clone().oneshot(chat(false)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(r.meta.attempts, 2);

    // The same wait with 2 s left: no retry, the error comes back at once.
    mock.push_reply(MockReply::failure(
        Error::new(ErrorKind::RateLimited, "slow down").with_retry_after(Duration::from_secs(3)),
    ));
    let mut req = chat(false);
    req.ctx = req.ctx.with_timeout(Duration::from_secs(2));
    let start = Instant::now();
    let err = pipeline.oneshot(req).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(mock.call_count(), 3);
}

#[tokio::test(start_paused = true)]
async fn retry_budget_stops_retry_storms() {
    let mock = MockProvider::new("m").default_reply(MockReply::error(ErrorKind::ServerError));
    let budget = Arc::new(RetryBudget::new(0.1, 0.0, Duration::from_secs(10)));
    let pipeline = RetryLayer::new(RetryPolicy::new(3).budget(budget)).layer(svc(&mock));
    for _ in 0..100 {
        assert!(pipeline.clone().oneshot(chat(false)).await.is_err());
    }
    // 100 requests, at most 10 % retries on top.
    assert!(mock.call_count() <= 110, "{} calls", mock.call_count());
    assert!(mock.call_count() > 100);
}

#[tokio::test(start_paused = true)]
async fn ttft_timeout_then_fallback_within_the_total_deadline() {
    let stalled = MockProvider::new("stalled")
        .default_reply(MockReply::text("late").with_latency(Duration::from_secs(60)));
    let backup = MockProvider::new("backup").default_reply(MockReply::chunks(["on", " time"]));
    let t = Timeouts::new().ttft(Duration::from_secs(2));
    let chain = Fallback::new(vec![
        (
            "stalled".into(),
            BoxLlmService::new(TimeoutLayer::new(t).layer(svc(&stalled))),
        ),
        (
            "backup".into(),
            BoxLlmService::new(TimeoutLayer::new(t).layer(svc(&backup))),
        ),
    ]);
    let pipeline = DeadlineLayer::new(Duration::from_secs(10)).layer(chain);
    let start = Instant::now();
    let r = pipeline.oneshot(chat(true)).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(2),
        "the TTFT limit, not the stall"
    );
    assert_eq!(r.meta.provider.as_deref(), Some("backup"));
    assert_eq!(r.meta.attempts, 2);
}

#[tokio::test(start_paused = true)]
async fn concurrency_permit_is_held_until_the_stream_ends() {
    let mock = MockProvider::new("m")
        .default_reply(MockReply::chunks(["a", "b"]).with_chunk_delay(Duration::from_secs(1)));
    let limit = ConcurrencyLimitLayer::new(1);
    let pipeline = BoxLlmService::new(limit.clone().layer(svc(&mock)));
    let first = pipeline.clone().oneshot(chat(true)).await.unwrap();
    assert_eq!(limit.in_flight(), 1, "headers are not the end of a stream");
    // A second call waits for the permit; with a 500 ms deadline it gives up.
    let mut req = chat(true);
    req.ctx = req.ctx.with_timeout(Duration::from_millis(500));
    let err = pipeline.clone().oneshot(req).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Overloaded);
    assert_eq!(mock.call_count(), 1);
    let mut s = first.into_stream().unwrap();
    while s.next().await.is_some() {}
    assert_eq!(limit.in_flight(), 0);
    pipeline.oneshot(chat(true)).await.unwrap();
    assert_eq!(mock.call_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn circuit_in_a_balancer_takes_a_failing_replica_out_and_probes_it_back() {
    let flaky = MockProvider::new("flaky").default_reply(MockReply::error(ErrorKind::ServerError));
    let good = MockProvider::new("good").default_reply(MockReply::text("ok"));
    let mut cfg = CircuitConfig::default();
    cfg.consecutive_failures = 2;
    cfg.cooldown = Duration::from_secs(30);
    let circuit = Circuit::new("flaky", cfg);
    let guarded = BoxLlmService::new(CircuitBreakerLayer::new(circuit.clone()).layer(svc(&flaky)));
    let balance = Balance::with_strategy(
        vec![
            Endpoint::new("flaky", guarded)
                .with_circuit(circuit.clone())
                .with_weight(1),
            Endpoint::new("good", svc(&good)).with_weight(1),
        ],
        Strategy::Weighted,
    );
    let pipeline = RetryLayer::new(
        RetryPolicy::new(2).backoff(Duration::from_millis(1), Duration::from_millis(1)),
    )
    .layer(balance);
    for _ in 0..40 {
        pipeline.clone().oneshot(chat(false)).await.unwrap();
    }
    assert_eq!(flaky.call_count(), 2, "two failures open the circuit");
    tokio::time::advance(Duration::from_secs(31)).await;
    flaky.push_reply(MockReply::text("healed"));
    let mut healed = false;
    for _ in 0..40 {
        let r = pipeline.clone().oneshot(chat(false)).await.unwrap();
        healed |= r.meta.provider.as_deref() == Some("flaky");
    }
    assert!(
        healed,
        "after the cool-down a probe goes through and closes the circuit"
    );
}

#[tokio::test(start_paused = true)]
async fn canary_gets_its_share_and_falls_back_when_broken() {
    let current = MockProvider::new("current").default_reply(MockReply::text("c"));
    let candidate = MockProvider::new("candidate").default_reply(MockReply::text("n"));
    let canary = Canary::new(svc(&current), svc(&candidate), 0.25);
    let mut canaried = 0;
    for _ in 0..2000 {
        let r = canary.clone().oneshot(chat(false)).await.unwrap();
        if r.meta
            .headers
            .get(HEADER_ROUTE)
            .is_some_and(|v| v == "canary")
        {
            canaried += 1;
        }
    }
    assert_eq!(canaried, candidate.call_count());
    assert!((400..600).contains(&canaried), "{canaried}");

    let broken =
        MockProvider::new("broken").default_reply(MockReply::error(ErrorKind::ServerError));
    let canary = Canary::new(svc(&current), svc(&broken), 1.0);
    let r = canary.oneshot(chat(false)).await.unwrap();
    assert_eq!(r.meta.provider.as_deref(), Some("current"));
    assert_eq!(r.meta.attempts, 2);
}

#[tokio::test(start_paused = true)]
async fn shadow_answers_are_recorded_never_returned() {
    let primary = MockProvider::new("primary").default_reply(MockReply::chunks(["prim", "ary"]));
    let candidate = MockProvider::new("candidate")
        .default_reply(MockReply::text("candidate answer").with_latency(Duration::from_millis(50)));
    let records: Arc<Mutex<Vec<ShadowRecord>>> = Arc::default();
    let sink = {
        let records = records.clone();
        move |r: ShadowRecord| records.lock().unwrap().push(r)
    };
    let layer = ShadowLayer::new("candidate", svc(&candidate), 1.0, Arc::new(sink));
    let pipeline = layer.layer(svc(&primary));
    for stream in [false, true] {
        let r = pipeline.clone().oneshot(chat(stream)).await.unwrap();
        assert_eq!(r.meta.provider.as_deref(), Some("primary"));
        let text = if stream {
            let mut s = r.into_stream().unwrap();
            let mut t = String::new();
            while let Some(c) = s.next().await {
                t.push_str(
                    c.unwrap().choices[0]
                        .delta
                        .content
                        .as_deref()
                        .unwrap_or_default(),
                );
            }
            t
        } else {
            r.into_chat().unwrap().first_text()
        };
        assert_eq!(text, "primary", "the client never sees the shadow answer");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let recs = records.lock().unwrap();
    assert_eq!(recs.len(), 2);
    for r in recs.iter() {
        assert_eq!(r.shadow.as_ref().unwrap().first_text(), "candidate answer");
        assert_eq!(r.primary.as_ref().unwrap().first_text(), "primary");
        assert_eq!(r.candidate.as_ref(), "candidate");
    }
    // The copy is tagged and streamed requests are shadowed non-streamed.
    let calls = candidate.calls();
    assert!(
        calls
            .iter()
            .all(|c| c.ctx.tags.get("llmops.shadow").map(String::as_str) == Some("true"))
    );
    assert_eq!(candidate.call_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn embedding_requests_are_micro_batched_and_split_back() {
    let mock = MockProvider::new("emb").embedding_dims(4);
    let batcher =
        EmbeddingBatchLayer::new(BatchConfig::new(16, Duration::from_millis(10))).layer(svc(&mock));
    let inputs = [vec!["a"], vec!["b", "c"], vec!["d"], vec!["e", "f", "g"]];
    let calls: Vec<_> = inputs
        .iter()
        .map(|texts| {
            let req = EmbeddingRequest::new("e", texts.iter().map(|s| (*s).to_owned()).collect());
            batcher
                .clone()
                .oneshot(LlmRequest::embeddings(RequestContext::new(), req))
        })
        .collect();
    let results = futures_util::future::join_all(calls).await;
    assert_eq!(mock.call_count(), 1, "one upstream call for four callers");
    // Each caller gets exactly its own vectors, indexed from 0.
    let solo = MockProvider::new("solo").embedding_dims(4);
    for (texts, r) in inputs.iter().zip(results) {
        let got = r.unwrap().into_embeddings().unwrap();
        let want = ProviderService::new(Arc::new(solo.clone()))
            .oneshot(LlmRequest::embeddings(
                RequestContext::new(),
                EmbeddingRequest::new("e", texts.iter().map(|s| (*s).to_owned()).collect()),
            ))
            .await
            .unwrap()
            .into_embeddings()
            .unwrap();
        assert_eq!(got.data.len(), texts.len());
        for (i, (g, w)) in got.data.iter().zip(&want.data).enumerate() {
            assert_eq!(g.index as usize, i);
            assert_eq!(g.embedding, w.embedding);
        }
    }
    // A batch that fills up goes at once; a failed batch fails each caller.
    mock.push_reply(MockReply::error(ErrorKind::ServerError));
    let a = batcher.clone().oneshot(LlmRequest::embeddings(
        RequestContext::new(),
        EmbeddingRequest::new("e", vec!["x".into()]),
    ));
    let b = batcher.clone().oneshot(LlmRequest::embeddings(
        RequestContext::new(),
        EmbeddingRequest::new("e", vec!["y".into()]),
    ));
    let (a, b) = tokio::join!(a, b);
    assert_eq!(a.unwrap_err().kind(), ErrorKind::ServerError);
    assert_eq!(b.unwrap_err().kind(), ErrorKind::ServerError);
    assert_eq!(mock.call_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn weighted_split_follows_configured_weights() {
    let a = MockProvider::new("a").default_reply(MockReply::text("a"));
    let b = MockProvider::new("b").default_reply(MockReply::text("b"));
    let balance = Balance::with_strategy(
        vec![
            Endpoint::new("a", svc(&a)).with_weight(3),
            Endpoint::new("b", svc(&b)).with_weight(1),
        ],
        Strategy::Weighted,
    );
    let counter = AtomicUsize::new(0);
    for _ in 0..2000 {
        balance.clone().oneshot(chat(false)).await.unwrap();
        counter.fetch_add(1, Ordering::Relaxed);
    }
    let share = a.call_count() as f64 / 2000.0;
    assert!((0.70..0.80).contains(&share), "{share}");
}

#[tokio::test(start_paused = true)]
async fn a_429_cools_a_replica_down_for_its_retry_after() {
    let a = MockProvider::new("a")
        .reply(MockReply::failure(
            Error::new(ErrorKind::RateLimited, "slow down")
                .with_retry_after(Duration::from_secs(2)),
        ))
        .default_reply(MockReply::text("a"));
    let b = MockProvider::new("b").default_reply(MockReply::text("b"));
    let endpoint = |name: &str, mock: &MockProvider| {
        let circuit = Circuit::new(name, CircuitConfig::default());
        let guarded =
            BoxLlmService::new(CircuitBreakerLayer::new(circuit.clone()).layer(svc(mock)));
        Endpoint::new(name, guarded).with_circuit(circuit)
    };
    let balance = Balance::with_strategy(
        vec![endpoint("a", &a), endpoint("b", &b)],
        Strategy::LeastOutstanding,
    );
    let pipeline = RetryLayer::new(RetryPolicy::new(2)).layer(balance);
    // Until `a` has answered its 429, requests alternate; afterwards, for 2 s, only `b` serves.
    while a.call_count() == 0 {
        pipeline.clone().oneshot(chat(false)).await.unwrap();
    }
    let a_calls = a.call_count();
    for _ in 0..10 {
        let r = pipeline.clone().oneshot(chat(false)).await.unwrap();
        assert_eq!(r.meta.provider.as_deref(), Some("b"));
    }
    assert_eq!(a.call_count(), a_calls);
    tokio::time::advance(Duration::from_secs(2)).await;
    for _ in 0..10 {
        pipeline.clone().oneshot(chat(false)).await.unwrap();
    }
    assert!(
        a.call_count() > a_calls,
        "after its Retry-After the replica serves again"
    );
}
