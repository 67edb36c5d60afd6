//! The in-process budget backend.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use dashmap::DashMap;
use llmops_core::{Amount, Budget, BudgetScope, Error, Reservation, Result, Usd};

use super::{Dims, Limit, Limits, counters_for, dims, exceeded, now_ms, validate_limits};
use crate::error::CostError;

/// A clock in milliseconds since the Unix epoch (replaceable in tests).
pub(crate) type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

#[derive(Debug, Default)]
struct Counter {
    /// Committed spend per bucket, oldest first.
    buckets: VecDeque<(i64, Dims)>,
    /// Outstanding reservations.
    reserved: Dims,
}

impl Counter {
    /// Drops buckets outside the window and returns the spend inside it.
    fn spent(&mut self, bucket: i64, n: i64) -> Dims {
        while self.buckets.front().is_some_and(|(b, _)| *b <= bucket - n) {
            self.buckets.pop_front();
        }
        let mut s = [0; 3];
        for (_, d) in &self.buckets {
            for (acc, x) in s.iter_mut().zip(d) {
                *acc += x;
            }
        }
        s
    }

    fn add_spent(&mut self, bucket: i64, d: Dims) {
        match self.buckets.back_mut() {
            Some((b, acc)) if *b == bucket => {
                for (a, x) in acc.iter_mut().zip(d) {
                    *a = a.saturating_add(x);
                }
            }
            _ => self.buckets.push_back((bucket, d)),
        }
    }
}

/// Budgets and rate limits in process memory (the embedded default).
///
/// Counters live in a [`DashMap`]; a reservation locks the counters it touches in a fixed
/// order, checks all of them and charges all of them, so concurrent reservations never
/// overshoot a cap. Several processes each have their own counters: use `RedisBudget` to
/// enforce one limit across replicas.
///
/// ```
/// use llmops_core::{Amount, Budget, BudgetScope, Usd};
/// use llmops_cost::budget::{Limit, MemoryBudget, Window};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let budget = MemoryBudget::new(vec![
///     Limit::budget("tenant:*", Window::Daily).unwrap().usd(1.0),
/// ]).unwrap();
/// let scopes = [BudgetScope::new("tenant", "a")];
/// let r = budget.reserve(&scopes, Amount::new(Usd::from_f64(0.8), 100)).await.unwrap();
/// // A second worst case does not fit while the first is in flight.
/// assert!(budget.reserve(&scopes, Amount::new(Usd::from_f64(0.5), 100)).await.is_err());
/// budget.commit(r, Amount::new(Usd::from_f64(0.1), 20)).await.unwrap();
/// assert_eq!(budget.remaining(&scopes[0]).await.unwrap(), Some(Usd::from_f64(0.9)));
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    limits: Limits,
    counters: DashMap<(usize, String), Arc<Mutex<Counter>>>,
    outstanding: DashMap<String, ()>,
    clock: Clock,
}

impl fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("limits", &self.inner.limits)
            .field("counters", &self.inner.counters.len())
            .field("outstanding", &self.inner.outstanding.len())
            .finish()
    }
}

