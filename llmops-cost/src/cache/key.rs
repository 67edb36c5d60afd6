//! Cache keys: BLAKE3 over a canonical serialization of every output-affecting field.

use std::io::Write;

use llmops_core::{CacheKey, ChatRequest};
use serde_json::Value;

/// Top-level request fields that do not change the answer and are left out of the key.
const IGNORED: &[&str] = &[
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
];

/// Whether `serde_json::Map` iterates in sorted key order (it does unless some crate in the
/// build enables serde_json's `preserve_order` feature).
fn maps_are_sorted() -> bool {
    static SORTED: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
        let mut m = serde_json::Map::new();
        m.insert("b".into(), Value::Null);
        m.insert("a".into(), Value::Null);
        m.keys().next().is_some_and(|k| k == "a")
    });
    *SORTED
}

struct HashWriter<'a>(&'a mut blake3::Hasher);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The key of `req` in `tenant`'s partition of `namespace`.
///
/// The key covers every field of the request except those that cannot change the answer
/// (`stream`, `stream_options`, `user`, `metadata`, `store`, `service_tier`,
/// `prompt_cache_key`, `safety_identifier`): model, messages, tools, tool choice, sampling
/// parameters, stop sequences, response format, seed and every unknown (`extra`) field. The
/// serialization is canonical — typed fields in a fixed order, object keys sorted, no
/// whitespace — so JSON key order and whitespace never change the key (the spelling of a
/// number in an untyped field, `40` or `40.0`, may: a miss, never a wrong hit). The tenant and
/// namespace are hashed in front, length-prefixed, so two tenants can never share an entry.
///
/// The ignored fields are taken out of `req` while it is hashed and put back before
/// returning (so hashing needs no copy of the request); `req` is unchanged on return.
pub fn cache_key(namespace: &str, tenant: &str, req: &mut ChatRequest) -> CacheKey {
    let mut h = blake3::Hasher::new();
    h.update(b"llmops-cache-v1\0");
    for part in [namespace, tenant] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let stream = req.stream.take();
    let stream_options = req.stream_options.take();
    let user = req.user.take();
    let metadata = req.metadata.take();
    let mut extra_taken = Vec::new();
    for k in IGNORED {
        if let Some(v) = req.extra.remove(*k) {
            extra_taken.push((*k, v));
        }
    }
    if maps_are_sorted() {
        // Fast path: struct fields serialize in declaration order and maps in sorted order,
        // which is canonical already. Serialize into a reused buffer, then hash it at once
        // (many tiny hasher updates cost more than the copy).
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with(|b| match b.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                let _ = serde_json::to_writer(&mut *buf, &*req);
                h.update(&buf);
                if buf.capacity() > 1 << 20 {
                    *buf = Vec::new();
                }
            }
            Err(_) => {
                let _ = serde_json::to_writer(HashWriter(&mut h), &*req);
            }
        });
    } else {
        h.update(b"\0value");
        let v = serde_json::to_value(&*req).unwrap_or(Value::Null);
        write_canonical(&mut h, &v);
    }
    req.stream = stream;
    req.stream_options = stream_options;
    req.user = user;
    req.metadata = metadata;
    for (k, v) in extra_taken {
        req.extra.insert(k.to_owned(), v);
    }
    CacheKey(*h.finalize().as_bytes())
}

fn write_str(h: &mut blake3::Hasher, s: &str) {
    // serde_json's string escaping is deterministic; writing to a hasher cannot fail.
    let _ = serde_json::to_writer(&mut *h, s);
}

fn write_canonical(h: &mut blake3::Hasher, v: &Value) {
    match v {
        Value::Null => {
            h.update(b"null");
        }
        Value::Bool(b) => {
            h.update(if *b { b"true" } else { b"false" });
        }
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                let _ = write!(h, "{i}");
            } else if let Some(u) = n.as_u64() {
                let _ = write!(h, "{u}");
            } else if let Some(f) = n.as_f64() {
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    let _ = write!(h, "{}", f as i64);
                } else {
                    let _ = write!(h, "{f:e}");
                }
            }
        }
        Value::String(s) => write_str(h, s),
        Value::Array(a) => {
            h.update(b"[");
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    h.update(b",");
                }
                write_canonical(h, x);
            }
            h.update(b"]");
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_unstable();
            h.update(b"{");
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    h.update(b",");
                }
                write_str(h, k);
                h.update(b":");
                write_canonical(h, &m[k]);
            }
            h.update(b"}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ChatRequest {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        let a = parse(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":1,
                "response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"b":1,"a":2}}},"top_k":40}"#,
        );
        let b = parse(
            r#"{ "top_k" : 40, "temperature" : 1.0,
                 "response_format": {"json_schema": {"schema": {"a": 2, "b": 1}, "name": "x"}, "type": "json_schema"},
                 "messages" : [ { "content" : "hi", "role" : "user" } ], "model" : "m" }"#,
        );
        let (mut a, mut b) = (a, b);
        assert_eq!(cache_key("ns", "t", &mut a), cache_key("ns", "t", &mut b));
    }

    #[test]
    fn output_affecting_fields_change_the_key_and_others_do_not() {
        let mut base = parse(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        let before = base.clone();
        let k = cache_key("ns", "t", &mut base);
        assert_eq!(base, before, "the request is unchanged");
        for changed in [
            r#"{"model":"m2","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi!"}]}"#,
            r#"{"model":"m","messages":[{"role":"system","content":"hi"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"seed":1}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stop":["x"]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"}}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"top_k":3}"#,
        ] {
            assert_ne!(cache_key("ns", "t", &mut parse(changed)), k, "{changed}");
        }
        for same in [
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"user":"bob"}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"metadata":{"a":"b"}}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"store":true,"service_tier":"auto"}"#,
        ] {
            let mut r = parse(same);
            let before = r.clone();
            assert_eq!(cache_key("ns", "t", &mut r), k, "{same}");
            assert_eq!(r, before, "the ignored fields are put back");
        }
    }

    #[test]
    fn tenants_and_namespaces_partition_keys() {
        let mut r = parse(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        assert_ne!(cache_key("ns", "a", &mut r), cache_key("ns", "b", &mut r));
        assert_ne!(cache_key("ns1", "a", &mut r), cache_key("ns2", "a", &mut r));
        // Length prefixes: moving a boundary between namespace and tenant changes the key.
        assert_ne!(cache_key("ab", "c", &mut r), cache_key("a", "bc", &mut r));
    }
}
