//! The `time` match: time-of-day windows and weekdays on the local wall clock of a time zone.
//!
//! An event's `time_fired` (UTC) is turned into the wall-clock time of the
//! configured IANA zone (chrono-tz, so daylight saving follows the tz
//! database), and the window is tested on that wall clock:
//!
//! - `after` is inclusive, `before` exclusive; a window with `after` later than
//!   `before` crosses midnight (`22:00`–`06:00`); one of them alone is open-ended
//!   to midnight;
//! - `weekdays` are the local date's weekday (for a window crossing midnight,
//!   the day the event happened on, not the day the window started);
//! - a wall-clock time that does not exist on a spring-forward day (02:30 in
//!   Europe/Berlin on the last Sunday of March) is never seen, so a window
//!   inside the skipped hour matches nothing that day; the repeated hour of an
//!   autumn day is seen twice, and a window in it matches both times.
//!
//! Converting each event's time through the tz database (a search of the
//! zone's transitions, then calendar arithmetic) was the time rules' whole
//! cost. Events arrive in time order, so a window remembers the UTC offset of
//! the hour it last saw: within that hour the wall clock is the UTC time plus
//! the offset, and the weekday and time of day are two integer divisions.

use std::cell::Cell;

use chrono::{NaiveTime, Offset, TimeZone, Timelike, Weekday};
use chrono_tz::Tz;

use crate::event::Timestamp;

/// Why a `time` match cannot be built; the caller adds the rule's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Not an IANA zone name.
    #[error("unknown time zone {0:?}: give an IANA name such as \"Europe/Berlin\" or \"UTC\"")]
    Zone(String),
    /// Not `HH:MM` or `HH:MM:SS`.
    #[error("bad time of day {0:?}: give HH:MM or HH:MM:SS (24 h)")]
    TimeOfDay(String),
    /// Not a weekday name.
    #[error("bad weekday {0:?}: give mon, tue, wed, thu, fri, sat or sun")]
    Weekday(String),
    /// Nothing to test.
    #[error("no test: give after, before or weekdays")]
    Empty,
    /// `after` equals `before`: an empty (or a whole-day) window is ambiguous.
    #[error("after and before are equal ({0}): leave both out for the whole day")]
    EqualBounds(String),
}

/// Parses an IANA time-zone name (`UTC`, `Europe/Berlin`).
pub fn parse_zone(name: &str) -> Result<Tz, TimeError> {
    name.parse::<Tz>()
        .map_err(|_| TimeError::Zone(name.to_string()))
}

/// A compiled `time` match.
#[derive(Debug, Clone)]
pub struct TimeWindow {
    zone: Tz,
    /// Seconds since local midnight, inclusive.
    after: Option<u32>,
    /// Seconds since local midnight, exclusive.
    before: Option<u32>,
    /// Bit `d` set: weekday `d` (Monday = 0) matches; all bits when none were given.
    weekdays: u8,
    /// The UTC hour last seen and the zone's offset throughout it.
    span: Cell<OffsetSpan>,
}

/// UTC seconds `[start, end)` over which the zone's UTC offset is `offset` seconds.
#[derive(Debug, Clone, Copy)]
struct OffsetSpan {
    start: i64,
    end: i64,
    offset: i64,
}

/// Seconds in an hour: the span one offset look-up covers.
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// The zone's UTC offset (seconds) at UTC second `secs`; `None` outside chrono's range.
fn offset_at(zone: Tz, secs: i64) -> Option<i64> {
    let utc = chrono::DateTime::from_timestamp(secs, 0)?.naive_utc();
    Some(i64::from(
        zone.offset_from_utc_datetime(&utc).fix().local_minus_utc(),
    ))
}

fn seconds_of_day(text: &str) -> Result<u32, TimeError> {
    let t = NaiveTime::parse_from_str(text, "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(text, "%H:%M"))
        .map_err(|_| TimeError::TimeOfDay(text.to_string()))?;
    Ok(t.num_seconds_from_midnight())
}

fn weekday_bit(name: &str) -> Result<u8, TimeError> {
    let day = match name.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Weekday::Mon,
        "tue" | "tuesday" => Weekday::Tue,
        "wed" | "wednesday" => Weekday::Wed,
        "thu" | "thursday" => Weekday::Thu,
        "fri" | "friday" => Weekday::Fri,
        "sat" | "saturday" => Weekday::Sat,
        "sun" | "sunday" => Weekday::Sun,
        _ => return Err(TimeError::Weekday(name.to_string())),
    };
    Ok(1 << day.num_days_from_monday())
}

