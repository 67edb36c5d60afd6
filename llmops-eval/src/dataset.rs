//! Golden datasets: JSONL, CSV and YAML files of cases.
//!
//! A case has an `id`, an `input` — either chat `messages` or template variables — an
//! optional `expected` answer (any JSON value: a string, a list of acceptable strings, an
//! object for tool calls), `tags`, an optional `cluster` (cases that share a source, such as
//! several questions about one document; the gate resamples clusters, not cases) and a
//! `must_pass` flag. Any other field is kept in [`Case::vars`] and is visible to templates and
//! evaluators.
//!
//! # Formats
//!
//! **JSONL**, one case per line:
//!
//! ```json
//! {"id": "fr", "input": {"messages": [{"role": "user", "content": "Capital of France?"}]}, "expected": "Paris"}
//! {"id": "de", "input": {"country": "Germany"}, "expected": "Berlin", "tags": ["europe"], "cluster": "eu"}
//! ```
//!
//! `input` may be an object with `messages`, an object of template variables (optionally
//! under `vars`), or a plain string (one user message).
//!
//! **CSV** with a header row: `id` (required), `input` (a user message) and/or any other
//! column as a template variable, `expected`, `tags` (separated by `;` or `|`), `cluster`,
//! `must_pass` (`true`/`false`).
//!
//! **YAML**: a list of cases with the JSONL fields, or a mapping with a `cases:` list.
//!
//! Every schema error names the file, the 1-based line and the field.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use llmops_core::Message;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{EvalError, Result};

/// What a case sends to the model under test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CaseInput {
    /// A complete conversation, sent as is.
    Messages(Vec<Message>),
    /// Variables for the suite's prompt template.
    Vars(Map<String, Value>),
}

/// One test case of a dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Case {
    /// Unique id within the dataset; pairs the case with the baseline's.
    pub id: String,
    /// The input.
    pub input: CaseInput,
    /// The expected output or reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<Value>,
    /// Free-form tags (reports group by them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Cases sharing a cluster id are resampled together by the gate's bootstrap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The gate fails whenever this case fails.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub must_pass: bool,
    /// Every other field of the record.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub vars: Map<String, Value>,
}

impl Case {
    /// A case with `messages` as its input.
    pub fn from_messages(id: impl Into<String>, messages: Vec<Message>) -> Self {
        Self::new(id, CaseInput::Messages(messages))
    }

    /// A case with template variables as its input.
    pub fn from_vars(id: impl Into<String>, vars: Map<String, Value>) -> Self {
        Self::new(id, CaseInput::Vars(vars))
    }

    fn new(id: impl Into<String>, input: CaseInput) -> Self {
        Self {
            id: id.into(),
            input,
            expected: None,
            tags: Vec::new(),
            cluster: None,
            must_pass: false,
            vars: Map::new(),
        }
    }

    /// Sets the expected answer (builder style).
    #[must_use]
    pub fn with_expected(mut self, expected: impl Into<Value>) -> Self {
        self.expected = Some(expected.into());
        self
    }

    /// Sets the cluster (builder style).
    #[must_use]
    pub fn with_cluster(mut self, cluster: impl Into<String>) -> Self {
        self.cluster = Some(cluster.into());
        self
    }

    /// Marks the case as must-pass (builder style).
    #[must_use]
    pub fn must_pass(mut self) -> Self {
        self.must_pass = true;
        self
    }

    /// Adds a tag (builder style).
    #[must_use]
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }
}

/// A loaded dataset: its cases, in file order, with unique ids.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Dataset {
    /// The cases.
    pub cases: Vec<Case>,
    /// Where they came from, when loaded from a file.
    pub source: Option<PathBuf>,
}

impl Dataset {
    /// A dataset of `cases`; fails if two cases share an id.
    pub fn from_cases(cases: Vec<Case>) -> Result<Self> {
        let mut seen = HashSet::new();
        for c in &cases {
            if !seen.insert(c.id.as_str()) {
                return Err(EvalError::Config(format!("duplicate case id `{}`", c.id)));
            }
        }
        Ok(Self {
            cases,
            source: None,
        })
    }

