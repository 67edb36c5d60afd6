//! The Redis response cache, shared by every replica.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use llmops_core::{Cache, CacheKey, CachedResponse, ChatResponse, Error, ErrorKind, Result};
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};

use crate::error::CostError;

#[derive(Serialize, Deserialize)]
struct Stored {
    stored_at_ms: u64,
    response: ChatResponse,
}

/// A [`Cache`] on Redis: entries are JSON under `{<namespace>}:c:<key hex>` with a TTL.
#[derive(Clone)]
pub struct RedisCache {
    conn: ConnectionManager,
    namespace: String,
    default_ttl: Duration,
}

impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCache")
            .field("namespace", &self.namespace)
            .finish()
    }
}

fn backend(e: impl fmt::Display) -> Error {
    Error::new(
        ErrorKind::Overloaded,
        format!("response cache (redis): {e}"),
    )
}

impl RedisCache {
    /// Connects to the Redis at `url`; entries live `default_ttl` unless `put` says otherwise.
    pub async fn connect(
        url: &str,
        namespace: impl Into<String>,
        default_ttl: Duration,
    ) -> std::result::Result<Self, CostError> {
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
            default_ttl,
        })
    }

    fn key(&self, key: &CacheKey) -> String {
        format!("{{{}}}:c:{}", self.namespace, key.to_hex())
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<CachedResponse>>> {
        let mut conn = self.conn.clone();
        let raw: Option<Vec<u8>> = conn.get(self.key(key)).await.map_err(backend)?;
        let Some(raw) = raw else { return Ok(None) };
        let stored: Stored = serde_json::from_slice(&raw).map_err(backend)?;
        let mut entry = CachedResponse::new(stored.response);
        entry.stored_at = UNIX_EPOCH + Duration::from_millis(stored.stored_at_ms);
        Ok(Some(Arc::new(entry)))
    }

    async fn put(
        &self,
        key: CacheKey,
        value: Arc<CachedResponse>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let stored_at_ms = value
            .stored_at
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(0))
            .unwrap_or_else(|_| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs() * 1000)
                    .unwrap_or(0)
            });
        let body = serde_json::to_vec(&Stored {
            stored_at_ms,
            response: value.response.clone(),
        })
        .map_err(backend)?;
        let ttl = ttl.unwrap_or(self.default_ttl);
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut conn = self.conn.clone();
        let () = conn
            .pset_ex(self.key(&key), body, ms)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn remove(&self, key: &CacheKey) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: i64 = conn.del(self.key(key)).await.map_err(backend)?;
        Ok(())
    }
}
