//! The gateway: model names clients send, mapped to pipelines, plus the edge's settings.
//!
//! [`Gateway`] is what the HTTP edge serves. Build it from configuration with
//! [`Gateway::from_config`], or by hand with [`Gateway::builder`] when your own code
//! composes the pipelines (the layers of `llmops-cost`, `llmops-govern`, ... around the
//! services [`build_model`] returns).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use llmops_core::service::BoxFuture;
use llmops_core::sim::SimProvider;
use llmops_core::{
    BoxLlmService, Error, LlmRequest, LlmResponse, ModelInfo, Provider, ProviderService,
    RequestBody,
};
use tower::{Layer, Service};

use crate::config::{
    ModelConfig, ProviderConfig, ProviderKind, RetryConfig, RoutingStrategy, ServeConfig, Target,
};
use crate::http::Admission;
use crate::layers::balance::{Balance, Endpoint, Strategy};
use crate::layers::batch::{BatchConfig, EmbeddingBatchLayer};
use crate::layers::canary::Canary;
use crate::layers::circuit::{Circuit, CircuitBreakerLayer, CircuitConfig, HealthGateLayer};
use crate::layers::concurrency::ConcurrencyLimitLayer;
use crate::layers::fallback::Fallback;
use crate::layers::retry::{RetryBudget, RetryLayer, RetryPolicy};
use crate::layers::shadow::{ShadowLayer, ShadowSink, TracingShadowSink};
use crate::layers::timeout::{DeadlineLayer, TimeoutLayer, Timeouts};
use crate::providers::anthropic::{AnthropicProvider, CacheBreakpoints, CacheTtl};
use crate::providers::openai::OpenAiProvider;
use crate::providers::vllm::{ProbeTask, ReplicaState, VllmOptions, VllmProvider};
use crate::providers::{DEFAULT_CONNECT_TIMEOUT, HttpProviderConfig, HttpTransport};

/// A configuration that cannot be turned into a gateway.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A model names a target that is not `<provider>/<model>`.
    #[error(
        "model `{model}`: target `{target}` is not of the form \"<provider>/<upstream model>\""
    )]
    BadTarget {
        /// The model.
        model: String,
        /// The target string.
        target: String,
    },
    /// A model names a provider that is not configured.
    #[error(
        "model `{model}`: target `{target}` names provider `{provider}`, which has no \
         [providers.{provider}] section (configured: {known})"
    )]
    UnknownProvider {
        /// The model.
        model: String,
        /// The target string.
        target: String,
        /// The provider name.
        provider: String,
        /// The configured providers.
        known: String,
    },
    /// A model has no targets.
    #[error("model `{model}`: `targets` must list at least one \"<provider>/<upstream model>\"")]
    NoTargets {
        /// The model.
        model: String,
    },
    /// A provider's API-key variable is unset or empty.
    #[error(
        "providers.{provider}: environment variable `{var}` (`api_key_env`) is not set; \
         export it or remove `api_key_env`"
    )]
    MissingApiKey {
        /// The provider.
        provider: String,
        /// The variable.
        var: String,
    },
    /// A setting has an invalid value.
    #[error("{section}: {message}")]
    Invalid {
        /// Where (e.g. `providers.local`).
        section: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A key's environment variable is unset or empty.
    #[error(
        "server.keys: environment variable `{var}` (key of tenant `{tenant}`) is not set; \
         export it or remove the key"
    )]
    MissingKey {
        /// The variable.
        var: String,
        /// The tenant.
        tenant: String,
    },
}

/// Who a virtual key belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyInfo {
    /// The key's id (never the secret).
    pub id: Arc<str>,
    /// Its tenant.
    pub tenant: Arc<str>,
}

struct ModelRoute {
    service: BoxLlmService,
    owned_by: String,
    balance: Option<Balance>,
}

