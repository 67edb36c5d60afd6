//! The dashboard and the alerting rules in docs/ only use metric names we emit, and the rules
//! pass `promtool check rules`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use llmops_observe::semconv::{self, metric};

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

fn prom(name: &str) -> String {
    name.replace('.', "_")
}

/// Every series name the Prometheus exporter writes for our metrics.
fn emitted() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let seconds = [
        metric::OPERATION_DURATION,
        metric::TIME_TO_FIRST_CHUNK,
        metric::TIME_PER_OUTPUT_CHUNK,
        metric::GATEWAY_OVERHEAD,
    ];
    for h in seconds {
        for s in ["_bucket", "_sum", "_count"] {
            out.insert(format!("{}_seconds{s}", prom(h)));
        }
    }
    for s in ["_bucket", "_sum", "_count"] {
        out.insert(format!("{}{s}", prom(metric::TOKEN_USAGE)));
    }
    for c in [
        metric::REQUESTS,
        metric::ERRORS,
        metric::COST,
        metric::PROMPT_CACHE_TOKENS,
        metric::PROMPT_CACHE_SAVINGS,
        metric::PROMPT_CACHE_WRITE_PREMIUM,
        metric::CACHE_HITS,
        metric::CACHE_MISSES,
        metric::RETRIES,
        metric::FALLBACKS,
        metric::BUDGET_REJECTIONS,
        metric::GUARDRAIL_DECISIONS,
        metric::DROPPED_EVENTS,
        metric::NOTIFICATIONS,
        metric::ONLINE_EVALS,
    ] {
        out.insert(format!("{}_total", prom(c)));
    }
    for g in [metric::BUDGET_UTILIZATION, metric::ALERTS_FIRING] {
        out.insert(prom(g));
    }
    out
}

fn labels() -> BTreeSet<String> {
    [
        semconv::GEN_AI_OPERATION_NAME,
        semconv::GEN_AI_PROVIDER_NAME,
        semconv::GEN_AI_REQUEST_MODEL,
        semconv::GEN_AI_TOKEN_TYPE,
        semconv::LLMOPS_TENANT,
        semconv::LLMOPS_PROMPT_ID,
        semconv::LLMOPS_PROMPT_VERSION,
        semconv::label::PROMPT_CACHE_STATE,
    ]
    .iter()
    .map(|l| prom(l))
    .collect()
}

/// Identifiers starting with `llmops_` or `gen_ai_` in `text`.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if boundary && (text[i..].starts_with("llmops_") || text[i..].starts_with("gen_ai_")) {
            let end = text[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(text.len(), |e| i + e);
            out.insert(text[i..end].to_owned());
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

fn check_names(file: &str, text: &str) {
    let known = emitted();
    let labels = labels();
    let used = names_in(text);
    assert!(used.len() > 5, "{file} uses our metrics");
    for n in used {
        assert!(
            known.contains(&n) || labels.contains(&n),
            "{file} uses {n}, which llmops-observe does not emit"
        );
    }
}

#[test]
fn the_dashboard_uses_only_our_metric_names() {
    let text = std::fs::read_to_string(docs().join("grafana-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert!(dash["panels"].as_array().unwrap().len() >= 10);
    check_names("grafana-dashboard.json", &text);
}

#[test]
fn the_alert_rules_use_only_our_metric_names_and_pass_promtool() {
    let path = docs().join("prometheus-alerts.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    check_names("prometheus-alerts.yml", &text);
    let tool = std::env::var("LLMOPS_TEST_PROMTOOL").unwrap_or_else(|_| "promtool".to_owned());
    let out = Command::new(&tool).args(["check", "rules"]).arg(&path).output().unwrap_or_else(|e| {
        panic!(
            "promtool is needed to check the alerting rules and could not be run as {tool:?} ({e}); \
             install it (Debian: apt-get install prometheus) or point LLMOPS_TEST_PROMTOOL at it"
        )
    });
    assert!(
        out.status.success(),
        "promtool check rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_name_scanner_finds_names() {
    let n = names_in("rate(llmops_requests_total{gen_ai_request_model=\"x\"}[5m]) xllmops_no");
    assert_eq!(
        n.into_iter().collect::<Vec<_>>(),
        ["gen_ai_request_model", "llmops_requests_total"]
    );
}
