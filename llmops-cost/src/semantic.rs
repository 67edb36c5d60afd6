//! The semantic response cache (off by default): answer a request with the stored answer to
//! a *similar* one.
//!
//! Similarity is the cosine between embeddings of the request's **last user message** — the
//! variable part. Everything else must match exactly: entries are partitioned by a BLAKE3 hash
//! of the tenant, the model, every earlier message (system prompt and history), the tools,
//! the response format and every sampling parameter. So one tenant's answer never serves
//! another, and two requests built from the same template with different system prompts can
//! never match — the failure that makes naive semantic caches answer 95% of requests wrongly
//! when they share a long fixed template.
//!
//! The threshold is a cosine *similarity* in `[-1, 1]` (higher is stricter; 0.95 by default),
//! not a distance. Within a partition the index is exact (brute force) up to
//! `ann_threshold` entries (2,000 by default) and an approximate random-hyperplane LSH index
//! above it (8 tables × 12 bits, single-bit multi-probe, exact re-ranking of candidates; see
//! `BENCHMARKS.md` for its recall and speed). Partitions are bounded (oldest entries evicted)
//! and entries expire.
//!
//! With the `redis` feature, `SemanticCacheLayer::with_store` shares entries between
//! replicas through Redis (`RedisSemanticStore`): every entry is appended to a capped list per
//! partition, and each replica reloads a partition into its local index when its copy is
//! older than the refresh interval (5 s by default).
//!
//! Hits are served like exact hits (zero usage, replayed as a stream when asked for,
//! `x-llmops-cache: hit`) plus `x-llmops-cache-similarity`. [`SemanticCacheLayer::stats`]
//! counts lookups and hits; when an evaluation finds that a hit was wrong, report it with
//! [`SemanticCacheLayer::record_false_hit`] and read the false-hit rate from the stats.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::HeaderValue;
use llmops_core::service::BoxFuture;
use llmops_core::stream::ObservedStream;
use llmops_core::{
    CachedResponse, ChatRequest, ChatResponse, Embedder, Error, LlmRequest, LlmResponse,
    RequestBody, ResponseBody, Result, Role,
};
use tower::{Layer, Service};

use crate::cache::CacheControl;
use crate::cache::layer::hit_response;

const LSH_TABLES: usize = 8;
const LSH_BITS: usize = 12;

/// Counters of a semantic cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SemanticStats {
    /// Lookups made.
    pub lookups: u64,
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Hits an evaluation reported wrong.
    pub false_hits: u64,
}

impl SemanticStats {
    /// Hits per lookup.
    pub fn hit_rate(&self) -> f64 {
        if self.lookups == 0 {
            0.0
        } else {
            self.hits as f64 / self.lookups as f64
        }
    }

    /// Reported false hits per hit.
    pub fn false_hit_rate(&self) -> f64 {
        if self.hits == 0 {
            0.0
        } else {
            self.false_hits as f64 / self.hits as f64
        }
    }
}

/// A hit's similarity, in the response metadata's extensions.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct SemanticHit {
    /// Cosine similarity of the matched entry.
    pub similarity: f32,
}

fn normalize(mut v: Vec<f32>) -> Option<Vec<f32>> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return None;
    }
    for x in &mut v {
        *x /= norm;
    }
    Some(v)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

struct Slot {
    vector: Vec<f32>,
    value: Arc<CachedResponse>,
    stored: Instant,
    hashes: [u16; LSH_TABLES],
}

/// A bounded vector index: brute force when small, LSH when large.
pub struct VectorIndex {
    dim: usize,
    planes: Vec<f32>,
    tables: Vec<HashMap<u16, Vec<usize>>>,
    slots: Vec<Option<Slot>>,
    next: usize,
    capacity: usize,
    ann_threshold: usize,
    len: usize,
}

impl fmt::Debug for VectorIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VectorIndex")
            .field("dim", &self.dim)
            .field("len", &self.len)
            .finish()
    }
}

