//! Prompt templates as versioned files, a registry of which version each environment
//! serves, and gated promotion with a recorded decision.
//!
//! # Layout
//!
//! ```text
//! prompts/                       the registry root
//!   registry.json                name → versions (in the order added) and, per environment,
//!                                the current version and the versions it replaced
//!   templates/<name>/<version>.json   each version's content, named by its hash
//!   decisions.jsonl              the decision log (when no other audit sink is given)
//! ```
//!
//! A version is the content hash of the template ([`PromptTemplate::version`]), so adding
//! the same text twice is a no-op and a version id always means the same text. Writes of
//! `registry.json` are atomic (write, then rename).
//!
//! [`promote`] runs an evaluation suite with the candidate version, compares it with the
//! environment's current version (a baseline run file, or a fresh run of the current
//! version), and moves the environment to the candidate only if the gate passes. Every
//! decision — promoted or refused — is appended to an [`AuditSink`] as a
//! [`SystemEvent`] (`prompt_promoted`, `prompt_promotion_refused`, `prompt_rolled_back`)
//! naming the prompt, the versions, the environment, the actor and the run. [`DecisionLog`]
//! is a JSONL sink for callers without an audit log.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use llmops_core::traits::audit::SystemEvent;
use llmops_core::{AuditEvent, AuditReceipt, AuditSink, Error as CoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{EvalError, Result};
use crate::gate::{GateOutcome, GateReport};
use crate::run::RunFile;
use crate::suite::{Overrides, Suite};
use crate::template::{PromptTemplate, full_hash};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct RegistryFile {
    #[serde(default)]
    prompts: BTreeMap<String, PromptEntry>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct PromptEntry {
    /// Versions in the order they were added.
    #[serde(default)]
    versions: Vec<String>,
    #[serde(default)]
    environments: BTreeMap<String, EnvEntry>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct EnvEntry {
    current: String,
    /// Versions this environment served before, oldest first.
    #[serde(default)]
    history: Vec<String>,
}

/// A prompt registry rooted at a directory.
#[derive(Debug)]
pub struct PromptRegistry {
    root: PathBuf,
}

/// What a promotion or rollback changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Change {
    /// The prompt.
    pub name: String,
    /// The environment.
    pub environment: String,
    /// The version served before (none for a first promotion).
    pub from: Option<String>,
    /// The version served now.
    pub to: String,
}

fn valid_name(kind: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !s.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(EvalError::Registry(format!(
            "invalid {kind} {s:?}: use letters, digits, `-`, `_` and `.` (not first)"
        )))
    }
}

impl PromptRegistry {
    /// Opens (creating the directory if needed) the registry at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join("templates")).map_err(|e| EvalError::io(&root, e))?;
        Ok(Self { root })
    }

    /// The registry's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn file(&self) -> PathBuf {
        self.root.join("registry.json")
    }

    fn load(&self) -> Result<RegistryFile> {
        let p = self.file();
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| EvalError::Parse {
                path: p,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RegistryFile::default()),
            Err(e) => Err(EvalError::io(p, e)),
        }
    }

    fn save(&self, reg: &RegistryFile) -> Result<()> {
        let p = self.file();
        let tmp = self.root.join(".registry.json.tmp");
        let bytes =
            serde_json::to_vec_pretty(reg).map_err(|e| EvalError::Registry(e.to_string()))?;
        std::fs::write(&tmp, bytes).map_err(|e| EvalError::io(&tmp, e))?;
        std::fs::rename(&tmp, &p).map_err(|e| EvalError::io(&p, e))
    }

    /// Stores `template` under its id; returns its version. Idempotent.
    pub fn add(&self, template: &PromptTemplate) -> Result<String> {
        valid_name("prompt name", &template.id)?;
        let version = template.version();
        let dir = self.root.join("templates").join(&template.id);
        std::fs::create_dir_all(&dir).map_err(|e| EvalError::io(&dir, e))?;
        let path = dir.join(format!("{version}.json"));
        if !path.exists() {
            let bytes = serde_json::to_vec_pretty(template)
                .map_err(|e| EvalError::Registry(e.to_string()))?;
            std::fs::write(&path, bytes).map_err(|e| EvalError::io(&path, e))?;
        }
        let mut reg = self.load()?;
        let entry = reg.prompts.entry(template.id.clone()).or_default();
        if !entry.versions.contains(&version) {
            entry.versions.push(version.clone());
            self.save(&reg)?;
        }
        Ok(version)
    }

    /// The template `name` at `version`; its content is checked against the version.
    pub fn get(&self, name: &str, version: &str) -> Result<PromptTemplate> {
        valid_name("prompt name", name)?;
        valid_name("version", version)?;
        let path = self
            .root
            .join("templates")
            .join(name)
            .join(format!("{version}.json"));
        let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                EvalError::Registry(format!("prompt `{name}` has no version `{version}`"))
            }
            _ => EvalError::io(&path, e),
        })?;
        let t: PromptTemplate = serde_json::from_slice(&bytes).map_err(|e| EvalError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if t.version() != version {
            return Err(EvalError::Registry(format!(
                "{} was modified: its content hashes to {}, not {version}",
                path.display(),
                t.version()
            )));
        }
        Ok(t)
    }

    /// Versions of `name`, in the order added.
    pub fn versions(&self, name: &str) -> Result<Vec<String>> {
        Ok(self
            .load()?
            .prompts
            .get(name)
            .map(|e| e.versions.clone())
            .unwrap_or_default())
    }

    /// The version `environment` serves.
    pub fn current(&self, name: &str, environment: &str) -> Result<Option<String>> {
        Ok(self
            .load()?
            .prompts
            .get(name)
            .and_then(|e| e.environments.get(environment))
            .map(|e| e.current.clone()))
    }

    /// Makes `environment` serve `version` (which must be registered).
    pub fn set_current(&self, name: &str, version: &str, environment: &str) -> Result<Change> {
        valid_name("environment", environment)?;
        let mut reg = self.load()?;
        let entry = reg
            .prompts
            .get_mut(name)
            .ok_or_else(|| EvalError::Registry(format!("no prompt `{name}` in the registry")))?;
        if !entry.versions.iter().any(|v| v == version) {
            return Err(EvalError::Registry(format!(
                "prompt `{name}` has no version `{version}`"
            )));
        }
        let env = entry
            .environments
            .entry(environment.to_owned())
            .or_default();
        let from = (!env.current.is_empty()).then(|| env.current.clone());
        if let Some(f) = &from {
            if f == version {
                return Ok(Change {
                    name: name.into(),
                    environment: environment.into(),
                    from,
                    to: version.into(),
                });
            }
            env.history.push(f.clone());
        }
        env.current = version.to_owned();
        self.save(&reg)?;
        Ok(Change {
            name: name.into(),
            environment: environment.into(),
            from,
            to: version.into(),
        })
    }

    /// Restores the version `environment` served before the current one.
    pub fn rollback(&self, name: &str, environment: &str) -> Result<Change> {
        let mut reg = self.load()?;
        let env = reg
            .prompts
            .get_mut(name)
            .and_then(|e| e.environments.get_mut(environment))
            .ok_or_else(|| {
                EvalError::Registry(format!(
                    "prompt `{name}` was never promoted to `{environment}`"
                ))
            })?;
        let previous = env.history.pop().ok_or_else(|| {
            EvalError::Registry(format!(
                "`{environment}` has no version of `{name}` to roll back to"
            ))
        })?;
        let from = std::mem::replace(&mut env.current, previous.clone());
        self.save(&reg)?;
        Ok(Change {
            name: name.into(),
            environment: environment.into(),
            from: Some(from),
            to: previous,
        })
    }
}

