//! PII and secret detection, and what to do with what is found.
//!
//! The design follows Presidio's cheap deterministic layer: each [`Recognizer`] is a regular
//! expression proposing candidates, a validator rejecting look-alikes (Luhn for cards, mod-97
//! for IBANs, the SSA's invalid ranges for SSNs, libphonenumber metadata for phone numbers,
//! `std::net` for IP addresses, a decodable header for JWTs), a base score, and context words
//! that raise the score when they appear just before the match. Overlapping findings are
//! resolved in favour of the higher score, then the longer span. No NER model runs here:
//! names and addresses are out of scope.
//!
//! A [`PiiGuard`] couples a [`PiiScanner`] with a [`PiiPolicy`] (an action per type:
//! redact, mask, hash, block). It applies to text ([`PiiGuard::apply_text`]), to a chat
//! request's messages ([`PiiGuard::apply_request`]), and to streamed output chunk by chunk
//! ([`StreamRedactor`]).

pub mod validate;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use llmops_core::{ChatRequest, Content, ContentPart, KnownPart};
use regex::{Regex, RegexSet};
use serde::{Deserialize, Serialize};

use crate::error::{GovernError, Result};

/// The type of a finding.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum PiiType {
    /// An e-mail address.
    Email,
    /// A phone number.
    Phone,
    /// A payment card number.
    CreditCard,
    /// An IBAN.
    Iban,
    /// A US Social Security number.
    UsSsn,
    /// An IPv4 or IPv6 address.
    IpAddress,
    /// An API key of a common provider (OpenAI, Anthropic, GitHub, Slack, Stripe, Google...).
    ApiKey,
    /// An AWS access key id.
    AwsAccessKey,
    /// A PEM private-key block.
    PrivateKey,
    /// A JSON Web Token.
    Jwt,
    /// A custom pattern from the configuration.
    Custom(Arc<str>),
}

impl PiiType {
    /// The type's name (`email`, `credit_card`, ...; a custom pattern's own name).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
            Self::CreditCard => "credit_card",
            Self::Iban => "iban",
            Self::UsSsn => "us_ssn",
            Self::IpAddress => "ip_address",
            Self::ApiKey => "api_key",
            Self::AwsAccessKey => "aws_access_key",
            Self::PrivateKey => "private_key",
            Self::Jwt => "jwt",
            Self::Custom(name) => name,
        }
    }

    /// Whether the type is a credential rather than personal data.
    pub fn is_secret(&self) -> bool {
        matches!(
            self,
            Self::ApiKey | Self::AwsAccessKey | Self::PrivateKey | Self::Jwt
        )
    }
}

impl fmt::Display for PiiType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for PiiType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One thing found in a text.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Finding {
    /// What it is.
    #[serde(rename = "type")]
    pub kind: PiiType,
    /// Byte offset of its start.
    pub start: usize,
    /// Byte offset just past its end.
    pub end: usize,
    /// Confidence in `[0, 1]`.
    pub score: f32,
}

type Validator = fn(&str) -> bool;

/// A pattern, a validator and a score for one type.
#[derive(Clone)]
pub struct Recognizer {
    kind: PiiType,
    regex: Regex,
    validator: Option<Validator>,
    score: f32,
    context: &'static [&'static str],
    context_boost: f32,
}

impl fmt::Debug for Recognizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recognizer")
            .field("kind", &self.kind)
            .field("regex", &self.regex.as_str())
            .finish()
    }
}

impl Recognizer {
    /// A custom recognizer: every match of `pattern` is a finding of type `name` with
    /// `score`.
    pub fn custom(name: &str, pattern: &str, score: f32) -> Result<Self> {
        let regex = Regex::new(pattern).map_err(|source| GovernError::Pattern {
            pattern: pattern.to_owned(),
            source,
        })?;
        Ok(Self {
            kind: PiiType::Custom(Arc::from(name)),
            regex,
            validator: None,
            score: score.clamp(0.0, 1.0),
            context: &[],
            context_boost: 0.0,
        })
    }

