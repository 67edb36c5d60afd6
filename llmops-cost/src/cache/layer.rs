//! The caching layer.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use http::HeaderValue;
use llmops_core::service::BoxFuture;
use llmops_core::stream::ObservedStream;
use llmops_core::{
    Cache, CacheKey, CachedResponse, ChatRequest, ChatResponse, Error, LlmRequest, LlmResponse,
    RequestBody, ResponseBody, ResponseMeta, Result, Usage, Usd, response_to_chunks,
};
use tokio::sync::watch;
use tower::{Layer, Service};

use super::{CacheControl, CacheMode, cache_key};
use crate::estimate::ResponseCost;

/// The response header telling how the cache answered: `hit`, `coalesced`, `miss` or
/// `bypass`.
pub const CACHE_HEADER: &str = "x-llmops-cache";

#[derive(Clone, Debug)]
enum Flight {
    Pending,
    Done(Option<Arc<CachedResponse>>),
}

type Inflight = DashMap<CacheKey, watch::Receiver<Flight>>;

/// The leader of a coalesced request: answers its waiters exactly once (with nothing if it
/// is dropped before completing).
struct Leader {
    map: Arc<Inflight>,
    key: CacheKey,
    tx: watch::Sender<Flight>,
    done: bool,
}

impl Leader {
    fn finish(mut self, value: Option<Arc<CachedResponse>>) {
        self.map.remove(&self.key);
        self.tx.send_replace(Flight::Done(value));
        self.done = true;
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if !self.done {
            self.map.remove(&self.key);
            self.tx.send_replace(Flight::Done(None));
        }
    }
}

struct Shared {
    cache: Arc<dyn Cache>,
    mode: CacheMode,
    ttl: Option<Duration>,
    namespace: String,
    coalesce: bool,
    deterministic_only: bool,
    inflight: Arc<Inflight>,
}

/// A layer answering repeated chat requests from a [`Cache`]. See the [module](super) docs.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use llmops_core::mock::{MockProvider, MockReply};
/// use llmops_core::{ChatRequest, LlmRequest, Message, ProviderService, RequestContext};
/// use llmops_cost::cache::{CacheLayer, MemoryCache};
/// use tower::{Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mock = Arc::new(MockProvider::new("p").default_reply(MockReply::text("4")));
/// let cache = Arc::new(MemoryCache::new(10_000, 64 << 20, Some(Duration::from_secs(3600))));
/// let svc = CacheLayer::new(cache).layer(ProviderService::new(mock.clone()));
/// let req = || LlmRequest::chat(
///     RequestContext::new().with_tenant("t"),
///     ChatRequest::new("m", vec![Message::user("2+2?")]),
/// );
/// svc.clone().oneshot(req()).await.unwrap();
/// let again = svc.oneshot(req()).await.unwrap();
/// assert!(again.meta.cache_hit);
/// mock.assert_call_count(1);
/// # }
/// ```
#[derive(Clone)]
pub struct CacheLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("mode", &self.shared.mode)
            .field("ttl", &self.shared.ttl)
            .field("namespace", &self.shared.namespace)
            .field("coalesce", &self.shared.coalesce)
            .finish()
    }
}

