//! The gate's false-alarm and detection rates (the acceptance test of the regression gate).
//!
//! A seeded noisy model (2% of answers flipped at random) answers 300 cases. Comparing two
//! runs of the same model must pass the gate in at least 95 of 100 seeded trials; a model
//! whose accuracy dropped by 10 points must fail it in at least 95 of 100.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{NoisyModel, dataset, runner, unit};
use llmops_eval::{Gate, GateOutcome, GatedMetric};

const N: usize = 300;
const TRIALS: u64 = 100;
const FLIP: f64 = 0.02;
/// δ: with 300 single-sample cases the gate detects a drop of about δ + 2.5·SE ≈ δ + 5
/// points with 80% power (see docs/evaluation.md), so a margin of 2 points leaves a
/// 10-point regression far outside the tolerated zone.
const MARGIN: f64 = 0.02;

fn truth(trial: u64) -> Vec<bool> {
    // About 80% of the cases are answerable.
    (0..N)
        .map(|i| unit(trial * 1_000_003 + i as u64) < 0.8)
        .collect()
}

/// The same truth with `points`% of all cases turned from right to wrong.
fn degraded(truth: &[bool], trial: u64, drop_cases: usize) -> Vec<bool> {
    let mut t = truth.to_vec();
    let mut right: Vec<usize> = (0..N).filter(|&i| t[i]).collect();
    // Deterministic shuffle of the right answers, then break the first `drop_cases`.
    for k in (1..right.len()).rev() {
        let j = (common::splitmix(trial ^ (k as u64) << 20) % (k as u64 + 1)) as usize;
        right.swap(k, j);
    }
    for &i in right.iter().take(drop_cases) {
        t[i] = false;
    }
    t
}

async fn outcome(base: Vec<bool>, cand: Vec<bool>, trial: u64) -> (GateOutcome, f64) {
    let ds = dataset(N, None);
    let baseline = runner(NoisyModel::new(Arc::new(base), FLIP, trial * 2 + 1), 1)
        .run(&ds, None)
        .await
        .unwrap();
    let current = runner(NoisyModel::new(Arc::new(cand), FLIP, trial * 2 + 2), 1)
        .run(&ds, None)
        .await
        .unwrap();
    let gate = Gate::new(vec![GatedMetric::new("correct", MARGIN)]).seed(trial);
    let report = gate.evaluate(&current, Some(&baseline)).unwrap();
    let delta = report.metrics[0].comparison.as_ref().unwrap().delta;
    (report.outcome, delta)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_model_passes_in_at_least_95_of_100_trials() {
    let mut passed = 0;
    for trial in 0..TRIALS {
        let t = truth(trial);
        let (o, _) = outcome(t.clone(), t, trial).await;
        passed += u32::from(o == GateOutcome::Pass);
    }
    eprintln!("same model: gate passed {passed}/{TRIALS}");
    assert!(
        passed >= 95,
        "noise alone failed the gate in {} of {TRIALS} trials",
        TRIALS as u32 - passed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_point_drop_fails_in_at_least_95_of_100_trials() {
    let mut failed = 0;
    let mut deltas = 0.0;
    for trial in 0..TRIALS {
        let t = truth(trial);
        let worse = degraded(&t, trial, N / 10);
        let (o, d) = outcome(t, worse, trial).await;
        failed += u32::from(o == GateOutcome::Fail);
        deltas += d;
    }
    let mean = deltas / TRIALS as f64;
    eprintln!("10-point drop: gate failed {failed}/{TRIALS}, mean Δ {mean:.3}");
    assert!(
        (mean + 0.10).abs() < 0.01,
        "the simulated drop is not 10 points: {mean}"
    );
    assert!(
        failed >= 95,
        "a 10-point regression passed the gate in {} of {TRIALS} trials",
        TRIALS as u32 - failed
    );
}

#[tokio::test]
async fn the_decision_is_reproducible() {
    let t = truth(7);
    let worse = degraded(&t, 7, 12);
    let a = outcome(t.clone(), worse.clone(), 7).await;
    let b = outcome(t, worse, 7).await;
    assert_eq!(a, b);
}

#[tokio::test]
async fn repeats_and_clusters_use_the_bootstrap() {
    use llmops_eval::gate::Method;
    let t = Arc::new(truth(3));
    let ds = dataset(N, Some(30));
    let base = runner(NoisyModel::new(t.clone(), FLIP, 1), 2)
        .run(&ds, None)
        .await
        .unwrap();
    let cur = runner(NoisyModel::new(t, FLIP, 2), 2)
        .run(&ds, None)
        .await
        .unwrap();
    let report = Gate::new(vec![GatedMetric::new("correct", MARGIN)])
        .evaluate(&cur, Some(&base))
        .unwrap();
    let c = report.metrics[0].comparison.as_ref().unwrap();
    assert_eq!(c.method, Method::ClusterBootstrap);
    assert_eq!(c.clusters, Some(30));
    assert_eq!(c.pairs, N);
    assert_eq!(report.outcome, GateOutcome::Pass);
    assert!(c.mde > MARGIN);
}
