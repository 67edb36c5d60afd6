//! The `[[slo]]`, `[alerts.*]` and `[online_eval]` configuration sections, and
//! [`Observability`]: the running engines they start.
//!
//! ```toml
//! [[slo]]
//! model = "chat"
//! ttft_p95_ms = 800
//! error_rate = 0.01
//! window_s = 300
//!
//! [alerts]
//! source = "gateway-eu-1"
//!
//! [alerts.pagerduty]
//! url = "https://events.pagerduty.com/v2/enqueue"
//! routing_key_env = "PD_ROUTING_KEY"
//!
//! [alerts.slack]
//! webhook_url_env = "SLACK_WEBHOOK_URL"
//!
//! [alerts.webhook]
//! url = "http://127.0.0.1:9093/hook"
//!
//! [alerts.error_rate]
//! threshold = 0.05
//!
//! [alerts.cost]
//! tenant_max_usd_per_hour = 50.0
//! spike_factor = 4.0
//!
//! [alerts.budget]
//! threshold = 0.9
//!
//! [online_eval]
//! sample_rate = 0.05
//! ```
//!
//! Secrets (the PagerDuty routing key, the Slack webhook URL) are read from the environment
//! variables the `*_env` keys name; [`ObserveFileConfig::start`] takes the lookup function so
//! tests and embedders can supply them without touching the process environment.

use std::sync::Arc;
use std::time::Duration;

use llmops_core::Evaluator;
use serde::Deserialize;

use crate::alert::AlertHub;
use crate::alert::engine::{
    self, BudgetAlertConfig, CostAlertConfig, EngineConfig, EngineHandle, ErrorRateConfig,
};
use crate::alert::notify::{
    Dispatcher, PAGERDUTY_EVENTS_URL, PagerDutyNotifier, RetryPolicy, SlackNotifier,
    WebhookNotifier,
};
use crate::error::ObserveError;
use crate::layer::{ObserveConfigBuilder, ObserveLayer};
use crate::online_eval::{OnlineEvalConfig, OnlineEvaluator};
use crate::slo::SloConfig;

/// The three sections, for a file of their own. A gateway whose file has other sections too
/// declares `slo`, `alerts` and `online_eval` fields of these types in its own struct.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ObserveFileConfig {
    /// `[[slo]]`.
    #[serde(default)]
    pub slo: Vec<SloConfig>,
    /// `[alerts]`.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// `[online_eval]`.
    #[serde(default)]
    pub online_eval: Option<OnlineEvalConfig>,
}

/// `[alerts]` and its sub-tables.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AlertsConfig {
    /// The event source named in notifications (default `llmops`).
    #[serde(default = "default_source")]
    pub source: String,
    /// Queue capacity per notifier (default 256).
    #[serde(default = "default_queue")]
    pub queue_capacity: usize,
    /// Rule evaluation interval in milliseconds (default 1000).
    #[serde(default = "default_interval")]
    pub eval_interval_ms: u64,
    /// `[alerts.retry]`.
    #[serde(default)]
    pub retry: RetryConfig,
    /// `[alerts.pagerduty]`.
    #[serde(default)]
    pub pagerduty: Option<PagerDutyConfig>,
    /// `[alerts.slack]`.
    #[serde(default)]
    pub slack: Option<SlackConfig>,
    /// `[alerts.webhook]`.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    /// `[alerts.error_rate]`.
    #[serde(default)]
    pub error_rate: Option<ErrorRateConfig>,
    /// `[alerts.cost]`.
    #[serde(default)]
    pub cost: Option<CostAlertConfig>,
    /// `[alerts.budget]`.
    #[serde(default)]
    pub budget: Option<BudgetAlertConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            source: default_source(),
            queue_capacity: default_queue(),
            eval_interval_ms: default_interval(),
            retry: RetryConfig::default(),
            pagerduty: None,
            slack: None,
            webhook: None,
            error_rate: None,
            cost: None,
            budget: None,
        }
    }
}

fn default_source() -> String {
    "llmops".into()
}
fn default_queue() -> usize {
    256
}
fn default_interval() -> u64 {
    1000
}

/// `[alerts.retry]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Attempts in all (default 6).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// First backoff in milliseconds, doubled per attempt (default 1000).
    #[serde(default = "default_backoff")]
    pub initial_backoff_ms: u64,
    /// Longest backoff in milliseconds (default 120000).
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: u64,
}