    /// Loads a dataset, choosing the format by extension (`.jsonl`/`.ndjson`, `.csv`,
    /// `.yaml`/`.yml`, `.json` holding an array).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
        // Spreadsheet exports often start with a byte-order mark.
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match ext.as_str() {
            "jsonl" | "ndjson" => Self::parse_jsonl(path, text),
            "csv" => Self::parse_csv(path, text),
            "yaml" | "yml" => Self::parse_yaml(path, text),
            "json" => Self::parse_json_array(path, text),
            _ => Err(EvalError::Config(format!(
                "{}: unknown dataset format `.{ext}` (use .jsonl, .csv, .yaml or .json)",
                path.display()
            ))),
        }
    }

    /// Parses JSONL text; `path` is used in error messages.
    pub fn parse_jsonl(path: &Path, text: &str) -> Result<Self> {
        let mut cases = Vec::new();
        let mut seen = HashSet::new();
        for (i, line) in text.lines().enumerate() {
            let lineno = i + 1;
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with("//") {
                continue;
            }
            let value: Value = serde_json::from_str(trimmed)
                .map_err(|e| EvalError::dataset(path, lineno, "-", format!("invalid JSON: {e}")))?;
            let case = case_from_value(path, lineno, value)?;
            check_unique(path, lineno, &mut seen, &case.id)?;
            cases.push(case);
        }
        Ok(Self {
            cases,
            source: Some(path.to_owned()),
        })
    }

    fn parse_json_array(path: &Path, text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| EvalError::dataset(path, e.line(), "-", format!("invalid JSON: {e}")))?;
        let Value::Array(items) = value else {
            return Err(EvalError::dataset(
                path,
                1,
                "-",
                "expected an array of cases",
            ));
        };
        let mut cases = Vec::new();
        let mut seen = HashSet::new();
        for (i, item) in items.into_iter().enumerate() {
            // JSON arrays carry no line information once parsed; report the item number.
            let case = case_from_value(path, i + 1, item)?;
            check_unique(path, i + 1, &mut seen, &case.id)?;
            cases.push(case);
        }
        Ok(Self {
            cases,
            source: Some(path.to_owned()),
        })
    }

    /// Parses CSV text (with a header row); `path` is used in error messages.
    pub fn parse_csv(path: &Path, text: &str) -> Result<Self> {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(false)
            .from_reader(text.as_bytes());
        let headers = reader
            .headers()
            .map_err(|e| EvalError::dataset(path, 1, "-", format!("invalid CSV header: {e}")))?
            .clone();
        if !headers.iter().any(|h| h == "id") {
            return Err(EvalError::dataset(
                path,
                1,
                "id",
                "the header has no `id` column",
            ));
        }
        let mut cases = Vec::new();
        let mut seen = HashSet::new();
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e.position().map_or(0, |p| p.line() as usize);
                EvalError::dataset(path, line, "-", format!("invalid CSV record: {e}"))
            })?;
            let line = record.position().map_or(0, |p| p.line() as usize);
            let mut obj = Map::new();
            let mut vars = Map::new();
            for (h, v) in headers.iter().zip(record.iter()) {
                match h {
                    "id" | "expected" | "cluster" => {
                        if !v.is_empty() {
                            obj.insert(h.to_owned(), Value::String(v.to_owned()));
                        }
                    }
                    "input" => {
                        if !v.is_empty() {
                            obj.insert("input".into(), Value::String(v.to_owned()));
                        }
                    }
                    "tags" => {
                        let tags = v
                            .split([';', '|'])
                            .map(str::trim)
                            .filter(|t| !t.is_empty())
                            .map(|t| Value::String(t.to_owned()))
                            .collect();
                        obj.insert("tags".into(), Value::Array(tags));
                    }
                    "must_pass" => {
                        let b = match v.trim().to_ascii_lowercase().as_str() {
                            "" | "false" | "0" | "no" => false,
                            "true" | "1" | "yes" => true,
                            other => {
                                return Err(EvalError::dataset(
                                    path,
                                    line,
                                    "must_pass",
                                    format!("expected true or false, got `{other}`"),
                                ));
                            }
                        };
                        obj.insert("must_pass".into(), Value::Bool(b));
                    }
                    other => {
                        vars.insert(other.to_owned(), Value::String(v.to_owned()));
                    }
                }
            }
            // Columns other than the reserved ones are template variables, unless the row
            // already gives a literal `input` message.
            if obj.contains_key("input") {
                obj.extend(vars);
            } else if !vars.is_empty() {
                obj.insert("input".into(), Value::Object(vars));
            }
            let case = case_from_value(path, line, Value::Object(obj))?;
            check_unique(path, line, &mut seen, &case.id)?;
            cases.push(case);
        }
        Ok(Self {
            cases,
            source: Some(path.to_owned()),
        })
    }

    /// Parses YAML text; `path` is used in error messages.
    pub fn parse_yaml(path: &Path, text: &str) -> Result<Self> {
        let value: Value = serde_yaml_ng::from_str(text).map_err(|e| {
            let line = e.location().map_or(0, |l| l.line());
            EvalError::dataset(path, line, "-", format!("invalid YAML: {e}"))
        })?;
        let (items, nested) = match value {
            Value::Array(items) => (items, false),
            Value::Object(mut m) => match m.remove("cases") {
                Some(Value::Array(items)) => (items, true),
                _ => {
                    return Err(EvalError::dataset(
                        path,
                        1,
                        "cases",
                        "expected a list of cases or a mapping with a `cases:` list",
                    ));
                }
            },
            _ => return Err(EvalError::dataset(path, 1, "-", "expected a list of cases")),
        };
        let lines = yaml_item_lines(text, nested);
        let mut cases = Vec::new();
        let mut seen = HashSet::new();
        for (i, item) in items.into_iter().enumerate() {
            let line = lines.get(i).copied().unwrap_or(0);
            let case = case_from_value(path, line, item)?;
            check_unique(path, line, &mut seen, &case.id)?;
            cases.push(case);
        }
        Ok(Self {
            cases,
            source: Some(path.to_owned()),
        })
    }

    /// The number of cases.
    pub fn len(&self) -> usize {
        self.cases.len()
    }

    /// Whether the dataset has no case.
    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
    }
}

