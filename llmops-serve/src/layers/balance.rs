//! Load balancing across deployments of one model.
//!
//! [`Balance`] holds [`Endpoint`]s — a target's service plus its load counters, its circuit
//! and, for vLLM replicas, a [`LoadSource`] fed by the `/metrics` scraper and health probes.
//! For each call it builds the list of [`Candidate`]s (endpoints whose circuit lets calls
//! through and whose replica is healthy, preferring those this request has not tried yet)
//! and asks a [`Selector`] to choose:
//!
//! - [`WeightedRandom`] — by configured weights (also the canary split);
//! - [`LeastOutstanding`] — fewest calls in flight, plus the replica's reported queue;
//! - [`PeakEwmaP2c`] — power of two choices on peak-EWMA latency × (in flight + 1), scaled by
//!   the replica's queue depth and KV-cache usage. Latency is measured to the **end** of a
//!   stream, not to its headers: a replica that answers headers fast but decodes slowly is
//!   slow.
//!
//! The selector is a trait so other strategies (prefix-aware routing) reuse the candidate
//! list, the load signals and the call bookkeeping. When the chosen endpoint fails with an
//! error another endpoint may fix (a rate limit, overload, a 5xx, a quota, an open circuit,
//! ...), the next candidate not yet tried takes the request at once: each call tries every
//! available endpoint at most once. When all of them failed, the error goes to an outer
//! [`RetryLayer`](super::retry), which backs off and starts another round.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use llmops_core::service::BoxFuture;
use llmops_core::stream::{ObservedStream, StreamOutcome};
use llmops_core::{BoxLlmService, Error, ErrorKind, LlmRequest, LlmResponse, ResponseBody};
use rand::Rng;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use super::AttemptLog;
use super::circuit::{Circuit, CircuitState};

/// Load reported by the upstream itself (a vLLM replica's probes).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct ExternalLoad {
    /// Whether the replica accepts traffic (its health probe passes).
    pub available: bool,
    /// Requests waiting in the replica's queue.
    pub queue_depth: Option<f64>,
    /// Requests the replica is running.
    pub running: Option<f64>,
    /// KV-cache usage, 0–1.
    pub kv_cache_usage: Option<f64>,
    /// Prompt tokens looked up in the replica's prefix cache since it started (a counter:
    /// when it goes down, the replica restarted and its cache is empty).
    pub prefix_cache_queries: Option<f64>,
    /// Prompt tokens found in the replica's prefix cache since it started (a counter).
    pub prefix_cache_hits: Option<f64>,
}

impl Default for ExternalLoad {
    fn default() -> Self {
        Self {
            available: true,
            queue_depth: None,
            running: None,
            kv_cache_usage: None,
            prefix_cache_queries: None,
            prefix_cache_hits: None,
        }
    }
}

/// A source of [`ExternalLoad`] for one endpoint.
pub trait LoadSource: Send + Sync + fmt::Debug + 'static {
    /// The current load.
    fn load(&self) -> ExternalLoad;
}

/// The code of the error a balancer answers when no endpoint is available; it carries the
/// time until the first circuit may let calls through again.
pub const CODE_NO_TARGET: &str = "no_available_target";

/// Time constant of the latency estimate's decay.
const DECAY: Duration = Duration::from_secs(10);

/// Calls in flight and peak-EWMA latency of one endpoint.
#[derive(Debug)]
pub struct EndpointStats {
    outstanding: AtomicU64,
    ewma: Mutex<Option<(f64, Instant)>>,
}

impl Default for EndpointStats {
    fn default() -> Self {
        Self {
            outstanding: AtomicU64::new(0),
            ewma: Mutex::new(None),
        }
    }
}

