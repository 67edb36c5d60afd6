//! The regression gate: absolute floors, must-pass cases, and a paired non-inferiority test
//! against a baseline run, with Holm's correction across gated metrics.
//!
//! # The decision
//!
//! For each gated metric (an evaluator's pass rate), with margin δ and confidence 1 − α:
//!
//! 1. **Floor.** The pass rate must be at least `min_pass_rate`.
//! 2. **Baseline.** Cases are paired by id. The per-case difference is the candidate's pass
//!    fraction (over repeats) minus the baseline's. The null hypothesis is "the candidate is
//!    at most δ worse" (Δ ≥ −δ); the gate fails only if the data reject it at level α, i.e.
//!    when the change is worse than δ *with the configured confidence*. Noise alone fails
//!    the gate with probability at most α, and far less when δ > 0.
//!    - One repeat per case, no clusters: the paired table of flips (pass→fail `b`,
//!      fail→pass `c`) gives Δ̂ = (c − b)/n with the paired (McNemar) standard error
//!      √(((b + c)/n − Δ̂²)/n), computed with the Agresti–Min adjustment (half a case added
//!      to each cell) so that a handful of flips does not yield a zero standard error;
//!      with δ = 0 the exact one-sided McNemar test is used.
//!    - Otherwise: the paired bootstrap of the mean difference, resampling whole clusters
//!      when the dataset gives cluster ids (cases sharing a source are correlated; a
//!      case-level bootstrap would understate the variance).
//! 3. **Holm.** With several gated metrics, p-values are adjusted by Holm–Bonferroni so that
//!    the chance of any false alarm stays at α.
//! 4. **Must-pass.** A must-pass case that fails any gated metric fails the gate.
//!
//! The report always carries n, the difference, its confidence interval, the standard
//! deviation of the per-case differences and the minimum detectable effect: the smallest
//! true drop the gate would catch with 80% power at this run's size.
//!
//! A gate whose metrics have too many ERROR samples (`max_error_rate`) is inconclusive, not
//! passed: an evaluation that could not judge is not evidence of quality.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::run::{RunFile, Status};
use crate::stats::{
    Interval, holm, mcnemar_exact, mean_sd, minimum_detectable_effect, normal_cdf, normal_quantile,
    paired_bootstrap, quantile,
};

/// A gated metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GatedMetric {
    /// The evaluator whose pass rate is gated.
    pub metric: String,
    /// δ: the tolerated drop versus the baseline (pass-rate points, 0.05 = 5 points).
    pub margin: f64,
    /// The absolute floor of the pass rate.
    pub min_pass_rate: Option<f64>,
}

impl GatedMetric {
    /// Gates `metric` with margin `margin` and no floor.
    pub fn new(metric: impl Into<String>, margin: f64) -> Self {
        Self {
            metric: metric.into(),
            margin,
            min_pass_rate: None,
        }
    }

    /// Sets the absolute floor (builder style).
    #[must_use]
    pub fn min_pass_rate(mut self, floor: f64) -> Self {
        self.min_pass_rate = Some(floor);
        self
    }
}

/// How p-values of several gated metrics are corrected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Correction {
    /// Holm–Bonferroni (family-wise error rate).
    #[default]
    Holm,
    /// No correction.
    None,
}

/// The gate's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Gate {
    /// The gated metrics.
    pub metrics: Vec<GatedMetric>,
    /// 1 − α of the one-sided test (default 0.95).
    pub confidence: f64,
    /// Power used for the minimum detectable effect (default 0.8).
    pub power: f64,
    /// Multiple-comparison correction (default Holm).
    pub correction: Correction,
    /// Bootstrap resamples (default 2000).
    pub bootstrap_samples: usize,
    /// Seed of the bootstrap (default 0): the same runs give the same decision.
    pub seed: u64,
    /// Above this fraction of ERROR samples in a gated metric, the gate is inconclusive
    /// (default 0.1).
    pub max_error_rate: f64,
    /// Case ids that must pass, in addition to cases flagged `must_pass` in the dataset.
    pub must_pass: Vec<String>,
}

impl Gate {
    /// A gate on `metrics` with the defaults.
    pub fn new(metrics: Vec<GatedMetric>) -> Self {
        Self {
            metrics,
            confidence: 0.95,
            power: 0.8,
            correction: Correction::Holm,
            bootstrap_samples: 2000,
            seed: 0,
            max_error_rate: 0.1,
            must_pass: Vec::new(),
        }
    }

    /// Sets the confidence (builder style).
    #[must_use]
    pub fn confidence(mut self, c: f64) -> Self {
        self.confidence = c;
        self
    }

