//! Normalized token usage.
//!
//! Providers count tokens differently: OpenAI and vLLM report `prompt_tokens` with cached
//! tokens *included* (`prompt_tokens_details.cached_tokens`), Anthropic reports
//! `input_tokens` *excluding* cache reads and writes. [`Usage`] holds one normalized view —
//! the total input (cached included), and the cache-read, cache-write, output and reasoning
//! shares — so cost and budgets are computed one way for every provider. The upstream's own
//! usage object is kept in [`Usage::raw`].
//!
//! On the wire (serde) a `Usage` is the OpenAI usage object, so a gateway answers OpenAI
//! clients with the same shape whatever provider served the request.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};

/// Token usage of one request, normalized across providers.
///
/// Invariants: `cache_read_tokens + cache_write_tokens <= input_tokens` and
/// `reasoning_tokens <= output_tokens` (constructors saturate to keep them).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Usage {
    /// All input tokens, cached ones included.
    pub input_tokens: u64,
    /// Input tokens read from the upstream's prompt cache.
    pub cache_read_tokens: u64,
    /// Input tokens written to the upstream's prompt cache.
    pub cache_write_tokens: u64,
    /// All output tokens, reasoning included.
    pub output_tokens: u64,
    /// Output tokens spent on hidden reasoning.
    pub reasoning_tokens: u64,
    /// The upstream's usage object as it sent it, when there was one.
    pub raw: Option<Value>,
}

impl Usage {
    /// Usage with `input` and `output` tokens and nothing cached.
    pub fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Self {
            input_tokens,
            output_tokens,
            ..Self::default()
        }
    }

    /// Sets the cache-read tokens (builder style), raising `input_tokens` if needed to keep
    /// the invariant.
    #[must_use]
    pub fn with_cache_read(mut self, tokens: u64) -> Self {
        self.cache_read_tokens = tokens;
        self.input_tokens = self
            .input_tokens
            .max(self.cache_read_tokens + self.cache_write_tokens);
        self
    }

    /// Sets the cache-write tokens (builder style), raising `input_tokens` if needed.
    #[must_use]
    pub fn with_cache_write(mut self, tokens: u64) -> Self {
        self.cache_write_tokens = tokens;
        self.input_tokens = self
            .input_tokens
            .max(self.cache_read_tokens + self.cache_write_tokens);
        self
    }

    /// Sets the reasoning tokens (builder style), raising `output_tokens` if needed.
    #[must_use]
    pub fn with_reasoning(mut self, tokens: u64) -> Self {
        self.reasoning_tokens = tokens;
        self.output_tokens = self.output_tokens.max(tokens);
        self
    }

    /// Keeps the upstream's raw usage object (builder style).
    #[must_use]
    pub fn with_raw(mut self, raw: Value) -> Self {
        self.raw = Some(raw);
        self
    }

    /// Input tokens that were neither read from nor written to a cache.
    pub fn uncached_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_sub(self.cache_read_tokens + self.cache_write_tokens)
    }

    /// Input plus output tokens.
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }

    /// Normalizes an Anthropic-style count, where `input_tokens` excludes cache reads and
    /// writes.
    pub fn from_anthropic(
        input_tokens: u64,
        cache_read_tokens: u64,
        cache_write_tokens: u64,
        output_tokens: u64,
    ) -> Self {
        Self {
            input_tokens: input_tokens + cache_read_tokens + cache_write_tokens,
            cache_read_tokens,
            cache_write_tokens,
            output_tokens,
            reasoning_tokens: 0,
            raw: None,
        }
    }

    /// Adds another request's usage to this one (for sums over attempts or a cascade); the
    /// raw objects are dropped.
    pub fn accumulate(&mut self, other: &Usage) {
        self.input_tokens += other.input_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.output_tokens += other.output_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
        self.raw = None;
    }
}

fn u64_at(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(next) => cur = next,
            None => return 0,
        }
    }
    cur.as_u64().unwrap_or(0)
}

impl Serialize for Usage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = Map::new();
        m.insert("prompt_tokens".into(), json!(self.input_tokens));
        m.insert("completion_tokens".into(), json!(self.output_tokens));
        m.insert("total_tokens".into(), json!(self.total_tokens()));
        if self.cache_read_tokens > 0 || self.cache_write_tokens > 0 {
            let mut d = Map::new();
            d.insert("cached_tokens".into(), json!(self.cache_read_tokens));
            if self.cache_write_tokens > 0 {
                d.insert("cache_write_tokens".into(), json!(self.cache_write_tokens));
            }
            m.insert("prompt_tokens_details".into(), Value::Object(d));
        }
        if self.reasoning_tokens > 0 {
            m.insert(
                "completion_tokens_details".into(),
                json!({"reasoning_tokens": self.reasoning_tokens}),
            );
        }
        Value::Object(m).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Usage {
    /// Reads an OpenAI-shaped usage object (also what vLLM and most OpenAI-compatible servers
    /// send). Missing counts are zero; the whole object is kept in [`Usage::raw`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Value::deserialize(d)?;
        if !raw.is_object() {
            return Err(serde::de::Error::custom("usage must be a JSON object"));
        }
        let input = u64_at(&raw, &["prompt_tokens"]);
        let output = u64_at(&raw, &["completion_tokens"]);
        let cache_read = u64_at(&raw, &["prompt_tokens_details", "cached_tokens"]);
        let cache_write = u64_at(&raw, &["prompt_tokens_details", "cache_write_tokens"]);
        let reasoning = u64_at(&raw, &["completion_tokens_details", "reasoning_tokens"]);
        Ok(Usage::new(input, output)
            .with_cache_read(cache_read)
            .with_cache_write(cache_write)
            .with_reasoning(reasoning)
            .with_raw(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_usage_counts_cached_inside_prompt() {
        let u: Usage = serde_json::from_value(json!({
            "prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050,
            "prompt_tokens_details": {"cached_tokens": 800},
            "completion_tokens_details": {"reasoning_tokens": 20}
        }))
        .unwrap();
        assert_eq!(u.input_tokens, 1000);
        assert_eq!(u.cache_read_tokens, 800);
        assert_eq!(u.uncached_input_tokens(), 200);
        assert_eq!(u.reasoning_tokens, 20);
        assert!(u.raw.is_some());
    }

    #[test]
    fn anthropic_usage_is_normalized() {
        let u = Usage::from_anthropic(100, 800, 50, 10);
        assert_eq!(u.input_tokens, 950);
        assert_eq!(u.uncached_input_tokens(), 100);
    }

    #[test]
    fn wire_shape_round_trips() {
        let u = Usage::new(10, 5).with_cache_read(4).with_reasoning(2);
        let v = serde_json::to_value(&u).unwrap();
        assert_eq!(v["total_tokens"], 15);
        assert_eq!(v["prompt_tokens_details"]["cached_tokens"], 4);
        let back: Usage = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back.raw, Some(v));
        assert_eq!(
            (
                back.input_tokens,
                back.cache_read_tokens,
                back.reasoning_tokens
            ),
            (10, 4, 2)
        );
    }

    #[test]
    fn non_object_usage_is_rejected() {
        assert!(serde_json::from_value::<Usage>(json!(12)).is_err());
    }
}