impl EndpointStats {
    /// Calls (and streams) in flight.
    pub fn outstanding(&self) -> u64 {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// The peak-EWMA latency estimate, decayed to now; `None` before the first measurement.
    pub fn latency(&self) -> Option<Duration> {
        let g = self
            .ewma
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.map(|(ns, at)| {
            let decay = (-at.elapsed().as_secs_f64() / DECAY.as_secs_f64()).exp();
            Duration::from_nanos((ns * decay) as u64)
        })
    }

    /// Records a completed call's latency: a sample above the estimate replaces it (peak),
    /// one below moves it by an exponentially weighted average.
    pub fn observe(&self, rtt: Duration) {
        let now = Instant::now();
        let sample = rtt.as_nanos() as f64;
        let mut g = self
            .ewma
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = match *g {
            None => sample,
            Some((ns, at)) => {
                let w = (-(now - at).as_secs_f64() / DECAY.as_secs_f64()).exp();
                let decayed = ns * w;
                if sample > decayed {
                    sample
                } else {
                    decayed * w + sample * (1.0 - w)
                }
            }
        };
        *g = Some((next, now));
    }

    fn start(self: &Arc<Self>) -> InFlight {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight {
            stats: self.clone(),
            start: Instant::now(),
            done: false,
        }
    }
}

/// One call in flight; counted down exactly once.
struct InFlight {
    stats: Arc<EndpointStats>,
    start: Instant,
    done: bool,
}

impl InFlight {
    fn finish(mut self, sample: Option<Duration>) {
        self.done = true;
        self.stats.outstanding.fetch_sub(1, Ordering::Relaxed);
        if let Some(s) = sample {
            self.stats.observe(s);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            self.stats.outstanding.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One deployment of a model.
#[derive(Clone)]
pub struct Endpoint {
    name: Arc<str>,
    region: Option<Arc<str>>,
    service: BoxLlmService,
    weight: u32,
    stats: Arc<EndpointStats>,
    circuit: Option<Arc<Circuit>>,
    load: Option<Arc<dyn LoadSource>>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("weight", &self.weight)
            .field("outstanding", &self.stats.outstanding())
            .finish()
    }
}

impl Endpoint {
    /// An endpoint named `name` (the target, as in `x-llmops-provider`) calling `service`.
    pub fn new(name: impl Into<Arc<str>>, service: BoxLlmService) -> Self {
        Self {
            name: name.into(),
            region: None,
            service,
            weight: 1,
            stats: Arc::new(EndpointStats::default()),
            circuit: None,
            load: None,
        }
    }

    /// Sets the endpoint's data-residency region (builder style). Requests carrying
    /// [`AllowedRegions`](llmops_core::AllowedRegions) only go to endpoints in those regions.
    #[must_use]
    pub fn with_region(mut self, region: Option<&str>) -> Self {
        self.region = region.map(Arc::from);
        self
    }

    /// Sets the weight for weighted selection (builder style).
    #[must_use]
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Skips the endpoint while `circuit` is open (builder style). The circuit is fed by a
    /// [`CircuitBreakerLayer`](super::circuit::CircuitBreakerLayer) inside `service`.
    #[must_use]
    pub fn with_circuit(mut self, circuit: Arc<Circuit>) -> Self {
        self.circuit = Some(circuit);
        self
    }

    /// Uses the upstream's own load report (builder style).
    #[must_use]
    pub fn with_load_source(mut self, load: Arc<dyn LoadSource>) -> Self {
        self.load = Some(load);
        self
    }

    /// The endpoint's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its counters.
    pub fn stats(&self) -> &Arc<EndpointStats> {
        &self.stats
    }

    /// Its upstream-reported load (default when it has no source).
    pub fn external_load(&self) -> ExternalLoad {
        self.load.as_ref().map(|l| l.load()).unwrap_or_default()
    }

    fn available(&self) -> bool {
        self.circuit.as_ref().is_none_or(|c| c.is_available()) && self.external_load().available
    }
}

/// What a [`Selector`] sees of an endpoint.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Candidate<'a> {
    /// Index of the endpoint in the balancer.
    pub index: usize,
    /// The endpoint's name.
    pub name: &'a str,
    /// Its configured weight.
    pub weight: u32,
    /// Calls in flight through this balancer.
    pub outstanding: u64,
    /// Peak-EWMA latency (to stream end), `None` before the first measurement.
    pub latency: Option<Duration>,
    /// The upstream's own load report.
    pub external: ExternalLoad,
}

/// Chooses an endpoint among candidates (never empty).
pub trait Selector: Send + Sync + fmt::Debug + 'static {
    /// The position in `candidates` of the chosen one.
    fn select(&self, req: &LlmRequest, candidates: &[Candidate<'_>]) -> usize;
}

/// Random choice proportional to weights (weight 0 is only chosen when all are 0).
#[derive(Clone, Copy, Debug, Default)]
pub struct WeightedRandom;

impl Selector for WeightedRandom {
    fn select(&self, _req: &LlmRequest, c: &[Candidate<'_>]) -> usize {
        let total: u64 = c.iter().map(|c| u64::from(c.weight)).sum();
        let mut rng = rand::rng();
        if total == 0 {
            return rng.random_range(0..c.len());
        }
        let mut pick = rng.random_range(0..total);
        for (i, cand) in c.iter().enumerate() {
            let w = u64::from(cand.weight);
            if pick < w {
                return i;
            }
            pick -= w;
        }
        c.len() - 1
    }
}

/// Fewest calls in flight (plus the replica's reported queue); ties broken at random.
#[derive(Clone, Copy, Debug, Default)]
pub struct LeastOutstanding;

impl Selector for LeastOutstanding {
    fn select(&self, _req: &LlmRequest, c: &[Candidate<'_>]) -> usize {
        let score =
            |c: &Candidate<'_>| c.outstanding as f64 + c.external.queue_depth.unwrap_or(0.0);
        let best = c.iter().map(score).fold(f64::INFINITY, f64::min);
        let ties: Vec<usize> = (0..c.len()).filter(|i| score(&c[*i]) <= best).collect();
        ties[rand::rng().random_range(0..ties.len())]
    }
}

/// Power of two choices on peak-EWMA latency.
///
/// An endpoint not measured yet is assumed as fast as the fastest measured one (or
/// `default_latency` when none is), so every endpoint gets tried: a fast replica that lost the
/// first draw is not starved behind a slow one that won it.
#[derive(Clone, Copy, Debug)]
pub struct PeakEwmaP2c {
    /// The latency assumed when no endpoint is measured yet.
    pub default_latency: Duration,
}

impl Default for PeakEwmaP2c {
    fn default() -> Self {
        Self {
            default_latency: Duration::from_millis(50),
        }
    }
}

impl PeakEwmaP2c {
    /// The cost of a candidate: latency × (in flight + 1) × (1 + queue) × (1 + KV usage),
    /// with `unmeasured` as the latency of an endpoint not measured yet.
    pub fn cost(&self, c: &Candidate<'_>, unmeasured: Duration) -> f64 {
        let lat = c.latency.unwrap_or(unmeasured).as_secs_f64().max(1e-6);
        let queue = 1.0 + c.external.queue_depth.unwrap_or(0.0).max(0.0);
        let kv = 1.0 + c.external.kv_cache_usage.unwrap_or(0.0).clamp(0.0, 1.0);
        lat * (c.outstanding as f64 + 1.0) * queue * kv
    }
}

impl Selector for PeakEwmaP2c {
    fn select(&self, _req: &LlmRequest, c: &[Candidate<'_>]) -> usize {
        if c.len() == 1 {
            return 0;
        }
        let mut rng = rand::rng();
        let a = rng.random_range(0..c.len());
        let mut b = rng.random_range(0..c.len() - 1);
        if b >= a {
            b += 1;
        }
        let unmeasured = c
            .iter()
            .filter_map(|c| c.latency)
            .min()
            .unwrap_or(self.default_latency);
        let (ca, cb) = (self.cost(&c[a], unmeasured), self.cost(&c[b], unmeasured));
        if ca < cb || (ca == cb && rng.random_bool(0.5)) {
            a
        } else {
            b
        }
    }
}

/// The built-in strategies, by their configuration names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Strategy {
    /// `weighted`: [`WeightedRandom`].
    Weighted,
    /// `least-outstanding`: [`LeastOutstanding`].
    LeastOutstanding,
    /// `least-latency`: [`PeakEwmaP2c`].
    LeastLatency,
}

impl Strategy {
    /// The strategy's selector.
    pub fn selector(self) -> Arc<dyn Selector> {
        match self {
            Self::Weighted => Arc::new(WeightedRandom),
            Self::LeastOutstanding => Arc::new(LeastOutstanding),
            Self::LeastLatency => Arc::new(PeakEwmaP2c::default()),
        }
    }
}

/// A balancer over endpoints. Cheap to clone (clones share the counters).
#[derive(Clone)]
pub struct Balance {
    endpoints: Arc<[Endpoint]>,
    selector: Arc<dyn Selector>,
}

impl fmt::Debug for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("endpoints", &self.endpoints)
            .field("selector", &self.selector)
            .finish()
    }
}

impl Balance {
    /// A balancer choosing among `endpoints` with `selector`.
    pub fn new(endpoints: Vec<Endpoint>, selector: Arc<dyn Selector>) -> Self {
        Self {
            endpoints: endpoints.into(),
            selector,
        }
    }

    /// A balancer with a built-in strategy.
    pub fn with_strategy(endpoints: Vec<Endpoint>, strategy: Strategy) -> Self {
        Self::new(endpoints, strategy.selector())
    }

    /// The endpoints.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The endpoints a call may go to now: available ones, preferring those not yet tried
    /// for this request (by the attempt log), all available ones when every one was tried.
    pub fn candidates(&self, log: Option<&AttemptLog>) -> Vec<Candidate<'_>> {
        let make = |skip_tried: bool| -> Vec<Candidate<'_>> {
            self.endpoints
                .iter()
                .enumerate()
                .filter(|(_, e)| e.available())
                .filter(|(_, e)| !skip_tried || log.is_none_or(|l| !l.tried(&e.name)))
                .map(|(index, e)| Candidate {
                    index,
                    name: &e.name,
                    weight: e.weight,
                    outstanding: e.stats.outstanding(),
                    latency: e.stats.latency(),
                    external: e.external_load(),
                })
                .collect()
        };
        let fresh = make(true);
        if fresh.is_empty() { make(false) } else { fresh }
    }

