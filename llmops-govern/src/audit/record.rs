//! The record format (version 1): how an [`AuditEvent`] becomes one chained line.
//!
//! A stored line is the canonical JSON object `{"hash":"<64 hex>","record":<record>}` followed
//! by `\n`, where `<record>` is the [`crate::canonical`] serialization of the record
//! object and `hash = BLAKE3("llmops.audit.v1.record\n" ‖ <record bytes>)`. Because the line is
//! itself canonical and `"hash"` sorts before `"record"`, the record bytes are the slice of the
//! line between the fixed 84-byte prefix and the final `}`: a verifier hashes the bytes as
//! stored. The full specification is in `docs/governance.md`.

use std::sync::Arc;
use std::time::SystemTime;

use llmops_core::traits::audit::{RequestAudit, SystemEvent};
use llmops_core::{AuditEvent, ChatRequest, Content, Message};
use serde_json::{Map, Value, json};

use crate::audit::keys::{CommitmentKey, ContentKeyStore};
use crate::canonical;
use crate::error::Result;
use crate::pii::PiiGuard;

/// The format version written in every record's `v`.
pub const FORMAT_VERSION: u64 = 1;
/// The domain-separation prefix of record hashes.
pub const RECORD_DOMAIN: &[u8] = b"llmops.audit.v1.record\n";
/// The `prev` of the first record of a log: 64 zeros.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Byte length of the line prefix `{"hash":"<64 hex>","record":`.
pub const LINE_PREFIX_LEN: usize = 84;

/// The hash of a record from its canonical bytes.
pub fn record_hash(record: &[u8]) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(RECORD_DOMAIN);
    h.update(record);
    h.finalize()
}

/// Appends the stored line (with its trailing `\n`) for canonical `record` bytes and their
/// hash to `out`.
pub fn encode_line(record: &[u8], hash: &blake3::Hash, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"hash\":\"");
    out.extend_from_slice(hash.to_hex().as_bytes());
    out.extend_from_slice(b"\",\"record\":");
    out.extend_from_slice(record);
    out.extend_from_slice(b"}\n");
}

/// Splits a stored line (without its `\n`) into the hash hex and the record bytes, or `None`
/// when the line does not have the fixed shape.
pub fn split_line(line: &[u8]) -> Option<(&str, &[u8])> {
    if line.len() < LINE_PREFIX_LEN + 3
        || !line.starts_with(b"{\"hash\":\"")
        || line.last() != Some(&b'}')
    {
        return None;
    }
    if &line[73..LINE_PREFIX_LEN] != b"\",\"record\":" {
        return None;
    }
    let hash = std::str::from_utf8(&line[9..73]).ok()?;
    if !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    Some((hash, &line[LINE_PREFIX_LEN..line.len() - 1]))
}

/// The fields a verifier reads from every record.
#[derive(Debug, serde::Deserialize)]
pub struct RecordHeader<'a> {
    /// Format version.
    pub v: u64,
    /// Sequence number.
    pub seq: u64,
    /// Hash of the previous record.
    #[serde(borrow)]
    pub prev: &'a str,
}

impl<'a> RecordHeader<'a> {
    /// Reads `v`, `seq` and `prev` from a record in canonical layout (no whitespace), by
    /// scanning the top-level members and skipping the others; several times faster than a
    /// full JSON parse. Returns `None` when the record is not a canonical-layout object with
    /// exactly one of each: such a record is damaged.
    pub fn scan(record: &'a [u8]) -> Option<Self> {
        let b = record;
        if b.first() != Some(&b'{') || b.last() != Some(&b'}') {
            return None;
        }
        let (mut v, mut seq, mut prev) = (None, None, None);
        let mut i = 1;
        if b.get(i) == Some(&b'}') {
            return None;
        }
        loop {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let (key, next) = scan_string(b, i)?;
            if b.get(next) != Some(&b':') {
                return None;
            }
            let start = next + 1;
            let end = skip_value(b, start)?;
            let value = &b[start..end];
            match key {
                b"v" if v.is_none() => v = Some(parse_uint(value)?),
                b"seq" if seq.is_none() => seq = Some(parse_uint(value)?),
                b"prev" if prev.is_none() => {
                    let (raw, after) = scan_string(value, 0)?;
                    if after != value.len() || raw.contains(&b'\\') {
                        return None;
                    }
                    prev = Some(std::str::from_utf8(raw).ok()?);
                }
                b"v" | b"seq" | b"prev" => return None, // duplicate member
                _ => {}
            }
            match b.get(end) {
                Some(b',') => i = end + 1,
                Some(b'}') if end + 1 == b.len() => break,
                _ => return None,
            }
        }
        Some(Self {
            v: v?,
            seq: seq?,
            prev: prev?,
        })
    }
}

