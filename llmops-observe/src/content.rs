//! Opt-in message content on spans, and the redaction hook.
//!
//! By default no prompt or answer text reaches a span (OpenTelemetry GenAI: content SHOULD NOT
//! be captured by default). When capture is enabled
//! ([`ObserveConfigBuilder::capture_content`](crate::ObserveConfigBuilder::capture_content)),
//! every text passes through a [`ContentFilter`] before it is recorded as
//! `gen_ai.input.messages` / `gen_ai.output.messages`. The governance crate implements the
//! trait with its PII redactor; [`NoRedaction`] records text as is (for pre-production).

use std::borrow::Cow;

/// Which part of an exchange a text belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContentKind {
    /// A system or developer instruction.
    System,
    /// A user message.
    User,
    /// An assistant message in the request's history.
    Assistant,
    /// A tool result.
    Tool,
    /// The model's answer.
    Output,
}

/// Redacts message text before it is recorded on a span.
///
/// Return the text to record (borrowed when unchanged), or `None` to leave the message out.
/// Implementations must be cheap and must not block: they run on the request path when
/// content capture is on.
pub trait ContentFilter: Send + Sync + 'static {
    /// The text to record for `text`, or `None` to drop it.
    fn filter<'a>(&self, kind: ContentKind, text: &'a str) -> Option<Cow<'a, str>>;
}

/// Records text as is.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRedaction;

impl ContentFilter for NoRedaction {
    fn filter<'a>(&self, _kind: ContentKind, text: &'a str) -> Option<Cow<'a, str>> {
        Some(Cow::Borrowed(text))
    }
}

impl<F> ContentFilter for F
where
    F: for<'a> Fn(ContentKind, &'a str) -> Option<Cow<'a, str>> + Send + Sync + 'static,
{
    fn filter<'a>(&self, kind: ContentKind, text: &'a str) -> Option<Cow<'a, str>> {
        self(kind, text)
    }
}
