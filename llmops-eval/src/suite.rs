//! Suite files: one TOML file naming the dataset, the target, the prompt template, the
//! evaluators with their thresholds, and the gate.
//!
//! Paths are relative to the suite file. Unknown keys are errors (a typo must not silently
//! disable a check). See `examples/eval/capitals.toml` for a commented example and
//! `docs/evaluation.md` for every key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use llmops_core::{Embedder, Provider, ProviderEmbedder, Role};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::calibration::{GatingPolicy, check_gating};
use crate::dataset::Dataset;
use crate::error::{EvalError, Result};
use crate::evaluators::{
    ArgumentsMatch, Bleu, CostLimit, EmbeddingSimilarity, JsonSchemaEval, JsonValid, LatencyLimit,
    Levenshtein, MatchMode, Negate, Reference, RougeL, StringMatch, ToolCallMatch,
};
use crate::gate::{Correction, Gate, GateReport, GatedMetric};
use crate::judge::{PairwiseJudge, RubricJudge, ScoreBand, StructuredOutput};
use crate::run::{EvaluatorInfo, RunFile, TargetInfo};
use crate::runner::{Pricing, Runner, SuiteEvaluator};
use crate::target::{OpenAiCompatible, Target};
use crate::template::{PromptTemplate, TemplateMessage};

/// The parsed suite file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SuiteConfig {
    /// `[suite]`.
    pub suite: SuiteSection,
    /// `[target]`.
    pub target: TargetSection,
    /// `[prompt]`.
    #[serde(default)]
    pub prompt: Option<PromptSection>,
    /// `[judge]`: defaults for `llm_judge` evaluators.
    #[serde(default)]
    pub judge: Option<EndpointSection>,
    /// `[embedder]`: the endpoint of `similarity` evaluators.
    #[serde(default)]
    pub embedder: Option<EndpointSection>,
    /// `[[evaluators]]`.
    #[serde(default)]
    pub evaluators: Vec<EvaluatorSection>,
    /// `[gate]`.
    #[serde(default)]
    pub gate: Option<GateSection>,
}

/// `[suite]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SuiteSection {
    /// The suite's name.
    pub name: String,
    /// The dataset file.
    pub dataset: PathBuf,
    /// Independent samples per case (default 1).
    #[serde(default)]
    pub repeats: Option<u32>,
    /// Target calls in flight (default 8).
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Seed of the gate's bootstrap (default 0).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Result cache file, to resume interrupted runs.
    #[serde(default)]
    pub cache: Option<PathBuf>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

/// `[target]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TargetSection {
    /// An OpenAI-compatible endpoint.
    #[serde(default)]
    pub base_url: Option<String>,
    /// A gateway config to run in process (not supported yet).
    #[serde(default)]
    pub gateway_config: Option<PathBuf>,
    /// The model name sent.
    pub model: String,
    /// The environment variable holding the API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Request timeout in seconds (default 120).
    #[serde(default)]
    pub timeout_secs: Option<f64>,
    /// Request parameters (`temperature`, `max_tokens`...).
    #[serde(default)]
    pub params: Map<String, Value>,
    /// Prices, to compute costs.
    #[serde(default)]
    pub pricing: Option<Pricing>,
}

/// An endpoint for judges or embeddings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EndpointSection {
    /// An OpenAI-compatible endpoint.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The model.
    #[serde(default)]
    pub model: Option<String>,
    /// The environment variable holding the API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Prices, to count the judge's cost.
    #[serde(default)]
    pub pricing: Option<Pricing>,
}

/// `[prompt]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PromptSection {
    /// The template's name (default: the file stem, or `prompt`).
    #[serde(default)]
    pub id: Option<String>,
    /// A template file (`.json` messages, or text of one user message).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// An inline system message.
    #[serde(default)]
    pub system: Option<String>,
    /// An inline user message.
    #[serde(default)]
    pub user: Option<String>,
}

