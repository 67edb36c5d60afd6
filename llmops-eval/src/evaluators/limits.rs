//! Latency and cost limits.

use std::time::Duration;

use async_trait::async_trait;
use llmops_core::{EvalInput, Evaluator, Score};

/// Passes when the call took at most `max`. The score is `min(1, max / latency)`, so slower
/// calls score lower. A sample without a measured latency is an evaluation error.
#[derive(Debug)]
pub struct LatencyLimit {
    name: String,
    max: Duration,
}

impl LatencyLimit {
    /// A limit of `max`.
    pub fn new(name: impl Into<String>, max: Duration) -> Self {
        Self {
            name: name.into(),
            max,
        }
    }
}

#[async_trait]
impl Evaluator for LatencyLimit {
    fn name(&self) -> &str {
        &self.name
    }

    async fn evaluate(&self, input: &EvalInput) -> llmops_core::Result<Score> {
        let Some(lat) = input.latency else {
            return Err(llmops_core::Error::invalid_request(
                "the sample has no measured latency",
                None,
            ));
        };
        let passed = lat <= self.max;
        let value = if lat.is_zero() {
            1.0
        } else {
            (self.max.as_secs_f64() / lat.as_secs_f64()).min(1.0)
        };
        let mut s = Score::pass_fail(
            passed,
            format!(
                "latency {} ms (limit {} ms)",
                lat.as_millis(),
                self.max.as_millis()
            ),
        );
        s.value = value;
        Ok(s)
    }
}

/// Passes when the call cost at most `max_usd`. A sample without a known cost is an
/// evaluation error (configure prices for the target).
#[derive(Debug)]
pub struct CostLimit {
    name: String,
    max_usd: f64,
}

impl CostLimit {
    /// A limit of `max_usd`.
    pub fn new(name: impl Into<String>, max_usd: f64) -> Self {
        Self {
            name: name.into(),
            max_usd,
        }
    }
}

#[async_trait]
impl Evaluator for CostLimit {
    fn name(&self) -> &str {
        &self.name
    }

    async fn evaluate(&self, input: &EvalInput) -> llmops_core::Result<Score> {
        let Some(cost) = input.cost_usd else {
            return Err(llmops_core::Error::invalid_request(
                "the sample has no cost: set prices for the target",
                None,
            ));
        };
        let passed = cost <= self.max_usd;
        let value = if cost <= 0.0 {
            1.0
        } else {
            (self.max_usd / cost).min(1.0)
        };
        let mut s = Score::pass_fail(
            passed,
            format!("cost ${cost:.6} (limit ${:.6})", self.max_usd),
        );
        s.value = value;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::input;
    use super::*;

    #[tokio::test]
    async fn limits() {
        let l = LatencyLimit::new("lat", Duration::from_millis(100));
        let mut i = input("x", None);
        assert!(l.evaluate(&i).await.is_err());
        i.latency = Some(Duration::from_millis(50));
        assert!(l.evaluate(&i).await.unwrap().passed);
        i.latency = Some(Duration::from_millis(200));
        let s = l.evaluate(&i).await.unwrap();
        assert!(!s.passed);
        assert!((s.value - 0.5).abs() < 1e-9);

        let c = CostLimit::new("cost", 0.01);
        assert!(c.evaluate(&i).await.is_err());
        i.cost_usd = Some(0.001);
        assert!(c.evaluate(&i).await.unwrap().passed);
        i.cost_usd = Some(0.02);
        assert!(!c.evaluate(&i).await.unwrap().passed);
    }
}