impl VectorIndex {
    /// An index of `dim`-dimensional vectors holding at most `capacity` entries (the oldest
    /// is evicted), searched approximately above `ann_threshold` entries. The hyperplanes are
    /// drawn from a fixed seed, so the index is deterministic.
    pub fn new(dim: usize, capacity: usize, ann_threshold: usize) -> Self {
        // SplitMix64 → uniform in [-1, 1): the sign pattern of random hyperplanes is all LSH
        // needs.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
        };
        let planes = (0..LSH_TABLES * LSH_BITS * dim).map(|_| next()).collect();
        Self {
            dim,
            planes,
            tables: vec![HashMap::new(); LSH_TABLES],
            slots: Vec::new(),
            next: 0,
            capacity: capacity.max(1),
            ann_threshold,
            len: 0,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn hashes(&self, v: &[f32]) -> [u16; LSH_TABLES] {
        let mut out = [0u16; LSH_TABLES];
        for (t, h) in out.iter_mut().enumerate() {
            for b in 0..LSH_BITS {
                let p = &self.planes[(t * LSH_BITS + b) * self.dim..][..self.dim];
                if dot(p, v) >= 0.0 {
                    *h |= 1 << b;
                }
            }
        }
        out
    }

    /// Adds a normalized vector stored at `now` (wrong dimensions are ignored).
    pub fn insert(&mut self, vector: Vec<f32>, value: Arc<CachedResponse>, now: Instant) {
        self.insert_at(vector, value, now);
    }

    fn insert_at(&mut self, vector: Vec<f32>, value: Arc<CachedResponse>, now: Instant) {
        if vector.len() != self.dim {
            return;
        }
        let hashes = self.hashes(&vector);
        let id = if self.slots.len() < self.capacity {
            self.slots.push(None);
            self.slots.len() - 1
        } else {
            let id = self.next;
            self.next = (self.next + 1) % self.capacity;
            id
        };
        if let Some(old) = self.slots[id].take() {
            for (t, h) in old.hashes.iter().enumerate() {
                if let Some(b) = self.tables[t].get_mut(h) {
                    b.retain(|x| *x != id);
                }
            }
            self.len -= 1;
        }
        for (t, h) in hashes.iter().enumerate() {
            self.tables[t].entry(*h).or_default().push(id);
        }
        self.slots[id] = Some(Slot {
            vector,
            value,
            stored: now,
            hashes,
        });
        self.len += 1;
    }

    /// The most similar live entry with similarity ≥ `threshold`.
    pub fn search(
        &self,
        query: &[f32],
        threshold: f32,
        ttl: Option<Duration>,
        now: Instant,
    ) -> Option<(f32, Arc<CachedResponse>)> {
        if query.len() != self.dim {
            return None;
        }
        let live = |s: &Slot| ttl.is_none_or(|t| now.duration_since(s.stored) < t);
        let mut best: Option<(f32, usize)> = None;
        let mut consider = |id: usize, s: &Slot| {
            if !live(s) {
                return;
            }
            let sim = dot(query, &s.vector);
            if sim >= threshold && best.is_none_or(|(b, _)| sim > b) {
                best = Some((sim, id));
            }
        };
        if self.len <= self.ann_threshold {
            for (id, s) in self.slots.iter().enumerate() {
                if let Some(s) = s {
                    consider(id, s);
                }
            }
        } else {
            let hashes = self.hashes(query);
            let mut seen = std::collections::HashSet::new();
            for (t, h) in hashes.iter().enumerate() {
                for probe in std::iter::once(*h).chain((0..LSH_BITS).map(|b| h ^ (1 << b))) {
                    for id in self.tables[t].get(&probe).into_iter().flatten() {
                        if seen.insert(*id)
                            && let Some(s) = &self.slots[*id]
                        {
                            consider(*id, s);
                        }
                    }
                }
            }
        }
        best.and_then(|(sim, id)| self.slots[id].as_ref().map(|s| (sim, s.value.clone())))
    }
}

/// The partition of a request: everything but the last user message, hashed.
fn partition(namespace: &str, tenant: &str, req: &ChatRequest) -> Option<([u8; 32], String)> {
    let last = req.messages.last()?;
    if last.role != Role::User {
        return None;
    }
    let text = last.text();
    if text.trim().is_empty() {
        return None;
    }
    let mut rest = req.clone();
    rest.messages.pop();
    rest.stream = None;
    rest.stream_options = None;
    rest.user = None;
    rest.metadata = None;
    let key = crate::cache::cache_key(namespace, tenant, &mut rest);
    Some((key.0, text))
}

struct Shared {
    embedder: Arc<dyn Embedder>,
    threshold: f32,
    ttl: Option<Duration>,
    capacity: usize,
    ann_threshold: usize,
    namespace: String,
    partitions: Mutex<HashMap<[u8; 32], VectorIndex>>,
    #[cfg(feature = "redis")]
    store: Option<store::RedisSemanticStore>,
    #[cfg(feature = "redis")]
    refresh: Duration,
    #[cfg(feature = "redis")]
    loaded: Mutex<HashMap<[u8; 32], Instant>>,
    lookups: AtomicU64,
    hits: AtomicU64,
    false_hits: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn insert(&self, part: [u8; 32], vector: Vec<f32>, resp: ChatResponse) {
        if resp.choices.is_empty() || resp.choices.iter().any(|c| c.finish_reason.is_none()) {
            return;
        }
        let dim = vector.len();
        let entry = Arc::new(CachedResponse::new(resp));
        #[cfg(feature = "redis")]
        if let Some(store) = &self.store {
            store.append_in_background(part, &vector, &entry, self.capacity, self.ttl);
        }
        let mut parts = lock(&self.partitions);
        let idx = parts
            .entry(part)
            .or_insert_with(|| VectorIndex::new(dim, self.capacity, self.ann_threshold));
        idx.insert(vector, entry, Instant::now());
    }