/// The raw contents of the string starting at `b[i] == '"'`, and the index after its closing
/// quote.
fn scan_string(b: &[u8], i: usize) -> Option<(&[u8], usize)> {
    let mut j = i + 1;
    loop {
        match *b.get(j)? {
            b'\\' => j += 2,
            b'"' => return Some((&b[i + 1..j], j + 1)),
            c if c < 0x20 => return None,
            _ => j += 1,
        }
    }
}

/// The index just past the JSON value starting at `b[i]`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => scan_string(b, i).map(|(_, n)| n),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match *b.get(j)? {
                    b'"' => {
                        j = scan_string(b, j)?.1;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        b't' if b.get(i..i + 4) == Some(b"true") => Some(i + 4),
        b'f' if b.get(i..i + 5) == Some(b"false") => Some(i + 5),
        b'n' if b.get(i..i + 4) == Some(b"null") => Some(i + 4),
        b'-' | b'0'..=b'9' => {
            let mut j = i + 1;
            while b
                .get(j)
                .is_some_and(|c| matches!(c, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'))
            {
                j += 1;
            }
            Some(j)
        }
        _ => None,
    }
}

fn parse_uint(v: &[u8]) -> Option<u64> {
    if v.is_empty() || (v.len() > 1 && v[0] == b'0') || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// RFC 3339 UTC with nanoseconds, as written in `ts`.
pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// What is stored of request and response content.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum ContentMode {
    /// Only commitments (the default).
    #[default]
    Off,
    /// PII-redacted content in clear text in the record.
    Plain,
    /// PII-redacted content encrypted with the tenant's key; deleting the key shreds it.
    Encrypted(Arc<dyn ContentKeyStore>),
}

/// Turns events into record objects: commitments, parameters, optional content.
#[derive(Clone, Debug)]
pub struct RecordEncoder {
    commitment_key: CommitmentKey,
    content: ContentMode,
    redactor: Option<Arc<PiiGuard>>,
}

impl RecordEncoder {
    /// An encoder committing with `commitment_key`, storing no content.
    pub fn new(commitment_key: CommitmentKey) -> Self {
        Self {
            commitment_key,
            content: ContentMode::Off,
            redactor: None,
        }
    }

    /// Stores content as `mode` says (builder style). Content is redacted with the redactor
    /// set by [`RecordEncoder::with_redactor`], or with the default PII guard if none is set.
    #[must_use]
    pub fn with_content(mut self, mode: ContentMode) -> Self {
        self.content = mode;
        self
    }

    /// The PII guard that redacts stored content (builder style).
    #[must_use]
    pub fn with_redactor(mut self, guard: Arc<PiiGuard>) -> Self {
        self.redactor = Some(guard);
        self
    }

    /// What content is stored.
    pub fn content_mode(&self) -> &ContentMode {
        &self.content
    }

    /// The commitment key.
    pub fn commitment_key(&self) -> &CommitmentKey {
        &self.commitment_key
    }

    /// The record object for `event`, without `v`, `seq` and `prev` (the writer adds them).
    ///
    /// The object [`RecordEncoder::prepare`] serializes: sinks use that, which writes request
    /// records straight to canonical bytes.
    pub fn encode(&self, event: &AuditEvent) -> Result<Map<String, Value>> {
        match event {
            AuditEvent::Request(_) => Ok(self.prepare(event)?.to_map()),
            AuditEvent::System(s) => Ok(encode_system(s)),
            _ => Ok(unknown_event()),
        }
    }

    /// The record for `event`, serialized ahead of sequencing (see [`PreparedRecord`]).
    ///
    /// Request records — one per request the gateway serves — are written member by member
    /// in canonical order, without building a JSON object first.
    pub fn prepare(&self, event: &AuditEvent) -> Result<PreparedRecord> {
        match event {
            AuditEvent::Request(r) => self.prepare_request(r),
            AuditEvent::System(s) => Ok(PreparedRecord::new(encode_system(s))),
            _ => Ok(PreparedRecord::new(unknown_event())),
        }
    }

    fn prepare_request(&self, r: &RequestAudit) -> Result<PreparedRecord> {
        use canonical::write_string as string;
        // `CommitmentKey::commit`, with the tenant's subkey derived once for both commitments.
        let tenant_key = std::cell::OnceCell::new();
        let commit = |bytes: &[u8], out: &mut Vec<u8>| {
            let key = tenant_key.get_or_init(|| self.commitment_key.tenant_key(&r.tenant));
            out.push(b'"');
            out.extend_from_slice(blake3::keyed_hash(key, bytes).to_hex().as_bytes());
            out.push(b'"');
        };
        let content = self.content_value(r)?;
        // Members in canonical order (UTF-16 order of their names, here plain ASCII order).
        let mut w = ObjectWriter::with_capacity(768);
        if let Some(k) = &r.api_key_id {
            string(k, w.field("api_key_id"));
        }
        let out = w.field("attempts");
        out.push(b'[');
        for (i, a) in r.attempts.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'{');
            if let Some(e) = a.error {
                out.extend_from_slice(b"\"error\":");
                string(e.as_str(), out);
                out.push(b',');
            }
            out.extend_from_slice(b"\"model\":");
            string(&a.model, out);
            out.extend_from_slice(b",\"provider\":");
            string(&a.provider, out);
            out.push(b'}');
        }
        out.push(b']');
        w.field("cache_hit")
            .extend_from_slice(if r.cache_hit { b"true" } else { b"false" });
        if let Some(content) = &content {
            canonical::write_canonical(content, w.field("content"));
        }
        if let Some(c) = r.cost_usd.filter(|c| c.is_finite()) {
            canonical::write_canonical(&Value::from(c), w.field("cost_usd"));
        }
        if let Some(e) = r.error {
            string(e.as_str(), w.field("error"));
        }
        if !r.guardrails.is_empty() {
            let g: Vec<Value> = r
                .guardrails
                .iter()
                .map(|d| json!({"guardrail": d.guardrail, "action": d.action, "detail": d.detail}))
                .collect();
            canonical::write_canonical(&Value::Array(g), w.field("guardrails"));
        }
        if let Some(req) = &r.request {
            let mut bytes = Vec::with_capacity(256);
            canonical_messages(&req.messages, &mut bytes);
            commit(&bytes, w.field("input_commitment"));
        }
        let latency = u64::try_from(r.latency.as_micros()).unwrap_or(u64::MAX);
        canonical::write_u64(latency, w.field("latency_us"));
        string(&r.requested_model, w.field("model"));
        string(
            if r.error.is_some() { "error" } else { "ok" },
            w.field("outcome"),
        );
        if let Some(out) = &r.output {
            commit(out.as_bytes(), w.field("output_commitment"));
        }
        if let Some(req) = &r.request {
            canonical::write_canonical(&params(req), w.field("params"));
        }
        if let Some(p) = &r.prompt {
            let out = w.field("prompt");
            out.extend_from_slice(b"{\"id\":");
            string(&p.id, out);
            out.extend_from_slice(b",\"version\":");
            string(&p.version, out);
            out.push(b'}');
        }
        string(&r.request_id, w.field("request_id"));
        string(&r.tenant, w.field("tenant"));
        write_time(r.time, w.field("ts"));
        string("request", w.field("type"));
        if let Some(u) = &r.usage {
            let out = w.field("usage");
            for (i, (name, n)) in [
                ("cache_read", u.cache_read_tokens),
                ("cache_write", u.cache_write_tokens),
                ("input", u.input_tokens),
                ("output", u.output_tokens),
                ("reasoning", u.reasoning_tokens),
            ]
            .into_iter()
            .enumerate()
            {
                out.push(if i == 0 { b'{' } else { b',' });
                string(name, out);
                out.push(b':');
                canonical::write_u64(n, out);
            }
            out.push(b'}');
        }
        if let Some(u) = &r.user {
            string(u, w.field("user"));
        }
        Ok(w.finish())
    }

    fn content_value(&self, r: &RequestAudit) -> Result<Option<Value>> {
        if matches!(self.content, ContentMode::Off) {
            return Ok(None);
        }
        static DEFAULT_GUARD: std::sync::OnceLock<PiiGuard> = std::sync::OnceLock::new();
        let guard = match &self.redactor {
            Some(g) => g.as_ref(),
            None => DEFAULT_GUARD.get_or_init(PiiGuard::default),
        };
        let input: Vec<Value> = r
            .request
            .as_ref()
            .map(|req| {
                req.messages
                    .iter()
                    .map(|msg| json!({"role": msg.role.as_str(), "text": guard.redact_for_log(&msg.text())}))
                    .collect()
            })
            .unwrap_or_default();
        let mut plain = json!({"input": input});
        if let (Some(out), Some(obj)) = (&r.output, plain.as_object_mut()) {
            obj.insert("output".into(), json!(guard.redact_for_log(out)));
        }
        match &self.content {
            ContentMode::Off => Ok(None),
            ContentMode::Plain => Ok(Some(plain)),
            ContentMode::Encrypted(store) => {
                let key = store.get_or_create(&r.tenant)?;
                let sealed = key.seal(
                    &r.tenant,
                    &r.request_id,
                    &canonical::to_canonical_vec(&plain),
                )?;
                Ok(Some(serde_json::to_value(sealed).unwrap_or(Value::Null)))
            }
        }
    }
}

