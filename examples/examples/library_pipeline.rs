//! A pipeline in your own Rust service, no gateway: a provider wrapped in layers, called
//! directly, streamed, and observed at the end of each call.
//!
//! Run: `cargo run -p llmops-examples --example library_pipeline`

use std::sync::Arc;
use std::time::Duration;

use llmops_core::service::{ContextLayer, InspectLayer};
use llmops_core::sim::SimProvider;
use llmops_core::stream::collect_stream;
use llmops_core::{
    BoxLlmService, ChatRequest, LlmRequest, Message, ProviderService, RequestContext, StreamOptions,
};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), llmops_core::Error> {
    // A simulated model: 50 ms to first token, 400 tokens/s. Swap in any `Provider`.
    let model = Arc::new(
        SimProvider::builder()
            .ttft(Duration::from_millis(50))
            .tokens_per_second(400.0)
            .build(),
    );

    // Layers run top to bottom. `ContextLayer` amends every request's context; `InspectLayer`
    // sees every call end — for streams, when the stream ends — without buffering it.
    let pipeline = BoxLlmService::new(
        ServiceBuilder::new()
            .layer(ContextLayer::new(|ctx| {
                ctx.tags
                    .entry("service".into())
                    .or_insert_with(|| "example".into());
                ctx.shrink_deadline(tokio::time::Instant::now() + Duration::from_secs(30));
            }))
            .layer(InspectLayer::new(|call| {
                let usage = call
                    .usage
                    .as_ref()
                    .map(|u| (u.input_tokens, u.output_tokens));
                println!(
                    "[inspect] tenant={} model={} stream={} tokens(in,out)={usage:?} \
                     ttfc={:?} total={:?}",
                    call.ctx.tenant,
                    call.model,
                    call.stream,
                    call.time_to_first_content,
                    call.duration
                );
            }))
            .service(ProviderService::new(model)),
    );

    let ctx = RequestContext::new()
        .with_tenant("team-a")
        .with_user("alice");
    let req = ChatRequest::new("sim-1", vec![Message::user("What does a gateway do?")]);

    let answer = pipeline
        .clone()
        .oneshot(LlmRequest::chat(ctx.clone(), req.clone()))
        .await?;
    println!("complete: {}", answer.into_chat()?.first_text());

    let mut streamed = req.with_stream(true);
    streamed.stream_options = Some(StreamOptions::include_usage(true));
    let stream = pipeline
        .oneshot(LlmRequest::chat(ctx, streamed))
        .await?
        .into_stream()?;
    let folded = collect_stream(stream).await?;
    println!("streamed: {}", folded.first_text());
    Ok(())
}