fn default_attempts() -> u32 {
    6
}
fn default_backoff() -> u64 {
    1000
}
fn default_max_backoff() -> u64 {
    120_000
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_attempts(),
            initial_backoff_ms: default_backoff(),
            max_backoff_ms: default_max_backoff(),
        }
    }
}

/// `[alerts.pagerduty]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PagerDutyConfig {
    /// The Events API v2 endpoint (default PagerDuty's; overridable for tests).
    #[serde(default = "default_pd_url")]
    pub url: String,
    /// The environment variable holding the routing key.
    pub routing_key_env: String,
}

fn default_pd_url() -> String {
    PAGERDUTY_EVENTS_URL.into()
}

/// `[alerts.slack]`: the webhook URL from `webhook_url_env` (preferred: it is a secret) or
/// `webhook_url`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SlackConfig {
    /// The environment variable holding the webhook URL.
    #[serde(default)]
    pub webhook_url_env: Option<String>,
    /// The webhook URL itself.
    #[serde(default)]
    pub webhook_url: Option<String>,
}

/// `[alerts.webhook]`: an Alertmanager-format webhook receiver.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct WebhookConfig {
    /// Where to post.
    pub url: String,
    /// The `receiver` name in the body (default `llmops`).
    #[serde(default = "default_source")]
    pub receiver: String,
    /// `externalURL` / `generatorURL` (e.g. the dashboard).
    #[serde(default)]
    pub external_url: Option<String>,
}

impl ObserveFileConfig {
    /// The sections, as a gateway that parsed them from its own file holds them.
    pub fn new(
        slo: Vec<SloConfig>,
        alerts: AlertsConfig,
        online_eval: Option<OnlineEvalConfig>,
    ) -> Self {
        Self {
            slo,
            alerts,
            online_eval,
        }
    }

    /// Parses the sections from TOML text.
    pub fn from_toml_str(text: &str) -> Result<Self, ObserveError> {
        toml_from_str(text)
    }

    /// Checks every section.
    pub fn validate(&self) -> Result<(), ObserveError> {
        for s in &self.slo {
            s.validate().map_err(ObserveError::Config)?;
        }
        if let Some(o) = &self.online_eval {
            o.validate().map_err(ObserveError::Config)?;
        }
        if let Some(s) = &self.alerts.slack
            && s.webhook_url.is_none()
            && s.webhook_url_env.is_none()
        {
            return Err(ObserveError::Config(
                "alerts.slack needs webhook_url_env or webhook_url".into(),
            ));
        }
        if let Some(e) = &self.alerts.error_rate
            && !(e.threshold > 0.0 && e.threshold < 1.0)
        {
            return Err(ObserveError::Config(
                "alerts.error_rate.threshold must be in (0, 1)".into(),
            ));
        }
        Ok(())
    }

    /// Builds the notifiers (reading secrets through `env`), starts the alert engine and the
    /// online evaluator (with the built-in evaluators plus `evaluators`) on the current tokio
    /// runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(
        &self,
        env: impl Fn(&str) -> Option<String>,
        evaluators: Vec<Arc<dyn Evaluator>>,
    ) -> Result<Observability, ObserveError> {
        self.validate()?;
        let a = &self.alerts;
        let r = &a.retry;
        let mut d = Dispatcher::builder()
            .queue_capacity(a.queue_capacity)
            .retry(RetryPolicy::new(
                r.max_attempts,
                Duration::from_millis(r.initial_backoff_ms),
                Duration::from_millis(r.max_backoff_ms),
            ));
        if let Some(pd) = &a.pagerduty {
            let key = env(&pd.routing_key_env)
                .ok_or_else(|| ObserveError::MissingEnv(pd.routing_key_env.clone()))?;
            d = d.notifier(Arc::new(PagerDutyNotifier::new(&pd.url, key, &a.source)?));
        }
        if let Some(s) = &a.slack {
            let url = match (&s.webhook_url_env, &s.webhook_url) {
                (Some(var), _) => env(var).ok_or_else(|| ObserveError::MissingEnv(var.clone()))?,
                (None, Some(u)) => u.clone(),
                (None, None) => unreachable!("validated"),
            };
            d = d.notifier(Arc::new(SlackNotifier::new(url)?));
        }
        if let Some(w) = &a.webhook {
            let mut n = WebhookNotifier::new(&w.url, &w.receiver)?;
            if let Some(u) = &w.external_url {
                n = n.with_external_url(u);
            }
            d = d.notifier(Arc::new(n));
        }
        let hub = AlertHub::new(d.start());
        let mut ec =
            EngineConfig::default().with_eval_interval(Duration::from_millis(a.eval_interval_ms));
        ec.slos = self.slo.clone();
        ec.error_rate = a.error_rate.clone();
        ec.cost = a.cost.clone();
        ec.budget = a.budget.clone();
        let engine = engine::start(ec, hub.clone());
        let online = self.online_eval.as_ref().map(|o| {
            let mut all = o.builtin_evaluators();
            all.extend(evaluators);
            OnlineEvaluator::start(o.clone(), all, hub.clone())
        });
        Ok(Observability {
            hub,
            engine,
            online,
        })
    }
}

