//! `llmops promote` and `llmops rollback`: move an environment to a prompt version only when
//! its evaluation gate passes, and back.
//!
//! Decisions (promoted, refused, rolled back) are recorded with who asked and which run
//! decided, in the registry's decision log (`<registry>/decisions.jsonl`, hash-chained JSONL).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use llmops_eval::prompts::{DecisionLog, PromotionRequest, PromptRegistry, promote, rollback};
use llmops_eval::report::{markdown, terminal_summary};
use llmops_eval::{GateOutcome, Overrides, PromptTemplate, RunFile, Suite};

/// Arguments of `llmops promote`.
#[derive(Debug, Args)]
pub(crate) struct PromoteArgs {
    /// The prompt's name in the registry.
    name: String,
    /// The environment to promote to (e.g. `prod`).
    #[arg(long = "to", value_name = "ENV")]
    environment: String,
    /// The suite whose gate decides.
    #[arg(long, value_name = "SUITE.toml")]
    suite: PathBuf,
    /// A template file to register and promote (its content hash is its version).
    #[arg(long, value_name = "FILE", conflicts_with = "version")]
    file: Option<PathBuf>,
    /// A registered version to promote (default: the latest registered).
    #[arg(long, value_name = "VERSION")]
    version: Option<String>,
    /// The registry directory.
    #[arg(long, value_name = "DIR", default_value = "prompts")]
    registry: PathBuf,
    /// Compare with this run file instead of a fresh run of the current version.
    #[arg(long, value_name = "RUN.json")]
    baseline: Option<PathBuf>,
    /// Who asks (default: $GITHUB_ACTOR or $USER).
    #[arg(long)]
    actor: Option<String>,
    /// Write the candidate's run file.
    #[arg(long, value_name = "RUN.json")]
    out: Option<PathBuf>,
    /// Write a Markdown report.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

/// Arguments of `llmops rollback`.
#[derive(Debug, Args)]
pub(crate) struct RollbackArgs {
    /// The prompt's name in the registry.
    name: String,
    /// The environment to roll back (e.g. `prod`).
    #[arg(long = "to", value_name = "ENV")]
    environment: String,
    /// The registry directory.
    #[arg(long, value_name = "DIR", default_value = "prompts")]
    registry: PathBuf,
    /// Who asks (default: $GITHUB_ACTOR or $USER).
    #[arg(long)]
    actor: Option<String>,
}

fn actor(given: Option<String>) -> Option<String> {
    given
        .or_else(|| std::env::var("GITHUB_ACTOR").ok())
        .or_else(|| std::env::var("USER").ok())
}

/// Exit 0 promoted, 1 refused by the gate, 2 error or undecidable gate.
pub(crate) async fn run(a: PromoteArgs) -> anyhow::Result<ExitCode> {
    let registry = PromptRegistry::open(&a.registry)?;
    let version = match (&a.file, &a.version) {
        (Some(f), _) => {
            let mut t = PromptTemplate::load(f)?;
            t.id = a.name.clone();
            registry.add(&t)?
        }
        (None, Some(v)) => v.clone(),
        (None, None) => registry.versions(&a.name)?.pop().with_context(|| {
            format!("prompt `{}` has no registered version: pass --file", a.name)
        })?,
    };
    let suite = Suite::load(&a.suite)?;
    let baseline = match &a.baseline {
        Some(p) => Some(RunFile::load(p).context("cannot use the baseline")?),
        None => None,
    };
    let log = DecisionLog::open(registry.root().join("decisions.jsonl"))?;
    let mut req = PromotionRequest::new(&a.name, &version, &a.environment, &suite);
    req.baseline = baseline.as_ref();
    req.actor = actor(a.actor);
    let mut ov = Overrides::default();
    ov.progress = !a.no_progress;
    req.overrides = ov;
    let d = promote(&registry, req, &log).await?;
    print!("{}", terminal_summary(&d.run, Some(&d.gate)));
    if let Some(p) = &a.out {
        d.run.save(p)?;
    }
    if let Some(p) = &a.markdown {
        std::fs::write(p, markdown(&d.run, Some(&d.gate), 50))
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    if d.promoted {
        let from = d
            .change
            .as_ref()
            .and_then(|c| c.from.clone())
            .unwrap_or_else(|| "nothing".into());
        println!(
            "promoted {}@{version} to {} (was {from}); decision #{} recorded in {}",
            a.name,
            a.environment,
            d.receipt.seq,
            log.path().display()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "NOT promoted: {}@{version} stays out of {}; decision #{} recorded in {}",
            a.name,
            a.environment,
            d.receipt.seq,
            log.path().display()
        );
        Ok(ExitCode::from(if d.gate.outcome == GateOutcome::Fail {
            1
        } else {
            2
        }))
    }
}

/// Exit 0 rolled back, 2 nothing to roll back or an error.
pub(crate) async fn run_rollback(a: RollbackArgs) -> anyhow::Result<ExitCode> {
    let registry = PromptRegistry::open(&a.registry)?;
    let log = DecisionLog::open(registry.root().join("decisions.jsonl"))?;
    let (change, receipt) =
        rollback(&registry, &a.name, &a.environment, actor(a.actor), &log).await?;
    println!(
        "rolled back {} in {}: {} → {}; decision #{} recorded in {}",
        a.name,
        a.environment,
        change.from.unwrap_or_default(),
        change.to,
        receipt.seq,
        log.path().display()
    );
    Ok(ExitCode::SUCCESS)
}
