//! The provider's prompt (prefix) cache in `/metrics`: input tokens by cache state and the
//! money the cache saved, per model and tenant, for complete answers and streams (whose cost is
//! reported through the request's `CostReport` when they end).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use futures_util::StreamExt;
use llmops_core::mock::{MockProvider, MockReply};
use llmops_core::stream::ObservedStream;
use llmops_core::types::StreamOptions;
use llmops_core::{
    BoxLlmService, ChatRequest, CostReport, LlmRequest, LlmResponse, Message, ProviderService,
    RequestContext, ResponseBody, ResponseCost, Usage, Usd,
};
use llmops_observe::{ObserveConfig, ObserveLayer};
use tower::{ServiceBuilder, ServiceExt};

fn usage(input: u64, cached: u64, written: u64) -> Usage {
    let mut u = Usage::new(input, 10);
    u.cache_read_tokens = cached;
    u.cache_write_tokens = written;
    u
}

/// A stand-in for the cost layer: prices every answer at $1 saved per cached token and $0.5
/// premium per written token (in nano-dollars), reporting complete answers in the metadata and
/// streams through the report when they end.
fn price(mut resp: LlmResponse, report: Option<CostReport>) -> LlmResponse {
    let cost_of = |u: &Usage| {
        ResponseCost::new(Usd::from_nanos(1_000), u.total_tokens()).with_prompt_cache(
            Usd::from_nanos(i64::try_from(u.cache_read_tokens).unwrap()),
            Usd::from_nanos(i64::try_from(u.cache_write_tokens / 2).unwrap()),
        )
    };
    resp.body = match resp.body {
        ResponseBody::Chat(r) => {
            resp.meta
                .extensions
                .insert(cost_of(r.usage.as_ref().unwrap()));
            ResponseBody::Chat(r)
        }
        ResponseBody::ChatStream(s) => {
            let report = report.unwrap();
            ResponseBody::ChatStream(
                ObservedStream::new(s, move |sum| {
                    report.set(cost_of(sum.usage.as_ref().unwrap()));
                })
                .boxed(),
            )
        }
        other => other,
    };
    resp
}

#[derive(Clone)]
struct Pricing<S>(S);

impl<S> tower::Service<LlmRequest> for Pricing<S>
where
    S: tower::Service<LlmRequest, Response = LlmResponse, Error = llmops_core::Error>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = LlmResponse;
    type Error = llmops_core::Error;
    type Future = llmops_core::service::BoxFuture<llmops_core::Result<LlmResponse>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<llmops_core::Result<()>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: LlmRequest) -> Self::Future {
        let report = CostReport::of(&req.ctx).cloned();
        let fut = self.0.call(req);
        Box::pin(async move { Ok(price(fut.await?, report)) })
    }
}

fn value(body: &str, name: &str, labels: &[&str]) -> Option<f64> {
    body.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .reduce(|a, b| a + b)
}

#[tokio::test]
async fn prompt_cache_tokens_and_savings_per_model_and_tenant() {
    let (handle, _router) =
        llmops_observe::prometheus::install().expect("first recorder of this process");
    let mock = MockProvider::new("vllm")
        .reply(MockReply::text("one").with_usage(usage(1_000, 800, 0)))
        .reply(MockReply::chunks(["a", "b"]).with_usage(usage(2_000, 1_500, 100)))
        .reply(MockReply::text("cold").with_usage(usage(500, 0, 0)));
    let svc = BoxLlmService::new(
        ServiceBuilder::new()
            .layer(ObserveLayer::new(ObserveConfig::default()))
            .layer_fn(Pricing)
            .service(ProviderService::new(Arc::new(mock))),
    );
    let chat = || ChatRequest::new("qwen", vec![Message::user("hi")]);
    let ctx = |t: &str| RequestContext::new().with_tenant(t);

    svc.clone()
        .oneshot(LlmRequest::chat(ctx("acme"), chat()))
        .await
        .unwrap();
    let mut sreq = chat().with_stream(true);
    sreq.stream_options = Some(StreamOptions::include_usage(true));
    let stream = svc
        .clone()
        .oneshot(LlmRequest::chat(ctx("acme"), sreq))
        .await
        .unwrap()
        .into_stream()
        .unwrap();
    assert!(stream.collect::<Vec<_>>().await.iter().all(Result::is_ok));
    svc.clone()
        .oneshot(LlmRequest::chat(ctx("globex"), chat()))
        .await
        .unwrap();

    let body = handle.render();
    let tokens = "llmops_prompt_cache_tokens_total";
    let acme = r#"llmops_tenant="acme""#;
    let globex = r#"llmops_tenant="globex""#;
    let model = r#"gen_ai_request_model="qwen""#;
    let cached = r#"llmops_prompt_cache_state="cached""#;
    let written = r#"llmops_prompt_cache_state="written""#;
    let uncached = r#"llmops_prompt_cache_state="uncached""#;
    assert_eq!(value(&body, tokens, &[acme, model, cached]), Some(2_300.0));
    assert_eq!(value(&body, tokens, &[acme, written]), Some(100.0));
    assert_eq!(value(&body, tokens, &[acme, uncached]), Some(600.0));
    assert_eq!(value(&body, tokens, &[globex, uncached]), Some(500.0));
    assert_eq!(value(&body, tokens, &[globex, cached]), None);
    // Savings from both answers of acme, the stream's reported at its end; none for globex.
    let savings = "llmops_prompt_cache_savings_nanodollars_total";
    assert_eq!(value(&body, savings, &[acme, model]), Some(2_300.0));
    assert_eq!(value(&body, savings, &[globex]), None);
    let premium = "llmops_prompt_cache_write_premium_nanodollars_total";
    assert_eq!(value(&body, premium, &[acme]), Some(50.0));
    // The stream's cost arrived through the report too.
    assert_eq!(
        value(&body, "llmops_cost_nanodollars_total", &[acme]),
        Some(2_000.0),
        "{body}"
    );
}
