//! LLM-as-judge: rubric grading with score bands, reference-guided grading, and pairwise
//! comparison judged in both orders.
//!
//! # How a judge answers
//!
//! The judge model is asked to call a tool (`submit_grade` or `submit_verdict`) with
//! `tool_choice` forcing that call, so its answer is structured JSON, not prose to be
//! scraped. A JSON object in the message content is accepted too (for servers without tool
//! calling). If the answer does not parse or is out of range, the judge gets **one repair
//! turn** saying what was wrong; if that fails too the evaluation returns
//! [`ErrorKind::Decode`] — an ERROR, never a FAIL. Pass/fail is computed from the score and
//! the threshold; a judge's own "pass" opinion is not trusted (a missing field never
//! defaults to pass).
//!
//! Rate limits (429) are retried after the upstream's `Retry-After` or a backoff. The judge's
//! own usage is priced separately ([`Score::cost_usd`]) so reports count it apart from the
//! target's.
//!
//! # Pairwise comparisons
//!
//! [`PairwiseJudge`] asks which of two answers is better twice, with the positions swapped.
//! Only a consistent preference counts; a disagreement is a tie (as in MT-Bench), which
//! cancels the judge's position bias.

use std::sync::Arc;

use async_trait::async_trait;
use llmops_core::{
    ChatRequest, ChatResponse, Error, ErrorKind, EvalInput, Evaluator, Message, Provider,
    RequestContext, ResponseFormat, Role, Score, Tool, Usage,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::evaluators::{Reference, value_strings};
use crate::run::JudgeInfo;
use crate::runner::{Pricing, RetryPolicy};
use crate::template::short_hash;

/// How the judge is asked for structured output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StructuredOutput {
    /// A forced tool call (`tool_choice` naming the tool).
    #[default]
    ToolCall,
    /// `response_format: json_schema` (strict).
    JsonSchema,
}

/// One band of a rubric's scale: a score and what earns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ScoreBand {
    /// The score.
    pub score: i64,
    /// What an answer earning it looks like.
    pub description: String,
}

impl ScoreBand {
    /// A band.
    pub fn new(score: i64, description: impl Into<String>) -> Self {
        Self {
            score,
            description: description.into(),
        }
    }
}

/// The outcome of one grading.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Grade {
    /// The score on the rubric's scale.
    pub raw: i64,
    /// The score mapped to `[0, 1]`.
    pub normalized: f64,
    /// The judge's reasoning.
    pub reasoning: String,
    /// The judge's token usage over all its calls for this grading.
    pub usage: Usage,
    /// Calls made (2 after a repair).
    pub calls: u32,
}

/// Shared plumbing of the judges: provider, model, retries, pricing, structured output.
#[derive(Clone)]
struct JudgeCore {
    provider: Arc<dyn Provider>,
    model: String,
    pricing: Option<Pricing>,
    retry: RetryPolicy,
    output: StructuredOutput,
    temperature: Option<f64>,
}

