//! Online evaluation: sample production traffic, score it in the background, and alert on
//! quality drift and on the hallucination rate.
//!
//! The [`OnlineEvaluator`] is the observe layer's [`Sampler`]. At the start of a chat request
//! it flips a lock-free coin (`sample_rate`); only sampled requests are cloned (and their
//! streams collected), and at the end of the request the exchange is `try_send`-ed onto a
//! bounded queue — dropped and counted when full. One background task scores samples with
//! the configured [`Evaluator`]s, so a slow judge never slows a request.
//!
//! # Drift test
//!
//! For every (model, prompt version, evaluator) the task keeps two windows of pass/fail
//! results: the **recent** window (samples from the last `window_s` seconds) and the
//! **baseline** (up to `baseline_samples` older samples, fed by samples ageing out of the
//! recent window). The drift alert fires when a one-sided **two-proportion z-test** finds the
//! recent pass rate significantly below the baseline's — `z >= z_threshold` (default 3.29,
//! a one-sided p < 0.0005, strict because the test is repeated on every sample) — *and* the
//! drop is at least `min_drop` (default 0.10, so a huge baseline cannot make a trivial dip
//! significant). Both windows need `min_samples` results first. While the alert fires, ageing
//! samples are not moved into the baseline, so a lasting degradation stays visible instead of
//! becoming the new normal; the alert resolves when the recent window recovers — when the
//! evidence falls below half of both thresholds (hysteresis, so a window that is half
//! recovered does not flap between resolve and fire).
//!
//! The z-test was chosen over Wilson-interval separation because it uses the pooled variance
//! under the null hypothesis (equal rates), which is the question asked; with the sample sizes
//! involved (tens to hundreds) its normal approximation is adequate, and `min_samples` keeps
//! it away from tiny counts.
//!
//! # Hallucination rate
//!
//! For the [`GroundednessEvaluator`] (or any evaluator named in `hallucination_evaluator`),
//! the share of failed samples in the recent window is the hallucination rate; above
//! `hallucination_rate` the `hallucination_rate` alert fires.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use llmops_core::{ChatRequest, EvalInput, Evaluator, ResponseFormat, Role, Score};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::alert::{Alert, AlertHub, Severity};
use crate::layer::Coin;
use crate::record::{EvalSample, Sampler};
use crate::semconv::{label, metric};
use crate::slo::round3;

/// `[online_eval]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OnlineEvalConfig {
    /// Share of chat requests to sample, in `[0, 1]`.
    pub sample_rate: f64,
    /// Built-in evaluators to run: `json_validity`, `groundedness` (default both).
    #[serde(default = "default_evaluators")]
    pub evaluators: Vec<String>,
    /// The recent window, seconds (default 300).
    #[serde(default = "default_window")]
    pub window_s: u64,
    /// The most samples the baseline keeps (default 1000).
    #[serde(default = "default_baseline")]
    pub baseline_samples: usize,
    /// Samples needed in each window before testing (default 30).
    #[serde(default = "default_min_samples")]
    pub min_samples: usize,
    /// z score at which a drop is significant (default 3.29).
    #[serde(default = "default_z")]
    pub z_threshold: f64,
    /// Smallest pass-rate drop that counts (default 0.10).
    #[serde(default = "default_min_drop")]
    pub min_drop: f64,
    /// Hallucination-rate threshold (share of failed groundedness checks; default 0.2).
    #[serde(default)]
    pub hallucination_rate: Option<f64>,
    /// The evaluator whose failures count as hallucinations (default `groundedness`).
    #[serde(default = "default_hallucination_evaluator")]
    pub hallucination_evaluator: String,
    /// Capacity of the sample queue (default 1024).
    #[serde(default = "default_queue")]
    pub queue_capacity: usize,
    /// Severity of the drift and hallucination alerts (default `warning`).
    #[serde(default = "default_severity")]
    pub severity: Severity,
}

