//! The evaluation pipeline end to end on a zero-latency mock: 10,000 cases through the
//! runner (target call, two evaluators), the paired gate against a baseline, and the JUnit
//! and Markdown reports.
//!
//! Run: `cargo bench -p llmops-eval --bench runner`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use llmops_core::Message;
use llmops_core::mock::{MockProvider, MockReply};
use llmops_eval::evaluators::{Reference, StringMatch};
use llmops_eval::report::{junit_xml, markdown};
use llmops_eval::{
    Case, Dataset, Gate, GatedMetric, RunFile, Runner, SuiteEvaluator, Target, TargetInfo,
};

const CASES: usize = 10_000;

fn main() {
    divan::main();
}

fn dataset() -> Dataset {
    Dataset::from_cases(
        (0..CASES)
            .map(|i| {
                Case::from_messages(
                    format!("case-{i}"),
                    vec![Message::user(format!("Question {i}?"))],
                )
                .with_expected("Paris")
                .with_cluster(format!("doc-{}", i / 10))
            })
            .collect(),
    )
    .unwrap()
}

fn runner() -> Runner {
    let mock = MockProvider::new("mock").default_reply(MockReply::text("The answer is Paris."));
    Runner::builder(Target::provider(mock), TargetInfo::new("mock", "m"))
        .suite("bench")
        .evaluator(SuiteEvaluator::new(
            "contains",
            StringMatch::contains("has_answer", Reference::Expected),
        ))
        .evaluator(SuiteEvaluator::new(
            "regex",
            StringMatch::regex("format", r"^The answer is \w+\.$", false).unwrap(),
        ))
        .concurrency(64)
        .build()
        .unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runner only: 10,000 target calls and 20,000 evaluations.
#[divan::bench(sample_count = 10, sample_size = 1)]
fn run_10k(bencher: divan::Bencher<'_, '_>) {
    let rt = rt();
    let ds = dataset();
    bencher
        .with_inputs(runner)
        .bench_values(|r| rt.block_on(r.run(&ds, None)).unwrap());
}

/// End to end: run, gate against a baseline (cluster bootstrap, 2,000 resamples), JUnit and
/// Markdown reports.
#[divan::bench(sample_count = 10, sample_size = 1)]
fn end_to_end_10k(bencher: divan::Bencher<'_, '_>) {
    let rt = rt();
    let ds = dataset();
    let baseline: RunFile = rt.block_on(runner().run(&ds, None)).unwrap();
    let gate = Gate::new(vec![GatedMetric::new("has_answer", 0.02)]);
    bencher.with_inputs(runner).bench_values(|r| {
        let run = rt.block_on(r.run(&ds, None)).unwrap();
        let report = gate.evaluate(&run, Some(&baseline)).unwrap();
        let xml = junit_xml(&run, Some(&report));
        let md = markdown(&run, Some(&report), 50);
        (xml.len(), md.len())
    });
}
