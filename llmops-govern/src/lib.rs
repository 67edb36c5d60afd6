//! Governance for llmops: a tamper-evident audit trail, PII redaction, prompt-injection
//! detection and data residency.
//!
//! # Design
//!
//! **An audit log you can check without trusting its keeper.** Every record carries the hash
//! of the one before (`prev`) and its own `hash = BLAKE3("llmops.audit.v1.record\n" ‖
//! canonical bytes)`, where the canonical bytes are RFC 8785-style JSON ([`canonical`]). A
//! chain alone detects edits, deletions, insertions and reordering, but not a cut-off tail or
//! a keeper who rewrites history and recomputes every hash; Ed25519-signed checkpoints
//! `{log id, size, head}` written to a separate place close that gap
//! ([`audit::checkpoint`]). [`audit::verify`] checks every record and link while streaming,
//! so memory stays flat on multi-gigabyte logs, and names the first bad sequence number and
//! the kind of damage.
//!
//! **Commitments, not content.** Prompts and outputs are recorded as keyed BLAKE3
//! commitments; the key belongs to the operator, so low-entropy content cannot be recovered by
//! hashing guesses. Content is stored only when configured, PII-redacted, and optionally
//! encrypted with a per-tenant key: deleting that key erases the tenant's content
//! (crypto-shredding) while the chain, which hashes the ciphertext, still verifies.
//!
//! **Appends never block the async runtime.** [`audit::FileAuditSink`] hands records to one
//! writer thread that group-commits them (one `write` and one `fdatasync` per batch) and
//! acknowledges according to the durability mode. A torn final line left by a crash is
//! detected, cut off, reported and recorded in the chain on the next open. The PostgreSQL
//! sink (feature `postgres`) serializes appends with an advisory lock so several gateway
//! replicas extend one chain.
//!
//! **Guardrails are deterministic and honest about their limits.** [`pii`] ports Presidio's
//! regex-plus-validator layer (Luhn, mod-97, SSA ranges, libphonenumber metadata); no NER.
//! [`injection`] is a heuristic detector behind the [`injection::Detector`] trait: it scores
//! and explains, it does not promise protection. [`layer`] wraps both as tower layers around
//! [`llmops_core::LlmRequest`] with `off | flag | block` policies. [`residency`] filters
//! routing candidates by region and fails with `ResidencyViolation` rather than falling back
//! to a disallowed region.
//!
//! **Configuration** for the `[audit]`, `[guardrails.*]` and `[[tenants]]` sections lives in
//! [`config`], so the CLI embeds it unchanged.

pub mod audit;
pub mod canonical;
pub mod config;
pub mod error;
pub mod injection;
pub mod layer;
pub mod pii;
pub mod residency;

pub use error::{GovernError, Result};