/// An [`AuditSink`] appending events to a JSONL file, each line carrying its sequence
/// number and the SHA-256 of the previous line (a simple hash chain).
#[derive(Debug)]
pub struct DecisionLog {
    path: PathBuf,
    state: Mutex<(u64, String)>,
}

impl DecisionLog {
    /// Opens (or creates) the log at `path`, continuing its sequence and chain.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let (mut seq, mut last) = (0u64, String::new());
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                seq += 1;
                last = full_hash(line.as_bytes());
            }
        }
        Ok(Self {
            path,
            state: Mutex::new((seq, last)),
        })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl AuditSink for DecisionLog {
    async fn append(&self, event: AuditEvent) -> llmops_core::Result<AuditReceipt> {
        let AuditEvent::System(ev) = event else {
            return Err(CoreError::new(
                llmops_core::ErrorKind::Unsupported,
                "the decision log records system events only",
            ));
        };
        let time_ms = ev
            .time
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let seq = st.0 + 1;
        let line = json!({
            "seq": seq,
            "time_ms": time_ms,
            "event": ev.event,
            "actor": ev.actor,
            "detail": ev.detail,
            "prev": st.1,
        })
        .to_string();
        // Decisions are rare (one per promotion): a small synchronous append is fine here.
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| {
                f.write_all(line.as_bytes())?;
                f.write_all(b"\n")?;
                Ok(f)
            })
            .map_err(|e| CoreError::internal(format!("{}: {e}", self.path.display())))?;
        f.sync_data()
            .map_err(|e| CoreError::internal(format!("{}: {e}", self.path.display())))?;
        let hash = full_hash(line.as_bytes());
        *st = (seq, hash.clone());
        Ok(AuditReceipt::new(seq, hash))
    }

    async fn flush(&self) -> llmops_core::Result<()> {
        Ok(())
    }
}

