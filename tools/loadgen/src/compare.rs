//! Side-by-side comparison of gateways in front of the same upstream: the upstream measured
//! directly, then through each gateway, at each rate, with the same open-loop client; the
//! added latency per gateway, its CPU and memory summed over its process tree, and a summary of
//! each gateway's highest sustained rate and added p99 against the reference gateway's.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::client::{self, Percentiles, RunConfig, RunResult};
use crate::matrix::{self, added, mode_name, sustained_cell};
use crate::procstat;

/// An already-running gateway to measure, parsed from
/// `name=NAME,url=BASE_URL[,pid=PID][,key-env=VAR]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GatewaySpec {
    /// Name shown in the table.
    pub(crate) name: String,
    /// OpenAI-compatible base URL, e.g. `http://127.0.0.1:4000/v1`.
    pub(crate) base: String,
    /// Root of the gateway's process tree, for CPU and memory.
    pub(crate) pid: Option<u32>,
    /// Environment variable holding the bearer key to send.
    pub(crate) key_env: Option<String>,
}

impl FromStr for GatewaySpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (mut name, mut base, mut pid, mut key_env) = (None, None, None, None);
        for part in s.split(',') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!("`{part}` is not KEY=VALUE"));
            };
            match k.trim() {
                "name" => name = Some(v.trim().to_owned()),
                "url" => base = Some(v.trim().trim_end_matches('/').to_owned()),
                "pid" => {
                    pid = Some(
                        v.trim()
                            .parse::<u32>()
                            .map_err(|e| format!("pid `{v}`: {e}"))?,
                    );
                }
                "key-env" => key_env = Some(v.trim().to_owned()),
                other => {
                    return Err(format!(
                        "unknown key `{other}` (expected name, url, pid, key-env)"
                    ));
                }
            }
        }
        let name = name.filter(|n| !n.is_empty()).ok_or("missing name=")?;
        let base = base
            .filter(|b| b.starts_with("http://") || b.starts_with("https://"))
            .ok_or("missing url=http://HOST:PORT/v1")?;
        Ok(Self {
            name,
            base,
            pid,
            key_env,
        })
    }
}

/// Settings of a comparison.
#[derive(Clone, Debug)]
pub(crate) struct CompareConfig {
    /// Base URL of the upstream every gateway forwards to (measured directly).
    pub(crate) upstream: String,
    /// Root pid of the upstream's process tree, to let it settle between cells.
    pub(crate) upstream_pid: Option<u32>,
    /// Start `llmops serve` (default pipeline, same upstream) with this binary and measure it
    /// first, as the reference gateway.
    pub(crate) llmops: Option<PathBuf>,
    /// Gateways already running.
    pub(crate) gateways: Vec<GatewaySpec>,
    /// Model name every gateway and the upstream serve.
    pub(crate) model: String,
    pub(crate) rates: Vec<u64>,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) modes: Vec<bool>,
    pub(crate) max_in_flight: u64,
    /// Most requests on the wire at once (connections); `0` for no bound.
    pub(crate) connections: usize,
    /// Measure a gateway at every rate, even above one it did not sustain.
    pub(crate) keep_going: bool,
    /// Longest wait for the gateways to go idle between cells.
    pub(crate) settle: Duration,
    pub(crate) out: Option<PathBuf>,
    pub(crate) json: Option<PathBuf>,
}

/// A gateway being measured.
struct Target {
    name: String,
    base: String,
    pid: Option<u32>,
    api_key: Option<String>,
}

