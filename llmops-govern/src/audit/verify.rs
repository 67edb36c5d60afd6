//! The streaming verifier.
//!
//! [`Verifier`] is fed one stored line at a time and keeps O(1) state besides the list of
//! checkpoints, so memory stays flat on logs of any size. It checks every record's hash and
//! every link (never just the ends of a segment), the sequence numbers, and every checkpoint's
//! signature and head, and stops at the first damage:
//!
//! | kind | what was seen |
//! |---|---|
//! | [`Modified`](DamageKind::Modified) | a record whose bytes do not match its hash, that does not parse, or whose successor does not link to it |
//! | [`Deleted`](DamageKind::Deleted) | a sequence number is missing and never appears later |
//! | [`Reordered`](DamageKind::Reordered) | a sequence number is missing here but appears later |
//! | [`Inserted`](DamageKind::Inserted) | a sequence number appears a second time (a forged record with a recomputed hash) |
//! | [`Truncated`](DamageKind::Truncated) | the log ends before the size pinned by a valid checkpoint |
//! | [`Rewritten`](DamageKind::Rewritten) | a record's hash differs from the head a valid checkpoint signed for that size |
//! | [`BadSignature`](DamageKind::BadSignature) | a checkpoint whose signature does not verify (forged or edited) |
//! | [`TornTail`](DamageKind::TornTail) | the last line is incomplete (a crash mid-write; opening the sink repairs it) |

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;

use crate::audit::checkpoint::{Checkpoint, read_checkpoints};
use crate::audit::file::log_files;
use crate::audit::record::{FORMAT_VERSION, GENESIS_PREV, RecordHeader, record_hash, split_line};
use crate::canonical;
use crate::error::{GovernError, Result};

/// The kind of damage found. See the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DamageKind {
    /// A record was changed.
    Modified,
    /// A record is missing.
    Deleted,
    /// A record appears more than once.
    Inserted,
    /// Records are out of order.
    Reordered,
    /// The log is shorter than a checkpoint says it was.
    Truncated,
    /// The history differs from what a checkpoint signed.
    Rewritten,
    /// A checkpoint's signature does not verify.
    BadSignature,
    /// The last line is incomplete.
    TornTail,
}

impl DamageKind {
    /// The kind's stable name (`modified`, `deleted`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Modified => "modified",
            Self::Deleted => "deleted",
            Self::Inserted => "inserted",
            Self::Reordered => "reordered",
            Self::Truncated => "truncated",
            Self::Rewritten => "rewritten",
            Self::BadSignature => "bad_signature",
            Self::TornTail => "torn_tail",
        }
    }
}

impl fmt::Display for DamageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first damage found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Damage {
    /// The kind.
    pub kind: DamageKind,
    /// The first bad sequence number.
    pub seq: u64,
    /// What exactly was seen.
    pub detail: String,
    /// Where (file and 1-based line), when known.
    pub location: Option<(PathBuf, u64)>,
}

impl Damage {
    fn new(kind: DamageKind, seq: u64, detail: impl Into<String>) -> Self {
        Self {
            kind,
            seq,
            detail: detail.into(),
            location: None,
        }
    }
}

/// What to check besides the chain.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct VerifyOptions {
    /// Checkpoints to check the log against (needs [`VerifyOptions::public_key`]).
    pub checkpoints: Option<PathBuf>,
    /// The key checkpoints must be signed with.
    pub public_key: Option<VerifyingKey>,
    /// Accept a log whose first record is not `seq 0` (older segments removed by retention).
    /// The first record's link is then taken on trust.
    pub allow_pruned_prefix: bool,
    /// Also check that every record is in canonical form (slower).
    pub strict: bool,
}

impl VerifyOptions {
    /// Checks checkpoints in `path` signed by `key` (builder style).
    #[must_use]
    pub fn with_checkpoints(mut self, path: impl Into<PathBuf>, key: VerifyingKey) -> Self {
        self.checkpoints = Some(path.into());
        self.public_key = Some(key);
        self
    }

