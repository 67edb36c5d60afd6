//! Upstream providers: OpenAI-compatible ([`openai`]), vLLM ([`vllm`]) and Anthropic
//! ([`anthropic`]).
//!
//! Each provider is an I/O-free codec (request encoding, response and stream decoding, error
//! classification — pure functions over JSON and bytes, tested against recorded payloads)
//! plus a thin transport over one shared, connection-pooled [`HttpTransport`]. Providers do
//! not retry, fall back or time out streams on their own: those are the layers' job
//! ([`crate::layers`]), so every attempt is visible and budgeted.

pub mod anthropic;
pub mod errors;
pub mod openai;
pub mod sse;
pub mod vllm;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderMap;
use llmops_core::{Error, ErrorKind};

pub use errors::RateLimits;

/// The default connect timeout of the shared client.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection-pooled HTTP client shared by providers.
///
/// Each thread that sends requests through it gets a pool of its own (a `reqwest::Client`
/// created on first use; all share the settings). A pooled connection is driven by a task
/// spawned where the connection was opened, so with one pool per thread a request and its
/// upstream connection stay on the same thread: on the gateway's single-threaded runtime per
/// core ([`serve_app_per_core`](crate::http::serve_app_per_core)) no request wakes another
/// thread to reach its upstream. The price is up to one set of idle connections per thread.
///
/// Cloning is cheap and shares the pools. Providers with the same connect timeout share one
/// transport ([`HttpTransport::shared`]); reqwest sets the connect timeout per client, so a
/// provider with its own connect timeout gets pools of its own.
#[derive(Clone, Debug)]
pub struct HttpTransport {
    pools: Arc<Pools>,
}

#[derive(Debug)]
struct Pools {
    connect_timeout: Duration,
    /// The client built (and so validated) by the constructor; also the fallback should a
    /// later thread's client fail to build.
    first: reqwest::Client,
    per_thread: thread_local::ThreadLocal<reqwest::Client>,
}

fn build_client(connect_timeout: Duration) -> Result<reqwest::Client, Error> {
    // TCP_NODELAY: a request is one small write; with Nagle's algorithm a write that
    // follows an unacknowledged one would wait for the upstream's delayed ACK.
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| Error::internal(format!("cannot build the HTTP client: {e}")))
}

impl HttpTransport {
    /// New pools with `connect_timeout`.
    ///
    /// # Errors
    ///
    /// The HTTP client cannot be built (its TLS configuration fails to load).
    pub fn new(connect_timeout: Duration) -> Result<Self, Error> {
        let first = build_client(connect_timeout)?;
        let per_thread = thread_local::ThreadLocal::new();
        per_thread.get_or(|| first.clone());
        Ok(Self {
            pools: Arc::new(Pools {
                connect_timeout,
                first,
                per_thread,
            }),
        })
    }

    /// The process-wide transport for `connect_timeout` (one per distinct timeout).
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn shared(connect_timeout: Duration) -> Result<Self, Error> {
        static POOLS: Mutex<Option<HashMap<Duration, HttpTransport>>> = Mutex::new(None);
        let mut pools = POOLS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let map = pools.get_or_insert_with(HashMap::new);
        if let Some(t) = map.get(&connect_timeout) {
            return Ok(t.clone());
        }
        let t = Self::new(connect_timeout)?;
        map.insert(connect_timeout, t.clone());
        Ok(t)
    }

    /// The calling thread's client (created on the thread's first call).
    pub fn client(&self) -> &reqwest::Client {
        let p = &*self.pools;
        match p.per_thread.get_or_try(|| build_client(p.connect_timeout)) {
            Ok(client) => client,
            Err(e) => {
                tracing::warn!(error = %e, "using the shared HTTP client instead of a per-thread one");
                &p.first
            }
        }
    }
}

