//! Configuration of the `[audit]`, `[audit.checkpoints]`, `[guardrails.pii]`,
//! `[guardrails.injection]` and `[[tenants]]` sections, as the gateway's TOML file has them.
//!
//! ```
//! use llmops_govern::config::{AuditConfig, GuardrailsConfig};
//!
//! let audit: AuditConfig = toml::from_str(r#"
//!     sink = "file"
//!     path = "audit/llmops.jsonl"
//!     durability = "batched"
//!     commitment_key_env = "LLMOPS_AUDIT_KEY"
//!     [checkpoints]
//!     every_records = 1000
//!     every_s = 60
//!     path = "audit/checkpoints.jsonl"
//!     signing_key_file = "audit/ed25519.key"
//! "#).unwrap();
//! assert_eq!(audit.checkpoints.unwrap().every_records, 1000);
//! let guard: GuardrailsConfig = toml::from_str("[pii]\nupstream = \"redact\"\n[injection]\naction = \"block\"").unwrap();
//! assert!(guard.pii.upstream_guard().is_ok());
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::audit::keys::{CommitmentKey, load_signing_key};
use crate::audit::{
    CheckpointPolicy, ContentMode, DirKeyStore, Durability, FileAuditSink, RecordEncoder, Rotation,
};
use crate::error::{GovernError, Result};
use crate::layer::GuardAction;
use crate::pii::{PiiAction, PiiGuard, PiiPolicy, PiiScanner, Recognizer};
use crate::residency::ResidencyPolicy;

/// Where audit records go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AuditSinkKind {
    /// The hash-chained JSON Lines file.
    #[default]
    File,
    /// A PostgreSQL table (feature `postgres`).
    Postgres,
}

/// What content the audit log stores besides commitments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ContentStorage {
    /// Commitments only.
    #[default]
    Off,
    /// PII-redacted content in clear.
    Redacted,
    /// PII-redacted content encrypted per tenant (crypto-shreddable).
    Encrypted,
}

fn default_audit_path() -> PathBuf {
    PathBuf::from("audit/llmops.jsonl")
}
fn default_key_env() -> String {
    "LLMOPS_AUDIT_KEY".to_owned()
}
fn default_every_records() -> u64 {
    1000
}
fn default_every_s() -> u64 {
    60
}
fn default_cp_path() -> PathBuf {
    PathBuf::from("audit/checkpoints.jsonl")
}
fn default_signing_key() -> PathBuf {
    PathBuf::from("audit/ed25519.key")
}
fn default_table() -> String {
    "llmops_audit".to_owned()
}

/// The `[audit]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AuditConfig {
    /// `file` or `postgres`.
    #[serde(default)]
    pub sink: AuditSinkKind,
    /// The active log file (file sink).
    #[serde(default = "default_audit_path")]
    pub path: PathBuf,
    /// `per-record`, `batched` (default) or `async`.
    #[serde(default)]
    pub durability: Durability,
    /// The environment variable holding the commitment key (64 hex digits).
    #[serde(default = "default_key_env")]
    pub commitment_key_env: String,
    /// The log's name in checkpoints (default: the file name, or the table name).
    #[serde(default)]
    pub log_id: Option<String>,
    /// Rotate the file at this size.
    #[serde(default)]
    pub rotate_max_bytes: Option<u64>,
    /// Rotate the file at this age, in seconds.
    #[serde(default)]
    pub rotate_every_s: Option<u64>,
    /// `off` (default), `redacted` or `encrypted`.
    #[serde(default)]
    pub content: ContentStorage,
    /// Where per-tenant content keys live (`encrypted` content; default `<log dir>/keys`).
    #[serde(default)]
    pub content_keys_dir: Option<PathBuf>,
    /// The environment variable holding the PostgreSQL URL (postgres sink; default
    /// `LLMOPS_AUDIT_PG_URL`).
    #[serde(default)]
    pub postgres_url_env: Option<String>,
    /// The PostgreSQL table (postgres sink).
    #[serde(default = "default_table")]
    pub postgres_table: String,
    /// Signed checkpoints.
    #[serde(default)]
    pub checkpoints: Option<CheckpointsConfig>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            sink: AuditSinkKind::File,
            path: default_audit_path(),
            durability: Durability::Batched,
            commitment_key_env: default_key_env(),
            log_id: None,
            rotate_max_bytes: None,
            rotate_every_s: None,
            content: ContentStorage::Off,
            content_keys_dir: None,
            postgres_url_env: None,
            postgres_table: default_table(),
            checkpoints: None,
        }
    }
}

