//! The delivery engine shared by the sink task and replay: sends whole lines,
//! retries transient failures with back-off, holds on errors that need an
//! operator, splits what is too large, and finds and sets aside the lines the
//! server refused (by name, or by bisecting the batch).

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::MAX_RETRY_AFTER;
use super::reply::{Verdict, classify, reject_kind, server_message, unparsable_reason};
use super::writer::Batch;
use super::{InfluxWriter, SHUTDOWN_FLUSH_DEADLINE, WriteError};
use crate::backoff::Backoff;
use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::monitor::Stats;
use crate::monitor::metrics::{
    SINK_BATCH_DURATION, SINK_BATCH_POINTS, SINK_ERRORS, SINK_RETRIES, SINK_SENT_BYTES,
    SINK_SENT_POINTS,
};
use crate::sink::SinkContext;

/// What became of the lines handed to [`Delivery::deliver`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Lines InfluxDB accepted.
    pub written: u64,
    /// Lines set aside as dead letters.
    pub dead_lettered: u64,
    /// Lines given up on (shutdown deadline passed).
    pub undelivered: u64,
}

/// One delivery engine shared by the sink task and replay.
pub(crate) struct Delivery<'a> {
    pub writer: &'a InfluxWriter,
    pub dead_letters: &'a DeadLetters,
    pub stats: Option<&'a Stats>,
    /// Told about buffer records once their batch is delivered.
    pub acks: Option<&'a crate::feedback::acks::Acks>,
    pub shutdown: Option<&'a CancellationToken>,
    /// Once set, waits end at this instant and what is left is given up.
    pub deadline: Option<Instant>,
    /// Replay: stop on 401/403/404 instead of waiting for an operator.
    pub hold_is_fatal: bool,
    /// In a streak of failed attempts (for the recovery message).
    holding: bool,
    /// The hold error of this streak was logged.
    hold_logged: bool,
    /// Lines refused for a type the guard has just learned, to be checked and sent again.
    again: Vec<String>,
    /// Some records were left undelivered in the buffer: acknowledge nothing more this run.
    withheld: bool,
    /// Lines the guard changed → as they came in; dead letters keep the original.
    originals: std::collections::HashMap<String, String>,
}

impl<'a> Delivery<'a> {
    /// An engine for the sink task: stats, acknowledgements and shutdown from `ctx`; errors that need an operator hold the batch.
    pub(super) fn for_sink(writer: &'a InfluxWriter, ctx: &'a SinkContext) -> Self {
        Delivery {
            writer,
            dead_letters: &ctx.dead_letters,
            stats: Some(&ctx.stats),
            acks: ctx.acks.as_ref(),
            shutdown: Some(&ctx.shutdown),
            deadline: None,
            hold_is_fatal: false,
            holding: false,
            hold_logged: false,
            again: Vec::new(),
            withheld: false,
            originals: Default::default(),
        }
    }

    /// An engine for replay: no stats, no shutdown, errors that need an operator end it.
    pub(crate) fn for_replay(writer: &'a InfluxWriter, dead_letters: &'a DeadLetters) -> Self {
        Delivery {
            writer,
            dead_letters,
            stats: None,
            acks: None,
            shutdown: None,
            deadline: None,
            hold_is_fatal: true,
            holding: false,
            hold_logged: false,
            again: Vec::new(),
            withheld: false,
            originals: Default::default(),
        }
    }

    /// Reports an empty batch's record as delivered (its lines all went out before, or none were for this target).
    pub(super) fn ack(&mut self, batch: &mut Batch) {
        let seq = batch.seq.take();
        if self.withheld {
            return;
        }
        if let (Some(acks), Some(seq)) = (self.acks, seq) {
            acks.delivered(seq);
        }
    }

    /// Delivers a batch, acknowledges its record and empties it.
    pub(super) async fn flush(&mut self, batch: &mut Batch) {
        if batch.points == 0 {
            batch.lines.clear();
            batch.since = None;
            self.ack(batch);
            return;
        }
        match self.deliver(&batch.lines).await {
            Ok(outcome) if outcome.undelivered > 0 && self.acks.is_some() => {
                // Not acknowledged: the records stay in the durable buffer for the next start.
                // Acknowledgements cover every record up to a sequence number, so no later
                // delivery of this run may acknowledge past these records either.
                self.withheld = true;
                tracing::warn!(
                    message = "InfluxDB did not accept these points before the shutdown deadline; they stay in the buffer and are delivered at the next start.",
                    points = outcome.undelivered,
                );
            }
            Ok(outcome) => {
                if let (Some(acks), Some(seq), false) = (self.acks, batch.seq, self.withheld) {
                    acks.delivered(seq);
                }
                if outcome.undelivered > 0 {
                    tracing::error!(
                        message = "InfluxDB did not accept these points before the shutdown deadline; they were not written.",
                        points = outcome.undelivered,
                    );
                    if let Some(stats) = self.stats {
                        Stats::add(&stats.dropped, outcome.undelivered);
                    }
                }
            }
            // Not reachable in the sink task (hold is never fatal there), kept total.
            Err(error) => {
                tracing::error!(message = "Batch not written.", %error, points = batch.points);
                if let Some(stats) = self.stats {
                    Stats::add(&stats.dropped, batch.points as u64);
                }
            }
        }
        batch.lines.clear();
        batch.points = 0;
        batch.since = None;
        batch.seq = None;
    }

