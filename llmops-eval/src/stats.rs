//! The statistics behind the gate: Wilson intervals, the paired (cluster) bootstrap,
//! McNemar's test, Holm's correction and the minimum detectable effect.
//!
//! All randomness comes from a [`ChaCha8Rng`] seeded by the caller, so the same runs always
//! give the same decision, on every platform.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// A two-sided interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Interval {
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

/// The standard normal CDF Φ(x) (Abramowitz–Stegun 7.1.26 via erfc; |error| < 1.5e-7).
pub fn normal_cdf(x: f64) -> f64 {
    let z = x / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erfc = poly * (-z * z).exp();
    if z >= 0.0 {
        1.0 - 0.5 * erfc
    } else {
        0.5 * erfc
    }
}

/// The standard normal quantile Φ⁻¹(p) (Acklam's rational approximation, relative error
/// below 1.2e-9). `p` is clamped to `(0, 1)`.
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let low = 0.024_25;
    if p < low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    }
}

/// The Wilson score interval of a proportion `successes / n` at two-sided `confidence`.
/// `successes` may be fractional (mean of repeats). With `n = 0` the interval is `[0, 1]`.
pub fn wilson(successes: f64, n: f64, confidence: f64) -> Interval {
    if n <= 0.0 {
        return Interval {
            low: 0.0,
            high: 1.0,
        };
    }
    let z = normal_quantile(1.0 - (1.0 - confidence) / 2.0);
    let p = (successes / n).clamp(0.0, 1.0);
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    Interval {
        low: (center - half).max(0.0),
        high: (center + half).min(1.0),
    }
}

/// McNemar's exact test on a paired pass/fail table: `b` cases went pass → fail, `c` went
/// fail → pass. Returns the two-sided exact binomial p-value of `b = c`.
pub fn mcnemar_exact(b: u64, c: u64) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let k = b.min(c);
    // P(X <= k) for X ~ Binomial(n, 1/2), summed in log space for large n.
    let ln_half_n = n as f64 * 0.5f64.ln();
    let mut ln_choose = 0.0f64; // ln C(n, 0)
    let mut tail = 0.0f64;
    for i in 0..=k {
        if i > 0 {
            ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_choose + ln_half_n).exp();
    }
    (2.0 * tail).min(1.0)
}

/// Holm–Bonferroni adjusted p-values (same order as the input).
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        let adj = ((m - rank) as f64 * p[i]).min(1.0);
        running = running.max(adj);
        adjusted[i] = running;
    }
    adjusted
}

/// The paired bootstrap distribution of the mean per-case difference.
///
/// `deltas[i]` is case `i`'s candidate-minus-baseline score. With `clusters` (one cluster
/// index per case), whole clusters are resampled and the statistic is the ratio of summed
/// deltas to summed case counts, which keeps the within-cluster correlation (a naive
/// case-level bootstrap understates the variance when cases share a source). Returns
/// `samples` bootstrap means, sorted ascending.
pub fn paired_bootstrap(
    deltas: &[f64],
    clusters: Option<&[usize]>,
    samples: usize,
    seed: u64,
) -> Vec<f64> {
    let n = deltas.len();
    if n == 0 || samples == 0 {
        return Vec::new();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(samples);
    match clusters {
        Some(cl) if cl.len() == n => {
            let k = cl.iter().copied().max().map_or(0, |m| m + 1);
            let mut sums = vec![0.0f64; k];
            let mut counts = vec![0usize; k];
            for (d, &c) in deltas.iter().zip(cl) {
                sums[c] += d;
                counts[c] += 1;
            }
            let present: Vec<usize> = (0..k).filter(|&c| counts[c] > 0).collect();
            let g = present.len();
            for _ in 0..samples {
                let (mut s, mut m) = (0.0, 0usize);
                for _ in 0..g {
                    let c = present[rng.random_range(0..g)];
                    s += sums[c];
                    m += counts[c];
                }
                out.push(if m == 0 { 0.0 } else { s / m as f64 });
            }
        }
        _ => {
            for _ in 0..samples {
                let mut s = 0.0;
                for _ in 0..n {
                    s += deltas[rng.random_range(0..n)];
                }
                out.push(s / n as f64);
            }
        }
    }
    out.sort_by(f64::total_cmp);
    out
}

/// The `q`-quantile of sorted values (linear interpolation).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    sorted[lo] * (1.0 - frac) + sorted[hi] * frac
}

