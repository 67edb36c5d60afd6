//! The [`Embedder`] trait: text to vectors.

use std::sync::Arc;

use async_trait::async_trait;

use crate::context::RequestContext;
use crate::error::{Error, ErrorKind, Result};
use crate::provider::Provider;
use crate::types::EmbeddingRequest;

/// Turns texts into vectors (semantic caches, similarity evaluators).
///
/// # Contract
///
/// Returns one vector per input text, in input order, all of the same dimension.
#[async_trait]
pub trait Embedder: Send + Sync {
    /// Embeds `texts`.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>>;
}

/// An [`Embedder`] backed by any [`Provider`] with embeddings.
#[derive(Clone)]
pub struct ProviderEmbedder {
    provider: Arc<dyn Provider>,
    model: String,
}

impl std::fmt::Debug for ProviderEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderEmbedder")
            .field("provider", &self.provider.name())
            .field("model", &self.model)
            .finish()
    }
}

impl ProviderEmbedder {
    /// Embeds with `model` on `provider`.
    pub fn new(provider: Arc<dyn Provider>, model: impl Into<String>) -> Self {
        Self {
            provider,
            model: model.into(),
        }
    }
}

#[async_trait]
impl Embedder for ProviderEmbedder {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let req = EmbeddingRequest::new(self.model.clone(), texts.to_vec());
        let mut resp = self.provider.embed(req, &RequestContext::new()).await?;
        if resp.data.len() != texts.len() {
            return Err(Error::new(
                ErrorKind::Decode,
                format!(
                    "asked for {} embeddings, got {}",
                    texts.len(),
                    resp.data.len()
                ),
            )
            .with_provider(self.provider.name()));
        }
        resp.data.sort_by_key(|e| e.index);
        Ok(resp.data.into_iter().map(|e| e.embedding).collect())
    }
}