    /// Reloads a partition from the shared store when it was never loaded here or was loaded
    /// longer than the refresh interval ago.
    #[cfg(feature = "redis")]
    async fn refresh(&self, part: [u8; 32], dim: usize) {
        let Some(store) = &self.store else { return };
        let now = Instant::now();
        let stale = lock(&self.loaded)
            .get(&part)
            .is_none_or(|t| now.duration_since(*t) >= self.refresh);
        if !stale {
            return;
        }
        match store.load(part).await {
            Ok(entries) => {
                let mut idx = VectorIndex::new(dim, self.capacity, self.ann_threshold);
                for (vector, value, age) in entries {
                    if let (Some(stored), Some(v)) = (now.checked_sub(age), normalize(vector)) {
                        idx.insert_at(v, value, stored);
                    }
                }
                lock(&self.partitions).insert(part, idx);
                lock(&self.loaded).insert(part, now);
            }
            Err(e) => {
                metrics::counter!("llmops_cache_backend_errors_total", "op" => "semantic_load")
                    .increment(1);
                tracing::warn!(error = %e, "semantic cache: shared store unreachable, using local entries");
            }
        }
    }
}

#[cfg(feature = "redis")]
mod store {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use llmops_core::{CachedResponse, ChatResponse};
    use redis::aio::{ConnectionManager, ConnectionManagerConfig};
    use serde::{Deserialize, Serialize};

    use crate::error::CostError;

    #[derive(Serialize, Deserialize)]
    struct Stored {
        v: Vec<f32>,
        t: u64,
        r: ChatResponse,
    }

    fn now_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    /// Shared storage of semantic-cache entries on Redis, so replicas serve each other's
    /// answers: entries are appended to a capped list per partition
    /// (`{<namespace>}:sem:<partition>`, with the entry TTL), and each replica reloads a
    /// partition into its local index when it last did longer than the refresh interval ago.
    #[derive(Clone)]
    pub struct RedisSemanticStore {
        conn: ConnectionManager,
        namespace: String,
    }

    impl std::fmt::Debug for RedisSemanticStore {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RedisSemanticStore")
                .field("namespace", &self.namespace)
                .finish()
        }
    }

