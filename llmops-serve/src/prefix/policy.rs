//! Choosing a replica: round-robin, least-outstanding, prefix-only and prefix+load.

use tokio::time::Instant;

use super::index::{BlockHash, PrefixIndex, PrefixIndexConfig};

/// What the router knows about a replica's load when it picks.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ReplicaLoad {
    /// Requests this router has in flight on the replica (its own counter: always fresh).
    pub outstanding: u32,
    /// Requests waiting in the replica's queue (`vllm:num_requests_waiting`, scraped).
    pub queue_depth: u32,
    /// KV-cache usage in `[0, 1]` (`vllm:kv_cache_usage_perc`, scraped).
    pub kv_usage: f64,
    /// Whether the replica may receive traffic (health probe, circuit breaker).
    pub healthy: bool,
}

impl ReplicaLoad {
    /// A healthy replica with this many requests in flight and queued.
    pub fn new(outstanding: u32, queue_depth: u32, kv_usage: f64) -> Self {
        Self {
            outstanding,
            queue_depth,
            kv_usage,
            healthy: true,
        }
    }
}

/// How replicas are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Strategy {
    /// In turn.
    RoundRobin,
    /// The replica with the fewest requests in flight.
    LeastOutstanding,
    /// The replica holding the longest prefix, whatever its load. Shown for comparison: on
    /// shared prefixes it piles traffic onto one replica.
    PrefixOnly,
    /// Prefix match and load, weighted, with an imbalance guard.
    PrefixAware,
}

impl Strategy {
    /// The strategy's name (`round-robin`, `least-outstanding`, `prefix-only`,
    /// `prefix-aware`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::RoundRobin => "round-robin",
            Self::LeastOutstanding => "least-outstanding",
            Self::PrefixOnly => "prefix-only",
            Self::PrefixAware => "prefix-aware",
        }
    }

    /// Every strategy, in report order.
    pub const ALL: [Strategy; 4] = [
        Self::RoundRobin,
        Self::LeastOutstanding,
        Self::PrefixOnly,
        Self::PrefixAware,
    ];
}

/// Weights and guards of prefix-aware routing.
///
/// The defaults follow llm-d's scorer weights (prefix 3, queue 2, KV usage 2) and SGLang's
/// imbalance guard (switch to the least-loaded replica when the spread of in-flight requests
/// exceeds both an absolute and a relative threshold).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PrefixPolicyConfig {
    /// Weight of the matched-prefix fraction.
    pub prefix_weight: f64,
    /// Weight of the load score (fewer in-flight and queued requests is better).
    pub load_weight: f64,
    /// Weight of free KV-cache capacity.
    pub kv_weight: f64,
    /// The imbalance guard's absolute spread (max − min in-flight requests).
    pub imbalance_abs: u32,
    /// The imbalance guard's ratio (max > ratio × min).
    pub imbalance_ratio: f64,
    /// Below this best matched fraction, the prompt is treated as unseen: least-outstanding.
    pub min_match_fraction: f64,
    /// The index sizing.
    pub index: PrefixIndexConfig,
}

impl Default for PrefixPolicyConfig {
    fn default() -> Self {
        Self {
            prefix_weight: 3.0,
            load_weight: 2.0,
            kv_weight: 2.0,
            imbalance_abs: 16,
            imbalance_ratio: 1.5,
            min_match_fraction: 0.1,
            index: PrefixIndexConfig::default(),
        }
    }
}

impl PrefixPolicyConfig {
    /// Sets the index sizing (builder style).
    #[must_use]
    pub fn with_index(mut self, index: PrefixIndexConfig) -> Self {
        self.index = index;
        self
    }
}

/// Why a replica was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PickReason {
    /// Round-robin turn.
    Turn,
    /// Fewest in flight.
    LeastLoaded,
    /// Best weighted prefix + load score.
    Score,
    /// The imbalance guard overrode the prefix match.
    Imbalance,
    /// No replica held enough of the prefix.
    NoPrefix,
}

/// A routing decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pick {
    /// The chosen replica's position.
    pub replica: usize,
    /// How many leading blocks of the prompt it is believed to hold.
    pub matched_blocks: usize,
    /// Why it was chosen.
    pub reason: PickReason,
}

