//! The gateway's pipeline around each model's routed pipeline: the outer layers built from
//! the configuration file, and the audit sink they write to. `cmd/serve.rs` serves it; the
//! in-process benchmark (`benches/full_stack.rs`) compiles this same module, so what it
//! measures is what the gateway runs.

use std::sync::Arc;

use llmops_core::service::ContextLayer;
use llmops_core::{AuditSink, BoxLlmService};
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
use tower::ServiceBuilder;

use crate::config::GatewayFile;

/// The layers every model's pipeline is wrapped in, outermost first: telemetry, audit,
/// guardrails (injection, PII), cost ceiling, budget (or pricing alone), response cache. Audit sits outside the
/// guardrails and cost layers so that their refusals are recorded too. Each is present only when its
/// section configures it.
#[derive(Clone)]
pub(crate) struct OuterLayers {
    pub(crate) observe: ObserveLayer,
    /// Tenant → the regions its requests may be processed in (`[[tenants]] allowed_regions`).
    pub(crate) residency: Arc<std::collections::HashMap<String, llmops_core::AllowedRegions>>,
    /// The budget the budget layer enforces, also read by `GET /v1/budgets`.
    pub(crate) budget_handle: Option<Arc<dyn llmops_core::Budget>>,
    pub(crate) audit: Option<AuditLayer>,
    pub(crate) injection: Option<InjectionLayer>,
    pub(crate) pii: Option<PiiLayer>,
    pub(crate) ceiling: Option<CostCeilingLayer>,
    pub(crate) budget: Option<BudgetLayer>,
    /// Prices answers for telemetry and audit when no budget layer does.
    pub(crate) pricing: Option<CostLayer>,
    pub(crate) cache: Option<CacheLayer>,
}

impl OuterLayers {
    pub(crate) async fn build(
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

    pub(crate) fn wrap(&self, pipeline: BoxLlmService) -> BoxLlmService {
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

/// Opens the `[audit]` sink, if configured: the hash-chained file (default) or PostgreSQL.
pub(crate) async fn open_audit_sink(
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
