//! The open-loop, constant-rate client.
//!
//! Requests are scheduled at fixed intended send times (`start + i / rate`) whatever the
//! target does, and each latency is measured from its *intended* send time, not from when the
//! request actually left: a target that stalls is charged for the queue it causes
//! (no coordinated omission). A thread of its own paces the sends with the kernel's timer
//! (late by its 50 µs slack, the same in every run), not tokio's, whose whole-millisecond
//! ticks would shift every latency of a run by a fraction of a millisecond set by the run's
//! start phase — more than a gateway adds.
//!
//! The unmeasured warm-up ramps the rate up linearly from a tenth of it, as a growing client
//! population would, so that connections are opened progressively: a step from zero to
//! thousands of requests a second makes every request of the first milliseconds open a new
//! connection, which measures a cold-start connection storm rather than the steady rate.
//! The measured period is at the constant rate.
//!
//! Like a real client population (the OpenAI SDKs pool at most 1,000 connections; k6 and
//! wrk2 run a fixed set of connections), the client keeps at most `connections` requests on
//! the wire — with HTTP/1.1, as many connections. A request scheduled while all are busy
//! waits for one, and that wait counts in its latency (it is measured from the intended send
//! time all the same). Without a bound, every request sent while the others wait opens a new
//! connection, and an overloaded target is measured in connection set-ups.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The default bound on requests on the wire (connections): the OpenAI SDKs' pool size.
pub(crate) const DEFAULT_CONNECTIONS: usize = 1000;

/// One measurement's settings.
#[derive(Clone, Debug)]
pub(crate) struct RunConfig {
    /// The chat-completions URL.
    pub(crate) url: String,
    /// Requests per second.
    pub(crate) rate: u64,
    /// Measured duration.
    pub(crate) duration: Duration,
    /// Unmeasured warm-up before it (connections, caches).
    pub(crate) warmup: Duration,
    /// Streamed requests (latency = until the last byte).
    pub(crate) stream: bool,
    /// Model name to send.
    pub(crate) model: String,
    /// Bearer key to send, if any.
    pub(crate) api_key: Option<String>,
    /// In-flight requests above which new sends are skipped and counted.
    pub(crate) max_in_flight: u64,
    /// Most requests on the wire at once (HTTP/1.1: connections); `0` for no bound.
    pub(crate) connections: usize,
    /// Make every request body different (a counter in the user message), so response
    /// caches miss.
    pub(crate) unique: bool,
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct Percentiles {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
}

/// What one run measured.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct RunResult {
    pub(crate) rate: u64,
    pub(crate) stream: bool,
    pub(crate) sent: u64,
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    /// Sends skipped because `max_in_flight` requests were already waiting: the target could
    /// not keep up with the rate.
    pub(crate) skipped: u64,
    pub(crate) achieved_rps: f64,
    pub(crate) latency_ms: Percentiles,
}

impl RunResult {
    /// Whether the target sustained the rate: nothing skipped, under 0.1% errors, and at least
    /// 95% of the offered rate completed.
    pub(crate) fn sustained(&self) -> bool {
        self.skipped == 0
            && (self.errors as f64) <= 0.001 * self.sent as f64
            && self.achieved_rps >= 0.95 * self.rate as f64
    }
}

/// When each request is to be sent: a linear ramp from a tenth of the rate to the rate over
/// the warm-up, then the constant rate over the measured duration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Schedule {
    rate: f64,
    warmup: f64,
    /// The rate at the start of the ramp.
    r0: f64,
    /// Requests sent during the warm-up.
    pub(crate) warm_n: u64,
    /// Requests sent in all.
    pub(crate) total_n: u64,
}

impl Schedule {
    pub(crate) fn new(rate: u64, warmup: Duration, duration: Duration) -> Self {
        let rate = rate.max(1) as f64;
        let warmup = warmup.as_secs_f64();
        let r0 = rate / 10.0;
        // The area under the ramp: its mean rate times its length.
        let warm_n = ((r0 + rate) / 2.0 * warmup) as u64;
        let total_n = warm_n + (duration.as_secs_f64() * rate) as u64;
        Self {
            rate,
            warmup,
            r0,
            warm_n,
            total_n,
        }
    }

    /// Intended send time of request `i`, from the start of the run.
    pub(crate) fn offset(&self, i: u64) -> Duration {
        let i = i as f64;
        let secs = if i < self.warm_n as f64 {
            // Requests sent by time t on the ramp: r0·t + a·t², a = (rate − r0) / (2·warmup);
            // solved for t.
            let a = (self.rate - self.r0) / (2.0 * self.warmup);
            (-self.r0 + (self.r0 * self.r0 + 4.0 * a * i).sqrt()) / (2.0 * a)
        } else {
            self.warmup + (i - self.warm_n as f64) / self.rate
        };
        Duration::from_secs_f64(secs.max(0.0))
    }
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let ms = |v: u64| v as f64 / 1000.0;
    Percentiles {
        p50: ms(h.value_at_quantile(0.50)),
        p90: ms(h.value_at_quantile(0.90)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    }
}

/// Builds the HTTP client: a large connection pool, no proxy, HTTP/1.1 keep-alive.
pub(crate) fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(4096)
        .pool_idle_timeout(Duration::from_secs(90))
        .timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()?)
}

