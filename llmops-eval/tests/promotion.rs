//! Gated prompt promotion: a better version is promoted, a worse one is refused, every
//! decision is recorded, and rollback restores the previous version.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use llmops_core::{ChatRequest, ChatResponse, ChatStream, Error, Provider, RequestContext};
use llmops_eval::prompts::{DecisionLog, PromotionRequest, PromptRegistry, promote, rollback};
use llmops_eval::{Overrides, PromptTemplate, Suite, Target};
use serde_json::Value;

/// Knows every capital, but only answers well when asked "What is the capital of X?".
struct PickyModel;

#[async_trait]
impl Provider for PickyModel {
    fn name(&self) -> &str {
        "picky"
    }
    async fn chat(
        &self,
        req: ChatRequest,
        ctx: &RequestContext,
    ) -> llmops_core::Result<ChatResponse> {
        assert!(
            ctx.prompt.is_some(),
            "every request carries its template id and version"
        );
        let q = req.messages.last().unwrap().text();
        let country = q.rsplit(' ').next().unwrap().trim_end_matches('?');
        let city = match country {
            "France" => "Paris",
            "Germany" => "Berlin",
            "Italy" => "Rome",
            "Spain" => "Madrid",
            _ => "Lisbon",
        };
        let answer = if q.starts_with("What is the capital") {
            city
        } else {
            "Somewhere nice"
        };
        Ok(ChatResponse::text("id", req.model, answer, None))
    }
    async fn chat_stream(
        &self,
        _: ChatRequest,
        _: &RequestContext,
    ) -> llmops_core::Result<ChatStream> {
        Err(Error::new(
            llmops_core::ErrorKind::Unsupported,
            "no streams",
        ))
    }
}

fn suite(dir: &std::path::Path) -> Suite {
    let mut cases = String::new();
    for (i, c) in ["France", "Germany", "Italy", "Spain", "Portugal"]
        .iter()
        .cycle()
        .take(40)
        .enumerate()
    {
        let city = match *c {
            "France" => "Paris",
            "Germany" => "Berlin",
            "Italy" => "Rome",
            "Spain" => "Madrid",
            _ => "Lisbon",
        };
        cases.push_str(&format!(
            "{{\"id\": \"c{i}\", \"input\": {{\"country\": \"{c}\"}}, \"expected\": \"{city}\"}}\n"
        ));
    }
    std::fs::write(dir.join("cases.jsonl"), cases).unwrap();
    std::fs::write(
        dir.join("suite.toml"),
        r#"
[suite]
name = "capitals"
dataset = "cases.jsonl"

[target]
base_url = "http://127.0.0.1:9/v1"
model = "m"

[prompt]
user = "unused: promotion supplies the template"

[[evaluators]]
name = "has_answer"
kind = "contains"

[gate]
metric = "has_answer"
margin = 0.02
"#,
    )
    .unwrap();
    Suite::load(dir.join("suite.toml")).unwrap()
}

#[tokio::test]
async fn promote_refuse_record_and_roll_back() {
    let dir = tempfile::tempdir().unwrap();
    let suite = suite(dir.path());
    let reg = PromptRegistry::open(dir.path().join("prompts")).unwrap();
    let good = reg
        .add(&PromptTemplate::user(
            "capitals",
            "What is the capital of {{country}}?",
        ))
        .unwrap();
    let bad = reg
        .add(&PromptTemplate::user(
            "capitals",
            "Capital city please: {{country}}?",
        ))
        .unwrap();
    let good2 = reg
        .add(&PromptTemplate::user(
            "capitals",
            "What is the capital of the country {{country}}?",
        ))
        .unwrap();
    let log = DecisionLog::open(reg.root().join("decisions.jsonl")).unwrap();
    let mut ov = Overrides::default();
    ov.target = Some(Target::provider(PickyModel));

    let request = |version| {
        let mut r = PromotionRequest::new("capitals", version, "prod", &suite);
        r.actor = Some("ci@example".into());
        r.overrides = ov.clone();
        r
    };

    // First promotion: no current version, the gate checks floors and must-pass cases.
    let d = promote(&reg, request(&good), &log).await.unwrap();
    assert!(d.promoted);
    assert_eq!(
        reg.current("capitals", "prod").unwrap().as_deref(),
        Some(good.as_str())
    );
    assert_eq!(d.run.prompt.as_ref().unwrap().version, good);

    // A worse version is compared with the current one and refused.
    let d = promote(&reg, request(&bad), &log).await.unwrap();
    assert!(!d.promoted);
    assert!(
        d.gate.reasons[0].contains("worse than the baseline"),
        "{:?}",
        d.gate.reasons
    );
    assert_eq!(
        reg.current("capitals", "prod").unwrap().as_deref(),
        Some(good.as_str())
    );

    // An equally good version passes and replaces it; rollback restores the previous one.
    let d = promote(&reg, request(&good2), &log).await.unwrap();
    assert!(d.promoted);
    assert_eq!(d.change.unwrap().from.as_deref(), Some(good.as_str()));
    let (change, receipt) = rollback(&reg, "capitals", "prod", Some("oncall".into()), &log)
        .await
        .unwrap();
    assert_eq!(change.to, good);
    assert_eq!(receipt.seq, 4);
    assert_eq!(
        reg.current("capitals", "prod").unwrap().as_deref(),
        Some(good.as_str())
    );

    let lines: Vec<Value> = std::fs::read_to_string(reg.root().join("decisions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        [
            "prompt_promoted",
            "prompt_promotion_refused",
            "prompt_promoted",
            "prompt_rolled_back"
        ]
    );
    assert_eq!(lines[1]["actor"], "ci@example");
    assert_eq!(lines[1]["detail"]["to"], bad.as_str());
    assert_eq!(lines[1]["detail"]["from"], good.as_str());
    assert_eq!(lines[1]["detail"]["gate"]["outcome"], "fail");
    assert!(lines[1]["detail"]["run_id"].is_string());
    assert!(lines[1]["detail"]["baseline_run_id"].is_string());
}
