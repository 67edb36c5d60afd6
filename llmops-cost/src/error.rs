//! The crate's configuration and catalog errors.
//!
//! Errors that refuse a request in the pipeline are [`llmops_core::Error`]s with a precise
//! `ErrorKind` (`cost_ceiling_exceeded`, `budget_exceeded`,
//! `rate_limit_exceeded`); [`CostError`] covers what goes wrong while loading prices and
//! building layers from configuration, and pricing a model the catalog does not know.

use llmops_core::{Error, ErrorKind};

/// What can go wrong while loading prices, pricing a response or building layers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CostError {
    /// The catalog has no price for the model and no default was configured.
    #[error(
        "no price for model `{model}`: add it to the prices file (`[cost] prices_file`) or \
         configure `default_price`"
    )]
    UnknownModel {
        /// The model asked for.
        model: String,
    },
    /// The model is in the catalog but a rate this usage needs is missing.
    #[error(
        "model `{model}` has no `{rate}` price in the catalog, and the usage has {tokens} such \
         tokens: add the rate to the prices file"
    )]
    MissingRate {
        /// The model.
        model: String,
        /// The missing rate (`input`, `output`...).
        rate: &'static str,
        /// How many tokens needed it.
        tokens: u64,
    },
    /// A prices file could not be read.
    #[error("cannot read prices file {path}: {source}")]
    PricesIo {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A prices file did not parse.
    #[error("invalid prices file {path}: {message}")]
    PricesParse {
        /// The file (or `<bundled>`).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A configuration value is invalid.
    #[error("invalid cost configuration: {0}")]
    Config(String),
    /// The model has no known tokenizer.
    #[error(
        "no tokenizer known for model `{0}`: use an OpenAI model name or map it to an encoding \
         (o200k_base, cl100k_base)"
    )]
    UnknownTokenizer(String),
    /// A backend (Redis) could not be reached or answered an error.
    #[error("{backend} backend error: {message}")]
    Backend {
        /// `redis`...
        backend: &'static str,
        /// What happened.
        message: String,
    },
}

impl From<CostError> for Error {
    fn from(e: CostError) -> Self {
        let kind = match &e {
            CostError::UnknownModel { .. } | CostError::MissingRate { .. } => {
                ErrorKind::InvalidRequest
            }
            CostError::UnknownTokenizer(_) => ErrorKind::InvalidRequest,
            CostError::Backend { .. } => ErrorKind::Overloaded,
            _ => ErrorKind::Internal,
        };
        let code = match &e {
            CostError::UnknownModel { .. } | CostError::MissingRate { .. } => {
                Some("unpriced_model")
            }
            _ => None,
        };
        let err = Error::new(kind, e.to_string());
        let err = match code {
            Some(c) => err.with_code(c).with_param("model"),
            None => err,
        };
        err.with_source(e)
    }
}
