//! The file sink: an append-only, hash-chained JSON Lines log with group commit.
//!
//! # Threads and durability
//!
//! The caller encodes its event (commitments, optional redacted or encrypted content, canonical
//! serialization of every member) — on the blocking pool when that may read key files — and
//! hands the prepared record to one dedicated writer thread over a channel; it then only awaits
//! a oneshot, so no async worker ever blocks on disk I/O. The writer takes everything queued
//! (up to `batch_max_records`), assigns sequence numbers, splices in `prev`/`seq`/`v` and
//! hashes, writes the whole batch with one `write` and — depending on [`Durability`] — one
//! `fdatasync` before acknowledging:
//!
//! | mode | acknowledged when | loses on power failure |
//! |---|---|---|
//! | `per-record` | the record alone is written and fsynced | nothing acknowledged |
//! | `batched` (default) | the batch containing it is written and fsynced | nothing acknowledged |
//! | `async` | the record is sequenced in memory; written at once, fsynced every `async_sync_interval` | up to that interval |
//!
//! In `async` mode the appender sequences and seals its own record (under the lock that orders
//! the channel, so records reach the writer in sequence order) and returns its receipt at once:
//! an append costs no round trip to the writer thread. The writer only writes the sealed lines.
//! If a write or fsync fails, later appends fail; records acknowledged but not yet written are
//! lost, as that mode allows.
//!
//! # Rotation and recovery
//!
//! The active file is `PATH`; on rotation (size or age) it is renamed to
//! `<stem>.<first seq, 20 digits>.<ext>` beside it and a new `PATH` is started. The chain runs
//! across files: the first record of a new file links to the last of the previous one.
//!
//! On open, a final line without its `\n` (a write cut short by a crash) is cut off, reported
//! with `tracing::warn!` and in [`OpenReport`], and recorded in the chain itself as a system
//! event `audit_log_repaired`. A complete last line whose hash does not verify is not repaired:
//! opening fails with [`GovernError::CorruptLog`].

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use ed25519_dalek::SigningKey;
use llmops_core::traits::audit::SystemEvent;
use llmops_core::{AuditEvent, AuditReceipt, AuditSink, Error as CoreError};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::audit::checkpoint::{Checkpoint, CheckpointWriter};
use crate::audit::record::{
    ContentMode, GENESIS_PREV, PreparedRecord, RecordEncoder, RecordHeader, record_hash,
    seal_record, split_line,
};
use crate::error::{GovernError, Result};

/// When an append is acknowledged. See the [module docs](self).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Durability {
    /// Fsync each record on its own before acknowledging it.
    PerRecord,
    /// Group commit: acknowledge once the batch containing the record is fsynced.
    #[default]
    Batched,
    /// Best effort: acknowledge once sequenced; fsync periodically.
    Async,
}

/// When the active file is rotated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rotation {
    /// Rotate once the active file reaches this many bytes.
    pub max_bytes: Option<u64>,
    /// Rotate once the active file is this old (and not empty).
    pub max_age: Option<Duration>,
}

impl Rotation {
    /// Rotation by size and/or age.
    pub fn new(max_bytes: Option<u64>, max_age: Option<Duration>) -> Self {
        Self { max_bytes, max_age }
    }
}

/// When and where signed checkpoints are written.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CheckpointPolicy {
    /// The checkpoint file (keep it, or copies of it, where the log's writer cannot rewrite it).
    pub path: PathBuf,
    /// The signing key.
    pub signing_key: SigningKey,
    /// The log's name written in each checkpoint.
    pub log_id: String,
    /// Sign after this many new records...
    pub every_records: u64,
    /// ...or after this long, whichever comes first (when there is anything new).
    pub every: Duration,
}

impl CheckpointPolicy {
    /// A policy signing with `signing_key` into `path` every 1,000 records or 60 s.
    pub fn new(
        path: impl Into<PathBuf>,
        signing_key: SigningKey,
        log_id: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into(),
            signing_key,
            log_id: log_id.into(),
            every_records: 1000,
            every: Duration::from_secs(60),
        }
    }

    /// Sets the record interval (builder style).
    #[must_use]
    pub fn every_records(mut self, n: u64) -> Self {
        self.every_records = n.max(1);
        self
    }

    /// Sets the time interval (builder style).
    #[must_use]
    pub fn every(mut self, every: Duration) -> Self {
        self.every = every;
        self
    }
}

/// What opening a log found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenReport {
    /// The active file.
    pub path: PathBuf,
    /// The sequence number the next record gets.
    pub next_seq: u64,
    /// The hash the next record links to.
    pub head: String,
    /// Bytes of a torn final line that were cut off (0 when the file was whole).
    pub repaired_bytes: u64,
    /// Rotated files found beside the active one.
    pub rotated_segments: usize,
}

