//! The result cache: target outputs keyed by (case, target, prompt version, params, repeat).
//!
//! Its purpose is resuming an interrupted run, not saving money on repeats: the repeat index
//! is part of the key, so repeat 2 is never served repeat 1's answer, and K repeats always
//! mean K independent samples. Failed calls are not cached. The cache is an append-only JSONL
//! file; appends go through a dedicated writer thread so async workers never block on disk.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use llmops_core::{ChatResponse, Message};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{EvalError, Result};
use crate::template::full_hash;

/// The parts of a cache key.
#[derive(Debug, Serialize)]
pub struct CacheKeyParts<'a> {
    /// The case id.
    pub case_id: &'a str,
    /// The messages sent (so an edited case never reuses an old answer).
    pub messages: &'a [Message],
    /// The target id.
    pub target: &'a str,
    /// The model name.
    pub model: &'a str,
    /// The prompt template version.
    pub prompt_version: Option<&'a str>,
    /// The request parameters.
    pub params: &'a Value,
    /// The repeat index.
    pub repeat: u32,
}

impl CacheKeyParts<'_> {
    /// The key: SHA-256 of the parts' canonical JSON.
    pub fn key(&self) -> String {
        full_hash(&serde_json::to_vec(self).unwrap_or_default())
    }
}

/// A cached target answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CachedSample {
    /// The key.
    pub key: String,
    /// The response.
    pub response: ChatResponse,
    /// Latency of the original call in milliseconds.
    pub latency_ms: f64,
}

/// A JSONL result cache.
#[derive(Debug)]
pub struct ResultCache {
    path: PathBuf,
    entries: HashMap<String, CachedSample>,
    writer: Option<(mpsc::Sender<CachedSample>, JoinHandle<std::io::Result<()>>)>,
}

impl ResultCache {
    /// Opens (or creates) the cache at `path`. Lines that do not parse (a run killed
    /// mid-write) are skipped.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let mut entries = HashMap::new();
        if path.exists() {
            let f = std::fs::File::open(&path).map_err(|e| EvalError::io(&path, e))?;
            for line in std::io::BufReader::new(f).lines() {
                let line = line.map_err(|e| EvalError::io(&path, e))?;
                if let Ok(s) = serde_json::from_str::<CachedSample>(&line) {
                    entries.insert(s.key.clone(), s);
                }
            }
        } else if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| EvalError::io(dir, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| EvalError::io(&path, e))?;
        let (tx, rx) = mpsc::channel::<CachedSample>();
        let handle = std::thread::Builder::new()
            .name("llmops-eval-cache".into())
            .spawn(move || {
                let mut w = std::io::BufWriter::new(file);
                for s in rx {
                    serde_json::to_writer(&mut w, &s)?;
                    w.write_all(b"\n")?;
                }
                w.flush()
            })
            .map_err(|e| EvalError::io(&path, e))?;
        Ok(Self {
            path,
            entries,
            writer: Some((tx, handle)),
        })
    }

    /// The cache file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Entries loaded from disk.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was loaded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The cached answer for `key`.
    pub fn get(&self, key: &str) -> Option<&CachedSample> {
        self.entries.get(key)
    }

    /// Queues an answer for writing.
    pub fn put(&self, sample: CachedSample) {
        if let Some((tx, _)) = &self.writer {
            // The writer only stops when the cache is closed.
            let _ = tx.send(sample);
        }
    }

    /// Flushes and closes the file.
    pub fn close(mut self) -> Result<()> {
        if let Some((tx, handle)) = self.writer.take() {
            drop(tx);
            match handle.join() {
                Ok(r) => r.map_err(|e| EvalError::io(&self.path, e))?,
                Err(_) => return Err(EvalError::Config("the cache writer panicked".into())),
            }
        }
        Ok(())
    }
}
