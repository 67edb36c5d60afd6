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

/// A per-request cache directive, put in
/// [`RequestContext::extensions`](llmops_core::RequestContext) by whoever builds the request.
///
/// The HTTP edge maps the request header `Cache-Control` with [`CacheControl::from_header`]:
/// `no-cache` skips the lookup (the fresh answer may still be stored), `no-store` skips both
/// the lookup and the store. Library users insert it directly:
///
/// ```
/// use llmops_core::RequestContext;
/// use llmops_cost::cache::CacheControl;
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
