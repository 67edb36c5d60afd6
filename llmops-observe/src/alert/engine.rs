//! The rule engine: SLO burn, error rate, cost per hour (global and per tenant, threshold and
//! spike against a trailing baseline) and budgets nearly exhausted.
//!
//! The engine runs as one background task. Finished requests reach it through an
//! [`EngineSink`] (a [`RecordSink`] that only `try_send`s onto a bounded queue, counting what
//! it drops); budget levels through [`EngineHandle::report_budget`]. The engine takes what is
//! queued every [`DRAIN_INTERVAL`] rather than being woken by each record. Every
//! `eval_interval` it evaluates the rules, fires the alerts whose condition holds and resolves the ones it
//! fired before whose condition stopped holding.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Alert, AlertHub, Severity};
use crate::labels::LabelLimiter;
use crate::record::{RecordSink, RequestRecord};
use crate::semconv::{label, metric};
use crate::slo::{SloConfig, SloTracker, round3};
use crate::window::{Buckets, Counts};

/// `[alerts.error_rate]`: fire when a model's error share over the window is above the
/// threshold.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ErrorRateConfig {
    /// The highest acceptable error share (`0.05` = 5%).
    pub threshold: f64,
    /// The window in seconds (default 300).
    #[serde(default = "default_window")]
    pub window_s: u64,
    /// Requests needed in the window before the rule may fire (default 20).
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// The alert's severity (default `error`).
    #[serde(default = "default_error_severity")]
    pub severity: Severity,
}

/// `[alerts.cost]`: spend per hour above a threshold, globally or per tenant, or a spike
/// against the trailing baseline.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CostAlertConfig {
    /// Fire when the whole gateway spends more than this many USD per hour.
    #[serde(default)]
    pub max_usd_per_hour: Option<f64>,
    /// Fire when one tenant spends more than this many USD per hour.
    #[serde(default)]
    pub tenant_max_usd_per_hour: Option<f64>,
    /// Fire when a tenant's rate is at least this many times its trailing baseline.
    #[serde(default)]
    pub spike_factor: Option<f64>,
    /// The window the current rate is measured over, seconds (default 300).
    #[serde(default = "default_window")]
    pub window_s: u64,
    /// The trailing baseline before that window, seconds (default 3600).
    #[serde(default = "default_baseline")]
    pub baseline_s: u64,
    /// Baselines below this many USD per hour never count as a spike (default 0.01).
    #[serde(default = "default_min_baseline")]
    pub min_baseline_usd_per_hour: f64,
    /// The alert's severity (default `warning`).
    #[serde(default = "default_warning_severity")]
    pub severity: Severity,
}

/// `[alerts.budget]`: fire when a budget scope's spend reaches this share of its limit.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BudgetAlertConfig {
    /// Spend / limit at which to fire (default 0.9).
    #[serde(default = "default_budget_threshold")]
    pub threshold: f64,
    /// The alert's severity (default `warning`).
    #[serde(default = "default_warning_severity")]
    pub severity: Severity,
}

fn default_window() -> u64 {
    300
}
fn default_baseline() -> u64 {
    3600
}
fn default_min_requests() -> u64 {
    20
}
fn default_min_baseline() -> f64 {
    0.01
}
fn default_budget_threshold() -> f64 {
    0.9
}
fn default_error_severity() -> Severity {
    Severity::Error
}
fn default_warning_severity() -> Severity {
    Severity::Warning
}

impl ErrorRateConfig {
    /// A rule firing above `threshold` with the defaults.
    pub fn new(threshold: f64) -> Self {
        Self {
            threshold,
            window_s: default_window(),
            min_requests: default_min_requests(),
            severity: default_error_severity(),
        }
    }
}

impl Default for CostAlertConfig {
    fn default() -> Self {
        Self {
            max_usd_per_hour: None,
            tenant_max_usd_per_hour: None,
            spike_factor: None,
            window_s: default_window(),
            baseline_s: default_baseline(),
            min_baseline_usd_per_hour: default_min_baseline(),
            severity: default_warning_severity(),
        }
    }
}

