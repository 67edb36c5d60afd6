//! Reading our metrics back from Prometheus text: what `llmops top` shows.
//!
//! [`Scrape::parse`] reads the text exposition format (the subset the Prometheus exporter
//! writes: `name{labels} value` lines, `#` comments); [`summarize`] turns two scrapes into
//! per-model rates — request rate, error rate, cache hit rate, cost per hour and latency
//! percentiles over the interval (interpolated within histogram buckets, as PromQL's
//! `histogram_quantile` does). With no previous scrape the totals since start are used.

use std::collections::BTreeMap;
use std::time::Duration;

/// One sample: metric name, labels, value.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Sample {
    /// The metric name (with its `_bucket`/`_total` suffix).
    pub name: String,
    /// The labels.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// A parsed scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scrape {
    /// The samples, in order.
    pub samples: Vec<Sample>,
}

/// A line that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl Scrape {
    /// Parses Prometheus text exposition.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut samples = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: &str| ParseError {
                line: i + 1,
                reason: reason.to_owned(),
            };
            let (name, labels, rest) = match line.find('{') {
                Some(open) => {
                    let close =
                        find_label_end(line, open).ok_or_else(|| err("unterminated label set"))?;
                    (
                        &line[..open],
                        parse_labels(&line[open + 1..close]).ok_or_else(|| err("bad labels"))?,
                        &line[close + 1..],
                    )
                }
                None => {
                    let sp = line.find(' ').ok_or_else(|| err("no value"))?;
                    (&line[..sp], BTreeMap::new(), &line[sp..])
                }
            };
            let value_text = rest
                .split_whitespace()
                .next()
                .ok_or_else(|| err("no value"))?;
            let value = match value_text {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().map_err(|_| err("value is not a number"))?,
            };
            samples.push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
        }
        Ok(Self { samples })
    }
}

fn find_label_end(line: &str, open: usize) -> Option<usize> {
    let mut in_str = false;
    let mut escaped = false;
    for (i, c) in line[open..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_str => escaped = true,
            '"' => in_str = !in_str,
            '}' if !in_str => return Some(open + i),
            _ => {}
        }
    }
    None
}

fn parse_labels(s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_owned();
        let after = rest[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key, value);
        rest = after[end? + 1..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    Some(out)
}

/// Per-model figures over an interval.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ModelStats {
    /// Requests per second.
    pub requests_per_s: f64,
    /// Failed share of requests.
    pub error_rate: f64,
    /// Cache hits over hits and misses.
    pub cache_hit_rate: f64,
    /// Spend in USD per hour.
    pub cost_usd_per_hour: f64,
    /// Latency percentiles in seconds (p50, p95, p99), when any request finished.
    pub latency: Option<[f64; 3]>,
    /// Mean gateway overhead in seconds.
    pub overhead_mean_s: Option<f64>,
}

const DURATION: &str = "gen_ai_client_operation_duration_seconds";
const OVERHEAD: &str = "llmops_gateway_overhead_seconds";
const MODEL: &str = "gen_ai_request_model";

#[derive(Default)]
struct Totals {
    requests: f64,
    errors: f64,
    hits: f64,
    misses: f64,
    cost_nanos: f64,
    buckets: BTreeMap<u64, f64>,
    overhead_sum: f64,
    overhead_count: f64,
}

fn totals(s: &Scrape) -> BTreeMap<String, Totals> {
    let mut out: BTreeMap<String, Totals> = BTreeMap::new();
    for x in &s.samples {
        let Some(model) = x.labels.get(MODEL) else {
            continue;
        };
        let t = out.entry(model.clone()).or_default();
        match x.name.as_str() {
            "llmops_requests_total" => t.requests += x.value,
            "llmops_errors_total" => t.errors += x.value,
            "llmops_cache_hits_total" => t.hits += x.value,
            "llmops_cache_misses_total" => t.misses += x.value,
            "llmops_cost_nanodollars_total" => t.cost_nanos += x.value,
            n if n == format!("{OVERHEAD}_sum") => t.overhead_sum += x.value,
            n if n == format!("{OVERHEAD}_count") => t.overhead_count += x.value,
            n if n == format!("{DURATION}_bucket") => {
                let le = match x.labels.get("le").map(String::as_str) {
                    Some("+Inf") => f64::INFINITY,
                    Some(v) => v.parse().unwrap_or(f64::INFINITY),
                    None => continue,
                };
                *t.buckets.entry(le.to_bits()).or_default() += x.value;
            }
            _ => {}
        }
    }
    out
}