struct Inner {
    models: HashMap<String, ModelRoute>,
    keys: HashMap<String, KeyInfo>,
    max_body_bytes: usize,
    request_timeout: Duration,
    admission: Arc<Admission>,
    _probes: Vec<ProbeTask>,
}

/// Model names mapped to pipelines, virtual keys and edge limits. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.inner.models.keys().collect();
        names.sort();
        f.debug_struct("Gateway")
            .field("models", &names)
            .field("keys", &self.inner.keys.len())
            .field("max_body_bytes", &self.inner.max_body_bytes)
            .field("max_in_flight", &self.inner.admission.max())
            .finish()
    }
}

impl Gateway {
    /// A builder with no models, no keys and the default limits.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder {
            models: HashMap::new(),
            keys: HashMap::new(),
            probes: Vec::new(),
            max_body_bytes: crate::config::ServerConfig::default().max_body_bytes,
            request_timeout: Duration::from_millis(
                crate::config::ServerConfig::default().request_timeout_ms,
            ),
            max_in_flight: crate::config::DEFAULT_MAX_IN_FLIGHT,
        }
    }

    /// Builds every provider and model of `cfg`, reading key secrets from the environment.
    /// Inside a tokio runtime, the probes of vLLM providers start at once and stop when the
    /// gateway is dropped.
    pub fn from_config(cfg: &ServeConfig) -> Result<Self, ConfigError> {
        Self::from_config_with(cfg, &BuildOptions::default())
    }

    /// [`from_config`](Self::from_config) with options files cannot express (a shadow sink).
    pub fn from_config_with(
        cfg: &ServeConfig,
        options: &BuildOptions,
    ) -> Result<Self, ConfigError> {
        let providers = build_providers(cfg)?;
        let mut b = Self::builder()
            .max_body_bytes(cfg.server.max_body_bytes)
            .request_timeout(Duration::from_millis(cfg.server.request_timeout_ms))
            .max_in_flight(cfg.server.max_in_flight);
        for (name, model) in &cfg.models {
            let pipeline = build_model(name, model, &providers, options)?;
            let service = match &options.wrap {
                Some(wrap) => wrap(name, pipeline.service),
                None => pipeline.service,
            };
            b = b.model(name, service);
            if let (Some(balance), Some(route)) =
                (pipeline.balance, b.models.get_mut(name.as_str()))
            {
                route.balance = Some(balance);
            }
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            let used: std::collections::BTreeSet<&str> = cfg
                .models
                .values()
                .flat_map(|m| {
                    m.targets
                        .iter()
                        .chain(m.canary.iter().map(|c| &c.target))
                        .chain(m.shadow.iter().map(|s| &s.target))
                })
                .filter_map(|t| t.split_once('/').map(|(p, _)| p))
                .collect();
            for (name, p) in &providers {
                if used.contains(name.as_str())
                    && let Some(task) = p.spawn_probes()
                {
                    b.probes.push(task);
                }
            }
        }
        for key in &cfg.server.keys {
            let secret = std::env::var(&key.key_env).unwrap_or_default();
            if secret.is_empty() {
                return Err(ConfigError::MissingKey {
                    var: key.key_env.clone(),
                    tenant: key.tenant.clone(),
                });
            }
            let id = key.id.clone().unwrap_or_else(|| key.key_env.clone());
            b = b.key(secret, &key.tenant, &id);
        }
        Ok(b.build())
    }

    /// The pipeline serving `model`, if there is one.
    pub fn service(&self, model: &str) -> Option<BoxLlmService> {
        self.inner.models.get(model).map(|r| r.service.clone())
    }

    /// The models, sorted by name.
    pub fn models(&self) -> Vec<ModelInfo> {
        let mut out: Vec<ModelInfo> = self
            .inner
            .models
            .iter()
            .map(|(name, r)| ModelInfo::new(name.clone(), r.owned_by.clone()))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// The load of the gateway as Prometheus text, for autoscalers and dashboards: the edge's
    /// requests in flight, its limit and the requests it shed (`llmops_gateway_in_flight`,
    /// `llmops_gateway_max_in_flight` — 0 when unlimited —, `llmops_gateway_shed_total`),
    /// then every balanced model's targets (queue depth, running requests and KV-cache usage
    /// of vLLM replicas, calls in flight, availability).
    pub fn autoscaling_metrics(&self) -> String {
        use std::fmt::Write as _;
        let mut names: Vec<&String> = self.inner.models.keys().collect();
        names.sort();
        let mut out = String::new();
        let a = &self.inner.admission;
        let _ = write!(
            out,
            "# HELP llmops_gateway_in_flight Model requests admitted and not yet fully answered.\n\
             # TYPE llmops_gateway_in_flight gauge\n\
             llmops_gateway_in_flight {}\n\
             # HELP llmops_gateway_max_in_flight The limit on requests in flight (0: none).\n\
             # TYPE llmops_gateway_max_in_flight gauge\n\
             llmops_gateway_max_in_flight {}\n\
             # HELP llmops_gateway_shed_total Requests refused with 503 at the in-flight limit.\n\
             # TYPE llmops_gateway_shed_total counter\n\
             llmops_gateway_shed_total {}\n",
            a.in_flight(),
            a.max().unwrap_or(0),
            a.shed()
        );
        for name in names {
            if let Some(b) = self.inner.models.get(name).and_then(|r| r.balance.as_ref()) {
                out.push_str(&crate::layers::balance::render_autoscaling_metrics(name, b));
            }
        }
        out
    }

    /// Model names, sorted.
    pub fn model_names(&self) -> Vec<String> {
        self.models().into_iter().map(|m| m.id).collect()
    }

    /// Whether requests must carry a virtual key.
    pub fn requires_key(&self) -> bool {
        !self.inner.keys.is_empty()
    }

    /// The owner of a presented key, if it is a configured key.
    pub fn authenticate(&self, secret: &str) -> Option<&KeyInfo> {
        self.inner.keys.get(secret)
    }

    /// The largest accepted body.
    pub fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes
    }

    /// The deadline of a whole request.
    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// The edge's admission counter (`[server] max_in_flight`): requests in flight and shed.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.inner.admission
    }
}