/// One `[[evaluators]]` entry. Which keys apply depends on `kind`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EvaluatorSection {
    /// The name (the metric name in reports and the gate).
    pub name: String,
    /// `exact`, `contains`, `starts_with`, `regex`, `json_valid`, `json_schema`,
    /// `levenshtein`, `rouge_l`, `bleu`, `similarity`, `latency`, `cost`, `tool_call`,
    /// `llm_judge`, `pairwise_judge`.
    pub kind: String,
    /// Pass threshold of the score.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Inverts the verdict.
    #[serde(default)]
    pub negate: bool,
    /// Case-insensitive matching.
    #[serde(default)]
    pub ignore_case: bool,
    /// The case field to compare with (default `expected`).
    #[serde(default)]
    pub expected_field: Option<String>,
    /// A literal to compare with instead of a case field.
    #[serde(default)]
    pub value: Option<Value>,
    /// A regular expression (`regex`).
    #[serde(default)]
    pub pattern: Option<String>,
    /// An inline JSON Schema (`json_schema`).
    #[serde(default)]
    pub schema: Option<Value>,
    /// A JSON Schema file (`json_schema`).
    #[serde(default)]
    pub schema_file: Option<PathBuf>,
    /// Accept JSON inside a Markdown code fence.
    #[serde(default)]
    pub allow_code_fence: bool,
    /// Latency limit in milliseconds (`latency`).
    #[serde(default)]
    pub max_ms: Option<u64>,
    /// Cost limit in USD (`cost`).
    #[serde(default)]
    pub max_usd: Option<f64>,
    /// `subset` (default), `exact` or `ignore` (`tool_call`).
    #[serde(default)]
    pub arguments: Option<String>,
    /// The rubric (`llm_judge`) or criteria (`pairwise_judge`).
    #[serde(default)]
    pub rubric: Option<String>,
    /// A file holding the rubric.
    #[serde(default)]
    pub rubric_file: Option<PathBuf>,
    /// `[min, max]` integer scale (default `[1, 5]`).
    #[serde(default)]
    pub scale: Option<[i64; 2]>,
    /// Described score bands (they define the scale).
    #[serde(default)]
    pub bands: Vec<BandSection>,
    /// Shows the reference answer to the judge (reference-guided grading).
    #[serde(default)]
    pub reference: bool,
    /// The case field holding the other answer (`pairwise_judge`, default
    /// `baseline_output`).
    #[serde(default)]
    pub other_field: Option<String>,
    /// `tool_call` (default) or `json_schema`.
    #[serde(default)]
    pub structured_output: Option<StructuredOutput>,
    /// Overrides of the `[judge]` endpoint.
    #[serde(default)]
    pub judge: Option<EndpointSection>,
    /// Allows a judge to gate (requires a calibration meeting `min_kappa`).
    #[serde(default)]
    pub gating: bool,
    /// The judge's calibration record (from `llmops eval calibrate`).
    #[serde(default)]
    pub calibration: Option<PathBuf>,
    /// κ floor for gating (default 0.6).
    #[serde(default)]
    pub min_kappa: Option<f64>,
    /// Fewest calibration labels for gating (default 50).
    #[serde(default)]
    pub min_labels: Option<usize>,
}

/// A score band.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BandSection {
    /// The score.
    pub score: i64,
    /// What earns it.
    pub description: String,
}

/// `[gate]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GateSection {
    /// The gated metric(s), sharing `margin` and `min_pass_rate`.
    #[serde(default)]
    pub metric: Option<OneOrMany>,
    /// δ (default 0.05).
    #[serde(default)]
    pub margin: Option<f64>,
    /// Confidence (default 0.95).
    #[serde(default)]
    pub confidence: Option<f64>,
    /// Absolute floor.
    #[serde(default)]
    pub min_pass_rate: Option<f64>,
    /// `holm` (default) or `none`.
    #[serde(default)]
    pub correction: Option<Correction>,
    /// Bootstrap resamples (default 2000).
    #[serde(default)]
    pub bootstrap_samples: Option<usize>,
    /// Above this ERROR rate the gate is inconclusive (default 0.1).
    #[serde(default)]
    pub max_error_rate: Option<f64>,
    /// Case ids that must pass.
    #[serde(default)]
    pub must_pass: Vec<String>,
    /// Per-metric settings.
    #[serde(default)]
    pub metrics: Vec<GateMetricSection>,
}