/// What one cell measured for one gateway.
#[derive(Debug, Serialize)]
struct Measured {
    gateway: RunResult,
    added_ms: Percentiles,
    /// CPU of the gateway's process tree, percent of one core; `None` without a pid.
    cpu_pct: Option<f64>,
    /// Peak memory of the process tree (sum of PSS), MiB; `None` without a pid.
    peak_mib: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Cell {
    gateway: String,
    /// `None`: not run, because the gateway did not sustain `gave_up_at`.
    measured: Option<Measured>,
    gave_up_at: Option<u64>,
}

#[derive(Debug, Serialize)]
struct RateRow {
    stream: bool,
    rate: u64,
    direct: RunResult,
    cells: Vec<Cell>,
}

/// Sends one request through a target and fails with what it answered unless it is a success:
/// a wrong key, model name or upstream shows up before any measurement.
async fn probe(http: &reqwest::Client, t: &Target, model: &str) -> anyhow::Result<()> {
    let body = serde_json::json!({"model": model, "max_tokens": 8,
        "messages": [{"role": "user", "content": "ping"}]});
    let mut req = http
        .post(format!("{}/chat/completions", t.base))
        .json(&body);
    if let Some(k) = &t.api_key {
        req = req.bearer_auth(k);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("{} ({}) is not reachable", t.name, t.base))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        let text: String = text.chars().take(500).collect();
        bail!(
            "{} ({}) answered HTTP {status} to a test request: {text}",
            t.name,
            t.base
        );
    }
    Ok(())
}

/// Waits until every process tree in `pids` uses less than 5% of a core over 250 ms (work
/// queued by an overloaded cell drained), at most `max`.
pub(crate) async fn settle(pids: &[u32], max: Duration) {
    let deadline = Instant::now() + max;
    tokio::time::sleep(Duration::from_millis(250)).await;
    while Instant::now() < deadline {
        let before: f64 = pids
            .iter()
            .filter_map(|p| procstat::tree_cpu_seconds(*p))
            .sum();
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_millis(250)).await;
        let after: f64 = pids
            .iter()
            .filter_map(|p| procstat::tree_cpu_seconds(*p))
            .sum();
        if (after - before) / t0.elapsed().as_secs_f64() < 0.05 {
            return;
        }
    }
    eprintln!(
        "  (still busy after {:.0} s, measuring anyway)",
        max.as_secs_f64()
    );
}

