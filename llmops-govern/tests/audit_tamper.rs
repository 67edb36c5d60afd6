//! Tamper tests on a 10,000-record log made with the file sink: every damage kind is named
//! with the right sequence number, and the untouched log verifies.
#![allow(clippy::unwrap_used)] // test code: a panic is a failure

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use llmops_core::traits::audit::{Attempt, RequestAudit};
use llmops_core::{AuditEvent, AuditSink, ChatRequest, Message, Usage};
use llmops_govern::audit::checkpoint::{Checkpoint, read_checkpoints};
use llmops_govern::audit::record::{record_hash, seal_record, split_line};
use llmops_govern::audit::{
    CheckpointPolicy, CommitmentKey, DamageKind, FileAuditSink, RecordEncoder, VerifyOptions,
    verify_log,
};
use serde_json::{Map, Value};

const N: usize = 10_000;

struct Fixture {
    _dir: tempfile::TempDir,
    log: PathBuf,
    checkpoints: PathBuf,
    key: SigningKey,
}

fn event(i: usize) -> AuditEvent {
    let mut r = RequestAudit::new(
        format!("req-{i:05}").into(),
        format!("tenant-{}", i % 7).into(),
        "gpt-x",
    );
    r.request = Some(Arc::new(ChatRequest::new(
        "gpt-x",
        vec![Message::user(format!("question {i}"))],
    )));
    r.output = Some(format!("answer {i}"));
    r.attempts.push(Attempt::new("primary", "gpt-x-2025", None));
    r.usage = Some(Usage::new(10 + i as u64, 5));
    r.cost_usd = Some(0.0001 * i as f64);
    AuditEvent::Request(Box::new(r))
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("llmops.jsonl");
    let checkpoints = dir.path().join("checkpoints.jsonl");
    let key = SigningKey::from_bytes(&[42; 32]);
    let sink = Arc::new(
        FileAuditSink::builder(&log, RecordEncoder::new(CommitmentKey::from_bytes([1; 32])))
            .checkpoints(
                CheckpointPolicy::new(&checkpoints, key.clone(), "tamper-test").every_records(1000),
            )
            .open()
            .unwrap(),
    );
    // Appends in order (so seq == i), many in flight per group commit.
    for chunk in (0..N).collect::<Vec<_>>().chunks(500) {
        let mut handles = Vec::new();
        for &i in chunk {
            handles.push(sink.append(event(i)));
        }
        for (h, &i) in futures_util::future::join_all(handles)
            .await
            .into_iter()
            .zip(chunk)
        {
            let _ = (h.unwrap(), i);
        }
    }
    sink.close().await.unwrap();
    Fixture {
        _dir: dir,
        log,
        checkpoints,
        key,
    }
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut s = lines.join("\n");
    s.push('\n');
    fs::write(path, s).unwrap();
}

fn opts(f: &Fixture) -> VerifyOptions {
    VerifyOptions::default().with_checkpoints(&f.checkpoints, f.key.verifying_key())
}

fn damage(f: &Fixture) -> (DamageKind, u64) {
    let report = verify_log(&f.log, &opts(f)).unwrap();
    let summary = report.summary();
    let d = report
        .damage
        .unwrap_or_else(|| panic!("damage not detected: {summary}"));
    (d.kind, d.seq)
}

fn hash_of(line: &str) -> String {
    split_line(line.as_bytes()).unwrap().0.to_owned()
}

