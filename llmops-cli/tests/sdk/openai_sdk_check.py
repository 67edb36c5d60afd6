"""Drives a running llmops gateway with the official OpenAI Python SDK.

Usage: python3 openai_sdk_check.py BASE_URL [MODEL]

Checks a chat call, a streamed chat call (chunks arrive incrementally, the final usage chunk
arrives when asked for), an embeddings call and the model list. Prints one line per check and
exits non-zero on the first failure.
"""

import sys
import time

import openai

base_url = sys.argv[1]
model = sys.argv[2] if len(sys.argv) > 2 else "sim"
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30)

resp = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Say hello"}]
)
assert resp.object == "chat.completion", resp
assert resp.choices[0].message.role == "assistant"
assert resp.choices[0].message.content, "empty answer"
assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0, resp.usage
print(f"chat: ok ({resp.usage.completion_tokens} tokens)")

stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Tell me a story"}],
    stream=True,
    stream_options={"include_usage": True},
)
arrivals, text, usage = [], [], None
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        arrivals.append(time.monotonic())
        text.append(chunk.choices[0].delta.content)
    if chunk.usage is not None:
        assert chunk.choices == [], "usage chunk must have no choices"
        usage = chunk.usage
assert len(arrivals) > 3, f"only {len(arrivals)} content chunks"
assert arrivals[-1] > arrivals[0], "chunks did not arrive incrementally"
assert usage is not None and usage.completion_tokens == len(arrivals), usage
print(f"stream: ok ({len(arrivals)} chunks over {arrivals[-1] - arrivals[0]:.3f}s, usage {usage.completion_tokens})")

stream = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Again"}], stream=True
)
assert all(c.usage is None for c in stream), "usage sent without include_usage"
print("stream without usage: ok")

emb = client.embeddings.create(model=model, input=["first text", "second text"])
assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0, emb
assert emb.data[0].embedding != emb.data[1].embedding
print(f"embeddings: ok (dim {len(emb.data[0].embedding)})")

models = [m.id for m in client.models.list()]
assert model in models, models
print(f"models: ok ({', '.join(models)})")

try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    raise AssertionError("unknown model accepted")
except openai.NotFoundError as e:
    assert e.code == "model_not_found", e
print("unknown model: ok (NotFoundError)")
