//! The gateway configuration file: one TOML file whose sections belong to the crates that
//! own them (`[server]`, `[providers.*]` and `[models.*]` to `llmops-serve`, ...).
//!
//! Unknown keys anywhere are an error naming the key and the file, and a file that does not
//! load never starts a half-configured server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use llmops_cost::config::{BudgetsConfig, CacheConfig, CostConfig};
use llmops_govern::config::{AuditConfig, GuardrailsConfig, TenantConfig};
use llmops_observe::config::{AlertsConfig, ObserveFileConfig};
use llmops_observe::online_eval::OnlineEvalConfig;
use llmops_observe::slo::SloConfig;
use llmops_serve::config::{ModelConfig, ProviderConfig, ServeConfig, ServerConfig};
use serde::Deserialize;

/// The whole gateway file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GatewayFile {
    #[serde(default)]
    pub(crate) server: ServerConfig,
    #[serde(default)]
    pub(crate) providers: BTreeMap<String, ProviderConfig>,
    #[serde(default)]
    pub(crate) models: BTreeMap<String, ModelConfig>,
    /// `[cost]` (`llmops-cost`): prices and per-request ceilings.
    #[serde(default)]
    pub(crate) cost: CostConfig,
    /// `[budgets]` (`llmops-cost`): spend, token and rate limits.
    #[serde(default)]
    pub(crate) budgets: BudgetsConfig,
    /// `[cache]` (`llmops-cost`): the response cache; absent means no cache.
    #[serde(default)]
    pub(crate) cache: Option<CacheConfig>,
    /// `[audit]` (`llmops-govern`): the tamper-evident audit log; absent means no audit.
    #[serde(default)]
    pub(crate) audit: Option<AuditConfig>,
    /// `[[tenants]]` (`llmops-govern`): per-tenant data residency.
    #[serde(default)]
    pub(crate) tenants: Vec<TenantConfig>,
    /// `[guardrails]` (`llmops-govern`): PII redaction and prompt-injection detection.
    #[serde(default)]
    pub(crate) guardrails: GuardrailsConfig,
    /// `[[slo]]` (`llmops-observe`).
    #[serde(default)]
    pub(crate) slo: Vec<SloConfig>,
    /// `[alerts]` (`llmops-observe`).
    #[serde(default)]
    pub(crate) alerts: AlertsConfig,
    /// `[online_eval]` (`llmops-observe`).
    #[serde(default)]
    pub(crate) online_eval: Option<OnlineEvalConfig>,
    /// BLAKE3 of the file's bytes (for the `config_loaded` audit event); empty when embedded.
    #[serde(skip)]
    pub(crate) hash: String,
}

impl GatewayFile {
    /// Reads and parses `path`.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// Parses `text`, naming `path` in errors.
    pub(crate) fn parse(text: &str, path: &Path) -> anyhow::Result<Self> {
        let mut file: GatewayFile = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
        if file.models.is_empty() {
            anyhow::bail!(
                "{}: no models configured: add a [models.<name>] section with `targets`",
                path.display()
            );
        }
        file.hash = blake3::hash(text.as_bytes()).to_hex().to_string();
        Ok(file)
    }

    /// The serving sections.
    pub(crate) fn serve_config(&self) -> ServeConfig {
        ServeConfig::new(
            self.server.clone(),
            self.providers.clone(),
            self.models.clone(),
        )
    }

    /// The observability sections.
    pub(crate) fn observe_config(&self) -> ObserveFileConfig {
        ObserveFileConfig::new(
            self.slo.clone(),
            self.alerts.clone(),
            self.online_eval.clone(),
        )
    }
}

/// Where a configuration came from, for messages.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    Embedded,
    File(PathBuf),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<GatewayFile> {
        GatewayFile::parse(text, Path::new("gw.toml"))
    }

    #[test]
    fn issue_example_parses() {
        let f = parse(
            r#"
            [server]
            listen = "127.0.0.1:8080"

            [providers.local]
            kind = "sim"

            [models.sim]
            targets = ["local/sim-1"]
            "#,
        )
        .unwrap();
        assert_eq!(f.models["sim"].targets, vec!["local/sim-1"]);
    }

    #[test]
    fn unknown_keys_name_key_and_file() {
        let err = parse(
            r#"
            [server]
            listen = "127.0.0.1:8080"
            lisen = "x"
            [models.sim]
            targets = ["local/sim-1"]
            "#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("gw.toml"), "{err}");
        assert!(err.contains("lisen"), "{err}");

        let err = parse(
            "[providers.local]\nkind = \"sim\"\ncolour = 1\n[models.m]\ntargets=[\"local/x\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("colour"), "{err}");
        let err = parse("[bogus]\n").unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn unknown_provider_kind_is_an_error() {
        let err = parse("[providers.x]\nkind = \"nope\"\n[models.m]\ntargets=[\"x/y\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn no_models_is_an_error() {
        let err = parse("[server]\n").unwrap_err().to_string();
        assert!(err.contains("no models"), "{err}");
    }
}
