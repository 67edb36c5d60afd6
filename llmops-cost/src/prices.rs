//! The price catalog and the cost of a response.
//!
//! # Money
//!
//! Rates are held as integer pico-dollars (1e-12 USD) per token, parsed from the USD per
//! million tokens of the prices file, so that a cost is an exact integer sum and the same
//! usage always costs the same — streamed or not, in any order. The total is rounded *up* to
//! the nano-dollar of [`Usd`] once, at the end.
//!
//! # Cached, cache-write and reasoning tokens
//!
//! Cost is computed from the normalized [`Usage`], whose `input_tokens` include cached ones
//! whatever the provider's convention (OpenAI counts cached reads inside `prompt_tokens`,
//! Anthropic reports them apart; `llmops-core` normalizes both):
//!
//! | tokens | rate | when the rate is absent |
//! |---|---|---|
//! | `input − cache_read − cache_write` | `input` | error |
//! | `cache_read` | `cache_read` | `input` |
//! | `cache_write` (5 min) | `cache_write` | `input` |
//! | `cache_write` (1 h, from Anthropic's raw `cache_creation.ephemeral_1h_input_tokens`) | `cache_write_1h` | `cache_write` |
//! | `output − reasoning` | `output` | error |
//! | `reasoning` | `reasoning` | `output` |
//!
//! An "error" rate is only an error when tokens need it: a catalog entry without an output
//! price can still price an embedding. A model that is not in the catalog at all is
//! [`CostError::UnknownModel`] unless a default price is configured — never a silent zero.
//!
//! # Sources
//!
//! The catalog bundled in `data/prices.toml` records the source and date of every price and
//! lists what it could not source. Extend or override it with a TOML file of the same shape
//! ([`PriceCatalog::merge_toml`]) or a LiteLLM `model_prices_and_context_window.json`
//! ([`PriceCatalog::merge_litellm_json`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use llmops_core::{Usage, Usd};
use serde::{Deserialize, Serialize};

use crate::error::CostError;

const BUNDLED: &str = include_str!("../data/prices.toml");

/// A price per token, in pico-dollars (1e-12 USD).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate(u64);

impl Rate {
    /// Zero.
    pub const ZERO: Rate = Rate(0);

    /// From USD per million tokens; `None` for negative or non-finite values.
    pub fn per_million(usd: f64) -> Option<Rate> {
        if !usd.is_finite() || usd < 0.0 {
            return None;
        }
        let picos = (usd * 1e6).round();
        (picos <= u64::MAX as f64).then_some(Rate(picos as u64))
    }

    /// From pico-dollars per token.
    pub const fn from_picos(picos: u64) -> Rate {
        Rate(picos)
    }

    /// Pico-dollars per token.
    pub const fn picos(self) -> u64 {
        self.0
    }

    /// USD per million tokens.
    pub fn usd_per_million(self) -> f64 {
        self.0 as f64 / 1e6
    }

    fn times(self, tokens: u64) -> u128 {
        u128::from(self.0) * u128::from(tokens)
    }
}

fn picos_to_usd(picos: u128) -> Usd {
    let nanos = picos.div_ceil(1000);
    Usd::from_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
}

/// The prices of one model.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ModelPrice {
    /// The catalog name.
    pub model: String,
    /// Uncached input.
    pub input: Option<Rate>,
    /// Output (reasoning included unless `reasoning` is set).
    pub output: Option<Rate>,
    /// Input read from the provider's prompt cache.
    pub cache_read: Option<Rate>,
    /// Input written to the provider's prompt cache (5-minute TTL at Anthropic).
    pub cache_write: Option<Rate>,
    /// Input written with a 1-hour TTL.
    pub cache_write_1h: Option<Rate>,
    /// Hidden reasoning output, when priced apart.
    pub reasoning: Option<Rate>,
    /// Where the prices come from.
    pub source: Option<String>,
    /// When they were recorded.
    pub date: Option<String>,
    /// Rates the source did not give.
    pub unsourced: Vec<String>,
}

