//! Percentiles of latency samples. Pure.

use serde::{Deserialize, Serialize};

/// Summary of one backend's latencies in one phase, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The `p`-th percentile (0–100) by the nearest-rank method: the smallest
/// sample with at least `p`% of the samples at or below it. `None` when empty.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50, p99 and max of microsecond samples, in milliseconds.
pub fn summarize(micros: &[u64]) -> Summary {
    let mut v = micros.to_vec();
    v.sort_unstable();
    let ms = |x: Option<u64>| x.map_or(0.0, |u| u as f64 / 1000.0);
    Summary {
        count: v.len(),
        p50_ms: ms(percentile(&v, 50.0)),
        p99_ms: ms(percentile(&v, 99.0)),
        max_ms: ms(v.last().copied()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(samples: &[u64], p: f64, expected: Option<u64>) {
        let mut v = samples.to_vec();
        v.sort_unstable();
        assert_eq!(percentile(&v, p), expected, "p{p} of {samples:?}");
    }

    #[test]
    fn nearest_rank() {
        check(&[], 50.0, None);
        check(&[7], 50.0, Some(7));
        check(&[7], 99.0, Some(7));
        check(&[3, 1, 2, 4], 50.0, Some(2));
        check(&[3, 1, 2, 4], 75.0, Some(3));
        check(&[3, 1, 2, 4], 100.0, Some(4));
        check(&[3, 1, 2, 4], 0.0, Some(1));
        let hundred: Vec<u64> = (1..=100).collect();
        check(&hundred, 99.0, Some(99));
        check(&hundred, 99.5, Some(100));
        check(&hundred, 50.0, Some(50));
    }

    #[test]
    fn summary_in_milliseconds() {
        let s = summarize(&[2_000, 1_000, 3_000, 100_000]);
        assert_eq!(s, Summary { count: 4, p50_ms: 2.0, p99_ms: 100.0, max_ms: 100.0 });
        assert_eq!(summarize(&[]), Summary::default());
    }
}
