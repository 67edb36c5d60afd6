//! The run file: everything a run produced, per case and per repeat.
//!
//! A run file is the unit the gate compares (a baseline is simply an earlier run file), the
//! JSON report, and the artifact logged to MLflow. It holds every sample's output, usage,
//! latency, cost and every evaluator's verdict, so any statistic can be recomputed later.

use std::collections::BTreeMap;
use std::path::Path;

use llmops_core::{ToolCall, Usage};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{EvalError, Result};
use crate::gate::GateReport;
use crate::stats::{Interval, wilson};

/// The version of the run-file format this crate writes.
pub const RUN_FORMAT_VERSION: u32 = 1;

/// One complete run of a suite.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunFile {
    /// The format version ([`RUN_FORMAT_VERSION`]).
    pub format: u32,
    /// A unique id (UUIDv7).
    pub run_id: String,
    /// The suite's name.
    pub suite: String,
    /// Start time, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// End time, milliseconds since the Unix epoch.
    pub finished_at_ms: u64,
    /// What was evaluated.
    pub target: TargetInfo,
    /// The prompt template, when cases are rendered from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<PromptInfo>,
    /// The request parameters applied to every case (temperature, max_tokens...).
    #[serde(default)]
    pub params: Value,
    /// Independent samples per case.
    pub repeats: u32,
    /// The seed of the gate's resampling.
    pub seed: u64,
    /// The dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetInfo>,
    /// The evaluators, in suite order.
    pub evaluators: Vec<EvaluatorInfo>,
    /// Per-case results, in dataset order.
    pub cases: Vec<CaseResult>,
    /// Aggregates.
    pub summary: RunSummary,
    /// The gate's decision, when the run was gated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateReport>,
}

/// The model under test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TargetInfo {
    /// A stable identifier (`openai:<base_url>`, `provider:<name>`...), part of the cache key.
    pub id: String,
    /// The model name sent.
    pub model: String,
}

impl TargetInfo {
    /// A target description.
    pub fn new(id: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            model: model.into(),
        }
    }
}

/// The prompt template a run used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PromptInfo {
    /// The template's name.
    pub id: String,
    /// Its content version.
    pub version: String,
}

/// The dataset a run used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DatasetInfo {
    /// Its path as given.
    pub path: String,
    /// SHA-256 of the file.
    pub digest: String,
    /// Number of cases.
    pub cases: usize,
}

/// An evaluator of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EvaluatorInfo {
    /// Its name (the metric name).
    pub name: String,
    /// Its kind (`contains`, `llm_judge`...).
    pub kind: String,
    /// Its threshold, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// For judges: the judge model and the hash of its rubric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeInfo>,
}

impl EvaluatorInfo {
    /// An evaluator description.
    pub fn new(name: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            threshold: None,
            judge: None,
        }
    }
}

/// What identifies a judge configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JudgeInfo {
    /// The judge model.
    pub model: String,
    /// 12 hex digits of the SHA-256 of the rubric and scale.
    pub rubric_hash: String,
}

/// The results of one case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CaseResult {
    /// The case id.
    pub id: String,
    /// Its cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Its tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Whether the gate requires it to pass.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub must_pass: bool,
    /// One sample per repeat, in repeat order.
    pub samples: Vec<Sample>,
}

/// Whether an evaluator passed, failed, or could not judge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Status {
    /// Judged and passed.
    Pass,
    /// Judged and failed.
    Fail,
    /// Could not be judged (evaluator or target failure). Never counted as a failure.
    Error,
}

/// One evaluator's verdict on one sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ScoreRecord {
    /// Pass, fail or error.
    pub status: Status,
    /// The score in `[0, 1]` (absent on error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Why (or the error message).
    pub explanation: String,
    /// What the evaluation cost (judges), counted apart from the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

impl ScoreRecord {
    /// A record of a verdict.
    pub fn from_score(s: &llmops_core::Score) -> Self {
        Self {
            status: if s.passed { Status::Pass } else { Status::Fail },
            score: Some(s.value),
            explanation: s.explanation.clone(),
            cost_usd: s.cost_usd,
        }
    }

    /// A record of an evaluation error.
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            status: Status::Error,
            score: None,
            explanation: message.into(),
            cost_usd: None,
        }
    }
}

/// A failure of the target for one sample.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SampleError {
    /// The error kind's stable name (`rate_limited`, `timeout`...).
    pub kind: String,
    /// The message.
    pub message: String,
}

/// One repeat of one case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Sample {
    /// The repeat index (0-based).
    pub repeat: u32,
    /// The output text (absent when the target failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Tool calls the model made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The target's cost in USD, when prices are configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Latency of the target call in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Attempts made (more than 1 after retries of 429s and transient errors).
    pub attempts: u32,
    /// Whether the output came from the result cache (a resumed run).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
    /// The target's failure, if the sample has no output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<SampleError>,
    /// Each evaluator's verdict, by evaluator name.
    pub scores: BTreeMap<String, ScoreRecord>,
}

/// Aggregates of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunSummary {
    /// Cases.
    pub cases: usize,
    /// Samples (cases × repeats).
    pub samples: usize,
    /// Samples whose target call failed.
    pub target_errors: usize,
    /// Samples answered from the result cache.
    pub cached_samples: usize,
    /// Per-evaluator aggregates, in suite order.
    pub metrics: Vec<MetricSummary>,
    /// The target's total cost in USD (samples with known cost).
    pub target_cost_usd: f64,
    /// The judges' total cost in USD, counted apart.
    pub judge_cost_usd: f64,
    /// Total input tokens of the target.
    pub input_tokens: u64,
    /// Total output tokens of the target.
    pub output_tokens: u64,
    /// Wall-clock duration of the run in milliseconds.
    pub duration_ms: u64,
}

