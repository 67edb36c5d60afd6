//! The serving layer end to end: the real `llmops` binary, a config file, fake upstreams on
//! loopback, and the official OpenAI Python SDK or a plain HTTP client as the caller.
//!
//! Outcomes and upstream call counts are asserted, never durations — except the recorded
//! arrival times of a request retried after `Retry-After`, which is the behaviour under test.

#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llmops_testkit::{FakeUpstream, Reply};

struct Gateway {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// The gateway's log lines so far, without terminal colour codes.
    fn log(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|l| strip_ansi(l))
            .collect()
    }
}

/// Starts `llmops serve --config` with `toml`, waits for its startup line and keeps reading
/// its log (attempt events at info level).
fn start(toml: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("llmops.toml");
    std::fs::write(&path, toml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_llmops"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .env("LLMOPS_LOG", "warn,llmops_serve::attempt=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn llmops");
    let mut reader = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).expect("read the startup line");
        assert!(n > 0, "llmops exited before listening");
        if line.contains("listening on") {
            break;
        }
    }
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split("/v1").next())
        .unwrap_or_else(|| panic!("unexpected startup line: {line:?}"))
        .to_owned();
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for l in reader.lines().map_while(Result::ok) {
            sink.lock().unwrap().push(l);
        }
    });
    Gateway {
        child,
        base: format!("http://{addr}/v1"),
        log,
        _dir: dir,
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn python() -> String {
    let python = std::env::var("LLMOPS_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    match Command::new(&python).args(["-c", "import openai"]).output() {
        Ok(o) if o.status.success() => python,
        _ => panic!(
            "this test needs Python with the `openai` package: run `pip install openai` \
             (or point LLMOPS_TEST_PYTHON at an interpreter that has it)"
        ),
    }
}

/// Runs the SDK script off the runtime's threads (the fake upstreams keep serving).
async fn sdk(args: Vec<String>) -> String {
    let python = python();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sdk/serving_sdk_check.py"
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "SDK check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn two_upstreams(primary: &FakeUpstream, backup: &FakeUpstream, extra: &str) -> String {
    format!(
        r#"
[providers.primary]
kind = "openai"
base_url = "{}"

[providers.backup]
kind = "openai"
base_url = "{}"

[models.chat]
targets = ["primary/gpt-4o-mini", "backup/gpt-4o-mini"]
strategy = "fallback"
{extra}
[models.chat.retry]
max_attempts = 3
backoff_base_ms = 10

[models.chat.timeouts]
ttft_ms = 10000
total_ms = 120000
"#,
        primary.openai_base(),
        backup.openai_base()
    )
}

async fn post_chat(base: &str, stream: bool) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/chat/completions"))
        .json(&serde_json::json!({
            "model": "chat", "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]
        }))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_500_the_sdk_gets_the_backup_answer_streamed_and_not() {
    let primary = FakeUpstream::start_named("primary").await;
    let backup = FakeUpstream::start_named("backup").await;
    primary.set_default(Reply::status(500));
    backup.set_default(Reply::text("Hello from the backup upstream"));
    let gw = start(&two_upstreams(&primary, &backup, ""));
    let out = sdk(vec!["fallback".into(), gw.base.clone(), "backup".into()]).await;
    assert!(
        out.contains("chat: ok (provider backup, attempts 4)"),
        "{out}"
    );
    assert!(out.contains("stream: ok (provider backup"), "{out}");
    // 3 attempts for the first request; in the second, the second failure is the fifth in a
    // row, which opens the primary's circuit: the third attempt is refused without a call
    // and the request moves on to the backup.
    assert_eq!(primary.calls(), 5);
    assert_eq!(backup.calls(), 2);
    // Every upstream attempt is a tracing event.
    let log = gw.log();
    let attempts = log
        .iter()
        .filter(|l| l.contains("llmops_serve::attempt"))
        .count();
    assert_eq!(attempts, 7, "{log:#?}");
    assert!(
        log.iter()
            .any(|l| l.contains("attempt failed") && l.contains("upstream=primary")),
        "{log:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_1_is_retried_after_a_second_not_sooner() {
    let up = FakeUpstream::start().await;
    up.push(Reply::rate_limited(Duration::from_secs(1)))
        .push(Reply::text("served"));
    let toml = format!(
        "[providers.only]\nkind = \"openai\"\nbase_url = \"{}\"\n[models.chat]\ntargets = [\"only/m\"]\n[models.chat.retry]\nmax_attempts = 3\n",
        up.openai_base()
    );
    let gw = start(&toml);
    let resp = post_chat(&gw.base, false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-llmops-attempts"], "2");
    let r = up.requests();
    assert_eq!(r.len(), 2);
    let gap = r[1].at - r[0].at;
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_429_is_not_retried_but_falls_back() {
    let primary = FakeUpstream::start().await;
    let backup = FakeUpstream::start().await;
    primary.set_default(Reply::quota());
    let gw = start(&two_upstreams(&primary, &backup, ""));
    for stream in [false, true] {
        let resp = post_chat(&gw.base, stream).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-llmops-provider"], "backup");
        let _ = resp.text().await.unwrap();
    }
    // The first quota answer also cools the primary down: the second request skips it.
    assert_eq!(primary.calls(), 1, "a quota error is never retried");
    assert_eq!(backup.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_dying_after_content_ends_with_an_error_the_sdk_raises() {
    let up = FakeUpstream::start().await;
    let toml = format!(
        "[providers.only]\nkind = \"openai\"\nbase_url = \"{}\"\n[models.chat]\ntargets = [\"only/m\"]\n[models.chat.timeouts]\nidle_ms = 500\n",
        up.openai_base()
    );
    let gw = start(&toml);
    for reply in [
        Reply::truncated_sse(2),
        Reply::stream_error(2),
        Reply::stall_mid_stream(2),
    ] {
        up.push(reply);
        let out = sdk(vec!["midstream".into(), gw.base.clone()]).await;
        assert!(
            out.contains("midstream: ok (raised APIError after 2 chunks"),
            "{out}"
        );
    }
    assert_eq!(
        up.calls(),
        3,
        "nothing is retried once content reached the client"
    );
    // On the wire: an error event and no [DONE].
    up.push(Reply::truncated_sse(2));
    let body = post_chat(&gw.base, true).await.text().await.unwrap();
    assert!(body.contains("data: {\"error\""), "{body}");
    assert!(!body.contains("[DONE]"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_latency_sends_most_traffic_to_the_faster_upstream() {
    let fast = FakeUpstream::start_named("fast").await;
    let slow = FakeUpstream::start_named("slow").await;
    fast.set_default(Reply::text("fast answer").with_latency(Duration::from_millis(5)));
    slow.set_default(Reply::text("slow answer").with_latency(Duration::from_millis(200)));
    let toml = format!(
        "[providers.fast]\nkind = \"openai\"\nbase_url = \"{}\"\n[providers.slow]\nkind = \"openai\"\nbase_url = \"{}\"\n\
         [models.chat]\ntargets = [\"fast/m\", \"slow/m\"]\nstrategy = \"least-latency\"\n",
        fast.openai_base(),
        slow.openai_base()
    );
    let gw = start(&toml);
    for i in 0..40 {
        let resp = post_chat(&gw.base, i % 2 == 0).await;
        assert_eq!(resp.status(), 200);
        let _ = resp.text().await.unwrap();
    }
    assert_eq!(fast.calls() + slow.calls(), 40);
    assert!(
        fast.calls() >= 34,
        "fast {} / slow {}",
        fast.calls(),
        slow.calls()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_of_the_serving_sections_are_clear() {
    let cases = [
        (
            "[providers.p]\nkind = \"openai\"\n[models.m]\ntargets = [\"p/x\"]\n",
            "base_url",
        ),
        (
            "[providers.p]\nkind = \"grpc\"\nbase_url = \"http://x\"\n",
            "grpc",
        ),
        (
            "[providers.p]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n[models.m]\ntargets = [\"p/x\", \"p/y\"]\nstrategy = \"weighted\"\nweights = [1]\n",
            "weights",
        ),
        (
            "[providers.p]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n[models.m]\ntargets = [\"p/x\"]\nstrategy = \"round-robin\"\n",
            "round-robin",
        ),
        (
            "[providers.p]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key_env = \"LLMOPS_TEST_SURELY_UNSET_KEY\"\n[models.m]\ntargets = [\"p/x\"]\n",
            "LLMOPS_TEST_SURELY_UNSET_KEY",
        ),
        (
            "[providers.p]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n[models.m]\ntargets = [\"p/x\"]\n[models.m.retry]\nmax_atempts = 3\n",
            "max_atempts",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (text, needle)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_llmops"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "case {i}: {err}");
        assert!(err.contains(needle), "case {i}: {err}");
    }
}

/// The upstream's prefix cache in `/metrics`: cached-read tokens reported by the upstream
/// (`prompt_tokens_details.cached_tokens`), streamed and not, become the per-model, per-tenant
/// prompt-cache token counters and the money the cache saved at the configured rates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_prefix_cache_hits_and_savings_are_in_the_metrics() {
    let up = FakeUpstream::start().await;
    up.set_default(Reply::text("cached answer").with_cached_tokens(48));
    let gw = start(&format!(
        r#"
[providers.vllm]
kind = "openai"
base_url = "{}"

[models.chat]
targets = ["vllm/qwen"]

[cost]
default_price = {{ input = 3.0, output = 15.0, cache_read = 0.3, cache_write = 3.75 }}
"#,
        up.openai_base()
    ));
    let prompt = "Summarize the shared context below in one line. ".repeat(20);
    let client = reqwest::Client::new();
    let mut cached_total = 0;
    for stream in [false, true] {
        let resp = client
            .post(format!("{}/chat/completions", gw.base))
            .json(&serde_json::json!({
                "model": "chat", "stream": stream,
                "stream_options": if stream { serde_json::json!({"include_usage": true}) }
                                  else { serde_json::Value::Null },
                "messages": [{"role": "user", "content": prompt}]
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        // The usage object: the body, or the last data event of the stream.
        let usage = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: ").or(Some(l)))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v.get("usage").filter(|u| !u.is_null()).cloned())
            .next_back()
            .unwrap_or_else(|| panic!("no usage in {text}"));
        let cached = usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap();
        assert!(cached > 0, "{usage}");
        cached_total += cached;
    }
    let metrics = reqwest::get(gw.base.replace("/v1", "/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sum = |name: &str, labels: &[&str]| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    let labels = [
        r#"gen_ai_request_model="chat""#,
        r#"llmops_tenant="default""#,
    ];
    let mut cached_labels = labels.to_vec();
    cached_labels.push(r#"llmops_prompt_cache_state="cached""#);
    assert_eq!(
        sum("llmops_prompt_cache_tokens_total", &cached_labels),
        cached_total as f64,
        "{metrics}"
    );
    // ($3.00 − $0.30) per million cached tokens, in nano-dollars.
    assert_eq!(
        sum("llmops_prompt_cache_savings_nanodollars_total", &labels),
        (cached_total * 2_700) as f64,
        "{metrics}"
    );
}