/// Writes the canonical JSON of `messages`: the bytes
/// `canonical::to_canonical_vec(&serde_json::to_value(messages)?)` gives, with plain text
/// messages (a role and a string, nothing else) written directly.
fn canonical_messages(messages: &[Message], out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match &m.content {
            Some(Content::Text(text))
                if m.name.is_none()
                    && m.tool_calls.is_none()
                    && m.tool_call_id.is_none()
                    && m.extra.is_empty() =>
            {
                out.extend_from_slice(b"{\"content\":");
                canonical::write_string(text, out);
                out.extend_from_slice(b",\"role\":");
                canonical::write_string(m.role.as_str(), out);
                out.push(b'}');
            }
            _ => {
                let v = serde_json::to_value(m).unwrap_or(Value::Null);
                canonical::write_canonical(&v, out);
            }
        }
    }
    out.push(b']');
}

fn unknown_event() -> Map<String, Value> {
    Map::from_iter([
        ("type".to_owned(), json!("unknown")),
        ("ts".to_owned(), json!(format_time(SystemTime::now()))),
    ])
}

/// Writes `t` as the JSON string [`format_time`] returns (no character in it needs escaping).
fn write_time(t: SystemTime, out: &mut Vec<u8>) {
    use std::io::Write as _;
    out.push(b'"');
    // Writing to a `Vec` cannot fail.
    let _ = write!(out, "{}", humantime::format_rfc3339_nanos(t));
    out.push(b'"');
}