    /// Sets [`VerifyOptions::strict`] (builder style).
    #[must_use]
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Sets [`VerifyOptions::allow_pruned_prefix`] (builder style).
    #[must_use]
    pub fn allow_pruned_prefix(mut self, allow: bool) -> Self {
        self.allow_pruned_prefix = allow;
        self
    }
}

/// The outcome of a verification.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Records checked (up to the damage, if any).
    pub records: u64,
    /// First sequence number seen.
    pub first_seq: Option<u64>,
    /// Last good sequence number.
    pub last_seq: Option<u64>,
    /// Hash of the last good record.
    pub head: Option<String>,
    /// Files read.
    pub files: usize,
    /// Checkpoints whose signature and head were checked.
    pub checkpoints_verified: usize,
    /// The first damage, or `None` when the log is intact.
    pub damage: Option<Damage>,
}

impl VerifyReport {
    /// Whether the log is intact.
    pub fn is_intact(&self) -> bool {
        self.damage.is_none()
    }

    /// A one-line summary.
    pub fn summary(&self) -> String {
        match &self.damage {
            None => format!(
                "OK: {} records (seq {}..={}), {} checkpoints verified, {} file(s), head {}",
                self.records,
                self.first_seq.map_or("-".into(), |s| s.to_string()),
                self.last_seq.map_or("-".into(), |s| s.to_string()),
                self.checkpoints_verified,
                self.files,
                self.head.as_deref().unwrap_or("-"),
            ),
            Some(d) => {
                let at = d
                    .location
                    .as_ref()
                    .map(|(p, l)| format!(" at {}:{l}", p.display()))
                    .unwrap_or_default();
                format!(
                    "DAMAGED: first bad seq {}: {} ({}){at}",
                    d.seq, d.kind, d.detail
                )
            }
        }
    }
}

enum Mode {
    Checking,
    /// A sequence number was skipped: is it further down (reordered) or gone (deleted)?
    Searching {
        wanted: u64,
        location: Option<(PathBuf, u64)>,
    },
    /// A record did not link to its predecessor: is it a duplicate seq (inserted) or was the
    /// predecessor replaced (modified)?
    Linking {
        seq: u64,
        location: Option<(PathBuf, u64)>,
    },
    Done,
}

/// The streaming verifier: feed it lines with [`Verifier::feed`], then call
/// [`Verifier::finish`].
pub struct Verifier {
    expected: u64,
    last_hash: String,
    records: u64,
    first_seq: Option<u64>,
    checkpoints: Vec<Checkpoint>,
    next_cp: usize,
    checkpoints_verified: usize,
    bad_checkpoint: Option<Damage>,
    options: VerifyOptions,
    mode: Mode,
    damage: Option<Damage>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("expected", &self.expected)
            .field("records", &self.records)
            .finish()
    }
}

impl Verifier {
    /// A verifier with `options`; reads and checks the checkpoint file's signatures now.
    pub fn new(options: VerifyOptions) -> Result<Self> {
        let mut checkpoints = Vec::new();
        let mut bad: Option<Damage> = None;
        if let Some(path) = &options.checkpoints {
            let key = options.public_key.ok_or_else(|| {
                GovernError::Config("checking checkpoints needs the public key".into())
            })?;
            for (i, cp) in read_checkpoints(path)?.into_iter().enumerate() {
                let damage = match cp {
                    Ok(cp) if cp.verify(&key) => {
                        checkpoints.push(cp);
                        None
                    }
                    Ok(cp) => Some(Damage {
                        kind: DamageKind::BadSignature,
                        seq: cp.size.saturating_sub(1),
                        detail: format!(
                            "checkpoint for size {} is not validly signed by this key",
                            cp.size
                        ),
                        location: Some((path.clone(), i as u64 + 1)),
                    }),
                    Err(e) => Some(Damage {
                        kind: DamageKind::BadSignature,
                        seq: 0,
                        detail: e,
                        location: Some((path.clone(), i as u64 + 1)),
                    }),
                };
                if let Some(d) = damage
                    && bad.as_ref().is_none_or(|b| d.seq < b.seq)
                {
                    bad = Some(d);
                }
            }
            checkpoints.sort_by_key(|c| c.size);
        }
        Ok(Self {
            expected: 0,
            last_hash: GENESIS_PREV.to_owned(),
            records: 0,
            first_seq: None,
            checkpoints,
            next_cp: 0,
            checkpoints_verified: 0,
            bad_checkpoint: bad,
            options,
            mode: Mode::Checking,
            damage: None,
        })
    }