fn body(cfg: &RunConfig, n: u64) -> bytes::Bytes {
    let question = if cfg.unique {
        format!("Summarize the plot of short story number {n} about a fox in one sentence.")
    } else {
        "Summarize the plot of a short story about a fox in one sentence.".to_owned()
    };
    let mut v = serde_json::json!({
        "model": cfg.model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": question}
        ],
        "max_tokens": 64
    });
    if cfg.stream {
        v["stream"] = serde_json::Value::Bool(true);
    }
    bytes::Bytes::from(v.to_string())
}

/// An error with its causes (reqwest's own message hides them: "error sending request").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

async fn one(
    client: &reqwest::Client,
    cfg: &RunConfig,
    payload: bytes::Bytes,
) -> Result<(), String> {
    let mut req = client
        .post(&cfg.url)
        .header("content-type", "application/json")
        .body(payload);
    if let Some(k) = &cfg.api_key {
        req = req.bearer_auth(k);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("send: {}", chain(&e)))?;
    let status = resp.status();
    let mut stream = resp.bytes_stream();
    let mut saw_done = false;
    let mut tail = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("body: {}", chain(&e)))?;
        if cfg.stream {
            tail.extend_from_slice(&chunk);
            if tail.len() > 64 {
                tail.drain(..tail.len() - 64);
            }
            saw_done |= tail.windows(6).any(|w| w == b"[DONE]");
        }
    }
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    if cfg.stream && !saw_done {
        return Err("stream ended without [DONE]".to_owned());
    }
    Ok(())
}

/// What the requests of one run record as they finish.
struct Tally {
    /// Microseconds, from 1 µs to 2 minutes, 3 significant digits.
    hist: Mutex<Histogram<u64>>,
    ok: AtomicU64,
    errors: AtomicU64,
    in_flight: AtomicU64,
    last_done: Mutex<Option<Instant>>,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    async fn record(&self, intended: Instant, result: Result<(), String>) {
        let done = Instant::now();
        match result {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                let micros =
                    u64::try_from(done.duration_since(intended).as_micros()).unwrap_or(u64::MAX);
                let _ = self.hist.lock().await.record(micros.max(1));
                let mut last = self.last_done.lock().await;
                if last.is_none_or(|l| done > l) {
                    *last = Some(done);
                }
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.first_error.lock().await.get_or_insert(e);
            }
        }
    }
}