/// A promotion request.
#[derive(Debug)]
#[non_exhaustive]
pub struct PromotionRequest<'a> {
    /// The prompt.
    pub name: &'a str,
    /// The candidate version (registered).
    pub version: &'a str,
    /// The target environment.
    pub environment: &'a str,
    /// The suite that gates the promotion (it must have a `[gate]`).
    pub suite: &'a Suite,
    /// A baseline run; without it, the environment's current version is run as the
    /// baseline (when there is one).
    pub baseline: Option<&'a RunFile>,
    /// Who asks (a user, a CI job).
    pub actor: Option<String>,
    /// In-process endpoints and run settings.
    pub overrides: Overrides,
}

impl<'a> PromotionRequest<'a> {
    /// A request to promote `version` of `name` to `environment`, gated by `suite`.
    pub fn new(name: &'a str, version: &'a str, environment: &'a str, suite: &'a Suite) -> Self {
        Self {
            name,
            version,
            environment,
            suite,
            baseline: None,
            actor: None,
            overrides: Overrides::default(),
        }
    }
}

/// The outcome of a promotion.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PromotionDecision {
    /// Whether the environment now serves the candidate.
    pub promoted: bool,
    /// The change made (when promoted).
    pub change: Option<Change>,
    /// The candidate's run (with its gate report).
    pub run: RunFile,
    /// The gate's report.
    pub gate: GateReport,
    /// The audit receipt of the recorded decision.
    pub receipt: AuditReceipt,
}

fn gate_detail(g: &GateReport) -> Value {
    json!({
        "outcome": g.outcome,
        "reasons": g.reasons,
        "metrics": g.metrics.iter().map(|m| json!({
            "metric": m.metric,
            "pass_rate": m.pass_rate,
            "delta": m.comparison.as_ref().map(|c| c.delta),
            "p_value": m.comparison.as_ref().map(|c| c.p_adjusted),
        })).collect::<Vec<_>>(),
    })
}

/// Runs the suite on the candidate and promotes it only if the gate passes; records the
/// decision (promoted or refused) in `audit`.
pub async fn promote(
    registry: &PromptRegistry,
    req: PromotionRequest<'_>,
    audit: &dyn AuditSink,
) -> Result<PromotionDecision> {
    let candidate = registry.get(req.name, req.version)?;
    if req.suite.config.gate.is_none() {
        return Err(EvalError::Config(format!(
            "suite `{}` has no [gate]: a promotion needs one",
            req.suite.config.suite.name
        )));
    }
    let current = registry.current(req.name, req.environment)?;
    let mut ov = req.overrides.clone();
    let fresh_baseline;
    let baseline = match (req.baseline, &current) {
        (Some(b), _) => Some(b),
        (None, Some(v)) if v != req.version => {
            ov.template = Some(registry.get(req.name, v)?);
            fresh_baseline = req.suite.run(None, &ov).await?.run;
            Some(&fresh_baseline)
        }
        _ => None,
    };
    ov.template = Some(candidate);
    let outcome = req.suite.run(baseline, &ov).await?;
    let gate = outcome
        .gate
        .ok_or_else(|| EvalError::Config("the suite produced no gate report".into()))?;
    let promoted = gate.outcome == GateOutcome::Pass;
    let change = if promoted {
        Some(registry.set_current(req.name, req.version, req.environment)?)
    } else {
        None
    };
    let mut event = SystemEvent::new(
        if promoted {
            "prompt_promoted"
        } else {
            "prompt_promotion_refused"
        },
        json!({
            "prompt": req.name,
            "environment": req.environment,
            "from": current,
            "to": req.version,
            "suite": req.suite.config.suite.name,
            "run_id": outcome.run.run_id,
            "baseline_run_id": baseline.map(|b| b.run_id.clone()),
            "gate": gate_detail(&gate),
        }),
    );
    event.actor = req.actor.clone();
    let receipt = audit
        .append(AuditEvent::System(event))
        .await
        .map_err(|e| EvalError::Registry(format!("cannot record the decision: {e}")))?;
    Ok(PromotionDecision {
        promoted,
        change,
        run: outcome.run,
        gate,
        receipt,
    })
}

