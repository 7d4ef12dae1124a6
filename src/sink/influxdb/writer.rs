//! [`InfluxWriter`]: built from the configuration, and its sink task, which
//! batches the chunks it receives by line count, size and time and hands each
//! batch to the [`Delivery`] engine, flushing what it holds at shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::Receiver;
use tokio::time::Instant;

use super::client::{Auth, json_reply, tls_config, with_query};
use super::delivery::Delivery;
use super::field_types::FieldTypes;
use super::lanes::{MAX_LANES, routed, routes};
use super::{MAX_BATCH_BYTES, SHUTDOWN_FLUSH_DEADLINE, WriteError};
use crate::config::{Flavor, InfluxApi, InfluxConfig};
use crate::encode::Chunk;
use crate::sink::SinkContext;

/// Sends line protocol to one InfluxDB; cheap to clone (the HTTP client is shared).
#[derive(Clone)]
pub struct InfluxWriter {
    pub(super) client: reqwest::Client,
    pub(super) base: String,
    pub(super) write_url: String,
    pub(super) auth: Auth,
    pub(super) api: InfluxApi,
    /// The server behind the URL; VictoriaMetrics has no InfluxQL and no field types.
    pub(super) flavor: Flavor,
    pub(super) database: Option<String>,
    pub(super) org: Option<String>,
    pub(super) bucket: Option<String>,
    pub(super) gzip: bool,
    pub(super) timeout: Duration,
    pub(super) batch_size: usize,
    pub(super) flush_interval: Duration,
    pub(super) retry_min: Duration,
    pub(super) retry_max: Duration,
    /// The type-conflict guard's map, shared by clones (a std mutex: never held across an await).
    pub(super) types: Arc<Mutex<FieldTypes>>,
    /// The target's name in metrics, logs, health and dead letters (`influxdb`).
    pub(super) name: &'static str,
    /// The measurements this target receives (`measurements`); `None`: all.
    pub(super) routes: Option<Arc<globset::GlobSet>>,
    /// Lanes, each with one request in flight (`max_concurrent_requests`).
    pub(super) lanes: usize,
    /// Which of this target's failures make the process not ready.
    pub(super) readiness: crate::config::TargetReadiness,
}

impl std::fmt::Debug for InfluxWriter {
    // By hand, so credentials never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxWriter")
            .field("write_url", &crate::config::redact_url(&self.write_url))
            .field("gzip", &self.gzip)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod debug_tests {
    use crate::config::InfluxConfig;

    #[test]
    fn debug_never_shows_credentials_of_the_url() {
        let mut cfg = InfluxConfig::v1("http://alice:s3cret@127.0.0.1:8086", "ha");
        cfg.password = Some("pw-in-config".into());
        let writer = super::InfluxWriter::new(&cfg).expect("builds");
        let text = format!("{writer:?}");
        assert!(
            !text.contains("s3cret") && !text.contains("alice"),
            "{text}"
        );
        assert!(!text.contains("pw-in-config"), "{text}");
        assert!(text.contains("127.0.0.1:8086"), "{text}");
    }
}

impl InfluxWriter {
    /// Builds the HTTP client (rustls on ring, cfg.tls.ca_file, insecure only when configured) and the write URL.
    pub fn new(cfg: &InfluxConfig) -> Result<InfluxWriter, WriteError> {
        let parsed = url::Url::parse(&cfg.url)
            .map_err(|e| WriteError::Config(format!("influxdb.url {:?}: {e}", cfg.url)))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(WriteError::Config(
                "influxdb.url: scheme must be http or https".into(),
            ));
        }
        let base = cfg.url.trim_end_matches('/').to_string();
        let (path, query): (&str, Vec<(&str, &str)>) = match cfg.api {
            InfluxApi::V1 => {
                let db = cfg
                    .database
                    .as_deref()
                    .filter(|d| !d.is_empty())
                    .ok_or_else(|| WriteError::Config("influxdb.database is required".into()))?;
                let mut q = vec![("db", db)];
                if let Some(rp) = cfg.retention_policy.as_deref().filter(|r| !r.is_empty()) {
                    q.push(("rp", rp));
                }
                q.push(("precision", "ns"));
                ("/write", q)
            }
            InfluxApi::V2 => {
                let org = cfg.org.as_deref().unwrap_or_default();
                let bucket = cfg.bucket.as_deref().unwrap_or_default();
                if org.is_empty() || bucket.is_empty() {
                    return Err(WriteError::Config(
                        "influxdb.org and influxdb.bucket are required with api = \"v2\"".into(),
                    ));
                }
                (
                    "/api/v2/write",
                    vec![("org", org), ("bucket", bucket), ("precision", "ns")],
                )
            }
        };
        let mut write_url = url::Url::parse(&format!("{base}{path}"))
            .map_err(|e| WriteError::Config(format!("influxdb.url: {e}")))?;
        write_url.query_pairs_mut().extend_pairs(query);
        let auth = Auth::from_config(cfg);
        if cfg.api == InfluxApi::V2 && cfg.flavor == Flavor::InfluxDb && matches!(auth, Auth::None)
        {
            return Err(WriteError::Config(
                "influxdb.token is required with api = \"v2\"".into(),
            ));
        }
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config(&cfg.tls)?)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .build()
            .map_err(|e| WriteError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(InfluxWriter {
            client,
            base,
            write_url: write_url.to_string(),
            auth,
            api: cfg.api,
            flavor: cfg.flavor,
            database: cfg.database.clone(),
            org: cfg.org.clone(),
            bucket: cfg.bucket.clone(),
            gzip: cfg.gzip.for_url(&cfg.url),
            timeout: cfg.timeout,
            batch_size: cfg.batch_size.max(1),
            flush_interval: cfg.flush_interval,
            retry_min: cfg.retry_min,
            retry_max: cfg.retry_max.max(cfg.retry_min),
            types: Arc::new(Mutex::new(FieldTypes::new(cfg.type_conflict))),
            name: target_name(cfg.target_name()),
            routes: routes(&cfg.measurements)?,
            lanes: cfg.max_concurrent_requests.clamp(1, MAX_LANES),
            readiness: cfg.readiness,
        })
    }