impl JudgeCore {
    async fn call(&self, req: &ChatRequest) -> llmops_core::Result<ChatResponse> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self
                .provider
                .chat(
                    req.clone(),
                    &RequestContext::new().with_tag("eval.role", "judge"),
                )
                .await
            {
                Ok(r) => return Ok(r),
                Err(e)
                    if matches!(e.kind(), ErrorKind::RateLimited | ErrorKind::Overloaded)
                        && attempt <= self.retry.max_retries =>
                {
                    let wait = e
                        .retry_after()
                        .unwrap_or_else(|| self.retry.delay(attempt, u64::from(attempt)));
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn request(
        &self,
        messages: Vec<Message>,
        tool: &str,
        description: &str,
        schema: Value,
    ) -> ChatRequest {
        let mut req = ChatRequest::new(self.model.clone(), messages);
        req.temperature = self.temperature;
        match self.output {
            StructuredOutput::ToolCall => {
                let mut t = Tool::function(tool, description, schema);
                t.function.strict = Some(true);
                req.tools = Some(vec![t]);
                req.tool_choice = Some(json!({"type": "function", "function": {"name": tool}}));
            }
            StructuredOutput::JsonSchema => {
                // `ResponseFormat` is non-exhaustive and has no constructor: build it from
                // its wire form.
                req.response_format = serde_json::from_value::<ResponseFormat>(json!({
                    "type": "json_schema",
                    "json_schema": {"name": tool, "schema": schema, "strict": true}
                }))
                .ok();
            }
        }
        req
    }

    /// Asks, parses with `parse`, repairs once. Returns the parsed value, total usage, calls.
    async fn ask<T>(
        &self,
        messages: Vec<Message>,
        tool: &str,
        description: &str,
        schema: Value,
        parse: impl Fn(&Value) -> Result<T, String>,
    ) -> llmops_core::Result<(T, Usage, u32)> {
        let mut usage = Usage::default();
        let mut msgs = messages;
        let mut last_err = String::new();
        for call in 1..=2u32 {
            let req = self.request(msgs.clone(), tool, description, schema.clone());
            let resp = self.call(&req).await?;
            if let Some(u) = &resp.usage {
                usage.accumulate(u);
            }
            let (raw, parsed) = extract_json(&resp);
            match parsed
                .ok_or_else(|| "the answer holds no JSON object".to_owned())
                .and_then(|v| parse(&v))
            {
                Ok(t) => return Ok((t, usage, call)),
                Err(e) => {
                    last_err = e.clone();
                    msgs.push(Message::assistant(if raw.is_empty() {
                        "(empty answer)".to_owned()
                    } else {
                        raw
                    }));
                    msgs.push(Message::user(format!(
                        "Your answer could not be used: {e}. Answer again by calling `{tool}` with arguments matching this JSON Schema exactly: {schema}"
                    )));
                }
            }
        }
        Err(Error::new(
            ErrorKind::Decode,
            format!("judge answer unparseable after one repair: {last_err}"),
        )
        .with_provider(self.provider.name().to_owned()))
    }

    fn cost(&self, usage: &Usage) -> Option<f64> {
        self.pricing.map(|p| p.cost(usage))
    }
}

/// The text of the first tool call's arguments, or of the message content; and the JSON
/// object found in it.
fn extract_json(resp: &ChatResponse) -> (String, Option<Value>) {
    let Some(choice) = resp.choices.first() else {
        return (String::new(), None);
    };
    if let Some(call) = choice.message.tool_calls.as_ref().and_then(|c| c.first()) {
        let raw = call.function.arguments.clone();
        let v = serde_json::from_str::<Value>(&raw)
            .ok()
            .filter(Value::is_object);
        return (raw, v);
    }
    let raw = choice.message.text();
    let t = raw.trim();
    let t = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .unwrap_or(t);
    let t = t.strip_suffix("```").unwrap_or(t).trim();
    let v = serde_json::from_str::<Value>(t)
        .ok()
        .filter(Value::is_object)
        .or_else(|| {
            // The outermost {...} span, for answers with prose around the object.
            let (s, e) = (t.find('{')?, t.rfind('}')?);
            (s < e)
                .then(|| serde_json::from_str::<Value>(&t[s..=e]).ok())
                .flatten()
                .filter(Value::is_object)
        });
    (raw, v)
}

fn conversation_text(req: &ChatRequest) -> String {
    req.messages
        .iter()
        .filter(|m| m.role != Role::System)
        .map(|m| format!("[{}] {}", m.role.as_str(), m.text()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Grades an output against a rubric on an integer scale with described bands.
///
/// With [`RubricJudge::reference`], the case's reference answer is shown to the judge
/// (reference-guided grading, which makes judges markedly more reliable on questions with a
/// checkable answer).
#[derive(Clone)]
pub struct RubricJudge {
    name: String,
    core: JudgeCore,
    rubric: String,
    bands: Vec<ScoreBand>,
    min: i64,
    max: i64,
    threshold: f64,
    reference: Option<Reference>,
}

impl std::fmt::Debug for RubricJudge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RubricJudge")
            .field("name", &self.name)
            .field("model", &self.core.model)
            .field("scale", &(self.min, self.max))
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

impl RubricJudge {
    /// A judge named `name` calling `model` on `provider` with `rubric`, on a 1–5 scale
    /// without band descriptions, passing at 0.75 (a 4 of 5). Set bands with
    /// [`RubricJudge::bands`].
    pub fn new(
        name: impl Into<String>,
        provider: Arc<dyn Provider>,
        model: impl Into<String>,
        rubric: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            core: JudgeCore {
                provider,
                model: model.into(),
                pricing: None,
                retry: RetryPolicy::default(),
                output: StructuredOutput::ToolCall,
                temperature: Some(0.0),
            },
            rubric: rubric.into(),
            bands: Vec::new(),
            min: 1,
            max: 5,
            threshold: 0.75,
            reference: None,
        }
    }

    /// The scale's bands; the scale runs from the lowest to the highest band score
    /// (builder style). Fewer than two distinct scores keep the previous scale.
    #[must_use]
    pub fn bands(mut self, mut bands: Vec<ScoreBand>) -> Self {
        bands.sort_by_key(|b| b.score);
        if let (Some(lo), Some(hi)) = (bands.first(), bands.last())
            && lo.score < hi.score
        {
            self.min = lo.score;
            self.max = hi.score;
            self.bands = bands;
        }
        self
    }

    /// An integer scale without descriptions (builder style).
    #[must_use]
    pub fn scale(mut self, min: i64, max: i64) -> Self {
        if min < max {
            self.min = min;
            self.max = max;
            self.bands.clear();
        }
        self
    }

    /// The normalized score needed to pass (builder style).
    #[must_use]
    pub fn threshold(mut self, t: f64) -> Self {
        self.threshold = t;
        self
    }

    /// Shows the judge this reference answer (builder style).
    #[must_use]
    pub fn reference(mut self, r: Reference) -> Self {
        self.reference = Some(r);
        self
    }

    /// Prices the judge's calls (builder style).
    #[must_use]
    pub fn pricing(mut self, p: Pricing) -> Self {
        self.core.pricing = Some(p);
        self
    }

    /// How structured output is requested (builder style).
    #[must_use]
    pub fn structured_output(mut self, o: StructuredOutput) -> Self {
        self.core.output = o;
        self
    }

    /// The judge's retry policy for rate limits (builder style).
    #[must_use]
    pub fn retry(mut self, r: RetryPolicy) -> Self {
        self.core.retry = r;
        self
    }

    /// The scale's bounds.
    pub fn scale_bounds(&self) -> (i64, i64) {
        (self.min, self.max)
    }

    /// The pass threshold (normalized).
    pub fn pass_threshold(&self) -> f64 {
        self.threshold
    }

    /// The judge model and a hash of everything that defines the grading (rubric, scale,
    /// bands, reference use, threshold): a calibration is valid only for the same identity.
    pub fn identity(&self) -> JudgeInfo {
        let canon = json!({
            "rubric": self.rubric,
            "min": self.min,
            "max": self.max,
            "bands": self.bands,
            "reference": self.reference.is_some(),
            "threshold": self.threshold,
        });
        JudgeInfo {
            model: self.core.model.clone(),
            rubric_hash: short_hash(canon.to_string().as_bytes()),
        }
    }

    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "reasoning": {"type": "string", "description": "Why this score, citing the rubric."},
                "score": {"type": "integer", "minimum": self.min, "maximum": self.max}
            },
            "required": ["reasoning", "score"],
            "additionalProperties": false
        })
    }