/// Runs the comparison and returns the Markdown report.
pub(crate) async fn run(cfg: CompareConfig) -> anyhow::Result<String> {
    let upstream = cfg.upstream.trim_end_matches('/').to_owned();
    let http = client::http_client()?;
    let mut targets = Vec::new();
    // Kept alive (and killed on drop) for the whole comparison.
    let mut _llmops_process = None;
    if let Some(bin) = &cfg.llmops {
        let gw = matrix::start_gateway(bin, &upstream, &upstream, None)?;
        targets.push(Target {
            name: "llmops".to_owned(),
            base: gw.base.clone(),
            pid: Some(gw.pid()),
            api_key: None,
        });
        _llmops_process = Some(gw);
    }
    for g in &cfg.gateways {
        let api_key = match &g.key_env {
            Some(var) => Some(std::env::var(var).with_context(|| {
                format!("gateway {}: environment variable {var} is not set", g.name)
            })?),
            None => None,
        };
        targets.push(Target {
            name: g.name.clone(),
            base: g.base.clone(),
            pid: g.pid,
            api_key,
        });
    }
    if targets.is_empty() {
        bail!("nothing to compare: pass --llmops and/or --gateway");
    }
    let direct_target = Target {
        name: "upstream".to_owned(),
        base: upstream.clone(),
        pid: cfg.upstream_pid,
        api_key: None,
    };
    probe(&http, &direct_target, &cfg.model).await?;
    for t in &targets {
        probe(&http, t, &cfg.model).await?;
        eprintln!(
            "{}: {}{}",
            t.name,
            t.base,
            t.pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
        );
    }
    let mut watched: Vec<u32> = targets.iter().filter_map(|t| t.pid).collect();
    watched.extend(cfg.upstream_pid);

    let mut rows = Vec::new();
    for &stream in &cfg.modes {
        // Per target: the rate it failed to sustain in this mode, if any.
        let mut gave_up: Vec<Option<u64>> = vec![None; targets.len()];
        for &rate in &cfg.rates {
            let base = RunConfig {
                url: format!("{upstream}/chat/completions"),
                rate,
                duration: cfg.duration,
                warmup: cfg.warmup,
                stream,
                model: cfg.model.clone(),
                api_key: None,
                max_in_flight: cfg.max_in_flight,
                connections: cfg.connections,
                unique: false,
            };
            settle(&watched, cfg.settle).await;
            eprintln!("{} {rate} req/s: direct", mode_name(stream));
            let direct = client::run(&http, &base).await?;
            let mut cells = Vec::new();
            for (t, gave_up) in targets.iter().zip(gave_up.iter_mut()) {
                if let Some(at) = *gave_up {
                    cells.push(Cell {
                        gateway: t.name.clone(),
                        measured: None,
                        gave_up_at: Some(at),
                    });
                    continue;
                }
                settle(&watched, cfg.settle).await;
                eprintln!("{} {rate} req/s: {}", mode_name(stream), t.name);
                let via = RunConfig {
                    url: format!("{}/chat/completions", t.base),
                    api_key: t.api_key.clone(),
                    ..base.clone()
                };
                let cpu0 = t.pid.and_then(procstat::tree_cpu_seconds);
                let sampler = t
                    .pid
                    .map(|p| procstat::PeakSampler::start(p, Duration::from_millis(200)));
                let t0 = Instant::now();
                let gateway = client::run(&http, &via).await?;
                let wall = t0.elapsed().as_secs_f64().max(1e-9);
                let cpu1 = t.pid.and_then(procstat::tree_cpu_seconds);
                let peak_mib = sampler.map(procstat::PeakSampler::finish);
                let cpu_pct = cpu0.zip(cpu1).map(|(a, b)| 100.0 * (b - a) / wall);
                if !gateway.sustained() && !cfg.keep_going {
                    *gave_up = Some(rate);
                }
                cells.push(Cell {
                    gateway: t.name.clone(),
                    measured: Some(Measured {
                        added_ms: added(&gateway.latency_ms, &direct.latency_ms),
                        gateway,
                        cpu_pct,
                        peak_mib,
                    }),
                    gave_up_at: None,
                });
            }
            rows.push(RateRow {
                stream,
                rate,
                direct,
                cells,
            });
        }
    }

    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    let md = render(&rows, &names, &cfg.modes)?;
    if let Some(path) = &cfg.json {
        let json = serde_json::json!({"upstream": upstream, "rows": rows});
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &cfg.out {
        std::fs::write(path, &md).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(md)
}

fn opt_cell(v: Option<f64>, unit: &str, digits: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}{unit}"))
}

/// A gateway's best result in one mode: its highest sustained rate and that cell.
fn best_sustained<'a>(
    rows: &'a [RateRow],
    stream: bool,
    name: &str,
) -> Option<(u64, &'a Measured)> {
    rows.iter()
        .filter(|r| r.stream == stream)
        .filter_map(|r| {
            let c = r.cells.iter().find(|c| c.gateway == name)?;
            let m = c.measured.as_ref()?;
            m.gateway.sustained().then_some((r.rate, m))
        })
        .max_by_key(|(rate, _)| *rate)
}

/// The highest throughput a gateway achieved in one mode, at any offered rate.
fn peak_throughput(rows: &[RateRow], stream: bool, name: &str) -> Option<f64> {
    rows.iter()
        .filter(|r| r.stream == stream)
        .filter_map(|r| {
            r.cells
                .iter()
                .find(|c| c.gateway == name)?
                .measured
                .as_ref()
        })
        .map(|m| m.gateway.achieved_rps)
        .reduce(f64::max)
}

fn measured_at<'a>(
    rows: &'a [RateRow],
    stream: bool,
    rate: u64,
    name: &str,
) -> Option<&'a Measured> {
    rows.iter()
        .find(|r| r.stream == stream && r.rate == rate)?
        .cells
        .iter()
        .find(|c| c.gateway == name)?
        .measured
        .as_ref()
}

