//! The PostgreSQL sink: the same records and chain in a table shared by several writers.
//!
//! Each appended batch runs in one transaction that first takes a transaction-scoped advisory
//! lock derived from `(table, log id)`, reads the head (last `seq` and `hash`), seals the
//! batch's records onto it and inserts them. Writers on any number of gateway replicas
//! therefore extend one chain, in lock order; a committed batch is durable (PostgreSQL's
//! commit), so every durability mode behaves like `batched` here.
//!
//! The table keeps the exact record bytes (`record TEXT`), so verification hashes what was
//! stored; `ts`, `tenant`, `request_id` and `kind` are copies for queries, indexed by
//! `(log_id, ts)`, `(log_id, tenant, ts)` and `(request_id)`.
//!
//! ```sql
//! CREATE TABLE llmops_audit (
//!     log_id     TEXT        NOT NULL,
//!     seq        BIGINT      NOT NULL,
//!     ts         TIMESTAMPTZ NOT NULL,
//!     tenant     TEXT,
//!     request_id TEXT,
//!     kind       TEXT        NOT NULL,
//!     hash       TEXT        NOT NULL,
//!     record     TEXT        NOT NULL,
//!     PRIMARY KEY (log_id, seq)
//! );
//! ```

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use ed25519_dalek::SigningKey;
use futures_util::{StreamExt, pin_mut};
use llmops_core::{AuditEvent, AuditReceipt, AuditSink, Error as CoreError};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, NoTls};

use crate::audit::checkpoint::Checkpoint;
use crate::audit::record::{GENESIS_PREV, PreparedRecord, RecordEncoder, encode_line, split_line};
use crate::audit::verify::{Verifier, VerifyOptions, VerifyReport};
use crate::error::{GovernError, Result};

type Ack = oneshot::Sender<std::result::Result<AuditReceipt, CoreError>>;

/// The PostgreSQL audit sink. See the [module docs](self).
#[derive(Debug)]
pub struct PostgresAuditSink {
    tx: mpsc::Sender<(AuditEvent, Ack)>,
    client: Arc<Client>,
    table: String,
    log_id: String,
}

fn valid_table(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(GovernError::Config(format!(
            "invalid table name {name:?}: use [a-z_][a-z0-9_]*"
        )))
    }
}

fn lock_key(table: &str, log_id: &str) -> i64 {
    let h = blake3::hash(format!("llmops-audit\n{table}\n{log_id}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    i64::from_le_bytes(b)
}

async fn connect(url: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::error!(error = %e, "audit PostgreSQL connection ended");
        }
    });
    Ok(client)
}

impl PostgresAuditSink {
    /// Connects to `url`, creates `table` and its indexes if needed, and starts the writer
    /// task for log `log_id`. Must be called within a tokio runtime.
    pub async fn connect(
        url: &str,
        table: &str,
        log_id: &str,
        encoder: RecordEncoder,
    ) -> Result<Self> {
        valid_table(table)?;
        let writer = connect(url).await?;
        writer
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                    log_id TEXT NOT NULL, seq BIGINT NOT NULL, ts TIMESTAMPTZ NOT NULL,
                    tenant TEXT, request_id TEXT, kind TEXT NOT NULL,
                    hash TEXT NOT NULL, record TEXT NOT NULL,
                    PRIMARY KEY (log_id, seq));
                 CREATE INDEX IF NOT EXISTS {table}_ts_idx ON {table} (log_id, ts);
                 CREATE INDEX IF NOT EXISTS {table}_tenant_idx ON {table} (log_id, tenant, ts);
                 CREATE INDEX IF NOT EXISTS {table}_request_idx ON {table} (request_id);"
            ))
            .await
            .or_else(|e| {
                // Two writers creating the table at once: the loser sees a duplicate-type error.
                if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
        let reader = Arc::new(connect(url).await?);
        let (tx, rx) = mpsc::channel(65_536);
        let task = WriterTask {
            client: writer,
            table: table.to_owned(),
            log_id: log_id.to_owned(),
            lock: lock_key(table, log_id),
            encoder,
        };
        tokio::spawn(task.run(rx));
        Ok(Self {
            tx,
            client: reader,
            table: table.to_owned(),
            log_id: log_id.to_owned(),
        })
    }

    /// The current head: number of records and hash of the last one.
    pub async fn head(&self) -> Result<(u64, String)> {
        let row = self
            .client
            .query_opt(
                &format!(
                    "SELECT seq, hash FROM {} WHERE log_id = $1 ORDER BY seq DESC LIMIT 1",
                    self.table
                ),
                &[&self.log_id],
            )
            .await?;
        Ok(match row {
            Some(r) => (u64::try_from(r.get::<_, i64>(0)).unwrap_or(0) + 1, r.get(1)),
            None => (0, GENESIS_PREV.to_owned()),
        })
    }

    /// Signs a checkpoint of the current head (store it where the database's operators cannot
    /// rewrite it).
    pub async fn checkpoint(&self, key: &SigningKey) -> Result<Option<Checkpoint>> {
        let (size, head) = self.head().await?;
        Ok((size > 0).then(|| Checkpoint::sign(key, &self.log_id, size, &head, SystemTime::now())))
    }

    /// Verifies the log in the table, streaming rows in `seq` order.
    pub async fn verify(&self, options: VerifyOptions) -> Result<VerifyReport> {
        verify_table(&self.client, &self.table, &self.log_id, options).await
    }
}

