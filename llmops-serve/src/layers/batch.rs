//! Embedding micro-batching.
//!
//! Many callers embedding one or two texts each waste round trips; embedding servers are
//! much faster per text in batches. [`EmbeddingBatchLayer`] holds text embedding requests for
//! at most `max_wait`, merges those for the same model and options into one upstream call of
//! at most `max_batch` inputs, and gives each caller its own vectors back (indices renumbered
//! from 0) with its share of the usage (prompt tokens split in proportion to text length).
//! A failed batch fails each of its callers with the same error. Chat requests and
//! pre-tokenized inputs pass through unbatched.
//!
//! The batched call carries a fresh context whose deadline is the earliest of the callers',
//! so it sits below per-tenant layers (budgets, caches): put the layer directly around the
//! target.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use llmops_core::service::BoxFuture;
use llmops_core::{
    BoxLlmService, EmbeddingInput, EmbeddingRequest, EmbeddingResponse, Error, LlmRequest,
    LlmResponse, RequestBody, RequestContext, ResponseBody, ResponseMeta, Usage,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

/// Batch limits.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct BatchConfig {
    /// Most inputs in one upstream call.
    pub max_batch: usize,
    /// Longest a request waits for others.
    pub max_wait: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch: 64,
            max_wait: Duration::from_millis(5),
        }
    }
}

impl BatchConfig {
    /// Limits of `max_batch` inputs and `max_wait`.
    pub fn new(max_batch: usize, max_wait: Duration) -> Self {
        Self {
            max_batch: max_batch.max(1),
            max_wait,
        }
    }
}

struct Job {
    ctx: RequestContext,
    req: EmbeddingRequest,
    texts: Vec<String>,
    reply: oneshot::Sender<Result<(EmbeddingResponse, ResponseMeta), Error>>,
}

/// Merges concurrent embedding requests into batches.
#[derive(Clone)]
pub struct EmbeddingBatchLayer {
    cfg: BatchConfig,
}

impl std::fmt::Debug for EmbeddingBatchLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingBatchLayer")
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl EmbeddingBatchLayer {
    /// A layer with these limits.
    pub fn new(cfg: BatchConfig) -> Self {
        Self { cfg }
    }
}

impl<S> Layer<S> for EmbeddingBatchLayer
where
    S: Service<LlmRequest, Response = LlmResponse, Error = Error> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    type Service = EmbeddingBatcher;
    fn layer(&self, inner: S) -> Self::Service {
        EmbeddingBatcher {
            inner: BoxLlmService::new(inner),
            cfg: self.cfg,
            tx: Arc::new(OnceLock::new()),
        }
    }
}

/// The service of [`EmbeddingBatchLayer`]. Its batching task starts on the first embedding
/// request (inside the caller's runtime) and stops when the last clone is dropped.
#[derive(Clone)]
pub struct EmbeddingBatcher {
    inner: BoxLlmService,
    cfg: BatchConfig,
    tx: Arc<OnceLock<mpsc::UnboundedSender<Job>>>,
}

impl std::fmt::Debug for EmbeddingBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingBatcher")
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl EmbeddingBatcher {
    fn sender(&self) -> &mpsc::UnboundedSender<Job> {
        self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run(rx, self.inner.clone(), self.cfg));
            tx
        })
    }
}

impl Service<LlmRequest> for EmbeddingBatcher {
    type Response = LlmResponse;
    type Error = Error;
    type Future = BoxFuture<Result<LlmResponse, Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: LlmRequest) -> Self::Future {
        let texts = match &req.body {
            RequestBody::Embeddings(e) => match &e.input {
                EmbeddingInput::One(s) => Some(vec![s.clone()]),
                EmbeddingInput::Many(v) if v.len() < self.cfg.max_batch => Some(v.clone()),
                _ => None,
            },
            _ => None,
        };
        let (Some(texts), RequestBody::Embeddings(e)) = (texts, &req.body) else {
            return Box::pin(self.inner.clone().oneshot(req));
        };
        let (reply, rx) = oneshot::channel();
        let job = Job {
            ctx: req.ctx.clone(),
            req: e.clone(),
            texts,
            reply,
        };
        let sent = self.sender().send(job);
        Box::pin(async move {
            if sent.is_err() {
                return Err(Error::internal("the embedding batcher stopped"));
            }
            let (resp, meta) = rx
                .await
                .map_err(|_| Error::internal("the embedding batch was dropped"))??;
            let mut out = LlmResponse::new(ResponseBody::Embeddings(resp));
            out.meta = meta;
            Ok(out)
        })
    }
}

