//! [`SimProvider`]: a deterministic simulated model.
//!
//! The simulator answers like a real model would — a time to first token, a steady decode
//! rate, realistic usage numbers, streamed chunk by chunk — with no network and no weights.
//! It is the embedded default of `llmops serve`, the zero-latency backend of benchmarks, and
//! a convenient stand-in in integration tests. The same request always gets the same answer.
//!
//! Token counts are estimates (about four bytes of English per token, the usual rule of
//! thumb for byte-level BPE vocabularies); exact counts are `llmops-cost`'s job.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::context::RequestContext;
use crate::error::Result;
use crate::mock::{StreamStats, embed_deterministic, paced_stream};
use crate::provider::{Capabilities, ChatStream, Provider};
use crate::types::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, EmbeddingRequest, EmbeddingResponse,
    Extra, FinishReason, Message, ModelInfo, Role, unix_now,
};
use crate::usage::Usage;

/// Estimated tokens of `text`: one per four bytes, rounded up.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// Estimated prompt tokens of a chat request, with OpenAI's per-message overhead.
pub fn estimate_prompt_tokens(req: &ChatRequest) -> u64 {
    let mut total = 3;
    for m in &req.messages {
        total += 4;
        if let Some(c) = &m.content {
            c.for_each_text(|t| total += estimate_tokens(t));
        }
        for call in m.tool_calls.iter().flatten() {
            total += estimate_tokens(&call.function.arguments) + 3;
        }
    }
    total
}

/// Splits text into word-sized pieces (each word with its leading space), as a model's
/// tokens would stream.
pub fn split_tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for ch in text.chars() {
        if ch.is_whitespace() && !cur.trim().is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(ch);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A deterministic unit vector for `text` (FNV-1a seeded per dimension).
pub fn pseudo_embedding(text: &str, dims: usize) -> Vec<f32> {
    let mut seed: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        seed ^= u64::from(b);
        seed = seed.wrapping_mul(0x0100_0000_01b3);
    }
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut v: Vec<f32> = (0..dims).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// How the simulator makes up its answers.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum SimReply {
    /// A plausible sentence seeded by the prompt (the default).
    #[default]
    Lorem,
    /// Echo the last user message.
    Echo,
    /// Always this text.
    Fixed(String),
    /// A function of the request.
    Custom(Arc<dyn Fn(&ChatRequest) -> String + Send + Sync>),
}

impl fmt::Debug for SimReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Lorem => f.write_str("Lorem"),
            Self::Echo => f.write_str("Echo"),
            Self::Fixed(s) => f.debug_tuple("Fixed").field(s).finish(),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// Configuration of a [`SimProvider`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SimConfig {
    /// Provider name.
    pub name: String,
    /// The models it claims to serve (any model name is answered).
    pub models: Vec<String>,
    /// Time before the response starts (headers).
    pub latency: Duration,
    /// Time from the start to the first token.
    pub ttft: Duration,
    /// Decode rate; 0 means instant.
    pub tokens_per_second: f64,
    /// Output length when the request sets no `max_tokens` (the answer may be shorter).
    pub default_max_tokens: u64,
    /// How answers are made up.
    pub reply: SimReply,
    /// Dimension of embedding vectors.
    pub embedding_dims: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            name: "sim".to_owned(),
            models: vec!["sim-1".to_owned()],
            latency: Duration::ZERO,
            ttft: Duration::ZERO,
            tokens_per_second: 0.0,
            default_max_tokens: 256,
            reply: SimReply::Lorem,
            embedding_dims: 256,
        }
    }
}

/// A deterministic simulated model. See the [module docs](self).
///
/// ```
/// use std::time::Duration;
/// use llmops_core::sim::SimProvider;
/// use llmops_core::{ChatRequest, Message, Provider, RequestContext};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let sim = SimProvider::builder().ttft(Duration::from_millis(1)).tokens_per_second(1000.0).build();
/// let req = ChatRequest::new("sim-1", vec![Message::user("Say something")]).with_max_tokens(5);
/// let resp = sim.chat(req, &RequestContext::new()).await.unwrap();
/// assert_eq!(resp.usage.unwrap().output_tokens, 5);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct SimProvider {
    cfg: Arc<SimConfig>,
    stats: Arc<StreamStats>,
}

/// Builder of a [`SimProvider`].
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct SimBuilder {
    cfg: SimConfig,
}

