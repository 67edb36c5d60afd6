//! Governance benchmarks: audit appends per durability mode, verification throughput, PII and
//! injection scans of a 4 KB prompt.
//!
//! `cargo bench -p llmops-govern --bench governance`
#![allow(clippy::unwrap_used)] // test code: a panic is a failure

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use divan::counter::{BytesCount, ItemsCount};
use divan::{Bencher, black_box};
use llmops_core::traits::audit::{Attempt, RequestAudit};
use llmops_core::{AuditEvent, AuditSink, ChatRequest, Message, Usage};
use llmops_govern::audit::{
    CommitmentKey, Durability, FileAuditSink, RecordEncoder, VerifyOptions, verify_log,
};
use llmops_govern::injection::HeuristicDetector;
use llmops_govern::pii::PiiScanner;

fn main() {
    divan::main();
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

fn event(i: usize) -> AuditEvent {
    let mut r = RequestAudit::new(format!("req-{i}").into(), "team-a".into(), "gpt-x");
    r.request = Some(Arc::new(ChatRequest::new(
        "gpt-x",
        vec![
            Message::system("You are a helpful assistant."),
            Message::user("What is the capital of France?"),
        ],
    )));
    r.output = Some("Paris.".into());
    r.attempts.push(Attempt::new("primary", "gpt-x-2025", None));
    r.usage = Some(Usage::new(25, 3));
    r.cost_usd = Some(0.000_042);
    AuditEvent::Request(Box::new(r))
}

fn encoder() -> RecordEncoder {
    RecordEncoder::new(CommitmentKey::from_bytes([1; 32]))
}

const IN_FLIGHT: usize = 1000;

/// Appends of 1,000 records with all of them in flight (the gateway under load), per mode.
#[divan::bench(args = ["per-record", "batched", "async"], sample_count = 10, sample_size = 1)]
fn audit_append(bencher: Bencher<'_, '_>, mode: &str) {
    let durability = match mode {
        "per-record" => Durability::PerRecord,
        "batched" => Durability::Batched,
        _ => Durability::Async,
    };
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(
        FileAuditSink::builder(dir.path().join("bench.jsonl"), encoder())
            .durability(durability)
            .open()
            .unwrap(),
    );
    let n = if durability == Durability::PerRecord {
        100
    } else {
        IN_FLIGHT
    };
    bencher.counter(ItemsCount::new(n)).bench_local(|| {
        runtime().block_on(async {
            let mut handles = Vec::with_capacity(n);
            for i in 0..n {
                let sink = sink.clone();
                handles.push(tokio::spawn(async move { sink.append(event(i)).await }));
            }
            for h in handles {
                black_box(h.await.unwrap().unwrap());
            }
        });
    });
    runtime().block_on(sink.close()).unwrap();
}

fn verify_fixture() -> &'static (tempfile::TempDir, PathBuf, u64) {
    static LOG: OnceLock<(tempfile::TempDir, PathBuf, u64)> = OnceLock::new();
    LOG.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("verify.jsonl");
        let n = 100_000;
        let sink = Arc::new(
            FileAuditSink::builder(&path, encoder())
                .durability(Durability::Async)
                .open()
                .unwrap(),
        );
        runtime().block_on(async {
            let mut handles = Vec::new();
            for i in 0..n {
                let sink = sink.clone();
                handles.push(tokio::spawn(async move { sink.append(event(i)).await }));
                if handles.len() == 10_000 {
                    for h in handles.drain(..) {
                        h.await.unwrap().unwrap();
                    }
                }
            }
            for h in handles {
                h.await.unwrap().unwrap();
            }
            sink.close().await.unwrap();
        });
        (dir, path, n as u64)
    })
}

/// Streaming verification of a 100,000-record log (records per second).
#[divan::bench(sample_count = 10, sample_size = 1)]
fn audit_verify(bencher: Bencher<'_, '_>) {
    let (_, path, n) = verify_fixture();
    let bytes = std::fs::metadata(path).unwrap().len();
    bencher.counter(ItemsCount::new(*n)).bench(|| {
        let r = verify_log(path, &VerifyOptions::default()).unwrap();
        assert!(r.is_intact());
        let _ = bytes;
        black_box(r)
    });
}

fn prompt_4k() -> String {
    let base = "Hi team, following up on the ticket from last week. The customer (reach her at \
                ann.lee@example.com or +1 650-253-0000) says the card 4111 1111 1111 1111 was \
                charged twice; the refund should go to IBAN DE89370400440532013000. The server \
                at 10.20.30.40 logged the error. Please draft a reply that apologises, explains \
                the next steps and gives a realistic timeline for the refund. ";
    let filler = "The quick brown fox jumps over the lazy dog while the support queue keeps growing \
                  and the release train leaves on schedule every other Tuesday afternoon. ";
    let mut s = String::from(base);
    while s.len() < 4096 {
        s.push_str(filler);
    }
    s.truncate(4096);
    s
}

/// PII scan of a 4 KB prompt with five findings.
#[divan::bench]
fn pii_scan_4k(bencher: Bencher<'_, '_>) {
    let scanner = PiiScanner::new();
    let text = prompt_4k();
    assert_eq!(scanner.scan(&text).len(), 5);
    bencher
        .counter(BytesCount::of_str(&text))
        .bench(|| black_box(scanner.scan(black_box(&text))));
}

/// PII scan of a 4 KB prompt with nothing to find.
#[divan::bench]
fn pii_scan_4k_clean(bencher: Bencher<'_, '_>) {
    let scanner = PiiScanner::new();
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(92);
    bencher
        .counter(BytesCount::of_str(&text))
        .bench(|| black_box(scanner.scan(black_box(&text))));
}

/// Injection heuristics on a 4 KB prompt.
#[divan::bench]
fn injection_scan_4k(bencher: Bencher<'_, '_>) {
    let d = HeuristicDetector::new();
    let text = prompt_4k();
    bencher
        .counter(BytesCount::of_str(&text))
        .bench(|| black_box(d.scan(black_box(&text))));
}
