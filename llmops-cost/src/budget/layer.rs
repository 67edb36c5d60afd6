//! The budget layer: reserve before the call, settle exactly once after it.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::HeaderValue;
use llmops_core::service::BoxFuture;
use llmops_core::stream::{ObservedStream, StreamOutcome, StreamSummary};
use llmops_core::{
    Amount, Budget, BudgetScope, CostReport, Error, LlmRequest, LlmResponse, RequestBody,
    Reservation, ResponseBody, Result, Usage, Usd,
};
use tower::{Layer, Service};

use super::scopes_for;
use crate::accounting::{actual_cost, report_cost};
use crate::ceiling::DEFAULT_MAX_OUTPUT_TOKENS;
use crate::estimate::{PromptEstimate, ResponseCost, body_upper_bound};
use crate::prices::{ModelPrice, PriceCatalog};
use crate::tokens::counter_for_model;

/// The response header carrying the budget left to the caller (USD, six decimals): the
/// smallest remainder over the request's scopes that have a USD limit, after this request's
/// reservation.
pub const BUDGET_REMAINING_HEADER: &str = "x-llmops-budget-remaining-usd";

/// A layer applying a [`Budget`] to every request.
///
/// Before the call it reserves the request's worst case (prompt tokens — the exact count a
/// ceiling layer left in the context, else the byte bound — plus `max_tokens` at the model's
/// price) in every scope of the request ([`scopes_for`]). After the call it commits the
/// actual cost, computed from the response's usage (or a [`ResponseCost`] an inner layer
/// left in the response metadata), and the rest of the reservation returns to the budget. A
/// failed call releases the reservation; a stream settles when it ends, fails or is dropped
/// by the client; a cache hit costs nothing but still counts as a request. If the request's
/// future is itself dropped mid-call (client gone), the reservation is released.
#[derive(Clone)]
pub struct BudgetLayer {
    shared: Arc<Shared>,
}

struct Shared {
    budget: Arc<dyn Budget>,
    catalog: Arc<PriceCatalog>,
    default_max_output_tokens: u64,
    remaining_header: bool,
    require_price: bool,
}

impl fmt::Debug for BudgetLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BudgetLayer")
            .field(
                "default_max_output_tokens",
                &self.shared.default_max_output_tokens,
            )
            .field("remaining_header", &self.shared.remaining_header)
            .finish()
    }
}

impl BudgetLayer {
    /// A layer charging `budget` at the prices of `catalog`.
    pub fn new(budget: Arc<dyn Budget>, catalog: Arc<PriceCatalog>) -> Self {
        Self {
            shared: Arc::new(Shared {
                budget,
                catalog,
                default_max_output_tokens: DEFAULT_MAX_OUTPUT_TOKENS,
                remaining_header: true,
                require_price: true,
            }),
        }
    }

    /// The output cap assumed when a request sets no `max_tokens` (builder style).
    #[must_use]
    pub fn default_max_output_tokens(mut self, n: u64) -> Self {
        if let Some(s) = Arc::get_mut(&mut self.shared) {
            s.default_max_output_tokens = n;
        }
        self
    }

    /// Whether to add [`BUDGET_REMAINING_HEADER`] to responses (one `remaining` lookup per
    /// scope per request; on by default).
    #[must_use]
    pub fn remaining_header(mut self, on: bool) -> Self {
        if let Some(s) = Arc::get_mut(&mut self.shared) {
            s.remaining_header = on;
        }
        self
    }
}

impl BudgetLayer {
    /// Whether a model without a price is refused (the default). Turn it off only when no
    /// limit caps USD — rate and token limits need no price — and unpriced requests are then
    /// reserved and committed at zero USD while their tokens and requests still count.
    #[must_use]
    pub fn require_price(mut self, on: bool) -> Self {
        if let Some(s) = Arc::get_mut(&mut self.shared) {
            s.require_price = on;
        }
        self
    }
}

impl<S> Layer<S> for BudgetLayer {
    type Service = BudgetService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BudgetService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service of [`BudgetLayer`].
#[derive(Clone)]
pub struct BudgetService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> fmt::Debug for BudgetService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BudgetService")
    }
}

/// Settles a reservation exactly once; releases it if dropped unsettled.
struct Settlement {
    budget: Arc<dyn Budget>,
    reservation: Option<Reservation>,
}

impl Settlement {
    async fn commit(mut self, actual: Amount) {
        if let Some(r) = self.reservation.take()
            && let Err(e) = self.budget.commit(r, actual).await
        {
            tracing::error!(error = %e, "budget commit failed");
        }
    }

    async fn release(mut self) {
        if let Some(r) = self.reservation.take()
            && let Err(e) = self.budget.release(r).await
        {
            tracing::error!(error = %e, "budget release failed");
        }
    }

    /// Settles in a background task (from a synchronous callback).
    fn spawn(mut self, actual: Option<Amount>) {
        let Some(r) = self.reservation.take() else {
            return;
        };
        let budget = self.budget.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move {
                    let res = match actual {
                        Some(a) => budget.commit(r, a).await,
                        None => budget.release(r).await,
                    };
                    if let Err(e) = res {
                        tracing::error!(error = %e, "budget settlement failed");
                    }
                });
            }
            Err(_) => tracing::error!(
                reservation = %r.id,
                "budget reservation dropped outside a tokio runtime: it stays reserved until \
                 the backend expires it"
            ),
        }
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        if self.reservation.is_some() {
            let me = Settlement {
                budget: self.budget.clone(),
                reservation: self.reservation.take(),
            };
            me.spawn(None);
        }
    }
}

