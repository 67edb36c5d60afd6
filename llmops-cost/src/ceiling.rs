//! Per-request cost ceilings: refuse (or clamp) a request whose worst case is too expensive,
//! before any upstream call.
//!
//! The worst case is the prompt's tokens at the model's highest input rate plus `max_tokens`
//! (or the configured default when the request sets none) at its output rate. The check is
//! cheap: the prompt's UTF-8 length bounds its token count, so the tokenizer runs only when
//! the bound alone would exceed the ceiling. In clamp mode a request that does not fit gets
//! `max_tokens` lowered to the largest value that fits, and is refused only when not even
//! [`CeilingRule::min_output_tokens`] fit.
//!
//! A refusal is [`ErrorKind::CostCeilingExceeded`] (HTTP 400, code `cost_ceiling_exceeded`)
//! and its message gives the numbers.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use llmops_core::{
    ChatRequest, Error, ErrorKind, LlmRequest, LlmResponse, RequestBody, RequestContext, Result,
    Usd,
};
use tower::{Layer, Service};

use crate::estimate::{PromptEstimate, body_upper_bound, chat_exact};
use crate::prices::{ModelPrice, PriceCatalog};
use crate::tokens::counter_for_model;

/// What to do with a request whose worst case exceeds its ceiling.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OnExceed {
    /// Refuse it.
    #[default]
    Reject,
    /// Lower `max_tokens` to fit, refuse only if even the minimum does not fit.
    Clamp,
}

/// One ceiling: a tenant (or `*`) and a model (or `*`), and the most a request may cost.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CeilingRule {
    /// Tenant name, or `*` for every tenant.
    pub tenant: String,
    /// Model (route) name, or `*` for every model.
    pub model: String,
    /// The most one request may cost.
    pub max_usd: Usd,
    /// Reject or clamp.
    pub on_exceed: OnExceed,
    /// In clamp mode, the fewest output tokens worth sending a request for.
    pub min_output_tokens: u64,
}

impl CeilingRule {
    /// A rejecting ceiling of `max_usd` for `tenant` (or `*`) on every model.
    pub fn new(tenant: impl Into<String>, max_usd: f64) -> Self {
        Self {
            tenant: tenant.into(),
            model: "*".into(),
            max_usd: Usd::from_f64(max_usd),
            on_exceed: OnExceed::Reject,
            min_output_tokens: 1,
        }
    }

    /// Restricts the rule to one model (builder style).
    #[must_use]
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// Sets reject or clamp (builder style).
    #[must_use]
    pub fn on_exceed(mut self, on: OnExceed) -> Self {
        self.on_exceed = on;
        self
    }

    fn specificity(&self, tenant: &str, model: &str) -> Option<u8> {
        let t = if self.tenant == tenant {
            2
        } else if self.tenant == "*" {
            0
        } else {
            return None;
        };
        let m = if self.model == model {
            1
        } else if self.model == "*" {
            0
        } else {
            return None;
        };
        Some(t + m)
    }
}

/// The decision of a ceiling check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CeilingDecision {
    /// No ceiling applies.
    NoCeiling,
    /// The worst case fits.
    Within {
        /// The worst case.
        worst_case: Usd,
        /// Whether the tokenizer had to run.
        tokenized: bool,
    },
    /// `max_tokens` was lowered to fit.
    Clamped {
        /// The new output-token cap.
        max_tokens: u64,
    },
}

/// The policy the ceiling layer applies; usable on its own (`check`).
pub struct CeilingPolicy {
    catalog: Arc<PriceCatalog>,
    rules: Vec<CeilingRule>,
    default_max_output_tokens: u64,
}

impl fmt::Debug for CeilingPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CeilingPolicy")
            .field("rules", &self.rules)
            .field("default_max_output_tokens", &self.default_max_output_tokens)
            .finish()
    }
}

/// The output-token cap assumed for requests that set none, unless configured.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;