fn check_unique<'a>(
    path: &Path,
    line: usize,
    seen: &mut HashSet<String>,
    id: &'a str,
) -> Result<&'a str> {
    if !seen.insert(id.to_owned()) {
        return Err(EvalError::dataset(
            path,
            line,
            "id",
            format!("duplicate case id `{id}`"),
        ));
    }
    Ok(id)
}

/// The 1-based lines where the items of the top-level (or `cases:`) YAML sequence start.
fn yaml_item_lines(text: &str, nested: bool) -> Vec<usize> {
    let mut indent: Option<usize> = None;
    let mut in_cases = !nested;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let col = line.len() - trimmed.len();
        if nested && !in_cases {
            if col == 0 && trimmed.starts_with("cases:") {
                in_cases = true;
            }
            continue;
        }
        if nested && col == 0 && !trimmed.starts_with('-') {
            in_cases = trimmed.starts_with("cases:");
            continue;
        }
        if trimmed.starts_with("- ") || trimmed == "-" {
            match indent {
                None => {
                    indent = Some(col);
                    out.push(i + 1);
                }
                Some(c) if c == col => out.push(i + 1),
                Some(_) => {}
            }
        }
    }
    out
}

const RESERVED: &[&str] = &["id", "input", "expected", "tags", "cluster", "must_pass"];