/// A metric name or a list of them.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum OneOrMany {
    /// One metric.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `[[gate.metrics]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GateMetricSection {
    /// The metric.
    pub metric: String,
    /// δ (default: `[gate].margin`).
    #[serde(default)]
    pub margin: Option<f64>,
    /// Floor (default: `[gate].min_pass_rate`).
    #[serde(default)]
    pub min_pass_rate: Option<f64>,
}

/// In-process replacements for the endpoints a suite names (library users and tests).
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct Overrides {
    /// Replaces `[target]`'s endpoint.
    pub target: Option<Target>,
    /// Replaces every judge's endpoint.
    pub judge: Option<Arc<dyn Provider>>,
    /// Replaces `[embedder]`.
    pub embedder: Option<Arc<dyn Embedder>>,
    /// Overrides `[suite].repeats`.
    pub repeats: Option<u32>,
    /// Overrides `[suite].concurrency`.
    pub concurrency: Option<usize>,
    /// Shows a progress bar on a terminal.
    pub progress: bool,
    /// Replaces `[prompt]` (prompt promotion runs the suite with each version).
    pub template: Option<PromptTemplate>,
}

impl std::fmt::Debug for Overrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overrides")
            .field("target", &self.target)
            .field("repeats", &self.repeats)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// A loaded suite.
#[derive(Clone, Debug)]
pub struct Suite {
    /// The parsed file.
    pub config: SuiteConfig,
    /// The suite file.
    pub path: PathBuf,
    dir: PathBuf,
}

/// What running a suite produced.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SuiteOutcome {
    /// The run, with the gate report embedded when the suite has a gate.
    pub run: RunFile,
    /// The gate report.
    pub gate: Option<GateReport>,
}

fn api_key(env: Option<&String>) -> Result<Option<String>> {
    match env {
        None => Ok(None),
        Some(var) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(v)),
            _ => Err(EvalError::Config(format!(
                "environment variable {var} (api_key_env) is not set"
            ))),
        },
    }
}

