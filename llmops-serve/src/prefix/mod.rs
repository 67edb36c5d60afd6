//! Prefix- and load-aware routing across replicas that keep a prefix (KV) cache.
//!
//! Engines like vLLM skip the prefill of prompt blocks already in their cache, so a request
//! sent to the replica that served the same prefix comes back far sooner and cheaper. But
//! routing on prefix alone piles every request sharing a popular prefix onto one replica (the
//! failure every router in this space warns about). The pieces:
//!
//! - [`BlockHasher`]: a prompt as a chain of block hashes, seeded by model and tenant salt.
//! - [`PrefixIndex`]: per replica, an LRU of block hashes sized like its KV cache, learned
//!   from the router's own decisions; a longest-prefix match for all replicas costs one map
//!   lookup per block.
//! - [`ReplicaPicker`]: round-robin, least-outstanding, prefix-only, and prefix-aware — a
//!   weighted score of matched fraction, load and free KV, with an imbalance guard that hands
//!   the decision to load when replicas drift apart, and session affinity as a tie-breaker.
//! - [`fleet`]: a deterministic simulator of vLLM-like replicas that runs the picker and
//!   reports hit rate, time to first token, throughput and load balance per strategy
//!   (`llmops sim fleet`).

pub mod fleet;
mod index;
mod policy;
mod selector;

pub use index::{
    BlockHash, BlockHasher, MAX_REPLICAS, PrefixIndex, PrefixIndexConfig, render_prompt,
};
pub use policy::{Pick, PickReason, PrefixPolicyConfig, ReplicaLoad, ReplicaPicker, Strategy};
pub use selector::{DEFAULT_BLOCK_BYTES, PrefixAwareSelector};
