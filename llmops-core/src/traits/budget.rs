//! The [`Budget`] trait: reserve, commit, release.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};

use async_trait::async_trait;

use crate::error::Result;

/// An amount of money in US dollars, held as an integer number of nano-dollars (1e-9 USD) so
/// that sums are exact and atomic counters (Redis `INCRBY`) can hold them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usd(i64);

impl Usd {
    /// Zero dollars.
    pub const ZERO: Usd = Usd(0);

    /// From nano-dollars.
    pub const fn from_nanos(nanos: i64) -> Self {
        Self(nanos)
    }

    /// From dollars, rounded up to the next nano-dollar (costs never round down to free).
    /// Non-finite or negative values give zero.
    pub fn from_f64(usd: f64) -> Self {
        if !usd.is_finite() || usd <= 0.0 {
            return Self(0);
        }
        let nanos = (usd * 1e9).ceil();
        if nanos >= i64::MAX as f64 {
            Self(i64::MAX)
        } else {
            Self(nanos as i64)
        }
    }

    /// In nano-dollars.
    pub const fn nanos(self) -> i64 {
        self.0
    }

    /// In dollars.
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }

    /// Subtraction that stops at zero.
    #[must_use]
    pub fn saturating_sub(self, other: Usd) -> Usd {
        Usd(self.0.saturating_sub(other.0).max(0))
    }
}

impl Add for Usd {
    type Output = Usd;
    fn add(self, rhs: Usd) -> Usd {
        Usd(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign for Usd {
    fn add_assign(&mut self, rhs: Usd) {
        self.0 = self.0.saturating_add(rhs.0);
    }
}

impl Sub for Usd {
    type Output = Usd;
    fn sub(self, rhs: Usd) -> Usd {
        Usd(self.0.saturating_sub(rhs.0))
    }
}

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${:.6}", self.as_f64())
    }
}

/// What a response cost upstream, as the cost layers computed it. Layers that price a
/// response leave it in [`ResponseMeta::extensions`](crate::ResponseMeta) for outer layers
/// (telemetry, audit) to read, and report it through the request's [`CostReport`] (the only
/// way for a stream, which is priced at its end); a cascade sets it to the sum of its attempts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResponseCost {
    /// The total upstream cost.
    pub usd: Usd,
    /// The total tokens (input + output).
    pub tokens: u64,
    /// What the provider's prompt cache saved: the cache-read input tokens priced at the
    /// model's uncached input rate, minus what they were charged.
    pub cache_read_savings: Usd,
    /// What writing the provider's prompt cache cost above the uncached input rate (Anthropic
    /// charges 1.25× or 2× for cache writes). Net savings are `cache_read_savings` minus this.
    pub cache_write_premium: Usd,
}

impl ResponseCost {
    /// A cost record without prompt-cache effects.
    pub fn new(usd: Usd, tokens: u64) -> Self {
        Self {
            usd,
            tokens,
            ..Self::default()
        }
    }

    /// The same record with what the provider's prompt cache saved and what writing it cost
    /// extra.
    #[must_use]
    pub fn with_prompt_cache(mut self, read_savings: Usd, write_premium: Usd) -> Self {
        self.cache_read_savings = read_savings;
        self.cache_write_premium = write_premium;
        self
    }
}

/// A per-request slot through which a layer that prices the response reports its
/// [`ResponseCost`] to outer layers, for streams too: a stream is priced when it ends, after
/// its response metadata has gone out.
///
/// An outer layer (telemetry) [installs](CostReport::install) it in
/// [`RequestContext::extensions`](crate::RequestContext) before calling inward; clones share
/// the slot, and the last report wins. An inner stream's end runs before the outer stream's
/// end, so the outer layer reads the report when its own stream ends. Without an installed
/// slot, reporting is a no-op.
#[derive(Clone, Debug, Default)]
pub struct CostReport(std::sync::Arc<std::sync::Mutex<Option<ResponseCost>>>);