impl CacheLayer {
    /// A layer on `cache`: mode on, the backend's TTL, coalescing on, namespace `llmops`.
    pub fn new(cache: Arc<dyn Cache>) -> Self {
        Self {
            shared: Arc::new(Shared {
                cache,
                mode: CacheMode::On,
                ttl: None,
                namespace: "llmops".into(),
                coalesce: true,
                deterministic_only: false,
                inflight: Arc::new(DashMap::new()),
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Shared)) -> Self {
        if let Some(s) = Arc::get_mut(&mut self.shared) {
            f(s);
        }
        self
    }

    /// Sets the mode (builder style).
    #[must_use]
    pub fn mode(self, mode: CacheMode) -> Self {
        self.edit(|s| s.mode = mode)
    }

    /// Sets the TTL of stored entries (builder style).
    #[must_use]
    pub fn ttl(self, ttl: Duration) -> Self {
        self.edit(|s| s.ttl = Some(ttl))
    }

    /// Sets the key namespace; changing it invalidates every entry (builder style).
    #[must_use]
    pub fn namespace(self, ns: impl Into<String>) -> Self {
        let ns = ns.into();
        self.edit(|s| s.namespace = ns)
    }

    /// Whether identical in-flight requests share one upstream call (builder style).
    #[must_use]
    pub fn coalesce(self, on: bool) -> Self {
        self.edit(|s| s.coalesce = on)
    }

    /// Caches only requests with `temperature` 0 (builder style): sampled answers are then
    /// never replayed.
    #[must_use]
    pub fn deterministic_only(self, on: bool) -> Self {
        self.edit(|s| s.deterministic_only = on)
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CacheService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service of [`CacheLayer`].
#[derive(Clone)]
pub struct CacheService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> fmt::Debug for CacheService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CacheService")
    }
}

fn count(result: &'static str) {
    metrics::counter!("llmops_cache_requests_total", "cache" => "exact", "result" => result)
        .increment(1);
}

fn backend_error(op: &'static str, e: &Error) {
    metrics::counter!("llmops_cache_backend_errors_total", "op" => op).increment(1);
    tracing::warn!(error = %e, op, "response cache backend error: treated as a miss");
}

/// Whether a complete answer may be stored: at least one choice, and every choice finished.
fn cacheable(r: &ChatResponse) -> bool {
    !r.choices.is_empty() && r.choices.iter().all(|c| c.finish_reason.is_some())
}

/// The answer served from a cache entry: zero usage (nothing was spent upstream), replayed
/// as a stream when one was asked for.
pub(crate) fn hit_response(
    entry: &CachedResponse,
    req: &ChatRequest,
    label: &'static str,
) -> LlmResponse {
    let mut resp = entry.response.clone();
    if resp.usage.is_some() {
        resp.usage = Some(Usage::default());
    }
    let body = if req.is_stream() {
        let chunks = response_to_chunks(&resp, req.include_usage());
        ResponseBody::ChatStream(Box::pin(futures_util::stream::iter(
            chunks.into_iter().map(Ok),
        )))
    } else {
        ResponseBody::Chat(resp)
    };
    let mut meta = ResponseMeta::default();
    meta.cache_hit = true;
    meta.attempts = 0;
    meta.headers
        .insert(CACHE_HEADER, HeaderValue::from_static(label));
    meta.extensions.insert(ResponseCost::new(Usd::ZERO, 0));
    let mut out = LlmResponse::new(body);
    out.meta = meta;
    out
}

impl<S> Service<LlmRequest> for CacheService<S>
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
            let mut req = req;
            let RequestBody::Chat(chat) = &req.body else {
                return inner.call(req).await;
            };
            let cc = req
                .ctx
                .extensions
                .get::<CacheControl>()
                .copied()
                .unwrap_or_default();
            let sampled = shared.deterministic_only && chat.temperature.is_none_or(|t| t > 0.0);
            let read = shared.mode.reads() && !cc.no_read && !sampled;
            let write = shared.mode.writes() && !cc.no_write && !sampled;
            if !read && !write {
                count("bypass");
                let mut resp = inner.call(req).await?;
                resp.meta
                    .headers
                    .insert(CACHE_HEADER, HeaderValue::from_static("bypass"));
                return Ok(resp);
            }
            let key = match &mut req.body {
                RequestBody::Chat(chat) => cache_key(&shared.namespace, &req.ctx.tenant, chat),
                _ => return inner.call(req).await,
            };
            let RequestBody::Chat(chat) = &req.body else {
                return inner.call(req).await;
            };
            if read {
                match shared.cache.get(&key).await {
                    Ok(Some(entry)) => {
                        count("hit");
                        return Ok(hit_response(&entry, chat, "hit"));
                    }
                    Ok(None) => {}
                    Err(e) => backend_error("get", &e),
                }
            }
            // Coalesce with an identical request in flight, or lead one.
            let mut leader = None;
            if shared.coalesce && read {
                let waiting = match shared.inflight.entry(key) {
                    Entry::Occupied(o) => Some(o.get().clone()),
                    Entry::Vacant(v) => {
                        let (tx, rx) = watch::channel(Flight::Pending);
                        v.insert(rx);
                        leader = Some(Leader {
                            map: shared.inflight.clone(),
                            key,
                            tx,
                            done: false,
                        });
                        None
                    }
                };
                if let Some(mut rx) = waiting {
                    let done = rx
                        .wait_for(|f| matches!(f, Flight::Done(_)))
                        .await
                        .ok()
                        .map(|f| f.clone());
                    if let Some(Flight::Done(Some(entry))) = done {
                        count("coalesced");
                        return Ok(hit_response(&entry, chat, "coalesced"));
                    }
                    // The leader failed or was dropped: go upstream ourselves.
                }
            }
            count("miss");
            let stream = chat.is_stream();
            let mut resp = inner.call(req).await?; // an error drops the leader: waiters retry
            resp.meta
                .headers
                .insert(CACHE_HEADER, HeaderValue::from_static("miss"));
            let ttl = shared.ttl;
            resp.body = match resp.body {
                ResponseBody::Chat(r) => {
                    if cacheable(&r) {
                        let entry = Arc::new(CachedResponse::new(r.clone()));
                        if write && let Err(e) = shared.cache.put(key, entry.clone(), ttl).await {
                            backend_error("put", &e);
                        }
                        if let Some(l) = leader.take() {
                            l.finish(Some(entry));
                        }
                    }
                    ResponseBody::Chat(r)
                }
                ResponseBody::ChatStream(s) if stream => {
                    let cache = shared.cache.clone();
                    let observed = ObservedStream::collecting(s, move |summary| {
                        let complete = summary.is_complete();
                        let entry = summary
                            .response
                            .filter(|r| complete && cacheable(r))
                            .map(|r| Arc::new(CachedResponse::new(r)));
                        if let (true, Some(e)) = (write, &entry) {
                            let e = e.clone();
                            if let Ok(h) = tokio::runtime::Handle::try_current() {
                                h.spawn(async move {
                                    if let Err(err) = cache.put(key, e, ttl).await {
                                        backend_error("put", &err);
                                    }
                                });
                            }
                        }
                        if let Some(l) = leader {
                            l.finish(entry);
                        }
                    });
                    ResponseBody::ChatStream(observed.boxed())
                }
                other => other,
            };
            Ok(resp)
        })
    }
}
