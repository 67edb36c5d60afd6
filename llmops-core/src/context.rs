//! The request context: who asked, under which prompt template, by when.
//!
//! A [`RequestContext`] travels with every request through the pipeline — inside
//! [`LlmRequest`](crate::LlmRequest), not only in HTTP extensions — so library users who never
//! touch HTTP get tenant partitioning, budgets, deadlines and audit records too. Layers read it
//! and may enrich it; [`RequestContext::extensions`] carries typed data between layers.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// The tenant a request is billed to and partitioned by when none is configured.
pub const DEFAULT_TENANT: &str = "default";

/// Everything about a request that is not its body.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RequestContext {
    /// Unique id of the request (a UUIDv7 unless the caller supplied one).
    pub request_id: Arc<str>,
    /// The tenant: the unit of budgets, cache partitions and residency rules.
    pub tenant: Arc<str>,
    /// The id (never the secret) of the API key the request came with.
    pub api_key_id: Option<Arc<str>>,
    /// The end user, when known.
    pub user: Option<Arc<str>>,
    /// Free-form tags (feature, environment, experiment...), used for budgets and metrics.
    pub tags: BTreeMap<String, String>,
    /// The prompt template the request was rendered from.
    pub prompt: Option<PromptRef>,
    /// When the request must be finished; layers stop work past it.
    pub deadline: Option<Instant>,
    /// W3C trace context of the caller, for distributed tracing.
    pub trace: Option<TraceContext>,
    /// Typed data that layers attach for each other.
    pub extensions: http::Extensions,
}

impl Default for RequestContext {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestContext {
    /// A context with a fresh request id and the default tenant.
    pub fn new() -> Self {
        let mut id = uuid::Uuid::encode_buffer();
        Self {
            request_id: Arc::from(&*crate::id::uuid_v7().hyphenated().encode_lower(&mut id)),
            tenant: Arc::from(DEFAULT_TENANT),
            api_key_id: None,
            user: None,
            tags: BTreeMap::new(),
            prompt: None,
            deadline: None,
            trace: None,
            extensions: http::Extensions::new(),
        }
    }

    /// Sets the request id (builder style).
    #[must_use]
    pub fn with_request_id(mut self, id: impl Into<Arc<str>>) -> Self {
        self.request_id = id.into();
        self
    }

    /// Sets the tenant (builder style).
    #[must_use]
    pub fn with_tenant(mut self, tenant: impl Into<Arc<str>>) -> Self {
        self.tenant = tenant.into();
        self
    }

    /// Sets the API-key id (builder style).
    #[must_use]
    pub fn with_api_key_id(mut self, id: impl Into<Arc<str>>) -> Self {
        self.api_key_id = Some(id.into());
        self
    }

    /// Sets the end user (builder style).
    #[must_use]
    pub fn with_user(mut self, user: impl Into<Arc<str>>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Adds a tag (builder style).
    #[must_use]
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Sets the prompt template reference (builder style).
    #[must_use]
    pub fn with_prompt(mut self, prompt: PromptRef) -> Self {
        self.prompt = Some(prompt);
        self
    }

    /// Sets a deadline `timeout` from now (builder style). An earlier deadline already set
    /// is kept: deadlines only ever shrink.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.shrink_deadline(Instant::now() + timeout);
        self
    }

    /// Sets the trace context (builder style).
    #[must_use]
    pub fn with_trace(mut self, trace: TraceContext) -> Self {
        self.trace = Some(trace);
        self
    }

    /// Moves the deadline to `deadline` if that is earlier than the current one.
    pub fn shrink_deadline(&mut self, deadline: Instant) {
        self.deadline = Some(match self.deadline {
            Some(d) => d.min(deadline),
            None => deadline,
        });
    }

    /// Time left before the deadline (`None` when there is no deadline; zero when passed).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// The regions a request may be processed in (data residency), put in
/// [`RequestContext::extensions`] by the policy that knows the tenant's rules.
///
/// Routing honours it: a target whose region is not listed — or whose region is unknown — is
/// never tried, and when no target is left the request fails with
/// [`ErrorKind::ResidencyViolation`](crate::ErrorKind::ResidencyViolation). It is never sent
/// elsewhere instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedRegions(pub Arc<[String]>);

impl AllowedRegions {
    /// The regions `regions`.
    pub fn new(regions: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self(regions.into_iter().map(Into::into).collect())
    }

    /// Whether a target in `region` may serve the request (an unknown region may not).
    pub fn allows(&self, region: Option<&str>) -> bool {
        region.is_some_and(|r| self.0.iter().any(|a| a == r))
    }

    /// The error a router returns when no target is in an allowed region.
    pub fn violation(&self, model: &str) -> crate::Error {
        crate::Error::new(
            crate::ErrorKind::ResidencyViolation,
            format!(
                "no target of model `{model}` is in a region this tenant allows ({}): the \
                 request was not sent anywhere",
                self.0.join(", ")
            ),
        )
    }
}

/// A reference to a versioned prompt template.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PromptRef {
    /// The template's name.
    pub id: Arc<str>,
    /// The template's version (a content hash or a label).
    pub version: Arc<str>,
}

impl PromptRef {
    /// A reference to template `id` at `version`.
    pub fn new(id: impl Into<Arc<str>>, version: impl Into<Arc<str>>) -> Self {
        Self {
            id: id.into(),
            version: version.into(),
        }
    }
}

impl fmt::Display for PromptRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.version)
    }
}

/// W3C Trace Context headers of the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TraceContext {
    /// The `traceparent` header value.
    pub traceparent: String,
    /// The `tracestate` header value, if any.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// Parses a `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`); `None` when malformed.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        let parts: Vec<&str> = traceparent.trim().split('-').collect();
        let ok = parts.len() == 4
            && parts[0].len() == 2
            && parts[1].len() == 32
            && parts[2].len() == 16
            && parts[3].len() == 2
            && parts
                .iter()
                .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
            && parts[1].bytes().any(|b| b != b'0')
            && parts[2].bytes().any(|b| b != b'0');
        ok.then(|| Self {
            traceparent: traceparent.trim().to_ascii_lowercase(),
            tracestate: tracestate.map(str::to_owned),
        })
    }

    /// The 32-hex-digit trace id.
    pub fn trace_id(&self) -> &str {
        self.traceparent.get(3..35).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_only_shrink() {
        let ctx = RequestContext::new().with_timeout(Duration::from_secs(1));
        let first = ctx.deadline.unwrap();
        let ctx = ctx.with_timeout(Duration::from_secs(10));
        assert_eq!(ctx.deadline, Some(first));
    }

    #[test]
    fn traceparent_is_validated() {
        let ok = TraceContext::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            None,
        )
        .unwrap();
        assert_eq!(ok.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(TraceContext::parse("00-0000-00f067aa0ba902b7-01", None).is_none());
        assert!(
            TraceContext::parse(
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                None
            )
            .is_none()
        );
    }

    #[test]
    fn request_ids_are_unique() {
        assert_ne!(
            RequestContext::new().request_id,
            RequestContext::new().request_id
        );
    }
}
