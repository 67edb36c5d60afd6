//! Canonical JSON: the deterministic serialization audit records are hashed in.
//!
//! The rules are those of RFC 8785 (JSON Canonicalization Scheme), with one documented
//! difference for integers:
//!
//! - no insignificant whitespace;
//! - object members sorted by their names compared as sequences of UTF-16 code units;
//! - strings: `"` and `\` escaped with a backslash; U+0008, U+0009, U+000A, U+000C, U+000D as
//!   `\b`, `\t`, `\n`, `\f`, `\r`; other control characters below U+0020 as `\u00xx` with
//!   lowercase hex; everything else written as UTF-8, unescaped (including `/` and non-ASCII);
//! - floating-point numbers in the ECMAScript `Number.prototype.toString` form (shortest
//!   round-trip digits; exponent form `1e+21` / `1e-7` outside `[1e-6, 1e21)`); `-0` as `0`;
//! - integers (JSON numbers without fraction or exponent that fit in `i64`/`u64`) are written in
//!   plain decimal. RFC 8785 would round integers above 2^53 through a double; audit records
//!   never rely on such integers being rounded, and writing them exactly keeps sequence numbers
//!   and token counts lossless. For every integer below 2^53 both rules give the same bytes.
//!
//! Non-finite floats cannot occur in a `serde_json::Value`.

use serde_json::Value;

/// Appends the canonical serialization of `value` to `out`.
pub fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                if i < 0 {
                    out.push(b'-');
                }
                write_u64(i.unsigned_abs(), out);
            } else if let Some(u) = n.as_u64() {
                write_u64(u, out);
            } else if let Some(f) = n.as_f64() {
                write_f64(f, out);
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
    }
}

/// Appends `n` in decimal (the canonical form of an integer), without allocating.
pub fn write_u64(n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        // `n % 10` is below 10.
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The canonical serialization of `value`.
pub fn to_canonical_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(value, &mut out);
    out
}

/// Whether any of the 8 bytes of `w` needs escaping: a control character (below U+0020), `"` or
/// `\\`. Exact for "any" (the classic SWAR zero-byte and less-than tests).
#[inline]
fn any_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    (below_space | zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\')))) != 0
}

/// The length of the longest prefix of `bytes` that needs no escaping.
#[inline]
fn clean_prefix(bytes: &[u8]) -> usize {
    let mut i = 0;
    for chunk in bytes.chunks_exact(8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        if any_needs_escape(u64::from_le_bytes(w)) {
            break;
        }
        i += 8;
    }
    while i < bytes.len() && !needs_escape(bytes[i]) {
        i += 1;
    }
    i
}

#[inline]
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Writes a JSON string literal with the canonical escaping.
pub fn write_string(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // The common case: nothing to escape, one copy.
    let clean = clean_prefix(bytes);
    out.extend_from_slice(&bytes[..clean]);
    if clean < bytes.len() {
        write_escaped(&bytes[clean..], out);
    }
    out.push(b'"');
}

/// Writes `bytes` (the inside of a string, from its first byte that needs escaping) escaped.
#[cold]
fn write_escaped(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0a => b"\\n",
            0x0c => b"\\f",
            0x0d => b"\\r",
            0x00..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// ECMAScript `Number.prototype.toString` for a finite double (RFC 8785 §3.2.2.3).
fn write_f64(f: f64, out: &mut Vec<u8>) {
    if f == 0.0 || !f.is_finite() {
        out.push(b'0');
        return;
    }
    if f < 0.0 {
        out.push(b'-');
    }
    // `{:e}` gives the shortest round-trip digits: "d.ddddeX" or "deX".
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let k = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    let n = exp + 1; // position of the decimal point relative to the digits
    let digits = digits.as_bytes();
    if k <= n && n <= 21 {
        out.extend_from_slice(digits);
        out.extend(std::iter::repeat_n(
            b'0',
            usize::try_from(n - k).unwrap_or(0),
        ));
    } else if 0 < n && n <= 21 {
        let n = usize::try_from(n).unwrap_or(0);
        out.extend_from_slice(&digits[..n]);
        out.push(b'.');
        out.extend_from_slice(&digits[n..]);
    } else if -6 < n && n <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', usize::try_from(-n).unwrap_or(0)));
        out.extend_from_slice(digits);
    } else {
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.push(b'e');
        out.push(if n > 0 { b'+' } else { b'-' });
        write_u64(u64::from((n - 1).unsigned_abs()), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(v: &Value) -> String {
        String::from_utf8(to_canonical_vec(v)).unwrap()
    }

    /// The escaping rules byte by byte, as a reference for the word-at-a-time scan.
    fn write_string_bytewise(s: &str, out: &mut Vec<u8>) {
        out.push(b'"');
        for &b in s.as_bytes() {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                0x08 => out.extend_from_slice(b"\\b"),
                0x09 => out.extend_from_slice(b"\\t"),
                0x0a => out.extend_from_slice(b"\\n"),
                0x0c => out.extend_from_slice(b"\\f"),
                0x0d => out.extend_from_slice(b"\\r"),
                0x00..=0x1f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
                _ => out.push(b),
            }
        }
        out.push(b'"');
    }

    #[test]
    fn string_escaping_matches_the_bytewise_rules_at_every_offset() {
        let specials: Vec<char> = (0u8..0x20)
            .map(char::from)
            .chain([
                '"', '\\', '/', ' ', '!', '#', '[', ']', '~', '\u{7f}', 'é', '€', '😀',
            ])
            .collect();
        for len in 0..20 {
            for pos in 0..=len {
                for &c in &specials {
                    let mut text: String = "abcdefghijklmnopqrstuvwxyz".chars().take(len).collect();
                    text.insert(pos.min(text.len()), c);
                    let (mut fast, mut slow) = (Vec::new(), Vec::new());
                    write_string(&text, &mut fast);
                    write_string_bytewise(&text, &mut slow);
                    assert_eq!(fast, slow, "{text:?}");
                }
            }
        }
    }

    #[test]
    fn numbers_follow_ecmascript() {
        for (f, s) in [
            (1.0, "1"),
            (1.5, "1.5"),
            (-0.0, "0"),
            (100.0, "100"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (1e-7, "1e-7"),
            (1e-6, "0.000001"),
            (0.1, "0.1"),
            (123.456, "123.456"),
            (1.2345e-9, "1.2345e-9"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (-4.5e30, "-4.5e+30"),
        ] {
            let mut out = Vec::new();
            write_f64(f, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), s, "{f}");
        }
    }

    #[test]
    fn keys_sort_by_utf16_units() {
        // RFC 8785 §3.2.3: U+1F600 (surrogates D83D DE00) sorts before U+FB33, unlike in
        // code-point order.
        let v = json!({"\u{fb33}": 1, "\u{1f600}": 2, "\u{20ac}": 3, "b": 4, "a": [true, null, "x\n\u{1}"]});
        assert_eq!(
            canon(&v),
            "{\"a\":[true,null,\"x\\n\\u0001\"],\"b\":4,\"\u{20ac}\":3,\"\u{1f600}\":2,\"\u{fb33}\":1}"
        );
    }

    #[test]
    fn canonical_form_is_a_fixed_point() {
        let v = json!({"z": {"y": 1.25, "x": -3}, "s": "é/\"\\", "n": 18446744073709551615u64});
        let once = canon(&v);
        let reparsed: Value = serde_json::from_str(&once).unwrap();
        assert_eq!(canon(&reparsed), once);
        assert_eq!(
            once,
            r#"{"n":18446744073709551615,"s":"é/\"\\","z":{"x":-3,"y":1.25}}"#
        );
    }
}