    fn builtin(
        kind: PiiType,
        pattern: &str,
        validator: Option<Validator>,
        score: f32,
        context: &'static [&'static str],
    ) -> Self {
        #[allow(clippy::expect_used)] // built-in patterns are tested constants
        let regex = Regex::new(pattern).expect("built-in PII pattern compiles");
        Self {
            kind,
            regex,
            validator,
            score,
            context,
            context_boost: 0.35,
        }
    }

    /// The type this recognizer finds.
    pub fn kind(&self) -> &PiiType {
        &self.kind
    }
}

/// Whether the match is part of a longer token: an alphanumeric character right before or
/// after it, or one of `joiners` (such as `.` for IP addresses) followed (after the end) or
/// preceded (before the start) by an alphanumeric character.
fn glued(text: &str, start: usize, end: usize, joiners: &[u8]) -> bool {
    let b = text.as_bytes();
    let alnum = |i: usize| b.get(i).is_some_and(u8::is_ascii_alphanumeric);
    let before = start > 0
        && (alnum(start - 1) || (joiners.contains(&b[start - 1]) && start > 1 && alnum(start - 2)));
    let after = end < b.len() && (alnum(end) || (joiners.contains(&b[end]) && alnum(end + 1)));
    before || after
}

fn builtin_recognizers() -> Vec<Recognizer> {
    use PiiType as T;
    use validate as v;
    vec![
        Recognizer::builtin(
            T::Email,
            r"(?i)[a-z0-9._%+\-]+@[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?)+",
            Some(v::email),
            0.95,
            &[],
        ),
        Recognizer::builtin(
            T::CreditCard,
            r"\b\d(?:[ \-]?\d){12,18}\b",
            Some(v::credit_card),
            0.9,
            &[
                "card",
                "credit",
                "visa",
                "mastercard",
                "amex",
                "cc",
                "discover",
                "payment",
            ],
        ),
        Recognizer::builtin(
            T::Iban,
            r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
            Some(v::iban),
            0.95,
            &[],
        ),
        Recognizer::builtin(
            T::UsSsn,
            r"\b\d{3}[- .]?\d{2}[- .]?\d{4}\b",
            Some(v::us_ssn),
            0.85,
            &["ssn", "social security", "social-security", "ss#", "ss #"],
        ),
        Recognizer::builtin(
            T::Phone,
            r"(?:\+\d|\(\d|\b\d)[\d \t().\-]{5,22}\d\b",
            Some(v::phone),
            0.6,
            &[
                "phone", "tel", "call", "mobile", "cell", "fax", "whatsapp", "number", "reach me",
            ],
        ),
        Recognizer::builtin(
            T::IpAddress,
            r"\b(?:\d{1,3}\.){3}\d{1,3}\b",
            Some(v::ipv4),
            0.8,
            &["ip", "host", "server", "address"],
        ),
        Recognizer::builtin(
            T::IpAddress,
            r"(?i)(?:[0-9a-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9a-f]{0,4})",
            Some(v::ipv6),
            0.85,
            &[],
        ),
        Recognizer::builtin(
            T::AwsAccessKey,
            r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",
            None,
            0.95,
            &[],
        ),
        Recognizer::builtin(
            T::ApiKey,
            concat!(
                r"\bsk-(?:proj-|svcacct-|admin-|ant-(?:api|admin)\d{2}-)?[A-Za-z0-9_\-]{20,}",
                r"|\bgh[pousr]_[A-Za-z0-9]{36,}\b",
                r"|\bgithub_pat_[A-Za-z0-9_]{22,}",
                r"|\bglpat-[A-Za-z0-9_\-]{20,}",
                r"|\bxox[abposr]-[A-Za-z0-9\-]{10,}",
                r"|\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}",
                r"|\bAIza[0-9A-Za-z_\-]{35}",
                r"|\bhf_[A-Za-z]{30,}\b",
            ),
            None,
            0.95,
            &[],
        ),
        Recognizer::builtin(
            T::PrivateKey,
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|[A-Za-z0-9+/=\s]*)",
            None,
            1.0,
            &[],
        ),
        Recognizer::builtin(
            T::Jwt,
            r"\beyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{10,}",
            Some(v::jwt),
            0.95,
            &[],
        ),
    ]
}

