//! Cost-aware cascade: try the cheaper model, escalate to the stronger one when a validator
//! rejects the answer.
//!
//! [`CascadeLayer`] serves requests for a *route* model name (say `support-auto`): it sends
//! them to the cheap model first (non-streamed, so the whole answer can be checked), runs a
//! [`Validator`] on the answer — a JSON schema ([`JsonSchemaValidator`]), a regular expression
//! ([`RegexValidator`]) or an [`Evaluator`] score threshold ([`EvaluatorValidator`]) — and
//! returns it if it passes; otherwise (or if the cheap call failed upstream) it sends the
//! original request to the strong model. A policy refusal of the cheap attempt (budget,
//! ceiling) is returned, never escalated.
//!
//! Both attempts are accounted: the answer's usage is the sum of both attempts', a
//! [`ResponseCost`] with their total cost (each priced at its own model) goes in the response
//! metadata, and a [`CascadeOutcome`] says what happened; the header `x-llmops-cascade` is
//! `cheap` or `escalated`. Place the cascade *outside* the ceiling and budget layers so each
//! attempt is checked and charged at its own model's price.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use http::HeaderValue;
use llmops_core::service::BoxFuture;
use llmops_core::{
    ChatRequest, ChatResponse, Error, EvalInput, Evaluator, LlmRequest, LlmResponse, RequestBody,
    ResponseBody, Result, Usage, Usd, response_to_chunks,
};
use tower::{Layer, Service, ServiceExt};

use crate::error::CostError;
use crate::estimate::ResponseCost;
use crate::prices::PriceCatalog;

/// The header telling which attempt answered: `cheap` or `escalated`.
pub const CASCADE_HEADER: &str = "x-llmops-cascade";

/// A validator's verdict.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Verdict {
    /// Whether the answer is good enough.
    pub passed: bool,
    /// Why not, when it is not.
    pub reason: String,
}

impl Verdict {
    /// A pass.
    pub fn pass() -> Self {
        Self {
            passed: true,
            reason: String::new(),
        }
    }

    /// A failure with its reason.
    pub fn fail(reason: impl Into<String>) -> Self {
        Self {
            passed: false,
            reason: reason.into(),
        }
    }
}

/// Judges whether a cheap model's answer is good enough.
#[async_trait]
pub trait Validator: Send + Sync {
    /// Checks `resp`, the answer to `req`. `Err` means the check could not run; the cascade
    /// then escalates.
    async fn validate(&self, req: &ChatRequest, resp: &ChatResponse) -> Result<Verdict>;
}

/// Passes when the answer's text is JSON valid against a schema.
pub struct JsonSchemaValidator {
    schema: jsonschema::Validator,
}

impl fmt::Debug for JsonSchemaValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JsonSchemaValidator")
    }
}

impl JsonSchemaValidator {
    /// A validator for `schema` (an error if the schema itself is invalid).
    pub fn new(schema: &serde_json::Value) -> std::result::Result<Self, CostError> {
        let schema = jsonschema::validator_for(schema)
            .map_err(|e| CostError::Config(format!("invalid JSON schema: {e}")))?;
        Ok(Self { schema })
    }
}

#[async_trait]
impl Validator for JsonSchemaValidator {
    async fn validate(&self, _req: &ChatRequest, resp: &ChatResponse) -> Result<Verdict> {
        let text = resp.first_text();
        let value: serde_json::Value = match serde_json::from_str(text.trim()) {
            Ok(v) => v,
            Err(e) => return Ok(Verdict::fail(format!("not JSON: {e}"))),
        };
        Ok(match self.schema.validate(&value) {
            Ok(()) => Verdict::pass(),
            Err(e) => Verdict::fail(format!("schema violation at {}: {e}", e.instance_path)),
        })
    }
}

/// Passes when the answer's text matches a regular expression.
#[derive(Debug)]
pub struct RegexValidator {
    re: regex::Regex,
}

impl RegexValidator {
    /// A validator for `pattern` (an error if it does not compile).
    pub fn new(pattern: &str) -> std::result::Result<Self, CostError> {
        let re = regex::Regex::new(pattern)
            .map_err(|e| CostError::Config(format!("invalid regex `{pattern}`: {e}")))?;
        Ok(Self { re })
    }
}

#[async_trait]
impl Validator for RegexValidator {
    async fn validate(&self, _req: &ChatRequest, resp: &ChatResponse) -> Result<Verdict> {
        Ok(if self.re.is_match(&resp.first_text()) {
            Verdict::pass()
        } else {
            Verdict::fail(format!("answer does not match /{}/", self.re.as_str()))
        })
    }
}