    fn stop(&mut self, mut d: Damage, location: Option<(&Path, u64)>) -> bool {
        if d.location.is_none() {
            d.location = location.map(|(p, l)| (p.to_path_buf(), l));
        }
        self.damage = Some(d);
        self.mode = Mode::Done;
        false
    }

    /// Checks one stored line (without its `\n`). `location` names it in reports. Returns
    /// `false` once damage was found and further lines are not needed.
    pub fn feed(&mut self, line: &[u8], location: Option<(&Path, u64)>) -> bool {
        let hash_ok = line_hash_ok(line);
        self.feed_checked(line, hash_ok, location)
    }

    /// [`Verifier::feed`] for a line whose hash was already checked (`hash_ok`), e.g. on
    /// another thread.
    pub fn feed_checked(
        &mut self,
        line: &[u8],
        hash_ok: bool,
        location: Option<(&Path, u64)>,
    ) -> bool {
        match std::mem::replace(&mut self.mode, Mode::Checking) {
            Mode::Done => {
                self.mode = Mode::Done;
                return false;
            }
            Mode::Searching {
                wanted,
                location: at,
            } => {
                if seq_of(line) == Some(wanted) {
                    let d = Damage::new(
                        DamageKind::Reordered,
                        wanted,
                        format!("record {wanted} is not where it belongs (found later)"),
                    );
                    return self.stop(d, borrowed(&at));
                }
                self.mode = Mode::Searching {
                    wanted,
                    location: at,
                };
                return true;
            }
            Mode::Linking { seq, location: at } => {
                let d = if seq_of(line) == Some(seq) {
                    Damage::new(
                        DamageKind::Inserted,
                        seq,
                        format!("two records claim seq {seq}"),
                    )
                } else {
                    Damage::new(
                        DamageKind::Modified,
                        seq.saturating_sub(1),
                        format!(
                            "record {seq} does not link to record {}: that record was replaced",
                            seq.saturating_sub(1)
                        ),
                    )
                };
                return self.stop(d, borrowed(&at));
            }
            Mode::Checking => {}
        }
        let expected = self.expected;
        let Some((hash, record)) = split_line(line) else {
            let d = Damage::new(
                DamageKind::Modified,
                expected,
                "line is not a well-formed record",
            );
            return self.stop(d, location);
        };
        if !hash_ok {
            let d = Damage::new(
                DamageKind::Modified,
                expected,
                "record bytes do not match its hash",
            );
            return self.stop(d, location);
        }
        let Some(header) = RecordHeader::scan(record) else {
            let d = Damage::new(
                DamageKind::Modified,
                expected,
                "record is not a canonical object with one `v`, `seq` and `prev`",
            );
            return self.stop(d, location);
        };
        if header.v != FORMAT_VERSION {
            let d = Damage::new(
                DamageKind::Modified,
                header.seq,
                format!("unsupported format version {}", header.v),
            );
            return self.stop(d, location);
        }
        if self.options.strict {
            let canonical_ok = serde_json::from_slice::<serde_json::Value>(record)
                .map(|v| canonical::to_canonical_vec(&v) == record)
                .unwrap_or(false);
            if !canonical_ok {
                let d = Damage::new(
                    DamageKind::Modified,
                    header.seq,
                    "record is not in canonical form",
                );
                return self.stop(d, location);
            }
        }
        if self.first_seq.is_none() {
            self.first_seq = Some(header.seq);
            if header.seq != 0 {
                if !self.options.allow_pruned_prefix {
                    let d = Damage::new(
                        DamageKind::Deleted,
                        0,
                        format!("the log starts at seq {} instead of 0", header.seq),
                    );
                    return self.stop(d, location);
                }
                self.expected = header.seq;
                self.last_hash = header.prev.to_owned();
                // Checkpoints for sizes before the retained part cannot be checked.
                while self.next_cp < self.checkpoints.len()
                    && self.checkpoints[self.next_cp].size <= header.seq
                {
                    self.next_cp += 1;
                }
            }
        }
        let expected = self.expected;
        if header.seq > expected {
            self.mode = Mode::Searching {
                wanted: expected,
                location: owned(location),
            };
            return true;
        }
        if header.seq < expected {
            let seq = header.seq;
            let d = Damage::new(
                DamageKind::Inserted,
                seq,
                format!("seq {seq} appears again after seq {}", expected - 1),
            );
            return self.stop(d, location);
        }
        if header.prev != self.last_hash {
            if expected == 0 {
                let d = Damage::new(
                    DamageKind::Modified,
                    0,
                    "first record does not start from the genesis link",
                );
                return self.stop(d, location);
            }
            self.mode = Mode::Linking {
                seq: expected,
                location: owned(location),
            };
            return true;
        }
        while let Some(cp) = self
            .checkpoints
            .get(self.next_cp)
            .filter(|c| c.size == header.seq + 1)
        {
            if cp.head != hash {
                let d = Damage::new(
                    DamageKind::Rewritten,
                    header.seq,
                    format!(
                        "hash of record {} differs from the head signed in the checkpoint for size {}",
                        header.seq, cp.size
                    ),
                );
                return self.stop(d, location);
            }
            self.checkpoints_verified += 1;
            self.next_cp += 1;
        }
        self.last_hash.clear();
        self.last_hash.push_str(hash);
        self.expected += 1;
        self.records += 1;
        true
    }