/// One evaluator's aggregate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MetricSummary {
    /// The evaluator's name.
    pub name: String,
    /// Cases with at least one judged sample.
    pub judged_cases: usize,
    /// Samples that passed.
    pub passed: usize,
    /// Samples that failed.
    pub failed: usize,
    /// Samples that could not be judged (counted apart, never as failures).
    pub errors: usize,
    /// Mean over judged cases of the per-case pass fraction.
    pub pass_rate: f64,
    /// Wilson interval of the pass rate (95%).
    pub pass_rate_ci: Interval,
    /// Mean score over judged samples.
    pub mean_score: f64,
}

/// One case's aggregate for one metric over its repeats.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CaseMetric {
    /// Fraction of judged samples that passed.
    pub pass_fraction: f64,
    /// Mean score of judged samples.
    pub mean_score: f64,
    /// Judged samples.
    pub judged: usize,
    /// Samples in error.
    pub errors: usize,
}

impl CaseResult {
    /// This case's aggregate for `metric`, or `None` when no sample could be judged.
    pub fn metric(&self, metric: &str) -> Option<CaseMetric> {
        let (mut pass, mut sum, mut judged, mut errors) = (0usize, 0.0, 0usize, 0usize);
        for s in &self.samples {
            match s.scores.get(metric) {
                Some(r) if r.status != Status::Error => {
                    judged += 1;
                    pass += usize::from(r.status == Status::Pass);
                    sum += r.score.unwrap_or(0.0);
                }
                _ => errors += 1,
            }
        }
        (judged > 0).then(|| CaseMetric {
            pass_fraction: pass as f64 / judged as f64,
            mean_score: sum / judged as f64,
            judged,
            errors,
        })
    }

    /// The case's overall status for `metric`: pass when every judged sample passed, error
    /// when none could be judged, fail otherwise.
    pub fn status(&self, metric: &str) -> Status {
        match self.metric(metric) {
            None => Status::Error,
            Some(m) if m.pass_fraction >= 1.0 => Status::Pass,
            Some(_) => Status::Fail,
        }
    }
}

impl RunFile {
    /// Loads a run file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| EvalError::io(path, e))?;
        let run: Self = serde_json::from_slice(&bytes).map_err(|e| EvalError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if run.format != RUN_FORMAT_VERSION {
            return Err(EvalError::Parse {
                path: path.to_owned(),
                message: format!(
                    "run-file format {} is not supported (this version reads {RUN_FORMAT_VERSION})",
                    run.format
                ),
            });
        }
        Ok(run)
    }

    /// Writes the run file as pretty JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| EvalError::Config(format!("cannot serialize the run: {e}")))?;
        std::fs::write(path, json).map_err(|e| EvalError::io(path, e))
    }

    /// The summary of metric `name`.
    pub fn metric(&self, name: &str) -> Option<&MetricSummary> {
        self.summary.metrics.iter().find(|m| m.name == name)
    }

    /// Recomputes [`RunFile::summary`] from the cases (keeps `duration_ms`).
    pub fn recompute_summary(&mut self) {
        let duration_ms = self.summary.duration_ms;
        self.summary = summarize(&self.evaluators, &self.cases);
        self.summary.duration_ms = duration_ms;
    }
}

pub(crate) fn summarize(evaluators: &[EvaluatorInfo], cases: &[CaseResult]) -> RunSummary {
    let mut s = RunSummary {
        cases: cases.len(),
        ..RunSummary::default()
    };
    for c in cases {
        for sample in &c.samples {
            s.samples += 1;
            s.target_errors += usize::from(sample.error.is_some());
            s.cached_samples += usize::from(sample.cached);
            s.target_cost_usd += sample.cost_usd.unwrap_or(0.0);
            if let Some(u) = &sample.usage {
                s.input_tokens += u.input_tokens;
                s.output_tokens += u.output_tokens;
            }
            s.judge_cost_usd += sample
                .scores
                .values()
                .filter_map(|r| r.cost_usd)
                .sum::<f64>();
        }
    }
    for e in evaluators {
        let (mut passed, mut failed, mut errors, mut judged_cases) = (0, 0, 0, 0);
        let (mut frac_sum, mut score_sum, mut judged_samples) = (0.0, 0.0, 0usize);
        for c in cases {
            for sample in &c.samples {
                match sample.scores.get(&e.name).map(|r| r.status) {
                    Some(Status::Pass) => passed += 1,
                    Some(Status::Fail) => failed += 1,
                    _ => errors += 1,
                }
            }
            if let Some(m) = c.metric(&e.name) {
                judged_cases += 1;
                frac_sum += m.pass_fraction;
                score_sum += m.mean_score * m.judged as f64;
                judged_samples += m.judged;
            }
        }
        let pass_rate = if judged_cases == 0 {
            0.0
        } else {
            frac_sum / judged_cases as f64
        };
        s.metrics.push(MetricSummary {
            name: e.name.clone(),
            judged_cases,
            passed,
            failed,
            errors,
            pass_rate,
            pass_rate_ci: wilson(frac_sum, judged_cases as f64, 0.95),
            mean_score: if judged_samples == 0 {
                0.0
            } else {
                score_sum / judged_samples as f64
            },
        });
    }
    s
}