/// Finds PII and secrets in text.
#[derive(Clone, Debug)]
pub struct PiiScanner {
    recognizers: Vec<Recognizer>,
    /// Every recognizer's pattern in one set: one pass over an ASCII text tells which
    /// recognizers match at all, so a text without PII is scanned once rather than once per
    /// recognizer.
    /// `None` when the patterns do not compile as one set (then each is searched).
    prefilter: Option<RegexSet>,
    min_score: f32,
}

impl Default for PiiScanner {
    fn default() -> Self {
        Self::from_recognizers(builtin_recognizers())
    }
}

impl PiiScanner {
    /// The built-in recognizers, reporting findings scoring at least 0.5.
    pub fn new() -> Self {
        Self::default()
    }

    fn from_recognizers(recognizers: Vec<Recognizer>) -> Self {
        Self {
            prefilter: prefilter(&recognizers),
            recognizers,
            min_score: 0.5,
        }
    }

    /// Adds a recognizer (builder style).
    #[must_use]
    pub fn with_recognizer(mut self, r: Recognizer) -> Self {
        self.recognizers.push(r);
        self.prefilter = prefilter(&self.recognizers);
        self
    }

    /// Sets the minimum score of reported findings (builder style).
    #[must_use]
    pub fn with_min_score(mut self, min: f32) -> Self {
        self.min_score = min;
        self
    }

    /// Every finding in `text`, sorted by start, without overlaps.
    pub fn scan(&self, text: &str) -> Vec<Finding> {
        let mut raw = Vec::new();
        // The set's lazy DFA handles `\b` only in ASCII text (elsewhere it would fall back to a
        // much slower engine for all patterns at once): non-ASCII text is searched per
        // recognizer.
        let matching = self
            .prefilter
            .as_ref()
            .filter(|_| text.is_ascii())
            .map(|set| set.matches(text));
        if matching.as_ref().is_some_and(|m| !m.matched_any()) {
            return raw;
        }
        let lower_cache: std::cell::OnceCell<String> = std::cell::OnceCell::new();
        for (i, r) in self.recognizers.iter().enumerate() {
            if matching.as_ref().is_some_and(|m| !m.matched(i)) {
                continue;
            }
            for m in r.regex.find_iter(text) {
                let start = m.start();
                let mut end = m.end();
                if matches!(r.kind, PiiType::IpAddress | PiiType::Email)
                    && glued(
                        text,
                        start,
                        end,
                        if r.kind == PiiType::Email { b"" } else { b".:" },
                    )
                {
                    continue;
                }
                if let Some(valid) = r.validator {
                    // A match may have swallowed a following group ("… 1332 EUR"): retry
                    // without its last space-separated part, twice at most.
                    let mut ok = valid(&text[start..end]);
                    for _ in 0..2 {
                        if ok {
                            break;
                        }
                        match text[start..end].rfind(' ') {
                            Some(i) if i > 0 => {
                                end = start + i;
                                ok = valid(&text[start..end]);
                            }
                            _ => break,
                        }
                    }
                    if !ok {
                        continue;
                    }
                }
                let s = &text[start..end];
                let mut score = r.score;
                // Nine bare digits are a very weak SSN signal (Presidio: 0.05) unless context
                // words say otherwise.
                if r.kind == PiiType::UsSsn && s.bytes().all(|b| b.is_ascii_digit()) {
                    score = 0.3;
                }
                // Likewise a bare digit run read as a national phone number.
                if r.kind == PiiType::Phone && s.bytes().all(|b| b.is_ascii_digit()) {
                    score = 0.3;
                }
                if !r.context.is_empty() {
                    let lower = lower_cache.get_or_init(|| text.to_ascii_lowercase());
                    let from = floor_char_boundary(text, start.saturating_sub(48));
                    let window = &lower[from..start];
                    if r.context.iter().any(|w| window.contains(w)) {
                        score = (score + r.context_boost).min(1.0);
                    }
                }
                if score >= self.min_score {
                    raw.push(Finding {
                        kind: r.kind.clone(),
                        start,
                        end,
                        score,
                    });
                }
            }
        }
        resolve_overlaps(raw)
    }
}