/// Builder of a [`FileAuditSink`].
#[derive(Debug)]
pub struct FileSinkBuilder {
    path: PathBuf,
    encoder: RecordEncoder,
    durability: Durability,
    rotation: Rotation,
    checkpoints: Option<CheckpointPolicy>,
    batch_max_records: usize,
    max_in_flight: usize,
    async_sync_interval: Duration,
}

impl FileSinkBuilder {
    /// Sets the durability mode (default [`Durability::Batched`]).
    #[must_use]
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// Sets the rotation policy (default: never rotate).
    #[must_use]
    pub fn rotation(mut self, r: Rotation) -> Self {
        self.rotation = r;
        self
    }

    /// Writes signed checkpoints (default: none).
    #[must_use]
    pub fn checkpoints(mut self, p: CheckpointPolicy) -> Self {
        self.checkpoints = Some(p);
        self
    }

    /// Most records written per group commit (default 4,096).
    #[must_use]
    pub fn batch_max_records(mut self, n: usize) -> Self {
        self.batch_max_records = n.max(1);
        self
    }

    /// Most appends waiting for the writer; further appends wait (asynchronously) for room
    /// (default 65,536).
    #[must_use]
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// How often the `async` mode fsyncs (default 1 s).
    #[must_use]
    pub fn async_sync_interval(mut self, d: Duration) -> Self {
        self.async_sync_interval = d;
        self
    }

    /// Opens (creating or continuing) the log and starts its writer thread. Does blocking
    /// file I/O: call it at startup or from a blocking context.
    pub fn open(self) -> Result<FileAuditSink> {
        let path = self.path.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| GovernError::io("create directory", dir, e))?;
        }
        let file = open_append(&path)?;
        let repaired = repair_torn_tail(&file, &path)?;
        let rotated = rotated_segments(&path)?;
        let (next_seq, head, seg_first_seq) = match last_record(&file, &path)? {
            Some((seq, hash)) => {
                let first = first_record_seq(&path)?.unwrap_or(seq);
                (seq + 1, hash, first)
            }
            None => match rotated.last() {
                Some((_, seg)) => {
                    let f = File::open(seg).map_err(|e| GovernError::io("open", seg, e))?;
                    match last_record(&f, seg)? {
                        Some((seq, hash)) => (seq + 1, hash, seq + 1),
                        None => (0, GENESIS_PREV.to_owned(), 0),
                    }
                }
                None => (0, GENESIS_PREV.to_owned(), 0),
            },
        };
        if repaired > 0 {
            tracing::warn!(
                path = %path.display(),
                bytes = repaired,
                "audit log ended with a torn line (a write cut short by a crash); cut it off"
            );
        }
        let report = OpenReport {
            path: path.clone(),
            next_seq,
            head: head.clone(),
            repaired_bytes: repaired,
            rotated_segments: rotated.len(),
        };
        let checkpoints = match self.checkpoints {
            Some(policy) => Some(CheckpointState {
                writer: CheckpointWriter::open(&policy.path)?,
                last_size: next_seq,
                last_time: Instant::now(),
                policy,
            }),
            None => None,
        };
        let seg_bytes = file
            .metadata()
            .map_err(|e| GovernError::io("stat", &path, e))?
            .len();
        let mut writer = Writer {
            path,
            file,
            seg_bytes,
            seg_first_seq,
            seg_opened: Instant::now(),
            next_seq,
            prev: head,
            durability: self.durability,
            encoder: self.encoder.clone(),
            rotation: self.rotation,
            checkpoints,
            dirty: false,
            last_sync: Instant::now(),
            async_sync_interval: self.async_sync_interval,
            failed: Arc::new(OnceLock::new()),
            buf: Vec::with_capacity(1 << 20),
        };
        if repaired > 0 {
            writer.append_system(SystemEvent::new(
                "audit_log_repaired",
                json!({"torn_bytes_cut": repaired, "next_seq": next_seq}),
            ))?;
        }
        let chain = (self.durability == Durability::Async).then(|| ChainHead {
            next_seq: writer.next_seq,
            prev: writer.prev.clone(),
        });
        let failed = writer.failed.clone();
        let (tx, rx) = mpsc::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let batch = if self.durability == Durability::PerRecord {
            1
        } else {
            self.batch_max_records
        };
        std::thread::Builder::new()
            .name("llmops-audit-writer".into())
            .spawn(move || {
                writer.run(&rx, batch);
                let _ = done_tx.send(());
            })
            .map_err(|e| GovernError::io("spawn writer thread for", &report.path, e))?;
        Ok(FileAuditSink {
            offload: matches!(self.encoder.content_mode(), ContentMode::Encrypted(_)),
            encoder: Arc::new(self.encoder),
            tx: Mutex::new(Channel {
                tx: Some(tx),
                chain,
            }),
            failed,
            permits: Arc::new(Semaphore::new(self.max_in_flight)),
            done: Mutex::new(Some(done_rx)),
            report,
        })
    }
}

