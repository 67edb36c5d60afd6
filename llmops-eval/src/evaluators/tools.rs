//! Tool-call matching.

use async_trait::async_trait;
use llmops_core::{EvalInput, Evaluator, Score, ToolCall};
use serde_json::Value;

use super::Reference;

/// How [`ToolCallMatch`] compares arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArgumentsMatch {
    /// Only the tool names must match.
    Ignore,
    /// Every expected argument must be present with an equal value; extra arguments are fine.
    Subset,
    /// The arguments must be exactly the expected object.
    Exact,
}

/// Compares the response's tool calls with the expected ones: `{"name": ..., "arguments":
/// {...}}` or a list of those (order-insensitive). The score is the fraction of expected
/// calls that were made; it passes at `threshold` (default 1: every call).
#[derive(Debug)]
pub struct ToolCallMatch {
    name: String,
    reference: Reference,
    arguments: ArgumentsMatch,
    threshold: f64,
}

impl ToolCallMatch {
    /// A matcher against `reference` (normally the case's `expected`).
    pub fn new(name: impl Into<String>, reference: Reference) -> Self {
        Self {
            name: name.into(),
            reference,
            arguments: ArgumentsMatch::Subset,
            threshold: 1.0,
        }
    }

    /// Sets how arguments are compared (builder style; default [`ArgumentsMatch::Subset`]).
    #[must_use]
    pub fn arguments(mut self, mode: ArgumentsMatch) -> Self {
        self.arguments = mode;
        self
    }

    /// Sets the threshold (builder style).
    #[must_use]
    pub fn threshold(mut self, t: f64) -> Self {
        self.threshold = t;
        self
    }

    fn call_matches(&self, expected: &ExpectedCall, call: &ToolCall) -> bool {
        if call.function.name != expected.name {
            return false;
        }
        let Some(want) = &expected.arguments else {
            return true;
        };
        let got: Value = match serde_json::from_str(&call.function.arguments) {
            Ok(v) => v,
            Err(_) => return false,
        };
        match self.arguments {
            ArgumentsMatch::Ignore => true,
            ArgumentsMatch::Exact => &got == want,
            ArgumentsMatch::Subset => match (want, &got) {
                (Value::Object(w), Value::Object(g)) => w.iter().all(|(k, v)| g.get(k) == Some(v)),
                _ => &got == want,
            },
        }
    }
}

struct ExpectedCall {
    name: String,
    arguments: Option<Value>,
}

fn expected_calls(v: &Value) -> llmops_core::Result<Vec<ExpectedCall>> {
    let bad = || {
        llmops_core::Error::invalid_request(
            "expected tool calls must be {\"name\", \"arguments\"} objects or a list of them",
            None,
        )
    };
    let one = |v: &Value| -> llmops_core::Result<ExpectedCall> {
        let obj = v.as_object().ok_or_else(bad)?;
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(bad)?
            .to_owned();
        let arguments = match obj.get("arguments") {
            Some(Value::String(s)) => Some(serde_json::from_str(s).map_err(|_| bad())?),
            other => other.cloned(),
        };
        Ok(ExpectedCall { name, arguments })
    };
    match v {
        Value::Array(items) => items.iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

#[async_trait]
impl Evaluator for ToolCallMatch {
    fn name(&self) -> &str {
        &self.name
    }

    async fn evaluate(&self, input: &EvalInput) -> llmops_core::Result<Score> {
        let expected = expected_calls(self.reference.resolve(input)?)?;
        let calls: Vec<ToolCall> = input
            .response
            .as_ref()
            .and_then(|r| r.choices.first())
            .and_then(|c| c.message.tool_calls.clone())
            .unwrap_or_default();
        if expected.is_empty() {
            let ok = calls.is_empty();
            return Ok(Score::pass_fail(
                ok,
                if ok {
                    "no tool call, as expected".to_owned()
                } else {
                    format!("{} unexpected tool call(s)", calls.len())
                },
            ));
        }
        let mut used = vec![false; calls.len()];
        let mut missing = Vec::new();
        for exp in &expected {
            let hit = calls
                .iter()
                .enumerate()
                .find(|(i, c)| !used[*i] && self.call_matches(exp, c));
            match hit {
                Some((i, _)) => used[i] = true,
                None => missing.push(exp.name.clone()),
            }
        }
        let matched = expected.len() - missing.len();
        let value = matched as f64 / expected.len() as f64;
        let made: Vec<&str> = calls.iter().map(|c| c.function.name.as_str()).collect();
        let explanation = if missing.is_empty() {
            format!("all {} expected tool call(s) made", expected.len())
        } else {
            format!(
                "missing or mismatched: {}; made: [{}]",
                missing.join(", "),
                made.join(", ")
            )
        };
        Ok(Score::new(value, self.threshold, explanation))
    }
}

#[cfg(test)]
mod tests {
    use llmops_core::mock::{MockProvider, MockReply};
    use llmops_core::{ChatRequest, Message, Provider, RequestContext};
    use serde_json::json;

    use super::super::test_util::input;
    use super::*;

    #[tokio::test]
    async fn matches_names_and_arguments() {
        let mock = MockProvider::new("m").default_reply(
            MockReply::tool_call("get_weather", json!({"city": "Paris", "unit": "c"}))
                .and_tool_call("get_time", json!({"tz": "CET"})),
        );
        let resp = mock
            .chat(
                ChatRequest::new("m", vec![Message::user("q")]),
                &RequestContext::new(),
            )
            .await
            .unwrap();
        let mut i = input(
            "",
            Some(
                json!([{"name": "get_time"}, {"name": "get_weather", "arguments": {"city": "Paris"}}]),
            ),
        );
        i.response = Some(resp);
        let e = ToolCallMatch::new("tools", Reference::Expected);
        assert!(e.evaluate(&i).await.unwrap().passed);

        let e = ToolCallMatch::new("tools", Reference::Expected).arguments(ArgumentsMatch::Exact);
        let s = e.evaluate(&i).await.unwrap();
        assert!(!s.passed);
        assert!((s.value - 0.5).abs() < 1e-9);

        i.expected = Some(json!({"name": "get_weather", "arguments": {"city": "Rome"}}));
        let s = ToolCallMatch::new("t", Reference::Expected)
            .evaluate(&i)
            .await
            .unwrap();
        assert!(!s.passed && s.explanation.contains("get_weather"));

        i.expected = Some(json!("get_weather"));
        assert!(
            ToolCallMatch::new("t", Reference::Expected)
                .evaluate(&i)
                .await
                .is_err()
        );
    }
}