    impl RedisSemanticStore {
        /// Connects to the Redis at `url`.
        pub async fn connect(url: &str, namespace: impl Into<String>) -> Result<Self, CostError> {
            let client = redis::Client::open(url)
                .map_err(|e| CostError::Config(format!("invalid redis_url: {e}")))?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Duration::from_secs(1))
                .set_response_timeout(Duration::from_secs(1))
                .set_number_of_retries(1);
            let conn = ConnectionManager::new_with_config(client, config)
                .await
                .map_err(|e| CostError::Backend {
                    backend: "redis",
                    message: format!("{url}: {e}"),
                })?;
            Ok(Self {
                conn,
                namespace: namespace.into(),
            })
        }

        fn key(&self, part: [u8; 32]) -> String {
            format!(
                "{{{}}}:sem:{}",
                self.namespace,
                llmops_core::CacheKey(part).to_hex()
            )
        }

        /// Every stored entry of a partition: vector, answer, and age.
        pub(super) async fn load(
            &self,
            part: [u8; 32],
        ) -> redis::RedisResult<Vec<(Vec<f32>, Arc<CachedResponse>, Duration)>> {
            let mut conn = self.conn.clone();
            let raw: Vec<Vec<u8>> = redis::cmd("LRANGE")
                .arg(self.key(part))
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await?;
            let now = now_ms();
            Ok(raw
                .iter()
                .filter_map(|b| serde_json::from_slice::<Stored>(b).ok())
                .map(|s| {
                    let age = Duration::from_millis(now.saturating_sub(s.t));
                    (s.v, Arc::new(CachedResponse::new(s.r)), age)
                })
                .collect())
        }

        pub(super) fn append_in_background(
            &self,
            part: [u8; 32],
            vector: &[f32],
            value: &CachedResponse,
            capacity: usize,
            ttl: Option<Duration>,
        ) {
            let Ok(body) = serde_json::to_vec(&Stored {
                v: vector.to_vec(),
                t: now_ms(),
                r: value.response.clone(),
            }) else {
                return;
            };
            let key = self.key(part);
            let mut conn = self.conn.clone();
            let keep = i64::try_from(capacity).unwrap_or(i64::MAX);
            let ttl_ms = ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1));
            let Ok(handle) = tokio::runtime::Handle::try_current() else {
                return;
            };
            handle.spawn(async move {
                let mut pipe = redis::pipe();
                pipe.cmd("RPUSH").arg(&key).arg(body).ignore();
                pipe.cmd("LTRIM").arg(&key).arg(-keep).arg(-1).ignore();
                if let Some(ms) = ttl_ms {
                    pipe.cmd("PEXPIRE").arg(&key).arg(ms).ignore();
                }
                if let Err(e) = pipe.query_async::<()>(&mut conn).await {
                    metrics::counter!("llmops_cache_backend_errors_total", "op" => "semantic_put")
                        .increment(1);
                    tracing::warn!(error = %e, "semantic cache: cannot store the entry in redis");
                }
            });
        }
    }
}

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use store::RedisSemanticStore;

/// A layer answering requests similar to earlier ones. See the [module](self) docs.
#[derive(Clone)]
pub struct SemanticCacheLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for SemanticCacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemanticCacheLayer")
            .field("threshold", &self.shared.threshold)
            .field("stats", &self.stats())
            .finish()
    }
}

