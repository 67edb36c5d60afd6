//! Exact token counting for OpenAI encodings.
//!
//! Two implementations of [`TokenCounter`] give identical counts (a parity test checks both
//! against counts recorded from OpenAI's Python `tiktoken` on a varied corpus):
//!
//! - [`BpeCounter`], on GitHub's `bpe-openai` crate: linear-time, about 1.6× faster than
//!   `tiktoken-rs` on ordinary text and an order of magnitude faster on long runs of one
//!   character (see `BENCHMARKS.md`). It is the default ([`counter_for_encoding`]).
//! - [`TiktokenCounter`], on `tiktoken-rs`, kept as the reference and for comparison.
//!
//! Vocabularies are loaded once per process into statics and shared; loading takes tens to
//! hundreds of milliseconds, so a server calls [`warm_up`] at startup instead of paying it on
//! the first request. Special-token strings such as `<|endoftext|>` count as plain text, as
//! they do when a client sends them in a message.
//!
//! [`encoding_for_model`] maps model names to encodings (o200k_base for GPT-4o, GPT-4.1,
//! GPT-4.5, GPT-5, o-series; cl100k_base for GPT-4, GPT-3.5 and the embedding models).

use std::fmt;
use std::str::FromStr;

use llmops_core::TokenCounter;
use serde::{Deserialize, Serialize};

use crate::error::CostError;

/// A byte-level BPE encoding this crate counts exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Encoding {
    /// GPT-4o, GPT-4.1, GPT-4.5, GPT-5, o1/o3/o4.
    O200kBase,
    /// GPT-4, GPT-3.5-turbo, text-embedding-3-*, text-embedding-ada-002.
    Cl100kBase,
}

impl Encoding {
    /// The encoding's name as tiktoken spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::O200kBase => "o200k_base",
            Self::Cl100kBase => "cl100k_base",
        }
    }

    /// Every encoding.
    pub const ALL: [Encoding; 2] = [Encoding::O200kBase, Encoding::Cl100kBase];
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Encoding {
    type Err = CostError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "o200k_base" => Ok(Self::O200kBase),
            "cl100k_base" => Ok(Self::Cl100kBase),
            other => Err(CostError::Config(format!(
                "unknown encoding `{other}` (expected o200k_base or cl100k_base)"
            ))),
        }
    }
}

/// Exact model names → encoding.
const EXACT: &[(&str, Encoding)] = &[
    ("gpt-4", Encoding::Cl100kBase),
    ("gpt-3.5-turbo", Encoding::Cl100kBase),
    ("gpt-35-turbo", Encoding::Cl100kBase),
    ("text-embedding-ada-002", Encoding::Cl100kBase),
    ("text-embedding-3-small", Encoding::Cl100kBase),
    ("text-embedding-3-large", Encoding::Cl100kBase),
    ("o1", Encoding::O200kBase),
    ("o3", Encoding::O200kBase),
    ("o4-mini", Encoding::O200kBase),
    ("gpt-4o", Encoding::O200kBase),
    ("gpt-4.1", Encoding::O200kBase),
    ("gpt-5", Encoding::O200kBase),
];

/// Model-name prefixes → encoding, most specific first (`gpt-4o-` before `gpt-4-`).
const PREFIXES: &[(&str, Encoding)] = &[
    ("gpt-4o", Encoding::O200kBase),
    ("chatgpt-4o", Encoding::O200kBase),
    ("gpt-4.1", Encoding::O200kBase),
    ("gpt-4.5", Encoding::O200kBase),
    ("gpt-5", Encoding::O200kBase),
    ("o1-", Encoding::O200kBase),
    ("o3-", Encoding::O200kBase),
    ("o4-", Encoding::O200kBase),
    ("codex-", Encoding::O200kBase),
    ("gpt-4-", Encoding::Cl100kBase),
    ("gpt-3.5-turbo-", Encoding::Cl100kBase),
    ("gpt-35-turbo-", Encoding::Cl100kBase),
];

/// The encoding of an OpenAI model, by exact name then prefix; a provider prefix such as
/// `openai/` is ignored. `None` for models this crate cannot count exactly.
pub fn encoding_for_model(model: &str) -> Option<Encoding> {
    let model = model.rsplit('/').next().unwrap_or(model);
    if let Some((_, e)) = EXACT.iter().find(|(m, _)| *m == model) {
        return Some(*e);
    }
    PREFIXES
        .iter()
        .find(|(p, _)| model.starts_with(p))
        .map(|(_, e)| *e)
}