/// Builder of a [`Gateway`].
#[must_use]
pub struct GatewayBuilder {
    models: HashMap<String, ModelRoute>,
    keys: HashMap<String, KeyInfo>,
    probes: Vec<ProbeTask>,
    max_body_bytes: usize,
    request_timeout: Duration,
    max_in_flight: usize,
}

impl fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayBuilder")
            .field("models", &self.models.len())
            .finish()
    }
}

impl GatewayBuilder {
    /// Serves `service` under the model name `name`.
    pub fn model(mut self, name: &str, service: BoxLlmService) -> Self {
        self.models.insert(
            name.to_owned(),
            ModelRoute {
                service,
                owned_by: "llmops".to_owned(),
                balance: None,
            },
        );
        self
    }

    /// Accepts `secret` as a Bearer key of `tenant`, known as `id`.
    pub fn key(mut self, secret: String, tenant: &str, id: &str) -> Self {
        self.keys.insert(
            secret,
            KeyInfo {
                id: Arc::from(id),
                tenant: Arc::from(tenant),
            },
        );
        self
    }

    /// The largest accepted body, in bytes.
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// The deadline of a whole request.
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// The most model requests served at once (`0`: no limit); see
    /// [`ServerConfig::max_in_flight`](crate::config::ServerConfig::max_in_flight).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// The gateway.
    pub fn build(self) -> Gateway {
        Gateway {
            inner: Arc::new(Inner {
                models: self.models,
                keys: self.keys,
                max_body_bytes: self.max_body_bytes,
                request_timeout: self.request_timeout,
                admission: Arc::new(Admission::new(self.max_in_flight)),
                _probes: self.probes,
            }),
        }
    }
}

