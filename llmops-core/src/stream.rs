//! Observing a stream's end without buffering it.
//!
//! Accounting — cost, budget commit, cache write, audit append, metrics — happens when a
//! streamed answer ends, whether it finished, failed or was dropped by the client. Layers do
//! that by wrapping the stream in an [`ObservedStream`]: every chunk passes through untouched
//! and as soon as it arrives, and the layer's callback runs exactly once with a
//! [`StreamSummary`] when the stream ends or is dropped.
//!
//! ```
//! use futures_util::StreamExt;
//! use llmops_core::stream::{ObservedStream, StreamOutcome};
//! use llmops_core::{ChatChunk, ChunkChoice, ChatStream, Usage};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let chunks = vec![
//!     Ok(ChatChunk::new("c1", "m", 0).with_choice(ChunkChoice::text(0, "Hi"))),
//!     Ok(ChatChunk::new("c1", "m", 0).with_usage(Usage::new(3, 1))),
//! ];
//! let stream: ChatStream = Box::pin(futures_util::stream::iter(chunks));
//! let (tx, rx) = std::sync::mpsc::channel();
//! let mut observed = ObservedStream::new(stream, move |s| { tx.send(s).unwrap(); });
//! while let Some(_chunk) = observed.next().await {}
//! let summary = rx.recv().unwrap();
//! assert!(matches!(summary.outcome, StreamOutcome::Completed));
//! assert_eq!(summary.usage.unwrap().output_tokens, 1);
//! # }
//! ```

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::provider::ChatStream;
use crate::types::{ChatChunk, ChatResponse, ChunkAggregator, FinishReason};
use crate::usage::Usage;

/// How a stream ended.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum StreamOutcome {
    /// The stream ran to its end.
    Completed,
    /// The stream yielded an error (and ended).
    Failed(Error),
    /// The consumer dropped the stream before its end (client disconnect, cancellation).
    Dropped,
}

/// What a layer learns when a stream ends.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StreamSummary {
    /// How the stream ended.
    pub outcome: StreamOutcome,
    /// The last usage any chunk carried.
    pub usage: Option<Usage>,
    /// The finish reasons seen.
    pub finish_reasons: Vec<FinishReason>,
    /// How many chunks passed.
    pub chunks: u64,
    /// When the wrapper was created.
    pub started_at: Instant,
    /// When the first chunk with content passed, if one did.
    pub first_content_at: Option<Instant>,
    /// When the stream ended.
    pub ended_at: Instant,
    /// The whole answer folded back into a response, when the stream was observed with
    /// [`ObservedStream::collecting`].
    pub response: Option<ChatResponse>,
}

impl StreamSummary {
    /// Whether the stream ran to its end without error.
    pub fn is_complete(&self) -> bool {
        matches!(self.outcome, StreamOutcome::Completed)
    }
}

/// A stream wrapper that calls `on_end` exactly once, when the inner stream ends, fails or is
/// dropped. Chunks are passed on as they arrive; nothing is buffered unless
/// [`collecting`](Self::collecting) is used.
pub struct ObservedStream<F: FnOnce(StreamSummary) + Send + 'static> {
    inner: ChatStream,
    state: Option<State<F>>,
}

struct State<F> {
    on_end: F,
    usage: Option<Usage>,
    finish_reasons: Vec<FinishReason>,
    chunks: u64,
    started_at: Instant,
    first_content_at: Option<Instant>,
    aggregator: Option<ChunkAggregator>,
}