/// Verifies log `log_id` in `table` through `client`, streaming rows in `seq` order.
pub async fn verify_table(
    client: &Client,
    table: &str,
    log_id: &str,
    options: VerifyOptions,
) -> Result<VerifyReport> {
    valid_table(table)?;
    let mut v = Verifier::new(options)?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&log_id];
    let rows = client
        .query_raw(
            &format!("SELECT hash, record FROM {table} WHERE log_id = $1 ORDER BY seq"),
            params,
        )
        .await?;
    pin_mut!(rows);
    let mut line = Vec::new();
    while let Some(row) = rows.next().await {
        let row = row?;
        let hash: &str = row.get(0);
        let record: &str = row.get(1);
        line.clear();
        match blake3::Hash::from_hex(hash) {
            Ok(h) => encode_line(record.as_bytes(), &h, &mut line),
            Err(_) => line.extend_from_slice(record.as_bytes()),
        }
        line.pop();
        if !v.feed(&line, None) {
            break;
        }
    }
    let mut report = v.finish();
    report.files = 1;
    Ok(report)
}

#[async_trait]
impl AuditSink for PostgresAuditSink {
    async fn append(&self, event: AuditEvent) -> llmops_core::Result<AuditReceipt> {
        let (ack, rx) = oneshot::channel();
        self.tx
            .send((event, ack))
            .await
            .map_err(|_| CoreError::from(GovernError::WriterStopped))?;
        rx.await
            .map_err(|_| CoreError::from(GovernError::WriterStopped))?
    }

    async fn flush(&self) -> llmops_core::Result<()> {
        // Every acknowledged append is committed.
        Ok(())
    }
}

struct WriterTask {
    client: Client,
    table: String,
    log_id: String,
    lock: i64,
    encoder: RecordEncoder,
}

/// The indexed columns of a record, read from its event.
struct Columns {
    ts: SystemTime,
    tenant: Option<String>,
    request_id: Option<String>,
    kind: &'static str,
}

impl Columns {
    fn of(event: &AuditEvent) -> Self {
        match event {
            AuditEvent::Request(r) => Self {
                ts: r.time,
                tenant: Some(r.tenant.to_string()),
                request_id: Some(r.request_id.to_string()),
                kind: "request",
            },
            AuditEvent::System(s) => Self {
                ts: s.time,
                tenant: None,
                request_id: None,
                kind: "system",
            },
            _ => Self {
                ts: SystemTime::now(),
                tenant: None,
                request_id: None,
                kind: "unknown",
            },
        }
    }
}

struct Row {
    seq: i64,
    ts: SystemTime,
    tenant: Option<String>,
    request_id: Option<String>,
    kind: String,
    hash: String,
    record: String,
}

