//! The error type of the crate.
//!
//! Configuration and data problems are reported with enough context to fix them without a
//! debugger: a dataset error names the file, the line and the field. Failures of the model
//! under test or of a judge are [`llmops_core::Error`]s; they never surface here as an
//! [`EvalError`] during a run, because the runner records them per sample (ERROR) instead of
//! aborting.

use std::path::PathBuf;

/// Everything that can go wrong while loading, running, comparing or reporting an evaluation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// A dataset record is malformed.
    #[error("{}:{line}: field `{field}`: {message}", file.display())]
    Dataset {
        /// The dataset file.
        file: PathBuf,
        /// The 1-based line where the record starts.
        line: usize,
        /// The offending field (`id`, `input.messages[0].role`, ...), or `-` for the record.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The suite file (or a builder) holds an invalid setting.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A prompt template cannot be rendered for a case.
    #[error("case `{case}`: {message}")]
    Template {
        /// The case id.
        case: String,
        /// What is missing or wrong.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A run file or calibration record could not be parsed.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What did not parse.
        message: String,
    },
    /// A run could not be carried out at all (as opposed to individual samples failing).
    #[error("run failed: {0}")]
    Run(#[from] llmops_core::Error),
    /// The gate refuses to decide (uncalibrated gating judge, too many errors, incompatible
    /// baseline).
    #[error("gate refused: {0}")]
    GateRefused(String),
    /// The experiment tracker rejected a request or could not be reached.
    #[error("MLflow: {0}")]
    Tracking(String),
    /// A prompt registry operation failed.
    #[error("prompt registry: {0}")]
    Registry(String),
}

impl EvalError {
    /// An [`EvalError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`EvalError::Dataset`].
    pub fn dataset(
        file: impl Into<PathBuf>,
        line: usize,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::Dataset {
            file: file.into(),
            line,
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A `Result` whose error is [`EvalError`].
pub type Result<T, E = EvalError> = std::result::Result<T, E>;
