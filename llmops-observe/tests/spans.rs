//! Span names, attribute keys and values for a chat, a streamed chat and an error.

#![allow(clippy::unwrap_used)]

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use llmops_core::mock::{MockProvider, MockReply};
use llmops_core::service::InspectLayer;
use llmops_core::types::StreamOptions;
use llmops_core::{
    BoxLlmService, ChatRequest, ErrorKind, LlmRequest, Message, PromptRef, ProviderService,
    RequestContext, Usage,
};
use llmops_observe::semconv as sc;
use llmops_observe::{ContentKind, ObserveConfig, ObserveLayer, RequestTelemetry};
use tower::{ServiceBuilder, ServiceExt};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

#[derive(Clone, Debug, Default)]
struct SpanRec {
    name: &'static str,
    fields: BTreeMap<String, String>,
    closed: bool,
}

#[derive(Clone, Default)]
struct Capture {
    spans: Arc<Mutex<Vec<(u64, SpanRec)>>>,
}

struct V<'a>(&'a mut BTreeMap<String, String>);

impl Visit for V<'_> {
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        self.0.insert(f.name().to_owned(), format!("{v:?}"));
    }
    fn record_str(&mut self, f: &Field, v: &str) {
        self.0.insert(f.name().to_owned(), v.to_owned());
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.0.insert(f.name().to_owned(), v.to_string());
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.0.insert(f.name().to_owned(), v.to_string());
    }
    fn record_f64(&mut self, f: &Field, v: f64) {
        self.0.insert(f.name().to_owned(), v.to_string());
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        self.0.insert(f.name().to_owned(), v.to_string());
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _ctx: Context<'_, S>) {
        let mut rec = SpanRec {
            name: attrs.metadata().name(),
            ..SpanRec::default()
        };
        attrs.record(&mut V(&mut rec.fields));
        self.spans.lock().unwrap().push((id.into_u64(), rec));
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut spans = self.spans.lock().unwrap();
        if let Some((_, rec)) = spans.iter_mut().rev().find(|(i, _)| *i == id.into_u64()) {
            values.record(&mut V(&mut rec.fields));
        }
    }
    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        let mut spans = self.spans.lock().unwrap();
        if let Some((_, rec)) = spans.iter_mut().rev().find(|(i, _)| *i == id.into_u64()) {
            rec.closed = true;
        }
    }
}

impl Capture {
    fn only(&self) -> SpanRec {
        let spans = self.spans.lock().unwrap();
        let ours: Vec<_> = spans
            .iter()
            .filter(|(_, s)| s.fields.contains_key(sc::GEN_AI_OPERATION_NAME))
            .collect();
        assert_eq!(
            ours.len(),
            1,
            "exactly one GenAI span per operation: {ours:#?}"
        );
        ours[0].1.clone()
    }
}

fn pipeline(mock: MockProvider, config: ObserveConfig) -> BoxLlmService {
    BoxLlmService::new(
        ServiceBuilder::new()
            .layer(ObserveLayer::new(config))
            // Stands in for the cost layer: reports through the documented handle, at the end
            // of the call (for streams: at the end of the stream).
            .layer(InspectLayer::new(|call| {
                if let Some(t) = RequestTelemetry::of(&call.ctx) {
                    t.record_cost(0.0042);
                }
            }))
            .service(ProviderService::new(Arc::new(mock))),
    )
}

fn ctx() -> RequestContext {
    RequestContext::new()
        .with_tenant("team-a")
        .with_prompt(PromptRef::new("greet", "v2"))
}

fn req(stream: bool) -> ChatRequest {
    let mut r = ChatRequest::new(
        "gpt-test",
        vec![
            Message::system("be brief"),
            Message::user("my secret is 42"),
        ],
    )
    .with_max_tokens(64)
    .with_temperature(0.5);
    if stream {
        r = r.with_stream(true);
        r.stream_options = Some(StreamOptions::include_usage(true));
    }
    r
}

fn get<'a>(s: &'a SpanRec, k: &str) -> &'a str {
    s.fields
        .get(k)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("span has no {k}: {:#?}", s.fields))
}

