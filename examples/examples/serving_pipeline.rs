//! A serving pipeline composed from the `llmops-serve` layers, without the gateway.
//!
//! An OpenAI-compatible primary (here the in-repo fake upstream, scripted to fail twice) is
//! guarded by timeouts and a circuit breaker and retried; a simulated backup takes over
//! when the primary cannot answer; a whole-request deadline bounds everything. Then two
//! replicas are load-balanced on peak-EWMA latency.
//!
//! Run: `cargo run -p llmops-examples --example serving_pipeline`

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use llmops_core::sim::SimProvider;
use llmops_core::{BoxLlmService, ChatRequest, LlmRequest, Message, RequestContext};
use llmops_serve::gateway::TargetService;
use llmops_serve::layers::AttemptLog;
use llmops_serve::layers::balance::{Balance, Endpoint, Strategy};
use llmops_serve::layers::circuit::{Circuit, CircuitBreakerLayer, CircuitConfig};
use llmops_serve::layers::fallback::Fallback;
use llmops_serve::layers::retry::{RetryBudget, RetryLayer, RetryPolicy};
use llmops_serve::layers::timeout::{DeadlineLayer, TimeoutLayer, Timeouts};
use llmops_serve::providers::openai::OpenAiProvider;
use llmops_serve::providers::{HttpProviderConfig, HttpTransport};
use llmops_testkit::{FakeUpstream, Reply};
use tower::{Layer, ServiceBuilder, ServiceExt};

/// One target: provider → per-attempt timeouts → circuit breaker → retries.
fn guarded(name: &str, service: BoxLlmService, budget: &Arc<RetryBudget>) -> BoxLlmService {
    let circuit = Circuit::new(name, CircuitConfig::default());
    let timeouts = Timeouts::new()
        .ttft(Duration::from_secs(5))
        .idle(Duration::from_secs(10));
    BoxLlmService::new(
        ServiceBuilder::new()
            .layer(RetryLayer::new(
                RetryPolicy::new(2)
                    .backoff(Duration::from_millis(50), Duration::from_secs(1))
                    .budget(budget.clone()),
            ))
            .layer(CircuitBreakerLayer::new(circuit))
            .layer(TimeoutLayer::new(timeouts).for_target(name))
            .service(service),
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // An OpenAI-compatible upstream that fails twice, then answers.
    let upstream = FakeUpstream::start_named("primary").await;
    upstream.push(Reply::status(500)).push(Reply::status(503));
    upstream.set_default(Reply::text("Hello from the primary."));
    let transport = HttpTransport::shared(Duration::from_secs(5))?;
    let primary = OpenAiProvider::new(
        &HttpProviderConfig::new("primary", upstream.openai_base()),
        transport,
    )?;
    let backup = SimProvider::builder().name("backup").build();

    let budget = Arc::new(RetryBudget::default());
    let chain = Fallback::new(vec![
        (
            "primary".into(),
            guarded(
                "primary",
                BoxLlmService::new(TargetService::new(Arc::new(primary), "gpt-4o-mini")),
                &budget,
            ),
        ),
        (
            "backup".into(),
            guarded(
                "backup",
                BoxLlmService::new(TargetService::new(Arc::new(backup), "sim-1")),
                &budget,
            ),
        ),
    ]);
    let pipeline = BoxLlmService::new(DeadlineLayer::new(Duration::from_secs(30)).layer(chain));

    for round in 1..=2 {
        let mut ctx = RequestContext::new().with_tenant("team-a");
        let log = AttemptLog::of(&mut ctx);
        let req = ChatRequest::new("chat", vec![Message::user("Say hello")]).with_stream(true);
        let resp = pipeline.clone().oneshot(LlmRequest::chat(ctx, req)).await?;
        let (provider, attempts) = (resp.meta.provider.clone(), resp.meta.attempts);
        let mut stream = resp.into_stream()?;
        let mut text = String::new();
        while let Some(chunk) = stream.next().await {
            for c in chunk?.choices {
                text.push_str(c.delta.content.as_deref().unwrap_or_default());
            }
        }
        println!("request {round}: answered by {provider:?} after {attempts} attempt(s): {text:?}");
        for a in log.records() {
            println!(
                "  attempt on {:?}: {:?} in {:?}",
                a.target, a.error, a.elapsed
            );
        }
    }
    println!("upstream calls: {}", upstream.calls());

    // Two replicas balanced on peak-EWMA latency (measured to the end of each stream).
    let fast = SimProvider::builder()
        .name("fast")
        .ttft(Duration::from_millis(2))
        .build();
    let slow = SimProvider::builder()
        .name("slow")
        .ttft(Duration::from_millis(40))
        .build();
    let balance = Balance::with_strategy(
        vec![
            Endpoint::new(
                "fast",
                BoxLlmService::new(TargetService::new(Arc::new(fast), "sim-1")),
            ),
            Endpoint::new(
                "slow",
                BoxLlmService::new(TargetService::new(Arc::new(slow), "sim-1")),
            ),
        ],
        Strategy::LeastLatency,
    );
    let mut fast_count = 0;
    for _ in 0..50 {
        let req = ChatRequest::new("chat", vec![Message::user("Hi")]);
        let resp = balance
            .clone()
            .oneshot(LlmRequest::chat(RequestContext::new(), req))
            .await?;
        fast_count += usize::from(resp.meta.provider.as_deref() == Some("fast"));
    }
    println!("least-latency: {fast_count} of 50 requests went to the faster replica");
    Ok(())
}
