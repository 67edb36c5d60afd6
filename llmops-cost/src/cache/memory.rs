//! The in-process response cache (moka).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use llmops_core::{Cache, CacheKey, CachedResponse, Result};
use moka::Expiry;

#[derive(Clone)]
struct Entry {
    value: Arc<CachedResponse>,
    ttl: Option<Duration>,
}

struct PerEntryTtl;

impl Expiry<CacheKey, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _k: &CacheKey, v: &Entry, _now: Instant) -> Option<Duration> {
        v.ttl
    }
}

/// An in-memory [`Cache`] bounded by total bytes and by entry count, with a TTL per entry.
///
/// Built on `moka` (TinyLFU admission, LRU eviction). Each entry weighs its approximate size
/// in bytes, but at least `max_bytes / max_entries`, so both bounds hold.
#[derive(Clone)]
pub struct MemoryCache {
    inner: moka::future::Cache<CacheKey, Entry>,
    default_ttl: Option<Duration>,
}

impl fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryCache")
            .field("entries", &self.inner.entry_count())
            .field("weighted_bytes", &self.inner.weighted_size())
            .finish()
    }
}

/// The approximate in-memory size of a cached response.
pub(crate) fn approx_size(v: &CachedResponse) -> usize {
    let r = &v.response;
    let mut n = 256 + r.id.len() + r.model.len();
    for c in &r.choices {
        n += 128;
        if let Some(content) = &c.message.content {
            content.for_each_text(|t| n += t.len());
        }
        for call in c.message.tool_calls.iter().flatten() {
            n += 64 + call.id.len() + call.function.name.len() + call.function.arguments.len();
        }
    }
    n
}

impl MemoryCache {
    /// A cache of at most `max_entries` entries and about `max_bytes` bytes, whose entries
    /// live `default_ttl` unless `put` says otherwise.
    pub fn new(max_entries: u64, max_bytes: u64, default_ttl: Option<Duration>) -> Self {
        let floor = u32::try_from(max_bytes / max_entries.max(1))
            .unwrap_or(u32::MAX)
            .max(1);
        let inner = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(move |_k: &CacheKey, v: &Entry| -> u32 {
                u32::try_from(approx_size(&v.value))
                    .unwrap_or(u32::MAX)
                    .max(floor)
            })
            .expire_after(PerEntryTtl)
            .build();
        Self { inner, default_ttl }
    }

    /// Entries currently held (approximate until pending maintenance runs).
    pub fn entry_count(&self) -> u64 {
        self.inner.entry_count()
    }

    /// Runs pending evictions (for tests).
    pub async fn run_pending_tasks(&self) {
        self.inner.run_pending_tasks().await;
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<CachedResponse>>> {
        Ok(self.inner.get(key).await.map(|e| e.value))
    }

    async fn put(
        &self,
        key: CacheKey,
        value: Arc<CachedResponse>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        self.inner
            .insert(
                key,
                Entry {
                    value,
                    ttl: ttl.or(self.default_ttl),
                },
            )
            .await;
        Ok(())
    }

    async fn remove(&self, key: &CacheKey) -> Result<()> {
        self.inner.invalidate(key).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use llmops_core::ChatResponse;

    use super::*;

    fn entry(text: &str) -> Arc<CachedResponse> {
        Arc::new(CachedResponse::new(ChatResponse::text(
            "id", "m", text, None,
        )))
    }

    #[tokio::test]
    async fn bounded_by_entries_and_bytes() {
        let c = MemoryCache::new(10, 1_000_000, None);
        for i in 0..100u8 {
            c.put(CacheKey([i; 32]), entry("x"), None).await.unwrap();
        }
        c.run_pending_tasks().await;
        assert!(c.entry_count() <= 10, "{}", c.entry_count());
        let c = MemoryCache::new(1000, 20_000, None);
        for i in 0..100u8 {
            c.put(CacheKey([i; 32]), entry(&"y".repeat(2000)), None)
                .await
                .unwrap();
        }
        c.run_pending_tasks().await;
        assert!(c.entry_count() <= 10, "{}", c.entry_count());
    }

    #[tokio::test]
    async fn entries_expire_after_their_ttl() {
        let c = MemoryCache::new(10, 1_000_000, Some(Duration::from_secs(3600)));
        c.put(
            CacheKey([1; 32]),
            entry("a"),
            Some(Duration::from_millis(30)),
        )
        .await
        .unwrap();
        c.put(CacheKey([2; 32]), entry("b"), None).await.unwrap();
        assert!(c.get(&CacheKey([1; 32])).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(c.get(&CacheKey([1; 32])).await.unwrap().is_none());
        assert!(c.get(&CacheKey([2; 32])).await.unwrap().is_some());
        c.remove(&CacheKey([2; 32])).await.unwrap();
        assert!(c.get(&CacheKey([2; 32])).await.unwrap().is_none());
    }
}
