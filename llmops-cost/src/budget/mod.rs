//! Budgets and rate limits: reserve the worst case, commit the actual, release the rest.
//!
//! A [`Limit`] caps one or more *dimensions* — USD, tokens, requests — over a [`Window`] for
//! every scope matching its [`ScopePattern`] (`tenant:team-a`, or `tenant:*` for "each
//! tenant"). A request carries several scopes (tenant → API key → user, plus one per tag,
//! built by [`scopes_for`]); [`Budget::reserve`](llmops_core::Budget::reserve) charges its
//! worst case to the counters of *every* matching limit atomically, or to none.
//!
//! Each counter holds the committed spend per time bucket and the outstanding reservations.
//! A reservation is admitted when, in every dimension, `spent in window + reserved + amount
//! ≤ cap`. Committing replaces the reservation by the actual amount in the current bucket;
//! releasing drops it. So as long as actual costs stay within their reservations, committed
//! spend never exceeds a cap, whatever the concurrency — on one process
//! ([`MemoryBudget`]) or on many sharing Redis (`RedisBudget`, feature `redis`).
//!
//! Windows: fixed UTC calendar days and months (one bucket per window), and rolling windows
//! of any length (60 buckets). Request- and token-rate limits (RPM/TPM) are rolling one-minute
//! limits; exceeding one is [`ErrorKind::RateLimitExceeded`] with a retry-after, exceeding a
//! budget is [`ErrorKind::BudgetExceeded`]; both name the scope and the numbers.
//!
//! [`BudgetLayer`] applies a [`Budget`](llmops_core::Budget) to a pipeline, settling every
//! reservation exactly once — on success, error, stream end, stream failure and client
//! disconnect alike.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use llmops_core::{Amount, BudgetScope, Error, ErrorKind, RequestContext, Usd};

use crate::error::CostError;

mod layer;
mod memory;
#[cfg(feature = "redis")]
mod redis;

pub use layer::{BUDGET_REMAINING_HEADER, BudgetLayer, BudgetService};
pub use memory::MemoryBudget;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{RedisBudget, RedisBudgetBuilder};

/// Buckets of a rolling window.
pub(crate) const ROLLING_BUCKETS: i64 = 60;

/// The period a limit counts over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Window {
    /// The current UTC calendar day.
    Daily,
    /// The current UTC calendar month.
    Monthly,
    /// The last `Duration` (at least one second), counted in 60 buckets.
    Rolling(Duration),
}

impl Window {
    /// Parses `daily`, `monthly` or `rolling:<n><s|m|h|d>` (e.g. `rolling:1h`).
    pub fn parse(s: &str) -> Result<Window, CostError> {
        match s {
            "daily" => Ok(Window::Daily),
            "monthly" => Ok(Window::Monthly),
            other => {
                let spec = other.strip_prefix("rolling:").ok_or_else(|| {
                    CostError::Config(format!(
                        "unknown window `{other}` (expected daily, monthly or rolling:1h)"
                    ))
                })?;
                let d = parse_duration(spec).ok_or_else(|| {
                    CostError::Config(format!(
                        "invalid rolling window `{spec}` (e.g. 30s, 15m, 1h, 7d)"
                    ))
                })?;
                if d < Duration::from_secs(1) {
                    return Err(CostError::Config(
                        "a rolling window must be at least 1s".into(),
                    ));
                }
                Ok(Window::Rolling(d))
            }
        }
    }

    /// The bucket width in milliseconds for a rolling window (fixed windows: `None`).
    fn bucket_ms(self) -> Option<i64> {
        match self {
            Window::Rolling(d) => {
                let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
                Some((ms / ROLLING_BUCKETS).max(1))
            }
            _ => None,
        }
    }

    /// The current bucket at `now_ms` (ms since the Unix epoch) and how many buckets, ending
    /// with it, are inside the window.
    pub(crate) fn bucket(self, now_ms: i64) -> (i64, i64) {
        match self {
            Window::Daily => (now_ms.div_euclid(86_400_000), 1),
            Window::Monthly => {
                let (y, m, _) = civil_from_days(now_ms.div_euclid(86_400_000));
                (y * 12 + i64::from(m) - 1, 1)
            }
            Window::Rolling(_) => {
                let w = self.bucket_ms().unwrap_or(1);
                (now_ms.div_euclid(w), ROLLING_BUCKETS)
            }
        }
    }

