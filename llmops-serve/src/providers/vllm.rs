//! The vLLM provider: the OpenAI-compatible client plus what a self-hosted replica offers.
//!
//! - Extra sampling parameters (`top_k`, `min_p`, `repetition_penalty`, `structured_outputs`,
//!   `chat_template_kwargs`, ...) pass through untouched in [`ChatRequest::extra`].
//! - `cache_salt` can be set to the tenant, isolating tenants' prefix caches.
//! - `/health` probing marks the replica up or down ([`ReplicaState::is_healthy`]); routers
//!   skip a replica that is down and take it back when it answers again.
//! - `/v1/models` gives `max_model_len`: requests that cannot fit are refused before the call
//!   with `ContextLengthExceeded`, so a fallback to a bigger-context target can take them.
//! - `/metrics` is scraped ([`parse_metrics`], tolerant of vLLM's metric renames) into load
//!   signals for routing ([`ReplicaState::load`]) and autoscaling
//!   ([`crate::layers::balance::render_autoscaling_metrics`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use llmops_core::{
    Capabilities, ChatRequest, ChatResponse, ChatStream, EmbeddingRequest, EmbeddingResponse,
    Error, ErrorKind, ModelInfo, Provider, RequestContext,
};
use tokio::time::Instant;

use super::openai::OpenAiProvider;
use super::{HttpProviderConfig, HttpTransport};
use crate::layers::balance::{ExternalLoad, LoadSource};

/// Load figures scraped from a vLLM replica's `/metrics`, summed over its engines.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct VllmMetrics {
    /// `vllm:num_requests_waiting`: the queue depth (the primary autoscaling signal).
    pub waiting: f64,
    /// `vllm:num_requests_running`: the batch size.
    pub running: f64,
    /// `vllm:kv_cache_usage_perc` (or the older `gpu_cache_usage_perc`), 0–1, averaged over
    /// engines.
    pub kv_cache_usage: Option<f64>,
    /// `vllm:prefix_cache_queries` (or `gpu_prefix_cache_queries`), in tokens.
    pub prefix_cache_queries: Option<f64>,
    /// `vllm:prefix_cache_hits` (or `gpu_prefix_cache_hits`), in tokens.
    pub prefix_cache_hits: Option<f64>,
}

/// Parses vLLM's Prometheus text exposition. Unknown metrics are ignored; every sample of a
/// family is summed (gauges per engine), except the KV-cache usage, which is averaged.
pub fn parse_metrics(text: &str) -> VllmMetrics {
    let mut m = VllmMetrics::default();
    let (mut kv_sum, mut kv_n, mut kv_legacy_sum, mut kv_legacy_n) = (0.0, 0u32, 0.0, 0u32);
    let (mut pq, mut ph, mut pq_old, mut ph_old) = (None, None, None, None);
    let add = |slot: &mut Option<f64>, v: f64| *slot = Some(slot.unwrap_or(0.0) + v);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name_labels, rest) = match line.find('}') {
            Some(end) => (&line[..=end], line[end + 1..].trim()),
            None => match line.split_once(char::is_whitespace) {
                Some((n, r)) => (n, r.trim()),
                None => continue,
            },
        };
        let name = name_labels.split('{').next().unwrap_or(name_labels);
        let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        if !value.is_finite() {
            continue;
        }
        match name.strip_prefix("vllm:").unwrap_or("") {
            "num_requests_waiting" => m.waiting += value,
            "num_requests_running" => m.running += value,
            "kv_cache_usage_perc" => {
                kv_sum += value;
                kv_n += 1;
            }
            "gpu_cache_usage_perc" => {
                kv_legacy_sum += value;
                kv_legacy_n += 1;
            }
            "prefix_cache_queries_total" | "prefix_cache_queries" => add(&mut pq, value),
            "prefix_cache_hits_total" | "prefix_cache_hits" => add(&mut ph, value),
            "gpu_prefix_cache_queries_total" | "gpu_prefix_cache_queries" => {
                add(&mut pq_old, value)
            }
            "gpu_prefix_cache_hits_total" | "gpu_prefix_cache_hits" => add(&mut ph_old, value),
            _ => {}
        }
    }
    m.kv_cache_usage = if kv_n > 0 {
        Some(kv_sum / f64::from(kv_n))
    } else if kv_legacy_n > 0 {
        Some(kv_legacy_sum / f64::from(kv_legacy_n))
    } else {
        None
    };
    m.prefix_cache_queries = pq.or(pq_old);
    m.prefix_cache_hits = ph.or(ph_old);
    m
}

/// What the probes know about one replica. Shared with routers through [`LoadSource`].
#[derive(Debug)]
pub struct ReplicaState {
    name: Arc<str>,
    healthy: AtomicBool,
    max_model_len: AtomicU64,
    metrics: Mutex<Option<(VllmMetrics, Instant)>>,
    stale_after: Duration,
}

