//! The gateway configuration sections of cost control, and builders that turn them into
//! layers.
//!
//! ```toml
//! [cost]
//! prices_file = "prices.toml"          # optional: TOML like data/prices.toml, or LiteLLM JSON
//! default_max_output_tokens = 4096     # assumed when a request sets no max_tokens
//! # default_price = { input = 1.0, output = 4.0 }   # for models the catalog lacks
//! [[cost.ceilings]]
//! tenant = "*"
//! max_usd_per_request = 0.50
//! on_exceed = "reject"                 # reject | clamp
//!
//! [budgets]
//! backend = "memory"                   # memory | redis
//! redis_url = "redis://127.0.0.1:6379"
//! [[budgets.limits]]
//! scope = "tenant:team-a"
//! usd = 10.0
//! window = "daily"                     # daily | monthly | rolling:1h ...
//! [[budgets.limits]]
//! scope = "key:*"
//! rpm = 600
//! tpm = 200000
//!
//! [cache]
//! mode = "on"                          # on | off | read-only | write-only
//! backend = "memory"                   # memory | redis
//! ttl_s = 3600
//! [cache.semantic]                     # off by default
//! enabled = false
//! embedding_model = "text-embedding-3-small"
//! threshold = 0.95                     # cosine similarity; higher is stricter
//! ```
//!
//! Every section rejects unknown keys, so a typo is an error at startup rather than a limit
//! silently not applied.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use llmops_core::{Budget, Cache};
use serde::{Deserialize, Serialize};

use crate::budget::{BudgetLayer, Limit, MemoryBudget, OnBackendError, Window};
use crate::cache::{CacheLayer, CacheMode, MemoryCache};
use crate::ceiling::{
    CeilingPolicy, CeilingRule, CostCeilingLayer, DEFAULT_MAX_OUTPUT_TOKENS, OnExceed,
};
use crate::error::CostError;
use crate::prices::{PriceCatalog, PriceEntry};

/// The `[cost]` section.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CostConfig {
    /// A prices file merged over the bundled catalog (`.json`: LiteLLM format; else TOML).
    pub prices_file: Option<PathBuf>,
    /// The price of models the catalog does not know (without it they are refused).
    pub default_price: Option<PriceEntry>,
    /// Output tokens assumed when a request sets no `max_tokens`.
    pub default_max_output_tokens: Option<u64>,
    /// `[[cost.ceilings]]`.
    #[serde(default)]
    pub ceilings: Vec<CeilingConfig>,
}

/// One `[[cost.ceilings]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CeilingConfig {
    /// Tenant, or `*`.
    #[serde(default = "star")]
    pub tenant: String,
    /// Model (route), or `*`.
    #[serde(default = "star")]
    pub model: String,
    /// The most one request may cost, in USD.
    pub max_usd_per_request: f64,
    /// `reject` (default) or `clamp`.
    #[serde(default)]
    pub on_exceed: OnExceed,
    /// In clamp mode, the fewest output tokens worth sending (default 1).
    pub min_output_tokens: Option<u64>,
}

fn star() -> String {
    "*".into()
}

impl CostConfig {
    /// The bundled catalog with `prices_file` and `default_price` applied.
    pub fn catalog(&self) -> Result<PriceCatalog, CostError> {
        let mut c = PriceCatalog::bundled();
        if let Some(p) = &self.prices_file {
            c.merge_file(p)?;
        }
        if let Some(d) = &self.default_price {
            let text = toml::to_string(&DefaultWrap {
                models: [("default".to_owned(), d.clone())].into(),
            })
            .map_err(|e| CostError::Config(e.to_string()))?;
            let mut tmp = PriceCatalog::empty();
            tmp.merge_toml(&text, "[cost] default_price")?;
            let price = tmp.price("default")?.as_ref().clone();
            c.set_default(Some(price));
        }
        Ok(c)
    }

