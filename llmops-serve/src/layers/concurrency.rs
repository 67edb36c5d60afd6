//! Per-target concurrency limits, held for a stream's whole life.
//!
//! A call takes a permit before it starts; for a non-streamed answer the permit is released
//! with the answer, for a stream only when the stream ends, fails or is dropped — a streaming
//! request occupies the upstream until its last token, not until its headers. A call that
//! finds no permit waits, up to the request's deadline (then fails with a retryable
//! [`ErrorKind::Overloaded`] so a fallback can take it).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use llmops_core::service::BoxFuture;
use llmops_core::{ChatChunk, ChatStream, Error, ErrorKind, LlmRequest, LlmResponse, ResponseBody};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service, ServiceExt};

/// Limits the inner service (one target) to `max` concurrent calls.
#[derive(Clone, Debug)]
pub struct ConcurrencyLimitLayer {
    semaphore: Arc<Semaphore>,
    max: usize,
    target: Option<Arc<str>>,
}

impl ConcurrencyLimitLayer {
    /// At most `max` calls (and streams) at once.
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            semaphore: Arc::new(Semaphore::new(max)),
            max,
            target: None,
        }
    }

    /// Names the target in the errors this layer raises (builder style).
    #[must_use]
    pub fn for_target(mut self, target: impl Into<Arc<str>>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// Calls (or streams) in flight now.
    pub fn in_flight(&self) -> usize {
        self.max - self.semaphore.available_permits()
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit {
            inner,
            semaphore: self.semaphore.clone(),
            max: self.max,
            target: self.target.clone(),
        }
    }
}

/// The service of [`ConcurrencyLimitLayer`].
#[derive(Clone, Debug)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    semaphore: Arc<Semaphore>,
    max: usize,
    target: Option<Arc<str>>,
}

impl<S> Service<LlmRequest> for ConcurrencyLimit<S>
where
    S: Service<LlmRequest, Response = LlmResponse, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = LlmResponse;
    type Error = Error;
    type Future = BoxFuture<Result<LlmResponse, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: LlmRequest) -> Self::Future {
        let inner = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, inner);
        let sem = self.semaphore.clone();
        let max = self.max;
        let target = self.target.clone();
        Box::pin(async move {
            let acquire = sem.acquire_owned();
            let permit = match req.ctx.deadline {
                Some(d) => tokio::time::timeout_at(d, acquire).await.ok(),
                None => Some(acquire.await),
            };
            let Some(Ok(permit)) = permit else {
                let err = Error::new(
                    ErrorKind::Overloaded,
                    format!("the target is at its concurrency limit of {max} until the request's deadline"),
                )
                .with_code("concurrency_limit");
                return Err(match target {
                    Some(t) => err.with_provider(t.as_ref()),
                    None => err,
                });
            };
            let mut resp = inner.oneshot(req).await?;
            if let ResponseBody::ChatStream(s) = resp.body {
                resp.body = ResponseBody::ChatStream(Box::pin(PermitStream {
                    inner: s,
                    permit: Some(permit),
                }));
            }
            Ok(resp)
        })
    }
}

/// A stream holding a permit until it ends, fails or is dropped.
struct PermitStream {
    inner: ChatStream,
    permit: Option<OwnedSemaphorePermit>,
}

impl Stream for PermitStream {
    type Item = Result<ChatChunk, Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = self.inner.as_mut().poll_next(cx);
        if matches!(item, Poll::Ready(None | Some(Err(_)))) {
            self.permit = None;
        }
        item
    }
}