/// Passes when an [`Evaluator`] scores the answer at least `threshold`.
pub struct EvaluatorValidator {
    evaluator: Arc<dyn Evaluator>,
    threshold: f64,
}

impl fmt::Debug for EvaluatorValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvaluatorValidator")
            .field("evaluator", &self.evaluator.name())
            .field("threshold", &self.threshold)
            .finish()
    }
}

impl EvaluatorValidator {
    /// A validator passing scores `>= threshold`.
    pub fn new(evaluator: Arc<dyn Evaluator>, threshold: f64) -> Self {
        Self {
            evaluator,
            threshold,
        }
    }
}

#[async_trait]
impl Validator for EvaluatorValidator {
    async fn validate(&self, req: &ChatRequest, resp: &ChatResponse) -> Result<Verdict> {
        let mut input = EvalInput::new(req.clone(), resp.first_text());
        input.response = Some(resp.clone());
        input.usage.clone_from(&resp.usage);
        let score = self.evaluator.evaluate(&input).await?;
        Ok(if score.value >= self.threshold {
            Verdict::pass()
        } else {
            Verdict::fail(format!(
                "{} scored {:.3} < {:.3}: {}",
                self.evaluator.name(),
                score.value,
                self.threshold,
                score.explanation
            ))
        })
    }
}

/// What the cascade did, in the response metadata's extensions.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CascadeOutcome {
    /// Whether the strong model answered.
    pub escalated: bool,
    /// Why the cheap answer was not used.
    pub reason: Option<String>,
    /// Cost of the cheap attempt.
    pub cheap_cost: Usd,
    /// Cost of both attempts (for a streamed escalation: the cheap attempt's only; the
    /// stream's cost is known at its end).
    pub total_cost: Usd,
}

struct Shared {
    route: String,
    cheap: String,
    strong: String,
    validator: Arc<dyn Validator>,
    catalog: Arc<PriceCatalog>,
}

/// A layer serving `route` with a cheap model first and a strong one when needed.
#[derive(Clone)]
pub struct CascadeLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for CascadeLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CascadeLayer")
            .field("route", &self.shared.route)
            .field("cheap", &self.shared.cheap)
            .field("strong", &self.shared.strong)
            .finish()
    }
}

impl CascadeLayer {
    /// Requests for model `route` go to `cheap`, then `strong` when `validator` fails.
    pub fn new(
        route: impl Into<String>,
        cheap: impl Into<String>,
        strong: impl Into<String>,
        validator: Arc<dyn Validator>,
        catalog: Arc<PriceCatalog>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                route: route.into(),
                cheap: cheap.into(),
                strong: strong.into(),
                validator,
                catalog,
            }),
        }
    }
}

impl<S> Layer<S> for CascadeLayer {
    type Service = CascadeService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CascadeService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service of [`CascadeLayer`].
#[derive(Clone)]
pub struct CascadeService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> fmt::Debug for CascadeService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CascadeService")
    }
}

fn cost_of(catalog: &PriceCatalog, model: &str, usage: Option<&Usage>) -> Usd {
    match usage.map(|u| catalog.cost(model, u)) {
        Some(Ok(c)) => c.total,
        Some(Err(e)) => {
            tracing::warn!(error = %e, model, "cascade attempt could not be priced");
            Usd::ZERO
        }
        None => Usd::ZERO,
    }
}

