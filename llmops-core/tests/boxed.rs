//! `BoxLlmService`: clones share the wrapped service, and readiness is driven per call.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use llmops_core::mock::{MockProvider, MockReply};
use llmops_core::service::BoxFuture;
use llmops_core::{
    BoxLlmService, ChatRequest, Error, ErrorKind, LlmRequest, LlmResponse, Message,
    ProviderService, RequestContext,
};
use tower::{Service, ServiceExt};

fn request() -> LlmRequest {
    LlmRequest::chat(
        RequestContext::new(),
        ChatRequest::new("m", vec![Message::user("hi")]),
    )
}

/// A service that is not ready for its first `pending` polls (waking itself each time), then
/// ready or failing; it counts the calls it gets and the clones made of it.
#[derive(Clone)]
struct Gate {
    polls: usize,
    pending: usize,
    fail_ready: bool,
    calls: Arc<AtomicUsize>,
    inner: ProviderService,
}

impl Service<LlmRequest> for Gate {
    type Response = LlmResponse;
    type Error = Error;
    type Future = BoxFuture<Result<LlmResponse, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.polls < self.pending {
            self.polls += 1;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if self.fail_ready {
            return Poll::Ready(Err(Error::new(ErrorKind::Overloaded, "closed")));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: LlmRequest) -> Self::Future {
        assert!(self.polls >= self.pending, "called before it was ready");
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.call(req)
    }
}

fn gate(pending: usize, fail_ready: bool) -> (Gate, Arc<AtomicUsize>, MockProvider) {
    let mock = MockProvider::new("m").default_reply(MockReply::text("ok"));
    let calls = Arc::new(AtomicUsize::new(0));
    let g = Gate {
        polls: 0,
        pending,
        fail_ready,
        calls: calls.clone(),
        inner: ProviderService::new(Arc::new(mock.clone())),
    };
    (g, calls, mock)
}

#[tokio::test]
async fn a_ready_service_is_called_through_every_clone() {
    let (g, calls, _) = gate(0, false);
    let svc = BoxLlmService::new(g);
    for _ in 0..3 {
        let resp = svc.clone().oneshot(request()).await.unwrap();
        assert_eq!(resp.into_chat().unwrap().first_text(), "ok");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn readiness_is_awaited_inside_the_call() {
    let (g, calls, _) = gate(3, false);
    let mut svc = BoxLlmService::new(g);
    // The boxed service is ready at once; the wrapped one is polled until ready in the future.
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    let fut = svc.call(request());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "not called before it is ready"
    );
    let resp = fut.await.unwrap();
    assert_eq!(resp.into_chat().unwrap().first_text(), "ok");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_readiness_error_is_the_call_error() {
    let (g, calls, mock) = gate(0, true);
    let err = BoxLlmService::new(g).oneshot(request()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Overloaded);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(mock.calls().len(), 0);
}
