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
use llmops_core::{AuditEvent, ChatRequest};
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
    pub fn encode(&self, event: &AuditEvent) -> Result<Map<String, Value>> {
        match event {
            AuditEvent::Request(r) => self.encode_request(r),
            AuditEvent::System(s) => Ok(encode_system(s)),
            _ => Ok(Map::from_iter([
                ("type".to_owned(), json!("unknown")),
                ("ts".to_owned(), json!(format_time(SystemTime::now()))),
            ])),
        }
    }

    fn encode_request(&self, r: &RequestAudit) -> Result<Map<String, Value>> {
        let mut m = Map::new();
        m.insert("type".into(), json!("request"));
        m.insert("ts".into(), json!(format_time(r.time)));
        m.insert("request_id".into(), json!(&*r.request_id));
        m.insert("tenant".into(), json!(&*r.tenant));
        if let Some(k) = &r.api_key_id {
            m.insert("api_key_id".into(), json!(&**k));
        }
        if let Some(u) = &r.user {
            m.insert("user".into(), json!(&**u));
        }
        m.insert("model".into(), json!(r.requested_model));
        let attempts: Vec<Value> = r
            .attempts
            .iter()
            .map(|a| {
                let mut o = json!({"provider": a.provider, "model": a.model});
                if let (Some(e), Some(obj)) = (a.error, o.as_object_mut()) {
                    obj.insert("error".into(), json!(e.as_str()));
                }
                o
            })
            .collect();
        m.insert("attempts".into(), Value::Array(attempts));
        if let Some(p) = &r.prompt {
            m.insert(
                "prompt".into(),
                json!({"id": &*p.id, "version": &*p.version}),
            );
        }
        // `CommitmentKey::commit`, with the tenant's subkey derived once for both commitments.
        let tenant_key = std::cell::OnceCell::new();
        let commit = |bytes: &[u8]| -> Value {
            let key = tenant_key.get_or_init(|| self.commitment_key.tenant_key(&r.tenant));
            Value::String(blake3::keyed_hash(key, bytes).to_hex().to_string())
        };
        if let Some(req) = &r.request {
            m.insert("params".into(), params(req));
            let messages = serde_json::to_value(&req.messages).unwrap_or(Value::Null);
            let bytes = canonical::to_canonical_vec(&messages);
            m.insert("input_commitment".into(), commit(&bytes));
        }
        if let Some(out) = &r.output {
            m.insert("output_commitment".into(), commit(out.as_bytes()));
        }
        if let Some(content) = self.content_value(r)? {
            m.insert("content".into(), content);
        }
        if let Some(u) = &r.usage {
            m.insert(
                "usage".into(),
                json!({
                    "input": u.input_tokens,
                    "cache_read": u.cache_read_tokens,
                    "cache_write": u.cache_write_tokens,
                    "output": u.output_tokens,
                    "reasoning": u.reasoning_tokens,
                }),
            );
        }
        if let Some(c) = r.cost_usd.filter(|c| c.is_finite()) {
            m.insert("cost_usd".into(), json!(c));
        }
        m.insert("cache_hit".into(), json!(r.cache_hit));
        if !r.guardrails.is_empty() {
            let g: Vec<Value> = r
                .guardrails
                .iter()
                .map(|d| json!({"guardrail": d.guardrail, "action": d.action, "detail": d.detail}))
                .collect();
            m.insert("guardrails".into(), Value::Array(g));
        }
        m.insert(
            "latency_us".into(),
            json!(u64::try_from(r.latency.as_micros()).unwrap_or(u64::MAX)),
        );
        m.insert(
            "outcome".into(),
            json!(if r.error.is_some() { "error" } else { "ok" }),
        );
        if let Some(e) = r.error {
            m.insert("error".into(), json!(e.as_str()));
        }
        Ok(m)
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

/// A record body serialized ahead of sequencing: every member's canonical bytes, in canonical
/// order. Sealing it only splices in `prev`, `seq` and `v` and hashes, so the part of an append
/// that must be serialized (one writer, one chain) stays a few hundred nanoseconds of copying
/// and hashing while the expensive encoding runs on the callers.
#[derive(Clone, Debug)]
pub struct PreparedRecord {
    /// `(key, canonical key string, canonical value)`, sorted by key in UTF-16 order.
    members: Vec<(String, Vec<u8>)>,
}

/// The members the writer adds, in canonical order (`prev` < `seq` < `v`).
const HEADER_KEYS: [&str; 3] = ["prev", "seq", "v"];

fn utf16_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

impl PreparedRecord {
    /// Serializes `body`'s members (any `prev`, `seq` or `v` in it is dropped).
    pub fn new(body: Map<String, Value>) -> Self {
        let mut members: Vec<(String, Vec<u8>)> = body
            .into_iter()
            .filter(|(k, _)| !HEADER_KEYS.contains(&k.as_str()))
            .map(|(k, v)| {
                let mut bytes = Vec::with_capacity(64);
                canonical::write_string(&k, &mut bytes);
                bytes.push(b':');
                canonical::write_canonical(&v, &mut bytes);
                (k, bytes)
            })
            .collect();
        members.sort_by(|a, b| utf16_cmp(&a.0, &b.0));
        Self { members }
    }

    /// Appends the stored line for this record at `seq` after `prev` to `out`; returns its
    /// hash.
    pub fn seal(&self, seq: u64, prev: &str, out: &mut Vec<u8>) -> blake3::Hash {
        let mut rec =
            Vec::with_capacity(self.members.iter().map(|m| m.1.len() + 1).sum::<usize>() + 128);
        rec.push(b'{');
        let mut header = HEADER_KEYS.iter().peekable();
        let mut first = true;
        let mut push = |rec: &mut Vec<u8>, bytes: &[u8]| {
            if !first {
                rec.push(b',');
            }
            first = false;
            rec.extend_from_slice(bytes);
        };
        let header_member = |key: &str| -> Vec<u8> {
            let mut b = Vec::with_capacity(80);
            canonical::write_string(key, &mut b);
            b.push(b':');
            match key {
                "prev" => canonical::write_string(prev, &mut b),
                "seq" => b.extend_from_slice(seq.to_string().as_bytes()),
                _ => b.extend_from_slice(FORMAT_VERSION.to_string().as_bytes()),
            }
            b
        };
        for (key, bytes) in &self.members {
            while let Some(h) = header.next_if(|h| utf16_cmp(h, key).is_lt()) {
                push(&mut rec, &header_member(h));
            }
            push(&mut rec, bytes);
        }
        for h in header {
            push(&mut rec, &header_member(h));
        }
        rec.push(b'}');
        let hash = record_hash(&rec);
        encode_line(&rec, &hash, out);
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
