//! `llmops guard`: scan text on standard input for PII and prompt injection.

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use llmops_govern::injection::HeuristicDetector;
use llmops_govern::pii::{PiiScanner, Recognizer};

/// Arguments of `llmops guard`.
#[derive(Debug, Args)]
pub(crate) struct GuardArgs {
    #[command(subcommand)]
    command: GuardCommand,
}

#[derive(Debug, Subcommand)]
enum GuardCommand {
    /// Print the PII and secrets found in standard input: type, byte offsets, score (never
    /// the values). Exit 1 when anything is found, 0 otherwise.
    Pii {
        /// Print a JSON array of `{type, start, end, score}`.
        #[arg(long)]
        json: bool,
        /// Minimum score of a finding.
        #[arg(long, default_value_t = 0.5)]
        min_score: f32,
        /// Extra pattern as NAME=REGEX (repeatable).
        #[arg(long, value_name = "NAME=REGEX")]
        custom: Vec<String>,
    },
    /// Score standard input for prompt injection: score, flagged, signals. Exit 1 when
    /// flagged, 0 otherwise.
    Injection {
        /// Print `{score, flagged, signals}` as JSON.
        #[arg(long)]
        json: bool,
        /// Score at or above which the text is flagged.
        #[arg(long, default_value_t = 0.5)]
        threshold: f32,
    },
}

fn read_stdin() -> anyhow::Result<String> {
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .context("cannot read standard input")?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

pub(crate) async fn run(args: GuardArgs) -> anyhow::Result<ExitCode> {
    tokio::task::spawn_blocking(move || run_blocking(args))
        .await
        .context("guard command panicked")?
}

fn run_blocking(args: GuardArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        GuardCommand::Pii {
            json,
            min_score,
            custom,
        } => {
            let mut scanner = PiiScanner::new().with_min_score(min_score);
            for c in &custom {
                let (name, pattern) = c
                    .split_once('=')
                    .with_context(|| format!("--custom {c:?}: expected NAME=REGEX"))?;
                scanner = scanner.with_recognizer(Recognizer::custom(name, pattern, 0.8)?);
            }
            let text = read_stdin()?;
            let findings = scanner.scan(&text);
            if json {
                println!("{}", serde_json::to_string(&findings)?);
            } else {
                for f in &findings {
                    println!("{}\t{}\t{}\t{:.2}", f.kind, f.start, f.end, f.score);
                }
            }
            Ok(if findings.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        GuardCommand::Injection { json, threshold } => {
            let text = read_stdin()?;
            let d = HeuristicDetector::new()
                .with_threshold(threshold)
                .scan(&text);
            if json {
                println!("{}", serde_json::to_string(&d)?);
            } else {
                let names: Vec<&str> = d.signals.iter().map(|s| s.name).collect();
                println!("score\t{:.2}", d.score);
                println!("flagged\t{}", d.flagged);
                println!(
                    "signals\t{}",
                    if names.is_empty() {
                        "-".to_owned()
                    } else {
                        names.join(",")
                    }
                );
            }
            Ok(if d.flagged {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