    fn prompt(&self, input: &EvalInput) -> llmops_core::Result<Vec<Message>> {
        let mut system = format!(
            "You are a strict, impartial evaluator. Grade the RESPONSE to the CONVERSATION \
             using this rubric:\n\n{}\n\nScore on an integer scale from {} (worst) to {} (best).",
            self.rubric, self.min, self.max
        );
        if !self.bands.is_empty() {
            system.push_str("\nScore bands:\n");
            for b in &self.bands {
                system.push_str(&format!("- {}: {}\n", b.score, b.description));
            }
        }
        system.push_str(
            "\nIgnore the response's length and style unless the rubric asks about them. \
             First reason briefly, then give the score by calling `submit_grade`.",
        );
        let mut user = format!(
            "<conversation>\n{}\n</conversation>\n",
            conversation_text(&input.request)
        );
        if let Some(r) = &self.reference {
            let refs = value_strings(r.resolve(input)?);
            user.push_str(&format!(
                "<reference_answer>\n{}\n</reference_answer>\n",
                refs.join("\n---\n")
            ));
            system.push_str(" Compare the response with the reference answer, which is correct.");
        }
        user.push_str(&format!("<response>\n{}\n</response>", input.output));
        Ok(vec![Message::system(system), Message::user(user)])
    }

