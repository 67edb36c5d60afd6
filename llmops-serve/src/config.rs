//! Configuration of the serving layer: the `[server]`, `[providers.*]` and `[models.*]`
//! sections of a gateway TOML file.
//!
//! Every struct rejects unknown keys, so a typo is an error naming the key rather than a
//! setting silently ignored. The CLI embeds these sections in its own file format beside the
//! other crates' sections.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;

/// The `[server]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest accepted request body, in bytes (larger bodies get HTTP 413).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Deadline of a whole request, in milliseconds, unless a model's timeouts are shorter.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Most model requests (`/v1/chat/completions`, `/v1/embeddings`) the edge serves at once,
    /// counted from admission until the response body is fully sent or dropped (a stream
    /// holds its slot until it ends). Requests over the limit are answered at once with HTTP
    /// 503 `overloaded` and `Retry-After`, without reaching a pipeline. `0` means no limit.
    /// Default 4096: a few hundred MiB of streams at most, far more concurrency than one
    /// process serves without queueing.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Connections the kernel may hold waiting for the accept loop. Default: the kernel's
    /// maximum (`net.core.somaxconn` on Linux; see [`crate::http::default_backlog`]), so that a
    /// burst of new connections is queued rather than answered with dropped SYNs.
    #[serde(default)]
    pub listen_backlog: Option<u32>,
    /// How connections are spread over threads; see [`RuntimeMode`]. Default `"per-core"`.
    #[serde(default)]
    pub runtime: RuntimeMode,
    /// Threads serving connections with `runtime = "per-core"`. Default: the CPUs available
    /// to the process ([`crate::http::default_workers`]).
    #[serde(default)]
    pub workers: Option<std::num::NonZeroUsize>,
    /// Virtual API keys. When any is configured, every request must carry one of them as a
    /// Bearer token; the key decides the tenant. When none is, requests need no key and are
    /// billed to the default tenant.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_body_bytes: default_max_body_bytes(),
            request_timeout_ms: default_request_timeout_ms(),
            max_in_flight: default_max_in_flight(),
            listen_backlog: None,
            runtime: RuntimeMode::default(),
            workers: None,
            keys: Vec::new(),
        }
    }
}

/// `[server] runtime`: the threads that serve the gateway's connections.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RuntimeMode {
    /// One single-threaded runtime per worker thread (`[server] workers`, default one per
    /// CPU); each connection is served start to finish by one of them, round-robin, and each
    /// thread has its own upstream connection pools
    /// ([`serve_app_per_core`](crate::http::serve_app_per_core)). A request never changes
    /// threads: lower latency than work stealing at the same load (BENCHMARKS.md, *Gateway
    /// under load*). A thread busy with a long request does not hand its other connections
    /// to idle threads, though: work stealing balances skewed load better.
    #[default]
    PerCore,
    /// tokio's multi-threaded work-stealing runtime, one worker per CPU: tasks move to idle
    /// threads.
    WorkStealing,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_max_body_bytes() -> usize {
    4 * 1024 * 1024
}

fn default_request_timeout_ms() -> u64 {
    600_000
}

/// The default of `[server] max_in_flight`. A streamed request costs the gateway 40–60 KB
/// (BENCHMARKS.md, "Memory"), so 4096 bounds the edge to roughly 250 MiB even when every slot
/// is a slow stream, while leaving room for thousands of concurrent streams of a healthy
/// deployment. Without a bound, a gateway past its CPU knee queued requests until its memory
/// reached 0.5–0.8 GiB.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4096;

fn default_max_in_flight() -> usize {
    DEFAULT_MAX_IN_FLIGHT
}

/// One `[[server.keys]]` entry: a virtual key mapped to a tenant.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KeyConfig {
    /// The environment variable holding the secret key (keys never sit in config files).
    pub key_env: String,
    /// The tenant the key belongs to.
    pub tenant: String,
    /// The key's id in logs, metrics and audit records (default: the variable's name).
    #[serde(default)]
    pub id: Option<String>,
}

/// The kinds of provider a gateway can configure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ProviderKind {
    /// The built-in simulated model.
    Sim,
    /// An OpenAI-compatible API (OpenAI, Azure-style endpoints, any compatible server).
    Openai,
    /// A vLLM replica (OpenAI-compatible, plus health, metrics and context-window probes).
    Vllm,
    /// The Anthropic Messages API.
    Anthropic,
}