/// Runs `cfg` against its URL and returns what it measured.
pub(crate) async fn run(client: &reqwest::Client, cfg: &RunConfig) -> anyhow::Result<RunResult> {
    let fixed = body(cfg, 0);
    let tally = Arc::new(Tally {
        hist: Mutex::new(Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?),
        ok: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
        last_done: Mutex::new(None),
        first_error: Mutex::new(None),
    });
    let wire =
        (cfg.connections > 0).then(|| Arc::new(tokio::sync::Semaphore::new(cfg.connections)));
    let schedule = Schedule::new(cfg.rate, cfg.warmup, cfg.duration);
    let (warm_n, total_n) = (schedule.warm_n, schedule.total_n);
    let start = std::time::Instant::now();
    let measured_start = Instant::from_std(start) + cfg.warmup;
    // The sends are paced by a thread of their own sleeping until each intended time: tokio's
    // timer fires on whole milliseconds, which would delay every send by a fraction of a
    // millisecond fixed by the run's start phase (0–1 ms at 1,000 req/s, different in each
    // run), larger than what a gateway adds. Thread sleeps are late by the kernel's timer
    // slack (50 µs), the same in every run.
    let pacer = {
        let runtime = tokio::runtime::Handle::current();
        let (client, cfg, tally) = (client.clone(), cfg.clone(), tally.clone());
        std::thread::Builder::new()
            .name("loadgen-pacer".to_owned())
            .spawn(move || {
                let mut skipped = 0u64;
                let mut tasks = Vec::with_capacity(total_n as usize);
                for i in 0..total_n {
                    let intended = start + schedule.offset(i);
                    let now = std::time::Instant::now();
                    if intended > now {
                        std::thread::sleep(intended - now);
                    }
                    let intended = Instant::from_std(intended);
                    let measured = i >= warm_n;
                    if tally.in_flight.load(Ordering::Relaxed) >= cfg.max_in_flight {
                        if measured {
                            skipped += 1;
                        }
                        continue;
                    }
                    tally.in_flight.fetch_add(1, Ordering::Relaxed);
                    let payload = if cfg.unique {
                        body(&cfg, i)
                    } else {
                        fixed.clone()
                    };
                    let (client, cfg2, tally, wire) =
                        (client.clone(), cfg.clone(), tally.clone(), wire.clone());
                    tasks.push(runtime.spawn(async move {
                        let permit = match wire {
                            Some(w) => w.acquire_owned().await.ok(),
                            None => None,
                        };
                        let result = one(&client, &cfg2, payload).await;
                        drop(permit);
                        tally.in_flight.fetch_sub(1, Ordering::Relaxed);
                        if measured {
                            tally.record(intended, result).await;
                        }
                    }));
                }
                (skipped, tasks)
            })?
    };
    let (skipped, tasks) = tokio::task::spawn_blocking(move || pacer.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the pacing thread panicked"))?;
    for t in tasks {
        let _ = t.await;
    }
    if let Some(e) = tally.first_error.lock().await.as_ref() {
        eprintln!("  first error at {} req/s: {e}", cfg.rate);
    }
    let ok = tally.ok.load(Ordering::Relaxed);
    let elapsed = tally
        .last_done
        .lock()
        .await
        .map_or(cfg.duration, |l| l.duration_since(measured_start))
        .max(Duration::from_millis(1));
    let h = tally.hist.lock().await;
    Ok(RunResult {
        rate: cfg.rate,
        stream: cfg.stream,
        sent: total_n - warm_n,
        ok,
        errors: tally.errors.load(Ordering::Relaxed),
        skipped,
        achieved_rps: ok as f64 / elapsed.as_secs_f64(),
        latency_ms: percentiles(&h),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_ramps_then_holds_the_rate() {
        let s = Schedule::new(1000, Duration::from_secs(2), Duration::from_secs(10));
        // Mean ramp rate 550 req/s over 2 s, then 1,000 req/s for 10 s.
        assert_eq!(s.warm_n, 1100);
        assert_eq!(s.total_n, 11_100);
        assert_eq!(s.offset(0), Duration::ZERO);
        // Send times never go backwards, the ramp ends at the warm-up's end, and the measured
        // period is evenly spaced at the rate.
        let mut last = Duration::ZERO;
        for i in 0..s.total_n {
            let t = s.offset(i);
            assert!(t >= last, "request {i} at {t:?} before {last:?}");
            last = t;
        }
        let end_of_ramp = s.offset(s.warm_n - 1).as_secs_f64();
        assert!((1.99..2.0).contains(&end_of_ramp), "{end_of_ramp}");
        assert_eq!(s.offset(s.warm_n), Duration::from_secs(2));
        let gap = s.offset(s.warm_n + 501) - s.offset(s.warm_n + 500);
        assert!((gap.as_secs_f64() - 0.001).abs() < 1e-9, "{gap:?}");
        // The ramp starts at a tenth of the rate and ends near the full rate.
        let first_gap = s.offset(1).as_secs_f64();
        assert!((0.0095..0.0101).contains(&first_gap), "{first_gap}");
        let last_gap = (s.offset(s.warm_n - 1) - s.offset(s.warm_n - 2)).as_secs_f64();
        assert!((0.00099..0.00105).contains(&last_gap), "{last_gap}");
    }

    /// Serves chat completions that take 20 ms each and records the most served at once.
    async fn slow_server() -> (String, Arc<AtomicU64>) {
        let now = Arc::new(AtomicU64::new(0));
        let peak = Arc::new(AtomicU64::new(0));
        let (n, p) = (now.clone(), peak.clone());
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post(move || {
                let (n, p) = (n.clone(), p.clone());
                async move {
                    let at_once = n.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(at_once, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    n.fetch_sub(1, Ordering::SeqCst);
                    "{}"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/v1/chat/completions"), peak)
    }

    fn config(url: String, connections: usize) -> RunConfig {
        RunConfig {
            url,
            rate: 400,
            duration: Duration::from_millis(500),
            warmup: Duration::ZERO,
            stream: false,
            model: "bench".to_owned(),
            api_key: None,
            max_in_flight: 20_000,
            connections,
            unique: false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_bound_the_requests_on_the_wire() {
        // 400 req/s of 20 ms requests: about 8 at once without a bound.
        let (url, peak) = slow_server().await;
        let http = http_client().unwrap();
        let bounded = run(&http, &config(url, 3)).await.unwrap();
        assert_eq!((bounded.ok, bounded.errors, bounded.skipped), (200, 0, 0));
        assert!(peak.load(Ordering::SeqCst) <= 3, "{peak:?}");
        // The requests that waited for a connection are charged for the wait.
        assert!(
            bounded.latency_ms.p99 > 20.0 * 2.0,
            "{:?}",
            bounded.latency_ms
        );

        let (url, peak) = slow_server().await;
        let unbounded = run(&http, &config(url, 0)).await.unwrap();
        assert_eq!(unbounded.ok, 200);
        assert!(peak.load(Ordering::SeqCst) > 3, "{peak:?}");
    }

    #[test]
    fn schedule_without_warmup_is_the_constant_rate() {
        let s = Schedule::new(500, Duration::ZERO, Duration::from_secs(1));
        assert_eq!((s.warm_n, s.total_n), (0, 500));
        assert_eq!(s.offset(250), Duration::from_millis(500));
    }
}