fn record_of(line: &str) -> Map<String, Value> {
    let (_, rec) = split_line(line.as_bytes()).unwrap();
    serde_json::from_slice(rec).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_damage_kind_is_detected_on_10k_records() {
    let f = fixture().await;
    let original = lines(&f.log);
    assert_eq!(original.len(), N);
    let report = verify_log(&f.log, &opts(&f)).unwrap();
    assert!(report.is_intact(), "{}", report.summary());
    assert_eq!(report.records, N as u64);
    assert_eq!(report.checkpoints_verified, 10);
    assert!(
        report.summary().starts_with("OK: 10000 records"),
        "{}",
        report.summary()
    );

    // 1. One byte of a field edited.
    let mut l = original.clone();
    l[5000] = l[5000].replacen(
        "\"request_id\":\"req-05000\"",
        "\"request_id\":\"req-05001\"",
        1,
    );
    assert_ne!(l[5000], original[5000]);
    write_lines(&f.log, &l);
    assert_eq!(damage(&f), (DamageKind::Modified, 5000));

    // 2. A middle line deleted.
    let mut l = original.clone();
    l.remove(5000);
    write_lines(&f.log, &l);
    assert_eq!(damage(&f), (DamageKind::Deleted, 5000));

    // 3. Two lines swapped.
    let mut l = original.clone();
    l.swap(5000, 5001);
    write_lines(&f.log, &l);
    assert_eq!(damage(&f), (DamageKind::Reordered, 5000));

    // 4. A forged line inserted, with a recomputed hash and a correct link.
    let mut forged = record_of(&original[5000]);
    forged.insert("tenant".into(), "attacker".into());
    for k in ["v", "seq", "prev"] {
        forged.remove(k);
    }
    let mut line = Vec::new();
    seal_record(forged, 5000, &hash_of(&original[4999]), &mut line);
    let forged_line = String::from_utf8(line).unwrap().trim_end().to_owned();
    let mut l = original.clone();
    l.insert(5000, forged_line);
    write_lines(&f.log, &l);
    assert_eq!(damage(&f), (DamageKind::Inserted, 5000));

    // 5. The tail truncated below the last checkpoint (the chain alone cannot see it).
    let l = original[..9500].to_vec();
    write_lines(&f.log, &l);
    let chain_only = verify_log(&f.log, &VerifyOptions::default()).unwrap();
    assert!(
        chain_only.is_intact(),
        "a truncated chain is self-consistent"
    );
    assert_eq!(damage(&f), (DamageKind::Truncated, 9500));

    // 6. History rewritten from seq 3000 on, every hash recomputed (a privileged writer).
    let mut l = original[..3000].to_vec();
    let mut prev = hash_of(&original[2999]);
    for old in &original[3000..] {
        let mut rec = record_of(old);
        let seq = rec["seq"].as_u64().unwrap();
        if seq == 3000 {
            rec.insert("cost_usd".into(), Value::from(0));
        }
        for k in ["v", "seq", "prev"] {
            rec.remove(k);
        }
        let mut line = Vec::new();
        let h = seal_record(rec, seq, &prev, &mut line);
        prev = h.to_hex().to_string();
        l.push(String::from_utf8(line).unwrap().trim_end().to_owned());
    }
    write_lines(&f.log, &l);
    assert!(
        verify_log(&f.log, &VerifyOptions::default())
            .unwrap()
            .is_intact(),
        "the rewrite is self-consistent"
    );
    assert_eq!(damage(&f), (DamageKind::Rewritten, 3999));

    // Restore the log; now forge checkpoints.
    write_lines(&f.log, &original);
    assert!(verify_log(&f.log, &opts(&f)).unwrap().is_intact());
    let cps_original = fs::read_to_string(&f.checkpoints).unwrap();
    let cps: Vec<Checkpoint> = read_checkpoints(&f.checkpoints)
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();

    // 7a. A checkpoint edited to pin a shorter log (to hide a truncation).
    let mut forged = cps[9].clone();
    forged.size = 9500;
    forged.head = hash_of(&original[9499]);
    let mut text = String::new();
    for cp in cps.iter().take(9) {
        text.push_str(std::str::from_utf8(&cp.to_line()).unwrap());
    }
    text.push_str(std::str::from_utf8(&forged.to_line()).unwrap());
    fs::write(&f.checkpoints, &text).unwrap();
    assert_eq!(damage(&f), (DamageKind::BadSignature, 9499));

    // 7b. A checkpoint signed with another key.
    let other = SigningKey::from_bytes(&[7; 32]);
    let forged = Checkpoint::sign(
        &other,
        "tamper-test",
        8000,
        &hash_of(&original[7999]),
        std::time::SystemTime::now(),
    );
    fs::write(
        &f.checkpoints,
        format!(
            "{cps_original}{}",
            std::str::from_utf8(&forged.to_line()).unwrap()
        ),
    )
    .unwrap();
    assert_eq!(damage(&f), (DamageKind::BadSignature, 7999));

    // 7c. A garbage line in the checkpoint file.
    fs::write(&f.checkpoints, format!("{cps_original}{{\"size\":1}}\n")).unwrap();
    assert_eq!(damage(&f).0, DamageKind::BadSignature);

    // Restored, everything verifies again, in strict mode too.
    fs::write(&f.checkpoints, &cps_original).unwrap();
    let report = verify_log(&f.log, &opts(&f).strict(true)).unwrap();
    assert!(report.is_intact(), "{}", report.summary());
    // Recomputing each stored hash from the stored bytes gives the same value.
    for line in original.iter().take(10) {
        let (h, rec) = split_line(line.as_bytes()).unwrap();
        assert_eq!(record_hash(rec).to_hex().as_str(), h);
    }
}