impl ProviderKind {
    /// The configuration name (`sim`, `openai`, `vllm`, `anthropic`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sim => "sim",
            Self::Openai => "openai",
            Self::Vllm => "vllm",
            Self::Anthropic => "anthropic",
        }
    }
}

/// One `[providers.<name>]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ProviderConfig {
    /// Which implementation.
    pub kind: ProviderKind,
    /// The provider's data-residency region (e.g. `eu`, `us`), kept for routing policies.
    #[serde(default)]
    pub region: Option<String>,
    /// HTTP providers: the base URL (`https://api.openai.com/v1`, `http://vllm:8000/v1`,
    /// `https://api.anthropic.com`).
    #[serde(default)]
    pub base_url: Option<String>,
    /// HTTP providers: the environment variable holding the API key (keys never sit in
    /// config files). When set, the variable must be set too.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// HTTP providers: extra headers sent with every request (e.g. `OpenAI-Organization`,
    /// Azure's `api-key`, `anthropic-beta`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// HTTP providers: TCP/TLS connect timeout in milliseconds (default 10 000).
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// HTTP providers: limit on one non-streamed call, and on a streamed call until its
    /// response headers, in milliseconds (default: none; model timeouts apply).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// `vllm` only: send the tenant as `cache_salt`, isolating tenants' prefix caches.
    #[serde(default)]
    pub cache_salt_per_tenant: bool,
    /// `vllm` only: interval of `/health` probes in milliseconds (default 5 000).
    #[serde(default)]
    pub health_interval_ms: Option<u64>,
    /// `vllm` only: interval of `/metrics` scrapes in milliseconds (default 2 000).
    #[serde(default)]
    pub metrics_interval_ms: Option<u64>,
    /// `anthropic` only: automatic prompt-cache breakpoints on requests that carry none:
    /// `"off"` (default), `"5m"` or `"1h"` (the cache entries' lifetime).
    #[serde(default)]
    pub cache_breakpoints: Option<String>,
    /// `sim` only: time to first token in milliseconds.
    #[serde(default)]
    pub ttft_ms: Option<u64>,
    /// `sim` only: decode rate in tokens per second (0: instant).
    #[serde(default)]
    pub tokens_per_second: Option<f64>,
}

impl ProviderConfig {
    /// A section of `kind` with every other setting at its default.
    pub fn new(kind: ProviderKind) -> Self {
        Self {
            kind,
            region: None,
            base_url: None,
            api_key_env: None,
            headers: BTreeMap::new(),
            connect_timeout_ms: None,
            timeout_ms: None,
            cache_salt_per_tenant: false,
            health_interval_ms: None,
            metrics_interval_ms: None,
            cache_breakpoints: None,
            ttft_ms: None,
            tokens_per_second: None,
        }
    }

    /// Sets the base URL (builder style).
    #[must_use]
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }
}

/// How a model spreads requests over its targets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RoutingStrategy {
    /// Targets in order: the next one only when the previous failed (after its retries).
    #[default]
    Fallback,
    /// Random, proportional to `weights`.
    Weighted,
    /// Fewest requests in flight (plus a vLLM replica's reported queue).
    LeastOutstanding,
    /// Power of two choices on peak-EWMA latency to stream end, scaled by vLLM load.
    LeastLatency,
    /// Prefix-cache affinity weighed against load, for vLLM replicas (see
    /// `docs/prefix-caching.md`).
    PrefixAware,
}

/// `[models.<name>.retry]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Attempts, the first included (default 2; 1 disables retries): per target for
    /// `fallback`; for the balancing strategies, rounds in which each available target is
    /// tried at most once.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Backoff base in milliseconds (default 100): the first retry waits up to this long.
    #[serde(default = "default_backoff_base_ms")]
    pub backoff_base_ms: u64,
    /// Backoff cap in milliseconds (default 5 000).
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Longest `Retry-After` worth waiting for, in milliseconds (default 30 000); a longer
    /// one moves to the next target at once.
    #[serde(default = "default_max_retry_after_ms")]
    pub max_retry_after_ms: u64,
    /// Retry budget: retries allowed per request over a 10 s window (default 0.2).
    #[serde(default = "default_budget_ratio")]
    pub budget_ratio: f64,
    /// Retry budget: retries per second always allowed (default 10).
    #[serde(default = "default_budget_min_per_second")]
    pub budget_min_per_second: f64,
}

