//! `llmops serve`: the OpenAI-compatible gateway.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use llmops_core::{AuditEvent, SystemEvent};
use llmops_observe::layer::ObserveConfig;
use llmops_serve::config::{RuntimeMode, ServeConfig};
use llmops_serve::gateway::{BuildOptions, Gateway};

use crate::config::{GatewayFile, Source};
use crate::pipeline::{OuterLayers, open_audit_sink};

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
    let (file, mut cfg, source) = match &args.config {
        Some(path) => {
            let file = GatewayFile::load(path)?;
            let cfg = file.serve_config();
            (file, cfg, Source::File(path.clone()))
        }
        None => (
            GatewayFile::default(),
            ServeConfig::embedded_default(),
            Source::Embedded,
        ),
    };
    if let Some(addr) = args.listen {
        cfg.server.listen = addr;
    }
    let in_file = |e: &dyn std::fmt::Display| match &source {
        Source::File(p) => anyhow::anyhow!("{}: {e}", p.display()),
        Source::Embedded => anyhow::anyhow!("{e}"),
    };
    if cfg.server.runtime == RuntimeMode::WorkStealing && cfg.server.workers.is_some() {
        return Err(in_file(
            &"server.workers: applies to `runtime = \"per-core\"` only (the work-stealing \
              runtime has one worker per CPU); remove `workers` or the `runtime` setting",
        ));
    }
    let workers = cfg
        .server
        .workers
        .unwrap_or_else(llmops_serve::http::default_workers);
    // The Prometheus recorder must exist before the first request is measured.
    let (metrics_handle, _) = llmops_observe::prometheus::install()
        .map_err(|e| anyhow::anyhow!("cannot install the Prometheus recorder: {e}"))?;
    let observability = file
        .observe_config()
        .start(|k| std::env::var(k).ok(), Vec::new())
        .map_err(|e| in_file(&e))?;
    let base = match &source {
        Source::File(p) => p
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default(),
        Source::Embedded => std::path::PathBuf::from("."),
    };
    let audit_sink = open_audit_sink(&file, &base)
        .await
        .map_err(|e| in_file(&*e))?;
    if let Some(sink) = &audit_sink {
        let detail = serde_json::json!({
            "config_sha256_blake3": file.hash,
            "models": cfg.models.keys().collect::<Vec<_>>(),
        });
        sink.append(AuditEvent::System(SystemEvent::new(
            "config_loaded",
            detail,
        )))
        .await
        .map_err(|e| anyhow::anyhow!("cannot write the audit log: {e}"))?;
    }
    let outer = OuterLayers::build(
        &file,
        observability.layer(ObserveConfig::builder()),
        audit_sink.clone(),
    )
    .await
    .map_err(|e| in_file(&*e))?;
    let budget_handle = outer.budget_handle.clone();
    let options = BuildOptions::default().wrap(move |_model, pipeline| outer.wrap(pipeline));
    let gateway = Gateway::from_config_with(&cfg, &options).map_err(|e| in_file(&e))?;
    let listener = llmops_serve::http::bind(cfg.server.listen, cfg.server.listen_backlog)
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
    // `/metrics`: the pipeline's telemetry, plus the upstreams' load signals (queue depth per
    // replica) for autoscalers such as KEDA or the HPA.
    let scaling = gateway.clone();
    let metrics = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let mut text = metrics_handle.render();
            text.push_str(&scaling.autoscaling_metrics());
            std::future::ready((
                [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                text,
            ))
        }),
    );
    let budgets_gw = gateway.clone();
    let budgets = axum::Router::new().route(
        "/v1/budgets",
        axum::routing::get(move |headers: http::HeaderMap| {
            budgets_view(budgets_gw.clone(), budget_handle.clone(), headers)
        }),
    );
    let app = llmops_serve::http::router(gateway)
        .merge(metrics)
        .merge(budgets);
    match cfg.server.runtime {
        RuntimeMode::WorkStealing => {
            llmops_serve::http::serve_app(listener, app, shutdown_signal()).await
        }
        // `RuntimeMode` is non-exhaustive: a mode this binary does not know runs per core.
        _ => {
            llmops_serve::http::serve_app_per_core(listener, app, workers, shutdown_signal()).await
        }
    }
    .context("the server stopped with an error")?;
    drop(observability);
    if let Some(sink) = audit_sink
        && let Err(e) = sink.close().await
    {
        eprintln!("error: closing the audit log: {e}");
    }
    eprintln!("llmops gateway stopped");
    Ok(ExitCode::SUCCESS)
}

/// `GET /v1/budgets`: what is left in each budget scope of the caller (its tenant, key, user),
/// authenticated like any request.
async fn budgets_view(
    gateway: Gateway,
    budget: Option<Arc<dyn llmops_core::Budget>>,
    headers: http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let ctx = match llmops_serve::http::request_context(&gateway, &headers) {
        Ok(ctx) => ctx,
        Err(e) => return llmops_serve::http::error_response(&e, None),
    };
    let mut data = Vec::new();
    if let Some(budget) = budget {
        for scope in llmops_cost::budget::scopes_for(&ctx) {
            match budget.remaining(&scope).await {
                Ok(Some(left)) => data.push(serde_json::json!({
                    "scope": scope.0,
                    "remaining_usd": left.as_f64(),
                })),
                Ok(None) => {}
                Err(e) => return llmops_serve::http::error_response(&e, Some(&ctx.request_id)),
            }
        }
    }
    axum::Json(serde_json::json!({
        "object": "list",
        "tenant": &*ctx.tenant,
        "api_key_id": ctx.api_key_id.as_deref(),
        "data": data,
    }))
    .into_response()
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
