//! The [`AuditSink`] trait: where audit events go.
//!
//! The pipeline describes what happened ([`AuditEvent`]); the sink (in `llmops-govern`)
//! decides how it is committed to, chained, signed and stored. Content travels to the sink so
//! that it can compute keyed commitments and redact; what is stored is the sink's policy.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde_json::Value;

use crate::context::PromptRef;
use crate::error::{ErrorKind, Result};
use crate::types::ChatRequest;
use crate::usage::Usage;

/// One thing worth a tamper-evident record.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum AuditEvent {
    /// A request the pipeline served, failed or refused.
    Request(Box<RequestAudit>),
    /// An operational event: config loaded, prompt promoted, key rotated...
    System(SystemEvent),
}

/// The audit view of one request.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RequestAudit {
    /// When the request arrived.
    pub time: SystemTime,
    /// The request id.
    pub request_id: Arc<str>,
    /// The tenant.
    pub tenant: Arc<str>,
    /// The API-key id (never the secret).
    pub api_key_id: Option<Arc<str>>,
    /// The end user.
    pub user: Option<Arc<str>>,
    /// The model name the client asked for.
    pub requested_model: String,
    /// Every upstream attempt, in order.
    pub attempts: Vec<Attempt>,
    /// The prompt template the request came from.
    pub prompt: Option<PromptRef>,
    /// The request as sent (the sink commits to its messages and parameters).
    pub request: Option<Arc<ChatRequest>>,
    /// The output text.
    pub output: Option<String>,
    /// Usage.
    pub usage: Option<Usage>,
    /// Cost in USD.
    pub cost_usd: Option<f64>,
    /// Whether the answer came from a cache.
    pub cache_hit: bool,
    /// Guardrail decisions taken on the way.
    pub guardrails: Vec<GuardrailDecision>,
    /// Time from arrival to the end of the answer.
    pub latency: Duration,
    /// `None` on success; the error kind on failure or refusal.
    pub error: Option<ErrorKind>,
}

impl RequestAudit {
    /// A record for request `request_id` of `tenant` asking for `model`, with everything else
    /// empty.
    pub fn new(request_id: Arc<str>, tenant: Arc<str>, model: impl Into<String>) -> Self {
        Self {
            time: SystemTime::now(),
            request_id,
            tenant,
            api_key_id: None,
            user: None,
            requested_model: model.into(),
            attempts: Vec::new(),
            prompt: None,
            request: None,
            output: None,
            usage: None,
            cost_usd: None,
            cache_hit: false,
            guardrails: Vec::new(),
            latency: Duration::ZERO,
            error: None,
        }
    }
}

/// One upstream attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attempt {
    /// The provider (target) tried.
    pub provider: String,
    /// The upstream model name.
    pub model: String,
    /// `None` on success; the error kind otherwise.
    pub error: Option<ErrorKind>,
}

impl Attempt {
    /// An attempt record.
    pub fn new(
        provider: impl Into<String>,
        model: impl Into<String>,
        error: Option<ErrorKind>,
    ) -> Self {
        Self {
            provider: provider.into(),
            model: model.into(),
            error,
        }
    }
}

/// A guardrail's decision on a request.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct GuardrailDecision {
    /// The guardrail (`pii`, `injection`, `residency`...).
    pub guardrail: String,
    /// What it did (`allow`, `redact`, `flag`, `block`...).
    pub action: String,
    /// Details (finding types and counts, scores).
    pub detail: Value,
}

impl GuardrailDecision {
    /// A decision of `guardrail` (e.g. `pii`) to `action` (e.g. `redact`), with details.
    pub fn new(guardrail: impl Into<String>, action: impl Into<String>, detail: Value) -> Self {
        Self {
            guardrail: guardrail.into(),
            action: action.into(),
            detail,
        }
    }
}

/// An operational event.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SystemEvent {
    /// When it happened.
    pub time: SystemTime,
    /// What happened: `config_loaded`, `prompt_promoted`, `prompt_rolled_back`,
    /// `key_rotated`...
    pub event: String,
    /// Who or what caused it.
    pub actor: Option<String>,
    /// Event-specific details (config hash, prompt name and versions, eval run id...).
    pub detail: Value,
}

impl SystemEvent {
    /// An event happening now.
    pub fn new(event: impl Into<String>, detail: Value) -> Self {
        Self {
            time: SystemTime::now(),
            event: event.into(),
            actor: None,
            detail,
        }
    }
}

/// What a sink returns once an event is recorded (as durable as the sink's mode promises).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditReceipt {
    /// The record's sequence number in its log.
    pub seq: u64,
    /// The record's hash, hex-encoded.
    pub hash: String,
}

impl AuditReceipt {
    /// A receipt.
    pub fn new(seq: u64, hash: impl Into<String>) -> Self {
        Self {
            seq,
            hash: hash.into(),
        }
    }
}

/// Where audit events go.
///
/// # Contract
///
/// - `append` returns once the event is recorded as durably as the sink's configured mode
///   promises (for a durable mode: on stable storage); the receipt names its place in the
///   log. Appends are ordered: receipts of one sink have increasing sequence numbers.
/// - `append` never blocks an async worker thread on I/O.
/// - Secrets never reach the sink's storage; content is stored only when configured.
/// - `flush` returns when everything appended before it is durable.
#[async_trait]
pub trait AuditSink: Send + Sync {
    /// Records one event.
    async fn append(&self, event: AuditEvent) -> Result<AuditReceipt>;

    /// Makes every appended event durable.
    async fn flush(&self) -> Result<()>;

    /// Flushes and finishes the log for a clean shutdown (a sink may sign a final checkpoint).
    /// The default flushes.
    async fn close(&self) -> Result<()> {
        self.flush().await
    }
}