    /// How long a counter of this window must be kept.
    #[cfg(feature = "redis")]
    pub(crate) fn ttl(self) -> Duration {
        match self {
            Window::Daily => Duration::from_secs(2 * 86_400),
            Window::Monthly => Duration::from_secs(63 * 86_400),
            Window::Rolling(d) => d + Duration::from_secs(60),
        }
    }

    /// When spend charged now stops counting, or the window resets (for `Retry-After`).
    pub(crate) fn retry_after(self, now_ms: i64) -> Duration {
        let ms = match self {
            Window::Daily => 86_400_000 - now_ms.rem_euclid(86_400_000),
            Window::Monthly => {
                let days = now_ms.div_euclid(86_400_000);
                let (y, m, _) = civil_from_days(days);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                days_from_civil(ny, nm, 1) * 86_400_000 - now_ms
            }
            Window::Rolling(_) => {
                let w = self.bucket_ms().unwrap_or(1);
                w - now_ms.rem_euclid(w)
            }
        };
        Duration::from_millis(u64::try_from(ms.max(1)).unwrap_or(1))
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Window::Daily => f.write_str("daily"),
            Window::Monthly => f.write_str("monthly"),
            Window::Rolling(d) => write!(f, "rolling:{}s", d.as_secs()),
        }
    }
}

fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31), proleptic Gregorian (H. Hinnant).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01.
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Which scopes a limit applies to: `kind:name` for one scope, `kind:*` for each scope of
/// that kind (each tenant gets its own counter).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ScopePattern {
    kind: String,
    name: Option<String>,
}

impl ScopePattern {
    /// Parses `tenant:team-a`, `key:*`, `user:alice`, `tag:feature=search`.
    pub fn parse(s: &str) -> Result<Self, CostError> {
        let (kind, name) = s.split_once(':').ok_or_else(|| {
            CostError::Config(format!(
                "invalid scope `{s}`: expected `kind:name` or `kind:*`"
            ))
        })?;
        if !matches!(kind, "tenant" | "key" | "user" | "tag") || name.is_empty() {
            return Err(CostError::Config(format!(
                "invalid scope `{s}`: kind must be tenant, key, user or tag, with a name or *"
            )));
        }
        Ok(Self {
            kind: kind.to_owned(),
            name: (name != "*").then(|| name.to_owned()),
        })
    }

    /// Whether `scope` is covered.
    pub fn matches(&self, scope: &BudgetScope) -> bool {
        match scope.0.split_once(':') {
            Some((kind, name)) => {
                kind == self.kind && self.name.as_deref().is_none_or(|n| n == name)
            }
            None => false,
        }
    }
}

impl fmt::Display for ScopePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.name.as_deref().unwrap_or("*"))
    }
}

/// What a backend does with a limit when its store (Redis) cannot be reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OnBackendError {
    /// Refuse the request (the default: a budget that silently stops counting is no budget).
    #[default]
    FailClosed,
    /// Let the request through unchecked (counted in `llmops_budget_backend_errors_total`
    /// and logged).
    FailOpen,
}

/// Whether exceeding a limit is a budget refusal or a rate limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitKind {
    /// Spend: [`ErrorKind::BudgetExceeded`].
    Budget,
    /// Rate: [`ErrorKind::RateLimitExceeded`] with a retry-after.
    Rate,
}

/// One limit: caps per dimension over a window, for the scopes matching a pattern.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Limit {
    /// Stable identifier (counters are stored under it): `<pattern>:<window>[:rate]`.
    pub id: String,
    /// The scopes it applies to.
    pub pattern: ScopePattern,
    /// The window.
    pub window: Window,
    /// Cap on USD.
    pub usd: Option<Usd>,
    /// Cap on tokens (input + output).
    pub tokens: Option<u64>,
    /// Cap on requests.
    pub requests: Option<u64>,
    /// Budget or rate limit.
    pub kind: LimitKind,
    /// What to do when the backend is unreachable.
    pub on_backend_error: OnBackendError,
}

