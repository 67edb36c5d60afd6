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
///
/// The index also learns from what the replicas report: when a replica's prefix-cache query
/// counter (`vllm:prefix_cache_queries`) goes down, the replica restarted with an empty cache,
/// and the index forgets everything it believed that replica held.
#[derive(Debug)]
pub struct PrefixAwareSelector {
    state: Mutex<State>,
    block_bytes: usize,
    endpoints: usize,
}

#[derive(Debug)]
struct State {
    picker: ReplicaPicker,
    /// The last prefix-cache query counter each replica reported.
    queries: Vec<Option<f64>>,
}

impl State {
    /// Forgets a replica whose prefix-cache counter went down (it restarted).
    fn observe_counters(&mut self, index: usize, queries: Option<f64>) {
        let Some(now) = queries else {
            return;
        };
        let Some(last) = self.queries.get_mut(index) else {
            return;
        };
        if last.is_some_and(|before| now < before) {
            tracing::info!(
                replica = index,
                "prefix-cache counter reset: the replica restarted, forgetting its prefixes"
            );
            self.picker.forget_replica(index);
        }
        *last = Some(now);
    }
}

impl PrefixAwareSelector {
    /// A selector over `endpoints` endpoints (at most [`MAX_REPLICAS`]).
    pub fn new(endpoints: usize, cfg: PrefixPolicyConfig) -> Self {
        let endpoints = endpoints.clamp(1, MAX_REPLICAS);
        Self {
            state: Mutex::new(State {
                picker: ReplicaPicker::new(Strategy::PrefixAware, endpoints, cfg),
                queries: vec![None; endpoints],
            }),
            block_bytes: DEFAULT_BLOCK_BYTES,
            endpoints,
        }
    }

    /// Blocks the index believes `replica` holds.
    pub fn indexed_blocks(&self, replica: usize) -> usize {
        self.lock().picker.index().len(replica)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
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
        let mut state = self.lock();
        for cand in c {
            state.observe_counters(cand.index, cand.external.prefix_cache_queries);
        }
        let pick = state.picker.pick(&hashes, &loads, session, Instant::now());
        drop(state);
        pick.and_then(|p| c.iter().position(|cand| cand.index == p.replica))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use llmops_core::{ChatRequest, Message, RequestContext};

    use super::*;
    use crate::layers::balance::ExternalLoad;

    fn req() -> LlmRequest {
        let context = "You are the support assistant of ACME. Policy: ".repeat(40);
        LlmRequest::chat(
            RequestContext::new(),
            ChatRequest::new("m", vec![Message::system(context), Message::user("hi")]),
        )
    }

    fn cands(queries: [Option<f64>; 2]) -> Vec<Candidate<'static>> {
        (0..2)
            .map(|i| Candidate {
                index: i,
                name: "r",
                weight: 1,
                outstanding: 0,
                latency: None,
                external: ExternalLoad {
                    prefix_cache_queries: queries[i],
                    ..ExternalLoad::default()
                },
            })
            .collect()
    }

    #[test]
    fn a_replica_whose_prefix_cache_counter_resets_is_forgotten() {
        let s = PrefixAwareSelector::new(2, PrefixPolicyConfig::default());
        let first = s.select(&req(), &cands([Some(100.0), Some(100.0)]));
        assert!(s.indexed_blocks(first) > 0);
        // The prefix sticks while the counters grow.
        let grown = [Some(5_000.0), Some(5_000.0)];
        assert_eq!(s.select(&req(), &cands(grown)), first);
        let held = s.indexed_blocks(first);
        // The chosen replica restarts: its counter drops, its prefixes are forgotten (and
        // the request that noticed is indexed on whichever replica it went to).
        let mut reset = grown;
        reset[first] = Some(12.0);
        let next = s.select(&req(), &cands(reset));
        if next == first {
            assert!(s.indexed_blocks(first) <= held);
            assert_eq!(s.indexed_blocks(1 - first), 0);
        } else {
            assert_eq!(s.indexed_blocks(first), 0);
        }
        // A counter that only grows never forgets.
        let s = PrefixAwareSelector::new(2, PrefixPolicyConfig::default());
        let r = s.select(&req(), &cands([Some(1.0), Some(1.0)]));
        s.select(&req(), &cands([Some(2.0), Some(2.0)]));
        assert_eq!(s.indexed_blocks(r), held);
    }
}