    /// Sets the seed (builder style).
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the number of bootstrap resamples (builder style).
    #[must_use]
    pub fn bootstrap_samples(mut self, n: usize) -> Self {
        self.bootstrap_samples = n.max(100);
        self
    }

    /// Sets the correction (builder style).
    #[must_use]
    pub fn correction(mut self, c: Correction) -> Self {
        self.correction = c;
        self
    }

    /// Sets the maximum error rate (builder style).
    #[must_use]
    pub fn max_error_rate(mut self, r: f64) -> Self {
        self.max_error_rate = r;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.metrics.is_empty() {
            return Err(EvalError::Config("the gate names no metric".into()));
        }
        if !(0.5..1.0).contains(&self.confidence) {
            return Err(EvalError::Config(format!(
                "gate confidence must be in [0.5, 1), got {}",
                self.confidence
            )));
        }
        for m in &self.metrics {
            if !(0.0..1.0).contains(&m.margin) {
                return Err(EvalError::Config(format!(
                    "gate margin of `{}` must be in [0, 1), got {}",
                    m.metric, m.margin
                )));
            }
            if let Some(f) = m.min_pass_rate
                && !(0.0..=1.0).contains(&f)
            {
                return Err(EvalError::Config(format!(
                    "min_pass_rate of `{}` must be in [0, 1], got {f}",
                    m.metric
                )));
            }
        }
        Ok(())
    }

