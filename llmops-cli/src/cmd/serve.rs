//! `llmops serve`: the OpenAI-compatible gateway.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use llmops_core::BoxLlmService;
use llmops_core::service::ContextLayer;
use llmops_core::{AuditEvent, AuditSink, SystemEvent};
use llmops_cost::accounting::CostLayer;
use llmops_cost::budget::BudgetLayer;
use llmops_cost::cache::CacheLayer;
use llmops_cost::ceiling::CostCeilingLayer;
use llmops_govern::audit::AuditLayer;
use llmops_govern::audit::keys::CommitmentKey;
use llmops_govern::config::AuditSinkKind;
use llmops_govern::injection::HeuristicDetector;
use llmops_govern::layer::{GuardAction, InjectionLayer, PiiLayer};
use llmops_govern::pii::PiiAction;
use llmops_observe::ObserveLayer;
use llmops_observe::layer::ObserveConfig;
use llmops_serve::config::ServeConfig;
use llmops_serve::gateway::{BuildOptions, Gateway};
use tower::ServiceBuilder;

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
    llmops_serve::http::serve_app(listener, app, shutdown_signal())
        .await
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

/// The layers every model's pipeline is wrapped in, outermost first: telemetry, audit,
/// guardrails (injection, PII), cost ceiling, budget (or pricing alone), response cache. Audit sits outside the
/// guardrails and cost layers so that their refusals are recorded too. Each is present only when its
/// section configures it.
#[derive(Clone)]
struct OuterLayers {
    observe: ObserveLayer,
    /// Tenant → the regions its requests may be processed in (`[[tenants]] allowed_regions`).
    residency: Arc<std::collections::HashMap<String, llmops_core::AllowedRegions>>,
    /// The budget the budget layer enforces, also read by `GET /v1/budgets`.
    budget_handle: Option<Arc<dyn llmops_core::Budget>>,
    audit: Option<AuditLayer>,
    injection: Option<InjectionLayer>,
    pii: Option<PiiLayer>,
    ceiling: Option<CostCeilingLayer>,
    budget: Option<BudgetLayer>,
    /// Prices answers for telemetry and audit when no budget layer does.
    pricing: Option<CostLayer>,
    cache: Option<CacheLayer>,
}

impl OuterLayers {
    async fn build(
        file: &GatewayFile,
        observe: ObserveLayer,
        audit: Option<Arc<dyn AuditSink>>,
    ) -> anyhow::Result<Self> {
        let g = &file.guardrails;
        let injection = (g.injection.action != GuardAction::Off).then(|| {
            InjectionLayer::new(Arc::new(HeuristicDetector::new()), g.injection.action)
                .with_threshold(g.injection.threshold)
                .with_roles(g.injection.roles.clone())
        });
        let pii = if g.pii.upstream != PiiAction::Off || g.pii.output != PiiAction::Off {
            let mut layer = PiiLayer::new(Arc::new(g.pii.upstream_guard()?));
            if g.pii.output != PiiAction::Off {
                layer = layer.with_output(Arc::new(g.pii.output_guard()?));
            }
            Some(layer)
        } else {
            None
        };
        let catalog = Arc::new(file.cost.catalog()?);
        let ceiling = file.cost.ceiling_layer(catalog.clone())?;
        let (budget_handle, budget, pricing) = if file.budgets.limits.is_empty() {
            (None, None, Some(CostLayer::new(catalog)))
        } else {
            let handle = file.budgets.build().await?;
            let layer = BudgetLayer::new(handle.clone(), catalog)
                .default_max_output_tokens(file.cost.max_output_tokens());
            (Some(handle), Some(layer), None)
        };
        let cache = match &file.cache {
            Some(c) => c.layer().await?,
            None => None,
        };
        let audit = audit.map(AuditLayer::new);
        let residency = file
            .tenants
            .iter()
            .filter_map(|t| {
                let regions = t.allowed_regions.as_ref()?;
                Some((
                    t.name.clone(),
                    llmops_core::AllowedRegions::new(regions.iter().cloned()),
                ))
            })
            .collect();
        Ok(Self {
            observe,
            residency: Arc::new(residency),
            budget_handle,
            audit,
            injection,
            pii,
            ceiling,
            budget,
            pricing,
            cache,
        })
    }

    fn wrap(&self, pipeline: BoxLlmService) -> BoxLlmService {
        // Data residency: the tenant's allowed regions travel with the request; routing only
        // tries targets in them.
        let residency = self.residency.clone();
        let regions = ContextLayer::new(move |ctx| {
            if let Some(allowed) = residency.get(&*ctx.tenant) {
                ctx.extensions.insert(allowed.clone());
            }
        });
        BoxLlmService::new(
            ServiceBuilder::new()
                .layer(self.observe.clone())
                .layer(regions)
                .option_layer(self.audit.clone())
                .option_layer(self.injection.clone())
                .option_layer(self.pii.clone())
                .option_layer(self.ceiling.clone())
                .option_layer(self.budget.clone())
                .option_layer(self.pricing.clone())
                .option_layer(self.cache.clone())
                .service(pipeline),
        )
    }
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

/// Opens the `[audit]` sink, if configured: the hash-chained file (default) or PostgreSQL.
async fn open_audit_sink(
    file: &GatewayFile,
    base: &std::path::Path,
) -> anyhow::Result<Option<Arc<dyn AuditSink>>> {
    let Some(cfg) = &file.audit else {
        return Ok(None);
    };
    let sink: Arc<dyn AuditSink> = match cfg.sink {
        AuditSinkKind::Postgres => {
            let key = CommitmentKey::from_env(&cfg.commitment_key_env)?;
            Arc::new(cfg.open_postgres_sink(base, key).await?)
        }
        _ => Arc::new(cfg.open_file_sink(base)?),
    };
    Ok(Some(sink))
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
