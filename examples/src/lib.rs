//! Example code of an application using llmops, with its unit tests written against
//! [`MockProvider`](llmops_core::mock::MockProvider).
//!
//! [`classify_ticket`] is the kind of function an application has: it builds a prompt,
//! calls a model through any [`Provider`], and parses the answer. Its tests script the
//! model's replies — a good answer, a malformed one, an outage — and assert on the prompt
//! that was sent, with no network and no API key:
//!
//! ```
//! use llmops_core::mock::{MockProvider, MockReply};
//! use llmops_examples::{Category, classify_ticket};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let model = MockProvider::new("mock")
//!     .reply(MockReply::text(r#"{"category": "billing", "urgent": true}"#));
//!
//! let verdict = classify_ticket(&model, "I was charged twice!").await.unwrap();
//!
//! assert_eq!(verdict.category, Category::Billing);
//! assert!(verdict.urgent);
//! let sent = model.last_chat_request().unwrap();
//! assert!(sent.messages[1].text().contains("charged twice"));
//! assert_eq!(sent.temperature, Some(0.0));
//! # }
//! ```
//!
//! Runnable programs are in `examples/examples/`: `cargo run -p llmops-examples --example
//! library_pipeline`.

use llmops_core::{ChatRequest, Message, Provider, RequestContext, ResponseFormat};
use serde::Deserialize;

/// Ticket categories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// Payments and invoices.
    Billing,
    /// Something is broken.
    Bug,
    /// Anything else.
    Other,
}

/// The model's verdict on a ticket.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Verdict {
    /// The category.
    pub category: Category,
    /// Whether a human should look now.
    pub urgent: bool,
}

/// Why a ticket could not be classified.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    /// The model call failed.
    #[error("model call failed: {0}")]
    Model(#[from] llmops_core::Error),
    /// The model answered something that is not a verdict.
    #[error("model answered something that is not a verdict ({source}): {answer:?}")]
    BadAnswer {
        /// The answer.
        answer: String,
        /// The parse error.
        source: serde_json::Error,
    },
}

/// Asks `model` to classify a support ticket.
pub async fn classify_ticket(model: &dyn Provider, ticket: &str) -> Result<Verdict, ClassifyError> {
    let mut req = ChatRequest::new(
        "classifier",
        vec![
            Message::system(
                "Classify the support ticket. Answer JSON: \
                 {\"category\": \"billing\"|\"bug\"|\"other\", \"urgent\": bool}",
            ),
            Message::user(ticket),
        ],
    )
    .with_temperature(0.0);
    req.response_format = Some(ResponseFormat::JsonObject);
    let resp = model
        .chat(req, &RequestContext::new().with_tag("feature", "triage"))
        .await?;
    let answer = resp.first_text();
    serde_json::from_str(&answer).map_err(|source| ClassifyError::BadAnswer { answer, source })
}

#[cfg(test)]
mod tests {
    use llmops_core::ErrorKind;
    use llmops_core::mock::{MockProvider, MockReply};

    use super::*;

    #[tokio::test]
    async fn malformed_answer_is_reported_with_the_answer() {
        let model = MockProvider::new("mock").reply(MockReply::text("billing, probably"));
        let err = classify_ticket(&model, "refund?").await.unwrap_err();
        assert!(
            matches!(err, ClassifyError::BadAnswer { ref answer, .. } if answer == "billing, probably")
        );
    }

    #[tokio::test]
    async fn outage_is_a_model_error() {
        let model = MockProvider::new("mock").reply(MockReply::error(ErrorKind::Overloaded));
        let err = classify_ticket(&model, "app crashes").await.unwrap_err();
        assert!(matches!(err, ClassifyError::Model(ref e) if e.kind() == ErrorKind::Overloaded));
        model.assert_call_count(1);
    }

    #[tokio::test]
    async fn context_carries_the_feature_tag() {
        let model = MockProvider::new("mock")
            .reply(MockReply::text(r#"{"category": "bug", "urgent": false}"#));
        classify_ticket(&model, "button does nothing")
            .await
            .unwrap();
        assert_eq!(model.calls()[0].ctx.tags["feature"], "triage");
    }
}

/// The README's code, compiled and run as doc tests so it stays true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