impl Default for BudgetAlertConfig {
    fn default() -> Self {
        Self {
            threshold: default_budget_threshold(),
            severity: default_warning_severity(),
        }
    }
}

/// What the engine evaluates. Build with [`EngineConfig::default`] and the `with_*` methods.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EngineConfig {
    /// SLOs.
    pub slos: Vec<SloConfig>,
    /// The error-rate rule.
    pub error_rate: Option<ErrorRateConfig>,
    /// The cost rules.
    pub cost: Option<CostAlertConfig>,
    /// The budget rule.
    pub budget: Option<BudgetAlertConfig>,
    /// How often rules are evaluated (default 1 s).
    pub eval_interval: Duration,
    /// Capacity of the record queue (default 8192).
    pub queue_capacity: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            slos: Vec::new(),
            error_rate: None,
            cost: None,
            budget: None,
            eval_interval: Duration::from_secs(1),
            queue_capacity: 8192,
        }
    }
}

impl EngineConfig {
    /// Adds an SLO.
    #[must_use]
    pub fn with_slo(mut self, slo: SloConfig) -> Self {
        self.slos.push(slo);
        self
    }
    /// Sets the error-rate rule.
    #[must_use]
    pub fn with_error_rate(mut self, c: ErrorRateConfig) -> Self {
        self.error_rate = Some(c);
        self
    }
    /// Sets the cost rules.
    #[must_use]
    pub fn with_cost(mut self, c: CostAlertConfig) -> Self {
        self.cost = Some(c);
        self
    }
    /// Sets the budget rule.
    #[must_use]
    pub fn with_budget(mut self, c: BudgetAlertConfig) -> Self {
        self.budget = Some(c);
        self
    }
    /// Sets the evaluation interval.
    #[must_use]
    pub fn with_eval_interval(mut self, d: Duration) -> Self {
        self.eval_interval = d.max(Duration::from_millis(10));
        self
    }
    /// Sets the record queue's capacity.
    #[must_use]
    pub fn with_queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }
}

enum Msg {
    Record(Box<RequestRecord>),
    Budget {
        scope: String,
        spent_usd: f64,
        limit_usd: f64,
    },
}

/// Feeds the engine; cheap to clone. Also the [`RecordSink`] to give the observe layer.
#[derive(Clone, Debug)]
pub struct EngineHandle {
    tx: mpsc::Sender<Msg>,
    dropped: Arc<AtomicU64>,
    hub: AlertHub,
}

/// How often the engine takes the records queued since it last looked. The queue must hold
/// what arrives meanwhile: the default capacity, 8,192, is 160,000 requests per second.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(50);

/// The engine's record sink (an alias kept for readability at wiring sites).
pub type EngineSink = EngineHandle;

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl EngineHandle {
    fn send(&self, msg: Msg) {
        if self.tx.try_send(msg).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(metric::DROPPED_EVENTS, label::QUEUE => "alert_engine").increment(1);
        }
    }

    /// Reports a budget scope's spend and limit (from the cost layer). Never blocks.
    pub fn report_budget(&self, scope: impl Into<String>, spent_usd: f64, limit_usd: f64) {
        let scope = scope.into();
        if limit_usd > 0.0 {
            metrics::gauge!(metric::BUDGET_UTILIZATION, label::SCOPE => scope.clone())
                .set(spent_usd / limit_usd);
        }
        self.send(Msg::Budget {
            scope,
            spent_usd,
            limit_usd,
        });
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The hub the engine fires alerts on.
    pub fn hub(&self) -> &AlertHub {
        &self.hub
    }
}

impl RecordSink for EngineHandle {
    fn record(&self, record: &RequestRecord) {
        self.send(Msg::Record(Box::new(record.clone())));
    }
}

