//! Retries of transient failures.
//!
//! [`RetryLayer`] retries a failed call when its error is retryable
//! ([`Error::retryability`]): rate limits, overload, 5xx, timeouts, connection failures,
//! undecodable answers and streams broken before their first content delta. Quota errors,
//! bad requests and streams broken after content are never retried. Between attempts it
//! waits a full-jitter exponential backoff (`rand(0, min(cap, base·2ⁿ))`), or exactly the
//! upstream's `Retry-After` when it sent one (never sooner). It gives up when the attempts
//! are used up, when the wait would pass the request's deadline, when `Retry-After` is longer
//! than [`RetryPolicy::max_retry_after`], or when the [`RetryBudget`] is spent — a cap on
//! retries as a share of traffic, so an outage does not multiply the load on a struggling
//! upstream.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use llmops_core::service::BoxFuture;
use llmops_core::{Error, ErrorKind, LlmRequest, LlmResponse, Retryability};
use rand::Rng;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::AttemptLog;

/// When and how often to retry.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Backoff base: the first retry waits up to this long.
    pub base_backoff: Duration,
    /// Backoff cap.
    pub max_backoff: Duration,
    /// Longest `Retry-After` worth waiting for; a longer one fails the call at once (so a
    /// fallback can take it).
    pub max_retry_after: Duration,
    /// Whether an overloaded upstream (503, Anthropic 529) is retried. A fallback chain turns
    /// this off for all but its last target, so overload moves on instead of waiting.
    pub retry_overloaded: bool,
    /// The budget shared by the calls of this policy, if any.
    pub budget: Option<Arc<RetryBudget>>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(30),
            retry_overloaded: true,
            budget: None,
        }
    }
}

impl RetryPolicy {
    /// The default policy with `max_attempts` attempts.
    pub fn new(max_attempts: u32) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            ..Self::default()
        }
    }

    /// Sets the backoff base and cap (builder style).
    #[must_use]
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.base_backoff = base;
        self.max_backoff = max.max(base);
        self
    }

    /// Sets the longest `Retry-After` worth waiting for (builder style).
    #[must_use]
    pub fn max_retry_after(mut self, d: Duration) -> Self {
        self.max_retry_after = d;
        self
    }

    /// Sets whether overload is retried (builder style).
    #[must_use]
    pub fn retry_overloaded(mut self, yes: bool) -> Self {
        self.retry_overloaded = yes;
        self
    }

    /// Shares `budget` between the calls of this policy (builder style).
    #[must_use]
    pub fn budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// How long to wait before retrying after `err` on attempt `attempt` (1-based), or
    /// `None` when the error must not be retried (budget and deadline aside).
    pub fn delay(&self, err: &Error, attempt: u32) -> Option<Duration> {
        // Refusals made without calling the upstream are not retried in place: waiting out a
        // circuit's cool-down would hold the request for the whole of it.
        if attempt >= self.max_attempts
            || matches!(
                err.code(),
                super::circuit::CODE_CIRCUIT_OPEN
                    | super::circuit::CODE_UNHEALTHY
                    | super::balance::CODE_NO_TARGET
            )
        {
            return None;
        }
        match err.retryability() {
            Retryability::RetryAfter(d) => (d <= self.max_retry_after).then_some(d),
            Retryability::Retry => {
                if err.kind() == ErrorKind::Overloaded && !self.retry_overloaded {
                    return None;
                }
                if let Some(d) = err.retry_after() {
                    return (d <= self.max_retry_after).then_some(d);
                }
                let exp = self
                    .base_backoff
                    .saturating_mul(1u32 << (attempt - 1).min(20));
                let cap = exp.min(self.max_backoff);
                let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
                Some(Duration::from_nanos(rand::rng().random_range(0..=nanos)))
            }
            _ => None,
        }
    }
}

/// A cap on retries as a share of requests over a sliding window: at most
/// `min_per_second × window + ratio × requests` retries in any window (Finagle's and tower's
/// retry budget; defaults 20 % and 10/s over 10 s).
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_second: f64,
    window: Duration,
    slots: Mutex<Slots>,
}

#[derive(Debug)]
struct Slots {
    epoch: Instant,
    // (slot number, requests, retries), ten slots over the window.
    ring: [(u64, u64, u64); 10],
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new(0.2, 10.0, Duration::from_secs(10))
    }
}

impl RetryBudget {
    /// A budget allowing `ratio` retries per request plus `min_per_second` retries per
    /// second, over a sliding `window`.
    pub fn new(ratio: f64, min_per_second: f64, window: Duration) -> Self {
        Self {
            ratio: ratio.max(0.0),
            min_per_second: min_per_second.max(0.0),
            window: window.max(Duration::from_millis(10)),
            slots: Mutex::new(Slots {
                epoch: Instant::now(),
                ring: [(u64::MAX, 0, 0); 10],
            }),
        }
    }

    fn with_slot<R>(
        &self,
        f: impl FnOnce(&mut (u64, u64, u64), u64, &[(u64, u64, u64); 10]) -> R,
    ) -> R {
        let mut s = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot_len = self.window.as_nanos() / 10;
        let n = u64::try_from(s.epoch.elapsed().as_nanos() / slot_len.max(1)).unwrap_or(u64::MAX);
        let i = usize::try_from(n % 10).unwrap_or(0);
        if s.ring[i].0 != n {
            s.ring[i] = (n, 0, 0);
        }
        let snapshot = s.ring;
        f(&mut s.ring[i], n, &snapshot)
    }

