//! The prefix-caching acceptance numbers, on the deterministic fleet simulator (the same
//! configuration `llmops sim fleet --replicas 8 --seed 1` reports).

#![allow(clippy::unwrap_used)] // test fixtures

use llmops_serve::prefix::Strategy;
use llmops_serve::prefix::fleet::{FleetConfig, StrategyReport, Workload, simulate_all};

fn reports(workload: Workload) -> Vec<(Strategy, StrategyReport)> {
    simulate_all(&FleetConfig::new(workload, 8, 1))
}

fn get(r: &[(Strategy, StrategyReport)], s: Strategy) -> &StrategyReport {
    &r.iter().find(|(k, _)| *k == s).unwrap().1
}

#[test]
fn shared_context_prefix_and_load_beats_round_robin() {
    let r = reports(Workload::SharedContext);
    let rr = get(&r, Strategy::RoundRobin);
    let pa = get(&r, Strategy::PrefixAware);
    let po = get(&r, Strategy::PrefixOnly);
    // Round-robin queues at this load.
    assert!(rr.ttft_p90_ms > 1_000.0, "round-robin should queue: {rr:?}");
    assert!(
        pa.hit_rate >= 2.0 * rr.hit_rate,
        "hit rate: {pa:?} vs {rr:?}"
    );
    assert!(
        pa.ttft_p90_ms * 3.0 <= rr.ttft_p90_ms,
        "p90 TTFT: {pa:?} vs {rr:?}"
    );
    assert!(pa.max_mean_load <= 1.5, "balance: {pa:?}");
    // Prefix affinity alone overloads a replica.
    assert!(
        po.max_mean_load > 2.0,
        "prefix-only should overload: {po:?}"
    );
    assert!(po.ttft_p90_ms > rr.ttft_p90_ms, "{po:?}");
}

#[test]
fn no_sharing_prefix_aware_is_no_worse_than_least_outstanding() {
    let r = reports(Workload::NoSharing);
    let lo = get(&r, Strategy::LeastOutstanding);
    let pa = get(&r, Strategy::PrefixAware);
    assert!(pa.ttft_p90_ms <= lo.ttft_p90_ms * 1.05, "{pa:?} vs {lo:?}");
}

#[test]
fn sessions_keep_their_cache() {
    let r = reports(Workload::Sessions);
    let rr = get(&r, Strategy::RoundRobin);
    let pa = get(&r, Strategy::PrefixAware);
    assert!(pa.hit_rate > rr.hit_rate, "{pa:?} vs {rr:?}");
    assert!(pa.ttft_p90_ms < rr.ttft_p90_ms, "{pa:?} vs {rr:?}");
}