/// Starts the engine on the current tokio runtime, firing on `hub`.
///
/// # Panics
///
/// Outside a tokio runtime.
pub fn start(config: EngineConfig, hub: AlertHub) -> EngineHandle {
    let (tx, rx) = mpsc::channel(config.queue_capacity);
    let handle = EngineHandle {
        tx,
        dropped: Arc::new(AtomicU64::new(0)),
        hub: hub.clone(),
    };
    let engine = Engine::new(config, hub);
    tokio::spawn(engine.run(rx));
    handle
}

struct Engine {
    config: EngineConfig,
    hub: AlertHub,
    slos: Vec<SloTracker>,
    per_model: HashMap<Arc<str>, Buckets<Counts>>,
    models: LabelLimiter,
    cost_total: Buckets<f64>,
    cost_tenant: HashMap<Arc<str>, Buckets<f64>>,
    tenants: LabelLimiter,
    budgets: BTreeMap<String, (f64, f64)>,
    active: HashSet<String>,
    origin: Instant,
}

impl Engine {
    fn new(config: EngineConfig, hub: AlertHub) -> Self {
        let origin = Instant::now();
        let slos = config.slos.iter().cloned().map(SloTracker::new).collect();
        let cost_keep = config.cost.as_ref().map_or(Duration::from_secs(3600), |c| {
            Duration::from_secs(c.window_s + c.baseline_s)
        });
        Self {
            slos,
            per_model: HashMap::new(),
            models: LabelLimiter::new(256),
            cost_total: Buckets::new(origin, cost_bucket(&config), cost_keep),
            cost_tenant: HashMap::new(),
            tenants: LabelLimiter::new(1024),
            budgets: BTreeMap::new(),
            active: HashSet::new(),
            origin,
            config,
            hub,
        }
    }

