//! Resilience and routing layers: plain tower services over [`LlmRequest`], composable in
//! any library pipeline, and what [`crate::gateway`] builds per logical model.
//!
//! | module | what it does |
//! |---|---|
//! | [`timeout`] | per-attempt time to first token, idle gap between chunks, non-streamed attempt limit; a whole-request deadline |
//! | [`retry`] | retries of retryable errors with full-jitter exponential backoff, `Retry-After` honoured, a retry budget |
//! | [`fallback`] | an ordered chain of targets: a failure another target may fix moves on |
//! | [`balance`] | weighted random, least-outstanding, power-of-two-choices on peak-EWMA latency, vLLM load signals |
//! | [`circuit`] | per-target breaker: error ratio or consecutive failures, cool-down, half-open probe, 429 cool-downs |
//! | [`concurrency`] | per-target concurrency limit, held for a stream's whole life |
//! | [`canary`] | a share of traffic to a candidate target, falling back to the current one |
//! | [`shadow`] | a share of traffic copied to a candidate, answers recorded through a [`shadow::ShadowSink`] |
//! | [`batch`] | embedding micro-batching: concurrent small requests merged into one upstream call |
//!
//! # Streams commit on the first content delta
//!
//! A streamed attempt counts as answered only once its first *content* delta arrived (role
//! chunks and other preamble are buffered, see [`commit_stream`]). An error before that is an
//! ordinary `Err` of the call, so retries and fallbacks handle streams exactly like
//! non-streamed calls; after it, the caller owns the stream and an upstream failure ends it
//! with a [`StreamInterrupted { after_first_event: true }`](llmops_core::ErrorKind) error —
//! never a silently truncated answer.
//!
//! # Every attempt is visible
//!
//! The first routing layer a request meets puts an [`AttemptLog`] into its context; every
//! upstream attempt is recorded there once (by the layer closest to the upstream that makes
//! attempts) and emitted as a `tracing` event (target `llmops_serve::attempt`). A call an
//! open circuit refused never reached the upstream and is not an attempt. Successful
//! responses carry the count in [`ResponseMeta::attempts`](llmops_core::ResponseMeta) and the
//! answering target in `ResponseMeta::provider`, which the HTTP edge turns into the
//! `x-llmops-attempts` and `x-llmops-provider` headers.

pub mod balance;
pub mod batch;
pub mod canary;
pub mod circuit;
pub mod concurrency;
pub mod fallback;
pub mod retry;
pub mod shadow;
pub mod timeout;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use llmops_core::{
    ChatChunk, ChatStream, Error, ErrorKind, LlmRequest, LlmResponse, RequestContext, ResponseBody,
};
use tokio::time::Instant;

/// One upstream attempt of a request.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AttemptRecord {
    /// The target (provider) tried, when known.
    pub target: Option<Arc<str>>,
    /// `None` on success, else the error's kind.
    pub error: Option<ErrorKind>,
    /// How long the attempt took (to the committed first content, for streams).
    pub elapsed: Duration,
}

/// The attempts of one request, shared by the routing layers through the request context's
/// extensions. Cloning shares the log.
#[derive(Clone, Debug, Default)]
pub struct AttemptLog(Arc<Mutex<Vec<AttemptRecord>>>);

impl AttemptLog {
    /// The request's log, inserted if the context has none.
    pub fn of(ctx: &mut RequestContext) -> Self {
        if let Some(log) = ctx.extensions.get::<AttemptLog>() {
            return log.clone();
        }
        let log = Self::default();
        ctx.extensions.insert(log.clone());
        log
    }

    /// How many attempts were made.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no attempt was made yet.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The attempts so far.
    pub fn records(&self) -> Vec<AttemptRecord> {
        self.lock().clone()
    }

    /// Whether `target` was already tried for this request.
    pub fn tried(&self, target: &str) -> bool {
        self.lock()
            .iter()
            .any(|r| r.target.as_deref() == Some(target))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<AttemptRecord>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, ctx: &AttemptContext, record: AttemptRecord) {
        let n = {
            let mut g = self.lock();
            g.push(record.clone());
            g.len()
        };
        let target = record.target.as_deref().unwrap_or("unknown");
        match record.error {
            None => tracing::info!(
                target: "llmops_serve::attempt",
                request_id = %ctx.request_id,
                attempt = n,
                upstream = %target,
                elapsed_ms = record.elapsed.as_millis() as u64,
                "attempt answered"
            ),
            Some(kind) => tracing::warn!(
                target: "llmops_serve::attempt",
                request_id = %ctx.request_id,
                attempt = n,
                upstream = %target,
                error = %kind,
                elapsed_ms = record.elapsed.as_millis() as u64,
                "attempt failed"
            ),
        }
    }
}

