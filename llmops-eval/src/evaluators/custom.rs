//! Evaluators from Rust closures.

use std::sync::Arc;

use async_trait::async_trait;
use llmops_core::{EvalInput, Evaluator, Score};

type ScoreFn = dyn Fn(&EvalInput) -> llmops_core::Result<Score> + Send + Sync;

/// An evaluator made of a closure: return `Ok(score)` for a verdict, `Err` when the output
/// cannot be judged.
///
/// ```
/// use llmops_core::Score;
/// use llmops_eval::evaluators::FnEvaluator;
///
/// let short = FnEvaluator::new("short", |input| {
///     let words = input.output.split_whitespace().count();
///     Ok(Score::pass_fail(words <= 20, format!("{words} words")))
/// });
/// # let _ = short;
/// ```
#[derive(Clone)]
pub struct FnEvaluator {
    name: String,
    f: Arc<ScoreFn>,
}

impl std::fmt::Debug for FnEvaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnEvaluator")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl FnEvaluator {
    /// An evaluator named `name` running `f`.
    pub fn new<F>(name: impl Into<String>, f: F) -> Self
    where
        F: Fn(&EvalInput) -> llmops_core::Result<Score> + Send + Sync + 'static,
    {
        Self {
            name: name.into(),
            f: Arc::new(f),
        }
    }
}

#[async_trait]
impl Evaluator for FnEvaluator {
    fn name(&self) -> &str {
        &self.name
    }

    async fn evaluate(&self, input: &EvalInput) -> llmops_core::Result<Score> {
        (self.f)(input)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::input;
    use super::*;

    #[tokio::test]
    async fn closure_verdicts_and_errors() {
        let e = FnEvaluator::new("len", |i| {
            if i.output.is_empty() {
                return Err(llmops_core::Error::invalid_request("empty", None));
            }
            Ok(Score::new(i.output.len() as f64 / 10.0, 0.5, "length"))
        });
        assert!(e.evaluate(&input("abcdefgh", None)).await.unwrap().passed);
        assert!(!e.evaluate(&input("ab", None)).await.unwrap().passed);
        assert!(e.evaluate(&input("", None)).await.is_err());
    }
}
