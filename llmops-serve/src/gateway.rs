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
use tower::Service;

use crate::config::{ModelConfig, ProviderConfig, ProviderKind, ServeConfig, Target};

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
    /// A model lists several targets but no routing strategy can use them.
    #[error(
        "model `{model}`: {count} targets are listed, but routing across several targets \
         is not supported by this build; list exactly one target"
    )]
    MultipleTargets {
        /// The model.
        model: String,
        /// How many targets.
        count: usize,
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
}

struct Inner {
    models: HashMap<String, ModelRoute>,
    keys: HashMap<String, KeyInfo>,
    max_body_bytes: usize,
    request_timeout: Duration,
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
            .finish()
    }
}

impl Gateway {
    /// A builder with no models, no keys and the default limits.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder {
            models: HashMap::new(),
            keys: HashMap::new(),
            max_body_bytes: crate::config::ServerConfig::default().max_body_bytes,
            request_timeout: Duration::from_millis(
                crate::config::ServerConfig::default().request_timeout_ms,
            ),
        }
    }

    /// Builds every provider and model of `cfg`, reading key secrets from the environment.
    pub fn from_config(cfg: &ServeConfig) -> Result<Self, ConfigError> {
        let providers = build_providers(cfg)?;
        let mut b = Self::builder()
            .max_body_bytes(cfg.server.max_body_bytes)
            .request_timeout(Duration::from_millis(cfg.server.request_timeout_ms));
        for (name, model) in &cfg.models {
            b = b.model(name, build_model(name, model, &providers)?);
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
}

/// Builder of a [`Gateway`].
#[must_use]
pub struct GatewayBuilder {
    models: HashMap<String, ModelRoute>,
    keys: HashMap<String, KeyInfo>,
    max_body_bytes: usize,
    request_timeout: Duration,
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

    /// The gateway.
    pub fn build(self) -> Gateway {
        Gateway {
            inner: Arc::new(Inner {
                models: self.models,
                keys: self.keys,
                max_body_bytes: self.max_body_bytes,
                request_timeout: self.request_timeout,
            }),
        }
    }
}

/// Builds every `[providers.*]` entry.
pub fn build_providers(
    cfg: &ServeConfig,
) -> Result<BTreeMap<String, Arc<dyn Provider>>, ConfigError> {
    let mut out = BTreeMap::new();
    for (name, p) in &cfg.providers {
        out.insert(name.clone(), build_provider(name, p)?);
    }
    Ok(out)
}

/// Builds one provider from its section.
pub fn build_provider(name: &str, cfg: &ProviderConfig) -> Result<Arc<dyn Provider>, ConfigError> {
    match cfg.kind {
        ProviderKind::Sim => {
            let mut b = SimProvider::builder().name(name);
            if let Some(ms) = cfg.ttft_ms {
                b = b.ttft(Duration::from_millis(ms));
            }
            if let Some(tps) = cfg.tokens_per_second {
                if !(tps.is_finite() && tps >= 0.0) {
                    return Err(ConfigError::Invalid {
                        section: format!("providers.{name}"),
                        message: format!("`tokens_per_second` must be >= 0, got {tps}"),
                    });
                }
                b = b.tokens_per_second(tps);
            }
            Ok(Arc::new(b.build()))
        }
    }
}

/// Builds the pipeline of one model: its target's provider, called with the upstream model
/// name.
pub fn build_model(
    name: &str,
    cfg: &ModelConfig,
    providers: &BTreeMap<String, Arc<dyn Provider>>,
) -> Result<BoxLlmService, ConfigError> {
    let mut targets = Vec::with_capacity(cfg.targets.len());
    for t in &cfg.targets {
        let target = Target::parse(t).ok_or_else(|| ConfigError::BadTarget {
            model: name.to_owned(),
            target: t.clone(),
        })?;
        let provider =
            providers
                .get(&target.provider)
                .ok_or_else(|| ConfigError::UnknownProvider {
                    model: name.to_owned(),
                    target: t.clone(),
                    provider: target.provider.clone(),
                    known: providers.keys().cloned().collect::<Vec<_>>().join(", "),
                })?;
        targets.push(TargetService::new(provider.clone(), target.model));
    }
    match targets.len() {
        0 => Err(ConfigError::NoTargets {
            model: name.to_owned(),
        }),
        1 => Ok(BoxLlmService::new(targets.remove(0))),
        count => Err(ConfigError::MultipleTargets {
            model: name.to_owned(),
            count,
        }),
    }
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
