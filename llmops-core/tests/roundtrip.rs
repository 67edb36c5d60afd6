//! Real OpenAI and vLLM request bodies deserialize and serialize back with nothing lost.

#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures

use llmops_core::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, EmbeddingRequest, Role,
};
use serde_json::{Value, json};

fn round_trip(body: Value) -> ChatRequest {
    round_trip_expecting(body.clone(), body)
}

fn round_trip_expecting(body: Value, expected: Value) -> ChatRequest {
    let req: ChatRequest = serde_json::from_value(body).expect("deserializes");
    let back = serde_json::to_value(&req).expect("serializes");
    assert_eq!(back, expected, "round trip changed the request");
    req
}

#[test]
fn openai_sdk_chat_request() {
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "developer", "content": "Answer in French."},
            {"role": "system", "content": "You are terse.", "name": "policy"},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                {"type": "file", "file": {"file_id": "file-abc"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
            ], "refusal": null},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21}"}
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "max_completion_tokens": 512,
        "n": 1,
        "stop": ["\n\n", "END"],
        "stream": true,
        "stream_options": {"include_usage": true},
        "presence_penalty": 0.1,
        "frequency_penalty": -0.5,
        "logit_bias": {"50256": -100},
        "logprobs": true,
        "top_logprobs": 3,
        "seed": 42,
        "user": "user-1234",
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            "strict": true
        }}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": false,
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "weather", "schema": {"type": "object"}, "strict": true
        }},
        "metadata": {"feature": "search"},
        "store": false,
        "reasoning_effort": "low",
        "service_tier": "auto",
        "modalities": ["text"],
        "prediction": {"type": "content", "content": "x"},
        "web_search_options": {}
    });
    // The one documented normalization: an explicit `null` for a typed optional field
    // (here the assistant's `content`) is the same as absent and is not written back.
    let mut expected = body.clone();
    expected["messages"][3]
        .as_object_mut()
        .unwrap()
        .remove("content");
    let req = round_trip_expecting(body, expected);
    assert_eq!(req.messages[0].role, Role::Developer);
    assert_eq!(req.messages[2].text(), "What is in this image?");
    match &req.messages[2].content {
        Some(Content::Parts(parts)) => {
            assert!(
                matches!(parts[2], ContentPart::Other(_)),
                "unknown part kept raw"
            );
        }
        other => panic!("expected parts, got {other:?}"),
    }
    assert!(req.include_usage());
    assert_eq!(req.max_output_tokens(), Some(512));
    assert_eq!(req.extra["reasoning_effort"], "low");
}

#[test]
fn vllm_request_with_extras() {
    let req = round_trip(json!({
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "messages": [{"role": "user", "content": "Give me JSON"}],
        "max_tokens": 128,
        "temperature": 0.7,
        "top_k": 40,
        "min_p": 0.05,
        "repetition_penalty": 1.1,
        "length_penalty": 1.0,
        "stop_token_ids": [128009],
        "skip_special_tokens": true,
        "include_stop_str_in_output": false,
        "ignore_eos": false,
        "min_tokens": 4,
        "use_beam_search": false,
        "prompt_logprobs": null,
        "structured_outputs": {"json": {"type": "object", "properties": {"a": {"type": "integer"}}}},
        "guided_json": {"type": "object"},
        "cache_salt": "tenant-a-7f3c",
        "chat_template_kwargs": {"enable_thinking": false},
        "add_generation_prompt": true,
        "priority": 0,
        "request_id": "abc",
        "kv_transfer_params": null,
        "vllm_xargs": {"custom": 1}
    }));
    assert_eq!(req.extra["top_k"], 40);
    assert_eq!(req.extra["cache_salt"], "tenant-a-7f3c");
    assert_eq!(req.extra["structured_outputs"]["json"]["type"], "object");
}

#[test]
fn plain_stop_string_and_minimal_request() {
    round_trip(
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stop": "###"}),
    );
    round_trip(json!({"model": "m", "messages": [{"role": "user", "content": ""}]}));
}

#[test]
fn openai_response_and_chunk_round_trip() {
    let resp = json!({
        "id": "chatcmpl-123", "object": "chat.completion", "created": 1_700_000_000u64,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi", "refusal": null, "annotations": []},
                     "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
        "service_tier": "default", "system_fingerprint": "fp_1"
    });
    let r: ChatResponse = serde_json::from_value(resp.clone()).unwrap();
    assert_eq!(r.first_text(), "Hi");
    let back = serde_json::to_value(&r).unwrap();
    assert_eq!(back["usage"], resp["usage"]);
    assert_eq!(back["choices"][0]["message"]["annotations"], json!([]));
    assert_eq!(back["service_tier"], "default");

    let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": "He"}, "logprobs": null, "finish_reason": null}]});
    let c: ChatChunk = serde_json::from_value(chunk).unwrap();
    assert!(c.has_content());
}

#[test]
fn embeddings_request_round_trips() {
    for body in [
        json!({"model": "text-embedding-3-small", "input": "hello", "encoding_format": "float"}),
        json!({"model": "e", "input": ["a", "b"], "dimensions": 256, "user": "u"}),
        json!({"model": "e", "input": [1, 2, 3]}),
        json!({"model": "e", "input": [[1, 2], [3]], "truncate_prompt_tokens": 8}),
    ] {
        let r: EmbeddingRequest = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap(), body);
    }
}