    /// Reports a final line without `\n`.
    pub fn torn_tail(&mut self, location: Option<(&Path, u64)>) {
        if matches!(self.mode, Mode::Checking) {
            let d = Damage::new(
                DamageKind::TornTail,
                self.expected,
                "the last line is incomplete (crash during a write)",
            );
            self.stop(d, location);
        }
    }

    /// The report once every line was fed.
    pub fn finish(mut self) -> VerifyReport {
        match std::mem::replace(&mut self.mode, Mode::Done) {
            Mode::Searching { wanted, location } => {
                let d = Damage::new(
                    DamageKind::Deleted,
                    wanted,
                    format!("record {wanted} is missing"),
                );
                self.stop(d, borrowed(&location));
            }
            Mode::Linking { seq, location } => {
                let d = Damage::new(
                    DamageKind::Modified,
                    seq.saturating_sub(1),
                    format!(
                        "record {seq} does not link to record {}",
                        seq.saturating_sub(1)
                    ),
                );
                self.stop(d, borrowed(&location));
            }
            Mode::Checking | Mode::Done => {}
        }
        if self.damage.is_none()
            && let Some(cp) = self
                .checkpoints
                .iter()
                .rev()
                .find(|c| c.size > self.expected)
        {
            let d = Damage::new(
                DamageKind::Truncated,
                self.expected,
                format!(
                    "the log ends at {} records but a checkpoint signed {} records",
                    self.expected, cp.size
                ),
            );
            self.stop(d, None);
        }
        let damage = match (self.damage.take(), self.bad_checkpoint.take()) {
            (Some(a), Some(b)) => Some(if b.seq < a.seq { b } else { a }),
            (a, b) => a.or(b),
        };
        VerifyReport {
            records: self.records,
            first_seq: self.first_seq,
            last_seq: self.expected.checked_sub(1).filter(|_| self.records > 0),
            head: (self.records > 0).then(|| self.last_hash.clone()),
            files: 0,
            checkpoints_verified: self.checkpoints_verified,
            damage,
        }
    }
}

fn owned(location: Option<(&Path, u64)>) -> Option<(PathBuf, u64)> {
    location.map(|(p, l)| (p.to_path_buf(), l))
}

fn borrowed(location: &Option<(PathBuf, u64)>) -> Option<(&Path, u64)> {
    location.as_ref().map(|(p, l)| (p.as_path(), *l))
}

/// Whether a stored line has the fixed shape and its hash matches its record bytes.
pub fn line_hash_ok(line: &[u8]) -> bool {
    split_line(line).is_some_and(|(hash, record)| record_hash(record).to_hex().as_str() == hash)
}