impl Suite {
    /// Loads and validates a suite file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
        let config: SuiteConfig = toml::from_str(&text)
            .map_err(|e| EvalError::Config(format!("{}: {e}", path.display())))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let suite = Self {
            config,
            path: path.to_owned(),
            dir,
        };
        suite.validate()?;
        Ok(suite)
    }

    fn validate(&self) -> Result<()> {
        let t = &self.config.target;
        if t.gateway_config.is_some() {
            return Err(EvalError::Config(
                "[target] gateway_config (running the gateway pipeline in process) is not supported yet: use base_url, or build a Runner with Target::Service from the library".into(),
            ));
        }
        if t.base_url.is_none() {
            return Err(EvalError::Config("[target] needs base_url".into()));
        }
        let mut names = std::collections::HashSet::new();
        for e in &self.config.evaluators {
            if !names.insert(e.name.as_str()) {
                return Err(EvalError::Config(format!(
                    "two evaluators are named `{}`",
                    e.name
                )));
            }
        }
        if self.config.evaluators.is_empty() {
            return Err(EvalError::Config("the suite has no [[evaluators]]".into()));
        }
        Ok(())
    }

    /// A path relative to the suite file.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.dir.join(p)
        }
    }

    /// Loads the dataset.
    pub fn dataset(&self) -> Result<Dataset> {
        Dataset::load(self.resolve(&self.config.suite.dataset))
    }

    /// The prompt template, if the suite has one.
    pub fn template(&self) -> Result<Option<PromptTemplate>> {
        let Some(p) = &self.config.prompt else {
            return Ok(None);
        };
        if let Some(file) = &p.file {
            if p.system.is_some() || p.user.is_some() {
                return Err(EvalError::Config(
                    "[prompt] takes either `file` or `system`/`user`, not both".into(),
                ));
            }
            let mut t = PromptTemplate::load(&self.resolve(file))?;
            if let Some(id) = &p.id {
                t.id = id.clone();
            }
            return Ok(Some(t));
        }
        let mut messages = Vec::new();
        if let Some(s) = &p.system {
            messages.push(TemplateMessage::new(Role::System, s.clone()));
        }
        match &p.user {
            Some(u) => messages.push(TemplateMessage::new(Role::User, u.clone())),
            None => return Err(EvalError::Config("[prompt] needs `file` or `user`".into())),
        }
        Ok(Some(PromptTemplate::new(
            p.id.clone().unwrap_or_else(|| "prompt".into()),
            messages,
        )))
    }

    fn target(&self) -> Result<(Target, TargetInfo)> {
        let t = &self.config.target;
        let base = t.base_url.clone().unwrap_or_default();
        let timeout = Duration::from_secs_f64(t.timeout_secs.unwrap_or(120.0).max(0.001));
        let mut client = OpenAiCompatible::with_timeout(base.clone(), timeout)
            .map_err(|e| EvalError::Config(format!("[target] {e}")))?;
        if let Some(k) = api_key(t.api_key_env.as_ref())? {
            client = client.api_key(k);
        }
        Ok((
            Target::provider(client),
            TargetInfo::new(
                format!("openai:{}", base.trim_end_matches('/')),
                t.model.clone(),
            ),
        ))
    }

    fn endpoint(
        &self,
        e: Option<&EndpointSection>,
        what: &str,
    ) -> Result<(Arc<dyn Provider>, String, Option<Pricing>)> {
        let defaults = match what {
            "judge" => self.config.judge.clone(),
            _ => self.config.embedder.clone(),
        }
        .unwrap_or_default();
        let e = e.cloned().unwrap_or_default();
        let base = e.base_url.or(defaults.base_url).ok_or_else(|| {
            EvalError::Config(format!("no endpoint for the {what}: set [{what}] base_url"))
        })?;
        let model = e.model.or(defaults.model).ok_or_else(|| {
            EvalError::Config(format!("no model for the {what}: set [{what}] model"))
        })?;
        let mut client =
            OpenAiCompatible::new(base).map_err(|e| EvalError::Config(format!("[{what}] {e}")))?;
        if let Some(k) = api_key(e.api_key_env.as_ref().or(defaults.api_key_env.as_ref()))? {
            client = client.api_key(k);
        }
        Ok((
            Arc::new(client.named(what)),
            model,
            e.pricing.or(defaults.pricing),
        ))
    }

    fn judge_parts(
        &self,
        e: &EvaluatorSection,
        ov: &Overrides,
    ) -> Result<(Arc<dyn Provider>, String, Option<Pricing>)> {
        if let Some(p) = &ov.judge {
            let model = e
                .judge
                .as_ref()
                .and_then(|j| j.model.clone())
                .or_else(|| self.config.judge.as_ref().and_then(|j| j.model.clone()))
                .unwrap_or_else(|| "judge".into());
            let pricing = e.judge.as_ref().and_then(|j| j.pricing).or(self
                .config
                .judge
                .as_ref()
                .and_then(|j| j.pricing));
            return Ok((p.clone(), model, pricing));
        }
        self.endpoint(e.judge.as_ref(), "judge")
    }

    fn rubric(&self, e: &EvaluatorSection) -> Result<String> {
        match (&e.rubric, &e.rubric_file) {
            (Some(r), None) => Ok(r.clone()),
            (None, Some(f)) => {
                let p = self.resolve(f);
                std::fs::read_to_string(&p).map_err(|err| EvalError::io(p, err))
            }
            _ => Err(EvalError::Config(format!(
                "evaluator `{}`: give exactly one of `rubric` or `rubric_file`",
                e.name
            ))),
        }
    }

    /// Builds the rubric judge of evaluator `name` (for `llmops eval calibrate`).
    pub fn rubric_judge(&self, name: &str, ov: &Overrides) -> Result<RubricJudge> {
        let e = self
            .config
            .evaluators
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| EvalError::Config(format!("the suite has no evaluator `{name}`")))?;
        if e.kind != "llm_judge" {
            return Err(EvalError::Config(format!(
                "evaluator `{name}` is a `{}`, not an llm_judge",
                e.kind
            )));
        }
        self.build_rubric_judge(e, ov)
    }

    fn build_rubric_judge(&self, e: &EvaluatorSection, ov: &Overrides) -> Result<RubricJudge> {
        let (provider, model, pricing) = self.judge_parts(e, ov)?;
        let mut j = RubricJudge::new(e.name.clone(), provider, model, self.rubric(e)?);
        if let Some([lo, hi]) = e.scale {
            if lo >= hi {
                return Err(EvalError::Config(format!(
                    "evaluator `{}`: scale must be [min, max] with min < max",
                    e.name
                )));
            }
            j = j.scale(lo, hi);
        }
        if !e.bands.is_empty() {
            j = j.bands(
                e.bands
                    .iter()
                    .map(|b| ScoreBand::new(b.score, b.description.clone()))
                    .collect(),
            );
        }
        if let Some(t) = e.threshold {
            j = j.threshold(t);
        }
        if e.reference {
            j = j.reference(reference(e));
        }
        if let Some(p) = pricing {
            j = j.pricing(p);
        }
        if let Some(o) = e.structured_output {
            j = j.structured_output(o);
        }
        Ok(j)
    }

    fn evaluator(&self, e: &EvaluatorSection, ov: &Overrides) -> Result<SuiteEvaluator> {
        let cfg =
            |m: String| EvalError::Config(format!("evaluator `{}` ({}): {m}", e.name, e.kind));
        let name = e.name.clone();
        let r = reference(e);
        let mut judge_info = None;
        let ev: Arc<dyn llmops_core::Evaluator> = match e.kind.as_str() {
            "exact" | "equals" | "contains" | "starts_with" | "regex" => {
                let mode = match e.kind.as_str() {
                    "exact" | "equals" => MatchMode::Exact,
                    "contains" => MatchMode::Contains,
                    "starts_with" => MatchMode::StartsWith,
                    _ => MatchMode::Regex,
                };
                let m = match (mode, &e.pattern) {
                    (MatchMode::Regex, Some(p)) => {
                        StringMatch::regex(name.clone(), p, e.ignore_case)
                            .map_err(|err| cfg(format!("invalid pattern: {err}")))?
                    }
                    (MatchMode::Regex, None) if e.value.is_none() && e.expected_field.is_none() => {
                        return Err(cfg(
                            "needs `pattern` (or a case field with `expected_field`)".into(),
                        ));
                    }
                    _ => StringMatch::new(name.clone(), mode, r).ignore_case(e.ignore_case),
                };
                negate(m, e.negate, &name)
            }
            "json_valid" => negate(
                JsonValid::new(name.clone()).allow_code_fence(e.allow_code_fence),
                e.negate,
                &name,
            ),
            "json_schema" => {
                let schema = match (&e.schema, &e.schema_file) {
                    (Some(s), None) => s.clone(),
                    (None, Some(f)) => {
                        let p = self.resolve(f);
                        let text =
                            std::fs::read_to_string(&p).map_err(|err| EvalError::io(&p, err))?;
                        serde_json::from_str(&text).map_err(|err| EvalError::Parse {
                            path: p,
                            message: err.to_string(),
                        })?
                    }
                    _ => return Err(cfg("give exactly one of `schema` or `schema_file`".into())),
                };
                let j = JsonSchemaEval::new(name.clone(), &schema)
                    .map_err(cfg)?
                    .allow_code_fence(e.allow_code_fence);
                negate(j, e.negate, &name)
            }
            "levenshtein" => {
                let l = Levenshtein::new(name.clone(), r).threshold(e.threshold.unwrap_or(0.8));
                negate(l, e.negate, &name)
            }
            "rouge_l" => negate(
                RougeL::new(name.clone(), r).threshold(e.threshold.unwrap_or(0.5)),
                e.negate,
                &name,
            ),
            "bleu" => negate(
                Bleu::new(name.clone(), r).threshold(e.threshold.unwrap_or(0.5)),
                e.negate,
                &name,
            ),
            "similarity" => {
                let embedder: Arc<dyn Embedder> = match &ov.embedder {
                    Some(em) => em.clone(),
                    None => {
                        let (p, model, _) = self.endpoint(None, "embedder")?;
                        Arc::new(ProviderEmbedder::new(p, model))
                    }
                };
                let s = EmbeddingSimilarity::new(name.clone(), r, embedder)
                    .threshold(e.threshold.unwrap_or(0.8));
                negate(s, e.negate, &name)
            }
            "latency" => {
                let ms = e.max_ms.ok_or_else(|| cfg("needs `max_ms`".into()))?;
                negate(
                    LatencyLimit::new(name.clone(), Duration::from_millis(ms)),
                    e.negate,
                    &name,
                )
            }
            "cost" => {
                let usd = e.max_usd.ok_or_else(|| cfg("needs `max_usd`".into()))?;
                negate(CostLimit::new(name.clone(), usd), e.negate, &name)
            }
            "tool_call" => {
                let mode = match e.arguments.as_deref() {
                    None | Some("subset") => ArgumentsMatch::Subset,
                    Some("exact") => ArgumentsMatch::Exact,
                    Some("ignore") => ArgumentsMatch::Ignore,
                    Some(other) => {
                        return Err(cfg(format!(
                            "`arguments` must be subset, exact or ignore, got {other:?}"
                        )));
                    }
                };
                let t = ToolCallMatch::new(name.clone(), r)
                    .arguments(mode)
                    .threshold(e.threshold.unwrap_or(1.0));
                negate(t, e.negate, &name)
            }
            "llm_judge" => {
                let j = self.build_rubric_judge(e, ov)?;
                judge_info = Some(j.identity());
                negate(j, e.negate, &name)
            }
            "pairwise_judge" => {
                let (provider, model, pricing) = self.judge_parts(e, ov)?;
                let other = Reference::field(e.other_field.as_deref().unwrap_or("baseline_output"));
                let mut j =
                    PairwiseJudge::new(name.clone(), provider, model, self.rubric(e)?, other)
                        .threshold(e.threshold.unwrap_or(0.5));
                if let Some(p) = pricing {
                    j = j.pricing(p);
                }
                judge_info = Some(j.identity());
                negate(j, e.negate, &name)
            }
            other => {
                return Err(cfg(format!(
                    "unknown kind `{other}` (exact, contains, starts_with, regex, json_valid, json_schema, levenshtein, rouge_l, bleu, similarity, latency, cost, tool_call, llm_judge, pairwise_judge)"
                )));
            }
        };
        let mut info = EvaluatorInfo::new(name, e.kind.clone());
        info.threshold = e.threshold;
        info.judge = judge_info;
        Ok(SuiteEvaluator::from_arc(info, ev))
    }

    /// Builds the runner.
    pub fn runner(&self, ov: &Overrides) -> Result<Runner> {
        let s = &self.config.suite;
        let (target, info) = match &ov.target {
            Some(t) => (
                t.clone(),
                TargetInfo::new("in-process", self.config.target.model.clone()),
            ),
            None => self.target()?,
        };
        let mut b = Runner::builder(target, info)
            .suite(s.name.clone())
            .repeats(ov.repeats.or(s.repeats).unwrap_or(1))
            .concurrency(ov.concurrency.or(s.concurrency).unwrap_or(8))
            .seed(s.seed.unwrap_or(0))
            .params(self.config.target.params.clone())
            .progress(ov.progress);
        if let Some(p) = self.config.target.pricing {
            b = b.pricing(p);
        }
        if let Some(c) = &s.cache {
            b = b.cache(self.resolve(c));
        }
        for e in &self.config.evaluators {
            b = b.evaluator(self.evaluator(e, ov)?);
        }
        b.build()
    }

    /// The gate, if the suite has one.
    pub fn gate(&self) -> Result<Option<Gate>> {
        let Some(g) = &self.config.gate else {
            return Ok(None);
        };
        let margin = g.margin.unwrap_or(0.05);
        let mut metrics: BTreeMap<String, GatedMetric> = BTreeMap::new();
        let mut order = Vec::new();
        let names = match &g.metric {
            None => Vec::new(),
            Some(OneOrMany::One(m)) => vec![m.clone()],
            Some(OneOrMany::Many(v)) => v.clone(),
        };
        for m in names {
            let mut gm = GatedMetric::new(m.clone(), margin);
            gm.min_pass_rate = g.min_pass_rate;
            order.push(m.clone());
            metrics.insert(m, gm);
        }
        for m in &g.metrics {
            if !metrics.contains_key(&m.metric) {
                order.push(m.metric.clone());
            }
            let gm = metrics.entry(m.metric.clone()).or_insert_with(|| {
                let mut gm = GatedMetric::new(m.metric.clone(), margin);
                gm.min_pass_rate = g.min_pass_rate;
                gm
            });
            if let Some(x) = m.margin {
                gm.margin = x;
            }
            if let Some(x) = m.min_pass_rate {
                gm.min_pass_rate = Some(x);
            }
        }
        for m in &order {
            if !self.config.evaluators.iter().any(|e| &e.name == m) {
                return Err(EvalError::Config(format!(
                    "[gate] metric `{m}` is not the name of an evaluator"
                )));
            }
        }
        let mut gate = Gate::new(order.iter().filter_map(|m| metrics.remove(m)).collect());
        gate.seed = self.config.suite.seed.unwrap_or(0);
        if let Some(c) = g.confidence {
            gate.confidence = c;
        }
        if let Some(c) = g.correction {
            gate.correction = c;
        }
        if let Some(b) = g.bootstrap_samples {
            gate.bootstrap_samples = b.max(100);
        }
        if let Some(r) = g.max_error_rate {
            gate.max_error_rate = r;
        }
        gate.must_pass = g.must_pass.clone();
        Ok(Some(gate))
    }

    /// Refuses the gate when a gated judge is not marked `gating` or lacks a calibration
    /// meeting its κ floor; says why.
    pub fn check_gating_judges(&self, ov: &Overrides) -> Result<()> {
        let Some(gate) = self.gate()? else {
            return Ok(());
        };
        for gm in &gate.metrics {
            let Some(e) = self.config.evaluators.iter().find(|e| e.name == gm.metric) else {
                continue;
            };
            let identity = match e.kind.as_str() {
                "llm_judge" => self.build_rubric_judge(e, ov)?.identity(),
                "pairwise_judge" => {
                    let (p, model, _) = self.judge_parts(e, ov)?;
                    PairwiseJudge::new(
                        e.name.clone(),
                        p,
                        model,
                        self.rubric(e)?,
                        Reference::Expected,
                    )
                    .identity()
                }
                _ => continue,
            };
            if !e.gating {
                return Err(EvalError::GateRefused(format!(
                    "judge `{}` is a gated metric but not marked `gating = true`; a judge gates only with a recorded calibration",
                    e.name
                )));
            }
            let policy = GatingPolicy {
                calibration: e.calibration.as_ref().map(|p| self.resolve(p)),
                min_kappa: e.min_kappa.unwrap_or(0.6),
                min_labels: e.min_labels.unwrap_or(50),
            };
            check_gating(&e.name, &identity, &policy)?;
        }
        Ok(())
    }

    /// Runs the suite and, when it has a gate, decides against `baseline`.
    pub async fn run(&self, baseline: Option<&RunFile>, ov: &Overrides) -> Result<SuiteOutcome> {
        let gate = self.gate()?;
        if gate.is_some() {
            self.check_gating_judges(ov)?;
        }
        let dataset = self.dataset()?;
        let template = match &ov.template {
            Some(t) => Some(t.clone()),
            None => self.template()?,
        };
        let runner = self.runner(ov)?;
        let mut run = runner.run(&dataset, template.as_ref()).await?;
        let report = match &gate {
            Some(g) => Some(g.evaluate(&run, baseline)?),
            None => None,
        };
        run.gate = report.clone();
        Ok(SuiteOutcome { run, gate: report })
    }
}

fn reference(e: &EvaluatorSection) -> Reference {
    match (&e.value, &e.expected_field) {
        (Some(v), _) => Reference::Literal(v.clone()),
        (None, Some(f)) => Reference::field(f),
        (None, None) => Reference::Expected,
    }
}

fn negate<E: llmops_core::Evaluator + 'static>(
    e: E,
    yes: bool,
    name: &str,
) -> Arc<dyn llmops_core::Evaluator> {
    if yes {
        Arc::new(Negate::new(e).named(name))
    } else {
        Arc::new(e)
    }
}
