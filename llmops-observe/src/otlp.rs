//! OTLP export of spans (feature `otlp`): the observe layer's spans to Jaeger, Grafana Tempo,
//! Langfuse or any OpenTelemetry collector, over HTTP/protobuf.
//!
//! ```no_run
//! use llmops_observe::otlp::{OtlpConfig, OtlpTracing};
//! use tracing_subscriber::prelude::*;
//!
//! let otlp = OtlpTracing::start(
//!     &OtlpConfig::new("http://127.0.0.1:4318/v1/traces").service_name("llmops-gateway"),
//! )
//! .expect("exporter");
//! tracing_subscriber::registry().with(otlp.layer()).init();
//! // ... serve ...
//! otlp.shutdown().expect("flushed");
//! ```
//!
//! Spans keep the names of [`crate::semconv`]: `otel.name` (`chat gpt-4o`) becomes the span
//! name, `otel.kind` its kind, `otel.status_code` its status, and every other field an
//! attribute. Spans are batched and exported from a background thread; a slow collector
//! never blocks a request (the batch queue drops spans when full). Metrics reach a collector by
//! scraping `/metrics` with its `prometheus` receiver.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use tracing_subscriber::registry::LookupSpan;

use crate::error::ObserveError;

/// Where and how to export spans.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OtlpConfig {
    /// The OTLP/HTTP traces endpoint, e.g. `http://127.0.0.1:4318/v1/traces` or
    /// `https://cloud.langfuse.com/api/public/otel/v1/traces`.
    pub endpoint: String,
    /// `service.name` of the resource (default `llmops`).
    pub service_name: String,
    /// Extra HTTP headers (e.g. `Authorization` for Langfuse's Basic auth).
    pub headers: HashMap<String, String>,
    /// Export timeout (default 10 s).
    pub timeout: Duration,
}

impl fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values are often credentials.
        f.debug_struct("OtlpConfig")
            .field("endpoint", &self.endpoint)
            .field("service_name", &self.service_name)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl OtlpConfig {
    /// Export to `endpoint`.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            service_name: "llmops".into(),
            headers: HashMap::new(),
            timeout: Duration::from_secs(10),
        }
    }

    /// Sets `service.name` (builder style).
    #[must_use]
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = name.into();
        self
    }

    /// Adds a header (builder style).
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Sets the export timeout (builder style).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// A running span exporter. Add [`layer`](Self::layer) to the `tracing` subscriber; call
/// [`shutdown`](Self::shutdown) before exit to flush.
#[derive(Debug)]
pub struct OtlpTracing {
    provider: SdkTracerProvider,
}

impl OtlpTracing {
    /// Builds the exporter and its batch processor (a background thread).
    pub fn start(config: &OtlpConfig) -> Result<Self, ObserveError> {
        let exporter = SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(config.endpoint.clone())
            .with_timeout(config.timeout)
            .with_headers(config.headers.clone())
            .build()
            .map_err(|e| ObserveError::Config(format!("OTLP exporter: {e}")))?;
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        Ok(Self { provider })
    }

    /// A `tracing` layer exporting spans through this exporter.
    pub fn layer<S>(&self) -> tracing_opentelemetry::OpenTelemetryLayer<S, Tracer>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("llmops"))
    }

    /// Exports the spans finished so far. Blocks: call it outside async code (or in
    /// `spawn_blocking`).
    pub fn flush(&self) -> Result<(), ObserveError> {
        self.provider
            .force_flush()
            .map_err(|e| ObserveError::Config(format!("OTLP flush: {e}")))
    }

    /// Flushes and stops the exporter. Blocks like [`flush`](Self::flush).
    pub fn shutdown(self) -> Result<(), ObserveError> {
        self.provider
            .shutdown()
            .map_err(|e| ObserveError::Config(format!("OTLP shutdown: {e}")))
    }
}
