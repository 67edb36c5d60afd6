//! The Anthropic Messages API provider.
//!
//! [`encode_request`], [`decode_response`] and [`StreamDecoder`] are a pure codec between the
//! OpenAI shapes the pipeline speaks and Anthropic's: the system prompt moves to the
//! top-level `system` field, content parts become content blocks (text, images as base64 or
//! URL sources, `cache_control` kept), tool calls become `tool_use` blocks and tool messages
//! `tool_result` blocks, and usage is normalized with [`Usage::from_anthropic`] (Anthropic's
//! `input_tokens` excludes cache reads and writes). The stream decoder turns the event
//! sequence `message_start` … `message_stop` into chat chunks, ignores `ping` and unknown
//! events, and turns a mid-stream `error` event into a classified error.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::StreamExt;
use llmops_core::{
    Capabilities, ChatChunk, ChatRequest, ChatResponse, ChatStream, ChunkChoice, Content,
    ContentPart, Delta, Error, ErrorKind, FinishReason, KnownPart, Message, Provider,
    RequestContext, Role, ToolCall, ToolCallDelta, Usage, unix_now,
};
use serde_json::{Map, Value, json};

use super::errors::{RateLimits, anthropic_error_kind, classify_anthropic};
use super::openai::positioned;
use super::sse::SseItem;
use super::{HttpProviderConfig, HttpTransport, RateLimitCell};

/// The API version header sent with every request.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// `max_tokens` when the client sets none (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Extra request fields passed through to Anthropic verbatim; other unknown fields (meant for
/// OpenAI-compatible servers) are dropped.
pub const PASSTHROUGH_FIELDS: &[&str] = &[
    "top_k",
    "thinking",
    "service_tier",
    "cache_control",
    "container",
    "mcp_servers",
];

/// How long Anthropic keeps a prompt-cache entry written at an automatic breakpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheTtl {
    /// Five minutes (the cheaper write).
    FiveMinutes,
    /// One hour.
    OneHour,
}

/// Automatic prompt-cache breakpoints: where a request has none of its own, mark the end of
/// the tools, of the system prompt, and of the conversation before the newest message —
/// each only once the prefix up to it reaches the model's minimum cacheable length — so
/// repeated prefixes are read from Anthropic's cache at a tenth of the input price.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheBreakpoints {
    /// Entry lifetime.
    pub ttl: CacheTtl,
    /// Minimum cacheable prefix in tokens; `None`: the model's (2,048 for Haiku models,
    /// 1,024 for the others).
    pub min_tokens: Option<u64>,
}

impl CacheBreakpoints {
    /// Breakpoints with `ttl` and the model's minimum length.
    pub fn new(ttl: CacheTtl) -> Self {
        Self {
            ttl,
            min_tokens: None,
        }
    }

    fn min_for(&self, model: &str) -> u64 {
        self.min_tokens
            .unwrap_or(if model.contains("haiku") { 2048 } else { 1024 })
    }

    fn marker(&self) -> Value {
        match self.ttl {
            CacheTtl::FiveMinutes => json!({"type": "ephemeral"}),
            CacheTtl::OneHour => json!({"type": "ephemeral", "ttl": "1h"}),
        }
    }
}

fn has_cache_control(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.contains_key("cache_control") || m.values().any(has_cache_control),
        Value::Array(a) => a.iter().any(has_cache_control),
        _ => false,
    }
}

/// Tokens of a JSON fragment, estimated as serialized bytes / 4 (the byte-level BPE rule of
/// thumb; the breakpoint threshold needs an order of magnitude, not an exact count).
fn estimated_tokens(v: &Value) -> u64 {
    serde_json::to_vec(v).map_or(0, |b| b.len() as u64 / 4)
}

/// Turns a string `content`/`system` into one text block so it can carry `cache_control`.
fn as_blocks(v: &mut Value) {
    if let Value::String(text) = v {
        *v = json!([{"type": "text", "text": std::mem::take(text)}]);
    }
}

fn mark_last(v: &mut Value, marker: &Value) -> bool {
    as_blocks(v);
    match v.as_array_mut().and_then(|a| a.last_mut()) {
        Some(Value::Object(block)) => {
            block.insert("cache_control".into(), marker.clone());
            true
        }
        _ => false,
    }
}

