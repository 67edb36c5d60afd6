//! Reports of a run and its gate: a terminal summary, JUnit XML for CI test tabs, and
//! Markdown for a pull-request comment. The JSON report is the run file itself
//! ([`RunFile::save`](crate::RunFile::save)), with the gate report embedded.

mod junit;
mod markdown;
mod terminal;

pub use junit::junit_xml;
pub use markdown::markdown;
pub use terminal::terminal_summary;

pub(crate) fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

pub(crate) fn points(x: f64) -> String {
    format!("{:+.1} pts", x * 100.0)
}