fn default_max_attempts() -> u32 {
    2
}
fn default_backoff_base_ms() -> u64 {
    100
}
fn default_backoff_max_ms() -> u64 {
    5_000
}
fn default_max_retry_after_ms() -> u64 {
    30_000
}
fn default_budget_ratio() -> f64 {
    0.2
}
fn default_budget_min_per_second() -> f64 {
    10.0
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            backoff_base_ms: default_backoff_base_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            max_retry_after_ms: default_max_retry_after_ms(),
            budget_ratio: default_budget_ratio(),
            budget_min_per_second: default_budget_min_per_second(),
        }
    }
}

/// `[models.<name>.timeouts]`, in milliseconds. Unset limits do not apply; the request's
/// own deadline (`[server] request_timeout_ms`) always does.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TimeoutsConfig {
    /// Time from the start of a streamed attempt to its first content delta.
    #[serde(default)]
    pub ttft_ms: Option<u64>,
    /// Longest gap between streamed chunks once content flows.
    #[serde(default)]
    pub idle_ms: Option<u64>,
    /// Limit on one non-streamed attempt.
    #[serde(default)]
    pub attempt_ms: Option<u64>,
    /// The whole request, retries and fallbacks included.
    #[serde(default)]
    pub total_ms: Option<u64>,
}

/// `[models.<name>.circuit]`: per-target circuit breaking.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CircuitToml {
    /// Whether targets have breakers (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Failures in a row that open a target's circuit (default 5).
    #[serde(default = "default_consecutive")]
    pub consecutive_failures: u32,
    /// Failure share over the window that opens it (default 0.5) ...
    #[serde(default = "default_failure_ratio")]
    pub failure_ratio: f64,
    /// ... once the window holds this many calls (default 10).
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
    /// The window in milliseconds (default 10 000).
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
    /// How long an open circuit waits before a probe, in milliseconds (default 30 000).
    #[serde(default = "default_cooldown_ms")]
    pub cooldown_ms: u64,
    /// How long a quota or spend-limit error takes a target out, in milliseconds
    /// (default 300 000).
    #[serde(default = "default_quota_cooldown_ms")]
    pub quota_cooldown_ms: u64,
}

fn default_true() -> bool {
    true
}
fn default_consecutive() -> u32 {
    5
}
fn default_failure_ratio() -> f64 {
    0.5
}
fn default_min_requests() -> u32 {
    10
}
fn default_window_ms() -> u64 {
    10_000
}
fn default_cooldown_ms() -> u64 {
    30_000
}
fn default_quota_cooldown_ms() -> u64 {
    300_000
}

impl Default for CircuitToml {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_failures: default_consecutive(),
            failure_ratio: default_failure_ratio(),
            min_requests: default_min_requests(),
            window_ms: default_window_ms(),
            cooldown_ms: default_cooldown_ms(),
            quota_cooldown_ms: default_quota_cooldown_ms(),
        }
    }
}

/// `[models.<name>.canary]` and `[models.<name>.shadow]`: a candidate target and its share
/// of traffic.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SplitConfig {
    /// The candidate, as `"<provider>/<upstream model>"`.
    pub target: String,
    /// Share of requests, 0–1.
    pub share: f64,
}

/// `[models.<name>.batch]`: embedding micro-batching.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BatchToml {
    /// Most inputs in one upstream call (default 64).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Longest a request waits for others, in milliseconds (default 5).
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
}

fn default_max_batch() -> usize {
    64
}
fn default_max_wait_ms() -> u64 {
    5
}

/// One `[models.<name>]` section: a model name clients send, and where it is served.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ModelConfig {
    /// Upstream targets as `"<provider>/<upstream model>"`.
    pub targets: Vec<String>,
    /// How requests spread over the targets (default `fallback`).
    #[serde(default)]
    pub strategy: RoutingStrategy,
    /// For `weighted`: one weight per target.
    #[serde(default)]
    pub weights: Option<Vec<u32>>,
    /// Retries (per target for `fallback`, across targets otherwise).
    #[serde(default)]
    pub retry: RetryConfig,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Circuit breaking.
    #[serde(default)]
    pub circuit: CircuitToml,
    /// Concurrency limit per target (calls and streams in flight), default none.
    #[serde(default)]
    pub max_concurrency: Option<usize>,
    /// A canary: a share of requests served by a candidate target.
    #[serde(default)]
    pub canary: Option<SplitConfig>,
    /// Shadow traffic: a share of requests also sent to a candidate, answers recorded.
    #[serde(default)]
    pub shadow: Option<SplitConfig>,
    /// Embedding micro-batching.
    #[serde(default)]
    pub batch: Option<BatchToml>,
}

