//! One error type for the whole workspace, with a precise kind and a retryability.
//!
//! Every failure a pipeline can meet — an upstream answering 429, a budget refusing a request,
//! a stream cut off half-way — is an [`Error`] with an [`ErrorKind`]. Layers decide what to do
//! from [`Error::retryability`]; the HTTP edge turns an error into a status code and an
//! OpenAI-style error body with [`Error::http_status`] and [`Error::to_body`]. That mapping lives
//! here and nowhere else, so every gateway built from these crates answers the same way.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What went wrong, precisely enough to decide what to do next.
///
/// Kinds are grouped by who can fix them: transient upstream trouble (retry), a problem with one
/// upstream target (fail over to another), a problem with the request itself (never retry), and
/// refusals by the pipeline's own policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The upstream throttled us (HTTP 429 `rate_limit_exceeded`): retry after a pause.
    RateLimited,
    /// The upstream account is out of credit or over its spend limit (OpenAI 429
    /// `insufficient_quota`, Anthropic `enforced_spend_limit_reached`). Retrying cannot help.
    QuotaExhausted,
    /// The upstream is overloaded (HTTP 503, Anthropic 529).
    Overloaded,
    /// The upstream failed (HTTP 5xx other than 503).
    ServerError,
    /// A deadline passed: connect, time to first token, idle between chunks or total.
    Timeout,
    /// The upstream could not be reached (DNS, refused, reset before a response).
    Connect,
    /// Credentials were missing or rejected (HTTP 401).
    Auth,
    /// Credentials were valid but not allowed to do this (HTTP 403).
    PermissionDenied,
    /// No such model, at the gateway or at the upstream (HTTP 404).
    ModelNotFound,
    /// The request is malformed or has invalid values (HTTP 400).
    InvalidRequest,
    /// The request body is larger than allowed (HTTP 413).
    PayloadTooLarge,
    /// The prompt plus requested output does not fit the model's context window.
    ContextLengthExceeded,
    /// The upstream refused to produce content for safety reasons.
    ContentFiltered,
    /// A stream broke before it finished. `after_first_event` tells whether any content had
    /// already been delivered; only a stream broken before that may be retried or failed over.
    StreamInterrupted {
        /// Whether a content delta had already reached the caller when the stream broke.
        after_first_event: bool,
    },
    /// The upstream answered something we could not decode (malformed JSON, bad SSE framing).
    Decode,
    /// The caller went away or cancelled the request.
    Cancelled,
    /// A spend or token budget has no room left for this request.
    BudgetExceeded,
    /// The pipeline's own request-rate or token-rate limit refused the request.
    RateLimitExceeded,
    /// The request's worst-case cost is above the per-request ceiling.
    CostCeilingExceeded,
    /// A prompt-injection detector blocked the request.
    PromptInjection,
    /// The request would have to leave the regions its tenant allows.
    ResidencyViolation,
    /// Another guardrail policy (PII, content rules) blocked the request.
    PolicyViolation,
    /// The provider or model does not support this operation.
    Unsupported,
    /// A bug or an unexpected internal state.
    Internal,
}

/// What a caller may do about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retryability {
    /// Transient: the same target may be tried again after a backoff.
    Retry,
    /// Transient, and the upstream said when: wait at least this long before trying again.
    RetryAfter(Duration),
    /// This target cannot serve the request now, but another target may.
    FailOver,
    /// No retry and no fallback can help: give the error to the caller.
    Never,
}