/// Jobs batch together when they share model and options.
fn key(r: &EmbeddingRequest) -> String {
    format!(
        "{}\u{0}{:?}\u{0}{:?}",
        r.model, r.encoding_format, r.dimensions
    )
}

async fn run(mut rx: mpsc::UnboundedReceiver<Job>, inner: BoxLlmService, cfg: BatchConfig) {
    while let Some(first) = rx.recv().await {
        let until = Instant::now() + cfg.max_wait;
        let mut groups: HashMap<String, (usize, Vec<Job>)> = HashMap::new();
        let add = |job: Job, groups: &mut HashMap<String, (usize, Vec<Job>)>| -> bool {
            let g = groups.entry(key(&job.req)).or_default();
            g.0 += job.texts.len();
            g.1.push(job);
            g.0 >= cfg.max_batch
        };
        let mut full = add(first, &mut groups);
        while !full {
            tokio::select! {
                job = rx.recv() => match job {
                    Some(j) => full = add(j, &mut groups),
                    None => break,
                },
                () = tokio::time::sleep_until(until) => break,
            }
        }
        for (_, (_, jobs)) in groups {
            for chunk in split(jobs, cfg.max_batch) {
                tokio::spawn(dispatch(inner.clone(), chunk));
            }
        }
    }
}

/// Splits jobs into batches of at most `max` inputs (a job is never split).
fn split(jobs: Vec<Job>, max: usize) -> Vec<Vec<Job>> {
    let mut out: Vec<Vec<Job>> = Vec::new();
    let mut n = 0;
    for job in jobs {
        if out.is_empty() || n + job.texts.len() > max {
            out.push(Vec::new());
            n = 0;
        }
        n += job.texts.len();
        if let Some(last) = out.last_mut() {
            last.push(job);
        }
    }
    out
}

async fn dispatch(inner: BoxLlmService, jobs: Vec<Job>) {
    let Some(first) = jobs.first() else { return };
    let mut req = first.req.clone();
    req.input = EmbeddingInput::Many(jobs.iter().flat_map(|j| j.texts.iter().cloned()).collect());
    req.user = None;
    let mut ctx = RequestContext::new();
    if let Some(d) = jobs.iter().filter_map(|j| j.ctx.deadline).min() {
        ctx.shrink_deadline(d);
    }
    let result = inner.oneshot(LlmRequest::embeddings(ctx, req)).await;
    let (resp, meta) = match result.and_then(|r| {
        let meta = r.meta.clone();
        r.into_embeddings().map(|e| (e, meta))
    }) {
        Ok(x) => x,
        Err(e) => {
            for j in jobs {
                let _ = j.reply.send(Err(e.clone()));
            }
            return;
        }
    };
    let total_inputs: usize = jobs.iter().map(|j| j.texts.len()).sum();
    let mut data = resp.data;
    data.sort_by_key(|d| d.index);
    if data.len() != total_inputs {
        let err = Error::new(
            llmops_core::ErrorKind::Decode,
            format!(
                "the upstream returned {} vectors for {total_inputs} inputs",
                data.len()
            ),
        );
        for j in jobs {
            let _ = j.reply.send(Err(err.clone()));
        }
        return;
    }
    let total_chars: u64 = jobs
        .iter()
        .flat_map(|j| &j.texts)
        .map(|t| t.len() as u64)
        .sum::<u64>()
        .max(1);
    let total_tokens = resp.usage.as_ref().map_or(0, |u| u.input_tokens);
    let mut given = 0u64;
    let n_jobs = jobs.len();
    let mut rest = data.into_iter();
    for (k, j) in jobs.into_iter().enumerate() {
        let mut mine: Vec<_> = rest.by_ref().take(j.texts.len()).collect();
        for (i, d) in mine.iter_mut().enumerate() {
            d.index = u32::try_from(i).unwrap_or(u32::MAX);
        }
        let chars: u64 = j.texts.iter().map(|t| t.len() as u64).sum();
        let tokens = if k + 1 == n_jobs {
            total_tokens - given
        } else {
            total_tokens * chars / total_chars
        };
        given += tokens;
        let mut out = EmbeddingResponse::new(
            resp.model.clone(),
            Vec::new(),
            resp.usage.as_ref().map(|_| Usage::new(tokens, 0)),
        );
        out.data = mine;
        let _ = j.reply.send(Ok((out, meta.clone())));
    }
}