fn encode_system(s: &SystemEvent) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("type".into(), json!("system"));
    m.insert("ts".into(), json!(format_time(s.time)));
    m.insert("event".into(), json!(s.event));
    if let Some(a) = &s.actor {
        m.insert("actor".into(), json!(a));
    }
    m.insert("detail".into(), s.detail.clone());
    m
}

/// The request parameters recorded: sampling parameters and tool names, never content.
///
/// Each parameter is what `serde_json::to_value(req)` would hold under its key (the typed
/// field, or an unknown field of the same name in `extra`, which serializes after the typed
/// fields and so wins), read without serializing the messages.
fn params(req: &ChatRequest) -> Value {
    fn typed(req: &ChatRequest, key: &str) -> Option<Value> {
        let v = match key {
            "temperature" => serde_json::to_value(req.temperature?),
            "top_p" => serde_json::to_value(req.top_p?),
            "max_tokens" => serde_json::to_value(req.max_tokens?),
            "max_completion_tokens" => serde_json::to_value(req.max_completion_tokens?),
            "n" => serde_json::to_value(req.n?),
            "stream" => serde_json::to_value(req.stream?),
            "presence_penalty" => serde_json::to_value(req.presence_penalty?),
            "frequency_penalty" => serde_json::to_value(req.frequency_penalty?),
            "seed" => serde_json::to_value(req.seed?),
            "logprobs" => serde_json::to_value(req.logprobs?),
            "top_logprobs" => serde_json::to_value(req.top_logprobs?),
            "parallel_tool_calls" => serde_json::to_value(req.parallel_tool_calls?),
            _ => return None,
        };
        v.ok()
    }
    const KEYS: &[&str] = &[
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "stream",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "logprobs",
        "top_logprobs",
        "parallel_tool_calls",
    ];
    let mut out = Map::new();
    for k in KEYS {
        let v = match req.extra.get(*k) {
            Some(v) => Some(v.clone()),
            None => typed(req, k),
        };
        if let Some(v) = v.filter(|v| !v.is_null()) {
            out.insert((*k).to_owned(), v);
        }
    }
    if let Some(tools) = &req.tools {
        let names: Vec<Value> = tools
            .iter()
            .filter_map(|t| serde_json::to_value(t).ok())
            .map(|t| t.pointer("/function/name").cloned().unwrap_or(Value::Null))
            .collect();
        out.insert("tools".into(), Value::Array(names));
    }
    if let Some(rf) = &req.response_format
        && let Ok(v) = serde_json::to_value(rf)
        && let Some(t) = v.get("type")
    {
        out.insert("response_format".into(), t.clone());
    }
    Value::Object(out)
}

