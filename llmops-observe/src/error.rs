//! The crate's error type.

/// What can go wrong while setting up observability.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObserveError {
    /// The Prometheus recorder could not be built or installed (another recorder is set).
    #[cfg(feature = "prometheus")]
    #[error("cannot install the Prometheus recorder: {0}")]
    Prometheus(#[from] metrics_exporter_prometheus::BuildError),
    /// A configuration value is invalid.
    #[error("invalid observability configuration: {0}")]
    Config(String),
    /// A secret named by an `*_env` key is not set.
    #[error("environment variable {0} (named by the alert configuration) is not set")]
    MissingEnv(String),
    /// An HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}