/// Settings shared by the HTTP providers.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HttpProviderConfig {
    /// The provider's name (the `<provider>` of targets, and of `x-llmops-provider`).
    pub name: String,
    /// The base URL (`https://api.openai.com/v1`, `http://vllm:8000/v1`,
    /// `https://api.anthropic.com`).
    pub base_url: String,
    /// The API key, if the upstream needs one.
    pub api_key: Option<String>,
    /// Extra headers sent with every request (e.g. `OpenAI-Organization`, `api-key` for
    /// Azure, `anthropic-beta`).
    pub headers: HeaderMap,
    /// Limit on one non-streamed call, and on a streamed call until its response headers.
    pub timeout: Option<Duration>,
    /// The data-residency region, kept for routing policies.
    pub region: Option<String>,
}

impl HttpProviderConfig {
    /// A configuration with a name and base URL and nothing else.
    pub fn new(name: impl Into<String>, base_url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            base_url: base_url.into(),
            api_key: None,
            headers: HeaderMap::new(),
            timeout: None,
            region: None,
        }
    }

    /// Sets the API key (builder style).
    #[must_use]
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Adds a header sent with every request (builder style). Invalid names or values are
    /// rejected.
    pub fn with_header(mut self, name: &str, value: &str) -> Result<Self, Error> {
        let n = http::HeaderName::try_from(name)
            .map_err(|_| Error::invalid_request(format!("invalid header name `{name}`"), None))?;
        let v = http::HeaderValue::try_from(value).map_err(|_| {
            Error::invalid_request(format!("invalid value for header `{name}`"), None)
        })?;
        self.headers.insert(n, v);
        Ok(self)
    }

    /// Sets the per-call timeout (builder style).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub(crate) fn trimmed_base(&self) -> &str {
        self.base_url.trim_end_matches('/')
    }
}

/// Sends `req`, applying the provider's header timeout, and classifies transport failures.
pub(crate) async fn send(
    provider: &str,
    req: reqwest::RequestBuilder,
    timeout: Option<Duration>,
) -> Result<reqwest::Response, Error> {
    let fut = req.send();
    let res = match timeout {
        Some(t) => match tokio::time::timeout(t, fut).await {
            Ok(r) => r,
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("no response headers within {} ms", t.as_millis()),
                )
                .with_provider(provider));
            }
        },
        None => fut.await,
    };
    res.map_err(|e| transport_error(provider, &e))
}

/// Classifies a reqwest error that happened before a response arrived.
pub(crate) fn transport_error(provider: &str, e: &reqwest::Error) -> Error {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Connect
    };
    let what = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "connection failed before a response"
    };
    Error::new(kind, format!("{what}: {}", error_chain(e))).with_provider(provider)
}

/// An error and its sources, joined (reqwest's top-level message alone says little).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

/// Reads an error response's body (at most 64 KiB) and hands it to `classify`.
pub(crate) async fn read_error(
    provider: &str,
    resp: reqwest::Response,
    classify: fn(&str, u16, &HeaderMap, &[u8]) -> Error,
) -> Error {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = match tokio::time::timeout(Duration::from_secs(10), resp.bytes()).await {
        Ok(Ok(b)) => b,
        _ => bytes::Bytes::new(),
    };
    let body = &body[..body.len().min(64 * 1024)];
    classify(provider, status, &headers, body)
}

/// Reads a successful response's JSON body into `T`, classifying failures.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    provider: &str,
    resp: reqwest::Response,
) -> Result<T, Error> {
    let bytes = resp.bytes().await.map_err(|e| {
        Error::new(
            ErrorKind::Connect,
            format!("response body failed: {}", error_chain(&e)),
        )
        .with_provider(provider)
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::new(
            ErrorKind::Decode,
            format!("upstream answered malformed JSON: {e}"),
        )
        .with_provider(provider)
    })
}

/// The last rate-limit state a provider saw, shared with routers.
#[derive(Debug, Default)]
pub(crate) struct RateLimitCell(Mutex<Option<Arc<RateLimits>>>);

impl RateLimitCell {
    pub(crate) fn set(&self, r: RateLimits) {
        if !r.is_empty() {
            *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(r));
        }
    }
    pub(crate) fn get(&self) -> Option<Arc<RateLimits>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}