/// Completes a record object with `v`, `seq` and `prev`, serializes it canonically and
/// appends the stored line to `out`. Returns the record's hash.
pub fn seal_record(
    body: Map<String, Value>,
    seq: u64,
    prev: &str,
    out: &mut Vec<u8>,
) -> blake3::Hash {
    PreparedRecord::new(body).seal(seq, prev, out)
}

/// A record body serialized ahead of sequencing: its members' canonical bytes, in canonical
/// order. Sealing it only splices in `prev`, `seq` and `v` and hashes, so the part of an append
/// that must be serialized (one writer, one chain) stays a few hundred nanoseconds of copying
/// and hashing while the expensive encoding runs on the callers.
#[derive(Clone, Debug)]
pub struct PreparedRecord {
    /// The members `"name":value` in canonical order, each followed by a comma.
    body: Vec<u8>,
    /// Where in `body` each of [`HEADER_KEYS`] goes: the offset of the first member whose name
    /// sorts after it (or `body.len()`).
    splits: [usize; 3],
}

/// The members the writer adds, in canonical order (`prev` < `seq` < `v`).
const HEADER_KEYS: [&str; 3] = ["prev", "seq", "v"];

fn utf16_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// Writes the members of a record in canonical order, noting where the header members go.
struct ObjectWriter {
    body: Vec<u8>,
    splits: [usize; 3],
    /// How many of [`HEADER_KEYS`] sort before the members written so far.
    placed: usize,
    #[cfg(debug_assertions)]
    last: Option<String>,
}

impl ObjectWriter {
    fn with_capacity(bytes: usize) -> Self {
        Self {
            body: Vec::with_capacity(bytes),
            splits: [0; 3],
            placed: 0,
            #[cfg(debug_assertions)]
            last: None,
        }
    }

    /// Starts the member `name` (which must sort after the previous one and not be a header
    /// member) and returns the buffer to write its canonical value to.
    fn member(&mut self, name: &str) -> &mut Vec<u8> {
        self.start(name);
        canonical::write_string(name, &mut self.body);
        self.body.push(b':');
        &mut self.body
    }

    /// [`ObjectWriter::member`] for a name written in the source: ASCII that needs no
    /// escaping, copied as is.
    fn field(&mut self, name: &'static str) -> &mut Vec<u8> {
        debug_assert!(
            name.bytes()
                .all(|b| b.is_ascii() && b >= 0x20 && b != b'"' && b != b'\\'),
            "{name}"
        );
        self.start(name);
        self.body.push(b'"');
        self.body.extend_from_slice(name.as_bytes());
        self.body.extend_from_slice(b"\":");
        &mut self.body
    }

    /// Ends the previous member and places the header members that sort before `name`.
    fn start(&mut self, name: &str) {
        #[cfg(debug_assertions)]
        {
            debug_assert!(
                self.last
                    .as_deref()
                    .is_none_or(|l| utf16_cmp(l, name).is_lt()),
                "record members out of canonical order: {name} after {:?}",
                self.last
            );
            self.last = Some(name.to_owned());
        }
        self.close_member();
        // Byte order: the header names are ASCII, and against an ASCII string byte order and
        // UTF-16 order agree (they differ only between two non-ASCII characters).
        while self.placed < HEADER_KEYS.len()
            && HEADER_KEYS[self.placed].as_bytes() < name.as_bytes()
        {
            self.splits[self.placed] = self.body.len();
            self.placed += 1;
        }
    }

    fn close_member(&mut self) {
        if !self.body.is_empty() {
            self.body.push(b',');
        }
    }

    fn finish(mut self) -> PreparedRecord {
        self.close_member();
        for split in &mut self.splits[self.placed..] {
            *split = self.body.len();
        }
        PreparedRecord {
            body: self.body,
            splits: self.splits,
        }
    }
}

impl PreparedRecord {
    /// Serializes `body`'s members (any `prev`, `seq` or `v` in it is dropped).
    pub fn new(body: Map<String, Value>) -> Self {
        let mut members: Vec<(String, Value)> = body
            .into_iter()
            .filter(|(k, _)| !HEADER_KEYS.contains(&k.as_str()))
            .collect();
        members.sort_by(|a, b| utf16_cmp(&a.0, &b.0));
        let mut w = ObjectWriter::with_capacity(512);
        for (k, v) in &members {
            canonical::write_canonical(v, w.member(k));
        }
        w.finish()
    }

    /// The record object (without `v`, `seq` and `prev`).
    pub fn to_map(&self) -> Map<String, Value> {
        let mut object = Vec::with_capacity(self.body.len() + 2);
        object.push(b'{');
        object.extend_from_slice(self.body.strip_suffix(b",").unwrap_or(&self.body));
        object.push(b'}');
        // The body is canonical JSON written by this module.
        serde_json::from_slice(&object).unwrap_or_default()
    }