/// Chooses replicas by a [`Strategy`], keeping the prefix index up to date with its own
/// decisions. Deterministic: ties go to the session's replica (when a session key is given),
/// then to the least-loaded, then to the lowest position.
#[derive(Debug)]
pub struct ReplicaPicker {
    strategy: Strategy,
    cfg: PrefixPolicyConfig,
    index: PrefixIndex,
    next: usize,
}

impl ReplicaPicker {
    /// A picker over `replicas` replicas.
    pub fn new(strategy: Strategy, replicas: usize, cfg: PrefixPolicyConfig) -> Self {
        let index = PrefixIndex::new(replicas, &cfg.index);
        Self {
            strategy,
            cfg,
            index,
            next: 0,
        }
    }

    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The prefix index (for metrics and tests).
    pub fn index(&self) -> &PrefixIndex {
        &self.index
    }

    /// Forgets what replica `r` held (it restarted or was removed).
    pub fn forget_replica(&mut self, r: usize) {
        self.index.forget_replica(r);
    }

    /// Picks a replica for a prompt with block hashes `hashes`, given each replica's load, and
    /// records the decision in the index. `None` when no replica is healthy.
    pub fn pick(
        &mut self,
        hashes: &[BlockHash],
        loads: &[ReplicaLoad],
        session: Option<u64>,
        now: Instant,
    ) -> Option<Pick> {
        let n = loads.len().min(self.index.replicas());
        if !loads[..n].iter().any(|l| l.healthy) {
            return None;
        }
        let least = || {
            (0..n)
                .filter(|&i| loads[i].healthy)
                .min_by_key(|&i| (loads[i].outstanding + loads[i].queue_depth, i))
        };
        let pick = match self.strategy {
            Strategy::RoundRobin => {
                let mut r = self.next % n;
                while !loads[r].healthy {
                    r = (r + 1) % n;
                }
                self.next = r + 1;
                Pick {
                    replica: r,
                    matched_blocks: 0,
                    reason: PickReason::Turn,
                }
            }
            Strategy::LeastOutstanding => {
                let r = least()?;
                Pick {
                    replica: r,
                    matched_blocks: 0,
                    reason: PickReason::LeastLoaded,
                }
            }
            Strategy::PrefixOnly => {
                let lens = self.index.match_lengths(hashes, now);
                let best = (0..n)
                    .filter(|&i| loads[i].healthy)
                    .max_by_key(|&i| (lens[i], n - i))?;
                if lens[best] == 0 {
                    let mut r = self.next % n;
                    while !loads[r].healthy {
                        r = (r + 1) % n;
                    }
                    self.next = r + 1;
                    Pick {
                        replica: r,
                        matched_blocks: 0,
                        reason: PickReason::Turn,
                    }
                } else {
                    Pick {
                        replica: best,
                        matched_blocks: lens[best],
                        reason: PickReason::Score,
                    }
                }
            }
            Strategy::PrefixAware => self.prefix_aware(hashes, &loads[..n], session, now)?,
        };
        self.index.record(pick.replica, hashes, now);
        Some(pick)
    }