impl Limit {
    /// A spend limit on the scopes matching `pattern` over `window`, with no cap yet.
    pub fn budget(pattern: &str, window: Window) -> Result<Self, CostError> {
        let pattern = ScopePattern::parse(pattern)?;
        Ok(Self {
            id: format!("{pattern}:{window}"),
            pattern,
            window,
            usd: None,
            tokens: None,
            requests: None,
            kind: LimitKind::Budget,
            on_backend_error: OnBackendError::FailClosed,
        })
    }

    /// A rate limit (rolling one minute) on the scopes matching `pattern`.
    pub fn per_minute(pattern: &str) -> Result<Self, CostError> {
        let mut l = Self::budget(pattern, Window::Rolling(Duration::from_secs(60)))?;
        l.kind = LimitKind::Rate;
        l.id.push_str(":rate");
        Ok(l)
    }

    /// Caps USD (builder style).
    #[must_use]
    pub fn usd(mut self, usd: f64) -> Self {
        self.usd = Some(Usd::from_f64(usd));
        self
    }

    /// Caps tokens (builder style).
    #[must_use]
    pub fn tokens(mut self, tokens: u64) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Caps requests (builder style).
    #[must_use]
    pub fn requests(mut self, requests: u64) -> Self {
        self.requests = Some(requests);
        self
    }

    /// Sets the behaviour when the backend is unreachable (builder style).
    #[must_use]
    pub fn on_backend_error(mut self, b: OnBackendError) -> Self {
        self.on_backend_error = b;
        self
    }

    pub(crate) fn caps(&self) -> [Option<i64>; 3] {
        [
            self.usd.map(Usd::nanos),
            self.tokens.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
            self.requests.map(|r| i64::try_from(r).unwrap_or(i64::MAX)),
        ]
    }
}

/// Per-dimension quantities: nano-USD, tokens, requests.
pub(crate) type Dims = [i64; 3];

pub(crate) fn dims(a: &Amount) -> Dims {
    [
        a.usd.nanos(),
        i64::try_from(a.tokens).unwrap_or(i64::MAX),
        i64::try_from(a.requests).unwrap_or(i64::MAX),
    ]
}

pub(crate) const DIM_NAMES: [&str; 3] = ["usd", "tokens", "requests"];

/// The scopes of a request, most general first: `tenant:<t>`, `key:<id>`, `user:<u>`, then
/// `tag:<k>=<v>` for each tag.
pub fn scopes_for(ctx: &RequestContext) -> Vec<BudgetScope> {
    let mut v = Vec::with_capacity(3 + ctx.tags.len());
    v.push(BudgetScope::new("tenant", &ctx.tenant));
    if let Some(k) = &ctx.api_key_id {
        v.push(BudgetScope::new("key", k));
    }
    if let Some(u) = &ctx.user {
        v.push(BudgetScope::new("user", u));
    }
    for (k, val) in &ctx.tags {
        v.push(BudgetScope(format!("tag:{k}={val}")));
    }
    v
}

