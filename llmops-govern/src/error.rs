//! The crate's error type.

use std::path::PathBuf;

use llmops_core::{Error as CoreError, ErrorKind};

/// What can go wrong in the governance crate outside the request pipeline (opening logs,
/// loading keys, parsing configuration). Inside the pipeline, errors are
/// [`llmops_core::Error`]s; [`GovernError`] converts into one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GovernError {
    /// An I/O operation on `path` failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`open`, `write`, `fsync`...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A key file or key string is malformed.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// An existing log cannot be continued (its last record is damaged).
    #[error("audit log {path} cannot be continued: {reason}")]
    CorruptLog {
        /// The log file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The audit writer stopped (its thread ended or the sink was closed).
    #[error("the audit writer has stopped")]
    WriterStopped,
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A regular expression in the configuration does not compile.
    #[error("invalid pattern {pattern:?}: {source}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// The cause.
        #[source]
        source: regex::Error,
    },
    /// Content could not be encrypted or decrypted.
    #[error("content encryption: {0}")]
    Crypto(String),
    /// A PostgreSQL operation failed.
    #[cfg(feature = "postgres")]
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

impl GovernError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

impl From<GovernError> for CoreError {
    fn from(err: GovernError) -> Self {
        let kind = match &err {
            GovernError::Config(_) | GovernError::Pattern { .. } => ErrorKind::InvalidRequest,
            _ => ErrorKind::Internal,
        };
        CoreError::new(kind, err.to_string()).with_source(err)
    }
}

/// A `Result` whose error is [`GovernError`].
pub type Result<T, E = GovernError> = std::result::Result<T, E>;
