//! A deterministic simulator of a fleet of vLLM-like replicas, to measure routing strategies.
//!
//! Each replica has a KV-block cache (an LRU of block hashes of fixed capacity), a batch of
//! decode slots, and one prefill engine: a request waits for a slot, then for the prefill
//! engine, which spends `prefill_us_per_token` on every prompt token *not* found in the
//! replica's cache; the first token comes out when prefill ends (that is its TTFT), and the
//! request then decodes at `decode_tokens_per_s` while holding its slot. Routing is done by
//! the real [`ReplicaPicker`] — the code the gateway runs, not a copy — fed with the load a
//! router would see (its own in-flight counts and the replicas' queue depths).
//!
//! Workloads (all seeded):
//! - `shared-context`: many tenants, each with a long context of its own behind a short
//!   system prompt shared by all; requests pick a tenant with Zipf-skewed popularity (llm-d's
//!   "150 customers × 6k-token contexts").
//! - `sessions`: multi-turn chats whose prompt grows by each turn.
//! - `no-sharing`: every prompt unique.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::num::NonZeroUsize;
use std::time::Duration;

use lru::LruCache;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::time::Instant;

use super::index::{BlockHash, BlockHasher, PrefixIndexConfig};
use super::policy::{PrefixPolicyConfig, ReplicaLoad, ReplicaPicker, Strategy};

/// The workload to simulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Workload {
    /// Tenants with long private contexts behind a shared system prompt.
    SharedContext,
    /// Multi-turn chat sessions.
    Sessions,
    /// Unique prompts.
    NoSharing,
}

impl Workload {
    /// Parses `shared-context`, `sessions` or `no-sharing`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "shared-context" => Some(Self::SharedContext),
            "sessions" => Some(Self::Sessions),
            "no-sharing" => Some(Self::NoSharing),
            _ => None,
        }
    }
}

/// Fleet and workload parameters.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FleetConfig {
    /// Which workload.
    pub workload: Workload,
    /// Number of replicas.
    pub replicas: usize,
    /// RNG seed.
    pub seed: u64,
    /// Requests to simulate.
    pub requests: usize,
    /// Arrival rate (Poisson), requests per second; `None` picks the workload's default.
    pub rate: Option<f64>,
    /// KV block size in tokens.
    pub block_tokens: usize,
    /// KV capacity per replica, in tokens.
    pub kv_capacity_tokens: usize,
    /// Decode slots per replica.
    pub max_batch: usize,
    /// Prefill cost per uncached prompt token, microseconds.
    pub prefill_us_per_token: f64,
    /// Decode speed per request, tokens per second.
    pub decode_tokens_per_s: f64,
    /// Routing policy settings (weights, guard).
    pub policy: PrefixPolicyConfig,
}

impl FleetConfig {
    /// Defaults for `workload` on `replicas` replicas: a Llama-8B-class replica (prefill
    /// 20,000 tokens/s, 150,000 tokens of KV cache, 32 slots, 50 tokens/s decode per request).
    pub fn new(workload: Workload, replicas: usize, seed: u64) -> Self {
        let kv = 150_000;
        let block = 16;
        Self {
            workload,
            replicas: replicas.clamp(1, super::index::MAX_REPLICAS),
            seed,
            requests: 4_000,
            rate: None,
            block_tokens: block,
            kv_capacity_tokens: kv,
            max_batch: 32,
            prefill_us_per_token: 50.0,
            decode_tokens_per_s: 50.0,
            policy: PrefixPolicyConfig {
                index: PrefixIndexConfig {
                    capacity_blocks: kv / block,
                    ttl: None,
                },
                ..PrefixPolicyConfig::default()
            },
        }
    }

    fn rate(&self) -> f64 {
        // Defaults scale with the fleet: high enough that cache-blind routing queues on the
        // shared-context workload (each of its requests then costs ~7,500 prefill tokens).
        let per_replica = match self.workload {
            Workload::SharedContext => 3.3,
            Workload::Sessions => 4.0,
            Workload::NoSharing => 5.0,
        };
        self.rate.unwrap_or(per_replica * self.replicas as f64)
    }
}

