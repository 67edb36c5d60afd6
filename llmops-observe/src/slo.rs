//! Service-level objectives over sliding windows, with multi-window burn-rate rules.
//!
//! An [`SloConfig`] (`[[slo]]` in TOML) sets targets for one model — the requests whose
//! `model` matches (`"*"` for all):
//!
//! - `ttft_p95_ms`: 95% of successful requests get their first chunk within this many
//!   milliseconds (a complete answer's first chunk is its end). The error budget is the 5% of
//!   requests allowed to be slower.
//! - `error_rate`: at most this share of requests fail. The budget is that share.
//!
//! The *burn rate* over a window is the bad share observed there divided by the budget: 1
//! means spending the budget exactly, 14.4 means spending it 14.4 times too fast. A
//! [`BurnRateRule`] fires when the burn rate is at least `factor` over **both** a long and a
//! short window (the multi-window method of the Google SRE workbook): the long window proves
//! the problem is real, the short one that it is still happening — so the alert resolves
//! soon after recovery, without waiting for the long window to drain.
//! A short window with no requests is no evidence of recovery: a firing alert then stays
//! firing while the long window still burns.
//!
//! Default rules for an SLO with `window_s = W`: `critical` at 14.4× over W and W/12, and
//! `warning` at 1× (the objective itself is breached) over W and W/12.

use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use crate::alert::{Alert, Severity};
use crate::record::RequestRecord;
use crate::window::{Buckets, Counts};

/// The latency objective's quantile: p95 leaves 5% of requests as budget.
const TTFT_BUDGET: f64 = 0.05;

/// One `[[slo]]` entry.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SloConfig {
    /// The model (as clients name it) the objective covers; `"*"` for every model.
    pub model: String,
    /// p95 time-to-first-chunk target in milliseconds.
    #[serde(default)]
    pub ttft_p95_ms: Option<u64>,
    /// Highest acceptable share of failed requests (`0.01` = 1%).
    #[serde(default)]
    pub error_rate: Option<f64>,
    /// The objective's window in seconds (default 300).
    #[serde(default = "default_window_s")]
    pub window_s: u64,
    /// Requests needed in the long window before a rule may fire (default 10).
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// Burn-rate rules; the defaults described in the module docs when absent.
    #[serde(default)]
    pub burn_rates: Option<Vec<BurnRateRule>>,
}

fn default_window_s() -> u64 {
    300
}

fn default_min_requests() -> u64 {
    10
}

impl SloConfig {
    /// An objective for `model` with a 300 s window and no targets yet.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            ttft_p95_ms: None,
            error_rate: None,
            window_s: default_window_s(),
            min_requests: default_min_requests(),
            burn_rates: None,
        }
    }

    /// Sets the p95 time-to-first-chunk target (builder style).
    #[must_use]
    pub fn ttft_p95_ms(mut self, ms: u64) -> Self {
        self.ttft_p95_ms = Some(ms);
        self
    }

    /// Sets the error-rate target (builder style).
    #[must_use]
    pub fn error_rate(mut self, rate: f64) -> Self {
        self.error_rate = Some(rate);
        self
    }

    /// Sets the window (builder style).
    #[must_use]
    pub fn window_s(mut self, secs: u64) -> Self {
        self.window_s = secs;
        self
    }

    /// Sets the minimum request count (builder style).
    #[must_use]
    pub fn min_requests(mut self, n: u64) -> Self {
        self.min_requests = n;
        self
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if self.window_s == 0 {
            return Err(format!(
                "slo for {:?}: window_s must be positive",
                self.model
            ));
        }
        if let Some(r) = self.error_rate
            && !(r > 0.0 && r < 1.0)
        {
            return Err(format!(
                "slo for {:?}: error_rate must be in (0, 1), got {r}",
                self.model
            ));
        }
        if self.ttft_p95_ms.is_none() && self.error_rate.is_none() {
            return Err(format!(
                "slo for {:?}: set ttft_p95_ms, error_rate or both",
                self.model
            ));
        }
        for r in self.rules() {
            if r.short_s == 0 || r.short_s > r.long_s || r.factor.is_nan() || r.factor <= 0.0 {
                return Err(format!(
                    "slo for {:?}: a burn-rate rule needs 0 < short_s <= long_s and factor > 0",
                    self.model
                ));
            }
        }
        Ok(())
    }

    /// The burn-rate rules in force.
    pub fn rules(&self) -> Vec<BurnRateRule> {
        match &self.burn_rates {
            Some(r) => r.clone(),
            None => {
                let long = self.window_s;
                let short = (self.window_s / 12).max(1);
                vec![
                    BurnRateRule {
                        long_s: long,
                        short_s: short,
                        factor: 14.4,
                        severity: Severity::Critical,
                    },
                    BurnRateRule {
                        long_s: long,
                        short_s: short,
                        factor: 1.0,
                        severity: Severity::Warning,
                    },
                ]
            }
        }
    }
}

