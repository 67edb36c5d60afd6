//! Prompt templates: messages with `{{ variable }}` placeholders, versioned by content hash.
//!
//! A template renders a case's variables into the conversation sent to the model. Its
//! version is the first 12 hex digits of the SHA-256 of its canonical JSON, so the same text
//! always has the same version and any edit changes it; the version is part of the result
//! cache key and of every run file, and prompt promotion records it.
//!
//! Placeholders are `{{name}}` or `{{ name }}`; `{{case.id}}` is the case id and `{{expected}}`
//! the expected value. A variable that is not a string is rendered as JSON. A missing
//! variable is an error naming the case and the variable — never a silent empty string.

use std::path::Path;

use llmops_core::{Message, Role};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::dataset::{Case, CaseInput};
use crate::error::{EvalError, Result};

/// A prompt template: an id, its messages, and its content version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PromptTemplate {
    /// The template's name.
    pub id: String,
    /// The messages, with placeholders.
    pub messages: Vec<TemplateMessage>,
}

/// One message of a template.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TemplateMessage {
    /// `system`, `user`, `assistant` or `developer`.
    pub role: Role,
    /// The text, with placeholders.
    pub content: String,
}

impl TemplateMessage {
    /// A message template.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

impl PromptTemplate {
    /// A template named `id` made of `messages`.
    pub fn new(id: impl Into<String>, messages: Vec<TemplateMessage>) -> Self {
        Self {
            id: id.into(),
            messages,
        }
    }

    /// A template of one user message.
    pub fn user(id: impl Into<String>, text: impl Into<String>) -> Self {
        Self::new(id, vec![TemplateMessage::new(Role::User, text)])
    }

    /// Loads a template file: `.json` holds `[{"role", "content"}, ...]` (or
    /// `{"messages": [...]}`), any other extension is the text of one user message. The id is
    /// the file stem.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
        let id = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("prompt")
            .to_owned();
        Self::parse(id, path, &text)
    }

    /// Parses template text as [`PromptTemplate::load`] does; `path` picks the format.
    pub fn parse(id: String, path: &Path, text: &str) -> Result<Self> {
        if path.extension().is_some_and(|e| e == "json") {
            #[derive(Deserialize)]
            #[serde(untagged)]
            enum File {
                List(Vec<TemplateMessage>),
                Obj { messages: Vec<TemplateMessage> },
            }
            let file: File = serde_json::from_str(text).map_err(|e| EvalError::Parse {
                path: path.to_owned(),
                message: format!("expected a list of {{role, content}} messages: {e}"),
            })?;
            let messages = match file {
                File::List(m) | File::Obj { messages: m } => m,
            };
            if messages.is_empty() {
                return Err(EvalError::Parse {
                    path: path.to_owned(),
                    message: "a template needs at least one message".into(),
                });
            }
            Ok(Self::new(id, messages))
        } else {
            Ok(Self::user(id, text.trim_end_matches('\n')))
        }
    }

    /// The content version: 12 hex digits of the SHA-256 of the canonical JSON.
    pub fn version(&self) -> String {
        let canonical = serde_json::to_vec(&self.messages).unwrap_or_default();
        short_hash(&canonical)
    }

    /// Renders the template with `vars` for case `case_id`.
    pub fn render(
        &self,
        case_id: &str,
        vars: &Map<String, Value>,
        expected: Option<&Value>,
    ) -> Result<Vec<Message>> {
        self.messages
            .iter()
            .map(|m| {
                let text = render_text(&m.content, case_id, vars, expected)?;
                Ok(Message::new(m.role, text))
            })
            .collect()
    }

    /// The names of the variables the template uses.
    pub fn variables(&self) -> Vec<String> {
        let mut out = Vec::new();
        for m in &self.messages {
            let mut rest = m.content.as_str();
            while let Some(start) = rest.find("{{") {
                let after = &rest[start + 2..];
                let Some(end) = after.find("}}") else { break };
                let name = after[..end].trim().to_owned();
                if !out.contains(&name) {
                    out.push(name);
                }
                rest = &after[end + 2..];
            }
        }
        out
    }
}

/// The messages a case sends: its own messages, or the template rendered with its variables.
pub fn case_messages(case: &Case, template: Option<&PromptTemplate>) -> Result<Vec<Message>> {
    match (&case.input, template) {
        (CaseInput::Messages(m), _) => Ok(m.clone()),
        (CaseInput::Vars(v), Some(t)) => {
            let mut vars = case.vars.clone();
            vars.extend(v.iter().map(|(k, v)| (k.clone(), v.clone())));
            t.render(&case.id, &vars, case.expected.as_ref())
        }
        (CaseInput::Vars(_), None) => Err(EvalError::Template {
            case: case.id.clone(),
            message: "the case gives template variables but the suite has no [prompt]".into(),
        }),
    }
}

fn render_text(
    text: &str,
    case_id: &str,
    vars: &Map<String, Value>,
    expected: Option<&Value>,
) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(EvalError::Template {
                case: case_id.to_owned(),
                message: "unclosed `{{` in the prompt template".into(),
            });
        };
        let name = after[..end].trim();
        let value = match name {
            "case.id" => Some(Value::String(case_id.to_owned())),
            "expected" => expected.cloned(),
            _ => vars.get(name).cloned(),
        };
        match value {
            Some(Value::String(s)) => out.push_str(&s),
            Some(v) => out.push_str(&v.to_string()),
            None => {
                return Err(EvalError::Template {
                    case: case_id.to_owned(),
                    message: format!(
                        "the prompt template uses `{{{{{name}}}}}` but the case has no such variable"
                    ),
                });
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// 12 hex digits of the SHA-256 of `bytes`.
pub(crate) fn short_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// The full hex SHA-256 of `bytes`.
pub(crate) fn full_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn renders_and_versions() {
        let t = PromptTemplate::new(
            "capitals",
            vec![
                TemplateMessage::new(Role::System, "Answer with one word."),
                TemplateMessage::new(
                    Role::User,
                    "Capital of {{ country }}? ({{case.id}}, n={{n}})",
                ),
            ],
        );
        let vars = json!({"country": "France", "n": 3})
            .as_object()
            .cloned()
            .unwrap();
        let msgs = t.render("fr", &vars, None).unwrap();
        assert_eq!(msgs[1].text(), "Capital of France? (fr, n=3)");
        assert_eq!(t.version().len(), 12);
        let mut t2 = t.clone();
        t2.messages[0].content.push('!');
        assert_ne!(t.version(), t2.version());
        assert_eq!(t.variables(), vec!["country", "case.id", "n"]);
    }

    #[test]
    fn missing_variable_names_case_and_variable() {
        let t = PromptTemplate::user("p", "Capital of {{country}}?");
        let e = t.render("fr", &Map::new(), None).unwrap_err().to_string();
        assert_eq!(
            e,
            "case `fr`: the prompt template uses `{{country}}` but the case has no such variable"
        );
        let t = PromptTemplate::user("p", "oops {{country");
        assert!(
            t.render("fr", &Map::new(), None)
                .unwrap_err()
                .to_string()
                .contains("unclosed")
        );
    }
}
