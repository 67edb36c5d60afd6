//! The [`Evaluator`] trait: scores one output.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Result;
use crate::types::{ChatRequest, ChatResponse};
use crate::usage::Usage;

/// What an evaluator looks at: the request, the output, the expected answer, and how the
/// output was produced.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EvalInput {
    /// The request that produced the output.
    pub request: ChatRequest,
    /// The full response, when the output came from a model call.
    pub response: Option<ChatResponse>,
    /// The output text being judged.
    pub output: String,
    /// The expected output or reference, as the dataset gave it.
    pub expected: Option<Value>,
    /// Extra per-case fields (context documents, rubric variables...).
    pub vars: serde_json::Map<String, Value>,
    /// How long the call took.
    pub latency: Option<Duration>,
    /// Its usage.
    pub usage: Option<Usage>,
    /// Its cost in USD.
    pub cost_usd: Option<f64>,
}

impl EvalInput {
    /// An input judging `output` as the answer to `request`.
    pub fn new(request: ChatRequest, output: impl Into<String>) -> Self {
        Self {
            request,
            response: None,
            output: output.into(),
            expected: None,
            vars: serde_json::Map::new(),
            latency: None,
            usage: None,
            cost_usd: None,
        }
    }

    /// Sets the expected answer (builder style).
    #[must_use]
    pub fn with_expected(mut self, expected: Value) -> Self {
        self.expected = Some(expected);
        self
    }
}

/// An evaluator's verdict on one output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Score {
    /// The score, in `[0, 1]`.
    pub value: f64,
    /// Whether the score meets the evaluator's threshold.
    pub passed: bool,
    /// Why: what matched, what did not, the judge's reasoning.
    pub explanation: String,
    /// What the evaluation itself cost in USD (LLM judges), counted apart from the target's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

impl Score {
    /// A score of `value` (clamped to `[0, 1]`; NaN becomes 0) judged against `threshold`.
    pub fn new(value: f64, threshold: f64, explanation: impl Into<String>) -> Self {
        let value = if value.is_nan() {
            0.0
        } else {
            value.clamp(0.0, 1.0)
        };
        Self {
            value,
            passed: value >= threshold,
            explanation: explanation.into(),
            cost_usd: None,
        }
    }

    /// A pass/fail score (1 or 0).
    pub fn pass_fail(passed: bool, explanation: impl Into<String>) -> Self {
        Self {
            value: if passed { 1.0 } else { 0.0 },
            passed,
            explanation: explanation.into(),
            cost_usd: None,
        }
    }
}

/// Scores outputs.
///
/// # Contract
///
/// - `Ok(score)` is a verdict: the output was judged and passed or failed.
/// - `Err(_)` means the evaluation itself could not be done (a judge's answer did not parse,
///   the judge's upstream failed). Runners count it as ERROR, never as FAIL.
/// - Deterministic evaluators return the same score for the same input.
#[async_trait]
pub trait Evaluator: Send + Sync {
    /// The evaluator's name, as reports show it.
    fn name(&self) -> &str;

    /// Judges one output.
    async fn evaluate(&self, input: &EvalInput) -> Result<Score>;
}
