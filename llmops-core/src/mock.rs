//! [`MockProvider`]: a scripted provider for unit tests.
//!
//! Script the replies a test needs — text, tool calls, streams chunk by chunk, errors of any
//! kind, a stream that fails half-way — then assert on the requests the provider received.
//!
//! ```
//! use llmops_core::mock::{MockProvider, MockReply};
//! use llmops_core::{ChatRequest, ErrorKind, Message, Provider, RequestContext};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let mock = MockProvider::new("mock")
//!     .reply(MockReply::error(ErrorKind::RateLimited))
//!     .reply(MockReply::text("Paris"));
//!
//! let req = ChatRequest::new("any", vec![Message::user("Capital of France?")]);
//! let ctx = RequestContext::new();
//! assert_eq!(mock.chat(req.clone(), &ctx).await.unwrap_err().kind(), ErrorKind::RateLimited);
//! assert_eq!(mock.chat(req, &ctx).await.unwrap().first_text(), "Paris");
//!
//! mock.assert_call_count(2);
//! assert_eq!(mock.last_chat_request().unwrap().messages[0].text(), "Capital of France?");
//! # }
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::context::RequestContext;
use crate::error::{Error, ErrorKind, Result};
use crate::provider::{Capabilities, ChatStream, Provider};
use crate::sim::{estimate_prompt_tokens, estimate_tokens, pseudo_embedding, split_tokens};
use crate::types::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, Delta, EmbeddingRequest,
    EmbeddingResponse, Extra, FinishReason, Message, ModelInfo, ToolCall, ToolCallDelta, unix_now,
};
use crate::usage::Usage;

/// One scripted reply of a [`MockProvider`].
///
/// A reply works for streamed and non-streamed calls alike: its text is split into chunks
/// for a stream and joined for a complete answer.
#[derive(Clone, Debug)]
#[must_use]
pub struct MockReply {
    chunks: Vec<String>,
    tool_calls: Vec<ToolCall>,
    error: Option<Error>,
    fail_after: Option<usize>,
    usage: Option<Usage>,
    latency: Option<Duration>,
    chunk_delay: Option<Duration>,
    finish: FinishReason,
}

impl MockReply {
    fn empty() -> Self {
        Self {
            chunks: Vec::new(),
            tool_calls: Vec::new(),
            error: None,
            fail_after: None,
            usage: None,
            latency: None,
            chunk_delay: None,
            finish: FinishReason::Stop,
        }
    }

    /// A text answer; streamed, it arrives in word-sized chunks.
    pub fn text(text: impl Into<String>) -> Self {
        let text = text.into();
        Self {
            chunks: split_tokens(&text),
            ..Self::empty()
        }
    }

    /// A text answer streamed in exactly these chunks.
    pub fn chunks<I, S>(chunks: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            chunks: chunks.into_iter().map(Into::into).collect(),
            ..Self::empty()
        }
    }

    /// A call of tool `name` with JSON `arguments` (finish reason `tool_calls`).
    pub fn tool_call(name: impl Into<String>, arguments: serde_json::Value) -> Self {
        Self::empty().and_tool_call(name, arguments)
    }

    /// Adds another tool call to this reply.
    pub fn and_tool_call(mut self, name: impl Into<String>, arguments: serde_json::Value) -> Self {
        let id = format!("call_{}", self.tool_calls.len() + 1);
        self.tool_calls
            .push(ToolCall::function(id, name, arguments.to_string()));
        self.finish = FinishReason::ToolCalls;
        self
    }

    /// An immediate error of `kind` (with the status an upstream would send).
    pub fn error(kind: ErrorKind) -> Self {
        let status = Error::new(kind, "").http_status();
        Self::failure(
            Error::new(kind, format!("mock error: {kind}"))
                .with_provider("mock")
                .with_status(status),
        )
    }

    /// An immediate error, exactly as given.
    pub fn failure(error: Error) -> Self {
        Self {
            error: Some(error),
            ..Self::empty()
        }
    }

    /// Makes a streamed reply break after `chunks` content chunks with a
    /// [`ErrorKind::StreamInterrupted`] error (`after_first_event` is `chunks > 0`). A
    /// non-streamed call of this reply fails with [`ErrorKind::ServerError`], as a connection
    /// reset mid-response would.
    pub fn fail_after(mut self, chunks: usize) -> Self {
        self.fail_after = Some(chunks);
        self
    }

    /// Reports this usage instead of the estimated one.
    pub fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = Some(usage);
        self
    }

    /// Waits this long before answering (before the first chunk, for streams).
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = Some(latency);
        self
    }

    /// Waits this long between streamed chunks.
    pub fn with_chunk_delay(mut self, delay: Duration) -> Self {
        self.chunk_delay = Some(delay);
        self
    }

    /// Finishes with this reason.
    pub fn with_finish_reason(mut self, reason: FinishReason) -> Self {
        self.finish = reason;
        self
    }

    fn text_joined(&self) -> String {
        self.chunks.concat()
    }
}

