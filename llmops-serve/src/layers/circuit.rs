//! Circuit breaking per target.
//!
//! A [`Circuit`] watches one target's outcomes over a sliding window. It **opens** when
//! `consecutive_failures` calls in a row failed, or when at least `min_requests` calls in the
//! window failed at `failure_ratio` or more; while open, calls fail fast with a retryable
//! [`ErrorKind::Overloaded`] error (code `circuit_open`, carrying the time left) so routers
//! skip the target and fallbacks move on. After the cool-down the circuit is **half-open**:
//! one probe call goes through; its success closes the circuit, its failure opens it again.
//!
//! Rate limits and quotas are not failures of the target but reasons to leave it alone: a
//! 429 cools the target down for its `Retry-After` (or [`CircuitConfig::rate_limit_cooldown`]),
//! an exhausted quota for [`CircuitConfig::quota_cooldown`]. Errors caused by the request
//! (bad request, context length, content filter, cancellation) count for nothing.
//!
//! A stream counts when it ends: completed is a success, failed mid-way a failure, dropped
//! by the client nothing.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use llmops_core::service::BoxFuture;
use llmops_core::stream::{ObservedStream, StreamOutcome};
use llmops_core::{Error, ErrorKind, LlmRequest, LlmResponse, ResponseBody};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::balance::LoadSource;

/// When a circuit opens and for how long.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CircuitConfig {
    /// Failures in a row that open the circuit.
    pub consecutive_failures: u32,
    /// Failure share in the window that opens the circuit (with `min_requests`).
    pub failure_ratio: f64,
    /// Calls needed in the window before the ratio applies.
    pub min_requests: u32,
    /// The sliding window.
    pub window: Duration,
    /// How long an opened circuit stays open before a probe.
    pub cooldown: Duration,
    /// Cool-down after a 429 without `Retry-After`.
    pub rate_limit_cooldown: Duration,
    /// Cool-down after a quota or spend-limit error.
    pub quota_cooldown: Duration,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            min_requests: 10,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(30),
            rate_limit_cooldown: Duration::from_secs(1),
            quota_cooldown: Duration::from_secs(300),
        }
    }
}

/// A circuit's state, as observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// Calls fail fast until the instant.
    Open {
        /// When a probe will be allowed.
        until: Instant,
    },
    /// One probe is allowed (or in flight).
    HalfOpen,
}

/// How a call ended, for the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The target served the call.
    Success,
    /// The target failed.
    Failure,
    /// The target asked to be left alone for this long: a rate limit (`false`) or an
    /// exhausted quota (`true`).
    CoolDown(Duration, bool),
    /// Says nothing about the target (bad request, client went away).
    Neutral,
}

impl Outcome {
    /// The outcome an error means, under `cfg`.
    pub fn of_error(err: &Error, cfg: &CircuitConfig) -> Self {
        match err.kind() {
            ErrorKind::RateLimited => {
                Self::CoolDown(err.retry_after().unwrap_or(cfg.rate_limit_cooldown), false)
            }
            ErrorKind::QuotaExhausted => Self::CoolDown(cfg.quota_cooldown, true),
            _ if is_circuit_rejection(err) => Self::Neutral,
            ErrorKind::ServerError
            | ErrorKind::Overloaded
            | ErrorKind::Timeout
            | ErrorKind::Connect
            | ErrorKind::Decode
            | ErrorKind::StreamInterrupted { .. }
            | ErrorKind::Auth
            | ErrorKind::PermissionDenied
            | ErrorKind::ModelNotFound => Self::Failure,
            _ => Self::Neutral,
        }
    }
}

/// Why a circuit is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    Failures(&'static str),
    RateLimit,
    Quota,
}

#[derive(Debug)]
enum State {
    Closed,
    Open { until: Instant, cause: Cause },
    HalfOpen { probing: bool },
}

/// The code of errors raised by an open circuit (after failures).
pub const CODE_CIRCUIT_OPEN: &str = "circuit_open";
/// The code of errors raised while a target cools down after a rate-limit or quota answer.
pub const CODE_COOLING_DOWN: &str = "cooling_down";
/// The code of errors raised for a replica its health probe marked down.
pub const CODE_UNHEALTHY: &str = "replica_unhealthy";