/// A [`TokenCounter`] on GitHub's `bpe-openai` (the default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BpeCounter {
    encoding: Encoding,
}

impl BpeCounter {
    /// A counter for `encoding` (the vocabulary is loaded on first use, then shared).
    pub const fn new(encoding: Encoding) -> Self {
        Self { encoding }
    }

    fn tokenizer(&self) -> &'static bpe_openai::Tokenizer {
        match self.encoding {
            Encoding::O200kBase => bpe_openai::o200k_base(),
            Encoding::Cl100kBase => bpe_openai::cl100k_base(),
        }
    }
}

impl TokenCounter for BpeCounter {
    fn encoding(&self) -> &str {
        self.encoding.as_str()
    }

    fn count(&self, text: &str) -> usize {
        self.tokenizer().count(text)
    }
}

/// A [`TokenCounter`] on `tiktoken-rs` (the reference implementation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TiktokenCounter {
    encoding: Encoding,
}

impl TiktokenCounter {
    /// A counter for `encoding` (the vocabulary is loaded on first use, then shared).
    pub const fn new(encoding: Encoding) -> Self {
        Self { encoding }
    }

    fn bpe(&self) -> &'static tiktoken_rs::CoreBPE {
        match self.encoding {
            Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
            Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        }
    }
}

impl TokenCounter for TiktokenCounter {
    fn encoding(&self) -> &str {
        self.encoding.as_str()
    }

    fn count(&self, text: &str) -> usize {
        self.bpe().encode_ordinary(text).len()
    }
}

static BPE_O200K: BpeCounter = BpeCounter::new(Encoding::O200kBase);
static BPE_CL100K: BpeCounter = BpeCounter::new(Encoding::Cl100kBase);

/// The default (shared, `'static`) counter for an encoding.
pub fn counter_for_encoding(encoding: Encoding) -> &'static dyn TokenCounter {
    match encoding {
        Encoding::O200kBase => &BPE_O200K,
        Encoding::Cl100kBase => &BPE_CL100K,
    }
}

/// The default counter for a model, or `None` when its tokenizer is unknown.
pub fn counter_for_model(model: &str) -> Option<&'static dyn TokenCounter> {
    encoding_for_model(model).map(counter_for_encoding)
}

/// Loads every vocabulary now (call it at startup: the first load takes 30–250 ms).
pub fn warm_up() {
    for e in Encoding::ALL {
        counter_for_encoding(e).count("warm up");
    }
}

/// A free upper bound on the tokens of `text` under any byte-level BPE: every token covers
/// at least one byte.
pub fn byte_upper_bound(text: &str) -> usize {
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_map_to_encodings() {
        assert_eq!(encoding_for_model("gpt-4o"), Some(Encoding::O200kBase));
        assert_eq!(
            encoding_for_model("gpt-4o-mini-2024-07-18"),
            Some(Encoding::O200kBase)
        );
        assert_eq!(
            encoding_for_model("openai/gpt-4.1-nano"),
            Some(Encoding::O200kBase)
        );
        assert_eq!(encoding_for_model("gpt-4-0613"), Some(Encoding::Cl100kBase));
        assert_eq!(encoding_for_model("gpt-4"), Some(Encoding::Cl100kBase));
        assert_eq!(encoding_for_model("o3-mini"), Some(Encoding::O200kBase));
        assert_eq!(encoding_for_model("claude-sonnet-4"), None);
        assert_eq!(encoding_for_model(""), None);
    }

    #[test]
    fn encoding_names_round_trip() {
        for e in Encoding::ALL {
            assert_eq!(e.as_str().parse::<Encoding>().unwrap(), e);
        }
        assert!("p50k_base".parse::<Encoding>().is_err());
    }

    #[test]
    fn both_counters_agree_on_a_sample() {
        let text = "Hello, 世界! 🦀 fn main() {}   \n\n";
        for e in Encoding::ALL {
            assert_eq!(
                BpeCounter::new(e).count(text),
                TiktokenCounter::new(e).count(text)
            );
        }
        assert_eq!(BpeCounter::new(Encoding::O200kBase).count(""), 0);
    }

    #[test]
    fn byte_bound_holds() {
        let text = "a mixed 文本 with emoji 😀";
        let c = counter_for_encoding(Encoding::O200kBase);
        assert!(c.count(text) <= byte_upper_bound(text));
    }
}