fn toml_from_str(text: &str) -> Result<ObserveFileConfig, ObserveError> {
    toml::from_str(text).map_err(|e| ObserveError::Config(e.to_string()))
}

/// The running engines: the alert hub, the rule engine (a [`RecordSink`](crate::RecordSink))
/// and the online evaluator (a [`Sampler`](crate::Sampler)). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Observability {
    hub: AlertHub,
    engine: EngineHandle,
    online: Option<OnlineEvaluator>,
}

impl Observability {
    /// Adds the engine as a sink and the online evaluator as the sampler to `builder`.
    pub fn wire(&self, builder: ObserveConfigBuilder) -> ObserveConfigBuilder {
        let b = builder.sink(Arc::new(self.engine.clone()));
        match &self.online {
            Some(o) => b.sampler(Arc::new(o.clone())),
            None => b,
        }
    }

    /// An [`ObserveLayer`] wired to the engines, otherwise configured by `builder`.
    pub fn layer(&self, builder: ObserveConfigBuilder) -> ObserveLayer {
        ObserveLayer::new(self.wire(builder).build())
    }

    /// The alert hub.
    pub fn hub(&self) -> &AlertHub {
        &self.hub
    }

    /// The rule engine's handle (for [`EngineHandle::report_budget`]).
    pub fn engine(&self) -> &EngineHandle {
        &self.engine
    }

    /// The online evaluator, when `[online_eval]` is configured.
    pub fn online_eval(&self) -> Option<&OnlineEvaluator> {
        self.online.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTRACT: &str = r#"
[[slo]]
model = "chat"
ttft_p95_ms = 800
error_rate = 0.01
window_s = 300

[alerts.pagerduty]
url = "https://events.pagerduty.com/v2/enqueue"   # overridable for tests
routing_key_env = "PD_ROUTING_KEY"
[alerts.slack]
webhook_url_env = "SLACK_WEBHOOK_URL"
[alerts.webhook]
url = "http://127.0.0.1:9093/hook"

[online_eval]
sample_rate = 0.05
"#;

    #[test]
    fn the_contract_sections_parse() {
        let c = ObserveFileConfig::from_toml_str(CONTRACT).unwrap();
        assert_eq!(c.slo.len(), 1);
        assert_eq!(c.slo[0].ttft_p95_ms, Some(800));
        assert_eq!(c.slo[0].error_rate, Some(0.01));
        assert_eq!(c.slo[0].window_s, 300);
        let pd = c.alerts.pagerduty.as_ref().unwrap();
        assert_eq!(pd.routing_key_env, "PD_ROUTING_KEY");
        assert_eq!(
            c.alerts.slack.as_ref().unwrap().webhook_url_env.as_deref(),
            Some("SLACK_WEBHOOK_URL")
        );
        assert_eq!(
            c.alerts.webhook.as_ref().unwrap().url,
            "http://127.0.0.1:9093/hook"
        );
        assert_eq!(c.online_eval.as_ref().unwrap().sample_rate, 0.05);
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err =
            ObserveFileConfig::from_toml_str("[[slo]]\nmodel = \"m\"\nttft_p95 = 3\n").unwrap_err();
        assert!(err.to_string().contains("ttft_p95"), "{err}");
        assert!(ObserveFileConfig::from_toml_str("[alerts.slack]\nurl = \"x\"\n").is_err());
    }

    #[tokio::test]
    async fn a_missing_secret_is_named() {
        let c = ObserveFileConfig::from_toml_str(CONTRACT).unwrap();
        let err = c.start(|_| None, Vec::new()).unwrap_err();
        assert!(err.to_string().contains("PD_ROUTING_KEY"), "{err}");
    }
}