impl TimeWindow {
    /// Compiles a window in `zone`; times as `HH:MM[:SS]`, weekdays as `mon`…`sun`.
    pub fn new(
        zone: Tz,
        after: Option<&str>,
        before: Option<&str>,
        weekdays: &[String],
    ) -> Result<TimeWindow, TimeError> {
        if after.is_none() && before.is_none() && weekdays.is_empty() {
            return Err(TimeError::Empty);
        }
        let after = after.map(seconds_of_day).transpose()?;
        let before = before.map(seconds_of_day).transpose()?;
        if let (Some(a), Some(b)) = (after, before)
            && a == b
        {
            return Err(TimeError::EqualBounds(format!(
                "{:02}:{:02}:{:02}",
                a / 3600,
                a / 60 % 60,
                a % 60
            )));
        }
        let mut bits = 0u8;
        for day in weekdays {
            bits |= weekday_bit(day)?;
        }
        Ok(TimeWindow {
            zone,
            after,
            before,
            weekdays: if bits == 0 { 0x7f } else { bits },
            span: Cell::new(OffsetSpan {
                start: 0,
                end: 0,
                offset: 0,
            }),
        })
    }

    /// The zone's offset at UTC second `secs`, from the remembered hour when it holds.
    ///
    /// A new hour costs two look-ups, at its first and its last second: when they agree the
    /// offset holds for the whole hour (the tz database never puts two transitions less than
    /// an hour apart), otherwise the hour has a transition and is looked up per event.
    fn offset(&self, secs: i64) -> Option<i64> {
        let span = self.span.get();
        if secs >= span.start && secs < span.end {
            return Some(span.offset);
        }
        let start = secs.div_euclid(HOUR) * HOUR;
        let first = offset_at(self.zone, start)?;
        let last = offset_at(self.zone, start + HOUR - 1)?;
        if first == last {
            self.span.set(OffsetSpan {
                start,
                end: start + HOUR,
                offset: first,
            });
            return Some(first);
        }
        offset_at(self.zone, secs)
    }

    /// Whether the instant falls in the window on the zone's wall clock.
    pub fn holds(&self, time: Timestamp) -> bool {
        let secs = time.as_nanos().div_euclid(1_000_000_000);
        let Some(offset) = self.offset(secs) else {
            return false;
        };
        let local = secs + offset;
        // 1970-01-01 was a Thursday (3 days after a Monday).
        let weekday = (local.div_euclid(DAY) + 3).rem_euclid(7);
        if self.weekdays & (1 << weekday) == 0 {
            return false;
        }
        let s = local.rem_euclid(DAY) as u32;
        match (self.after, self.before) {
            (None, None) => true,
            (Some(a), None) => s >= a,
            (None, Some(b)) => s < b,
            (Some(a), Some(b)) if a < b => s >= a && s < b,
            // Crosses midnight.
            (Some(a), Some(b)) => s >= a || s < b,
        }
    }

