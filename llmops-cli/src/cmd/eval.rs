//! `llmops eval`: run an evaluation suite as a CI gate, and calibrate LLM judges.
//!
//! Exit codes of `eval run`: 0 the gate passed (or the suite has no gate), 1 the gate failed
//! (a regression, a floor, a must-pass case), 2 a configuration or runtime error, or a gate
//! that cannot decide (too many ERRORs, an uncalibrated gating judge).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use llmops_eval::calibration::{calibrate, load_labels};
use llmops_eval::mlflow::MlflowClient;
use llmops_eval::report::{junit_xml, markdown, terminal_summary};
use llmops_eval::{EvalError, Overrides, RunFile, Suite};

/// Arguments of `llmops eval`.
#[derive(Debug, Args)]
pub(crate) struct EvalArgs {
    #[command(subcommand)]
    command: EvalCommand,
}

#[derive(Debug, Subcommand)]
enum EvalCommand {
    /// Run a suite; with a [gate] and --baseline, fail on a statistically significant
    /// regression. Exit 0 passed, 1 gate failed, 2 configuration or runtime error.
    Run(RunArgs),
    /// Grade human-labelled outputs with a suite's judge and report agreement (raw, Cohen's
    /// κ), TPR/FPR and self-consistency; write the calibration record a gating judge needs.
    Calibrate(CalibrateArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The suite file.
    suite: PathBuf,
    /// A previous run file to compare with (paired per case).
    #[arg(long, value_name = "RUN.json")]
    baseline: Option<PathBuf>,
    /// Write the run file (every per-case, per-repeat output and score, and the gate report).
    #[arg(long, value_name = "RUN.json")]
    out: Option<PathBuf>,
    /// Write a JUnit XML report (one test case per case).
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Write a Markdown report for a pull-request comment.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Independent samples per case (overrides the suite).
    #[arg(long, value_name = "K")]
    repeats: Option<u32>,
    /// Target calls in flight (overrides the suite).
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// Log the run to this MLflow tracking server.
    #[arg(long, value_name = "URL", env = "MLFLOW_TRACKING_URI")]
    mlflow: Option<String>,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

#[derive(Debug, Args)]
struct CalibrateArgs {
    /// The suite file defining the judge.
    suite: PathBuf,
    /// The `llm_judge` evaluator to calibrate.
    #[arg(long, value_name = "NAME")]
    judge: String,
    /// Human labels (JSONL: id, input, output, optional expected, label).
    #[arg(long, value_name = "FILE")]
    labels: PathBuf,
    /// Where to write the calibration record (default: the evaluator's `calibration` path).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Judge calls in flight.
    #[arg(long, value_name = "N", default_value_t = 4)]
    concurrency: usize,
}

pub(crate) async fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        EvalCommand::Run(a) => run_suite(a).await,
        EvalCommand::Calibrate(a) => run_calibrate(a).await,
    }
}

async fn run_suite(a: RunArgs) -> anyhow::Result<ExitCode> {
    let suite = Suite::load(&a.suite)?;
    let baseline = match &a.baseline {
        Some(p) => Some(RunFile::load(p).context("cannot use the baseline")?),
        None => None,
    };
    if baseline.is_some() && suite.config.gate.is_none() {
        eprintln!("warning: --baseline given but the suite has no [gate]: nothing is compared");
    }
    let mut ov = Overrides::default();
    ov.repeats = a.repeats;
    ov.concurrency = a.concurrency;
    ov.progress = !a.no_progress;
    let outcome = match suite.run(baseline.as_ref(), &ov).await {
        Ok(o) => o,
        Err(EvalError::GateRefused(why)) => {
            eprintln!("error: gate refused: {why}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    let run = &outcome.run;
    let gate = outcome.gate.as_ref();
    print!("{}", terminal_summary(run, gate));
    if let Some(p) = &a.out {
        run.save(p)?;
    }
    if let Some(p) = &a.junit {
        std::fs::write(p, junit_xml(run, gate))
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = &a.markdown {
        std::fs::write(p, markdown(run, gate, 50))
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(uri) = a.mlflow.as_deref().filter(|u| !u.is_empty()) {
        let client = MlflowClient::new(uri)?;
        let mut tags = Vec::new();
        for (var, tag) in [
            ("GITHUB_SHA", "git.sha"),
            ("GITHUB_REF_NAME", "git.branch"),
            ("GITHUB_RUN_ID", "ci.run_id"),
        ] {
            if let Ok(v) = std::env::var(var) {
                tags.push((tag.to_owned(), v));
            }
        }
        let logged = client
            .log_run(run, &tags)
            .await
            .context("cannot log the run to MLflow")?;
        eprintln!(
            "logged to MLflow: experiment {} run {}{}",
            logged.experiment_id,
            logged.run_id,
            if logged.artifact_uploaded {
                " (run file uploaded)"
            } else {
                ""
            }
        );
    }
    Ok(ExitCode::from(gate.map_or(0, |g| g.outcome.exit_code())))
}

async fn run_calibrate(a: CalibrateArgs) -> anyhow::Result<ExitCode> {
    let suite = Suite::load(&a.suite)?;
    let judge = suite.rubric_judge(&a.judge, &Overrides::default())?;
    let items = load_labels(&a.labels)?;
    let record = calibrate(&judge, &items, a.concurrency).await?;
    println!("{}", record.summary());
    let section = suite.config.evaluators.iter().find(|e| e.name == a.judge);
    let out = a
        .out
        .or_else(|| {
            section
                .and_then(|e| e.calibration.as_ref())
                .map(|p| suite.resolve(p))
        })
        .context("no --out given and the evaluator has no `calibration` path")?;
    record.save(&out)?;
    println!("calibration written to {}", out.display());
    let floor = section.and_then(|e| e.min_kappa).unwrap_or(0.6);
    let kappa = record.gating_kappa();
    if kappa >= floor {
        println!("κ {kappa:.3} meets the floor {floor:.2}: the judge may gate");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("κ {kappa:.3} is below the floor {floor:.2}: the judge cannot gate");
        Ok(ExitCode::from(1))
    }
}
