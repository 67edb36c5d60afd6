//! Chat responses and streaming chunks, shaped like OpenAI's `chat.completion` and
//! `chat.completion.chunk` objects.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::request::{Extra, Message, Role, ToolCall};
use crate::usage::Usage;

fn is_empty_map(m: &Extra) -> bool {
    m.is_empty()
}

fn chat_completion() -> String {
    "chat.completion".to_owned()
}

fn chat_completion_chunk() -> String {
    "chat.completion.chunk".to_owned()
}

/// A complete (non-streamed) chat answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChatResponse {
    /// The completion id.
    pub id: String,
    /// Always `"chat.completion"`.
    #[serde(default = "chat_completion")]
    pub object: String,
    /// Unix time (seconds) of creation.
    #[serde(default)]
    pub created: u64,
    /// The model that answered (as the upstream named it).
    #[serde(default)]
    pub model: String,
    /// The generated choices.
    pub choices: Vec<Choice>,
    /// Token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The upstream's backend configuration fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    /// Every other field, kept verbatim.
    #[serde(flatten, default, skip_serializing_if = "is_empty_map")]
    pub extra: Extra,
}

impl ChatResponse {
    /// A response with one assistant choice holding `text`, finished with `stop`.
    pub fn text(
        id: impl Into<String>,
        model: impl Into<String>,
        text: impl Into<String>,
        usage: Option<Usage>,
    ) -> Self {
        Self {
            id: id.into(),
            object: chat_completion(),
            created: unix_now(),
            model: model.into(),
            choices: vec![Choice {
                index: 0,
                message: Message::assistant(text),
                finish_reason: Some(FinishReason::Stop),
                logprobs: None,
                extra: Extra::new(),
            }],
            usage,
            system_fingerprint: None,
            extra: Extra::new(),
        }
    }

    /// The text of the first choice (empty if there is none).
    pub fn first_text(&self) -> String {
        self.choices
            .first()
            .map(|c| c.message.text())
            .unwrap_or_default()
    }

    /// The finish reasons of all choices, in order.
    pub fn finish_reasons(&self) -> Vec<FinishReason> {
        self.choices
            .iter()
            .filter_map(|c| c.finish_reason.clone())
            .collect()
    }
}

/// One choice of a [`ChatResponse`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Choice {
    /// Position of the choice.
    #[serde(default)]
    pub index: u32,
    /// The assistant message.
    pub message: Message,
    /// Why generation stopped.
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
    /// Log probabilities, as the upstream sent them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
    /// Every other field, kept verbatim.
    #[serde(flatten, default, skip_serializing_if = "is_empty_map")]
    pub extra: Extra,
}

/// Why the model stopped generating.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FinishReason {
    /// A natural stop or a stop sequence.
    Stop,
    /// The output-token cap was reached.
    Length,
    /// The model called tools.
    ToolCalls,
    /// Content was filtered.
    ContentFilter,
    /// A legacy function call.
    FunctionCall,
    /// Any other reason, kept verbatim.
    Other(String),
}

impl FinishReason {
    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ToolCalls => "tool_calls",
            Self::ContentFilter => "content_filter",
            Self::FunctionCall => "function_call",
            Self::Other(s) => s,
        }
    }
}

impl From<&str> for FinishReason {
    fn from(s: &str) -> Self {
        match s {
            "stop" => Self::Stop,
            "length" => Self::Length,
            "tool_calls" => Self::ToolCalls,
            "content_filter" => Self::ContentFilter,
            "function_call" => Self::FunctionCall,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for FinishReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FinishReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FinishReason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(Self::from(s.as_ref()))
    }
}

/// One server-sent event of a streamed answer: OpenAI's `chat.completion.chunk`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChatChunk {
    /// The completion id (the same in every chunk of a stream).
    pub id: String,
    /// Always `"chat.completion.chunk"`.
    #[serde(default = "chat_completion_chunk")]
    pub object: String,
    /// Unix time (seconds) of creation.
    #[serde(default)]
    pub created: u64,
    /// The model that answers.
    #[serde(default)]
    pub model: String,
    /// Deltas per choice; empty in the final usage chunk.
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// Usage of the whole request: only in the final chunk, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The upstream's backend configuration fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    /// Every other field, kept verbatim.
    #[serde(flatten, default, skip_serializing_if = "is_empty_map")]
    pub extra: Extra,
}

impl ChatChunk {
    /// A chunk with no choices and no usage; fill it with the builder methods.
    pub fn new(id: impl Into<String>, model: impl Into<String>, created: u64) -> Self {
        Self {
            id: id.into(),
            object: chat_completion_chunk(),
            created,
            model: model.into(),
            choices: Vec::new(),
            usage: None,
            system_fingerprint: None,
            extra: Extra::new(),
        }
    }