impl ModelPrice {
    /// A price with `input` and `output` rates in USD per million tokens (for tests and
    /// programmatic catalogs); `None` if a rate is negative or not finite.
    pub fn per_million(model: impl Into<String>, input: f64, output: f64) -> Option<Self> {
        Some(Self {
            model: model.into(),
            input: Some(Rate::per_million(input)?),
            output: Some(Rate::per_million(output)?),
            cache_read: None,
            cache_write: None,
            cache_write_1h: None,
            reasoning: None,
            source: None,
            date: None,
            unsourced: Vec::new(),
        })
    }

    /// Sets the cache-read rate (builder style).
    #[must_use]
    pub fn with_cache_read(mut self, rate: Rate) -> Self {
        self.cache_read = Some(rate);
        self
    }

    /// Sets the cache-write rate (builder style).
    #[must_use]
    pub fn with_cache_write(mut self, rate: Rate) -> Self {
        self.cache_write = Some(rate);
        self
    }

    /// Sets the reasoning rate (builder style).
    #[must_use]
    pub fn with_reasoning(mut self, rate: Rate) -> Self {
        self.reasoning = Some(rate);
        self
    }

    fn need(&self, rate: Option<Rate>, name: &'static str, tokens: u64) -> Result<Rate, CostError> {
        if tokens == 0 {
            return Ok(rate.unwrap_or(Rate::ZERO));
        }
        rate.ok_or_else(|| CostError::MissingRate {
            model: self.model.clone(),
            rate: name,
            tokens,
        })
    }

    /// The cost of `usage`, itemized.
    pub fn cost(&self, usage: &Usage) -> Result<CostBreakdown, CostError> {
        let cache_read = usage.cache_read_tokens.min(usage.input_tokens);
        let cache_write = usage
            .cache_write_tokens
            .min(usage.input_tokens - cache_read);
        let uncached = usage.input_tokens - cache_read - cache_write;
        let write_1h = anthropic_1h_writes(usage).min(cache_write);
        let write_5m = cache_write - write_1h;
        let reasoning = usage.reasoning_tokens.min(usage.output_tokens);
        let output = usage.output_tokens - reasoning;

        let input_rate = self.need(self.input, "input", uncached)?;
        let read_rate = match self.cache_read {
            Some(r) => r,
            None => self.need(self.input, "input", cache_read)?,
        };
        let write_rate = match self.cache_write {
            Some(r) => r,
            None => self.need(self.input, "input", cache_write)?,
        };
        let write_1h_rate = self.cache_write_1h.unwrap_or(write_rate);
        let output_rate = self.need(self.output, "output", output)?;
        let reasoning_rate = match self.reasoning {
            Some(r) => r,
            None => self.need(self.output, "output", reasoning)?,
        };

        let parts = [
            input_rate.times(uncached),
            read_rate.times(cache_read),
            write_rate.times(write_5m) + write_1h_rate.times(write_1h),
            output_rate.times(output),
            reasoning_rate.times(reasoning),
        ];
        let total: u128 = parts.iter().sum();
        // The prompt cache's effect, against the same tokens at the uncached input rate.
        let full = self.input.unwrap_or(Rate::ZERO);
        let read_savings = full.times(cache_read).saturating_sub(parts[1]);
        let write_premium = parts[2].saturating_sub(full.times(cache_write));
        Ok(CostBreakdown {
            input: picos_to_usd(parts[0]),
            cache_read: picos_to_usd(parts[1]),
            cache_write: picos_to_usd(parts[2]),
            output: picos_to_usd(parts[3]),
            reasoning: picos_to_usd(parts[4]),
            total: picos_to_usd(total),
            cache_read_savings: picos_to_usd(read_savings),
            cache_write_premium: picos_to_usd(write_premium),
        })
    }

