"""Drives a running llmops gateway with the official OpenAI Python SDK for the serving tests.

Usage:
  python3 serving_sdk_check.py fallback BASE_URL EXPECTED_PROVIDER
      A chat call and a streamed chat call must both succeed, and the `x-llmops-provider`
      response header must name EXPECTED_PROVIDER.
  python3 serving_sdk_check.py midstream BASE_URL
      A streamed chat call whose upstream dies after the first content delta must raise in
      the SDK after some content arrived — never finish cleanly.

Prints one line per check and exits non-zero on the first failure.
"""

import sys

import openai

mode, base_url = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30)
messages = [{"role": "user", "content": "Say hello"}]

if mode == "fallback":
    expected = sys.argv[3]
    raw = client.chat.completions.with_raw_response.create(model="chat", messages=messages)
    provider = raw.headers.get("x-llmops-provider")
    attempts = raw.headers.get("x-llmops-attempts")
    resp = raw.parse()
    assert provider == expected, f"x-llmops-provider: {provider!r}, expected {expected!r}"
    assert resp.choices[0].message.content, "empty answer"
    print(f"chat: ok (provider {provider}, attempts {attempts})")

    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=messages, stream=True
    )
    provider = raw.headers.get("x-llmops-provider")
    text = "".join(
        c.choices[0].delta.content or "" for c in raw.parse() if c.choices
    )
    assert provider == expected, f"x-llmops-provider: {provider!r}, expected {expected!r}"
    assert text, "empty streamed answer"
    print(f"stream: ok (provider {provider}, {len(text)} chars)")

elif mode == "midstream":
    stream = client.chat.completions.create(model="chat", messages=messages, stream=True)
    received = []
    try:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    except openai.APIError as e:
        assert received, "the error came before any content"
        print(f"midstream: ok (raised {type(e).__name__} after {len(received)} chunks: {e})")
    else:
        raise AssertionError(f"the stream finished cleanly after {received!r}")

else:
    raise SystemExit(f"unknown mode {mode!r}")