    fn prefix_aware(
        &self,
        hashes: &[BlockHash],
        loads: &[ReplicaLoad],
        session: Option<u64>,
        now: Instant,
    ) -> Option<Pick> {
        let n = loads.len();
        let healthy: Vec<usize> = (0..n).filter(|&i| loads[i].healthy).collect();
        let load = |i: usize| loads[i].outstanding + loads[i].queue_depth;
        let least = *healthy.iter().min_by_key(|&&i| (load(i), i))?;
        let (min_l, max_l) = healthy.iter().fold((u32::MAX, 0u32), |(lo, hi), &i| {
            (lo.min(load(i)), hi.max(load(i)))
        });
        let lens = self.index.match_lengths(hashes, now);
        let matched = |i: usize| lens[i];
        let total = hashes.len().max(1) as f64;
        let best_frac = healthy
            .iter()
            .map(|&i| matched(i) as f64 / total)
            .fold(0.0, f64::max);
        if best_frac < self.cfg.min_match_fraction {
            return Some(Pick {
                replica: least,
                matched_blocks: matched(least),
                reason: PickReason::NoPrefix,
            });
        }
        if max_l - min_l > self.cfg.imbalance_abs
            && f64::from(max_l) > self.cfg.imbalance_ratio * f64::from(min_l)
        {
            return Some(Pick {
                replica: least,
                matched_blocks: matched(least),
                reason: PickReason::Imbalance,
            });
        }
        let spread = f64::from(max_l - min_l);
        let session_replica = session.map(|s| (s % n as u64) as usize);
        let score = |i: usize| {
            let frac = matched(i) as f64 / total;
            let load_score = if spread == 0.0 {
                1.0
            } else {
                f64::from(max_l - load(i)) / spread
            };
            let kv = 1.0 - loads[i].kv_usage.clamp(0.0, 1.0);
            self.cfg.prefix_weight * frac
                + self.cfg.load_weight * load_score
                + self.cfg.kv_weight * kv
        };
        let mut best = healthy[0];
        let mut best_score = f64::NEG_INFINITY;
        for &i in &healthy {
            let s = score(i);
            let better = s > best_score + 1e-12
                || ((s - best_score).abs() <= 1e-12
                    && (session_replica == Some(i)
                        || (session_replica != Some(best) && load(i) < load(best))));
            if better {
                best = i;
                best_score = s;
            }
        }
        Some(Pick {
            replica: best,
            matched_blocks: matched(best),
            reason: PickReason::Score,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefix::BlockHasher;

    fn loads(v: &[u32]) -> Vec<ReplicaLoad> {
        v.iter().map(|&o| ReplicaLoad::new(o, 0, 0.5)).collect()
    }

    #[test]
    fn prefix_wins_when_balanced_and_load_wins_when_not() {
        let h = BlockHasher::new(4, "m", None);
        let prompt = h.hash_bytes(&[7u8; 400]);
        let now = Instant::now();
        let mut p = ReplicaPicker::new(Strategy::PrefixAware, 2, PrefixPolicyConfig::default());
        // Unseen prompt: least loaded.
        let first = p.pick(&prompt, &loads(&[3, 1]), None, now).unwrap();
        assert_eq!((first.replica, first.reason), (1, PickReason::NoPrefix));
        // Seen on replica 1: it stays there while load is comparable.
        let again = p.pick(&prompt, &loads(&[2, 4]), None, now).unwrap();
        assert_eq!((again.replica, again.reason), (1, PickReason::Score));
        assert_eq!(again.matched_blocks, prompt.len());
        // Replica 1 far busier: the guard spills to replica 0.
        let spill = p.pick(&prompt, &loads(&[2, 40]), None, now).unwrap();
        assert_eq!((spill.replica, spill.reason), (0, PickReason::Imbalance));
        // Both now hold it; the less loaded wins.
        let both = p.pick(&prompt, &loads(&[5, 3]), None, now).unwrap();
        assert_eq!(both.replica, 1);
    }

    #[test]
    fn unhealthy_replicas_are_skipped() {
        let now = Instant::now();
        for s in Strategy::ALL {
            let mut p = ReplicaPicker::new(s, 3, PrefixPolicyConfig::default());
            let mut l = loads(&[0, 0, 0]);
            l[0].healthy = false;
            l[2].healthy = false;
            for _ in 0..5 {
                assert_eq!(
                    p.pick(&[1, 2, 3], &l, None, now).unwrap().replica,
                    1,
                    "{s:?}"
                );
            }
            l[1].healthy = false;
            assert!(p.pick(&[1], &l, None, now).is_none());
        }
    }

    #[test]
    fn round_robin_cycles() {
        let now = Instant::now();
        let mut p = ReplicaPicker::new(Strategy::RoundRobin, 3, PrefixPolicyConfig::default());
        let got: Vec<usize> = (0..6)
            .map(|_| p.pick(&[], &loads(&[0, 0, 0]), None, now).unwrap().replica)
            .collect();
        assert_eq!(got, vec![0, 1, 2, 0, 1, 2]);
    }
}
