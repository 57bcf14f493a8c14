//! Percentiles of measured durations, the same way in every benchmark.

use std::time::Duration;

/// The nearest-rank percentile `q` (0 to 1) of `sorted` (ascending); zero when empty.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The latency percentiles a benchmark reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

impl Percentiles {
    /// The percentiles of `latencies`.
    pub fn of(mut latencies: Vec<Duration>) -> Self {
        latencies.sort_unstable();
        Self {
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
            p999: percentile(&latencies, 0.999),
            max: latencies.last().copied().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let latencies: Vec<Duration> = (1..=1000).map(Duration::from_millis).collect();
        let p = Percentiles::of(latencies);
        assert_eq!(p.p50, Duration::from_millis(500));
        assert_eq!(p.p99, Duration::from_millis(990));
        assert_eq!(p.p999, Duration::from_millis(999));
        assert_eq!(p.max, Duration::from_millis(1000));
        assert_eq!(Percentiles::of(Vec::new()).max, Duration::ZERO);
    }
}