/// Options of [`Gateway::from_config_with`] and [`build_model`] that configuration files
/// cannot express.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct BuildOptions {
    /// Where shadow answers go (default: a `tracing` event per answer).
    pub shadow_sink: Option<Arc<dyn ShadowSink>>,
    /// Layers put around every model's pipeline (guardrails, budgets, caches, telemetry):
    /// called with the model name and its routed pipeline, returns the pipeline to serve.
    pub wrap: Option<ModelWrapper>,
}

/// A function wrapping a model's pipeline in outer layers; see [`BuildOptions::wrap`].
pub type ModelWrapper = Arc<dyn Fn(&str, BoxLlmService) -> BoxLlmService + Send + Sync>;

impl fmt::Debug for BuildOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuildOptions")
            .field("shadow_sink", &self.shadow_sink.is_some())
            .field("wrap", &self.wrap.is_some())
            .finish()
    }
}

impl BuildOptions {
    /// Sends shadow answers to `sink` (builder style).
    #[must_use]
    pub fn shadow_sink(mut self, sink: Arc<dyn ShadowSink>) -> Self {
        self.shadow_sink = Some(sink);
        self
    }

    /// Wraps every model's pipeline with `wrap` (builder style).
    #[must_use]
    pub fn wrap(
        mut self,
        wrap: impl Fn(&str, BoxLlmService) -> BoxLlmService + Send + Sync + 'static,
    ) -> Self {
        self.wrap = Some(Arc::new(wrap));
        self
    }
}

/// A built provider: the client, and for vLLM replicas their probe state.
#[derive(Clone)]
pub struct BuiltProvider {
    /// The provider.
    pub provider: Arc<dyn Provider>,
    /// The region from the configuration.
    pub region: Option<String>,
    vllm: Option<VllmProvider>,
}

impl fmt::Debug for BuiltProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuiltProvider")
            .field("name", &self.provider.name())
            .finish()
    }
}

impl BuiltProvider {
    /// A provider without probes.
    pub fn new(provider: Arc<dyn Provider>) -> Self {
        Self {
            provider,
            region: None,
            vllm: None,
        }
    }

    /// The vLLM replica's probe state, for vLLM providers.
    pub fn replica(&self) -> Option<Arc<ReplicaState>> {
        self.vllm.as_ref().map(VllmProvider::replica)
    }

    /// Starts the background probes of a vLLM provider (needs a tokio runtime).
    pub fn spawn_probes(&self) -> Option<ProbeTask> {
        self.vllm.as_ref().map(VllmProvider::spawn_probes)
    }
}

/// Builds every `[providers.*]` entry.
pub fn build_providers(cfg: &ServeConfig) -> Result<BTreeMap<String, BuiltProvider>, ConfigError> {
    let mut out = BTreeMap::new();
    for (name, p) in &cfg.providers {
        out.insert(name.clone(), build_provider(name, p)?);
    }
    Ok(out)
}

fn invalid(section: String, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        section,
        message: message.into(),
    }
}

