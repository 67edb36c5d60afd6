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
//!
//! # Example: serve a simulated model
//!
//! ```no_run
//! use llmops_serve::config::ServeConfig;
//! use llmops_serve::gateway::Gateway;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let gateway = Gateway::from_config(&ServeConfig::embedded_default())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! llmops_serve::http::serve(listener, gateway, std::future::pending()).await?;
//! # Ok(()) }
//! ```

pub mod config;
pub mod gateway;
pub mod http;
