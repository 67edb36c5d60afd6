//! `llmops tokens`: the exact token count of a text, and its input cost.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use llmops_cost::prices::PriceCatalog;
use llmops_cost::tokens::{Encoding, counter_for_encoding, encoding_for_model};

/// Count the tokens of a text exactly as the model's tokenizer does.
#[derive(Debug, Args)]
pub(crate) struct TokensArgs {
    /// The model whose tokenizer to use (e.g. gpt-4o, gpt-4.1-mini, gpt-4).
    #[arg(long)]
    model: String,
    /// The file to count (standard input when absent).
    file: Option<PathBuf>,
    /// Print JSON: the count, the encoding and the estimated input cost.
    #[arg(long)]
    json: bool,
    /// Use this encoding instead of the model's (o200k_base, cl100k_base).
    #[arg(long)]
    encoding: Option<String>,
    /// A prices file merged over the bundled catalog (TOML, or LiteLLM JSON).
    #[arg(long)]
    prices: Option<PathBuf>,
}

pub(crate) async fn run(args: TokensArgs) -> anyhow::Result<ExitCode> {
    let encoding = match &args.encoding {
        Some(e) => e.parse::<Encoding>()?,
        None => match encoding_for_model(&args.model) {
            Some(e) => e,
            None => bail!(
                "no tokenizer known for model `{}`: pass --encoding o200k_base or cl100k_base",
                args.model
            ),
        },
    };
    let bytes = match &args.file {
        Some(p) => std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read standard input")?;
            buf
        }
    };
    let text = String::from_utf8(bytes).context("the input is not valid UTF-8")?;
    let tokens = counter_for_encoding(encoding).count(&text) as u64;
    if !args.json {
        println!("{tokens}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut catalog = PriceCatalog::bundled();
    if let Some(p) = &args.prices {
        catalog.merge_file(p)?;
    }
    let (cost, note) = match catalog
        .price(&args.model)
        .and_then(|p| p.input_cost(tokens))
    {
        Ok(c) => (Some(c.as_f64()), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let mut out = serde_json::json!({
        "model": args.model,
        "encoding": encoding.as_str(),
        "tokens": tokens,
        "bytes": text.len(),
        "input_cost_usd": cost,
    });
    if let Some(n) = note {
        out["input_cost_note"] = serde_json::Value::String(n);
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}