/// Runs one inner call on behalf of a routing layer: commits streams on their first content
/// delta, records the attempt in the log unless a layer below already did, and stamps
/// `meta.attempts` with the log's count.
/// What [`attempt`] needs of the request's context: cheap to copy, so a router can move the
/// request itself into its last attempt instead of cloning it.
#[derive(Clone, Debug)]
pub(crate) struct AttemptContext {
    request_id: Arc<str>,
    deadline: Option<Instant>,
}

impl AttemptContext {
    pub(crate) fn of(ctx: &RequestContext) -> Self {
        Self {
            request_id: ctx.request_id.clone(),
            deadline: ctx.deadline,
        }
    }

    pub(crate) fn request_id(&self) -> &str {
        &self.request_id
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

pub(crate) async fn attempt<F>(
    log: &AttemptLog,
    ctx: &AttemptContext,
    target_name: Option<&Arc<str>>,
    call: F,
) -> Result<LlmResponse, Error>
where
    F: Future<Output = Result<LlmResponse, Error>>,
{
    let before = log.len();
    let start = Instant::now();
    let result = match call.await {
        Ok(resp) => commit_stream(resp, ctx.deadline).await,
        Err(e) => Err(e),
    };
    let rejected = matches!(&result, Err(e) if circuit::is_circuit_rejection(e));
    if log.len() == before && !rejected {
        let (target, error) = match &result {
            Ok(r) => (r.meta.provider.clone(), None),
            Err(e) => (e.provider().map(Arc::from), Some(e.kind())),
        };
        // The router's name for the target wins: errors may name the provider differently.
        let target = target_name.cloned().or(target);
        log.push(
            ctx,
            AttemptRecord {
                target,
                error,
                elapsed: start.elapsed(),
            },
        );
    }
    result.map(|mut r| {
        r.meta.attempts = u32::try_from(log.len()).unwrap_or(u32::MAX);
        r
    })
}

/// Marker in [`ResponseMeta::extensions`](llmops_core::ResponseMeta) of a stream that has
/// already been committed (its first content delta arrived).
#[derive(Clone, Copy, Debug)]
pub struct StreamCommitted;

/// Waits for a streamed response's first content delta (buffering the preamble), so an
/// error before any content is returned as `Err`, retryable like any failed call. A stream
/// that ends without content is complete and returned as is. Non-streamed responses and
/// streams already committed pass through. `deadline` bounds the wait.
pub async fn commit_stream(
    mut resp: LlmResponse,
    deadline: Option<Instant>,
) -> Result<LlmResponse, Error> {
    if resp.meta.extensions.get::<StreamCommitted>().is_some() {
        return Ok(resp);
    }
    let ResponseBody::ChatStream(stream) = resp.body else {
        return Ok(resp);
    };
    let provider = resp.meta.provider.clone();
    let peeked = match deadline {
        Some(d) => match tokio::time::timeout_at(d, first_content(stream)).await {
            Ok(r) => r,
            Err(_) => {
                let err = Error::new(
                    ErrorKind::Timeout,
                    "no content from upstream before the request's deadline",
                );
                return Err(match provider {
                    Some(p) => err.with_provider(p.as_ref()),
                    None => err,
                });
            }
        },
        None => first_content(stream).await,
    };
    resp.body = ResponseBody::ChatStream(peeked?);
    resp.meta.extensions.insert(StreamCommitted);
    Ok(resp)
}

/// Polls `stream` until its first content chunk; returns a stream replaying the buffered
/// chunks and then the rest. Errors before content come back as `Err`; errors after it are
/// marked `StreamInterrupted { after_first_event: true }`.
pub(crate) async fn first_content(mut stream: ChatStream) -> Result<ChatStream, Error> {
    let mut buffered: VecDeque<ChatChunk> = VecDeque::new();
    loop {
        match stream.next().await {
            Some(Ok(chunk)) => {
                let content = chunk.has_content();
                buffered.push_back(chunk);
                if content {
                    break;
                }
            }
            Some(Err(e)) => {
                return Err(match e.kind() {
                    ErrorKind::StreamInterrupted {
                        after_first_event: true,
                    } => e.with_kind(ErrorKind::StreamInterrupted {
                        after_first_event: false,
                    }),
                    _ => e,
                });
            }
            None => {
                return Ok(Box::pin(futures_util::stream::iter(
                    buffered.into_iter().map(Ok),
                )));
            }
        }
    }
    let rest = stream.map(|item| {
        item.map_err(|e| {
            if e.allows_fallback() {
                e.with_kind(ErrorKind::StreamInterrupted {
                    after_first_event: true,
                })
            } else {
                e
            }
        })
    });
    Ok(Box::pin(
        futures_util::stream::iter(buffered.into_iter().map(Ok)).chain(rest),
    ))
}

/// The request's deadline, if any, as a wait limit for backoffs.
pub(crate) fn time_left(req: &LlmRequest) -> Option<Duration> {
    req.ctx
        .deadline
        .map(|d| d.saturating_duration_since(Instant::now()))
}