/// The file audit sink. See the [module docs](self).
///
/// Dropping the sink lets the writer finish what is queued, fsync and sign a final checkpoint
/// in the background; [`FileAuditSink::close`] does the same and waits for it.
#[derive(Debug)]
pub struct FileAuditSink {
    encoder: Arc<RecordEncoder>,
    /// Encoding may read key files (encrypted content): run it on the blocking pool.
    offload: bool,
    tx: Mutex<Channel>,
    /// Why the writer stopped accepting records (set by the writer thread).
    failed: Arc<OnceLock<String>>,
    permits: Arc<Semaphore>,
    done: Mutex<Option<oneshot::Receiver<()>>>,
    report: OpenReport,
}

type Ack<T> = oneshot::Sender<std::result::Result<T, CoreError>>;

/// The writer's channel and, in `async` mode, the chain head appenders seal against.
#[derive(Debug)]
struct Channel {
    tx: Option<mpsc::Sender<Cmd>>,
    chain: Option<ChainHead>,
}

#[derive(Debug)]
struct ChainHead {
    next_seq: u64,
    prev: String,
}

/// What an append hands over: a receipt already (`async` mode) or one to wait for.
enum Handed {
    Sealed(AuditReceipt),
    Queued(oneshot::Receiver<std::result::Result<AuditReceipt, CoreError>>),
}

enum Cmd {
    Append {
        record: PreparedRecord,
        ack: Ack<AuditReceipt>,
        _permit: OwnedSemaphorePermit,
    },
    /// A line sealed by its appender (`async` mode), already acknowledged.
    Sealed {
        seq: u64,
        line: Vec<u8>,
        _permit: OwnedSemaphorePermit,
    },
    Flush {
        ack: Ack<()>,
    },
    Checkpoint {
        ack: Ack<Option<Checkpoint>>,
    },
}

fn stopped() -> CoreError {
    GovernError::WriterStopped.into()
}

impl FileAuditSink {
    /// A builder for a log at `path` whose commitments and content follow `encoder`.
    pub fn builder(path: impl Into<PathBuf>, encoder: RecordEncoder) -> FileSinkBuilder {
        FileSinkBuilder {
            path: path.into(),
            encoder,
            durability: Durability::default(),
            rotation: Rotation::default(),
            checkpoints: None,
            batch_max_records: 4096,
            max_in_flight: 65_536,
            async_sync_interval: Duration::from_secs(1),
        }
    }

    /// What opening the log found (torn-line repair, where the chain continues).
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    fn channel(&self) -> std::sync::MutexGuard<'_, Channel> {
        self.tx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn send(&self, cmd: Cmd) -> std::result::Result<(), CoreError> {
        match self.channel().tx.as_ref() {
            Some(tx) => tx.send(cmd).map_err(|_| stopped()),
            None => Err(stopped()),
        }
    }

    /// Seals `record` here (`async` mode) or queues it for the writer to seal.
    fn hand_over(
        &self,
        record: PreparedRecord,
        permit: OwnedSemaphorePermit,
    ) -> std::result::Result<Handed, CoreError> {
        let mut guard = self.channel();
        let Channel { tx, chain } = &mut *guard;
        let Some(tx) = tx.as_ref() else {
            return Err(stopped());
        };
        let Some(head) = chain.as_mut() else {
            let (ack, rx) = oneshot::channel();
            tx.send(Cmd::Append {
                record,
                ack,
                _permit: permit,
            })
            .map_err(|_| stopped())?;
            return Ok(Handed::Queued(rx));
        };
        if let Some(f) = self.failed.get() {
            return Err(CoreError::internal(format!(
                "audit log failed earlier: {f}"
            )));
        }
        let mut line = Vec::with_capacity(1024);
        let hash = record.seal(head.next_seq, &head.prev, &mut line);
        let hex = hash.to_hex();
        let seq = head.next_seq;
        tx.send(Cmd::Sealed {
            seq,
            line,
            _permit: permit,
        })
        .map_err(|_| stopped())?;
        head.next_seq += 1;
        head.prev.clear();
        head.prev.push_str(hex.as_str());
        Ok(Handed::Sealed(AuditReceipt::new(seq, hex.as_str())))
    }

    /// Makes everything appended so far durable and signs a checkpoint now (if checkpoints are
    /// configured and there is anything new). Returns the checkpoint written.
    pub async fn checkpoint(&self) -> std::result::Result<Option<Checkpoint>, CoreError> {
        let (ack, rx) = oneshot::channel();
        self.send(Cmd::Checkpoint { ack })?;
        rx.await.map_err(|_| stopped())?
    }

    /// Stops the writer after it has written, fsynced and checkpointed everything queued, and
    /// waits for it.
    pub async fn close(&self) -> std::result::Result<(), CoreError> {
        let tx = self.channel().tx.take();
        drop(tx);
        let done = self
            .done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(done) = done {
            let _ = done.await;
        }
        Ok(())
    }
}

