//! Lanes: with `max_concurrent_requests` above 1 the writer splits its input by
//! series key over that many lanes, each batching and writing on its own, and
//! reports to the buffer the lowest record every lane has delivered. Also the
//! routing of lines to a target by measurement (`measurements`).

use std::sync::Arc;

use tokio::sync::mpsc::Receiver;
use tokio::time::Instant;

use super::{InfluxWriter, SHUTDOWN_FLUSH_DEADLINE, WriteError, field_types};
use crate::encode::Chunk;
use crate::sink::SinkContext;

/// Most write requests in flight per target.
pub(super) const MAX_LANES: usize = 64;
/// Chunks queued per lane.
const LANE_CHANNEL: usize = 4;

impl InfluxWriter {
    /// The sink task with more than one lane: splits each chunk by series over the lanes, then waits for them.
    pub(super) async fn run_lanes(self, mut rx: Receiver<Chunk>, ctx: SinkContext) {
        let n = self.lanes;
        let mut txs = Vec::with_capacity(n);
        let mut lanes = Vec::with_capacity(n);
        let mut reports = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, lane_rx) = tokio::sync::mpsc::channel::<Chunk>(LANE_CHANNEL);
            let (acks, delivered) = crate::feedback::acks::Acks::channel();
            let lane_ctx = SinkContext {
                acks: ctx.acks.as_ref().map(|_| acks),
                ..ctx.clone()
            };
            txs.push(tx);
            reports.push(delivered);
            lanes.push(tokio::spawn(self.clone().run_lane(lane_rx, lane_ctx)));
        }
        // Every lane's report → the lowest, to the buffer.
        let forwarder = ctx
            .acks
            .clone()
            .map(|acks| tokio::spawn(lowest_of(reports, acks)));
        let mut deadline = None;
        loop {
            let chunk = match deadline {
                None => tokio::select! {
                    biased;
                    _ = ctx.shutdown.cancelled() => {
                        deadline = Some(Instant::now() + SHUTDOWN_FLUSH_DEADLINE);
                        continue;
                    }
                    chunk = rx.recv() => chunk,
                },
                Some(at) => tokio::time::timeout_at(at, rx.recv()).await.ok().flatten(),
            };
            let Some(chunk) = chunk else { break };
            for (tx, part) in txs.iter().zip(split_by_series(&chunk, n)) {
                // A lane ends only after its input closed, which happens below.
                let _ = tx.send(part).await;
            }
        }
        drop(txs);
        for lane in lanes {
            if let Err(error) = lane.await {
                tracing::error!(message = "An InfluxDB write lane failed.", %error);
            }
        }
        if let Some(forwarder) = forwarder {
            let _ = forwarder.await;
        }
        crate::sink::account_unwritten(&mut rx, &ctx.stats, self.name);
    }
}

/// Splits a chunk's lines into `n` parts by a hash of each line's series key; every part keeps the chunk's seq (empty parts too, so each lane reports it).
fn split_by_series(chunk: &Chunk, n: usize) -> Vec<Chunk> {
    // Series spread about evenly over the lanes: room for a fair share and a quarter more,
    // instead of growing each part from empty (a copy at every doubling).
    let share = chunk.lines.len() / n.max(1);
    let mut parts: Vec<Chunk> = (0..n)
        .map(|_| Chunk {
            lines: String::with_capacity(share + share / 4),
            points: 0,
            seq: chunk.seq,
            marks: Default::default(),
        })
        .collect();
    for line in chunk.lines.split_inclusive('\n') {
        let part = &mut parts[(series_hash(line) % n as u64) as usize];
        part.lines.push_str(line);
        part.points += 1;
    }
    parts
}

/// FNV-1a of a line's series key (measurement and tags: everything before the first unescaped space).
fn series_hash(line: &str) -> u64 {
    let b = line.as_bytes();
    let end = (0..b.len())
        .find(|&i| b[i] == b' ' && (i == 0 || b[i - 1] != b'\\'))
        .unwrap_or(b.len());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &c in &b[..end] {
        h ^= u64::from(c);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Forwards the lowest of the lanes' delivery reports to `acks` until every lane is gone.
async fn lowest_of(
    mut reports: Vec<tokio::sync::watch::Receiver<u64>>,
    acks: crate::feedback::acks::Acks,
) {
    let mut open = vec![true; reports.len()];
    while open.iter().any(|o| *o) {
        crate::feedback::acks::next_report(&mut reports, &mut open).await;
        if let Some(low) = reports.iter_mut().map(|rx| *rx.borrow_and_update()).min() {
            acks.delivered(low);
        }
    }
}

/// The `measurements` globs as one set; `None` when there are none (every measurement).
pub(super) fn routes(globs: &[String]) -> Result<Option<Arc<globset::GlobSet>>, WriteError> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut set = globset::GlobSetBuilder::new();
    for g in globs {
        set.add(
            globset::Glob::new(g)
                .map_err(|e| WriteError::Config(format!("influxdb.measurements {g:?}: {e}")))?,
        );
    }
    let set = set
        .build()
        .map_err(|e| WriteError::Config(format!("influxdb.measurements: {e}")))?;
    Ok(Some(Arc::new(set)))
}

/// The lines of `lines` whose measurement `routes` matches (a line that does not scan goes along, for the server to judge).
pub(super) fn routed(lines: &str, routes: &globset::GlobSet) -> (String, usize) {
    let mut out = String::new();
    let mut n = 0;
    for line in lines.split_inclusive('\n') {
        let keep = match field_types::measurement_of(line) {
            Some(m) => routes.is_match(&*m),
            None => true,
        };
        if keep {
            out.push_str(line);
            n += 1;
        }
    }
    (out, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_by_series_keep_each_series_whole_and_every_part_the_seq() {
        let lines: String = (0..200)
            .map(|i| format!("m,entity_id=e{} value={i} {i}\n", i % 7))
            .chain(["m\\ x,entity_id=e1 value=1 1\n".to_string()])
            .collect();
        let chunk = Chunk {
            lines,
            points: 201,
            seq: Some(9),
            marks: Default::default(),
        };
        let parts = split_by_series(&chunk, 3);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.seq == Some(9)));
        assert_eq!(parts.iter().map(|p| p.points).sum::<usize>(), 201);
        for e in 0..7 {
            let key = format!("m,entity_id=e{e} ");
            let holding: Vec<usize> = (0..3).filter(|&i| parts[i].lines.contains(&key)).collect();
            assert_eq!(holding.len(), 1, "series {key} in parts {holding:?}");
            // In order within its part.
            let values: Vec<u64> = parts[holding[0]]
                .lines
                .lines()
                .filter(|l| l.starts_with(&key))
                .map(|l| l.split(' ').nth(2).unwrap().parse().unwrap())
                .collect();
            assert!(values.windows(2).all(|w| w[0] < w[1]), "{values:?}");
        }
        // A space escaped in the measurement is part of the series key.
        assert_ne!(series_hash("m\\ x,entity_id=e1 v=1"), series_hash("m v=1"));
    }
}
