//! `llmops eval`: exit codes (0 passed, 1 regression, 2 configuration or runtime error) and
//! the report files, against the fake upstream on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use llmops_testkit::{FakeUpstream, Reply};

const CASES: usize = 40;

fn write_suite(dir: &Path, base_url: &str, extra: &str) -> PathBuf {
    let mut lines = String::new();
    for i in 0..CASES {
        lines.push_str(&format!(
            "{{\"id\": \"case-{i:02}\", \"input\": {{\"question\": \"Is {i} a number?\"}}, \"expected\": \"yes\"{}}}\n",
            if i == 0 { ", \"must_pass\": true" } else { "" }
        ));
    }
    std::fs::write(dir.join("cases.jsonl"), lines).unwrap();
    let suite = format!(
        r#"
[suite]
name = "numbers"
dataset = "cases.jsonl"
concurrency = 1

[target]
base_url = "{base_url}"
model = "chat"

[prompt]
user = "{{{{question}}}} Answer yes or no."

[[evaluators]]
name = "says_yes"
kind = "contains"
ignore_case = true

[gate]
metric = "says_yes"
margin = 0.02
min_pass_rate = 0.5
{extra}
"#
    );
    let p = dir.join("suite.toml");
    std::fs::write(&p, suite).unwrap();
    p
}

async fn llmops(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_llmops"))
            .args(&args)
            .env_remove("MLFLOW_TRACKING_URI")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_then_regression_then_errors() {
    let dir = tempfile::tempdir().unwrap();
    let up = FakeUpstream::start().await;
    up.set_default(Reply::text("Yes."));
    // Two 429s on the way: retried after the upstream's hint, not counted as failures.
    up.push(Reply::rate_limited(Duration::from_millis(10)));
    up.push(Reply::rate_limited(Duration::from_millis(10)));
    let suite = write_suite(dir.path(), &up.openai_base(), "");
    let base = dir.path().join("base.json");
    let junit = dir.path().join("junit.xml");
    let md = dir.path().join("report.md");

    let out = llmops(vec![
        "eval".into(),
        "run".into(),
        s(&suite),
        "--out".into(),
        s(&base),
        "--junit".into(),
        s(&junit),
        "--markdown".into(),
        s(&md),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("GATE PASSED"), "{stdout}");
    assert_eq!(up.calls(), CASES + 2);
    let run: serde_json::Value = serde_json::from_slice(&std::fs::read(&base).unwrap()).unwrap();
    assert_eq!(run["cases"].as_array().unwrap().len(), CASES);
    assert_eq!(run["cases"][0]["samples"][0]["output"], "Yes.");
    assert_eq!(run["gate"]["outcome"], "pass");
    let prompt = &up.requests()[2].body["messages"][0]["content"];
    assert_eq!(prompt, "Is 0 a number? Answer yes or no.");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testcase ").count(), CASES + 1);
    assert!(std::fs::read_to_string(&md).unwrap().contains("✅ passed"));

    // Same model again: noise-free, passes against the baseline.
    let out = llmops(vec![
        "eval".into(),
        "run".into(),
        s(&suite),
        "--baseline".into(),
        s(&base),
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A regression on 10 of 40 cases (25 points): exit 1, the Markdown lists the flips.
    for i in 0..CASES {
        up.push(Reply::text(if i % 4 == 1 { "No." } else { "Yes." }));
    }
    let out = llmops(vec![
        "eval".into(),
        "run".into(),
        s(&suite),
        "--baseline".into(),
        s(&base),
        "--markdown".into(),
        s(&md),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("GATE FAILED"), "{stdout}");
    let report = std::fs::read_to_string(&md).unwrap();
    assert!(report.contains("10 pass→fail, 0 fail→pass"), "{report}");
    assert!(
        report.contains("| `case-01` | ✅ pass | ❌ fail |"),
        "{report}"
    );

    // A failing must-pass case fails the gate even without a baseline.
    up.push(Reply::text("No."));
    let out = llmops(vec!["eval".into(), "run".into(), s(&suite)]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("must-pass case `case-00` failed"));

    // Repeats from the command line: K calls per case.
    let before = up.calls();
    let out = llmops(vec![
        "eval".into(),
        "run".into(),
        s(&suite),
        "--repeats".into(),
        "2".into(),
        "--concurrency".into(),
        "4".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(up.calls() - before, 2 * CASES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_and_runtime_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let up = FakeUpstream::start().await;

    // A typo in a key.
    let suite = write_suite(dir.path(), &up.openai_base(), "confidenc = 0.9");
    let out = llmops(vec!["eval".into(), "run".into(), s(&suite)]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("confidenc"));

    // A broken dataset line names file, line and field.
    let suite = write_suite(dir.path(), &up.openai_base(), "");
    std::fs::write(
        dir.path().join("cases.jsonl"),
        "{\"id\": \"a\", \"input\": \"hi\"}\n{\"id\": \"b\"}\n",
    )
    .unwrap();
    let out = llmops(vec!["eval".into(), "run".into(), s(&suite)]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cases.jsonl:2: field `input`: missing"),
        "{err}"
    );

    // An unreadable baseline.
    let suite = write_suite(dir.path(), &up.openai_base(), "");
    let out = llmops(vec![
        "eval".into(),
        "run".into(),
        s(&suite),
        "--baseline".into(),
        s(&dir.path().join("nope.json")),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));

    // The upstream refuses every call (quota): nothing could be judged → inconclusive, 2.
    up.set_default(Reply::quota());
    let out = llmops(vec!["eval".into(), "run".into(), s(&suite)]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("GATE INCONCLUSIVE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calibrate_reports_agreement_and_refuses_a_weak_judge() {
    let dir = tempfile::tempdir().unwrap();
    let up = FakeUpstream::start().await;
    // The judge model answers grade JSON in its content (no tool calling upstream).
    up.set_default(Reply::text(r#"{"reasoning": "looks right", "score": 5}"#));
    let extra = format!(
        "\n[judge]\nbase_url = \"{}\"\nmodel = \"judge-1\"\n\n[[evaluators]]\nname = \"correct\"\nkind = \"llm_judge\"\nrubric = \"Is the answer correct?\"\ncalibration = \"correct.calibration.json\"\n",
        up.openai_base()
    );
    let suite = write_suite(dir.path(), &up.openai_base(), "");
    let text = std::fs::read_to_string(&suite).unwrap();
    let (head, gate) = text.split_at(text.find("[gate]").unwrap());
    std::fs::write(&suite, format!("{head}{extra}\n{gate}")).unwrap();
    let mut labels = String::new();
    for i in 0..60 {
        let label = if i % 3 == 0 { 1 } else { 5 };
        labels.push_str(&format!(
            "{{\"id\": \"l{i}\", \"input\": \"q{i}\", \"output\": \"a{i}\", \"label\": {label}}}\n"
        ));
    }
    let labels_path = dir.path().join("labels.jsonl");
    std::fs::write(&labels_path, labels).unwrap();

    let out = llmops(vec![
        "eval".into(),
        "calibrate".into(),
        s(&suite),
        "--judge".into(),
        "correct".into(),
        "--labels".into(),
        s(&labels_path),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Always 5: agrees on the 40 fives, never on the 20 ones → κ = 0 → below the floor.
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("agreement=66.7%"), "{stdout}");
    assert!(stdout.contains("FPR=100.0%"), "{stdout}");
    assert!(stdout.contains("below the floor"), "{stdout}");
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("correct.calibration.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["n"], 60);
    assert_eq!(record["judge"]["model"], "judge-1");
}
