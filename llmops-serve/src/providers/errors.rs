//! Classifying upstream errors and reading rate-limit headers (pure functions).
//!
//! The status alone is not enough: OpenAI answers 429 both for a rate limit (retry after a
//! pause) and for an exhausted quota (never retry), and Anthropic's spend limit is a 429 too.
//! The body's `error.type` / `error.code` decide.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use llmops_core::{Error, ErrorKind};
use serde_json::Value;

/// Rate-limit state reported by an upstream's headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimits {
    /// Request limit per window.
    pub limit_requests: Option<u64>,
    /// Requests left in the window.
    pub remaining_requests: Option<u64>,
    /// Time until the request window resets.
    pub reset_requests: Option<Duration>,
    /// Token limit per window.
    pub limit_tokens: Option<u64>,
    /// Tokens left in the window.
    pub remaining_tokens: Option<u64>,
    /// Time until the token window resets.
    pub reset_tokens: Option<Duration>,
    /// `retry-after-ms` / `retry-after`, when sent.
    pub retry_after: Option<Duration>,
}

impl RateLimits {
    /// Reads OpenAI's `x-ratelimit-*` (resets as Go durations such as `6m0s`) and
    /// Anthropic's `anthropic-ratelimit-*` (resets as RFC 3339 instants) headers, plus
    /// `retry-after-ms` / `retry-after`.
    pub fn from_headers(h: &HeaderMap) -> Self {
        let num = |name: &str| header(h, name).and_then(|v| v.trim().parse::<u64>().ok());
        let openai_reset = |name: &str| header(h, name).and_then(parse_go_duration);
        let anthropic_reset = |name: &str| header(h, name).and_then(until_rfc3339);
        Self {
            limit_requests: num("x-ratelimit-limit-requests")
                .or_else(|| num("anthropic-ratelimit-requests-limit")),
            remaining_requests: num("x-ratelimit-remaining-requests")
                .or_else(|| num("anthropic-ratelimit-requests-remaining")),
            reset_requests: openai_reset("x-ratelimit-reset-requests")
                .or_else(|| anthropic_reset("anthropic-ratelimit-requests-reset")),
            limit_tokens: num("x-ratelimit-limit-tokens")
                .or_else(|| num("anthropic-ratelimit-tokens-limit")),
            remaining_tokens: num("x-ratelimit-remaining-tokens")
                .or_else(|| num("anthropic-ratelimit-tokens-remaining")),
            reset_tokens: openai_reset("x-ratelimit-reset-tokens")
                .or_else(|| anthropic_reset("anthropic-ratelimit-tokens-reset")),
            retry_after: retry_after(h),
        }
    }

    /// Whether no header was present.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// How long to wait before the next request: `retry-after` when sent, else the reset of
    /// an exhausted window.
    pub fn wait_hint(&self) -> Option<Duration> {
        if self.retry_after.is_some() {
            return self.retry_after;
        }
        let req = self
            .remaining_requests
            .filter(|r| *r == 0)
            .and(self.reset_requests);
        let tok = self
            .remaining_tokens
            .filter(|r| *r == 0)
            .and(self.reset_tokens);
        match (req, tok) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// `retry-after-ms` (milliseconds), else `retry-after` (seconds, possibly fractional, or an
/// HTTP date). Values over an hour are ignored as unreasonable.
pub fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let d = if let Some(ms) = header(h, "retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok())
    {
        duration_from_secs(ms / 1000.0)
    } else {
        let v = header(h, "retry-after")?.trim();
        match v.parse::<f64>() {
            Ok(secs) => duration_from_secs(secs),
            Err(_) => httpdate::parse_http_date(v).ok().map(|t| {
                t.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
            }),
        }
    }?;
    (d <= Duration::from_secs(3600)).then_some(d)
}

fn duration_from_secs(s: f64) -> Option<Duration> {
    (s.is_finite() && s >= 0.0).then(|| Duration::from_secs_f64(s))
}

/// Parses a Go-style duration (`12ms`, `1.5s`, `6m0s`, `1h2m3s`, `250us`).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = 0.0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * factor;
        rest = &rest[unit_len..];
    }
    duration_from_secs(total)
}

/// Time from now until an RFC 3339 instant (`2026-01-01T00:00:30Z`); zero when past.
pub fn until_rfc3339(s: &str) -> Option<Duration> {
    let at = parse_rfc3339(s)?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    Some(Duration::from_secs_f64((at - now).max(0.0)))
}