    /// Delivers whole lines, retrying, splitting and setting aside as the replies require.
    ///
    /// The type-conflict guard checks the lines first; when a reply names a type
    /// the guard did not know, the refused lines are checked again and resent.
    pub(crate) async fn deliver(&mut self, body: &str) -> Result<Outcome, WriteError> {
        if !self.writer.guards_types() {
            return self.deliver_lines(body).await;
        }
        self.writer.ensure_field_types().await;
        let mut total = Outcome::default();
        let mut current = std::borrow::Cow::Borrowed(body);
        loop {
            let mut guarded = self.writer.types().guard(&current, self.writer.name);
            self.originals = std::mem::take(&mut guarded.changed);
            for (line, reason) in &guarded.set_aside {
                self.dead_letter(line, "type_conflict", reason);
                total.dead_lettered += 1;
            }
            let send = guarded.body.as_deref().unwrap_or(&current);
            let outcome = self.deliver_lines(send).await?;
            total.written += outcome.written;
            total.dead_lettered += outcome.dead_lettered;
            total.undelivered += outcome.undelivered;
            if self.again.is_empty() {
                return Ok(total);
            }
            let mut again = std::mem::take(&mut self.again);
            if outcome.undelivered > 0 {
                total.undelivered += again.len() as u64;
                return Ok(total);
            }
            // Check the lines again as they came in, not as the guard changed them.
            for line in &mut again {
                if let Some(original) = self.originals.get(line.as_str()) {
                    line.clone_from(original);
                }
            }
            current = std::borrow::Cow::Owned(join_owned(&again));
        }
    }

    /// [`Delivery::deliver`] after the guard: lines refused for a newly learned type go to `self.again`.
    async fn deliver_lines(&mut self, body: &str) -> Result<Outcome, WriteError> {
        let mut outcome = Outcome::default();
        let mut work: Vec<Vec<&str>> = vec![lines_of(body)];
        let mut backoff = Backoff::new(self.writer.retry_min, self.writer.retry_max);
        while let Some(lines) = work.pop() {
            if lines.is_empty() {
                continue;
            }
            let joined;
            let text: &str =
                if work.is_empty() && outcome == Outcome::default() && backoff.attempts() == 0 {
                    body
                } else {
                    joined = join(&lines);
                    &joined
                };
            let started = std::time::Instant::now();
            let result = self.writer.attempt(text).await;
            metrics::histogram!(SINK_BATCH_DURATION, "sink" => self.writer.name)
                .record(started.elapsed().as_secs_f64());
            let failure = match result {
                Ok(()) => {
                    self.delivered(lines.len() as u64, text.len() as u64);
                    crate::monitor::latency::observe_accepted(
                        self.writer.name,
                        lines.iter().copied(),
                    );
                    outcome.written += lines.len() as u64;
                    backoff.reset();
                    continue;
                }
                Err(f) => f,
            };
            metrics::counter!(SINK_ERRORS, "sink" => self.writer.name, "error_type" => failure.error.kind())
                .increment(1);
            // The server's message, read once: classified here, quoted in dead letters below.
            let (verdict, message) = match &failure.error {
                WriteError::Status { code, body } => {
                    let message = server_message(body);
                    (classify(*code, &message), message)
                }
                WriteError::Transport { .. } | WriteError::Timeout(_) => {
                    (Verdict::Retry, String::new())
                }
                _ => (Verdict::Hold, String::new()),
            };
            match verdict {
                Verdict::Delivered => unreachable_delivered(&mut outcome, &lines),
                Verdict::Split => {
                    backoff.reset();
                    let reason = failure.error.to_string();
                    self.set_aside_or_halve(
                        &lines,
                        "line_too_large",
                        &reason,
                        &mut work,
                        &mut outcome,
                    );
                }
                Verdict::Rejected { partial, dropped } => {
                    backoff.reset();
                    self.rejected(&lines, &message, partial, dropped, &mut work, &mut outcome);
                }
                Verdict::Retry => {
                    metrics::counter!(SINK_RETRIES, "sink" => self.writer.name).increment(1);
                    self.not_ready(&failure.error, false);
                    let delay = retry_delay(&mut backoff, failure.retry_after);
                    let attempt = backoff.attempts();
                    // WARN on the 1st, 2nd, 4th, 8th… attempt of a streak, so an outage does not flood the log.
                    if attempt.is_power_of_two() {
                        tracing::warn!(
                            message = "Write to InfluxDB failed; retrying the same batch.",
                            error = %failure.error,
                            attempt,
                            delay = ?delay,
                            points = lines.len(),
                        );
                    } else {
                        tracing::debug!(message = "Write to InfluxDB failed; retrying the same batch.", error = %failure.error, attempt);
                    }
                    if !self.wait(delay).await {
                        outcome.undelivered += remaining(&lines, &work);
                        return Ok(outcome);
                    }
                    work.push(lines);
                }
                Verdict::Hold => {
                    if self.hold_is_fatal {
                        return Err(failure.error);
                    }
                    metrics::counter!(SINK_RETRIES, "sink" => self.writer.name).increment(1);
                    self.not_ready(&failure.error, true);
                    if !self.wait(self.writer.retry_max).await {
                        outcome.undelivered += remaining(&lines, &work);
                        return Ok(outcome);
                    }
                    work.push(lines);
                }
            }
        }
        Ok(outcome)
    }