fn default_evaluators() -> Vec<String> {
    vec!["json_validity".into(), "groundedness".into()]
}
fn default_window() -> u64 {
    300
}
fn default_baseline() -> usize {
    1000
}
fn default_min_samples() -> usize {
    30
}
fn default_z() -> f64 {
    3.29
}
fn default_min_drop() -> f64 {
    0.10
}
fn default_hallucination_evaluator() -> String {
    "groundedness".into()
}
fn default_queue() -> usize {
    1024
}
fn default_severity() -> Severity {
    Severity::Warning
}

impl OnlineEvalConfig {
    /// Sampling `sample_rate` of traffic with the defaults.
    pub fn new(sample_rate: f64) -> Self {
        Self {
            sample_rate,
            evaluators: default_evaluators(),
            window_s: default_window(),
            baseline_samples: default_baseline(),
            min_samples: default_min_samples(),
            z_threshold: default_z(),
            min_drop: default_min_drop(),
            hallucination_rate: Some(0.2),
            hallucination_evaluator: default_hallucination_evaluator(),
            queue_capacity: default_queue(),
            severity: default_severity(),
        }
    }

    /// Sets the recent window (builder style).
    #[must_use]
    pub fn window_s(mut self, secs: u64) -> Self {
        self.window_s = secs;
        self
    }

    /// Sets the minimum samples per window (builder style).
    #[must_use]
    pub fn min_samples(mut self, n: usize) -> Self {
        self.min_samples = n;
        self
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sample_rate) {
            return Err(format!(
                "online_eval.sample_rate must be in [0, 1], got {}",
                self.sample_rate
            ));
        }
        if self.window_s == 0 || self.min_samples == 0 || self.baseline_samples < self.min_samples {
            return Err("online_eval: window_s and min_samples must be positive and baseline_samples >= min_samples".into());
        }
        for e in &self.evaluators {
            if !matches!(e.as_str(), "json_validity" | "groundedness") {
                return Err(format!(
                    "online_eval: unknown evaluator {e:?} (json_validity, groundedness)"
                ));
            }
        }
        Ok(())
    }

    /// The built-in evaluators named in `evaluators`.
    pub fn builtin_evaluators(&self) -> Vec<Arc<dyn Evaluator>> {
        self.evaluators
            .iter()
            .filter_map(|e| match e.as_str() {
                "json_validity" => Some(Arc::new(JsonValidityEvaluator) as Arc<dyn Evaluator>),
                "groundedness" => {
                    Some(Arc::new(GroundednessEvaluator::default()) as Arc<dyn Evaluator>)
                }
                _ => None,
            })
            .collect()
    }
}

/// The one-sided two-proportion z statistic for "rate 2 is below rate 1" (positive when
/// `pass2/n2 < pass1/n1`); 0 when either count is 0 or the pooled rate is 0 or 1.
pub fn two_proportion_z(pass1: u64, n1: u64, pass2: u64, n2: u64) -> f64 {
    if n1 == 0 || n2 == 0 {
        return 0.0;
    }
    let (p1, p2) = (pass1 as f64 / n1 as f64, pass2 as f64 / n2 as f64);
    let p = (pass1 + pass2) as f64 / (n1 + n2) as f64;
    let var = p * (1.0 - p) * (1.0 / n1 as f64 + 1.0 / n2 as f64);
    if var <= 0.0 {
        0.0
    } else {
        (p1 - p2) / var.sqrt()
    }
}

/// Passes when the answer is valid JSON (a fenced ```json block is unwrapped first). Applies
/// only to requests asking for JSON (`response_format` `json_object` or `json_schema`); for
/// others it returns an error (not evaluated), which online evaluation skips.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonValidityEvaluator;

#[async_trait]
impl Evaluator for JsonValidityEvaluator {
    fn name(&self) -> &str {
        "json_validity"
    }