    /// Adds a choice delta (builder style).
    #[must_use]
    pub fn with_choice(mut self, choice: ChunkChoice) -> Self {
        self.choices.push(choice);
        self
    }

    /// Sets the usage (builder style).
    #[must_use]
    pub fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = Some(usage);
        self
    }

    /// Whether this chunk carries content for the caller (text, tool-call or reasoning
    /// deltas): the point after which a stream can no longer be retried transparently.
    pub fn has_content(&self) -> bool {
        self.choices.iter().any(|c| c.delta.has_content())
    }
}

/// The delta of one choice within a [`ChatChunk`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChunkChoice {
    /// Position of the choice.
    #[serde(default)]
    pub index: u32,
    /// What this chunk adds.
    #[serde(default)]
    pub delta: Delta,
    /// Why generation stopped, in the choice's last chunk.
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
    /// Log probabilities, as the upstream sent them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
    /// Every other field, kept verbatim.
    #[serde(flatten, default, skip_serializing_if = "is_empty_map")]
    pub extra: Extra,
}

impl ChunkChoice {
    /// A delta adding `text` to choice `index`.
    pub fn text(index: u32, text: impl Into<String>) -> Self {
        Self {
            index,
            delta: Delta {
                content: Some(text.into()),
                ..Delta::default()
            },
            ..Self::default()
        }
    }

    /// The first delta of a choice, announcing the assistant role.
    pub fn role(index: u32) -> Self {
        Self {
            index,
            delta: Delta {
                role: Some(Role::Assistant),
                content: Some(String::new()),
                ..Delta::default()
            },
            ..Self::default()
        }
    }

    /// The last delta of a choice, with its finish reason.
    pub fn finish(index: u32, reason: FinishReason) -> Self {
        Self {
            index,
            finish_reason: Some(reason),
            ..Self::default()
        }
    }
}

/// Incremental content of a streamed choice.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Delta {
    /// The role, in the first delta.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Text to append.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Reasoning text to append (vLLM, DeepSeek-style reasoning models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Tool-call fragments to merge by index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    /// A refusal message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Every other field, kept verbatim.
    #[serde(flatten, default, skip_serializing_if = "is_empty_map")]
    pub extra: Extra,
}

impl Delta {
    /// Whether the delta carries content (not just a role).
    pub fn has_content(&self) -> bool {
        self.content.as_deref().is_some_and(|s| !s.is_empty())
            || self
                .reasoning_content
                .as_deref()
                .is_some_and(|s| !s.is_empty())
            || self.refusal.as_deref().is_some_and(|s| !s.is_empty())
            || self.tool_calls.as_ref().is_some_and(|t| !t.is_empty())
    }
}

/// A fragment of a tool call in a streamed answer; fragments with the same `index` are
/// concatenated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ToolCallDelta {
    /// Which tool call this fragment belongs to.
    pub index: u32,
    /// The call id (first fragment only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `"function"` (first fragment only).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name and argument fragments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
}

impl ToolCallDelta {
    /// The first fragment of a call: id and name.
    pub fn start(index: u32, id: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            index,
            id: Some(id.into()),
            kind: Some("function".to_owned()),
            function: Some(FunctionCallDelta {
                name: Some(name.into()),
                arguments: None,
            }),
        }
    }

    /// A fragment of the arguments.
    pub fn arguments(index: u32, fragment: impl Into<String>) -> Self {
        Self {
            index,
            id: None,
            kind: None,
            function: Some(FunctionCallDelta {
                name: None,
                arguments: Some(fragment.into()),
            }),
        }
    }
}

/// Name and argument fragments of a [`ToolCallDelta`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FunctionCallDelta {
    /// The function name (first fragment only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A fragment of the JSON arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// Folds the chunks of a stream back into a complete [`ChatResponse`]: text and reasoning are
/// concatenated per choice, tool-call fragments merged by index, the last usage kept.
///
/// Layers use it to cache or audit a streamed answer exactly as a non-streamed one.
#[derive(Debug, Default)]
pub struct ChunkAggregator {
    id: String,
    model: String,
    created: u64,
    system_fingerprint: Option<String>,
    choices: Vec<AggChoice>,
    usage: Option<Usage>,
}

#[derive(Debug, Default)]
struct AggChoice {
    text: String,
    has_text: bool,
    reasoning: String,
    refusal: String,
    tools: Vec<ToolCall>,
    finish: Option<FinishReason>,
}

