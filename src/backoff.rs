//! Delays between attempts, for the whole program: exponential back-off with
//! full jitter.
//!
//! One policy for every retry and reconnect: the Home Assistant and MQTT
//! sources (reconnects, `reconnect_min` to `reconnect_max`), the InfluxDB writer
//! (transient failures, `retry_min` to `retry_max`, lengthened by a server's
//! `Retry-After`) and the alert notifiers (webhook retries, the MQTT notifier's
//! reconnects).
//!
//! The n-th delay of a streak (n from 0) is drawn uniformly from
//! `[initial, min(initial × 2^n, max)]`: the first is always `initial`, the
//! range doubles with every failure until it reaches `max`, and the jitter
//! spreads out clients that failed together, so they do not all come back at
//! the same instant. [`Backoff::reset`] starts a new streak after a success.
//!
//! Tests that count delays under paused tokio time fix where in its range each
//! delay falls ([`Backoff::with_jitter`]); every wait is then known exactly.

use std::time::Duration;

use rand::Rng;

/// The range stops doubling after this many failures (only `max` bounds it by then).
const MAX_DOUBLINGS: u32 = 30;

/// Exponential back-off with jitter between `initial` and `max`; reset after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
    /// `Some(at)`: each delay sits at `at` of its range instead of a random point.
    jitter: Option<f64>,
}

impl Backoff {
    /// Starts at `initial`; `max` below `initial` is taken as `initial`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
            jitter: None,
        }
    }

    /// Draws no random number: every delay sits at `at` of its range (0.0: `initial`, 1.0: the cap), so tests know each wait.
    #[must_use]
    pub fn with_jitter(mut self, at: f64) -> Self {
        self.jitter = Some(at.clamp(0.0, 1.0));
        self
    }

    /// The next delay starts at `initial` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Delays handed out since the last reset: the number of the retry the latest delay precedes.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// A delay between `initial` and `initial × 2^attempt` (capped at `max`).
    pub fn next_delay(&mut self) -> Duration {
        let cap = self
            .initial
            .saturating_mul(1u32 << self.attempt.min(MAX_DOUBLINGS))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        if cap <= self.initial {
            return self.initial;
        }
        let at = match self.jitter {
            Some(at) => at,
            None => rand::rng().random_range(0.0..=1.0),
        };
        self.initial + (cap - self.initial).mul_f64(at)
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

    #[test]
    fn fixed_jitter_gives_the_ends_of_each_range() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        let mut top = Backoff::new(min, max).with_jitter(1.0);
        let delays: Vec<u64> = (0..6)
            .map(|_| top.next_delay().as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(top.attempts(), 6);
        let mut bottom = Backoff::new(min, max).with_jitter(0.0);
        assert!((0..10).all(|_| bottom.next_delay() == min));
        let mut middle = Backoff::new(min, max).with_jitter(0.5);
        middle.next_delay();
        assert_eq!(middle.next_delay(), Duration::from_millis(150));
    }

    #[test]
    fn max_below_initial_is_initial_and_large_attempts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert!((0..5).all(|_| b.next_delay() == Duration::from_secs(2)));
        // A millionfold range is still reached: the range doubles 30 times before only `max` bounds it.
        let max = Duration::from_secs(3600);
        let mut b = Backoff::new(Duration::from_millis(1), max).with_jitter(1.0);
        for _ in 0..100 {
            assert!(b.next_delay() <= max);
        }
        assert_eq!(b.next_delay(), max);
    }

    #[tokio::test(start_paused = true)]
    async fn fixed_jitter_waits_are_exact_under_paused_time() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30)).with_jitter(1.0);
        let start = tokio::time::Instant::now();
        for _ in 0..7 {
            tokio::time::sleep(b.next_delay()).await;
        }
        // 1 + 2 + 4 + 8 + 16 + 30 + 30
        assert_eq!(start.elapsed(), Duration::from_secs(91));
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }
}