    /// The output cap assumed for requests without `max_tokens`.
    pub fn max_output_tokens(&self) -> u64 {
        self.default_max_output_tokens
            .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS)
    }

    /// The ceiling layer, or `None` when no ceiling is configured.
    pub fn ceiling_layer(
        &self,
        catalog: Arc<PriceCatalog>,
    ) -> Result<Option<CostCeilingLayer>, CostError> {
        if self.ceilings.is_empty() {
            return Ok(None);
        }
        let mut rules = Vec::new();
        for c in &self.ceilings {
            if !c.max_usd_per_request.is_finite() || c.max_usd_per_request < 0.0 {
                return Err(CostError::Config(format!(
                    "max_usd_per_request must be a finite amount >= 0, got {}",
                    c.max_usd_per_request
                )));
            }
            let mut r = CeilingRule::new(c.tenant.clone(), c.max_usd_per_request)
                .model(c.model.clone())
                .on_exceed(c.on_exceed);
            if let Some(m) = c.min_output_tokens {
                r.min_output_tokens = m;
            }
            rules.push(r);
        }
        let policy =
            CeilingPolicy::new(catalog, rules).default_max_output_tokens(self.max_output_tokens());
        Ok(Some(CostCeilingLayer::new(policy)))
    }
}

#[derive(Serialize)]
struct DefaultWrap {
    models: std::collections::BTreeMap<String, PriceEntry>,
}

/// Where shared state lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Backend {
    /// In process (the default; per replica).
    #[default]
    Memory,
    /// Redis (shared by replicas; crate feature `redis`).
    Redis,
}

/// The `[budgets]` section.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BudgetsConfig {
    /// `memory` or `redis`.
    #[serde(default)]
    pub backend: Backend,
    /// The Redis URL (backend `redis`).
    pub redis_url: Option<String>,
    /// The Redis key namespace (default `llmops`).
    pub namespace: Option<String>,
    /// How long an unsettled reservation holds budget, in seconds (Redis; default 900).
    pub reservation_ttl_s: Option<u64>,
    /// `[[budgets.limits]]`.
    #[serde(default)]
    pub limits: Vec<LimitConfig>,
}

/// One `[[budgets.limits]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LimitConfig {
    /// `tenant:<name>`, `key:<id>`, `user:<name>`, `tag:<k>=<v>`, or `<kind>:*` for each.
    pub scope: String,
    /// USD cap over the window.
    pub usd: Option<f64>,
    /// Token cap over the window.
    pub tokens: Option<u64>,
    /// Request cap over the window.
    pub requests: Option<u64>,
    /// `daily` (default), `monthly` or `rolling:<n><s|m|h|d>`.
    #[serde(default = "daily")]
    pub window: String,
    /// Requests per minute (a rolling one-minute rate limit).
    pub rpm: Option<u64>,
    /// Tokens per minute (a rolling one-minute rate limit).
    pub tpm: Option<u64>,
    /// `fail_closed` (default) or `fail_open` when the backend is unreachable.
    #[serde(default)]
    pub on_backend_error: OnBackendError,
}

fn daily() -> String {
    "daily".into()
}

impl LimitConfig {
    /// The limits this entry stands for (a spend limit and/or a rate limit).
    pub fn limits(&self) -> Result<Vec<Limit>, CostError> {
        let mut out = Vec::new();
        if self.usd.is_some() || self.tokens.is_some() || self.requests.is_some() {
            let mut l = Limit::budget(&self.scope, Window::parse(&self.window)?)?
                .on_backend_error(self.on_backend_error);
            if let Some(u) = self.usd {
                if !u.is_finite() || u < 0.0 {
                    return Err(CostError::Config(format!("usd must be >= 0, got {u}")));
                }
                l = l.usd(u);
            }
            l.tokens = self.tokens;
            l.requests = self.requests;
            out.push(l);
        }
        if self.rpm.is_some() || self.tpm.is_some() {
            let mut l = Limit::per_minute(&self.scope)?.on_backend_error(self.on_backend_error);
            l.requests = self.rpm;
            l.tokens = self.tpm;
            out.push(l);
        }
        if out.is_empty() {
            return Err(CostError::Config(format!(
                "limit on `{}` sets no cap (usd, tokens, requests, rpm or tpm)",
                self.scope
            )));
        }
        Ok(out)
    }
}

impl BudgetsConfig {
    /// Every configured limit.
    pub fn all_limits(&self) -> Result<Vec<Limit>, CostError> {
        let mut v = Vec::new();
        for l in &self.limits {
            v.extend(l.limits()?);
        }
        Ok(v)
    }

