//! In-process overhead of the resilience layers: retry + timeouts + balance + circuit
//! breaker around a zero-latency mock, against calling the mock directly.
//!
//! Run: `cargo bench -p llmops-serve --bench layers`

use std::sync::Arc;

use llmops_core::mock::{MockProvider, MockReply};
use llmops_core::{
    BoxLlmService, ChatRequest, LlmRequest, Message, ProviderService, RequestContext,
};
use llmops_serve::layers::balance::{Balance, Endpoint, Strategy};
use llmops_serve::layers::circuit::{Circuit, CircuitBreakerLayer, CircuitConfig};
use llmops_serve::layers::retry::{RetryBudget, RetryLayer, RetryPolicy};
use llmops_serve::layers::timeout::{DeadlineLayer, TimeoutLayer, Timeouts};
use std::time::Duration;
use tower::{Layer, ServiceExt};

fn main() {
    divan::main();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

fn mock() -> Arc<MockProvider> {
    Arc::new(MockProvider::new("mock").default_reply(MockReply::text("ok")))
}

fn request() -> LlmRequest {
    LlmRequest::chat(
        RequestContext::new(),
        ChatRequest::new("m", vec![Message::user("hi")]),
    )
}

fn layered(n_endpoints: usize) -> BoxLlmService {
    let endpoints = (0..n_endpoints)
        .map(|i| {
            let name = format!("mock{i}");
            let circuit = Circuit::new(name.as_str(), CircuitConfig::default());
            let svc = BoxLlmService::new(ProviderService::new(mock()));
            let svc = TimeoutLayer::new(
                Timeouts::new()
                    .ttft(Duration::from_secs(10))
                    .attempt(Duration::from_secs(30)),
            )
            .layer(svc);
            let svc = BoxLlmService::new(CircuitBreakerLayer::new(circuit.clone()).layer(svc));
            Endpoint::new(name, svc).with_circuit(circuit)
        })
        .collect();
    let balance = Balance::with_strategy(endpoints, Strategy::LeastLatency);
    let retry = RetryLayer::new(RetryPolicy::new(3).budget(Arc::new(RetryBudget::default())));
    BoxLlmService::new(DeadlineLayer::new(Duration::from_secs(60)).layer(retry.layer(balance)))
}

#[divan::bench(sample_count = 500, sample_size = 20)]
fn direct_mock(bencher: divan::Bencher<'_, '_>) {
    let rt = runtime();
    let svc = BoxLlmService::new(ProviderService::new(mock()));
    bencher.bench_local(|| {
        rt.block_on(svc.clone().oneshot(request())).expect("answer");
    });
}

#[divan::bench(args = [1, 2, 4], sample_count = 500, sample_size = 20)]
fn retry_timeout_balance_circuit(bencher: divan::Bencher<'_, '_>, endpoints: usize) {
    let rt = runtime();
    let svc = rt.block_on(async { layered(endpoints) });
    bencher.bench_local(|| {
        rt.block_on(svc.clone().oneshot(request())).expect("answer");
    });
}
