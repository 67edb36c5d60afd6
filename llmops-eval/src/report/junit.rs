use std::fmt::Write;

use crate::gate::GateReport;
use crate::run::{RunFile, Status};

/// Escapes text for XML attributes and content, dropping characters XML 1.0 forbids.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one `<testsuite>` for the run, one `<testcase>` per case.
///
/// A case is a failure when any evaluator failed it on any repeat, an error when no
/// failure but at least one verdict (or the target call) was ERROR. The gate's decision, when
/// given, is one more test case named `gate`, so a CI test tab shows a regression. The
/// layout follows the JUnit schema CI systems read (Jenkins, GitLab, GitHub test
/// reporters): `testsuites` > `testsuite` (`name`, `tests`, `failures`, `errors`,
/// `skipped`, `time`, `timestamp`) > `properties`, `testcase` (`name`, `classname`, `time`)
/// with at most one `failure` or `error` child carrying `message` and `type`.
pub fn junit_xml(run: &RunFile, gate: Option<&GateReport>) -> String {
    struct Tc {
        name: String,
        time: f64,
        kind: Option<(&'static str, String, String)>,
    }
    let mut cases = Vec::with_capacity(run.cases.len() + 1);
    for c in &run.cases {
        let time: f64 = c.samples.iter().filter_map(|s| s.latency_ms).sum::<f64>() / 1000.0;
        let mut failures = Vec::new();
        let mut errors = Vec::new();
        for s in &c.samples {
            for (name, r) in &s.scores {
                let line = format!("repeat {} · {name}: {}", s.repeat, r.explanation);
                match r.status {
                    Status::Fail => failures.push(line),
                    Status::Error => errors.push(line),
                    Status::Pass => {}
                }
            }
        }
        let kind = if !failures.is_empty() {
            Some((
                "failure",
                format!("{} check(s) failed", failures.len()),
                failures.join("\n"),
            ))
        } else if !errors.is_empty() {
            Some((
                "error",
                format!("{} check(s) could not be judged", errors.len()),
                errors.join("\n"),
            ))
        } else {
            None
        };
        cases.push(Tc {
            name: c.id.clone(),
            time,
            kind,
        });
    }
    if let Some(g) = gate {
        let kind = match g.outcome {
            crate::GateOutcome::Pass => None,
            crate::GateOutcome::Fail => Some((
                "failure",
                "regression gate failed".to_owned(),
                g.reasons.join("\n"),
            )),
            crate::GateOutcome::Inconclusive => Some((
                "error",
                "regression gate inconclusive".to_owned(),
                g.reasons.join("\n"),
            )),
        };
        cases.push(Tc {
            name: "gate".into(),
            time: 0.0,
            kind,
        });
    }
    let failures = cases
        .iter()
        .filter(|c| matches!(c.kind, Some(("failure", ..))))
        .count();
    let errors = cases
        .iter()
        .filter(|c| matches!(c.kind, Some(("error", ..))))
        .count();
    let time = run.summary.duration_ms as f64 / 1000.0;
    let timestamp = iso8601(run.started_at_ms);
    let suite = esc(&run.suite);

    let mut x = String::new();
    let _ = writeln!(x, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        x,
        r#"<testsuites name="{suite}" tests="{}" failures="{failures}" errors="{errors}" time="{time:.3}">"#,
        cases.len()
    );
    let _ = writeln!(
        x,
        r#"  <testsuite name="{suite}" tests="{}" failures="{failures}" errors="{errors}" skipped="0" time="{time:.3}" timestamp="{timestamp}">"#,
        cases.len()
    );
    let _ = writeln!(x, "    <properties>");
    let mut props = vec![
        ("run_id", run.run_id.clone()),
        ("target", run.target.id.clone()),
        ("model", run.target.model.clone()),
        ("repeats", run.repeats.to_string()),
    ];
    if let Some(p) = &run.prompt {
        props.push(("prompt", format!("{}@{}", p.id, p.version)));
    }
    for m in &run.summary.metrics {
        props.push(("pass_rate", format!("{}={:.4}", m.name, m.pass_rate)));
    }
    for (k, v) in props {
        let _ = writeln!(
            x,
            r#"      <property name="{}" value="{}"/>"#,
            esc(k),
            esc(&v)
        );
    }
    let _ = writeln!(x, "    </properties>");
    for c in cases {
        let open = format!(
            r#"    <testcase name="{}" classname="{suite}" time="{:.3}""#,
            esc(&c.name),
            c.time
        );
        match c.kind {
            None => {
                let _ = writeln!(x, "{open}/>");
            }
            Some((tag, message, body)) => {
                let _ = writeln!(x, "{open}>");
                let _ = writeln!(
                    x,
                    r#"      <{tag} message="{}" type="{}">{}</{tag}>"#,
                    esc(&message),
                    if tag == "failure" {
                        "EvalFailure"
                    } else {
                        "EvalError"
                    },
                    esc(&body)
                );
                let _ = writeln!(x, "    </testcase>");
            }
        }
    }
    let _ = writeln!(x, "  </testsuite>");
    let _ = writeln!(x, "</testsuites>");
    x
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC, no zone suffix, as the JUnit schema's `timestamp` wants).
fn iso8601(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_escaping() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00");
        assert_eq!(iso8601(1_709_210_096_000), "2024-02-29T12:34:56");
        assert_eq!(esc("a<b & \"c\"\u{1}"), "a&lt;b &amp; &quot;c&quot;");
    }
}