    /// Decides on `current`, compared with `baseline` when given.
    pub fn evaluate(&self, current: &RunFile, baseline: Option<&RunFile>) -> Result<GateReport> {
        self.validate()?;
        let alpha = 1.0 - self.confidence;
        let mut report = GateReport {
            outcome: GateOutcome::Pass,
            confidence: self.confidence,
            baseline_run_id: baseline.map(|b| b.run_id.clone()),
            metrics: Vec::new(),
            must_pass_failures: Vec::new(),
            reasons: Vec::new(),
            warnings: Vec::new(),
        };
        if let Some(b) = baseline {
            if b.suite != current.suite {
                report.warnings.push(format!(
                    "baseline is from suite `{}`, this run is `{}`",
                    b.suite, current.suite
                ));
            }
            if let (Some(bd), Some(cd)) = (&b.dataset, &current.dataset)
                && bd.digest != cd.digest
            {
                report.warnings.push(
                    "the dataset changed since the baseline; only cases present in both are compared"
                        .into(),
                );
            }
        }

        for gm in &self.metrics {
            let Some(summary) = current.metric(&gm.metric) else {
                return Err(EvalError::GateRefused(format!(
                    "gated metric `{}` is not an evaluator of this run (evaluators: {})",
                    gm.metric,
                    current
                        .evaluators
                        .iter()
                        .map(|e| e.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            let total = summary.passed + summary.failed + summary.errors;
            let error_rate = if total == 0 {
                1.0
            } else {
                summary.errors as f64 / total as f64
            };
            let mut mg = MetricGate {
                metric: gm.metric.clone(),
                margin: gm.margin,
                min_pass_rate: gm.min_pass_rate,
                pass_rate: summary.pass_rate,
                pass_rate_ci: summary.pass_rate_ci,
                judged_cases: summary.judged_cases,
                errors: summary.errors,
                error_rate,
                floor_ok: gm.min_pass_rate.map(|f| summary.pass_rate >= f),
                comparison: None,
                verdict: Verdict::Pass,
            };
            if let Some(b) = baseline {
                if b.metric(&gm.metric).is_none() {
                    report.warnings.push(format!(
                        "the baseline has no metric `{}`: not compared",
                        gm.metric
                    ));
                } else {
                    mg.comparison = Some(self.compare(current, b, gm)?);
                }
            }
            report.metrics.push(mg);
        }

        // Holm across the metrics that were compared.
        let idx: Vec<usize> = (0..report.metrics.len())
            .filter(|&i| report.metrics[i].comparison.is_some())
            .collect();
        let ps: Vec<f64> = idx
            .iter()
            .filter_map(|&i| report.metrics[i].comparison.as_ref().map(|c| c.p_value))
            .collect();
        let adjusted = match self.correction {
            Correction::Holm => holm(&ps),
            Correction::None => ps.clone(),
        };
        for (k, &i) in idx.iter().enumerate() {
            if let Some(c) = report.metrics[i].comparison.as_mut() {
                c.p_adjusted = adjusted[k];
            }
        }

        for mg in &mut report.metrics {
            if mg.error_rate > self.max_error_rate {
                mg.verdict = Verdict::Inconclusive;
                report.reasons.push(format!(
                    "`{}`: {:.1}% of samples are ERROR (limit {:.1}%): fix the target or the evaluator",
                    mg.metric,
                    mg.error_rate * 100.0,
                    self.max_error_rate * 100.0
                ));
                continue;
            }
            if mg.floor_ok == Some(false) {
                mg.verdict = Verdict::Fail;
                report.reasons.push(format!(
                    "`{}`: pass rate {:.1}% is below the floor {:.1}%",
                    mg.metric,
                    mg.pass_rate * 100.0,
                    mg.min_pass_rate.unwrap_or(0.0) * 100.0
                ));
            }
            if let Some(c) = &mg.comparison {
                if c.p_adjusted < alpha {
                    mg.verdict = Verdict::Fail;
                    report.reasons.push(format!(
                        "`{}`: worse than the baseline by {:.1} points (CI {:.1} to {:.1}), more than the margin of {:.1} points (p = {:.4}{})",
                        mg.metric,
                        -c.delta * 100.0,
                        -c.ci.high * 100.0,
                        -c.ci.low * 100.0,
                        mg.margin * 100.0,
                        c.p_adjusted,
                        if self.correction == Correction::Holm && idx.len() > 1 { ", Holm-adjusted" } else { "" }
                    ));
                } else if c.ci.low < -mg.margin {
                    report.warnings.push(format!(
                        "`{}`: a drop beyond the margin cannot be ruled out (CI low {:.1} points); this run detects drops of {:.1} points with 80% power",
                        mg.metric,
                        c.ci.low * 100.0,
                        c.mde * 100.0
                    ));
                }
            }
        }

        // Must-pass cases.
        let extra: std::collections::HashSet<&str> =
            self.must_pass.iter().map(String::as_str).collect();
        for case in &current.cases {
            if !(case.must_pass || extra.contains(case.id.as_str())) {
                continue;
            }
            for gm in &self.metrics {
                match case.status(&gm.metric) {
                    Status::Fail => {
                        report.must_pass_failures.push(MustPassFailure {
                            case: case.id.clone(),
                            metric: gm.metric.clone(),
                            status: Status::Fail,
                        });
                        report.reasons.push(format!(
                            "must-pass case `{}` failed `{}`",
                            case.id, gm.metric
                        ));
                    }
                    Status::Error => {
                        report.must_pass_failures.push(MustPassFailure {
                            case: case.id.clone(),
                            metric: gm.metric.clone(),
                            status: Status::Error,
                        });
                        report.reasons.push(format!(
                            "must-pass case `{}` could not be judged on `{}` (ERROR)",
                            case.id, gm.metric
                        ));
                    }
                    Status::Pass => {}
                }
            }
        }
        for id in &self.must_pass {
            if !current.cases.iter().any(|c| &c.id == id) {
                report
                    .warnings
                    .push(format!("must-pass case `{id}` is not in the dataset"));
            }
        }

        let any_fail = report.metrics.iter().any(|m| m.verdict == Verdict::Fail)
            || report
                .must_pass_failures
                .iter()
                .any(|f| f.status == Status::Fail);
        let any_inconclusive = report
            .metrics
            .iter()
            .any(|m| m.verdict == Verdict::Inconclusive)
            || report
                .must_pass_failures
                .iter()
                .any(|f| f.status == Status::Error);
        report.outcome = if any_fail {
            GateOutcome::Fail
        } else if any_inconclusive {
            GateOutcome::Inconclusive
        } else {
            GateOutcome::Pass
        };
        Ok(report)
    }

    fn compare(
        &self,
        current: &RunFile,
        baseline: &RunFile,
        gm: &GatedMetric,
    ) -> Result<Comparison> {
        let base: HashMap<&str, &crate::run::CaseResult> =
            baseline.cases.iter().map(|c| (c.id.as_str(), c)).collect();
        let mut deltas = Vec::new();
        let mut cluster_names: Vec<Option<&str>> = Vec::new();
        let mut flipped = Vec::new();
        let (mut b_count, mut c_count) = (0u64, 0u64);
        let mut binary = current.repeats == 1 && baseline.repeats == 1;
        let (mut unpaired_current, mut base_sum) = (0usize, 0.0);
        let mut paired_ids = std::collections::HashSet::new();
        for case in &current.cases {
            let Some(bcase) = base.get(case.id.as_str()) else {
                unpaired_current += 1;
                continue;
            };
            let (Some(cm), Some(bm)) = (case.metric(&gm.metric), bcase.metric(&gm.metric)) else {
                continue;
            };
            paired_ids.insert(case.id.as_str());
            if cm.judged != 1 || bm.judged != 1 {
                binary = false;
            }
            deltas.push(cm.pass_fraction - bm.pass_fraction);
            base_sum += bm.pass_fraction;
            cluster_names.push(case.cluster.as_deref().or(bcase.cluster.as_deref()));
            let (before, after) = (bcase.status(&gm.metric), case.status(&gm.metric));
            if before != after {
                flipped.push(Flip {
                    case: case.id.clone(),
                    before,
                    after,
                    before_score: bm.mean_score,
                    after_score: cm.mean_score,
                });
            }
            if bm.pass_fraction >= 1.0 && cm.pass_fraction <= 0.0 {
                b_count += 1;
            } else if bm.pass_fraction <= 0.0 && cm.pass_fraction >= 1.0 {
                c_count += 1;
            }
        }
        let unpaired_baseline = baseline.cases.len().saturating_sub(paired_ids.len());
        let n = deltas.len();
        if n == 0 {
            return Err(EvalError::GateRefused(format!(
                "no case of `{}` can be paired with the baseline (no shared case ids with judged samples)",
                gm.metric
            )));
        }
        let clustered = cluster_names.iter().any(Option::is_some);
        let clusters: Option<Vec<usize>> = clustered.then(|| {
            let mut ids: HashMap<String, usize> = HashMap::new();
            cluster_names
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    // Cases without a cluster are their own cluster.
                    let key = c.map_or_else(|| format!("\u{0}case{i}"), str::to_owned);
                    let next = ids.len();
                    *ids.entry(key).or_insert(next)
                })
                .collect()
        });
        let n_clusters = clusters
            .as_ref()
            .map(|c| c.iter().copied().max().map_or(0, |m| m + 1));
        let (delta, sd_delta) = mean_sd(&deltas);
        let alpha = 1.0 - self.confidence;
        let z_two = normal_quantile(1.0 - alpha / 2.0);
        let (method, se, ci, p_value) = if binary && !clustered {
            // Agresti–Min adjustment: half a case added to each cell of the paired table,
            // so that few (or no) discordant pairs do not make the standard error zero.
            let (b, c) = (b_count as f64 + 0.5, c_count as f64 + 0.5);
            let nf = n as f64 + 2.0;
            let adj = (c - b) / nf;
            let se = (((b + c) / nf - adj * adj).max(0.0) / nf).sqrt();
            let p = if gm.margin == 0.0 {
                // Exact one-sided McNemar: P(X >= b | b + c, 1/2).
                one_sided_mcnemar(b_count, c_count)
            } else {
                normal_cdf((adj + gm.margin) / se)
            };
            (
                Method::McNemar,
                se,
                Interval {
                    low: adj - z_two * se,
                    high: adj + z_two * se,
                },
                p,
            )
        } else {
            let boot = paired_bootstrap(
                &deltas,
                clusters.as_deref(),
                self.bootstrap_samples,
                self.seed,
            );
            let (_, se) = mean_sd(&boot);
            let not_worse = boot.iter().filter(|d| **d >= -gm.margin).count();
            let p = (not_worse as f64 + 1.0) / (boot.len() as f64 + 1.0);
            let ci = Interval {
                low: quantile(&boot, alpha / 2.0),
                high: quantile(&boot, 1.0 - alpha / 2.0),
            };
            (
                if clustered {
                    Method::ClusterBootstrap
                } else {
                    Method::PairedBootstrap
                },
                se,
                ci,
                p,
            )
        };
        let mde = gm.margin + minimum_detectable_effect(se, self.confidence, self.power);
        flipped.sort_by(|a, b| a.case.cmp(&b.case));
        Ok(Comparison {
            method,
            pairs: n,
            clusters: n_clusters,
            baseline_pass_rate: base_sum / n as f64,
            delta,
            ci,
            sd_delta,
            se,
            p_value,
            p_adjusted: p_value,
            mde,
            pass_to_fail: b_count,
            fail_to_pass: c_count,
            mcnemar_p: binary.then(|| mcnemar_exact(b_count, c_count)),
            unpaired_current,
            unpaired_baseline,
            flipped,
        })
    }
}

fn one_sided_mcnemar(b: u64, c: u64) -> f64 {
    // P(X >= b) for X ~ Bin(b + c, 1/2), which equals P(X <= c).
    if b + c == 0 {
        return 1.0;
    }
    if b <= c {
        // At least half: the two-sided tail bound is already ≥ 0.5.
        return (1.0 - mcnemar_exact(b, c) / 2.0).clamp(0.5, 1.0);
    }
    (mcnemar_exact(b, c) / 2.0).min(1.0)
}

/// The gate's overall decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum GateOutcome {
    /// No regression beyond the margins, floors met, must-pass cases passed.
    Pass,
    /// A regression, a floor or a must-pass case failed.
    Fail,
    /// The gate cannot decide (too many ERRORs, a must-pass case could not be judged).
    Inconclusive,
}

impl GateOutcome {
    /// The CLI exit code: 0 pass, 1 fail, 2 inconclusive (a runtime problem).
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Pass => 0,
            Self::Fail => 1,
            Self::Inconclusive => 2,
        }
    }
}