    /// The most a request can cost: `input_tokens` at the highest input rate (a prompt may
    /// be written to the provider's cache, which costs more than reading it) plus
    /// `max_output_tokens` at the highest output rate.
    pub fn worst_case(&self, input_tokens: u64, max_output_tokens: u64) -> Result<Usd, CostError> {
        let input = self.need(self.input, "input", input_tokens)?;
        let input = input
            .max(self.cache_write.unwrap_or(Rate::ZERO))
            .max(self.cache_write_1h.unwrap_or(Rate::ZERO));
        let out = self.need(self.output, "output", max_output_tokens)?;
        let out = out.max(self.reasoning.unwrap_or(Rate::ZERO));
        Ok(picos_to_usd(
            input.times(input_tokens) + out.times(max_output_tokens),
        ))
    }

    /// The cost of `input_tokens` uncached input tokens.
    pub fn input_cost(&self, input_tokens: u64) -> Result<Usd, CostError> {
        let input = self.need(self.input, "input", input_tokens)?;
        Ok(picos_to_usd(input.times(input_tokens)))
    }
}

/// Tokens written with a 1-hour TTL, when the raw usage is Anthropic's.
fn anthropic_1h_writes(usage: &Usage) -> u64 {
    usage
        .raw
        .as_ref()
        .and_then(|r| r.get("cache_creation"))
        .and_then(|c| c.get("ephemeral_1h_input_tokens"))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

/// A cost, itemized. `total` is rounded up once from the exact sum, so it may exceed the
/// sum of the (individually rounded) items by a few nano-dollars.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CostBreakdown {
    /// Uncached input.
    pub input: Usd,
    /// Cache reads.
    pub cache_read: Usd,
    /// Cache writes.
    pub cache_write: Usd,
    /// Output, reasoning excluded.
    pub output: Usd,
    /// Reasoning.
    pub reasoning: Usd,
    /// Everything.
    pub total: Usd,
    /// What the cache reads saved against the uncached input rate (zero when the model has
    /// no input rate or no separate cache-read rate).
    pub cache_read_savings: Usd,
    /// What the cache writes cost above the uncached input rate.
    pub cache_write_premium: Usd,
}

impl CostBreakdown {
    /// The [`ResponseCost`](llmops_core::ResponseCost) record of this cost for a response of
    /// `tokens` tokens, with its prompt-cache effects.
    pub fn response_cost(&self, tokens: u64) -> llmops_core::ResponseCost {
        llmops_core::ResponseCost::new(self.total, tokens)
            .with_prompt_cache(self.cache_read_savings, self.cache_write_premium)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    #[serde(default)]
    models: HashMap<String, PriceEntry>,
}

/// One model in a TOML prices file (USD per million tokens).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PriceEntry {
    /// Uncached input.
    pub input: Option<f64>,
    /// Output.
    pub output: Option<f64>,
    /// Cache reads.
    pub cache_read: Option<f64>,
    /// Cache writes (5 minutes).
    pub cache_write: Option<f64>,
    /// Cache writes (1 hour).
    pub cache_write_1h: Option<f64>,
    /// Reasoning output.
    pub reasoning: Option<f64>,
    /// Other names of the model.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Also match names starting with the key.
    #[serde(default)]
    pub prefix: bool,
    /// Where the prices come from.
    pub source: Option<String>,
    /// When they were recorded.
    pub date: Option<String>,
    /// Rates the source did not give.
    #[serde(default)]
    pub unsourced: Vec<String>,
}

