//! Deterministic evaluators, each an [`Evaluator`].
//!
//! Every evaluator returns a score in `[0, 1]`, a pass/fail verdict against its threshold and
//! an explanation. An evaluator that *cannot* judge — the case has no expected value, the
//! output lacks the latency it checks, the embedder failed — returns `Err`, which the runner
//! records as ERROR, never as FAIL.
//!
//! | evaluator | score | default threshold |
//! |---|---|---|
//! | [`StringMatch`] (exact, contains, starts-with, regex; `ignore_case`) | 1 or 0 | 1 |
//! | [`JsonValid`] | 1 or 0 | 1 |
//! | [`JsonSchemaEval`] | 1 or 0 | 1 |
//! | [`Levenshtein`] | 1 − distance / max length | 0.8 |
//! | [`RougeL`] | LCS F-measure over tokens | 0.5 |
//! | [`Bleu`] | sentence BLEU-4 (smoothed, brevity penalty) | 0.5 |
//! | [`EmbeddingSimilarity`] | cosine similarity (via an [`Embedder`](llmops_core::Embedder)) | 0.8 |
//! | [`LatencyLimit`], [`CostLimit`] | 1 or 0 | 1 |
//! | [`ToolCallMatch`] | fraction of expected calls made | 1 |
//! | [`FnEvaluator`] | whatever the closure says | — |
//!
//! Any evaluator can be negated with [`Negate`]: the score becomes `1 − score` and the verdict
//! flips (errors stay errors).

mod custom;
mod json;
mod limits;
mod similarity;
mod text;
mod tools;

use async_trait::async_trait;
use llmops_core::{EvalInput, Evaluator, Score};
use serde_json::Value;

pub use custom::FnEvaluator;
pub use json::{JsonSchemaEval, JsonValid};
pub use limits::{CostLimit, LatencyLimit};
pub use similarity::EmbeddingSimilarity;
pub use text::{Bleu, Levenshtein, MatchMode, RougeL, StringMatch, bleu, levenshtein, rouge_l};
pub use tools::{ArgumentsMatch, ToolCallMatch};

/// Where an evaluator finds the value to compare the output with.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Reference {
    /// The case's `expected` value.
    Expected,
    /// A named field of the case (`vars`), e.g. `reference` or `answer`.
    Field(String),
    /// A literal given in the suite.
    Literal(Value),
}

impl Reference {
    /// `expected` for the names `expected`/empty, a case field otherwise.
    pub fn field(name: &str) -> Self {
        match name {
            "" | "expected" => Self::Expected,
            other => Self::Field(other.to_owned()),
        }
    }

    /// The value for `input`, or an error saying which field is missing.
    pub fn resolve<'a>(&'a self, input: &'a EvalInput) -> llmops_core::Result<&'a Value> {
        let found = match self {
            Self::Expected => input.expected.as_ref(),
            Self::Field(f) => input.vars.get(f),
            Self::Literal(v) => Some(v),
        };
        found.ok_or_else(|| {
            let what = match self {
                Self::Expected => "`expected`".to_owned(),
                Self::Field(f) => format!("field `{f}`"),
                Self::Literal(_) => "value".to_owned(),
            };
            llmops_core::Error::invalid_request(
                format!("the case has no {what} to compare with"),
                None,
            )
        })
    }

    /// The reference as a list of strings (a string, or a list of acceptable strings; other
    /// JSON values are compared as their JSON text).
    pub fn strings(&self, input: &EvalInput) -> llmops_core::Result<Vec<String>> {
        Ok(value_strings(self.resolve(input)?))
    }
}

pub(crate) fn value_strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        other => vec![other.to_string()],
    }
}

/// Flips another evaluator: score `1 − s`, verdict negated, errors unchanged.
#[derive(Debug)]
pub struct Negate<E> {
    inner: E,
    name: String,
}

impl<E: Evaluator> Negate<E> {
    /// Negates `inner`; the name is `not_<inner name>` unless renamed with
    /// [`Negate::named`].
    pub fn new(inner: E) -> Self {
        let name = format!("not_{}", inner.name());
        Self { inner, name }
    }

    /// Renames the negated evaluator (builder style).
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

#[async_trait]
impl<E: Evaluator> Evaluator for Negate<E> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn evaluate(&self, input: &EvalInput) -> llmops_core::Result<Score> {
        let s = self.inner.evaluate(input).await?;
        let mut out = Score::pass_fail(!s.passed, format!("negated: {}", s.explanation));
        out.value = 1.0 - s.value;
        out.cost_usd = s.cost_usd;
        Ok(out)
    }
}

/// Truncates `s` for explanations.
pub(crate) fn preview(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut:?}…")
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use llmops_core::{ChatRequest, EvalInput, Message};
    use serde_json::Value;

    pub(crate) fn input(output: &str, expected: Option<Value>) -> EvalInput {
        let mut i = EvalInput::new(ChatRequest::new("m", vec![Message::user("q")]), output);
        i.expected = expected;
        i
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::test_util::input;
    use super::*;

    #[tokio::test]
    async fn negation_flips_verdict_not_errors() {
        let e = Negate::new(StringMatch::contains("has_paris", Reference::Expected));
        assert_eq!(e.name(), "not_has_paris");
        let s = e
            .evaluate(&input("Paris!", Some(json!("Paris"))))
            .await
            .unwrap();
        assert!(!s.passed);
        assert_eq!(s.value, 0.0);
        let s = e
            .evaluate(&input("Rome", Some(json!("Paris"))))
            .await
            .unwrap();
        assert!(s.passed);
        assert!(e.evaluate(&input("Rome", None)).await.is_err());
    }
}