fn amount(cost: ResponseCost) -> Amount {
    Amount::new(cost.usd, cost.tokens)
}

/// What a stream that ended without a usage chunk cost: the prompt plus its output counted
/// with the model's tokenizer (or bounded by its bytes).
fn stream_estimate(
    model: &str,
    price: Option<&ModelPrice>,
    input_tokens: u64,
    summary: &StreamSummary,
    fallback: Amount,
) -> Option<ResponseCost> {
    if summary.first_content_at.is_none() && summary.chunks <= 1 {
        return None; // nothing generated: release
    }
    let Some(resp) = &summary.response else {
        return Some(ResponseCost::new(fallback.usd, fallback.tokens));
    };
    let text: String = resp.choices.iter().map(|c| c.message.text()).collect();
    let out = match counter_for_model(model) {
        Some(c) => c.count(&text) as u64,
        None => text.len() as u64,
    };
    let usage = Usage::new(input_tokens, out);
    Some(actual_cost(price, &usage, fallback))
}

async fn remaining_header(budget: &dyn Budget, scopes: &[BudgetScope]) -> Option<HeaderValue> {
    let mut least: Option<Usd> = None;
    for s in scopes {
        if let Ok(Some(r)) = budget.remaining(s).await {
            least = Some(least.map_or(r, |l| l.min(r)));
        }
    }
    least.and_then(|u| HeaderValue::from_str(&format!("{:.6}", u.as_f64())).ok())
}

impl<S> Service<LlmRequest> for BudgetService<S>
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
        let shared = self.shared.clone();
        Box::pin(async move {
            let scopes = scopes_for(&req.ctx);
            let report = CostReport::of(&req.ctx).cloned();
            let model = req.model().to_owned();
            let price = match shared.catalog.price(&model) {
                Ok(p) => Some(p.clone()),
                Err(_) if !shared.require_price => None,
                Err(e) => return Err(e.into()),
            };
            let input = match req.ctx.extensions.get::<PromptEstimate>() {
                Some(e) => e.tokens,
                None => body_upper_bound(&req.body),
            };
            let (max_out, collect) = match &req.body {
                RequestBody::Chat(r) => (
                    r.max_output_tokens()
                        .unwrap_or(shared.default_max_output_tokens),
                    r.is_stream() && !r.include_usage(),
                ),
                _ => (0, false),
            };
            let worst = match &price {
                Some(p) => p.worst_case(input, max_out).map_err(Error::from)?,
                None => Usd::ZERO,
            };
            let reserved = Amount::new(worst, input + max_out);
            let reservation = shared.budget.reserve(&scopes, reserved).await?;
            let settlement = Settlement {
                budget: shared.budget.clone(),
                reservation: Some(reservation),
            };
            let header = if shared.remaining_header {
                remaining_header(shared.budget.as_ref(), &scopes).await
            } else {
                None
            };

            let mut resp = match inner.call(req).await {
                Ok(r) => r,
                Err(e) => {
                    settlement.release().await;
                    return Err(e);
                }
            };
            if let Some(h) = header {
                resp.meta.headers.insert(BUDGET_REMAINING_HEADER, h);
            }
            let known = resp.meta.extensions.get::<ResponseCost>().copied();
            if resp.meta.cache_hit {
                settlement.commit(Amount::new(Usd::ZERO, 0)).await;
                return Ok(resp);
            }
            resp.body = match resp.body {
                ResponseBody::ChatStream(s) => {
                    let on_end = move |summary: StreamSummary| {
                        let actual = match (&summary.usage, known) {
                            (_, Some(k)) => Some(k),
                            (Some(u), None) => Some(actual_cost(price.as_deref(), u, reserved)),
                            (None, None) => {
                                stream_estimate(&model, price.as_deref(), input, &summary, reserved)
                            }
                        };
                        if let StreamOutcome::Failed(e) = &summary.outcome {
                            tracing::debug!(error = %e, "stream failed: settling its budget");
                        }
                        if let (Some(report), Some(cost)) = (&report, actual) {
                            report.set(cost);
                        }
                        settlement.spawn(actual.map(amount));
                    };
                    let observed = if collect {
                        ObservedStream::collecting(s, on_end).boxed()
                    } else {
                        ObservedStream::new(s, on_end).boxed()
                    };
                    ResponseBody::ChatStream(observed)
                }
                ResponseBody::Chat(r) => {
                    let actual = match (known, &r.usage) {
                        (Some(k), _) => k,
                        (None, Some(u)) => actual_cost(price.as_deref(), u, reserved),
                        (None, None) => ResponseCost::new(reserved.usd, reserved.tokens),
                    };
                    settlement.commit(amount(actual)).await;
                    report_cost(&mut resp.meta, report.as_ref(), actual);
                    ResponseBody::Chat(r)
                }
                ResponseBody::Embeddings(r) => {
                    let actual = match (known, &r.usage) {
                        (Some(k), _) => k,
                        (None, Some(u)) => actual_cost(price.as_deref(), u, reserved),
                        (None, None) => ResponseCost::new(reserved.usd, reserved.tokens),
                    };
                    settlement.commit(amount(actual)).await;
                    report_cost(&mut resp.meta, report.as_ref(), actual);
                    ResponseBody::Embeddings(r)
                }
                other => {
                    settlement.commit(reserved).await;
                    other
                }
            };
            Ok(resp)
        })
    }
}