/// Builds one provider from its section (reading its API key from the environment).
pub fn build_provider(name: &str, cfg: &ProviderConfig) -> Result<BuiltProvider, ConfigError> {
    let section = format!("providers.{name}");
    if cfg.kind != ProviderKind::Sim && (cfg.ttft_ms.is_some() || cfg.tokens_per_second.is_some()) {
        return Err(invalid(
            section,
            "`ttft_ms` and `tokens_per_second` apply to `kind = \"sim\"` only",
        ));
    }
    if cfg.kind != ProviderKind::Vllm
        && (cfg.cache_salt_per_tenant
            || cfg.health_interval_ms.is_some()
            || cfg.metrics_interval_ms.is_some())
    {
        return Err(invalid(
            section,
            "`cache_salt_per_tenant`, `health_interval_ms` and `metrics_interval_ms` apply to `kind = \"vllm\"` only",
        ));
    }
    if cfg.kind != ProviderKind::Anthropic && cfg.cache_breakpoints.is_some() {
        return Err(invalid(
            section,
            "`cache_breakpoints` applies to `kind = \"anthropic\"` only",
        ));
    }
    let built = match cfg.kind {
        ProviderKind::Sim => {
            if cfg.base_url.is_some() || cfg.api_key_env.is_some() {
                return Err(invalid(
                    section,
                    "a `sim` provider takes no `base_url` or `api_key_env`",
                ));
            }
            let mut b = SimProvider::builder().name(name);
            if let Some(ms) = cfg.ttft_ms {
                b = b.ttft(Duration::from_millis(ms));
            }
            if let Some(tps) = cfg.tokens_per_second {
                if !(tps.is_finite() && tps >= 0.0) {
                    return Err(invalid(
                        section,
                        format!("`tokens_per_second` must be >= 0, got {tps}"),
                    ));
                }
                b = b.tokens_per_second(tps);
            }
            BuiltProvider::new(Arc::new(b.build()))
        }
        kind => {
            let http = http_config(name, &section, cfg)?;
            let connect = cfg
                .connect_timeout_ms
                .map_or(DEFAULT_CONNECT_TIMEOUT, Duration::from_millis);
            let transport = HttpTransport::shared(connect)
                .map_err(|e| invalid(section.clone(), e.to_string()))?;
            let wrap = |e: Error| invalid(section.clone(), e.message().to_owned());
            match kind {
                ProviderKind::Vllm => {
                    let mut opts = VllmOptions {
                        cache_salt_per_tenant: cfg.cache_salt_per_tenant,
                        ..VllmOptions::default()
                    };
                    if let Some(ms) = cfg.health_interval_ms {
                        opts.health_interval = Duration::from_millis(ms.max(10));
                    }
                    if let Some(ms) = cfg.metrics_interval_ms {
                        opts.metrics_interval = Duration::from_millis(ms.max(10));
                    }
                    let v = VllmProvider::new(&http, opts, transport).map_err(wrap)?;
                    BuiltProvider {
                        provider: Arc::new(v.clone()),
                        region: None,
                        vllm: Some(v),
                    }
                }
                ProviderKind::Anthropic => {
                    let mut p = AnthropicProvider::new(&http, transport).map_err(wrap)?;
                    match cfg.cache_breakpoints.as_deref() {
                        None | Some("off") => {}
                        Some("5m") => {
                            p = p.with_cache_breakpoints(CacheBreakpoints::new(
                                CacheTtl::FiveMinutes,
                            ));
                        }
                        Some("1h") => {
                            p = p.with_cache_breakpoints(CacheBreakpoints::new(CacheTtl::OneHour));
                        }
                        Some(other) => {
                            return Err(invalid(
                                section,
                                format!(
                                    "`cache_breakpoints` must be \"off\", \"5m\" or \"1h\", got {other:?}"
                                ),
                            ));
                        }
                    }
                    BuiltProvider::new(Arc::new(p))
                }
                _ => BuiltProvider::new(Arc::new(
                    OpenAiProvider::new(&http, transport).map_err(wrap)?,
                )),
            }
        }
    };
    Ok(BuiltProvider {
        region: cfg.region.clone(),
        ..built
    })
}