    async fn evaluate(&self, input: &EvalInput) -> llmops_core::Result<Score> {
        let wants_json = matches!(
            input.request.response_format,
            Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. })
        );
        if !wants_json {
            return Err(llmops_core::Error::invalid_request(
                "the request does not ask for JSON",
                None,
            ));
        }
        let text = strip_fence(input.output.trim());
        Ok(match serde_json::from_str::<serde_json::Value>(text) {
            Ok(_) => Score::pass_fail(true, "valid JSON"),
            Err(e) => Score::pass_fail(false, format!("invalid JSON: {e}")),
        })
    }
}

fn strip_fence(s: &str) -> &str {
    let Some(rest) = s.strip_prefix("```") else {
        return s;
    };
    let rest = rest.strip_prefix("json").unwrap_or(rest);
    rest.strip_suffix("```").unwrap_or(rest).trim()
}

/// A lexical groundedness check: is every sentence of the answer supported by the context the
/// request gave (system and tool messages, or `vars["context"]`)?
///
/// A sentence is supported when at least `support` of its content words (lowercased
/// alphanumeric words of 4+ letters that are not stop words, and all numbers) occur in the
/// context. The score is the share of supported sentences; the answer passes at `threshold`.
/// Requests without context are not evaluated (error). It is a cheap signal for spotting
/// drift — invented names, numbers and facts — not a judge; use an LLM judge from llmops-eval
/// for verdicts.
#[derive(Clone, Copy, Debug)]
pub struct GroundednessEvaluator {
    /// Share of a sentence's content words that must occur in the context (default 0.6).
    pub support: f64,
    /// Share of supported sentences needed to pass (default 0.8).
    pub threshold: f64,
}

impl Default for GroundednessEvaluator {
    fn default() -> Self {
        Self {
            support: 0.6,
            threshold: 0.8,
        }
    }
}

const STOP_WORDS: &[&str] = &[
    "about", "above", "after", "again", "also", "because", "been", "before", "being", "below",
    "between", "both", "could", "does", "doing", "down", "during", "each", "from", "further",
    "have", "having", "here", "into", "just", "more", "most", "only", "other", "over", "same",
    "should", "some", "such", "than", "that", "their", "them", "then", "there", "these", "they",
    "this", "those", "through", "under", "until", "very", "were", "what", "when", "where", "which",
    "while", "will", "with", "would", "your", "yours",
];

fn content_words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| {
            w.chars().all(|c| c.is_ascii_digit())
                || (w.chars().count() >= 4 && !STOP_WORDS.contains(&w.as_str()))
        })
}

fn request_context(req: &ChatRequest, vars: &serde_json::Map<String, serde_json::Value>) -> String {
    let mut ctx = String::new();
    if let Some(serde_json::Value::String(s)) = vars.get("context") {
        ctx.push_str(s);
    }
    for m in &req.messages {
        if matches!(m.role, Role::System | Role::Developer | Role::Tool) {
            ctx.push('\n');
            ctx.push_str(&m.text());
        }
    }
    ctx
}

#[async_trait]
impl Evaluator for GroundednessEvaluator {
    fn name(&self) -> &str {
        "groundedness"
    }

    async fn evaluate(&self, input: &EvalInput) -> llmops_core::Result<Score> {
        let context = request_context(&input.request, &input.vars);
        let known: HashSet<String> = content_words(&context).collect();
        if known.is_empty() {
            return Err(llmops_core::Error::invalid_request(
                "the request gives no context to check against",
                None,
            ));
        }
        let (mut considered, mut supported) = (0u32, 0u32);
        let mut unsupported: Vec<Cow<'_, str>> = Vec::new();
        for sentence in input.output.split(['.', '!', '?', '\n']) {
            let words: Vec<String> = content_words(sentence).collect();
            if words.is_empty() {
                continue;
            }
            considered += 1;
            let hits = words.iter().filter(|w| known.contains(*w)).count();
            if hits as f64 / words.len() as f64 >= self.support {
                supported += 1;
            } else if unsupported.len() < 3 {
                unsupported.push(Cow::Borrowed(sentence.trim()));
            }
        }
        if considered == 0 {
            return Ok(Score::new(1.0, self.threshold, "no factual content"));
        }
        let score = f64::from(supported) / f64::from(considered);
        Ok(Score::new(
            score,
            self.threshold,
            if unsupported.is_empty() {
                format!("{supported}/{considered} sentences supported")
            } else {
                format!(
                    "{supported}/{considered} sentences supported; unsupported: {unsupported:?}"
                )
            },
        ))
    }
}