impl CeilingPolicy {
    /// A policy with `rules` priced from `catalog`.
    pub fn new(catalog: Arc<PriceCatalog>, rules: Vec<CeilingRule>) -> Self {
        Self {
            catalog,
            rules,
            default_max_output_tokens: DEFAULT_MAX_OUTPUT_TOKENS,
        }
    }

    /// Sets the output cap assumed when a request sets no `max_tokens` (builder style).
    #[must_use]
    pub fn default_max_output_tokens(mut self, n: u64) -> Self {
        self.default_max_output_tokens = n;
        self
    }

    fn rule(&self, tenant: &str, model: &str) -> Option<&CeilingRule> {
        self.rules
            .iter()
            .filter_map(|r| r.specificity(tenant, model).map(|s| (s, r)))
            .max_by_key(|(s, _)| *s)
            .map(|(_, r)| r)
    }

    /// Checks (and in clamp mode amends) one request. Leaves a [`PromptEstimate`] in the
    /// context's extensions when it computed one.
    pub fn check(
        &self,
        ctx: &mut RequestContext,
        body: &mut RequestBody,
    ) -> Result<CeilingDecision> {
        match self.evaluate(ctx, body)? {
            Verdict::Done(d) => Ok(d),
            Verdict::Clamp(n) => {
                if let RequestBody::Chat(r) = body {
                    set_max_output(r, n);
                }
                Ok(CeilingDecision::Clamped { max_tokens: n })
            }
        }
    }

    fn evaluate(&self, ctx: &mut RequestContext, body: &RequestBody) -> Result<Verdict> {
        let (model, max_out) = match body {
            RequestBody::Chat(r) => (
                r.model.as_str(),
                r.max_output_tokens()
                    .unwrap_or(self.default_max_output_tokens),
            ),
            RequestBody::Embeddings(r) => (r.model.as_str(), 0),
            _ => return Ok(Verdict::Done(CeilingDecision::NoCeiling)),
        };
        let Some(rule) = self.rule(&ctx.tenant, model) else {
            return Ok(Verdict::Done(CeilingDecision::NoCeiling));
        };
        let price = self.catalog.price(model).map_err(Error::from)?;
        let bound = body_upper_bound(body);
        let worst = price.worst_case(bound, max_out).map_err(Error::from)?;
        if worst <= rule.max_usd {
            ctx.extensions.insert(PromptEstimate::new(bound, false));
            return Ok(Verdict::Done(CeilingDecision::Within {
                worst_case: worst,
                tokenized: false,
            }));
        }
        // The bound does not decide: count exactly when the tokenizer is known.
        let estimate = match (body, counter_for_model(model)) {
            (RequestBody::Chat(r), Some(c)) => chat_exact(r, c),
            (RequestBody::Embeddings(r), Some(c)) => match r.input.texts() {
                Some(t) => PromptEstimate::new(t.iter().map(|s| c.count(s) as u64).sum(), true),
                None => PromptEstimate::new(bound, false),
            },
            _ => PromptEstimate::new(bound, false),
        };
        ctx.extensions.insert(estimate);
        let worst = price
            .worst_case(estimate.tokens, max_out)
            .map_err(Error::from)?;
        if worst <= rule.max_usd {
            return Ok(Verdict::Done(CeilingDecision::Within {
                worst_case: worst,
                tokenized: true,
            }));
        }
        if rule.on_exceed == OnExceed::Clamp
            && matches!(body, RequestBody::Chat(_))
            && let Some(fit) = max_fitting_output(price, estimate.tokens, rule.max_usd)
            && fit >= rule.min_output_tokens
        {
            return Ok(Verdict::Clamp(fit.min(max_out)));
        }
        Err(refusal(
            &ctx.tenant,
            model,
            price,
            estimate,
            max_out,
            worst,
            rule.max_usd,
        ))
    }
}

enum Verdict {
    Done(CeilingDecision),
    Clamp(u64),
}