impl PriceEntry {
    fn to_price(&self, model: &str, path: &str) -> Result<ModelPrice, CostError> {
        let rate = |v: Option<f64>, field: &str| -> Result<Option<Rate>, CostError> {
            v.map(|x| {
                Rate::per_million(x).ok_or_else(|| CostError::PricesParse {
                    path: path.to_owned(),
                    message: format!("model `{model}`: `{field}` must be a finite price >= 0"),
                })
            })
            .transpose()
        };
        Ok(ModelPrice {
            model: model.to_owned(),
            input: rate(self.input, "input")?,
            output: rate(self.output, "output")?,
            cache_read: rate(self.cache_read, "cache_read")?,
            cache_write: rate(self.cache_write, "cache_write")?,
            cache_write_1h: rate(self.cache_write_1h, "cache_write_1h")?,
            reasoning: rate(self.reasoning, "reasoning")?,
            source: self.source.clone(),
            date: self.date.clone(),
            unsourced: self.unsourced.clone(),
        })
    }
}

/// Prices per model: the bundled catalog, extended and overridden by configuration.
///
/// Lookup order: exact name, alias, longest matching prefix entry, then the configured
/// default. A provider prefix (`openai/gpt-4o`) is tried whole first, then without it.
#[derive(Clone, Debug, Default)]
pub struct PriceCatalog {
    models: HashMap<String, Arc<ModelPrice>>,
    aliases: HashMap<String, String>,
    prefixes: Vec<String>,
    default: Option<Arc<ModelPrice>>,
}

impl PriceCatalog {
    /// An empty catalog.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The catalog bundled with the crate (`data/prices.toml`).
    pub fn bundled() -> Self {
        let mut c = Self::empty();
        // The bundled file is checked by a unit test; an error here cannot happen at run time
        // for a released crate, and an empty catalog fails loudly on first lookup anyway.
        if let Err(e) = c.merge_toml(BUNDLED, "<bundled>") {
            tracing::error!(error = %e, "the bundled price catalog is invalid");
        }
        c
    }

    /// Adds (or replaces) one model.
    pub fn insert(&mut self, price: ModelPrice) {
        self.models.insert(price.model.clone(), Arc::new(price));
    }

    /// Sets the price used for models the catalog does not know.
    pub fn set_default(&mut self, price: Option<ModelPrice>) {
        self.default = price.map(Arc::new);
    }

