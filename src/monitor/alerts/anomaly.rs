//! The learned baseline of an event rate, for anomaly rules.
//!
//! Two exponentially weighted estimates of mean and variance (West's
//! incremental EWMA form) are kept: one over all samples, and one per hour of
//! the day (UTC). The hourly one is used once it has learned its hour for an
//! hour, so the daily cycle (a quiet night, a busy evening) is not an anomaly;
//! until then the overall one stands in. The overall memory has the rule's
//! `half_life`; an hour's memory has three times that *in its own hour*, so
//! with the default one hour it remembers about three days of that hour.
//!
//! The standard deviation used for the score never goes below what counting
//! noise alone gives (a Poisson rate of `mean` over `window`: `√(mean/window)`)
//! nor below one event per window, so a perfectly steady rate does not make a
//! single extra event look anomalous. Samples beyond the threshold (either way)
//! are learned at a tenth of the weight: an outage does not become the norm within one
//! half-life, while a lasting change of level is learned over about ten.

use std::time::Duration;

use crate::config::alerts::Direction;

/// Running mean and variance with exponential forgetting.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Ewma {
    mean: f64,
    var: f64,
    /// Seconds of samples learned.
    learned: f64,
}

impl Ewma {
    fn update(&mut self, x: f64, alpha: f64, dt: f64) {
        if self.learned == 0.0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let d = x - self.mean;
            self.mean += alpha * d;
            self.var = (1.0 - alpha) * (self.var + alpha * d * d);
        }
        self.learned += dt;
    }
}

/// The baseline's verdict on one rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// The rate judged (per second).
    pub rate: f64,
    /// The expected rate.
    pub mean: f64,
    /// The standard deviation the score divides by.
    pub sd: f64,
    /// `(rate - mean) / sd`.
    pub z: f64,
    /// Past the warm-up and beyond the threshold in the watched direction.
    pub anomalous: bool,
    /// Still learning (the warm-up has not passed).
    pub warming_up: bool,
}

/// What a rule has learned about one rate.
#[derive(Debug, Clone)]
pub struct Baseline {
    window: f64,
    warmup: f64,
    half_life: f64,
    z: f64,
    direction: Direction,
    daily: bool,
    overall: Ewma,
    hours: [Ewma; 24],
}

impl Baseline {
    /// A baseline that has learned nothing yet.
    pub fn new(
        window: Duration,
        warmup: Duration,
        half_life: Duration,
        z: f64,
        direction: Direction,
        daily: bool,
    ) -> Self {
        Baseline {
            window: window.as_secs_f64().max(1.0),
            warmup: warmup.as_secs_f64(),
            half_life: half_life.as_secs_f64().max(1.0),
            z,
            direction,
            daily,
            overall: Ewma::default(),
            hours: [Ewma::default(); 24],
        }
    }

    /// Judges `rate` (seen `dt` after the previous sample, in hour `hour` of the day) against what was learned, then learns it.
    pub fn observe(&mut self, rate: f64, dt: Duration, hour: usize) -> Score {
        let dt = dt.as_secs_f64();
        let hour = hour % 24;
        let hourly = &self.hours[hour];
        let reference = if self.daily && hourly.learned >= 3600.0 {
            *hourly
        } else {
            self.overall
        };
        let noise = (reference.mean.max(0.0) / self.window).sqrt();
        let sd = reference.var.sqrt().max(noise).max(1.0 / self.window);
        let z = (rate - reference.mean) / sd;
        let warming_up = self.overall.learned < self.warmup || reference.learned == 0.0;
        let beyond = match self.direction {
            Direction::Both => z.abs() > self.z,
            Direction::Drop => z < -self.z,
            Direction::Spike => z > self.z,
        };
        let anomalous = !warming_up && beyond;
        // Extreme in either direction (watched or not): learned slowly.
        let weight = if !warming_up && z.abs() > self.z {
            0.1
        } else {
            1.0
        };
        let alpha = |half_life: f64| weight * (1.0 - 0.5f64.powf(dt / half_life));
        self.overall.update(rate, alpha(self.half_life), dt);
        if self.daily {
            self.hours[hour].update(rate, alpha(3.0 * self.half_life), dt);
        }
        Score {
            rate,
            mean: reference.mean,
            sd,
            z,
            anomalous,
            warming_up,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline(daily: bool) -> Baseline {
        Baseline::new(
            Duration::from_secs(300),
            Duration::from_secs(3600),
            Duration::from_secs(3600),
            4.0,
            Direction::Both,
            daily,
        )
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn warm_up_then_a_drop_is_anomalous() {
        let mut b = baseline(false);
        // 2 h of ~10 events/s with a little noise.
        for i in 0..120 {
            let rate = 10.0 + if i % 2 == 0 { 0.3 } else { -0.3 };
            let s = b.observe(rate, MINUTE, 12);
            assert!(!s.anomalous, "minute {i}: {s:?}");
            if i < 59 {
                assert!(s.warming_up, "minute {i}");
            }
        }
        let s = b.observe(10.2, MINUTE, 12);
        assert!(!s.anomalous && !s.warming_up, "{s:?}");
        let s = b.observe(0.5, MINUTE, 12);
        assert!(s.anomalous && s.z < -4.0, "{s:?}");
        let s = b.observe(40.0, MINUTE, 12);
        assert!(s.anomalous && s.z > 4.0, "{s:?}");
    }

    #[test]
    fn nothing_fires_during_the_warm_up() {
        let mut b = baseline(false);
        b.observe(10.0, MINUTE, 0);
        let s = b.observe(0.0, MINUTE, 0);
        assert!(s.warming_up && !s.anomalous, "{s:?}");
    }

    #[test]
    fn the_daily_cycle_is_learned_per_hour() {
        // Busy (20/s) from 18 to 23 h, quiet (2/s) otherwise, for four days.
        let rate_at = |h: usize| if (18..23).contains(&h) { 20.0 } else { 2.0 };
        let mut daily = baseline(true);
        let mut flat = baseline(false);
        for day in 0..4 {
            for h in 0..24 {
                for _ in 0..60 {
                    let d = daily.observe(rate_at(h), MINUTE, h);
                    let f = flat.observe(rate_at(h), MINUTE, h);
                    if day == 3 {
                        assert!(!d.anomalous, "daily baseline, hour {h}: {d:?}");
                        let _ = f;
                    }
                }
            }
        }
        // On the fifth evening the hourly baseline expects the busy hour; the flat one does not.
        let d = daily.observe(20.0, MINUTE, 18);
        let f = flat.observe(20.0, MINUTE, 18);
        assert!(!d.anomalous && (d.mean - 20.0).abs() < 1.0, "{d:?}");
        assert!((f.mean - 20.0).abs() > 5.0, "{f:?}");
        // A quiet evening is anomalous for the hourly baseline.
        let d = daily.observe(2.0, MINUTE, 19);
        assert!(d.anomalous && d.z < 0.0, "{d:?}");
    }

    #[test]
    fn direction_limits_what_counts() {
        let mut b = Baseline::new(
            Duration::from_secs(300),
            Duration::ZERO,
            Duration::from_secs(3600),
            4.0,
            Direction::Drop,
            false,
        );
        for _ in 0..30 {
            b.observe(10.0, MINUTE, 0);
        }
        assert!(!b.observe(50.0, MINUTE, 0).anomalous);
        assert!(b.observe(0.0, MINUTE, 0).anomalous);
    }
}
