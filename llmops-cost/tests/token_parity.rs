//! Token parity with OpenAI's tiktoken: counts recorded from the Python package by
//! `tests/data/gen_token_corpus.py` must equal ours, for both counters and both encodings.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use llmops_core::TokenCounter;
use llmops_cost::tokens::{BpeCounter, Encoding, TiktokenCounter};
use serde_json::Value;

fn corpus() -> Vec<(String, String, u64, u64)> {
    let text = include_str!("data/token_corpus.json");
    let v: Value = serde_json::from_str(text).unwrap();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let rep = c["repeat"].as_u64().unwrap() as usize;
            (
                c["name"].as_str().unwrap().to_owned(),
                c["text"].as_str().unwrap().repeat(rep),
                c["counts"]["o200k_base"].as_u64().unwrap(),
                c["counts"]["cl100k_base"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn check(counter: &dyn TokenCounter, enc: Encoding) {
    let cases = corpus();
    assert!(
        cases.len() >= 200,
        "the corpus must have at least 200 texts"
    );
    let mut failures = Vec::new();
    for (name, text, o200k, cl100k) in &cases {
        let want = if enc == Encoding::O200kBase {
            *o200k
        } else {
            *cl100k
        };
        let got = counter.count(text) as u64;
        if got != want {
            failures.push(format!("{name}: tiktoken {want}, ours {got}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} {}: {:#?}",
        counter.encoding(),
        failures.len(),
        failures
    );
}

#[test]
fn corpus_covers_the_hard_cases() {
    let cases = corpus();
    let has = |pred: &dyn Fn(&str) -> bool| cases.iter().any(|(_, t, _, _)| pred(t));
    assert!(has(
        &|t| t.chars().count() >= 50_000 && t.chars().all(|c| c == 'a')
    ));
    assert!(has(&|t| t.contains('🦀')));
    assert!(has(&|t| t.contains('机')));
    assert!(has(&|t| t.contains("fn main")));
    assert!(has(&|t| t.contains("     ")));
}

#[test]
fn bpe_openai_matches_tiktoken_o200k() {
    check(&BpeCounter::new(Encoding::O200kBase), Encoding::O200kBase);
}

#[test]
fn bpe_openai_matches_tiktoken_cl100k() {
    check(&BpeCounter::new(Encoding::Cl100kBase), Encoding::Cl100kBase);
}

#[test]
fn tiktoken_rs_matches_tiktoken_o200k() {
    check(
        &TiktokenCounter::new(Encoding::O200kBase),
        Encoding::O200kBase,
    );
}

#[test]
fn tiktoken_rs_matches_tiktoken_cl100k() {
    check(
        &TiktokenCounter::new(Encoding::Cl100kBase),
        Encoding::Cl100kBase,
    );
}
