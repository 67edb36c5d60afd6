//! The runner: every case × repeat through the target and the evaluators.
//!
//! - **Bounded, adaptive concurrency.** At most `concurrency` target calls are in flight; a
//!   429 (`ErrorKind::RateLimited`) halves the limit and the call is retried after the
//!   upstream's `Retry-After` or an exponential backoff; successes raise the limit again
//!   (see [`AdaptiveLimiter`]). Transient failures
//!   (overloaded, 5xx, timeouts, connection errors) are retried with backoff too.
//! - **Independent repeats.** Each case is sampled `repeats` times; the result cache key
//!   includes the repeat index, so a cached answer never stands in for another repeat.
//! - **Errors are not failures.** A target failure makes the sample ERROR for every
//!   evaluator; an evaluator's `Err` makes that verdict ERROR. Both are counted apart.
//! - **Everything is recorded.** The [`RunFile`] holds each sample's output, usage, latency,
//!   cost and verdicts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use llmops_core::{
    ChatRequest, ChatResponse, ErrorKind, EvalInput, Evaluator, PromptRef, RequestContext, Usage,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::cache::{CacheKeyParts, CachedSample, ResultCache};
use crate::dataset::{Case, CaseInput, Dataset};
use crate::error::{EvalError, Result};
use crate::limiter::AdaptiveLimiter;
use crate::run::{
    CaseResult, DatasetInfo, EvaluatorInfo, PromptInfo, RUN_FORMAT_VERSION, RunFile, RunSummary,
    Sample, SampleError, ScoreRecord, TargetInfo, summarize,
};
use crate::target::Target;
use crate::template::{PromptTemplate, case_messages};

/// Prices of the target, to compute each sample's cost.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Pricing {
    /// USD per million input tokens.
    pub input_per_mtok: f64,
    /// USD per million output tokens.
    pub output_per_mtok: f64,
    /// USD per million cache-read input tokens (defaults to the input price).
    #[serde(default)]
    pub cached_input_per_mtok: Option<f64>,
}

impl Pricing {
    /// Prices per million input and output tokens.
    pub fn new(input_per_mtok: f64, output_per_mtok: f64) -> Self {
        Self {
            input_per_mtok,
            output_per_mtok,
            cached_input_per_mtok: None,
        }
    }

    /// The cost of `usage` in USD.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = self.cached_input_per_mtok.unwrap_or(self.input_per_mtok);
        let uncached = usage.input_tokens.saturating_sub(usage.cache_read_tokens);
        (uncached as f64 * self.input_per_mtok
            + usage.cache_read_tokens as f64 * cached
            + usage.output_tokens as f64 * self.output_per_mtok)
            / 1e6
    }
}

/// How the runner retries rate limits and transient failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first backoff; doubled at each retry.
    pub base_delay: Duration,
    /// The longest backoff.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 6,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Sets the number of retries (builder style).
    #[must_use]
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// The delay before retry `attempt` (1-based) with a deterministic jitter in [50%, 100%].
    pub(crate) fn delay(&self, attempt: u32, jitter_seed: u64) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = exp.min(self.max_delay);
        // SplitMix64 step of the seed: a cheap, reproducible jitter.
        let mut z = jitter_seed.wrapping_add(0x9E37_79B9_7F4A_7C15 ^ u64::from(attempt));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let frac = 0.5 + 0.5 * (z >> 11) as f64 / (1u64 << 53) as f64;
        capped.mul_f64(frac)
    }
}

fn retryable(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::RateLimited
            | ErrorKind::Overloaded
            | ErrorKind::ServerError
            | ErrorKind::Timeout
            | ErrorKind::Connect
            | ErrorKind::StreamInterrupted {
                after_first_event: false
            }
    )
}

/// A named evaluator with its description for the run file.
#[derive(Clone)]
pub struct SuiteEvaluator {
    /// What reports show about it.
    pub info: EvaluatorInfo,
    /// The evaluator.
    pub evaluator: Arc<dyn Evaluator>,
}