    /// One line for the rule plan (`check`, `explain`).
    pub fn describe(&self) -> String {
        let hm = |s: Option<u32>| {
            s.map_or_else(
                || "-".to_string(),
                |s| format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60),
            )
        };
        let days: Vec<&str> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            .iter()
            .enumerate()
            .filter(|(i, _)| self.weekdays & (1 << i) != 0)
            .map(|(_, d)| *d)
            .collect();
        format!(
            "time {}..{} on {} ({})",
            hm(self.after),
            hm(self.before),
            days.join(","),
            self.zone.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    fn window(zone: &str, after: Option<&str>, before: Option<&str>, days: &[&str]) -> TimeWindow {
        let days: Vec<String> = days.iter().map(|d| d.to_string()).collect();
        TimeWindow::new(parse_zone(zone).unwrap(), after, before, &days).unwrap()
    }

    #[test]
    fn plain_window_in_utc() {
        let w = window("UTC", Some("08:00"), Some("17:30"), &[]);
        assert!(!w.holds(at("2026-06-01T07:59:59.999999+00:00")));
        assert!(w.holds(at("2026-06-01T08:00:00.000000+00:00")));
        assert!(w.holds(at("2026-06-01T17:29:59.999999+00:00")));
        assert!(!w.holds(at("2026-06-01T17:30:00.000000+00:00")));
    }

    #[test]
    fn window_crossing_midnight() {
        let w = window("UTC", Some("22:00"), Some("06:00"), &[]);
        assert!(w.holds(at("2026-06-01T23:00:00.000000+00:00")));
        assert!(w.holds(at("2026-06-02T00:00:00.000000+00:00")));
        assert!(w.holds(at("2026-06-02T05:59:59.000000+00:00")));
        assert!(!w.holds(at("2026-06-02T06:00:00.000000+00:00")));
        assert!(!w.holds(at("2026-06-02T21:59:59.000000+00:00")));
    }

    #[test]
    fn zone_offset_is_applied() {
        // 07:30 UTC is 09:30 in Berlin in summer (CEST, +2).
        let w = window("Europe/Berlin", Some("09:00"), Some("10:00"), &[]);
        assert!(w.holds(at("2026-07-01T07:30:00.000000+00:00")));
        assert!(!w.holds(at("2026-07-01T09:30:00.000000+00:00")));
        // In winter (CET, +1) 08:30 UTC is 09:30.
        assert!(w.holds(at("2026-01-05T08:30:00.000000+00:00")));
    }

    #[test]
    fn weekdays_use_the_local_date() {
        // 2026-06-05 is a Friday; 22:30 UTC is already Saturday 00:30 in Berlin.
        let w = window("Europe/Berlin", None, None, &["fri"]);
        assert!(w.holds(at("2026-06-05T12:00:00.000000+00:00")));
        assert!(!w.holds(at("2026-06-05T22:30:00.000000+00:00")));
        let utc = window("UTC", None, None, &["Friday"]);
        assert!(utc.holds(at("2026-06-05T22:30:00.000000+00:00")));
        let weekend = window("UTC", Some("10:00"), None, &["sat", "sun"]);
        assert!(weekend.holds(at("2026-06-06T10:00:00.000000+00:00")));
        assert!(!weekend.holds(at("2026-06-06T09:59:00.000000+00:00")));
        assert!(!weekend.holds(at("2026-06-08T11:00:00.000000+00:00")));
    }

    #[test]
    fn spring_forward_skipped_hour_matches_nothing() {
        // Europe/Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
        let w = window("Europe/Berlin", Some("02:30"), Some("03:00"), &[]);
        let mut t = at("2026-03-28T23:00:00.000000+00:00").as_nanos();
        let end = at("2026-03-29T05:00:00.000000+00:00").as_nanos();
        let mut hits = 0;
        while t < end {
            hits += usize::from(w.holds(Timestamp::from_nanos(t)));
            t += 60 * 1_000_000_000;
        }
        assert_eq!(hits, 0, "02:30 to 03:00 does not exist that night");
        // The same window the night before holds for 30 minutes.
        let mut t = at("2026-03-27T23:00:00.000000+00:00").as_nanos();
        let end = at("2026-03-28T05:00:00.000000+00:00").as_nanos();
        let mut hits = 0;
        while t < end {
            hits += usize::from(w.holds(Timestamp::from_nanos(t)));
            t += 60 * 1_000_000_000;
        }
        assert_eq!(hits, 30);
        // 01:59:59 UTC+1 and then 03:00 UTC+2 straddle the jump.
        let after_jump = window("Europe/Berlin", Some("03:00"), Some("03:01"), &[]);
        assert!(after_jump.holds(at("2026-03-29T01:00:00.000000+00:00")));
    }

    #[test]
    fn autumn_repeated_hour_matches_twice() {
        // Europe/Berlin, 2026-10-25: 03:00 CEST goes back to 02:00 CET (01:00 UTC);
        // 02:00–03:00 local happens from 00:00 to 02:00 UTC.
        let w = window("Europe/Berlin", Some("02:15"), Some("02:45"), &[]);
        assert!(
            w.holds(at("2026-10-25T00:20:00.000000+00:00")),
            "first 02:20 (CEST)"
        );
        assert!(!w.holds(at("2026-10-25T00:50:00.000000+00:00")));
        assert!(
            w.holds(at("2026-10-25T01:20:00.000000+00:00")),
            "second 02:20 (CET)"
        );
        let mut t = at("2026-10-24T22:00:00.000000+00:00").as_nanos();
        let end = at("2026-10-25T04:00:00.000000+00:00").as_nanos();
        let mut hits = 0;
        while t < end {
            hits += usize::from(w.holds(Timestamp::from_nanos(t)));
            t += 60 * 1_000_000_000;
        }
        assert_eq!(hits, 60, "two half hours");
    }

    /// The window evaluated the direct way: chrono-tz's conversion of every instant.
    fn direct(w: &TimeWindow, time: Timestamp) -> bool {
        use chrono::Datelike;
        let nanos = time.as_nanos();
        let Some(local) = w
            .zone
            .timestamp_opt(nanos.div_euclid(1_000_000_000), 0)
            .single()
        else {
            return false;
        };
        if w.weekdays & (1 << local.weekday().num_days_from_monday()) == 0 {
            return false;
        }
        let s = local.num_seconds_from_midnight();
        match (w.after, w.before) {
            (None, None) => true,
            (Some(a), None) => s >= a,
            (None, Some(b)) => s < b,
            (Some(a), Some(b)) if a < b => s >= a && s < b,
            (Some(a), Some(b)) => s >= a || s < b,
        }
    }

    #[test]
    fn the_remembered_offset_agrees_with_the_tz_database_across_transitions() {
        // Zones with whole-hour, half-hour (Lord Howe: 30 min DST) and southern DST,
        // walked minute by minute across their 2026 transitions, forwards, backwards and
        // jumping about (a cached hour must never leak into another).
        let cases = [
            ("Europe/Berlin", "2026-03-28T22:00:00.000000+00:00"),
            ("Europe/Berlin", "2026-10-24T22:00:00.000000+00:00"),
            ("America/New_York", "2026-03-08T04:00:00.000000+00:00"),
            ("America/New_York", "2026-11-01T03:00:00.000000+00:00"),
            ("Australia/Lord_Howe", "2026-04-04T12:00:00.000000+00:00"),
            ("Australia/Lord_Howe", "2026-10-03T12:00:00.000000+00:00"),
            ("Asia/Kolkata", "2026-06-01T00:00:00.000000+00:00"),
        ];
        let windows = [
            (Some("01:45"), Some("03:15"), &[][..]),
            (Some("22:00"), Some("02:30"), &["sat", "sun"][..]),
            (None, Some("02:00"), &["sun"][..]),
            (Some("02:59:59"), None, &[][..]),
        ];
        for (zone, from) in cases {
            for (after, before, days) in windows {
                let w = window(zone, after, before, days);
                let start = at(from).as_nanos();
                let minute = 60 * 1_000_000_000i64;
                let forwards = (0..6 * 60).map(|m| start + m * minute + 17_000_000_000);
                let backwards = (0..6 * 60).rev().map(|m| start + m * minute);
                // A stride coprime with the span: visits every minute out of order.
                let jumping = (0..6 * 60).map(|m| start + (m * 97 % 360) * minute);
                for t in forwards.chain(backwards).chain(jumping) {
                    let t = Timestamp::from_nanos(t);
                    assert_eq!(
                        w.holds(t),
                        direct(&w, t),
                        "{zone} {after:?}-{before:?} {days:?} at {t}"
                    );
                }
            }
        }
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(matches!(
            parse_zone("Mars/Olympus"),
            Err(TimeError::Zone(_))
        ));
        let utc = parse_zone("UTC").unwrap();
        assert!(matches!(
            TimeWindow::new(utc, Some("25:00"), None, &[]),
            Err(TimeError::TimeOfDay(_))
        ));
        assert!(matches!(
            TimeWindow::new(utc, None, None, &["funday".into()]),
            Err(TimeError::Weekday(_))
        ));
        assert!(matches!(
            TimeWindow::new(utc, None, None, &[]),
            Err(TimeError::Empty)
        ));
        assert!(matches!(
            TimeWindow::new(utc, Some("10:00"), Some("10:00:00"), &[]),
            Err(TimeError::EqualBounds(_))
        ));
        // Seconds are accepted; times before the epoch do not panic.
        let w = TimeWindow::new(utc, Some("00:00:30"), None, &[]).unwrap();
        assert!(!w.holds(at("1970-01-01T00:00:10.000000+00:00")));
        assert!(w.holds(at("1969-12-31T23:59:59.000000+00:00")));
    }
}
