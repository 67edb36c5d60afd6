//! Embedding cosine similarity.

use std::sync::Arc;

use async_trait::async_trait;
use llmops_core::{Embedder, EvalInput, Evaluator, Score};

use super::Reference;

/// Cosine similarity between the output's embedding and the reference's (the best over
/// several references). Embedding failures are evaluation errors.
pub struct EmbeddingSimilarity {
    name: String,
    reference: Reference,
    embedder: Arc<dyn Embedder>,
    threshold: f64,
}

impl std::fmt::Debug for EmbeddingSimilarity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingSimilarity")
            .field("name", &self.name)
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

impl EmbeddingSimilarity {
    /// Similarity to `reference` with `embedder`, passing at `threshold` (default 0.8).
    pub fn new(name: impl Into<String>, reference: Reference, embedder: Arc<dyn Embedder>) -> Self {
        Self {
            name: name.into(),
            reference,
            embedder,
            threshold: 0.8,
        }
    }

    /// Sets the threshold (builder style).
    #[must_use]
    pub fn threshold(mut self, t: f64) -> Self {
        self.threshold = t;
        self
    }
}

/// The cosine similarity of two vectors (0 when either is zero or they differ in length).
pub(crate) fn cosine(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

#[async_trait]
impl Evaluator for EmbeddingSimilarity {
    fn name(&self) -> &str {
        &self.name
    }

    async fn evaluate(&self, input: &EvalInput) -> llmops_core::Result<Score> {
        let refs = self.reference.strings(input)?;
        let mut texts = Vec::with_capacity(refs.len() + 1);
        texts.push(input.output.clone());
        texts.extend(refs);
        let vectors = self.embedder.embed(&texts).await?;
        if vectors.len() != texts.len() {
            return Err(llmops_core::Error::new(
                llmops_core::ErrorKind::Decode,
                format!(
                    "embedder returned {} vectors for {} texts",
                    vectors.len(),
                    texts.len()
                ),
            ));
        }
        let best = vectors[1..]
            .iter()
            .map(|v| cosine(&vectors[0], v))
            .fold(f64::MIN, f64::max);
        Ok(Score::new(
            best,
            self.threshold,
            format!("cosine similarity {best:.3} (threshold {})", self.threshold),
        ))
    }
}

#[cfg(test)]
mod tests {
    use llmops_core::ProviderEmbedder;
    use llmops_core::mock::{MockProvider, MockReply};
    use serde_json::json;

    use super::super::test_util::input;
    use super::*;

    #[tokio::test]
    async fn identical_texts_are_similar_and_failures_are_errors() {
        let mock = MockProvider::new("emb").embedding_dims(16);
        let e = EmbeddingSimilarity::new(
            "sim",
            Reference::Expected,
            Arc::new(ProviderEmbedder::new(Arc::new(mock.clone()), "e")),
        );
        let s = e
            .evaluate(&input("Paris", Some(json!("Paris"))))
            .await
            .unwrap();
        assert!((s.value - 1.0).abs() < 1e-6 && s.passed);
        mock.push_reply(MockReply::error(llmops_core::ErrorKind::ServerError));
        assert!(
            e.evaluate(&input("Paris", Some(json!("Rome"))))
                .await
                .is_err()
        );
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 1.0]), 0.0);
        assert_eq!(cosine(&[1.0], &[1.0, 2.0]), 0.0);
    }
}
