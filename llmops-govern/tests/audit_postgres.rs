//! The PostgreSQL sink against the real server (`LLMOPS_TEST_PG_URL`, default
//! postgres://postgres@127.0.0.1:5432/test): two concurrent writers extend one chain, and
//! tampering with rows is detected.
#![allow(clippy::unwrap_used)] // test code: a panic is a failure
#![cfg(feature = "postgres")]

use std::collections::BTreeSet;
use std::sync::Arc;

use llmops_core::traits::audit::RequestAudit;
use llmops_core::{AuditEvent, AuditSink};
use llmops_govern::audit::postgres::PostgresAuditSink;
use llmops_govern::audit::{CommitmentKey, DamageKind, RecordEncoder, VerifyOptions};
use tokio_postgres::NoTls;

fn url() -> String {
    std::env::var("LLMOPS_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&url(), NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot reach PostgreSQL at {} (set LLMOPS_TEST_PG_URL): {e}",
                url()
            )
        });
    tokio::spawn(conn);
    client
}

fn table() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "llmops_audit_test_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000
    )
}

fn encoder() -> RecordEncoder {
    RecordEncoder::new(CommitmentKey::from_bytes([4; 32]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_writers_extend_one_chain() {
    let admin = admin().await;
    let table = table();
    let a = Arc::new(
        PostgresAuditSink::connect(&url(), &table, "shared", encoder())
            .await
            .unwrap(),
    );
    let b = Arc::new(
        PostgresAuditSink::connect(&url(), &table, "shared", encoder())
            .await
            .unwrap(),
    );
    let mut handles = Vec::new();
    for (w, sink) in [("a", a.clone()), ("b", b.clone())] {
        for i in 0..400 {
            let sink = sink.clone();
            handles.push(tokio::spawn(async move {
                let ev =
                    RequestAudit::new(format!("{w}-{i}").into(), format!("tenant-{w}").into(), "m");
                sink.append(AuditEvent::Request(Box::new(ev)))
                    .await
                    .unwrap()
            }));
        }
    }
    let mut seqs = BTreeSet::new();
    for h in handles {
        assert!(
            seqs.insert(h.await.unwrap().seq),
            "a sequence number was given twice"
        );
    }
    assert_eq!(seqs, (0..800).collect::<BTreeSet<u64>>());
    let report = a.verify(VerifyOptions::default()).await.unwrap();
    assert!(report.is_intact(), "{}", report.summary());
    assert_eq!(report.records, 800);
    assert_eq!(b.head().await.unwrap().0, 800);

    // Checkpoints pin the head; deleting the newest rows is then detected.
    let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
    let cp = a.checkpoint(&key).await.unwrap().unwrap();
    assert_eq!(cp.size, 800);
    let dir = tempfile::tempdir().unwrap();
    let cp_path = dir.path().join("cp.jsonl");
    std::fs::write(&cp_path, cp.to_line()).unwrap();
    let opts = VerifyOptions::default().with_checkpoints(&cp_path, key.verifying_key());
    assert!(a.verify(opts.clone()).await.unwrap().is_intact());

    // The indexed columns are copies of the stored record.
    for row in admin
        .query(
            &format!(
                "SELECT ts, tenant, request_id, kind, record FROM {table} ORDER BY seq LIMIT 50"
            ),
            &[],
        )
        .await
        .unwrap()
    {
        let ts: std::time::SystemTime = row.get(0);
        let record: serde_json::Value = serde_json::from_str(row.get::<_, &str>(4)).unwrap();
        assert_eq!(row.get::<_, Option<&str>>(1), record["tenant"].as_str());
        assert_eq!(row.get::<_, Option<&str>>(2), record["request_id"].as_str());
        assert_eq!(row.get::<_, &str>(3), record["type"].as_str().unwrap());
        let stored = humantime::parse_rfc3339(record["ts"].as_str().unwrap()).unwrap();
        let skew = stored.duration_since(ts).unwrap_or_else(|e| e.duration());
        assert!(skew < std::time::Duration::from_micros(1), "{skew:?}");
    }

    // The indexes exist.
    let idx: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE tablename = $1",
            &[&table],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(idx, 4, "primary key + time, tenant and request-id indexes");

    // Tampering: an edited record, a deleted row, a truncated tail.
    admin
        .execute(&format!("UPDATE {table} SET record = replace(replace(record, 'tenant-a', 'tenant-x'), 'tenant-b', 'tenant-y') WHERE seq = 100"), &[])
        .await
        .unwrap();
    let d = a
        .verify(VerifyOptions::default())
        .await
        .unwrap()
        .damage
        .unwrap();
    assert_eq!((d.kind, d.seq), (DamageKind::Modified, 100));
    admin
        .execute(&format!("DELETE FROM {table} WHERE seq = 100"), &[])
        .await
        .unwrap();
    let d = a
        .verify(VerifyOptions::default())
        .await
        .unwrap()
        .damage
        .unwrap();
    assert_eq!((d.kind, d.seq), (DamageKind::Deleted, 100));
    admin
        .execute(&format!("DELETE FROM {table} WHERE seq >= 100"), &[])
        .await
        .unwrap();
    assert!(
        a.verify(VerifyOptions::default())
            .await
            .unwrap()
            .is_intact(),
        "the chain alone misses truncation"
    );
    let d = a.verify(opts).await.unwrap().damage.unwrap();
    assert_eq!((d.kind, d.seq), (DamageKind::Truncated, 100));

    admin
        .execute(&format!("DROP TABLE {table}"), &[])
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_table_names_are_refused() {
    let err = PostgresAuditSink::connect(&url(), "x; DROP TABLE y", "l", encoder())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid table name"), "{err}");
}