/// The `[audit.checkpoints]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CheckpointsConfig {
    /// Sign after this many records...
    #[serde(default = "default_every_records")]
    pub every_records: u64,
    /// ...or this many seconds.
    #[serde(default = "default_every_s")]
    pub every_s: u64,
    /// The checkpoint file.
    #[serde(default = "default_cp_path")]
    pub path: PathBuf,
    /// The Ed25519 signing key file written by `llmops audit keygen`.
    #[serde(default = "default_signing_key")]
    pub signing_key_file: PathBuf,
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

impl AuditConfig {
    /// The record encoder this configuration describes (reads the commitment key from the
    /// environment; relative paths are resolved against `base`).
    pub fn encoder(&self, base: &Path) -> Result<RecordEncoder> {
        self.encoder_with_key(base, CommitmentKey::from_env(&self.commitment_key_env)?)
    }

    /// Like [`AuditConfig::encoder`], with the commitment key given.
    pub fn encoder_with_key(&self, base: &Path, key: CommitmentKey) -> Result<RecordEncoder> {
        let mode = match self.content {
            ContentStorage::Off => ContentMode::Off,
            ContentStorage::Redacted => ContentMode::Plain,
            ContentStorage::Encrypted => {
                let dir = match &self.content_keys_dir {
                    Some(d) => resolve(base, d),
                    None => resolve(base, &self.path)
                        .parent()
                        .map_or_else(|| PathBuf::from("keys"), |p| p.join("keys")),
                };
                ContentMode::Encrypted(DirKeyStore::open(dir)?)
            }
        };
        Ok(RecordEncoder::new(key).with_content(mode))
    }

    /// Opens the file sink this configuration describes. Blocking: call at startup.
    pub fn open_file_sink(&self, base: &Path) -> Result<FileAuditSink> {
        self.open_file_sink_with_key(base, CommitmentKey::from_env(&self.commitment_key_env)?)
    }

    /// Like [`AuditConfig::open_file_sink`], with the commitment key given.
    pub fn open_file_sink_with_key(
        &self,
        base: &Path,
        key: CommitmentKey,
    ) -> Result<FileAuditSink> {
        if self.sink != AuditSinkKind::File {
            return Err(GovernError::Config("audit.sink is not \"file\"".into()));
        }
        let path = resolve(base, &self.path);
        let mut b = FileAuditSink::builder(&path, self.encoder_with_key(base, key)?)
            .durability(self.durability)
            .rotation(Rotation::new(
                self.rotate_max_bytes,
                self.rotate_every_s.map(Duration::from_secs),
            ));
        if let Some(cp) = &self.checkpoints {
            let key = load_signing_key(&resolve(base, &cp.signing_key_file))?;
            let log_id = self.log_id.clone().unwrap_or_else(|| {
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "llmops".into())
            });
            b = b.checkpoints(
                CheckpointPolicy::new(resolve(base, &cp.path), key, log_id)
                    .every_records(cp.every_records)
                    .every(Duration::from_secs(cp.every_s.max(1))),
            );
        }
        b.open()
    }
}

#[cfg(feature = "postgres")]
impl AuditConfig {
    /// Connects the PostgreSQL sink this configuration describes (`sink = "postgres"`; the URL
    /// is read from the variable named by `postgres_url_env`, default `LLMOPS_AUDIT_PG_URL`).
    pub async fn open_postgres_sink(
        &self,
        base: &Path,
        key: CommitmentKey,
    ) -> Result<crate::audit::postgres::PostgresAuditSink> {
        if self.sink != AuditSinkKind::Postgres {
            return Err(GovernError::Config("audit.sink is not \"postgres\"".into()));
        }
        let var = self
            .postgres_url_env
            .as_deref()
            .unwrap_or("LLMOPS_AUDIT_PG_URL");
        let url = std::env::var(var)
            .map_err(|_| GovernError::Config(format!("environment variable {var} is not set")))?;
        let log_id = self
            .log_id
            .clone()
            .unwrap_or_else(|| self.postgres_table.clone());
        crate::audit::postgres::PostgresAuditSink::connect(
            &url,
            &self.postgres_table,
            &log_id,
            self.encoder_with_key(base, key)?,
        )
        .await
    }
}