    /// Merges a TOML prices file's text (`[models."name"]` tables; see `data/prices.toml`).
    /// Entries replace existing models of the same name.
    pub fn merge_toml(&mut self, text: &str, path: &str) -> Result<(), CostError> {
        let file: PriceFile = toml::from_str(text).map_err(|e| CostError::PricesParse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mut names: Vec<_> = file.models.keys().cloned().collect();
        names.sort();
        for name in names {
            let entry = &file.models[&name];
            let price = entry.to_price(&name, path)?;
            for alias in &entry.aliases {
                self.aliases.insert(alias.clone(), name.clone());
            }
            if entry.prefix && !self.prefixes.contains(&name) {
                self.prefixes.push(name.clone());
            }
            self.models.insert(name, Arc::new(price));
        }
        self.prefixes.sort_by_key(|p| std::cmp::Reverse(p.len()));
        Ok(())
    }

    /// Merges a LiteLLM `model_prices_and_context_window.json` (USD per token fields
    /// `input_cost_per_token`, `output_cost_per_token`, `cache_read_input_token_cost`,
    /// `cache_creation_input_token_cost`, `output_cost_per_reasoning_token`). Entries without
    /// an input price (images, audio, the `sample_spec`) are skipped. Returns how many models
    /// were merged.
    pub fn merge_litellm_json(&mut self, text: &str, path: &str) -> Result<usize, CostError> {
        let root: serde_json::Value =
            serde_json::from_str(text).map_err(|e| CostError::PricesParse {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        let obj = root.as_object().ok_or_else(|| CostError::PricesParse {
            path: path.to_owned(),
            message: "expected a JSON object keyed by model".into(),
        })?;
        let per_token = |v: &serde_json::Value, k: &str| -> Option<Rate> {
            v.get(k)
                .and_then(serde_json::Value::as_f64)
                .and_then(|x| Rate::per_million(x * 1e6))
        };
        let mut n = 0;
        for (name, v) in obj {
            if name == "sample_spec" {
                continue;
            }
            let Some(input) = per_token(v, "input_cost_per_token") else {
                continue;
            };
            let price = ModelPrice {
                model: name.clone(),
                input: Some(input),
                output: per_token(v, "output_cost_per_token"),
                cache_read: per_token(v, "cache_read_input_token_cost"),
                cache_write: per_token(v, "cache_creation_input_token_cost"),
                cache_write_1h: per_token(v, "cache_creation_input_token_cost_above_1hr"),
                reasoning: per_token(v, "output_cost_per_reasoning_token"),
                source: Some(format!(
                    "LiteLLM model_prices_and_context_window.json ({path})"
                )),
                date: None,
                unsourced: Vec::new(),
            };
            self.models.insert(name.clone(), Arc::new(price));
            n += 1;
        }
        Ok(n)
    }

    /// Merges a prices file: LiteLLM JSON when it ends in `.json`, else TOML.
    pub fn merge_file(&mut self, path: &Path) -> Result<(), CostError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CostError::PricesIo {
            path: shown.clone(),
            source,
        })?;
        if path.extension().is_some_and(|e| e == "json") {
            self.merge_litellm_json(&text, &shown).map(|_| ())
        } else {
            self.merge_toml(&text, &shown)
        }
    }

    fn lookup_exact(&self, model: &str) -> Option<&Arc<ModelPrice>> {
        if let Some(p) = self.models.get(model) {
            return Some(p);
        }
        if let Some(p) = self.aliases.get(model).and_then(|n| self.models.get(n)) {
            return Some(p);
        }
        self.prefixes
            .iter()
            .find(|p| model.starts_with(p.as_str()))
            .and_then(|n| self.models.get(n))
    }

    /// The price of `model`, or the configured default, or [`CostError::UnknownModel`].
    pub fn price(&self, model: &str) -> Result<&Arc<ModelPrice>, CostError> {
        let found = self.lookup_exact(model).or_else(|| {
            model
                .split_once('/')
                .and_then(|(_, bare)| self.lookup_exact(bare))
        });
        found
            .or(self.default.as_ref())
            .ok_or_else(|| CostError::UnknownModel {
                model: model.to_owned(),
            })
    }

    /// The cost of `usage` on `model`.
    pub fn cost(&self, model: &str, usage: &Usage) -> Result<CostBreakdown, CostError> {
        self.price(model)?.cost(usage)
    }

    /// The catalog's model names, sorted.
    pub fn models(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.models.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn priced() -> ModelPrice {
        ModelPrice::per_million("m", 2.5, 10.0)
            .unwrap()
            .with_cache_read(Rate::per_million(1.25).unwrap())
            .with_cache_write(Rate::per_million(3.125).unwrap())
    }

    #[test]
    fn bundled_catalog_parses_and_marks_unsourced() {
        let mut c = PriceCatalog::empty();
        c.merge_toml(BUNDLED, "<bundled>").unwrap();
        let p = c.price("claude-sonnet-4-20250514").unwrap();
        assert_eq!(p.input, Rate::per_million(3.0));
        assert_eq!(p.cache_read, Rate::per_million(0.30));
        assert!(p.source.is_some() && p.date.is_some());
        for m in c.models() {
            let p = c.price(m).unwrap();
            assert!(p.source.is_some(), "{m} has no source");
            assert!(p.output.is_some() || p.unsourced.iter().any(|u| u == "output"));
        }
    }

    #[test]
    fn missing_output_rate_is_an_error_not_zero() {
        let c = PriceCatalog::bundled();
        let err = c.cost("claude-sonnet-4", &Usage::new(10, 5)).unwrap_err();
        assert!(
            matches!(
                err,
                CostError::MissingRate {
                    rate: "output",
                    tokens: 5,
                    ..
                }
            ),
            "{err}"
        );
        // Input-only usage (e.g. counting a prompt) still prices.
        let cost = c
            .cost("claude-sonnet-4", &Usage::new(1_000_000, 0))
            .unwrap();
        assert_eq!(cost.total, Usd::from_f64(3.0));
    }

    #[test]
    fn unknown_model_is_an_error_unless_defaulted() {
        let mut c = PriceCatalog::bundled();
        let err = c.price("no-such-model").unwrap_err();
        assert!(matches!(err, CostError::UnknownModel { .. }));
        assert!(err.to_string().contains("no-such-model"));
        c.set_default(ModelPrice::per_million("default", 1.0, 2.0));
        assert_eq!(c.price("no-such-model").unwrap().model, "default");
    }

    #[test]
    fn lookup_by_alias_prefix_and_provider_prefix() {
        let mut c = PriceCatalog::empty();
        c.merge_toml(
            r#"
            [models."gpt-4o"]
            input = 2.5
            output = 10.0
            prefix = true
            aliases = ["chatgpt-4o-latest"]
            [models."gpt-4o-mini"]
            input = 0.15
            output = 0.6
            prefix = true
            "#,
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            c.price("gpt-4o-mini-2024-07-18").unwrap().model,
            "gpt-4o-mini"
        );
        assert_eq!(c.price("gpt-4o-2024-08-06").unwrap().model, "gpt-4o");
        assert_eq!(c.price("chatgpt-4o-latest").unwrap().model, "gpt-4o");
        assert_eq!(c.price("openai/gpt-4o").unwrap().model, "gpt-4o");
    }

    #[test]
    fn bad_price_files_are_rejected() {
        let mut c = PriceCatalog::empty();
        assert!(c.merge_toml("[models.x]\ninput = -1.0", "bad").is_err());
        assert!(c.merge_toml("[models.x]\ninptu = 1.0", "typo").is_err());
        assert!(c.merge_toml("not toml [", "garbage").is_err());
        assert!(c.merge_litellm_json("[1, 2]", "arr").is_err());
    }

    #[test]
    fn litellm_json_is_read() {
        let mut c = PriceCatalog::empty();
        let n = c
            .merge_litellm_json(
                r#"{"sample_spec": {"input_cost_per_token": 0},
                    "m": {"input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07,
                          "cache_read_input_token_cost": 7.5e-08},
                    "dall-e": {"output_cost_per_image": 0.04}}"#,
                "prices.json",
            )
            .unwrap();
        assert_eq!(n, 1);
        let p = c.price("m").unwrap();
        assert_eq!(p.input.unwrap().usd_per_million(), 0.15);
        assert_eq!(p.cache_read.unwrap().usd_per_million(), 0.075);
    }

    #[test]
    fn cached_reads_writes_and_reasoning_use_their_rates() {
        let p = priced().with_reasoning(Rate::per_million(20.0).unwrap());
        // 1M input of which 600k cached reads and 100k cache writes; 1M output, 250k reasoning.
        let u = Usage::new(1_000_000, 1_000_000)
            .with_cache_read(600_000)
            .with_cache_write(100_000)
            .with_reasoning(250_000);
        let c = p.cost(&u).unwrap();
        assert_eq!(c.input, Usd::from_f64(0.75)); // 300k × 2.5
        assert_eq!(c.cache_read, Usd::from_f64(0.75)); // 600k × 1.25
        assert_eq!(c.cache_write, Usd::from_f64(0.3125)); // 100k × 3.125
        assert_eq!(c.output, Usd::from_f64(7.5)); // 750k × 10
        assert_eq!(c.reasoning, Usd::from_f64(5.0)); // 250k × 20
        assert_eq!(c.total, Usd::from_f64(14.3125));
    }

    #[test]
    fn anthropic_and_openai_conventions_cost_the_same() {
        let p = priced();
        let openai: Usage = serde_json::from_value(serde_json::json!({
            "prompt_tokens": 1000, "completion_tokens": 10,
            "prompt_tokens_details": {"cached_tokens": 800}
        }))
        .unwrap();
        let anthropic = Usage::from_anthropic(200, 800, 0, 10);
        assert_eq!(p.cost(&openai).unwrap(), p.cost(&anthropic).unwrap());
    }

    #[test]
    fn one_hour_cache_writes_use_their_rate() {
        let mut p = priced();
        p.cache_write_1h = Rate::per_million(6.0);
        let u = Usage::from_anthropic(0, 0, 1_000_000, 0).with_raw(serde_json::json!({
            "cache_creation": {"ephemeral_5m_input_tokens": 500_000, "ephemeral_1h_input_tokens": 500_000}
        }));
        assert_eq!(
            p.cost(&u).unwrap().cache_write,
            Usd::from_f64(0.5 * 3.125 + 0.5 * 6.0)
        );
    }

    #[test]
    fn worst_case_covers_any_actual_usage() {
        let p = ModelPrice::per_million("m", 2.5, 10.0).unwrap();
        let wc = p.worst_case(100, 50).unwrap();
        assert_eq!(wc, Usd::from_f64(100.0 * 2.5e-6 + 50.0 * 10e-6));
        // Cache writes cost more than plain input: the worst case assumes them.
        let wc = priced().worst_case(100, 0).unwrap();
        assert_eq!(wc, Usd::from_f64(100.0 * 3.125e-6));
    }

    proptest! {
        /// Cost is additive over usage parts up to rounding, monotone in every token count,
        /// never above the worst case, and independent of how it is split.
        #[test]
        fn accounting_invariants(input in 0u64..5_000_000, read in 0u64..5_000_000,
                                 write in 0u64..5_000_000, output in 0u64..1_000_000,
                                 reasoning in 0u64..1_000_000, extra in 1u64..10_000) {
            let p = priced().with_reasoning(Rate::per_million(15.0).unwrap());
            let u = Usage::new(input, output).with_cache_read(read).with_cache_write(write)
                .with_reasoning(reasoning);
            let c = p.cost(&u).unwrap();
            // Monotone: more output never costs less.
            let mut more = u.clone();
            more.output_tokens += extra;
            prop_assert!(p.cost(&more).unwrap().total >= c.total);
            // Caching never costs more than not caching (read rate below input rate).
            let uncached = Usage::new(u.input_tokens, u.output_tokens).with_reasoning(u.reasoning_tokens);
            let write_share = u.cache_write_tokens;
            if write_share == 0 {
                prop_assert!(c.total <= p.cost(&uncached).unwrap().total);
            }
            // Worst case bounds the actual cost.
            let wc = p.worst_case(u.input_tokens, u.output_tokens).unwrap();
            prop_assert!(c.total <= wc);
            // The total is within rounding of the sum of items.
            let items = c.input + c.cache_read + c.cache_write + c.output + c.reasoning;
            prop_assert!(items.nanos() >= c.total.nanos());
            prop_assert!(items.nanos() - c.total.nanos() <= 5);
        }

        /// Summing the cost of two requests equals the cost of their summed usage (exact
        /// integer arithmetic; at most one nano-dollar of rounding per request).
        #[test]
        fn cost_is_additive(a in 0u64..1_000_000, b in 0u64..1_000_000, c in 0u64..1_000_000, d in 0u64..1_000_000) {
            let p = priced();
            let u1 = Usage::new(a, b);
            let u2 = Usage::new(c, d);
            let mut sum = u1.clone();
            sum.accumulate(&u2);
            let separate = p.cost(&u1).unwrap().total + p.cost(&u2).unwrap().total;
            let together = p.cost(&sum).unwrap().total;
            prop_assert!(separate >= together);
            prop_assert!(separate.nanos() - together.nanos() <= 1);
        }
    }
}