fn http_config(
    name: &str,
    section: &str,
    cfg: &ProviderConfig,
) -> Result<HttpProviderConfig, ConfigError> {
    let Some(base) = cfg.base_url.as_deref().filter(|b| !b.trim().is_empty()) else {
        return Err(invalid(
            section.to_owned(),
            format!(
                "`base_url` is required for `kind = \"{}\"`",
                cfg.kind.as_str()
            ),
        ));
    };
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(invalid(
            section.to_owned(),
            format!("`base_url` must start with http:// or https://, got `{base}`"),
        ));
    }
    let mut http = HttpProviderConfig::new(name, base.trim());
    if let Some(var) = &cfg.api_key_env {
        let key = std::env::var(var).unwrap_or_default();
        if key.is_empty() {
            return Err(ConfigError::MissingApiKey {
                provider: name.to_owned(),
                var: var.clone(),
            });
        }
        http = http.with_api_key(key);
    }
    for (n, v) in &cfg.headers {
        http = http
            .with_header(n, v)
            .map_err(|e| invalid(section.to_owned(), format!("headers: {}", e.message())))?;
    }
    if let Some(ms) = cfg.timeout_ms {
        http = http.with_timeout(Duration::from_millis(ms));
    }
    http.region.clone_from(&cfg.region);
    Ok(http)
}

/// A model's pipeline, and its balancer when the strategy balances.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ModelPipeline {
    /// The pipeline.
    pub service: BoxLlmService,
    /// The balancer, for `weighted`, `least-outstanding` and `least-latency` models.
    pub balance: Option<Balance>,
}

fn parse_target(
    model: &str,
    t: &str,
    providers: &BTreeMap<String, BuiltProvider>,
) -> Result<(Target, BuiltProvider), ConfigError> {
    let target = Target::parse(t).ok_or_else(|| ConfigError::BadTarget {
        model: model.to_owned(),
        target: t.to_owned(),
    })?;
    let built = providers
        .get(&target.provider)
        .ok_or_else(|| ConfigError::UnknownProvider {
            model: model.to_owned(),
            target: t.to_owned(),
            provider: target.provider.clone(),
            known: providers.keys().cloned().collect::<Vec<_>>().join(", "),
        })?;
    Ok((target, built.clone()))
}

/// One target's stack: provider → (batching) → concurrency limit → timeouts → circuit →
/// (health gate, for vLLM replicas).
fn target_stack(
    cfg: &ModelConfig,
    target: &Target,
    built: &BuiltProvider,
) -> (BoxLlmService, Option<Arc<Circuit>>) {
    let name: Arc<str> = Arc::from(built.provider.name());
    let mut svc = BoxLlmService::new(TargetService::new(
        built.provider.clone(),
        target.model.clone(),
    ));
    if let Some(b) = &cfg.batch {
        let layer = EmbeddingBatchLayer::new(BatchConfig::new(
            b.max_batch,
            Duration::from_millis(b.max_wait_ms),
        ));
        svc = BoxLlmService::new(layer.layer(svc));
    }
    if let Some(max) = cfg.max_concurrency {
        svc = BoxLlmService::new(
            ConcurrencyLimitLayer::new(max)
                .for_target(name.clone())
                .layer(svc),
        );
    }
    let mut t = Timeouts::new();
    t.ttft = cfg.timeouts.ttft_ms.map(Duration::from_millis);
    t.idle = cfg.timeouts.idle_ms.map(Duration::from_millis);
    t.attempt = cfg.timeouts.attempt_ms.map(Duration::from_millis);
    svc = BoxLlmService::new(TimeoutLayer::new(t).for_target(name.clone()).layer(svc));
    let circuit = cfg.circuit.enabled.then(|| {
        let c = &cfg.circuit;
        let cc = CircuitConfig {
            consecutive_failures: c.consecutive_failures.max(1),
            failure_ratio: c.failure_ratio,
            min_requests: c.min_requests.max(1),
            window: Duration::from_millis(c.window_ms.max(10)),
            cooldown: Duration::from_millis(c.cooldown_ms),
            quota_cooldown: Duration::from_millis(c.quota_cooldown_ms),
            ..CircuitConfig::default()
        };
        Circuit::new(name.clone(), cc)
    });
    if let Some(c) = &circuit {
        svc = BoxLlmService::new(CircuitBreakerLayer::new(c.clone()).layer(svc));
    }
    if let Some(replica) = built.replica() {
        svc = BoxLlmService::new(HealthGateLayer::new(name, replica).layer(svc));
    }
    (svc, circuit)
}

