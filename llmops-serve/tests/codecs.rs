//! The I/O-free codecs against recorded upstream payloads, snapshot-tested: Anthropic
//! request encoding, response and event-stream decoding, OpenAI stream decoding through the
//! SSE decoder, and error classification of recorded error bodies.

#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures

use http::HeaderMap;
use llmops_core::{ChatRequest, ChunkAggregator, Content, ContentPart, Message, Tool, ToolCall};
use llmops_serve::providers::anthropic::{StreamDecoder, decode_response, encode_request};
use llmops_serve::providers::errors::{classify_anthropic, classify_openai};
use llmops_serve::providers::openai::{StreamEvent, decode_event};
use llmops_serve::providers::sse::SseDecoder;
use serde_json::json;

#[test]
fn anthropic_request_encoding() {
    let mut image = Message::user("");
    image.content = Some(Content::Parts(vec![
        ContentPart::text("What is in this image, and what's the weather there?"),
        ContentPart::image_url("data:image/jpeg;base64,/9j/4AAQSkZJRg=="),
        ContentPart::image_url("https://example.com/photo.png"),
    ]));
    let mut assistant = Message::assistant("Let me check.");
    assistant.tool_calls = Some(vec![ToolCall::function(
        "toolu_01A",
        "get_weather",
        r#"{"location":"Paris"}"#,
    )]);
    let mut req = ChatRequest::new(
        "claude",
        vec![
            Message::system("You are terse."),
            image,
            assistant,
            Message::tool("toolu_01A", "18°C, cloudy"),
        ],
    )
    .with_max_tokens(512)
    .with_temperature(0.3);
    req.tools = Some(vec![Tool::function(
        "get_weather",
        "Current weather for a location",
        json!({"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}),
    )]);
    req.tool_choice = Some(json!({"type": "function", "function": {"name": "get_weather"}}));
    req.parallel_tool_calls = Some(false);
    req.user = Some("user-42".into());
    req.extra.insert(
        "thinking".into(),
        json!({"type": "enabled", "budget_tokens": 1024}),
    );
    let body = encode_request(&req, "claude-sonnet-4-20250514", true).unwrap();
    insta::assert_json_snapshot!("anthropic_request", body);
}

#[test]
fn anthropic_recorded_response() {
    let recorded = json!({
        "id": "msg_01Aq9w938a90dw8q", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-20250514",
        "content": [
            {"type": "thinking", "thinking": "The user wants the weather.", "signature": "EqQBCgIYAhIM"},
            {"type": "text", "text": "I'll check the weather."},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "San Francisco, CA", "unit": "celsius"}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 2095, "output_tokens": 503, "cache_creation_input_tokens": 2051, "cache_read_input_tokens": 0,
                  "cache_creation": {"ephemeral_5m_input_tokens": 2051, "ephemeral_1h_input_tokens": 0}, "service_tier": "standard"}
    });
    let mut resp = decode_response("claude", &recorded).unwrap();
    resp.created = 0;
    insta::assert_json_snapshot!("anthropic_response", resp);
}

#[test]
fn anthropic_recorded_stream_split_at_every_byte_gives_the_same_answer() {
    let text = include_str!("fixtures/anthropic_stream.txt");
    let decode = |pieces: &[&[u8]]| {
        let mut sse = SseDecoder::new();
        let mut dec = StreamDecoder::new("claude", true);
        let mut agg = ChunkAggregator::new();
        let mut done = false;
        for p in pieces {
            for ev in sse.feed(p) {
                let d = dec.on_event(ev.event.as_deref(), &ev.data).unwrap();
                d.chunks.iter().for_each(|c| agg.push(c));
                done |= d.done;
            }
        }
        assert!(done, "message_stop seen");
        let mut r = agg.finish();
        r.created = 0;
        r
    };
    let whole = decode(&[text.as_bytes()]);
    for cut in (1..text.len()).step_by(7) {
        let (a, b) = text.as_bytes().split_at(cut);
        assert_eq!(decode(&[a, b]), whole, "split at {cut}");
    }
    insta::assert_json_snapshot!("anthropic_stream", whole);
}

#[test]
fn openai_recorded_stream() {
    let text = include_str!("fixtures/openai_stream.txt");
    let mut sse = SseDecoder::new();
    let mut agg = ChunkAggregator::new();
    let mut done = false;
    for ev in sse.feed(text.as_bytes()) {
        match decode_event("openai", &ev.data).unwrap() {
            StreamEvent::Chunk(c) => agg.push(&c),
            StreamEvent::Done => done = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(done);
    insta::assert_json_snapshot!("openai_stream", agg.finish());
}

#[test]
fn recorded_error_bodies_are_classified() {
    let h = |pairs: &[(&'static str, &'static str)]| {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().unwrap());
        }
        m
    };
    let openai = [
        (
            429,
            h(&[("retry-after", "1")]),
            r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
        ),
        (
            429,
            h(&[
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "6m0s"),
            ]),
            r#"{"error":{"message":"Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3, Used 3, Requested 1.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
        ),
        (
            400,
            h(&[]),
            r#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
        ),
        (
            401,
            h(&[]),
            r#"{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
        ),
        (
            404,
            h(&[]),
            r#"{"error":{"message":"The model `gpt-5-nano-x` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#,
        ),
        (
            503,
            h(&[]),
            r#"{"error":{"message":"The server is overloaded or not ready yet.","type":"server_error","param":null,"code":null}}"#,
        ),
        (
            400,
            h(&[]),
            r#"{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.","type":"BadRequestError","param":null,"code":400}"#,
        ),
        (
            500,
            h(&[]),
            r#"<html><body>Internal Server Error</body></html>"#,
        ),
    ];
    let anthropic = [
        (
            529,
            h(&[]),
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}"#,
        ),
        (
            429,
            h(&[("retry-after", "12")]),
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed the rate limit for your organization of 50 requests per minute."}}"#,
        ),
        (
            429,
            h(&[]),
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"You have reached your specified workspace API usage limits.","details":{"error_code":"enforced_spend_limit_reached"}}}"#,
        ),
        (
            400,
            h(&[]),
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 215000 tokens > 200000 maximum"}}"#,
        ),
        (
            402,
            h(&[]),
            r#"{"type":"error","error":{"type":"billing_error","message":"Your credit balance is too low."}}"#,
        ),
    ];
    let row = |e: llmops_core::Error| {
        json!({
            "kind": e.kind().as_str(),
            "retryability": format!("{:?}", e.retryability()),
            "gateway_status": e.http_status(),
            "retry_after_s": e.retry_after().map(|d| d.as_secs()),
        })
    };
    let table: Vec<_> = openai
        .into_iter()
        .map(|(s, hd, b)| row(classify_openai("openai", s, &hd, b.as_bytes())))
        .chain(
            anthropic
                .into_iter()
                .map(|(s, hd, b)| row(classify_anthropic("claude", s, &hd, b.as_bytes()))),
        )
        .collect();
    insta::assert_json_snapshot!("error_classification", table);
}

