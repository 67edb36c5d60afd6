//! Cost control for LLM calls: exact token counts, prices, per-request ceilings, budgets and
//! rate limits, and response caches — as traits, implementations and tower layers.
//!
//! # Design
//!
//! **Exact tokens, cheap when possible.** [`tokens`] counts OpenAI encodings exactly (parity
//! with OpenAI's `tiktoken` is tested on a recorded corpus) with GitHub's linear-time
//! `bpe-openai`; vocabularies load once per process. The hot path avoids the tokenizer
//! whenever the free byte bound (tokens ≤ UTF-8 bytes) already decides ([`estimate`]).
//!
//! **Money is integers.** [`prices`] holds rates as pico-dollars per token and costs as
//! nano-dollars ([`Usd`](llmops_core::Usd)), so the same [`Usage`](llmops_core::Usage) always
//! costs the same, streamed or not. Cached reads, cache writes (5-minute and 1-hour) and
//! reasoning tokens are first-class rates. A model without a price is an error or an explicit
//! default, never a silent zero; every bundled price names its source and date.
//!
//! **Reserve, commit, release.** [`budget`] implements [`Budget`](llmops_core::Budget) in
//! memory and on Redis (feature `redis`, atomic Lua scripts), with nested scopes, fixed UTC
//! and rolling windows, USD/token/request caps and RPM/TPM. A request reserves its worst case
//! in every scope, and settles exactly once — on success, error, stream end and client
//! disconnect — so concurrent requests on any number of replicas never overshoot a cap.
//! When Redis is unreachable each limit fails closed (default) or open, visibly.
//!
//! **Caches that never lie across tenants.** [`cache`] keys responses with BLAKE3 over a
//! canonical serialization of every output-affecting field plus the tenant; hits replay as
//! streams when a stream was asked for, report zero upstream cost, and coalesce identical
//! in-flight requests. [`semantic`] adds an opt-in embedding-similarity cache, partitioned so
//! that neither another tenant nor another system prompt can ever match.
//!
//! **Cheaper first.** [`cascade`] tries a cheap model and escalates when a validator rejects
//! its answer, accounting both attempts.
//!
//! **Configuration.** [`config`] has the serde types of the gateway's `[cost]`,
//! `[budgets]` and `[cache]` sections and builders that turn them into layers.
//!
//! # Layer order
//!
//! `ceiling → budget → cache → router → provider`: the ceiling refuses before anything is
//! reserved and leaves its token count for the budget; the budget counts cache hits as
//! zero-cost requests; the cache sits closest to the upstream call it saves.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use llmops_core::mock::{MockProvider, MockReply};
//! use llmops_core::{ChatRequest, LlmRequest, Message, ProviderService, RequestContext};
//! use llmops_cost::budget::{BudgetLayer, Limit, MemoryBudget, Window};
//! use llmops_cost::ceiling::{CeilingPolicy, CeilingRule, CostCeilingLayer};
//! use llmops_cost::prices::{ModelPrice, PriceCatalog};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let mut catalog = PriceCatalog::bundled();
//! catalog.insert(ModelPrice::per_million("my-model", 1.0, 4.0).unwrap());
//! let catalog = Arc::new(catalog);
//! let budget = Arc::new(MemoryBudget::new(vec![
//!     Limit::budget("tenant:*", Window::Daily).unwrap().usd(5.0),
//! ]).unwrap());
//!
//! let provider = Arc::new(MockProvider::new("mock").default_reply(MockReply::text("hi")));
//! let pipeline = ServiceBuilder::new()
//!     .layer(CostCeilingLayer::new(CeilingPolicy::new(
//!         catalog.clone(),
//!         vec![CeilingRule::new("*", 0.50)],
//!     )))
//!     .layer(BudgetLayer::new(budget, catalog))
//!     .service(ProviderService::new(provider));
//!
//! let req = ChatRequest::new("my-model", vec![Message::user("Hello")]).with_max_tokens(100);
//! let ctx = RequestContext::new().with_tenant("team-a");
//! let resp = pipeline.oneshot(LlmRequest::chat(ctx, req)).await.unwrap();
//! assert!(resp.meta.headers.contains_key("x-llmops-budget-remaining-usd"));
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod accounting;
pub mod budget;
pub mod cache;
pub mod cascade;
pub mod ceiling;
pub mod config;
pub mod error;
pub mod estimate;
pub mod prices;
pub mod semantic;
pub mod tokens;

pub use error::CostError;