/// Sample mean and standard deviation (ddof = 1).
pub fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, var.sqrt())
}

/// The smallest true difference (beyond the non-inferiority margin) that a one-sided test at
/// `confidence` detects with probability `power`, given the standard error of the mean
/// difference: `(z_conf + z_power) · se`.
pub fn minimum_detectable_effect(se: f64, confidence: f64, power: f64) -> f64 {
    (normal_quantile(confidence) + normal_quantile(power)) * se
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_functions() {
        assert!((normal_quantile(0.975) - 1.959_964).abs() < 1e-5);
        assert!((normal_quantile(0.8) - 0.841_621).abs() < 1e-5);
        assert!((normal_quantile(0.01) + 2.326_348).abs() < 1e-5);
        assert!((normal_cdf(1.959_964) - 0.975).abs() < 1e-6);
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-9);
        assert!((normal_cdf(-1.644_854) - 0.05).abs() < 1e-6);
    }

    #[test]
    fn wilson_known_values() {
        // 8/10 at 95%: [0.4902, 0.9433] (Wilson 1927; standard tables).
        let i = wilson(8.0, 10.0, 0.95);
        assert!(
            (i.low - 0.4902).abs() < 1e-3 && (i.high - 0.9433).abs() < 1e-3,
            "{i:?}"
        );
        let i = wilson(0.0, 20.0, 0.95);
        assert_eq!(i.low, 0.0);
        assert!(i.high > 0.1 && i.high < 0.2);
        assert_eq!(
            wilson(0.0, 0.0, 0.95),
            Interval {
                low: 0.0,
                high: 1.0
            }
        );
    }

    #[test]
    fn mcnemar_values() {
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        // b=1, c=9: 2 * P(X<=1 | n=10) = 2 * 11/1024.
        assert!((mcnemar_exact(1, 9) - 22.0 / 1024.0).abs() < 1e-12);
        assert!((mcnemar_exact(5, 5) - 1.0).abs() < 1e-12);
        assert!(mcnemar_exact(30, 70) < 1e-4);
    }

    #[test]
    fn holm_adjustment() {
        let adj = holm(&[0.01, 0.04, 0.03]);
        assert!((adj[0] - 0.03).abs() < 1e-12);
        assert!((adj[2] - 0.06).abs() < 1e-12);
        assert!((adj[1] - 0.06).abs() < 1e-12);
    }

    #[test]
    fn bootstrap_is_seeded_and_centered() {
        let deltas: Vec<f64> = (0..200)
            .map(|i| if i % 10 == 0 { -1.0 } else { 0.0 })
            .collect();
        let a = paired_bootstrap(&deltas, None, 500, 7);
        let b = paired_bootstrap(&deltas, None, 500, 7);
        assert_eq!(a, b);
        let mid = quantile(&a, 0.5);
        assert!((mid + 0.1).abs() < 0.02, "{mid}");
        // Clustered: 20 clusters of 10 identical deltas: wider than the naive bootstrap.
        let deltas: Vec<f64> = (0..200)
            .map(|i| if (i / 10) % 5 == 0 { -1.0 } else { 0.0 })
            .collect();
        let clusters: Vec<usize> = (0..200).map(|i| i / 10).collect();
        let naive = paired_bootstrap(&deltas, None, 2000, 1);
        let clustered = paired_bootstrap(&deltas, Some(&clusters), 2000, 1);
        let width = |s: &[f64]| quantile(s, 0.975) - quantile(s, 0.025);
        assert!(
            width(&clustered) > 2.0 * width(&naive),
            "{} vs {}",
            width(&clustered),
            width(&naive)
        );
    }
}