/// The set of all recognizers' patterns (index `i` is recognizer `i`), if it compiles.
fn prefilter(recognizers: &[Recognizer]) -> Option<RegexSet> {
    RegexSet::new(recognizers.iter().map(|r| r.regex.as_str())).ok()
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Keeps the best of overlapping findings: higher score, then longer span, then earlier.
fn resolve_overlaps(mut raw: Vec<Finding>) -> Vec<Finding> {
    raw.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then((b.end - b.start).cmp(&(a.end - a.start)))
            .then(a.start.cmp(&b.start))
    });
    let mut kept: Vec<Finding> = Vec::with_capacity(raw.len());
    for f in raw {
        if kept.iter().all(|k| f.end <= k.start || f.start >= k.end) {
            kept.push(f);
        }
    }
    kept.sort_by_key(|f| f.start);
    kept
}

/// What to do with a finding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum PiiAction {
    /// Leave it.
    #[default]
    Off,
    /// Replace it with a typed placeholder: `[EMAIL]`.
    Redact,
    /// Replace its characters with `*`, keeping the last four of numbers.
    Mask,
    /// Replace it with a keyed hash: `[EMAIL:3f2a9c1e0b7d]` (equal values, equal hashes).
    Hash,
    /// Refuse the whole text.
    Block,
}

impl PiiAction {
    /// The action's name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Redact => "redact",
            Self::Mask => "mask",
            Self::Hash => "hash",
            Self::Block => "block",
        }
    }
}

/// An action per type, with a default.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct PiiPolicy {
    /// The action for types without their own.
    pub default_action: PiiAction,
    /// Actions by type name (`email`, `credit_card`, a custom name...).
    pub per_type: BTreeMap<String, PiiAction>,
}

impl PiiPolicy {
    /// `action` for every type.
    pub fn uniform(action: PiiAction) -> Self {
        Self {
            default_action: action,
            per_type: BTreeMap::new(),
        }
    }

    /// Sets the action of one type (builder style).
    #[must_use]
    pub fn with(mut self, kind: &str, action: PiiAction) -> Self {
        self.per_type.insert(kind.to_owned(), action);
        self
    }

    /// The action for `kind`.
    pub fn action(&self, kind: &PiiType) -> PiiAction {
        self.per_type
            .get(kind.as_str())
            .copied()
            .unwrap_or(self.default_action)
    }
}

/// A text was refused because it contains types whose action is `block`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("content contains blocked data types: {}", types.join(", "))]
#[non_exhaustive]
pub struct Blocked {
    /// The blocked types found.
    pub types: Vec<String>,
}

impl From<Blocked> for llmops_core::Error {
    fn from(b: Blocked) -> Self {
        llmops_core::Error::new(llmops_core::ErrorKind::PolicyViolation, b.to_string())
    }
}

/// The result of applying a guard to a text.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Applied<'a> {
    /// The text with actions applied (borrowed when nothing changed).
    pub text: Cow<'a, str>,
    /// What was found (spans refer to the input text).
    pub findings: Vec<Finding>,
}

/// A scanner and a policy: finds PII and applies the actions.
#[derive(Clone, Debug)]
pub struct PiiGuard {
    scanner: PiiScanner,
    policy: PiiPolicy,
    hash_key: [u8; 32],
}

impl Default for PiiGuard {
    /// The built-in recognizers; every type redacted.
    fn default() -> Self {
        Self::new(PiiScanner::default(), PiiPolicy::uniform(PiiAction::Redact))
    }
}