impl<S> Service<LlmRequest> for CascadeService<S>
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
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move {
            let RequestBody::Chat(original) = &req.body else {
                return inner.oneshot(req).await;
            };
            if original.model != shared.route {
                return inner.oneshot(req).await;
            }
            let original = original.clone();
            // Attempt 1: the cheap model, complete (not streamed) so it can be validated.
            let mut cheap_req = original.clone();
            cheap_req.model.clone_from(&shared.cheap);
            cheap_req.stream = None;
            cheap_req.stream_options = None;
            let first = inner
                .clone()
                .oneshot(LlmRequest::chat(req.ctx.clone(), cheap_req.clone()))
                .await;
            let (reason, cheap_usage, cheap_cost) = match first.and_then(LlmResponse::into_chat) {
                Ok(answer) => {
                    let cheap_cost = cost_of(&shared.catalog, &shared.cheap, answer.usage.as_ref());
                    let verdict = shared.validator.validate(&cheap_req, &answer).await;
                    match verdict {
                        Ok(v) if v.passed => {
                            return Ok(answered_by_cheap(answer, &original, cheap_cost));
                        }
                        Ok(v) => (v.reason, answer.usage.clone(), cheap_cost),
                        Err(e) => (
                            format!("validator error: {e}"),
                            answer.usage.clone(),
                            cheap_cost,
                        ),
                    }
                }
                Err(e) if e.kind().is_policy_refusal() => return Err(e),
                Err(e) => (format!("cheap model failed: {e}"), None, Usd::ZERO),
            };
            tracing::debug!(%reason, route = %shared.route, "cascade escalates");
            metrics::counter!("llmops_cascade_escalations_total", "route" => shared.route.clone())
                .increment(1);
            // Attempt 2: the strong model, as the client asked (streamed or not).
            let mut strong_req = original.clone();
            strong_req.model.clone_from(&shared.strong);
            let mut resp = inner.oneshot(LlmRequest::chat(req.ctx, strong_req)).await?;
            let mut total = cheap_cost;
            let mut tokens = cheap_usage.as_ref().map_or(0, Usage::total_tokens);
            if let ResponseBody::Chat(r) = &mut resp.body {
                total += cost_of(&shared.catalog, &shared.strong, r.usage.as_ref());
                if let Some(u) = &mut r.usage {
                    tokens += u.total_tokens();
                    if let Some(c) = &cheap_usage {
                        u.accumulate(c);
                    }
                }
                resp.meta
                    .extensions
                    .insert(ResponseCost::new(total, tokens));
            }
            resp.meta
                .headers
                .insert(CASCADE_HEADER, HeaderValue::from_static("escalated"));
            resp.meta.extensions.insert(CascadeOutcome {
                escalated: true,
                reason: Some(reason),
                cheap_cost,
                total_cost: total,
            });
            Ok(resp)
        })
    }
}

fn answered_by_cheap(answer: ChatResponse, original: &ChatRequest, cost: Usd) -> LlmResponse {
    let tokens = answer.usage.as_ref().map_or(0, Usage::total_tokens);
    let body = if original.is_stream() {
        let chunks = response_to_chunks(&answer, original.include_usage());
        ResponseBody::ChatStream(Box::pin(futures_util::stream::iter(
            chunks.into_iter().map(Ok),
        )))
    } else {
        ResponseBody::Chat(answer)
    };
    let mut resp = LlmResponse::new(body);
    resp.meta
        .headers
        .insert(CASCADE_HEADER, HeaderValue::from_static("cheap"));
    resp.meta.extensions.insert(ResponseCost::new(cost, tokens));
    resp.meta.extensions.insert(CascadeOutcome {
        escalated: false,
        reason: None,
        cheap_cost: cost,
        total_cost: cost,
    });
    resp
}

#[cfg(test)]
mod tests {
    use llmops_core::mock::{MockProvider, MockReply};
    use llmops_core::{ErrorKind, Message, ProviderService, RequestContext, Score};

    use super::*;
    use crate::prices::ModelPrice;

    fn catalog() -> Arc<PriceCatalog> {
        let mut c = PriceCatalog::empty();
        c.insert(ModelPrice::per_million("small", 0.1, 0.4).unwrap());
        c.insert(ModelPrice::per_million("large", 2.0, 8.0).unwrap());
        Arc::new(c)
    }

    fn layer(v: Arc<dyn Validator>, mock: &Arc<MockProvider>) -> CascadeService<ProviderService> {
        CascadeLayer::new("auto", "small", "large", v, catalog())
            .layer(ProviderService::new(mock.clone()))
    }

    fn req(stream: bool) -> LlmRequest {
        let r = ChatRequest::new("auto", vec![Message::user("give me JSON")]).with_stream(stream);
        LlmRequest::chat(RequestContext::new(), r)
    }

    fn schema() -> Arc<dyn Validator> {
        Arc::new(
            JsonSchemaValidator::new(&serde_json::json!({
                "type": "object", "required": ["answer"],
                "properties": {"answer": {"type": "integer"}}
            }))
            .unwrap(),
        )
    }

