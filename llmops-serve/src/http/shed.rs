//! Load shedding at the edge: a global bound on the model requests in flight.
//!
//! A request is admitted before anything else is done with it (no body read, no
//! authentication, no pipeline) and holds its slot until its response body has been sent to
//! the end or dropped — a stream until its last event or until the client goes away. Over the
//! limit, the edge answers at once with HTTP 503 `overloaded` and `Retry-After`, so overload
//! costs the excess requests a fast refusal instead of costing every request latency and the
//! process its memory.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use llmops_core::{Error, ErrorKind};

use crate::gateway::Gateway;

/// What a shed request is told to wait before trying again.
pub const SHED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The edge's admission counter: requests in flight against `[server] max_in_flight`, and
/// how many were refused. Shared by every clone of a [`Gateway`].
#[derive(Debug)]
pub struct Admission {
    max: usize,
    in_flight: AtomicUsize,
    shed: AtomicU64,
}

impl Admission {
    /// A counter admitting at most `max` requests at once (`0`: no limit, only counting).
    pub fn new(max: usize) -> Self {
        Self {
            max,
            in_flight: AtomicUsize::new(0),
            shed: AtomicU64::new(0),
        }
    }

    /// Takes a slot, or counts a shed request and returns `None` when all are taken.
    pub fn try_admit(self: &Arc<Self>) -> Option<InFlight> {
        if self.max == 0 {
            self.in_flight.fetch_add(1, Ordering::Relaxed);
        } else if self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_err()
        {
            self.shed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(InFlight(self.clone()))
    }

    /// The limit (`None`: unlimited).
    pub fn max(&self) -> Option<usize> {
        (self.max > 0).then_some(self.max)
    }

    /// Requests holding a slot now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests refused since the start.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }
}

/// One admitted request's slot, released when dropped.
#[derive(Debug)]
#[must_use = "the slot is released when this is dropped"]
pub struct InFlight(Arc<Admission>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The 503 a shed request gets.
fn overloaded(max: usize) -> Response {
    let err = Error::new(
        ErrorKind::Overloaded,
        format!(
            "the gateway is at its limit of {max} requests in flight; retry after {} s",
            SHED_RETRY_AFTER.as_secs()
        ),
    )
    .with_retry_after(SHED_RETRY_AFTER);
    super::error_response(&err, None)
}

/// Middleware of the model routes: admission, then the route, then the response body
/// carries the slot until it ends.
pub(super) async fn admit(State(gw): State<Gateway>, req: Request, next: Next) -> Response {
    let admission = gw.admission();
    let Some(slot) = admission.try_admit() else {
        return overloaded(admission.max);
    };
    // If the client goes away before the response, this future is dropped with the slot.
    let resp = next.run(req).await;
    resp.map(|inner| {
        Body::new(SlotBody {
            inner,
            slot: Some(slot),
        })
    })
}

/// A response body that holds its request's slot until its last frame or its drop.
struct SlotBody {
    inner: Body,
    slot: Option<InFlight>,
}

impl HttpBody for SlotBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.slot = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
