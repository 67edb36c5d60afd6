//! Prompt-size estimates shared by the ceiling and budget layers.
//!
//! For byte-level BPE encodings every token covers at least one byte, so the UTF-8 length of
//! a prompt (plus the per-message framing tokens) is a free upper bound on its token count.
//! Layers decide with the bound first and tokenize only when it does not settle the question.
//! The ceiling layer leaves its result in the request's extensions as a [`PromptEstimate`],
//! so the budget layer does not count again.

use llmops_core::{ChatRequest, EmbeddingInput, RequestBody, TokenCounter};

/// Tokens of a request's input, as a layer estimated them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PromptEstimate {
    /// The count (an upper bound when `exact` is false).
    pub tokens: u64,
    /// Whether it is the tokenizer's exact count.
    pub exact: bool,
}

impl PromptEstimate {
    /// An estimate.
    pub fn new(tokens: u64, exact: bool) -> Self {
        Self { tokens, exact }
    }
}

pub use llmops_core::ResponseCost;

const TOKENS_PER_MESSAGE: u64 = 3;
const REPLY_PRIMING: u64 = 3;

fn tools_len(req: &ChatRequest) -> u64 {
    req.tools
        .as_ref()
        .map(|t| serde_json::to_vec(t).map(|v| v.len() as u64).unwrap_or(0))
        .unwrap_or(0)
}

/// An upper bound on the prompt tokens of a chat request under any byte-level BPE: message
/// framing tokens plus the UTF-8 bytes of roles, contents, names, tool calls and tool
/// definitions. Image and audio parts are not counted.
pub fn chat_upper_bound(req: &ChatRequest) -> u64 {
    let mut total = REPLY_PRIMING + tools_len(req);
    for m in &req.messages {
        total += TOKENS_PER_MESSAGE + m.role.as_str().len() as u64;
        if let Some(c) = &m.content {
            c.for_each_text(|t| total += t.len() as u64);
        }
        if let Some(n) = &m.name {
            total += 1 + n.len() as u64;
        }
        for call in m.tool_calls.iter().flatten() {
            total += (call.function.name.len() + call.function.arguments.len()) as u64;
        }
    }
    total
}

/// The exact prompt count of a chat request (OpenAI's message-counting rules) plus the
/// tokens of its tool definitions' JSON; `exact` is false when tools are present (their
/// upstream rendering is not public).
pub fn chat_exact(req: &ChatRequest, counter: &dyn TokenCounter) -> PromptEstimate {
    let mut n = counter.count_chat(req) as u64;
    let mut exact = true;
    if let Some(tools) = &req.tools {
        if let Ok(json) = serde_json::to_string(tools) {
            n += counter.count(&json) as u64;
        }
        exact = false;
    }
    PromptEstimate { tokens: n, exact }
}

/// An upper bound on the input tokens of any request body.
pub fn body_upper_bound(body: &RequestBody) -> u64 {
    match body {
        RequestBody::Chat(r) => chat_upper_bound(r),
        RequestBody::Embeddings(r) => match &r.input {
            EmbeddingInput::One(s) => s.len() as u64,
            EmbeddingInput::Many(v) => v.iter().map(|s| s.len() as u64).sum(),
            EmbeddingInput::Tokens(t) => t.len() as u64,
            EmbeddingInput::ManyTokens(v) => v.iter().map(|t| t.len() as u64).sum(),
        },
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use llmops_core::Message;

    use super::*;
    use crate::tokens::{Encoding, counter_for_encoding};

    #[test]
    fn bound_is_above_exact_count() {
        let req = ChatRequest::new(
            "gpt-4o",
            vec![
                Message::system("Be brief. 简洁。"),
                Message::user("Hello 😀 world, fn main() {}"),
            ],
        );
        let c = counter_for_encoding(Encoding::O200kBase);
        let exact = chat_exact(&req, c);
        assert!(exact.exact);
        assert!(exact.tokens <= chat_upper_bound(&req));
        assert_eq!(exact.tokens, c.count_chat(&req) as u64);
    }
}
