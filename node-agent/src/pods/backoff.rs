//! Kubelet's crash-loop back-off: the first restart is immediate, then the delay
//! starts at 10 s and doubles up to 5 min; a container that ran for 10 min resets it.

use std::time::Duration;

/// The back-off schedule for restarting a container (or re-pulling its image).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first non-zero delay (kubelet: 10 s).
    pub initial: Duration,
    /// The longest delay (kubelet: 5 min).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The delay before the next attempt after `failures` consecutive failures.
    pub fn delay(&self, failures: u32) -> Duration {
        match failures {
            0 | 1 => Duration::ZERO,
            n => {
                let doublings = (n - 2).min(31);
                self.initial
                    .checked_mul(1u32 << doublings)
                    .map_or(self.max, |delay| delay.min(self.max))
            }
        }
    }

    /// A run this long forgives earlier failures (kubelet forgets a back-off entry
    /// after twice the maximum delay).
    pub fn reset_after(&self) -> Duration {
        self.max * 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_matches_kubelet() {
        let backoff = Backoff::default();
        let delays: Vec<u64> = (0..9).map(|n| backoff.delay(n).as_secs()).collect();
        assert_eq!(delays, [0, 0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(300));
        assert_eq!(backoff.reset_after(), Duration::from_secs(600));
    }
}