/// The `q` quantile from cumulative `(upper bound, count)` buckets sorted by bound.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lo, mut below) = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lo);
            }
            let inside = count - below;
            let frac = if inside > 0.0 {
                (rank - below) / inside
            } else {
                1.0
            };
            return Some(lo + (le - lo) * frac);
        }
        lo = le;
        below = count;
    }
    Some(lo)
}

/// Per-model figures between `prev` (when given) and `cur`, `elapsed` apart.
pub fn summarize(
    prev: Option<&Scrape>,
    cur: &Scrape,
    elapsed: Duration,
) -> BTreeMap<String, ModelStats> {
    let now = totals(cur);
    let before = prev.map(totals).unwrap_or_default();
    let secs = elapsed.as_secs_f64().max(1e-9);
    now.into_iter()
        .map(|(model, t)| {
            let zero = Totals::default();
            let b = before.get(&model).unwrap_or(&zero);
            let d = |a: f64, b: f64| (a - b).max(0.0);
            let requests = d(t.requests, b.requests);
            let errors = d(t.errors, b.errors);
            let (hits, misses) = (d(t.hits, b.hits), d(t.misses, b.misses));
            let mut buckets: Vec<(f64, f64)> = t
                .buckets
                .iter()
                .map(|(le, c)| {
                    (
                        f64::from_bits(*le),
                        d(*c, b.buckets.get(le).copied().unwrap_or(0.0)),
                    )
                })
                .collect();
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let latency = match (
                histogram_quantile(0.5, &buckets),
                histogram_quantile(0.95, &buckets),
                histogram_quantile(0.99, &buckets),
            ) {
                (Some(a), Some(b), Some(c)) => Some([a, b, c]),
                _ => None,
            };
            let oc = d(t.overhead_count, b.overhead_count);
            let stats = ModelStats {
                requests_per_s: requests / secs,
                error_rate: if requests > 0.0 {
                    errors / requests
                } else {
                    0.0
                },
                cache_hit_rate: if hits + misses > 0.0 {
                    hits / (hits + misses)
                } else {
                    0.0
                },
                cost_usd_per_hour: d(t.cost_nanos, b.cost_nanos) / 1e9 / secs * 3600.0,
                latency,
                overhead_mean_s: (oc > 0.0).then(|| d(t.overhead_sum, b.overhead_sum) / oc),
            };
            (model, stats)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
# TYPE llmops_requests_total counter
llmops_requests_total{gen_ai_request_model="a",llmops_tenant="t"} 10
llmops_requests_total{gen_ai_request_model="a",llmops_tenant="u"} 10
llmops_errors_total{gen_ai_request_model="a",error_type="timeout"} 5
llmops_cache_hits_total{gen_ai_request_model="a"} 3
llmops_cache_misses_total{gen_ai_request_model="a"} 12
llmops_cost_nanodollars_total{gen_ai_request_model="a"} 1000000000
gen_ai_client_operation_duration_seconds_bucket{gen_ai_request_model="a",le="0.1"} 10
gen_ai_client_operation_duration_seconds_bucket{gen_ai_request_model="a",le="0.2"} 20
gen_ai_client_operation_duration_seconds_bucket{gen_ai_request_model="a",le="+Inf"} 20
weird{msg="a \"quoted\" } brace"} 1
"#;

    #[test]
    fn parses_and_summarizes() {
        let s = Scrape::parse(TEXT).unwrap();
        assert_eq!(
            s.samples.last().unwrap().labels["msg"],
            "a \"quoted\" } brace"
        );
        let m = &summarize(None, &s, Duration::from_secs(10))["a"];
        assert_eq!(m.requests_per_s, 2.0);
        assert_eq!(m.error_rate, 0.25);
        assert_eq!(m.cache_hit_rate, 0.2);
        assert_eq!(m.cost_usd_per_hour, 360.0);
        let [p50, p95, _] = m.latency.unwrap();
        assert!(
            (p50 - 0.1).abs() < 1e-9 && (p95 - 0.19).abs() < 1e-9,
            "{p50} {p95}"
        );
    }

    #[test]
    fn rates_use_the_difference_between_scrapes() {
        let a = Scrape::parse("llmops_requests_total{gen_ai_request_model=\"m\"} 100\n").unwrap();
        let b = Scrape::parse("llmops_requests_total{gen_ai_request_model=\"m\"} 130\n").unwrap();
        assert_eq!(
            summarize(Some(&a), &b, Duration::from_secs(3))["m"].requests_per_s,
            10.0
        );
    }

    #[test]
    fn bad_lines_are_errors() {
        assert!(Scrape::parse("x{a=\"b\" 1").is_err());
        assert!(Scrape::parse("x nope").is_err());
        assert!(Scrape::parse("x").is_err());
    }
}
