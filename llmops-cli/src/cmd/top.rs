//! `llmops top`: live per-model latency percentiles, cost rate, error rate and cache hit rate
//! from a gateway's `/metrics`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use llmops_observe::scrape::{ModelStats, Scrape, summarize};

/// Arguments of `llmops top`.
#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    /// The gateway's metrics URL (a base URL gets `/metrics` appended).
    #[arg(value_name = "URL", default_value = "http://127.0.0.1:8080/metrics")]
    url: String,
    /// Seconds between scrapes.
    #[arg(long, short = 'n', default_value_t = 2.0, value_name = "SECS")]
    interval: f64,
    /// Print one table (rates over one interval) and exit.
    #[arg(long)]
    once: bool,
}

pub(crate) async fn run(args: TopArgs) -> anyhow::Result<ExitCode> {
    let url = metrics_url(&args.url);
    if !(args.interval.is_finite() && args.interval > 0.0) {
        anyhow::bail!("--interval must be a positive number of seconds");
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut prev: Option<(Scrape, Instant)> = None;
    loop {
        let text = client
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("cannot read {url}"))?
            .text()
            .await
            .with_context(|| format!("cannot read {url}"))?;
        let scrape =
            Scrape::parse(&text).with_context(|| format!("{url} is not Prometheus text"))?;
        let now = Instant::now();
        let mut out = std::io::stdout().lock();
        match &prev {
            // Rates need two scrapes: the first one only starts the interval.
            None if !args.once => {
                writeln!(
                    out,
                    "\x1b[2J\x1b[Hllmops top — {url}: collecting the first interval..."
                )?;
            }
            None => {}
            Some((p, at)) => {
                let elapsed = now - *at;
                let stats = summarize(Some(p), &scrape, elapsed);
                let table = render(&url, &format!("last {:.1}s", elapsed.as_secs_f64()), &stats);
                if args.once {
                    out.write_all(table.as_bytes())?;
                    return Ok(ExitCode::SUCCESS);
                }
                // Clear the screen and redraw from the top-left corner.
                write!(out, "\x1b[2J\x1b[H{table}")?;
            }
        }
        out.flush()?;
        drop(out);
        prev = Some((scrape, now));
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(args.interval)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

fn metrics_url(url: &str) -> String {
    let trimmed = url.trim_end_matches('/');
    if trimmed.ends_with("/metrics") {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/metrics")
    }
}

fn ms(s: f64) -> String {
    format!("{:.0}", s * 1000.0)
}

fn render(
    url: &str,
    window: &str,
    stats: &std::collections::BTreeMap<String, ModelStats>,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "llmops top — {url} ({window})\n");
    let _ = writeln!(
        s,
        "{:<28} {:>9} {:>8} {:>8} {:>8} {:>7} {:>7} {:>10} {:>9}",
        "MODEL", "REQ/S", "P50 ms", "P95 ms", "P99 ms", "ERR %", "CACHE %", "USD/h", "OVHD µs"
    );
    if stats.is_empty() {
        let _ = writeln!(s, "(no requests yet)");
    }
    for (model, m) in stats {
        let (p50, p95, p99) = match m.latency {
            Some([a, b, c]) => (ms(a), ms(b), ms(c)),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let overhead = m
            .overhead_mean_s
            .map_or_else(|| "-".to_owned(), |o| format!("{:.0}", o * 1e6));
        let name: String = model.chars().take(28).collect();
        let _ = writeln!(
            s,
            "{:<28} {:>9.2} {:>8} {:>8} {:>8} {:>7.2} {:>7.1} {:>10.4} {:>9}",
            name,
            m.requests_per_s,
            p50,
            p95,
            p99,
            m.error_rate * 100.0,
            m.cache_hit_rate * 100.0,
            m.cost_usd_per_hour,
            overhead
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_path_is_appended_once() {
        assert_eq!(metrics_url("http://h:1"), "http://h:1/metrics");
        assert_eq!(metrics_url("http://h:1/metrics/"), "http://h:1/metrics");
    }

    #[test]
    fn renders_a_row_per_model() {
        let scrape = Scrape::parse(
            "llmops_requests_total{gen_ai_request_model=\"chat\"} 4\n\
             llmops_errors_total{gen_ai_request_model=\"chat\"} 1\n",
        )
        .unwrap();
        let t = render("u", "w", &summarize(None, &scrape, Duration::from_secs(2)));
        let row = t.lines().find(|l| l.starts_with("chat")).unwrap();
        assert!(row.contains("2.00") && row.contains("25.00"), "{row}");
    }
}