fn max_fitting_output(price: &ModelPrice, input_tokens: u64, ceiling: Usd) -> Option<u64> {
    let input = price.worst_case(input_tokens, 0).ok()?;
    let left = ceiling.nanos().checked_sub(input.nanos())?;
    let per_token = price.worst_case(0, 1).ok()?.nanos().max(1);
    let mut n = u64::try_from(left / per_token).ok()?;
    // Rounding up per token can make n+1 fit; never return a value that does not.
    while n > 0 && price.worst_case(input_tokens, n).ok()? > ceiling {
        n -= 1;
    }
    Some(n)
}

fn set_max_output(r: &mut ChatRequest, n: u64) {
    if r.max_completion_tokens.is_some() || r.max_tokens.is_none() {
        r.max_completion_tokens = Some(n);
    }
    if r.max_tokens.is_some() {
        r.max_tokens = Some(n);
    }
}

fn refusal(
    tenant: &str,
    model: &str,
    price: &ModelPrice,
    est: PromptEstimate,
    max_out: u64,
    worst: Usd,
    ceiling: Usd,
) -> Error {
    let rate = |r: Option<crate::prices::Rate>| r.map_or(0.0, |r| r.usd_per_million());
    Error::new(
        ErrorKind::CostCeilingExceeded,
        format!(
            "worst-case cost {worst} exceeds the per-request ceiling {ceiling} of tenant \
             `{tenant}`: {} input tokens{} and up to {max_out} output tokens of `{model}` at \
             ${}/${} per million; lower max_tokens or shorten the prompt",
            est.tokens,
            if est.exact { "" } else { " (upper bound)" },
            rate(price.input),
            rate(price.output),
        ),
    )
    .with_param(if max_out > 0 {
        "max_tokens"
    } else {
        "messages"
    })
}

/// A layer enforcing per-request cost ceilings.
#[derive(Clone, Debug)]
pub struct CostCeilingLayer {
    policy: Arc<CeilingPolicy>,
}