/// Restores the previous version of `name` in `environment` and records it in `audit`.
pub async fn rollback(
    registry: &PromptRegistry,
    name: &str,
    environment: &str,
    actor: Option<String>,
    audit: &dyn AuditSink,
) -> Result<(Change, AuditReceipt)> {
    let change = registry.rollback(name, environment)?;
    let mut event = SystemEvent::new(
        "prompt_rolled_back",
        json!({"prompt": name, "environment": environment, "from": change.from, "to": change.to}),
    );
    event.actor = actor;
    let receipt = audit
        .append(AuditEvent::System(event))
        .await
        .map_err(|e| EvalError::Registry(format!("cannot record the decision: {e}")))?;
    Ok((change, receipt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_environments_and_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let reg = PromptRegistry::open(dir.path()).unwrap();
        let v1 = reg
            .add(&PromptTemplate::user("capitals", "Capital of {{country}}?"))
            .unwrap();
        let v2 = reg
            .add(&PromptTemplate::user(
                "capitals",
                "What is the capital of {{country}}?",
            ))
            .unwrap();
        assert_eq!(
            reg.add(&PromptTemplate::user("capitals", "Capital of {{country}}?"))
                .unwrap(),
            v1
        );
        assert_eq!(
            reg.versions("capitals").unwrap(),
            vec![v1.clone(), v2.clone()]
        );
        assert_eq!(reg.get("capitals", &v2).unwrap().version(), v2);

        assert_eq!(reg.current("capitals", "prod").unwrap(), None);
        let c = reg.set_current("capitals", &v1, "prod").unwrap();
        assert_eq!(c.from, None);
        let c = reg.set_current("capitals", &v2, "prod").unwrap();
        assert_eq!(c.from.as_deref(), Some(v1.as_str()));
        assert_eq!(
            reg.current("capitals", "prod").unwrap().as_deref(),
            Some(v2.as_str())
        );
        let r = reg.rollback("capitals", "prod").unwrap();
        assert_eq!(
            (r.from.as_deref(), r.to.as_str()),
            (Some(v2.as_str()), v1.as_str())
        );
        assert!(
            reg.rollback("capitals", "prod")
                .unwrap_err()
                .to_string()
                .contains("no version")
        );
        assert!(reg.set_current("capitals", "ffffffffffff", "prod").is_err());
        assert!(reg.get("../etc", &v1).is_err());

        // Tampered content is detected.
        let path = dir
            .path()
            .join("templates/capitals")
            .join(format!("{v1}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("Capital of", "Kapital of");
        std::fs::write(&path, text).unwrap();
        assert!(
            reg.get("capitals", &v1)
                .unwrap_err()
                .to_string()
                .contains("was modified")
        );
    }

    #[tokio::test]
    async fn decision_log_chains_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.jsonl");
        let log = DecisionLog::open(&path).unwrap();
        let r1 = log
            .append(AuditEvent::System(SystemEvent::new("a", json!({}))))
            .await
            .unwrap();
        let r2 = log
            .append(AuditEvent::System(SystemEvent::new("b", json!({}))))
            .await
            .unwrap();
        assert_eq!((r1.seq, r2.seq), (1, 2));
        let lines: Vec<Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[1]["prev"], r1.hash);
        let reopened = DecisionLog::open(&path).unwrap();
        let r3 = reopened
            .append(AuditEvent::System(SystemEvent::new("c", json!({}))))
            .await
            .unwrap();
        assert_eq!(r3.seq, 3);
    }
}
