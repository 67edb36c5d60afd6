//! The [`TokenCounter`] trait: exact token counts.

use crate::types::ChatRequest;

/// Counts tokens exactly as a model's tokenizer does.
///
/// # Contract
///
/// - `count` equals the reference tokenizer's count for the encoding (e.g. OpenAI's tiktoken
///   for `o200k_base`) on any text.
/// - `count_chat` follows the model family's message-counting rules (for OpenAI chat models:
///   3 tokens per message, 1 for a name, 3 to prime the reply); the default does that.
/// - Counting is CPU-bound and synchronous; implementations share loaded vocabularies and
///   never build them per call.
pub trait TokenCounter: Send + Sync {
    /// The encoding's name (`o200k_base`, `cl100k_base`...).
    fn encoding(&self) -> &str;

    /// Tokens in `text`.
    fn count(&self, text: &str) -> usize;

    /// Tokens of a chat request's prompt, OpenAI's way.
    fn count_chat(&self, req: &ChatRequest) -> usize {
        let mut total = 3;
        for m in &req.messages {
            total += 3 + self.count(m.role.as_str());
            if let Some(c) = &m.content {
                c.for_each_text(|t| total += self.count(t));
            }
            if let Some(n) = &m.name {
                total += 1 + self.count(n);
            }
            for call in m.tool_calls.iter().flatten() {
                total += self.count(&call.function.name) + self.count(&call.function.arguments);
            }
        }
        total
    }
}