#[tokio::test]
async fn chat_span_has_genai_and_llmops_attributes() {
    let cap = Capture::default();
    let _g = tracing::subscriber::set_default(tracing_subscriber::registry().with(cap.clone()));
    let mock = MockProvider::new("mock")
        .reply(MockReply::text("Hello there").with_usage(Usage::new(12, 3).with_cache_read(4)));
    let svc = pipeline(mock, ObserveConfig::default());
    let resp = svc
        .oneshot(LlmRequest::chat(ctx(), req(false)))
        .await
        .unwrap();
    assert_eq!(resp.into_chat().unwrap().first_text(), "Hello there");

    let s = cap.only();
    assert_eq!(s.name, "chat");
    assert!(s.closed);
    assert_eq!(get(&s, sc::OTEL_NAME), "chat gpt-test");
    assert_eq!(get(&s, sc::OTEL_KIND), "client");
    assert_eq!(get(&s, sc::GEN_AI_OPERATION_NAME), "chat");
    assert_eq!(get(&s, sc::GEN_AI_PROVIDER_NAME), "mock");
    assert_eq!(get(&s, sc::GEN_AI_REQUEST_MODEL), "gpt-test");
    assert_eq!(get(&s, sc::GEN_AI_REQUEST_STREAM), "false");
    assert_eq!(get(&s, sc::GEN_AI_REQUEST_MAX_TOKENS), "64");
    assert_eq!(get(&s, sc::GEN_AI_REQUEST_TEMPERATURE), "0.5");
    assert_eq!(get(&s, sc::GEN_AI_RESPONSE_MODEL), "gpt-test");
    assert!(!get(&s, sc::GEN_AI_RESPONSE_ID).is_empty());
    assert_eq!(get(&s, sc::GEN_AI_RESPONSE_FINISH_REASONS), r#"["stop"]"#);
    assert_eq!(get(&s, sc::GEN_AI_USAGE_INPUT_TOKENS), "12");
    assert_eq!(get(&s, sc::GEN_AI_USAGE_OUTPUT_TOKENS), "3");
    assert_eq!(get(&s, sc::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS), "4");
    assert_eq!(get(&s, sc::LLMOPS_TENANT), "team-a");
    assert_eq!(get(&s, sc::LLMOPS_PROMPT_ID), "greet");
    assert_eq!(get(&s, sc::LLMOPS_PROMPT_VERSION), "v2");
    assert_eq!(get(&s, sc::LLMOPS_COST_USD), "0.0042");
    assert_eq!(get(&s, sc::LLMOPS_CACHE_HIT), "false");
    assert_eq!(get(&s, sc::LLMOPS_ATTEMPT), "1");
    let overhead: f64 = get(&s, sc::LLMOPS_GATEWAY_OVERHEAD).parse().unwrap();
    assert!(overhead >= 0.0);
    assert!(!s.fields.contains_key(sc::ERROR_TYPE));
    assert!(!s.fields.contains_key(sc::OTEL_STATUS_CODE));
    assert!(
        !s.fields.contains_key(sc::GEN_AI_INPUT_MESSAGES),
        "no content unless configured"
    );
    assert!(
        !s.fields.contains_key(sc::GEN_AI_OUTPUT_MESSAGES),
        "no content unless configured"
    );
    assert!(
        !s.fields
            .contains_key(sc::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK),
        "not a stream"
    );
}

#[tokio::test]
async fn streamed_chat_span_stays_open_until_the_stream_ends() {
    let cap = Capture::default();
    let _g = tracing::subscriber::set_default(tracing_subscriber::registry().with(cap.clone()));
    let mock = MockProvider::new("mock")
        .reply(MockReply::chunks(["Hel", "lo", "!"]).with_usage(Usage::new(7, 3)));
    let svc = pipeline(mock, ObserveConfig::default());
    let resp = svc
        .oneshot(LlmRequest::chat(ctx(), req(true)))
        .await
        .unwrap();
    let mut stream = resp.into_stream().unwrap();
    let first = stream.next().await.unwrap().unwrap();
    drop(first);
    assert!(!cap.only().closed, "the span covers the whole stream");
    assert!(
        !cap.only()
            .fields
            .contains_key(sc::GEN_AI_USAGE_OUTPUT_TOKENS),
        "usage is recorded at the end"
    );
    while let Some(c) = stream.next().await {
        c.unwrap();
    }
    drop(stream);

    let s = cap.only();
    assert_eq!(s.name, "chat");
    assert!(s.closed);
    assert_eq!(get(&s, sc::OTEL_NAME), "chat gpt-test");
    assert_eq!(get(&s, sc::GEN_AI_REQUEST_STREAM), "true");
    assert_eq!(get(&s, sc::GEN_AI_PROVIDER_NAME), "mock");
    assert_eq!(get(&s, sc::GEN_AI_USAGE_INPUT_TOKENS), "7");
    assert_eq!(get(&s, sc::GEN_AI_USAGE_OUTPUT_TOKENS), "3");
    assert_eq!(get(&s, sc::GEN_AI_RESPONSE_FINISH_REASONS), r#"["stop"]"#);
    let ttfc: f64 = get(&s, sc::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK)
        .parse()
        .unwrap();
    assert!(ttfc >= 0.0);
    assert_eq!(
        get(&s, sc::LLMOPS_COST_USD),
        "0.0042",
        "cost reported at the stream's end reaches the span"
    );
    assert_eq!(get(&s, sc::LLMOPS_ATTEMPT), "1");
    assert!(!s.fields.contains_key(sc::ERROR_TYPE));
}

#[tokio::test]
async fn failed_chat_span_has_error_type_and_status() {
    let cap = Capture::default();
    let _g = tracing::subscriber::set_default(tracing_subscriber::registry().with(cap.clone()));
    let mock = MockProvider::new("mock").reply(MockReply::error(ErrorKind::RateLimited));
    let svc = pipeline(mock, ObserveConfig::default());
    let err = svc
        .oneshot(LlmRequest::chat(ctx(), req(false)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);

    let s = cap.only();
    assert_eq!(s.name, "chat");
    assert!(s.closed);
    assert_eq!(get(&s, sc::ERROR_TYPE), "rate_limited");
    assert_eq!(get(&s, sc::OTEL_STATUS_CODE), "error");
    assert_eq!(get(&s, sc::GEN_AI_PROVIDER_NAME), "mock");
    assert_eq!(get(&s, sc::GEN_AI_OPERATION_NAME), "chat");
    assert_eq!(get(&s, sc::GEN_AI_REQUEST_MODEL), "gpt-test");
    assert!(!s.fields.contains_key(sc::GEN_AI_USAGE_INPUT_TOKENS));
    assert!(!s.fields.contains_key(sc::LLMOPS_CACHE_HIT));
}

#[tokio::test]
async fn a_stream_failing_midway_marks_its_span_as_an_error() {
    let cap = Capture::default();
    let _g = tracing::subscriber::set_default(tracing_subscriber::registry().with(cap.clone()));
    let mock = MockProvider::new("mock").reply(MockReply::chunks(["a", "b", "c"]).fail_after(1));
    let svc = pipeline(mock, ObserveConfig::default());
    let stream = svc
        .oneshot(LlmRequest::chat(ctx(), req(true)))
        .await
        .unwrap()
        .into_stream()
        .unwrap();
    let items: Vec<_> = stream.collect().await;
    assert!(items.iter().any(Result::is_err));
    let s = cap.only();
    assert_eq!(get(&s, sc::ERROR_TYPE), "stream_interrupted");
    assert_eq!(get(&s, sc::OTEL_STATUS_CODE), "error");
}

fn redact(kind: ContentKind, text: &str) -> Option<Cow<'_, str>> {
    if kind == ContentKind::System {
        return None;
    }
    Some(Cow::Owned(text.replace("secret", "[REDACTED]")))
}

#[tokio::test]
async fn content_is_recorded_only_through_the_filter() {
    let cap = Capture::default();
    let _g = tracing::subscriber::set_default(tracing_subscriber::registry().with(cap.clone()));
    let mock = MockProvider::new("mock").reply(MockReply::text("your secret is safe"));
    let config = ObserveConfig::builder()
        .capture_content(Arc::new(redact))
        .build();
    let svc = pipeline(mock, config);
    svc.oneshot(LlmRequest::chat(ctx(), req(false)))
        .await
        .unwrap();
    let s = cap.only();
    let input: serde_json::Value =
        serde_json::from_str(get(&s, sc::GEN_AI_INPUT_MESSAGES)).unwrap();
    assert_eq!(
        input.as_array().unwrap().len(),
        1,
        "the system message was dropped by the filter"
    );
    assert_eq!(input[0]["role"], "user");
    assert_eq!(input[0]["parts"][0]["content"], "my [REDACTED] is 42");
    let output = get(&s, sc::GEN_AI_OUTPUT_MESSAGES);
    assert!(
        output.contains("your [REDACTED] is safe") && !output.contains("secret"),
        "{output}"
    );
}
