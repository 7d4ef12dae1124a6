//! Reconnect and retry delays: exponential back-off with jitter (a leaf module, for the whole program).

use std::time::Duration;

use rand::Rng;

/// Exponential back-off with jitter between `min` and `max`; reset after a stable connection.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `min`; `max` below `min` is taken as `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The next delay starts at `min` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// A random delay between `min` and `min × 2^attempt` (capped at `max`).
    pub fn next_delay(&mut self) -> Duration {
        let cap = self
            .min
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        if cap <= self.min {
            return self.min;
        }
        let nanos = rand::rng().random_range(self.min.as_nanos()..=cap.as_nanos());
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_within_bounds_and_resets() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        let mut b = Backoff::new(min, max);
        assert_eq!(b.next_delay(), min);
        for attempt in 1..40u32 {
            let d = b.next_delay();
            let cap = min.saturating_mul(1 << attempt.min(20)).min(max);
            assert!(
                d >= min && d <= cap,
                "attempt {attempt}: {d:?} outside [{min:?}, {cap:?}]"
            );
        }
        b.reset();
        assert_eq!(b.next_delay(), min);
    }
}
