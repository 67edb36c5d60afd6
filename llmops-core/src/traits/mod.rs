//! The extension traits other crates implement: evaluators, caches, budgets, audit sinks,
//! token counters and embedders. [`Provider`](crate::Provider) lives in its own module.

pub mod audit;
pub mod budget;
pub mod cache;
pub mod embedder;
pub mod evaluator;
pub mod tokens;