/// Samples traffic for evaluation and scores it in the background (see the module docs).
#[derive(Clone)]
pub struct OnlineEvaluator {
    inner: Arc<Inner>,
}

struct Inner {
    rate: f64,
    coin: Coin,
    tx: mpsc::Sender<EvalSample>,
    stats: Arc<OnlineEvalStats>,
}

impl fmt::Debug for OnlineEvaluator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnlineEvaluator")
            .field("rate", &self.inner.rate)
            .finish()
    }
}

/// Counters of online evaluation.
#[derive(Debug, Default)]
pub struct OnlineEvalStats {
    sampled: AtomicU64,
    dropped: AtomicU64,
    scored: AtomicU64,
}

impl OnlineEvalStats {
    /// Samples accepted into the queue.
    pub fn sampled(&self) -> u64 {
        self.sampled.load(Ordering::SeqCst)
    }
    /// Samples dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::SeqCst)
    }
    /// Samples scored (by every evaluator).
    pub fn scored(&self) -> u64 {
        self.scored.load(Ordering::SeqCst)
    }
}

impl OnlineEvaluator {
    /// Starts the scoring task on the current tokio runtime with `evaluators` (the built-in
    /// ones of `config` when empty), firing alerts on `hub`.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(
        config: OnlineEvalConfig,
        evaluators: Vec<Arc<dyn Evaluator>>,
        hub: AlertHub,
    ) -> Self {
        let evaluators = if evaluators.is_empty() {
            config.builtin_evaluators()
        } else {
            evaluators
        };
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let stats = Arc::new(OnlineEvalStats::default());
        let task = Scorer {
            config: config.clone(),
            evaluators,
            hub,
            windows: HashMap::new(),
            stats: stats.clone(),
        };
        tokio::spawn(task.run(rx));
        Self {
            inner: Arc::new(Inner {
                rate: config.sample_rate,
                coin: Coin::new(0x5eed),
                tx,
                stats,
            }),
        }
    }

    /// The counters.
    pub fn stats(&self) -> Arc<OnlineEvalStats> {
        self.inner.stats.clone()
    }
}

impl Sampler for OnlineEvaluator {
    fn should_sample(&self, _model: &str) -> bool {
        let rate = self.inner.rate;
        rate >= 1.0 || (rate > 0.0 && self.inner.coin.next_f64() < rate)
    }

    fn submit(&self, sample: EvalSample) {
        if self.inner.tx.try_send(sample).is_ok() {
            self.inner.stats.sampled.fetch_add(1, Ordering::SeqCst);
        } else {
            self.inner.stats.dropped.fetch_add(1, Ordering::SeqCst);
            metrics::counter!(metric::DROPPED_EVENTS, label::QUEUE => "online_eval").increment(1);
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    model: Arc<str>,
    prompt_version: String,
    evaluator: String,
}

#[derive(Debug, Default)]
struct Windows {
    recent: VecDeque<(Instant, bool)>,
    baseline: VecDeque<bool>,
    drifting: bool,
    hallucinating: bool,
}

impl Windows {
    fn age(&mut self, now: Instant, window: Duration, baseline_max: usize) {
        while let Some((t, pass)) = self.recent.front().copied() {
            if now.saturating_duration_since(t) <= window {
                break;
            }
            self.recent.pop_front();
            if !self.drifting {
                self.baseline.push_back(pass);
                if self.baseline.len() > baseline_max {
                    self.baseline.pop_front();
                }
            }
        }
    }

    fn counts(&self) -> (u64, u64, u64, u64) {
        let bp = self.baseline.iter().filter(|p| **p).count() as u64;
        let rp = self.recent.iter().filter(|(_, p)| *p).count() as u64;
        (bp, self.baseline.len() as u64, rp, self.recent.len() as u64)
    }
}

struct Scorer {
    config: OnlineEvalConfig,
    evaluators: Vec<Arc<dyn Evaluator>>,
    hub: AlertHub,
    windows: HashMap<Key, Windows>,
    stats: Arc<OnlineEvalStats>,
}

impl Scorer {
    async fn run(mut self, mut rx: mpsc::Receiver<EvalSample>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                s = rx.recv() => match s {
                    Some(s) => self.score(s).await,
                    None => break,
                },
                _ = tick.tick() => self.check(Instant::now()),
            }
        }
    }