#[async_trait]
impl AuditSink for FileAuditSink {
    async fn append(&self, event: AuditEvent) -> llmops_core::Result<AuditReceipt> {
        // Encoding (commitments, redaction, serialization) runs here, in parallel across
        // callers; the writer thread only sequences, hashes and writes.
        let record = if self.offload {
            let encoder = self.encoder.clone();
            tokio::task::spawn_blocking(move || encoder.prepare(&event))
                .await
                .map_err(|e| CoreError::internal(format!("audit encoding task failed: {e}")))?
        } else {
            self.encoder.prepare(&event)
        }
        .map_err(CoreError::from)?;
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| stopped())?;
        match self.hand_over(record, permit)? {
            Handed::Sealed(receipt) => Ok(receipt),
            Handed::Queued(rx) => rx.await.map_err(|_| stopped())?,
        }
    }

    async fn flush(&self) -> llmops_core::Result<()> {
        let (ack, rx) = oneshot::channel();
        self.send(Cmd::Flush { ack })?;
        rx.await.map_err(|_| stopped())?
    }
}

struct CheckpointState {
    writer: CheckpointWriter,
    policy: CheckpointPolicy,
    last_size: u64,
    last_time: Instant,
}

struct Writer {
    path: PathBuf,
    file: File,
    seg_bytes: u64,
    seg_first_seq: u64,
    seg_opened: Instant,
    next_seq: u64,
    prev: String,
    durability: Durability,
    encoder: RecordEncoder,
    rotation: Rotation,
    checkpoints: Option<CheckpointState>,
    dirty: bool,
    last_sync: Instant,
    async_sync_interval: Duration,
    /// Why the log stopped accepting records; shared with the appenders that seal their own
    /// records (`async` mode).
    failed: Arc<OnceLock<String>>,
    buf: Vec<u8>,
}

