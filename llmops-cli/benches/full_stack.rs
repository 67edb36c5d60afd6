//! In-process cost of the gateway's whole pipeline per request, against calling a zero-latency
//! provider directly.
//!
//! Run: `cargo bench -p llmops-cli --bench full_stack`
//!
//! The pipelines are composed by the gateway's own code — `src/pipeline.rs` (`OuterLayers`) and
//! `src/config.rs` (`GatewayFile`) are compiled into this benchmark —: observe → residency context → audit →
//! injection → PII → cost ceiling → budget (or pricing alone, without budgets) → response
//! cache → the routed per-model pipeline of
//! `llmops_serve::gateway::build_model` (retry, fallback, timeouts, circuit breaker around the
//! provider). The governance and cost sections are `tools/loadgen/full-pipeline.toml`, parsed as
//! the gateway parses its file.
//! The virtual-key authentication of that file happens at the HTTP edge, outside the pipeline:
//! here every request carries the context the edge would build for that key.
//!
//! Before the first request, like the binary: the `tracing` subscriber (`fmt`, filter `warn`),
//! the global Prometheus recorder, and the alert engine wired into the observe layer.
//!
//! Groups:
//!
//! - `serial`: one request at a time (`block_on` per request, in every benchmark including the
//!   direct call), on a current-thread runtime. This is a lone request's latency: with the
//!   audit log in `batched` durability, a full-stack answer waits for the `fdatasync` of the
//!   batch holding its record.
//! - `in_flight`: 256 requests in flight per iteration (joined on the same runtime), so the
//!   audit writer's group commit amortizes the `fdatasync` as it does under load. Divide the
//!   iteration time by 256 for the cost per request; this is the number to compare with the
//!   in-process overhead target (≤ 5 µs over the direct call on the cache-miss path).
//!   `full_stack_miss_async_audit` is the same without waiting for the disk: the pipeline's CPU
//!   cost per request.
//! - `layer`: each layer alone over the direct call (serially, cache-miss bodies), to attribute
//!   the cost.
//!
//! The allocator is the gateway's: mimalloc by default, the system allocator with
//! `--no-default-features`.
//!
//! The runtime is current-thread: all the request path runs on the benchmark's thread, so the
//! numbers are the path's CPU cost plus, where a layer waits for another thread (the audit
//! writer), that wait — no work stealing or cross-worker wake-ups on this 2-core machine, and
//! the same setup as the observe and serving layer benchmarks, so the numbers compare.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use divan::Bencher;
use llmops_core::{
    AuditEvent, AuditSink, BoxLlmService, ChatRequest, ChatResponse, ChatStream, LlmRequest,
    Message, Provider, ProviderService, RequestContext, SystemEvent, Usage,
};
use llmops_govern::audit::CommitmentKey;
use llmops_govern::audit::file::Durability;
use llmops_observe::config::{AlertsConfig, ObserveFileConfig};
use llmops_observe::layer::ObserveConfig;
use llmops_serve::gateway::{BuildOptions, BuiltProvider, build_model};
use tower::{Layer, ServiceExt};

/// The gateway's allocator, as in `src/main.rs` (feature `mimalloc`, on by default; run with
/// `--no-default-features` to measure with the system allocator).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    divan::main();
}

/// Requests in flight per iteration of the `in_flight` group.
const IN_FLIGHT: usize = 256;

/// The model name clients send (the loadgen gateway config's `[models.bench]`).
const MODEL: &str = "bench";

// ---------------------------------------------------------------------------------------------
// The provider: a canned answer with usage, no latency.

struct Canned;