fn render(rows: &[RateRow], names: &[String], modes: &[bool]) -> anyhow::Result<String> {
    let mut md = String::new();
    writeln!(
        md,
        "| mode | rate (req/s) | gateway | achieved direct / gateway (req/s) | errors | added p50 | added p99 | gateway p99 | sustained | gateway CPU | gateway peak memory |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    for r in rows {
        for c in &r.cells {
            let Some(m) = &c.measured else {
                writeln!(
                    md,
                    "| {} | {} | {} | {:.0} / – | – | – | – | – | **no** (not run: not sustained at {} req/s) | – | – |",
                    mode_name(r.stream),
                    r.rate,
                    c.gateway,
                    r.direct.achieved_rps,
                    c.gave_up_at.unwrap_or(r.rate),
                )?;
                continue;
            };
            writeln!(
                md,
                "| {} | {} | {} | {:.0} / {:.0} | {} | {:.3} ms | {:.3} ms | {:.3} ms | {} | {} | {} |",
                mode_name(r.stream),
                r.rate,
                c.gateway,
                r.direct.achieved_rps,
                m.gateway.achieved_rps,
                m.gateway.errors + m.gateway.skipped,
                m.added_ms.p50,
                m.added_ms.p99,
                m.gateway.latency_ms.p99,
                sustained_cell(&m.gateway),
                opt_cell(m.cpu_pct, "%", 0),
                opt_cell(m.peak_mib, " MiB", 1),
            )?;
        }
    }
    writeln!(md)?;
    writeln!(
        md,
        "Sustained: no request skipped, under 0.1% errors and at least 95% of the offered rate \
         completed. Errors count failed and skipped requests. CPU is percent of one core over the \
         gateway's whole process tree; peak memory is the highest sum of PSS over that tree, \
         sampled every 200 ms."
    )?;
    let max_rate = rows.iter().map(|r| r.rate).max().unwrap_or(0);
    let Some(reference) = names.first() else {
        return Ok(md);
    };
    for &stream in modes {
        writeln!(md)?;
        writeln!(md, "**Summary ({}):**", mode_name(stream))?;
        writeln!(md)?;
        for name in names {
            let best = best_sustained(rows, stream, name);
            let peak = peak_throughput(rows, stream, name);
            let best_text = match best {
                Some((rate, _)) if rate == max_rate => {
                    format!("{rate} req/s (the highest rate measured)")
                }
                Some((rate, _)) => format!("{rate} req/s"),
                None => "none of the measured rates".to_owned(),
            };
            writeln!(
                md,
                "- {name}: highest sustained rate {best_text}; peak achieved throughput {} req/s.",
                opt_cell(peak, "", 0)
            )?;
        }
        let ref_best = best_sustained(rows, stream, reference);
        for other in names.iter().skip(1) {
            let other_best = best_sustained(rows, stream, other);
            match (ref_best, other_best) {
                (Some((a, _)), Some((b, _))) => {
                    let bound = if a == max_rate { "at least " } else { "" };
                    writeln!(
                        md,
                        "- Sustained throughput {reference} / {other}: {a} / {b} req/s = {bound}{:.1}×.",
                        a as f64 / b as f64
                    )?;
                }
                (Some((a, _)), None) => writeln!(
                    md,
                    "- Sustained throughput {reference} / {other}: {a} req/s against none of the \
                     measured rates."
                )?,
                (None, _) => writeln!(
                    md,
                    "- {reference} sustained none of the measured rates: no throughput ratio."
                )?,
            }
            let Some((rate, theirs)) = other_best else {
                continue;
            };
            let Some(ours) = measured_at(rows, stream, rate, reference) else {
                writeln!(md, "- {reference} was not measured at {rate} req/s.")?;
                continue;
            };
            let (a, b) = (ours.added_ms.p99, theirs.added_ms.p99);
            let ratio = if a > 0.0 && b >= a {
                format!(": {other} adds {:.1}× as much", b / a)
            } else if a > 0.0 && b > 0.0 {
                format!(": {reference} adds {:.1}× as much as {other}", a / b)
            } else {
                " (one of them is within noise of the direct run: no ratio)".to_owned()
            };
            writeln!(
                md,
                "- Added p99 at {rate} req/s ({other}'s highest sustained rate): {reference} \
                 {a:.3} ms, {other} {b:.3} ms{ratio}.",
            )?;
        }
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gateway_specs() {
        let g: GatewaySpec = "name=litellm,url=http://127.0.0.1:4000/v1/,pid=42,key-env=KEY"
            .parse()
            .unwrap();
        assert_eq!(
            g,
            GatewaySpec {
                name: "litellm".into(),
                base: "http://127.0.0.1:4000/v1".into(),
                pid: Some(42),
                key_env: Some("KEY".into()),
            }
        );
        let g: GatewaySpec = "url=http://h:1/v1,name=x".parse().unwrap();
        assert_eq!((g.pid, g.key_env), (None, None));
        assert!("name=x".parse::<GatewaySpec>().is_err());
        assert!("name=x,url=h:1".parse::<GatewaySpec>().is_err());
        assert!(
            "name=x,url=http://h/v1,pid=abc"
                .parse::<GatewaySpec>()
                .is_err()
        );
        assert!(
            "name=x,url=http://h/v1,colour=red"
                .parse::<GatewaySpec>()
                .is_err()
        );
    }

    fn result(rate: u64, achieved: f64, errors: u64, p99: f64) -> RunResult {
        RunResult {
            rate,
            stream: false,
            sent: rate * 10,
            ok: rate * 10 - errors,
            errors,
            skipped: 0,
            achieved_rps: achieved,
            latency_ms: Percentiles {
                p50: p99 / 2.0,
                p90: p99,
                p99,
                p999: p99,
                max: p99,
            },
        }
    }

    fn cell(name: &str, direct: &RunResult, r: RunResult) -> Cell {
        Cell {
            gateway: name.into(),
            measured: Some(Measured {
                added_ms: added(&r.latency_ms, &direct.latency_ms),
                gateway: r,
                cpu_pct: Some(50.0),
                peak_mib: None,
            }),
            gave_up_at: None,
        }
    }

    #[test]
    fn renders_unsustained_and_skipped_cells_and_the_summary() {
        let d100 = result(100, 100.0, 0, 1.0);
        let d1000 = result(1000, 1000.0, 0, 1.0);
        let rows = vec![
            RateRow {
                stream: false,
                rate: 100,
                cells: vec![
                    cell("llmops", &d100, result(100, 100.0, 0, 1.5)),
                    cell("litellm", &d100, result(100, 100.0, 0, 11.0)),
                ],
                direct: d100,
            },
            RateRow {
                stream: false,
                rate: 1000,
                cells: vec![
                    cell("llmops", &d1000, result(1000, 1000.0, 0, 2.0)),
                    cell("litellm", &d1000, result(1000, 310.0, 900, 900.0)),
                ],
                direct: d1000.clone(),
            },
            RateRow {
                stream: false,
                rate: 2000,
                cells: vec![
                    cell("llmops", &d1000, result(2000, 2000.0, 0, 2.0)),
                    Cell {
                        gateway: "litellm".into(),
                        measured: None,
                        gave_up_at: Some(1000),
                    },
                ],
                direct: d1000,
            },
        ];
        let names = vec!["llmops".to_owned(), "litellm".to_owned()];
        let md = render(&rows, &names, &[false]).unwrap();
        assert!(
            md.contains("| json | 1000 | litellm | 1000 / 310 | 900 |"),
            "{md}"
        );
        assert!(md.contains("not run: not sustained at 1000 req/s"), "{md}");
        assert!(md.contains("| 50% | – |"), "{md}");
        assert!(
            md.contains("llmops: highest sustained rate 2000 req/s (the highest rate measured)")
        );
        assert!(
            md.contains("litellm: highest sustained rate 100 req/s; peak achieved throughput 310")
        );
        assert!(
            md.contains("llmops / litellm: 2000 / 100 req/s = at least 20.0×"),
            "{md}"
        );
        assert!(
            md.contains("llmops 0.500 ms, litellm 10.000 ms: litellm adds 20.0× as much"),
            "{md}"
        );
    }

    #[test]
    fn summary_states_a_faster_baseline_the_right_way_round() {
        let d = result(1000, 1000.0, 0, 1.0);
        let rows = vec![RateRow {
            stream: false,
            rate: 1000,
            cells: vec![
                cell("llmops", &d, result(1000, 1000.0, 0, 1.5)),
                cell("passthrough", &d, result(1000, 1000.0, 0, 1.2)),
            ],
            direct: d,
        }];
        let names = vec!["llmops".to_owned(), "passthrough".to_owned()];
        let md = render(&rows, &names, &[false]).unwrap();
        assert!(
            md.contains(
                "llmops 0.500 ms, passthrough 0.200 ms: llmops adds 2.5× as much as passthrough"
            ),
            "{md}"
        );
    }
}
