//! JSON evaluators: valid JSON, and JSON matching a JSON Schema.

use async_trait::async_trait;
use llmops_core::{EvalInput, Evaluator, Score};
use serde_json::Value;

use super::preview;

/// Strips one Markdown code fence (```` ```json ... ``` ````) around the output, if present.
fn strip_fence(s: &str) -> &str {
    let t = s.trim();
    if let Some(rest) = t.strip_prefix("```") {
        let body = rest.split_once('\n').map_or("", |(_, b)| b);
        return body.trim_end().strip_suffix("```").unwrap_or(body).trim();
    }
    t
}

fn parse_output(output: &str, allow_fence: bool) -> Result<Value, String> {
    let text = if allow_fence {
        strip_fence(output)
    } else {
        output.trim()
    };
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// Passes when the output parses as JSON.
#[derive(Debug)]
pub struct JsonValid {
    name: String,
    allow_fence: bool,
}

impl JsonValid {
    /// A JSON-validity check. Outputs wrapped in a Markdown code fence fail unless
    /// [`JsonValid::allow_code_fence`] is set.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            allow_fence: false,
        }
    }

    /// Accepts JSON inside one Markdown code fence (builder style).
    #[must_use]
    pub fn allow_code_fence(mut self, yes: bool) -> Self {
        self.allow_fence = yes;
        self
    }
}

#[async_trait]
impl Evaluator for JsonValid {
    fn name(&self) -> &str {
        &self.name
    }

    async fn evaluate(&self, input: &EvalInput) -> llmops_core::Result<Score> {
        Ok(match parse_output(&input.output, self.allow_fence) {
            Ok(_) => Score::pass_fail(true, "output is valid JSON"),
            Err(e) => Score::pass_fail(
                false,
                format!("output {} is not JSON: {e}", preview(&input.output)),
            ),
        })
    }
}

/// Passes when the output is JSON valid against a JSON Schema (the draft the schema's
/// `$schema` names; 2020-12 by default).
pub struct JsonSchemaEval {
    name: String,
    validator: jsonschema::Validator,
    allow_fence: bool,
}

impl std::fmt::Debug for JsonSchemaEval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonSchemaEval")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl JsonSchemaEval {
    /// Compiles `schema`; an invalid schema is an error now, not at evaluation time.
    pub fn new(name: impl Into<String>, schema: &Value) -> Result<Self, String> {
        let validator =
            jsonschema::validator_for(schema).map_err(|e| format!("invalid JSON Schema: {e}"))?;
        Ok(Self {
            name: name.into(),
            validator,
            allow_fence: false,
        })
    }

    /// Accepts JSON inside one Markdown code fence (builder style).
    #[must_use]
    pub fn allow_code_fence(mut self, yes: bool) -> Self {
        self.allow_fence = yes;
        self
    }
}

#[async_trait]
impl Evaluator for JsonSchemaEval {
    fn name(&self) -> &str {
        &self.name
    }

    async fn evaluate(&self, input: &EvalInput) -> llmops_core::Result<Score> {
        let value = match parse_output(&input.output, self.allow_fence) {
            Ok(v) => v,
            Err(e) => {
                return Ok(Score::pass_fail(false, format!("output is not JSON: {e}")));
            }
        };
        let errors: Vec<String> = self
            .validator
            .iter_errors(&value)
            .take(3)
            .map(|e| {
                let at = e.instance_path.to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{at}: {e}")
                }
            })
            .collect();
        Ok(if errors.is_empty() {
            Score::pass_fail(true, "output matches the schema")
        } else {
            Score::pass_fail(false, format!("schema violations: {}", errors.join("; ")))
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::test_util::input;
    use super::*;

    #[tokio::test]
    async fn validity_and_fences() {
        let e = JsonValid::new("j");
        assert!(
            e.evaluate(&input(r#"{"a": 1}"#, None))
                .await
                .unwrap()
                .passed
        );
        assert!(!e.evaluate(&input("{a: 1}", None)).await.unwrap().passed);
        let fenced = "```json\n{\"a\": 1}\n```";
        assert!(!e.evaluate(&input(fenced, None)).await.unwrap().passed);
        let e = JsonValid::new("j").allow_code_fence(true);
        assert!(e.evaluate(&input(fenced, None)).await.unwrap().passed);
    }

    #[tokio::test]
    async fn schema() {
        let schema = json!({"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}, "temp": {"type": "number"}}});
        let e = JsonSchemaEval::new("s", &schema).unwrap();
        assert!(
            e.evaluate(&input(r#"{"city": "Paris", "temp": 3}"#, None))
                .await
                .unwrap()
                .passed
        );
        let s = e
            .evaluate(&input(r#"{"temp": "cold"}"#, None))
            .await
            .unwrap();
        assert!(!s.passed);
        assert!(s.explanation.contains("city"), "{}", s.explanation);
        assert!(s.explanation.contains("/temp"), "{}", s.explanation);
        assert!(!e.evaluate(&input("nope", None)).await.unwrap().passed);
        assert!(JsonSchemaEval::new("bad", &json!({"type": 5})).is_err());
    }
}