impl PiiGuard {
    /// A guard. The key of the `hash` action is derived from a fixed context; set your own
    /// with [`PiiGuard::with_hash_key`] so hashes cannot be reversed by guessing.
    pub fn new(scanner: PiiScanner, policy: PiiPolicy) -> Self {
        Self {
            scanner,
            policy,
            hash_key: blake3::derive_key("llmops pii hash v1", b""),
        }
    }

    /// Sets the key of the `hash` action (builder style).
    #[must_use]
    pub fn with_hash_key(mut self, key: [u8; 32]) -> Self {
        self.hash_key = key;
        self
    }

    /// The scanner.
    pub fn scanner(&self) -> &PiiScanner {
        &self.scanner
    }

    /// The policy.
    pub fn policy(&self) -> &PiiPolicy {
        &self.policy
    }

    /// Applies the policy to `text`.
    pub fn apply_text<'a>(&self, text: &'a str) -> std::result::Result<Applied<'a>, Blocked> {
        let findings = self.scanner.scan(text);
        let blocked: Vec<String> = findings
            .iter()
            .filter(|f| self.policy.action(&f.kind) == PiiAction::Block)
            .map(|f| f.kind.as_str().to_owned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !blocked.is_empty() {
            return Err(Blocked { types: blocked });
        }
        let text = self.rewrite(text, &findings, false);
        Ok(Applied { text, findings })
    }

    /// Applies the policy for logging: never refuses (`block` redacts instead).
    pub fn redact_for_log(&self, text: &str) -> String {
        let findings = self.scanner.scan(text);
        self.rewrite(text, &findings, true).into_owned()
    }

    fn rewrite<'a>(
        &self,
        text: &'a str,
        findings: &[Finding],
        block_as_redact: bool,
    ) -> Cow<'a, str> {
        let mut out = String::new();
        let mut last = 0;
        let mut changed = false;
        for f in findings {
            let action = match self.policy.action(&f.kind) {
                PiiAction::Block if block_as_redact => PiiAction::Redact,
                a => a,
            };
            if matches!(action, PiiAction::Off | PiiAction::Block) {
                continue;
            }
            if !changed {
                out.reserve(text.len());
                changed = true;
            }
            out.push_str(&text[last..f.start]);
            let value = &text[f.start..f.end];
            let tag = f.kind.as_str().to_ascii_uppercase();
            match action {
                PiiAction::Redact => {
                    out.push('[');
                    out.push_str(&tag);
                    out.push(']');
                }
                PiiAction::Hash => {
                    let h = blake3::keyed_hash(&self.hash_key, value.as_bytes());
                    out.push_str(&format!("[{tag}:{}]", &h.to_hex()[..12]));
                }
                PiiAction::Mask => out.push_str(&mask(value, &f.kind)),
                PiiAction::Off | PiiAction::Block => {}
            }
            last = f.end;
        }
        if !changed {
            return Cow::Borrowed(text);
        }
        out.push_str(&text[last..]);
        Cow::Owned(out)
    }

    /// Applies the policy to the text of every message of `req` (string content and text
    /// parts), in place. Returns the findings per message index.
    pub fn apply_request(
        &self,
        req: &mut ChatRequest,
    ) -> std::result::Result<Vec<(usize, Vec<Finding>)>, Blocked> {
        let mut report = Vec::new();
        for (i, msg) in req.messages.iter_mut().enumerate() {
            let mut found = Vec::new();
            match &mut msg.content {
                Some(Content::Text(s)) => {
                    let applied = self.apply_text(s)?;
                    found.extend(applied.findings);
                    if let Cow::Owned(new) = applied.text {
                        *s = new;
                    }
                }
                Some(Content::Parts(parts)) => {
                    for part in parts.iter_mut() {
                        if let ContentPart::Known(KnownPart::Text { text, .. }) = part {
                            let applied = self.apply_text(text)?;
                            found.extend(applied.findings);
                            if let Cow::Owned(new) = applied.text {
                                *text = new;
                            }
                        }
                    }
                }
                _ => {}
            }
            if !found.is_empty() {
                report.push((i, found));
            }
        }
        Ok(report)
    }
}

