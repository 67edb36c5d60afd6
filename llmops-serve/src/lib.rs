//! Serving: providers, routing and the OpenAI-compatible HTTP edge.
//!
//! # Design
//!
//! - [`gateway::Gateway`] maps the model names clients send to pipelines
//!   ([`llmops_core::BoxLlmService`]) and holds the edge's settings (virtual keys, body limit,
//!   request deadline). Pipelines are plain tower services, so a gateway built by hand can put
//!   any layer around any model; [`gateway::Gateway::from_config`] builds the default ones
//!   from the `[server]`, `[providers.*]` and `[models.*]` sections ([`config`]).
//! - [`http`] is the edge: an axum router that parses OpenAI requests, builds the
//!   [`llmops_core::RequestContext`] from headers (virtual key → tenant, request id, trace
//!   context, prompt template), calls the pipeline, and answers JSON or server-sent events.
//!   It owns nothing else: budgets, caches, guardrails and audit are layers in the pipeline,
//!   equally available to library users who never run an HTTP server.
//! - Errors are answered with the status and OpenAI error JSON that
//!   [`llmops_core::Error`] defines, from one place.
//! - [`providers`] are the upstream clients — OpenAI-compatible, vLLM and Anthropic — each an
//!   I/O-free codec (encoding, decoding, SSE parsing, error classification by status *and*
//!   `error.type`/`error.code`) over one shared, connection-pooled HTTP client. Providers
//!   never retry or fall back on their own.
//! - [`layers`] are the resilience and routing layers, plain tower services configured per
//!   logical model: retries with full-jitter backoff, `Retry-After` and a retry budget;
//!   time-to-first-token, idle and total timeouts; fallback chains; weighted,
//!   least-outstanding and peak-EWMA load balancing fed by vLLM's own load metrics; circuit
//!   breakers with 429 cool-downs; per-target concurrency limits held for a stream's life;
//!   canary and shadow traffic; embedding micro-batching.
//! - Streams commit on their first **content** delta: a failure before it is retried or
//!   falls back transparently; a failure after it ends the stream with a clean error, never
//!   a truncated answer that looks complete. Every upstream attempt is logged and counted
//!   ([`layers::AttemptLog`]), and the answering target is reported in `x-llmops-provider`.
//!
//! # Example: serve a simulated model
//!
//! ```no_run
//! use llmops_serve::config::ServeConfig;
//! use llmops_serve::gateway::Gateway;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let gateway = Gateway::from_config(&ServeConfig::embedded_default())?;
//! // The kernel's maximum listen backlog: a burst of new connections is queued, not dropped.
//! let listener = llmops_serve::http::bind("127.0.0.1:8080".parse()?, None)?;
//! llmops_serve::http::serve(listener, gateway, std::future::pending()).await?;
//! # Ok(()) }
//! ```

pub mod config;
pub mod gateway;
pub mod http;
pub mod layers;
pub mod prefix;
pub mod providers;
