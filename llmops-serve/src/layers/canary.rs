//! Canary releases: a share of traffic goes to a candidate target.
//!
//! [`Canary`] sends `share` of requests to the candidate and the rest to the current
//! pipeline. A canary request that fails with an error the current target may fix falls back
//! to it, so a broken candidate costs latency, not errors. Answers from the candidate carry
//! the header `x-llmops-route: canary` (and `current` otherwise), so clients and logs can
//! tell them apart.

use std::task::{Context, Poll};

use http::HeaderValue;
use llmops_core::service::BoxFuture;
use llmops_core::{BoxLlmService, Error, LlmRequest, LlmResponse};
use rand::Rng;
use tower::{Service, ServiceExt};

use super::AttemptLog;

/// Header naming the route a request took (`current` or `canary`).
pub const HEADER_ROUTE: &str = "x-llmops-route";

/// A weighted split between the current pipeline and a candidate.
#[derive(Clone, Debug)]
pub struct Canary {
    current: BoxLlmService,
    candidate: BoxLlmService,
    share: f64,
}

impl Canary {
    /// Sends `share` (0–1) of requests to `candidate`, the rest to `current`.
    pub fn new(current: BoxLlmService, candidate: BoxLlmService, share: f64) -> Self {
        Self {
            current,
            candidate,
            share: if share.is_finite() {
                share.clamp(0.0, 1.0)
            } else {
                0.0
            },
        }
    }
}

fn mark(mut resp: LlmResponse, route: &'static str) -> LlmResponse {
    resp.meta
        .headers
        .insert(HEADER_ROUTE, HeaderValue::from_static(route));
    resp
}

impl Service<LlmRequest> for Canary {
    type Response = LlmResponse;
    type Error = Error;
    type Future = BoxFuture<Result<LlmResponse, Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: LlmRequest) -> Self::Future {
        let current = self.current.clone();
        let candidate = self.candidate.clone();
        let to_canary = self.share > 0.0 && rand::rng().random_bool(self.share);
        Box::pin(async move {
            let log = AttemptLog::of(&mut req.ctx);
            let actx = super::AttemptContext::of(&req.ctx);
            if to_canary {
                let call = candidate.oneshot(req.clone());
                match super::attempt(&log, &actx, None, call).await {
                    Ok(resp) => return Ok(mark(resp, "canary")),
                    Err(e) if e.allows_fallback() => {
                        tracing::warn!(request_id = %req.ctx.request_id, error = %e, "canary failed: serving from the current target");
                    }
                    Err(e) => return Err(e),
                }
            }
            super::attempt(&log, &actx, None, current.oneshot(req))
                .await
                .map(|r| mark(r, "current"))
        })
    }
}