    /// Handles a 400/422 (or any "partial write") reply for `lines`.
    fn rejected<'l>(
        &mut self,
        lines: &[&'l str],
        message: &str,
        partial: bool,
        dropped: Option<usize>,
        work: &mut Vec<Vec<&'l str>>,
        outcome: &mut Outcome,
    ) {
        let mut rest: Vec<&'l str> = Vec::with_capacity(lines.len());
        for line in lines {
            match unparsable_reason(message, line) {
                Some(reason) => {
                    self.dead_letter(line, "unparsable_line", reason);
                    outcome.dead_lettered += 1;
                }
                None => rest.push(line),
            }
        }
        if rest.is_empty() {
            return;
        }
        let kind = reject_kind(message);
        if kind == "type_conflict" && self.writer.types().learn_from_conflict(message) {
            // The guard now knows the stored type: it resolves these lines and they are resent
            // (the ones the server wrote are written again, harmlessly: same timestamps).
            self.again.extend(rest.iter().map(|l| l.to_string()));
            return;
        }
        // Lines the server named that we could not match stay unidentified: never count them as written.
        let all_named = message.matches("unable to parse '").count() == lines.len() - rest.len();
        if partial {
            match dropped {
                Some(0) if all_named => {
                    // Only the named lines were refused; the server wrote the others.
                    self.delivered(rest.len() as u64, 0);
                    outcome.written += rest.len() as u64;
                    return;
                }
                Some(n) if n >= rest.len() && all_named => {
                    for line in &rest {
                        self.dead_letter(line, kind, message);
                    }
                    outcome.dead_lettered += rest.len() as u64;
                    return;
                }
                // Unknown which lines were dropped: resend halves (idempotent) to find them.
                _ => {}
            }
        } else if rest.len() < lines.len() {
            // Nothing was written: resend what the server did not name.
            work.push(rest);
            return;
        }
        self.set_aside_or_halve(&rest, kind, message, work, outcome);
    }

    /// A single line is set aside with `kind` and `reason`; more are queued again as two halves.
    fn set_aside_or_halve<'l>(
        &self,
        lines: &[&'l str],
        kind: &'static str,
        reason: &str,
        work: &mut Vec<Vec<&'l str>>,
        outcome: &mut Outcome,
    ) {
        if let [line] = lines {
            self.dead_letter(line, kind, reason);
            outcome.dead_lettered += 1;
        } else {
            let (a, b) = lines.split_at(lines.len() / 2);
            work.push(b.to_vec());
            work.push(a.to_vec());
        }
    }

    fn delivered(&mut self, points: u64, bytes: u64) {
        metrics::counter!(SINK_SENT_POINTS, "sink" => self.writer.name).increment(points);
        metrics::counter!(SINK_SENT_BYTES, "sink" => self.writer.name).increment(bytes);
        metrics::histogram!(SINK_BATCH_POINTS, "sink" => self.writer.name).record(points as f64);
        if let Some(stats) = self.stats {
            Stats::add(&stats.written, points);
            stats.sink_result(self.writer.name, Ok(()));
        }
        if self.holding {
            tracing::info!(message = "InfluxDB accepts writes again.");
            self.holding = false;
            self.hold_logged = false;
        }
    }