/// Adds automatic `cache_control` breakpoints to an encoded Messages request (see
/// [`CacheBreakpoints`]); returns how many were placed (at most 3 of Anthropic's 4). A request
/// that already carries any `cache_control` is left exactly as it is.
pub fn apply_cache_breakpoints(body: &mut Value, policy: &CacheBreakpoints) -> usize {
    if has_cache_control(body) {
        return 0;
    }
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let min = policy.min_for(&model);
    let marker = policy.marker();
    let mut placed = 0;
    let mut prefix = 0u64;
    // Order of the prompt: tools, then system, then messages.
    if let Some(tools) = body
        .get_mut("tools")
        .filter(|t| t.as_array().is_some_and(|a| !a.is_empty()))
    {
        prefix += estimated_tokens(tools);
        if prefix >= min && mark_last(tools, &marker) {
            placed += 1;
        }
    }
    if let Some(system) = body.get_mut("system") {
        prefix += estimated_tokens(system);
        if prefix >= min && mark_last(system, &marker) {
            placed += 1;
        }
    }
    if let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut)
        && messages.len() >= 2
    {
        // The stable prefix ends before the newest message.
        let stable = messages.len() - 1;
        prefix += messages[..stable].iter().map(estimated_tokens).sum::<u64>();
        if prefix >= min
            && let Some(content) = messages[stable - 1].get_mut("content")
            && mark_last(content, &marker)
        {
            placed += 1;
        }
    }
    placed
}

fn unsupported(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Unsupported, msg.into())
}

fn image_block(url: &str) -> Value {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((meta, data)) = rest.split_once(',')
        && let Some(media_type) = meta.strip_suffix(";base64")
    {
        return json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}});
    }
    json!({"type": "image", "source": {"type": "url", "url": url}})
}

fn blocks_of(content: &Content) -> Vec<Value> {
    match content {
        Content::Text(t) => vec![json!({"type": "text", "text": t})],
        Content::Parts(parts) => parts
            .iter()
            .map(|p| match p {
                ContentPart::Known(KnownPart::Text { text, extra }) => {
                    let mut b = json!({"type": "text", "text": text});
                    if let Some(cc) = extra.get("cache_control") {
                        b["cache_control"] = cc.clone();
                    }
                    b
                }
                ContentPart::Known(KnownPart::ImageUrl { image_url, extra }) => {
                    let mut b = image_block(&image_url.url);
                    if let Some(cc) = extra.get("cache_control") {
                        b["cache_control"] = cc.clone();
                    }
                    b
                }
                // Parts of other types (already Anthropic blocks, documents, ...) pass as is.
                ContentPart::Other(v) => v.clone(),
                _ => json!({"type": "text", "text": ""}),
            })
            .collect(),
    }
}

fn push_turn(out: &mut Vec<Value>, role: &str, mut blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = out.last_mut()
        && last["role"] == role
        && let Some(arr) = last["content"].as_array_mut()
    {
        arr.append(&mut blocks);
        return;
    }
    out.push(json!({"role": role, "content": blocks}));
}