impl Writer {
    fn run(&mut self, rx: &mpsc::Receiver<Cmd>, batch_max: usize) {
        let mut cmds = Vec::with_capacity(batch_max);
        loop {
            let first = match self.next_wakeup() {
                Some(d) => rx.recv_timeout(d),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match first {
                Ok(cmd) => cmds.push(cmd),
                Err(RecvTimeoutError::Timeout) => {
                    self.housekeeping(false);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while cmds.len() < batch_max {
                match rx.try_recv() {
                    Ok(cmd) => cmds.push(cmd),
                    Err(_) => break,
                }
            }
            self.process(&mut cmds);
        }
        // Shutdown: make everything durable and pin it with a final checkpoint.
        self.sync();
        self.housekeeping(true);
    }

    /// How long the writer may sleep before periodic work is due.
    fn next_wakeup(&self) -> Option<Duration> {
        let mut next: Option<Duration> = None;
        let mut consider = |d: Duration| next = Some(next.map_or(d, |n| n.min(d)));
        if self.dirty && self.durability == Durability::Async {
            consider(
                self.async_sync_interval
                    .saturating_sub(self.last_sync.elapsed()),
            );
        }
        if let Some(cp) = &self.checkpoints
            && self.next_seq > cp.last_size
        {
            consider(cp.policy.every.saturating_sub(cp.last_time.elapsed()));
        }
        if let Some(age) = self.rotation.max_age
            && self.seg_bytes > 0
        {
            consider(age.saturating_sub(self.seg_opened.elapsed()));
        }
        next.map(|d| d.max(Duration::from_millis(1)))
    }

    fn append_system(&mut self, event: SystemEvent) -> Result<()> {
        let body = self.encoder.encode(&AuditEvent::System(event))?;
        self.buf.clear();
        let hash = seal_record(body, self.next_seq, &self.prev, &mut self.buf);
        self.file
            .write_all(&self.buf)
            .map_err(|e| GovernError::io("write", &self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| GovernError::io("fsync", &self.path, e))?;
        self.seg_bytes += self.buf.len() as u64;
        self.next_seq += 1;
        self.prev = hash.to_hex().to_string();
        Ok(())
    }

    fn process(&mut self, cmds: &mut Vec<Cmd>) {
        let start_len = self.seg_bytes;
        let start_seq = self.next_seq;
        let start_prev = self.prev.clone();
        self.buf.clear();
        let mut pending: Vec<(Ack<AuditReceipt>, AuditReceipt)> = Vec::new();
        let mut flushes: Vec<Ack<()>> = Vec::new();
        let mut checkpoints: Vec<Ack<Option<Checkpoint>>> = Vec::new();
        for cmd in cmds.drain(..) {
            match cmd {
                Cmd::Append {
                    record,
                    ack,
                    _permit,
                } => {
                    if let Some(f) = self.failed.get() {
                        let _ = ack.send(Err(CoreError::internal(format!(
                            "audit log failed earlier: {f}"
                        ))));
                        continue;
                    }
                    let hash = record.seal(self.next_seq, &self.prev, &mut self.buf);
                    let hex = hash.to_hex().to_string();
                    let receipt = AuditReceipt::new(self.next_seq, hex.clone());
                    self.next_seq += 1;
                    self.prev = hex;
                    if self.durability == Durability::Async {
                        let _ = ack.send(Ok(receipt));
                    } else {
                        pending.push((ack, receipt));
                    }
                }
                Cmd::Sealed { seq, line, _permit } => {
                    // Acknowledged by its appender already; after a failure it is lost (the
                    // appenders stop as soon as they see the failure).
                    if self.failed.get().is_some() {
                        continue;
                    }
                    debug_assert_eq!(seq, self.next_seq, "sealed records arrive in order");
                    if let Some((hash, _)) = line.strip_suffix(b"\n").and_then(split_line) {
                        self.prev.clear();
                        self.prev.push_str(hash);
                    }
                    self.next_seq = seq + 1;
                    self.buf.extend_from_slice(&line);
                }
                Cmd::Flush { ack } => flushes.push(ack),
                Cmd::Checkpoint { ack } => checkpoints.push(ack),
            }
        }
        if !self.buf.is_empty() {
            match self.file.write_all(&self.buf) {
                Ok(()) => {
                    self.seg_bytes += self.buf.len() as u64;
                    self.dirty = true;
                }
                Err(e) => {
                    let msg = format!("write {}: {e}", self.path.display());
                    tracing::error!(error = %msg, "audit write failed; rolling the batch back");
                    // Undo a partial write so the file ends on a whole record.
                    if let Err(e2) = self.file.set_len(start_len) {
                        self.fail(format!("{msg}; rollback failed: {e2}"));
                    } else if self.durability == Durability::Async {
                        // Receipts were already given for these records: never reuse their
                        // sequence numbers.
                        self.fail(format!("{msg}; acknowledged records were lost"));
                    }
                    self.next_seq = start_seq;
                    self.prev = start_prev;
                    for (ack, _) in pending.drain(..) {
                        let _ = ack.send(Err(CoreError::internal(msg.clone())));
                    }
                }
            }
        }
        let need_sync = !pending.is_empty() || !flushes.is_empty() || !checkpoints.is_empty();
        let sync_err = if need_sync { self.sync() } else { None };
        for (ack, receipt) in pending {
            let _ = ack.send(match &sync_err {
                None => Ok(receipt),
                Some(e) => Err(CoreError::internal(e.clone())),
            });
        }
        for ack in flushes {
            let _ = ack.send(match &sync_err {
                None => Ok(()),
                Some(e) => Err(CoreError::internal(e.clone())),
            });
        }
        for ack in checkpoints {
            let r = match &sync_err {
                None => self.write_checkpoint().map_err(CoreError::from),
                Some(e) => Err(CoreError::internal(e.clone())),
            };
            let _ = ack.send(r);
        }
        self.housekeeping(false);
    }

    /// Stops accepting records, for `msg` (the first failure is the one reported).
    fn fail(&self, msg: String) {
        let _ = self.failed.set(msg);
    }

    /// Fsyncs if anything is unsynced; returns the error message on failure (after which the
    /// log refuses further appends: what reached the disk is unknown).
    fn sync(&mut self) -> Option<String> {
        if !self.dirty {
            return self.failed.get().cloned();
        }
        match self.file.sync_data() {
            Ok(()) => {
                self.dirty = false;
                self.last_sync = Instant::now();
                None
            }
            Err(e) => {
                let msg = format!("fsync {}: {e}", self.path.display());
                tracing::error!(error = %msg, "audit fsync failed; the log stops accepting records");
                self.fail(msg.clone());
                Some(msg)
            }
        }
    }

    fn housekeeping(&mut self, closing: bool) {
        if self.dirty
            && self.durability == Durability::Async
            && (closing || self.last_sync.elapsed() >= self.async_sync_interval)
        {
            self.sync();
        }
        let due = match &self.checkpoints {
            Some(cp) => {
                self.next_seq > cp.last_size
                    && (closing
                        || self.next_seq - cp.last_size >= cp.policy.every_records
                        || cp.last_time.elapsed() >= cp.policy.every)
            }
            None => false,
        };
        if due && let Err(e) = self.write_checkpoint() {
            tracing::error!(error = %e, "writing an audit checkpoint failed");
        }
        let rotate = self.seg_bytes > 0
            && (self.rotation.max_bytes.is_some_and(|m| self.seg_bytes >= m)
                || self
                    .rotation
                    .max_age
                    .is_some_and(|a| self.seg_opened.elapsed() >= a));
        if rotate
            && !closing
            && let Err(e) = self.rotate()
        {
            tracing::error!(error = %e, "rotating the audit log failed; continuing in the same file");
        }
    }

    fn write_checkpoint(&mut self) -> Result<Option<Checkpoint>> {
        if let Some(e) = self.sync() {
            return Err(GovernError::CorruptLog {
                path: self.path.clone(),
                reason: e,
            });
        }
        let Some(cp) = self.checkpoints.as_mut() else {
            return Ok(None);
        };
        if self.next_seq == 0 || self.next_seq == cp.last_size {
            return Ok(None);
        }
        let checkpoint = Checkpoint::sign(
            &cp.policy.signing_key,
            &cp.policy.log_id,
            self.next_seq,
            &self.prev,
            SystemTime::now(),
        );
        cp.writer.append(&checkpoint)?;
        cp.last_size = self.next_seq;
        cp.last_time = Instant::now();
        Ok(Some(checkpoint))
    }

    fn rotate(&mut self) -> Result<()> {
        if let Some(e) = self.sync() {
            return Err(GovernError::CorruptLog {
                path: self.path.clone(),
                reason: e,
            });
        }
        let target = segment_path(&self.path, self.seg_first_seq);
        fs::rename(&self.path, &target).map_err(|e| GovernError::io("rename", &self.path, e))?;
        sync_dir(&self.path);
        self.file = open_append(&self.path)?;
        sync_dir(&self.path);
        self.seg_bytes = 0;
        self.seg_first_seq = self.next_seq;
        self.seg_opened = Instant::now();
        tracing::info!(rotated = %target.display(), "rotated the audit log");
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .map_err(|e| GovernError::io("open", path, e))
}

fn sync_dir(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// The path a rotated segment starting at `first_seq` gets: `<stem>.<first_seq:020>.<ext>`.
pub fn segment_path(active: &Path, first_seq: u64) -> PathBuf {
    let name = active
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rotated = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}.{first_seq:020}.{ext}"),
        _ => format!("{name}.{first_seq:020}"),
    };
    active.with_file_name(rotated)
}

/// The rotated segments beside `active`, ordered by first sequence number.
pub fn rotated_segments(active: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let name = active
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (format!("{s}."), format!(".{e}")),
        _ => (format!("{name}."), String::new()),
    };
    let dir = match active.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut out = Vec::new();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(GovernError::io("list", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| GovernError::io("list", &dir, e))?;
        let fname = entry.file_name().to_string_lossy().into_owned();
        if let Some(mid) = fname.strip_prefix(&stem).and_then(|r| r.strip_suffix(&ext))
            && mid.len() == 20
            && let Ok(seq) = mid.parse::<u64>()
        {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Every file of the log whose active file is `active`, in chain order (rotated segments,
/// then the active file if it exists).
pub fn log_files(active: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = rotated_segments(active)?
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    if active.exists() {
        files.push(active.to_path_buf());
    }
    Ok(files)
}

/// Cuts a final line lacking its `\n` from `file`; returns how many bytes were cut.
pub(crate) fn repair_torn_tail(file: &File, path: &Path) -> Result<u64> {
    let len = file
        .metadata()
        .map_err(|e| GovernError::io("stat", path, e))?
        .len();
    if len == 0 {
        return Ok(0);
    }
    let mut f = file;
    let mut last = [0u8; 1];
    f.seek(SeekFrom::Start(len - 1))
        .map_err(|e| GovernError::io("seek", path, e))?;
    f.read_exact(&mut last)
        .map_err(|e| GovernError::io("read", path, e))?;
    if last[0] == b'\n' {
        return Ok(0);
    }
    let keep = match find_last_newline(file, path, len)? {
        Some(pos) => pos + 1,
        None => 0,
    };
    file.set_len(keep)
        .map_err(|e| GovernError::io("truncate", path, e))?;
    file.sync_all()
        .map_err(|e| GovernError::io("fsync", path, e))?;
    Ok(len - keep)
}

/// Position of the last `\n` strictly before `end`.
fn find_last_newline(file: &File, path: &Path, end: u64) -> Result<Option<u64>> {
    let mut f = file;
    let mut pos = end;
    let mut buf = vec![0u8; 64 * 1024];
    while pos > 0 {
        let n = usize::try_from(pos.min(buf.len() as u64)).unwrap_or(buf.len());
        pos -= n as u64;
        f.seek(SeekFrom::Start(pos))
            .map_err(|e| GovernError::io("seek", path, e))?;
        f.read_exact(&mut buf[..n])
            .map_err(|e| GovernError::io("read", path, e))?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(Some(pos + i as u64));
        }
    }
    Ok(None)
}

fn parse_verified(line: &[u8], path: &Path) -> Result<(u64, String)> {
    let corrupt = |reason: &str| GovernError::CorruptLog {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    };
    let (hash, record) =
        split_line(line).ok_or_else(|| corrupt("the last line is not an audit record"))?;
    if record_hash(record).to_hex().as_str() != hash {
        return Err(corrupt(
            "the last record's hash does not verify; run `llmops audit verify`",
        ));
    }
    let header =
        RecordHeader::scan(record).ok_or_else(|| corrupt("the last record does not parse"))?;
    Ok((header.seq, hash.to_owned()))
}

/// The sequence number and hash of the last record of a file that ends with `\n`.
fn last_record(file: &File, path: &Path) -> Result<Option<(u64, String)>> {
    let len = file
        .metadata()
        .map_err(|e| GovernError::io("stat", path, e))?
        .len();
    if len == 0 {
        return Ok(None);
    }
    let start = find_last_newline(file, path, len - 1)?.map_or(0, |p| p + 1);
    let mut line = vec![0u8; usize::try_from(len - 1 - start).unwrap_or(0)];
    let mut f = file;
    f.seek(SeekFrom::Start(start))
        .map_err(|e| GovernError::io("seek", path, e))?;
    f.read_exact(&mut line)
        .map_err(|e| GovernError::io("read", path, e))?;
    parse_verified(&line, path).map(Some)
}

fn first_record_seq(path: &Path) -> Result<Option<u64>> {
    use std::io::BufRead;
    let f = File::open(path).map_err(|e| GovernError::io("open", path, e))?;
    let mut line = Vec::new();
    std::io::BufReader::new(f)
        .read_until(b'\n', &mut line)
        .map_err(|e| GovernError::io("read", path, e))?;
    if line.last() != Some(&b'\n') {
        return Ok(None);
    }
    line.pop();
    parse_verified(&line, path).map(|(seq, _)| Some(seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::keys::CommitmentKey;
    use llmops_core::traits::audit::RequestAudit;

    fn encoder() -> RecordEncoder {
        RecordEncoder::new(CommitmentKey::from_bytes([3; 32]))
    }

    fn event(i: usize) -> AuditEvent {
        AuditEvent::Request(Box::new(RequestAudit::new(
            format!("req-{i}").into(),
            "t".into(),
            "m",
        )))
    }

    #[tokio::test]
    async fn receipts_are_sequential_and_the_chain_continues_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let sink = FileAuditSink::builder(&path, encoder()).open().unwrap();
        for i in 0..5 {
            assert_eq!(sink.append(event(i)).await.unwrap().seq, i as u64);
        }
        sink.close().await.unwrap();
        assert!(
            sink.append(event(9)).await.is_err(),
            "closed sink refuses appends"
        );
        let sink = FileAuditSink::builder(&path, encoder()).open().unwrap();
        assert_eq!(sink.open_report().next_seq, 5);
        assert_eq!(sink.append(event(5)).await.unwrap().seq, 5);
        sink.close().await.unwrap();
        let report = crate::audit::verify::verify_log(&path, &Default::default()).unwrap();
        assert!(report.damage.is_none(), "{report:?}");
        assert_eq!(report.records, 6);
    }

    /// `async` mode: appenders seal their own records; concurrent appends across rotations
    /// still form one chain, and each receipt names its stored record.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_appenders_seal_one_chain_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let sink = Arc::new(
            FileAuditSink::builder(&path, encoder())
                .durability(Durability::Async)
                .rotation(Rotation {
                    max_bytes: Some(4096),
                    max_age: None,
                })
                .open()
                .unwrap(),
        );
        let tasks: Vec<_> = (0..8)
            .map(|w| {
                let sink = sink.clone();
                tokio::spawn(async move {
                    let mut receipts = Vec::new();
                    for i in 0..50 {
                        receipts.push(sink.append(event(w * 1000 + i)).await.unwrap());
                    }
                    receipts
                })
            })
            .collect();
        let mut receipts = Vec::new();
        for t in tasks {
            receipts.extend(t.await.unwrap());
        }
        sink.flush().await.unwrap();
        sink.close().await.unwrap();
        receipts.sort_by_key(|r| r.seq);
        let seqs: Vec<u64> = receipts.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (0..400).collect::<Vec<u64>>());
        let report = crate::audit::verify::verify_log(&path, &Default::default()).unwrap();
        assert!(report.damage.is_none(), "{report:?}");
        assert_eq!(report.records, 400);
        // Every receipt's hash is the stored hash of its record.
        let mut stored = std::collections::HashMap::new();
        let mut files = 0;
        for entry in fs::read_dir(dir.path()).unwrap() {
            files += 1;
            let text = fs::read(entry.unwrap().path()).unwrap();
            for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let (hash, rec) = split_line(line).unwrap();
                let header = RecordHeader::scan(rec).unwrap();
                stored.insert(header.seq, hash.to_owned());
            }
        }
        assert!(files > 2, "rotated into several files: {files}");
        assert_eq!(stored.len(), 400);
        for r in &receipts {
            assert_eq!(stored.get(&r.seq), Some(&r.hash), "seq {}", r.seq);
        }
        let reopened = FileAuditSink::builder(&path, encoder())
            .durability(Durability::Async)
            .open()
            .unwrap();
        assert_eq!(reopened.open_report().next_seq, 400);
        assert_eq!(reopened.append(event(7)).await.unwrap().seq, 400);
        reopened.close().await.unwrap();
        let report = crate::audit::verify::verify_log(&path, &Default::default()).unwrap();
        assert!(report.damage.is_none(), "{report:?}");
    }

    #[tokio::test]
    async fn torn_tail_is_repaired_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let sink = FileAuditSink::builder(&path, encoder()).open().unwrap();
        for i in 0..3 {
            sink.append(event(i)).await.unwrap();
        }
        sink.close().await.unwrap();
        let whole = fs::read(&path).unwrap();
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"hash\":\"abc")
            .unwrap();
        let sink = FileAuditSink::builder(&path, encoder()).open().unwrap();
        assert_eq!(sink.open_report().repaired_bytes, 12);
        assert_eq!(sink.open_report().next_seq, 3);
        sink.close().await.unwrap();
        let after = fs::read(&path).unwrap();
        assert!(after.starts_with(&whole));
        let text = String::from_utf8(after[whole.len()..].to_vec()).unwrap();
        assert!(text.contains("audit_log_repaired"), "{text}");
        let report = crate::audit::verify::verify_log(&path, &Default::default()).unwrap();
        assert!(report.damage.is_none(), "{report:?}");
        assert_eq!(report.records, 4);
    }

    #[tokio::test]
    async fn a_damaged_last_record_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let sink = FileAuditSink::builder(&path, encoder()).open().unwrap();
        sink.append(event(0)).await.unwrap();
        sink.close().await.unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 10] ^= 1;
        fs::write(&path, bytes).unwrap();
        let err = FileAuditSink::builder(&path, encoder()).open().unwrap_err();
        assert!(matches!(err, GovernError::CorruptLog { .. }), "{err}");
    }

    #[tokio::test]
    async fn rotation_keeps_one_chain_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let sink = FileAuditSink::builder(&path, encoder())
            .rotation(Rotation::new(Some(2000), None))
            .batch_max_records(1)
            .open()
            .unwrap();
        for i in 0..40 {
            sink.append(event(i)).await.unwrap();
        }
        sink.close().await.unwrap();
        let segments = rotated_segments(&path).unwrap();
        assert!(segments.len() >= 3, "{segments:?}");
        assert_eq!(segments[0].0, 0);
        let report = crate::audit::verify::verify_log(&path, &Default::default()).unwrap();
        assert!(report.damage.is_none(), "{report:?}");
        assert_eq!(report.records, 40);
        // Reopening continues the chain in the active file.
        let sink = FileAuditSink::builder(&path, encoder())
            .rotation(Rotation::new(Some(2000), None))
            .open()
            .unwrap();
        assert_eq!(sink.append(event(40)).await.unwrap().seq, 40);
        sink.close().await.unwrap();
        let report = crate::audit::verify::verify_log(&path, &Default::default()).unwrap();
        assert!(report.damage.is_none(), "{report:?}");
        // Deleting a middle segment is detected.
        fs::remove_file(&segments[1].1).unwrap();
        let report = crate::audit::verify::verify_log(&path, &Default::default()).unwrap();
        let damage = report.damage.unwrap();
        assert_eq!(damage.kind, crate::audit::verify::DamageKind::Deleted);
        assert_eq!(damage.seq, segments[1].0);
    }

    #[tokio::test]
    async fn checkpoints_are_written_every_n_records_and_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let cp_path = dir.path().join("cp.jsonl");
        let key = SigningKey::from_bytes(&[5; 32]);
        let sink = FileAuditSink::builder(&path, encoder())
            .checkpoints(CheckpointPolicy::new(&cp_path, key.clone(), "test").every_records(10))
            .batch_max_records(1)
            .open()
            .unwrap();
        for i in 0..25 {
            sink.append(event(i)).await.unwrap();
        }
        sink.close().await.unwrap();
        let cps: Vec<Checkpoint> = crate::audit::checkpoint::read_checkpoints(&cp_path)
            .unwrap()
            .into_iter()
            .map(|c| c.unwrap())
            .collect();
        let sizes: Vec<u64> = cps.iter().map(|c| c.size).collect();
        assert_eq!(sizes, vec![10, 20, 25]);
        assert!(cps.iter().all(|c| c.verify(&key.verifying_key())));
    }

    #[test]
    fn segment_names() {
        assert_eq!(
            segment_path(Path::new("/a/llmops.jsonl"), 42),
            PathBuf::from("/a/llmops.00000000000000000042.jsonl")
        );
        assert_eq!(
            segment_path(Path::new("log"), 1),
            PathBuf::from("log.00000000000000000001")
        );
    }
}