/// The `[guardrails]` section.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GuardrailsConfig {
    /// `[guardrails.pii]`.
    #[serde(default)]
    pub pii: PiiConfig,
    /// `[guardrails.injection]`.
    #[serde(default)]
    pub injection: InjectionConfig,
}

fn default_log_action() -> PiiAction {
    PiiAction::Redact
}
fn default_min_score() -> f32 {
    0.5
}
fn default_custom_score() -> f32 {
    0.8
}

/// The `[guardrails.pii]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PiiConfig {
    /// Action on what goes upstream: `off` (default), `redact`, `mask`, `hash`, `block`.
    #[serde(default)]
    pub upstream: PiiAction,
    /// Action on what is logged or audited (`block` counts as `redact`); default `redact`.
    #[serde(default = "default_log_action")]
    pub log: PiiAction,
    /// Action on model output (non-streamed and streamed); default `off`.
    #[serde(default)]
    pub output: PiiAction,
    /// Per-type overrides of `upstream` (`credit_card = "block"`).
    #[serde(default)]
    pub types: BTreeMap<String, PiiAction>,
    /// Minimum score of a finding.
    #[serde(default = "default_min_score")]
    pub min_score: f32,
    /// Environment variable holding a 64-hex-digit key for the `hash` action.
    #[serde(default)]
    pub hash_key_env: Option<String>,
    /// Custom patterns.
    #[serde(default)]
    pub custom: Vec<CustomPattern>,
}

impl Default for PiiConfig {
    fn default() -> Self {
        Self {
            upstream: PiiAction::Off,
            log: PiiAction::Redact,
            output: PiiAction::Off,
            types: BTreeMap::new(),
            min_score: default_min_score(),
            hash_key_env: None,
            custom: Vec::new(),
        }
    }
}

/// A `[[guardrails.pii.custom]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CustomPattern {
    /// The type name reported.
    pub name: String,
    /// A Rust `regex` pattern.
    pub pattern: String,
    /// The score of a match.
    #[serde(default = "default_custom_score")]
    pub score: f32,
}

impl PiiConfig {
    /// The scanner: built-ins plus custom patterns.
    pub fn scanner(&self) -> Result<PiiScanner> {
        let mut s = PiiScanner::new().with_min_score(self.min_score);
        for c in &self.custom {
            s = s.with_recognizer(Recognizer::custom(&c.name, &c.pattern, c.score)?);
        }
        Ok(s)
    }

    fn guard(&self, default_action: PiiAction, overrides: bool) -> Result<PiiGuard> {
        let mut policy = PiiPolicy::uniform(default_action);
        if overrides {
            for (k, a) in &self.types {
                policy = policy.with(k, *a);
            }
        }
        let mut g = PiiGuard::new(self.scanner()?, policy);
        if let Some(var) = &self.hash_key_env {
            g = g.with_hash_key(CommitmentKey::from_env(var)?.tenant_key("pii-hash"));
        }
        Ok(g)
    }

    /// The guard for upstream requests.
    pub fn upstream_guard(&self) -> Result<PiiGuard> {
        self.guard(self.upstream, true)
    }

    /// The guard for logs and the audit trail.
    pub fn log_guard(&self) -> Result<PiiGuard> {
        self.guard(self.log, false)
    }

    /// The guard for model output.
    pub fn output_guard(&self) -> Result<PiiGuard> {
        self.guard(self.output, false)
    }
}

fn default_threshold() -> f32 {
    0.5
}
fn default_roles() -> Vec<String> {
    vec!["user".into(), "tool".into()]
}

/// The `[guardrails.injection]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct InjectionConfig {
    /// `off` (default), `flag` or `block`.
    #[serde(default)]
    pub action: GuardAction,
    /// Score at or above which a message is flagged.
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    /// Roles whose messages are scanned (default `user` and `tool`; system prompts are
    /// imperative by nature and would be false positives).
    #[serde(default = "default_roles")]
    pub roles: Vec<String>,
}

impl Default for InjectionConfig {
    fn default() -> Self {
        Self {
            action: GuardAction::Off,
            threshold: default_threshold(),
            roles: default_roles(),
        }
    }
}

/// The governance fields of a `[[tenants]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TenantConfig {
    /// The tenant's name.
    pub name: String,
    /// Regions its requests may be processed in (absent: unrestricted).
    #[serde(default)]
    pub allowed_regions: Option<Vec<String>>,
}