/// Encodes a chat request as a Messages API body for `model`.
pub fn encode_request(req: &ChatRequest, model: &str, stream: bool) -> Result<Value, Error> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(unsupported(
            "Anthropic models return one choice: `n` must be 1",
        ));
    }
    if let Some(rf) = &req.response_format
        && !matches!(serde_json::to_value(rf).ok().and_then(|v| v.get("type").cloned()), Some(Value::String(t)) if t == "text")
    {
        return Err(unsupported(
            "Anthropic models do not take `response_format`; use a tool with an input schema",
        ));
    }
    let mut system: Vec<Value> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for m in &req.messages {
        match m.role {
            Role::System | Role::Developer => {
                if let Some(c) = &m.content {
                    system.extend(blocks_of(c));
                }
            }
            Role::User => {
                let blocks = m.content.as_ref().map(blocks_of).unwrap_or_default();
                push_turn(&mut messages, "user", blocks);
            }
            Role::Assistant => {
                let mut blocks: Vec<Value> = m
                    .content
                    .as_ref()
                    .map(blocks_of)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|b| b.get("text").and_then(Value::as_str) != Some(""))
                    .collect();
                for call in m.tool_calls.iter().flatten() {
                    let input: Value = if call.function.arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(&call.function.arguments).map_err(|e| {
                            Error::invalid_request(
                                format!(
                                    "tool call `{}` has arguments that are not JSON: {e}",
                                    call.id
                                ),
                                Some("messages"),
                            )
                        })?
                    };
                    blocks.push(json!({"type": "tool_use", "id": call.id, "name": call.function.name, "input": input}));
                }
                push_turn(&mut messages, "assistant", blocks);
            }
            Role::Tool | Role::Function => {
                let id = m
                    .tool_call_id
                    .clone()
                    .or_else(|| m.name.clone())
                    .unwrap_or_default();
                let content = m.content.as_ref().map(blocks_of).unwrap_or_default();
                push_turn(
                    &mut messages,
                    "user",
                    vec![json!({"type": "tool_result", "tool_use_id": id, "content": content})],
                );
            }
            _ => {}
        }
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert(
        "max_tokens".into(),
        json!(
            req.max_completion_tokens
                .or(req.max_tokens)
                .unwrap_or(DEFAULT_MAX_TOKENS)
        ),
    );
    if !system.is_empty() {
        let plain = system
            .iter()
            .all(|b| b["type"] == "text" && b.get("cache_control").is_none());
        let value = if plain && system.len() == 1 {
            system[0]["text"].clone()
        } else {
            Value::Array(system)
        };
        body.insert("system".into(), value);
    }
    body.insert("messages".into(), Value::Array(messages));
    if let Some(t) = req.temperature {
        body.insert("temperature".into(), json!(t.min(1.0)));
    }
    if let Some(p) = req.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if let Some(stop) = &req.stop {
        body.insert(
            "stop_sequences".into(),
            json!(stop.iter().collect::<Vec<_>>()),
        );
    }
    if stream {
        body.insert("stream".into(), json!(true));
    }
    if let Some(tools) = &req.tools {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut v = json!({
                    "name": t.function.name,
                    "input_schema": t.function.parameters.clone().unwrap_or_else(|| json!({"type": "object"})),
                });
                if let Some(d) = &t.function.description {
                    v["description"] = json!(d);
                }
                if let Some(cc) = t.extra.get("cache_control") {
                    v["cache_control"] = cc.clone();
                }
                v
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    let mut choice = match &req.tool_choice {
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "required" => Some(json!({"type": "any"})),
            "none" => Some(json!({"type": "none"})),
            other => {
                return Err(Error::invalid_request(
                    format!("unknown tool_choice `{other}`"),
                    Some("tool_choice"),
                ));
            }
        },
        Some(v @ Value::Object(_)) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => Some(json!({"type": "tool", "name": name})),
            None => Some(v.clone()),
        },
        _ => None,
    };
    if req.parallel_tool_calls == Some(false) && req.tools.is_some() {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        c["disable_parallel_tool_use"] = json!(true);
    }
    if let Some(c) = choice {
        body.insert("tool_choice".into(), c);
    }
    if let Some(user) = &req.user {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    for key in PASSTHROUGH_FIELDS {
        if let Some(v) = req.extra.get(*key) {
            body.insert((*key).to_owned(), v.clone());
        }
    }
    Ok(Value::Object(body))
}

fn finish_reason(stop: &str) -> FinishReason {
    let openai = match stop {
        "end_turn" | "stop_sequence" | "pause_turn" => "stop",
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        other => other,
    };
    serde_json::from_value(json!(openai)).unwrap_or(FinishReason::Stop)
}

/// Normalizes an Anthropic `usage` object (raw kept).
pub fn decode_usage(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Usage::from_anthropic(
        n("input_tokens"),
        n("cache_read_input_tokens"),
        n("cache_creation_input_tokens"),
        n("output_tokens"),
    )
    .with_raw(u.clone())
}