/// One metric's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Verdict {
    /// Passed.
    Pass,
    /// Failed.
    Fail,
    /// Could not be decided.
    Inconclusive,
}

/// How a comparison was computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Method {
    /// Paired pass/fail table (one repeat, no clusters).
    McNemar,
    /// Paired bootstrap over cases.
    PairedBootstrap,
    /// Paired bootstrap over clusters.
    ClusterBootstrap,
}

impl Method {
    /// A human-readable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::McNemar => "paired McNemar",
            Self::PairedBootstrap => "paired bootstrap",
            Self::ClusterBootstrap => "cluster bootstrap",
        }
    }
}

/// The gate report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GateReport {
    /// The decision.
    pub outcome: GateOutcome,
    /// The confidence used.
    pub confidence: f64,
    /// The baseline compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_run_id: Option<String>,
    /// Per-metric details.
    pub metrics: Vec<MetricGate>,
    /// Must-pass cases that failed or could not be judged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub must_pass_failures: Vec<MustPassFailure>,
    /// Why the gate failed or is inconclusive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// Things worth a look that do not change the decision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One gated metric's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MetricGate {
    /// The metric.
    pub metric: String,
    /// δ.
    pub margin: f64,
    /// The floor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_pass_rate: Option<f64>,
    /// The pass rate of this run.
    pub pass_rate: f64,
    /// Its Wilson interval (95%).
    pub pass_rate_ci: Interval,
    /// Cases with a verdict.
    pub judged_cases: usize,
    /// ERROR samples.
    pub errors: usize,
    /// ERROR samples over all samples.
    pub error_rate: f64,
    /// Whether the floor is met (absent without a floor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor_ok: Option<bool>,
    /// The comparison with the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Comparison>,
    /// The verdict.
    pub verdict: Verdict,
}