impl ChunkAggregator {
    /// An empty aggregator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one chunk.
    pub fn push(&mut self, chunk: &ChatChunk) {
        if self.id.is_empty() {
            self.id.clone_from(&chunk.id);
            self.model.clone_from(&chunk.model);
            self.created = chunk.created;
        }
        if chunk.system_fingerprint.is_some() {
            self.system_fingerprint
                .clone_from(&chunk.system_fingerprint);
        }
        if let Some(u) = &chunk.usage {
            self.usage = Some(u.clone());
        }
        for c in &chunk.choices {
            let idx = c.index as usize;
            if self.choices.len() <= idx {
                self.choices.resize_with(idx + 1, AggChoice::default);
            }
            let agg = &mut self.choices[idx];
            if let Some(t) = &c.delta.content {
                agg.text.push_str(t);
                agg.has_text = true;
            }
            if let Some(r) = &c.delta.reasoning_content {
                agg.reasoning.push_str(r);
            }
            if let Some(r) = &c.delta.refusal {
                agg.refusal.push_str(r);
            }
            for tc in c.delta.tool_calls.iter().flatten() {
                let ti = tc.index as usize;
                if agg.tools.len() <= ti {
                    agg.tools
                        .resize_with(ti + 1, || ToolCall::function("", "", ""));
                }
                let call = &mut agg.tools[ti];
                if let Some(id) = &tc.id {
                    call.id.clone_from(id);
                }
                if let Some(f) = &tc.function {
                    if let Some(n) = &f.name {
                        call.function.name.push_str(n);
                    }
                    if let Some(a) = &f.arguments {
                        call.function.arguments.push_str(a);
                    }
                }
            }
            if c.finish_reason.is_some() {
                agg.finish.clone_from(&c.finish_reason);
            }
        }
    }

    /// The usage seen so far (the last usage any chunk carried).
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// The finish reasons seen so far.
    pub fn finish_reasons(&self) -> Vec<FinishReason> {
        self.choices
            .iter()
            .filter_map(|c| c.finish.clone())
            .collect()
    }

    /// Whether every choice seen has finished (and at least one was seen).
    pub fn is_finished(&self) -> bool {
        !self.choices.is_empty() && self.choices.iter().all(|c| c.finish.is_some())
    }

    /// The complete response.
    pub fn finish(self) -> ChatResponse {
        let choices = self
            .choices
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let mut message = Message::assistant(c.text);
                if !c.has_text && !c.tools.is_empty() {
                    message.content = None;
                }
                if !c.tools.is_empty() {
                    message.tool_calls = Some(c.tools);
                }
                if !c.reasoning.is_empty() {
                    message
                        .extra
                        .insert("reasoning_content".into(), Value::String(c.reasoning));
                }
                if !c.refusal.is_empty() {
                    message
                        .extra
                        .insert("refusal".into(), Value::String(c.refusal));
                }
                Choice {
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                    message,
                    finish_reason: c.finish,
                    logprobs: None,
                    extra: Extra::new(),
                }
            })
            .collect();
        ChatResponse {
            id: self.id,
            object: chat_completion(),
            created: self.created,
            model: self.model,
            choices,
            usage: self.usage,
            system_fingerprint: self.system_fingerprint,
            extra: Extra::new(),
        }
    }
}

/// Splits a complete response into the chunks of an equivalent stream: a role chunk, one
/// content chunk per choice (or tool-call chunks), a finish chunk, and a usage chunk when
/// `include_usage` is set. Used to replay cached answers to streaming clients.
pub fn response_to_chunks(resp: &ChatResponse, include_usage: bool) -> Vec<ChatChunk> {
    let mut out = Vec::with_capacity(resp.choices.len() * 3 + 1);
    let base = || {
        let mut c = ChatChunk::new(resp.id.clone(), resp.model.clone(), resp.created);
        c.system_fingerprint.clone_from(&resp.system_fingerprint);
        c
    };
    for choice in &resp.choices {
        out.push(base().with_choice(ChunkChoice::role(choice.index)));
        if let Some(content) = &choice.message.content {
            let text = content.text();
            if !text.is_empty() {
                out.push(base().with_choice(ChunkChoice::text(choice.index, text)));
            }
        }
        for (i, call) in choice.message.tool_calls.iter().flatten().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            let mut start = ToolCallDelta::start(i, call.id.clone(), call.function.name.clone());
            if let Some(f) = &mut start.function {
                f.arguments = Some(call.function.arguments.clone());
            }
            let delta = Delta {
                tool_calls: Some(vec![start]),
                ..Delta::default()
            };
            out.push(base().with_choice(ChunkChoice {
                index: choice.index,
                delta,
                ..ChunkChoice::default()
            }));
        }
        let reason = choice.finish_reason.clone().unwrap_or(FinishReason::Stop);
        out.push(base().with_choice(ChunkChoice::finish(choice.index, reason)));
    }
    if include_usage && let Some(u) = &resp.usage {
        out.push(base().with_usage(u.clone()));
    }
    out
}

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
