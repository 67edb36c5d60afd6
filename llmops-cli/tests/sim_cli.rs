//! `llmops sim fleet` as a user runs it.

#![allow(clippy::unwrap_used)] // test fixtures

use std::process::Command;

#[test]
fn fleet_json_is_keyed_by_strategy() {
    let out = Command::new(env!("CARGO_BIN_EXE_llmops"))
        .args([
            "sim",
            "fleet",
            "--workload",
            "sessions",
            "--replicas",
            "4",
            "--seed",
            "3",
        ])
        .args(["--requests", "300", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for s in [
        "round-robin",
        "least-outstanding",
        "prefix-only",
        "prefix-aware",
    ] {
        for k in [
            "hit_rate",
            "ttft_p50_ms",
            "ttft_p90_ms",
            "throughput_rps",
            "max_mean_load",
        ] {
            assert!(v[s][k].is_number(), "{s}.{k} missing in {v}");
        }
    }
    // Deterministic: the same seed prints the same numbers.
    let again = Command::new(env!("CARGO_BIN_EXE_llmops"))
        .args([
            "sim",
            "fleet",
            "--workload",
            "sessions",
            "--replicas",
            "4",
            "--seed",
            "3",
        ])
        .args(["--requests", "300", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, again.stdout);
}

#[test]
fn bad_arguments_say_what_to_do() {
    let out = Command::new(env!("CARGO_BIN_EXE_llmops"))
        .args(["sim", "fleet", "--workload", "everything"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("shared-context, sessions or no-sharing")
    );
    let out = Command::new(env!("CARGO_BIN_EXE_llmops"))
        .args(["sim", "fleet", "--replicas", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