/// The counters `(limit index, scope)` a set of scopes touches, sorted and deduplicated.
pub(crate) fn counters_for<'a>(
    limits: &'a [Limit],
    scopes: &'a [BudgetScope],
) -> Vec<(usize, &'a BudgetScope)> {
    let mut out = Vec::new();
    for (i, l) in limits.iter().enumerate() {
        for s in scopes {
            if l.pattern.matches(s) {
                out.push((i, s));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The refusal for a counter that has no room.
pub(crate) fn exceeded(
    limit: &Limit,
    scope: &BudgetScope,
    dim: usize,
    used: i64,
    reserved: i64,
    asked: i64,
    now_ms: i64,
) -> Error {
    let cap = limit.caps()[dim].unwrap_or(0);
    let fmt_q = |q: i64| {
        if dim == 0 {
            Usd::from_nanos(q).to_string()
        } else {
            q.to_string()
        }
    };
    let what = DIM_NAMES[dim];
    match limit.kind {
        LimitKind::Budget => Error::new(
            ErrorKind::BudgetExceeded,
            format!(
                "budget exceeded for scope `{scope}` ({} {what} limit {}): spent {}, reserved \
                 by requests in flight {}, this request needs up to {}",
                limit.window,
                fmt_q(cap),
                fmt_q(used),
                fmt_q(reserved),
                fmt_q(asked)
            ),
        ),
        LimitKind::Rate => {
            let after = limit.window.retry_after(now_ms);
            Error::new(
                ErrorKind::RateLimitExceeded,
                format!(
                    "rate limit exceeded for scope `{scope}`: {} {what} per minute allowed, {} \
                     used, this request needs {}; retry in {:.1}s",
                    fmt_q(cap),
                    fmt_q(used + reserved),
                    fmt_q(asked),
                    after.as_secs_f64()
                ),
            )
            .with_retry_after(after)
        }
    }
}

/// Shared, validated limits.
pub(crate) type Limits = Arc<[Limit]>;

pub(crate) fn validate_limits(limits: Vec<Limit>) -> Result<Limits, CostError> {
    let mut seen = std::collections::HashSet::new();
    for l in &limits {
        if l.usd.is_none() && l.tokens.is_none() && l.requests.is_none() {
            return Err(CostError::Config(format!("limit `{}` caps nothing", l.id)));
        }
        if !seen.insert(l.id.clone()) {
            return Err(CostError::Config(format!(
                "two limits share the scope and window `{}`: merge them into one",
                l.id
            )));
        }
    }
    Ok(limits.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        for days in [-1000i64, 0, 59, 60, 365, 10_957, 20_000, 20_784, 100_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }

    #[test]
    fn windows_bucket_by_utc_calendar() {
        let day = 86_400_000i64;
        let t = days_from_civil(2026, 11, 27) * day + 3_600_000;
        assert_eq!(
            Window::Daily.bucket(t).0,
            Window::Daily.bucket(t + 3_600_000).0
        );
        assert_ne!(Window::Daily.bucket(t).0, Window::Daily.bucket(t + day).0);
        assert_eq!(
            Window::Monthly.bucket(t).0,
            Window::Monthly.bucket(t + 3 * day).0
        );
        assert_ne!(
            Window::Monthly.bucket(t).0,
            Window::Monthly.bucket(t + 4 * day).0
        );
        // Retry-after of a monthly window ends at the first of next month, 00:00 UTC.
        let ra = Window::Monthly.retry_after(t);
        assert_eq!(
            t + ra.as_millis() as i64,
            days_from_civil(2026, 12, 1) * day
        );
        let r = Window::parse("rolling:1h").unwrap();
        assert_eq!(r, Window::Rolling(Duration::from_secs(3600)));
        assert_eq!(r.bucket(0).1, ROLLING_BUCKETS);
    }

    #[test]
    fn bad_windows_and_scopes_are_rejected() {
        for w in [
            "weekly",
            "rolling:",
            "rolling:0s",
            "rolling:5x",
            "rolling:h",
        ] {
            assert!(Window::parse(w).is_err(), "{w}");
        }
        for s in ["team-a", "org:x", "tenant:", ""] {
            assert!(ScopePattern::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn patterns_match_scopes() {
        let each = ScopePattern::parse("tenant:*").unwrap();
        let one = ScopePattern::parse("tenant:a").unwrap();
        assert!(each.matches(&BudgetScope::new("tenant", "a")));
        assert!(each.matches(&BudgetScope::new("tenant", "b")));
        assert!(one.matches(&BudgetScope::new("tenant", "a")));
        assert!(!one.matches(&BudgetScope::new("tenant", "b")));
        assert!(!one.matches(&BudgetScope::new("key", "a")));
    }

    #[test]
    fn scopes_nest_tenant_key_user_tags() {
        let ctx = RequestContext::new()
            .with_tenant("t")
            .with_api_key_id("k")
            .with_user("u")
            .with_tag("feature", "search");
        let s: Vec<String> = scopes_for(&ctx).into_iter().map(|s| s.0).collect();
        assert_eq!(s, ["tenant:t", "key:k", "user:u", "tag:feature=search"]);
    }

    #[test]
    fn limits_are_validated() {
        let l = Limit::budget("tenant:*", Window::Daily).unwrap();
        assert!(validate_limits(vec![l.clone()]).is_err());
        let l = l.usd(1.0);
        assert!(validate_limits(vec![l.clone(), l.clone()]).is_err());
        assert!(validate_limits(vec![l]).is_ok());
    }
}