    /// Records a request (call once per original request).
    pub fn deposit(&self) {
        self.with_slot(|slot, _, _| slot.1 += 1);
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn withdraw(&self) -> bool {
        let (ratio, floor) = (self.ratio, self.min_per_second * self.window.as_secs_f64());
        self.with_slot(|slot, n, ring| {
            let live = ring
                .iter()
                .filter(|(s, _, _)| *s != u64::MAX && n.saturating_sub(*s) < 10);
            let (reqs, retries) = live.fold((0u64, 0u64), |(a, b), (_, r, t)| (a + r, b + t));
            #[allow(clippy::cast_precision_loss)]
            let allowed = floor + ratio * reqs as f64;
            #[allow(clippy::cast_precision_loss)]
            if (retries as f64) < allowed {
                slot.2 += 1;
                true
            } else {
                false
            }
        })
    }
}

/// Retries the inner service per a [`RetryPolicy`].
#[derive(Clone, Debug)]
pub struct RetryLayer {
    policy: Arc<RetryPolicy>,
}

impl RetryLayer {
    /// A layer applying `policy`.
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
        }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = RetryService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RetryService {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service of [`RetryLayer`].
#[derive(Clone, Debug)]
pub struct RetryService<S> {
    inner: S,
    policy: Arc<RetryPolicy>,
}

impl<S> Service<LlmRequest> for RetryService<S>
where
    S: Service<LlmRequest, Response = LlmResponse, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = LlmResponse;
    type Error = Error;
    type Future = BoxFuture<Result<LlmResponse, Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: LlmRequest) -> Self::Future {
        let inner = self.inner.clone();
        let policy = self.policy.clone();
        Box::pin(async move {
            let log = AttemptLog::of(&mut req.ctx);
            if let Some(b) = &policy.budget {
                b.deposit();
            }
            let actx = super::AttemptContext::of(&req.ctx);
            let mut attempt = 1u32;
            loop {
                let svc = inner.clone();
                // The last attempt the policy allows gets the request itself, not a copy.
                if attempt >= policy.max_attempts {
                    return super::attempt(&log, &actx, None, svc.oneshot(req)).await;
                }
                let result = super::attempt(&log, &actx, None, svc.oneshot(req.clone())).await;
                let err = match result {
                    Ok(resp) => return Ok(resp),
                    Err(e) => e,
                };
                let Some(delay) = policy.delay(&err, attempt) else {
                    return Err(err);
                };
                if let Some(left) = super::time_left(&req)
                    && delay >= left
                {
                    tracing::debug!(request_id = %req.ctx.request_id, "no retry: the wait would pass the deadline");
                    return Err(err);
                }
                if let Some(b) = &policy.budget
                    && !b.withdraw()
                {
                    tracing::warn!(request_id = %req.ctx.request_id, error = %err, "retry budget exhausted: not retrying");
                    return Err(err);
                }
                tracing::debug!(
                    request_id = %req.ctx.request_id,
                    attempt,
                    delay_ms = delay.as_millis() as u64,
                    error = %err,
                    "retrying"
                );
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                attempt += 1;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_full_jitter_and_capped() {
        let p = RetryPolicy::new(10).backoff(Duration::from_millis(100), Duration::from_secs(1));
        let e = Error::new(ErrorKind::ServerError, "x");
        for attempt in 1..9 {
            for _ in 0..50 {
                let d = p.delay(&e, attempt).unwrap();
                let cap =
                    Duration::from_millis(100 * (1 << (attempt - 1))).min(Duration::from_secs(1));
                assert!(d <= cap, "attempt {attempt}: {d:?} > {cap:?}");
            }
        }
        assert!(p.delay(&e, 10).is_none(), "attempts are capped");
    }

    #[test]
    fn what_is_never_retried() {
        let p = RetryPolicy::new(5);
        for kind in [
            ErrorKind::QuotaExhausted,
            ErrorKind::InvalidRequest,
            ErrorKind::Auth,
            ErrorKind::ContextLengthExceeded,
            ErrorKind::StreamInterrupted {
                after_first_event: true,
            },
        ] {
            assert!(p.delay(&Error::new(kind, "x"), 1).is_none(), "{kind:?}");
        }
        let rl = Error::new(ErrorKind::RateLimited, "x").with_retry_after(Duration::from_secs(1));
        assert_eq!(p.delay(&rl, 1), Some(Duration::from_secs(1)));
        let long =
            Error::new(ErrorKind::RateLimited, "x").with_retry_after(Duration::from_secs(600));
        assert_eq!(p.delay(&long, 1), None);
        let over = Error::new(ErrorKind::Overloaded, "x");
        assert!(p.delay(&over, 1).is_some());
        assert!(p.clone().retry_overloaded(false).delay(&over, 1).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn budget_caps_retries_as_a_share_of_requests() {
        let b = RetryBudget::new(0.2, 0.0, Duration::from_secs(10));
        for _ in 0..100 {
            b.deposit();
        }
        let granted = (0..100).filter(|_| b.withdraw()).count();
        assert_eq!(granted, 20);
        // Deposits and withdrawals expire with the window.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!b.withdraw());
        b.deposit();
        b.deposit();
        b.deposit();
        b.deposit();
        b.deposit();
        assert!(b.withdraw());
        assert!(!b.withdraw());
    }
}