/// Seconds since the Unix epoch of an RFC 3339 timestamp (UTC `Z` or `±hh:mm` offset).
fn parse_rfc3339(s: &str) -> Option<f64> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (
        n(0..4)?,
        n(5..7)?,
        n(8..10)?,
        n(11..13)?,
        n(14..16)?,
        n(17..19)?,
    );
    let mut rest = &s[19..];
    let mut frac = 0.0;
    if let Some(r) = rest.strip_prefix('.') {
        let len = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
        frac = format!("0.{}", &r[..len]).parse().ok()?;
        rest = &r[len..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o.get(1..3)?.parse::<i64>().ok()? * 3600
                + o.get(4..6)?.parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + se - offset) as f64 + frac)
}

/// The `error` object of an OpenAI-style error body (current or vLLM's older flat shape).
fn openai_error_fields(body: &[u8]) -> (Option<String>, Option<String>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        let text = String::from_utf8_lossy(body)
            .trim()
            .chars()
            .take(300)
            .collect::<String>();
        return (None, None, (!text.is_empty()).then_some(text));
    };
    let err = v.get("error").filter(|e| e.is_object()).unwrap_or(&v);
    let s = |k: &str| match err.get(k) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let message =
        s("message").or_else(|| v.get("error").and_then(Value::as_str).map(str::to_owned));
    (s("type"), s("code"), message)
}

/// Classifies an OpenAI-compatible error response (OpenAI, Azure OpenAI, vLLM, any
/// compatible server).
pub fn classify_openai(provider: &str, status: u16, headers: &HeaderMap, body: &[u8]) -> Error {
    let (etype, code, message) = openai_error_fields(body);
    let is = |s: &str| etype.as_deref() == Some(s) || code.as_deref() == Some(s);
    let msg_lower = message.as_deref().unwrap_or_default().to_ascii_lowercase();
    let kind = if is("insufficient_quota") || is("billing_hard_limit_reached") {
        ErrorKind::QuotaExhausted
    } else if is("context_length_exceeded")
        || msg_lower.contains("maximum context length")
        || msg_lower.contains("context length")
    {
        ErrorKind::ContextLengthExceeded
    } else if is("content_filter") || is("content_policy_violation") {
        ErrorKind::ContentFiltered
    } else {
        status_kind(status)
    };
    finish(provider, kind, status, headers, message, code)
}

fn status_kind(status: u16) -> ErrorKind {
    match status {
        429 => ErrorKind::RateLimited,
        401 => ErrorKind::Auth,
        402 => ErrorKind::QuotaExhausted,
        403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::ModelNotFound,
        408 | 504 => ErrorKind::Timeout,
        413 => ErrorKind::PayloadTooLarge,
        409 => ErrorKind::ServerError,
        503 | 529 => ErrorKind::Overloaded,
        500..=599 => ErrorKind::ServerError,
        _ => ErrorKind::InvalidRequest,
    }
}

fn finish(
    provider: &str,
    kind: ErrorKind,
    status: u16,
    headers: &HeaderMap,
    message: Option<String>,
    code: Option<String>,
) -> Error {
    let message = message.unwrap_or_else(|| format!("upstream answered HTTP {status}"));
    let mut err = Error::new(kind, message)
        .with_provider(provider)
        .with_status(status);
    if (kind == ErrorKind::RateLimited || kind == ErrorKind::Overloaded)
        && let Some(after) = RateLimits::from_headers(headers).wait_hint()
    {
        err = err.with_retry_after(after);
    }
    if let Some(code) = code.filter(|c| c.parse::<u16>().is_err()) {
        err = err.with_code(code);
    }
    err
}

/// Classifies an Anthropic Messages API error response.
pub fn classify_anthropic(provider: &str, status: u16, headers: &HeaderMap, body: &[u8]) -> Error {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let (kind, message) =
        anthropic_error_kind(v.get("error").unwrap_or(&Value::Null), Some(status));
    let message = message.or_else(|| {
        let text = String::from_utf8_lossy(body)
            .trim()
            .chars()
            .take(300)
            .collect::<String>();
        (!text.is_empty()).then_some(text)
    });
    finish(provider, kind, status, headers, message, None)
}