/// The residency policy from provider regions (`[providers.NAME] region = ...`) and tenants.
pub fn residency_policy<'a>(
    providers: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    tenants: &[TenantConfig],
) -> ResidencyPolicy {
    let mut p = ResidencyPolicy::new();
    for (name, region) in providers {
        if let Some(r) = region {
            p = p.provider(name, r);
        }
    }
    for t in tenants {
        if let Some(regions) = &t.allowed_regions {
            p = p.tenant(&t.name, regions.iter().cloned());
        }
    }
    p
}

/// Shorthand used by the CLI: both guards of a PII configuration behind `Arc`s.
pub fn pii_guards(cfg: &PiiConfig) -> Result<(Arc<PiiGuard>, Arc<PiiGuard>)> {
    Ok((Arc::new(cfg.upstream_guard()?), Arc::new(cfg.log_guard()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Whole {
        audit: AuditConfig,
        guardrails: GuardrailsConfig,
        tenants: Vec<TenantConfig>,
    }

    #[test]
    fn the_issue_example_parses() {
        let w: Whole = toml::from_str(
            r#"
            [audit]
            sink = "file"
            path = "audit/llmops.jsonl"
            durability = "batched"
            commitment_key_env = "LLMOPS_AUDIT_KEY"
            [audit.checkpoints]
            every_records = 1000
            every_s = 60
            path = "audit/checkpoints.jsonl"
            signing_key_file = "audit/ed25519.key"

            [guardrails.pii]
            upstream = "redact"
            [guardrails.injection]
            action = "block"

            [[tenants]]
            name = "team-a"
            allowed_regions = ["eu"]
            "#,
        )
        .unwrap();
        assert_eq!(w.audit.durability, Durability::Batched);
        assert_eq!(w.guardrails.pii.upstream, PiiAction::Redact);
        assert_eq!(w.guardrails.injection.action, GuardAction::Block);
        let p = residency_policy([("primary", Some("eu")), ("other", Some("us"))], &w.tenants);
        assert!(p.allows("team-a", "primary"));
        assert!(!p.allows("team-a", "other"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        assert!(
            toml::from_str::<AuditConfig>("sink = \"file\"\nduribility = \"batched\"").is_err()
        );
        assert!(toml::from_str::<AuditConfig>("durability = \"sometimes\"").is_err());
        assert!(toml::from_str::<PiiConfig>("upstream = \"shred\"").is_err());
        assert!(toml::from_str::<InjectionConfig>("action = \"block\"\nlevel = 3").is_err());
        let bad = toml::from_str::<PiiConfig>("[[custom]]\nname = \"x\"\npattern = \"(\"").unwrap();
        assert!(matches!(
            bad.upstream_guard(),
            Err(GovernError::Pattern { .. })
        ));
    }

    #[tokio::test]
    async fn file_sink_opens_from_config() {
        use llmops_core::AuditSink;
        let dir = tempfile::tempdir().unwrap();
        let keys = crate::audit::generate_keys(&dir.path().join("audit")).unwrap();
        let cfg: AuditConfig = toml::from_str(
            "commitment_key_env = \"LLMOPS_GOVERN_TEST_UNSET_VARIABLE\"\ncontent = \"encrypted\"\n[checkpoints]\nevery_records = 2\n",
        )
        .unwrap();
        assert!(matches!(
            cfg.open_file_sink(dir.path()),
            Err(GovernError::InvalidKey(_))
        ));
        let key = CommitmentKey::from_hex(&std::fs::read_to_string(&keys.commitment_key).unwrap())
            .unwrap();
        let sink = cfg.open_file_sink_with_key(dir.path(), key).unwrap();
        for _ in 0..3 {
            let ev = llmops_core::traits::audit::SystemEvent::new(
                "config_loaded",
                serde_json::json!({}),
            );
            sink.append(llmops_core::AuditEvent::System(ev))
                .await
                .unwrap();
        }
        sink.close().await.unwrap();
        let pk = crate::audit::keys::load_public_key(&keys.public_key).unwrap();
        let opts = crate::audit::VerifyOptions::default()
            .with_checkpoints(dir.path().join("audit/checkpoints.jsonl"), pk);
        let report =
            crate::audit::verify_log(&dir.path().join("audit/llmops.jsonl"), &opts).unwrap();
        assert!(report.is_intact(), "{}", report.summary());
        assert_eq!(report.checkpoints_verified, 2);
    }
}