impl SemanticCacheLayer {
    /// A layer embedding with `embedder`, serving entries with cosine similarity ≥
    /// `threshold` (clamped to `[-1, 1]`).
    pub fn new(embedder: Arc<dyn Embedder>, threshold: f32) -> Self {
        Self {
            shared: Arc::new(Shared {
                embedder,
                threshold: threshold.clamp(-1.0, 1.0),
                ttl: Some(Duration::from_secs(3600)),
                capacity: 10_000,
                ann_threshold: 2_000,
                namespace: "llmops-semantic".into(),
                partitions: Mutex::new(HashMap::new()),
                #[cfg(feature = "redis")]
                store: None,
                #[cfg(feature = "redis")]
                refresh: Duration::from_secs(5),
                #[cfg(feature = "redis")]
                loaded: Mutex::new(HashMap::new()),
                lookups: AtomicU64::new(0),
                hits: AtomicU64::new(0),
                false_hits: AtomicU64::new(0),
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Shared)) -> Self {
        if let Some(s) = Arc::get_mut(&mut self.shared) {
            f(s);
        }
        self
    }

    /// Entry lifetime (builder style; default one hour).
    #[must_use]
    pub fn ttl(self, ttl: Duration) -> Self {
        self.edit(|s| s.ttl = Some(ttl))
    }

    /// Most entries per partition (builder style; default 10,000).
    #[must_use]
    pub fn capacity(self, n: usize) -> Self {
        self.edit(|s| s.capacity = n.max(1))
    }

    /// Entries per partition above which search is approximate (builder style; default 2,000).
    #[must_use]
    pub fn ann_threshold(self, n: usize) -> Self {
        self.edit(|s| s.ann_threshold = n)
    }

    /// Shares entries with other replicas through Redis (builder style).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    #[must_use]
    pub fn with_store(self, store: RedisSemanticStore) -> Self {
        self.edit(|s| s.store = Some(store))
    }

    /// How often a partition is reloaded from the shared store (builder style; default 5 s).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    #[must_use]
    pub fn refresh_interval(self, every: Duration) -> Self {
        self.edit(|s| s.refresh = every)
    }

    /// Lookups, hits and reported false hits so far.
    pub fn stats(&self) -> SemanticStats {
        SemanticStats {
            lookups: self.shared.lookups.load(Ordering::Relaxed),
            hits: self.shared.hits.load(Ordering::Relaxed),
            false_hits: self.shared.false_hits.load(Ordering::Relaxed),
        }
    }

    /// Records that an evaluation judged a semantic hit wrong.
    pub fn record_false_hit(&self) {
        self.shared.false_hits.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("llmops_semantic_cache_false_hits_total").increment(1);
    }
}

impl<S> Layer<S> for SemanticCacheLayer {
    type Service = SemanticCacheService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        SemanticCacheService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service of [`SemanticCacheLayer`].
#[derive(Clone)]
pub struct SemanticCacheService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> fmt::Debug for SemanticCacheService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SemanticCacheService")
    }
}

impl<S> Service<LlmRequest> for SemanticCacheService<S>
where
    S: Service<LlmRequest, Response = LlmResponse, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = LlmResponse;
    type Error = Error;
    type Future = BoxFuture<Result<LlmResponse>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: LlmRequest) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move {
            let RequestBody::Chat(chat) = &req.body else {
                return inner.call(req).await;
            };
            let cc = req
                .ctx
                .extensions
                .get::<CacheControl>()
                .copied()
                .unwrap_or_default();
            let Some((part, text)) = partition(&shared.namespace, &req.ctx.tenant, chat) else {
                return inner.call(req).await;
            };
            if cc.no_read && cc.no_write {
                return inner.call(req).await;
            }
            let vector = match shared.embedder.embed(std::slice::from_ref(&text)).await {
                Ok(mut v) if v.len() == 1 => normalize(v.swap_remove(0)),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "semantic cache: embedding failed, bypassing");
                    metrics::counter!("llmops_cache_backend_errors_total", "op" => "embed")
                        .increment(1);
                    None
                }
            };
            let Some(vector) = vector else {
                return inner.call(req).await;
            };
            if !cc.no_read {
                #[cfg(feature = "redis")]
                shared.refresh(part, vector.len()).await;
                shared.lookups.fetch_add(1, Ordering::Relaxed);
                let found = lock(&shared.partitions).get(&part).and_then(|idx| {
                    idx.search(&vector, shared.threshold, shared.ttl, Instant::now())
                });
                if let Some((sim, entry)) = found {
                    shared.hits.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("llmops_cache_requests_total", "cache" => "semantic", "result" => "hit")
                        .increment(1);
                    let mut resp = hit_response(&entry, chat, "hit");
                    if let Ok(h) = HeaderValue::from_str(&format!("{sim:.4}")) {
                        resp.meta.headers.insert("x-llmops-cache-similarity", h);
                    }
                    resp.meta.extensions.insert(SemanticHit { similarity: sim });
                    return Ok(resp);
                }
                metrics::counter!("llmops_cache_requests_total", "cache" => "semantic", "result" => "miss")
                    .increment(1);
            }
            let write = !cc.no_write;
            let mut resp = inner.call(req).await?;
            if !write || resp.meta.cache_hit {
                return Ok(resp);
            }
            resp.body = match resp.body {
                ResponseBody::Chat(r) => {
                    shared.insert(part, vector, r.clone());
                    ResponseBody::Chat(r)
                }
                ResponseBody::ChatStream(s) => {
                    let shared = shared.clone();
                    ResponseBody::ChatStream(
                        ObservedStream::collecting(s, move |summary| {
                            if summary.is_complete()
                                && let Some(r) = summary.response
                            {
                                shared.insert(part, vector, r);
                            }
                        })
                        .boxed(),
                    )
                }
                other => other,
            };
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use llmops_core::mock::{MockProvider, MockReply};
    use llmops_core::{Message, ProviderService, RequestContext};
    use tower::ServiceExt;

    use super::*;

    /// Bag-of-letters embeddings: texts with the same letters are identical, small edits are
    /// close, unrelated texts are far.
    struct Letters;

    #[async_trait]
    impl Embedder for Letters {
        async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
            Ok(texts
                .iter()
                .map(|t| {
                    let mut v = vec![0f32; 26];
                    for c in t
                        .to_ascii_lowercase()
                        .bytes()
                        .filter(u8::is_ascii_lowercase)
                    {
                        v[usize::from(c - b'a')] += 1.0;
                    }
                    v
                })
                .collect())
        }
    }

    fn req(tenant: &str, system: &str, user: &str) -> LlmRequest {
        LlmRequest::chat(
            RequestContext::new().with_tenant(tenant),
            ChatRequest::new("m", vec![Message::system(system), Message::user(user)]),
        )
    }

    fn svc(
        mock: &Arc<MockProvider>,
    ) -> (SemanticCacheLayer, SemanticCacheService<ProviderService>) {
        let layer = SemanticCacheLayer::new(Arc::new(Letters), 0.95);
        let svc = layer.layer(ProviderService::new(mock.clone()));
        (layer, svc)
    }

    #[tokio::test]
    async fn similar_questions_hit_and_unrelated_ones_miss() {
        let mock = Arc::new(MockProvider::new("p").default_reply(MockReply::text("Paris")));
        let (layer, svc) = svc(&mock);
        svc.clone()
            .oneshot(req("t", "sys", "What is the capital of France?"))
            .await
            .unwrap();
        let hit = svc
            .clone()
            .oneshot(req("t", "sys", "what is the capital of france"))
            .await
            .unwrap();
        assert!(hit.meta.cache_hit);
        assert!(hit.meta.headers.contains_key("x-llmops-cache-similarity"));
        assert_eq!(hit.into_chat().unwrap().first_text(), "Paris");
        let miss = svc
            .oneshot(req("t", "sys", "Tell me a joke about zebras"))
            .await
            .unwrap();
        assert!(!miss.meta.cache_hit);
        mock.assert_call_count(2);
        let s = layer.stats();
        assert_eq!((s.lookups, s.hits), (3, 1));
        layer.record_false_hit();
        assert_eq!(layer.stats().false_hit_rate(), 1.0);
    }

    #[tokio::test]
    async fn other_tenants_and_other_system_prompts_never_match() {
        let mock = Arc::new(MockProvider::new("p").default_reply(MockReply::text("x")));
        let (_, svc) = svc(&mock);
        svc.clone()
            .oneshot(req("t", "Translate to French.", "good morning"))
            .await
            .unwrap();
        assert!(
            !svc.clone()
                .oneshot(req("u", "Translate to French.", "good morning"))
                .await
                .unwrap()
                .meta
                .cache_hit
        );
        assert!(
            !svc.clone()
                .oneshot(req("t", "Translate to German.", "good morning"))
                .await
                .unwrap()
                .meta
                .cache_hit
        );
        assert!(
            svc.oneshot(req("t", "Translate to French.", "good morning"))
                .await
                .unwrap()
                .meta
                .cache_hit
        );
        mock.assert_call_count(3);
    }

    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn replicas_share_entries_through_redis() {
        let url = std::env::var("LLMOPS_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let ns = format!("test-{}", uuid::Uuid::now_v7().simple());
        let store = || async {
            RedisSemanticStore::connect(&url, ns.clone())
                .await
                .unwrap_or_else(|e| {
                    panic!("cannot reach Redis at {url} (set LLMOPS_TEST_REDIS_URL): {e}")
                })
        };
        let mock = Arc::new(MockProvider::new("p").default_reply(MockReply::text("Paris")));
        let a = SemanticCacheLayer::new(Arc::new(Letters), 0.95)
            .with_store(store().await)
            .layer(ProviderService::new(mock.clone()));
        let b_layer = SemanticCacheLayer::new(Arc::new(Letters), 0.95)
            .with_store(store().await)
            .refresh_interval(Duration::ZERO);
        let b = b_layer.layer(ProviderService::new(mock.clone()));
        a.oneshot(req("t", "sys", "What is the capital of France?"))
            .await
            .unwrap();
        // Wait until replica a's background write reached Redis.
        let probe = store().await;
        let RequestBody::Chat(c) = req("t", "sys", "x").body else {
            unreachable!()
        };
        let (part, _) = partition("llmops-semantic", "t", &c).unwrap();
        for _ in 0..100 {
            if !probe.load(part).await.unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let r = b
            .clone()
            .oneshot(req("t", "sys", "what is the capital of france"))
            .await
            .unwrap();
        assert!(r.meta.cache_hit, "replica b serves replica a's entry");
        mock.assert_call_count(1);
        assert!(
            !b.oneshot(req("other", "sys", "what is the capital of france"))
                .await
                .unwrap()
                .meta
                .cache_hit
        );
    }

    #[test]
    fn lsh_index_finds_near_duplicates_and_evicts_the_oldest() {
        let dim = 64;
        let mut idx = VectorIndex::new(dim, 5000, 100);
        let now = Instant::now();
        let mut state = 7u64;
        let mut rnd = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2000) as f32 / 1000.0 - 1.0
        };
        let resp = Arc::new(CachedResponse::new(ChatResponse::text(
            "id", "m", "v", None,
        )));
        let mut stored = Vec::new();
        for _ in 0..3000 {
            let v = normalize((0..dim).map(|_| rnd()).collect()).unwrap();
            stored.push(v.clone());
            idx.insert(v, resp.clone(), now);
        }
        assert_eq!(idx.len(), 3000);
        // Queries: stored vectors with a little noise (cosine ≈ 0.99).
        let mut found = 0;
        for v in stored.iter().take(200) {
            let q = normalize(v.iter().map(|x| x + rnd() * 0.02).collect()).unwrap();
            if idx.search(&q, 0.95, None, now).is_some() {
                found += 1;
            }
        }
        assert!(found >= 190, "LSH recall too low: {found}/200");
        let far = normalize((0..dim).map(|_| rnd()).collect()).unwrap();
        assert!(idx.search(&far, 0.95, None, now).is_none());
        // Bounded: a small index evicts its oldest entry.
        let mut small = VectorIndex::new(dim, 2, 100);
        for v in stored.iter().take(3) {
            small.insert(v.clone(), resp.clone(), now);
        }
        assert_eq!(small.len(), 2);
        assert!(small.search(&stored[0], 0.99, None, now).is_none());
        assert!(small.search(&stored[2], 0.99, None, now).is_some());
        // Expired entries never match.
        assert!(
            small
                .search(&stored[2], 0.99, Some(Duration::ZERO), now)
                .is_none()
        );
    }
}
