//! `llmops`: the reference gateway and CI tool, composed from the llmops crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod config;
mod pipeline;

/// llmops: serve, evaluate, audit and control the cost of LLM calls.
#[derive(Debug, Parser)]
#[command(name = "llmops", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the OpenAI-compatible gateway (with no config: a simulated model named `sim`).
    Serve(cmd::serve::ServeArgs),
    /// Simulations: compare routing strategies on a simulated vLLM fleet.
    #[command(subcommand)]
    Sim(cmd::sim::SimCommand),
    /// Live per-model latency, cost, error and cache-hit rates from a gateway's `/metrics`.
    Top(cmd::top::TopArgs),
    /// Print the exact token count of a text (a file, or standard input), and with `--json`
    /// its estimated input cost.
    Tokens(cmd::tokens::TokensArgs),
    /// Generate audit keys, verify the tamper-evident audit log, show records.
    Audit(cmd::audit::AuditArgs),
    /// Scan standard input for PII and secrets, or for prompt injection.
    Guard(cmd::guard::GuardArgs),
    /// Run evaluation suites as CI gates (exit 0 pass, 1 regression, 2 error) and calibrate
    /// LLM judges against human labels.
    Eval(cmd::eval::EvalArgs),
    /// Promote a prompt version to an environment if its evaluation gate passes (exit 0
    /// promoted, 1 refused, 2 error); the decision is recorded.
    Promote(cmd::promote::PromoteArgs),
    /// Restore the previous prompt version of an environment; the decision is recorded.
    Rollback(cmd::promote::RollbackArgs),
}

/// The allocator (feature `mimalloc`, on by default): a request through the full pipeline
/// allocates a few hundred times, and with the system allocator those calls were half of the
/// pipeline's instructions (`BENCHMARKS.md`, *In process*).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The default multi-thread runtime (one worker per core). Measured against
    // `current_thread`, one worker, and `event_interval`/`global_queue_interval` of 7 with
    // `llmops-loadgen matrix --rates 1000 --modes json` on 2 shared cores: none lowered the
    // added latency beyond the run-to-run noise, so the defaults stay.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => cmd::serve::run(args).await,
            Command::Sim(cmd) => cmd::sim::run(cmd).await,
            Command::Top(args) => cmd::top::run(args).await,
            Command::Tokens(args) => cmd::tokens::run(args).await,
            Command::Audit(args) => cmd::audit::run(args).await,
            Command::Guard(args) => cmd::guard::run(args).await,
            Command::Eval(args) => cmd::eval::run(args).await,
            Command::Promote(args) => cmd::promote::run(args).await,
            Command::Rollback(args) => cmd::promote::run_rollback(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