    /// The configured budget backend (connects to Redis for backend `redis`).
    pub async fn build(&self) -> Result<Arc<dyn Budget>, CostError> {
        let limits = self.all_limits()?;
        match self.backend {
            Backend::Memory => Ok(Arc::new(MemoryBudget::new(limits)?)),
            #[cfg(feature = "redis")]
            Backend::Redis => {
                let url = self.redis_url.as_deref().ok_or_else(|| {
                    CostError::Config("[budgets] backend = \"redis\" needs redis_url".into())
                })?;
                let mut b = crate::budget::RedisBudget::builder(url).limits(limits);
                if let Some(ns) = &self.namespace {
                    b = b.namespace(ns.clone());
                }
                if let Some(ttl) = self.reservation_ttl_s {
                    b = b.reservation_ttl(Duration::from_secs(ttl));
                }
                Ok(Arc::new(b.connect().await?))
            }
            #[cfg(not(feature = "redis"))]
            Backend::Redis => Err(CostError::Config(
                "[budgets] backend = \"redis\" needs llmops-cost built with the `redis` feature"
                    .into(),
            )),
        }
    }

    /// The budget layer, or `None` when no limit is configured.
    pub async fn layer(
        &self,
        catalog: Arc<PriceCatalog>,
        default_max_output_tokens: u64,
    ) -> Result<Option<BudgetLayer>, CostError> {
        if self.limits.is_empty() {
            return Ok(None);
        }
        let budget = self.build().await?;
        Ok(Some(
            BudgetLayer::new(budget, catalog).default_max_output_tokens(default_max_output_tokens),
        ))
    }
}

/// The `[cache]` section.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CacheConfig {
    /// `on`, `off`, `read-only` or `write-only`.
    #[serde(default)]
    pub mode: CacheMode,
    /// `memory` or `redis`.
    #[serde(default)]
    pub backend: Backend,
    /// The Redis URL (backend `redis`).
    pub redis_url: Option<String>,
    /// Key namespace; change it to invalidate every entry (default `llmops`).
    pub namespace: Option<String>,
    /// Entry lifetime in seconds (default 3600).
    pub ttl_s: Option<u64>,
    /// In-memory backend: most entries (default 10,000).
    pub max_entries: Option<u64>,
    /// In-memory backend: most bytes (default 64 MiB).
    pub max_bytes: Option<u64>,
    /// Coalesce identical in-flight requests (default true).
    pub coalesce: Option<bool>,
    /// Cache only requests with temperature 0 (default false).
    pub deterministic_only: Option<bool>,
    /// `[cache.semantic]`: the semantic cache (off unless `enabled = true`).
    pub semantic: Option<SemanticConfig>,
}

/// The `[cache.semantic]` section.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SemanticConfig {
    /// Turns the semantic cache on (default false).
    #[serde(default)]
    pub enabled: bool,
    /// The embeddings model the gateway resolves to an [`Embedder`](llmops_core::Embedder).
    pub embedding_model: Option<String>,
    /// Cosine similarity a stored request needs to answer (default 0.95; higher is stricter).
    pub threshold: Option<f32>,
    /// Entry lifetime in seconds (default 3600).
    pub ttl_s: Option<u64>,
    /// Most entries per partition (default 10,000).
    pub max_entries: Option<usize>,
    /// Entries per partition above which search is approximate (default 2,000).
    pub ann_threshold: Option<usize>,
}

impl SemanticConfig {
    /// The semantic cache layer on `embedder`, or `None` when not enabled.
    pub fn layer(
        &self,
        embedder: Arc<dyn llmops_core::Embedder>,
    ) -> Result<Option<crate::semantic::SemanticCacheLayer>, CostError> {
        if !self.enabled {
            return Ok(None);
        }
        let threshold = self.threshold.unwrap_or(0.95);
        if !(-1.0..=1.0).contains(&threshold) {
            return Err(CostError::Config(format!(
                "[cache.semantic] threshold is a cosine similarity in [-1, 1], got {threshold}"
            )));
        }
        let mut l = crate::semantic::SemanticCacheLayer::new(embedder, threshold)
            .ttl(Duration::from_secs(self.ttl_s.unwrap_or(3600)));
        if let Some(n) = self.max_entries {
            l = l.capacity(n);
        }
        if let Some(n) = self.ann_threshold {
            l = l.ann_threshold(n);
        }
        Ok(Some(l))
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            mode: CacheMode::Off,
            backend: Backend::Memory,
            redis_url: None,
            namespace: None,
            ttl_s: None,
            max_entries: None,
            max_bytes: None,
            coalesce: None,
            deterministic_only: None,
            semantic: None,
        }
    }
}

