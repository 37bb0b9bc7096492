//! Latency samples and their summaries.

use std::time::Duration;

/// Latencies of one workload run, and how long the run took.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    latencies: Vec<Duration>,
    /// Wall-clock time of the whole run.
    pub elapsed: Duration,
    /// Operations that failed.
    pub errors: usize,
}

impl Samples {
    /// Samples from per-operation latencies and the run's duration.
    pub fn new(mut latencies: Vec<Duration>, elapsed: Duration, errors: usize) -> Self {
        latencies.sort();
        Self {
            latencies,
            elapsed,
            errors,
        }
    }

    /// The `q`-quantile latency (0.5 for the median), or zero without samples.
    pub fn percentile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "index into a short vector"
        )]
        let idx = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[idx]
    }

    /// Successful operations per second.
    pub fn ops_per_second(&self) -> f64 {
        #[expect(clippy::cast_precision_loss, reason = "operation counts are small")]
        let count = self.latencies.len() as f64;
        count / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// The median of several runs' values.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_rates() {
        let latencies = (1..=100).map(Duration::from_millis).collect();
        let samples = Samples::new(latencies, Duration::from_secs(2), 0);
        assert_eq!(samples.percentile(0.5), Duration::from_millis(51));
        assert_eq!(samples.percentile(0.99), Duration::from_millis(99));
        assert_eq!(samples.percentile(0.0), Duration::from_millis(1));
        assert!((samples.ops_per_second() - 50.0).abs() < 1e-9);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(Samples::default().percentile(0.5), Duration::ZERO);
    }
}
