//! `llmops serve`: the OpenAI-compatible gateway.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use llmops_serve::config::ServeConfig;
use llmops_serve::gateway::Gateway;

use crate::config::{GatewayFile, Source};

/// Arguments of `llmops serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Gateway configuration (TOML). Without it, a simulated model named `sim` is served.
    #[arg(long, short, value_name = "FILE", env = "LLMOPS_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on, overriding `[server] listen`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_tracing();
    let (mut cfg, source) = match &args.config {
        Some(path) => (
            GatewayFile::load(path)?.serve_config(),
            Source::File(path.clone()),
        ),
        None => (ServeConfig::embedded_default(), Source::Embedded),
    };
    if let Some(addr) = args.listen {
        cfg.server.listen = addr;
    }
    let gateway = Gateway::from_config(&cfg).map_err(|e| match &source {
        Source::File(p) => anyhow::anyhow!("{}: {e}", p.display()),
        Source::Embedded => anyhow::anyhow!("{e}"),
    })?;
    let listener = tokio::net::TcpListener::bind(cfg.server.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another server using it? pass --listen ADDR)",
                cfg.server.listen
            )
        })?;
    let addr = listener
        .local_addr()
        .context("cannot read the listening address")?;
    let models = gateway.model_names().join(", ");
    match &source {
        Source::Embedded => eprintln!(
            "llmops gateway listening on http://{addr}/v1 — no config given, serving the \
             simulated model `sim` (pass --config FILE for real providers)"
        ),
        Source::File(p) => {
            eprintln!(
                "llmops gateway listening on http://{addr}/v1 — models: {models} (config: {})",
                p.display()
            )
        }
    }
    llmops_serve::http::serve(listener, gateway, shutdown_signal())
        .await
        .context("the server stopped with an error")?;
    eprintln!("llmops gateway stopped");
    Ok(ExitCode::SUCCESS)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LLMOPS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
