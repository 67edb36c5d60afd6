//! [`AuditLayer`]: one audit record per request a pipeline serves, fails or refuses.
//!
//! Put it outside the guardrail and cost layers, so their refusals (budget, ceiling,
//! prompt injection) are recorded too. A complete answer is returned only after its record
//! is appended — as durably as the sink's mode promises (`batched`: after the batch holding it
//! is on disk). A streamed answer is recorded when the stream ends, fails or is dropped by the
//! client, with the text that was streamed; the client already has its bytes then, so a stream's
//! record is appended in the background.
//!
//! When a complete answer's record cannot be appended, the request fails with the sink's
//! error: the gateway never hands out an answer it could not audit.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use llmops_core::service::BoxFuture;
use llmops_core::stream::{ObservedStream, StreamOutcome};
use llmops_core::{
    Attempt, AuditEvent, AuditSink, Error, GuardrailDecision, LlmRequest, LlmResponse,
    RequestAudit, RequestBody, ResponseBody, ResponseCost, ResponseMeta,
};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::layer::GuardrailNotes;

/// Records every request in an [`AuditSink`]. See the [module docs](self).
#[derive(Clone)]
pub struct AuditLayer {
    sink: Arc<dyn AuditSink>,
}

impl fmt::Debug for AuditLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditLayer")
    }
}

impl AuditLayer {
    /// A layer appending to `sink`.
    pub fn new(sink: Arc<dyn AuditSink>) -> Self {
        Self { sink }
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = AuditService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuditService {
            inner,
            sink: self.sink.clone(),
        }
    }
}

/// The service of [`AuditLayer`].
#[derive(Clone)]
pub struct AuditService<S> {
    inner: S,
    sink: Arc<dyn AuditSink>,
}

impl<S> fmt::Debug for AuditService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditService")
    }
}