fn long_system_request() -> ChatRequest {
    let policy = "You are the support assistant of Example Corp. Follow the policy. ".repeat(80);
    let mut req = ChatRequest::new(
        "claude-sonnet-4-20250514",
        vec![
            Message::system(policy),
            Message::user("My order is late."),
            Message::assistant("I'm sorry to hear that. What is the order number?"),
            Message::user("It is 12345."),
        ],
    );
    req.tools = Some(vec![Tool::function(
        "lookup_order",
        "Find an order by number",
        json!({"type": "object", "properties": {"number": {"type": "string"}}, "required": ["number"]}),
    )]);
    req
}

/// Breakpoints land at the end of the system prompt (the tools alone are below the minimum)
/// and at the end of the conversation before the newest message.
#[test]
fn anthropic_cache_breakpoints_placed() {
    use llmops_serve::providers::anthropic::{CacheBreakpoints, CacheTtl, apply_cache_breakpoints};
    let req = long_system_request();
    let mut body = encode_request(&req, "claude-sonnet-4-20250514", false).unwrap();
    let placed = apply_cache_breakpoints(&mut body, &CacheBreakpoints::new(CacheTtl::OneHour));
    assert_eq!(placed, 2);
    assert!(body["tools"][0].get("cache_control").is_none());
    assert_eq!(
        body["system"][0]["cache_control"],
        json!({"type": "ephemeral", "ttl": "1h"})
    );
    assert_eq!(
        body["messages"][1]["content"][0]["cache_control"]["type"],
        "ephemeral"
    );
    assert!(
        body["messages"][2]["content"]
            .to_string()
            .find("cache_control")
            .is_none()
    );
    insta::assert_json_snapshot!("anthropic_request_breakpoints", body);
}

/// Below the model's minimum cacheable length nothing is added; a request with its own
/// breakpoints is left alone.
#[test]
fn anthropic_cache_breakpoints_not_added_when_short_or_present() {
    use llmops_serve::providers::anthropic::{CacheBreakpoints, CacheTtl, apply_cache_breakpoints};
    let policy = CacheBreakpoints::new(CacheTtl::FiveMinutes);
    let short = ChatRequest::new(
        "claude-sonnet-4-20250514",
        vec![
            Message::system("Be brief."),
            Message::user("Hi"),
            Message::assistant("Hello"),
            Message::user("Bye"),
        ],
    );
    let mut body = encode_request(&short, "claude-sonnet-4-20250514", false).unwrap();
    let before = body.clone();
    assert_eq!(apply_cache_breakpoints(&mut body, &policy), 0);
    assert_eq!(body, before);
    insta::assert_json_snapshot!("anthropic_request_short_no_breakpoints", body);

    // Haiku's minimum is higher: the same long prompt that qualifies on Sonnet is too short.
    let mut req = long_system_request();
    req.messages.truncate(2);
    let mut body = encode_request(&req, "claude-3-5-haiku-20241022", false).unwrap();
    assert_eq!(apply_cache_breakpoints(&mut body, &policy), 0);

    let mut own = long_system_request();
    own.extra
        .insert("cache_control".into(), json!({"type": "ephemeral"}));
    let mut body = encode_request(&own, "claude-sonnet-4-20250514", false).unwrap();
    let before = body.clone();
    assert_eq!(apply_cache_breakpoints(&mut body, &policy), 0);
    assert_eq!(body, before);
}
