//! The tamper-evident audit trail: record format, sinks, checkpoints, verification.
//!
//! - [`record`]: how an [`AuditEvent`](llmops_core::AuditEvent) becomes a chained line
//!   (commitments, optional redacted or encrypted content, canonical JSON, BLAKE3 chain).
//! - [`file`](mod@file): [`FileAuditSink`], append-only JSON Lines with group commit, rotation and
//!   torn-tail repair.
//! - `postgres` (feature `postgres`): `PostgresAuditSink`, one chain in a table shared by
//!   several writers.
//! - [`checkpoint`]: Ed25519-signed `{log id, size, head}` checkpoints.
//! - [`verify`]: the streaming verifier.
//! - [`keys`]: commitment key, checkpoint key pair, per-tenant content keys (crypto-shredding).

pub mod checkpoint;
pub mod file;
pub mod keys;
pub mod layer;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod record;
pub mod verify;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::Value;

pub use checkpoint::{Checkpoint, CheckpointWriter};
pub use file::{
    CheckpointPolicy, Durability, FileAuditSink, FileSinkBuilder, OpenReport, Rotation,
};
pub use keys::{
    CommitmentKey, ContentKey, ContentKeyStore, DirKeyStore, SealedContent, generate_keys,
};
pub use layer::AuditLayer;
pub use record::{ContentMode, RecordEncoder};
pub use verify::{Damage, DamageKind, Verifier, VerifyOptions, VerifyReport, verify_log};

use crate::error::{GovernError, Result};

/// Which records [`read_records`] yields.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RecordFilter {
    /// Only this tenant's records.
    pub tenant: Option<String>,
    /// Only this request's records.
    pub request_id: Option<String>,
    /// Only records at or after this time.
    pub since: Option<SystemTime>,
}

impl RecordFilter {
    /// Whether `record` passes.
    pub fn matches(&self, record: &Value) -> bool {
        if let Some(t) = &self.tenant
            && record.get("tenant").and_then(Value::as_str) != Some(t.as_str())
        {
            return false;
        }
        if let Some(r) = &self.request_id
            && record.get("request_id").and_then(Value::as_str) != Some(r.as_str())
        {
            return false;
        }
        if let Some(since) = self.since {
            let ts = record
                .get("ts")
                .and_then(Value::as_str)
                .and_then(|s| humantime::parse_rfc3339_weak(s).ok());
            if ts.is_none_or(|t| t < since) {
                return false;
            }
        }
        true
    }
}

/// Streams the records (the `record` objects, without checking the chain — use
/// [`verify_log`] for that) of the log whose active file is `path`, filtered.
pub fn read_records(
    path: &Path,
    filter: RecordFilter,
) -> Result<impl Iterator<Item = Result<Value>>> {
    let files = file::log_files(path)?;
    if files.is_empty() {
        return Err(GovernError::io(
            "open",
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no audit log here"),
        ));
    }
    let mut files = files.into_iter();
    let mut current: Option<(PathBuf, BufReader<File>)> = None;
    let mut buf = Vec::new();
    Ok(std::iter::from_fn(move || {
        loop {
            if current.is_none() {
                let p = files.next()?;
                match File::open(&p) {
                    Ok(f) => current = Some((p, BufReader::new(f))),
                    Err(e) => return Some(Err(GovernError::io("open", p, e))),
                }
            }
            let (p, r) = current.as_mut()?;
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Err(e) => return Some(Err(GovernError::io("read", p.clone(), e))),
                Ok(0) => {
                    current = None;
                    continue;
                }
                Ok(_) => {}
            }
            if buf.last() != Some(&b'\n') {
                continue; // torn tail: not a record
            }
            buf.pop();
            let Some((_, rec)) = record::split_line(&buf) else {
                continue;
            };
            match serde_json::from_slice::<Value>(rec) {
                Ok(v) if filter.matches(&v) => return Some(Ok(v)),
                Ok(_) | Err(_) => continue,
            }
        }
    }))
}

/// The decrypted content of a record whose content was stored encrypted, `Ok(None)` when the
/// record has no encrypted content or the tenant's key was shredded.
pub fn decrypt_content(record: &Value, store: &dyn ContentKeyStore) -> Result<Option<Value>> {
    let Some(content) = record.get("content") else {
        return Ok(None);
    };
    let Ok(sealed) = serde_json::from_value::<SealedContent>(content.clone()) else {
        return Ok(None);
    };
    let tenant = record
        .get("tenant")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let request_id = record
        .get("request_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(key) = store.get(tenant)? else {
        return Ok(None);
    };
    let plain = key.open(tenant, request_id, &sealed)?;
    serde_json::from_slice(&plain)
        .map(Some)
        .map_err(|e| GovernError::Crypto(format!("content: {e}")))
}
