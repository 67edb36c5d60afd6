//! Reports: JUnit XML validates (structurally, and against the JUnit schema with xmllint),
//! the Markdown report lists flipped cases, and an unparseable judge is ERROR, not FAIL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::sync::Arc;

use common::{NoisyModel, dataset, runner};
use llmops_core::mock::{MockProvider, MockReply};
use llmops_eval::evaluators::{Reference, StringMatch};
use llmops_eval::judge::RubricJudge;
use llmops_eval::report::{junit_xml, markdown, terminal_summary};
use llmops_eval::{
    Gate, GateOutcome, GatedMetric, Runner, Status, SuiteEvaluator, Target, TargetInfo,
};
use serde_json::json;

async fn regressed_pair() -> (llmops_eval::RunFile, llmops_eval::RunFile) {
    let n = 40;
    let ds = dataset(n, None);
    let good: Vec<bool> = (0..n).map(|i| i % 5 != 0).collect();
    let mut bad = good.clone();
    for i in [1, 2, 3, 6, 7, 8, 11, 12] {
        bad[i] = false;
    }
    bad[0] = true; // one fail → pass
    let base = runner(NoisyModel::new(Arc::new(good), 0.0, 1), 1)
        .run(&ds, None)
        .await
        .unwrap();
    let cur = runner(NoisyModel::new(Arc::new(bad), 0.0, 2), 1)
        .run(&ds, None)
        .await
        .unwrap();
    (base, cur)
}

