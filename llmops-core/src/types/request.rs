//! The chat request, shaped like the OpenAI Chat Completions request JSON.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, ErrorKind};

/// A JSON object of fields this crate does not model; kept and passed through unchanged.
pub type Extra = Map<String, Value>;

fn is_empty_map(m: &Extra) -> bool {
    m.is_empty()
}

/// A chat completion request in the OpenAI Chat Completions shape.
///
/// Fields that layers need (model, messages, sampling parameters, tools, streaming options) are
/// typed; everything else — provider extensions such as vLLM's `top_k`, `min_p`,
/// `repetition_penalty`, `structured_outputs`, `cache_salt`, or OpenAI fields added after this
/// crate was written — lands in [`ChatRequest::extra`] and is serialized back unchanged, so a
/// request passes through a pipeline to an OpenAI-compatible upstream with nothing lost.
///
/// An explicit JSON `null` for an optional typed field is read as "absent" and not written back.
///
/// ```
/// use llmops_core::ChatRequest;
///
/// let req: ChatRequest = serde_json::from_str(r#"{
///     "model": "sim",
///     "messages": [{"role": "user", "content": "Hello"}],
///     "top_k": 40
/// }"#).unwrap();
/// assert_eq!(req.messages[0].text(), "Hello");
/// assert_eq!(req.extra["top_k"], 40);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChatRequest {
    /// The model name the client asked for.
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Legacy cap on generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Cap on generated tokens, reasoning included (newer OpenAI name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    /// How many choices to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Whether to stream the answer as server-sent events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Streaming options (`include_usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Presence penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    /// Frequency penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// Token id → bias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<Map<String, Value>>,
    /// Whether to return log probabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// How many top log probabilities to return per token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    /// Seed for deterministic sampling, where the upstream supports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// The end user, for abuse monitoring and per-user budgets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// `"none"`, `"auto"`, `"required"` or `{"type": "function", "function": {"name": ...}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// Whether the model may call several tools at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// Output format: text, JSON object or JSON schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// Free-form metadata (OpenAI stores it with the completion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// Every other field, kept verbatim.
    #[serde(flatten, default, skip_serializing_if = "is_empty_map")]
    pub extra: Extra,
}

impl ChatRequest {
    /// A request for `model` with `messages` and nothing else set.
    pub fn new(model: impl Into<String>, messages: Vec<Message>) -> Self {
        Self {
            model: model.into(),
            messages,
            ..Self::default()
        }
    }

    /// Sets `stream` (builder style).
    #[must_use]
    pub fn with_stream(mut self, stream: bool) -> Self {
        self.stream = Some(stream);
        self
    }

    /// Sets `max_tokens` (builder style).
    #[must_use]
    pub fn with_max_tokens(mut self, max_tokens: u64) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// Sets `temperature` (builder style).
    #[must_use]
    pub fn with_temperature(mut self, temperature: f64) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Whether the client asked for a streamed answer.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether a streamed answer must end with a usage chunk (`stream_options.include_usage`).
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// The output-token cap the client set, whichever field it used.
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Checks what every upstream would reject anyway, so the pipeline refuses it before
    /// spending anything: an empty model name, no messages, out-of-range sampling values.
    pub fn validate(&self) -> Result<(), Error> {
        if self.model.trim().is_empty() {
            return Err(Error::invalid_request(
                "`model` must not be empty",
                Some("model"),
            ));
        }
        if self.messages.is_empty() {
            return Err(Error::invalid_request(
                "`messages` must contain at least one message",
                Some("messages"),
            ));
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(Error::invalid_request(
                format!("`temperature` must be between 0 and 2, got {t}"),
                Some("temperature"),
            ));
        }
        if let Some(p) = self.top_p
            && !(0.0..=1.0).contains(&p)
        {
            return Err(Error::invalid_request(
                format!("`top_p` must be between 0 and 1, got {p}"),
                Some("top_p"),
            ));
        }
        if self.n == Some(0) {
            return Err(Error::invalid_request("`n` must be at least 1", Some("n")));
        }
        if self.max_output_tokens() == Some(0) {
            return Err(Error::invalid_request(
                "`max_tokens` must be at least 1",
                Some("max_tokens"),
            ));
        }
        Ok(())
    }
}

/// One message of the conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its content: a string or a list of parts. Absent on assistant messages that only call
    /// tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// An optional participant name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tool calls made by an assistant message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Every other field, kept verbatim.
    #[serde(flatten, default, skip_serializing_if = "is_empty_map")]
    pub extra: Extra,
}