    /// Grades one output.
    pub async fn grade(&self, input: &EvalInput) -> llmops_core::Result<Grade> {
        let (min, max) = (self.min, self.max);
        let parse = |v: &Value| -> Result<(i64, String), String> {
            let score = v.get("score").ok_or("missing `score`")?;
            let s = score
                .as_i64()
                .or_else(|| {
                    score
                        .as_f64()
                        .filter(|f| f.fract() == 0.0)
                        .map(|f| f as i64)
                })
                .or_else(|| score.as_str().and_then(|s| s.trim().parse().ok()))
                .ok_or_else(|| format!("`score` must be an integer, got {score}"))?;
            if !(min..=max).contains(&s) {
                return Err(format!("`score` {s} is outside {min}..={max}"));
            }
            let reasoning = v
                .get("reasoning")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            Ok((s, reasoning))
        };
        let ((raw, reasoning), usage, calls) = self
            .core
            .ask(
                self.prompt(input)?,
                "submit_grade",
                "Submit the grade for the response.",
                self.schema(),
                parse,
            )
            .await?;
        Ok(Grade {
            raw,
            normalized: (raw - min) as f64 / (max - min) as f64,
            reasoning,
            usage,
            calls,
        })
    }
}

#[async_trait]
impl Evaluator for RubricJudge {
    fn name(&self) -> &str {
        &self.name
    }

    async fn evaluate(&self, input: &EvalInput) -> llmops_core::Result<Score> {
        let g = self.grade(input).await?;
        let mut s = Score::new(
            g.normalized,
            self.threshold,
            format!("{}/{}: {}", g.raw, self.max, g.reasoning),
        );
        s.cost_usd = self.core.cost(&g.usage);
        Ok(s)
    }
}

/// The outcome of a pairwise comparison of the candidate against the other answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Preference {
    /// The candidate won in both orders.
    Candidate,
    /// The other answer won in both orders.
    Other,
    /// A tie, or the two orders disagreed.
    Tie,
}

/// Compares the output with another answer (a baseline's or a reference), judged in both
/// orders. Score: 1 win, 0.5 tie, 0 loss; passes at `threshold` (default 0.5: not worse).
#[derive(Clone)]
pub struct PairwiseJudge {
    name: String,
    core: JudgeCore,
    criteria: String,
    other: Reference,
    threshold: f64,
}

impl std::fmt::Debug for PairwiseJudge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairwiseJudge")
            .field("name", &self.name)
            .field("model", &self.core.model)
            .finish_non_exhaustive()
    }
}

impl PairwiseJudge {
    /// A pairwise judge comparing the output with the answer found at `other` (e.g. the case
    /// field `baseline_output`), by `criteria`.
    pub fn new(
        name: impl Into<String>,
        provider: Arc<dyn Provider>,
        model: impl Into<String>,
        criteria: impl Into<String>,
        other: Reference,
    ) -> Self {
        Self {
            name: name.into(),
            core: JudgeCore {
                provider,
                model: model.into(),
                pricing: None,
                retry: RetryPolicy::default(),
                output: StructuredOutput::ToolCall,
                temperature: Some(0.0),
            },
            criteria: criteria.into(),
            other,
            threshold: 0.5,
        }
    }

    /// The score needed to pass (builder style).
    #[must_use]
    pub fn threshold(mut self, t: f64) -> Self {
        self.threshold = t;
        self
    }

    /// Prices the judge's calls (builder style).
    #[must_use]
    pub fn pricing(mut self, p: Pricing) -> Self {
        self.core.pricing = Some(p);
        self
    }

