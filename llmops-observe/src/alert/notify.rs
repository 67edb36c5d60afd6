//! Notifiers (Slack incoming webhooks, PagerDuty Events API v2, Alertmanager-format webhooks)
//! and the [`Dispatcher`] that delivers to them in the background.
//!
//! Each notifier gets a bounded queue and one worker task. [`Dispatcher::submit`] only
//! `try_send`s: when a queue is full (a receiver is down and retries pile up) the
//! notification is dropped and counted in [`DeliveryStats::dropped`] and in the
//! `llmops.observe.dropped_events{queue="notify"}` counter. A worker retries a delivery on
//! network errors, 429 (honouring `Retry-After`) and 5xx with exponential backoff; other 4xx
//! answers are permanent failures (a bad routing key will not fix itself). One queue per
//! notifier keeps a trigger and its resolve in order.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Alert, AlertStatus, rfc3339};
use crate::error::ObserveError;
use crate::semconv::{label, metric};

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// Worth retrying (network error, 429, 5xx); `retry_after` when the receiver said.
    #[error("retryable delivery failure: {message}")]
    Retryable {
        /// What happened.
        message: String,
        /// How long the receiver asked us to wait.
        retry_after: Option<Duration>,
    },
    /// Not worth retrying (4xx other than 429, a payload the receiver rejects).
    #[error("permanent delivery failure: {0}")]
    Permanent(String),
}

/// Delivers alerts somewhere.
#[async_trait]
pub trait Notifier: Send + Sync + 'static {
    /// A short name for statistics and logs (`slack`, `pagerduty`, `webhook`).
    fn name(&self) -> &str;
    /// Delivers one firing or resolved alert.
    async fn send(&self, alert: &Alert) -> Result<(), DeliveryError>;
}

fn client() -> Result<reqwest::Client, ObserveError> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?)
}

async fn post_json(client: &reqwest::Client, url: &str, body: &Value) -> Result<(), DeliveryError> {
    let resp = client
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(|e| DeliveryError::Retryable {
            // reqwest's message may contain the URL, which is a secret for Slack: keep the kind.
            message: if e.is_timeout() {
                "timeout".to_owned()
            } else if e.is_connect() {
                "connection failed".to_owned()
            } else {
                "request failed".to_owned()
            },
            retry_after: None,
        })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text: String = resp
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    if status.as_u16() == 429 || status.is_server_error() {
        Err(DeliveryError::Retryable {
            message: format!("HTTP {status}: {text}"),
            retry_after,
        })
    } else {
        Err(DeliveryError::Permanent(format!("HTTP {status}: {text}")))
    }
}

/// Posts to a Slack incoming webhook: `text` (the fallback) and one mrkdwn section block.
pub struct SlackNotifier {
    client: reqwest::Client,
    url: String,
}

impl fmt::Debug for SlackNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The webhook URL is a secret.
        f.write_str("SlackNotifier { url: <redacted> }")
    }
}

impl SlackNotifier {
    /// A notifier posting to `webhook_url`.
    pub fn new(webhook_url: impl Into<String>) -> Result<Self, ObserveError> {
        Ok(Self {
            client: client()?,
            url: webhook_url.into(),
        })
    }

    /// The message body for `alert`.
    pub fn payload(alert: &Alert) -> Value {
        let head = match alert.status {
            AlertStatus::Firing => format!("[FIRING:{}] {}", alert.severity, alert.summary),
            _ => format!("[RESOLVED] {}", alert.summary),
        };
        let mut lines = vec![format!("*{head}*"), format!("rule: `{}`", alert.rule)];
        for (k, v) in &alert.scope {
            lines.push(format!("{k}: `{v}`"));
        }
        json!({
            "text": head,
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": lines.join("\n")}}],
        })
    }
}

#[async_trait]
impl Notifier for SlackNotifier {
    fn name(&self) -> &str {
        "slack"
    }
    async fn send(&self, alert: &Alert) -> Result<(), DeliveryError> {
        post_json(&self.client, &self.url, &Self::payload(alert)).await
    }
}

/// Sends PagerDuty Events API v2 events: `trigger` when an alert fires, `resolve` with the
/// same `dedup_key` and routing key when it resolves.
pub struct PagerDutyNotifier {
    client: reqwest::Client,
    url: String,
    routing_key: String,
    source: String,
}