/// Extracts `seq` from a line cheaply (tolerating a bad hash), or `None`.
fn seq_of(line: &[u8]) -> Option<u64> {
    let (_, record) = split_line(line)?;
    RecordHeader::scan(record).map(|h| h.seq)
}

/// Lines read and hashed by the reader thread, handed to the chain checker.
struct Batch {
    data: Vec<u8>,
    /// `(start, end, hash_ok, file index, line number, torn)`.
    lines: Vec<(usize, usize, bool, usize, u64, bool)>,
}

const BATCH_BYTES: usize = 4 << 20;

/// Reads every file, splits lines, checks each line's hash, and sends batches. Stops when the
/// receiver hangs up.
fn read_and_hash(files: &[PathBuf], tx: &std::sync::mpsc::SyncSender<Result<Batch>>) {
    let mut batch = Batch {
        data: Vec::with_capacity(BATCH_BYTES + 65_536),
        lines: Vec::new(),
    };
    let send = |batch: &mut Batch| {
        for l in &mut batch.lines {
            if !l.5 {
                l.2 = line_hash_ok(&batch.data[l.0..l.1]);
            }
        }
        let full = std::mem::replace(
            batch,
            Batch {
                data: Vec::with_capacity(BATCH_BYTES + 65_536),
                lines: Vec::new(),
            },
        );
        tx.send(Ok(full)).is_ok()
    };
    for (fi, file) in files.iter().enumerate() {
        let f = match File::open(file) {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.send(Err(GovernError::io("open", file, e)));
                return;
            }
        };
        let mut r = BufReader::with_capacity(1 << 20, f);
        let mut line_no = 0u64;
        loop {
            let start = batch.data.len();
            let n = match r.read_until(b'\n', &mut batch.data) {
                Ok(n) => n,
                Err(e) => {
                    let _ = tx.send(Err(GovernError::io("read", file, e)));
                    return;
                }
            };
            if n == 0 {
                break;
            }
            line_no += 1;
            let whole = batch.data.last() == Some(&b'\n');
            let end = if whole {
                batch.data.len() - 1
            } else {
                batch.data.len()
            };
            let torn = !whole && fi + 1 == files.len();
            batch.lines.push((start, end, false, fi, line_no, torn));
            if batch.data.len() >= BATCH_BYTES && !send(&mut batch) {
                return;
            }
        }
    }
    if !batch.lines.is_empty() {
        send(&mut batch);
    }
}

