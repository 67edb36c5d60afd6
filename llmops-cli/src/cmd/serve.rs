//! `llmops serve`: the OpenAI-compatible gateway.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use llmops_core::BoxLlmService;
use llmops_core::service::ContextLayer;
use llmops_cost::budget::BudgetLayer;
use llmops_cost::cache::{CacheControl, CacheLayer};
use llmops_cost::ceiling::CostCeilingLayer;
use llmops_govern::injection::HeuristicDetector;
use llmops_govern::layer::{GuardAction, InjectionLayer, PiiLayer};
use llmops_govern::pii::PiiAction;
use llmops_observe::ObserveLayer;
use llmops_observe::layer::ObserveConfig;
use llmops_serve::config::ServeConfig;
use llmops_serve::gateway::{BuildOptions, Gateway};
use llmops_serve::http::RequestHeaders;
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
    let (_metrics_handle, metrics_router) = llmops_observe::prometheus::install()
        .map_err(|e| anyhow::anyhow!("cannot install the Prometheus recorder: {e}"))?;
    let observability = file
        .observe_config()
        .start(|k| std::env::var(k).ok(), Vec::new())
        .map_err(|e| in_file(&e))?;
    let outer = OuterLayers::build(&file, observability.layer(ObserveConfig::builder()))
        .await
        .map_err(|e| in_file(&*e))?;
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
    let app = llmops_serve::http::router(gateway).merge(metrics_router);
    llmops_serve::http::serve_app(listener, app, shutdown_signal())
        .await
        .context("the server stopped with an error")?;
    drop(observability);
    eprintln!("llmops gateway stopped");
    Ok(ExitCode::SUCCESS)
}

/// The layers every model's pipeline is wrapped in, outermost first: telemetry, guardrails
/// (injection, PII), cost ceiling, budget, response cache. Each is present only when its
/// section configures it.
#[derive(Clone)]
struct OuterLayers {
    observe: ObserveLayer,
    injection: Option<InjectionLayer>,
    pii: Option<PiiLayer>,
    ceiling: Option<CostCeilingLayer>,
    budget: Option<BudgetLayer>,
    cache: Option<CacheLayer>,
}

impl OuterLayers {
    async fn build(file: &GatewayFile, observe: ObserveLayer) -> anyhow::Result<Self> {
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
        let budget = file
            .budgets
            .layer(catalog, file.cost.max_output_tokens())
            .await?;
        let cache = match &file.cache {
            Some(c) => c.layer().await?,
            None => None,
        };
        Ok(Self {
            observe,
            injection,
            pii,
            ceiling,
            budget,
            cache,
        })
    }

    fn wrap(&self, pipeline: BoxLlmService) -> BoxLlmService {
        // `Cache-Control: no-cache` / `no-store` from the client opt the request out of the
        // response cache.
        let cache_control = ContextLayer::new(|ctx| {
            let cc = ctx
                .extensions
                .get::<RequestHeaders>()
                .and_then(|h| h.0.get(http::header::CACHE_CONTROL))
                .and_then(|v| v.to_str().ok())
                .and_then(CacheControl::from_header);
            if let Some(cc) = cc {
                ctx.extensions.insert(cc);
            }
        });
        BoxLlmService::new(
            ServiceBuilder::new()
                .layer(self.observe.clone())
                .option_layer(self.injection.clone())
                .option_layer(self.pii.clone())
                .option_layer(self.ceiling.clone())
                .option_layer(self.budget.clone())
                .layer(cache_control)
                .option_layer(self.cache.clone())
                .service(pipeline),
        )
    }
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