    /// Chooses the endpoint for `req` (an index into [`endpoints`](Self::endpoints)), or
    /// `None` when none is available.
    pub fn pick(&self, req: &LlmRequest) -> Option<usize> {
        let log = req.ctx.extensions.get::<AttemptLog>();
        let mut c = self.candidates(log);
        if let Some(allowed) = req.ctx.extensions.get::<llmops_core::AllowedRegions>() {
            c.retain(|cand| allowed.allows(self.endpoints[cand.index].region.as_deref()));
        }
        if c.is_empty() {
            return None;
        }
        let i = self.selector.select(req, &c).min(c.len() - 1);
        Some(c[i].index)
    }

    fn unavailable(&self) -> Error {
        let now = Instant::now();
        let wait = self
            .endpoints
            .iter()
            .filter_map(|e| match e.circuit.as_ref().map(|c| c.state()) {
                Some(CircuitState::Open { until }) => Some(until.saturating_duration_since(now)),
                _ => None,
            })
            .min();
        let names: Vec<&str> = self.endpoints.iter().map(|e| e.name.as_ref()).collect();
        let err = Error::new(
            ErrorKind::Overloaded,
            format!(
                "no target is available (circuits open or replicas unhealthy): {}",
                names.join(", ")
            ),
        )
        .with_code(CODE_NO_TARGET);
        match wait {
            Some(w) => err.with_retry_after(w),
            None => err,
        }
    }
}

impl Service<LlmRequest> for Balance {
    type Response = LlmResponse;
    type Error = Error;
    type Future = BoxFuture<Result<LlmResponse, Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: LlmRequest) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let log = AttemptLog::of(&mut req.ctx);
            let mut tries = 0;
            loop {
                tries += 1;
                let Some(i) = this.pick(&req) else {
                    if let Some(allowed) = req.ctx.extensions.get::<llmops_core::AllowedRegions>()
                        && !this
                            .endpoints
                            .iter()
                            .any(|e| allowed.allows(e.region.as_deref()))
                    {
                        return Err(allowed.violation(req.model()));
                    }
                    return Err(this.unavailable());
                };
                let ep = &this.endpoints[i];
                let flight = ep.stats.start();
                let call = ep.service.clone().oneshot(req.clone());
                match super::attempt(
                    &log,
                    &super::AttemptContext::of(&req.ctx),
                    Some(&ep.name),
                    call,
                )
                .await
                {
                    Ok(mut resp) => {
                        resp.body = match resp.body {
                            ResponseBody::ChatStream(s) => ResponseBody::ChatStream(
                                ObservedStream::new(s, move |sum| {
                                    let sample = match sum.outcome {
                                        StreamOutcome::Completed => Some(flight.start.elapsed()),
                                        StreamOutcome::Failed(_) => {
                                            Some(penalty(flight.start.elapsed()))
                                        }
                                        _ => None,
                                    };
                                    flight.finish(sample);
                                })
                                .boxed(),
                            ),
                            other => {
                                let rtt = flight.start.elapsed();
                                flight.finish(Some(rtt));
                                other
                            }
                        };
                        return Ok(resp);
                    }
                    Err(e) => {
                        let elapsed = flight.start.elapsed();
                        flight.finish(Some(penalty(elapsed)));
                        // Any failure another endpoint may fix (rate limit, overload, 5xx,
                        // quota, an open circuit, ...) moves on to the next candidate at once;
                        // once every endpoint failed, the outer retry layer backs off.
                        let move_on =
                            e.allows_fallback() || super::circuit::is_circuit_rejection(&e);
                        if move_on && tries < this.endpoints.len() {
                            tracing::debug!(request_id = %req.ctx.request_id, endpoint = %ep.name, error = %e, "trying another endpoint");
                            continue;
                        }
                        return Err(e);
                    }
                }
            }
        })
    }
}