/// Whether `err` was raised before any upstream call (an open circuit, a target cooling
/// down, a replica marked down): such a refusal is not an attempt.
pub fn is_circuit_rejection(err: &Error) -> bool {
    matches!(
        err.code(),
        CODE_CIRCUIT_OPEN | CODE_COOLING_DOWN | CODE_UNHEALTHY
    )
}

/// Refuses calls, without reaching the upstream, while a [`LoadSource`] reports the target
/// unavailable (a vLLM replica whose health probe fails). Routers that read the source
/// themselves ([`Balance`](super::balance::Balance)) skip such targets; this layer does the
/// same for fallback chains.
#[derive(Clone, Debug)]
pub struct HealthGateLayer {
    source: Arc<dyn LoadSource>,
    name: Arc<str>,
}

impl HealthGateLayer {
    /// Gates calls to target `name` on `source`.
    pub fn new(name: impl Into<Arc<str>>, source: Arc<dyn LoadSource>) -> Self {
        Self {
            source,
            name: name.into(),
        }
    }
}

impl<S> Layer<S> for HealthGateLayer {
    type Service = HealthGate<S>;
    fn layer(&self, inner: S) -> Self::Service {
        HealthGate {
            inner,
            gate: self.clone(),
        }
    }
}

/// The service of [`HealthGateLayer`].
#[derive(Clone, Debug)]
pub struct HealthGate<S> {
    inner: S,
    gate: HealthGateLayer,
}

impl<S> Service<LlmRequest> for HealthGate<S>
where
    S: Service<LlmRequest, Response = LlmResponse, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = LlmResponse;
    type Error = Error;
    type Future = BoxFuture<Result<LlmResponse, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: LlmRequest) -> Self::Future {
        if !self.gate.source.load().available {
            let err = Error::new(
                ErrorKind::Overloaded,
                format!(
                    "target `{}` is marked down by its health probe",
                    self.gate.name
                ),
            )
            .with_provider(self.gate.name.as_ref())
            .with_code(CODE_UNHEALTHY);
            return Box::pin(std::future::ready(Err(err)));
        }
        Box::pin(self.inner.call(req))
    }
}

#[derive(Debug)]
struct Inner {
    state: State,
    consecutive: u32,
    // (slot number, successes, failures), ten slots over the window.
    ring: [(u64, u32, u32); 10],
}

/// The breaker of one target. Share it (`Arc`) between the [`CircuitBreakerLayer`] and the
/// routers that want to skip open targets.
#[derive(Debug)]
pub struct Circuit {
    name: Arc<str>,
    cfg: CircuitConfig,
    epoch: Instant,
    inner: Mutex<Inner>,
}

