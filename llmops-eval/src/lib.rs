//! Evaluation for LLM features: golden datasets, evaluators, calibrated LLM judges, a runner,
//! a statistically sound regression gate, reports and MLflow tracking.
//!
//! # Design
//!
//! **Library first.** Everything the `llmops eval` command does is a public type here: load a
//! [`Dataset`], build [`evaluators`] (any [`llmops_core::Evaluator`]), run them with a
//! [`Runner`] against a [`Target`] (an OpenAI-compatible endpoint, any
//! [`llmops_core::Provider`], or a whole [`llmops_core::BoxLlmService`] pipeline), decide with
//! a [`Gate`], and report with [`report`]. The [`suite`] module only turns a TOML file into
//! those pieces.
//!
//! **ERROR is not FAIL.** An evaluator that cannot judge (a judge whose answer does not
//! parse, a case without an expected value, a target call that failed) records ERROR, counted
//! apart; pass rates are computed over judged samples only, and a gate with too many ERRORs
//! is inconclusive rather than passed.
//!
//! **Repeats are independent.** `K` repeats are `K` calls. The result cache (for resuming an
//! interrupted run) keys on the repeat index, so it never stands in for another repeat.
//!
//! **The gate is a paired non-inferiority test.** A run file keeps every per-case, per-repeat
//! verdict, so a later run can be paired case by case with a baseline. The gate fails only
//! when the candidate is worse than the baseline by more than a margin δ at the configured
//! confidence (McNemar-style for single pass/fail samples, a paired bootstrap otherwise,
//! resampling clusters when cases share a source), or when a floor or a must-pass case fails,
//! with Holm's correction across metrics. It always reports the minimum detectable effect, so
//! a team knows what its dataset can and cannot catch. Every random draw is seeded.
//!
//! **Prompts are versioned by content.** [`prompts`] stores templates by content hash, maps
//! each environment to a version, promotes a version only when a suite's gate passes against
//! the version it replaces, records every decision through an [`llmops_core::AuditSink`],
//! and rolls back. [`mlflow`] logs runs to an MLflow tracking server over REST.
//!
//! **Judges are calibrated before they gate.** [`judge`] grades through a forced tool call
//! with one repair retry, swaps positions for pairwise comparisons, and counts its own cost
//! apart. [`calibration`] measures a judge against human labels (raw agreement, Cohen's κ,
//! TPR/FPR, self-consistency); a suite can let a judge gate only if its recorded κ meets a
//! floor.
//!
//! # Example
//!
//! ```
//! use llmops_core::Message;
//! use llmops_core::mock::{MockProvider, MockReply};
//! use llmops_eval::evaluators::{Reference, StringMatch};
//! use llmops_eval::{Case, Dataset, Gate, GatedMetric, Runner, SuiteEvaluator, Target, TargetInfo};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let model = MockProvider::new("mock").default_reply(MockReply::text("Paris"));
//! let dataset = Dataset::from_cases(vec![
//!     Case::from_messages("fr", vec![Message::user("Capital of France?")]).with_expected("Paris"),
//! ])
//! .unwrap();
//! let runner = Runner::builder(Target::provider(model), TargetInfo::new("mock", "any"))
//!     .evaluator(SuiteEvaluator::new("contains", StringMatch::contains("has_answer", Reference::Expected)))
//!     .build()
//!     .unwrap();
//! let run = runner.run(&dataset, None).await.unwrap();
//! assert_eq!(run.metric("has_answer").unwrap().pass_rate, 1.0);
//!
//! let gate = Gate::new(vec![GatedMetric::new("has_answer", 0.05).min_pass_rate(0.5)]);
//! let report = gate.evaluate(&run, None).unwrap();
//! assert_eq!(report.outcome.exit_code(), 0);
//! # }
//! ```

pub mod cache;
pub mod calibration;
pub mod dataset;
pub mod error;
pub mod evaluators;
pub mod gate;
pub mod judge;
pub mod limiter;
pub mod mlflow;
pub mod prompts;
pub mod report;
pub mod run;
pub mod runner;
pub mod stats;
pub mod suite;
pub mod target;
pub mod template;

pub use dataset::{Case, CaseInput, Dataset};
pub use error::{EvalError, Result};
pub use gate::{Gate, GateOutcome, GateReport, GatedMetric};
pub use run::TargetInfo;
pub use run::{RunFile, Status};
pub use runner::{Pricing, RetryPolicy, Runner, RunnerBuilder, SuiteEvaluator};
pub use suite::{Overrides, Suite, SuiteOutcome};
pub use target::{OpenAiCompatible, Target};
pub use template::PromptTemplate;
