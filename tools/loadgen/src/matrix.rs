//! The benchmark matrix: the canned upstream measured directly and through a gateway at each
//! rate, added latency computed per percentile, the gateway's CPU and memory read from /proc,
//! and many concurrent slow streams held open to measure memory per stream.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use serde::Serialize;

use crate::client::{self, Percentiles, RunConfig, RunResult};
use crate::procstat;
use crate::upstream::{self, UpstreamConfig};

/// Settings of a matrix run.
#[derive(Clone, Debug)]
pub(crate) struct MatrixConfig {
    pub(crate) rates: Vec<u64>,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) modes: Vec<bool>,
    pub(crate) llmops: PathBuf,
    pub(crate) extra_config: Option<PathBuf>,
    pub(crate) api_key: Option<String>,
    pub(crate) streams: Vec<u64>,
    pub(crate) out: Option<PathBuf>,
    pub(crate) json: Option<PathBuf>,
    pub(crate) unique: bool,
    /// Direct/gateway pairs per cell; medians are reported.
    pub(crate) repeat: u32,
    /// Most requests on the wire at once (connections); `0` for no bound.
    pub(crate) connections: usize,
}

/// A gateway process started for the run; killed on drop.
pub(crate) struct GatewayProcess {
    child: Child,
    pub(crate) base: String,
}

impl GatewayProcess {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a gateway config pointing at the upstreams (`fast` serves model `bench`, `slow` model
/// `slow`; both are base URLs ending in `/v1`) and starts `llmops serve` on a free port.
pub(crate) fn start_gateway(
    llmops: &PathBuf,
    fast: &str,
    slow: &str,
    extra: Option<&PathBuf>,
) -> anyhow::Result<GatewayProcess> {
    let mut cfg = format!(
        "[providers.upstream]\nkind = \"openai\"\nbase_url = \"{fast}\"\n\n\
         [providers.slow]\nkind = \"openai\"\nbase_url = \"{slow}\"\n\n\
         [models.bench]\ntargets = [\"upstream/bench\"]\n\n\
         [models.slow]\ntargets = [\"slow/bench\"]\n\n"
    );
    if let Some(path) = extra {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        cfg.push_str(&text);
    }
    let dir = std::env::temp_dir().join(format!("llmops-loadgen-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("gateway.toml");
    std::fs::write(&path, cfg)?;
    let mut child = Command::new(llmops)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {} (build it with `cargo build --release -p llmops-cli`)",
                llmops.display()
            )
        })?;
    let stderr = child.stderr.take().context("no stderr")?;
    let mut reader = BufReader::new(stderr);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let Some(addr) = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split("/v1").next())
    else {
        let _ = child.kill();
        bail!("the gateway did not start: {line}");
    };
    let base = format!("http://{addr}/v1");
    // Keep draining stderr so the gateway never blocks on a full pipe.
    std::thread::spawn(move || for _ in reader.lines() {});
    Ok(GatewayProcess { child, base })
}

#[derive(Debug, Serialize)]
struct Row {
    stream: bool,
    rate: u64,
    direct: RunResult,
    gateway: RunResult,
    added_ms: Percentiles,
    gateway_cpu_pct: f64,
    gateway_rss_mib: f64,
}

#[derive(Debug, Serialize)]
struct StreamsRow {
    streams: u64,
    opened: u64,
    idle_rss_mib: f64,
    peak_rss_mib: f64,
    bytes_per_stream: f64,
}

/// Gateway minus direct, per percentile.
pub(crate) fn added(g: &Percentiles, d: &Percentiles) -> Percentiles {
    Percentiles {
        p50: g.p50 - d.p50,
        p90: g.p90 - d.p90,
        p99: g.p99 - d.p99,
        p999: g.p999 - d.p999,
        max: g.max - d.max,
    }
}