fn lock(m: &Mutex<Counter>) -> MutexGuard<'_, Counter> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryBudget {
    /// A backend enforcing `limits`.
    pub fn new(limits: Vec<Limit>) -> std::result::Result<Self, CostError> {
        Self::with_clock(limits, Arc::new(now_ms))
    }

    pub(crate) fn with_clock(
        limits: Vec<Limit>,
        clock: Clock,
    ) -> std::result::Result<Self, CostError> {
        Ok(Self {
            inner: Arc::new(Inner {
                limits: validate_limits(limits)?,
                counters: DashMap::new(),
                outstanding: DashMap::new(),
                clock,
            }),
        })
    }

    /// The limits this backend enforces.
    pub fn limits(&self) -> &[Limit] {
        &self.inner.limits
    }

    /// How many reservations are neither committed nor released.
    pub fn outstanding(&self) -> usize {
        self.inner.outstanding.len()
    }

    /// Committed spend in a scope's window for the limit with `limit_id` (for tests and
    /// dashboards): `[nano-USD, tokens, requests]`.
    pub fn spent(&self, limit_id: &str, scope: &BudgetScope) -> Option<[i64; 3]> {
        let i = self.inner.limits.iter().position(|l| l.id == limit_id)?;
        let c = self.inner.counters.get(&(i, scope.0.clone()))?.clone();
        let (b, n) = self.inner.limits[i].window.bucket((self.inner.clock)());
        let spent = lock(&c).spent(b, n);
        Some(spent)
    }

    fn counter(&self, i: usize, scope: &BudgetScope) -> Arc<Mutex<Counter>> {
        if let Some(c) = self.inner.counters.get(&(i, scope.0.clone())) {
            return c.clone();
        }
        self.inner
            .counters
            .entry((i, scope.0.clone()))
            .or_default()
            .clone()
    }

    fn settle(&self, reservation: &Reservation, actual: Option<Dims>) -> Result<()> {
        if self.inner.outstanding.remove(&reservation.id).is_none() {
            return Err(Error::internal(format!(
                "reservation {} is unknown or already settled",
                reservation.id
            )));
        }
        let now = (self.inner.clock)();
        let reserved = dims(&reservation.amount);
        for (i, scope) in counters_for(&self.inner.limits, &reservation.scopes) {
            let c = self.counter(i, scope);
            let mut c = lock(&c);
            for (r, x) in c.reserved.iter_mut().zip(reserved) {
                *r = (*r - x).max(0);
            }
            if let Some(a) = actual {
                let (b, _) = self.inner.limits[i].window.bucket(now);
                c.add_spent(b, a);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Budget for MemoryBudget {
    async fn reserve(&self, scopes: &[BudgetScope], amount: Amount) -> Result<Reservation> {
        let limits = &self.inner.limits;
        let touched = counters_for(limits, scopes);
        let cells: Vec<_> = touched.iter().map(|(i, s)| self.counter(*i, s)).collect();
        // `touched` is sorted, so every reservation locks counters in the same order.
        let mut guards: Vec<_> = cells.iter().map(|c| lock(c)).collect();
        let want = dims(&amount);
        let now = (self.inner.clock)();
        for ((i, scope), g) in touched.iter().zip(guards.iter_mut()) {
            let limit = &limits[*i];
            let (b, n) = limit.window.bucket(now);
            let spent = g.spent(b, n);
            for (d, cap) in limit.caps().iter().enumerate() {
                if let Some(cap) = cap
                    && spent[d] + g.reserved[d] + want[d] > *cap
                {
                    return Err(exceeded(
                        limit,
                        scope,
                        d,
                        spent[d],
                        g.reserved[d],
                        want[d],
                        now,
                    ));
                }
            }
        }
        for g in &mut guards {
            for (r, x) in g.reserved.iter_mut().zip(want) {
                *r += x;
            }
        }
        drop(guards);
        let id = llmops_core::id::uuid_v7_string();
        self.inner.outstanding.insert(id.clone(), ());
        Ok(Reservation::new(id, scopes.to_vec(), amount))
    }

    async fn commit(&self, reservation: Reservation, actual: Amount) -> Result<()> {
        self.settle(&reservation, Some(dims(&actual)))
    }

    async fn release(&self, reservation: Reservation) -> Result<()> {
        self.settle(&reservation, None)
    }

    async fn remaining(&self, scope: &BudgetScope) -> Result<Option<Usd>> {
        let now = (self.inner.clock)();
        let mut best: Option<i64> = None;
        for (i, l) in self.inner.limits.iter().enumerate() {
            let (Some(cap), true) = (l.usd, l.pattern.matches(scope)) else {
                continue;
            };
            let c = self.counter(i, scope);
            let mut c = lock(&c);
            let (b, n) = l.window.bucket(now);
            let left = cap.nanos() - c.spent(b, n)[0] - c.reserved[0];
            best = Some(best.map_or(left, |x| x.min(left)));
        }
        Ok(best.map(|n| Usd::from_nanos(n.max(0))))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::time::Duration;

    use llmops_core::ErrorKind;
    use proptest::prelude::*;

    use super::*;
    use crate::budget::Window;

    fn usd(x: f64) -> Usd {
        Usd::from_f64(x)
    }

    fn tenant(t: &str) -> Vec<BudgetScope> {
        vec![BudgetScope::new("tenant", t)]
    }

    #[tokio::test]
    async fn every_nested_scope_must_have_room() {
        let b = MemoryBudget::new(vec![
            Limit::budget("tenant:*", Window::Daily).unwrap().usd(10.0),
            Limit::budget("user:bob", Window::Daily).unwrap().usd(1.0),
        ])
        .unwrap();
        let scopes = vec![
            BudgetScope::new("tenant", "t"),
            BudgetScope::new("user", "bob"),
        ];
        let err = b
            .reserve(&scopes, Amount::new(usd(2.0), 0))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BudgetExceeded);
        assert!(err.message().contains("user:bob"), "{}", err.message());
        // Nothing was charged to the tenant by the refused reservation.
        assert_eq!(b.remaining(&scopes[0]).await.unwrap(), Some(usd(10.0)));
        let r = b.reserve(&scopes, Amount::new(usd(0.5), 0)).await.unwrap();
        assert_eq!(b.remaining(&scopes[0]).await.unwrap(), Some(usd(9.5)));
        b.release(r).await.unwrap();
        assert_eq!(b.remaining(&scopes[1]).await.unwrap(), Some(usd(1.0)));
    }

    #[tokio::test]
    async fn tenants_have_separate_counters_and_unlimited_scopes_pass() {
        let b = MemoryBudget::new(vec![
            Limit::budget("tenant:*", Window::Daily).unwrap().usd(1.0),
        ])
        .unwrap();
        let r = b
            .reserve(&tenant("a"), Amount::new(usd(1.0), 0))
            .await
            .unwrap();
        b.commit(r, Amount::new(usd(1.0), 0)).await.unwrap();
        assert!(
            b.reserve(&tenant("a"), Amount::new(usd(0.01), 0))
                .await
                .is_err()
        );
        assert!(
            b.reserve(&tenant("b"), Amount::new(usd(0.5), 0))
                .await
                .is_ok()
        );
        let key = vec![BudgetScope::new("key", "k")];
        assert!(b.reserve(&key, Amount::new(usd(100.0), 0)).await.is_ok());
        assert_eq!(b.remaining(&key[0]).await.unwrap(), None);
    }

    #[tokio::test]
    async fn double_settlement_is_an_error() {
        let b = MemoryBudget::new(vec![
            Limit::budget("tenant:*", Window::Daily).unwrap().usd(1.0),
        ])
        .unwrap();
        let r = b
            .reserve(&tenant("a"), Amount::new(usd(0.5), 0))
            .await
            .unwrap();
        b.commit(r.clone(), Amount::new(usd(0.2), 0)).await.unwrap();
        assert!(b.release(r.clone()).await.is_err());
        assert!(b.commit(r, Amount::new(usd(0.2), 0)).await.is_err());
        assert_eq!(b.remaining(&tenant("a")[0]).await.unwrap(), Some(usd(0.8)));
    }

    #[tokio::test]
    async fn rate_limits_carry_retry_after_and_roll() {
        let now = Arc::new(AtomicI64::new(1_000_000_000));
        let n2 = now.clone();
        let b = MemoryBudget::with_clock(
            vec![Limit::per_minute("key:*").unwrap().requests(2).tokens(1000)],
            Arc::new(move || n2.load(Ordering::SeqCst)),
        )
        .unwrap();
        let key = vec![BudgetScope::new("key", "k")];
        for _ in 0..2 {
            let r = b.reserve(&key, Amount::new(Usd::ZERO, 10)).await.unwrap();
            b.commit(r, Amount::new(Usd::ZERO, 10)).await.unwrap();
        }
        let err = b
            .reserve(&key, Amount::new(Usd::ZERO, 10))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RateLimitExceeded);
        assert!(
            err.retry_after()
                .is_some_and(|d| d <= Duration::from_secs(1))
        );
        // Token-rate cap.
        now.fetch_add(61_000, Ordering::SeqCst);
        let err = b
            .reserve(&key, Amount::new(Usd::ZERO, 1001))
            .await
            .unwrap_err();
        assert!(err.message().contains("tokens"), "{}", err.message());
        // A minute later the window has rolled.
        assert!(b.reserve(&key, Amount::new(Usd::ZERO, 10)).await.is_ok());
    }

    #[tokio::test]
    async fn daily_windows_reset_at_utc_midnight() {
        let day = 86_400_000i64;
        let now = Arc::new(AtomicI64::new(20_000 * day + day - 1000));
        let n2 = now.clone();
        let b = MemoryBudget::with_clock(
            vec![
                Limit::budget("tenant:*", Window::Daily)
                    .unwrap()
                    .tokens(100),
            ],
            Arc::new(move || n2.load(Ordering::SeqCst)),
        )
        .unwrap();
        let r = b
            .reserve(&tenant("a"), Amount::new(Usd::ZERO, 100))
            .await
            .unwrap();
        b.commit(r, Amount::new(Usd::ZERO, 100)).await.unwrap();
        assert!(
            b.reserve(&tenant("a"), Amount::new(Usd::ZERO, 1))
                .await
                .is_err()
        );
        now.fetch_add(2000, Ordering::SeqCst);
        assert!(
            b.reserve(&tenant("a"), Amount::new(Usd::ZERO, 100))
                .await
                .is_ok()
        );
    }

    #[derive(Clone, Debug)]
    enum Op {
        Reserve(u32),
        Commit(usize, u32),
        Release(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u32..400).prop_map(Op::Reserve),
            (0usize..16, 0u32..=100).prop_map(|(i, pct)| Op::Commit(i, pct)),
            (0usize..16).prop_map(Op::Release),
        ]
    }

    proptest! {
        /// Any interleaving of reserve/commit/release: a reservation is admitted exactly when
        /// it fits (`spent + reserved + amount ≤ cap`), committed spend never exceeds the cap
        /// (actuals stay within reservations), and after settling everything nothing stays
        /// reserved.
        #[test]
        fn reserve_commit_release_interleavings(ops in proptest::collection::vec(op(), 1..80)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let cap = 1000i64;
                let mut limit = Limit::budget("tenant:*", Window::Daily).unwrap();
                limit.usd = Some(Usd::from_nanos(cap));
                let b = MemoryBudget::new(vec![limit]).unwrap();
                let scopes = tenant("t");
                let mut open: Vec<Reservation> = Vec::new();
                let (mut spent, mut reserved) = (0i64, 0i64);
                for op in ops {
                    match op {
                        Op::Reserve(a) => {
                            let a = i64::from(a);
                            let r = b.reserve(&scopes, Amount::new(Usd::from_nanos(a), 0)).await;
                            prop_assert_eq!(r.is_ok(), spent + reserved + a <= cap);
                            if let Ok(r) = r {
                                reserved += a;
                                open.push(r);
                            }
                        }
                        Op::Commit(i, pct) if !open.is_empty() => {
                            let r = open.remove(i % open.len());
                            let actual = r.amount.usd.nanos() * i64::from(pct) / 100;
                            reserved -= r.amount.usd.nanos();
                            spent += actual;
                            b.commit(r, Amount::new(Usd::from_nanos(actual), 0)).await.unwrap();
                        }
                        Op::Release(i) if !open.is_empty() => {
                            let r = open.remove(i % open.len());
                            reserved -= r.amount.usd.nanos();
                            b.release(r).await.unwrap();
                        }
                        _ => {}
                    }
                    prop_assert!(spent <= cap);
                    let left = b.remaining(&scopes[0]).await.unwrap().unwrap().nanos();
                    prop_assert_eq!(left, cap - spent - reserved);
                    prop_assert_eq!(b.outstanding(), open.len());
                }
                for r in open.drain(..) {
                    b.release(r).await.unwrap();
                }
                let left = b.remaining(&scopes[0]).await.unwrap().unwrap().nanos();
                prop_assert_eq!(left, cap - spent);
                Ok(())
            })?;
        }
    }
}