impl CostReport {
    /// The slot of a request, installing a fresh one when there is none.
    pub fn install(ctx: &mut crate::RequestContext) -> CostReport {
        if let Some(r) = ctx.extensions.get::<CostReport>() {
            return r.clone();
        }
        let r = CostReport::default();
        ctx.extensions.insert(r.clone());
        r
    }

    /// The slot of a request, when an outer layer installed one.
    pub fn of(ctx: &crate::RequestContext) -> Option<&CostReport> {
        ctx.extensions.get::<CostReport>()
    }

    /// Reports the request's cost.
    pub fn set(&self, cost: ResponseCost) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(cost);
    }

    /// The reported cost, if any layer reported one.
    pub fn get(&self) -> Option<ResponseCost> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What a request consumes: money, tokens and one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Amount {
    /// Cost.
    pub usd: Usd,
    /// Tokens (input + output).
    pub tokens: u64,
    /// Requests (1 for a request, 0 for a pure adjustment).
    pub requests: u64,
}

impl Amount {
    /// One request costing `usd` and `tokens`.
    pub fn new(usd: Usd, tokens: u64) -> Self {
        Self {
            usd,
            tokens,
            requests: 1,
        }
    }
}

/// A budget scope, e.g. `tenant:team-a`, `key:k1`, `user:alice`, `tag:feature=search`.
/// Scopes nest: a request is checked against every scope on its path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BudgetScope(pub String);

impl BudgetScope {
    /// A scope of `kind` (`tenant`, `key`, `user`, `tag`) and `name`.
    pub fn new(kind: &str, name: &str) -> Self {
        Self(format!("{kind}:{name}"))
    }
}

impl fmt::Display for BudgetScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A granted reservation, to be committed or released exactly once.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reservation {
    /// Backend-unique id of the reservation.
    pub id: String,
    /// The scopes it was reserved against.
    pub scopes: Vec<BudgetScope>,
    /// The reserved (worst-case) amount.
    pub amount: Amount,
}

impl Reservation {
    /// A reservation record (for backend implementations).
    pub fn new(id: impl Into<String>, scopes: Vec<BudgetScope>, amount: Amount) -> Self {
        Self {
            id: id.into(),
            scopes,
            amount,
        }
    }
}

/// Spend and rate limits, enforced by reserving the worst case before the upstream call and
/// settling the actual amount after.
///
/// # Contract
///
/// - `reserve` is atomic across all `scopes`: either every scope has room and all are
///   charged the amount, or none is charged and the error is
///   [`ErrorKind::BudgetExceeded`](crate::ErrorKind::BudgetExceeded) (or
///   `RateLimitExceeded` for rate limits, with a retry-after) naming the scope.
/// - `commit(r, actual)` replaces the reserved amount by `actual` in every scope; `release`
///   returns the whole reservation. Exactly one of them is called per reservation — on
///   success, error, cancellation and client disconnect alike.
/// - Backends shared by several processes (Redis) enforce one limit for all of them.
#[async_trait]
pub trait Budget: Send + Sync {
    /// Reserves `amount` in every scope.
    async fn reserve(&self, scopes: &[BudgetScope], amount: Amount) -> Result<Reservation>;

    /// Settles a reservation at the actual amount.
    async fn commit(&self, reservation: Reservation, actual: Amount) -> Result<()>;

    /// Cancels a reservation.
    async fn release(&self, reservation: Reservation) -> Result<()>;

    /// What is left in a scope's current window, if the scope has a USD limit.
    async fn remaining(&self, scope: &BudgetScope) -> Result<Option<Usd>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_rounds_up_and_never_negative() {
        assert_eq!(Usd::from_f64(1.5e-10).nanos(), 1);
        assert_eq!(Usd::from_f64(-3.0), Usd::ZERO);
        assert_eq!(Usd::from_f64(f64::NAN), Usd::ZERO);
        assert_eq!((Usd::from_f64(0.25) + Usd::from_f64(0.5)).as_f64(), 0.75);
        assert_eq!(
            Usd::from_nanos(5).saturating_sub(Usd::from_nanos(9)),
            Usd::ZERO
        );
    }
}
