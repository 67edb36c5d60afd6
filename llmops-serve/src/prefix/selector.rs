//! Prefix-aware routing as a balancer [`Selector`]: `strategy = "prefix-aware"`.

use std::sync::{Mutex, PoisonError};

use llmops_core::{LlmRequest, RequestBody};
use tokio::time::Instant;

use super::index::{BlockHasher, MAX_REPLICAS};
use super::policy::{PrefixPolicyConfig, ReplicaLoad, ReplicaPicker, Strategy};
use crate::layers::balance::{Candidate, Selector};

/// Prompt bytes per block: about 16 tokens of English, the block size of vLLM's prefix cache.
pub const DEFAULT_BLOCK_BYTES: usize = 64;

/// Chooses among a balancer's endpoints by prefix match and load, through a
/// [`ReplicaPicker`]. The load it sees is the balancer's own in-flight count plus each vLLM
/// replica's scraped queue depth and KV-cache usage. A request's blocks are hashed from its
/// rendered prompt, seeded by its model and its `cache_salt` (so tenants with salts never share
/// prefixes); the end user (`user`) is the session key that breaks ties.
#[derive(Debug)]
pub struct PrefixAwareSelector {
    picker: Mutex<ReplicaPicker>,
    block_bytes: usize,
    endpoints: usize,
}

impl PrefixAwareSelector {
    /// A selector over `endpoints` endpoints (at most [`MAX_REPLICAS`]).
    pub fn new(endpoints: usize, cfg: PrefixPolicyConfig) -> Self {
        let endpoints = endpoints.clamp(1, MAX_REPLICAS);
        Self {
            picker: Mutex::new(ReplicaPicker::new(Strategy::PrefixAware, endpoints, cfg)),
            block_bytes: DEFAULT_BLOCK_BYTES,
            endpoints,
        }
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Selector for PrefixAwareSelector {
    fn select(&self, req: &LlmRequest, c: &[Candidate<'_>]) -> usize {
        let (hashes, session) = match &req.body {
            RequestBody::Chat(r) => {
                let salt = r
                    .extra
                    .get("cache_salt")
                    .and_then(serde_json::Value::as_str);
                let hasher = BlockHasher::new(self.block_bytes, &r.model, salt);
                (hasher.hash_chat(r), r.user.as_deref().map(fnv))
            }
            _ => (Vec::new(), None),
        };
        let mut loads = vec![
            ReplicaLoad {
                healthy: false,
                ..ReplicaLoad::default()
            };
            self.endpoints
        ];
        for cand in c {
            if let Some(l) = loads.get_mut(cand.index) {
                *l = ReplicaLoad::new(
                    u32::try_from(cand.outstanding).unwrap_or(u32::MAX),
                    cand.external.queue_depth.map_or(0, |q| q.max(0.0) as u32),
                    cand.external.kv_cache_usage.unwrap_or(0.0),
                );
            }
        }
        let pick = self
            .picker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pick(&hashes, &loads, session, Instant::now());
        pick.and_then(|p| c.iter().position(|cand| cand.index == p.replica))
            .unwrap_or(0)
    }
}