impl fmt::Debug for PagerDutyNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PagerDutyNotifier")
            .field("url", &self.url)
            .field("routing_key", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

/// PagerDuty's Events API v2 endpoint.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

impl PagerDutyNotifier {
    /// A notifier sending to `url` (normally [`PAGERDUTY_EVENTS_URL`]) with `routing_key`,
    /// naming `source` (the gateway's host or name) as the event source.
    pub fn new(
        url: impl Into<String>,
        routing_key: impl Into<String>,
        source: impl Into<String>,
    ) -> Result<Self, ObserveError> {
        Ok(Self {
            client: client()?,
            url: url.into(),
            routing_key: routing_key.into(),
            source: source.into(),
        })
    }

    /// The event body for `alert`.
    pub fn payload(&self, alert: &Alert) -> Value {
        let dedup_key = alert.dedup_key();
        match alert.status {
            AlertStatus::Firing => {
                let mut details = alert.details.clone();
                for (k, v) in &alert.scope {
                    details.insert(k.clone(), Value::String(v.clone()));
                }
                let summary: String = alert.summary.chars().take(1024).collect();
                json!({
                    "routing_key": self.routing_key,
                    "event_action": "trigger",
                    "dedup_key": dedup_key,
                    "client": "llmops",
                    "payload": {
                        "summary": summary,
                        "source": self.source,
                        "severity": alert.severity.as_str(),
                        "timestamp": rfc3339(alert.started_at),
                        "component": "llmops",
                        "group": alert.scope.get("model").cloned().unwrap_or_default(),
                        "class": alert.rule,
                        "custom_details": details,
                    },
                })
            }
            _ => json!({
                "routing_key": self.routing_key,
                "event_action": "resolve",
                "dedup_key": dedup_key,
            }),
        }
    }
}

#[async_trait]
impl Notifier for PagerDutyNotifier {
    fn name(&self) -> &str {
        "pagerduty"
    }
    async fn send(&self, alert: &Alert) -> Result<(), DeliveryError> {
        post_json(&self.client, &self.url, &self.payload(alert)).await
    }
}

/// Posts Alertmanager-format webhook bodies (`version: "4"`), one alert per message, so any
/// receiver written for Alertmanager works unchanged.
#[derive(Debug)]
pub struct WebhookNotifier {
    client: reqwest::Client,
    url: String,
    receiver: String,
    external_url: String,
}

impl WebhookNotifier {
    /// A notifier posting to `url`, naming itself `receiver`.
    pub fn new(url: impl Into<String>, receiver: impl Into<String>) -> Result<Self, ObserveError> {
        Ok(Self {
            client: client()?,
            url: url.into(),
            receiver: receiver.into(),
            external_url: String::new(),
        })
    }

    /// The `externalURL` / `generatorURL` to advertise (builder style), e.g. the gateway's
    /// dashboard.
    #[must_use]
    pub fn with_external_url(mut self, url: impl Into<String>) -> Self {
        self.external_url = url.into();
        self
    }

    /// The message body for `alert`.
    pub fn payload(&self, alert: &Alert) -> Value {
        let key = alert.dedup_key();
        let mut labels = serde_json::Map::new();
        labels.insert("alertname".into(), Value::String(alert.rule.clone()));
        labels.insert(
            "severity".into(),
            Value::String(alert.severity.as_str().into()),
        );
        for (k, v) in &alert.scope {
            labels.insert(k.clone(), Value::String(v.clone()));
        }
        let mut annotations = serde_json::Map::new();
        annotations.insert("summary".into(), Value::String(alert.summary.clone()));
        for (k, v) in &alert.details {
            let s = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            annotations.insert(k.clone(), Value::String(s));
        }
        let status = alert.status.as_str();
        let ends_at = alert
            .ended_at
            .map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), rfc3339);
        json!({
            "version": "4",
            "groupKey": key,
            "truncatedAlerts": 0,
            "status": status,
            "receiver": self.receiver,
            "groupLabels": {"alertname": alert.rule},
            "commonLabels": labels,
            "commonAnnotations": annotations,
            "externalURL": self.external_url,
            "alerts": [{
                "status": status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": rfc3339(alert.started_at),
                "endsAt": ends_at,
                "generatorURL": self.external_url,
                "fingerprint": key,
            }],
        })
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    fn name(&self) -> &str {
        "webhook"
    }
    async fn send(&self, alert: &Alert) -> Result<(), DeliveryError> {
        post_json(&self.client, &self.url, &self.payload(alert)).await
    }
}