    /// The judge model and a hash of the criteria.
    pub fn identity(&self) -> JudgeInfo {
        JudgeInfo {
            model: self.core.model.clone(),
            rubric_hash: short_hash(self.criteria.as_bytes()),
        }
    }

    async fn once(
        &self,
        conversation: &str,
        a: &str,
        b: &str,
    ) -> llmops_core::Result<(char, Usage)> {
        let system = format!(
            "You are an impartial judge. Decide which of two responses to the conversation is \
             better by these criteria:\n\n{}\n\nDo not let the order of the responses, their \
             length or the assistants' names influence you. Call `submit_verdict` with \
             winner \"A\", \"B\" or \"tie\".",
            self.criteria
        );
        let user = format!(
            "<conversation>\n{conversation}\n</conversation>\n<response_a>\n{a}\n</response_a>\n<response_b>\n{b}\n</response_b>"
        );
        let schema = json!({
            "type": "object",
            "properties": {
                "reasoning": {"type": "string"},
                "winner": {"type": "string", "enum": ["A", "B", "tie"]}
            },
            "required": ["reasoning", "winner"],
            "additionalProperties": false
        });
        let parse = |v: &Value| -> Result<char, String> {
            match v
                .get("winner")
                .and_then(Value::as_str)
                .map(|s| s.trim().to_ascii_lowercase())
            {
                Some(w) if w == "a" => Ok('A'),
                Some(w) if w == "b" => Ok('B'),
                Some(w) if w == "tie" => Ok('T'),
                Some(w) => Err(format!(
                    "`winner` must be \"A\", \"B\" or \"tie\", got {w:?}"
                )),
                None => Err("missing `winner`".into()),
            }
        };
        let (w, usage, _) = self
            .core
            .ask(
                vec![Message::system(system), Message::user(user)],
                "submit_verdict",
                "Submit which response is better.",
                schema,
                parse,
            )
            .await?;
        Ok((w, usage))
    }

    /// Compares `candidate` with `other` as answers to `conversation`, in both orders.
    pub async fn compare(
        &self,
        conversation: &str,
        candidate: &str,
        other: &str,
    ) -> llmops_core::Result<(Preference, Usage)> {
        let (first, mut usage) = self.once(conversation, candidate, other).await?;
        let (second, u2) = self.once(conversation, other, candidate).await?;
        usage.accumulate(&u2);
        let pref = match (first, second) {
            ('A', 'B') => Preference::Candidate,
            ('B', 'A') => Preference::Other,
            _ => Preference::Tie,
        };
        Ok((pref, usage))
    }
}

#[async_trait]
impl Evaluator for PairwiseJudge {
    fn name(&self) -> &str {
        &self.name
    }