/// Fire when the burn rate is at least `factor` over both windows.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BurnRateRule {
    /// The long window, seconds.
    pub long_s: u64,
    /// The short window, seconds.
    pub short_s: u64,
    /// The burn-rate threshold.
    pub factor: f64,
    /// The alert's severity.
    pub severity: Severity,
}

/// Tracks one SLO's windows.
#[derive(Debug)]
pub struct SloTracker {
    config: SloConfig,
    rules: Vec<BurnRateRule>,
    buckets: Buckets<Counts>,
    /// Whether each (rule, objective) fired at the last evaluation.
    firing: Vec<[bool; 2]>,
}

/// The state of one objective under one rule, as of an evaluation.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct BurnStatus {
    /// `ttft_p95` or `error_rate`.
    pub objective: &'static str,
    /// The rule evaluated.
    pub rule: BurnRateRule,
    /// Burn rate over the long window.
    pub long_burn: f64,
    /// Burn rate over the short window.
    pub short_burn: f64,
    /// Requests in the long window.
    pub long_requests: u64,
    /// Whether the rule's condition holds.
    pub firing: bool,
}

impl SloTracker {
    /// A tracker for `config` (validate it first).
    pub fn new(config: SloConfig) -> Self {
        let rules = config.rules();
        let shortest = rules
            .iter()
            .map(|r| r.short_s)
            .min()
            .unwrap_or(config.window_s)
            .max(1);
        let longest = rules
            .iter()
            .map(|r| r.long_s)
            .max()
            .unwrap_or(config.window_s);
        let width = Duration::from_millis((shortest * 1000 / 5).max(100));
        let buckets = Buckets::new(Instant::now(), width, Duration::from_secs(longest));
        let firing = vec![[false; 2]; rules.len()];
        Self {
            config,
            rules,
            buckets,
            firing,
        }
    }

    /// The objective.
    pub fn config(&self) -> &SloConfig {
        &self.config
    }

    /// Whether `record` counts toward this objective.
    pub fn matches(&self, record: &RequestRecord) -> bool {
        self.config.model == "*" || *record.model == *self.config.model
    }

    /// Counts a finished request.
    pub fn observe(&mut self, record: &RequestRecord) {
        if !self.matches(record) {
            return;
        }
        let mut c = Counts {
            total: 1,
            ..Counts::default()
        };
        if record.is_error() {
            c.errors = 1;
        } else if !record.dropped {
            c.ok = 1;
            if let (Some(target), Some(t)) = (self.config.ttft_p95_ms, record.time_to_first_chunk)
                && t > Duration::from_millis(target)
            {
                c.slow = 1;
            }
        }
        self.buckets.add(record.at, c);
    }