/// One row from a cell's direct/gateway pairs: the median added latency per percentile and
/// the median CPU; the runs shown (achieved rate, errors, gateway p99) are the pair whose added
/// p50 is the median — or a pair that did not sustain the rate, if any did not.
fn summarize(
    stream: bool,
    rate: u64,
    pairs: Vec<(RunResult, RunResult, f64)>,
    rss: f64,
) -> anyhow::Result<Row> {
    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        match n {
            0 => 0.0,
            _ if n % 2 == 1 => v[n / 2],
            _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }
    let adds: Vec<Percentiles> = pairs
        .iter()
        .map(|(d, g, _)| added(&g.latency_ms, &d.latency_ms))
        .collect();
    let of = |f: fn(&Percentiles) -> f64| median(adds.iter().map(f).collect());
    let added_ms = Percentiles {
        p50: of(|p| p.p50),
        p90: of(|p| p.p90),
        p99: of(|p| p.p99),
        p999: of(|p| p.p999),
        max: of(|p| p.max),
    };
    let cpu = median(pairs.iter().map(|p| p.2).collect());
    let shown = pairs
        .iter()
        .position(|(d, g, _)| !d.sustained() || !g.sustained())
        .unwrap_or_else(|| {
            let mut order: Vec<usize> = (0..adds.len()).collect();
            order.sort_by(|&a, &b| adds[a].p50.total_cmp(&adds[b].p50));
            order.get(order.len() / 2).copied().unwrap_or(0)
        });
    let (direct, gateway, _) = pairs
        .into_iter()
        .nth(shown)
        .context("a cell needs at least one measurement")?;
    Ok(Row {
        stream,
        rate,
        direct,
        gateway,
        added_ms,
        gateway_cpu_pct: cpu,
        gateway_rss_mib: rss,
    })
}

/// The `sustained` cell of a table: `yes`, or a bold `no` that stands out.
pub(crate) fn sustained_cell(r: &RunResult) -> &'static str {
    if r.sustained() { "yes" } else { "**no**" }
}

/// The `mode` cell of a table.
pub(crate) fn mode_name(stream: bool) -> &'static str {
    if stream { "stream" } else { "json" }
}

/// Opens `n` slow streams through the gateway at once and samples its memory while they are
/// all open.
async fn hold_streams(
    http: &reqwest::Client,
    gw: &GatewayProcess,
    n: u64,
    api_key: Option<&str>,
) -> anyhow::Result<StreamsRow> {
    let (idle, _) = procstat::memory_mib(gw.pid()).context("cannot read gateway memory")?;
    let opened = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let body = serde_json::json!({"model": "slow", "stream": true,
        "messages": [{"role": "user", "content": "hold this stream open"}]})
    .to_string();
    let mut tasks = Vec::new();
    for _ in 0..n {
        let mut req = http
            .post(format!("{}/chat/completions", gw.base))
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(k) = api_key {
            req = req.bearer_auth(k);
        }
        let opened = opened.clone();
        tasks.push(tokio::spawn(async move {
            // A refusal (503 when the gateway sheds load) is not an open stream.
            let Ok(resp) = req.send().await else { return };
            if !resp.status().is_success() {
                return;
            }
            let mut s = resp.bytes_stream();
            if let Some(Ok(_)) = s.next().await {
                opened.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            while let Some(Ok(_)) = s.next().await {}
        }));
    }
    // Wait until every stream delivered its first bytes (or 30 s), sampling memory meanwhile.
    let mut peak = idle;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some((rss, _)) = procstat::memory_mib(gw.pid()) {
            peak = peak.max(rss);
        }
        if opened.load(std::sync::atomic::Ordering::SeqCst) >= n {
            break;
        }
    }
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some((rss, _)) = procstat::memory_mib(gw.pid()) {
            peak = peak.max(rss);
        }
    }
    let opened = opened.load(std::sync::atomic::Ordering::SeqCst);
    for t in tasks {
        t.abort();
    }
    Ok(StreamsRow {
        streams: n,
        opened,
        idle_rss_mib: idle,
        peak_rss_mib: peak,
        bytes_per_stream: (peak - idle) * 1024.0 * 1024.0 / n.max(1) as f64,
    })
}

