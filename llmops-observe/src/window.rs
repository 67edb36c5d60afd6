//! Time-bucketed sliding windows (on tokio's clock, so tests run on paused time).

use std::collections::VecDeque;
use std::ops::AddAssign;
use std::time::Duration;

use tokio::time::Instant;

/// Values summed into buckets of `width`, kept for `keep`; sums over any trailing span.
#[derive(Debug)]
pub(crate) struct Buckets<T> {
    origin: Instant,
    width: Duration,
    keep: u64,
    buckets: VecDeque<(u64, T)>,
}

impl<T: Default + Clone + AddAssign> Buckets<T> {
    /// Buckets of `width` kept for at least `keep`.
    pub(crate) fn new(origin: Instant, width: Duration, keep: Duration) -> Self {
        let width = width.max(Duration::from_millis(1));
        let keep = (keep.as_nanos() / width.as_nanos()).max(1) as u64 + 1;
        Self {
            origin,
            width,
            keep,
            buckets: VecDeque::new(),
        }
    }

    fn index(&self, at: Instant) -> u64 {
        (at.saturating_duration_since(self.origin).as_nanos() / self.width.as_nanos()) as u64
    }

    /// Adds `v` at time `at` (times before the last bucket go into the last bucket).
    pub(crate) fn add(&mut self, at: Instant, v: T) {
        let idx = self.index(at);
        match self.buckets.back_mut() {
            Some((i, t)) if *i >= idx => *t += v,
            _ => self.buckets.push_back((idx, v)),
        }
        self.prune(at);
    }

    /// Drops buckets older than the kept span.
    pub(crate) fn prune(&mut self, now: Instant) {
        let idx = self.index(now);
        while let Some((i, _)) = self.buckets.front() {
            if i + self.keep < idx {
                self.buckets.pop_front();
            } else {
                break;
            }
        }
    }

    /// The sum over the trailing `span` ending at `now` (whole buckets).
    pub(crate) fn sum(&self, now: Instant, span: Duration) -> T {
        self.sum_between(now, Duration::ZERO, span)
    }

    /// The sum over buckets between `from_ago` and `to_ago` before `now` (whole buckets;
    /// `from_ago < to_ago`).
    pub(crate) fn sum_between(&self, now: Instant, from_ago: Duration, to_ago: Duration) -> T {
        let idx = self.index(now);
        let n = |d: Duration| (d.as_nanos() / self.width.as_nanos()) as u64;
        let newest = idx.saturating_sub(n(from_ago));
        let oldest_excl = idx.checked_sub(n(to_ago));
        let mut out = T::default();
        for (i, t) in self.buckets.iter().rev() {
            if *i > newest {
                continue;
            }
            if let Some(o) = oldest_excl
                && *i <= o
            {
                break;
            }
            out += t.clone();
        }
        out
    }
}

/// Request counts for SLO and error-rate windows.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Counts {
    pub(crate) total: u64,
    pub(crate) errors: u64,
    /// Successful requests whose first chunk came later than the latency objective.
    pub(crate) slow: u64,
    /// Successful requests (the denominator of the latency objective).
    pub(crate) ok: u64,
}

impl AddAssign for Counts {
    fn add_assign(&mut self, o: Self) {
        self.total += o.total;
        self.errors += o.errors;
        self.slow += o.slow;
        self.ok += o.ok;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sums_cover_only_the_trailing_span() {
        let t0 = Instant::now();
        let mut b: Buckets<u64> = Buckets::new(t0, Duration::from_secs(1), Duration::from_secs(60));
        b.add(Instant::now(), 1);
        tokio::time::advance(Duration::from_secs(10)).await;
        b.add(Instant::now(), 2);
        let now = Instant::now();
        assert_eq!(b.sum(now, Duration::from_secs(5)), 2);
        assert_eq!(b.sum(now, Duration::from_secs(30)), 3);
        assert_eq!(
            b.sum_between(now, Duration::from_secs(5), Duration::from_secs(30)),
            1
        );
        tokio::time::advance(Duration::from_secs(120)).await;
        b.prune(Instant::now());
        assert_eq!(
            b.sum(Instant::now(), Duration::from_secs(600)),
            0,
            "old buckets are pruned"
        );
    }
}
