//! The budget layer settles every reservation exactly once: on success, error, stream end,
//! stream drop (client disconnect) and cancellation of the call itself.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use llmops_core::mock::{MockProvider, MockReply};
use llmops_core::{
    Budget, BudgetScope, ChatRequest, ErrorKind, LlmRequest, Message, ProviderService,
    RequestContext, Usage, Usd,
};
use llmops_cost::budget::{BudgetLayer, Limit, MemoryBudget, Window};
use llmops_cost::prices::{ModelPrice, PriceCatalog};
use tower::{Layer, ServiceExt};

fn catalog() -> Arc<PriceCatalog> {
    let mut c = PriceCatalog::empty();
    c.insert(ModelPrice::per_million("m", 1.0, 4.0).unwrap());
    Arc::new(c)
}

fn setup(
    limit_usd: f64,
    mock: MockProvider,
) -> (
    MemoryBudget,
    impl Clone
    + tower::Service<
        LlmRequest,
        Response = llmops_core::LlmResponse,
        Error = llmops_core::Error,
        Future: Send,
    > + Send
    + 'static,
    Arc<MockProvider>,
) {
    let budget = MemoryBudget::new(vec![
        Limit::budget("tenant:*", Window::Daily)
            .unwrap()
            .usd(limit_usd),
    ])
    .unwrap();
    let mock = Arc::new(mock);
    let svc = BudgetLayer::new(Arc::new(budget.clone()), catalog())
        .layer(ProviderService::new(mock.clone()));
    (budget, svc, mock)
}

fn req(stream: bool) -> LlmRequest {
    let mut r = ChatRequest::new("m", vec![Message::user("hello")]).with_max_tokens(1000);
    if stream {
        r = r.with_stream(true);
        r.stream_options = Some(llmops_core::StreamOptions::include_usage(true));
    }
    LlmRequest::chat(RequestContext::new().with_tenant("t"), r)
}

fn tenant() -> BudgetScope {
    BudgetScope::new("tenant", "t")
}

async fn settled(budget: &MemoryBudget) {
    for _ in 0..100 {
        if budget.outstanding() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{} reservations never settled", budget.outstanding());
}

#[tokio::test]
async fn success_commits_the_actual_cost_and_reports_remaining() {
    let mock = MockProvider::new("p")
        .default_reply(MockReply::text("hi").with_usage(Usage::new(1000, 1000)));
    let (budget, svc, _) = setup(1.0, mock);
    let resp = svc.oneshot(req(false)).await.unwrap();
    // Reserved worst case at call time: remaining reflects it.
    let header = resp.meta.headers["x-llmops-budget-remaining-usd"]
        .to_str()
        .unwrap()
        .to_owned();
    let shown: f64 = header.parse().unwrap();
    assert!(shown < 1.0 && shown > 0.99, "{header}");
    // Committed: 1000 × $1/M + 1000 × $4/M = $0.005.
    assert_eq!(
        budget.remaining(&tenant()).await.unwrap(),
        Some(Usd::from_f64(0.995))
    );
    assert_eq!(budget.outstanding(), 0);
}

#[tokio::test]
async fn upstream_errors_release_the_reservation() {
    let mock = MockProvider::new("p").default_reply(MockReply::error(ErrorKind::ServerError));
    let (budget, svc, _) = setup(1.0, mock);
    assert!(svc.oneshot(req(false)).await.is_err());
    assert_eq!(
        budget.remaining(&tenant()).await.unwrap(),
        Some(Usd::from_f64(1.0))
    );
    assert_eq!(budget.outstanding(), 0);
}

#[tokio::test]
async fn over_budget_is_refused_with_429_naming_the_scope() {
    let mock = MockProvider::new("p").default_reply(MockReply::text("hi"));
    let (_, svc, mock) = setup(0.001, mock);
    let err = svc.oneshot(req(false)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BudgetExceeded);
    assert_eq!(err.http_status(), 429);
    assert_eq!(err.code(), "budget_exceeded");
    assert!(err.message().contains("tenant:t"), "{}", err.message());
    mock.assert_call_count(0);
}

#[tokio::test]
async fn streams_commit_at_their_end() {
    let mock = MockProvider::new("p")
        .default_reply(MockReply::chunks(["a", "b", "c"]).with_usage(Usage::new(1000, 1000)));
    let (budget, svc, _) = setup(1.0, mock);
    let resp = svc.oneshot(req(true)).await.unwrap();
    let mut s = resp.into_stream().unwrap();
    assert_eq!(budget.outstanding(), 1, "settled only when the stream ends");
    while s.next().await.is_some() {}
    settled(&budget).await;
    assert_eq!(
        budget.remaining(&tenant()).await.unwrap(),
        Some(Usd::from_f64(0.995))
    );
}

#[tokio::test]
async fn a_dropped_stream_settles_what_was_generated() {
    let mock = MockProvider::new("p").default_reply(
        MockReply::chunks(["one ", "two ", "three"]).with_chunk_delay(Duration::from_millis(1)),
    );
    let (budget, svc, _) = setup(1.0, mock);
    let mut r = req(true);
    if let llmops_core::RequestBody::Chat(c) = &mut r.body {
        c.stream_options = None; // no usage chunk: the layer counts the output itself
    }
    let resp = svc.oneshot(r).await.unwrap();
    let mut s = resp.into_stream().unwrap();
    let _role = s.next().await;
    let _first = s.next().await;
    drop(s);
    settled(&budget).await;
    let left = budget.remaining(&tenant()).await.unwrap().unwrap();
    assert!(left < Usd::from_f64(1.0), "the generated part is charged");
    assert!(
        left > Usd::from_f64(0.99),
        "the unused reservation is returned: {left}"
    );
}

#[tokio::test]
async fn a_cancelled_call_releases_its_reservation() {
    let mock = MockProvider::new("p")
        .default_reply(MockReply::text("slow").with_latency(Duration::from_secs(60)));
    let (budget, svc, _) = setup(1.0, mock);
    let call = svc.oneshot(req(false));
    assert!(
        tokio::time::timeout(Duration::from_millis(20), call)
            .await
            .is_err()
    );
    settled(&budget).await;
    assert_eq!(
        budget.remaining(&tenant()).await.unwrap(),
        Some(Usd::from_f64(1.0))
    );
}

#[tokio::test]
async fn unpriced_models_are_refused_not_free() {
    let mock = MockProvider::new("p").default_reply(MockReply::text("hi"));
    let (_, svc, mock) = setup(1.0, mock);
    let mut r = req(false);
    if let llmops_core::RequestBody::Chat(c) = &mut r.body {
        c.model = "unknown-model".into();
    }
    let err = svc.oneshot(r).await.unwrap_err();
    assert!(err.message().contains("unknown-model"), "{}", err.message());
    mock.assert_call_count(0);
}

#[tokio::test]
async fn rate_limits_alone_do_not_need_prices_when_so_configured() {
    let budget =
        MemoryBudget::new(vec![Limit::per_minute("tenant:*").unwrap().requests(1)]).unwrap();
    let mock = Arc::new(MockProvider::new("p").default_reply(MockReply::text("hi")));
    let svc = BudgetLayer::new(Arc::new(budget), Arc::new(PriceCatalog::empty()))
        .require_price(false)
        .layer(ProviderService::new(mock.clone()));
    let mut r = req(false);
    if let llmops_core::RequestBody::Chat(c) = &mut r.body {
        c.model = "unpriced".into();
    }
    svc.clone().oneshot(r.clone()).await.unwrap();
    let err = svc.oneshot(r).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimitExceeded);
    mock.assert_call_count(1);
}
