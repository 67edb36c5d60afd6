//! `llmops sim fleet`: compare replica-routing strategies on a simulated vLLM fleet.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use llmops_serve::prefix::fleet::{FleetConfig, Workload, simulate_all};

/// `llmops sim` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum SimCommand {
    /// Simulate a fleet of vLLM-like replicas under each routing strategy (round-robin,
    /// least-outstanding, prefix-only, prefix-aware) and report prefix-cache hit rate, time to
    /// first token, throughput and load balance. Deterministic for a seed.
    Fleet(FleetArgs),
}

/// Arguments of `llmops sim fleet`.
#[derive(Debug, Args)]
pub(crate) struct FleetArgs {
    /// `shared-context` (tenants with long private contexts), `sessions` (multi-turn chats)
    /// or `no-sharing` (unique prompts).
    #[arg(long, default_value = "shared-context")]
    workload: String,
    /// Number of replicas (1 to 64).
    #[arg(long, default_value_t = 8)]
    replicas: usize,
    /// Seed of the workload generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Requests to simulate.
    #[arg(long, default_value_t = 4000)]
    requests: usize,
    /// Arrival rate in requests per second (default: the workload's, scaled by replicas).
    #[arg(long)]
    rate: Option<f64>,
    /// Print one JSON object keyed by strategy instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(cmd: SimCommand) -> anyhow::Result<ExitCode> {
    let SimCommand::Fleet(args) = cmd;
    let Some(workload) = Workload::parse(&args.workload) else {
        anyhow::bail!(
            "unknown workload `{}`: use shared-context, sessions or no-sharing",
            args.workload
        );
    };
    if !(1..=64).contains(&args.replicas) {
        anyhow::bail!("--replicas must be between 1 and 64, got {}", args.replicas);
    }
    if let Some(r) = args.rate
        && !(r.is_finite() && r > 0.0)
    {
        anyhow::bail!("--rate must be a positive number, got {r}");
    }
    let mut cfg = FleetConfig::new(workload, args.replicas, args.seed);
    cfg.requests = args.requests.max(1);
    cfg.rate = args.rate;
    let reports = tokio::task::spawn_blocking(move || simulate_all(&cfg)).await?;
    if args.json {
        let mut obj = serde_json::Map::new();
        for (s, r) in &reports {
            obj.insert(s.as_str().to_owned(), serde_json::to_value(r)?);
        }
        println!("{}", serde_json::to_string_pretty(&obj)?);
    } else {
        println!(
            "{:<18} {:>9} {:>12} {:>12} {:>11} {:>13}",
            "strategy", "hit rate", "TTFT p50", "TTFT p90", "req/s", "max/mean load"
        );
        for (s, r) in &reports {
            println!(
                "{:<18} {:>8.1}% {:>9.0} ms {:>9.0} ms {:>11.2} {:>13.2}",
                s.as_str(),
                r.hit_rate * 100.0,
                r.ttft_p50_ms,
                r.ttft_p90_ms,
                r.throughput_rps,
                r.max_mean_load
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