/// A request a [`MockProvider`] received.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // test records; boxing would only complicate matching
#[non_exhaustive]
pub enum RecordedRequest {
    /// A chat call (`stream` tells which method).
    Chat {
        /// The request.
        request: ChatRequest,
        /// Whether it came through `chat_stream`.
        stream: bool,
    },
    /// An embeddings call.
    Embeddings(EmbeddingRequest),
}

/// A call a [`MockProvider`] received, with its context.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RecordedCall {
    /// The request.
    pub request: RecordedRequest,
    /// Its context.
    pub ctx: RequestContext,
    /// When it arrived.
    pub at: Instant,
}

/// Counters of the streams a [`MockProvider`] produced, to prove that dropping a stream stops
/// the provider's work.
#[derive(Debug, Default)]
pub struct StreamStats {
    chunks: AtomicU64,
    completed: AtomicU64,
    dropped: AtomicU64,
}

impl StreamStats {
    /// Content chunks produced so far, over all streams.
    pub fn chunks_produced(&self) -> u64 {
        self.chunks.load(Ordering::SeqCst)
    }
    /// Streams that ran to their end.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::SeqCst)
    }
    /// Streams dropped by their consumer before the end.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
struct Inner {
    name: String,
    script: Mutex<VecDeque<MockReply>>,
    default_reply: Option<MockReply>,
    latency: Duration,
    chunk_delay: Duration,
    embedding_dims: usize,
    calls: Mutex<Vec<RecordedCall>>,
    stats: Arc<StreamStats>,
}

/// A scripted provider for tests. Cheap to clone; clones share the script and the record.
///
/// Replies are consumed in order, one per chat call. When the script runs out the
/// [default reply](MockProvider::default_reply) is used; without one, the call fails with an
/// [`ErrorKind::Internal`] error saying so. Embedding calls answer deterministic vectors
/// (the same text always gets the same vector); a scripted *error* at the head of the script
/// is consumed by whichever call comes next, embeddings included.
#[derive(Clone, Debug)]
pub struct MockProvider {
    inner: Arc<Inner>,
}