/// Retry policy for deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in all (the first included).
    pub max_attempts: u32,
    /// The first backoff; doubled after each failed attempt.
    pub initial_backoff: Duration,
    /// The longest backoff (also caps `Retry-After`).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// A policy of `max_attempts` attempts starting at `initial_backoff`.
    pub fn new(max_attempts: u32, initial_backoff: Duration, max_backoff: Duration) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            initial_backoff,
            max_backoff,
        }
    }
}

/// Delivery counters of one notifier.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    enqueued: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    retries: AtomicU64,
    in_flight: AtomicU64,
}

impl DeliveryStats {
    /// Notifications accepted into the queue.
    pub fn enqueued(&self) -> u64 {
        self.enqueued.load(Ordering::SeqCst)
    }
    /// Notifications the receiver accepted.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::SeqCst)
    }
    /// Notifications given up on (permanent failure or retries exhausted).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }
    /// Notifications dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::SeqCst)
    }
    /// Retried attempts.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::SeqCst)
    }
    /// Notifications being delivered right now (0 or 1).
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }
}

struct Worker {
    name: String,
    tx: mpsc::Sender<Alert>,
    stats: Arc<DeliveryStats>,
}

/// Fans alerts out to notifiers through bounded queues (see the module docs). Cheap to clone.
#[derive(Clone, Default)]
pub struct Dispatcher {
    workers: Arc<Vec<Worker>>,
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.workers.iter().map(|w| &w.name))
            .finish()
    }
}

impl Dispatcher {
    /// A builder: no notifiers, queues of 256, the default retry policy.
    pub fn builder() -> DispatcherBuilder {
        DispatcherBuilder {
            notifiers: Vec::new(),
            capacity: 256,
            retry: RetryPolicy::default(),
        }
    }

    /// Queues `alert` for every notifier. Never blocks: a full queue drops and counts.
    pub fn submit(&self, alert: &Alert) {
        for w in self.workers.iter() {
            match w.tx.try_send(alert.clone()) {
                Ok(()) => {
                    w.stats.enqueued.fetch_add(1, Ordering::SeqCst);
                }
                Err(_) => {
                    w.stats.dropped.fetch_add(1, Ordering::SeqCst);
                    metrics::counter!(metric::DROPPED_EVENTS, label::QUEUE => "notify")
                        .increment(1);
                    metrics::counter!(
                        metric::NOTIFICATIONS,
                        label::NOTIFIER => w.name.clone(),
                        label::OUTCOME => "dropped"
                    )
                    .increment(1);
                }
            }
        }
    }

    /// The delivery counters of the notifier named `name`.
    pub fn stats(&self, name: &str) -> Option<Arc<DeliveryStats>> {
        self.workers
            .iter()
            .find(|w| w.name == name)
            .map(|w| w.stats.clone())
    }

    /// The notifiers' names.
    pub fn notifiers(&self) -> Vec<String> {
        self.workers.iter().map(|w| w.name.clone()).collect()
    }
}

/// Builds a [`Dispatcher`].
#[must_use]
pub struct DispatcherBuilder {
    notifiers: Vec<Arc<dyn Notifier>>,
    capacity: usize,
    retry: RetryPolicy,
}

impl fmt::Debug for DispatcherBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DispatcherBuilder")
            .field(
                "notifiers",
                &self
                    .notifiers
                    .iter()
                    .map(|n| n.name().to_owned())
                    .collect::<Vec<_>>(),
            )
            .field("capacity", &self.capacity)
            .field("retry", &self.retry)
            .finish()
    }
}

impl DispatcherBuilder {
    /// Adds a notifier.
    pub fn notifier(mut self, n: Arc<dyn Notifier>) -> Self {
        self.notifiers.push(n);
        self
    }

