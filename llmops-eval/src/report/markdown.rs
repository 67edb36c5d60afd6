use std::fmt::Write;

use super::{pct, points};
use crate::gate::{GateOutcome, GateReport};
use crate::run::{RunFile, Status};

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn status(s: Status) -> &'static str {
    match s {
        Status::Pass => "✅ pass",
        Status::Fail => "❌ fail",
        Status::Error => "⚠️ error",
    }
}

/// Markdown for a pull-request comment: the verdict, a table of metrics with the change
/// versus the baseline, why the gate failed, and a table of the cases that flipped.
pub fn markdown(run: &RunFile, gate: Option<&GateReport>, max_flips: usize) -> String {
    let mut md = String::new();
    let verdict = match gate.map(|g| g.outcome) {
        Some(GateOutcome::Pass) => "✅ passed",
        Some(GateOutcome::Fail) => "❌ failed",
        Some(GateOutcome::Inconclusive) => "⚠️ inconclusive",
        None => "not gated",
    };
    let _ = writeln!(md, "### Evaluation `{}`: {verdict}\n", cell(&run.suite));
    let prompt = run
        .prompt
        .as_ref()
        .map(|p| format!(" · prompt `{}@{}`", p.id, p.version))
        .unwrap_or_default();
    let _ = writeln!(
        md,
        "Target `{}` · {} cases × {} repeat(s){prompt} · run `{}`\n",
        cell(&run.target.model),
        run.summary.cases,
        run.repeats,
        run.run_id
    );
    let _ = writeln!(
        md,
        "| metric | pass rate (95% CI) | baseline | Δ (CI) | margin | MDE | errors | verdict |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    for m in &run.summary.metrics {
        let gm = gate.and_then(|g| g.metrics.iter().find(|x| x.metric == m.name));
        let cmp = gm.and_then(|g| g.comparison.as_ref());
        let _ = writeln!(
            md,
            "| `{}` | {} ({}–{}) | {} | {} | {} | {} | {} | {} |",
            cell(&m.name),
            pct(m.pass_rate),
            pct(m.pass_rate_ci.low),
            pct(m.pass_rate_ci.high),
            cmp.map_or("—".into(), |c| pct(c.baseline_pass_rate)),
            cmp.map_or("—".into(), |c| format!(
                "{} ({} to {})",
                points(c.delta),
                points(c.ci.low),
                points(c.ci.high)
            )),
            gm.map_or("—".into(), |g| format!("{:.1} pts", g.margin * 100.0)),
            cmp.map_or("—".into(), |c| format!("{:.1} pts", c.mde * 100.0)),
            m.errors,
            gm.map_or("not gated".into(), |g| format!("{:?}", g.verdict)
                .to_lowercase()),
        );
    }
    if let Some(g) = gate {
        if !g.reasons.is_empty() {
            let _ = writeln!(md, "\n**Why:**\n");
            for r in &g.reasons {
                let _ = writeln!(md, "- {r}");
            }
        }
        if !g.warnings.is_empty() {
            let _ = writeln!(
                md,
                "\n<details><summary>Warnings ({})</summary>\n",
                g.warnings.len()
            );
            for w in &g.warnings {
                let _ = writeln!(md, "- {w}");
            }
            let _ = writeln!(md, "\n</details>");
        }
        for m in &g.metrics {
            let Some(c) = &m.comparison else { continue };
            if c.flipped.is_empty() {
                continue;
            }
            let _ = writeln!(
                md,
                "\n#### Flipped cases for `{}`: {} pass→fail, {} fail→pass\n",
                cell(&m.metric),
                c.pass_to_fail,
                c.fail_to_pass
            );
            let _ = writeln!(md, "| case | baseline | now | score |");
            let _ = writeln!(md, "|---|---|---|---|");
            // Regressions first.
            let mut flips: Vec<_> = c.flipped.iter().collect();
            flips.sort_by_key(|f| (f.after != Status::Fail, f.case.clone()));
            for f in flips.iter().take(max_flips) {
                let _ = writeln!(
                    md,
                    "| `{}` | {} | {} | {:.2} → {:.2} |",
                    cell(&f.case),
                    status(f.before),
                    status(f.after),
                    f.before_score,
                    f.after_score
                );
            }
            if flips.len() > max_flips {
                let _ = writeln!(
                    md,
                    "\n…and {} more (see the run file).",
                    flips.len() - max_flips
                );
            }
        }
    }
    let s = &run.summary;
    let _ = writeln!(
        md,
        "\n<sub>{} target errors · cost ${:.4} (target) + ${:.4} (judges) · {} in / {} out tokens</sub>",
        s.target_errors, s.target_cost_usd, s.judge_cost_usd, s.input_tokens, s.output_tokens
    );
    md
}