fn mask(value: &str, kind: &PiiType) -> String {
    let keep_last = matches!(
        kind,
        PiiType::CreditCard | PiiType::Phone | PiiType::Iban | PiiType::UsSsn
    );
    let n_alnum = value.chars().filter(char::is_ascii_alphanumeric).count();
    let mut seen = 0;
    value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                seen += 1;
                if keep_last && n_alnum - seen < 4 {
                    c
                } else {
                    '*'
                }
            } else if keep_last {
                c
            } else {
                '*'
            }
        })
        .collect()
}

/// Applies a [`PiiGuard`] to streamed text, chunk by chunk.
///
/// A secret or number may be split across chunks, so the redactor holds back the end of what
/// it has seen: at least `tail` bytes, and the whole last whitespace-free token (API keys,
/// JWTs) or an unterminated `-----BEGIN … PRIVATE KEY-----` block — up to `max_hold` bytes,
/// past which text is released anyway. Call [`StreamRedactor::finish`] at the end of the
/// stream to release the rest.
#[derive(Debug)]
pub struct StreamRedactor {
    guard: Arc<PiiGuard>,
    buf: String,
    tail: usize,
    max_hold: usize,
    findings: Vec<Finding>,
    offset: usize,
}

impl StreamRedactor {
    /// A redactor holding back 64 bytes and at most 16 KiB.
    pub fn new(guard: Arc<PiiGuard>) -> Self {
        Self {
            guard,
            buf: String::new(),
            tail: 64,
            max_hold: 16 * 1024,
            findings: Vec::new(),
            offset: 0,
        }
    }

    /// Sets the minimum and maximum bytes held back (builder style).
    #[must_use]
    pub fn with_hold(mut self, tail: usize, max_hold: usize) -> Self {
        self.tail = tail;
        self.max_hold = max_hold.max(tail);
        self
    }

    /// Everything found so far (offsets in the whole stream's input text).
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// Feeds a chunk; returns the text that can be released now (possibly empty).
    pub fn push(&mut self, chunk: &str) -> std::result::Result<String, Blocked> {
        self.buf.push_str(chunk);
        let mut cut = floor_char_boundary(&self.buf, self.buf.len().saturating_sub(self.tail));
        // Do not cut inside a whitespace-free token (keys, tokens, addresses).
        let token_start = self.buf[..cut]
            .rfind(|c: char| c.is_whitespace())
            .map_or(0, |i| {
                i + self.buf[i..].chars().next().map_or(1, char::len_utf8)
            });
        if cut < self.buf.len() && !self.buf[cut..].starts_with(char::is_whitespace) {
            cut = token_start;
        }
        // Do not release part of an unterminated private-key block.
        if let Some(b) = self.buf.rfind("-----BEGIN ")
            && !self.buf[b..].contains("-----END ")
        {
            cut = cut.min(b);
        }
        let floor = floor_char_boundary(&self.buf, self.buf.len().saturating_sub(self.max_hold));
        cut = cut.max(floor);
        // Never cut through a finding.
        for f in self.guard.scanner.scan(&self.buf) {
            if f.start < cut && cut < f.end {
                cut = if f.start >= floor { f.start } else { f.end };
            }
        }
        self.release(cut)
    }

    /// Releases everything still held.
    pub fn finish(&mut self) -> std::result::Result<String, Blocked> {
        let n = self.buf.len();
        self.release(n)
    }

    fn release(&mut self, cut: usize) -> std::result::Result<String, Blocked> {
        if cut == 0 {
            return Ok(String::new());
        }
        let head: String = self.buf.drain(..cut).collect();
        let applied = self.guard.apply_text(&head)?;
        let offset = self.offset;
        self.findings
            .extend(applied.findings.iter().map(|f| Finding {
                start: f.start + offset,
                end: f.end + offset,
                ..f.clone()
            }));
        self.offset += cut;
        Ok(applied.text.into_owned())
    }
}

#[cfg(test)]
mod tests;