/// Verifies the log whose active file is `path` (with its rotated segments), streaming: one
/// thread reads and hashes lines, the calling thread checks sequence numbers, links and
/// checkpoints. Memory stays bounded by a few 4 MiB batches.
pub fn verify_log(path: &Path, options: &VerifyOptions) -> Result<VerifyReport> {
    let files = log_files(path)?;
    if files.is_empty() {
        return Err(GovernError::io(
            "open",
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no audit log here"),
        ));
    }
    let mut v = Verifier::new(options.clone())?;
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Batch>>(2);
        let files_ref = &files;
        scope.spawn(move || read_and_hash(files_ref, &tx));
        'batches: for batch in rx {
            let batch = batch?;
            for &(start, end, ok, fi, line_no, torn) in &batch.lines {
                let loc = Some((files[fi].as_path(), line_no));
                if torn {
                    v.torn_tail(loc);
                    break 'batches;
                }
                if !v.feed_checked(&batch.data[start..end], ok, loc) {
                    break 'batches;
                }
            }
        }
        // Leaving the loop drops the receiver; the reader stops at its next send.
        Ok(())
    })?;
    let mut report = v.finish();
    report.files = files.len();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::seal_record;
    use serde_json::Map;

    fn log(n: u64) -> Vec<Vec<u8>> {
        let mut prev = GENESIS_PREV.to_owned();
        (0..n)
            .map(|i| {
                let mut line = Vec::new();
                let mut body = Map::new();
                body.insert("type".into(), "system".into());
                body.insert("event".into(), format!("e{i}").into());
                let h = seal_record(body, i, &prev, &mut line);
                prev = h.to_hex().to_string();
                line.pop();
                line
            })
            .collect()
    }

    fn run(lines: &[Vec<u8>]) -> VerifyReport {
        let mut v = Verifier::new(VerifyOptions::default()).unwrap();
        for l in lines {
            if !v.feed(l, None) {
                break;
            }
        }
        v.finish()
    }

    fn damage(lines: &[Vec<u8>]) -> (DamageKind, u64) {
        let d = run(lines).damage.expect("damage expected");
        (d.kind, d.seq)
    }

    #[test]
    fn intact_log_verifies() {
        let r = run(&log(50));
        assert!(r.is_intact(), "{}", r.summary());
        assert_eq!((r.records, r.last_seq), (50, Some(49)));
        assert!(run(&[]).is_intact());
    }

    #[test]
    fn each_damage_kind_is_named() {
        let base = log(20);
        let mut l = base.clone();
        l[7][100] ^= 0x01;
        assert_eq!(damage(&l), (DamageKind::Modified, 7));
        let mut l = base.clone();
        l.remove(7);
        assert_eq!(damage(&l), (DamageKind::Deleted, 7));
        let mut l = base.clone();
        l.swap(7, 8);
        assert_eq!(damage(&l), (DamageKind::Reordered, 7));
        let mut l = base.clone();
        l.swap(7, 12);
        assert_eq!(damage(&l), (DamageKind::Reordered, 7));
        // A forged record with a valid hash, linking correctly, claiming seq 7.
        let mut forged = Vec::new();
        let mut body = Map::new();
        body.insert("type".into(), "system".into());
        body.insert("event".into(), "forged".into());
        let prev = split_line(&base[6]).unwrap().0.to_owned();
        seal_record(body, 7, &prev, &mut forged);
        forged.pop();
        let mut l = base.clone();
        l.insert(7, forged);
        assert_eq!(damage(&l), (DamageKind::Inserted, 7));
        // The last record deleted: undetectable without a checkpoint...
        let mut l = base.clone();
        l.pop();
        assert!(run(&l).is_intact());
        // ...deleting the first one is not.
        let mut l = base;
        l.remove(0);
        assert_eq!(damage(&l), (DamageKind::Deleted, 0));
    }

    #[test]
    fn a_replaced_record_is_caught_by_its_successor() {
        // Record 5 replaced by a self-consistent one (valid hash, valid link from 4).
        let base = log(10);
        let mut body = Map::new();
        body.insert("type".into(), "system".into());
        body.insert("event".into(), "replaced".into());
        let prev = split_line(&base[4]).unwrap().0.to_owned();
        let mut line = Vec::new();
        seal_record(body, 5, &prev, &mut line);
        line.pop();
        let mut l = base;
        l[5] = line;
        assert_eq!(damage(&l), (DamageKind::Modified, 5));
    }

    #[test]
    fn files_are_streamed_and_a_torn_tail_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let lines = log(300);
        let mut text: Vec<u8> = lines
            .iter()
            .flat_map(|l| l.iter().copied().chain([b'\n']))
            .collect();
        std::fs::write(&path, &text).unwrap();
        let r = verify_log(&path, &VerifyOptions::default()).unwrap();
        assert!(r.is_intact(), "{}", r.summary());
        assert_eq!((r.records, r.files), (300, 1));
        text.extend_from_slice(b"{\"hash\":\"00");
        std::fs::write(&path, &text).unwrap();
        let d = verify_log(&path, &VerifyOptions::default())
            .unwrap()
            .damage
            .unwrap();
        assert_eq!((d.kind, d.seq), (DamageKind::TornTail, 300));
        assert_eq!(d.location, Some((path.clone(), 301)));
        assert!(verify_log(&dir.path().join("none.jsonl"), &VerifyOptions::default()).is_err());
    }

    #[test]
    fn garbage_is_modified_not_a_panic() {
        let mut l = log(3);
        l[1] = b"not json at all".to_vec();
        assert_eq!(damage(&l), (DamageKind::Modified, 1));
        l[1] = Vec::new();
        assert_eq!(damage(&l), (DamageKind::Modified, 1));
    }
}
