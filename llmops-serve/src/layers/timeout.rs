//! Timeouts: per attempt ([`TimeoutLayer`]) and per request ([`DeadlineLayer`]).
//!
//! Four limits, each distinct:
//!
//! - **connect** — establishing the TCP/TLS connection; a transport setting of the provider
//!   (`connect_timeout_ms`), see [`crate::providers::HttpTransport`];
//! - **time to first token** ([`Timeouts::ttft`]) — from the start of a streamed attempt to
//!   its first content delta; a stall before headers or before content ends the attempt with
//!   a retryable [`ErrorKind::Timeout`];
//! - **idle** ([`Timeouts::idle`]) — the longest gap between two chunks once content flows;
//!   the stream then ends with `StreamInterrupted { after_first_event: true }`;
//! - **total** ([`DeadlineLayer`]) — the whole request, retries and fallbacks included. It
//!   shrinks the request context's deadline, which every layer obeys; a context deadline that
//!   is already shorter wins.
//!
//! A non-streamed attempt is bounded by [`Timeouts::attempt`] (when set) and the deadline.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use llmops_core::service::BoxFuture;
use llmops_core::{ChatStream, Error, ErrorKind, LlmRequest, LlmResponse, ResponseBody};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service, ServiceExt};

/// Per-attempt limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeouts {
    /// Time to the first content delta of a streamed attempt.
    pub ttft: Option<Duration>,
    /// Longest gap between chunks after the first content delta.
    pub idle: Option<Duration>,
    /// Limit on one non-streamed attempt.
    pub attempt: Option<Duration>,
}

impl Timeouts {
    /// No limits (only the request's deadline applies).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the time-to-first-token limit (builder style).
    #[must_use]
    pub fn ttft(mut self, d: Duration) -> Self {
        self.ttft = Some(d);
        self
    }

    /// Sets the idle limit between chunks (builder style).
    #[must_use]
    pub fn idle(mut self, d: Duration) -> Self {
        self.idle = Some(d);
        self
    }

    /// Sets the limit of one non-streamed attempt (builder style).
    #[must_use]
    pub fn attempt(mut self, d: Duration) -> Self {
        self.attempt = Some(d);
        self
    }
}

/// Applies [`Timeouts`] to every call of the inner service (one upstream attempt).
#[derive(Clone, Debug)]
pub struct TimeoutLayer {
    timeouts: Timeouts,
    target: Option<Arc<str>>,
}

impl TimeoutLayer {
    /// A layer with these limits.
    pub fn new(timeouts: Timeouts) -> Self {
        Self {
            timeouts,
            target: None,
        }
    }

    /// Names the target in the errors this layer raises (builder style).
    #[must_use]
    pub fn for_target(mut self, target: impl Into<Arc<str>>) -> Self {
        self.target = Some(target.into());
        self
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = TimeoutService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TimeoutService {
            inner,
            timeouts: self.timeouts,
            target: self.target.clone(),
        }
    }
}

/// The service of [`TimeoutLayer`].
#[derive(Clone, Debug)]
pub struct TimeoutService<S> {
    inner: S,
    timeouts: Timeouts,
    target: Option<Arc<str>>,
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn named(err: Error, target: Option<&Arc<str>>) -> Error {
    match target {
        Some(t) if err.provider().is_none() => err.with_provider(t.as_ref()),
        _ => err,
    }
}

impl<S> Service<LlmRequest> for TimeoutService<S>
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
        let t = self.timeouts;
        let target = self.target.clone();
        Box::pin(async move {
            let start = Instant::now();
            let deadline = req.ctx.deadline;
            if req.is_stream() {
                let first_by = earliest(t.ttft.map(|d| start + d), deadline);
                let fut = async {
                    let resp = inner.oneshot(req).await?;
                    super::commit_stream(resp, None).await
                };
                let mut resp = match first_by {
                    Some(at) => match tokio::time::timeout_at(at, fut).await {
                        Ok(r) => r,
                        Err(_) => {
                            let what = if t.ttft.is_some_and(|d| start + d <= at) {
                                format!(
                                    "no first token within {} ms (time-to-first-token limit)",
                                    t.ttft.unwrap_or_default().as_millis()
                                )
                            } else {
                                "no first token before the request's deadline".to_owned()
                            };
                            Err(Error::new(ErrorKind::Timeout, what))
                        }
                    },
                    None => fut.await,
                }
                .map_err(|e| named(e, target.as_ref()))?;
                if (t.idle.is_some() || deadline.is_some())
                    && let ResponseBody::ChatStream(s) = resp.body
                {
                    resp.body = ResponseBody::ChatStream(Box::pin(GuardedStream::new(
                        s, t.idle, deadline, target,
                    )));
                }
                Ok(resp)
            } else {
                let by = earliest(t.attempt.map(|d| start + d), deadline);
                match by {
                    Some(at) => match tokio::time::timeout_at(at, inner.oneshot(req)).await {
                        Ok(r) => r.map_err(|e| named(e, target.as_ref())),
                        Err(_) => Err(named(
                            Error::new(
                                ErrorKind::Timeout,
                                format!(
                                    "no answer within {} ms",
                                    at.duration_since(start).as_millis()
                                ),
                            ),
                            target.as_ref(),
                        )),
                    },
                    None => inner.oneshot(req).await,
                }
            }
        })
    }
}

