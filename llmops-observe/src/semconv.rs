//! Attribute, span and metric names: the OpenTelemetry GenAI semantic conventions and our own
//! `llmops.*` namespace.
//!
//! The GenAI conventions are still `Development` upstream and the Rust constants of
//! `opentelemetry-semantic-conventions` are experimental and deprecated, so the names are
//! defined here, once. Span fields in [`crate::layer`] use exactly these strings (a unit test
//! checks it), and so do the Prometheus label names after `.` → `_` sanitizing.

/// `gen_ai.operation.name`: `chat`, `embeddings`, ...
pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
/// `gen_ai.provider.name`: the provider (target) that served the request.
pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
/// `gen_ai.request.model`: the model the client asked for.
pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
/// `gen_ai.request.stream`: whether the answer was streamed.
pub const GEN_AI_REQUEST_STREAM: &str = "gen_ai.request.stream";
/// `gen_ai.request.max_tokens`.
pub const GEN_AI_REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
/// `gen_ai.request.temperature`.
pub const GEN_AI_REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
/// `gen_ai.request.top_p`.
pub const GEN_AI_REQUEST_TOP_P: &str = "gen_ai.request.top_p";
/// `gen_ai.response.model`: the model that answered, as the upstream named it.
pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
/// `gen_ai.response.id`.
pub const GEN_AI_RESPONSE_ID: &str = "gen_ai.response.id";
/// `gen_ai.response.finish_reasons` (a JSON array of strings on spans).
pub const GEN_AI_RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
/// `gen_ai.response.time_to_first_chunk` (seconds, streams).
pub const GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: &str = "gen_ai.response.time_to_first_chunk";
/// `gen_ai.usage.input_tokens` (cached tokens included).
pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
/// `gen_ai.usage.output_tokens` (reasoning tokens included).
pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
/// `gen_ai.usage.cache_read.input_tokens`.
pub const GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: &str = "gen_ai.usage.cache_read.input_tokens";
/// `gen_ai.usage.cache_creation.input_tokens`.
pub const GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: &str =
    "gen_ai.usage.cache_creation.input_tokens";
/// `gen_ai.usage.reasoning.output_tokens`.
pub const GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: &str = "gen_ai.usage.reasoning.output_tokens";
/// `gen_ai.token.type` (`input` | `output`) on `gen_ai.client.token.usage`.
pub const GEN_AI_TOKEN_TYPE: &str = "gen_ai.token.type";
/// `gen_ai.input.messages` (opt-in content, JSON).
pub const GEN_AI_INPUT_MESSAGES: &str = "gen_ai.input.messages";
/// `gen_ai.output.messages` (opt-in content, JSON).
pub const GEN_AI_OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
/// `error.type`: a low-cardinality error class ([`llmops_core::ErrorKind::as_str`]).
pub const ERROR_TYPE: &str = "error.type";
/// `error.type` value when the class is unknown.
pub const ERROR_TYPE_OTHER: &str = "_OTHER";

/// `llmops.tenant`.
pub const LLMOPS_TENANT: &str = "llmops.tenant";
/// `llmops.request_id`.
pub const LLMOPS_REQUEST_ID: &str = "llmops.request_id";
/// `llmops.prompt.id`: the prompt template.
pub const LLMOPS_PROMPT_ID: &str = "llmops.prompt.id";
/// `llmops.prompt.version`: the prompt template's version.
pub const LLMOPS_PROMPT_VERSION: &str = "llmops.prompt.version";
/// `llmops.cost.usd`: the request's cost in US dollars.
pub const LLMOPS_COST_USD: &str = "llmops.cost.usd";
/// `llmops.cache.hit`: whether a response cache answered.
pub const LLMOPS_CACHE_HIT: &str = "llmops.cache.hit";
/// `llmops.attempt`: upstream attempts made (0 for a cache hit).
pub const LLMOPS_ATTEMPT: &str = "llmops.attempt";
/// `llmops.gateway.overhead`: request time not spent waiting on upstreams (seconds).
pub const LLMOPS_GATEWAY_OVERHEAD: &str = "llmops.gateway.overhead";
/// `llmops.stream.dropped`: the client dropped the stream before its end.
pub const LLMOPS_STREAM_DROPPED: &str = "llmops.stream.dropped";

/// tracing-opentelemetry's span-name override field (`{operation} {model}`).
pub const OTEL_NAME: &str = "otel.name";
/// tracing-opentelemetry's span-kind field.
pub const OTEL_KIND: &str = "otel.kind";
/// tracing-opentelemetry's span-status field (`error` on failure).
pub const OTEL_STATUS_CODE: &str = "otel.status_code";
/// tracing-opentelemetry's span-status description field.
pub const OTEL_STATUS_DESCRIPTION: &str = "otel.status_description";