    /// Evaluates every rule for every objective at `now`.
    pub fn evaluate(&mut self, now: Instant) -> Vec<BurnStatus> {
        self.buckets.prune(now);
        let mut out = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let long = self.buckets.sum(now, Duration::from_secs(rule.long_s));
            let short = self.buckets.sum(now, Duration::from_secs(rule.short_s));
            if self.config.ttft_p95_ms.is_some() {
                let burn = |c: &Counts| ratio(c.slow, c.ok) / TTFT_BUDGET;
                let st = self.status(
                    "ttft_p95",
                    rule,
                    (burn(&long), long.ok),
                    (burn(&short), short.ok),
                    self.firing[i][0],
                );
                self.firing[i][0] = st.firing;
                out.push(st);
            }
            if let Some(budget) = self.config.error_rate {
                let burn = |c: &Counts| ratio(c.errors, c.total) / budget;
                let st = self.status(
                    "error_rate",
                    rule,
                    (burn(&long), long.total),
                    (burn(&short), short.total),
                    self.firing[i][1],
                );
                self.firing[i][1] = st.firing;
                out.push(st);
            }
        }
        out
    }

    /// A rule holds when both windows burn at least `factor` and the long window has
    /// `min_requests`. A short window without requests is no evidence either way: a firing
    /// alert stays firing (while the long window still burns) instead of resolving for lack
    /// of traffic.
    fn status(
        &self,
        objective: &'static str,
        rule: &BurnRateRule,
        (long_burn, long_n): (f64, u64),
        (short_burn, short_n): (f64, u64),
        was_firing: bool,
    ) -> BurnStatus {
        let long_ok = long_n >= self.config.min_requests && long_burn >= rule.factor;
        let short_ok = if short_n == 0 {
            was_firing
        } else {
            short_burn >= rule.factor
        };
        BurnStatus {
            objective,
            rule: rule.clone(),
            long_burn,
            short_burn,
            long_requests: long_n,
            firing: long_ok && short_ok,
        }
    }

    /// The alert for `status` (rule `slo_burn`, scoped by model, objective and severity).
    pub fn alert(&self, status: &BurnStatus) -> Alert {
        let c = &self.config;
        let target = match status.objective {
            "ttft_p95" => format!("p95 TTFT <= {} ms", c.ttft_p95_ms.unwrap_or_default()),
            _ => format!(
                "error rate <= {:.2}%",
                c.error_rate.unwrap_or_default() * 100.0
            ),
        };
        Alert::new(
            "slo_burn",
            status.rule.severity,
            format!(
                "SLO {target} for model {} burning {:.1}x budget over {}s ({:.1}x over {}s)",
                c.model,
                status.long_burn,
                status.rule.long_s,
                status.short_burn,
                status.rule.short_s
            ),
        )
        .with_scope("model", c.model.clone())
        .with_scope("objective", status.objective)
        .with_scope("severity", status.rule.severity.as_str())
        .with_detail("burn_rate_long", round3(status.long_burn))
        .with_detail("burn_rate_short", round3(status.short_burn))
        .with_detail("factor", status.rule.factor)
        .with_detail("long_window_s", status.rule.long_s)
        .with_detail("short_window_s", status.rule.short_s)
        .with_detail("requests", status.long_requests)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ttft_ms: u64, error: bool) -> RequestRecord {
        let mut r = RequestRecord::success("chat", Duration::from_millis(ttft_ms));
        if error {
            r = r.with_error(llmops_core::ErrorKind::ServerError);
        }
        r
    }

    #[tokio::test(start_paused = true)]
    async fn slow_traffic_burns_and_recovery_clears_the_short_window() {
        let mut t = SloTracker::new(SloConfig::new("chat").ttft_p95_ms(800).window_s(60));
        for _ in 0..30 {
            t.observe(&rec(2000, false));
            tokio::time::advance(Duration::from_secs(2)).await;
        }
        let st = t.evaluate(Instant::now());
        assert!(st.iter().all(|s| s.firing), "{st:?}");
        for _ in 0..10 {
            t.observe(&rec(10, false));
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let st = t.evaluate(Instant::now());
        assert!(
            st.iter().all(|s| !s.firing),
            "short window recovered: {st:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_short_window_does_not_resolve_a_firing_alert() {
        let mut t = SloTracker::new(SloConfig::new("chat").error_rate(0.01).window_s(60));
        for _ in 0..20 {
            t.observe(&rec(10, true));
        }
        assert!(t.evaluate(Instant::now()).iter().all(|s| s.firing));
        // No traffic for 10 s: the short window (5 s) is empty, the long one still burns.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(
            t.evaluate(Instant::now()).iter().all(|s| s.firing),
            "no evidence of recovery"
        );
        // The long window drains: resolved.
        tokio::time::advance(Duration::from_secs(70)).await;
        assert!(t.evaluate(Instant::now()).iter().all(|s| !s.firing));
    }

    #[tokio::test(start_paused = true)]
    async fn too_few_requests_never_fire() {
        let mut t = SloTracker::new(SloConfig::new("chat").error_rate(0.01).window_s(60));
        for _ in 0..5 {
            t.observe(&rec(10, true));
        }
        assert!(t.evaluate(Instant::now()).iter().all(|s| !s.firing));
    }

    #[test]
    fn invalid_configs_are_refused() {
        assert!(SloConfig::new("m").validate().is_err(), "no target");
        assert!(SloConfig::new("m").error_rate(1.5).validate().is_err());
        assert!(
            SloConfig::new("m")
                .error_rate(0.01)
                .window_s(0)
                .validate()
                .is_err()
        );
        assert!(SloConfig::new("m").error_rate(0.01).validate().is_ok());
    }
}