impl Circuit {
    /// A closed circuit for target `name`.
    pub fn new(name: impl Into<Arc<str>>, cfg: CircuitConfig) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            cfg,
            epoch: Instant::now(),
            inner: Mutex::new(Inner {
                state: State::Closed,
                consecutive: 0,
                ring: [(u64::MAX, 0, 0); 10],
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The target's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current state (an open circuit whose cool-down ended reads as half-open).
    pub fn state(&self) -> CircuitState {
        match self.lock().state {
            State::Closed => CircuitState::Closed,
            State::Open { until, .. } if Instant::now() < until => CircuitState::Open { until },
            State::Open { .. } | State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Whether a call would be let through now (without taking the probe slot).
    pub fn is_available(&self) -> bool {
        match self.lock().state {
            State::Closed => true,
            State::Open { until, .. } => Instant::now() >= until,
            State::HalfOpen { probing } => !probing,
        }
    }

    /// Asks to make a call: `Ok` lets it through (taking the probe slot when half-open),
    /// `Err` is the fail-fast error.
    pub fn try_acquire(&self) -> Result<(), Error> {
        let mut g = self.lock();
        let now = Instant::now();
        match g.state {
            State::Closed => Ok(()),
            // A cool-down is the upstream's own schedule, not a suspicion: when it ends,
            // traffic resumes without a probe.
            State::Open {
                until,
                cause: Cause::RateLimit | Cause::Quota,
            } if now >= until => {
                g.state = State::Closed;
                Ok(())
            }
            State::Open { until, .. } if now >= until => {
                g.state = State::HalfOpen { probing: true };
                tracing::info!(target_name = %self.name, "circuit half-open: probing");
                Ok(())
            }
            State::HalfOpen { probing: false } => {
                g.state = State::HalfOpen { probing: true };
                Ok(())
            }
            State::Open { until, cause } => Err(self.open_error(cause, until - now)),
            State::HalfOpen { probing: true } => Err(self.open_error(
                Cause::Failures("a probe is in flight"),
                self.cfg.cooldown.min(Duration::from_secs(1)),
            )),
        }
    }

    fn open_error(&self, cause: Cause, left: Duration) -> Error {
        let (kind, code, why) = match cause {
            Cause::Failures(reason) => (ErrorKind::Overloaded, CODE_CIRCUIT_OPEN, reason),
            Cause::RateLimit => (
                ErrorKind::RateLimited,
                CODE_COOLING_DOWN,
                "cooling down after a rate-limit answer",
            ),
            Cause::Quota => (
                ErrorKind::QuotaExhausted,
                CODE_COOLING_DOWN,
                "cooling down after a quota answer",
            ),
        };
        Error::new(
            kind,
            format!(
                "target `{}` is not taking requests ({why}); next try in {} ms",
                self.name,
                left.as_millis()
            ),
        )
        .with_provider(self.name.as_ref())
        .with_code(code)
        .with_retry_after(left)
    }

    fn slot(&self) -> u64 {
        let len = (self.cfg.window.as_nanos() / 10).max(1);
        u64::try_from(self.epoch.elapsed().as_nanos() / len).unwrap_or(u64::MAX)
    }

    /// Records how a call ended.
    pub fn record(&self, outcome: Outcome) {
        let n = self.slot();
        let mut g = self.lock();
        let i = usize::try_from(n % 10).unwrap_or(0);
        if g.ring[i].0 != n {
            g.ring[i] = (n, 0, 0);
        }
        let half_open = matches!(g.state, State::HalfOpen { .. });
        match outcome {
            Outcome::Success => {
                g.ring[i].1 += 1;
                g.consecutive = 0;
                if half_open {
                    g.state = State::Closed;
                    g.ring = [(u64::MAX, 0, 0); 10];
                    tracing::info!(target_name = %self.name, "circuit closed: the probe succeeded");
                }
            }
            Outcome::Neutral => {
                if half_open {
                    g.state = State::HalfOpen { probing: false };
                }
            }
            Outcome::CoolDown(d, quota) => {
                let until = Instant::now() + d;
                let keep = matches!(g.state, State::Open { until: u, .. } if u >= until);
                if !keep {
                    let cause = if quota {
                        Cause::Quota
                    } else {
                        Cause::RateLimit
                    };
                    g.state = State::Open { until, cause };
                    tracing::info!(target_name = %self.name, cooldown_ms = d.as_millis() as u64, "target cooling down");
                }
            }
            Outcome::Failure => {
                g.ring[i].2 += 1;
                g.consecutive += 1;
                let (ok, failed) = g
                    .ring
                    .iter()
                    .filter(|(s, _, _)| *s != u64::MAX && n.saturating_sub(*s) < 10)
                    .fold((0u32, 0u32), |(a, b), (_, s, f)| (a + s, b + f));
                let total = ok + failed;
                let ratio_trip = total >= self.cfg.min_requests
                    && f64::from(failed) >= self.cfg.failure_ratio * f64::from(total);
                let streak_trip = g.consecutive >= self.cfg.consecutive_failures;
                if half_open || ratio_trip || streak_trip {
                    let reason = if half_open {
                        "the probe failed"
                    } else if streak_trip {
                        "consecutive failures"
                    } else {
                        "error ratio over the window"
                    };
                    g.state = State::Open {
                        until: Instant::now() + self.cfg.cooldown,
                        cause: Cause::Failures(reason),
                    };
                    g.consecutive = 0;
                    tracing::warn!(target_name = %self.name, reason, failed, total, "circuit opened");
                }
            }
        }
    }
}

/// Guards the inner service (one target) with a [`Circuit`].
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer {
    circuit: Arc<Circuit>,
}

impl CircuitBreakerLayer {
    /// A layer recording into and obeying `circuit`.
    pub fn new(circuit: Arc<Circuit>) -> Self {
        Self { circuit }
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            circuit: self.circuit.clone(),
        }
    }
}

/// The service of [`CircuitBreakerLayer`].
#[derive(Clone, Debug)]
pub struct CircuitBreaker<S> {
    inner: S,
    circuit: Arc<Circuit>,
}

impl<S> CircuitBreaker<S> {
    /// The circuit.
    pub fn circuit(&self) -> &Arc<Circuit> {
        &self.circuit
    }
}

impl<S> Service<LlmRequest> for CircuitBreaker<S>
where
    S: Service<LlmRequest, Response = LlmResponse, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = LlmResponse;
    type Error = Error;
    type Future = BoxFuture<Result<LlmResponse, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: LlmRequest) -> Self::Future {
        let inner = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, inner);
        let circuit = self.circuit.clone();
        Box::pin(async move {
            circuit.try_acquire()?;
            match inner.oneshot(req).await {
                Err(e) => {
                    circuit.record(Outcome::of_error(&e, &circuit.cfg));
                    Err(e)
                }
                Ok(mut resp) => {
                    resp.body = match resp.body {
                        ResponseBody::ChatStream(s) => {
                            let c = circuit.clone();
                            ResponseBody::ChatStream(
                                ObservedStream::new(s, move |sum| {
                                    c.record(match sum.outcome {
                                        StreamOutcome::Completed => Outcome::Success,
                                        StreamOutcome::Failed(e) => Outcome::of_error(&e, &c.cfg),
                                        _ => Outcome::Neutral,
                                    });
                                })
                                .boxed(),
                            )
                        }
                        other => {
                            circuit.record(Outcome::Success);
                            other
                        }
                    };
                    Ok(resp)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> CircuitConfig {
        CircuitConfig {
            consecutive_failures: 3,
            failure_ratio: 0.5,
            min_requests: 6,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(5),
            ..CircuitConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_a_streak_then_probes_and_closes() {
        let c = Circuit::new("t", cfg());
        for _ in 0..3 {
            c.try_acquire().unwrap();
            c.record(Outcome::Failure);
        }
        let err = c.try_acquire().unwrap_err();
        assert_eq!(err.code(), CODE_CIRCUIT_OPEN);
        assert!(is_circuit_rejection(&err));
        assert_eq!(err.retry_after(), Some(Duration::from_secs(5)));
        tokio::time::advance(Duration::from_secs(5)).await;
        c.try_acquire().unwrap();
        assert!(c.try_acquire().is_err(), "only one probe at a time");
        c.record(Outcome::Success);
        assert_eq!(c.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens() {
        let c = Circuit::new("t", cfg());
        for _ in 0..3 {
            c.record(Outcome::Failure);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        c.try_acquire().unwrap();
        c.record(Outcome::Failure);
        assert!(matches!(c.state(), CircuitState::Open { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_the_ratio_over_the_window_only() {
        let c = Circuit::new("t", cfg());
        // Alternating failures never make a streak of 3, but reach 50 % over 6 calls.
        for i in 0..5 {
            c.record(if i % 2 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            });
        }
        assert_eq!(c.state(), CircuitState::Closed);
        c.record(Outcome::Success);
        c.record(Outcome::Failure);
        assert!(matches!(c.state(), CircuitState::Open { .. }));
        // Old outcomes leave the window.
        let c = Circuit::new("t", cfg());
        for _ in 0..2 {
            c.record(Outcome::Failure);
            c.record(Outcome::Success);
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        for _ in 0..5 {
            c.record(Outcome::Success);
        }
        c.record(Outcome::Failure);
        assert_eq!(c.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limits_cool_down_for_their_retry_after() {
        let c = Circuit::new("t", cfg());
        let e = Error::new(ErrorKind::RateLimited, "x").with_retry_after(Duration::from_secs(2));
        c.record(Outcome::of_error(&e, &cfg()));
        assert!(!c.is_available());
        let rejected = c.try_acquire().unwrap_err();
        assert_eq!(
            (rejected.kind(), rejected.code()),
            (ErrorKind::RateLimited, CODE_COOLING_DOWN)
        );
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert!(!c.is_available());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(c.is_available());
        // After a cool-down every caller goes through, not just one probe.
        c.try_acquire().unwrap();
        c.try_acquire().unwrap();
        assert_eq!(c.state(), CircuitState::Closed);
        assert_eq!(
            Outcome::of_error(&Error::new(ErrorKind::InvalidRequest, "x"), &cfg()),
            Outcome::Neutral
        );
        assert_eq!(
            Outcome::of_error(&Error::new(ErrorKind::QuotaExhausted, "x"), &cfg()),
            Outcome::CoolDown(Duration::from_secs(300), true)
        );
    }
}
