//! Restart back-off for crashed containers, as the kubelet does it.
//!
//! The delay starts at a base (10 s in the kubelet), doubles on every restart and stops at a
//! maximum (5 min); a container that ran for twice the maximum starts over at the base.
//! The base is configurable so tests restart quickly. Jitter is left out.

use std::time::Duration;

/// The kubelet's initial crash-loop delay.
pub const DEFAULT_BASE: Duration = Duration::from_secs(10);
/// The kubelet's maximum crash-loop delay.
pub const DEFAULT_MAX: Duration = Duration::from_secs(300);

/// Exponential back-off state of one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    last: Option<Duration>,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max: max.max(base), last: None }
    }

    /// The delay before the next restart; every call doubles it up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let delay = match self.last {
            None => self.base,
            Some(last) => last.saturating_mul(2).min(self.max),
        };
        self.last = Some(delay);
        delay
    }

    /// Tells the back-off how long the last run lasted; a long run resets it.
    pub fn observe_run(&mut self, ran_for: Duration) {
        if ran_for >= self.max.saturating_mul(2) {
            self.last = None;
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(DEFAULT_BASE, DEFAULT_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum() {
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..7).map(|_| backoff.next_delay().as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn a_long_run_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        backoff.next_delay();
        backoff.next_delay();
        backoff.observe_run(Duration::from_millis(500));
        assert_eq!(backoff.next_delay(), Duration::from_millis(400));
        backoff.observe_run(Duration::from_secs(2));
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }
}