impl SimBuilder {
    /// Provider name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.cfg.name = name.into();
        self
    }
    /// Models listed by `models()`.
    pub fn models(mut self, models: Vec<String>) -> Self {
        self.cfg.models = models;
        self
    }
    /// Time before the response starts.
    pub fn latency(mut self, latency: Duration) -> Self {
        self.cfg.latency = latency;
        self
    }
    /// Time to first token.
    pub fn ttft(mut self, ttft: Duration) -> Self {
        self.cfg.ttft = ttft;
        self
    }
    /// Decode rate (0: instant).
    pub fn tokens_per_second(mut self, tps: f64) -> Self {
        self.cfg.tokens_per_second = if tps.is_finite() && tps > 0.0 {
            tps
        } else {
            0.0
        };
        self
    }
    /// Default output length.
    pub fn default_max_tokens(mut self, n: u64) -> Self {
        self.cfg.default_max_tokens = n.max(1);
        self
    }
    /// Reply generator.
    pub fn reply(mut self, reply: SimReply) -> Self {
        self.cfg.reply = reply;
        self
    }
    /// Embedding dimension.
    pub fn embedding_dims(mut self, dims: usize) -> Self {
        self.cfg.embedding_dims = dims.max(1);
        self
    }
    /// The provider.
    pub fn build(self) -> SimProvider {
        SimProvider {
            cfg: Arc::new(self.cfg),
            stats: Arc::new(StreamStats::default()),
        }
    }
}

const WORDS: &[&str] = &[
    "the",
    "model",
    "answers",
    "with",
    "a",
    "simulated",
    "reply",
    "that",
    "is",
    "stable",
    "for",
    "every",
    "identical",
    "request",
    "and",
    "streams",
    "tokens",
    "at",
    "configured",
    "rate",
    "so",
    "pipelines",
    "can",
    "be",
    "tested",
    "without",
    "network",
    "or",
    "weights",
    "latency",
    "budget",
    "cache",
    "router",
    "gateway",
    "prompt",
    "context",
    "output",
    "fast",
];

impl SimProvider {
    /// A builder with the defaults (instant answers, `sim-1`).
    pub fn builder() -> SimBuilder {
        SimBuilder::default()
    }