impl ModelConfig {
    /// A model served by `targets` with every other setting at its default.
    pub fn new(targets: Vec<String>) -> Self {
        Self {
            targets,
            strategy: RoutingStrategy::default(),
            weights: None,
            retry: RetryConfig::default(),
            timeouts: TimeoutsConfig::default(),
            circuit: CircuitToml::default(),
            max_concurrency: None,
            canary: None,
            shadow: None,
            batch: None,
        }
    }
}

/// The serving sections of a gateway file.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ServeConfig {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[providers.*]`.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// `[models.*]`.
    pub models: BTreeMap<String, ModelConfig>,
}

impl ServeConfig {
    /// A configuration from its three sections.
    pub fn new(
        server: ServerConfig,
        providers: BTreeMap<String, ProviderConfig>,
        models: BTreeMap<String, ModelConfig>,
    ) -> Self {
        Self {
            server,
            providers,
            models,
        }
    }

    /// The embedded default: one simulated provider `local` serving model `sim` as
    /// `local/sim-1`, streaming at a human-visible pace.
    pub fn embedded_default() -> Self {
        let mut providers = BTreeMap::new();
        providers.insert(
            "local".to_owned(),
            ProviderConfig {
                ttft_ms: Some(20),
                tokens_per_second: Some(200.0),
                ..ProviderConfig::new(ProviderKind::Sim)
            },
        );
        let mut models = BTreeMap::new();
        models.insert(
            "sim".to_owned(),
            ModelConfig::new(vec!["local/sim-1".to_owned()]),
        );
        Self {
            server: ServerConfig::default(),
            providers,
            models,
        }
    }
}

/// A target string split into provider and upstream model.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Target {
    /// The provider's name.
    pub provider: String,
    /// The model name sent upstream.
    pub model: String,
}

impl Target {
    /// Parses `"<provider>/<upstream model>"`. The upstream model may itself contain `/`
    /// (e.g. `vllm/meta-llama/Llama-3.1-8B-Instruct`).
    pub fn parse(s: &str) -> Option<Self> {
        let (provider, model) = s.split_once('/')?;
        if provider.is_empty() || model.is_empty() {
            return None;
        }
        Some(Self {
            provider: provider.to_owned(),
            model: model.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(v: serde_json::Value) -> Result<ServerConfig, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn max_in_flight_defaults_and_parses() {
        let default = server(serde_json::json!({})).unwrap();
        assert_eq!(default.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(ServerConfig::default().max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        let set = server(serde_json::json!({"max_in_flight": 64})).unwrap();
        assert_eq!(set.max_in_flight, 64);
        let off = server(serde_json::json!({"max_in_flight": 0})).unwrap();
        assert_eq!(off.max_in_flight, 0);
    }

    #[test]
    fn runtime_defaults_to_per_core_and_parses_both_modes() {
        let default = server(serde_json::json!({})).unwrap();
        assert_eq!(default.runtime, RuntimeMode::PerCore);
        assert_eq!(default.workers, None);
        assert_eq!(ServerConfig::default().runtime, RuntimeMode::PerCore);
        let ws = server(serde_json::json!({"runtime": "work-stealing"})).unwrap();
        assert_eq!(ws.runtime, RuntimeMode::WorkStealing);
        let pc = server(serde_json::json!({"runtime": "per-core", "workers": 3})).unwrap();
        assert_eq!(pc.runtime, RuntimeMode::PerCore);
        assert_eq!(pc.workers.map(std::num::NonZeroUsize::get), Some(3));
    }

    #[test]
    fn runtime_rejects_unknown_modes_and_zero_workers() {
        let e = server(serde_json::json!({"runtime": "multi"})).unwrap_err();
        assert!(e.to_string().contains("per-core"), "{e}");
        assert!(server(serde_json::json!({"workers": 0})).is_err());
    }

    #[test]
    fn max_in_flight_rejects_negatives_and_typos() {
        assert!(server(serde_json::json!({"max_in_flight": -1})).is_err());
        let e = server(serde_json::json!({"max_inflight": 10})).unwrap_err();
        assert!(e.to_string().contains("max_inflight"), "{e}");
    }
}