fn case_from_value(path: &Path, line: usize, value: Value) -> Result<Case> {
    let err = |field: &str, msg: String| EvalError::dataset(path, line, field, msg);
    let Value::Object(mut obj) = value else {
        return Err(err(
            "-",
            format!("expected an object, got {}", type_name(&value)),
        ));
    };
    let id = match obj.remove("id") {
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(_)) => return Err(err("id", "must not be empty".into())),
        Some(other) => {
            return Err(err(
                "id",
                format!("expected a string, got {}", type_name(&other)),
            ));
        }
        None => return Err(err("id", "missing".into())),
    };
    let input = match obj.remove("input") {
        None => return Err(err("input", "missing".into())),
        Some(Value::String(s)) => CaseInput::Messages(vec![Message::user(s)]),
        Some(Value::Object(mut m)) => {
            if let Some(msgs) = m.remove("messages") {
                if !m.is_empty() {
                    let extra: Vec<_> = m.keys().cloned().collect();
                    return Err(err(
                        "input",
                        format!(
                            "`messages` cannot be combined with template variables ({})",
                            extra.join(", ")
                        ),
                    ));
                }
                CaseInput::Messages(parse_messages(path, line, msgs)?)
            } else if let Some(vars) = m.remove("vars") {
                match vars {
                    Value::Object(v) if m.is_empty() => CaseInput::Vars(v),
                    Value::Object(_) => {
                        return Err(err(
                            "input.vars",
                            "cannot be combined with other keys".into(),
                        ));
                    }
                    other => {
                        return Err(err(
                            "input.vars",
                            format!("expected an object, got {}", type_name(&other)),
                        ));
                    }
                }
            } else {
                CaseInput::Vars(m)
            }
        }
        Some(other) => {
            return Err(err(
                "input",
                format!(
                    "expected an object (messages or variables) or a string, got {}",
                    type_name(&other)
                ),
            ));
        }
    };
    let expected = obj.remove("expected").filter(|v| !v.is_null());
    let tags = match obj.remove("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut tags = Vec::with_capacity(items.len());
            for (i, t) in items.into_iter().enumerate() {
                match t {
                    Value::String(s) => tags.push(s),
                    other => {
                        return Err(err(
                            &format!("tags[{i}]"),
                            format!("expected a string, got {}", type_name(&other)),
                        ));
                    }
                }
            }
            tags
        }
        Some(Value::String(s)) => vec![s],
        Some(other) => {
            return Err(err(
                "tags",
                format!("expected a list of strings, got {}", type_name(&other)),
            ));
        }
    };
    let cluster = match obj.remove("cluster") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return Err(err(
                "cluster",
                format!("expected a string, got {}", type_name(&other)),
            ));
        }
    };
    let must_pass = match obj.remove("must_pass") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(other) => {
            return Err(err(
                "must_pass",
                format!("expected a boolean, got {}", type_name(&other)),
            ));
        }
    };
    debug_assert!(RESERVED.iter().all(|k| !obj.contains_key(*k)));
    Ok(Case {
        id,
        input,
        expected,
        tags,
        cluster,
        must_pass,
        vars: obj,
    })
}

