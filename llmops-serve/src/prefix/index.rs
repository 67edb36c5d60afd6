//! Block hashing and the per-replica prefix index.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use llmops_core::{ChatRequest, Content};
use lru::LruCache;
use tokio::time::Instant;

/// The hash of one block of a prompt, chained with every block before it: equal hashes mean
/// equal prefixes (up to a 2⁻⁶⁴ collision chance).
pub type BlockHash = u64;

const DOMAIN: &[u8] = b"llmops-prefix-v1";

/// Splits prompts into fixed-size blocks and hashes them as a chain:
/// `h₀ = BLAKE3(domain ‖ model ‖ 0x00 ‖ salt)`, `hᵢ = BLAKE3(hᵢ₋₁ ‖ blockᵢ)`.
///
/// Seeding with the model keeps two models' caches apart; seeding with the tenant's
/// `cache_salt` (when set) keeps tenants apart exactly as vLLM's salted prefix cache does.
/// A trailing partial block is not hashed: engines cache whole blocks only.
#[derive(Clone, Debug)]
pub struct BlockHasher {
    block_size: usize,
    seed: [u8; 32],
}

impl BlockHasher {
    /// A hasher of `block_size`-unit blocks (tokens or bytes) for `model`, salted by `salt`.
    pub fn new(block_size: usize, model: &str, salt: Option<&str>) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(DOMAIN);
        h.update(model.as_bytes());
        h.update(&[0]);
        if let Some(s) = salt {
            h.update(s.as_bytes());
        }
        Self {
            block_size: block_size.max(1),
            seed: *h.finalize().as_bytes(),
        }
    }

    /// The block size.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Hashes pre-split blocks (each item is one block's bytes), as a chain.
    pub fn hash_blocks<'a>(&self, blocks: impl Iterator<Item = &'a [u8]>) -> Vec<BlockHash> {
        let mut prev = self.seed;
        let mut out = Vec::new();
        for block in blocks {
            let mut h = blake3::Hasher::new();
            h.update(&prev);
            h.update(block);
            prev = *h.finalize().as_bytes();
            let mut first = [0u8; 8];
            first.copy_from_slice(&prev[..8]);
            out.push(u64::from_le_bytes(first));
        }
        out
    }

    /// Hashes the whole blocks of a byte string.
    pub fn hash_bytes(&self, bytes: &[u8]) -> Vec<BlockHash> {
        self.hash_blocks(bytes.chunks_exact(self.block_size))
    }

    /// Hashes the whole blocks of a token sequence.
    pub fn hash_tokens(&self, tokens: &[u32]) -> Vec<BlockHash> {
        let mut buf = Vec::with_capacity(self.block_size * 4);
        let mut prev = self.seed;
        let mut out = Vec::with_capacity(tokens.len() / self.block_size);
        for block in tokens.chunks_exact(self.block_size) {
            buf.clear();
            for t in block {
                buf.extend_from_slice(&t.to_le_bytes());
            }
            let mut h = blake3::Hasher::new();
            h.update(&prev);
            h.update(&buf);
            prev = *h.finalize().as_bytes();
            let mut first = [0u8; 8];
            first.copy_from_slice(&prev[..8]);
            out.push(u64::from_le_bytes(first));
        }
        out
    }

    /// Hashes a chat request's rendered prompt (tools, then each message's role and text, in
    /// order), as bytes.
    pub fn hash_chat(&self, req: &ChatRequest) -> Vec<BlockHash> {
        self.hash_bytes(&render_prompt(req))
    }
}

/// A deterministic rendering of what a chat request puts in front of the model: tool
/// definitions, then every message's role and text. Equal renderings share a prefix cache.
pub fn render_prompt(req: &ChatRequest) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    if let Some(tools) = &req.tools
        && let Ok(json) = serde_json::to_vec(tools)
    {
        out.extend_from_slice(&json);
        out.push(0x1e);
    }
    for m in &req.messages {
        out.extend_from_slice(m.role.as_str().as_bytes());
        out.push(0x1f);
        match &m.content {
            Some(Content::Text(t)) => out.extend_from_slice(t.as_bytes()),
            Some(c @ Content::Parts(_)) => c.for_each_text(|t| out.extend_from_slice(t.as_bytes())),
            None => {}
        }
        for call in m.tool_calls.iter().flatten() {
            out.extend_from_slice(call.function.name.as_bytes());
            out.extend_from_slice(call.function.arguments.as_bytes());
        }
        out.push(0x1e);
    }
    out
}