/// A paired comparison with the baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Comparison {
    /// How it was computed.
    pub method: Method,
    /// Cases paired.
    pub pairs: usize,
    /// Clusters, when clustered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<usize>,
    /// The baseline's pass rate over the paired cases.
    pub baseline_pass_rate: f64,
    /// Mean difference (candidate − baseline) of the per-case pass fractions.
    pub delta: f64,
    /// Two-sided confidence interval of the difference.
    pub ci: Interval,
    /// Standard deviation of the per-case differences.
    pub sd_delta: f64,
    /// Standard error of the mean difference.
    pub se: f64,
    /// p-value of "no worse than −δ" (small = confidently worse than the margin).
    pub p_value: f64,
    /// After Holm's correction.
    pub p_adjusted: f64,
    /// The smallest true drop the gate catches with the configured power: δ + (z₁₋α +
    /// z_power)·SE.
    pub mde: f64,
    /// Cases that went pass → fail (all repeats).
    pub pass_to_fail: u64,
    /// Cases that went fail → pass (all repeats).
    pub fail_to_pass: u64,
    /// McNemar's exact two-sided p-value of "no change" (one repeat only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcnemar_p: Option<f64>,
    /// Cases of this run absent from the baseline.
    pub unpaired_current: usize,
    /// Cases of the baseline absent from (or not judged in) this run.
    pub unpaired_baseline: usize,
    /// Cases whose status changed.
    pub flipped: Vec<Flip>,
}

/// A case whose status changed from the baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Flip {
    /// The case.
    pub case: String,
    /// Status in the baseline.
    pub before: Status,
    /// Status now.
    pub after: Status,
    /// Mean score in the baseline.
    pub before_score: f64,
    /// Mean score now.
    pub after_score: f64,
}

/// A must-pass case that did not pass.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MustPassFailure {
    /// The case.
    pub case: String,
    /// The metric.
    pub metric: String,
    /// Fail or error.
    pub status: Status,
}