    #[tokio::test]
    async fn a_valid_cheap_answer_is_used() {
        let mock = Arc::new(MockProvider::new("p").reply(
            MockReply::text(r#"{"answer": 4}"#).with_usage(Usage::new(1_000_000, 1_000_000)),
        ));
        let resp = layer(schema(), &mock).oneshot(req(false)).await.unwrap();
        mock.assert_call_count(1);
        assert_eq!(mock.last_chat_request().unwrap().model, "small");
        assert_eq!(resp.meta.headers[CASCADE_HEADER], "cheap");
        let cost = resp.meta.extensions.get::<ResponseCost>().unwrap();
        assert_eq!(cost.usd, Usd::from_f64(0.5));
    }

    #[tokio::test]
    async fn an_invalid_cheap_answer_escalates_and_both_attempts_are_accounted() {
        let mock = Arc::new(
            MockProvider::new("p")
                .reply(MockReply::text("four").with_usage(Usage::new(1_000_000, 1_000_000)))
                .reply(
                    MockReply::text(r#"{"answer": 4}"#)
                        .with_usage(Usage::new(1_000_000, 1_000_000)),
                ),
        );
        let resp = layer(schema(), &mock).oneshot(req(false)).await.unwrap();
        let calls: Vec<String> = mock
            .calls()
            .iter()
            .map(|c| match &c.request {
                llmops_core::mock::RecordedRequest::Chat { request, .. } => request.model.clone(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(calls, ["small", "large"]);
        assert_eq!(resp.meta.headers[CASCADE_HEADER], "escalated");
        let outcome = resp
            .meta
            .extensions
            .get::<CascadeOutcome>()
            .unwrap()
            .clone();
        assert!(outcome.reason.unwrap().contains("not JSON"));
        assert_eq!(outcome.cheap_cost, Usd::from_f64(0.5));
        assert_eq!(outcome.total_cost, Usd::from_f64(10.5));
        assert_eq!(
            resp.meta.extensions.get::<ResponseCost>().unwrap().tokens,
            4_000_000
        );
        let body = resp.into_chat().unwrap();
        assert_eq!(
            body.usage.unwrap().input_tokens,
            2_000_000,
            "usage of both attempts"
        );
    }

    #[tokio::test]
    async fn streams_are_validated_whole_and_replayed() {
        let mock = Arc::new(MockProvider::new("p").reply(MockReply::text("ID-1234")));
        let v = Arc::new(RegexValidator::new(r"^ID-\d+$").unwrap());
        let resp = layer(v, &mock).oneshot(req(true)).await.unwrap();
        assert!(
            !mock.last_chat_request().unwrap().is_stream(),
            "the cheap attempt is not streamed"
        );
        let text = llmops_core::stream::collect_stream(resp.into_stream().unwrap())
            .await
            .unwrap();
        assert_eq!(text.first_text(), "ID-1234");
    }

    #[tokio::test]
    async fn upstream_failures_escalate_but_policy_refusals_do_not() {
        let mock = Arc::new(
            MockProvider::new("p")
                .reply(MockReply::error(ErrorKind::ServerError))
                .reply(MockReply::text(r#"{"answer": 1}"#)),
        );
        let resp = layer(schema(), &mock).oneshot(req(false)).await.unwrap();
        assert_eq!(resp.meta.headers[CASCADE_HEADER], "escalated");
        let mock = Arc::new(MockProvider::new("p").reply(MockReply::failure(Error::new(
            ErrorKind::BudgetExceeded,
            "no budget",
        ))));
        let err = layer(schema(), &mock)
            .oneshot(req(false))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BudgetExceeded);
        mock.assert_call_count(1);
    }

    struct Fixed(f64);

    #[async_trait]
    impl Evaluator for Fixed {
        fn name(&self) -> &str {
            "fixed"
        }
        async fn evaluate(&self, _input: &EvalInput) -> Result<Score> {
            Ok(Score::new(self.0, 0.5, "fixed score"))
        }
    }

    #[tokio::test]
    async fn evaluator_scores_gate_the_cheap_answer() {
        let v = EvaluatorValidator::new(Arc::new(Fixed(0.4)), 0.7);
        let r = ChatRequest::new("m", vec![]);
        let a = ChatResponse::text("id", "m", "x", None);
        assert!(!v.validate(&r, &a).await.unwrap().passed);
        let v = EvaluatorValidator::new(Arc::new(Fixed(0.9)), 0.7);
        assert!(v.validate(&r, &a).await.unwrap().passed);
        let mock = Arc::new(MockProvider::new("p").default_reply(MockReply::text("x")));
        let other = ChatRequest::new("not-the-route", vec![Message::user("hi")]);
        let svc = layer(Arc::new(v), &mock);
        svc.oneshot(LlmRequest::chat(RequestContext::new(), other))
            .await
            .unwrap();
        assert_eq!(mock.last_chat_request().unwrap().model, "not-the-route");
    }

    #[test]
    fn bad_schemas_and_regexes_are_config_errors() {
        assert!(JsonSchemaValidator::new(&serde_json::json!({"type": 12})).is_err());
        assert!(RegexValidator::new("(").is_err());
    }
}