    /// Whether lines go through the type-conflict guard: not to VictoriaMetrics, which stores
    /// every value as a float and so never has a conflict to prevent.
    pub(super) fn guards_types(&self) -> bool {
        self.flavor == Flavor::InfluxDb
    }

    /// The type-conflict guard, locked (a poisoned lock is taken over: the map stays usable).
    pub(super) fn types(&self) -> std::sync::MutexGuard<'_, FieldTypes> {
        self.types.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads every measurement's field types (`SHOW FIELD KEYS`, v1) into the type-conflict guard; returns how many fields.
    ///
    /// v2 has no InfluxQL endpoint of its own; there the guard learns from what it
    /// writes and from the server's type-conflict replies. VictoriaMetrics has no field
    /// types to read (and answers every InfluxQL statement with a database list).
    pub async fn learn_field_types(&self) -> Result<usize, WriteError> {
        self.types().last_try = Some(Instant::now());
        if self.api != InfluxApi::V1 || self.flavor == Flavor::VictoriaMetrics {
            self.types().learned = true;
            return Ok(0);
        }
        let db = self.database.as_deref().unwrap_or_default();
        let url = with_query(
            &format!("{}/query", self.base),
            &[("db", db), ("q", "SHOW FIELD KEYS")],
        )?;
        let reply = self
            .authorize(self.client.get(&url))
            .send()
            .await
            .map_err(|e| self.transport(&url, e))?;
        let json = json_reply(reply).await?;
        if let Some(error) = json
            .pointer("/results/0/error")
            .and_then(|e| e.as_str())
            .or_else(|| json.get("error").and_then(|e| e.as_str()))
        {
            return Err(WriteError::Protocol(format!("SHOW FIELD KEYS: {error}")));
        }
        let mut types = self.types();
        let n = types.learn_show_field_keys(&json);
        types.learned = true;
        Ok(n)
    }

    /// Learns the field types once, when not done yet; after a failure, again at most every `retry_max`.
    pub(super) async fn ensure_field_types(&self) {
        let due = {
            let types = self.types();
            !types.learned && types.last_try.is_none_or(|t| t.elapsed() >= self.retry_max)
        };
        if !due {
            return;
        }
        match self.learn_field_types().await {
            Ok(fields) => tracing::info!(
                message = "Learned the field types stored in InfluxDB.",
                fields
            ),
            Err(error) => tracing::warn!(
                message = "Cannot read the field types stored in InfluxDB; type conflicts are learned from the replies until this works.",
                %error,
            ),
        }
    }

    /// The sink task: batches chunks by line count (cfg.batch_size) and time (cfg.flush_interval), writes with retries, flushes what it holds when ctx.shutdown is cancelled (drain the channel first), then returns.
    ///
    /// After cancellation it keeps receiving until every sender is gone or
    /// [`SHUTDOWN_FLUSH_DEADLINE`] passes; whatever cannot be delivered by then is
    /// logged and counted in `stats.dropped`.
    ///
    /// With `max_concurrent_requests` above 1 the lines are split into that many
    /// lanes by a hash of their series key (measurement and tags), each lane
    /// batching and writing on its own, so up to that many requests are in flight
    /// while every series' points still arrive in order. A buffer record is
    /// reported delivered once every lane has delivered its part of it.
    pub async fn run(self, rx: Receiver<Chunk>, ctx: SinkContext) {
        ctx.stats.register_sink(
            self.name,
            Some(crate::config::redact_url(&self.base)),
            self.readiness,
        );
        if self.lanes <= 1 {
            return self.run_lane(rx, ctx).await;
        }
        self.run_lanes(rx, ctx).await;
    }

