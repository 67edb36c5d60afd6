//! Per-request cost of the observe layer (spans + metrics), in process, over the bare
//! pipeline. Run: `cargo bench -p llmops-observe --bench observe`.
//!
//! - `bare`: a provider answering a fixed response through `ProviderService`.
//! - `observed_no_backend`: the same under `ObserveLayer` with no recorder and no subscriber
//!   (a library used without telemetry backends).
//! - `observed_prometheus`: with the Prometheus recorder (the gateway's setup), metrics only.
//! - `observed_prometheus_spans`: recorder plus a `tracing` registry recording every span.
//! - `*_stream`: the same for a streamed answer of 8 chunks, consumed to its end.

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::StreamExt;
use llmops_core::types::{ChatChunk, ChunkChoice};
use llmops_core::{
    BoxLlmService, ChatRequest, ChatResponse, ChatStream, LlmRequest, Message, PromptRef, Provider,
    ProviderService, RequestContext, Usage,
};
use llmops_observe::{ObserveConfig, ObserveLayer};
use tower::{ServiceBuilder, ServiceExt};

fn main() {
    divan::main();
}

struct Fixed;

#[async_trait]
impl Provider for Fixed {
    fn name(&self) -> &str {
        "fixed"
    }
    async fn chat(
        &self,
        req: ChatRequest,
        _ctx: &RequestContext,
    ) -> llmops_core::Result<ChatResponse> {
        Ok(ChatResponse::text(
            "id",
            req.model,
            "hello",
            Some(Usage::new(12, 3)),
        ))
    }
    async fn chat_stream(
        &self,
        req: ChatRequest,
        _ctx: &RequestContext,
    ) -> llmops_core::Result<ChatStream> {
        let chunks: Vec<llmops_core::Result<ChatChunk>> = (0..8)
            .map(|i| {
                Ok(ChatChunk::new("id", req.model.clone(), 0)
                    .with_choice(ChunkChoice::text(0, format!("t{i}"))))
            })
            .collect();
        Ok(Box::pin(futures_util::stream::iter(chunks)))
    }
}

fn bare() -> BoxLlmService {
    BoxLlmService::new(ProviderService::new(Arc::new(Fixed)))
}

fn observed() -> BoxLlmService {
    BoxLlmService::new(
        ServiceBuilder::new()
            .layer(ObserveLayer::new(ObserveConfig::default()))
            .service(ProviderService::new(Arc::new(Fixed))),
    )
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn request(stream: bool) -> LlmRequest {
    let ctx = RequestContext::new()
        .with_tenant("team-a")
        .with_prompt(PromptRef::new("p", "v1"));
    LlmRequest::chat(
        ctx,
        ChatRequest::new("bench-model", vec![Message::user("hi")]).with_stream(stream),
    )
}

async fn once(svc: &BoxLlmService, stream: bool) {
    let resp = svc.clone().oneshot(request(stream)).await.expect("answer");
    if stream {
        let mut s = resp.into_stream().expect("stream");
        while let Some(c) = s.next().await {
            divan::black_box(c.expect("chunk"));
        }
    } else {
        divan::black_box(resp);
    }
}

fn run(
    bencher: divan::Bencher<'_, '_>,
    svc: BoxLlmService,
    stream: bool,
    recorder: bool,
    spans: bool,
) {
    let rt = rt();
    let prom = llmops_observe::prometheus::builder()
        .expect("buckets")
        .build_recorder();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry());
    bencher.bench_local(|| {
        let go = || rt.block_on(once(&svc, stream));
        match (recorder, spans) {
            (false, false) => go(),
            (true, false) => metrics::with_local_recorder(&prom, go),
            (true, true) => tracing::dispatcher::with_default(&dispatch, || {
                metrics::with_local_recorder(&prom, go)
            }),
            (false, true) => tracing::dispatcher::with_default(&dispatch, go),
        }
    });
}

#[divan::bench(sample_count = 1000, sample_size = 10)]
fn bare_chat(b: divan::Bencher<'_, '_>) {
    run(b, bare(), false, false, false);
}

#[divan::bench(sample_count = 1000, sample_size = 10)]
fn observed_no_backend_chat(b: divan::Bencher<'_, '_>) {
    run(b, observed(), false, false, false);
}

#[divan::bench(sample_count = 1000, sample_size = 10)]
fn observed_prometheus_chat(b: divan::Bencher<'_, '_>) {
    run(b, observed(), false, true, false);
}

#[divan::bench(sample_count = 1000, sample_size = 10)]
fn observed_prometheus_spans_chat(b: divan::Bencher<'_, '_>) {
    run(b, observed(), false, true, true);
}

#[divan::bench(sample_count = 1000, sample_size = 10)]
fn bare_stream(b: divan::Bencher<'_, '_>) {
    run(b, bare(), true, false, false);
}

#[divan::bench(sample_count = 1000, sample_size = 10)]
fn observed_prometheus_spans_stream(b: divan::Bencher<'_, '_>) {
    run(b, observed(), true, true, true);
}