/// Runs the whole matrix and returns the Markdown report.
pub(crate) async fn run(cfg: MatrixConfig) -> anyhow::Result<String> {
    let fast = upstream::spawn(
        "127.0.0.1:0".parse()?,
        UpstreamConfig {
            chunks: 16,
            chunk_delay: Duration::ZERO,
        },
    )
    .await?;
    // 300 chunks, one every 100 ms: streams that stay open for 30 s.
    let slow = upstream::spawn(
        "127.0.0.1:0".parse()?,
        UpstreamConfig {
            chunks: 300,
            chunk_delay: Duration::from_millis(100),
        },
    )
    .await?;
    let gw = start_gateway(
        &cfg.llmops,
        &format!("http://{fast}/v1"),
        &format!("http://{slow}/v1"),
        cfg.extra_config.as_ref(),
    )?;
    let http = client::http_client()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, _) = procstat::memory_mib(gw.pid()).context("cannot read the gateway's /proc entry")?;
    let idle_rss = procstat::memory_mib(gw.pid()).map_or(0.0, |m| m.0);
    eprintln!(
        "gateway {} (pid {}), idle RSS {idle_rss:.1} MiB",
        gw.base,
        gw.pid()
    );

    let mut rows = Vec::new();
    for &stream in &cfg.modes {
        for &rate in &cfg.rates {
            let base = RunConfig {
                url: format!("http://{fast}/v1/chat/completions"),
                rate,
                duration: cfg.duration,
                warmup: cfg.warmup,
                stream,
                model: "bench".to_owned(),
                api_key: None,
                max_in_flight: 20_000,
                connections: cfg.connections,
                unique: cfg.unique,
            };
            let via = RunConfig {
                url: format!("{}/chat/completions", gw.base),
                api_key: cfg.api_key.clone(),
                ..base.clone()
            };
            let mut pairs = Vec::new();
            for i in 1..=cfg.repeat {
                let of = if cfg.repeat > 1 {
                    format!(" ({i}/{})", cfg.repeat)
                } else {
                    String::new()
                };
                // Work queued by an overloaded cell must not slow this one.
                crate::compare::settle(&[gw.pid()], Duration::from_secs(30)).await;
                eprintln!("{} {rate} req/s: direct{of}", mode_name(stream));
                let direct = client::run(&http, &base).await?;
                eprintln!("{} {rate} req/s: gateway{of}", mode_name(stream));
                let cpu0 = procstat::cpu_seconds(gw.pid()).unwrap_or(0.0);
                let t0 = std::time::Instant::now();
                let gateway = client::run(&http, &via).await?;
                let cpu = procstat::cpu_seconds(gw.pid()).unwrap_or(0.0) - cpu0;
                let wall = t0.elapsed().as_secs_f64();
                pairs.push((direct, gateway, 100.0 * cpu / wall.max(1e-9)));
            }
            let rss = procstat::memory_mib(gw.pid()).map_or(0.0, |m| m.1);
            rows.push(summarize(stream, rate, pairs, rss)?);
        }
    }
    let mut streams_rows = Vec::new();
    for &n in &cfg.streams {
        eprintln!("holding {n} concurrent slow streams");
        let row = hold_streams(&http, &gw, n, cfg.api_key.as_deref()).await?;
        streams_rows.push(row);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    let mut md = String::new();
    if cfg.repeat > 1 {
        writeln!(
            md,
            "Each cell: {} alternating direct/gateway pairs; added latency and gateway CPU are \
             their medians, the other columns the pair with the median added p50.",
            cfg.repeat
        )?;
        writeln!(md)?;
    }
    writeln!(
        md,
        "| mode | rate (req/s) | achieved direct / gateway | added p50 | added p90 | added p99 | added p99.9 | gateway p99 | errors | sustained | gateway CPU | gateway peak RSS |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|")?;
    for r in &rows {
        writeln!(
            md,
            "| {} | {} | {:.0} / {:.0} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {} | {} | {:.0}% | {:.1} MiB |",
            mode_name(r.stream),
            r.rate,
            r.direct.achieved_rps,
            r.gateway.achieved_rps,
            r.added_ms.p50,
            r.added_ms.p90,
            r.added_ms.p99,
            r.added_ms.p999,
            r.gateway.latency_ms.p99,
            r.gateway.errors + r.gateway.skipped,
            sustained_cell(&r.gateway),
            r.gateway_cpu_pct,
            r.gateway_rss_mib,
        )?;
    }
    writeln!(md)?;
    writeln!(md, "Idle RSS: {idle_rss:.1} MiB.")?;
    if !streams_rows.is_empty() {
        writeln!(md)?;
        writeln!(
            md,
            "| concurrent streams | opened | idle RSS | peak RSS | bytes per stream |"
        )?;
        writeln!(md, "|---|---|---|---|---|")?;
        for s in &streams_rows {
            writeln!(
                md,
                "| {} | {} | {:.1} MiB | {:.1} MiB | {:.0} |",
                s.streams, s.opened, s.idle_rss_mib, s.peak_rss_mib, s.bytes_per_stream
            )?;
        }
    }
    if let Some(path) = &cfg.json {
        let json =
            serde_json::json!({"idle_rss_mib": idle_rss, "rows": rows, "streams": streams_rows});
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    if let Some(path) = &cfg.out {
        std::fs::write(path, &md)?;
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rate: u64, achieved: f64, p50: f64, p99: f64) -> RunResult {
        RunResult {
            rate,
            stream: false,
            sent: rate * 10,
            ok: rate * 10,
            errors: 0,
            skipped: 0,
            achieved_rps: achieved,
            latency_ms: Percentiles {
                p50,
                p90: p50,
                p99,
                p999: p99,
                max: p99,
            },
        }
    }

    #[test]
    fn repeated_cells_report_medians_and_show_the_median_pair() {
        let pairs = vec![
            (
                run(1000, 1000.0, 1.0, 2.0),
                run(1000, 1000.0, 1.9, 3.0),
                20.0,
            ),
            (
                run(1000, 1000.0, 1.0, 2.0),
                run(1000, 1000.0, 1.1, 2.5),
                30.0,
            ),
            (
                run(1000, 1000.0, 1.0, 2.0),
                run(1000, 1000.0, 1.3, 9.0),
                10.0,
            ),
        ];
        let row = summarize(false, 1000, pairs, 12.0).unwrap();
        assert!((row.added_ms.p50 - 0.3).abs() < 1e-9, "{:?}", row.added_ms);
        assert!((row.added_ms.p99 - 1.0).abs() < 1e-9, "{:?}", row.added_ms);
        assert!((row.gateway_cpu_pct - 20.0).abs() < 1e-9);
        // The pair shown is the one whose added p50 is the median (0.3 ms).
        assert!((row.gateway.latency_ms.p99 - 9.0).abs() < 1e-9);
        assert!((row.gateway_rss_mib - 12.0).abs() < 1e-9);
    }

    #[test]
    fn a_pair_that_did_not_sustain_the_rate_is_the_one_shown() {
        let pairs = vec![
            (
                run(1000, 1000.0, 1.0, 2.0),
                run(1000, 1000.0, 1.1, 2.0),
                20.0,
            ),
            (
                run(1000, 1000.0, 1.0, 2.0),
                run(1000, 500.0, 900.0, 2000.0),
                90.0,
            ),
            (
                run(1000, 1000.0, 1.0, 2.0),
                run(1000, 1000.0, 1.2, 2.0),
                20.0,
            ),
        ];
        let row = summarize(false, 1000, pairs, 12.0).unwrap();
        assert!(!row.gateway.sustained());
        assert!(summarize(false, 1000, Vec::new(), 0.0).is_err());
    }
}