    async fn score(&mut self, sample: EvalSample) {
        let mut input = EvalInput::new(sample.request, sample.response.first_text());
        input.latency = Some(sample.latency);
        input.usage.clone_from(&sample.response.usage);
        input.response = Some(sample.response);
        let version = sample
            .prompt
            .as_ref()
            .map_or_else(|| "none".to_owned(), |p| p.to_string());
        for ev in &self.evaluators {
            let result = ev.evaluate(&input).await;
            let name = ev.name().to_owned();
            let outcome = match &result {
                Ok(s) if s.passed => "pass",
                Ok(_) => "fail",
                Err(_) => "error",
            };
            metrics::counter!(
                metric::ONLINE_EVALS,
                label::EVALUATOR => name.clone(),
                label::RESULT => outcome
            )
            .increment(1);
            let Ok(score) = result else { continue };
            let key = Key {
                model: sample.model.clone(),
                prompt_version: version.clone(),
                evaluator: name,
            };
            self.windows
                .entry(key)
                .or_default()
                .recent
                .push_back((Instant::now(), score.passed));
        }
        self.stats.scored.fetch_add(1, Ordering::SeqCst);
        self.check(Instant::now());
    }

    fn check(&mut self, now: Instant) {
        let c = &self.config;
        let window = Duration::from_secs(c.window_s);
        for (key, w) in &mut self.windows {
            w.age(now, window, c.baseline_samples);
            let (bp, bn, rp, rn) = w.counts();
            let enough = bn >= c.min_samples as u64 && rn >= c.min_samples as u64;
            let (p1, p2) = (ratio(bp, bn), ratio(rp, rn));
            let z = two_proportion_z(bp, bn, rp, rn);
            // Hysteresis: a firing alert clears only when the evidence falls to half the
            // thresholds, so a recovering window does not flap between fire and resolve.
            let drifting = if w.drifting {
                enough && z >= c.z_threshold / 2.0 && p1 - p2 >= c.min_drop / 2.0
            } else {
                enough && z >= c.z_threshold && p1 - p2 >= c.min_drop
            };
            let drift_alert = || {
                Alert::new(
                    "quality_drift",
                    c.severity,
                    format!(
                        "{} pass rate of model {} ({}) fell from {:.1}% to {:.1}% (z = {:.2})",
                        key.evaluator,
                        key.model,
                        key.prompt_version,
                        p1 * 100.0,
                        p2 * 100.0,
                        z
                    ),
                )
                .with_scope("model", key.model.to_string())
                .with_scope("prompt_version", key.prompt_version.clone())
                .with_scope("evaluator", key.evaluator.clone())
                .with_detail("baseline_pass_rate", round3(p1))
                .with_detail("recent_pass_rate", round3(p2))
                .with_detail("baseline_samples", bn)
                .with_detail("recent_samples", rn)
                .with_detail("z", round3(z))
            };
            if drifting {
                self.hub.fire(drift_alert());
            } else if w.drifting {
                let a = drift_alert();
                self.hub.resolve(&a.rule, &a.scope);
            }
            w.drifting = drifting;

            if key.evaluator == c.hallucination_evaluator
                && let Some(max) = c.hallucination_rate
            {
                let rate = 1.0 - p2;
                let a = Alert::new(
                        "hallucination_rate",
                        c.severity,
                        format!(
                            "model {} ({}): {:.1}% of sampled answers not grounded in their context (threshold {:.1}%)",
                            key.model, key.prompt_version, rate * 100.0, max * 100.0
                        ),
                    )
                    .with_scope("model", key.model.to_string())
                    .with_scope("prompt_version", key.prompt_version.clone())
                    .with_detail("hallucination_rate", round3(rate))
                    .with_detail("samples", rn);
                // Hysteresis as for drift: clear below 80% of the threshold.
                let limit = if w.hallucinating { max * 0.8 } else { max };
                w.hallucinating = rn >= c.min_samples as u64 && rate > limit;
                if w.hallucinating {
                    self.hub.fire(a);
                } else {
                    self.hub.resolve(&a.rule, &a.scope);
                }
            }
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

#[cfg(test)]
mod tests {
    use llmops_core::Message;

    use super::*;

    #[test]
    fn z_statistic_matches_a_worked_example() {
        // 90/100 vs 70/100: pooled 0.8, se = sqrt(0.16 * 0.02) = 0.0566, z = 0.2/0.0566.
        let z = two_proportion_z(90, 100, 70, 100);
        assert!((z - 3.5355).abs() < 1e-3, "{z}");
        assert_eq!(two_proportion_z(10, 10, 10, 10), 0.0);
        assert_eq!(two_proportion_z(0, 0, 1, 1), 0.0);
        assert!(two_proportion_z(70, 100, 90, 100) < 0.0);
    }

    #[tokio::test]
    async fn groundedness_flags_invented_facts() {
        let g = GroundednessEvaluator::default();
        let req = ChatRequest::new(
            "m",
            vec![
                Message::system("Context: The Eiffel Tower is in Paris and was completed in 1889."),
                Message::user("When was the tower completed?"),
            ],
        );
        let ok = g
            .evaluate(&EvalInput::new(
                req.clone(),
                "The Eiffel Tower was completed in 1889.",
            ))
            .await
            .unwrap();
        assert!(ok.passed, "{ok:?}");
        let bad = g
            .evaluate(&EvalInput::new(
                req,
                "The Eiffel Tower was designed by Leonardo in Florence in 1503.",
            ))
            .await
            .unwrap();
        assert!(!bad.passed, "{bad:?}");
        let none = ChatRequest::new("m", vec![Message::user("hi")]);
        assert!(
            g.evaluate(&EvalInput::new(none, "hello there"))
                .await
                .is_err(),
            "no context: not evaluated"
        );
    }

    #[tokio::test]
    async fn json_validity_applies_to_json_requests_only() {
        let mut req = ChatRequest::new("m", vec![Message::user("give json")]);
        assert!(
            JsonValidityEvaluator
                .evaluate(&EvalInput::new(req.clone(), "{}"))
                .await
                .is_err()
        );
        req.response_format = Some(ResponseFormat::JsonObject);
        assert!(
            JsonValidityEvaluator
                .evaluate(&EvalInput::new(req.clone(), "```json\n{\"a\":1}\n```"))
                .await
                .unwrap()
                .passed
        );
        assert!(
            !JsonValidityEvaluator
                .evaluate(&EvalInput::new(req, "{\"a\":"))
                .await
                .unwrap()
                .passed
        );
    }

    #[test]
    fn config_validation() {
        assert!(OnlineEvalConfig::new(0.05).validate().is_ok());
        assert!(OnlineEvalConfig::new(1.5).validate().is_err());
        let mut c = OnlineEvalConfig::new(0.1);
        c.evaluators = vec!["nope".into()];
        assert!(c.validate().is_err());
    }
}