impl CostCeilingLayer {
    /// A layer applying `policy`.
    pub fn new(policy: CeilingPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &CeilingPolicy {
        &self.policy
    }
}

impl<S> Layer<S> for CostCeilingLayer {
    type Service = CostCeilingService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CostCeilingService {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service of [`CostCeilingLayer`].
#[derive(Clone, Debug)]
pub struct CostCeilingService<S> {
    inner: S,
    policy: Arc<CeilingPolicy>,
}

impl<S> Service<LlmRequest> for CostCeilingService<S>
where
    S: Service<LlmRequest, Response = LlmResponse, Error = Error>,
{
    type Response = LlmResponse;
    type Error = Error;
    type Future = Either<Ready<Result<LlmResponse>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: LlmRequest) -> Self::Future {
        match self.policy.check(&mut req.ctx, &mut req.body) {
            Ok(decision) => {
                if let CeilingDecision::Clamped { max_tokens } = decision {
                    tracing::debug!(max_tokens, "cost ceiling clamped max_tokens");
                }
                Either::Right(self.inner.call(req))
            }
            Err(e) => Either::Left(ready(Err(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use llmops_core::mock::{MockProvider, MockReply};
    use llmops_core::{Message, ProviderService};
    use tower::ServiceExt;

    use super::*;

    fn catalog() -> Arc<PriceCatalog> {
        let mut c = PriceCatalog::empty();
        c.insert(ModelPrice::per_million("gpt-4o", 2.5, 10.0).unwrap());
        Arc::new(c)
    }

    fn req(text: &str, max_tokens: Option<u64>) -> LlmRequest {
        let mut r = ChatRequest::new("gpt-4o", vec![Message::user(text)]);
        r.max_tokens = max_tokens;
        LlmRequest::chat(RequestContext::new().with_tenant("t"), r)
    }

    #[tokio::test]
    async fn over_ceiling_is_refused_before_any_upstream_call() {
        let mock = Arc::new(MockProvider::new("m").default_reply(MockReply::text("ok")));
        let policy = CeilingPolicy::new(catalog(), vec![CeilingRule::new("*", 0.01)]);
        let svc = CostCeilingLayer::new(policy).layer(ProviderService::new(mock.clone()));
        // 1000 output tokens at $10/M = $0.01 plus input: over.
        let err = svc
            .clone()
            .oneshot(req("hello", Some(1000)))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CostCeilingExceeded);
        assert_eq!(err.http_status(), 400);
        assert_eq!(err.code(), "cost_ceiling_exceeded");
        assert!(err.message().contains("$0.010000"), "{}", err.message());
        assert!(
            err.message().contains("1000 output tokens"),
            "{}",
            err.message()
        );
        mock.assert_call_count(0);
        // Within the ceiling: passes.
        svc.oneshot(req("hello", Some(100))).await.unwrap();
        mock.assert_call_count(1);
    }

    #[tokio::test]
    async fn clamp_mode_lowers_max_tokens_to_fit() {
        let mock = Arc::new(MockProvider::new("m").default_reply(MockReply::text("ok")));
        let rule = CeilingRule::new("t", 0.001).on_exceed(OnExceed::Clamp);
        let svc = CostCeilingLayer::new(CeilingPolicy::new(catalog(), vec![rule]))
            .layer(ProviderService::new(mock.clone()));
        svc.oneshot(req("hi", Some(10_000))).await.unwrap();
        let sent = mock.last_chat_request().unwrap().max_tokens.unwrap();
        let price = ModelPrice::per_million("gpt-4o", 2.5, 10.0).unwrap();
        let counter = counter_for_model("gpt-4o").unwrap();
        let input = chat_exact(&req("hi", None).body_chat(), counter).tokens;
        assert!(sent < 100 && sent > 90, "{sent}");
        assert!(price.worst_case(input, sent).unwrap() <= Usd::from_f64(0.001));
        assert!(price.worst_case(input, sent + 1).unwrap() > Usd::from_f64(0.001));
    }

    #[test]
    fn byte_bound_decides_without_tokenizing_and_tokenizer_rescues_long_ascii() {
        let policy = CeilingPolicy::new(catalog(), vec![CeilingRule::new("*", 0.00005)]);
        let mut r = req("short", Some(1));
        let d = policy.check(&mut r.ctx, &mut r.body).unwrap();
        assert!(matches!(
            d,
            CeilingDecision::Within {
                tokenized: false,
                ..
            }
        ));
        // 8,000 bytes of repeated words: the byte bound (8k tokens × $2.5/M = $0.02) exceeds
        // the ceiling, the exact count (~1,000 tokens) does not.
        let text = "hello ".repeat(1000);
        let policy = CeilingPolicy::new(catalog(), vec![CeilingRule::new("*", 0.005)]);
        let mut r = req(&text, Some(1));
        let d = policy.check(&mut r.ctx, &mut r.body).unwrap();
        assert!(
            matches!(
                d,
                CeilingDecision::Within {
                    tokenized: true,
                    ..
                }
            ),
            "{d:?}"
        );
        assert!(r.ctx.extensions.get::<PromptEstimate>().unwrap().exact);
    }

    #[test]
    fn most_specific_rule_wins_and_unpriced_models_are_refused() {
        let policy = CeilingPolicy::new(
            catalog(),
            vec![
                CeilingRule::new("*", 100.0),
                CeilingRule::new("t", 0.0000001),
            ],
        );
        let mut r = req("hello", Some(10));
        assert!(policy.check(&mut r.ctx, &mut r.body).is_err());
        let mut other = req("hello", Some(10));
        other.ctx.tenant = "u".into();
        assert!(policy.check(&mut other.ctx, &mut other.body).is_ok());
        let mut unknown = req("hello", Some(10));
        if let RequestBody::Chat(c) = &mut unknown.body {
            c.model = "mystery".into();
        }
        let err = policy
            .check(&mut unknown.ctx, &mut unknown.body)
            .unwrap_err();
        assert!(err.message().contains("mystery"));
    }

    trait BodyChat {
        fn body_chat(self) -> ChatRequest;
    }
    impl BodyChat for LlmRequest {
        fn body_chat(self) -> ChatRequest {
            match self.body {
                RequestBody::Chat(c) => c,
                _ => unreachable!(),
            }
        }
    }
}
