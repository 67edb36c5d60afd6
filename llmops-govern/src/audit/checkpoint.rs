//! Signed checkpoints: `{log id, size, head hash, time}` signed with Ed25519.
//!
//! A hash chain alone cannot show that its tail was cut off or that whoever holds the log
//! rewrote it and recomputed every hash. A checkpoint, kept where the log's writer cannot
//! rewrite it (another machine, a WORM bucket, a second party), pins the log's size and head:
//! a verifier holding it detects truncation below it and any rewrite of the history it covers.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::audit::keys::key_id;
use crate::audit::record::format_time;
use crate::canonical;
use crate::error::{GovernError, Result};

/// One signed checkpoint (a line of the checkpoint file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Checkpoint {
    /// The log's name (configured by the operator; identifies which log this pins).
    pub log_id: String,
    /// Number of records covered: sequence numbers `0..size`.
    pub size: u64,
    /// Hash of record `size - 1`, hex.
    pub head: String,
    /// When it was signed (RFC 3339).
    pub time: String,
    /// Id of the signing key (see [`key_id`]).
    pub key_id: String,
    /// Ed25519 signature of [`Checkpoint::message`], base64.
    pub sig: String,
}

impl Checkpoint {
    /// The signed message:
    /// `"llmops.audit.v1.checkpoint\n" log_id "\n" size "\n" head "\n" time "\n"`.
    pub fn message(log_id: &str, size: u64, head: &str, time: &str) -> Vec<u8> {
        format!("llmops.audit.v1.checkpoint\n{log_id}\n{size}\n{head}\n{time}\n").into_bytes()
    }

    /// Signs a checkpoint for a log of `size` records whose last hash is `head`.
    pub fn sign(key: &SigningKey, log_id: &str, size: u64, head: &str, time: SystemTime) -> Self {
        let time = format_time(time);
        let sig = key.sign(&Self::message(log_id, size, head, &time));
        Self {
            log_id: log_id.to_owned(),
            size,
            head: head.to_owned(),
            time,
            key_id: key_id(&key.verifying_key()),
            sig: B64.encode(sig.to_bytes()),
        }
    }

    /// Whether the signature is valid for `public`.
    pub fn verify(&self, public: &VerifyingKey) -> bool {
        let Ok(bytes) = B64.decode(&self.sig) else {
            return false;
        };
        let Ok(bytes) = <[u8; 64]>::try_from(bytes.as_slice()) else {
            return false;
        };
        let sig = Signature::from_bytes(&bytes);
        public
            .verify(
                &Self::message(&self.log_id, self.size, &self.head, &self.time),
                &sig,
            )
            .is_ok()
    }

    /// The checkpoint as one canonical JSON line (with `\n`).
    pub fn to_line(&self) -> Vec<u8> {
        let v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        let mut out = canonical::to_canonical_vec(&v);
        out.push(b'\n');
        out
    }
}

/// Appends checkpoints to a file, each durable (fsync) before `append` returns.
#[derive(Debug)]
pub struct CheckpointWriter {
    path: PathBuf,
    file: File,
}

impl CheckpointWriter {
    /// Opens (creating) the checkpoint file at `path` for appending. A torn last line left by
    /// a crash is cut off (and reported in the log).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| GovernError::io("create directory", dir, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| GovernError::io("open", &path, e))?;
        let cut = crate::audit::file::repair_torn_tail(&file, &path)?;
        if cut > 0 {
            tracing::warn!(path = %path.display(), bytes = cut, "cut a torn checkpoint line");
        }
        Ok(Self { path, file })
    }

    /// Appends and fsyncs one checkpoint.
    pub fn append(&mut self, cp: &Checkpoint) -> Result<()> {
        self.file
            .write_all(&cp.to_line())
            .map_err(|e| GovernError::io("write", &self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| GovernError::io("fsync", &self.path, e))
    }
}

/// One line of a checkpoint file: a checkpoint, or the reason the line is not one.
pub type CheckpointLine = std::result::Result<Checkpoint, String>;

/// Reads every line of a checkpoint file. Lines that do not parse are returned as `Err`
/// (a verifier treats them as forged).
pub fn read_checkpoints(path: &Path) -> Result<Vec<CheckpointLine>> {
    let f = File::open(path).map_err(|e| GovernError::io("open", path, e))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| GovernError::io("read", path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str::<Checkpoint>(&line)
                .map_err(|e| format!("checkpoint line {} does not parse: {e}", i + 1)),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_cover_every_field() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let pk = key.verifying_key();
        let cp = Checkpoint::sign(&key, "log", 10, &"ab".repeat(32), SystemTime::UNIX_EPOCH);
        assert!(cp.verify(&pk));
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        assert!(!cp.verify(&other));
        for forged in [
            Checkpoint {
                size: 11,
                ..cp.clone()
            },
            Checkpoint {
                head: "cd".repeat(32),
                ..cp.clone()
            },
            Checkpoint {
                log_id: "other".into(),
                ..cp.clone()
            },
            Checkpoint {
                time: format_time(SystemTime::now()),
                ..cp.clone()
            },
            Checkpoint {
                sig: "not base64!".into(),
                ..cp.clone()
            },
        ] {
            assert!(!forged.verify(&pk), "{forged:?}");
        }
    }

    #[test]
    fn file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.jsonl");
        let key = SigningKey::from_bytes(&[9; 32]);
        let mut w = CheckpointWriter::open(&path).unwrap();
        let cp = Checkpoint::sign(&key, "log", 1, &"00".repeat(32), SystemTime::now());
        w.append(&cp).unwrap();
        drop(w);
        // A torn line is cut on reopen.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"log")
            .unwrap();
        drop(CheckpointWriter::open(&path).unwrap());
        let all = read_checkpoints(&path).unwrap();
        assert_eq!(all, vec![Ok(cp)]);
    }
}