#[async_trait]
impl Provider for Canned {
    fn name(&self) -> &str {
        "upstream"
    }
    async fn chat(
        &self,
        req: ChatRequest,
        _ctx: &RequestContext,
    ) -> llmops_core::Result<ChatResponse> {
        Ok(ChatResponse::text(
            "chatcmpl-bench",
            req.model,
            "Sorry to hear that. Orders usually arrive within 5 business days; if the tracking \
             page shows no update for 48 hours, reply here and we will open an investigation.",
            Some(Usage::new(64, 36)),
        ))
    }
    async fn chat_stream(
        &self,
        _req: ChatRequest,
        _ctx: &RequestContext,
    ) -> llmops_core::Result<ChatStream> {
        Err(llmops_core::Error::new(
            llmops_core::ErrorKind::Unsupported,
            "the benchmark provider does not stream",
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// The gateway's own configuration types and pipeline composition, compiled from its sources.

#[allow(dead_code)]
#[path = "../src/config.rs"]
mod config;
#[allow(dead_code)]
#[path = "../src/pipeline.rs"]
mod pipeline;

use config::GatewayFile;
use pipeline::OuterLayers;

const FULL_PIPELINE_TOML: &str = include_str!("../../tools/loadgen/full-pipeline.toml");

/// The routing part of the gateway config `llmops-loadgen matrix` generates (the provider's
/// address is never dialled: the benchmark builds the model's pipeline around its in-process
/// provider).
const ROUTING_TOML: &str = r#"
[providers.upstream]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"

[models.bench]
targets = ["upstream/bench"]
"#;

fn gateway_file(sections: &str) -> GatewayFile {
    let text = format!("{ROUTING_TOML}\n{sections}");
    let path = std::path::Path::new("tools/loadgen/full-pipeline.toml");
    GatewayFile::parse(&text, path).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Setup, once per process.

struct Env {
    rt: tokio::runtime::Runtime,
    s: Stacks,
}

struct Stacks {
    /// The gateway's request deadline (`[server] request_timeout_ms`), set by the edge.
    timeout: std::time::Duration,
    /// Tenant and key id the edge derives from the virtual key.
    tenant: String,
    key_id: String,
    direct: BoxLlmService,
    routed: BoxLlmService,
    default_stack: BoxLlmService,
    full_stack: BoxLlmService,
    /// The full stack with the audit log in `async` durability: the same work per request,
    /// without waiting for the batch's `fdatasync` (the CPU cost of the pipeline).
    full_stack_async_audit: BoxLlmService,
    outer: OuterLayers,
    _dir: tempfile::TempDir,
}

/// The routed pipeline of `[models.bench] targets = ["upstream/bench"]` (the loadgen config's
/// model; every other setting at its default), as `Gateway::from_config_with` builds it, with
/// the in-bench provider in place of the HTTP client.
fn routed_pipeline() -> BoxLlmService {
    let mut providers = BTreeMap::new();
    providers.insert("upstream".to_owned(), BuiltProvider::new(Arc::new(Canned)));
    let file = gateway_file("");
    build_model(
        MODEL,
        &file.models[MODEL],
        &providers,
        &BuildOptions::default(),
    )
    .unwrap()
    .service
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sections = gateway_file(FULL_PIPELINE_TOML);
        let async_sections = gateway_file(&FULL_PIPELINE_TOML.replace("\"batched\"", "\"async\""));
        let stacks = rt.block_on(async {
            // `serve::init_tracing` with `LLMOPS_LOG` unset.
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
                .with_writer(std::io::stderr)
                .try_init();
            // The Prometheus recorder exists before the first request (and its upkeep task runs
            // on this runtime).
            let _prometheus = llmops_observe::prometheus::install().unwrap();
            // No `[[slo]]`, `[alerts]` or `[online_eval]`: the alert engine still runs and is
            // the observe layer's record sink.
            let observability = ObserveFileConfig::new(Vec::new(), AlertsConfig::default(), None)
                .start(|_| None, Vec::new())
                .unwrap();
            // `serve::open_audit_sink`, relative paths resolved against the config's directory
            // (here a temporary one), the commitment key given instead of read from
            // `LLMOPS_AUDIT_KEY`.
            let audit_cfg = sections.audit.as_ref().unwrap();
            let sink: Arc<dyn AuditSink> = Arc::new(
                audit_cfg
                    .open_file_sink_with_key(dir.path(), CommitmentKey::from_bytes([7; 32]))
                    .unwrap(),
            );
            sink.append(AuditEvent::System(SystemEvent::new(
                "config_loaded",
                serde_json::json!({ "models": [MODEL] }),
            )))
            .await
            .unwrap();
            let async_cfg = async_sections.audit.as_ref().unwrap();
            assert_eq!(async_cfg.durability, Durability::Async);
            let async_dir = dir.path().join("async");
            std::fs::create_dir_all(&async_dir).unwrap();
            let async_sink: Arc<dyn AuditSink> = Arc::new(
                async_cfg
                    .open_file_sink_with_key(&async_dir, CommitmentKey::from_bytes([7; 32]))
                    .unwrap(),
            );
            let observe = observability.layer(ObserveConfig::builder());
            let outer = OuterLayers::build(&sections, observe.clone(), Some(sink))
                .await
                .unwrap();
            let outer_async =
                OuterLayers::build(&async_sections, observe.clone(), Some(async_sink))
                    .await
                    .unwrap();
            let default_outer = OuterLayers::build(&gateway_file(""), observe, None)
                .await
                .unwrap();
            let key = &sections.server.keys[0];
            // Keep the engines running for the whole process.
            std::mem::forget(observability);
            Stacks {
                timeout: std::time::Duration::from_millis(sections.server.request_timeout_ms),
                tenant: key.tenant.clone(),
                key_id: key.id.clone().unwrap_or_else(|| key.key_env.clone()),
                direct: BoxLlmService::new(ProviderService::new(Arc::new(Canned))),
                routed: routed_pipeline(),
                default_stack: default_outer.wrap(routed_pipeline()),
                full_stack: outer.wrap(routed_pipeline()),
                full_stack_async_audit: outer_async.wrap(routed_pipeline()),
                outer,
                _dir: dir,
            }
        });
        // The runtime that ran the setup keeps the engines' and the recorder's tasks.
        Env { rt, s: stacks }
    })
}

thread_local! {
    static COUNTER: Cell<u64> = const { Cell::new(0) };
}

/// A new number for a unique request body.
fn next() -> u64 {
    COUNTER.with(|c| {
        let n = c.get() + 1;
        c.set(n);
        n
    })
}

/// A realistic small chat request (about 350 bytes of prompt, no PII), as the edge hands it to
/// the pipeline: context with the gateway's deadline and the virtual key's tenant and id.
/// `n` makes the body unique (cache-miss path); the hit path sends `n = 0` every time.
fn request(e: &Env, n: u64) -> LlmRequest {
    let ctx = RequestContext::new()
        .with_timeout(e.s.timeout)
        .with_tenant(e.s.tenant.as_str())
        .with_api_key_id(e.s.key_id.as_str());
    let req = ChatRequest::new(
        MODEL,
        vec![
            Message::system(
                "You are the support assistant of an online shop. Answer in at most three \
                 sentences and never promise refunds.",
            ),
            Message::user(format!(
                "Hi, my order #{n} has not arrived yet. It was placed last Tuesday and the \
                 tracking page has shown no update since Thursday. What should I do?"
            )),
        ],
    );
    LlmRequest::chat(ctx, req)
}

fn serial(b: Bencher<'_, '_>, svc: &BoxLlmService, unique: bool) {
    let e = env();
    b.with_inputs(|| request(e, if unique { next() } else { 0 }))
        .bench_local_values(|req| {
            let resp = e.rt.block_on(svc.clone().oneshot(req)).expect("answer");
            divan::black_box(resp)
        });
}

fn in_flight(b: Bencher<'_, '_>, svc: &BoxLlmService, unique: bool) {
    let e = env();
    b.counter(divan::counter::ItemsCount::new(IN_FLIGHT))
        .with_inputs(|| {
            (0..IN_FLIGHT)
                .map(|_| request(e, if unique { next() } else { 0 }))
                .collect::<Vec<_>>()
        })
        .bench_local_values(|reqs| {
            e.rt.block_on(async {
                let calls = reqs.into_iter().map(|r| svc.clone().oneshot(r));
                for r in futures_util::future::join_all(calls).await {
                    divan::black_box(r.expect("answer"));
                }
            });
        });
}

// ---------------------------------------------------------------------------------------------
// One request at a time.

mod serial {
    use super::*;

    const SAMPLES: u32 = 500;
    const SIZE: u32 = 20;

    /// The provider through `ProviderService`: the baseline.
    #[divan::bench(sample_count = SAMPLES, sample_size = SIZE)]
    fn direct(b: Bencher<'_, '_>) {
        serial(b, &env().s.direct, true);
    }

    /// What `llmops serve` runs with no cost or governance sections: observe + residency
    /// context around the routed pipeline.
    #[divan::bench(sample_count = SAMPLES, sample_size = SIZE)]
    fn default_stack(b: Bencher<'_, '_>) {
        serial(b, &env().s.default_stack, true);
    }

    /// `full-pipeline.toml`, every request body unique.
    #[divan::bench(sample_count = SAMPLES, sample_size = SIZE)]
    fn full_stack_miss(b: Bencher<'_, '_>) {
        serial(b, &env().s.full_stack, true);
    }

    /// `full-pipeline.toml`, the same body every time: answered by the cache.
    #[divan::bench(sample_count = SAMPLES, sample_size = SIZE)]
    fn full_stack_hit(b: Bencher<'_, '_>) {
        serial(b, &env().s.full_stack, false);
    }

    /// `full-pipeline.toml` with `durability = "async"`, every request body unique: the
    /// pipeline's own cost, without the wait for the audit batch's `fdatasync`.
    #[divan::bench(sample_count = SAMPLES, sample_size = SIZE)]
    fn full_stack_miss_async_audit(b: Bencher<'_, '_>) {
        serial(b, &env().s.full_stack_async_audit, true);
    }
}

// ---------------------------------------------------------------------------------------------
// 256 requests in flight.

mod in_flight {
    use super::*;

    const SAMPLES: u32 = 50;

    /// The baseline, 256 at a time.
    #[divan::bench(sample_count = SAMPLES, sample_size = 1)]
    fn direct(b: Bencher<'_, '_>) {
        in_flight(b, &env().s.direct, true);
    }

    /// The default stack, 256 at a time.
    #[divan::bench(sample_count = SAMPLES, sample_size = 1)]
    fn default_stack(b: Bencher<'_, '_>) {
        in_flight(b, &env().s.default_stack, true);
    }

    /// The full stack on the cache-miss path, 256 at a time.
    #[divan::bench(sample_count = SAMPLES, sample_size = 1)]
    fn full_stack_miss(b: Bencher<'_, '_>) {
        in_flight(b, &env().s.full_stack, true);
    }

    /// The full stack on the cache-hit path, 256 at a time.
    #[divan::bench(sample_count = SAMPLES, sample_size = 1)]
    fn full_stack_hit(b: Bencher<'_, '_>) {
        in_flight(b, &env().s.full_stack, false);
    }

    /// The full stack on the cache-miss path with `durability = "async"`, 256 at a time: the
    /// pipeline's CPU cost per request, without waiting for the disk.
    #[divan::bench(sample_count = SAMPLES, sample_size = 1)]
    fn full_stack_miss_async_audit(b: Bencher<'_, '_>) {
        in_flight(b, &env().s.full_stack_async_audit, true);
    }
}

// ---------------------------------------------------------------------------------------------
// Each layer alone over the direct call (cache-miss bodies, one request at a time).

mod layer {
    use super::*;

    const SAMPLES: u32 = 300;
    const SIZE: u32 = 20;

    fn over_direct<L: Layer<BoxLlmService>>(layer: L) -> BoxLlmService
    where
        L::Service: tower::Service<
                LlmRequest,
                Response = llmops_core::LlmResponse,
                Error = llmops_core::Error,
            > + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as tower::Service<LlmRequest>>::Future: Send + 'static,
    {
        BoxLlmService::new(layer.layer(env().s.direct.clone()))
    }

    fn run(b: Bencher<'_, '_>, svc: BoxLlmService) {
        serial(b, &svc, true);
    }

    /// The routed per-model pipeline (retry, fallback, timeouts, circuit breaker).
    #[divan::bench(sample_count = SAMPLES, sample_size = SIZE)]
    fn routing(b: Bencher<'_, '_>) {
        run(b, env().s.routed.clone());
    }

    /// `ObserveLayer` (span, metrics, request record to the alert engine).
    #[divan::bench(sample_count = SAMPLES, sample_size = SIZE)]
    fn observe(b: Bencher<'_, '_>) {
        run(b, over_direct(env().s.outer.observe.clone()));
    }

    /// `AuditLayer` over the `batched` file sink (waits for the batch's `fdatasync`).
    #[divan::bench(sample_count = SAMPLES, sample_size = SIZE)]
    fn audit(b: Bencher<'_, '_>) {
        run(b, over_direct(env().s.outer.audit.clone().unwrap()));
    }

    /// `PiiLayer` redacting the prompt.
    #[divan::bench(sample_count = SAMPLES, sample_size = SIZE)]
    fn pii(b: Bencher<'_, '_>) {
        run(b, over_direct(env().s.outer.pii.clone().unwrap()));
    }

    /// `CostCeilingLayer`.
    #[divan::bench(sample_count = SAMPLES, sample_size = SIZE)]
    fn ceiling(b: Bencher<'_, '_>) {
        run(b, over_direct(env().s.outer.ceiling.clone().unwrap()));
    }

    /// `BudgetLayer` over the memory budget.
    #[divan::bench(sample_count = SAMPLES, sample_size = SIZE)]
    fn budget(b: Bencher<'_, '_>) {
        run(b, over_direct(env().s.outer.budget.clone().unwrap()));
    }

    /// `CacheLayer` over the memory cache, every body unique (lookup, miss, store).
    #[divan::bench(sample_count = SAMPLES, sample_size = SIZE)]
    fn cache_miss(b: Bencher<'_, '_>) {
        run(b, over_direct(env().s.outer.cache.clone().unwrap()));
    }
}