    /// Appends the stored line for this record at `seq` after `prev` to `out`; returns its
    /// hash.
    pub fn seal(&self, seq: u64, prev: &str, out: &mut Vec<u8>) -> blake3::Hash {
        // The line is `{"hash":"<hex>","record":<record>}\n`: reserve the prefix, write the
        // record after it, hash the record in place, then fill the prefix in.
        let line_start = out.len();
        out.reserve(LINE_PREFIX_LEN + self.body.len() + prev.len() + 48);
        out.extend_from_slice(&[0; LINE_PREFIX_LEN]);
        let record_start = out.len();
        out.push(b'{');
        let mut from = 0;
        for (i, key) in HEADER_KEYS.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Members before this header member, each followed by its comma.
            out.extend_from_slice(&self.body[from..self.splits[i]]);
            from = self.splits[i];
            canonical::write_string(key, out);
            out.push(b':');
            match i {
                0 => canonical::write_string(prev, out),
                1 => canonical::write_u64(seq, out),
                _ => canonical::write_u64(FORMAT_VERSION, out),
            }
        }
        if let Some(rest) = self.body[from..].strip_suffix(b",") {
            out.push(b',');
            out.extend_from_slice(rest);
        }
        out.push(b'}');
        let hash = record_hash(&out[record_start..]);
        let prefix = &mut out[line_start..record_start];
        prefix[..9].copy_from_slice(b"{\"hash\":\"");
        prefix[9..73].copy_from_slice(hash.to_hex().as_bytes());
        prefix[73..].copy_from_slice(b"\",\"record\":");
        out.extend_from_slice(b"}\n");
        hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmops_core::traits::audit::Attempt;
    use llmops_core::{ErrorKind, Message, Usage};

    fn encoder() -> RecordEncoder {
        RecordEncoder::new(CommitmentKey::from_bytes([7; 32]))
    }

    #[test]
    fn params_are_the_serialized_request_members() {
        let mut req = ChatRequest::new("m", vec![Message::user("hi")])
            .with_temperature(0.25)
            .with_max_tokens(64)
            .with_stream(false);
        req.seed = Some(-3);
        req.top_logprobs = Some(2);
        req.presence_penalty = Some(f64::NAN);
        req.extra.insert("n".into(), json!(3));
        req.extra.insert("max_tokens".into(), json!(null));
        req.extra.insert("top_k".into(), json!(5));
        // What the parameters were read from before: the whole request as a JSON value.
        let Ok(Value::Object(full)) = serde_json::to_value(&req) else {
            panic!("a request serializes to an object");
        };
        let expected: Map<String, Value> = [
            "temperature",
            "top_p",
            "max_tokens",
            "max_completion_tokens",
            "n",
            "stream",
            "presence_penalty",
            "frequency_penalty",
            "seed",
            "logprobs",
            "top_logprobs",
            "parallel_tool_calls",
        ]
        .iter()
        .filter_map(|k| {
            full.get(*k)
                .filter(|v| !v.is_null())
                .map(|v| ((*k).to_owned(), v.clone()))
        })
        .collect();
        assert_eq!(params(&req), Value::Object(expected));
        assert_eq!(params(&req)["n"], json!(3));
        assert!(params(&req).get("max_tokens").is_none());
    }

    fn request_event() -> AuditEvent {
        let mut r = RequestAudit::new("req-1".into(), "team-a".into(), "gpt-x");
        r.request = Some(Arc::new(
            ChatRequest::new("gpt-x", vec![Message::user("my email is ann@example.com")])
                .with_temperature(0.5),
        ));
        r.output = Some("ok".into());
        r.attempts.push(Attempt::new(
            "primary",
            "gpt-x-2",
            Some(ErrorKind::RateLimited),
        ));
        r.attempts.push(Attempt::new("backup", "gpt-x-3", None));
        r.usage = Some(Usage::new(10, 2));
        r.cost_usd = Some(0.00012);
        AuditEvent::Request(Box::new(r))
    }

