use std::fmt::Write;

use super::{pct, points};
use crate::gate::{GateOutcome, GateReport};
use crate::run::RunFile;

/// A plain-text summary for the terminal: per-metric pass rates with intervals, errors,
/// costs, and the gate's decision with its reasons.
pub fn terminal_summary(run: &RunFile, gate: Option<&GateReport>) -> String {
    let mut out = String::new();
    let s = &run.summary;
    let _ = writeln!(
        out,
        "suite {} · target {} ({}) · {} cases × {} repeat(s) · {:.1} s",
        run.suite,
        run.target.model,
        run.target.id,
        s.cases,
        run.repeats,
        s.duration_ms as f64 / 1000.0
    );
    if let Some(p) = &run.prompt {
        let _ = writeln!(out, "prompt {}@{}", p.id, p.version);
    }
    let width = run
        .summary
        .metrics
        .iter()
        .map(|m| m.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(
        out,
        "{:<width$}  {:>7}  {:>17}  {:>5}  {:>5}  {:>5}  {:>6}",
        "metric", "pass", "95% CI", "pass", "fail", "error", "score"
    );
    for m in &s.metrics {
        let _ = writeln!(
            out,
            "{:<width$}  {:>7}  {:>17}  {:>5}  {:>5}  {:>5}  {:>6.3}",
            m.name,
            pct(m.pass_rate),
            format!(
                "[{}, {}]",
                pct(m.pass_rate_ci.low),
                pct(m.pass_rate_ci.high)
            ),
            m.passed,
            m.failed,
            m.errors,
            m.mean_score
        );
    }
    let _ = writeln!(
        out,
        "target errors {} · cached {} · tokens {} in / {} out · cost ${:.4} target, ${:.4} judges",
        s.target_errors,
        s.cached_samples,
        s.input_tokens,
        s.output_tokens,
        s.target_cost_usd,
        s.judge_cost_usd
    );
    if let Some(g) = gate {
        let _ = writeln!(out);
        for m in &g.metrics {
            if let Some(c) = &m.comparison {
                let _ = writeln!(
                    out,
                    "{}: {} vs baseline {} · Δ {} [{}, {}] · n={}{} · σ_d={:.3} · MDE {:.1} pts · margin {:.1} pts · p={:.4} ({})",
                    m.metric,
                    pct(m.pass_rate),
                    pct(c.baseline_pass_rate),
                    points(c.delta),
                    points(c.ci.low),
                    points(c.ci.high),
                    c.pairs,
                    c.clusters
                        .map(|k| format!(" in {k} clusters"))
                        .unwrap_or_default(),
                    c.sd_delta,
                    c.mde * 100.0,
                    m.margin * 100.0,
                    c.p_adjusted,
                    c.method.as_str()
                );
                if !c.flipped.is_empty() {
                    let _ = writeln!(
                        out,
                        "  flipped: {} pass→fail, {} fail→pass",
                        c.pass_to_fail, c.fail_to_pass
                    );
                }
            }
        }
        for w in &g.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        let verdict = match g.outcome {
            GateOutcome::Pass => "GATE PASSED",
            GateOutcome::Fail => "GATE FAILED",
            GateOutcome::Inconclusive => "GATE INCONCLUSIVE",
        };
        let _ = writeln!(out, "{verdict}");
        for r in &g.reasons {
            let _ = writeln!(out, "  - {r}");
        }
    }
    out
}