/// What one strategy achieved.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[non_exhaustive]
pub struct StrategyReport {
    /// Share of prompt tokens served from replicas' prefix caches.
    pub hit_rate: f64,
    /// Median time to first token, ms.
    pub ttft_p50_ms: f64,
    /// 90th percentile time to first token, ms.
    pub ttft_p90_ms: f64,
    /// Completed requests per second of simulated time.
    pub throughput_rps: f64,
    /// Requests routed to the busiest replica over the mean per replica.
    pub max_mean_load: f64,
}

struct Req {
    arrival: Duration,
    /// The prompt as segments of text: (stream id, blocks). Every segment is a whole number
    /// of KV blocks, and block `j` of stream `s` always has the same content.
    segments: Vec<(u64, usize)>,
    output_tokens: u32,
    session: Option<u64>,
}

impl Req {
    fn blocks(&self) -> usize {
        self.segments.iter().map(|s| s.1).sum()
    }
}

fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
    let w: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).collect();
    let total: f64 = w.iter().sum();
    let mut acc = 0.0;
    w.iter()
        .map(|x| {
            acc += x / total;
            acc
        })
        .collect()
}

fn generate(cfg: &FleetConfig) -> Vec<Req> {
    let mut rng = SmallRng::seed_from_u64(cfg.seed);
    let rate = cfg.rate();
    let blocks = |tokens: usize| tokens.div_ceil(cfg.block_tokens);
    let mut t = 0.0f64;
    let mut out = Vec::with_capacity(cfg.requests);
    let system = (1u64, blocks(512));
    // Sessions: (id, turns so far).
    let mut sessions: Vec<(u64, u32)> = (0..200).map(|i| (i, 0)).collect();
    let cdf = zipf_cdf(150, 0.6);
    for i in 0..cfg.requests {
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        t += -u.ln() / rate;
        let (segments, session) = match cfg.workload {
            Workload::SharedContext => {
                let x: f64 = rng.random();
                let tenant = cdf.partition_point(|&c| c < x) as u64;
                let segs = vec![
                    system,
                    (1_000 + tenant, blocks(6_000)),
                    (10_000_000 + i as u64, blocks(1_200)),
                ];
                (segs, Some(tenant))
            }
            Workload::Sessions => {
                let k = rng.random_range(0..sessions.len());
                let (id, turns) = &mut sessions[k];
                *turns += 1;
                let mut segs = vec![system];
                for turn in 0..*turns {
                    segs.push((50_000 + *id * 1_000 + u64::from(turn), blocks(512)));
                }
                let id = *id;
                if *turns >= 12 {
                    // The session ends; a new one takes its place.
                    sessions[k] = (200 + i as u64, 0);
                }
                (segs, Some(id))
            }
            Workload::NoSharing => (vec![(20_000_000 + i as u64, blocks(2_000))], None),
        };
        out.push(Req {
            arrival: Duration::from_secs_f64(t),
            segments,
            output_tokens: rng.random_range(100..300),
            session,
        });
    }
    out
}

/// The block hashes of a request: block `j` of stream `s` is the 16 bytes `s ‖ j`.
fn hash_request(hasher: &BlockHasher, req: &Req) -> Vec<BlockHash> {
    let mut bytes = Vec::with_capacity(req.blocks() * 16);
    for &(stream, n) in &req.segments {
        for j in 0..n as u64 {
            bytes.extend_from_slice(&stream.to_le_bytes());
            bytes.extend_from_slice(&j.to_le_bytes());
        }
    }
    hasher.hash_blocks(bytes.chunks_exact(16))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ev {
    Arrive(usize),
    PrefillDone(usize, usize),
    DecodeDone(usize),
}

#[derive(PartialEq, Eq)]
struct Event(Duration, u64, Ev);

impl Ord for Event {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.0, self.1).cmp(&(o.0, o.1))
    }
}
impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// What every replica's step needs to know about the workload.
struct Ctx<'a> {
    reqs: &'a [Req],
    hashes: &'a [Vec<BlockHash>],
    cfg: &'a FleetConfig,
}

