//! The contracts of the llmops workspace: wire types, normalized usage, the request context,
//! one classified error type, the extension traits, the tower glue, and two providers for
//! tests and demos.
//!
//! # Design
//!
//! **One request model.** Requests and responses follow the OpenAI Chat Completions JSON
//! ([`ChatRequest`], [`ChatResponse`], [`ChatChunk`]), because that is what clients send and
//! what vLLM and most servers speak. A real OpenAI or vLLM request deserializes directly;
//! fields we do not model are kept in `extra` maps and serialized back, so an
//! OpenAI-compatible upstream receives what the client sent. Other providers are translated by
//! codecs in `llmops-serve`.
//!
//! **Normalized usage.** [`Usage`] holds total input (cached included), cache reads, cache
//! writes, output and reasoning tokens, whatever the provider's own convention; the raw
//! upstream object is kept beside it. Cost and budgets are computed from it one way.
//!
//! **Classified errors.** [`Error`] carries an [`ErrorKind`] precise enough to act on — a
//! rate-limit 429 is not a quota 429 — and [`Error::retryability`] says whether to retry,
//! wait, fail over or give up. The mapping to HTTP status and OpenAI error JSON is in one
//! place ([`Error::http_status`], [`Error::to_body`]).
//!
//! **Context travels with the request.** [`RequestContext`] (request id, tenant, key, user,
//! tags, prompt template, deadline, trace) is part of every [`LlmRequest`], not an HTTP
//! extension, so library users get tenancy, budgets and audit without a web server.
//!
//! **Small object-safe traits.** [`Provider`], [`Evaluator`], [`Cache`], [`Budget`],
//! [`AuditSink`], [`TokenCounter`] and [`Embedder`] each state their contract in their docs.
//! Implementations live in the layer crates.
//!
//! **Tower for composition, streams first-class.** A pipeline is a
//! `tower::Service<LlmRequest>`; [`ProviderService`] is its innermost service and
//! [`BoxLlmService`] names any stack. Layers handle streams by wrapping them in
//! [`stream::ObservedStream`], which reports the end (usage, finish, error, or a client
//! drop) without buffering. See [`service`] for the pattern every layer follows.
//!
//! **Testable without a network.** [`mock::MockProvider`] scripts replies, latencies and
//! faults and records calls; [`sim::SimProvider`] is a deterministic simulated model.
//!
//! # Example: a pipeline around a provider
//!
//! ```
//! use std::sync::Arc;
//! use llmops_core::service::InspectLayer;
//! use llmops_core::sim::SimProvider;
//! use llmops_core::{BoxLlmService, ChatRequest, LlmRequest, Message, ProviderService, RequestContext};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let provider = Arc::new(SimProvider::builder().build());
//! let pipeline = BoxLlmService::new(
//!     ServiceBuilder::new()
//!         .layer(InspectLayer::new(|call| println!("{} took {:?}", call.model, call.duration)))
//!         .service(ProviderService::new(provider)),
//! );
//!
//! let req = ChatRequest::new("sim-1", vec![Message::user("Hello")]);
//! let ctx = RequestContext::new().with_tenant("team-a");
//! let resp = pipeline.oneshot(LlmRequest::chat(ctx, req)).await.unwrap();
//! assert!(!resp.into_chat().unwrap().first_text().is_empty());
//! # }
//! ```

pub mod context;
pub mod error;
pub mod id;
pub mod mock;
pub mod provider;
pub mod service;
pub mod sim;
pub mod stream;
pub mod traits;
pub mod types;
pub mod usage;

pub use context::{AllowedRegions, PromptRef, RequestContext, TraceContext};
pub use error::{Error, ErrorBody, ErrorDetail, ErrorKind, Result, Retryability};
pub use provider::{Capabilities, ChatStream, Provider};
pub use service::{
    BoxLlmService, LlmRequest, LlmResponse, ProviderService, RequestBody, ResponseBody,
    ResponseMeta,
};
pub use traits::audit::{
    Attempt, AuditEvent, AuditReceipt, AuditSink, GuardrailDecision, RequestAudit, SystemEvent,
};
pub use traits::budget::{Amount, Budget, BudgetScope, CostReport, Reservation, ResponseCost, Usd};
pub use traits::cache::{Cache, CacheControl, CacheKey, CachedResponse};
pub use traits::embedder::{Embedder, ProviderEmbedder};
pub use traits::evaluator::{EvalInput, Evaluator, Score};
pub use traits::tokens::TokenCounter;
pub use types::*;
pub use usage::Usage;
