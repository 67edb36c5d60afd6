//! The [`Cache`] trait: a response cache backend.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::error::Result;
use crate::types::ChatResponse;

/// A 32-byte cache key (a BLAKE3 digest of the request's output-affecting fields and its
/// tenant partition; see `llmops-cost`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// The key as lowercase hex.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
        }
        s
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.to_hex())
    }
}

/// A per-request cache directive, put in
/// [`RequestContext::extensions`](llmops_core::RequestContext) by whoever builds the request.
///
/// The HTTP edge maps the request header `Cache-Control` with [`CacheControl::from_header`]:
/// `no-cache` skips the lookup (the fresh answer may still be stored), `no-store` skips both
/// the lookup and the store. Library users insert it directly:
///
/// ```
/// use llmops_core::RequestContext;
/// use llmops_core::CacheControl;
///
/// let mut ctx = RequestContext::new();
/// ctx.extensions.insert(CacheControl::no_store());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheControl {
    /// Do not answer from the cache.
    pub no_read: bool,
    /// Do not store the answer.
    pub no_write: bool,
}

impl CacheControl {
    /// `Cache-Control: no-cache`: skip the lookup, allow the store.
    pub fn no_cache() -> Self {
        Self {
            no_read: true,
            no_write: false,
        }
    }

    /// `Cache-Control: no-store`: neither look up nor store.
    pub fn no_store() -> Self {
        Self {
            no_read: true,
            no_write: true,
        }
    }

    /// Reads a `Cache-Control` header value (`None` when it has no directive for caches).
    pub fn from_header(value: &str) -> Option<Self> {
        let mut cc = Self::default();
        for d in value.split(',').map(|d| d.trim().to_ascii_lowercase()) {
            match d.as_str() {
                "no-cache" => cc.no_read = true,
                "no-store" => {
                    cc.no_read = true;
                    cc.no_write = true;
                }
                _ => {}
            }
        }
        (cc != Self::default()).then_some(cc)
    }
}

/// A cached answer.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CachedResponse {
    /// The complete response (a streamed answer is stored folded into one).
    pub response: ChatResponse,
    /// When it was stored.
    pub stored_at: SystemTime,
}

impl CachedResponse {
    /// Wraps a response stored now.
    pub fn new(response: ChatResponse) -> Self {
        Self {
            response,
            stored_at: SystemTime::now(),
        }
    }
}

/// A response cache backend (in memory, Redis...).
///
/// # Contract
///
/// - Keys already include the tenant partition; a backend never needs to know tenants, and
///   must never return an entry stored under another key.
/// - `get` after a successful `put` returns the entry until its TTL passes or it is evicted;
///   a backend may evict at any time (a cache is allowed to forget, never to lie).
/// - Errors are backend failures (Redis down); callers treat them as misses and count them.
#[async_trait]
pub trait Cache: Send + Sync {
    /// Looks up an entry.
    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<CachedResponse>>>;

    /// Stores an entry for at most `ttl` (the backend's default when `None`).
    async fn put(
        &self,
        key: CacheKey,
        value: Arc<CachedResponse>,
        ttl: Option<Duration>,
    ) -> Result<()>;

    /// Removes an entry, if present.
    async fn remove(&self, key: &CacheKey) -> Result<()>;
}