impl WriterTask {
    async fn run(mut self, mut rx: mpsc::Receiver<(AuditEvent, Ack)>) {
        let mut batch = Vec::new();
        while rx.recv_many(&mut batch, 4096).await > 0 {
            let items = std::mem::take(&mut batch);
            // Commitments and content encryption may touch key files: off the async workers.
            let encoder = self.encoder.clone();
            let encoded = tokio::task::spawn_blocking(move || {
                items
                    .into_iter()
                    .map(|(ev, ack)| (encoder.prepare(&ev).map(|p| (p, Columns::of(&ev))), ack))
                    .collect::<Vec<_>>()
            })
            .await;
            let Ok(encoded) = encoded else { continue };
            let mut bodies = Vec::new();
            let mut acks = Vec::new();
            for (body, ack) in encoded {
                match body {
                    Ok(b) => {
                        bodies.push(b);
                        acks.push(ack);
                    }
                    Err(e) => {
                        let _ = ack.send(Err(e.into()));
                    }
                }
            }
            if bodies.is_empty() {
                continue;
            }
            match self.commit(bodies).await {
                Ok(receipts) => {
                    for (ack, r) in acks.into_iter().zip(receipts) {
                        let _ = ack.send(Ok(r));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit append to PostgreSQL failed");
                    for ack in acks {
                        let _ = ack.send(Err(CoreError::internal(format!(
                            "audit append failed: {e}"
                        ))));
                    }
                }
            }
        }
    }

    async fn commit(
        &mut self,
        bodies: Vec<(PreparedRecord, Columns)>,
    ) -> Result<Vec<AuditReceipt>> {
        let tx = self.client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&self.lock])
            .await?;
        let head = tx
            .query_opt(
                &format!(
                    "SELECT seq, hash FROM {} WHERE log_id = $1 ORDER BY seq DESC LIMIT 1",
                    self.table
                ),
                &[&self.log_id],
            )
            .await?;
        let (mut seq, mut prev): (i64, String) = match head {
            Some(r) => (r.get::<_, i64>(0) + 1, r.get(1)),
            None => (0, GENESIS_PREV.to_owned()),
        };
        let mut rows = Vec::with_capacity(bodies.len());
        let mut line = Vec::new();
        for (body, columns) in bodies {
            let Columns {
                ts,
                tenant,
                request_id,
                kind,
            } = columns;
            let kind = kind.to_owned();
            line.clear();
            let hash = body.seal(u64::try_from(seq).unwrap_or(0), &prev, &mut line);
            line.pop();
            let record = split_line(&line)
                .and_then(|(_, r)| std::str::from_utf8(r).ok())
                .map(str::to_owned)
                .ok_or_else(|| GovernError::Config("record encoding failed".into()))?;
            prev = hash.to_hex().to_string();
            rows.push(Row {
                seq,
                ts,
                tenant,
                request_id,
                kind,
                hash: prev.clone(),
                record,
            });
            seq += 1;
        }
        let stmt = tx
            .prepare(&format!(
                "INSERT INTO {} (log_id, seq, ts, tenant, request_id, kind, hash, record)
                 SELECT $1, * FROM UNNEST($2::bigint[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])",
                self.table
            ))
            .await?;
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let tss: Vec<SystemTime> = rows.iter().map(|r| r.ts).collect();
        let tenants: Vec<Option<&str>> = rows.iter().map(|r| r.tenant.as_deref()).collect();
        let reqs: Vec<Option<&str>> = rows.iter().map(|r| r.request_id.as_deref()).collect();
        let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
        let hashes: Vec<&str> = rows.iter().map(|r| r.hash.as_str()).collect();
        let records: Vec<&str> = rows.iter().map(|r| r.record.as_str()).collect();
        tx.execute(
            &stmt,
            &[
                &self.log_id,
                &seqs,
                &tss,
                &tenants,
                &reqs,
                &kinds,
                &hashes,
                &records,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .map(|r| AuditReceipt::new(u64::try_from(r.seq).unwrap_or(0), r.hash))
            .collect())
    }
}
