//! Embeddings and model listings, shaped like OpenAI's `/v1/embeddings` and `/v1/models`.

use serde::{Deserialize, Serialize};

use super::request::Extra;
use crate::error::Error;
use crate::usage::Usage;

fn is_empty_map(m: &Extra) -> bool {
    m.is_empty()
}

/// An embeddings request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EmbeddingRequest {
    /// The model name the client asked for.
    pub model: String,
    /// What to embed.
    pub input: EmbeddingInput,
    /// `float` (default) or `base64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    /// Output dimensions, for models that support shortening.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    /// The end user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Every other field, kept verbatim.
    #[serde(flatten, default, skip_serializing_if = "is_empty_map")]
    pub extra: Extra,
}

impl EmbeddingRequest {
    /// A request embedding `inputs` with `model`.
    pub fn new(model: impl Into<String>, inputs: Vec<String>) -> Self {
        Self {
            model: model.into(),
            input: EmbeddingInput::Many(inputs),
            encoding_format: None,
            dimensions: None,
            user: None,
            extra: Extra::new(),
        }
    }

    /// Checks the request: a model, at least one input, no empty token arrays.
    pub fn validate(&self) -> Result<(), Error> {
        if self.model.trim().is_empty() {
            return Err(Error::invalid_request(
                "`model` must not be empty",
                Some("model"),
            ));
        }
        if self.input.is_empty() {
            return Err(Error::invalid_request(
                "`input` must not be empty",
                Some("input"),
            ));
        }
        if let Some(f) = &self.encoding_format
            && f != "float"
            && f != "base64"
        {
            return Err(Error::invalid_request(
                format!("`encoding_format` must be \"float\" or \"base64\", got {f:?}"),
                Some("encoding_format"),
            ));
        }
        Ok(())
    }
}

/// The `input` of an embeddings request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    One(String),
    /// Several texts.
    Many(Vec<String>),
    /// One pre-tokenized input.
    Tokens(Vec<u32>),
    /// Several pre-tokenized inputs.
    ManyTokens(Vec<Vec<u32>>),
}

impl EmbeddingInput {
    /// How many vectors the request asks for.
    pub fn len(&self) -> usize {
        match self {
            Self::One(_) | Self::Tokens(_) => 1,
            Self::Many(v) => v.len(),
            Self::ManyTokens(v) => v.len(),
        }
    }

    /// Whether there is nothing to embed.
    pub fn is_empty(&self) -> bool {
        match self {
            Self::One(_) => false,
            Self::Tokens(t) => t.is_empty(),
            Self::Many(v) => v.is_empty(),
            Self::ManyTokens(v) => v.is_empty() || v.iter().any(Vec::is_empty),
        }
    }

    /// The inputs as texts, if they are texts (token inputs give `None`).
    pub fn texts(&self) -> Option<Vec<&str>> {
        match self {
            Self::One(s) => Some(vec![s.as_str()]),
            Self::Many(v) => Some(v.iter().map(String::as_str).collect()),
            Self::Tokens(_) | Self::ManyTokens(_) => None,
        }
    }
}

/// An embeddings response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EmbeddingResponse {
    /// Always `"list"`.
    pub object: String,
    /// One vector per input, in input order.
    pub data: Vec<Embedding>,
    /// The model that answered.
    pub model: String,
    /// Token usage (input only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Every other field, kept verbatim.
    #[serde(flatten, default, skip_serializing_if = "is_empty_map")]
    pub extra: Extra,
}

impl EmbeddingResponse {
    /// A response holding `vectors` in input order.
    pub fn new(model: impl Into<String>, vectors: Vec<Vec<f32>>, usage: Option<Usage>) -> Self {
        let data = vectors
            .into_iter()
            .enumerate()
            .map(|(i, embedding)| Embedding {
                object: "embedding".to_owned(),
                index: u32::try_from(i).unwrap_or(u32::MAX),
                embedding,
            })
            .collect();
        Self {
            object: "list".to_owned(),
            data,
            model: model.into(),
            usage,
            extra: Extra::new(),
        }
    }
}

/// One embedding vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Embedding {
    /// Always `"embedding"`.
    pub object: String,
    /// Which input this vector belongs to.
    pub index: u32,
    /// The vector.
    pub embedding: Vec<f32>,
}

/// One entry of `GET /v1/models`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ModelInfo {
    /// The model name clients send.
    pub id: String,
    /// Always `"model"`.
    pub object: String,
    /// Unix time of creation.
    pub created: u64,
    /// Who owns it.
    pub owned_by: String,
    /// The context window, where known (vLLM's `max_model_len`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_model_len: Option<u64>,
}

impl ModelInfo {
    /// A model entry.
    pub fn new(id: impl Into<String>, owned_by: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            object: "model".to_owned(),
            created: 0,
            owned_by: owned_by.into(),
            max_model_len: None,
        }
    }
}

/// The body of `GET /v1/models`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ModelList {
    /// Always `"list"`.
    pub object: String,
    /// The models.
    pub data: Vec<ModelInfo>,
}

impl ModelList {
    /// A list of `models`.
    pub fn new(data: Vec<ModelInfo>) -> Self {
        Self {
            object: "list".to_owned(),
            data,
        }
    }
}