/// Sizing of a [`PrefixIndex`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PrefixIndexConfig {
    /// Blocks remembered per replica: the replica's KV capacity in tokens divided by the
    /// block size (e.g. 500,000 tokens / 16 = 31,250).
    pub capacity_blocks: usize,
    /// Entries older than this are forgotten (engines evict idle blocks too); `None` keeps them
    /// until LRU eviction.
    pub ttl: Option<Duration>,
}

impl Default for PrefixIndexConfig {
    fn default() -> Self {
        Self {
            capacity_blocks: 31_250,
            ttl: Some(Duration::from_secs(600)),
        }
    }
}

impl PrefixIndexConfig {
    /// An index remembering `capacity_blocks` blocks per replica, forgetting them after `ttl`.
    pub fn new(capacity_blocks: usize, ttl: Option<Duration>) -> Self {
        Self {
            capacity_blocks,
            ttl,
        }
    }
}

/// The maximum number of replicas one index tracks (replica sets are bit masks).
pub const MAX_REPLICAS: usize = 64;

/// What the router believes each replica holds in its prefix cache.
///
/// Per replica, an LRU of block hashes sized like the replica's KV cache; across replicas, a
/// map from block hash to the set of replicas holding it, so a longest-prefix match for all
/// replicas at once costs one map lookup per block. The index learns from routing decisions
/// ([`record`](Self::record): the chosen replica will hold the prompt's blocks) and forgets
/// by LRU, by age, and when a replica restarts ([`forget_replica`](Self::forget_replica)).
pub struct PrefixIndex {
    replicas: Vec<LruCache<BlockHash, Instant>>,
    owners: HashMap<BlockHash, u64>,
    ttl: Option<Duration>,
}

impl std::fmt::Debug for PrefixIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixIndex")
            .field("replicas", &self.replicas.len())
            .field("blocks", &self.owners.len())
            .finish()
    }
}

impl PrefixIndex {
    /// An empty index over `replicas` replicas (at most [`MAX_REPLICAS`]).
    pub fn new(replicas: usize, cfg: &PrefixIndexConfig) -> Self {
        let cap = NonZeroUsize::new(cfg.capacity_blocks.max(1)).unwrap_or(NonZeroUsize::MIN);
        Self {
            replicas: (0..replicas.min(MAX_REPLICAS))
                .map(|_| LruCache::sparse(cap))
                .collect(),
            owners: HashMap::new(),
            ttl: cfg.ttl,
        }
    }

    /// How many replicas the index tracks.
    pub fn replicas(&self) -> usize {
        self.replicas.len()
    }