    fn dead_letter(&self, line: &str, kind: &'static str, reason: &str) {
        let line = self.originals.get(line).map_or(line, String::as_str);
        self.dead_letters.record(DeadLetter {
            stage: "sink",
            kind,
            reason,
            source: self.writer.name,
            input: line.as_bytes(),
        });
        if let Some(stats) = self.stats {
            Stats::add(&stats.dead_lettered, 1);
        }
    }

    fn not_ready(&mut self, error: &WriteError, hold: bool) {
        if let Some(stats) = self.stats {
            stats.sink_failed(self.writer.name, error.to_string(), hold);
        }
        if !hold {
            // Retry streaks are logged by the caller; this marks them for the recovery message.
            self.holding = true;
            return;
        }
        if !self.hold_logged {
            self.holding = true;
            self.hold_logged = true;
            tracing::error!(
                message = "InfluxDB refuses the writes until its configuration or ours is fixed; the batch is kept and retried.",
                %error,
                retry_every = ?self.writer.retry_max,
            );
        }
    }

    /// Sleeps `delay`; false when the shutdown deadline passed and the caller should give up.
    async fn wait(&mut self, delay: Duration) -> bool {
        if self.deadline.is_none()
            && let Some(token) = self.shutdown
        {
            tokio::select! {
                _ = tokio::time::sleep(delay) => return true,
                _ = token.cancelled() => {
                    self.deadline = Some(Instant::now() + SHUTDOWN_FLUSH_DEADLINE);
                    return true;
                }
            }
        }
        match self.deadline {
            None => {
                tokio::time::sleep(delay).await;
                true
            }
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return false;
                }
                tokio::time::sleep_until((now + delay).min(deadline)).await;
                Instant::now() < deadline
            }
        }
    }
}

fn unreachable_delivered(outcome: &mut Outcome, lines: &[&str]) {
    // `classify` is only called for non-2xx replies; count as written for totality.
    outcome.written += lines.len() as u64;
}

fn remaining(lines: &[&str], work: &[Vec<&str>]) -> u64 {
    (lines.len() + work.iter().map(Vec::len).sum::<usize>()) as u64
}

fn lines_of(body: &str) -> Vec<&str> {
    body.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| {
            let t = l.trim_start();
            !t.is_empty() && !t.starts_with('#')
        })
        .collect()
}

fn join(lines: &[&str]) -> String {
    let mut s = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s
}

fn join_owned(lines: &[String]) -> String {
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    join(&refs)
}

/// The back-off's next delay, lengthened to the server's `Retry-After` (itself at most [`MAX_RETRY_AFTER`]).
fn retry_delay(backoff: &mut Backoff, retry_after: Option<Duration>) -> Duration {
    let delay = backoff.next_delay();
    match retry_after {
        Some(after) => delay.max(after.min(MAX_RETRY_AFTER)),
        None => delay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_within_bounds_and_honours_retry_after() {
        let min = Duration::from_millis(500);
        let max = Duration::from_secs(60);
        // The delay before retry `attempt` (from 1) of a streak, at `jitter` of its range.
        let retry_delay = |attempt: u32, retry_after, min, max, jitter| {
            let mut backoff = Backoff::new(min, max).with_jitter(jitter);
            for _ in 1..attempt {
                backoff.next_delay();
            }
            let delay = retry_delay(&mut backoff, retry_after);
            assert_eq!(backoff.attempts(), attempt);
            delay
        };
        assert_eq!(retry_delay(1, None, min, max, 0.0), min);
        assert_eq!(retry_delay(1, None, min, max, 1.0), min);
        assert_eq!(retry_delay(3, None, min, max, 1.0), Duration::from_secs(2));
        assert_eq!(retry_delay(40, None, min, max, 1.0), max);
        for attempt in 1..50 {
            let d = retry_delay(attempt, None, min, max, 0.5);
            assert!(d >= min && d <= max, "{attempt}: {d:?}");
        }
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(30)), min, max, 0.0),
            Duration::from_secs(30)
        );
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(3600)), min, max, 0.0),
            MAX_RETRY_AFTER
        );
        // With random jitter, every delay stays within the bounds too.
        let mut random = Backoff::new(min, max);
        for attempt in 1..50 {
            let d = super::retry_delay(&mut random, None);
            assert!(d >= min && d <= max, "{attempt}: {d:?}");
        }
    }
}
