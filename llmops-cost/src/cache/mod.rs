//! Response caches: exact-match keys, in-memory and Redis backends, and the caching layer.
//!
//! [`cache_key`] hashes (BLAKE3) a canonical serialization of every output-affecting field of
//! a chat request together with the tenant, so the key does not depend on JSON key order or
//! whitespace and no tenant can read another's entries. [`CacheLayer`] looks a request up
//! before the upstream call and stores complete answers after it:
//!
//! - modes [`CacheMode::On`], `Off`, `ReadOnly`, `WriteOnly`, and a per-request
//!   [`CacheControl`] in the request context's extensions (the HTTP edge maps
//!   `Cache-Control: no-cache` / `no-store` to it);
//! - errors, failed streams and streams the client dropped are never stored;
//! - a hit on a streaming request replays as a stream; hits set
//!   [`ResponseMeta::cache_hit`](llmops_core::ResponseMeta), the header `x-llmops-cache: hit`
//!   and zero usage (no upstream cost);
//! - identical requests in flight at the same moment are coalesced: one upstream call, every
//!   waiter answered with its result (configurable);
//! - a backend error is a miss (counted in `llmops_cache_backend_errors_total`), never a
//!   failed request.
//!
//! Backends: [`MemoryCache`] (moka, bounded by entries and bytes, TTL) and `RedisCache`
//! (feature `redis`, shared by replicas).

mod key;
pub(crate) mod layer;
mod memory;
#[cfg(feature = "redis")]
mod redis;

pub use key::cache_key;
pub use layer::{CACHE_HEADER, CacheLayer, CacheService};
pub use memory::MemoryCache;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::RedisCache;

/// Whether the cache is read, written, both or neither.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum CacheMode {
    /// Read and write.
    #[default]
    On,
    /// Neither.
    Off,
    /// Serve hits, never store.
    ReadOnly,
    /// Store answers, never serve them (warming a cache).
    WriteOnly,
}

impl CacheMode {
    fn reads(self) -> bool {
        matches!(self, Self::On | Self::ReadOnly)
    }

    fn writes(self) -> bool {
        matches!(self, Self::On | Self::WriteOnly)
    }
}

pub use llmops_core::CacheControl;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_header_mapping() {
        assert_eq!(
            CacheControl::from_header("no-cache"),
            Some(CacheControl::no_cache())
        );
        assert_eq!(
            CacheControl::from_header("max-age=0, No-Store"),
            Some(CacheControl::no_store())
        );
        assert_eq!(CacheControl::from_header("max-age=60"), None);
    }

    #[test]
    fn modes_parse_from_config() {
        #[derive(serde::Deserialize)]
        struct W {
            mode: CacheMode,
        }
        let w: W = toml::from_str("mode = \"read-only\"").unwrap();
        assert_eq!(w.mode, CacheMode::ReadOnly);
        assert!(toml::from_str::<W>("mode = \"sometimes\"").is_err());
    }
}
