//! `llmops serve` as a user runs it: the binary, its startup line, its config errors, and the
//! official OpenAI Python SDK against it.

#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

struct Gateway {
    child: Child,
    base: String,
    /// The rest of the gateway's stderr (kept open: a closed pipe would fail its later writes).
    stderr: BufReader<ChildStderr>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `llmops serve` on a free port and waits for its startup line.
fn start(extra: &[&str]) -> Gateway {
    let mut child = Command::new(env!("CARGO_BIN_EXE_llmops"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn llmops");
    let stderr = child.stderr.take().expect("stderr");
    let mut line = String::new();
    let mut stderr = BufReader::new(stderr);
    stderr.read_line(&mut line).expect("read startup line");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split("/v1").next())
        .unwrap_or_else(|| panic!("unexpected startup line: {line:?}"))
        .to_owned();
    Gateway {
        child,
        base: format!("http://{addr}/v1"),
        stderr,
    }
}

#[test]
fn startup_line_says_what_is_served() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_llmops"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("listening on http://127.0.0.1:"), "{line}");
    assert!(line.contains("simulated model `sim`"), "{line}");
}

#[test]
fn bad_config_never_starts_a_server() {
    let dir = std::env::temp_dir().join(format!("llmops-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "unknown key",
            "[server]\nlisten = \"127.0.0.1:0\"\ntimeout = 3\n[models.sim]\ntargets = [\"local/sim-1\"]\n",
            "timeout",
        ),
        (
            "unknown provider",
            "[models.sim]\ntargets = [\"ghost/sim-1\"]\n",
            "ghost",
        ),
        (
            "bad target",
            "[providers.local]\nkind = \"sim\"\n[models.sim]\ntargets = [\"sim-1\"]\n",
            "sim-1",
        ),
        ("not TOML", "[server\n", "TOML"),
        (
            "workers without per-core",
            "[server]\nruntime = \"work-stealing\"\nworkers = 2\n[providers.local]\nkind = \"sim\"\n[models.sim]\ntargets = [\"local/sim-1\"]\n",
            "server.workers",
        ),
    ];
    for (what, text, needle) in cases {
        let path = dir.join(format!("{}.toml", what.replace(' ', "-")));
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_llmops"))
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(err.contains(needle), "{what}: {err}");
        assert!(
            err.contains(path.to_str().unwrap()),
            "{what}: error must name the file: {err}"
        );
        assert!(!err.contains("listening"), "{what}: {err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_llmops"))
        .args(["serve", "--config", "/nonexistent/llmops.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/llmops.toml"));
}

#[test]
fn config_file_serves_its_models() {
    let dir = std::env::temp_dir().join(format!("llmops-cfg-ok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The default threading (a runtime per core), one worker, and tokio's work stealing.
    for (name, threading) in [
        ("default", ""),
        ("one-worker", "workers = 1\n"),
        ("work-stealing", "runtime = \"work-stealing\"\n"),
    ] {
        let path = sim_config(
            &dir,
            name,
            &format!("listen = \"127.0.0.1:9\"\n{threading}"),
        );
        let gw = start(&["--config", path.to_str().unwrap()]);
        let body = http_get(&format!("{}/models", gw.base));
        assert!(body.contains("\"fast\""), "{name}: {body}");
    }
}

/// Writes `<dir>/<name>.toml`: `[server]` with `server_lines`, and the model `fast` on a
/// simulated provider.
fn sim_config(dir: &std::path::Path, name: &str, server_lines: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[server]\n{server_lines}[providers.local]\nkind = \"sim\"\n\n[models.fast]\ntargets = [\"local/sim-1\"]\n"
        ),
    )
    .unwrap();
    path
}

/// Minimal HTTP/1.1 GET over a TCP socket (keeps this test free of an HTTP client).
fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The official OpenAI Python SDK (pip package `openai`) against the gateway: chat, streamed
/// chat with incremental chunks and the usage chunk, embeddings, models.
#[test]
fn official_openai_python_sdk_works_unchanged() {
    let python = std::env::var("LLMOPS_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let probe = Command::new(&python).args(["-c", "import openai"]).output();
    match probe {
        Ok(o) if o.status.success() => {}
        _ => panic!(
            "this test needs Python with the `openai` package: run `pip install openai` \
             (or point LLMOPS_TEST_PYTHON at an interpreter that has it)"
        ),
    }
    let gw = start(&[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/openai_sdk_check.py");
    let started = Instant::now();
    let out = Command::new(&python)
        .arg(script)
        .arg(&gw.base)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK check failed after {:?}:\n{stdout}\n{stderr}",
        started.elapsed()
    );
    for check in [
        "chat: ok",
        "stream: ok",
        "embeddings: ok",
        "models: ok",
        "unknown model: ok",
    ] {
        assert!(stdout.contains(check), "missing {check:?} in:\n{stdout}");
    }
}

/// SIGTERM (what a container runtime sends) stops the gateway cleanly: the worker threads are
/// joined, the process says so and exits 0, in both threading modes.
#[cfg(unix)]
#[test]
fn sigterm_stops_the_gateway_cleanly() {
    let dir = std::env::temp_dir().join(format!("llmops-cfg-term-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, threading) in [
        ("per-core", ""),
        ("work-stealing", "runtime = \"work-stealing\"\n"),
    ] {
        let path = sim_config(&dir, name, threading);
        let mut gw = start(&["--config", path.to_str().unwrap()]);
        // Served once, so that every part of the server has started.
        let body = http_get(&format!("{}/models", gw.base));
        assert!(body.contains("\"fast\""), "{name}: {body}");
        let status = Command::new("kill")
            .args(["-TERM", &gw.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        let exit = loop {
            if let Some(exit) = gw.child.try_wait().unwrap() {
                break exit;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: still running 20 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(exit.code(), Some(0), "{name}");
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut gw.stderr, &mut rest).unwrap();
        assert!(rest.contains("llmops gateway stopped"), "{name}: {rest}");
    }
}