#[tokio::test]
async fn junit_structure_and_schema() {
    let (base, mut cur) = regressed_pair().await;
    cur.suite = "capitals & <friends>".into();
    let gate = Gate::new(vec![GatedMetric::new("correct", 0.0)])
        .evaluate(&cur, Some(&base))
        .unwrap();
    assert_eq!(gate.outcome, GateOutcome::Fail);
    let xml = junit_xml(&cur, Some(&gate));

    let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let suites: Vec<_> = root.children().filter(|n| n.is_element()).collect();
    assert_eq!(suites.len(), 1);
    let suite = suites[0];
    assert_eq!(suite.tag_name().name(), "testsuite");
    assert_eq!(suite.attribute("name"), Some("capitals & <friends>"));
    let cases: Vec<_> = suite
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    // One test case per case, plus the gate.
    assert_eq!(cases.len(), 41);
    assert_eq!(suite.attribute("tests"), Some("41"));
    let failures = cases
        .iter()
        .filter(|c| c.children().any(|n| n.has_tag_name("failure")))
        .count();
    assert_eq!(
        suite
            .attribute("failures")
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        failures
    );
    // 8 regressed + 7 still failing (every 5th except case 0) + the gate.
    assert_eq!(failures, 16);
    for c in &cases {
        assert!(c.attribute("name").is_some() && c.attribute("classname").is_some());
        c.attribute("time").unwrap().parse::<f64>().unwrap();
        assert!(c.children().filter(|n| n.is_element()).count() <= 1);
    }
    let gate_case = cases
        .iter()
        .find(|c| c.attribute("name") == Some("gate"))
        .unwrap();
    let f = gate_case
        .children()
        .find(|n| n.has_tag_name("failure"))
        .unwrap();
    assert!(f.text().unwrap().contains("worse than the baseline"));

    // The schema CI systems read, checked by libxml2.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("junit.xml");
    std::fs::write(&file, &xml).unwrap();
    let xsd = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/junit.xsd");
    let xmllint = std::env::var("LLMOPS_TEST_XMLLINT").unwrap_or_else(|_| "xmllint".into());
    let out = Command::new(&xmllint).arg("--noout").arg("--schema").arg(xsd).arg(&file).output().unwrap_or_else(|e| {
        panic!(
            "xmllint ({xmllint:?}, set LLMOPS_TEST_XMLLINT) is needed to validate JUnit XML against its schema: apt-get install libxml2-utils ({e})"
        )
    });
    assert!(
        out.status.success(),
        "xmllint rejected the JUnit report:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The schema check is not vacuous: a report missing a required attribute is rejected.
    std::fs::write(&file, xml.replacen(" classname=", " klass=", 1)).unwrap();
    let out = Command::new(&xmllint)
        .arg("--noout")
        .arg("--schema")
        .arg(xsd)
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn markdown_lists_flipped_cases() {
    let (base, cur) = regressed_pair().await;
    let gate = Gate::new(vec![GatedMetric::new("correct", 0.0)])
        .evaluate(&cur, Some(&base))
        .unwrap();
    let md = markdown(&cur, Some(&gate), 5);
    assert!(
        md.contains("### Evaluation `acceptance`: ❌ failed"),
        "{md}"
    );
    assert!(
        md.contains("#### Flipped cases for `correct`: 8 pass→fail, 1 fail→pass"),
        "{md}"
    );
    assert!(md.contains("| case | baseline | now | score |"));
    // Regressions first, capped at 5 rows, the rest summarized.
    let rows: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| `c") && l.contains(" → "))
        .collect();
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| r.contains("✅ pass | ❌ fail")));
    assert!(md.contains("…and 4 more"));
    assert!(md.contains("**Why:**"));
    let term = terminal_summary(&cur, Some(&gate));
    assert!(term.contains("GATE FAILED"), "{term}");
}

#[tokio::test]
async fn unparseable_judge_is_error_counted_apart() {
    let target = MockProvider::new("t").default_reply(MockReply::text("Paris"));
    let judge = MockProvider::new("j").default_reply(MockReply::text("It looks fine to me!"));
    let rubric = RubricJudge::new(
        "judge",
        Arc::new(judge.clone()),
        "judge-1",
        "Is it correct?",
    );
    let runner = Runner::builder(Target::provider(target), TargetInfo::new("t", "m"))
        .evaluator(SuiteEvaluator::new("llm_judge", rubric))
        .evaluator(SuiteEvaluator::new(
            "contains",
            StringMatch::contains("has_answer", Reference::Literal(json!("Paris"))),
        ))
        .build()
        .unwrap();
    let run = runner.run(&dataset(10, None), None).await.unwrap();
    let j = run.metric("judge").unwrap();
    assert_eq!((j.passed, j.failed, j.errors), (0, 0, 10));
    assert_eq!(j.judged_cases, 0);
    // One repair turn per sample, then ERROR.
    judge.assert_call_count(20);
    let s = &run.cases[0].samples[0].scores["judge"];
    assert_eq!(s.status, Status::Error);
    assert!(s.explanation.contains("unparseable"), "{}", s.explanation);
    // The other evaluator is unaffected.
    assert_eq!(run.metric("has_answer").unwrap().passed, 10);
    // A gate on the judge cannot decide: inconclusive (exit 2), never a pass or a failure.
    let report = Gate::new(vec![GatedMetric::new("judge", 0.05)])
        .evaluate(&run, None)
        .unwrap();
    assert_eq!(report.outcome, GateOutcome::Inconclusive);
    assert_eq!(report.outcome.exit_code(), 2);
    let xml = junit_xml(&run, None);
    assert!(xml.contains("<error message="));
    assert!(!xml.contains("<failure"));
}

#[tokio::test]
async fn floors_and_must_pass_cases() {
    let ds = dataset(20, None);
    let truth: Vec<bool> = (0..20).map(|i| i != 3).collect();
    let run = runner(NoisyModel::new(Arc::new(truth), 0.0, 1), 1)
        .run(&ds, None)
        .await
        .unwrap();
    let pass = Gate::new(vec![GatedMetric::new("correct", 0.05).min_pass_rate(0.9)])
        .evaluate(&run, None)
        .unwrap();
    assert_eq!(pass.outcome, GateOutcome::Pass);
    let floor = Gate::new(vec![GatedMetric::new("correct", 0.05).min_pass_rate(0.99)])
        .evaluate(&run, None)
        .unwrap();
    assert_eq!(floor.outcome, GateOutcome::Fail);
    assert!(floor.reasons[0].contains("below the floor"));
    let mut g = Gate::new(vec![GatedMetric::new("correct", 0.05)]);
    g.must_pass = vec!["c3".into()];
    let mp = g.evaluate(&run, None).unwrap();
    assert_eq!(mp.outcome, GateOutcome::Fail);
    assert_eq!(mp.must_pass_failures[0].case, "c3");
}
