//! When a streaming session reads its socket: at a tick whose period follows the
//! stream, or at once when a burst crosses the socket's low-water mark.
//!
//! A wake-up costs the same whether it finds one frame or fifty, and at a home's
//! rates the wake-ups are most of the cost. A tick that finds few events waits
//! twice as long next time, up to [`MAX_PERIOD`]; one that finds many waits half
//! as long, down to [`MIN_PERIOD`]. So a busy home (hundreds of events/s) is read
//! every 50 ms, within the latency budget, while a quiet one (tens of events/s)
//! and an idle one are read five times a second instead of twenty. Bursts do not
//! wait for the tick: the socket's low-water mark ([`READ_LOW_WATER`], set with
//! [`set_low_water`]) wakes the reader as soon as 16 KiB wait. The longest tick is
//! far below HA's limits on a client's pending messages (1024 for 5 s, or 4096).

use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};

/// The shortest period: the busiest streams' added latency.
pub const MIN_PERIOD: Duration = Duration::from_millis(50);
/// The longest period: the most a quiet stream's events wait to be read.
pub const MAX_PERIOD: Duration = Duration::from_millis(200);
/// Bytes that make the socket readable before the tick (`SO_RCVLOWAT`): a burst is read at once.
pub const READ_LOW_WATER: libc::c_int = 16 * 1024;
/// A tick that read fewer events than this lengthens the period.
const FEW: u64 = 8;
/// A tick that read more events than this shortens the period (twice [`FEW`]: a period
/// just doubled or halved lands inside the band, so it does not swing back and forth).
const MANY: u64 = 16;

/// The read tick of one streaming session.
#[derive(Debug)]
pub struct ReadRhythm {
    period: Duration,
    interval: Interval,
    events: u64,
}

impl Default for ReadRhythm {
    fn default() -> Self {
        Self::new()
    }
}

impl ReadRhythm {
    /// Starts at the shortest period: a stream is assumed busy until a tick shows otherwise.
    pub fn new() -> Self {
        ReadRhythm {
            period: MIN_PERIOD,
            interval: interval(MIN_PERIOD),
            events: 0,
        }
    }

    /// Counts events read (at a tick or a burst) toward the next adjustment.
    pub fn read(&mut self, events: u64) {
        self.events += events;
    }

    /// The current period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Waits for the next tick, then adjusts the period to what the last one read.
    /// Cancel-safe: a tick that did not complete changes nothing.
    pub async fn tick(&mut self) {
        self.interval.tick().await;
        let next = next_period(self.period, std::mem::take(&mut self.events));
        if next != self.period {
            self.period = next;
            self.interval = interval(next);
        }
    }
}

/// The period after a tick that read `events` at `period`.
fn next_period(period: Duration, events: u64) -> Duration {
    if events < FEW {
        (period * 2).min(MAX_PERIOD)
    } else if events > MANY {
        (period / 2).max(MIN_PERIOD)
    } else {
        period
    }
}

/// A tick every `period`, the first one `period` from now; late ticks are not made up.
fn interval(period: Duration) -> Interval {
    let mut interval = tokio::time::interval_at(Instant::now() + period, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

/// Sets the socket's receive low-water mark (`SO_RCVLOWAT`): it then wakes a reader
/// only once `bytes` wait (a read still returns whatever is there). False when the
/// option cannot be set: the session then reads at every frame, as before.
pub fn set_low_water(ws: &super::connect::Ws, bytes: libc::c_int) -> bool {
    use std::os::fd::AsRawFd;
    use tokio_tungstenite::MaybeTlsStream;
    let fd = match ws.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp.as_raw_fd(),
        MaybeTlsStream::Rustls(tls) => tls.get_ref().0.as_raw_fd(),
        _ => return false,
    };
    // SAFETY: `fd` is the open socket `ws` owns for the duration of this call, and
    // the option value is a valid `c_int` whose size is passed.
    let result = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result != 0 {
        tracing::debug!(message = "Cannot set the socket's receive low-water mark; reading at every frame.", error = %std::io::Error::last_os_error());
    }
    result == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_follows_the_events_per_tick_within_its_bounds() {
        // 30 events/s: 1.5 per 50 ms tick, then 3, then 6 per 200 ms, where it stays.
        let mut p = MIN_PERIOD;
        for _ in 0..5 {
            let per_tick = (30.0 * p.as_secs_f64()) as u64;
            p = next_period(p, per_tick);
        }
        assert_eq!(p, MAX_PERIOD);
        // 300 events/s: 60 per 200 ms tick, 30 per 100 ms, then 15 per 50 ms, where it stays.
        for _ in 0..5 {
            let per_tick = (300.0 * p.as_secs_f64()) as u64;
            p = next_period(p, per_tick);
        }
        assert_eq!(p, MIN_PERIOD);
        assert_eq!(next_period(MIN_PERIOD, 10_000), MIN_PERIOD);
        assert_eq!(next_period(MAX_PERIOD, 0), MAX_PERIOD);
        assert_eq!(
            next_period(Duration::from_millis(100), 16),
            Duration::from_millis(100)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_is_read_five_times_a_second() {
        let mut rhythm = ReadRhythm::new();
        let start = Instant::now();
        let mut ticks = 0;
        while start.elapsed() < Duration::from_secs(10) {
            rhythm.tick().await;
            ticks += 1;
        }
        assert_eq!(rhythm.period(), MAX_PERIOD);
        // At 50, 150 and 350 ms, then every 200 ms: 48 more up to 9,950 ms, and the one
        // at 10,150 ms that ends the loop.
        assert_eq!(ticks, 52, "{ticks} ticks in 10 s");
    }
}