impl CacheConfig {
    fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_s.unwrap_or(3600))
    }

    /// The configured cache backend.
    pub async fn build_cache(&self) -> Result<Arc<dyn Cache>, CostError> {
        match self.backend {
            Backend::Memory => Ok(Arc::new(MemoryCache::new(
                self.max_entries.unwrap_or(10_000),
                self.max_bytes.unwrap_or(64 << 20),
                Some(self.ttl()),
            ))),
            #[cfg(feature = "redis")]
            Backend::Redis => {
                let url = self.redis_url.as_deref().ok_or_else(|| {
                    CostError::Config("[cache] backend = \"redis\" needs redis_url".into())
                })?;
                let ns = self.namespace.clone().unwrap_or_else(|| "llmops".into());
                Ok(Arc::new(
                    crate::cache::RedisCache::connect(url, ns, self.ttl()).await?,
                ))
            }
            #[cfg(not(feature = "redis"))]
            Backend::Redis => Err(CostError::Config(
                "[cache] backend = \"redis\" needs llmops-cost built with the `redis` feature"
                    .into(),
            )),
        }
    }

    /// The cache layer, or `None` when the mode is `off`.
    pub async fn layer(&self) -> Result<Option<CacheLayer>, CostError> {
        if self.mode == CacheMode::Off {
            return Ok(None);
        }
        let mut l = CacheLayer::new(self.build_cache().await?)
            .mode(self.mode)
            .ttl(self.ttl())
            .coalesce(self.coalesce.unwrap_or(true))
            .deterministic_only(self.deterministic_only.unwrap_or(false));
        if let Some(ns) = &self.namespace {
            l = l.namespace(ns.clone());
        }
        Ok(Some(l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Gateway {
        cost: CostConfig,
        budgets: BudgetsConfig,
        cache: CacheConfig,
    }

    const EXAMPLE: &str = r#"
        [cost]
        default_price = { input = 1.0, output = 4.0 }
        [[cost.ceilings]]
        tenant = "*"
        max_usd_per_request = 0.50

        [budgets]
        backend = "memory"
        redis_url = "redis://127.0.0.1:6379"
        [[budgets.limits]]
        scope = "tenant:team-a"
        usd = 10.0
        window = "daily"
        [[budgets.limits]]
        scope = "key:*"
        rpm = 600
        tpm = 200000

        [cache]
        mode = "on"
        backend = "memory"
        ttl_s = 3600
        [cache.semantic]
        enabled = false
        threshold = 0.97
    "#;

    #[tokio::test]
    async fn the_documented_config_builds_layers() {
        let g: Gateway = toml::from_str(EXAMPLE).unwrap();
        let catalog = Arc::new(g.cost.catalog().unwrap());
        assert_eq!(catalog.price("anything").unwrap().model, "default");
        assert!(g.cost.ceiling_layer(catalog.clone()).unwrap().is_some());
        assert_eq!(g.budgets.all_limits().unwrap().len(), 2);
        assert!(g.budgets.layer(catalog, 4096).await.unwrap().is_some());
        assert!(g.cache.layer().await.unwrap().is_some());
        let sem = g.cache.semantic.unwrap();
        assert_eq!(sem.threshold, Some(0.97));
        let embedder = Arc::new(llmops_core::ProviderEmbedder::new(
            Arc::new(llmops_core::mock::MockProvider::new("e")),
            "embed",
        ));
        assert!(
            sem.layer(embedder.clone()).unwrap().is_none(),
            "off unless enabled"
        );
        let on = SemanticConfig {
            enabled: true,
            threshold: Some(1.5),
            ..SemanticConfig::default()
        };
        assert!(on.layer(embedder).is_err());
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        assert!(toml::from_str::<CostConfig>("prices_fil = \"x\"").is_err());
        assert!(
            toml::from_str::<LimitConfig>("scope = \"tenant:a\"\nusd = 1.0\nwindw = \"daily\"")
                .is_err()
        );
        let l: LimitConfig = toml::from_str("scope = \"tenant:a\"").unwrap();
        assert!(l.limits().is_err(), "a limit without a cap");
        let l: LimitConfig =
            toml::from_str("scope = \"tenant:a\"\nusd = 1.0\nwindow = \"weekly\"").unwrap();
        assert!(l.limits().is_err());
        let c: CostConfig = toml::from_str("[[ceilings]]\nmax_usd_per_request = -1.0").unwrap();
        assert!(c.ceiling_layer(Arc::new(PriceCatalog::empty())).is_err());
        let c: CostConfig = toml::from_str("prices_file = \"/nonexistent/prices.toml\"").unwrap();
        assert!(matches!(c.catalog(), Err(CostError::PricesIo { .. })));
    }
}