impl<F: FnOnce(StreamSummary) + Send + 'static> ObservedStream<F> {
    /// Wraps `inner`; `on_end` runs once when it ends.
    pub fn new(inner: ChatStream, on_end: F) -> Self {
        Self {
            inner,
            state: Some(State {
                on_end,
                usage: None,
                finish_reasons: Vec::new(),
                chunks: 0,
                started_at: Instant::now(),
                first_content_at: None,
                aggregator: None,
            }),
        }
    }

    /// Wraps `inner` and also folds the chunks into a [`ChatResponse`] handed to `on_end` in
    /// [`StreamSummary::response`] (for cache writes and audit records).
    pub fn collecting(inner: ChatStream, on_end: F) -> Self {
        let mut s = Self::new(inner, on_end);
        if let Some(st) = &mut s.state {
            st.aggregator = Some(ChunkAggregator::new());
        }
        s
    }

    /// Boxes the wrapper as a [`ChatStream`].
    pub fn boxed(self) -> ChatStream {
        Box::pin(self)
    }

    fn finish(&mut self, outcome: StreamOutcome) {
        if let Some(st) = self.state.take() {
            let summary = StreamSummary {
                outcome,
                usage: st.usage,
                finish_reasons: st.finish_reasons,
                chunks: st.chunks,
                started_at: st.started_at,
                first_content_at: st.first_content_at,
                ended_at: Instant::now(),
                response: st.aggregator.map(ChunkAggregator::finish),
            };
            (st.on_end)(summary);
        }
    }
}

// The callback is never pinned (it is moved out and called), so the wrapper is `Unpin`
// whatever the callback captures.
impl<F: FnOnce(StreamSummary) + Send + 'static> Unpin for ObservedStream<F> {}

impl<F: FnOnce(StreamSummary) + Send + 'static> Stream for ObservedStream<F> {
    type Item = Result<ChatChunk>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.state.is_none() {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.finish(StreamOutcome::Completed);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(StreamOutcome::Failed(e.clone()));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(st) = &mut this.state {
                    st.chunks += 1;
                    if st.first_content_at.is_none() && chunk.has_content() {
                        st.first_content_at = Some(Instant::now());
                    }
                    if let Some(u) = &chunk.usage {
                        st.usage = Some(u.clone());
                    }
                    for c in &chunk.choices {
                        if let Some(r) = &c.finish_reason {
                            st.finish_reasons.push(r.clone());
                        }
                    }
                    if let Some(agg) = &mut st.aggregator {
                        agg.push(&chunk);
                    }
                }
                Poll::Ready(Some(Ok(chunk)))
            }
        }
    }
}

impl<F: FnOnce(StreamSummary) + Send + 'static> Drop for ObservedStream<F> {
    fn drop(&mut self) {
        self.finish(StreamOutcome::Dropped);
    }
}

/// Collects a whole stream into a [`ChatResponse`] (for callers that asked for a stream but
/// want the final answer, and for tests). The first error ends collection.
pub async fn collect_stream(mut stream: ChatStream) -> Result<ChatResponse> {
    use futures_util::StreamExt;
    let mut agg = ChunkAggregator::new();
    while let Some(chunk) = stream.next().await {
        agg.push(&chunk?);
    }
    Ok(agg.finish())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use futures_util::StreamExt;

    use super::*;
    use crate::error::ErrorKind;
    use crate::types::ChunkChoice;

    fn chunks(n: usize) -> Vec<Result<ChatChunk>> {
        (0..n)
            .map(|i| {
                Ok(ChatChunk::new("id", "m", 0).with_choice(ChunkChoice::text(0, i.to_string())))
            })
            .collect()
    }

    #[tokio::test]
    async fn callback_runs_once_on_drop() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let inner: ChatStream = Box::pin(futures_util::stream::iter(chunks(5)));
        let mut obs = ObservedStream::new(inner, move |s| s2.lock().unwrap().push(s));
        let _ = obs.next().await;
        let _ = obs.next().await;
        drop(obs);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert!(matches!(seen[0].outcome, StreamOutcome::Dropped));
        assert_eq!(seen[0].chunks, 2);
    }

    #[tokio::test]
    async fn errors_are_reported_and_passed_on() {
        let seen = Arc::new(Mutex::new(None));
        let s2 = seen.clone();
        let mut items = chunks(1);
        items.push(Err(Error::new(
            ErrorKind::StreamInterrupted {
                after_first_event: true,
            },
            "cut",
        )));
        let inner: ChatStream = Box::pin(futures_util::stream::iter(items));
        let obs = ObservedStream::collecting(inner, move |s| *s2.lock().unwrap() = Some(s));
        let out: Vec<_> = obs.collect().await;
        assert!(out[1].is_err());
        let s = seen.lock().unwrap().take().unwrap();
        assert!(matches!(s.outcome, StreamOutcome::Failed(_)));
        assert_eq!(s.response.unwrap().first_text(), "0");
    }
}