    /// Blocks indexed for `replica`.
    pub fn len(&self, replica: usize) -> usize {
        self.replicas.get(replica).map_or(0, LruCache::len)
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    fn all_mask(&self) -> u64 {
        match self.replicas.len() {
            64 => u64::MAX,
            n => (1u64 << n) - 1,
        }
    }

    /// For each replica, how many leading blocks of `hashes` it holds. One map lookup per
    /// block, whatever the number of replicas.
    pub fn match_lengths(&self, hashes: &[BlockHash], now: Instant) -> Vec<usize> {
        let n = self.replicas.len();
        let mut lens = vec![0usize; n];
        let mut alive = self.all_mask();
        for (i, h) in hashes.iter().enumerate() {
            let mut held = self.owners.get(h).copied().unwrap_or(0) & alive;
            if let Some(ttl) = self.ttl {
                let mut bits = held;
                while bits != 0 {
                    let r = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let fresh = self.replicas[r]
                        .peek(h)
                        .is_some_and(|t| now.saturating_duration_since(*t) <= ttl);
                    if !fresh {
                        held &= !(1u64 << r);
                    }
                }
            }
            let mut lost = alive & !held;
            while lost != 0 {
                let r = lost.trailing_zeros() as usize;
                lost &= lost - 1;
                lens[r] = i;
            }
            alive = held;
            if alive == 0 {
                return lens;
            }
        }
        let mut rest = alive;
        while rest != 0 {
            let r = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            lens[r] = hashes.len();
        }
        lens
    }

    /// Records that `replica` now holds every block of `hashes` (it was routed the prompt),
    /// evicting its least recently used blocks beyond capacity.
    pub fn record(&mut self, replica: usize, hashes: &[BlockHash], now: Instant) {
        let Some(lru) = self.replicas.get_mut(replica) else {
            return;
        };
        let bit = 1u64 << replica;
        for h in hashes {
            if let Some((old, _)) = lru.push(*h, now)
                && old != *h
                && let Some(mask) = self.owners.get_mut(&old)
            {
                *mask &= !bit;
                if *mask == 0 {
                    self.owners.remove(&old);
                }
            }
            *self.owners.entry(*h).or_insert(0) |= bit;
        }
    }

    /// Forgets everything about `replica` (it restarted, or its cache was cleared).
    pub fn forget_replica(&mut self, replica: usize) {
        let Some(lru) = self.replicas.get_mut(replica) else {
            return;
        };
        let bit = 1u64 << replica;
        for (h, _) in lru.iter() {
            if let Some(mask) = self.owners.get_mut(h) {
                *mask &= !bit;
                if *mask == 0 {
                    self.owners.remove(h);
                }
            }
        }
        lru.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(replicas: usize, cap: usize) -> PrefixIndex {
        PrefixIndex::new(
            replicas,
            &PrefixIndexConfig {
                capacity_blocks: cap,
                ttl: None,
            },
        )
    }

    #[test]
    fn chain_hashes_share_prefixes_only() {
        let h = BlockHasher::new(4, "m", None);
        let a = h.hash_bytes(b"aaaabbbbcccc");
        let b = h.hash_bytes(b"aaaabbbbdddd");
        let c = h.hash_bytes(b"xxxxbbbbcccc");
        assert_eq!(a.len(), 3);
        assert_eq!(a[..2], b[..2]);
        assert_ne!(a[2], b[2]);
        assert_ne!(
            a[1], c[1],
            "same block after a different prefix must differ"
        );
        assert_eq!(h.hash_bytes(b"aaaabb").len(), 1, "partial block ignored");
        let salted = BlockHasher::new(4, "m", Some("tenant-a"));
        assert_ne!(salted.hash_bytes(b"aaaa"), h.hash_bytes(b"aaaa"));
        assert_ne!(
            BlockHasher::new(4, "other", None).hash_bytes(b"aaaa"),
            h.hash_bytes(b"aaaa")
        );
    }

    #[test]
    fn longest_prefix_per_replica() {
        let h = BlockHasher::new(2, "m", None);
        let mut ix = idx(3, 100);
        let now = Instant::now();
        ix.record(0, &h.hash_bytes(b"aabbcc"), now);
        ix.record(1, &h.hash_bytes(b"aabbdd"), now);
        let lens = ix.match_lengths(&h.hash_bytes(b"aabbccee"), now);
        assert_eq!(lens, vec![3, 2, 0]);
    }

    #[test]
    fn eviction_and_forgetting_update_owners() {
        let h = BlockHasher::new(1, "m", None);
        let mut ix = idx(2, 2);
        let now = Instant::now();
        ix.record(0, &h.hash_bytes(b"abc"), now); // capacity 2: "a" evicted
        assert_eq!(ix.len(0), 2);
        assert_eq!(ix.match_lengths(&h.hash_bytes(b"abc"), now), vec![0, 0]);
        ix.record(1, &h.hash_bytes(b"ab"), now);
        assert_eq!(ix.match_lengths(&h.hash_bytes(b"ab"), now), vec![0, 2]);
        ix.forget_replica(1);
        assert_eq!(ix.match_lengths(&h.hash_bytes(b"ab"), now), vec![0, 0]);
        assert!(ix.owners.keys().all(|k| ix.replicas[0].contains(k)));
    }

    #[test]
    fn entries_expire() {
        let h = BlockHasher::new(1, "m", None);
        let mut ix = PrefixIndex::new(
            1,
            &PrefixIndexConfig {
                capacity_blocks: 10,
                ttl: Some(Duration::from_secs(5)),
            },
        );
        let t0 = Instant::now();
        ix.record(0, &h.hash_bytes(b"ab"), t0);
        assert_eq!(
            ix.match_lengths(&h.hash_bytes(b"ab"), t0 + Duration::from_secs(4)),
            vec![2]
        );
        assert_eq!(
            ix.match_lengths(&h.hash_bytes(b"ab"), t0 + Duration::from_secs(6)),
            vec![0]
        );
    }

    #[test]
    fn rendering_is_stable_and_ordered() {
        use llmops_core::Message;
        let a = ChatRequest::new("m", vec![Message::system("s"), Message::user("u")]);
        let b = ChatRequest::new("m", vec![Message::system("s"), Message::user("u2")]);
        let ra = render_prompt(&a);
        let rb = render_prompt(&b);
        assert!(rb.starts_with(&ra[..ra.len() - 1]));
    }
}
