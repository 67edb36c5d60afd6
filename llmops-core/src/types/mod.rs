//! Wire types shaped like the OpenAI API: chat requests, responses, streaming chunks,
//! embeddings and model listings.

mod embed;
mod request;
mod response;

pub use embed::{
    Embedding, EmbeddingInput, EmbeddingRequest, EmbeddingResponse, ModelInfo, ModelList,
};
pub use request::{
    ChatRequest, Content, ContentPart, Extra, FunctionCall, FunctionDef, ImageUrl,
    JsonSchemaFormat, KnownPart, Message, ResponseFormat, Role, Stop, StreamOptions, Tool,
    ToolCall, json_error, parse_chat_request,
};
pub use response::{
    ChatChunk, ChatResponse, Choice, ChunkAggregator, ChunkChoice, Delta, FinishReason,
    FunctionCallDelta, ToolCallDelta, response_to_chunks, unix_now,
};