struct Replica {
    cache: LruCache<BlockHash, ()>,
    running: usize,
    waiting: VecDeque<usize>,
    prefill_queue: VecDeque<usize>,
    prefill_busy: bool,
    outstanding: u32,
    routed: u64,
}

impl Replica {
    /// Starts what can start on this replica (position `r`) at `now`: waiting requests take
    /// free slots, and an idle prefill engine takes the next prompt. Returns the prefill's end.
    fn advance(
        &mut self,
        r: usize,
        now: Duration,
        ctx: &Ctx<'_>,
        cached_tokens: &mut u64,
    ) -> Option<(Duration, Ev)> {
        while self.running < ctx.cfg.max_batch {
            let Some(q) = self.waiting.pop_front() else {
                break;
            };
            self.running += 1;
            self.prefill_queue.push_back(q);
        }
        if self.prefill_busy {
            return None;
        }
        let q = self.prefill_queue.pop_front()?;
        let mut hit_blocks = 0;
        for h in &ctx.hashes[q] {
            if self.cache.get(h).is_some() {
                hit_blocks += 1;
            } else {
                break;
            }
        }
        let prompt = ctx.reqs[q].blocks() * ctx.cfg.block_tokens;
        let cached = hit_blocks * ctx.cfg.block_tokens;
        *cached_tokens += cached as u64;
        let uncached = prompt - cached;
        let t = Duration::from_secs_f64(
            (uncached as f64 * ctx.cfg.prefill_us_per_token + 2_000.0) / 1e6,
        );
        self.prefill_busy = true;
        Some((now + t, Ev::PrefillDone(r, q)))
    }
}

/// Runs the workload under one strategy.
pub fn simulate(cfg: &FleetConfig, strategy: Strategy) -> StrategyReport {
    let (reqs, hashes) = prepare(cfg);
    run(cfg, strategy, &reqs, &hashes)
}

fn prepare(cfg: &FleetConfig) -> (Vec<Req>, Vec<Vec<BlockHash>>) {
    let reqs = generate(cfg);
    let hasher = BlockHasher::new(cfg.block_tokens, "sim", None);
    let hashes = reqs.iter().map(|r| hash_request(&hasher, r)).collect();
    (reqs, hashes)
}