impl MockProvider {
    /// A mock named `name` with an empty script.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: name.into(),
                script: Mutex::new(VecDeque::new()),
                default_reply: None,
                latency: Duration::ZERO,
                chunk_delay: Duration::ZERO,
                embedding_dims: 8,
                calls: Mutex::new(Vec::new()),
                stats: Arc::new(StreamStats::default()),
            }),
        }
    }

    fn inner_mut(&mut self) -> &mut Inner {
        // Builder methods run before the mock is shared; if it was cloned already, the
        // builder keeps working on a private copy of the configuration.
        if Arc::get_mut(&mut self.inner).is_none() {
            let i = self.inner.clone();
            self.inner = Arc::new(Inner {
                name: i.name.clone(),
                script: Mutex::new(lock(&i.script).clone()),
                default_reply: i.default_reply.clone(),
                latency: i.latency,
                chunk_delay: i.chunk_delay,
                embedding_dims: i.embedding_dims,
                calls: Mutex::new(lock(&i.calls).clone()),
                stats: i.stats.clone(),
            });
        }
        Arc::get_mut(&mut self.inner).unwrap_or_else(|| unreachable!("uniquely owned above"))
    }

    /// Appends a reply to the script (builder style).
    #[must_use]
    pub fn reply(self, reply: MockReply) -> Self {
        self.push_reply(reply);
        self
    }

    /// Appends a reply to the script of a mock already in use.
    pub fn push_reply(&self, reply: MockReply) {
        lock(&self.inner.script).push_back(reply);
    }

    /// The reply used whenever the script is empty (builder style).
    #[must_use]
    pub fn default_reply(mut self, reply: MockReply) -> Self {
        self.inner_mut().default_reply = Some(reply);
        self
    }

    /// Latency added to every call, before replies' own latency (builder style).
    #[must_use]
    pub fn latency(mut self, latency: Duration) -> Self {
        self.inner_mut().latency = latency;
        self
    }

    /// Delay between streamed chunks for replies that do not set their own (builder style).
    #[must_use]
    pub fn chunk_delay(mut self, delay: Duration) -> Self {
        self.inner_mut().chunk_delay = delay;
        self
    }

    /// Dimension of the vectors embedding calls return (builder style; default 8).
    #[must_use]
    pub fn embedding_dims(mut self, dims: usize) -> Self {
        self.inner_mut().embedding_dims = dims.max(1);
        self
    }

    /// Every call received so far, in order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        lock(&self.inner.calls).clone()
    }

    /// How many calls were received.
    pub fn call_count(&self) -> usize {
        lock(&self.inner.calls).len()
    }

    /// The last chat request received.
    pub fn last_chat_request(&self) -> Option<ChatRequest> {
        lock(&self.inner.calls)
            .iter()
            .rev()
            .find_map(|c| match &c.request {
                RecordedRequest::Chat { request, .. } => Some(request.clone()),
                RecordedRequest::Embeddings(_) => None,
            })
    }

    /// Panics unless exactly `n` calls were received, listing the calls it got.
    #[track_caller]
    pub fn assert_call_count(&self, n: usize) {
        let calls = lock(&self.inner.calls);
        assert!(
            calls.len() == n,
            "MockProvider {:?}: expected {n} calls, got {}: {:#?}",
            self.inner.name,
            calls.len(),
            calls.iter().map(|c| &c.request).collect::<Vec<_>>()
        );
    }

    /// Replies not consumed yet.
    pub fn remaining_replies(&self) -> usize {
        lock(&self.inner.script).len()
    }

    /// Stream counters (chunks produced, streams completed and dropped).
    pub fn stream_stats(&self) -> Arc<StreamStats> {
        self.inner.stats.clone()
    }

    fn record(&self, request: RecordedRequest, ctx: &RequestContext) {
        lock(&self.inner.calls).push(RecordedCall {
            request,
            ctx: ctx.clone(),
            at: Instant::now(),
        });
    }

    fn next_reply(&self) -> Result<MockReply> {
        let next = lock(&self.inner.script).pop_front();
        match next.or_else(|| self.inner.default_reply.clone()) {
            Some(r) => Ok(r),
            None => Err(Error::internal(format!(
                "MockProvider {:?} has no scripted reply left for call #{}: script more with \
                 .reply(..) or set .default_reply(..)",
                self.inner.name,
                self.call_count()
            ))),
        }
    }

    async fn wait(&self, reply: &MockReply) {
        let total = self.inner.latency + reply.latency.unwrap_or_default();
        if !total.is_zero() {
            tokio::time::sleep(total).await;
        }
    }

    fn usage_for(req: &ChatRequest, reply: &MockReply) -> Usage {
        reply.usage.clone().unwrap_or_else(|| {
            let out: u64 = reply
                .chunks
                .iter()
                .map(|c| estimate_tokens(c).max(1))
                .sum::<u64>()
                + reply
                    .tool_calls
                    .iter()
                    .map(|t| estimate_tokens(&t.function.arguments) + 3)
                    .sum::<u64>();
            Usage::new(estimate_prompt_tokens(req), out)
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn completion_id() -> String {
    format!("chatcmpl-mock-{}", crate::id::uuid_v7().simple())
}

#[async_trait]
impl Provider for MockProvider {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default().with_embeddings(true)
    }

    async fn chat(&self, req: ChatRequest, ctx: &RequestContext) -> Result<ChatResponse> {
        self.record(
            RecordedRequest::Chat {
                request: req.clone(),
                stream: false,
            },
            ctx,
        );
        let reply = self.next_reply()?;
        self.wait(&reply).await;
        if let Some(e) = reply.error {
            return Err(e);
        }
        if reply.fail_after.is_some() {
            return Err(Error::new(
                ErrorKind::ServerError,
                "mock: connection reset mid-response",
            )
            .with_provider(self.name()));
        }
        let usage = Self::usage_for(&req, &reply);
        let mut message = Message::assistant(reply.text_joined());
        if !reply.tool_calls.is_empty() {
            if reply.chunks.is_empty() {
                message.content = None;
            }
            message.tool_calls = Some(reply.tool_calls.clone());
        }
        let mut resp = ChatResponse::text(completion_id(), req.model.clone(), "", Some(usage));
        resp.choices = vec![Choice {
            index: 0,
            message,
            finish_reason: Some(reply.finish.clone()),
            logprobs: None,
            extra: Extra::new(),
        }];
        Ok(resp)
    }

    async fn chat_stream(&self, req: ChatRequest, ctx: &RequestContext) -> Result<ChatStream> {
        self.record(
            RecordedRequest::Chat {
                request: req.clone(),
                stream: true,
            },
            ctx,
        );
        let reply = self.next_reply()?;
        self.wait(&reply).await;
        if let Some(e) = reply.error {
            return Err(e);
        }
        let usage = req.include_usage().then(|| Self::usage_for(&req, &reply));
        let delay = reply.chunk_delay.unwrap_or(self.inner.chunk_delay);
        let id = completion_id();
        let created = unix_now();
        let model = req.model.clone();
        let base = move || ChatChunk::new(id.clone(), model.clone(), created);

        let mut events: Vec<Result<ChatChunk>> = Vec::new();
        events.push(Ok(base().with_choice(ChunkChoice::role(0))));
        for (i, c) in reply.chunks.iter().enumerate() {
            if reply.fail_after == Some(i) {
                break;
            }
            events.push(Ok(base().with_choice(ChunkChoice::text(0, c.clone()))));
        }
        let failed = reply.fail_after.is_some_and(|n| n <= reply.chunks.len());
        if failed {
            let sent = reply.fail_after.unwrap_or(0);
            events.push(Err(Error::new(
                ErrorKind::StreamInterrupted {
                    after_first_event: sent > 0,
                },
                "mock: upstream stream broke",
            )
            .with_provider(self.name())));
        } else {
            for (i, call) in reply.tool_calls.iter().enumerate() {
                let i = u32::try_from(i).unwrap_or(u32::MAX);
                let delta = Delta {
                    tool_calls: Some(vec![
                        ToolCallDelta::start(i, call.id.clone(), call.function.name.clone()),
                        ToolCallDelta::arguments(i, call.function.arguments.clone()),
                    ]),
                    ..Delta::default()
                };
                events.push(Ok(base().with_choice(ChunkChoice {
                    index: 0,
                    delta,
                    ..ChunkChoice::default()
                })));
            }
            events.push(Ok(
                base().with_choice(ChunkChoice::finish(0, reply.finish.clone()))
            ));
            if let Some(u) = usage {
                events.push(Ok(base().with_usage(u)));
            }
        }
        Ok(paced_stream(events, delay, self.inner.stats.clone()))
    }

    async fn embed(
        &self,
        req: EmbeddingRequest,
        ctx: &RequestContext,
    ) -> Result<EmbeddingResponse> {
        self.record(RecordedRequest::Embeddings(req.clone()), ctx);
        {
            let mut script = lock(&self.inner.script);
            if script.front().is_some_and(|r| r.error.is_some())
                && let Some(e) = script.pop_front().and_then(|r| r.error)
            {
                return Err(e);
            }
        }
        if !self.inner.latency.is_zero() {
            tokio::time::sleep(self.inner.latency).await;
        }
        embed_deterministic(&req, self.inner.embedding_dims)
    }

    async fn models(&self) -> Result<Vec<ModelInfo>> {
        Ok(vec![ModelInfo::new("mock", self.name())])
    }
}

/// Deterministic embeddings for mocks and the simulator.
pub(crate) fn embed_deterministic(
    req: &EmbeddingRequest,
    dims: usize,
) -> Result<EmbeddingResponse> {
    req.validate()?;
    let texts: Vec<String> = match req.input.texts() {
        Some(t) => t.into_iter().map(str::to_owned).collect(),
        None => match &req.input {
            crate::types::EmbeddingInput::Tokens(t) => vec![format!("{t:?}")],
            crate::types::EmbeddingInput::ManyTokens(v) => {
                v.iter().map(|t| format!("{t:?}")).collect()
            }
            _ => Vec::new(),
        },
    };
    let dims = req.dimensions.map_or(dims, |d| d as usize).max(1);
    let tokens: u64 = texts.iter().map(|t| estimate_tokens(t)).sum();
    let vectors = texts.iter().map(|t| pseudo_embedding(t, dims)).collect();
    Ok(EmbeddingResponse::new(
        req.model.clone(),
        vectors,
        Some(Usage::new(tokens, 0)),
    ))
}

/// Emits `events` with `delay` before each after the first, counting content chunks and
/// whether the consumer dropped the stream before its end.
pub(crate) fn paced_stream(
    events: Vec<Result<ChatChunk>>,
    delay: Duration,
    stats: Arc<StreamStats>,
) -> ChatStream {
    struct Guard {
        stats: Arc<StreamStats>,
        done: bool,
    }
    impl Guard {
        fn finish(&mut self) {
            self.done = true;
        }
    }
    impl Drop for Guard {
        fn drop(&mut self) {
            let counter = if self.done {
                &self.stats.completed
            } else {
                &self.stats.dropped
            };
            counter.fetch_add(1, Ordering::SeqCst);
        }
    }
    let guard = Guard { stats, done: false };
    let state = (events.into_iter(), guard, true);
    Box::pin(futures_util::stream::unfold(
        state,
        move |(mut it, mut guard, first)| async move {
            let Some(ev) = it.next() else {
                guard.finish();
                return None;
            };
            if !first && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if ev.as_ref().is_ok_and(ChatChunk::has_content) {
                guard.stats.chunks.fetch_add(1, Ordering::SeqCst);
            }
            if ev.is_err() {
                guard.finish();
            }
            Some((ev, (it, guard, false)))
        },
    ))
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::stream::collect_stream;

    fn req(stream: bool) -> ChatRequest {
        let mut r = ChatRequest::new("m", vec![Message::user("hello there")]).with_stream(stream);
        r.stream_options = Some(crate::types::StreamOptions::include_usage(true));
        r
    }

    #[tokio::test]
    async fn stream_and_complete_agree() {
        let mock = MockProvider::new("m").default_reply(MockReply::text("one two three"));
        let ctx = RequestContext::new();
        let full = mock.chat(req(false), &ctx).await.unwrap();
        let streamed = collect_stream(mock.chat_stream(req(true), &ctx).await.unwrap())
            .await
            .unwrap();
        assert_eq!(full.first_text(), "one two three");
        assert_eq!(streamed.first_text(), "one two three");
        assert_eq!(
            full.usage.unwrap().output_tokens,
            streamed.usage.unwrap().output_tokens
        );
    }

    #[tokio::test]
    async fn tool_calls_stream_and_fold() {
        let mock = MockProvider::new("m").default_reply(MockReply::tool_call(
            "get_weather",
            serde_json::json!({"city": "Paris"}),
        ));
        let ctx = RequestContext::new();
        let streamed = collect_stream(mock.chat_stream(req(true), &ctx).await.unwrap())
            .await
            .unwrap();
        let calls = streamed.choices[0].message.tool_calls.clone().unwrap();
        assert_eq!(calls[0].function.name, "get_weather");
        assert_eq!(calls[0].function.arguments, r#"{"city":"Paris"}"#);
        assert_eq!(
            streamed.choices[0].finish_reason,
            Some(FinishReason::ToolCalls)
        );
    }

    #[tokio::test]
    async fn mid_stream_failure_is_classified() {
        let mock = MockProvider::new("m").reply(MockReply::chunks(["a", "b", "c"]).fail_after(2));
        let s = mock
            .chat_stream(req(true), &RequestContext::new())
            .await
            .unwrap();
        let items: Vec<_> = s.collect().await;
        let err = items.last().unwrap().as_ref().unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::StreamInterrupted {
                after_first_event: true
            }
        );
        assert_eq!(items.iter().filter(|i| i.is_ok()).count(), 3); // role + a + b
    }

    #[tokio::test]
    async fn empty_script_says_what_to_do() {
        let mock = MockProvider::new("m");
        let err = mock
            .chat(req(false), &RequestContext::new())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Internal);
        assert!(err.message().contains("default_reply"));
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_a_stream_stops_it() {
        let mock = MockProvider::new("m")
            .chunk_delay(Duration::from_millis(10))
            .default_reply(MockReply::chunks((0..100).map(|i| i.to_string())));
        let mut s = mock
            .chat_stream(req(true), &RequestContext::new())
            .await
            .unwrap();
        for _ in 0..4 {
            s.next().await.unwrap().unwrap();
        }
        drop(s);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let stats = mock.stream_stats();
        assert_eq!(stats.chunks_produced(), 3);
        assert_eq!(stats.dropped(), 1);
        assert_eq!(stats.completed(), 0);
    }

    #[tokio::test]
    async fn embeddings_are_deterministic() {
        let mock = MockProvider::new("m").embedding_dims(4);
        let ctx = RequestContext::new();
        let r = EmbeddingRequest::new("e", vec!["a".into(), "b".into(), "a".into()]);
        let out = mock.embed(r, &ctx).await.unwrap();
        assert_eq!(out.data.len(), 3);
        assert_eq!(out.data[0].embedding, out.data[2].embedding);
        assert_ne!(out.data[0].embedding, out.data[1].embedding);
        assert_eq!(out.data[0].embedding.len(), 4);
    }
}
