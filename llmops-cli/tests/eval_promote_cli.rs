//! `llmops promote` / `llmops rollback`: promoted only on a passing gate, every decision
//! recorded, rollback restores the previous version.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Output;

use llmops_testkit::{FakeUpstream, Reply};
use serde_json::Value;

const CASES: usize = 30;

async fn llmops(dir: &Path, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_llmops"))
            .args(&args)
            .current_dir(dir)
            .env("USER", "tester")
            .env_remove("GITHUB_ACTOR")
            .env_remove("MLFLOW_TRACKING_URI")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn registry(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("prompts/registry.json")).unwrap()).unwrap()
}

fn prod(dir: &Path) -> String {
    registry(dir)["prompts"]["greeter"]["environments"]["prod"]["current"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_only_on_a_passing_gate_then_roll_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let up = FakeUpstream::start().await;
    let mut cases = String::new();
    for i in 0..CASES {
        cases.push_str(&format!(
            "{{\"id\": \"c{i}\", \"input\": {{\"who\": \"user {i}\"}}, \"expected\": \"hello\"}}\n"
        ));
    }
    std::fs::write(d.join("cases.jsonl"), cases).unwrap();
    std::fs::write(
        d.join("suite.toml"),
        format!(
            "[suite]\nname = \"greet\"\ndataset = \"cases.jsonl\"\nconcurrency = 1\n\n[target]\nbase_url = \"{}\"\nmodel = \"m\"\n\n[[evaluators]]\nname = \"greets\"\nkind = \"contains\"\nignore_case = true\n\n[gate]\nmetric = \"greets\"\nmargin = 0.02\n",
            up.openai_base()
        ),
    )
    .unwrap();
    std::fs::write(d.join("v1.txt"), "Say hello to {{who}}.").unwrap();
    std::fs::write(d.join("v2.txt"), "Greet {{who}} somehow.").unwrap();
    std::fs::write(d.join("v3.txt"), "Please say hello to {{who}}.").unwrap();
    up.set_default(Reply::text("Hello there!"));

    // First promotion: nothing in prod yet.
    let out = llmops(
        d,
        &[
            "promote",
            "greeter",
            "--to",
            "prod",
            "--suite",
            "suite.toml",
            "--file",
            "v1.txt",
            "--no-progress",
        ],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v1 = prod(d);
    assert_eq!(up.calls(), CASES);
    assert_eq!(
        up.requests()[0].body["messages"][0]["content"],
        "Say hello to user 0."
    );

    // v2 is worse: the current version is re-run as the baseline, the gate fails, prod stays.
    for _ in 0..CASES {
        up.push(Reply::text("Hello there!"));
    }
    for i in 0..CASES {
        up.push(Reply::text(if i % 3 == 0 { "Hi." } else { "Hello!" }));
    }
    let out = llmops(
        d,
        &[
            "promote",
            "greeter",
            "--to",
            "prod",
            "--suite",
            "suite.toml",
            "--file",
            "v2.txt",
            "--no-progress",
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("NOT promoted"), "{stdout}");
    assert_eq!(prod(d), v1);

    // v3 is as good: promoted.
    let out = llmops(
        d,
        &[
            "promote",
            "greeter",
            "--to",
            "prod",
            "--suite",
            "suite.toml",
            "--file",
            "v3.txt",
            "--no-progress",
        ],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v3 = prod(d);
    assert_ne!(v3, v1);

    // Rollback restores v1; a second rollback has nothing to restore.
    let out = llmops(d, &["rollback", "greeter", "--to", "prod"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(prod(d), v1);
    let out = llmops(d, &["rollback", "greeter", "--to", "prod"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no version of `greeter` to roll back to")
    );

    let decisions: Vec<Value> = std::fs::read_to_string(d.join("prompts/decisions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events: Vec<&str> = decisions
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "prompt_promoted",
            "prompt_promotion_refused",
            "prompt_promoted",
            "prompt_rolled_back"
        ]
    );
    assert!(decisions.iter().all(|e| e["actor"] == "tester"));
    assert_eq!(decisions[1]["detail"]["gate"]["outcome"], "fail");
    assert_eq!(decisions[3]["detail"]["from"], v3.as_str());
}
