//! `llmops-loadgen`: the load harness behind BENCHMARKS.md.
//!
//! - `upstream`: a canned OpenAI-compatible server (the fast fake upstream).
//! - `run`: an open-loop, constant-rate client against one URL, latency measured from each
//!   request's intended send time (no coordinated omission), HDR histograms.
//! - `matrix`: the whole table — the upstream measured directly and through `llmops serve` at
//!   each rate, streaming and not, the added latency per percentile, the gateway's CPU and
//!   memory, and memory with thousands of concurrent slow streams.
//! - `passthrough`: the gateway's HTTP server and client with nothing between them, the
//!   baseline a gateway's added latency is compared with.
//! - `compare`: gateways side by side in front of one running upstream — `llmops serve`
//!   started here and any already-running OpenAI-compatible gateway (LiteLLM's proxy in
//!   `tools/bench-litellm.sh`) — at the same rates, with CPU and memory summed over each
//!   gateway's process tree and a summary of the highest sustained rates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod client;
mod compare;
mod matrix;
mod passthrough;
mod procstat;
mod upstream;

/// Load harness for the llmops gateway.
#[derive(Debug, Parser)]
#[command(name = "llmops-loadgen", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve the canned OpenAI-compatible upstream until interrupted.
    Upstream {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9100")]
        listen: SocketAddr,
        /// Content chunks per streamed answer.
        #[arg(long, default_value_t = 16)]
        chunks: usize,
        /// Milliseconds between streamed chunks.
        #[arg(long, default_value_t = 0)]
        chunk_delay_ms: u64,
    },
    /// Serve a do-nothing pass-through in front of an upstream until interrupted: the
    /// gateway's own HTTP server and client with nothing between them (the floor of what a
    /// gateway built on them adds; measure it with `compare --gateway`).
    Passthrough {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9300")]
        listen: SocketAddr,
        /// The upstream's base URL, e.g. http://127.0.0.1:9100/v1.
        #[arg(long)]
        upstream: String,
        /// Serve on tokio's work-stealing runtime (the gateway's `[server] runtime =
        /// "work-stealing"`) instead of one single-threaded runtime per CPU (its default).
        #[arg(long)]
        work_stealing: bool,
    },
    /// Send requests at a constant rate to one chat-completions URL and print the latencies.
    Run {
        /// The chat-completions URL, e.g. http://127.0.0.1:8080/v1/chat/completions.
        #[arg(long)]
        url: String,
        /// Requests per second.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Measured seconds.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Unmeasured warm-up seconds.
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// Streamed requests.
        #[arg(long)]
        stream: bool,
        /// Model name to send.
        #[arg(long, default_value = "bench")]
        model: String,
        /// Bearer key to send.
        #[arg(long, env = "LOADGEN_API_KEY")]
        api_key: Option<String>,
        /// Make every request body different (response caches miss).
        #[arg(long)]
        unique: bool,
        /// Most requests on the wire at once, i.e. HTTP/1.1 connections (0: no bound). Requests
        /// scheduled while all are busy wait for one, and the wait counts in their latency.
        #[arg(long, default_value_t = client::DEFAULT_CONNECTIONS)]
        connections: usize,
    },
    /// Run the benchmark matrix against `llmops serve` and print a Markdown table.
    ///
    /// Before each measurement the harness waits (up to 30 s) for the gateway to go idle, so
    /// that requests queued by an overloaded cell do not slow the next one.
    Matrix {
        /// Rates to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "500,1000,2000,5000")]
        rates: Vec<u64>,
        /// Measured seconds per cell.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Unmeasured warm-up seconds per cell.
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// Which modes: `json`, `stream` or both (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "json,stream")]
        modes: Vec<String>,
        /// The llmops binary to start.
        #[arg(long, default_value = "target/release/llmops")]
        llmops: PathBuf,
        /// TOML appended to the generated gateway config (budgets, cache, audit, ...).
        #[arg(long)]
        extra_config: Option<PathBuf>,
        /// Bearer key, when the extra config defines `[[server.keys]]`.
        #[arg(long, env = "LOADGEN_API_KEY")]
        api_key: Option<String>,
        /// Concurrent slow streams to hold open for the memory measurement (comma-separated;
        /// empty to skip).
        #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
        streams: Vec<u64>,
        /// Write the Markdown table here too.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write the raw results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Make every request body different (response caches miss).
        #[arg(long)]
        unique: bool,
        /// Measure each cell this many times, alternating direct and gateway runs, and report
        /// the median of the added latencies (per percentile) and of the gateway's CPU: on a
        /// machine the load generator shares, one pair of runs is noisy.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=25))]
        repeat: u32,
        /// Most requests on the wire at once, i.e. HTTP/1.1 connections (0: no bound). Requests
        /// scheduled while all are busy wait for one, and the wait counts in their latency.
        #[arg(long, default_value_t = client::DEFAULT_CONNECTIONS)]
        connections: usize,
    },
    /// Compare gateways side by side in front of one running upstream and print a Markdown
    /// table and summary.
    ///
    /// At each rate the upstream is measured directly, then through each gateway in turn
    /// (`llmops serve` first when `--llmops` is given, then every `--gateway` in order), with
    /// the same open-loop client; "added" latency is gateway minus direct. CPU and peak memory
    /// are summed over each gateway's process tree (its workers included) when its pid is
    /// known. Once a gateway fails to sustain a rate, it is not measured at the higher rates of
    /// that mode (the table says so) unless `--keep-going` is given. Between cells the harness
    /// waits for every watched process tree to go idle, so that work queued by an overloaded
    /// gateway does not slow the next measurement.
    #[command(verbatim_doc_comment)]
    Compare {
        /// Base URL of the running upstream that every gateway forwards to, e.g.
        /// http://127.0.0.1:9100/v1 (`llmops-loadgen upstream`).
        #[arg(long)]
        upstream: String,
        /// Pid of the upstream process, so that the harness also waits for it to go idle.
        #[arg(long)]
        upstream_pid: Option<u32>,
        /// Start this llmops binary (`llmops serve`, default pipeline, model `bench` on the
        /// same upstream) and measure it first, as the reference of the summary.
        #[arg(long)]
        llmops: Option<PathBuf>,
        /// An already-running gateway: `name=NAME,url=BASE_URL[,pid=PID][,key-env=VAR]`. The
        /// pid is the root of its process tree (for CPU and memory); VAR names the environment
        /// variable holding its bearer key. Repeatable.
        #[arg(long = "gateway", value_name = "SPEC")]
        gateways: Vec<compare::GatewaySpec>,
        /// Model name to request (every gateway must route it to the upstream).
        #[arg(long, default_value = "bench")]
        model: String,
        /// Rates to measure, comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "50,100,200,500,1000,2000"
        )]
        rates: Vec<u64>,
        /// Measured seconds per cell.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Unmeasured warm-up seconds per cell.
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// Which modes: `json`, `stream` or both (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "json")]
        modes: Vec<String>,
        /// In-flight requests above which the client skips sends (counted as errors).
        #[arg(long, default_value_t = 20_000)]
        max_in_flight: u64,
        /// Most requests on the wire at once, i.e. HTTP/1.1 connections (0: no bound). Requests
        /// scheduled while all are busy wait for one, and the wait counts in their latency.
        #[arg(long, default_value_t = client::DEFAULT_CONNECTIONS)]
        connections: usize,
        /// Measure every gateway at every rate, even above a rate it did not sustain.
        #[arg(long)]
        keep_going: bool,
        /// Longest wait, in seconds, for the gateways to go idle between cells.
        #[arg(long, default_value_t = 30)]
        settle: u64,
        /// Write the Markdown report here too.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write the raw results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn parse_modes(modes: Vec<String>) -> anyhow::Result<Vec<bool>> {
    let mut parsed = Vec::new();
    for m in modes {
        match m.as_str() {
            "json" => parsed.push(false),
            "stream" => parsed.push(true),
            other => anyhow::bail!("unknown mode `{other}`: use json, stream or both"),
        }
    }
    Ok(parsed)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Upstream {
            listen,
            chunks,
            chunk_delay_ms,
        } => {
            let addr = upstream::spawn(
                listen,
                upstream::UpstreamConfig {
                    chunks,
                    chunk_delay: Duration::from_millis(chunk_delay_ms),
                },
            )
            .await?;
            eprintln!("canned upstream on http://{addr}/v1");
            tokio::signal::ctrl_c().await?;
            Ok(())
        }
        Cmd::Passthrough {
            listen,
            upstream,
            work_stealing,
        } => {
            let addr = passthrough::spawn(listen, &upstream, work_stealing).await?;
            eprintln!("pass-through on http://{addr}/v1 in front of {upstream}");
            tokio::signal::ctrl_c().await?;
            Ok(())
        }
        Cmd::Run {
            url,
            rate,
            duration,
            warmup,
            stream,
            model,
            api_key,
            unique,
            connections,
        } => {
            let http = client::http_client()?;
            let cfg = client::RunConfig {
                url,
                rate,
                duration: Duration::from_secs(duration),
                warmup: Duration::from_secs(warmup),
                stream,
                model,
                api_key,
                max_in_flight: 20_000,
                connections,
                unique,
            };
            let result = client::run(&http, &cfg).await?;
            println!("{}", serde_json::to_string_pretty(&result)?);
            Ok(())
        }
        Cmd::Matrix {
            rates,
            duration,
            warmup,
            modes,
            llmops,
            extra_config,
            api_key,
            streams,
            out,
            json,
            unique,
            repeat,
            connections,
        } => {
            let md = matrix::run(matrix::MatrixConfig {
                rates,
                duration: Duration::from_secs(duration),
                warmup: Duration::from_secs(warmup),
                modes: parse_modes(modes)?,
                llmops,
                extra_config,
                api_key,
                streams: streams.into_iter().filter(|n| *n > 0).collect(),
                out,
                json,
                unique,
                repeat,
                connections,
            })
            .await?;
            println!("{md}");
            Ok(())
        }
        Cmd::Compare {
            upstream,
            upstream_pid,
            llmops,
            gateways,
            model,
            rates,
            duration,
            warmup,
            modes,
            max_in_flight,
            connections,
            keep_going,
            settle,
            out,
            json,
        } => {
            let md = compare::run(compare::CompareConfig {
                upstream,
                upstream_pid,
                llmops,
                gateways,
                model,
                rates,
                duration: Duration::from_secs(duration),
                warmup: Duration::from_secs(warmup),
                modes: parse_modes(modes)?,
                max_in_flight,
                connections,
                keep_going,
                settle: Duration::from_secs(settle),
                out,
                json,
            })
            .await?;
            println!("{md}");
            Ok(())
        }
    }
}