    /// Queue capacity per notifier (at least 1).
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// The retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Spawns one worker task per notifier on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as `tokio::spawn` does).
    pub fn start(self) -> Dispatcher {
        let workers = self
            .notifiers
            .into_iter()
            .map(|n| {
                let (tx, rx) = mpsc::channel(self.capacity);
                let stats = Arc::new(DeliveryStats::default());
                let name = n.name().to_owned();
                tokio::spawn(deliver(n, rx, stats.clone(), self.retry));
                Worker { name, tx, stats }
            })
            .collect();
        Dispatcher {
            workers: Arc::new(workers),
        }
    }
}

async fn deliver(
    notifier: Arc<dyn Notifier>,
    mut rx: mpsc::Receiver<Alert>,
    stats: Arc<DeliveryStats>,
    retry: RetryPolicy,
) {
    let name = notifier.name().to_owned();
    while let Some(alert) = rx.recv().await {
        stats.in_flight.store(1, Ordering::SeqCst);
        let mut backoff = retry.initial_backoff;
        let mut attempt = 1;
        let outcome = loop {
            match notifier.send(&alert).await {
                Ok(()) => break "delivered",
                Err(DeliveryError::Permanent(msg)) => {
                    tracing::warn!(target: "llmops_observe", notifier = %name, error = %msg, "alert delivery failed");
                    break "failed";
                }
                Err(DeliveryError::Retryable {
                    message,
                    retry_after,
                }) => {
                    if attempt >= retry.max_attempts {
                        tracing::warn!(target: "llmops_observe", notifier = %name, error = %message, attempts = attempt, "alert delivery gave up");
                        break "failed";
                    }
                    let wait = retry_after.unwrap_or(backoff).min(retry.max_backoff);
                    stats.retries.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(retry.max_backoff);
                    attempt += 1;
                }
            }
        };
        match outcome {
            "delivered" => stats.delivered.fetch_add(1, Ordering::SeqCst),
            _ => stats.failed.fetch_add(1, Ordering::SeqCst),
        };
        metrics::counter!(
            metric::NOTIFICATIONS,
            label::NOTIFIER => name.clone(),
            label::OUTCOME => outcome
        )
        .increment(1);
        stats.in_flight.store(0, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Severity;

    #[test]
    fn pagerduty_resolve_reuses_the_trigger_key() {
        let pd = PagerDutyNotifier::new("http://127.0.0.1:1/", "rk", "gw").unwrap();
        let mut alert =
            Alert::new("slo_burn", Severity::Critical, "slow").with_scope("model", "chat");
        let t = pd.payload(&alert);
        alert.status = AlertStatus::Resolved;
        let r = pd.payload(&alert);
        assert_eq!(t["event_action"], "trigger");
        assert_eq!(r["event_action"], "resolve");
        assert_eq!(t["dedup_key"], r["dedup_key"]);
        assert_eq!(r["routing_key"], "rk");
        assert_eq!(t["payload"]["severity"], "critical");
        assert_eq!(t["payload"]["custom_details"]["model"], "chat");
    }

    #[test]
    fn long_summaries_are_cut_to_pagerdutys_limit() {
        let pd = PagerDutyNotifier::new("http://127.0.0.1:1/", "rk", "gw").unwrap();
        let alert = Alert::new("r", Severity::Info, "x".repeat(5000));
        assert_eq!(
            pd.payload(&alert)["payload"]["summary"]
                .as_str()
                .unwrap()
                .len(),
            1024
        );
    }

    #[test]
    fn webhook_payload_has_alertmanagers_shape() {
        let w = WebhookNotifier::new("http://127.0.0.1:1/", "llmops").unwrap();
        let alert = Alert::new("error_rate", Severity::Warning, "errors").with_detail("rate", 0.5);
        let p = w.payload(&alert);
        assert_eq!(p["version"], "4");
        assert_eq!(p["status"], "firing");
        assert_eq!(p["alerts"][0]["labels"]["alertname"], "error_rate");
        assert_eq!(p["alerts"][0]["annotations"]["rate"], "0.5");
        assert_eq!(p["alerts"][0]["fingerprint"], p["groupKey"]);
    }

    #[test]
    fn slack_debug_hides_the_url() {
        let s = SlackNotifier::new("https://hooks.slack.com/services/SECRET").unwrap();
        assert!(!format!("{s:?}").contains("SECRET"));
    }
}