    #[test]
    fn lines_round_trip_and_hash_the_stored_bytes() {
        let body = encoder().encode(&request_event()).unwrap();
        let mut line = Vec::new();
        let hash = seal_record(body, 5, GENESIS_PREV, &mut line);
        assert_eq!(line.last(), Some(&b'\n'));
        let (h, rec) = split_line(&line[..line.len() - 1]).unwrap();
        assert_eq!(h, hash.to_hex().as_str());
        assert_eq!(record_hash(rec), hash);
        let header: RecordHeader<'_> = serde_json::from_slice(rec).unwrap();
        assert_eq!((header.v, header.seq, header.prev), (1, 5, GENESIS_PREV));
        // The stored record is canonical.
        let v: Value = serde_json::from_slice(rec).unwrap();
        assert_eq!(canonical::to_canonical_vec(&v), rec);
        // Content is not stored by default; no raw text leaks.
        let text = String::from_utf8(line.clone()).unwrap();
        assert!(!text.contains("ann@example.com"));
        assert!(v.get("content").is_none());
        assert_eq!(v["attempts"][0]["error"], "rate_limited");
        assert_eq!(v["params"]["temperature"], 0.5);
        assert_eq!(v["outcome"], "ok");
    }

    /// A request record with every optional member, written member by member, is the
    /// canonical form of the object it describes.
    #[test]
    fn request_records_are_written_canonically() {
        let AuditEvent::Request(mut r) = request_event() else {
            unreachable!()
        };
        r.api_key_id = Some("key-1".into());
        r.user = Some("ann \"the\" user\n".into());
        r.prompt = Some(llmops_core::PromptRef::new("greet", "v3"));
        r.cache_hit = true;
        r.error = Some(ErrorKind::BudgetExceeded);
        r.latency = std::time::Duration::from_micros(1234);
        r.time =
            SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(1_700_000_000_123_456_789);
        r.guardrails.push(llmops_core::GuardrailDecision::new(
            "pii",
            "redact",
            json!({"kinds": ["email"], "count": 1}),
        ));
        let event = AuditEvent::Request(r);
        for enc in [encoder(), encoder().with_content(ContentMode::Plain)] {
            let prepared = enc.prepare(&event).unwrap();
            let mut line = Vec::new();
            let hash = prepared.seal(9, GENESIS_PREV, &mut line);
            let (_, rec) = split_line(&line[..line.len() - 1]).unwrap();
            assert_eq!(record_hash(rec), hash);
            let v: Value = serde_json::from_slice(rec).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&canonical::to_canonical_vec(&v)),
                String::from_utf8_lossy(rec)
            );
            assert_eq!(v["api_key_id"], "key-1");
            assert_eq!(v["user"], "ann \"the\" user\n");
            assert_eq!(v["prompt"], json!({"id": "greet", "version": "v3"}));
            assert_eq!(v["cache_hit"], true);
            assert_eq!(v["error"], "budget_exceeded");
            assert_eq!(v["outcome"], "error");
            assert_eq!(v["latency_us"], 1234);
            assert_eq!(v["model"], "gpt-x");
            assert_eq!(v["type"], "request");
            assert_eq!(v["guardrails"][0]["detail"]["count"], 1);
            assert_eq!(
                v["usage"],
                json!({"input": 10, "cache_read": 0, "cache_write": 0, "output": 2, "reasoning": 0})
            );
            assert_eq!(v["cost_usd"], 0.00012);
            assert_eq!(
                v["attempts"][1],
                json!({"provider": "backup", "model": "gpt-x-3"})
            );
            assert_eq!((v["v"].as_u64(), v["seq"].as_u64()), (Some(1), Some(9)));
            assert_eq!(v["ts"], "2023-11-14T22:13:20.123456789Z");
            assert_eq!(
                v["input_commitment"].as_str().map(str::len),
                Some(64),
                "{v}"
            );
            // `encode` describes the same object.
            let mut map = enc.encode(&event).unwrap();
            for k in HEADER_KEYS {
                map.insert(k.to_owned(), v[k].clone());
            }
            assert_eq!(Value::Object(map), v);
        }
    }

    #[test]
    fn messages_are_committed_in_their_canonical_form() {
        let mut named = Message::user("hi");
        named.name = Some("ann".into());
        let mut extra = Message::assistant("x");
        extra
            .extra
            .insert("zeta".into(), json!({"b": 1, "a": [2, "\u{1}"]}));
        let cases = vec![
            vec![],
            vec![Message::system("be \"brief\"\n\t/é😀"), Message::user("hi")],
            vec![
                Message::assistant(""),
                Message::new(llmops_core::Role::Tool, "r"),
            ],
            vec![named, extra, Message::user("last")],
        ];
        for messages in cases {
            let mut fast = Vec::new();
            canonical_messages(&messages, &mut fast);
            let slow = canonical::to_canonical_vec(&serde_json::to_value(&messages).unwrap());
            assert_eq!(
                String::from_utf8_lossy(&fast),
                String::from_utf8_lossy(&slow)
            );
        }
    }

    #[test]
    fn header_scan_agrees_with_a_full_parse() {
        let body = encoder().encode(&request_event()).unwrap();
        let mut line = Vec::new();
        seal_record(body, 77, GENESIS_PREV, &mut line);
        let (_, rec) = split_line(&line[..line.len() - 1]).unwrap();
        let fast = RecordHeader::scan(rec).unwrap();
        let slow: RecordHeader<'_> = serde_json::from_slice(rec).unwrap();
        assert_eq!((fast.v, fast.seq, fast.prev), (slow.v, slow.seq, slow.prev));
        // Nested members named like header fields do not confuse it.
        let tricky = br#"{"detail":{"seq":5,"prev":"x","v":9,"s":"\"seq\":3 ]}"},"prev":"ab","seq":7,"v":1}"#;
        let h = RecordHeader::scan(tricky).unwrap();
        assert_eq!((h.v, h.seq, h.prev), (1, 7, "ab"));
        for bad in [
            &br#"{"prev":"ab","seq":7,"seq":8,"v":1}"#[..],
            br#"{"prev":"ab","seq":7}"#,
            br#"{"prev":"ab","seq":07,"v":1}"#,
            br#"{"prev":"ab", "seq":7,"v":1}"#,
            br#"{"prev":"ab","seq":-7,"v":1}"#,
            br#"{"prev":"ab","seq":7,"v":1}x"#,
            br#"{"prev":"ab","seq":7,"v":1"#,
            br#"{"d":[1,{"a":"]"},"prev":"ab","seq":7,"v":1}"#,
            b"{}",
            b"",
        ] {
            assert!(
                RecordHeader::scan(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn prepared_records_seal_to_the_canonical_form() {
        let body = encoder().encode(&request_event()).unwrap();
        let mut full = body.clone();
        full.insert("v".into(), json!(FORMAT_VERSION));
        full.insert("seq".into(), json!(12345));
        full.insert("prev".into(), json!(GENESIS_PREV));
        let expected = canonical::to_canonical_vec(&Value::Object(full));
        let mut line = Vec::new();
        let hash = PreparedRecord::new(body).seal(12345, GENESIS_PREV, &mut line);
        let (_, rec) = split_line(&line[..line.len() - 1]).unwrap();
        assert_eq!(
            String::from_utf8_lossy(rec),
            String::from_utf8_lossy(&expected)
        );
        assert_eq!(hash, record_hash(&expected));
        // Keys sorting before, between and after the header members, and none at all.
        for keys in [
            vec![],
            vec!["a"],
            vec!["zz"],
            vec!["q", "r", "w"],
            vec!["prev", "seq"],
        ] {
            let mut body = Map::new();
            for k in &keys {
                body.insert((*k).to_owned(), json!(1));
            }
            let mut full: Map<String, Value> = body
                .clone()
                .into_iter()
                .filter(|(k, _)| !HEADER_KEYS.contains(&k.as_str()))
                .collect();
            full.insert("v".into(), json!(1));
            full.insert("seq".into(), json!(0));
            full.insert("prev".into(), json!("p"));
            let mut line = Vec::new();
            PreparedRecord::new(body).seal(0, "p", &mut line);
            let (_, rec) = split_line(&line[..line.len() - 1]).unwrap();
            assert_eq!(
                rec,
                canonical::to_canonical_vec(&Value::Object(full)).as_slice(),
                "{keys:?}"
            );
        }
    }

    #[test]
    fn split_rejects_malformed_lines() {
        assert!(split_line(b"").is_none());
        assert!(split_line(b"{\"hash\":\"zz\"}").is_none());
        let mut line = Vec::new();
        seal_record(Map::new(), 0, GENESIS_PREV, &mut line);
        let mut bad = line[..line.len() - 1].to_vec();
        bad[10] = b'X';
        assert!(split_line(&bad).is_none());
    }

    #[test]
    fn plain_content_is_redacted() {
        let enc = encoder().with_content(ContentMode::Plain);
        let body = enc.encode(&request_event()).unwrap();
        let text = body["content"]["input"][0]["text"].as_str().unwrap();
        assert!(!text.contains("ann@example.com"), "{text}");
        assert!(text.contains("[EMAIL]"), "{text}");
    }

    #[test]
    fn system_events_are_recorded() {
        let ev = AuditEvent::System(SystemEvent::new("config_loaded", json!({"hash": "abc"})));
        let body = encoder().encode(&ev).unwrap();
        assert_eq!(body["type"], "system");
        assert_eq!(body["event"], "config_loaded");
        assert_eq!(body["detail"]["hash"], "abc");
    }
}