fn retry_policy(cfg: &RetryConfig, budget: &Arc<RetryBudget>) -> RetryPolicy {
    RetryPolicy::new(cfg.max_attempts)
        .backoff(
            Duration::from_millis(cfg.backoff_base_ms),
            Duration::from_millis(cfg.backoff_max_ms),
        )
        .max_retry_after(Duration::from_millis(cfg.max_retry_after_ms))
        .budget(budget.clone())
}

fn validate_model(name: &str, cfg: &ModelConfig) -> Result<(), ConfigError> {
    let section = format!("models.{name}");
    if cfg.targets.is_empty() {
        return Err(ConfigError::NoTargets {
            model: name.to_owned(),
        });
    }
    if cfg.retry.max_attempts == 0 {
        return Err(invalid(
            format!("{section}.retry"),
            "`max_attempts` must be at least 1",
        ));
    }
    if !(0.0..=1.0).contains(&cfg.circuit.failure_ratio) {
        return Err(invalid(
            format!("{section}.circuit"),
            "`failure_ratio` must be between 0 and 1",
        ));
    }
    if !(cfg.retry.budget_ratio >= 0.0 && cfg.retry.budget_min_per_second >= 0.0) {
        return Err(invalid(
            format!("{section}.retry"),
            "budget settings must be >= 0",
        ));
    }
    match (&cfg.weights, cfg.strategy) {
        (Some(w), RoutingStrategy::Weighted) if w.len() != cfg.targets.len() => {
            return Err(invalid(
                section,
                format!(
                    "`weights` has {} entries for {} targets: give one weight per target",
                    w.len(),
                    cfg.targets.len()
                ),
            ));
        }
        (Some(w), RoutingStrategy::Weighted) if w.iter().all(|x| *x == 0) => {
            return Err(invalid(section, "`weights` must not all be 0"));
        }
        (Some(_), s) if s != RoutingStrategy::Weighted => {
            return Err(invalid(
                section,
                "`weights` applies to `strategy = \"weighted\"` only",
            ));
        }
        _ => {}
    }
    for (what, split) in [("canary", &cfg.canary), ("shadow", &cfg.shadow)] {
        if let Some(s) = split
            && !(0.0..=1.0).contains(&s.share)
        {
            return Err(invalid(
                format!("{section}.{what}"),
                format!("`share` must be between 0 and 1, got {}", s.share),
            ));
        }
    }
    if cfg.max_concurrency == Some(0) {
        return Err(invalid(section, "`max_concurrency` must be at least 1"));
    }
    if let Some(b) = &cfg.batch
        && b.max_batch == 0
    {
        return Err(invalid(
            format!("{section}.batch"),
            "`max_batch` must be at least 1",
        ));
    }
    Ok(())
}

