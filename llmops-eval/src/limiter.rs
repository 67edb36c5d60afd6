//! Adaptive concurrency: additive increase, multiplicative decrease (AIMD).
//!
//! The limiter starts at the configured maximum. A rate-limit answer (429) halves the
//! current limit (never below 1); every `limit` successes in a row raise it by one, up to the
//! maximum. So a run that hits a provider's rate limit slows down instead of hammering it
//! with retries, and speeds up again when the pressure is gone.

use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

#[derive(Debug)]
struct State {
    limit: usize,
    in_flight: usize,
    successes: usize,
}

/// An AIMD concurrency limiter.
#[derive(Debug)]
pub struct AdaptiveLimiter {
    max: usize,
    state: Mutex<State>,
    notify: Notify,
}

/// A permit; dropping it frees the slot.
#[derive(Debug)]
pub struct Permit<'a> {
    limiter: &'a AdaptiveLimiter,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        {
            let mut s = self.limiter.lock();
            s.in_flight -= 1;
        }
        self.limiter.notify.notify_waiters();
    }
}

impl AdaptiveLimiter {
    /// A limiter allowing up to `max` (at least 1) operations at once.
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            max,
            state: Mutex::new(State {
                limit: max,
                in_flight: 0,
                successes: 0,
            }),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.lock().limit
    }

    /// Waits for a free slot under the current limit.
    pub async fn acquire(&self) -> Permit<'_> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if s.in_flight < s.limit {
                    s.in_flight += 1;
                    return Permit { limiter: self };
                }
            }
            notified.await;
        }
    }

    /// Records a success: after `limit` successes in a row, the limit grows by one.
    pub fn on_success(&self) {
        let grew = {
            let mut s = self.lock();
            s.successes += 1;
            if s.successes >= s.limit && s.limit < self.max {
                s.limit += 1;
                s.successes = 0;
                true
            } else {
                false
            }
        };
        if grew {
            self.notify.notify_waiters();
        }
    }

    /// Records a rate-limit answer: the limit halves (at least 1).
    pub fn on_rate_limited(&self) {
        let mut s = self.lock();
        s.limit = (s.limit / 2).max(1);
        s.successes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn aimd() {
        let l = AdaptiveLimiter::new(8);
        assert_eq!(l.limit(), 8);
        l.on_rate_limited();
        assert_eq!(l.limit(), 4);
        l.on_rate_limited();
        l.on_rate_limited();
        l.on_rate_limited();
        assert_eq!(l.limit(), 1);
        l.on_success();
        assert_eq!(l.limit(), 2);
        l.on_success();
        assert_eq!(l.limit(), 2);
        l.on_success();
        assert_eq!(l.limit(), 3);
        for _ in 0..100 {
            l.on_success();
        }
        assert_eq!(l.limit(), 8);
    }

    #[tokio::test(start_paused = true)]
    async fn blocks_at_the_limit() {
        let l = AdaptiveLimiter::new(2);
        let a = l.acquire().await;
        let _b = l.acquire().await;
        let third = tokio::time::timeout(std::time::Duration::from_millis(20), l.acquire()).await;
        assert!(third.is_err(), "a third permit must wait");
        drop(a);
        let third = tokio::time::timeout(std::time::Duration::from_millis(20), l.acquire()).await;
        assert!(third.is_ok());
    }
}