    /// A simulator with this configuration.
    pub fn new(cfg: SimConfig) -> Self {
        Self {
            cfg: Arc::new(cfg),
            stats: Arc::new(StreamStats::default()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// Stream counters (chunks produced, streams completed and dropped).
    pub fn stream_stats(&self) -> Arc<StreamStats> {
        self.stats.clone()
    }

    fn seed(req: &ChatRequest, choice: u32) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(choice);
        let mut feed = |s: &str| {
            for b in s.bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        feed(&req.model);
        for m in &req.messages {
            feed(m.role.as_str());
            if let Some(c) = &m.content {
                c.for_each_text(&mut feed);
            }
        }
        if let Some(s) = req.seed {
            feed(&s.to_string());
        }
        h
    }

    /// The answer's pieces for choice `choice`, and whether the token cap cut it.
    fn answer(&self, req: &ChatRequest, choice: u32) -> (Vec<String>, FinishReason) {
        let cap = req
            .max_output_tokens()
            .unwrap_or(self.cfg.default_max_tokens)
            .max(1);
        let text = match &self.cfg.reply {
            SimReply::Lorem => {
                let mut rng = SmallRng::seed_from_u64(Self::seed(req, choice));
                let n = rng.random_range(12..48);
                let mut s = String::from("Simulated");
                for _ in 0..n {
                    s.push(' ');
                    s.push_str(WORDS[rng.random_range(0..WORDS.len())]);
                }
                s.push('.');
                s
            }
            SimReply::Echo => req
                .messages
                .iter()
                .rev()
                .find(|m| m.role == Role::User)
                .map(Message::text)
                .unwrap_or_default(),
            SimReply::Fixed(s) => s.clone(),
            SimReply::Custom(f) => f(req),
        };
        let mut pieces = split_tokens(&text);
        let cap = usize::try_from(cap).unwrap_or(usize::MAX);
        if pieces.len() > cap {
            pieces.truncate(cap);
            (pieces, FinishReason::Length)
        } else {
            (pieces, FinishReason::Stop)
        }
    }

    fn decode_time(&self, tokens: usize) -> Duration {
        if self.cfg.tokens_per_second > 0.0 {
            Duration::from_secs_f64(tokens as f64 / self.cfg.tokens_per_second)
        } else {
            Duration::ZERO
        }
    }
}

#[async_trait]
impl Provider for SimProvider {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default().with_embeddings(true)
    }

    async fn chat(&self, req: ChatRequest, _ctx: &RequestContext) -> Result<ChatResponse> {
        let n = req.n.unwrap_or(1).max(1);
        let mut choices = Vec::with_capacity(n as usize);
        let mut out_tokens = 0u64;
        let mut longest = 0usize;
        for i in 0..n {
            let (pieces, finish) = self.answer(&req, i);
            out_tokens += pieces.len() as u64;
            longest = longest.max(pieces.len());
            choices.push(Choice {
                index: i,
                message: Message::assistant(pieces.concat()),
                finish_reason: Some(finish),
                logprobs: None,
                extra: Extra::new(),
            });
        }
        let wait = self.cfg.latency + self.cfg.ttft + self.decode_time(longest.saturating_sub(1));
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let usage = Usage::new(estimate_prompt_tokens(&req), out_tokens);
        let mut resp = ChatResponse::text(
            format!("chatcmpl-sim-{}", crate::id::uuid_v7().simple()),
            req.model.clone(),
            "",
            Some(usage),
        );
        resp.choices = choices;
        Ok(resp)
    }

    async fn chat_stream(&self, req: ChatRequest, _ctx: &RequestContext) -> Result<ChatStream> {
        if !self.cfg.latency.is_zero() {
            tokio::time::sleep(self.cfg.latency).await;
        }
        let n = req.n.unwrap_or(1).max(1);
        let id = format!("chatcmpl-sim-{}", crate::id::uuid_v7().simple());
        let created = unix_now();
        let base = || ChatChunk::new(id.clone(), req.model.clone(), created);
        let mut events = Vec::new();
        let mut out_tokens = 0u64;
        let mut answers = Vec::with_capacity(n as usize);
        for i in 0..n {
            events.push(Ok(base().with_choice(ChunkChoice::role(i))));
            answers.push(self.answer(&req, i));
        }
        // Interleave choices token by token, as an engine decoding a batch would.
        let longest = answers.iter().map(|(p, _)| p.len()).max().unwrap_or(0);
        for t in 0..longest {
            for (i, (pieces, _)) in answers.iter().enumerate() {
                if let Some(p) = pieces.get(t) {
                    let i = u32::try_from(i).unwrap_or(u32::MAX);
                    events.push(Ok(base().with_choice(ChunkChoice::text(i, p.clone()))));
                    out_tokens += 1;
                }
            }
        }
        for (i, (_, finish)) in answers.into_iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            events.push(Ok(base().with_choice(ChunkChoice::finish(i, finish))));
        }
        if req.include_usage() {
            events.push(Ok(
                base().with_usage(Usage::new(estimate_prompt_tokens(&req), out_tokens))
            ));
        }
        let per_token = self.decode_time(1) / n.max(1);
        let stream = paced_stream(events, per_token, self.stats.clone());
        if self.cfg.ttft.is_zero() {
            return Ok(stream);
        }
        // The first chunk (role) is immediate; the first token arrives after the TTFT.
        let ttft = self.cfg.ttft;
        let mut first = true;
        Ok(Box::pin(futures_util::StreamExt::then(stream, move |ev| {
            let wait = first && ev.as_ref().is_ok_and(ChatChunk::has_content);
            if wait {
                first = false;
            }
            async move {
                if wait {
                    tokio::time::sleep(ttft).await;
                }
                ev
            }
        })))
    }

    async fn embed(
        &self,
        req: EmbeddingRequest,
        _ctx: &RequestContext,
    ) -> Result<EmbeddingResponse> {
        if !self.cfg.latency.is_zero() {
            tokio::time::sleep(self.cfg.latency).await;
        }
        embed_deterministic(&req, self.cfg.embedding_dims)
    }

    async fn models(&self) -> Result<Vec<ModelInfo>> {
        Ok(self
            .cfg
            .models
            .iter()
            .map(|m| ModelInfo::new(m.clone(), self.cfg.name.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::stream::collect_stream;
    use crate::types::StreamOptions;

    fn req() -> ChatRequest {
        ChatRequest::new("sim-1", vec![Message::user("Tell me about gateways")])
    }

    #[tokio::test]
    async fn same_request_same_answer() {
        let sim = SimProvider::builder().build();
        let ctx = RequestContext::new();
        let a = sim.chat(req(), &ctx).await.unwrap();
        let b = sim.chat(req(), &ctx).await.unwrap();
        assert_eq!(a.first_text(), b.first_text());
        assert!(a.first_text().starts_with("Simulated"));
    }

    #[tokio::test]
    async fn streamed_equals_complete_with_usage() {
        let sim = SimProvider::builder().build();
        let ctx = RequestContext::new();
        let full = sim.chat(req(), &ctx).await.unwrap();
        let mut r = req().with_stream(true);
        r.stream_options = Some(StreamOptions::include_usage(true));
        let streamed = collect_stream(sim.chat_stream(r, &ctx).await.unwrap())
            .await
            .unwrap();
        assert_eq!(full.first_text(), streamed.first_text());
        assert_eq!(
            full.usage.unwrap().output_tokens,
            streamed.usage.unwrap().output_tokens
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_follows_ttft_and_rate() {
        let sim = SimProvider::builder()
            .ttft(Duration::from_millis(100))
            .tokens_per_second(10.0)
            .build();
        let start = tokio::time::Instant::now();
        let mut s = sim
            .chat_stream(
                req().with_stream(true).with_max_tokens(3),
                &RequestContext::new(),
            )
            .await
            .unwrap();
        let mut content_at = Vec::new();
        while let Some(c) = s.next().await {
            if c.unwrap().has_content() {
                content_at.push(start.elapsed());
            }
        }
        assert_eq!(content_at.len(), 3);
        assert!(content_at[0] >= Duration::from_millis(100));
        assert!(content_at[2] - content_at[0] >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn max_tokens_cuts_with_length() {
        let sim = SimProvider::builder().build();
        let resp = sim
            .chat(req().with_max_tokens(2), &RequestContext::new())
            .await
            .unwrap();
        assert_eq!(resp.choices[0].finish_reason, Some(FinishReason::Length));
        assert_eq!(resp.usage.unwrap().output_tokens, 2);
    }

    #[test]
    fn embeddings_are_unit_vectors() {
        let v = pseudo_embedding("hello", 16);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}