/// Decodes a Messages API response body.
pub fn decode_response(provider: &str, body: &Value) -> Result<ChatResponse, Error> {
    let bad = |what: &str| {
        Error::new(
            ErrorKind::Decode,
            format!("Anthropic response without {what}"),
        )
        .with_provider(provider)
    };
    let blocks = body
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("`content`"))?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                text.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default())
            }
            Some("thinking") => {
                reasoning.push_str(
                    b.get("thinking")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                );
            }
            Some("tool_use") => calls.push(ToolCall::function(
                b.get("id").and_then(Value::as_str).unwrap_or_default(),
                b.get("name").and_then(Value::as_str).unwrap_or_default(),
                b.get("input")
                    .map(Value::to_string)
                    .unwrap_or_else(|| "{}".into()),
            )),
            _ => {}
        }
    }
    let mut message = Message::assistant(text);
    if !calls.is_empty() {
        message.tool_calls = Some(calls);
    }
    if !reasoning.is_empty() {
        message
            .extra
            .insert("reasoning_content".into(), json!(reasoning));
    }
    let id = body.get("id").and_then(Value::as_str).unwrap_or_default();
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let stop = body
        .get("stop_reason")
        .and_then(Value::as_str)
        .unwrap_or("end_turn");
    let mut resp = ChatResponse::text(id, model, "", body.get("usage").map(decode_usage));
    if let Some(choice) = resp.choices.first_mut() {
        choice.message = message;
        choice.finish_reason = Some(finish_reason(stop));
    }
    Ok(resp)
}

/// What a stream event produced.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Decoded {
    /// Chunks to pass on.
    pub chunks: Vec<ChatChunk>,
    /// `message_stop` arrived: the stream finished.
    pub done: bool,
}

/// State of one Anthropic event stream being turned into chat chunks.
#[derive(Debug)]
pub struct StreamDecoder {
    provider: Arc<str>,
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    usage: Value,
    tool_index: HashMap<u64, u32>,
    seen_content: bool,
}

impl StreamDecoder {
    /// A decoder; `include_usage` adds a final usage chunk, as OpenAI does when asked.
    pub fn new(provider: impl Into<Arc<str>>, include_usage: bool) -> Self {
        Self {
            provider: provider.into(),
            id: String::new(),
            model: String::new(),
            created: unix_now(),
            include_usage,
            usage: json!({}),
            tool_index: HashMap::new(),
            seen_content: false,
        }
    }

    /// Whether a content delta has been produced.
    pub fn seen_content(&self) -> bool {
        self.seen_content
    }

    fn chunk(&self, choice: ChunkChoice) -> ChatChunk {
        ChatChunk::new(self.id.clone(), self.model.clone(), self.created).with_choice(choice)
    }

    fn merge_usage(&mut self, u: &Value) {
        if let (Some(dst), Some(src)) = (self.usage.as_object_mut(), u.as_object()) {
            for (k, v) in src {
                if !v.is_null() {
                    dst.insert(k.clone(), v.clone());
                }
            }
        }
    }