impl Message {
    /// A message of `role` with text content.
    pub fn new(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: Some(Content::Text(text.into())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            extra: Extra::new(),
        }
    }

    /// A system message.
    pub fn system(text: impl Into<String>) -> Self {
        Self::new(Role::System, text)
    }

    /// A user message.
    pub fn user(text: impl Into<String>) -> Self {
        Self::new(Role::User, text)
    }

    /// An assistant message.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self::new(Role::Assistant, text)
    }

    /// A tool result answering the call `tool_call_id`.
    pub fn tool(tool_call_id: impl Into<String>, text: impl Into<String>) -> Self {
        let mut m = Self::new(Role::Tool, text);
        m.tool_call_id = Some(tool_call_id.into());
        m
    }

    /// The message's text: the string content, or its text parts joined with newlines.
    pub fn text(&self) -> String {
        self.content.as_ref().map(Content::text).unwrap_or_default()
    }
}

/// The author of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Role {
    /// System instructions.
    System,
    /// Developer instructions (newer OpenAI models' name for system).
    Developer,
    /// The end user.
    User,
    /// The model.
    Assistant,
    /// A tool result.
    Tool,
    /// A legacy function result.
    Function,
}

impl Role {
    /// The role's wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::System => "system",
            Self::Developer => "developer",
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Tool => "tool",
            Self::Function => "function",
        }
    }
}

/// Message content: a plain string or a list of typed parts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Typed parts (text, images, audio, files).
    Parts(Vec<ContentPart>),
}

impl Content {
    /// The text of the content: the string, or the text parts joined with newlines.
    pub fn text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Parts(parts) => {
                let mut out = String::new();
                for t in parts.iter().filter_map(ContentPart::as_text) {
                    if !out.is_empty() {
                        out.push('\n');
                    }
                    out.push_str(t);
                }
                out
            }
        }
    }

    /// Calls `f` on every piece of text in the content, without allocating.
    pub fn for_each_text(&self, mut f: impl FnMut(&str)) {
        match self {
            Self::Text(s) => f(s),
            Self::Parts(parts) => parts.iter().filter_map(ContentPart::as_text).for_each(f),
        }
    }
}

/// One part of a multi-part message.
///
/// Text and image parts are typed; any other part type (audio, files, provider-specific parts)
/// is kept as raw JSON in [`ContentPart::Other`], so nothing is lost in transit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum ContentPart {
    /// A typed part this crate understands.
    Known(KnownPart),
    /// A part of another type, kept verbatim.
    Other(Value),
}

impl ContentPart {
    /// A text part.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Known(KnownPart::Text {
            text: text.into(),
            extra: Extra::new(),
        })
    }

    /// An image part referring to `url` (an `https:` or `data:` URL).
    pub fn image_url(url: impl Into<String>) -> Self {
        Self::Known(KnownPart::ImageUrl {
            image_url: ImageUrl {
                url: url.into(),
                detail: None,
                extra: Extra::new(),
            },
            extra: Extra::new(),
        })
    }

    /// The part's text, if it is a text part.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Known(KnownPart::Text { text, .. }) => Some(text),
            _ => None,
        }
    }
}

/// The content-part types this crate models.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum KnownPart {
    /// `{"type": "text", "text": ...}`
    Text {
        /// The text.
        text: String,
        /// Other fields (e.g. `cache_control`), kept verbatim.
        #[serde(flatten, default, skip_serializing_if = "is_empty_map")]
        extra: Extra,
    },
    /// `{"type": "image_url", "image_url": {"url": ..., "detail": ...}}`
    ImageUrl {
        /// The image reference.
        image_url: ImageUrl,
        /// Other fields, kept verbatim.
        #[serde(flatten, default, skip_serializing_if = "is_empty_map")]
        extra: Extra,
    },
}

/// An image reference.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ImageUrl {
    /// An `https:` URL or a `data:` URL with base64 content.
    pub url: String,
    /// `low`, `high` or `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Other fields, kept verbatim.
    #[serde(flatten, default, skip_serializing_if = "is_empty_map")]
    pub extra: Extra,
}

/// Stop sequences: one string or several.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// A single stop sequence.
    One(String),
    /// Several stop sequences.
    Many(Vec<String>),
}

