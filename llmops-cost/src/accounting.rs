//! Pricing answers without a budget: the [`CostLayer`].
//!
//! The budget layer prices every answer it settles. A deployment without budgets still wants
//! cost, and what the provider's prompt cache saved, in its telemetry and audit log; the
//! [`CostLayer`] prices each answer from its usage at the catalog's rates and reports the
//! [`ResponseCost`] the same way the budget layer does: in the response metadata of a complete
//! answer, and through the request's [`CostReport`] for complete answers and streams alike.
//! Use one or the other, not both.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use llmops_core::service::BoxFuture;
use llmops_core::stream::{ObservedStream, StreamSummary};
use llmops_core::{
    Amount, CostReport, Error, LlmRequest, LlmResponse, ResponseBody, ResponseCost, ResponseMeta,
    Result, Usage, Usd,
};
use tower::{Layer, Service};

use crate::prices::{ModelPrice, PriceCatalog};

/// What `usage` cost at `price`, with its prompt-cache effects; `fallback` when it cannot be
/// priced (a rate the usage needs is missing), nothing for an unpriced model.
pub(crate) fn actual_cost(
    price: Option<&ModelPrice>,
    usage: &Usage,
    fallback: Amount,
) -> ResponseCost {
    match price.map(|p| p.cost(usage)) {
        Some(Ok(c)) => c.response_cost(usage.total_tokens()),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "cannot price the usage: counting the worst case");
            ResponseCost::new(fallback.usd, fallback.tokens)
        }
        None => ResponseCost::new(Usd::ZERO, usage.total_tokens()),
    }
}

/// Leaves `cost` in the response metadata and in the request's [`CostReport`], if any.
pub(crate) fn report_cost(
    meta: &mut ResponseMeta,
    report: Option<&CostReport>,
    cost: ResponseCost,
) {
    meta.extensions.insert(cost);
    if let Some(r) = report {
        r.set(cost);
    }
}

/// A layer that prices every answer from its usage at the catalog's rates (cache reads and
/// writes at their own rates) and reports the [`ResponseCost`] — with what the provider's
/// prompt cache saved — to outer layers. Answers of unpriced models, and streams that end
/// without a usage chunk, are not priced. A [`ResponseCost`] an inner layer already left (a
/// cache hit, a cascade) is passed on unchanged.
#[derive(Clone)]
pub struct CostLayer {
    catalog: Arc<PriceCatalog>,
}

impl fmt::Debug for CostLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CostLayer")
    }
}

impl CostLayer {
    /// A layer pricing answers at the rates of `catalog`.
    pub fn new(catalog: Arc<PriceCatalog>) -> Self {
        Self { catalog }
    }
}

impl<S> Layer<S> for CostLayer {
    type Service = CostService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CostService {
            inner,
            catalog: self.catalog.clone(),
        }
    }
}

/// The service of [`CostLayer`].
#[derive(Clone)]
pub struct CostService<S> {
    inner: S,
    catalog: Arc<PriceCatalog>,
}

impl<S> fmt::Debug for CostService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CostService")
    }
}