    /// Decodes one event (`event:` name and `data:` JSON).
    pub fn on_event(&mut self, event: Option<&str>, data: &str) -> Result<Decoded, Error> {
        let v: Value = serde_json::from_str(data).map_err(|e| {
            Error::new(
                ErrorKind::Decode,
                format!("Anthropic sent a malformed stream event: {e}"),
            )
            .with_provider(self.provider.as_ref())
        })?;
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .or(event)
            .unwrap_or_default();
        let mut out = Decoded::default();
        match kind {
            "message_start" => {
                let m = &v["message"];
                self.id = m
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                self.model = m
                    .get("model")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                self.merge_usage(&m["usage"]);
                out.chunks.push(self.chunk(ChunkChoice::role(0)));
            }
            "content_block_start" => {
                let b = &v["content_block"];
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                match b.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let n = u32::try_from(self.tool_index.len()).unwrap_or(u32::MAX);
                        self.tool_index.insert(index, n);
                        let mut c = ChunkChoice::role(0);
                        c.delta.role = None;
                        c.delta.tool_calls = Some(vec![ToolCallDelta::start(
                            n,
                            b.get("id").and_then(Value::as_str).unwrap_or_default(),
                            b.get("name").and_then(Value::as_str).unwrap_or_default(),
                        )]);
                        self.seen_content = true;
                        out.chunks.push(self.chunk(c));
                    }
                    Some("text") => {
                        let t = b.get("text").and_then(Value::as_str).unwrap_or_default();
                        if !t.is_empty() {
                            self.seen_content = true;
                            out.chunks.push(self.chunk(ChunkChoice::text(0, t)));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let d = &v["delta"];
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let t = d.get("text").and_then(Value::as_str).unwrap_or_default();
                        self.seen_content = true;
                        out.chunks.push(self.chunk(ChunkChoice::text(0, t)));
                    }
                    Some("input_json_delta") => {
                        let n = self.tool_index.get(&index).copied().unwrap_or(0);
                        let frag = d
                            .get("partial_json")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        let mut c = ChunkChoice::role(0);
                        c.delta.role = None;
                        c.delta.tool_calls = Some(vec![ToolCallDelta::arguments(n, frag)]);
                        self.seen_content = true;
                        out.chunks.push(self.chunk(c));
                    }
                    Some("thinking_delta") => {
                        let t = d
                            .get("thinking")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        let mut c = ChunkChoice::role(0);
                        c.delta = Delta::default();
                        c.delta.reasoning_content = Some(t.to_owned());
                        self.seen_content = true;
                        out.chunks.push(self.chunk(c));
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                self.merge_usage(&v["usage"]);
                if let Some(stop) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    out.chunks
                        .push(self.chunk(ChunkChoice::finish(0, finish_reason(stop))));
                }
            }
            "message_stop" => {
                if self.include_usage {
                    let mut c = ChatChunk::new(self.id.clone(), self.model.clone(), self.created);
                    c.usage = Some(decode_usage(&self.usage));
                    out.chunks.push(c);
                }
                out.done = true;
            }
            "error" => {
                let (kind, message) = anthropic_error_kind(&v["error"], None);
                let err = Error::new(
                    kind,
                    message.unwrap_or_else(|| "Anthropic stream error".into()),
                )
                .with_provider(self.provider.as_ref());
                return Err(positioned(err, self.seen_content));
            }
            // `ping`, `content_block_stop` and event types added later.
            _ => {}
        }
        Ok(out)
    }
}

struct Inner {
    name: Arc<str>,
    messages_url: String,
    transport: HttpTransport,
    headers: http::HeaderMap,
    timeout: Option<std::time::Duration>,
    rate_limits: RateLimitCell,
    breakpoints: Option<CacheBreakpoints>,
}

/// An Anthropic upstream. Cheap to clone.
#[derive(Clone)]
pub struct AnthropicProvider {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AnthropicProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnthropicProvider")
            .field("name", &self.inner.name)
            .finish()
    }
}

impl AnthropicProvider {
    /// A provider from its settings (`base_url` such as `https://api.anthropic.com`, with or
    /// without `/v1`), on `transport`.
    pub fn new(cfg: &HttpProviderConfig, transport: HttpTransport) -> Result<Self, Error> {
        let mut headers = cfg.headers.clone();
        headers
            .entry("anthropic-version")
            .or_insert(http::HeaderValue::from_static(ANTHROPIC_VERSION));
        if let Some(key) = &cfg.api_key {
            let v = http::HeaderValue::try_from(key.as_str()).map_err(|_| {
                Error::invalid_request(
                    format!(
                        "provider {}: the API key is not a valid header value",
                        cfg.name
                    ),
                    None,
                )
            })?;
            headers.insert("x-api-key", v);
        }
        let base = cfg.trimmed_base();
        let messages_url = if base.ends_with("/v1") {
            format!("{base}/messages")
        } else {
            format!("{base}/v1/messages")
        };
        Ok(Self {
            inner: Arc::new(Inner {
                name: Arc::from(cfg.name.as_str()),
                messages_url,
                transport,
                headers,
                timeout: cfg.timeout,
                rate_limits: RateLimitCell::default(),
                breakpoints: None,
            }),
        })
    }

    /// Places automatic prompt-cache breakpoints on requests that carry none (builder style).
    #[must_use]
    pub fn with_cache_breakpoints(mut self, policy: CacheBreakpoints) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.breakpoints = Some(policy);
        }
        self
    }

    fn encode(&self, req: &ChatRequest, stream: bool) -> Result<Value, Error> {
        let mut body =
            encode_request(req, &req.model, stream).map_err(|e| e.with_provider(self.name()))?;
        if let Some(p) = &self.inner.breakpoints {
            apply_cache_breakpoints(&mut body, p);
        }
        Ok(body)
    }

    /// The `anthropic-ratelimit-*` state of the last response.
    pub fn rate_limits(&self) -> Option<Arc<RateLimits>> {
        self.inner.rate_limits.get()
    }

    async fn send(&self, body: &Value) -> Result<reqwest::Response, Error> {
        let name = self.inner.name.as_ref();
        let req = self
            .inner
            .transport
            .client()
            .post(&self.inner.messages_url)
            .headers(self.inner.headers.clone())
            .json(body);
        let resp = super::send(name, req, self.inner.timeout).await?;
        self.inner
            .rate_limits
            .set(RateLimits::from_headers(resp.headers()));
        if !resp.status().is_success() {
            return Err(super::read_error(name, resp, classify_anthropic).await);
        }
        Ok(resp)
    }
}

