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
            keys: Vec::new(),
        }
    }
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
}

/// One `[providers.<name>]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ProviderConfig {
    /// Which implementation.
    pub kind: ProviderKind,
    /// The provider's data-residency region (e.g. `eu`, `us`).
    #[serde(default)]
    pub region: Option<String>,
    /// `sim` only: time to first token in milliseconds.
    #[serde(default)]
    pub ttft_ms: Option<u64>,
    /// `sim` only: decode rate in tokens per second (0: instant).
    #[serde(default)]
    pub tokens_per_second: Option<f64>,
}

/// One `[models.<name>]` section: a model name clients send, and where it is served.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ModelConfig {
    /// Upstream targets as `"<provider>/<upstream model>"`.
    pub targets: Vec<String>,
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
                kind: ProviderKind::Sim,
                region: None,
                ttft_ms: Some(20),
                tokens_per_second: Some(200.0),
            },
        );
        let mut models = BTreeMap::new();
        models.insert(
            "sim".to_owned(),
            ModelConfig {
                targets: vec!["local/sim-1".to_owned()],
            },
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