    async fn evaluate(&self, input: &EvalInput) -> llmops_core::Result<Score> {
        let other = value_strings(self.other.resolve(input)?).join("\n");
        let (pref, usage) = self
            .compare(&conversation_text(&input.request), &input.output, &other)
            .await?;
        let (value, why) = match pref {
            Preference::Candidate => (1.0, "preferred over the other answer in both orders"),
            Preference::Other => (0.0, "the other answer was preferred in both orders"),
            Preference::Tie => (0.5, "tie (or the two orders disagreed)"),
        };
        let mut s = Score::new(value, self.threshold, why);
        s.cost_usd = self.core.cost(&usage);
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use llmops_core::mock::{MockProvider, MockReply};

    use super::*;
    use crate::evaluators::test_util::input;

    fn judge(mock: &MockProvider) -> RubricJudge {
        RubricJudge::new(
            "quality",
            Arc::new(mock.clone()),
            "judge-1",
            "Is the answer correct?",
        )
        .bands(vec![
            ScoreBand::new(1, "wrong"),
            ScoreBand::new(3, "partly right"),
            ScoreBand::new(5, "right"),
        ])
        .pricing(Pricing::new(1.0, 1.0))
    }

    #[tokio::test]
    async fn forced_tool_call_and_normalized_score() {
        let mock = MockProvider::new("j").reply(MockReply::tool_call(
            "submit_grade",
            json!({"reasoning": "ok", "score": 4}),
        ));
        let s = judge(&mock).evaluate(&input("Paris", None)).await.unwrap();
        assert_eq!(s.value, 0.75);
        assert!(s.passed);
        assert!(s.cost_usd.unwrap() > 0.0);
        let req = mock.last_chat_request().unwrap();
        assert_eq!(req.tool_choice.unwrap()["function"]["name"], "submit_grade");
        assert!(req.messages[0].text().contains("- 3: partly right"));
    }

    #[tokio::test]
    async fn one_repair_then_error() {
        let mock = MockProvider::new("j")
            .reply(MockReply::text("I'd say it is good"))
            .reply(MockReply::text(
                "```json\n{\"reasoning\": \"fine\", \"score\": 2}\n```",
            ));
        let s = judge(&mock).evaluate(&input("x", None)).await.unwrap();
        assert_eq!(s.value, 0.25);
        mock.assert_call_count(2);
        assert!(
            mock.last_chat_request()
                .unwrap()
                .messages
                .last()
                .unwrap()
                .text()
                .contains("could not be used")
        );

        let mock = MockProvider::new("j")
            .reply(MockReply::tool_call(
                "submit_grade",
                json!({"reasoning": "x", "score": 9}),
            ))
            .reply(MockReply::text("no"));
        let e = judge(&mock).evaluate(&input("x", None)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Decode);
        assert!(e.message().contains("unparseable"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limits_are_retried() {
        let mock = MockProvider::new("j")
            .reply(MockReply::error(ErrorKind::RateLimited))
            .reply(MockReply::tool_call(
                "submit_grade",
                json!({"reasoning": "x", "score": 5}),
            ));
        assert!(
            judge(&mock)
                .evaluate(&input("x", None))
                .await
                .unwrap()
                .passed
        );
    }

    #[tokio::test]
    async fn reference_guided_and_identity() {
        let mock = MockProvider::new("j").default_reply(MockReply::tool_call(
            "submit_grade",
            json!({"reasoning": "x", "score": 5}),
        ));
        let j = judge(&mock).reference(Reference::Expected);
        assert!(
            j.evaluate(&input("Paris", Some(json!("Paris, France"))))
                .await
                .unwrap()
                .passed
        );
        assert!(
            mock.last_chat_request().unwrap().messages[1]
                .text()
                .contains("<reference_answer>\nParis, France")
        );
        assert!(j.evaluate(&input("Paris", None)).await.is_err());
        assert_ne!(j.identity(), judge(&mock).identity());
    }

    #[tokio::test]
    async fn pairwise_swaps_and_disagreement_is_a_tie() {
        let verdict = |w: &str| {
            MockReply::tool_call("submit_verdict", json!({"reasoning": "r", "winner": w}))
        };
        // Consistent: candidate is A first, B second.
        let mock = MockProvider::new("j")
            .reply(verdict("A"))
            .reply(verdict("B"));
        let pj = PairwiseJudge::new(
            "pair",
            Arc::new(mock.clone()),
            "j",
            "helpfulness",
            Reference::Field("baseline_output".into()),
        );
        let mut i = input("new answer", None);
        i.vars.insert("baseline_output".into(), json!("old answer"));
        let s = pj.evaluate(&i).await.unwrap();
        assert_eq!(s.value, 1.0);
        let calls = mock.calls();
        let second = match &calls[1].request {
            llmops_core::mock::RecordedRequest::Chat { request, .. } => request.messages[1].text(),
            _ => unreachable!(),
        };
        assert!(second.find("old answer").unwrap() < second.find("new answer").unwrap());

        // Position bias: the judge always picks A → disagreement → tie.
        let mock = MockProvider::new("j")
            .reply(verdict("A"))
            .reply(verdict("A"));
        let pj = PairwiseJudge::new(
            "pair",
            Arc::new(mock),
            "j",
            "helpfulness",
            Reference::Field("baseline_output".into()),
        );
        let s = pj.evaluate(&i).await.unwrap();
        assert_eq!(s.value, 0.5);
        assert!(s.passed);
    }
}