impl Stop {
    /// The stop sequences as a slice-like iterator.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let (one, many): (Option<&str>, &[String]) = match self {
            Self::One(s) => (Some(s.as_str()), &[]),
            Self::Many(v) => (None, v.as_slice()),
        };
        one.into_iter().chain(many.iter().map(String::as_str))
    }
}

/// Streaming options.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StreamOptions {
    /// Send a final chunk with the usage of the whole request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Other fields, kept verbatim.
    #[serde(flatten, default, skip_serializing_if = "is_empty_map")]
    pub extra: Extra,
}

impl StreamOptions {
    /// Options asking for (or not) the final usage chunk.
    pub fn include_usage(include: bool) -> Self {
        Self {
            include_usage: Some(include),
            extra: Extra::new(),
        }
    }
}

/// A tool the model may call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Tool {
    /// Always `"function"` today.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    /// The function's definition.
    pub function: FunctionDef,
    /// Other fields, kept verbatim.
    #[serde(flatten, default, skip_serializing_if = "is_empty_map")]
    pub extra: Extra,
}

fn function_type() -> String {
    "function".to_owned()
}

impl Tool {
    /// A function tool with a JSON-schema for its arguments.
    pub fn function(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: Value,
    ) -> Self {
        Self {
            kind: function_type(),
            function: FunctionDef {
                name: name.into(),
                description: Some(description.into()),
                parameters: Some(parameters),
                strict: None,
                extra: Extra::new(),
            },
            extra: Extra::new(),
        }
    }
}

/// A function's definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FunctionDef {
    /// The function name.
    pub name: String,
    /// What the function does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema of its arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Whether the upstream must follow the schema exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    /// Other fields, kept verbatim.
    #[serde(flatten, default, skip_serializing_if = "is_empty_map")]
    pub extra: Extra,
}

/// A tool call made by the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ToolCall {
    /// The call id, echoed by the tool result.
    pub id: String,
    /// Always `"function"` today.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    /// Which function, with which arguments.
    pub function: FunctionCall,
    /// Other fields, kept verbatim.
    #[serde(flatten, default, skip_serializing_if = "is_empty_map")]
    pub extra: Extra,
}

impl ToolCall {
    /// A function call with JSON-encoded arguments.
    pub fn function(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            kind: function_type(),
            function: FunctionCall {
                name: name.into(),
                arguments: arguments.into(),
            },
            extra: Extra::new(),
        }
    }
}

/// A function name and its JSON-encoded arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FunctionCall {
    /// The function name.
    pub name: String,
    /// The arguments as a JSON string (as the model produced it; it may not be valid JSON).
    pub arguments: String,
}

/// The requested output format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResponseFormat {
    /// Free text.
    Text,
    /// Any valid JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        /// The schema and its name.
        json_schema: JsonSchemaFormat,
    },
}

impl ResponseFormat {
    /// JSON output following `schema`, named `name`.
    pub fn json_schema(name: impl Into<String>, schema: Value, strict: bool) -> Self {
        Self::JsonSchema {
            json_schema: JsonSchemaFormat {
                name: name.into(),
                description: None,
                schema: Some(schema),
                strict: Some(strict),
            },
        }
    }
}

/// A named JSON schema for structured output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JsonSchemaFormat {
    /// The schema's name.
    pub name: String,
    /// What the output is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON Schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// Whether the upstream must follow the schema exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// Parses a chat request from raw bytes, with errors that say what is wrong and where.
///
/// Invalid UTF-8, broken JSON and wrong field types all become
/// [`ErrorKind::InvalidRequest`] errors naming the position or the field; the request is then
/// [validated](ChatRequest::validate).
pub fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, Error> {
    let text = std::str::from_utf8(body).map_err(|e| {
        Error::new(
            ErrorKind::InvalidRequest,
            format!(
                "request body is not valid UTF-8 (at byte {})",
                e.valid_up_to()
            ),
        )
    })?;
    let req: ChatRequest = serde_json::from_str(text).map_err(|e| json_error(&e))?;
    req.validate()?;
    Ok(req)
}

/// Turns a serde_json error into an invalid-request error with a readable message.
pub fn json_error(e: &serde_json::Error) -> Error {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Syntax | Category::Eof => "request body is not valid JSON",
        Category::Data => "request body has a field of the wrong type or value",
        Category::Io => "request body could not be read",
    };
    Error::new(ErrorKind::InvalidRequest, format!("{what}: {e}"))
}