#[async_trait]
impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default().with_embeddings(false)
    }

    async fn chat(&self, req: ChatRequest, _ctx: &RequestContext) -> Result<ChatResponse, Error> {
        let body = self.encode(&req, false)?;
        let fut = async {
            let resp = self.send(&body).await?;
            let v: Value = super::read_json(&self.inner.name, resp).await?;
            decode_response(&self.inner.name, &v)
        };
        match self.inner.timeout {
            Some(t) => tokio::time::timeout(t, fut).await.unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!("no answer within {} ms", t.as_millis()),
                )
                .with_provider(self.name()))
            }),
            None => fut.await,
        }
    }

    async fn chat_stream(
        &self,
        req: ChatRequest,
        _ctx: &RequestContext,
    ) -> Result<ChatStream, Error> {
        let body = self.encode(&req, true)?;
        let resp = self.send(&body).await?;
        let name = self.inner.name.clone();
        let events = super::sse::events(name.clone(), resp);
        let decoder = StreamDecoder::new(name.clone(), req.include_usage());
        let stream = futures_util::stream::unfold(
            (
                Box::pin(events),
                decoder,
                std::collections::VecDeque::new(),
                false,
            ),
            move |(mut events, mut dec, mut pending, finished)| {
                let name = name.clone();
                async move {
                    loop {
                        if let Some(c) = pending.pop_front() {
                            return Some((Ok(c), (events, dec, pending, finished)));
                        }
                        if finished {
                            return None;
                        }
                        match events.next().await? {
                            Err(e) => {
                                let seen = dec.seen_content();
                                return Some((
                                    Err(positioned(e, seen)),
                                    (events, dec, pending, true),
                                ));
                            }
                            Ok(SseItem::End { .. }) => {
                                let err = Error::new(
                                    ErrorKind::StreamInterrupted { after_first_event: dec.seen_content() },
                                    "the Anthropic stream ended before `message_stop`: the answer is truncated",
                                )
                                .with_provider(name.as_ref());
                                return Some((Err(err), (events, dec, pending, true)));
                            }
                            Ok(SseItem::Event(ev)) => {
                                match dec.on_event(ev.event.as_deref(), &ev.data) {
                                    Ok(d) => {
                                        pending.extend(d.chunks);
                                        if d.done {
                                            return pending
                                                .pop_front()
                                                .map(|c| (Ok(c), (events, dec, pending, true)));
                                        }
                                    }
                                    Err(e) => {
                                        let seen = dec.seen_content();
                                        return Some((
                                            Err(positioned(e, seen)),
                                            (events, dec, pending, true),
                                        ));
                                    }
                                }
                            }
                        }
                    }
                }
            },
        );
        Ok(Box::pin(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmops_core::Tool;

    #[test]
    fn encodes_system_tools_images_and_tool_results() {
        let mut image = Message::user("");
        image.content = Some(Content::Parts(vec![
            ContentPart::text("What is this?"),
            ContentPart::image_url("data:image/png;base64,iVBORw0KGgo="),
        ]));
        let mut call = Message::assistant("");
        call.tool_calls = Some(vec![ToolCall::function(
            "toolu_1",
            "lookup",
            "{\"q\":\"png\"}",
        )]);
        let mut req = ChatRequest::new(
            "claude",
            vec![
                Message::system("Be brief."),
                image,
                call,
                Message::tool("toolu_1", "a PNG header"),
                Message::user("thanks"),
            ],
        );
        req.tools = Some(vec![Tool::function(
            "lookup",
            "Looks up",
            json!({"type": "object"}),
        )]);
        req.tool_choice = Some(json!("required"));
        req.stop = Some(llmops_core::Stop::One("END".into()));
        req.extra.insert("top_k".into(), json!(5));
        req.extra.insert("reasoning_effort".into(), json!("low"));
        let body = encode_request(&req, "claude-sonnet-4", false).unwrap();
        assert_eq!(body["system"], "Be brief.");
        assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(
            body["messages"][0]["content"][1]["source"]["media_type"],
            "image/png"
        );
        assert_eq!(body["messages"][1]["content"][0]["type"], "tool_use");
        assert_eq!(body["messages"][1]["content"][0]["input"]["q"], "png");
        // The tool result and the next user text merge into one user turn.
        assert_eq!(body["messages"][2]["role"], "user");
        assert_eq!(body["messages"][2]["content"][0]["tool_use_id"], "toolu_1");
        assert_eq!(body["messages"][2]["content"][1]["text"], "thanks");
        assert_eq!(body["messages"].as_array().unwrap().len(), 3);
        assert_eq!(body["tool_choice"]["type"], "any");
        assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
        assert_eq!(body["stop_sequences"][0], "END");
        assert_eq!(body["top_k"], 5);
        assert!(body.get("reasoning_effort").is_none());
    }

    #[test]
    fn rejects_what_anthropic_cannot_do() {
        let mut req = ChatRequest::new("c", vec![Message::user("hi")]);
        req.n = Some(2);
        assert_eq!(
            encode_request(&req, "c", false).unwrap_err().kind(),
            ErrorKind::Unsupported
        );
    }

    #[test]
    fn decodes_recorded_response_with_cache_usage() {
        let body = json!({
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-20250514",
            "content": [{"type": "text", "text": "Let me check."},
                        {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 12, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000, "output_tokens": 30}
        });
        let r = decode_response("a", &body).unwrap();
        assert_eq!(r.first_text(), "Let me check.");
        assert_eq!(r.finish_reasons(), vec![FinishReason::ToolCalls]);
        let call = &r.choices[0].message.tool_calls.as_ref().unwrap()[0];
        assert_eq!(call.function.name, "get_weather");
        assert_eq!(call.function.arguments, "{\"city\":\"Paris\"}");
        let u = r.usage.unwrap();
        assert_eq!(u.input_tokens, 2112);
        assert_eq!(u.cache_read_tokens, 2000);
        assert_eq!(u.cache_write_tokens, 100);
        assert_eq!(u.output_tokens, 30);
        assert!(decode_response("a", &json!({"id": "x"})).is_err());
    }

    #[test]
    fn decodes_recorded_event_stream() {
        let events = [
            (
                "message_start",
                r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_read_input_tokens":100,"output_tokens":1}}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            ("ping", r#"{"type": "ping"}"#),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": "}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}"#,
            ),
            ("some_future_event", r#"{"type":"some_future_event"}"#),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":15}}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ];
        let mut dec = StreamDecoder::new("a", true);
        let mut agg = llmops_core::ChunkAggregator::new();
        let mut done = false;
        for (name, data) in events {
            let d = dec.on_event(Some(name), data).unwrap();
            d.chunks.iter().for_each(|c| agg.push(c));
            done = d.done;
        }
        assert!(done);
        let r = agg.finish();
        assert_eq!(r.first_text(), "Hello");
        let call = &r.choices[0].message.tool_calls.as_ref().unwrap()[0];
        assert_eq!(call.function.arguments, "{\"city\": \"Paris\"}");
        let u = r.usage.unwrap();
        assert_eq!(
            (u.input_tokens, u.cache_read_tokens, u.output_tokens),
            (125, 100, 15)
        );
    }

    #[test]
    fn mid_stream_error_is_classified_by_position() {
        let err = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let mut dec = StreamDecoder::new("a", false);
        assert_eq!(
            dec.on_event(Some("error"), err).unwrap_err().kind(),
            ErrorKind::Overloaded
        );
        dec.on_event(
            None,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
        )
        .unwrap();
        assert_eq!(
            dec.on_event(Some("error"), err).unwrap_err().kind(),
            ErrorKind::StreamInterrupted {
                after_first_event: true
            }
        );
        assert_eq!(
            dec.on_event(None, "{oops").unwrap_err().kind(),
            ErrorKind::Decode
        );
    }
}
