//! Fallback chains: ordered targets, tried one after the other.
//!
//! [`Fallback`] calls its first target; when that fails with an error another target may fix
//! ([`Error::allows_fallback`]: quota, auth, model not found, context length, overload,
//! server errors, timeouts, and streams broken before their first content delta) it moves to
//! the next. Errors no target can fix (a malformed request, a policy refusal, a stream that
//! already delivered content) are returned at once. Put a [`RetryLayer`](super::retry) around
//! each target to retry transient errors on it before moving on.
//!
//! Streams commit on their first content delta ([`super::commit_stream`]), so a stream that
//! fails before any content falls back transparently; after it, the caller gets a clean
//! stream error.

use std::sync::Arc;
use std::task::{Context, Poll};

use llmops_core::service::BoxFuture;
use llmops_core::{BoxLlmService, Error, ErrorKind, LlmRequest, LlmResponse};
use tower::{Service, ServiceExt};

use super::AttemptLog;

/// An ordered chain of named targets.
#[derive(Clone)]
pub struct Fallback {
    targets: Arc<[(Arc<str>, BoxLlmService)]>,
    regions: Arc<[Option<Arc<str>>]>,
}

impl std::fmt::Debug for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.targets.iter().map(|(n, _)| n.as_ref()).collect();
        f.debug_struct("Fallback").field("targets", &names).finish()
    }
}

impl Fallback {
    /// A chain trying `targets` in order. Names label attempts in logs.
    pub fn new(targets: Vec<(String, BoxLlmService)>) -> Self {
        let regions = targets.iter().map(|_| None).collect();
        Self {
            targets: targets
                .into_iter()
                .map(|(n, s)| (Arc::from(n.as_str()), s))
                .collect(),
            regions,
        }
    }

    /// Sets each target's data-residency region, in chain order (builder style). Requests
    /// carrying [`AllowedRegions`](llmops_core::AllowedRegions) skip targets outside them — not
    /// an attempt — and fail with `residency_violation` when no target is left.
    #[must_use]
    pub fn with_regions(mut self, regions: Vec<Option<String>>) -> Self {
        self.regions = (0..self.targets.len())
            .map(|i| {
                regions
                    .get(i)
                    .cloned()
                    .flatten()
                    .map(|r| Arc::from(r.as_str()))
            })
            .collect();
        self
    }

    /// How many targets the chain has.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether the chain is empty (every call then fails).
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

impl Service<LlmRequest> for Fallback {
    type Response = LlmResponse;
    type Error = Error;
    type Future = BoxFuture<Result<LlmResponse, Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: LlmRequest) -> Self::Future {
        let targets = self.targets.clone();
        let regions = self.regions.clone();
        Box::pin(async move {
            let log = AttemptLog::of(&mut req.ctx);
            let mut last: Option<Error> = None;
            let allowed = req
                .ctx
                .extensions
                .get::<llmops_core::AllowedRegions>()
                .cloned();
            let permitted: Vec<usize> = (0..targets.len())
                .filter(|&i| {
                    allowed
                        .as_ref()
                        .is_none_or(|a| a.allows(regions[i].as_deref()))
                })
                .collect();
            if let Some(a) = &allowed
                && permitted.is_empty()
            {
                return Err(a.violation(req.model()));
            }
            let actx = super::AttemptContext::of(&req.ctx);
            // The last target gets the request itself; the others a copy.
            let mut req = Some(req);
            for (pos, &i) in permitted.iter().enumerate() {
                let (name, svc) = &targets[i];
                if actx
                    .deadline()
                    .is_some_and(|d| tokio::time::Instant::now() >= d)
                {
                    break;
                }
                let this = if pos + 1 == permitted.len() {
                    req.take()
                } else {
                    req.clone()
                };
                let Some(this) = this else { break };
                let call = svc.clone().oneshot(this);
                match super::attempt(&log, &actx, Some(name), call).await {
                    Ok(resp) => return Ok(resp),
                    Err(e) if e.allows_fallback() && pos + 1 < permitted.len() => {
                        tracing::warn!(
                            request_id = %actx.request_id(),
                            from = %name,
                            to = %targets[permitted[pos + 1]].0,
                            error = %e,
                            "falling back"
                        );
                        last = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(last.unwrap_or_else(|| {
                if targets.is_empty() {
                    Error::internal("the fallback chain has no targets")
                } else {
                    Error::new(
                        ErrorKind::Timeout,
                        "the request's deadline passed before any target answered",
                    )
                }
            }))
        })
    }
}