impl ReplicaState {
    fn new(name: Arc<str>, stale_after: Duration) -> Self {
        Self {
            name,
            healthy: AtomicBool::new(true),
            max_model_len: AtomicU64::new(0),
            metrics: Mutex::new(None),
            stale_after,
        }
    }

    /// The replica's provider name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the last health probe succeeded (`true` until a probe says otherwise).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Marks the replica up or down.
    pub fn set_healthy(&self, healthy: bool) {
        let was = self.healthy.swap(healthy, Ordering::Relaxed);
        if was != healthy {
            tracing::warn!(replica = %self.name, healthy, "replica health changed");
        }
    }

    /// The context window from `/v1/models`, once fetched.
    pub fn max_model_len(&self) -> Option<u64> {
        Some(self.max_model_len.load(Ordering::Relaxed)).filter(|n| *n > 0)
    }

    /// The last scraped metrics, unless older than the staleness limit.
    pub fn metrics(&self) -> Option<VllmMetrics> {
        let guard = self
            .metrics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard
            .as_ref()
            .filter(|(_, at)| at.elapsed() <= self.stale_after)
            .map(|(m, _)| m.clone())
    }

    /// Records scraped metrics.
    pub fn set_metrics(&self, m: VllmMetrics) {
        *self
            .metrics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((m, Instant::now()));
    }
}

impl LoadSource for ReplicaState {
    fn load(&self) -> ExternalLoad {
        let m = self.metrics();
        ExternalLoad {
            available: self.is_healthy(),
            queue_depth: m.as_ref().map(|m| m.waiting),
            running: m.as_ref().map(|m| m.running),
            kv_cache_usage: m.as_ref().and_then(|m| m.kv_cache_usage),
            prefix_cache_queries: m.as_ref().and_then(|m| m.prefix_cache_queries),
            prefix_cache_hits: m.as_ref().and_then(|m| m.prefix_cache_hits),
        }
    }
}

/// vLLM-specific settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct VllmOptions {
    /// Send the tenant as `cache_salt` (unless the request sets one), so tenants never share
    /// prefix-cache entries.
    pub cache_salt_per_tenant: bool,
    /// Interval of `/health` probes.
    pub health_interval: Duration,
    /// Interval of `/metrics` scrapes.
    pub metrics_interval: Duration,
}

impl Default for VllmOptions {
    fn default() -> Self {
        Self {
            cache_salt_per_tenant: false,
            health_interval: Duration::from_secs(5),
            metrics_interval: Duration::from_secs(2),
        }
    }
}

/// A vLLM replica. Cheap to clone.
#[derive(Clone, Debug)]
pub struct VllmProvider {
    openai: OpenAiProvider,
    root: String,
    options: VllmOptions,
    state: Arc<ReplicaState>,
}

/// Background probes of a replica; dropping the handle stops them.
#[derive(Debug)]
pub struct ProbeTask(tokio::task::JoinHandle<()>);

impl Drop for ProbeTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl VllmProvider {
    /// A replica from its settings (`base_url` ends in `/v1`), on `transport`.
    pub fn new(
        cfg: &HttpProviderConfig,
        options: VllmOptions,
        transport: HttpTransport,
    ) -> Result<Self, Error> {
        let openai = OpenAiProvider::new(cfg, transport)?;
        let base = cfg.trimmed_base();
        let root = base.strip_suffix("/v1").unwrap_or(base).to_owned();
        let stale = options
            .metrics_interval
            .saturating_mul(3)
            .max(Duration::from_secs(1));
        let state = Arc::new(ReplicaState::new(Arc::from(cfg.name.as_str()), stale));
        Ok(Self {
            openai,
            root,
            options,
            state,
        })
    }

    /// The replica's probe state (health, context window, load).
    pub fn replica(&self) -> Arc<ReplicaState> {
        self.state.clone()
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.openai
            .transport()
            .client()
            .get(format!("{}{path}", self.root))
            .headers(self.openai.auth_headers().clone())
    }

    /// Probes `GET /health` once and records the result.
    pub async fn probe_health(&self) -> bool {
        let ok = matches!(
            tokio::time::timeout(Duration::from_secs(5), self.get("/health").send()).await,
            Ok(Ok(r)) if r.status().is_success()
        );
        self.state.set_healthy(ok);
        ok
    }

    /// Scrapes `GET /metrics` once and records the result.
    pub async fn scrape_metrics(&self) -> Result<VllmMetrics, Error> {
        let name = self.state.name();
        let resp = super::send(name, self.get("/metrics"), Some(Duration::from_secs(5))).await?;
        if !resp.status().is_success() {
            return Err(Error::new(
                ErrorKind::ServerError,
                format!("/metrics answered HTTP {}", resp.status().as_u16()),
            )
            .with_provider(name));
        }
        let text = resp.text().await.map_err(|e| {
            Error::new(ErrorKind::Connect, format!("/metrics body failed: {e}")).with_provider(name)
        })?;
        let m = parse_metrics(&text);
        self.state.set_metrics(m.clone());
        Ok(m)
    }

