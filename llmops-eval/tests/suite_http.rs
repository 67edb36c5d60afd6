//! The example suite, end to end over HTTP against a fake OpenAI-compatible upstream on
//! 127.0.0.1: template rendering, the client's error classification, 429 backoff, the
//! gate against a baseline, and config errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use llmops_core::{ErrorKind, Provider};
use llmops_eval::{GateOutcome, OpenAiCompatible, Overrides, RunFile, Suite};
use serde_json::{Value, json};

#[derive(Clone)]
struct Fake {
    answers: Arc<HashMap<&'static str, &'static str>>,
    /// Answer 429 to the first N requests.
    throttle: Arc<AtomicUsize>,
    /// Countries answered wrongly.
    wrong: Arc<Vec<&'static str>>,
    requests: Arc<AtomicUsize>,
}

async fn chat(State(f): State<Fake>, Json(body): Json<Value>) -> Response {
    f.requests.fetch_add(1, Ordering::SeqCst);
    if f.throttle
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "0")],
            Json(json!({"error": {"message": "slow down", "type": "rate_limit_error", "code": "rate_limit_exceeded"}})),
        )
            .into_response();
    }
    if body["model"] == "broke" {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}})),
        )
            .into_response();
    }
    let question = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_owned();
    let answer = f
        .answers
        .iter()
        .find(|(country, _)| question.contains(*country))
        .map(|(country, city)| {
            if f.wrong.contains(country) {
                "I am not sure"
            } else {
                *city
            }
        })
        .unwrap_or("Paris");
    Json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}
    }))
    .into_response()
}

async fn serve(throttle: usize, wrong: Vec<&'static str>) -> (String, Fake) {
    let answers: HashMap<_, _> = [
        ("France", "Paris"),
        ("Germany", "Berlin"),
        ("Italy", "Rome"),
        ("Spain", "Madrid"),
        ("Portugal", "Lisbon"),
        ("Peru", "Lima"),
        ("Canada", "Ottawa"),
        ("Brazil", "Brasília"),
        ("Australia", "Canberra"),
        ("Turkey", "Ankara"),
        ("Japan", "Tokyo"),
        ("Kenya", "Nairobi"),
    ]
    .into_iter()
    .collect();
    let fake = Fake {
        answers: Arc::new(answers),
        throttle: Arc::new(AtomicUsize::new(throttle)),
        wrong: Arc::new(wrong),
        requests: Arc::new(AtomicUsize::new(0)),
    };
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1"), fake)
}

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/eval")
}