impl std::fmt::Debug for SuiteEvaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SuiteEvaluator")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl SuiteEvaluator {
    /// Wraps `evaluator`, described as `kind`.
    pub fn new(kind: impl Into<String>, evaluator: impl Evaluator + 'static) -> Self {
        let evaluator: Arc<dyn Evaluator> = Arc::new(evaluator);
        Self {
            info: EvaluatorInfo::new(evaluator.name(), kind),
            evaluator,
        }
    }

    /// Wraps a shared evaluator with its description.
    pub fn from_arc(info: EvaluatorInfo, evaluator: Arc<dyn Evaluator>) -> Self {
        Self { info, evaluator }
    }
}

/// Runs a dataset through a target and evaluators. Build one with [`Runner::builder`].
#[derive(Debug)]
pub struct Runner {
    suite: String,
    target: Target,
    target_info: TargetInfo,
    evaluators: Vec<SuiteEvaluator>,
    concurrency: usize,
    repeats: u32,
    seed: u64,
    progress: bool,
    retry: RetryPolicy,
    pricing: Option<Pricing>,
    params: Map<String, Value>,
    cache_path: Option<PathBuf>,
}

/// Builds a [`Runner`].
#[derive(Debug)]
#[must_use]
pub struct RunnerBuilder {
    inner: Runner,
}

impl RunnerBuilder {
    /// Adds an evaluator.
    pub fn evaluator(mut self, e: SuiteEvaluator) -> Self {
        self.inner.evaluators.push(e);
        self
    }

    /// Sets the suite name recorded in the run file.
    pub fn suite(mut self, name: impl Into<String>) -> Self {
        self.inner.suite = name.into();
        self
    }

    /// Maximum target calls in flight (default 8).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.inner.concurrency = n.max(1);
        self
    }

    /// Independent samples per case (default 1).
    pub fn repeats(mut self, k: u32) -> Self {
        self.inner.repeats = k.max(1);
        self
    }

    /// The seed recorded for the gate's resampling (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.inner.seed = seed;
        self
    }

    /// Shows a progress bar on stderr when it is a terminal (default off).
    pub fn progress(mut self, yes: bool) -> Self {
        self.inner.progress = yes;
        self
    }

    /// Retry policy for 429s and transient failures.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.inner.retry = policy;
        self
    }

    /// Prices of the target.
    pub fn pricing(mut self, pricing: Pricing) -> Self {
        self.inner.pricing = Some(pricing);
        self
    }

    /// Request parameters merged into every request (`temperature`, `max_tokens`, ...).
    pub fn params(mut self, params: Map<String, Value>) -> Self {
        self.inner.params = params;
        self
    }

    /// Caches target answers in this JSONL file, to resume interrupted runs.
    pub fn cache(mut self, path: impl Into<PathBuf>) -> Self {
        self.inner.cache_path = Some(path.into());
        self
    }

    /// The runner; fails when two evaluators share a name.
    pub fn build(self) -> Result<Runner> {
        let mut names = std::collections::HashSet::new();
        for e in &self.inner.evaluators {
            if !names.insert(e.info.name.as_str()) {
                return Err(EvalError::Config(format!(
                    "two evaluators are named `{}`",
                    e.info.name
                )));
            }
        }
        Ok(self.inner)
    }
}

struct Prepared<'a> {
    case: &'a Case,
    request: ChatRequest,
    vars: Map<String, Value>,
}

struct Shared<'a> {
    runner: &'a Runner,
    limiter: AdaptiveLimiter,
    cache: Option<ResultCache>,
    prompt: Option<PromptInfo>,
    params: Value,
    bar: ProgressBar,
}