/// Builds the pipeline of one model from its section: targets, routing strategy, retries,
/// timeouts, circuit breakers, concurrency limits, canary, shadow and batching.
pub fn build_model(
    name: &str,
    cfg: &ModelConfig,
    providers: &BTreeMap<String, BuiltProvider>,
    options: &BuildOptions,
) -> Result<ModelPipeline, ConfigError> {
    validate_model(name, cfg)?;
    let budget = Arc::new(RetryBudget::new(
        cfg.retry.budget_ratio,
        cfg.retry.budget_min_per_second,
        Duration::from_secs(10),
    ));
    let mut targets = Vec::with_capacity(cfg.targets.len());
    for t in &cfg.targets {
        targets.push(parse_target(name, t, providers)?);
    }
    let mut balance = None;
    let mut service = match cfg.strategy {
        RoutingStrategy::Fallback => {
            let n = targets.len();
            let chain = targets
                .iter()
                .enumerate()
                .map(|(i, (target, built))| {
                    let (svc, _) = target_stack(cfg, target, built);
                    let policy = retry_policy(&cfg.retry, &budget).retry_overloaded(i + 1 == n);
                    (
                        built.provider.name().to_owned(),
                        BoxLlmService::new(RetryLayer::new(policy).layer(svc)),
                    )
                })
                .collect();
            let regions = targets
                .iter()
                .map(|(_, built)| built.region.clone())
                .collect();
            BoxLlmService::new(Fallback::new(chain).with_regions(regions))
        }
        strategy => {
            let weights = cfg
                .weights
                .clone()
                .unwrap_or_else(|| vec![1; targets.len()]);
            let endpoints: Vec<Endpoint> = targets
                .iter()
                .zip(weights)
                .map(|((target, built), w)| {
                    let (svc, circuit) = target_stack(cfg, target, built);
                    let mut ep = Endpoint::new(built.provider.name(), svc)
                        .with_weight(w)
                        .with_region(built.region.as_deref());
                    if let Some(c) = circuit {
                        ep = ep.with_circuit(c);
                    }
                    if let Some(r) = built.replica() {
                        ep = ep.with_load_source(r);
                    }
                    ep
                })
                .collect();
            let b = match strategy {
                RoutingStrategy::PrefixAware => {
                    let selector = crate::prefix::PrefixAwareSelector::new(
                        endpoints.len(),
                        crate::prefix::PrefixPolicyConfig::default(),
                    );
                    Balance::new(endpoints, Arc::new(selector))
                }
                RoutingStrategy::Weighted => Balance::with_strategy(endpoints, Strategy::Weighted),
                RoutingStrategy::LeastOutstanding => {
                    Balance::with_strategy(endpoints, Strategy::LeastOutstanding)
                }
                _ => Balance::with_strategy(endpoints, Strategy::LeastLatency),
            };
            balance = Some(b.clone());
            BoxLlmService::new(RetryLayer::new(retry_policy(&cfg.retry, &budget)).layer(b))
        }
    };
    if let Some(canary) = &cfg.canary {
        let (target, built) = parse_target(name, &canary.target, providers)?;
        let (svc, _) = target_stack(cfg, &target, &built);
        let candidate =
            BoxLlmService::new(RetryLayer::new(retry_policy(&cfg.retry, &budget)).layer(svc));
        service = BoxLlmService::new(Canary::new(service, candidate, canary.share));
    }
    if let Some(shadow) = &cfg.shadow {
        let (target, built) = parse_target(name, &shadow.target, providers)?;
        let (svc, _) = target_stack(cfg, &target, &built);
        let sink = options
            .shadow_sink
            .clone()
            .unwrap_or_else(|| Arc::new(TracingShadowSink));
        let layer = ShadowLayer::new(built.provider.name(), svc, shadow.share, sink);
        service = BoxLlmService::new(layer.layer(service));
    }
    if let Some(ms) = cfg.timeouts.total_ms {
        service = BoxLlmService::new(DeadlineLayer::new(Duration::from_millis(ms)).layer(service));
    }
    Ok(ModelPipeline { service, balance })
}

/// A provider called with a fixed upstream model name: the client's model name (the
/// gateway's alias) is replaced by the target's before the call.
#[derive(Clone, Debug)]
pub struct TargetService {
    inner: ProviderService,
    model: Arc<str>,
}

impl TargetService {
    /// `provider` called with model `model`.
    pub fn new(provider: Arc<dyn Provider>, model: impl Into<Arc<str>>) -> Self {
        Self {
            inner: ProviderService::new(provider),
            model: model.into(),
        }
    }
}

impl Service<LlmRequest> for TargetService {
    type Response = LlmResponse;
    type Error = Error;
    type Future = BoxFuture<Result<LlmResponse, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: LlmRequest) -> Self::Future {
        match &mut req.body {
            RequestBody::Chat(r) => r.model = self.model.to_string(),
            RequestBody::Embeddings(r) => r.model = self.model.to_string(),
            _ => {}
        }
        self.inner.call(req)
    }
}