/// The example suite, pointed at `base_url`, written into `dir`.
fn suite_in(dir: &Path, base_url: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(example_dir().join("capitals.toml")).unwrap();
    let text = edit(text.replace("http://127.0.0.1:8080/v1", base_url));
    std::fs::copy(
        example_dir().join("capitals.jsonl"),
        dir.join("capitals.jsonl"),
    )
    .unwrap();
    let p = dir.join("capitals.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_suite_runs_and_gates_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let (url, fake) = serve(3, vec![]).await;
    let suite = Suite::load(suite_in(dir.path(), &url, |t| t)).unwrap();
    let base = suite.run(None, &Overrides::default()).await.unwrap();
    let run = &base.run;
    // 12 cases + 3 throttled attempts retried.
    assert_eq!(fake.requests.load(Ordering::SeqCst), 15);
    assert_eq!(run.summary.target_errors, 0);
    assert_eq!(run.metric("has_answer").unwrap().pass_rate, 1.0);
    assert_eq!(run.prompt.as_ref().unwrap().id, "capitals");
    assert_eq!(base.gate.as_ref().unwrap().outcome, GateOutcome::Pass);
    let path = dir.path().join("base.json");
    run.save(&path).unwrap();
    let baseline = RunFile::load(&path).unwrap();

    // The model regresses on 5 of 12 cases, one of them must-pass ("fr" asks about France).
    let (url2, _) = serve(0, vec!["France", "Germany", "Italy", "Spain", "Portugal"]).await;
    let suite = Suite::load(suite_in(dir.path(), &url2, |t| t)).unwrap();
    let out = suite
        .run(Some(&baseline), &Overrides::default())
        .await
        .unwrap();
    let g = out.gate.unwrap();
    assert_eq!(g.outcome, GateOutcome::Fail);
    assert!(g.must_pass_failures.iter().any(|f| f.case == "fr"));
    let c = g.metrics[0].comparison.as_ref().unwrap();
    assert_eq!((c.pass_to_fail, c.fail_to_pass), (5, 0));
}

#[tokio::test]
async fn client_classifies_upstream_errors() {
    let (url, _) = serve(0, vec![]).await;
    let client = OpenAiCompatible::new(url).unwrap();
    let req = llmops_core::ChatRequest::new("broke", vec![llmops_core::Message::user("hi")]);
    let e = client
        .chat(req, &llmops_core::RequestContext::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QuotaExhausted);
    assert_eq!(e.status(), Some(429));
    let dead = OpenAiCompatible::new("http://127.0.0.1:1/v1").unwrap();
    let e = dead
        .chat(
            llmops_core::ChatRequest::new("m", vec![llmops_core::Message::user("hi")]),
            &llmops_core::RequestContext::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connect);
}

#[tokio::test]
async fn quota_errors_are_not_retried_and_count_as_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (url, fake) = serve(0, vec![]).await;
    let suite = Suite::load(suite_in(dir.path(), &url, |t| {
        t.replace("model = \"chat\"", "model = \"broke\"")
    }))
    .unwrap();
    let out = suite.run(None, &Overrides::default()).await.unwrap();
    assert_eq!(fake.requests.load(Ordering::SeqCst), 12);
    assert_eq!(out.run.summary.target_errors, 12);
    assert_eq!(out.gate.unwrap().outcome, GateOutcome::Inconclusive);
}

#[test]
fn config_errors_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let load = |edit: &dyn Fn(String) -> String| {
        Suite::load(suite_in(dir.path(), "http://127.0.0.1:9/v1", edit)).and_then(|s| {
            s.runner(&Overrides::default())
                .map(|_| s)
                .and_then(|s| s.gate().map(|_| s))
        })
    };
    let e = load(&|t| t.replace("ignore_case = true", "ignore_cse = true"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("ignore_cse"), "{e}");
    let e = load(&|t| t.replace("kind = \"regex\"", "kind = \"regexp\""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown kind `regexp`"), "{e}");
    let e = load(&|t| t.replace("metric = \"has_answer\"", "metric = \"has_anser\""))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`has_anser` is not the name of an evaluator"),
        "{e}"
    );
    let e = load(&|t| {
        t.replace(
            "# gateway_config = \"llmops.toml\"",
            "gateway_config = \"llmops.toml\"",
        )
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("gateway_config") && e.contains("not supported"),
        "{e}"
    );
    let e = load(&|t| {
        t.replace(
            "# api_key_env = \"EVAL_API_KEY\"",
            "api_key_env = \"LLMOPS_TEST_SURELY_UNSET_KEY\"",
        )
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("LLMOPS_TEST_SURELY_UNSET_KEY"), "{e}");
}

#[tokio::test]
async fn an_uncalibrated_gating_judge_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _) = serve(0, vec![]).await;
    let judge_toml = "\n[judge]\nbase_url = \"URL\"\nmodel = \"judge\"\n\n[[evaluators]]\nname = \"correct\"\nkind = \"llm_judge\"\nrubric = \"Right city?\"\nreference = true\n";
    let path = suite_in(dir.path(), &url, |t| {
        let t = t.replace(
            "metric = \"has_answer\"",
            "metric = [\"has_answer\", \"correct\"]",
        );
        let (head, gate) = t.split_at(t.find("[gate]").unwrap());
        format!("{head}{}\n{gate}", judge_toml.replace("URL", &url))
    });
    let suite = Suite::load(&path).unwrap();
    let e = suite
        .run(None, &Overrides::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("judge `correct`") && e.contains("gating = true"),
        "{e}"
    );

    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("reference = true\n", "reference = true\ngating = true\n");
    std::fs::write(&path, text).unwrap();
    let e = Suite::load(&path)
        .unwrap()
        .run(None, &Overrides::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no recorded calibration"), "{e}");
}