fn guardrails(notes: Option<&GuardrailNotes>) -> Vec<GuardrailDecision> {
    notes
        .map(|n| {
            n.0.iter()
                .map(|g| GuardrailDecision::new(g.guardrail, g.action.clone(), g.detail.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn fill_from_meta(rec: &mut RequestAudit, meta: &ResponseMeta, model: &str) {
    rec.cache_hit = meta.cache_hit;
    if let Some(p) = &meta.provider {
        rec.attempts.push(Attempt::new(p.to_string(), model, None));
    }
    if let Some(c) = meta.extensions.get::<ResponseCost>() {
        rec.cost_usd = Some(c.usd.as_f64());
    }
    let notes = guardrails(meta.extensions.get::<GuardrailNotes>());
    if !notes.is_empty() {
        rec.guardrails = notes;
    }
}

async fn append(sink: &dyn AuditSink, rec: RequestAudit) -> Result<(), Error> {
    sink.append(AuditEvent::Request(Box::new(rec)))
        .await
        .map(|_| ())
}

impl<S> Service<LlmRequest> for AuditService<S>
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
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let sink = self.sink.clone();
        Box::pin(async move {
            let start = Instant::now();
            let ctx = &req.ctx;
            let mut rec =
                RequestAudit::new(ctx.request_id.clone(), ctx.tenant.clone(), req.model());
            rec.api_key_id.clone_from(&ctx.api_key_id);
            rec.user.clone_from(&ctx.user);
            rec.prompt.clone_from(&ctx.prompt);
            if let RequestBody::Chat(r) = &req.body {
                rec.request = Some(Arc::new(r.clone()));
            }
            let model = req.model().to_owned();
            match inner.call(req).await {
                Err(e) => {
                    rec.error = Some(e.kind());
                    rec.latency = start.elapsed();
                    if let Err(audit_err) = append(sink.as_ref(), rec).await {
                        tracing::error!(error = %audit_err, "audit append failed");
                        return Err(audit_err);
                    }
                    Err(e)
                }
                Ok(mut resp) => {
                    fill_from_meta(&mut rec, &resp.meta, &model);
                    resp.body = match resp.body {
                        ResponseBody::Chat(r) => {
                            rec.output = Some(r.first_text());
                            rec.usage.clone_from(&r.usage);
                            rec.latency = start.elapsed();
                            append(sink.as_ref(), rec).await?;
                            ResponseBody::Chat(r)
                        }
                        ResponseBody::Embeddings(r) => {
                            rec.usage.clone_from(&r.usage);
                            rec.latency = start.elapsed();
                            append(sink.as_ref(), rec).await?;
                            ResponseBody::Embeddings(r)
                        }
                        ResponseBody::ChatStream(s) => {
                            let on_end = move |sum: llmops_core::stream::StreamSummary| {
                                rec.usage = sum.usage.clone();
                                rec.output = sum.response.as_ref().map(|r| r.first_text());
                                rec.latency = sum.ended_at.duration_since(start);
                                match &sum.outcome {
                                    StreamOutcome::Failed(e) => rec.error = Some(e.kind()),
                                    StreamOutcome::Dropped => {
                                        rec.error = Some(llmops_core::ErrorKind::Cancelled);
                                    }
                                    _ => {}
                                }
                                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                                    rt.spawn(async move {
                                        if let Err(e) = append(sink.as_ref(), rec).await {
                                            tracing::error!(error = %e, "audit append of a stream failed");
                                        }
                                    });
                                }
                            };
                            ResponseBody::ChatStream(ObservedStream::collecting(s, on_end).boxed())
                        }
                        other => other,
                    };
                    Ok(resp)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use llmops_core::mock::{MockProvider, MockReply};
    use llmops_core::{
        AuditReceipt, BoxLlmService, ChatRequest, ErrorKind, Message, ProviderService,
        RequestContext, StreamOptions,
    };
    use tower::ServiceExt;

    use super::*;

    #[derive(Default)]
    struct Memory(Mutex<Vec<AuditEvent>>);

    #[async_trait]
    impl AuditSink for Memory {
        async fn append(&self, event: AuditEvent) -> llmops_core::Result<AuditReceipt> {
            let mut v = self.0.lock().unwrap();
            v.push(event);
            Ok(AuditReceipt::new(v.len() as u64, "h"))
        }
        async fn flush(&self) -> llmops_core::Result<()> {
            Ok(())
        }
    }

    fn records(m: &Memory) -> Vec<RequestAudit> {
        m.0.lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                AuditEvent::Request(r) => Some((**r).clone()),
                _ => None,
            })
            .collect()
    }

    fn pipeline(mock: &MockProvider, sink: Arc<Memory>) -> BoxLlmService {
        BoxLlmService::new(
            AuditLayer::new(sink).layer(ProviderService::new(Arc::new(mock.clone()))),
        )
    }

    #[tokio::test]
    async fn records_answers_errors_and_streams() {
        let mock = MockProvider::new("m")
            .reply(MockReply::text("Paris"))
            .reply(MockReply::error(ErrorKind::QuotaExhausted))
            .reply(MockReply::chunks(["Ber", "lin"]));
        let sink = Arc::new(Memory::default());
        let svc = pipeline(&mock, sink.clone());
        let ctx = RequestContext::new()
            .with_tenant("team-a")
            .with_user("alice");
        let req = ChatRequest::new("m", vec![Message::user("Capital?")]);

        svc.clone()
            .oneshot(LlmRequest::chat(ctx.clone(), req.clone()))
            .await
            .unwrap();
        assert!(
            svc.clone()
                .oneshot(LlmRequest::chat(ctx.clone(), req.clone()))
                .await
                .is_err()
        );
        let mut streamed = req.with_stream(true);
        streamed.stream_options = Some(StreamOptions::include_usage(true));
        let s = svc
            .oneshot(LlmRequest::chat(ctx, streamed))
            .await
            .unwrap()
            .into_stream()
            .unwrap();
        llmops_core::stream::collect_stream(s).await.unwrap();
        for _ in 0..100 {
            if records(&sink).len() == 3 {
                break;
            }
            tokio::task::yield_now().await;
        }
        let r = records(&sink);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].output.as_deref(), Some("Paris"));
        assert_eq!(&*r[0].tenant, "team-a");
        assert_eq!(r[0].user.as_deref(), Some("alice"));
        assert_eq!(r[0].attempts[0].provider, "m");
        assert_eq!(r[1].error, Some(ErrorKind::QuotaExhausted));
        assert_eq!(r[2].output.as_deref(), Some("Berlin"));
        assert!(r[2].usage.is_some());
    }
}