fn parse_messages(path: &Path, line: usize, value: Value) -> Result<Vec<Message>> {
    let Value::Array(items) = value else {
        return Err(EvalError::dataset(
            path,
            line,
            "input.messages",
            format!("expected a list of messages, got {}", type_name(&value)),
        ));
    };
    if items.is_empty() {
        return Err(EvalError::dataset(
            path,
            line,
            "input.messages",
            "must not be empty",
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let field = format!("input.messages[{i}]");
        match &item {
            Value::Object(m) => match m.get("role") {
                Some(Value::String(_)) => {}
                Some(other) => {
                    return Err(EvalError::dataset(
                        path,
                        line,
                        format!("{field}.role"),
                        format!("expected a string, got {}", type_name(other)),
                    ));
                }
                None => {
                    return Err(EvalError::dataset(
                        path,
                        line,
                        format!("{field}.role"),
                        "missing",
                    ));
                }
            },
            other => {
                return Err(EvalError::dataset(
                    path,
                    line,
                    field,
                    format!("expected an object, got {}", type_name(other)),
                ));
            }
        }
        let msg: Message = serde_json::from_value(item)
            .map_err(|e| EvalError::dataset(path, line, field.clone(), e.to_string()))?;
        out.push(msg);
    }
    Ok(out)
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("cases.jsonl")
    }

    #[test]
    fn jsonl_messages_vars_and_strings() {
        let text = r#"
{"id": "fr", "input": {"messages": [{"role": "user", "content": "Capital of France?"}]}, "expected": "Paris", "tags": ["eu"], "cluster": "c1"}
{"id": "de", "input": {"country": "Germany"}, "expected": ["Berlin"], "source": "wiki"}
{"id": 3, "input": "hello", "must_pass": true}
"#;
        let ds = Dataset::parse_jsonl(p(), text).unwrap();
        assert_eq!(ds.len(), 3);
        assert!(
            matches!(&ds.cases[0].input, CaseInput::Messages(m) if m[0].text() == "Capital of France?")
        );
        assert_eq!(ds.cases[0].cluster.as_deref(), Some("c1"));
        assert!(matches!(&ds.cases[1].input, CaseInput::Vars(v) if v["country"] == "Germany"));
        assert_eq!(ds.cases[1].vars["source"], "wiki");
        assert_eq!(ds.cases[2].id, "3");
        assert!(ds.cases[2].must_pass);
    }

    #[test]
    fn jsonl_errors_name_file_line_and_field() {
        let text = "{\"id\": \"a\", \"input\": \"x\"}\n\n{\"id\": \"b\", \"input\": {\"messages\": [{\"content\": \"hi\"}]}}\n";
        let e = Dataset::parse_jsonl(p(), text).unwrap_err().to_string();
        assert_eq!(e, "cases.jsonl:3: field `input.messages[0].role`: missing");

        let e = Dataset::parse_jsonl(p(), "{\"input\": \"x\"}")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "cases.jsonl:1: field `id`: missing");

        let e = Dataset::parse_jsonl(
            p(),
            "{\"id\": \"a\", \"input\": \"x\"}\n{\"id\": \"a\", \"input\": \"y\"}",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("cases.jsonl:2: field `id`: duplicate"), "{e}");

        let e = Dataset::parse_jsonl(p(), "{\"id\": \"a\", \"input\": 4}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("field `input`"), "{e}");

        let e = Dataset::parse_jsonl(p(), "{\"id\": \"a\", \"input\": \"x\", \"tags\": [1]}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("field `tags[0]`"), "{e}");

        let e = Dataset::parse_jsonl(p(), "not json")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cases.jsonl:1: field `-`: invalid JSON"),
            "{e}"
        );
    }

    #[test]
    fn csv_columns_become_variables() {
        let text = "id,country,expected,tags,cluster,must_pass\nfr,France,Paris,eu;west,c1,true\nde,Germany,Berlin,,c1,\n";
        let ds = Dataset::parse_csv(Path::new("d.csv"), text).unwrap();
        assert_eq!(ds.len(), 2);
        assert!(matches!(&ds.cases[0].input, CaseInput::Vars(v) if v["country"] == "France"));
        assert_eq!(ds.cases[0].tags, vec!["eu", "west"]);
        assert!(ds.cases[0].must_pass);
        assert!(!ds.cases[1].must_pass);
        assert_eq!(ds.cases[1].expected, Some(Value::String("Berlin".into())));
    }

    #[test]
    fn csv_errors_name_the_line() {
        let text = "id,input,must_pass\na,hi,true\nb,hello,maybe\n";
        let e = Dataset::parse_csv(Path::new("d.csv"), text)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "d.csv:3: field `must_pass`: expected true or false, got `maybe`"
        );
        let e = Dataset::parse_csv(Path::new("d.csv"), "name\nx\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no `id` column"), "{e}");
        let e = Dataset::parse_csv(Path::new("d.csv"), "id,input\na,hi\nb,\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "d.csv:3: field `input`: missing");
    }

    #[test]
    fn load_picks_the_format_and_skips_a_bom() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("d.csv");
        std::fs::write(&csv, "\u{feff}id,input\na,hello\n").unwrap();
        let ds = Dataset::load(&csv).unwrap();
        assert_eq!(ds.cases[0].id, "a");
        let json = dir.path().join("d.json");
        std::fs::write(&json, r#"[{"id": "x", "input": "hi"}]"#).unwrap();
        assert_eq!(Dataset::load(&json).unwrap().len(), 1);
        let txt = dir.path().join("d.txt");
        std::fs::write(&txt, "").unwrap();
        assert!(
            Dataset::load(&txt)
                .unwrap_err()
                .to_string()
                .contains("unknown dataset format")
        );
    }

    #[test]
    fn yaml_lists_and_line_numbers() {
        let text = "cases:\n  - id: a\n    input: hi\n    expected: x\n  - id: b\n    input:\n      messages: oops\n";
        let e = Dataset::parse_yaml(Path::new("d.yaml"), text)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "d.yaml:5: field `input.messages`: expected a list of messages, got a string"
        );

        let text = "# golden set\n- id: a\n  input:\n    country: France\n  expected: Paris\n- id: b\n  input: hello\n";
        let ds = Dataset::parse_yaml(Path::new("d.yaml"), text).unwrap();
        assert_eq!(ds.len(), 2);
        assert!(matches!(&ds.cases[0].input, CaseInput::Vars(v) if v["country"] == "France"));
    }
}
