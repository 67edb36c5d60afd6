//! Crash test: a child process appends in `batched` mode and prints every acknowledged
//! receipt; it is killed with SIGKILL at random moments, 20 times. Every acknowledged record
//! must be in the log with the acknowledged hash, and the chain must verify after the repair
//! done on reopen.
#![allow(clippy::unwrap_used)] // test code: a panic is a failure

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use llmops_core::traits::audit::RequestAudit;
use llmops_core::{AuditEvent, AuditSink, ChatRequest, Message};
use llmops_govern::audit::record::split_line;
use llmops_govern::audit::{
    CommitmentKey, Durability, FileAuditSink, RecordEncoder, VerifyOptions, verify_log,
};

const CHILD_ENV: &str = "LLMOPS_GOVERN_CRASH_CHILD_LOG";

fn encoder() -> RecordEncoder {
    RecordEncoder::new(CommitmentKey::from_bytes([9; 32]))
}

/// The child: appends forever with 64 appends in flight, printing `ACK <seq> <hash>` for each
/// acknowledged record. Does nothing unless started by the parent test.
#[test]
#[ignore = "child process of crash_safety_under_sigkill"]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let sink = Arc::new(
            FileAuditSink::builder(PathBuf::from(path), encoder())
                .durability(Durability::Batched)
                .open()
                .unwrap(),
        );
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, String)>();
        for w in 0..64u64 {
            let sink = sink.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in 0u64.. {
                    let mut r = RequestAudit::new(format!("w{w}-{i}").into(), "t".into(), "m");
                    r.request = Some(Arc::new(ChatRequest::new(
                        "m",
                        vec![Message::user("x".repeat((i % 300) as usize))],
                    )));
                    let receipt = sink.append(AuditEvent::Request(Box::new(r))).await.unwrap();
                    if tx.send((receipt.seq, receipt.hash)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        while let Some((seq, hash)) = rx.recv().await {
            writeln!(out, "ACK {seq} {hash}").unwrap();
            out.flush().unwrap();
        }
    });
}

#[test]
fn crash_safety_under_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("crash.jsonl");
    let exe = std::env::current_exe().unwrap();
    let mut acked: HashMap<u64, String> = HashMap::new();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for round in 0..20 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &log)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the child test process");
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut parts = line.split(' ');
                if parts.next() == Some("ACK")
                    && let (Some(seq), Some(hash)) = (parts.next(), parts.next())
                {
                    got.push((seq.parse::<u64>().unwrap(), hash.to_owned()));
                }
            }
            got
        });
        // xorshift: a random moment between 50 and 400 ms.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(50 + seed % 350));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let got = reader.join().unwrap();
        acked.extend(got);
        // Reopen: repairs a torn tail (reported) and continues the chain.
        let sink = FileAuditSink::builder(&log, encoder()).open().unwrap();
        let report = sink.open_report().clone();
        rt.block_on(sink.close()).unwrap();
        let v = verify_log(&log, &VerifyOptions::default()).unwrap();
        assert!(
            v.is_intact(),
            "round {round}: {} (open report {report:?})",
            v.summary()
        );
    }
    assert!(
        acked.len() > 100,
        "the child acknowledged too few records ({}) to test anything",
        acked.len()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let mut present: HashMap<u64, String> = HashMap::new();
    for line in text.lines() {
        let (hash, rec) = split_line(line.as_bytes()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(rec).unwrap();
        present.insert(v["seq"].as_u64().unwrap(), hash.to_owned());
    }
    for (seq, hash) in &acked {
        assert_eq!(
            present.get(seq),
            Some(hash),
            "acknowledged record {seq} lost or changed"
        );
    }
    // One last append still works and the chain verifies.
    let sink = FileAuditSink::builder(&log, encoder()).open().unwrap();
    rt.block_on(async {
        let r = RequestAudit::new("final".into(), "t".into(), "m");
        sink.append(AuditEvent::Request(Box::new(r))).await.unwrap();
        sink.close().await.unwrap();
    });
    assert!(
        verify_log(&log, &VerifyOptions::default())
            .unwrap()
            .is_intact()
    );
}