/// A committed stream with an idle limit between chunks and an overall deadline.
struct GuardedStream {
    inner: ChatStream,
    idle: Option<Duration>,
    deadline: Option<Instant>,
    sleep: Pin<Box<Sleep>>,
    target: Option<Arc<str>>,
    done: bool,
}

impl GuardedStream {
    fn new(
        inner: ChatStream,
        idle: Option<Duration>,
        deadline: Option<Instant>,
        target: Option<Arc<str>>,
    ) -> Self {
        let at = Self::next_limit(idle, deadline);
        Self {
            inner,
            idle,
            deadline,
            sleep: Box::pin(tokio::time::sleep_until(at)),
            target,
            done: false,
        }
    }

    fn next_limit(idle: Option<Duration>, deadline: Option<Instant>) -> Instant {
        let now = Instant::now();
        earliest(idle.map(|d| now + d), deadline)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
    }
}

impl Stream for GuardedStream {
    type Item = Result<llmops_core::ChatChunk, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(item)) => {
                if item.is_err() {
                    this.done = true;
                } else {
                    let at = Self::next_limit(this.idle, this.deadline);
                    this.sleep.as_mut().reset(at);
                }
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.done = true;
                    let past_deadline = this.deadline.is_some_and(|d| Instant::now() >= d);
                    let msg = if past_deadline {
                        "the request's deadline passed while streaming: the answer is incomplete"
                            .to_owned()
                    } else {
                        format!(
                            "no chunk for {} ms (idle limit): the answer is incomplete",
                            this.idle.unwrap_or_default().as_millis()
                        )
                    };
                    let err = Error::new(
                        ErrorKind::StreamInterrupted {
                            after_first_event: true,
                        },
                        msg,
                    );
                    Poll::Ready(Some(Err(named(err, this.target.as_ref()))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

use std::future::Future as _;

/// Shrinks every request's deadline to `total` from its start (the context's own deadline
/// wins when shorter). Put it outermost in a model's stack.
#[derive(Clone, Copy, Debug)]
pub struct DeadlineLayer {
    total: Duration,
}

impl DeadlineLayer {
    /// A layer limiting whole requests to `total`.
    pub fn new(total: Duration) -> Self {
        Self { total }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            total: self.total,
        }
    }
}

/// The service of [`DeadlineLayer`].
#[derive(Clone, Debug)]
pub struct DeadlineService<S> {
    inner: S,
    total: Duration,
}

impl<S> Service<LlmRequest> for DeadlineService<S>
where
    S: Service<LlmRequest, Response = LlmResponse, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = LlmResponse;
    type Error = Error;
    type Future = BoxFuture<Result<LlmResponse, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: LlmRequest) -> Self::Future {
        req.ctx.shrink_deadline(Instant::now() + self.total);
        let deadline = req.ctx.deadline;
        let fut = self.inner.call(req);
        Box::pin(async move {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, fut).await.unwrap_or_else(|_| {
                    Err(Error::new(
                        ErrorKind::Timeout,
                        "the request's deadline passed",
                    ))
                }),
                None => fut.await,
            }
        })
    }
}