fn run(
    cfg: &FleetConfig,
    strategy: Strategy,
    reqs: &[Req],
    hashes: &[Vec<BlockHash>],
) -> StrategyReport {
    let cap = NonZeroUsize::new((cfg.kv_capacity_tokens / cfg.block_tokens).max(1))
        .unwrap_or(NonZeroUsize::MIN);
    let mut replicas: Vec<Replica> = (0..cfg.replicas)
        .map(|_| Replica {
            cache: LruCache::new(cap),
            running: 0,
            waiting: VecDeque::new(),
            prefill_queue: VecDeque::new(),
            prefill_busy: false,
            outstanding: 0,
            routed: 0,
        })
        .collect();
    let mut picker = ReplicaPicker::new(strategy, cfg.replicas, cfg.policy.clone());
    let base = Instant::now();
    let mut heap = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |heap: &mut BinaryHeap<Reverse<Event>>, at: Duration, ev: Ev| {
        seq += 1;
        heap.push(Reverse(Event(at, seq, ev)));
    };
    for (i, r) in reqs.iter().enumerate() {
        push(&mut heap, r.arrival, Ev::Arrive(i));
    }
    let mut ttft = Vec::with_capacity(reqs.len());
    let (mut prompt_tokens, mut cached_tokens) = (0u64, 0u64);
    let mut completed = 0u64;
    let mut last_done = Duration::ZERO;

    let ctx = Ctx { reqs, hashes, cfg };

    while let Some(Reverse(Event(now, _, ev))) = heap.pop() {
        let mut scheduled: Vec<(Duration, Ev)> = Vec::new();
        match ev {
            Ev::Arrive(i) => {
                let loads: Vec<ReplicaLoad> = replicas
                    .iter()
                    .map(|r| {
                        ReplicaLoad::new(
                            r.outstanding,
                            u32::try_from(r.waiting.len() + r.prefill_queue.len())
                                .unwrap_or(u32::MAX),
                            r.cache.len() as f64 / cap.get() as f64,
                        )
                    })
                    .collect();
                let Some(pick) = picker.pick(&hashes[i], &loads, reqs[i].session, base + now)
                else {
                    continue;
                };
                let r = pick.replica;
                prompt_tokens += (reqs[i].blocks() * cfg.block_tokens) as u64;
                replicas[r].outstanding += 1;
                replicas[r].routed += 1;
                replicas[r].waiting.push_back(i);
                scheduled.extend(replicas[r].advance(r, now, &ctx, &mut cached_tokens));
            }
            Ev::PrefillDone(r, q) => {
                ttft.push(now.saturating_sub(reqs[q].arrival));
                for h in &hashes[q] {
                    replicas[r].cache.put(*h, ());
                }
                replicas[r].prefill_busy = false;
                let decode = Duration::from_secs_f64(
                    f64::from(reqs[q].output_tokens) / cfg.decode_tokens_per_s,
                );
                scheduled.push((now + decode, Ev::DecodeDone(r)));
                scheduled.extend(replicas[r].advance(r, now, &ctx, &mut cached_tokens));
            }
            Ev::DecodeDone(r) => {
                replicas[r].running -= 1;
                replicas[r].outstanding -= 1;
                completed += 1;
                last_done = now;
                scheduled.extend(replicas[r].advance(r, now, &ctx, &mut cached_tokens));
            }
        }
        for (at, ev) in scheduled {
            push(&mut heap, at, ev);
        }
    }

    ttft.sort();
    let pct = |p: f64| -> f64 {
        if ttft.is_empty() {
            return 0.0;
        }
        let idx = ((ttft.len() as f64 - 1.0) * p).round() as usize;
        ttft[idx].as_secs_f64() * 1e3
    };
    let mean = replicas.iter().map(|r| r.routed as f64).sum::<f64>() / replicas.len().max(1) as f64;
    let max = replicas.iter().map(|r| r.routed).max().unwrap_or(0) as f64;
    StrategyReport {
        hit_rate: if prompt_tokens == 0 {
            0.0
        } else {
            cached_tokens as f64 / prompt_tokens as f64
        },
        ttft_p50_ms: pct(0.5),
        ttft_p90_ms: pct(0.9),
        throughput_rps: completed as f64 / last_done.as_secs_f64().max(1e-9),
        max_mean_load: if mean > 0.0 { max / mean } else { 0.0 },
    }
}

/// Runs every strategy on the same workload, in report order.
pub fn simulate_all(cfg: &FleetConfig) -> Vec<(Strategy, StrategyReport)> {
    let (reqs, hashes) = prepare(cfg);
    Strategy::ALL
        .iter()
        .map(|&s| (s, run(cfg, s, &reqs, &hashes)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(workload: Workload) -> FleetConfig {
        let mut c = FleetConfig::new(workload, 4, 7);
        c.requests = 600;
        c
    }

    #[test]
    fn deterministic_for_a_seed() {
        let c = small(Workload::SharedContext);
        assert_eq!(
            simulate(&c, Strategy::PrefixAware),
            simulate(&c, Strategy::PrefixAware)
        );
    }

    #[test]
    fn every_request_completes() {
        for w in [
            Workload::SharedContext,
            Workload::Sessions,
            Workload::NoSharing,
        ] {
            let c = small(w);
            for s in Strategy::ALL {
                let r = simulate(&c, s);
                assert!(r.throughput_rps > 0.0, "{w:?} {s:?}");
                assert!((0.0..=1.0).contains(&r.hit_rate));
                assert!(r.ttft_p50_ms <= r.ttft_p90_ms);
                assert!(r.max_mean_load >= 1.0 - 1e-9);
            }
        }
    }

    #[test]
    fn no_sharing_has_no_hits() {
        let r = simulate(&small(Workload::NoSharing), Strategy::PrefixAware);
        assert!(r.hit_rate < 0.01, "{r:?}");
    }
}