    /// Drains the queue every [`DRAIN_INTERVAL`] (or every `eval_interval`, if shorter) and
    /// evaluates the rules every `eval_interval`, until every handle is dropped.
    ///
    /// The engine never waits on the queue itself: a task waiting in `recv` is woken by every
    /// record, which on a busy gateway is one cross-thread wake-up (a system call on the
    /// request's thread, a context switch on the engine's) per request. Records wait in the
    /// queue instead, and are taken in batches.
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let every = self.config.eval_interval;
        let mut drain = tokio::time::interval(DRAIN_INTERVAL.min(every));
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_eval = Instant::now();
        loop {
            drain.tick().await;
            loop {
                match rx.try_recv() {
                    Ok(m) => self.apply(m),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            let now = Instant::now();
            if now >= next_eval {
                self.evaluate(now);
                next_eval += every;
                if next_eval <= now {
                    next_eval = now + every;
                }
            }
        }
    }

    fn apply(&mut self, msg: Msg) {
        match msg {
            Msg::Record(r) => self.observe(&r),
            Msg::Budget {
                scope,
                spent_usd,
                limit_usd,
            } => {
                self.budgets.insert(scope, (spent_usd, limit_usd));
            }
        }
    }

    fn observe(&mut self, r: &RequestRecord) {
        for s in &mut self.slos {
            s.observe(r);
        }
        if let Some(er) = &self.config.error_rate {
            let model = self.models.admit(&r.model);
            let b = self.per_model.entry(model).or_insert_with(|| {
                Buckets::new(
                    self.origin,
                    Duration::from_secs((er.window_s / 30).max(1)),
                    Duration::from_secs(er.window_s),
                )
            });
            b.add(
                r.at,
                Counts {
                    total: 1,
                    errors: u64::from(r.is_error()),
                    ..Counts::default()
                },
            );
        }
        if let (Some(_), Some(c)) = (&self.config.cost, r.cost_usd) {
            self.cost_total.add(r.at, c);
            let tenant = self.tenants.admit(&r.tenant);
            let (width, keep) = (cost_bucket(&self.config), self.cost_keep());
            self.cost_tenant
                .entry(tenant)
                .or_insert_with(|| Buckets::new(self.origin, width, keep))
                .add(r.at, c);
        }
    }

    fn cost_keep(&self) -> Duration {
        self.config
            .cost
            .as_ref()
            .map_or(Duration::from_secs(3600), |c| {
                Duration::from_secs(c.window_s + c.baseline_s)
            })
    }

    fn evaluate(&mut self, now: Instant) {
        let mut holding: Vec<Alert> = Vec::new();
        for s in &mut self.slos {
            for st in s.evaluate(now) {
                if st.firing {
                    holding.push(s.alert(&st));
                }
            }
        }
        if let Some(er) = &self.config.error_rate {
            let window = Duration::from_secs(er.window_s);
            for (model, b) in &mut self.per_model {
                b.prune(now);
                let c = b.sum(now, window);
                if c.total >= er.min_requests && c.total > 0 {
                    let rate = c.errors as f64 / c.total as f64;
                    if rate > er.threshold {
                        holding.push(
                            Alert::new(
                                "error_rate",
                                er.severity,
                                format!(
                                    "model {model}: {:.1}% of {} requests failed in the last {}s (threshold {:.1}%)",
                                    rate * 100.0,
                                    c.total,
                                    er.window_s,
                                    er.threshold * 100.0
                                ),
                            )
                            .with_scope("model", model.to_string())
                            .with_detail("error_rate", round3(rate))
                            .with_detail("threshold", er.threshold)
                            .with_detail("requests", c.total),
                        );
                    }
                }
            }
        }
        if let Some(cc) = self.config.cost.clone() {
            self.evaluate_cost(now, &cc, &mut holding);
        }
        if let Some(bc) = &self.config.budget {
            for (scope, (spent, limit)) in &self.budgets {
                if *limit > 0.0 && spent / limit >= bc.threshold {
                    holding.push(
                        Alert::new(
                            "budget_exhaustion",
                            bc.severity,
                            format!(
                                "budget {scope}: ${spent:.2} of ${limit:.2} spent ({:.0}%)",
                                spent / limit * 100.0
                            ),
                        )
                        .with_scope("scope", scope.clone())
                        .with_detail("spent_usd", *spent)
                        .with_detail("limit_usd", *limit),
                    );
                }
            }
        }

        let mut now_active = HashSet::new();
        for a in holding {
            now_active.insert(a.dedup_key());
            self.hub.fire(a);
        }
        for key in self.active.difference(&now_active) {
            self.hub.resolve_key(key);
        }
        self.active = now_active;
    }

    fn evaluate_cost(&mut self, now: Instant, cc: &CostAlertConfig, holding: &mut Vec<Alert>) {
        let window = Duration::from_secs(cc.window_s);
        let per_hour = 3600.0 / cc.window_s.max(1) as f64;
        self.cost_total.prune(now);
        if let Some(max) = cc.max_usd_per_hour {
            let rate = self.cost_total.sum(now, window) * per_hour;
            if rate > max {
                holding.push(
                    Alert::new(
                        "cost_per_hour",
                        cc.severity,
                        format!(
                            "spend ${rate:.2}/h over the last {}s is above ${max:.2}/h",
                            cc.window_s
                        ),
                    )
                    .with_scope("tenant", "*")
                    .with_detail("usd_per_hour", round3(rate))
                    .with_detail("threshold_usd_per_hour", max),
                );
            }
        }
        let baseline_span = Duration::from_secs(cc.window_s + cc.baseline_s);
        let baseline_per_hour = 3600.0 / cc.baseline_s.max(1) as f64;
        for (tenant, b) in &mut self.cost_tenant {
            b.prune(now);
            let rate = b.sum(now, window) * per_hour;
            if let Some(max) = cc.tenant_max_usd_per_hour
                && rate > max
            {
                holding.push(
                    Alert::new(
                        "tenant_cost_per_hour",
                        cc.severity,
                        format!("tenant {tenant} spends ${rate:.2}/h, above ${max:.2}/h"),
                    )
                    .with_scope("tenant", tenant.to_string())
                    .with_detail("usd_per_hour", round3(rate))
                    .with_detail("threshold_usd_per_hour", max),
                );
            }
            if let Some(factor) = cc.spike_factor {
                // The baseline needs a full history: do not call the first hour a spike.
                if now.saturating_duration_since(self.origin) < baseline_span {
                    continue;
                }
                let base = b.sum_between(now, window, baseline_span) * baseline_per_hour;
                if base >= cc.min_baseline_usd_per_hour && rate >= factor * base {
                    holding.push(
                        Alert::new(
                            "cost_spike",
                            cc.severity,
                            format!(
                                "tenant {tenant} spends ${rate:.2}/h, {:.1}x its trailing ${base:.2}/h",
                                rate / base
                            ),
                        )
                        .with_scope("tenant", tenant.to_string())
                        .with_detail("usd_per_hour", round3(rate))
                        .with_detail("baseline_usd_per_hour", round3(base))
                        .with_detail("factor", factor),
                    );
                }
            }
        }
    }
}

fn cost_bucket(config: &EngineConfig) -> Duration {
    let w = config.cost.as_ref().map_or(300, |c| c.window_s);
    Duration::from_secs((w / 30).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::notify::Dispatcher;

    fn hub() -> AlertHub {
        AlertHub::new(Dispatcher::default())
    }

    #[tokio::test(start_paused = true)]
    async fn error_rate_fires_then_resolves() {
        let hub = hub();
        let h = start(
            EngineConfig::default().with_error_rate(ErrorRateConfig::new(0.1)),
            hub.clone(),
        );
        let scope: BTreeMap<String, String> = [("model".to_owned(), "m".to_owned())].into();
        for i in 0..40 {
            let mut r = RequestRecord::success("m", Duration::from_millis(5));
            if i % 2 == 0 {
                r = r.with_error(llmops_core::ErrorKind::ServerError);
            }
            h.record(&r);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(hub.is_firing("error_rate", &scope));
        tokio::time::sleep(Duration::from_secs(400)).await;
        for _ in 0..40 {
            h.record(&RequestRecord::success("m", Duration::from_millis(5)));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!hub.is_firing("error_rate", &scope));
    }

    #[tokio::test(start_paused = true)]
    async fn tenant_cost_threshold_and_spike() {
        let hub = hub();
        let cost = CostAlertConfig {
            tenant_max_usd_per_hour: Some(100.0),
            spike_factor: Some(5.0),
            window_s: 60,
            baseline_s: 600,
            ..CostAlertConfig::default()
        };
        let h = start(EngineConfig::default().with_cost(cost), hub.clone());
        let scope: BTreeMap<String, String> = [("tenant".to_owned(), "t".to_owned())].into();
        // A steady $0.01 every 6 s = $6/h for 11 minutes: no spike, no threshold.
        for _ in 0..110 {
            h.record(
                &RequestRecord::success("m", Duration::ZERO)
                    .with_tenant("t")
                    .with_cost(0.01),
            );
            tokio::time::sleep(Duration::from_secs(6)).await;
        }
        assert!(!hub.is_firing("cost_spike", &scope));
        // Then $0.10 a second = $360/h: a spike and above the threshold.
        for _ in 0..60 {
            h.record(
                &RequestRecord::success("m", Duration::ZERO)
                    .with_tenant("t")
                    .with_cost(0.1),
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert!(hub.is_firing("cost_spike", &scope));
        assert!(hub.is_firing("tenant_cost_per_hour", &scope));
    }

    #[tokio::test(start_paused = true)]
    async fn budget_nearly_exhausted() {
        let hub = hub();
        let h = start(
            EngineConfig::default().with_budget(BudgetAlertConfig::default()),
            hub.clone(),
        );
        let scope: BTreeMap<String, String> = [("scope".to_owned(), "tenant:a".to_owned())].into();
        h.report_budget("tenant:a", 50.0, 100.0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!hub.is_firing("budget_exhaustion", &scope));
        h.report_budget("tenant:a", 95.0, 100.0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(hub.is_firing("budget_exhaustion", &scope));
    }
}