impl ErrorKind {
    /// The stable machine-readable name of the kind, used for `error.type` in telemetry and as
    /// the default `code` of the OpenAI-style error body.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::QuotaExhausted => "insufficient_quota",
            Self::Overloaded => "overloaded",
            Self::ServerError => "upstream_error",
            Self::Timeout => "timeout",
            Self::Connect => "upstream_unreachable",
            Self::Auth => "invalid_api_key",
            Self::PermissionDenied => "permission_denied",
            Self::ModelNotFound => "model_not_found",
            Self::InvalidRequest => "invalid_request",
            Self::PayloadTooLarge => "payload_too_large",
            Self::ContextLengthExceeded => "context_length_exceeded",
            Self::ContentFiltered => "content_filter",
            Self::StreamInterrupted { .. } => "stream_interrupted",
            Self::Decode => "upstream_decode_error",
            Self::Cancelled => "cancelled",
            Self::BudgetExceeded => "budget_exceeded",
            Self::RateLimitExceeded => "rate_limit_exceeded",
            Self::CostCeilingExceeded => "cost_ceiling_exceeded",
            Self::PromptInjection => "prompt_injection_detected",
            Self::ResidencyViolation => "residency_violation",
            Self::PolicyViolation => "policy_violation",
            Self::Unsupported => "unsupported",
            Self::Internal => "internal_error",
        }
    }

    /// Whether this kind is a refusal by the pipeline's own policy (budget, ceiling,
    /// guardrail), as opposed to an upstream or request failure.
    pub fn is_policy_refusal(&self) -> bool {
        matches!(
            self,
            Self::BudgetExceeded
                | Self::RateLimitExceeded
                | Self::CostCeilingExceeded
                | Self::PromptInjection
                | Self::ResidencyViolation
                | Self::PolicyViolation
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of every operation in the workspace.
///
/// Cheap to clone (the source is shared), so a layer can keep a copy for accounting while it
/// hands the error on. Build one with [`Error::new`] and the `with_*` methods:
///
/// ```
/// use std::time::Duration;
/// use llmops_core::{Error, ErrorKind, Retryability};
///
/// let err = Error::new(ErrorKind::RateLimited, "slow down")
///     .with_provider("primary")
///     .with_status(429)
///     .with_retry_after(Duration::from_secs(2));
/// assert_eq!(err.retryability(), Retryability::RetryAfter(Duration::from_secs(2)));
/// assert_eq!(err.http_status(), 429);
/// ```
#[derive(Clone)]
pub struct Error {
    inner: Box<Inner>,
}

#[derive(Clone)]
struct Inner {
    kind: ErrorKind,
    message: Cow<'static, str>,
    provider: Option<String>,
    status: Option<u16>,
    retry_after: Option<Duration>,
    param: Option<String>,
    code: Option<Cow<'static, str>>,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind` with a human-readable message.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                provider: None,
                status: None,
                retry_after: None,
                param: None,
                code: None,
                source: None,
            }),
        }
    }

    /// Shorthand for an [`ErrorKind::InvalidRequest`] error naming the offending parameter.
    pub fn invalid_request(message: impl Into<Cow<'static, str>>, param: Option<&str>) -> Self {
        let err = Self::new(ErrorKind::InvalidRequest, message);
        match param {
            Some(p) => err.with_param(p),
            None => err,
        }
    }

    /// Shorthand for an [`ErrorKind::Internal`] error.
    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Records which provider (target) produced the error. Errors that carry a provider are
    /// upstream errors; the HTTP edge does not blame the client's credentials for them.
    #[must_use]
    pub fn with_provider(mut self, provider: impl Into<String>) -> Self {
        self.inner.provider = Some(provider.into());
        self
    }

    /// Records the upstream HTTP status.
    #[must_use]
    pub fn with_status(mut self, status: u16) -> Self {
        self.inner.status = Some(status);
        self
    }

    /// Records how long the upstream asked us to wait (`Retry-After`).
    #[must_use]
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.inner.retry_after = Some(after);
        self
    }

    /// Names the request parameter at fault (the `param` of the OpenAI error body).
    #[must_use]
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.inner.param = Some(param.into());
        self
    }

    /// Overrides the `code` of the OpenAI error body (by default [`ErrorKind::as_str`]).
    #[must_use]
    pub fn with_code(mut self, code: impl Into<Cow<'static, str>>) -> Self {
        self.inner.code = Some(code.into());
        self
    }

    /// Attaches the underlying cause.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.inner.source = Some(Arc::new(source));
        self
    }

    /// Replaces the kind, keeping everything else (e.g. a timeout that fired after the first
    /// streamed event becomes [`ErrorKind::StreamInterrupted`]).
    #[must_use]
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.inner.kind = kind;
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The provider (target) that produced the error, if it came from upstream.
    pub fn provider(&self) -> Option<&str> {
        self.inner.provider.as_deref()
    }

    /// The upstream HTTP status, if any.
    pub fn status(&self) -> Option<u16> {
        self.inner.status
    }

    /// How long the upstream asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// The request parameter at fault, if known.
    pub fn param(&self) -> Option<&str> {
        self.inner.param.as_deref()
    }

    /// The stable code used in the OpenAI-style error body.
    pub fn code(&self) -> &str {
        self.inner
            .code
            .as_deref()
            .unwrap_or_else(|| self.inner.kind.as_str())
    }

    /// What a caller may do about this error.
    ///
    /// | kind | retryability |
    /// |---|---|
    /// | rate-limited | retry after `Retry-After` (or backoff when absent) |
    /// | overloaded, server error, timeout, connect, decode, stream broken before content | retry |
    /// | quota exhausted, auth, permission denied, model not found, context length | fail over |
    /// | everything else (bad request, policy refusals, cancelled, stream broken after content) | never |
    pub fn retryability(&self) -> Retryability {
        use ErrorKind as K;
        match self.inner.kind {
            K::RateLimited => match self.inner.retry_after {
                Some(d) => Retryability::RetryAfter(d),
                None => Retryability::Retry,
            },
            K::Overloaded | K::ServerError | K::Timeout | K::Connect | K::Decode => {
                Retryability::Retry
            }
            K::StreamInterrupted {
                after_first_event: false,
            } => Retryability::Retry,
            K::QuotaExhausted
            | K::Auth
            | K::PermissionDenied
            | K::ModelNotFound
            | K::ContextLengthExceeded
            | K::Unsupported => Retryability::FailOver,
            K::StreamInterrupted {
                after_first_event: true,
            }
            | K::InvalidRequest
            | K::PayloadTooLarge
            | K::ContentFiltered
            | K::Cancelled
            | K::BudgetExceeded
            | K::RateLimitExceeded
            | K::CostCeilingExceeded
            | K::PromptInjection
            | K::ResidencyViolation
            | K::PolicyViolation
            | K::Internal => Retryability::Never,
        }
    }

    /// Whether another target may be tried for this request (retryable errors and fail-over
    /// errors both qualify).
    pub fn allows_fallback(&self) -> bool {
        !matches!(self.retryability(), Retryability::Never)
    }

    /// The HTTP status a gateway answers with for this error.
    ///
    /// Upstream credential failures (an error with a provider and kind auth or permission
    /// denied) are the gateway operator's problem, not the client's, and map to 502.
    pub fn http_status(&self) -> u16 {
        use ErrorKind as K;
        let upstream = self.inner.provider.is_some();
        match self.inner.kind {
            K::RateLimited | K::QuotaExhausted | K::BudgetExceeded | K::RateLimitExceeded => 429,
            K::Overloaded => 503,
            K::ServerError | K::Connect | K::Decode | K::StreamInterrupted { .. } => 502,
            K::Auth | K::PermissionDenied if upstream => 502,
            K::Auth => 401,
            K::PermissionDenied | K::ResidencyViolation => 403,
            K::Timeout => 504,
            K::ModelNotFound => 404,
            K::InvalidRequest
            | K::ContextLengthExceeded
            | K::ContentFiltered
            | K::CostCeilingExceeded
            | K::PromptInjection
            | K::PolicyViolation
            | K::Unsupported => 400,
            K::PayloadTooLarge => 413,
            K::Cancelled => 499,
            K::Internal => 500,
        }
    }

    /// The OpenAI error `type` for this error.
    pub fn openai_type(&self) -> &'static str {
        use ErrorKind as K;
        match self.inner.kind {
            K::RateLimited | K::RateLimitExceeded => "rate_limit_error",
            K::QuotaExhausted | K::BudgetExceeded => "insufficient_quota",
            K::Auth if self.inner.provider.is_none() => "authentication_error",
            K::PermissionDenied | K::ResidencyViolation if self.inner.provider.is_none() => {
                "permission_error"
            }
            K::ModelNotFound => "not_found_error",
            K::InvalidRequest
            | K::PayloadTooLarge
            | K::ContextLengthExceeded
            | K::ContentFiltered
            | K::CostCeilingExceeded
            | K::PromptInjection
            | K::PolicyViolation
            | K::Unsupported => "invalid_request_error",
            K::Overloaded => "overloaded_error",
            K::Timeout => "timeout_error",
            _ => "api_error",
        }
    }

    /// The OpenAI-style error body: `{"error": {"message", "type", "code", "param"}}`.
    pub fn to_body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                kind: self.openai_type().to_owned(),
                code: Some(self.code().to_owned()),
                param: self.inner.param.clone(),
            },
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.inner.provider {
            write!(f, "{p}: ")?;
        }
        f.write_str(&self.inner.message)?;
        if let Some(s) = self.inner.status {
            write!(f, " (HTTP {s})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("message", &self.inner.message);
        if let Some(p) = &self.inner.provider {
            d.field("provider", p);
        }
        if let Some(s) = self.inner.status {
            d.field("status", &s);
        }
        if let Some(r) = self.inner.retry_after {
            d.field("retry_after", &r);
        }
        if let Some(p) = &self.inner.param {
            d.field("param", p);
        }
        if let Some(s) = &self.inner.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::new(ErrorKind::InvalidRequest, format!("invalid JSON: {err}")).with_source(err)
    }
}

