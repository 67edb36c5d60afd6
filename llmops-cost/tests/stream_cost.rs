//! A streamed and a non-streamed call of the same content cost exactly the same, including
//! cached-input and reasoning tokens, whether priced directly or committed by the budget layer.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;

use futures_util::StreamExt;
use llmops_core::mock::{MockProvider, MockReply};
use llmops_core::stream::ObservedStream;
use llmops_core::{
    Budget, BudgetScope, ChatRequest, LlmRequest, Message, Provider, ProviderService,
    RequestContext, StreamOptions, Usage,
};
use llmops_cost::budget::{BudgetLayer, Limit, MemoryBudget, Window};
use llmops_cost::prices::{ModelPrice, PriceCatalog, Rate};
use tower::{Layer, ServiceExt};

fn catalog() -> Arc<PriceCatalog> {
    let mut c = PriceCatalog::empty();
    c.insert(
        ModelPrice::per_million("o-model", 1.1, 4.4)
            .unwrap()
            .with_cache_read(Rate::per_million(0.275).unwrap())
            .with_reasoning(Rate::per_million(4.4).unwrap()),
    );
    Arc::new(c)
}

fn usage() -> Usage {
    Usage::new(12_345, 6_789)
        .with_cache_read(10_000)
        .with_reasoning(4_000)
}

fn mock() -> Arc<MockProvider> {
    Arc::new(
        MockProvider::new("p")
            .default_reply(MockReply::chunks(["The ", "same ", "answer."]).with_usage(usage())),
    )
}

fn request(stream: bool) -> ChatRequest {
    let mut r = ChatRequest::new("o-model", vec![Message::user("q")]).with_max_tokens(10_000);
    if stream {
        r = r.with_stream(true);
        r.stream_options = Some(StreamOptions::include_usage(true));
    }
    r
}

#[tokio::test]
async fn same_content_same_cost_priced_directly() {
    let m = mock();
    let ctx = RequestContext::new();
    let whole = m.chat(request(false), &ctx).await.unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut s = ObservedStream::collecting(
        m.chat_stream(request(true), &ctx).await.unwrap(),
        move |sum| {
            tx.send(sum).unwrap();
        },
    );
    while s.next().await.is_some() {}
    let summary = rx.recv().unwrap();
    let streamed = summary.response.unwrap();
    assert_eq!(streamed.first_text(), whole.first_text());
    let c = catalog();
    let a = c.cost("o-model", whole.usage.as_ref().unwrap()).unwrap();
    let b = c.cost("o-model", streamed.usage.as_ref().unwrap()).unwrap();
    assert_eq!(a, b);
    assert!(a.cache_read.nanos() > 0 && a.reasoning.nanos() > 0);
}

#[tokio::test]
async fn same_content_same_commit_through_the_budget_layer() {
    let budget = MemoryBudget::new(vec![
        Limit::budget("tenant:*", Window::Daily).unwrap().usd(100.0),
    ])
    .unwrap();
    let svc =
        BudgetLayer::new(Arc::new(budget.clone()), catalog()).layer(ProviderService::new(mock()));
    let call = |tenant: &str, stream: bool| {
        LlmRequest::chat(RequestContext::new().with_tenant(tenant), request(stream))
    };
    svc.clone().oneshot(call("plain", false)).await.unwrap();
    let resp = svc.oneshot(call("streamed", true)).await.unwrap();
    let mut s = resp.into_stream().unwrap();
    while s.next().await.is_some() {}
    for _ in 0..100 {
        if budget.outstanding() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let plain = budget
        .remaining(&BudgetScope::new("tenant", "plain"))
        .await
        .unwrap()
        .unwrap();
    let streamed = budget
        .remaining(&BudgetScope::new("tenant", "streamed"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(plain, streamed);
    let expected = catalog().cost("o-model", &usage()).unwrap().total;
    assert_eq!(
        plain.nanos(),
        llmops_core::Usd::from_f64(100.0).nanos() - expected.nanos()
    );
}
