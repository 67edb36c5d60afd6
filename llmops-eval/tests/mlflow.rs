//! MLflow round trip against a real `mlflow server` (sqlite backend, proxied artifacts).
//!
//! The server is started by the test on a free 127.0.0.1 port with the Python named by
//! `LLMOPS_TEST_MLFLOW_PYTHON` (default `python3`; `tools/mlflow-ci.sh` installs one and
//! prints its path). Set `LLMOPS_TEST_MLFLOW_URL` instead to use a server already running.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{NoisyModel, dataset, runner};
use llmops_eval::mlflow::MlflowClient;
use llmops_eval::{Gate, GatedMetric, PromptTemplate};
use serde_json::Value;

struct Server {
    child: Option<Child>,
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    /// Stops the whole process group: `mlflow server` starts uvicorn and job runners that
    /// outlive it if only the parent is killed.
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let group = format!("-{}", c.id());
            let signal = |sig: &str| {
                let _ = Command::new("kill")
                    .args([sig, "--", &group])
                    .stderr(Stdio::null())
                    .status();
            };
            signal("-TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            signal("-KILL");
            let _ = c.wait();
        }
    }
}

fn start_server() -> Server {
    if let Ok(url) = std::env::var("LLMOPS_TEST_MLFLOW_URL") {
        return Server {
            child: None,
            url,
            _dir: None,
        };
    }
    let python = std::env::var("LLMOPS_TEST_MLFLOW_PYTHON").unwrap_or_else(|_| "python3".into());
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:///{}", dir.path().join("mlflow.db").display());
    let artifacts = dir.path().join("artifacts");
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let child = Command::new(&python)
        .args(["-m", "mlflow", "server", "--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--backend-store-uri", &db, "--artifacts-destination"])
        .arg(&artifacts)
        .args(["--workers", "1"])
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start the MLflow server with {python:?} ({e}): install MLflow (bash tools/mlflow-ci.sh) and set LLMOPS_TEST_MLFLOW_PYTHON to its python, or LLMOPS_TEST_MLFLOW_URL to a running server"
            )
        });
    let mut server = Server {
        child: Some(child),
        url: format!("http://127.0.0.1:{port}"),
        _dir: Some(dir),
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200") {
                return server;
            }
        }
        if let Some(Ok(Some(status))) = server.child.as_mut().map(Child::try_wait) {
            let log = server
                ._dir
                .as_ref()
                .map(|d| std::fs::read_to_string(d.path().join("server.log")).unwrap_or_default())
                .unwrap_or_default();
            panic!(
                "the MLflow server exited ({status}) before answering: is MLflow installed for {python:?}? Run `bash tools/mlflow-ci.sh` and set LLMOPS_TEST_MLFLOW_PYTHON (or LLMOPS_TEST_MLFLOW_URL). Server log:\n{}",
                log.chars()
                    .rev()
                    .take(2000)
                    .collect::<String>()
                    .chars()
                    .rev()
                    .collect::<String>()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the MLflow server at {} did not become healthy within 180 s (LLMOPS_TEST_MLFLOW_PYTHON={python:?})",
            server.url
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn metric(run: &Value, key: &str) -> f64 {
    run.pointer("/run/data/metrics")
        .and_then(Value::as_array)
        .and_then(|ms| ms.iter().find(|m| m["key"] == key))
        .and_then(|m| m["value"].as_f64())
        .unwrap_or_else(|| panic!("metric {key} not logged: {run}"))
}

fn param<'a>(run: &'a Value, key: &str) -> &'a str {
    run.pointer("/run/data/params")
        .and_then(Value::as_array)
        .and_then(|ps| ps.iter().find(|p| p["key"] == key))
        .and_then(|p| p["value"].as_str())
        .unwrap_or_else(|| panic!("param {key} not logged: {run}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_a_run_and_reads_it_back() {
    let server = tokio::task::spawn_blocking(start_server).await.unwrap();
    let client = MlflowClient::new(&server.url).unwrap();

    let ds = dataset(50, None);
    let truth: Arc<Vec<bool>> = Arc::new((0..50).map(|i| i % 4 != 0).collect());
    let base = runner(NoisyModel::new(truth.clone(), 0.0, 1), 1)
        .run(&ds, None)
        .await
        .unwrap();
    let mut cur = runner(NoisyModel::new(truth, 0.0, 2), 1)
        .run(&ds, None)
        .await
        .unwrap();
    let t = PromptTemplate::user("capitals", "Capital of {{country}}?");
    cur.prompt = Some(
        serde_json::from_value(serde_json::json!({"id": "capitals", "version": t.version()}))
            .unwrap(),
    );
    cur.gate = Some(
        Gate::new(vec![GatedMetric::new("correct", 0.05)])
            .evaluate(&cur, Some(&base))
            .unwrap(),
    );

    let logged = client
        .log_run(&cur, &[("git.sha".into(), "abc123".into())])
        .await
        .unwrap();
    assert!(
        logged.artifact_uploaded,
        "the run file should be uploaded through the artifacts proxy"
    );

    let back = client
        .get("runs/get", &[("run_id", &logged.run_id)])
        .await
        .unwrap();
    assert_eq!(
        back.pointer("/run/info/status").and_then(Value::as_str),
        Some("FINISHED")
    );
    assert_eq!(
        back.pointer("/run/info/experiment_id")
            .and_then(Value::as_str),
        Some(logged.experiment_id.as_str())
    );
    assert!((metric(&back, "correct.pass_rate") - 0.74).abs() < 1e-9);
    assert!(metric(&back, "correct.pass_rate_ci_low") < 0.74);
    assert_eq!(metric(&back, "correct.delta"), 0.0);
    assert!(metric(&back, "correct.mde") > 0.05);
    assert_eq!(param(&back, "model"), "m");
    assert_eq!(param(&back, "prompt_version"), t.version());
    assert_eq!(param(&back, "repeats"), "1");
    assert_eq!(param(&back, "evaluator.correct.kind"), "exact");
    let tags = back
        .pointer("/run/data/tags")
        .and_then(Value::as_array)
        .unwrap();
    assert!(
        tags.iter()
            .any(|t| t["key"] == "gate" && t["value"] == "pass")
    );
    assert!(
        tags.iter()
            .any(|t| t["key"] == "git.sha" && t["value"] == "abc123")
    );

    let arts = client
        .get("artifacts/list", &[("run_id", &logged.run_id)])
        .await
        .unwrap();
    assert!(arts.to_string().contains("run.json"), "{arts}");

    // A second run lands in the same experiment.
    let again = client.log_run(&cur, &[]).await.unwrap();
    assert_eq!(again.experiment_id, logged.experiment_id);
    assert_ne!(again.run_id, logged.run_id);
}