/// The OpenAI-compatible error body a gateway sends: `{"error": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ErrorBody {
    /// The error itself.
    pub error: ErrorDetail,
}

/// The `error` object of an [`ErrorBody`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ErrorDetail {
    /// A human-readable explanation that says what to do.
    pub message: String,
    /// The OpenAI error type (`invalid_request_error`, `rate_limit_error`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// A stable machine-readable code (`budget_exceeded`, `model_not_found`, ...).
    pub code: Option<String>,
    /// The request parameter at fault, if any.
    pub param: Option<String>,
}

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_is_not_rate_limit() {
        let rl = Error::new(ErrorKind::RateLimited, "slow down").with_status(429);
        let quota = Error::new(ErrorKind::QuotaExhausted, "no credit").with_status(429);
        assert_eq!(rl.retryability(), Retryability::Retry);
        assert_eq!(quota.retryability(), Retryability::FailOver);
        assert_eq!(quota.code(), "insufficient_quota");
        assert_eq!(rl.http_status(), 429);
    }

    #[test]
    fn stream_interruption_depends_on_first_event() {
        let before = Error::new(
            ErrorKind::StreamInterrupted {
                after_first_event: false,
            },
            "x",
        );
        let after = Error::new(
            ErrorKind::StreamInterrupted {
                after_first_event: true,
            },
            "x",
        );
        assert_eq!(before.retryability(), Retryability::Retry);
        assert_eq!(after.retryability(), Retryability::Never);
        assert!(!after.allows_fallback());
    }

    #[test]
    fn upstream_auth_is_not_the_clients_fault() {
        let client = Error::new(ErrorKind::Auth, "bad key");
        let upstream = Error::new(ErrorKind::Auth, "bad key").with_provider("primary");
        assert_eq!(client.http_status(), 401);
        assert_eq!(client.openai_type(), "authentication_error");
        assert_eq!(upstream.http_status(), 502);
        assert_eq!(upstream.openai_type(), "api_error");
    }

    #[test]
    fn body_shape_is_openai() {
        let err = Error::invalid_request("messages must not be empty", Some("messages"));
        let json = serde_json::to_value(err.to_body()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": {
                "message": "messages must not be empty",
                "type": "invalid_request_error",
                "code": "invalid_request",
                "param": "messages"
            }})
        );
    }

    #[test]
    fn policy_codes_are_stable() {
        for (kind, code, status) in [
            (ErrorKind::BudgetExceeded, "budget_exceeded", 429),
            (ErrorKind::RateLimitExceeded, "rate_limit_exceeded", 429),
            (ErrorKind::CostCeilingExceeded, "cost_ceiling_exceeded", 400),
            (ErrorKind::PromptInjection, "prompt_injection_detected", 400),
            (ErrorKind::ResidencyViolation, "residency_violation", 403),
        ] {
            let e = Error::new(kind, "refused");
            assert_eq!(e.code(), code);
            assert_eq!(e.http_status(), status);
            assert_eq!(e.retryability(), Retryability::Never);
            assert!(kind.is_policy_refusal());
        }
    }
}