    /// Fetches `max_model_len` from `GET /v1/models` and records it.
    pub async fn fetch_max_model_len(&self) -> Result<Option<u64>, Error> {
        let models = self.openai.models().await?;
        let len = models.iter().filter_map(|m| m.max_model_len).max();
        if let Some(len) = len {
            self.state.max_model_len.store(len, Ordering::Relaxed);
        }
        Ok(len)
    }

    /// Starts the background probes (health, metrics, and the context window until known).
    /// Needs a tokio runtime.
    pub fn spawn_probes(&self) -> ProbeTask {
        let this = self.clone();
        ProbeTask(tokio::spawn(async move {
            let mut health = tokio::time::interval(this.options.health_interval);
            let mut metrics = tokio::time::interval(this.options.metrics_interval);
            health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            metrics.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = health.tick() => {
                        if this.probe_health().await && this.state.max_model_len().is_none() {
                            let _ = this.fetch_max_model_len().await;
                        }
                    }
                    _ = metrics.tick() => {
                        if let Err(e) = this.scrape_metrics().await {
                            tracing::debug!(replica = %this.state.name(), error = %e, "metrics scrape failed");
                        }
                    }
                }
            }
        }))
    }

    fn prepare(&self, req: &mut ChatRequest, ctx: &RequestContext) -> Result<(), Error> {
        if self.options.cache_salt_per_tenant && !req.extra.contains_key("cache_salt") {
            req.extra.insert(
                "cache_salt".to_owned(),
                serde_json::Value::from(ctx.tenant.as_ref()),
            );
        }
        if let Some(window) = self.state.max_model_len() {
            let output = req.max_output_tokens().unwrap_or(0);
            let mut chars = 0u64;
            for m in &req.messages {
                if let Some(c) = &m.content {
                    c.for_each_text(|t| chars += t.chars().count() as u64);
                }
            }
            // A lower bound on the prompt's tokens: no tokenizer packs 8 characters per token.
            let prompt_floor = chars / 8;
            if output >= window || prompt_floor + output > window {
                return Err(Error::new(
                    ErrorKind::ContextLengthExceeded,
                    format!(
                        "the request needs at least {} tokens (prompt of ≥ {prompt_floor} + {output} \
                         to generate) but the model's context window is {window}",
                        prompt_floor + output
                    ),
                )
                .with_provider(self.state.name()));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Provider for VllmProvider {
    fn name(&self) -> &str {
        self.openai.name()
    }

    fn capabilities(&self) -> Capabilities {
        let caps = self.openai.capabilities();
        match self.state.max_model_len() {
            Some(n) => caps.with_max_context_tokens(n),
            None => caps,
        }
    }

    async fn chat(
        &self,
        mut req: ChatRequest,
        ctx: &RequestContext,
    ) -> Result<ChatResponse, Error> {
        self.prepare(&mut req, ctx)?;
        self.openai.chat(req, ctx).await
    }

    async fn chat_stream(
        &self,
        mut req: ChatRequest,
        ctx: &RequestContext,
    ) -> Result<ChatStream, Error> {
        self.prepare(&mut req, ctx)?;
        self.openai.chat_stream(req, ctx).await
    }

    async fn embed(
        &self,
        req: EmbeddingRequest,
        ctx: &RequestContext,
    ) -> Result<EmbeddingResponse, Error> {
        self.openai.embed(req, ctx).await
    }

    async fn models(&self) -> Result<Vec<ModelInfo>, Error> {
        self.openai.models().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORDED: &str = r#"# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
vllm:num_requests_running{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.7
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 1200.0
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 300.0
vllm:time_to_first_token_seconds_bucket{le="0.001",model_name="m"} 0.0
vllm:e2e_request_latency_seconds_sum{model_name="m"} NaN
"#;

    #[test]
    fn parses_current_names() {
        let m = parse_metrics(RECORDED);
        assert_eq!(m.running, 5.0);
        assert_eq!(m.waiting, 7.0);
        assert!((m.kv_cache_usage.unwrap() - 0.6).abs() < 1e-9);
        assert_eq!(m.prefix_cache_queries, Some(1200.0));
        assert_eq!(m.prefix_cache_hits, Some(300.0));
    }

    #[test]
    fn accepts_legacy_names_and_garbage() {
        let text = "vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.25\nvllm:gpu_prefix_cache_hits_total 4\nnot a metric line\nvllm:num_requests_waiting{x=\"y\"} abc\n";
        let m = parse_metrics(text);
        assert_eq!(m.kv_cache_usage, Some(0.25));
        assert_eq!(m.prefix_cache_hits, Some(4.0));
        assert_eq!(m.waiting, 0.0);
        assert_eq!(parse_metrics(""), VllmMetrics::default());
    }
}