/// The kind and message of an Anthropic `error` object (from a response body or a
/// mid-stream `error` event).
pub fn anthropic_error_kind(err: &Value, status: Option<u16>) -> (ErrorKind, Option<String>) {
    let etype = err.get("type").and_then(Value::as_str).unwrap_or_default();
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let detail = err
        .pointer("/details/error_code")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let lower = message.as_deref().unwrap_or_default().to_ascii_lowercase();
    let kind = if detail == "enforced_spend_limit_reached" || etype == "billing_error" {
        ErrorKind::QuotaExhausted
    } else {
        match etype {
            "overloaded_error" => ErrorKind::Overloaded,
            "rate_limit_error" => ErrorKind::RateLimited,
            "authentication_error" => ErrorKind::Auth,
            "permission_error" => ErrorKind::PermissionDenied,
            "not_found_error" => ErrorKind::ModelNotFound,
            "request_too_large" => ErrorKind::PayloadTooLarge,
            "timeout_error" => ErrorKind::Timeout,
            "api_error" => ErrorKind::ServerError,
            "invalid_request_error"
                if lower.contains("prompt is too long") || lower.contains("context") =>
            {
                ErrorKind::ContextLengthExceeded
            }
            "invalid_request_error" => ErrorKind::InvalidRequest,
            _ => status.map_or(ErrorKind::ServerError, status_kind),
        }
    };
    (kind, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmops_core::Retryability;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.insert(*n, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn quota_429_is_not_a_rate_limit() {
        let body = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
        let e = classify_openai("p", 429, &headers(&[("retry-after", "1")]), body);
        assert_eq!(e.kind(), ErrorKind::QuotaExhausted);
        assert_eq!(e.retryability(), Retryability::FailOver);
        let body = br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
        let e = classify_openai("p", 429, &headers(&[("retry-after", "2")]), body);
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(e.provider(), Some("p"));
    }

    #[test]
    fn vllm_error_shapes_and_context_length() {
        let old = br#"{"object":"error","message":"This model's maximum context length is 4096 tokens.","type":"BadRequestError","param":null,"code":400}"#;
        assert_eq!(
            classify_openai("v", 400, &HeaderMap::new(), old).kind(),
            ErrorKind::ContextLengthExceeded
        );
        let new = br#"{"error":{"message":"bad temperature","type":"BadRequestError","param":null,"code":400}}"#;
        let e = classify_openai("v", 400, &HeaderMap::new(), new);
        assert_eq!(e.kind(), ErrorKind::InvalidRequest);
        assert_eq!(e.message(), "bad temperature");
        assert_eq!(
            classify_openai("v", 503, &HeaderMap::new(), b"").kind(),
            ErrorKind::Overloaded
        );
        assert_eq!(
            classify_openai("v", 502, &HeaderMap::new(), b"<html>").kind(),
            ErrorKind::ServerError
        );
    }

    #[test]
    fn anthropic_spend_limit_and_overload() {
        let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"spend limit","details":{"error_code":"enforced_spend_limit_reached"}}}"#;
        let e = classify_anthropic("a", 429, &HeaderMap::new(), body);
        assert_eq!(e.kind(), ErrorKind::QuotaExhausted);
        let body =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(
            classify_anthropic("a", 529, &HeaderMap::new(), body).kind(),
            ErrorKind::Overloaded
        );
        let body = br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#;
        assert_eq!(
            classify_anthropic("a", 400, &HeaderMap::new(), body).kind(),
            ErrorKind::ContextLengthExceeded
        );
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(
            retry_after(&headers(&[("retry-after-ms", "1500")])),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "3")])),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "0.5")])),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            retry_after(&headers(&[(
                "retry-after",
                "Wed, 21 Oct 2015 07:28:00 GMT"
            )])),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "86400")])), None);
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("12ms"), Some(Duration::from_millis(12)));
        assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_go_duration("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("abc"), None);
        assert_eq!(parse_go_duration("5"), None);
    }

    #[test]
    fn rate_limit_headers_of_both_dialects() {
        let r = RateLimits::from_headers(&headers(&[
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "2s"),
            ("x-ratelimit-remaining-tokens", "1000"),
        ]));
        assert_eq!(r.limit_requests, Some(60));
        assert_eq!(r.wait_hint(), Some(Duration::from_secs(2)));
        let r = RateLimits::from_headers(&headers(&[
            ("anthropic-ratelimit-requests-remaining", "5"),
            ("anthropic-ratelimit-requests-reset", "2000-01-01T00:00:00Z"),
        ]));
        assert_eq!(r.remaining_requests, Some(5));
        assert_eq!(r.reset_requests, Some(Duration::ZERO));
        assert_eq!(parse_rfc3339("1970-01-02T00:00:00Z"), Some(86_400.0));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0.0));
        assert!(RateLimits::from_headers(&HeaderMap::new()).is_empty());
    }
}