/// The latency sample recorded for a failed call: at least a second, so that a target that
/// fails fast does not look fast.
fn penalty(elapsed: Duration) -> Duration {
    elapsed.max(Duration::from_secs(1))
}

/// Renders the endpoints' load as Prometheus text, for autoscalers (KEDA, HPA through an
/// adapter) and dashboards: per target, the upstream's queue depth, running requests,
/// KV-cache usage and availability, and the calls in flight through this gateway.
pub fn render_autoscaling_metrics(model: &str, balance: &Balance) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for ep in balance.endpoints() {
        let l = ep.external_load();
        let labels = format!(
            "{{model=\"{}\",target=\"{}\"}}",
            escape(model),
            escape(&ep.name)
        );
        let _ = writeln!(
            out,
            "llmops_upstream_in_flight{labels} {}",
            ep.stats.outstanding()
        );
        let _ = writeln!(
            out,
            "llmops_upstream_available{labels} {}",
            u8::from(ep.available())
        );
        if let Some(q) = l.queue_depth {
            let _ = writeln!(out, "llmops_upstream_queue_depth{labels} {q}");
        }
        if let Some(r) = l.running {
            let _ = writeln!(out, "llmops_upstream_running{labels} {r}");
        }
        if let Some(kv) = l.kv_cache_usage {
            let _ = writeln!(out, "llmops_upstream_kv_cache_usage{labels} {kv}");
        }
        if let Some(lat) = ep.stats.latency() {
            let _ = writeln!(
                out,
                "llmops_upstream_latency_ewma_seconds{labels} {}",
                lat.as_secs_f64()
            );
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmops_core::{ChatRequest, Message, RequestContext};

    fn req() -> LlmRequest {
        LlmRequest::chat(
            RequestContext::new(),
            ChatRequest::new("m", vec![Message::user("x")]),
        )
    }

    fn cand(
        index: usize,
        outstanding: u64,
        latency_ms: Option<u64>,
        queue: Option<f64>,
    ) -> Candidate<'static> {
        Candidate {
            index,
            name: "e",
            weight: 1,
            outstanding,
            latency: latency_ms.map(Duration::from_millis),
            external: ExternalLoad {
                queue_depth: queue,
                ..ExternalLoad::default()
            },
        }
    }

    #[test]
    fn p2c_prefers_the_cheaper_of_two() {
        let s = PeakEwmaP2c::default();
        let c = [cand(0, 0, Some(200), None), cand(1, 0, Some(5), None)];
        for _ in 0..100 {
            assert_eq!(s.select(&req(), &c), 1);
        }
        // A deep vLLM queue outweighs a latency edge.
        let c = [cand(0, 0, Some(10), None), cand(1, 0, Some(5), Some(9.0))];
        assert_eq!(s.select(&req(), &c), 0);
        // Many calls in flight outweigh it too.
        let c = [cand(0, 0, Some(20), None), cand(1, 10, Some(5), None)];
        assert_eq!(s.select(&req(), &c), 0);
        // An endpoint not measured yet is tried against a measured slow one (it is assumed
        // as fast as the fastest measured: a tie, broken at random).
        let c = [cand(0, 0, Some(40), None), cand(1, 0, None, None)];
        let tried = (0..400).filter(|_| s.select(&req(), &c) == 1).count();
        assert!((100..300).contains(&tried), "{tried}");
    }

    #[test]
    fn least_outstanding_counts_the_replica_queue() {
        let c = [cand(0, 2, None, Some(5.0)), cand(1, 3, None, None)];
        for _ in 0..20 {
            assert_eq!(LeastOutstanding.select(&req(), &c), 1);
        }
    }

    #[test]
    fn weighted_follows_weights() {
        let mut c = [cand(0, 0, None, None), cand(1, 0, None, None)];
        c[0].weight = 3;
        c[1].weight = 1;
        let n = 4000;
        let first = (0..n)
            .filter(|_| WeightedRandom.select(&req(), &c) == 0)
            .count();
        assert!((2700..3300).contains(&first), "{first} of {n}");
        c[1].weight = 0;
        assert!((0..100).all(|_| WeightedRandom.select(&req(), &c) == 0));
    }

    #[tokio::test(start_paused = true)]
    async fn peak_ewma_jumps_up_and_decays_down() {
        let s = EndpointStats::default();
        assert_eq!(s.latency(), None);
        s.observe(Duration::from_millis(10));
        s.observe(Duration::from_millis(100));
        assert_eq!(
            s.latency(),
            Some(Duration::from_millis(100)),
            "peaks replace the estimate"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        let l = s.latency().unwrap();
        assert!(
            l < Duration::from_millis(40) && l > Duration::from_millis(30),
            "{l:?}"
        );
    }
}
