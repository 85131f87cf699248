//! Fixed-size histograms: recording a sample never allocates, so measuring
//! hundreds of thousands of packets a second does not disturb what is measured.

use serde::Serialize;

/// Width of one histogram bucket in nanoseconds (10 µs).
const BUCKET_NS: u64 = 10_000;
/// Buckets cover 0–2 s; longer samples land in the last one (the max stays exact).
const BUCKETS: usize = 200_000;

/// Distribution of durations at 10 µs resolution.
#[derive(Clone)]
pub struct Histogram {
    /// Sample counts per bucket.
    counts: Vec<u64>,
    /// Samples recorded.
    total: u64,
    /// Largest sample, exact.
    max_ns: u64,
}

/// A histogram summarised in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest sample, ms.
    pub max_ms: f64,
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max_ns: 0,
        }
    }

    /// Records one sample.
    pub fn record_ns(&mut self, ns: u64) {
        let bucket = usize::try_from(ns / BUCKET_NS).map_or(BUCKETS - 1, |b| b.min(BUCKETS - 1));
        self.counts[bucket] += 1;
        self.total += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    /// The smallest value with at least `q` of the samples at or below it
    /// (upper edge of its bucket, capped at the max).
    pub fn quantile_ns(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return ((i as u64 + 1) * BUCKET_NS).min(self.max_ns);
            }
        }
        self.max_ns
    }

    /// Count, p50, p99 and max in ms.
    pub fn summary(&self) -> Summary {
        let ms = |ns: u64| ns as f64 / 1e6;
        Summary {
            count: self.total,
            p50_ms: ms(self.quantile_ns(0.50)),
            p99_ms: ms(self.quantile_ns(0.99)),
            max_ms: ms(self.max_ns),
        }
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_at_bucket_resolution() {
        let mut h = Histogram::new();
        for us in 1..=100u64 {
            h.record_ns(us * 1000);
        }
        let s = h.summary();
        assert_eq!(s.count, 100);
        assert!((s.p50_ms - 0.05).abs() < 0.011, "{s:?}");
        assert!((s.p99_ms - 0.099).abs() < 0.011, "{s:?}");
        assert_eq!(s.max_ms, 0.1);
        h.record_ns(5_000_000_000);
        assert_eq!(h.summary().max_ms, 5000.0, "max stays exact past the range");
        assert_eq!(Histogram::new().summary(), Summary::default());
    }
}