    /// One lane: batches, writes with retries, flushes at shutdown (the whole sink when there is one lane).
    pub(super) async fn run_lane(self, mut rx: Receiver<Chunk>, ctx: SinkContext) {
        let mut delivery = Delivery::for_sink(&self, &ctx);
        let mut batch = Batch::default();
        // Normal operation, until shutdown (also when noticed during a retry) or every sender is gone.
        while delivery.deadline.is_none() {
            let due = batch.since.map(|t| t + self.flush_interval);
            tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled(), if delivery.deadline.is_none() => {
                    delivery.deadline = Some(Instant::now() + SHUTDOWN_FLUSH_DEADLINE);
                    break;
                }
                chunk = rx.recv() => match chunk {
                    Some(chunk) => self.add(&mut batch, &chunk, &mut delivery).await,
                    None => break,
                },
                _ = sleep_until_opt(due) => delivery.flush(&mut batch).await,
            }
        }
        // Shutdown (or every sender gone): drain, then flush within the deadline.
        let deadline = *delivery
            .deadline
            .get_or_insert_with(|| Instant::now() + SHUTDOWN_FLUSH_DEADLINE);
        while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            self.add(&mut batch, &chunk, &mut delivery).await;
        }
        delivery.flush(&mut batch).await;
        crate::sink::account_unwritten(&mut rx, &ctx.stats, self.name);
    }

    /// Appends a chunk, cutting batches at `batch_size` lines or [`MAX_BATCH_BYTES`].
    async fn add(&self, batch: &mut Batch, chunk: &Chunk, delivery: &mut Delivery<'_>) {
        let routed_chunk;
        let chunk = match &self.routes {
            Some(routes) => {
                let (lines, points) = routed(&chunk.lines, routes);
                routed_chunk = Chunk {
                    lines,
                    points,
                    seq: chunk.seq,
                    marks: Default::default(),
                };
                &routed_chunk
            }
            None => chunk,
        };
        if chunk.lines.is_empty() {
            batch.seq = chunk.seq.or(batch.seq);
            if batch.points == 0 {
                // Nothing of it (or before it) waits here: delivered as far as this target goes.
                delivery.ack(batch);
            }
            return;
        }
        if batch.points + chunk.points <= self.batch_size
            && batch.lines.len() + chunk.lines.len() <= MAX_BATCH_BYTES
        {
            batch.push(&chunk.lines, chunk.points);
        } else {
            for line in chunk.lines.split_inclusive('\n') {
                if batch.points >= self.batch_size
                    || (batch.points > 0 && batch.lines.len() + line.len() > MAX_BATCH_BYTES)
                {
                    delivery.flush(batch).await;
                }
                batch.push(line, 1);
            }
        }
        // The chunk's last line is in this batch: delivering it delivers the whole record.
        batch.seq = chunk.seq.or(batch.seq);
        if batch.points >= self.batch_size || batch.lines.len() >= MAX_BATCH_BYTES {
            delivery.flush(batch).await;
        }
    }
}

/// A `'static` name for metric labels: interned, so each distinct target name is allocated once per process.
fn target_name(name: &str) -> &'static str {
    static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = names.iter().find(|n| **n == name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.push(leaked);
    leaked
}

async fn sleep_until_opt(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Lines waiting to be written together, with what their delivery acknowledges.
#[derive(Default)]
pub(super) struct Batch {
    /// Whole lines, each ending in a newline.
    pub(super) lines: String,
    /// How many lines.
    pub(super) points: usize,
    /// When the first line came in (the flush timer starts there).
    pub(super) since: Option<Instant>,
    /// The last buffer record whose lines all are in this batch (or in earlier ones).
    pub(super) seq: Option<u64>,
}

impl Batch {
    fn push(&mut self, lines: &str, points: usize) {
        if self.since.is_none() {
            self.since = Some(Instant::now());
        }
        self.lines.push_str(lines);
        if !lines.ends_with('\n') {
            self.lines.push('\n');
        }
        self.points += points;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_url_and_errors() {
        let mut cfg = InfluxConfig::v1("http://h:8086/", "home assistant");
        cfg.retention_policy = Some("autogen".into());
        let w = InfluxWriter::new(&cfg).unwrap();
        assert_eq!(
            w.write_url,
            "http://h:8086/write?db=home+assistant&rp=autogen&precision=ns"
        );
        cfg.tls.ca_file = Some("/nonexistent/ca.pem".into());
        let err = InfluxWriter::new(&cfg).unwrap_err();
        assert_eq!(err.kind(), "config");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        let status = WriteError::Status {
            code: 401,
            body: String::new(),
        };
        assert!(status.is_auth());
        assert_eq!(status.kind(), "unauthorized");
    }
}