impl<S> Service<LlmRequest> for CostService<S>
where
    S: Service<LlmRequest, Response = LlmResponse, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = LlmResponse;
    type Error = Error;
    type Future = BoxFuture<Result<LlmResponse>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: LlmRequest) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let price = self.catalog.price(req.model()).ok().cloned();
        let report = CostReport::of(&req.ctx).cloned();
        Box::pin(async move {
            let mut resp = inner.call(req).await?;
            if let Some(known) = resp.meta.extensions.get::<ResponseCost>().copied() {
                if let Some(r) = &report {
                    r.set(known);
                }
                return Ok(resp);
            }
            let Some(price) = price else {
                return Ok(resp);
            };
            let usage = match &resp.body {
                ResponseBody::Chat(r) => r.usage.clone(),
                ResponseBody::Embeddings(r) => r.usage.clone(),
                ResponseBody::ChatStream(_) => None,
                _ => None,
            };
            if let Some(u) = usage {
                let cost = actual_cost(Some(&price), &u, Amount::default());
                report_cost(&mut resp.meta, report.as_ref(), cost);
                return Ok(resp);
            }
            if let (ResponseBody::ChatStream(_), Some(report)) = (&resp.body, report) {
                resp.body = match resp.body {
                    ResponseBody::ChatStream(s) => {
                        let on_end = move |summary: StreamSummary| {
                            if let Some(u) = &summary.usage {
                                report.set(actual_cost(Some(&price), u, Amount::default()));
                            }
                        };
                        ResponseBody::ChatStream(ObservedStream::new(s, on_end).boxed())
                    }
                    other => other,
                };
            }
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use futures_util::StreamExt;
    use llmops_core::mock::{MockProvider, MockReply};
    use llmops_core::{ChatRequest, Message, ProviderService, RequestContext};
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;

    fn catalog() -> Arc<PriceCatalog> {
        let mut c = PriceCatalog::bundled();
        c.insert(
            ModelPrice::per_million("m", 3.0, 15.0)
                .unwrap()
                .with_cache_read(crate::prices::Rate::per_million(0.30).unwrap())
                .with_cache_write(crate::prices::Rate::per_million(3.75).unwrap()),
        );
        Arc::new(c)
    }

    fn usage() -> Usage {
        let mut u = Usage::new(10_000, 100);
        u.cache_read_tokens = 8_000;
        u.cache_write_tokens = 1_000;
        u
    }

    /// Sends `body` through a `CostLayer` over a mock answering `text` with [`usage`], with a
    /// cost report installed; returns the response and the report.
    async fn call(text: &str, body: ChatRequest) -> (LlmResponse, CostReport) {
        let provider = Arc::new(
            MockProvider::new("p").default_reply(MockReply::text(text).with_usage(usage())),
        );
        let svc = ServiceBuilder::new()
            .layer(CostLayer::new(catalog()))
            .service(ProviderService::new(provider));
        let mut ctx = RequestContext::new();
        let report = CostReport::install(&mut ctx);
        let resp = svc.oneshot(LlmRequest::chat(ctx, body)).await.unwrap();
        (resp, report)
    }

    #[tokio::test]
    async fn prices_a_complete_answer_with_its_prompt_cache_savings() {
        let body = ChatRequest::new("m", vec![Message::user("hi")]);
        let (resp, report) = call("ok", body).await;
        let cost = *resp.meta.extensions.get::<ResponseCost>().unwrap();
        // 1,000 uncached × $3 + 8,000 read × $0.30 + 1,000 written × $3.75 + 100 out × $15,
        // per million.
        assert_eq!(cost.usd, Usd::from_f64(0.003 + 0.0024 + 0.00375 + 0.0015));
        // 8,000 × ($3 − $0.30) per million saved; 1,000 × ($3.75 − $3) per million extra.
        assert_eq!(cost.cache_read_savings, Usd::from_f64(0.0216));
        assert_eq!(cost.cache_write_premium, Usd::from_f64(0.00075));
        assert_eq!(cost.tokens, 10_100);
        assert_eq!(report.get(), Some(cost));
    }

    #[tokio::test]
    async fn prices_a_stream_at_its_end_through_the_report() {
        let mut body = ChatRequest::new("m", vec![Message::user("hi")]).with_stream(true);
        body.stream_options = Some(llmops_core::types::StreamOptions::include_usage(true));
        let (resp, report) = call("a b c", body).await;
        let ResponseBody::ChatStream(mut s) = resp.body else {
            panic!("not a stream");
        };
        assert_eq!(report.get(), None, "priced before the stream ended");
        while s.next().await.is_some() {}
        let cost = report.get().unwrap();
        assert_eq!(cost.cache_read_savings, Usd::from_f64(0.0216));
    }

    #[tokio::test]
    async fn unpriced_models_pass_through_unpriced() {
        let body = ChatRequest::new("unknown", vec![Message::user("x")]);
        let (resp, report) = call("ok", body).await;
        assert!(resp.meta.extensions.get::<ResponseCost>().is_none());
        assert_eq!(report.get(), None);
    }
}