impl Runner {
    /// A builder running against `target`, described by `info`.
    pub fn builder(target: Target, info: TargetInfo) -> RunnerBuilder {
        RunnerBuilder {
            inner: Runner {
                suite: "suite".into(),
                target,
                target_info: info,
                evaluators: Vec::new(),
                concurrency: 8,
                repeats: 1,
                seed: 0,
                progress: false,
                retry: RetryPolicy::default(),
                pricing: None,
                params: Map::new(),
                cache_path: None,
            },
        }
    }

    /// The evaluators.
    pub fn evaluators(&self) -> &[SuiteEvaluator] {
        &self.evaluators
    }

    /// Runs every case of `dataset` `repeats` times. Cases with template variables are
    /// rendered with `template`; a case that cannot be rendered fails the whole run before
    /// any call is made.
    pub async fn run(
        &self,
        dataset: &Dataset,
        template: Option<&PromptTemplate>,
    ) -> Result<RunFile> {
        let started_at_ms = now_ms();
        let clock = Instant::now();
        let prepared = self.prepare(dataset, template)?;
        let cache = match &self.cache_path {
            Some(p) => Some(ResultCache::open(p)?),
            None => None,
        };
        let total = prepared.len() as u64 * u64::from(self.repeats);
        let bar = if self.progress {
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} {prefix} [{bar:30}] {pos}/{len} samples · {per_sec} · ETA {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(self.suite.clone());
        let shared = Shared {
            runner: self,
            limiter: AdaptiveLimiter::new(self.concurrency),
            cache,
            prompt: template.map(|t| PromptInfo {
                id: t.id.clone(),
                version: t.version(),
            }),
            params: Value::Object(self.params.clone()),
            bar,
        };

        let work = prepared
            .iter()
            .enumerate()
            .flat_map(|(i, _)| (0..self.repeats).map(move |r| (i, r)));
        let shared_ref = &shared;
        let prepared_ref = &prepared;
        let mut results: Vec<(usize, Sample)> = futures_util::stream::iter(work)
            .map(|(i, r)| async move {
                let s = shared_ref.sample(&prepared_ref[i], r).await;
                shared_ref.bar.inc(1);
                (i, s)
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        shared.bar.finish_and_clear();
        let Shared {
            cache,
            prompt,
            params,
            ..
        } = shared;
        if let Some(c) = cache {
            c.close()?;
        }

        results.sort_by_key(|(i, s)| (*i, s.repeat));
        let mut cases: Vec<CaseResult> = prepared
            .iter()
            .map(|p| CaseResult {
                id: p.case.id.clone(),
                cluster: p.case.cluster.clone(),
                tags: p.case.tags.clone(),
                must_pass: p.case.must_pass,
                samples: Vec::with_capacity(self.repeats as usize),
            })
            .collect();
        for (i, s) in results {
            cases[i].samples.push(s);
        }
        let evaluators: Vec<EvaluatorInfo> =
            self.evaluators.iter().map(|e| e.info.clone()).collect();
        let mut summary: RunSummary = summarize(&evaluators, &cases);
        summary.duration_ms = clock.elapsed().as_millis() as u64;
        Ok(RunFile {
            format: RUN_FORMAT_VERSION,
            run_id: llmops_core::id::uuid_v7_string(),
            suite: self.suite.clone(),
            started_at_ms,
            finished_at_ms: now_ms(),
            target: self.target_info.clone(),
            prompt,
            params,
            repeats: self.repeats,
            seed: self.seed,
            dataset: dataset.source.as_ref().map(|p| DatasetInfo {
                path: p.display().to_string(),
                digest: std::fs::read(p)
                    .map(|b| crate::template::full_hash(&b))
                    .unwrap_or_default(),
                cases: dataset.len(),
            }),
            evaluators,
            cases,
            summary,
            gate: None,
        })
    }

    fn prepare<'a>(
        &self,
        dataset: &'a Dataset,
        template: Option<&PromptTemplate>,
    ) -> Result<Vec<Prepared<'a>>> {
        dataset
            .cases
            .iter()
            .map(|case| {
                let messages = case_messages(case, template)?;
                let mut obj = self.params.clone();
                obj.insert(
                    "model".into(),
                    Value::String(self.target_info.model.clone()),
                );
                obj.insert(
                    "messages".into(),
                    serde_json::to_value(&messages)
                        .map_err(|e| EvalError::Config(e.to_string()))?,
                );
                let request: ChatRequest = serde_json::from_value(Value::Object(obj))
                    .map_err(|e| EvalError::Config(format!("invalid [target.params]: {e}")))?;
                let mut vars = case.vars.clone();
                if let CaseInput::Vars(v) = &case.input {
                    vars.extend(v.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                Ok(Prepared {
                    case,
                    request,
                    vars,
                })
            })
            .collect()
    }
}

impl Shared<'_> {
    async fn sample(&self, p: &Prepared<'_>, repeat: u32) -> Sample {
        let runner = self.runner;
        let key = self.cache.as_ref().map(|_| {
            CacheKeyParts {
                case_id: &p.case.id,
                messages: &p.request.messages,
                target: &runner.target_info.id,
                model: &runner.target_info.model,
                prompt_version: self.prompt.as_ref().map(|pr| pr.version.as_str()),
                params: &self.params,
                repeat,
            }
            .key()
        });
        let cached = match (&self.cache, &key) {
            (Some(c), Some(k)) => c.get(k).cloned(),
            _ => None,
        };
        let (result, attempts, latency, from_cache) = match cached {
            Some(hit) => (
                Ok(hit.response),
                0,
                Duration::from_secs_f64(hit.latency_ms / 1e3),
                true,
            ),
            None => {
                let (r, a, l) = self.call(p, repeat).await;
                if let (Ok(resp), Some(c), Some(k)) = (&r, &self.cache, &key) {
                    c.put(CachedSample {
                        key: k.clone(),
                        response: resp.clone(),
                        latency_ms: l.as_secs_f64() * 1e3,
                    });
                }
                (r, a, l, false)
            }
        };

        let mut sample = Sample {
            repeat,
            output: None,
            tool_calls: Vec::new(),
            usage: None,
            cost_usd: None,
            latency_ms: Some(latency.as_secs_f64() * 1e3),
            attempts,
            cached: from_cache,
            error: None,
            scores: BTreeMap::new(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                let msg = e.to_string();
                sample.error = Some(SampleError {
                    kind: e.kind().as_str().to_owned(),
                    message: msg.clone(),
                });
                for ev in &runner.evaluators {
                    sample.scores.insert(
                        ev.info.name.clone(),
                        ScoreRecord::error(format!("target failed: {msg}")),
                    );
                }
                return sample;
            }
        };
        let output = resp.first_text();
        let usage = resp.usage.clone();
        let cost = match (&runner.pricing, &usage) {
            (Some(pr), Some(u)) => Some(pr.cost(u)),
            _ => None,
        };
        sample.tool_calls = resp
            .choices
            .first()
            .and_then(|c| c.message.tool_calls.clone())
            .unwrap_or_default();
        let mut input = EvalInput::new(p.request.clone(), output.clone());
        input.response = Some(resp);
        input.expected = p.case.expected.clone();
        input.vars = p.vars.clone();
        input.latency = Some(latency);
        input.usage = usage.clone();
        input.cost_usd = cost;
        let verdicts = futures_util::future::join_all(
            runner
                .evaluators
                .iter()
                .map(|ev| ev.evaluator.evaluate(&input)),
        )
        .await;
        for (ev, v) in runner.evaluators.iter().zip(verdicts) {
            let record = match v {
                Ok(score) => ScoreRecord::from_score(&score),
                Err(e) => ScoreRecord::error(e.to_string()),
            };
            sample.scores.insert(ev.info.name.clone(), record);
        }
        sample.output = Some(output);
        sample.usage = usage;
        sample.cost_usd = cost;
        sample
    }

    async fn call(
        &self,
        p: &Prepared<'_>,
        repeat: u32,
    ) -> (llmops_core::Result<ChatResponse>, u32, Duration) {
        let runner = self.runner;
        let mut ctx = RequestContext::new()
            .with_tag("eval.suite", runner.suite.clone())
            .with_tag("eval.case", p.case.id.clone())
            .with_tag("eval.repeat", repeat.to_string());
        if let Some(pr) = &self.prompt {
            ctx = ctx.with_prompt(PromptRef::new(pr.id.clone(), pr.version.clone()));
        }
        let jitter_seed = crate::template::full_hash(p.case.id.as_bytes())
            .bytes()
            .fold(u64::from(repeat), |h, b| {
                h.wrapping_mul(31).wrapping_add(u64::from(b))
            });
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let permit = self.limiter.acquire().await;
            let start = Instant::now();
            let result = runner.target.chat(p.request.clone(), ctx.clone()).await;
            let latency = start.elapsed();
            drop(permit);
            match result {
                Ok(resp) => {
                    self.limiter.on_success();
                    return (Ok(resp), attempt, latency);
                }
                Err(e) => {
                    if e.kind() == ErrorKind::RateLimited {
                        self.limiter.on_rate_limited();
                    }
                    if !retryable(e.kind()) || attempt > runner.retry.max_retries {
                        return (Err(e), attempt, latency);
                    }
                    let wait = e
                        .retry_after()
                        .unwrap_or_else(|| runner.retry.delay(attempt, jitter_seed));
                    tracing::debug!(case = %p.case.id, attempt, ?wait, error = %e, "retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use llmops_core::mock::{MockProvider, MockReply};
    use llmops_core::{Error, Message};
    use serde_json::json;

    use super::*;
    use crate::evaluators::{FnEvaluator, Reference, StringMatch};

    fn ds(n: usize) -> Dataset {
        Dataset::from_cases(
            (0..n)
                .map(|i| {
                    Case::from_messages(format!("c{i}"), vec![Message::user(format!("q{i}"))])
                        .with_expected("yes")
                })
                .collect(),
        )
        .unwrap()
    }

    fn contains() -> SuiteEvaluator {
        SuiteEvaluator::new("contains", StringMatch::contains("ok", Reference::Expected))
    }

    #[tokio::test(start_paused = true)]
    async fn retries_rate_limits_and_counts_attempts() {
        let mock = MockProvider::new("m")
            .reply(MockReply::error(ErrorKind::RateLimited))
            .reply(MockReply::error(ErrorKind::RateLimited))
            .default_reply(MockReply::text("yes"));
        let runner = Runner::builder(Target::provider(mock.clone()), TargetInfo::new("mock", "m"))
            .evaluator(contains())
            .concurrency(1)
            .build()
            .unwrap();
        let run = runner.run(&ds(2), None).await.unwrap();
        mock.assert_call_count(4);
        assert_eq!(run.cases[0].samples[0].attempts, 3);
        assert_eq!(run.summary.metrics[0].passed, 2);
        assert_eq!(run.summary.target_errors, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn target_errors_are_errors_not_failures() {
        let mock = MockProvider::new("m")
            .reply(MockReply::error(ErrorKind::InvalidRequest))
            .default_reply(MockReply::text("no"));
        let runner = Runner::builder(Target::provider(mock), TargetInfo::new("mock", "m"))
            .evaluator(contains())
            .concurrency(1)
            .build()
            .unwrap();
        let run = runner.run(&ds(2), None).await.unwrap();
        let m = &run.summary.metrics[0];
        assert_eq!((m.passed, m.failed, m.errors), (0, 1, 1));
        assert_eq!(m.judged_cases, 1);
        assert_eq!(run.summary.target_errors, 1);
        assert_eq!(
            run.cases[0].samples[0].error.as_ref().unwrap().kind,
            "invalid_request"
        );
    }

    #[tokio::test]
    async fn evaluator_errors_are_counted_apart() {
        let mock = MockProvider::new("m").default_reply(MockReply::text("yes"));
        let flaky = FnEvaluator::new("flaky", |i| {
            if i.request.messages[0].text() == "q0" {
                Err(Error::new(ErrorKind::Decode, "judge said gibberish"))
            } else {
                Ok(llmops_core::Score::pass_fail(false, "no"))
            }
        });
        let runner = Runner::builder(Target::provider(mock), TargetInfo::new("mock", "m"))
            .evaluator(SuiteEvaluator::new("custom", flaky))
            .build()
            .unwrap();
        let run = runner.run(&ds(3), None).await.unwrap();
        let m = &run.summary.metrics[0];
        assert_eq!((m.passed, m.failed, m.errors), (0, 2, 1));
        assert!(
            run.cases[0].samples[0].scores["flaky"]
                .explanation
                .contains("gibberish")
        );
    }

    #[tokio::test]
    async fn repeats_are_independent_even_with_a_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache.jsonl");
        let mock = MockProvider::new("m").default_reply(MockReply::text("yes"));
        let build = |mock: MockProvider| {
            Runner::builder(Target::provider(mock), TargetInfo::new("mock", "m"))
                .evaluator(contains())
                .repeats(3)
                .cache(&cache)
                .build()
                .unwrap()
        };
        let run = build(mock.clone()).run(&ds(4), None).await.unwrap();
        // 4 cases × 3 repeats: 12 calls, none served from the cache within the run.
        mock.assert_call_count(12);
        assert_eq!(run.summary.cached_samples, 0);
        assert_eq!(
            run.cases[0]
                .samples
                .iter()
                .map(|s| s.repeat)
                .collect::<Vec<_>>(),
            vec![0, 1, 2]
        );

        // A resumed run reuses every sample; a run with more repeats only samples the new ones.
        let mock2 = MockProvider::new("m").default_reply(MockReply::text("yes"));
        let run = build(mock2.clone()).run(&ds(4), None).await.unwrap();
        mock2.assert_call_count(0);
        assert_eq!(run.summary.cached_samples, 12);
        let mock3 = MockProvider::new("m").default_reply(MockReply::text("yes"));
        let runner = Runner::builder(
            Target::provider(mock3.clone()),
            TargetInfo::new("mock", "m"),
        )
        .evaluator(contains())
        .repeats(4)
        .cache(&cache)
        .build()
        .unwrap();
        runner.run(&ds(4), None).await.unwrap();
        mock3.assert_call_count(4);
    }

    #[tokio::test]
    async fn params_and_prompt_reach_the_request() {
        let mock = MockProvider::new("m").default_reply(MockReply::text("Paris"));
        let runner = Runner::builder(
            Target::provider(mock.clone()),
            TargetInfo::new("mock", "gpt"),
        )
        .evaluator(contains())
        .params(
            json!({"temperature": 0.0, "max_tokens": 5})
                .as_object()
                .cloned()
                .unwrap(),
        )
        .pricing(Pricing::new(1.0, 2.0))
        .build()
        .unwrap();
        let t = PromptTemplate::user("capitals", "Capital of {{country}}?");
        let case = Case::from_vars(
            "fr",
            json!({"country": "France"}).as_object().cloned().unwrap(),
        )
        .with_expected("Paris");
        let run = runner
            .run(&Dataset::from_cases(vec![case]).unwrap(), Some(&t))
            .await
            .unwrap();
        let req = mock.last_chat_request().unwrap();
        assert_eq!(req.model, "gpt");
        assert_eq!(req.temperature, Some(0.0));
        assert_eq!(req.max_tokens, Some(5));
        assert_eq!(req.messages[0].text(), "Capital of France?");
        let ctx = &mock.calls()[0].ctx;
        assert_eq!(ctx.prompt.as_ref().unwrap().version.as_ref(), t.version());
        assert_eq!(run.prompt.as_ref().unwrap().version, t.version());
        assert!(run.summary.target_cost_usd > 0.0);
        assert_eq!(run.summary.metrics[0].passed, 1);

        // A template variable the case lacks fails before any call.
        let bad = Case::from_vars("x", Map::new());
        let err = runner
            .run(&Dataset::from_cases(vec![bad]).unwrap(), Some(&t))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("`{{country}}`"), "{err}");
    }

    #[tokio::test]
    async fn runs_against_an_in_process_pipeline() {
        use llmops_core::{BoxLlmService, ProviderService};
        let mock = MockProvider::new("m").default_reply(MockReply::text("yes"));
        let svc = BoxLlmService::new(ProviderService::new(Arc::new(mock.clone())));
        let runner = Runner::builder(Target::Service(svc), TargetInfo::new("pipeline", "m"))
            .evaluator(contains())
            .build()
            .unwrap();
        let run = runner.run(&ds(3), None).await.unwrap();
        mock.assert_call_count(3);
        assert_eq!(run.summary.metrics[0].passed, 3);
        assert_eq!(
            mock.calls()[0]
                .ctx
                .tags
                .get("eval.case")
                .map(String::as_str),
            Some("c0")
        );
    }

    /// Counts calls in flight and answers 429 to the first `throttled` calls.
    struct Gauge {
        now: std::sync::atomic::AtomicUsize,
        max: std::sync::atomic::AtomicUsize,
        throttled: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl llmops_core::Provider for Gauge {
        fn name(&self) -> &str {
            "gauge"
        }
        async fn chat(
            &self,
            req: ChatRequest,
            _: &RequestContext,
        ) -> llmops_core::Result<ChatResponse> {
            use std::sync::atomic::Ordering::SeqCst;
            let n = self.now.fetch_add(1, SeqCst) + 1;
            self.max.fetch_max(n, SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            self.now.fetch_sub(1, SeqCst);
            if self
                .throttled
                .fetch_update(SeqCst, SeqCst, |t| t.checked_sub(1))
                .is_ok()
            {
                return Err(Error::new(ErrorKind::RateLimited, "slow down").with_status(429));
            }
            Ok(ChatResponse::text("id", req.model, "yes", None))
        }
        async fn chat_stream(
            &self,
            _: ChatRequest,
            _: &RequestContext,
        ) -> llmops_core::Result<llmops_core::ChatStream> {
            Err(Error::new(ErrorKind::Unsupported, "no"))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_bounded_and_429s_are_absorbed() {
        let gauge = Arc::new(Gauge {
            now: 0.into(),
            max: 0.into(),
            throttled: 12.into(),
        });
        let runner = Runner::builder(Target::Provider(gauge.clone()), TargetInfo::new("g", "m"))
            .evaluator(contains())
            .concurrency(4)
            .build()
            .unwrap();
        let run = runner.run(&ds(40), None).await.unwrap();
        assert_eq!(gauge.max.load(std::sync::atomic::Ordering::SeqCst), 4);
        assert_eq!(run.summary.target_errors, 0);
        assert_eq!(run.summary.metrics[0].passed, 40);
        let retried: u32 = run.cases.iter().map(|c| c.samples[0].attempts - 1).sum();
        assert_eq!(retried, 12);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        let d1 = p.delay(1, 42);
        let d5 = p.delay(5, 42);
        assert!(d1 >= Duration::from_millis(125) && d1 <= Duration::from_millis(250));
        assert!(d5 >= Duration::from_secs(2) && d5 <= Duration::from_secs(4));
        assert!(p.delay(30, 1) <= p.max_delay);
        assert_eq!(p.delay(3, 9), p.delay(3, 9));
    }
}