/// Metric names (OpenTelemetry names; the Prometheus exporter turns `.` into `_` and appends
/// the unit and `_total` suffixes, see `docs/observability.md`).
pub mod metric {
    /// Histogram, seconds: duration of one operation, to its last byte (streams: their end).
    pub const OPERATION_DURATION: &str = "gen_ai.client.operation.duration";
    /// Histogram, `{token}`: input and output tokens per operation (`gen_ai.token.type`).
    pub const TOKEN_USAGE: &str = "gen_ai.client.token.usage";
    /// Histogram, seconds: time to the first content chunk (every answer; a complete answer's
    /// first content is its end).
    pub const TIME_TO_FIRST_CHUNK: &str = "gen_ai.client.operation.time_to_first_chunk";
    /// Histogram, seconds: time per output chunk after the first (streams).
    pub const TIME_PER_OUTPUT_CHUNK: &str = "gen_ai.client.operation.time_per_output_chunk";
    /// Counter: requests that finished (any outcome).
    pub const REQUESTS: &str = "llmops.requests";
    /// Counter: failed requests, by `error.type`.
    pub const ERRORS: &str = "llmops.errors";
    /// Counter, nano-dollars (1e-9 USD, as [`llmops_core::Usd`]): spend.
    pub const COST: &str = "llmops.cost.nanodollars";
    /// Counter, `{token}`: input tokens by how the provider's prompt (prefix) cache treated
    /// them (`llmops.prompt_cache.state`: `cached` read from it, `written` to it, `uncached`).
    /// Hit rate = cached / all.
    pub const PROMPT_CACHE_TOKENS: &str = "llmops.prompt_cache.tokens";
    /// Counter, nano-dollars: what cache reads saved against the uncached input rate.
    pub const PROMPT_CACHE_SAVINGS: &str = "llmops.prompt_cache.savings.nanodollars";
    /// Counter, nano-dollars: what cache writes cost above the uncached input rate (net
    /// savings = savings − write premium).
    pub const PROMPT_CACHE_WRITE_PREMIUM: &str = "llmops.prompt_cache.write_premium.nanodollars";
    /// Counter: answers served from a response cache.
    pub const CACHE_HITS: &str = "llmops.cache.hits";
    /// Counter: answers not served from a response cache.
    pub const CACHE_MISSES: &str = "llmops.cache.misses";
    /// Counter: upstream attempts beyond the first.
    pub const RETRIES: &str = "llmops.retries";
    /// Counter: requests answered by a fallback target.
    pub const FALLBACKS: &str = "llmops.fallbacks";
    /// Counter: requests refused by a budget, rate limit or cost ceiling (`reason`).
    pub const BUDGET_REJECTIONS: &str = "llmops.budget.rejections";
    /// Counter: guardrail decisions (`guardrail`, `decision`).
    pub const GUARDRAIL_DECISIONS: &str = "llmops.guardrail.decisions";
    /// Histogram, seconds: gateway overhead per request.
    pub const GATEWAY_OVERHEAD: &str = "llmops.gateway.overhead";
    /// Gauge, ratio: spend / limit of a budget scope (`scope`).
    pub const BUDGET_UTILIZATION: &str = "llmops.budget.utilization";
    /// Counter: telemetry events dropped because a bounded queue was full (`queue`).
    pub const DROPPED_EVENTS: &str = "llmops.observe.dropped_events";
    /// Counter: alert notifications by `notifier` and `outcome`.
    pub const NOTIFICATIONS: &str = "llmops.alerts.notifications";
    /// Gauge: alerts currently firing.
    pub const ALERTS_FIRING: &str = "llmops.alerts.firing";
    /// Counter: online evaluations by `evaluator` and `result` (`pass`, `fail`, `error`).
    pub const ONLINE_EVALS: &str = "llmops.online_eval.results";
}

/// Label keys of our own metrics (besides the `gen_ai.*` ones).
pub mod label {
    /// Why a budget refused (`budget_exceeded`, `rate_limit_exceeded`, `cost_ceiling_exceeded`).
    pub const REASON: &str = "reason";
    /// Which guardrail decided.
    pub const GUARDRAIL: &str = "guardrail";
    /// What it decided (`block`, `redact`, `allow`, ...).
    pub const DECISION: &str = "decision";
    /// The queue that dropped an event.
    pub const QUEUE: &str = "queue";
    /// The notifier.
    pub const NOTIFIER: &str = "notifier";
    /// The outcome of a delivery or an evaluation.
    pub const OUTCOME: &str = "outcome";
    /// An evaluator's name.
    pub const EVALUATOR: &str = "evaluator";
    /// A pass/fail/error result.
    pub const RESULT: &str = "result";
    /// A budget scope.
    pub const SCOPE: &str = "scope";
    /// How the provider's prompt cache treated input tokens: `cached`, `written`, `uncached`.
    pub const PROMPT_CACHE_STATE: &str = "llmops.prompt_cache.state";
}

/// The spec's advisory bucket boundaries for `gen_ai.client.token.usage` (powers of 4).
pub const TOKEN_BUCKETS: [f64; 14] = [
    1.0,
    4.0,
    16.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

/// The spec's advisory bucket boundaries for durations in seconds (0.01 s doubling to 81.92 s).
pub const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// Buckets for the gateway overhead in seconds: 10 µs to 100 ms.
pub const OVERHEAD_BUCKETS: [f64; 13] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1,
];
